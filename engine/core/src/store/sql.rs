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
}

impl Sql {
    pub(crate) fn new(text: String) -> Sql {
        Sql {
            text,
            args: AnyArguments::default(),
            n: 0,
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
        self.text.push('$');
        self.text.push_str(&self.n.to_string());
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
