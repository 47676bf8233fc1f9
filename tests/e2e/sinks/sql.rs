//! The `sql` sink into SQLite, PostgreSQL and MariaDB/MySQL databases of the test's own.

use std::time::Duration;

use huizhen_core::Engine;
use huizhen_core::message::State;
use sqlx::AnyPool;

use super::{json, redeliver, settled};
use crate::support::{Backend, fresh_db, loaded, under_ci};

/// A target database: its URL, the placeholder style and what drops it.
struct Target {
    url: String,
    /// `$n` (PostgreSQL) or `?`.
    dollar: bool,
    _pg: Option<crate::support::TestDb>,
    mysql_db: Option<(String, String)>,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.mysql_db.take() {
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    if let Ok(pool) = AnyPool::connect(&admin).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name}"
                        )))
                        .execute(&pool)
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

/// `MYSQL_URL`, default `mysql://root@127.0.0.1:3306` (no database in the path).
fn mysql_admin_url() -> String {
    std::env::var("MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned())
}

async fn target(kind: &str, dir: &std::path::Path) -> Option<Target> {
    sqlx::any::install_default_drivers();
    match kind {
        "sqlite" => Some(Target {
            url: format!("sqlite://{}/lab.db?mode=rwc", dir.display()),
            dollar: false,
            _pg: None,
            mysql_db: None,
        }),
        "postgres" => {
            let db = fresh_db(Backend::Postgres).await?;
            Some(Target {
                url: db.url.clone(),
                dollar: true,
                _pg: Some(db),
                mysql_db: None,
            })
        }
        _ => {
            let admin = mysql_admin_url();
            let pool = match AnyPool::connect(&admin).await {
                Ok(p) => p,
                Err(e) => {
                    if under_ci() {
                        panic!("MariaDB/MySQL at {admin} is required under CI: {e}");
                    }
                    eprintln!("skipping: MariaDB/MySQL at {admin} is not reachable: {e}");
                    return None;
                }
            };
            let name = format!(
                "huizhen_t_{}",
                &huizhen_core::message::new_id().replace('-', "")[16..]
            );
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
            Some(Target {
                url: format!("{}/{name}", admin.trim_end_matches('/')),
                dollar: false,
                mysql_db: Some((admin, name)),
                _pg: None,
            })
        }
    }
}

async fn count(pool: &AnyPool, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Two messages in, one redelivered (nothing written twice), one refused by the database (its
/// whole transaction rolled back: the counter it bumped first stays as it was).
async fn sql_sink_writes_once_per_message_in_one_transaction(kind: &str) {
    let Some(db) = fresh_db(Backend::Sqlite).await else {
        return;
    };
    let Some(t) = target(kind, db.dir.path()).await else {
        return;
    };
    let pool = AnyPool::connect(&t.url).await.unwrap();
    for ddl in [
        "CREATE TABLE lab_results (message_id VARCHAR(64) NOT NULL, patient VARCHAR(64) NOT NULL, n BIGINT NOT NULL, note VARCHAR(200))",
        "CREATE TABLE lab_counts (c BIGINT NOT NULL)",
        "INSERT INTO lab_counts (c) VALUES (0)",
    ] {
        sqlx::query(ddl).execute(&pool).await.unwrap();
    }
    let ph = |n: usize| {
        if t.dollar {
            format!("${n}")
        } else {
            "?".to_owned()
        }
    };
    let yaml = format!(
        r#"version: 1
name: to-lab-db
source:
  http: {{ path: /in/to-lab-db }}
retry: {{ max_attempts: 3, backoff: 10ms, max_backoff: 20ms }}
sinks:
  - sql:
      url: "{url}"
      statements:
        - sql: UPDATE lab_counts SET c = c + 1
        - sql: INSERT INTO lab_results (message_id, patient, n, note) VALUES ({p1}, {p2}, {p3}, {p4})
          params: [message.id, "has(body.patient) ? body.patient : null", body.n, "has(body.note) ? body.note : null"]
"#,
        url = t.url,
        p1 = ph(1),
        p2 = ph(2),
        p3 = ph(3),
        p4 = ph(4),
    );
    let engine = Engine::start(loaded(&db, &[&yaml])).await.unwrap();
    let p = engine.pipeline("to-lab-db").unwrap().clone();
    let a = p
        .submit(json(r#"{"patient":"P1","n":3}"#, &[]))
        .await
        .unwrap()
        .id;
    let b = p
        .submit(json(r#"{"patient":"王小明","n":4,"note":"复查"}"#, &[]))
        .await
        .unwrap()
        .id;
    settled(&engine, &a, State::Done).await;
    settled(&engine, &b, State::Done).await;
    redeliver(&engine, &a).await;

    assert_eq!(count(&pool, "SELECT COUNT(*) FROM lab_results").await, 2);
    assert_eq!(count(&pool, "SELECT c FROM lab_counts").await, 2);
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM huizhen_deliveries").await,
        2
    );
    let (patient, note): (String, Option<String>) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT patient, note FROM lab_results WHERE message_id = {}",
        ph(1)
    )))
    .bind(b.as_str())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (patient.as_str(), note.as_deref()),
        ("王小明", Some("复查"))
    );
    let effects = engine.store.effects_of(&a).await.unwrap();
    assert_eq!(effects.len(), 1);
    let first: serde_json::Value = serde_json::from_slice(&effects[0].body).unwrap();
    assert_eq!(first, serde_json::json!({"statements": 2, "rows": 2}));

    // No patient: NOT NULL refuses the insert after the counter moved; all of it rolls back.
    let c = p.submit(json(r#"{"n":5}"#, &[])).await.unwrap().id;
    let m = settled(&engine, &c, State::Dead).await;
    assert_eq!(m.attempts, 1, "the database's refusal is not retried");
    let error = m.last_error.unwrap();
    assert!(error.starts_with("sql#0: statements[1]: "), "{error}");
    assert_eq!(count(&pool, "SELECT c FROM lab_counts").await, 2);
    assert_eq!(count(&pool, "SELECT COUNT(*) FROM lab_results").await, 2);
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM huizhen_deliveries").await,
        2
    );
    engine.shutdown(Duration::from_secs(5)).await;
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_sink_sqlite() {
    sql_sink_writes_once_per_message_in_one_transaction("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_sink_postgres() {
    sql_sink_writes_once_per_message_in_one_transaction("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_sink_mysql() {
    sql_sink_writes_once_per_message_in_one_transaction("mysql").await;
}
