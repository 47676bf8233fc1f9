//! Statements for either driver: SQL text with its values, run by sqlx or rusqlite.

use std::borrow::Cow;

use sqlx::any::{Any, AnyArguments};
use sqlx::query::Query;
use sqlx::{AnyConnection, Arguments, AssertSqlSafe, Row};

use crate::store::{Backend, Result, q};

/// A value bound to a statement.
pub(super) enum Value<'a> {
    Null,
    /// NULL in a BLOB/BYTEA column (PostgreSQL wants the parameter typed as such).
    NullBlob,
    Int(i64),
    Text(Cow<'a, str>),
    Blob(&'a [u8]),
}

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<Option<i64>> for Value<'_> {
    fn from(v: Option<i64>) -> Self {
        v.map_or(Value::Null, Value::Int)
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Text(Cow::Borrowed(v))
    }
}

impl From<String> for Value<'_> {
    fn from(v: String) -> Self {
        Value::Text(Cow::Owned(v))
    }
}

impl<'a> From<Option<&'a str>> for Value<'a> {
    fn from(v: Option<&'a str>) -> Self {
        v.map_or(Value::Null, Value::from)
    }
}

impl<'a> From<&'a [u8]> for Value<'a> {
    fn from(v: &'a [u8]) -> Self {
        Value::Blob(v)
    }
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null | Value::NullBlob => ValueRef::Null,
            Value::Int(v) => ValueRef::Integer(*v),
            Value::Text(v) => ValueRef::Text(v.as_bytes()),
            Value::Blob(v) => ValueRef::Blob(v),
        }))
    }
}

/// SQL text and its arguments, for either executor. SQLite gets anonymous `?` placeholders
/// (sqlx's SQLite driver binds a numbered `$n` by asking SQLite for its name, a linear scan,
/// which makes binding a multi-row insert quadratic); PostgreSQL needs `$n`. Values are bound in
/// the order their placeholders appear.
pub(super) struct Stmt<'a> {
    pub(super) text: String,
    pub(super) args: Vec<Value<'a>>,
    numbered: bool,
}

impl<'a> Stmt<'a> {
    pub(super) fn new(backend: Backend, text: &str) -> Stmt<'a> {
        Stmt {
            text: text.to_owned(),
            args: Vec::new(),
            numbered: backend == Backend::Postgres,
        }
    }

    pub(super) fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }

    pub(super) fn bind(&mut self, value: impl Into<Value<'a>>) {
        self.args.push(value.into());
        if self.numbered {
            use std::fmt::Write;
            let _ = write!(self.text, "${}", self.args.len());
        } else {
            self.text.push('?');
        }
    }
}

/// Rows come back as text columns (all the writer reads back is ids, keys, hashes, states and
/// headers).
pub(super) type Rows = Vec<Vec<Option<String>>>;

/// Runs the writer's statements: sqlx (PostgreSQL, or SQLite through the pool) or rusqlite.
pub(super) trait Exec {
    fn backend(&self) -> Backend;
    async fn execute(&mut self, s: Stmt<'_>, op: &'static str) -> Result<u64>;
    async fn fetch(&mut self, s: Stmt<'_>, op: &'static str) -> Result<Rows>;
}

pub(super) struct SqlxExec<'c>(pub(super) &'c mut AnyConnection, pub(super) Backend);

impl SqlxExec<'_> {
    fn query(s: Stmt<'_>) -> Query<'static, Any, AnyArguments> {
        let mut args = AnyArguments::default();
        for v in s.args {
            // Adding an argument to AnyArguments only fails for types the Any driver cannot
            // encode; these four it can.
            let _ = match v {
                Value::Null => args.add(None::<i64>),
                Value::NullBlob => args.add(None::<Vec<u8>>),
                Value::Int(v) => args.add(v),
                Value::Text(v) => args.add(v.into_owned()),
                Value::Blob(v) => args.add(v.to_vec()),
            };
        }
        sqlx::query_with(AssertSqlSafe(s.text), args)
    }
}

impl Exec for SqlxExec<'_> {
    fn backend(&self) -> Backend {
        self.1
    }

    async fn execute(&mut self, s: Stmt<'_>, op: &'static str) -> Result<u64> {
        let r = Self::query(s).execute(&mut *self.0).await.map_err(q(op))?;
        Ok(r.rows_affected())
    }

    async fn fetch(&mut self, s: Stmt<'_>, op: &'static str) -> Result<Rows> {
        let rows = Self::query(s)
            .fetch_all(&mut *self.0)
            .await
            .map_err(q(op))?;
        rows.iter()
            .map(|r| {
                (0..r.columns().len())
                    .map(|i| r.try_get::<Option<String>, _>(i).map_err(q(op)))
                    .collect()
            })
            .collect()
    }
}

/// Row counts of the writer's multi-row statements, largest first. A batch is cut into chunks
/// of these sizes, so each statement's text is one of a handful and stays prepared in the
/// statement cache (a statement sized to each batch was compiled again for every batch, and
/// caching those grew the engine by tens of MB under a long backlog).
pub(super) const SIZES: [usize; 4] = [64, 16, 4, 1];

/// `items` cut into chunks of [`SIZES`], largest first.
pub(super) fn fixed_chunks<T>(mut items: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let n = SIZES.iter().copied().find(|&s| s <= items.len())?;
        let (chunk, rest) = items.split_at(n);
        items = rest;
        Some(chunk)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_cut_into_fixed_sizes() {
        let sizes = |n: usize| {
            let v: Vec<usize> = (0..n).collect();
            fixed_chunks(&v).map(<[usize]>::len).collect::<Vec<_>>()
        };
        assert_eq!(sizes(0), Vec::<usize>::new());
        assert_eq!(sizes(1), vec![1]);
        assert_eq!(sizes(7), vec![4, 1, 1, 1]);
        assert_eq!(sizes(64), vec![64]);
        assert_eq!(sizes(150), vec![64, 64, 16, 4, 1, 1]);
        let v: Vec<usize> = (0..1000).collect();
        let back: Vec<usize> = fixed_chunks(&v).flatten().copied().collect();
        assert_eq!(back, v, "every row once, in order");
    }
}
