//! Shared helpers: fresh databases on both backends, configs from YAML text, waiting, the
//! hold tests take on the shared broker (shared to use it, exclusive to stop it), and the
//! report that tells a message that ended `dead` from one that was lost; `api.rs` serves an
//! engine's API and calls it.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use huizhen_core::config::{self, Loaded, LoadedPipeline, RootConfig};
use huizhen_core::store::{Store, StoreOptions};

mod api;
pub mod paced;
mod rekey;
pub mod webdriver;
pub use api::{JsonApi, serve, serve_with};
pub use rekey::{rekey_pass, sealed_keys};

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

/// Whether this is a CI run: `CI` is `true` (any case) or `1`, the two values CI services set.
/// Under CI a missing service or tool is a failure, not a skip. The one place tests read `CI`.
pub fn under_ci() -> bool {
    ci_value(std::env::var("CI").ok().as_deref())
}

fn ci_value(v: Option<&str>) -> bool {
    v.is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

#[test]
fn ci_is_true_or_1() {
    for yes in ["true", "TRUE", "True", "1"] {
        assert!(ci_value(Some(yes)), "{yes}");
    }
    for no in [None, Some(""), Some("0"), Some("false"), Some("yes")] {
        assert!(!ci_value(no), "{no:?}");
    }
}

/// A fresh database, or `None` when PostgreSQL is not reachable outside CI (under CI a
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
                    if under_ci() {
                        panic!("PostgreSQL at {admin} is required under CI: {e}");
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
    loaded_with_plugins(db, pipelines, config::PluginsConfig::default())
}

/// [`loaded`] with a `plugins:` block (the pipelines are checked against it, as the engine
/// checks them).
pub fn loaded_with_plugins(
    db: &TestDb,
    pipelines: &[&str],
    plugins: config::PluginsConfig,
) -> Loaded {
    let mut root = RootConfig {
        plugins,
        ..RootConfig::default()
    };
    root.store.url = db.url.clone();
    root.journal.scheduler_poll = Duration::from_millis(50);
    root.security.jwt_secret_file = db.dir.path().join("jwt.secret");
    root.security.encryption.keys_file = db.dir.path().join("keys");
    root.security.audit.key_file = db.dir.path().join("audit.key");
    root.security.audit.checkpoint_file = db.dir.path().join("audit.checkpoints");
    root.objects.dir = db.dir.path().join("objects");
    let mut list = Vec::new();
    for (i, text) in pipelines.iter().enumerate() {
        let file = db.dir.path().join(format!("p{i}.yaml"));
        std::fs::write(&file, text).expect("write pipeline");
        let config = config::parse_yaml(Path::new(&file), text).expect("pipeline parses");
        list.push(LoadedPipeline { file, config });
    }
    let errors = config::check_with(
        &list,
        &huizhen_core::extensions::Extensions::new(&root.plugins),
    );
    assert!(errors.is_empty(), "pipelines do not check: {errors:?}");
    Loaded {
        root,
        root_file: None,
        pipelines: list,
    }
}

/// A hold on the shared RabbitMQ broker: an `flock` on one file in the temp folder, so it holds
/// between the test threads of this process and between test processes on this machine (two
/// `cargo test` runs, two worktrees). Tests that use the broker hold it shared and run side by
/// side; a test that stops and starts the broker holds it exclusively, so no other broker test
/// runs, or starts, while the broker is down. Released when dropped.
pub struct BrokerLock {
    _file: std::fs::File,
    exclusive: bool,
}

/// The file whose `flock` is the broker hold.
fn broker_lock_file() -> std::path::PathBuf {
    std::env::temp_dir().join("huizhen-e2e-broker.lock")
}

async fn broker_lock(exclusive: bool) -> BrokerLock {
    let path = broker_lock_file();
    tokio::task::spawn_blocking(move || lock_file(&path, exclusive))
        .await
        .expect("the broker lock task")
}

/// Blocks until `path` is locked, shared or exclusive.
fn lock_file(path: &Path, exclusive: bool) -> BrokerLock {
    let file = open_lock(path);
    if exclusive {
        file.lock()
    } else {
        file.lock_shared()
    }
    .unwrap_or_else(|e| panic!("lock {}: {e}", path.display()));
    BrokerLock {
        _file: file,
        exclusive,
    }
}

fn open_lock(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open the broker lock {}: {e}", path.display()))
}

/// Shared holds go together; an exclusive one waits for all of them, and keeps out the next
/// (also through another open of the file, as another test thread or process has).
#[test]
fn broker_lock_is_shared_or_exclusive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.lock");
    let a = lock_file(&path, false);
    let b = lock_file(&path, false);
    assert!(
        open_lock(&path).try_lock().is_err(),
        "exclusive while shared"
    );
    drop((a, b));
    let x = lock_file(&path, true);
    assert!(
        open_lock(&path).try_lock_shared().is_err(),
        "shared while exclusive"
    );
    assert!(open_lock(&path).try_lock().is_err(), "two exclusive");
    drop(x);
    assert!(
        open_lock(&path).try_lock_shared().is_ok(),
        "free once dropped"
    );
}

/// Held by a test that uses the broker without stopping it.
pub async fn broker_shared() -> BrokerLock {
    broker_lock(false).await
}

/// Held by a test that stops and starts the broker (see [`stop_broker`]).
pub async fn broker_exclusive() -> BrokerLock {
    broker_lock(true).await
}

/// The broker while a test has it stopped: [`StoppedBroker::start`] brings it back, and so does
/// dropping it (a test that fails while the broker is down must not leave it down for the
/// tests after it).
pub struct StoppedBroker {
    started: bool,
}

impl StoppedBroker {
    /// `rabbitmqctl start_app`, then waits until the broker takes connections again.
    pub async fn start(mut self) {
        self.started = true;
        if let Err(e) = rabbitmqctl_run(&["start_app"]) {
            panic!("rabbitmqctl start_app: {e}");
        }
        wait_for(
            "the broker to take connections",
            Duration::from_secs(60),
            || async {
                let c =
                    lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
                        .await
                        .ok()?;
                let _ = c.close(200, "probe".into()).await;
                Some(())
            },
        )
        .await;
    }
}

impl Drop for StoppedBroker {
    fn drop(&mut self) {
        if !self.started {
            let _ = rabbitmqctl_run(&["start_app"]);
        }
    }
}

/// Stops the broker (`rabbitmqctl stop_app`) for a test that holds it exclusively. `None`
/// when `rabbitmqctl` cannot be run or fails: outside CI the test then goes on without the
/// restart (and says so); under CI that fails the test, because a restart test that never
/// stopped the broker proves nothing.
pub fn stop_broker(hold: &BrokerLock) -> Option<StoppedBroker> {
    assert!(
        hold.exclusive,
        "stopping the broker needs the exclusive hold (broker_exclusive)"
    );
    match rabbitmqctl_run(&["stop_app"]) {
        Ok(()) => Some(StoppedBroker { started: false }),
        Err(e) if under_ci() => panic!("rabbitmqctl stop_app failed under CI: {e}"),
        Err(e) => {
            eprintln!("rabbitmqctl not usable here ({e}): the restart part is skipped");
            None
        }
    }
}

/// `AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Whether the broker answers; under CI it must.
pub async fn broker_up() -> bool {
    match lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await {
        Ok(c) => {
            let _ = c.close(200, "probe".into()).await;
            true
        }
        Err(e) => {
            if under_ci() {
                panic!("RabbitMQ at {} is required under CI: {e}", amqp_url());
            }
            eprintln!("skipping: RabbitMQ is not reachable: {e}");
            false
        }
    }
}

/// `rabbitmqctl ARGS`; the error says why it could not be run or what it printed on failure.
fn rabbitmqctl_run(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run rabbitmqctl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "rabbitmqctl {} exited with {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
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

/// Sends `sig` (`-STOP`, `-CONT`, …) to a child process with `kill`.
pub fn signal(child: &std::process::Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {}", child.id());
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

/// Like [`wait_for`], but on timeout fails with what `report` says (the state of the things
/// waited for), not only that time ran out.
pub async fn wait_for_or<T, F, Fut, R>(what: &str, timeout: Duration, mut f: F, report: R) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
    R: AsyncFnOnce() -> String,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() >= timeout {
            let why = report().await;
            panic!("timed out after {timeout:?} waiting for {what}: {why}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What became of messages a test expected to end `done`: how many are `done`, `dead` (their
/// retries ran out; the last error says why), still on their way (`received`, `processing`,
/// `failed` waiting for a retry) and missing (in the journal in no state at all: lost), with
/// up to 5 ids of each. A failure message that never takes a dead message for a lost one, nor
/// the other way round.
pub async fn fates(store: &Store, ids: &[String]) -> String {
    use std::collections::BTreeMap;
    let mut groups: BTreeMap<&'static str, (usize, Vec<String>)> = BTreeMap::new();
    for id in ids {
        let (group, example) = match store.get(id).await {
            Ok(Some(m)) if m.state == huizhen_core::message::State::Dead => {
                let error: String = m.last_error.unwrap_or_default().chars().take(120).collect();
                ("dead", format!("{id} ({error})"))
            }
            Ok(Some(m)) => (m.state.as_str(), id.clone()),
            Ok(None) => ("missing", id.clone()),
            Err(e) => ("unreadable", format!("{id} ({e})")),
        };
        let g = groups.entry(group).or_default();
        g.0 += 1;
        if g.1.len() < 5 {
            g.1.push(example);
        }
    }
    let mut out = format!("of {} messages expected done:", ids.len());
    for group in [
        "done",
        "dead",
        "failed",
        "processing",
        "received",
        "missing",
        "unreadable",
    ] {
        let (n, examples) = groups.remove(group).unwrap_or_default();
        out.push_str(&format!(" {group} {n}"));
        if group != "done" && n > 0 {
            out.push_str(&format!(" (e.g. {})", examples.join(", ")));
        }
        out.push(';');
    }
    out
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

/// A link that can be cut: relays 127.0.0.1:PORT to the broker while `up` is true; cutting it
/// drops the open connections and refuses new ones.
/// A broker URL (`AMQP_URL`'s credentials and vhost) through a [`cuttable_link`], and the
/// switch that cuts it (`false`) and restores it (`true`).
pub async fn broker_via_cuttable_link() -> (String, tokio::sync::watch::Sender<bool>) {
    let (up_tx, up_rx) = tokio::sync::watch::channel(true);
    let port = cuttable_link(up_rx).await;
    let url = amqp_url();
    let (scheme_user, rest) = url.split_once('@').unwrap();
    let vhost = rest.split_once('/').map_or("%2f", |(_, v)| v);
    (format!("{scheme_user}@127.0.0.1:{port}/{vhost}"), up_tx)
}

pub async fn cuttable_link(up: tokio::sync::watch::Receiver<bool>) -> u16 {
    let target = amqp_url()
        .split('@')
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or("127.0.0.1:5672")
        .to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            if !*up.borrow() {
                drop(inbound);
                continue;
            }
            let mut up = up.clone();
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = up.wait_for(|u| !*u) => {}
                }
            });
        }
    });
    port
}

/// Every message journaled for `pipeline`, with bodies, oldest id first (ids are time-ordered:
/// journal order).
pub async fn journaled(store: &Store, pipeline: &str) -> Vec<huizhen_core::message::Message> {
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list(&huizhen_core::store::ListFilter {
                pipeline: Some(pipeline.into()),
                limit: Some(1000),
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        all.extend(page.messages);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    all.sort_by(|a, b| a.id.cmp(&b.id));
    let mut full = Vec::with_capacity(all.len());
    for m in &all {
        full.push(store.get(&m.id).await.unwrap().unwrap());
    }
    full
}

/// GET `url` and read the answer as JSON: `None` when the request fails or the body is not
/// JSON (for polling a starting engine with [`wait_for`]).
pub async fn get_json(client: &reqwest::Client, url: &str) -> Option<serde_json::Value> {
    client.get(url).send().await.ok()?.json().await.ok()
}
