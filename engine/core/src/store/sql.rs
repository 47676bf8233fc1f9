//! A small SQL builder that numbers `$n` placeholders, which both SQLite and PostgreSQL accept
//! through sqlx's `Any` driver (sqlx's own `QueryBuilder<Any>` emits `?`, which PostgreSQL rejects).

use sqlx::any::{Any, AnyArguments};
use sqlx::query::Query;
use sqlx::{Arguments, AssertSqlSafe, Encode, Type};

/// Statements with more arguments than this are prepared for each use, not cached.
pub(crate) const MAX_CACHED_ARGS: usize = 32;

pub(crate) struct Sql {
    text: String,
    args: AnyArguments,
    n: usize,
    /// `$n` placeholders (both databases) or `?` (SQLite only).
    numbered: bool,
}

impl Sql {
    pub(crate) fn new(text: String) -> Sql {
        Sql {
            text,
            args: AnyArguments::default(),
            n: 0,
            numbered: true,
        }
    }

    /// A statement for `backend`, with anonymous `?` placeholders on SQLite. Use it for
    /// statements with many arguments (multi-row inserts, long `IN` lists): SQLite finds a
    /// numbered parameter's name by a linear scan, so binding n numbered arguments costs n²
    /// string comparisons (with 10,000 arguments that was most of a bulk import's time).
    pub(crate) fn for_backend(text: String, backend: super::Backend) -> Sql {
        Sql {
            numbered: backend == super::Backend::Postgres,
            ..Sql::new(text)
        }
    }

    pub(crate) fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }

    /// Appends the next placeholder and binds `value` to it.
    pub(crate) fn bind<'t, T>(&mut self, value: T)
    where
        T: Encode<'t, Any> + Type<Any>,
    {
        self.n += 1;
        if self.numbered {
            self.text.push('$');
            self.text.push_str(&self.n.to_string());
        } else {
            self.text.push('?');
        }
        // Adding an argument to AnyArguments only fails for types the Any driver cannot encode,
        // which the bounds above rule out.
        let _ = self.args.add(value);
    }

    /// The query. Statements with many arguments (id lists of a claim, a batch) are not kept
    /// in the connection's statement cache: their text differs with every list length, and
    /// each cached one holds its compiled program, which grew the engine by tens of MB under a
    /// long backlog (BENCHMARKS.md, "The journal as the buffer").
    pub(crate) fn query(self) -> Query<'static, Any, AnyArguments> {
        let persistent = self.n <= MAX_CACHED_ARGS;
        sqlx::query_with(AssertSqlSafe(self.text), self.args).persistent(persistent)
    }
}
