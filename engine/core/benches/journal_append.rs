//! Journal append + acknowledgement throughput, against a raw batched sqlx insert loop.
//!
//! `cargo bench -p huizhen-core --bench journal_append`
//!
//! For each backend (SQLite always; PostgreSQL when reachable), each producer count and, on
//! SQLite, each durability level, the benchmark starts from a fresh database and lets N
//! concurrent producers call `Journal::append` with 1 KB JSON bodies, each waiting for its
//! acknowledgement (the commit) before sending the next message. Then, each time on a fresh
//! database again, a single writer inserts the same rows with sqlx directly (native driver,
//! multi-row `INSERT`, one transaction per batch): the baseline, once with as many rows per
//! transaction as the journal's average batch and once with `--baseline-batch` rows. It prints a
//! Markdown table with the rates and the ratios.
//!
//! Options (command-line flag, or the environment variable in brackets):
//!
//! * `--messages N` (`BENCH_MESSAGES`, default 200000): messages per measurement
//! * `--producers 8,64` (`BENCH_PRODUCERS`): concurrent producers
//! * `--backends sqlite,postgres` (`BENCH_BACKENDS`)
//! * `--durability process-crash,power-loss` (`BENCH_DURABILITY`): SQLite durability levels
//! * `--baseline-batch 512` (`BENCH_BASELINE_BATCH`): rows per transaction of the second
//!   baseline (the first uses the journal's average batch size)
//! * `--writers N` (`BENCH_WRITERS`, default `JournalOptions::default()`): journal writer tasks
//!   on PostgreSQL (SQLite always has one)
//! * `--pg-url URL` (`BENCH_PG_URL`, default `postgres://postgres@127.0.0.1:5432/test`): an
//!   administrative connection; the benchmark creates and uses the database `huizhen_bench`
//!   next to it (and drops and recreates its tables), never the tables of the given database
//! * `--dir PATH` (`BENCH_DIR`, default a fresh directory under the system temporary directory)
//! * `--traffic plain,mllp` (`BENCH_TRAFFIC`): `plain` appends bodies alone, in clear; `mllp`
//!   appends what the MLLP source hands the journal: a dedup key per message (sender and
//!   control id, so each append is preceded by a dedup lookup), the source's seven headers, and
//!   encryption at rest on (body, headers and dedup key sealed, blind indexes), as the engine's
//!   default is. The raw baseline writes the same rows in clear with the dedup key column set.
//!
//! The baseline's SQLite connection gets the journal writer's settings (WAL, the same
//! `synchronous`, `cache_size`, `temp_store=MEMORY`). The durability column is what the database
//! reports on the journal's own connection (`PRAGMA synchronous`; PostgreSQL's `fsync` and
//! `synchronous_commit`), not what was asked for.
//!
//! PostgreSQL is skipped with a note when unreachable, unless `CI=true`, where that is an error.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use huizhen_core::crypto::{EncryptionConfig, Keyring};
use huizhen_core::message::{NewMessage, new_id, now_ms};
use huizhen_core::store::{Backend, Durability, Journal, JournalOptions, Store, StoreOptions};
use sqlx::postgres::{PgConnectOptions, PgConnection, Postgres};
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous,
};
use sqlx::{Connection, Executor, QueryBuilder, Row};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = std::result::Result<T, BoxError>;

const BODY_SIZE: usize = 1024;
const PAD: &str = match str::from_utf8(&[b'x'; BODY_SIZE]) {
    Ok(s) => s,
    Err(_) => panic!("ASCII"),
};
const PIPELINE: &str = "bench";
const FACILITY: &str = "bench-facility";
const KIND: &str = "json";
const SOURCE: &str = "bench";
const BENCH_DB: &str = "huizhen_bench";
// Journal v2's schema: the state row, and the body in `bodies` by id (the journal writes both).
const INSERT_PREFIX: &str = "INSERT INTO messages (id, facility, pipeline, kind, headers, source, received_at, trace_id, dedup_key, body_hash, parent_id, state, updated_at) ";
const INSERT_BODIES: &str = "INSERT INTO bodies (id, body) ";

struct Config {
    messages: usize,
    producers: Vec<usize>,
    backends: Vec<Backend>,
    durabilities: Vec<Durability>,
    baseline_batch: usize,
    writers: Option<usize>,
    pg_url: String,
    dir: Option<PathBuf>,
    traffics: Vec<Traffic>,
    ci: bool,
}

/// What each appended message carries (see the module's documentation).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Traffic {
    Plain,
    Mllp,
}

impl Traffic {
    fn name(self) -> &'static str {
        match self {
            Traffic::Plain => "plain",
            Traffic::Mllp => "mllp (dedup key, headers, encrypted)",
        }
    }
}

impl Config {
    fn parse() -> Res<Config> {
        let mut flags: Vec<(String, String)> = Vec::new();
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                // Passed by `cargo bench` to every bench target.
                "--bench" => {}
                "--messages" | "--producers" | "--backends" | "--durability"
                | "--baseline-batch" | "--writers" | "--pg-url" | "--dir" | "--traffic" => {
                    let v = args.next().ok_or_else(|| format!("{a} needs a value"))?;
                    flags.push((a, v));
                }
                "-h" | "--help" => {
                    eprintln!(
                        "journal_append [--messages N] [--producers 8,64] [--backends sqlite,postgres] \
                         [--durability process-crash,power-loss] [--baseline-batch 512] [--writers N] [--pg-url URL] [--dir PATH] [--traffic plain,mllp]"
                    );
                    std::process::exit(0);
                }
                // A name filter from `cargo bench <filter>`: this target has one benchmark.
                other if !other.starts_with('-') => {}
                other => return Err(format!("unknown option {other}").into()),
            }
        }
        let get = |flag: &str, env: &str| -> Option<String> {
            flags
                .iter()
                .rev()
                .find(|(f, _)| f == flag)
                .map(|(_, v)| v.clone())
                .or_else(|| std::env::var(env).ok().filter(|v| !v.trim().is_empty()))
        };
        let list = |s: String| -> Vec<String> {
            s.split(',')
                .map(|x| x.trim().to_ascii_lowercase())
                .filter(|x| !x.is_empty())
                .collect()
        };
        let messages = match get("--messages", "BENCH_MESSAGES") {
            Some(v) => v.replace('_', "").parse()?,
            None => 200_000,
        };
        let producers = match get("--producers", "BENCH_PRODUCERS") {
            Some(v) => list(v)
                .iter()
                .map(|x| x.parse::<usize>())
                .collect::<Result<Vec<_>, _>>()?,
            None => vec![8, 64],
        };
        let backends = match get("--backends", "BENCH_BACKENDS") {
            Some(v) => list(v)
                .iter()
                .map(|x| match x.as_str() {
                    "sqlite" => Ok(Backend::Sqlite),
                    "postgres" | "pg" | "postgresql" => Ok(Backend::Postgres),
                    other => Err(format!("unknown backend {other}")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => vec![Backend::Sqlite, Backend::Postgres],
        };
        let durabilities = match get("--durability", "BENCH_DURABILITY") {
            Some(v) => list(v)
                .iter()
                .map(|x| match x.as_str() {
                    "process-crash" => Ok(Durability::ProcessCrash),
                    "power-loss" => Ok(Durability::PowerLoss),
                    other => Err(format!("unknown durability {other}")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => vec![Durability::ProcessCrash, Durability::PowerLoss],
        };
        let traffics = match get("--traffic", "BENCH_TRAFFIC") {
            Some(v) => list(v)
                .iter()
                .map(|x| match x.as_str() {
                    "plain" => Ok(Traffic::Plain),
                    "mllp" => Ok(Traffic::Mllp),
                    other => Err(format!("unknown traffic {other} (plain, mllp)")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => vec![Traffic::Plain, Traffic::Mllp],
        };
        let baseline_batch = match get("--baseline-batch", "BENCH_BASELINE_BATCH") {
            Some(v) => v.parse()?,
            None => 512,
        };
        if messages == 0 || baseline_batch == 0 || producers.contains(&0) {
            return Err("--messages, --baseline-batch and --producers must be positive".into());
        }
        let writers = get("--writers", "BENCH_WRITERS")
            .map(|v| v.parse::<usize>())
            .transpose()?;
        Ok(Config {
            messages,
            writers,
            producers,
            backends,
            durabilities,
            baseline_batch,
            pg_url: get("--pg-url", "BENCH_PG_URL")
                .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into()),
            dir: get("--dir", "BENCH_DIR").map(PathBuf::from),
            traffics,
            ci: std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
        })
    }
}

/// A 1 KB JSON body, distinct per message.
fn body(producer: usize, seq: usize) -> Vec<u8> {
    let mut s = String::with_capacity(BODY_SIZE);
    s.push_str(&format!(
        r#"{{"producer":{producer},"seq":{seq},"event":"ADT^A01","patient":{{"mrn":"MRN{producer:03}{seq:09}","name":"DOE^JANE","birth_date":"1970-01-01"}},"note":""#
    ));
    let pad = BODY_SIZE - s.len() - 2;
    s.push_str(&PAD[..pad]);
    s.push_str("\"}");
    debug_assert_eq!(s.len(), BODY_SIZE);
    s.into_bytes()
}

fn new_message(producer: usize, seq: usize, traffic: Traffic) -> NewMessage {
    let mut m = NewMessage::new(PIPELINE, FACILITY, KIND, body(producer, seq));
    m.source = SOURCE.into();
    if traffic == Traffic::Mllp {
        m.dedup_key = Some(dedup_key(producer, seq));
        for (k, v) in MLLP_HEADERS {
            m.headers.insert((*k).into(), (*v).into());
        }
        m.headers
            .insert("hl7-control-id".into(), format!("{producer}-{seq}"));
    }
    m
}

/// MSH-3|MSH-4|MSH-10, as the MLLP source forms it.
fn dedup_key(producer: usize, seq: usize) -> String {
    format!("LIS|县医院检验科|{producer}-{seq}")
}

/// The MLLP source's headers but the control id (set per message).
const MLLP_HEADERS: &[(&str, &str)] = &[
    ("hl7-type", "ORU^R01"),
    ("hl7-version", "2.5.1"),
    ("hl7-charset", "GB18030"),
    ("hl7-sending-application", "LIS"),
    ("hl7-sending-facility", "县医院检验科"),
    ("hl7-app-ack", "Always"),
];

/// What a committed row of this target survives, from the settings the database reports:
/// on SQLite the journal writer's own connection (`PRAGMA synchronous`, read when it opened; the
/// journal mode is WAL), on PostgreSQL the server's `fsync` and `synchronous_commit`.
async fn durability_label(writer_sync: Option<&str>, target: &Target) -> Res<String> {
    Ok(match target {
        Target::Sqlite { .. } => {
            let sync = writer_sync.unwrap_or("not reported");
            let what = match sync {
                "FULL" | "EXTRA" => "power loss",
                "NORMAL" => "kill -9",
                _ => "unknown",
            };
            format!("{what} (WAL, synchronous={sync})")
        }
        Target::Postgres { url } => {
            let mut conn = PgConnection::connect_with(&PgConnectOptions::from_str(url)?).await?;
            let mut v = Vec::new();
            for name in ["fsync", "synchronous_commit"] {
                let x: String = sqlx::query(sqlx::AssertSqlSafe(format!("SHOW {name}")))
                    .fetch_one(&mut conn)
                    .await?
                    .try_get(0)?;
                v.push(x);
            }
            conn.close().await?;
            let what = if v[0] == "on" && v[1] != "off" && v[1] != "local" {
                "power loss"
            } else {
                "not power loss"
            };
            format!("{what} (fsync={}, synchronous_commit={})", v[0], v[1])
        }
    })
}

fn durability_name(d: Durability) -> &'static str {
    match d {
        Durability::ProcessCrash => "process-crash",
        Durability::PowerLoss => "power-loss",
    }
}

struct Measure {
    rate: f64,
    elapsed: Duration,
    /// Average operations per journal transaction (journal runs only).
    batch: Option<f64>,
    /// The journal writer's `synchronous` as its connection reported it (SQLite journal runs).
    sync: Option<&'static str>,
}

/// `producers` tasks share `n` appends; each waits for its acknowledgement before the next.
async fn run_journal(
    store: Store,
    producers: usize,
    cfg: &Config,
    traffic: Traffic,
) -> Res<Measure> {
    let n = cfg.messages;
    let mut opts = JournalOptions::default();
    if let Some(w) = cfg.writers {
        opts.writers = w;
    }
    let journal = Journal::start(store.clone(), opts);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(producers);
    for p in 0..producers {
        let count = n / producers + usize::from(p < n % producers);
        let journal = journal.clone();
        tasks.push(tokio::spawn(async move {
            for seq in 0..count {
                let a = journal.append(new_message(p, seq, traffic)).await?;
                if a.duplicate {
                    return Err::<(), BoxError>("unexpected duplicate".into());
                }
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = start.elapsed();
    let stats = journal.stats();
    let sync = journal.sqlite_synchronous();
    drop(journal);
    let total: i64 = store.counts().await?.iter().map(|(_, _, c)| c).sum();
    if total != n as i64 {
        return Err(format!("journal: expected {n} messages, found {total}").into());
    }
    store.close().await;
    Ok(Measure {
        rate: n as f64 / elapsed.as_secs_f64(),
        elapsed,
        batch: Some(stats.ops as f64 / stats.batches.max(1) as f64),
        sync,
    })
}

/// The rows the journal writes for a fresh message without dedup key (state row and body).
struct RawRow {
    id: String,
    body: Vec<u8>,
    dedup_key: Option<String>,
    headers: &'static str,
}

/// The MLLP traffic's headers as the state row keeps them (JSON), for the baseline's rows.
const MLLP_HEADERS_JSON: &str = r#"{"hl7-app-ack":"Always","hl7-charset":"GB18030","hl7-control-id":"0-000000","hl7-sending-application":"LIS","hl7-sending-facility":"县医院检验科","hl7-type":"ORU^R01","hl7-version":"2.5.1"}"#;

fn raw_rows(from: usize, k: usize, traffic: Traffic) -> Vec<RawRow> {
    (from..from + k)
        .map(|i| RawRow {
            id: new_id(),
            body: body(0, i),
            dedup_key: (traffic == Traffic::Mllp).then(|| dedup_key(0, i)),
            headers: match traffic {
                Traffic::Plain => "{}",
                Traffic::Mllp => MLLP_HEADERS_JSON,
            },
        })
        .collect()
}

macro_rules! push_raw_rows {
    ($qb:expr, $rows:expr, $now:expr) => {
        $qb.push_values($rows.iter(), |mut b, r: &RawRow| {
            b.push_bind(r.id.clone())
                .push_bind(FACILITY)
                .push_bind(PIPELINE)
                .push_bind(KIND)
                .push_bind(r.headers)
                .push_bind(SOURCE)
                .push_bind($now)
                .push_bind(r.id.clone())
                .push_bind(r.dedup_key.clone())
                .push_bind(None::<String>)
                .push_bind(None::<String>)
                .push_bind("received")
                .push_bind($now);
        });
    };
}

async fn baseline_sqlite(
    path: &Path,
    d: Durability,
    n: usize,
    batch: usize,
    traffic: Traffic,
) -> Res<Measure> {
    // The journal writer's settings (store/journal/sqlite.rs).
    let cache_kib = (huizhen_core::store::DEFAULT_SQLITE_CACHE / 1024).max(64);
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match d {
            Durability::ProcessCrash => SqliteSynchronous::Normal,
            Durability::PowerLoss => SqliteSynchronous::Full,
        })
        .pragma("cache_size", format!("-{cache_kib}"))
        .pragma("temp_store", "MEMORY")
        .busy_timeout(Duration::from_secs(10));
    let mut conn = SqliteConnection::connect_with(&opts).await?;
    let start = Instant::now();
    let mut done = 0;
    while done < n {
        let k = batch.min(n - done);
        let rows = raw_rows(done, k, traffic);
        let now = now_ms();
        let mut qb = QueryBuilder::<Sqlite>::new(INSERT_PREFIX);
        push_raw_rows!(qb, rows, now);
        let mut bodies = QueryBuilder::<Sqlite>::new(INSERT_BODIES);
        bodies.push_values(rows, |mut b, r: RawRow| {
            b.push_bind(r.id).push_bind(r.body);
        });
        let mut tx = conn.begin().await?;
        qb.build().execute(&mut *tx).await?;
        bodies.build().execute(&mut *tx).await?;
        tx.commit().await?;
        done += k;
    }
    let elapsed = start.elapsed();
    let total: i64 = sqlx::query("SELECT COUNT(*) AS n FROM messages")
        .fetch_one(&mut conn)
        .await?
        .try_get("n")?;
    if total != n as i64 {
        return Err(format!("baseline: expected {n} rows, found {total}").into());
    }
    conn.close().await?;
    Ok(Measure {
        rate: n as f64 / elapsed.as_secs_f64(),
        elapsed,
        batch: None,
        sync: None,
    })
}

async fn baseline_postgres(url: &str, n: usize, batch: usize, traffic: Traffic) -> Res<Measure> {
    let mut conn = PgConnection::connect_with(&PgConnectOptions::from_str(url)?).await?;
    let start = Instant::now();
    let mut done = 0;
    while done < n {
        let k = batch.min(n - done);
        let rows = raw_rows(done, k, traffic);
        let now = now_ms();
        let mut qb = QueryBuilder::<Postgres>::new(INSERT_PREFIX);
        push_raw_rows!(qb, rows, now);
        let mut bodies = QueryBuilder::<Postgres>::new(INSERT_BODIES);
        bodies.push_values(rows, |mut b, r: RawRow| {
            b.push_bind(r.id).push_bind(r.body);
        });
        let mut tx = conn.begin().await?;
        qb.build().execute(&mut *tx).await?;
        bodies.build().execute(&mut *tx).await?;
        tx.commit().await?;
        done += k;
    }
    let elapsed = start.elapsed();
    let total: i64 = sqlx::query("SELECT COUNT(*) AS n FROM messages")
        .fetch_one(&mut conn)
        .await?
        .try_get("n")?;
    if total != n as i64 {
        return Err(format!("baseline: expected {n} rows, found {total}").into());
    }
    conn.close().await?;
    Ok(Measure {
        rate: n as f64 / elapsed.as_secs_f64(),
        elapsed,
        batch: None,
        sync: None,
    })
}

fn remove_sqlite_files(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// A fresh, migrated SQLite journal at `path`.
async fn fresh_sqlite(path: &Path, d: Durability) -> Res<Store> {
    remove_sqlite_files(path);
    let store = Store::open(&StoreOptions {
        url: format!("sqlite://{}", path.display()),
        durability: d,
        max_connections: 8,
        sqlite_cache: huizhen_core::store::DEFAULT_SQLITE_CACHE,
    })
    .await?;
    store.migrate().await?;
    Ok(store)
}

/// Creates the benchmark database next to the administrative one; returns its URL.
async fn prepare_pg_database(admin_url: &str) -> Res<String> {
    let admin_opts = PgConnectOptions::from_str(admin_url)?;
    let mut admin = tokio::time::timeout(
        Duration::from_secs(5),
        PgConnection::connect_with(&admin_opts),
    )
    .await
    .map_err(|_| "timed out connecting")??;
    if let Err(e) = admin.execute("CREATE DATABASE huizhen_bench").await {
        let exists = e
            .as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|c| c == "42P04");
        if !exists {
            return Err(e.into());
        }
    }
    admin.close().await?;
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin_url, None),
    };
    let (prefix, _db) = base
        .rsplit_once('/')
        .filter(|(p, _)| p.contains("://") && !p.ends_with('/'))
        .ok_or("cannot find the database name in the PostgreSQL URL")?;
    let mut url = format!("{prefix}/{BENCH_DB}");
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    Ok(url)
}

/// Empties the benchmark database (every table the migrations make, not only the journal's)
/// and migrates it again.
async fn fresh_postgres(url: &str) -> Res<Store> {
    let mut conn = PgConnection::connect_with(&PgConnectOptions::from_str(url)?).await?;
    conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public; CHECKPOINT")
        .await?;
    conn.close().await?;
    let store = Store::open(&StoreOptions {
        url: url.to_owned(),
        durability: Durability::PowerLoss,
        max_connections: 8,
        sqlite_cache: huizhen_core::store::DEFAULT_SQLITE_CACHE,
    })
    .await?;
    store.migrate().await?;
    Ok(store)
}

async fn pg_settings(url: &str) -> Res<String> {
    let mut conn = PgConnection::connect_with(&PgConnectOptions::from_str(url)?).await?;
    let mut out = Vec::new();
    for name in ["fsync", "synchronous_commit", "wal_sync_method"] {
        let v: String = sqlx::query(sqlx::AssertSqlSafe(format!("SHOW {name}")))
            .fetch_one(&mut conn)
            .await?
            .try_get(0)?;
        out.push(format!("{name}={v}"));
    }
    let version: String = sqlx::query("SHOW server_version")
        .fetch_one(&mut conn)
        .await?
        .try_get(0)?;
    conn.close().await?;
    Ok(format!("PostgreSQL {version}, {}", out.join(", ")))
}

/// A database to measure: the journal and the baseline each start from a fresh one.
enum Target {
    Sqlite {
        path: PathBuf,
        durability: Durability,
    },
    Postgres {
        url: String,
    },
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Target::Sqlite { .. } => "SQLite",
            Target::Postgres { .. } => "PostgreSQL",
        }
    }

    async fn fresh(&self) -> Res<Store> {
        match self {
            Target::Sqlite { path, durability } => fresh_sqlite(path, *durability).await,
            Target::Postgres { url } => fresh_postgres(url).await,
        }
    }

    async fn baseline(&self, n: usize, batch: usize, traffic: Traffic) -> Res<Measure> {
        self.fresh().await?.close().await;
        match self {
            Target::Sqlite { path, durability } => {
                baseline_sqlite(path, *durability, n, batch, traffic).await
            }
            Target::Postgres { url } => baseline_postgres(url, n, batch, traffic).await,
        }
    }
}

struct Line {
    backend: &'static str,
    durability: String,
    traffic: Traffic,
    producers: usize,
    journal: Measure,
    /// Baseline with as many rows per transaction as the journal's average batch.
    matched: (usize, Measure),
    /// Baseline with `--baseline-batch` rows per transaction.
    fixed: Measure,
}

/// Measures the journal with `producers`, then the baseline at the batch size the journal
/// reached and at `--baseline-batch`.
async fn measure(
    cfg: &Config,
    target: &Target,
    producers: usize,
    traffic: Traffic,
    keyring: &std::sync::Arc<Keyring>,
) -> Res<Line> {
    let label = match target {
        Target::Sqlite { durability, .. } => {
            format!("sqlite {}", durability_name(*durability))
        }
        Target::Postgres { .. } => "postgres".to_owned(),
    };
    let label = format!("{label} {}", traffic.name());
    let store = target.fresh().await?;
    let store = match traffic {
        Traffic::Plain => store,
        Traffic::Mllp => store.with_keyring(Some(keyring.clone())),
    };
    let journal = run_journal(store, producers, cfg, traffic).await?;
    let durability = durability_label(journal.sync, target).await?;
    let avg = journal.batch.unwrap_or(1.0);
    eprintln!(
        "  {label} producers={producers}: journal {} msg/s ({:.2?}, avg batch {avg:.1})",
        fmt_rate(journal.rate),
        journal.elapsed,
    );
    let matched_batch = (avg.round() as usize).max(1);
    let matched = target
        .baseline(cfg.messages, matched_batch, traffic)
        .await?;
    eprintln!(
        "  {label} baseline batch {matched_batch}: {} rows/s ({:.2?})",
        fmt_rate(matched.rate),
        matched.elapsed
    );
    let fixed = target
        .baseline(cfg.messages, cfg.baseline_batch, traffic)
        .await?;
    eprintln!(
        "  {label} baseline batch {}: {} rows/s ({:.2?})",
        cfg.baseline_batch,
        fmt_rate(fixed.rate),
        fixed.elapsed
    );
    Ok(Line {
        backend: target.name(),
        durability,
        traffic,
        producers,
        journal,
        matched: (matched_batch, matched),
        fixed,
    })
}

fn fmt_rate(r: f64) -> String {
    let r = r.round() as u64;
    let s = r.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

async fn run(cfg: Config) -> Res<()> {
    let tmp = cfg.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("huizhen-bench-{}", std::process::id()))
    });
    std::fs::create_dir_all(&tmp)?;
    let db = tmp.join("bench.db");
    // The key file of the `mllp` traffic's encryption at rest (created with fresh keys).
    let keyring = Keyring::from_config(&EncryptionConfig {
        keys_file: tmp.join("keys"),
        ..EncryptionConfig::default()
    })?
    .ok_or("encryption is on by default")?;
    let mut lines: Vec<Line> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    eprintln!(
        "journal_append: {} messages of {BODY_SIZE} bytes per measurement, producers {:?}, baseline batch {}, sqlite files in {}",
        cfg.messages,
        cfg.producers,
        cfg.baseline_batch,
        tmp.display()
    );

    let mut pg_settings_line = None;
    for &backend in &cfg.backends {
        match backend {
            Backend::Sqlite => {
                for &durability in &cfg.durabilities {
                    let target = Target::Sqlite {
                        path: db.clone(),
                        durability,
                    };
                    for &traffic in &cfg.traffics {
                        for &p in &cfg.producers {
                            lines.push(measure(&cfg, &target, p, traffic, &keyring).await?);
                        }
                    }
                }
                remove_sqlite_files(&db);
            }
            Backend::Postgres => {
                let url = match prepare_pg_database(&cfg.pg_url).await {
                    Ok(url) => url,
                    Err(e) if !cfg.ci => {
                        let redacted = huizhen_core::store::redact_url(&cfg.pg_url);
                        eprintln!("  postgres at {redacted} unreachable ({e}): skipped");
                        notes.push(format!("PostgreSQL skipped: {redacted} unreachable ({e})."));
                        continue;
                    }
                    Err(e) => {
                        return Err(format!("CI=true and PostgreSQL is unreachable: {e}").into());
                    }
                };
                pg_settings_line = Some(pg_settings(&url).await?);
                let target = Target::Postgres { url };
                for &traffic in &cfg.traffics {
                    for &p in &cfg.producers {
                        lines.push(measure(&cfg, &target, p, traffic, &keyring).await?);
                    }
                }
                // Leave the benchmark database small.
                target.fresh().await?.close().await;
            }
        }
    }
    if cfg.dir.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }

    println!();
    println!(
        "| backend | durable against (as the database reports) | traffic | producers | journal msg/s | avg batch | raw sqlx, same batch | ratio | raw sqlx, batch {} | ratio |",
        cfg.baseline_batch
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for l in &lines {
        println!(
            "| {} | {} | {} | {} | {} | {:.1} | {} (batch {}) | {:.2} | {} | {:.2} |",
            l.backend,
            l.durability,
            l.traffic.name(),
            l.producers,
            fmt_rate(l.journal.rate),
            l.journal.batch.unwrap_or(0.0),
            fmt_rate(l.matched.1.rate),
            l.matched.0,
            l.journal.rate / l.matched.1.rate,
            fmt_rate(l.fixed.rate),
            l.journal.rate / l.fixed.rate,
        );
    }
    println!();
    println!(
        "{} messages of {BODY_SIZE} bytes per measurement; each producer waits for the commit of its message before sending the next. \
         Raw sqlx: one writer, native driver, multi-row INSERT of the same rows (in clear, the dedup key column set for mllp traffic), \
         one transaction per batch, SQLite with the journal writer's settings.",
        cfg.messages
    );
    if let Some(s) = pg_settings_line {
        println!("PostgreSQL: {s}.");
    }
    for n in notes {
        println!("{n}");
    }
    Ok(())
}

fn main() {
    let cfg = match Config::parse() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("journal_append: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(run(cfg)) {
        eprintln!("journal_append: {e}");
        std::process::exit(1);
    }
}
