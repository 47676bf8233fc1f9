//! Journal append + acknowledgement throughput, against a raw batched sqlx insert loop.
//!
//! `cargo bench -p huizhen-core --bench journal_append`
//!
//! For each backend (SQLite always; PostgreSQL when reachable), each producer count and, on
//! SQLite, each durability level, the benchmark starts from a fresh database and lets N
//! concurrent producers call `Journal::append` with 1 KB JSON bodies, each waiting for its
//! acknowledgement (the commit) before sending the next message. Then, on a fresh database
//! again, a single writer inserts the same rows with sqlx directly (native driver, multi-row
//! `INSERT` of `--baseline-batch` rows per transaction): the baseline. It prints a Markdown table
//! with both rates and their ratio.
//!
//! Options (command-line flag, or the environment variable in brackets):
//!
//! * `--messages N` (`BENCH_MESSAGES`, default 200000): messages per measurement
//! * `--producers 8,64` (`BENCH_PRODUCERS`): concurrent producers
//! * `--backends sqlite,postgres` (`BENCH_BACKENDS`)
//! * `--durability process-crash,power-loss` (`BENCH_DURABILITY`): SQLite durability levels
//! * `--baseline-batch 512` (`BENCH_BASELINE_BATCH`): rows per baseline transaction
//! * `--pg-url URL` (`BENCH_PG_URL`, default `postgres://postgres@127.0.0.1:5432/test`): an
//!   administrative connection; the benchmark creates and uses the database `huizhen_bench`
//!   next to it (and drops and recreates its tables), never the tables of the given database
//! * `--dir PATH` (`BENCH_DIR`, default a fresh directory under the system temporary directory)
//!
//! PostgreSQL is skipped with a note when unreachable, unless `CI=true`, where that is an error.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

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
const PIPELINE: &str = "bench";
const FACILITY: &str = "bench-facility";
const KIND: &str = "json";
const SOURCE: &str = "bench";
const BENCH_DB: &str = "huizhen_bench";
const INSERT_PREFIX: &str = "INSERT INTO messages (id, facility, pipeline, kind, body, headers, source, received_at, trace_id, dedup_key, body_hash, parent_id, state, updated_at) ";

struct Config {
    messages: usize,
    producers: Vec<usize>,
    backends: Vec<Backend>,
    durabilities: Vec<Durability>,
    baseline_batch: usize,
    pg_url: String,
    dir: Option<PathBuf>,
    ci: bool,
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
                | "--baseline-batch" | "--pg-url" | "--dir" => {
                    let v = args.next().ok_or_else(|| format!("{a} needs a value"))?;
                    flags.push((a, v));
                }
                "-h" | "--help" => {
                    eprintln!(
                        "journal_append [--messages N] [--producers 8,64] [--backends sqlite,postgres] \
                         [--durability process-crash,power-loss] [--baseline-batch 512] [--pg-url URL] [--dir PATH]"
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
        let baseline_batch = match get("--baseline-batch", "BENCH_BASELINE_BATCH") {
            Some(v) => v.parse()?,
            None => 512,
        };
        if messages == 0 || baseline_batch == 0 || producers.contains(&0) {
            return Err("--messages, --baseline-batch and --producers must be positive".into());
        }
        Ok(Config {
            messages,
            producers,
            backends,
            durabilities,
            baseline_batch,
            pg_url: get("--pg-url", "BENCH_PG_URL")
                .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into()),
            dir: get("--dir", "BENCH_DIR").map(PathBuf::from),
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
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}");
    debug_assert_eq!(s.len(), BODY_SIZE);
    s.into_bytes()
}

fn new_message(producer: usize, seq: usize) -> NewMessage {
    let mut m = NewMessage::new(PIPELINE, FACILITY, KIND, body(producer, seq));
    m.source = SOURCE.into();
    m
}

fn durability_label(backend: Backend, d: Durability, pg_settings: &str) -> String {
    match (backend, d) {
        (Backend::Sqlite, Durability::ProcessCrash) => {
            "process-crash: WAL, synchronous=NORMAL (survives kill -9, not power loss)".into()
        }
        (Backend::Sqlite, Durability::PowerLoss) => {
            "power-loss: WAL, synchronous=FULL (fsync per commit)".into()
        }
        (Backend::Postgres, _) => format!("power-loss: {pg_settings} (WAL flushed per commit)"),
    }
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
}

/// `producers` tasks share `n` appends; each waits for its acknowledgement before the next.
async fn run_journal(store: Store, producers: usize, n: usize) -> Res<Measure> {
    let journal = Journal::start(store.clone(), JournalOptions::default());
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(producers);
    for p in 0..producers {
        let count = n / producers + usize::from(p < n % producers);
        let journal = journal.clone();
        tasks.push(tokio::spawn(async move {
            for seq in 0..count {
                let a = journal.append(new_message(p, seq)).await?;
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
    drop(journal);
    let total: i64 = store.counts().await?.iter().map(|(_, _, c)| c).sum();
    if total != n as i64 {
        return Err(format!("journal: expected {n} messages, found {total}").into());
    }
    store.close().await;
    Ok(Measure {
        rate: n as f64 / elapsed.as_secs_f64(),
        elapsed,
    })
}

/// The row the journal writes for a fresh message without dedup key.
struct RawRow {
    id: String,
    body: Vec<u8>,
}

fn raw_rows(from: usize, k: usize) -> Vec<RawRow> {
    (from..from + k)
        .map(|i| RawRow {
            id: new_id(),
            body: body(0, i),
        })
        .collect()
}

macro_rules! push_raw_rows {
    ($qb:expr, $rows:expr, $now:expr) => {
        $qb.push_values($rows, |mut b, r: RawRow| {
            b.push_bind(r.id.clone())
                .push_bind(FACILITY)
                .push_bind(PIPELINE)
                .push_bind(KIND)
                .push_bind(r.body)
                .push_bind("{}")
                .push_bind(SOURCE)
                .push_bind($now)
                .push_bind(r.id)
                .push_bind(None::<String>)
                .push_bind(None::<String>)
                .push_bind(None::<String>)
                .push_bind("received")
                .push_bind($now);
        });
    };
}

async fn baseline_sqlite(path: &Path, d: Durability, n: usize, batch: usize) -> Res<Measure> {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match d {
            Durability::ProcessCrash => SqliteSynchronous::Normal,
            Durability::PowerLoss => SqliteSynchronous::Full,
        })
        .busy_timeout(Duration::from_secs(10));
    let mut conn = SqliteConnection::connect_with(&opts).await?;
    let start = Instant::now();
    let mut done = 0;
    while done < n {
        let k = batch.min(n - done);
        let rows = raw_rows(done, k);
        let now = now_ms();
        let mut qb = QueryBuilder::<Sqlite>::new(INSERT_PREFIX);
        push_raw_rows!(qb, rows, now);
        let mut tx = conn.begin().await?;
        qb.build().execute(&mut *tx).await?;
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
    })
}

async fn baseline_postgres(url: &str, n: usize, batch: usize) -> Res<Measure> {
    let mut conn = PgConnection::connect_with(&PgConnectOptions::from_str(url)?).await?;
    let start = Instant::now();
    let mut done = 0;
    while done < n {
        let k = batch.min(n - done);
        let rows = raw_rows(done, k);
        let now = now_ms();
        let mut qb = QueryBuilder::<Postgres>::new(INSERT_PREFIX);
        push_raw_rows!(qb, rows, now);
        let mut tx = conn.begin().await?;
        qb.build().execute(&mut *tx).await?;
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
    if let Err(e) = admin
        .execute(format!("CREATE DATABASE {BENCH_DB}").as_str())
        .await
    {
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

/// Drops the journal tables of the benchmark database and migrates it again.
async fn fresh_postgres(url: &str) -> Res<Store> {
    let mut conn = PgConnection::connect_with(&PgConnectOptions::from_str(url)?).await?;
    conn.execute(
        "DROP TABLE IF EXISTS messages, message_errors, effects, _sqlx_migrations; CHECKPOINT",
    )
    .await?;
    conn.close().await?;
    let store = Store::open(&StoreOptions {
        url: url.to_owned(),
        durability: Durability::PowerLoss,
        max_connections: 8,
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

struct Line {
    backend: &'static str,
    durability: String,
    producers: usize,
    journal: Measure,
    baseline: Measure,
}

fn fmt_rate(r: f64) -> String {
    let r = r.round() as u64;
    let s = r.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
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
    let mut lines: Vec<Line> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    eprintln!(
        "journal_append: {} messages of {BODY_SIZE} bytes per measurement, producers {:?}, baseline batch {}, sqlite files in {}",
        cfg.messages,
        cfg.producers,
        cfg.baseline_batch,
        tmp.display()
    );

    for &backend in &cfg.backends {
        match backend {
            Backend::Sqlite => {
                for &d in &cfg.durabilities {
                    for &p in &cfg.producers {
                        let store = fresh_sqlite(&db, d).await?;
                        let journal = run_journal(store, p, cfg.messages).await?;
                        eprintln!(
                            "  sqlite {} producers={p}: journal {} msg/s ({:.2?})",
                            durability_name(d),
                            fmt_rate(journal.rate),
                            journal.elapsed
                        );
                        fresh_sqlite(&db, d).await?.close().await;
                        let baseline =
                            baseline_sqlite(&db, d, cfg.messages, cfg.baseline_batch).await?;
                        eprintln!(
                            "  sqlite {} baseline: {} rows/s ({:.2?})",
                            durability_name(d),
                            fmt_rate(baseline.rate),
                            baseline.elapsed
                        );
                        lines.push(Line {
                            backend: "SQLite",
                            durability: durability_label(backend, d, ""),
                            producers: p,
                            journal,
                            baseline,
                        });
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
                        notes.push(format!(
                            "PostgreSQL skipped: {redacted} unreachable ({e})."
                        ));
                        continue;
                    }
                    Err(e) => return Err(format!("CI=true and PostgreSQL is unreachable: {e}").into()),
                };
                let settings = pg_settings(&url).await?;
                for &p in &cfg.producers {
                    let store = fresh_postgres(&url).await?;
                    let journal = run_journal(store, p, cfg.messages).await?;
                    eprintln!(
                        "  postgres producers={p}: journal {} msg/s ({:.2?})",
                        fmt_rate(journal.rate),
                        journal.elapsed
                    );
                    fresh_postgres(&url).await?.close().await;
                    let baseline = baseline_postgres(&url, cfg.messages, cfg.baseline_batch).await?;
                    eprintln!(
                        "  postgres baseline: {} rows/s ({:.2?})",
                        fmt_rate(baseline.rate),
                        baseline.elapsed
                    );
                    lines.push(Line {
                        backend: "PostgreSQL",
                        durability: durability_label(backend, Durability::PowerLoss, &settings),
                        producers: p,
                        journal,
                        baseline,
                    });
                }
                // Leave the benchmark database small.
                fresh_postgres(&url).await?.close().await;
            }
        }
    }
    if cfg.dir.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }

    println!();
    println!(
        "| backend | durability | producers | journal msg/s | baseline rows/s (batch {}) | ratio |",
        cfg.baseline_batch
    );
    println!("|---|---|---:|---:|---:|---:|");
    for l in &lines {
        println!(
            "| {} | {} | {} | {} | {} | {:.2} |",
            l.backend,
            l.durability,
            l.producers,
            fmt_rate(l.journal.rate),
            fmt_rate(l.baseline.rate),
            l.journal.rate / l.baseline.rate
        );
    }
    println!();
    println!(
        "{} messages of {BODY_SIZE} bytes per measurement; each producer waits for the commit of its message before sending the next.",
        cfg.messages
    );
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
