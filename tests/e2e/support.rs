//! Shared helpers: fresh databases on both backends, configs from YAML text, waiting.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use huizhen_core::config::{self, Loaded, LoadedPipeline, RootConfig};
use huizhen_core::store::{Store, StoreOptions};

/// The backends every store test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// `DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`.
pub fn pg_admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A database that exists for one test: a SQLite file in a temp folder, or a new PostgreSQL
/// database (dropped when the guard is dropped).
pub struct TestDb {
    pub url: String,
    pub dir: tempfile::TempDir,
    pg_name: Option<String>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            let admin = pg_admin_url();
            // Best effort, on a thread of its own: Drop may run inside a runtime.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    use sqlx::Connection;
                    if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut c)
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

/// A fresh database, or `None` when PostgreSQL is not reachable outside CI (under `CI=true` a
/// missing service is a failure, not a skip).
pub async fn fresh_db(backend: Backend) -> Option<TestDb> {
    let dir = tempfile::tempdir().expect("temp dir");
    match backend {
        Backend::Sqlite => Some(TestDb {
            url: format!("sqlite://{}/journal.db", dir.path().display()),
            dir,
            pg_name: None,
        }),
        Backend::Postgres => {
            use sqlx::Connection;
            let admin = pg_admin_url();
            let mut c = match sqlx::PgConnection::connect(&admin).await {
                Ok(c) => c,
                Err(e) => {
                    if std::env::var("CI").is_ok_and(|v| v == "true") {
                        panic!("PostgreSQL at {admin} is required under CI=true: {e}");
                    }
                    eprintln!("skipping: PostgreSQL at {admin} is not reachable: {e}");
                    return None;
                }
            };
            let name = format!(
                "huizhen_t_{}",
                uuid_simple().chars().take(16).collect::<String>()
            );
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut c)
                .await
                .expect("create test database");
            let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
            Some(TestDb {
                url: format!("{base}/{name}"),
                dir,
                pg_name: Some(name),
            })
        }
    }
}

fn uuid_simple() -> String {
    huizhen_core::message::new_id().replace('-', "")[16..].to_owned()
        + &huizhen_core::message::new_id().replace('-', "")[20..]
}

/// Opens and migrates a store on a test database.
pub async fn store(db: &TestDb) -> Store {
    let s = Store::open(&StoreOptions::new(db.url.clone()))
        .await
        .expect("open store");
    s.migrate().await.expect("migrate");
    s
}

/// Builds a `Loaded` config from pipeline YAML texts, with the store on `db`.
pub fn loaded(db: &TestDb, pipelines: &[&str]) -> Loaded {
    let mut root = RootConfig::default();
    root.store.url = db.url.clone();
    root.journal.scheduler_poll = Duration::from_millis(50);
    root.security.jwt_secret_file = db.dir.path().join("jwt.secret");
    root.security.encryption.keys_file = db.dir.path().join("keys");
    root.security.audit.key_file = db.dir.path().join("audit.key");
    root.security.audit.checkpoint_file = db.dir.path().join("audit.checkpoints");
    let mut list = Vec::new();
    for (i, text) in pipelines.iter().enumerate() {
        let file = db.dir.path().join(format!("p{i}.yaml"));
        std::fs::write(&file, text).expect("write pipeline");
        let config = config::parse_yaml(Path::new(&file), text).expect("pipeline parses");
        list.push(LoadedPipeline { file, config });
    }
    let errors = config::check(&list);
    assert!(errors.is_empty(), "pipelines do not check: {errors:?}");
    Loaded {
        root,
        root_file: None,
        pipelines: list,
    }
}

/// Tests that use RabbitMQ hold this: one of them stops and starts the broker, which would
/// break the others' connections mid-test.
pub static BROKER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Whether the broker answers; under `CI=true` it must.
pub async fn broker_up() -> bool {
    match lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await {
        Ok(c) => {
            let _ = c.close(200, "probe".into()).await;
            true
        }
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("RabbitMQ at {} is required under CI=true: {e}", amqp_url());
            }
            eprintln!("skipping: RabbitMQ is not reachable: {e}");
            false
        }
    }
}

/// `rabbitmqctl ARGS`; `false` when it cannot be run or fails.
pub fn rabbitmqctl(args: &[&str]) -> bool {
    std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Deletes queues whose names start with `prefix` (best effort, through `rabbitmqctl`).
pub fn delete_queues(prefix: &str) {
    let Ok(out) = std::process::Command::new("rabbitmqctl")
        .args(["list_queues", "name", "--quiet", "--no-table-headers"])
        .output()
    else {
        return;
    };
    for name in String::from_utf8_lossy(&out.stdout).lines() {
        let name = name.trim();
        if name.starts_with(prefix) {
            let _ = std::process::Command::new("rabbitmqctl")
                .args(["delete_queue", name])
                .output();
        }
    }
}

/// Polls `f` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a test body once per backend.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::support::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::support::Backend::Postgres).await;
                }
            )*
        }
    };
}
pub(crate) use both_backends;
