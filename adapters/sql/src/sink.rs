//! `sql`: writes each message into another system's database (a LIS result table, a data
//! warehouse's staging table): PostgreSQL, MySQL/MariaDB or SQLite.
//!
//! ```yaml
//! sinks:
//!   - sql:
//!       url: ${LAB_DB_URL}               # postgres://…, mysql://…, sqlite://…
//!       statements:
//!         - sql: INSERT INTO lab_results (message_id, patient, code, value) VALUES ($1, $2, $3, $4)
//!           params: ["message.id", "hl7('PID-3[1].1')", "hl7('OBX-3.1')", "hl7('OBX-5')"]
//!       ledger: huizhen_deliveries       # default; `none`: the statements keep redeliveries out
//!       max_connections: 4
//!       timeout: 30s
//! ```
//!
//! Each statement is sent as written, in the target database's own dialect and placeholders
//! (`$1` on PostgreSQL, `?` on MySQL, either on SQLite), with its `params` bound in order: CEL
//! expressions over the message (`huizhen_core::expr`), compiled when the pipeline loads. A
//! string binds as text, an integer as a 64-bit integer, a number as a double, a boolean as a
//! boolean, null as a NULL, bytes as a blob, a list or map as its JSON text. On PostgreSQL the
//! values are typed: cast where a column's type differs (`$4::numeric`, `$5::date`).
//!
//! All statements of a message run in one transaction with a row in the ledger table
//! (`sink`, `message_id`, `delivered_at`; primary key on the first two; created if missing):
//! the ledger row is inserted first, so a message that was delivered before (a redelivery
//! after a crash, a reprocess) finds its row, is rolled back and counts as delivered, and two
//! engines delivering the same message at once wait on one another. With `ledger: none` the
//! statements must keep a second delivery out themselves (a unique key on the message id with
//! `ON CONFLICT DO NOTHING` / `INSERT IGNORE`); one of their params must then be `message.id`.
//!
//! Errors: a lost connection, a timeout, a deadlock or serialization failure, a busy SQLite
//! file are retried with the pipeline's backoff; an error the database reports about the
//! statement or the data (a syntax error, a missing table, a constraint) rolls the whole
//! message back and sends it to `dead` with the database's message.
//!
//! Architecture note: this and `huizhen_core::store` are the only places that issue SQL; this
//! one only to databases that are not the engine's own.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use huizhen_core::config::duration;
use huizhen_core::expr::Expr;
use huizhen_core::runner::BuildContext;
use huizhen_core::sinks::{Sink, SinkConfig};
use huizhen_core::store::{Effect, redact_url};
use huizhen_core::work::{StepError, Work};
use serde::Deserialize;
use sqlx::any::{AnyArguments, AnyPoolOptions};
use sqlx::{Any, AnyPool, AssertSqlSafe};

/// `- sql: {…}` in `sinks:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlSinkConfig {
    /// The target database: `postgres://`, `mysql://` (MariaDB too) or `sqlite://`.
    pub url: String,
    /// Run in order, in one transaction per message.
    pub statements: Vec<StatementConfig>,
    /// The table that records delivered messages (default `huizhen_deliveries`), or `none`.
    #[serde(default = "default_ledger")]
    pub ledger: String,
    /// Connections to the target at most (default 4).
    #[serde(default = "four")]
    pub max_connections: u32,
    /// How long to wait for a connection (default 30s); then the attempt is retried.
    #[serde(default = "thirty", with = "duration")]
    pub timeout: Duration,
    /// The sink's name in effects, errors and the ledger (default `sql#<index>`).
    #[serde(default)]
    pub name: Option<String>,
}

/// One statement of the `sql` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementConfig {
    /// The SQL, with the target's placeholders.
    pub sql: String,
    /// CEL expressions, one per placeholder, in order.
    #[serde(default)]
    pub params: Vec<Expr>,
}

fn default_ledger() -> String {
    "huizhen_deliveries".into()
}
fn four() -> u32 {
    4
}
fn thirty() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Postgres,
    MySql,
    Sqlite,
}

impl Backend {
    fn of(url: &str) -> Result<Backend, String> {
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or_default();
        Ok(match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => Backend::Postgres,
            "mysql" => Backend::MySql,
            "sqlite" => Backend::Sqlite,
            "mariadb" => {
                return Err(format!(
                    "url: {:?}: write mysql:// for MariaDB",
                    redact_url(url)
                ));
            }
            _ => {
                return Err(format!(
                    "url: {:?} is not a postgres://, mysql:// or sqlite:// URL",
                    redact_url(url)
                ));
            }
        })
    }

    /// The n-th (1-based) placeholder.
    fn placeholder(self, n: usize) -> String {
        match self {
            Backend::Postgres => format!("${n}"),
            Backend::MySql | Backend::Sqlite => "?".into(),
        }
    }
}

/// A table name: letters, digits and `_`, optionally schema-qualified.
fn valid_table(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').count() <= 2
        && name.split('.').all(|p| {
            !p.is_empty()
                && p.len() <= 63
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !p.starts_with(|c: char| c.is_ascii_digit())
        })
}

#[typetag::deserialize(name = "sql")]
impl SinkConfig for SqlSinkConfig {
    fn build(&self, ctx: &BuildContext, index: usize) -> Result<Arc<dyn Sink>, String> {
        let backend = Backend::of(&self.url)?;
        if self.statements.is_empty() {
            return Err("statements: give at least one statement".into());
        }
        for (i, s) in self.statements.iter().enumerate() {
            if s.sql.trim().is_empty() {
                return Err(format!("statements[{i}].sql: the statement is empty"));
            }
        }
        let ledger = match self.ledger.as_str() {
            "none" => {
                let binds_id = self
                    .statements
                    .iter()
                    .flat_map(|s| &s.params)
                    .any(|p| p.source().trim() == "message.id");
                if !binds_id {
                    return Err(
                        "ledger: \"none\" needs a statement that binds message.id (its unique key keeps a redelivery out)"
                            .into(),
                    );
                }
                None
            }
            t if valid_table(t) => Some(t.to_owned()),
            t => {
                return Err(format!(
                    "ledger: {t:?} is not a table name (letters, digits and _, optionally schema.table) or \"none\""
                ));
            }
        };
        if self.max_connections == 0 {
            return Err("max_connections: must be at least 1".into());
        }
        if self.timeout.is_zero() {
            return Err("timeout: must be more than 0".into());
        }
        let name = self.name.clone().unwrap_or_else(|| format!("sql#{index}"));
        Ok(Arc::new(SqlSink {
            key: format!("{}/{name}", ctx.pipeline),
            name,
            backend,
            ledger,
            config: self.clone(),
            pool: tokio::sync::OnceCell::new(),
        }))
    }
}

struct SqlSink {
    name: String,
    /// This sink's rows in the ledger: `pipeline/name`.
    key: String,
    backend: Backend,
    ledger: Option<String>,
    config: SqlSinkConfig,
    /// Connected on the first message (building does no I/O).
    pool: tokio::sync::OnceCell<AnyPool>,
}

/// A parameter's value, as bound.
#[derive(Debug, Clone, PartialEq)]
enum Param {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
}

fn param(v: cel::Value) -> Result<Param, String> {
    Ok(match v {
        cel::Value::Null => Param::Null,
        cel::Value::Bool(b) => Param::Bool(b),
        cel::Value::Int(i) => Param::Int(i),
        cel::Value::UInt(u) => {
            Param::Int(i64::try_from(u).map_err(|_| format!("{u} does not fit a 64-bit integer"))?)
        }
        cel::Value::Float(f) => Param::Float(f),
        cel::Value::String(s) => Param::Text(s.to_string()),
        cel::Value::Bytes(b) => Param::Bytes(b.to_vec()),
        other => {
            let json = other
                .json()
                .map_err(|e| format!("a value that is not JSON: {e}"))?;
            match json {
                serde_json::Value::String(s) => Param::Text(s),
                j => Param::Text(j.to_string()),
            }
        }
    })
}

fn bind<'q>(
    q: sqlx::query::Query<'q, Any, AnyArguments>,
    p: &'q Param,
) -> sqlx::query::Query<'q, Any, AnyArguments> {
    match p {
        Param::Null => q.bind(None::<String>),
        Param::Bool(b) => q.bind(*b),
        Param::Int(i) => q.bind(*i),
        Param::Float(f) => q.bind(*f),
        Param::Text(s) => q.bind(s.as_str()),
        Param::Bytes(b) => q.bind(b.as_slice()),
    }
}

/// Whether trying the same statements again later can succeed: connection and pool
/// problems, and the database's transient refusals (SQLSTATE classes 08, 40, 53, 57; SQLite
/// busy and locked).
fn retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            let code = d.code().map(|c| c.to_string()).unwrap_or_default();
            ["08", "40", "53", "57"].iter().any(|c| code.starts_with(c))
                || ["5", "6", "261", "262", "517", "773"].contains(&code.as_str())
        }
        sqlx::Error::Configuration(_)
        | sqlx::Error::InvalidArgument(_)
        | sqlx::Error::AnyDriverError(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Encode(_)
        | sqlx::Error::Decode(_)
        | sqlx::Error::TypeNotFound { .. } => false,
        _ => true,
    }
}

impl SqlSink {
    fn error(&self, what: &str, e: &sqlx::Error) -> StepError {
        let m = format!("{what}: {e}");
        if retryable(e) {
            StepError::new(m)
        } else {
            StepError::permanent(m)
        }
    }

    async fn pool(&self) -> Result<&AnyPool, StepError> {
        self.pool
            .get_or_try_init(|| async {
                sqlx::any::install_default_drivers();
                let pool = AnyPoolOptions::new()
                    .max_connections(self.config.max_connections)
                    .acquire_timeout(self.config.timeout)
                    .connect(&self.config.url)
                    .await
                    .map_err(|e| {
                        // The URL may hold a password: only its redacted form is shown.
                        StepError::new(format!(
                            "cannot connect to {}: {}",
                            redact_url(&self.config.url),
                            huizhen_core::work::causes(&e)
                        ))
                    })?;
                if let Some(t) = &self.ledger {
                    let ddl = format!(
                        "CREATE TABLE IF NOT EXISTS {t} (sink VARCHAR(190) NOT NULL, message_id VARCHAR(64) NOT NULL, delivered_at BIGINT NOT NULL, PRIMARY KEY (sink, message_id))"
                    );
                    sqlx::query(AssertSqlSafe(ddl))
                        .execute(&pool)
                        .await
                        .map_err(|e| self.error(&format!("creating the ledger table {t}"), &e))?;
                }
                Ok::<AnyPool, StepError>(pool)
            })
            .await
    }

    /// Runs the statements in one transaction; `false` when the ledger shows the message
    /// delivered already (nothing is written then).
    async fn write(&self, id: &str, params: &[Vec<Param>]) -> Result<(bool, u64), StepError> {
        let pool = self.pool().await?;
        let mut tx = pool
            .begin()
            .await
            .map_err(|e| self.error("beginning a transaction", &e))?;
        if let Some(t) = &self.ledger {
            let b = self.backend;
            let sql = format!(
                "INSERT INTO {t} (sink, message_id, delivered_at) VALUES ({}, {}, {})",
                b.placeholder(1),
                b.placeholder(2),
                b.placeholder(3)
            );
            let r = sqlx::query(AssertSqlSafe(sql))
                .bind(self.key.as_str())
                .bind(id)
                .bind(huizhen_core::message::now_ms())
                .execute(&mut *tx)
                .await;
            match r {
                Ok(_) => {}
                Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                    let _ = tx.rollback().await;
                    return Ok((false, 0));
                }
                Err(e) => return Err(self.error(&format!("the ledger table {t}"), &e)),
            }
        }
        let mut rows = 0;
        for (i, (s, values)) in self.config.statements.iter().zip(params).enumerate() {
            let mut q = sqlx::query(AssertSqlSafe(s.sql.clone()));
            for v in values {
                q = bind(q, v);
            }
            let r = q
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error(&format!("statements[{i}]"), &e))?;
            rows += r.rows_affected();
        }
        tx.commit()
            .await
            .map_err(|e| self.error("committing", &e))?;
        Ok((true, rows))
    }
}

impl Sink for SqlSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Vec<Effect>, StepError>> {
        Box::pin(async move {
            // Every value first: an expression that fails leaves the database untouched.
            let mut params = Vec::with_capacity(self.config.statements.len());
            for (i, s) in self.config.statements.iter().enumerate() {
                let mut values = Vec::with_capacity(s.params.len());
                for (j, p) in s.params.iter().enumerate() {
                    let v = p.eval(work)?;
                    values.push(param(v).map_err(|e| {
                        StepError::permanent(format!(
                            "statements[{i}].params[{j}] ({:?}): {e}",
                            p.source()
                        ))
                    })?);
                }
                params.push(values);
            }
            let (written, rows) = self.write(&work.id, &params).await?;
            Ok(vec![Effect {
                sink: self.name.clone(),
                pipeline: work.pipeline.clone(),
                body: serde_json::to_vec(&if written {
                    serde_json::json!({"statements": params.len(), "rows": rows})
                } else {
                    serde_json::json!({"delivered_before": true})
                })
                .unwrap_or_default(),
                as_received: false,
            }])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use huizhen_core::config::validate_text;

    fn check(sink: &str, expected: &[&str]) {
        let text = format!(
            "version: 1\nname: out\nsource:\n  http: {{ path: /in/out }}\nsinks:\n  - sql:\n{sink}"
        );
        assert_eq!(validate_text(&text), expected, "{sink}");
    }

    const STMT: &str = "      statements:\n        - sql: INSERT INTO t (id) VALUES ($1)\n          params: [message.id]\n";

    #[test]
    fn config_errors_name_line_and_column() {
        check(&format!("      url: postgres://u@h/db\n{STMT}"), &[]);
        check(
            &format!("      url: mariadb://root@127.0.0.1/lab\n{STMT}"),
            &["7:12: sinks[0]: url: \"mariadb://root@127.0.0.1/lab\": write mysql:// for MariaDB"],
        );
        check(
            &format!("      url: mysql://u:secret@h/db\n      ledger: \"x;drop\"\n{STMT}"),
            &[
                "8:15: sinks[0]: ledger: \"x;drop\" is not a table name (letters, digits and _, optionally schema.table) or \"none\"",
            ],
        );
        check(
            "      url: sqlite://lab.db\n      ledger: none\n      statements:\n        - sql: INSERT INTO t (v) VALUES (?)\n          params: [\"body.v\"]\n",
            &[
                "8:15: sinks[0]: ledger: \"none\" needs a statement that binds message.id (its unique key keeps a redelivery out)",
            ],
        );
        check(
            "      url: sqlite://lab.db\n      statements:\n        - sql: INSERT INTO t (v) VALUES (?)\n          params: [\"body.v +\"]\n",
            &[
                "10:29: invalid CEL expression \"body.v +\": syntax error at character 9: the expression ends too early (something is missing at the end)",
            ],
        );
        check(
            "      url: sqlite://lab.db\n      statements: []\n",
            &["6:5: sinks[0]: statements: give at least one statement"],
        );
    }

    #[test]
    fn values_bind_by_their_type() {
        use std::sync::Arc;
        let cases = [
            (cel::Value::Null, Param::Null),
            (cel::Value::Bool(true), Param::Bool(true)),
            (cel::Value::Int(-3), Param::Int(-3)),
            (cel::Value::UInt(7), Param::Int(7)),
            (cel::Value::Float(1.5), Param::Float(1.5)),
            (
                cel::Value::String(Arc::new("王".into())),
                Param::Text("王".into()),
            ),
            (
                cel::Value::Bytes(Arc::new(vec![0, 1])),
                Param::Bytes(vec![0, 1]),
            ),
            (
                cel::Value::List(Arc::new(vec![cel::Value::Int(1), cel::Value::Int(2)])),
                Param::Text("[1,2]".into()),
            ),
        ];
        for (v, expected) in cases {
            assert_eq!(param(v).unwrap(), expected);
        }
        assert!(param(cel::Value::UInt(u64::MAX)).is_err());
        assert!(valid_table("huizhen_deliveries"));
        assert!(valid_table("staging.deliveries"));
        assert!(!valid_table("a b"));
        assert!(!valid_table("1x"));
        assert_eq!(Backend::Postgres.placeholder(2), "$2");
        assert_eq!(Backend::MySql.placeholder(2), "?");
    }
}
