//! The journal as the buffer (issue 23): intake with the destination down against intake with
//! it up, memory while a backlog grows, and the time to drain it.
//!
//! `cargo bench -p huizhen-core --bench journal_buffer`
//!
//! One engine per measurement, in this process, on SQLite in a fresh directory (bodies sealed
//! with AES-256-GCM, as by default), one pipeline with the default in-memory `queue` (1,024),
//! `concurrency: 4` and a `journal` sink. `P` producers call `PipelineHandle::submit` with 1 KB
//! JSON bodies, each waiting for its acknowledgement (the journal commit) before the next, as
//! senders do.
//!
//! * **up**: the destination is fast (a pass-through step): the intake rate while the workers
//!   process alongside.
//! * **down**: the destination hangs (a `stall` step holds every message until released): every
//!   message beyond the queue waits in the journal. Intake rate, and peak RSS (`VmHWM`) against
//!   the idle engine's with all N messages waiting.
//! * **drain**: the destination comes back; the time until all N are `done`.
//!
//! The issue's targets: down ≥ 0.9 × up; peak RSS with 1,000,000 waiting at most 50 MB above the
//! idle engine's.
//!
//! Options: `--messages N` (`BENCH_MESSAGES`, default 1000000), `--producers P`
//! (`BENCH_PRODUCERS`, default 64), `--dir PATH` (`BENCH_DIR`, default a fresh temp directory),
//! `--sqlite-cache BYTES` (`BENCH_SQLITE_CACHE`, default `store.sqlite_cache`'s), `--down-only`
//! (only the destination-down run and its memory figures).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use huizhen_core::Engine;
use huizhen_core::config::{Loaded, LoadedPipeline, RootConfig, check, parse_yaml};
use huizhen_core::message::{NewMessage, State};
use huizhen_core::runner::BuildContext;
use huizhen_core::steps::{Step, StepConfig};
use huizhen_core::work::{Flow, StepError, Work};
use serde::Deserialize;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = std::result::Result<T, BoxError>;

/// Whether the destination is down: the `stall` step holds messages while this is set.
static DOWN: AtomicBool = AtomicBool::new(false);
static RELEASED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// `stall: {}`: holds each message while the destination is down.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StallConfig {}

#[typetag::deserialize(name = "stall")]
impl StepConfig for StallConfig {
    fn type_name(&self) -> &'static str {
        "stall"
    }

    fn build(&self, _ctx: &BuildContext) -> std::result::Result<Arc<dyn Step>, String> {
        Ok(Arc::new(Stall))
    }
}

struct Stall;

impl Step for Stall {
    fn apply<'a>(
        &'a self,
        _work: &'a mut Work,
    ) -> BoxFuture<'a, std::result::Result<Flow, StepError>> {
        Box::pin(async move {
            while DOWN.load(Ordering::SeqCst) {
                let released = RELEASED.notified();
                tokio::pin!(released);
                released.as_mut().enable();
                if !DOWN.load(Ordering::SeqCst) {
                    break;
                }
                released.await;
            }
            Ok(Flow::Continue)
        })
    }
}

struct Config {
    messages: usize,
    producers: usize,
    dir: Option<PathBuf>,
    /// `store.sqlite_cache` of the engines (the journal writer's page cache).
    sqlite_cache: u64,
    /// Only the destination-down run and its memory figures (for attributing memory).
    down_only: bool,
}

impl Config {
    fn parse() -> Res<Config> {
        let args: Vec<String> = std::env::args().collect();
        let get = |flag: &str, env: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1).cloned())
                .or_else(|| std::env::var(env).ok())
        };
        Ok(Config {
            messages: get("--messages", "BENCH_MESSAGES")
                .map(|v| v.parse())
                .transpose()?
                .unwrap_or(1_000_000),
            producers: get("--producers", "BENCH_PRODUCERS")
                .map(|v| v.parse())
                .transpose()?
                .unwrap_or(64),
            dir: get("--dir", "BENCH_DIR").map(PathBuf::from),
            sqlite_cache: get("--sqlite-cache", "BENCH_SQLITE_CACHE")
                .map(|v| v.parse())
                .transpose()?
                .unwrap_or(huizhen_core::store::DEFAULT_SQLITE_CACHE),
            down_only: args.iter().any(|a| a == "--down-only"),
        })
    }
}

/// Peak and current resident memory of this process, KiB (`VmHWM`, `VmRSS`).
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

async fn engine(dir: &Path, sqlite_cache: u64) -> Res<Engine> {
    std::fs::create_dir_all(dir)?;
    let mut root = RootConfig::default();
    root.store.url = format!("sqlite://{}/journal.db", dir.display());
    root.store.sqlite_cache = sqlite_cache;
    root.security.encryption.keys_file = dir.join("keys");
    root.security.jwt_secret_file = dir.join("jwt.secret");
    root.security.audit.key_file = dir.join("audit.key");
    root.security.audit.checkpoint_file = dir.join("audit.checkpoints");
    let yaml = "version: 1\nname: bench\nsource:\n  http: { path: /in/bench, kind: json }\nconcurrency: 4\nsteps:\n  - stall: {}\nsinks:\n  - journal: {}\n";
    let file = dir.join("bench.yaml");
    std::fs::write(&file, yaml)?;
    let config = parse_yaml(&file, yaml).map_err(|e| format!("{e:?}"))?;
    let pipelines = vec![LoadedPipeline { file, config }];
    let errors = check(&pipelines);
    if !errors.is_empty() {
        return Err(format!("pipeline does not check: {errors:?}").into());
    }
    Ok(Engine::start(Loaded {
        root,
        root_file: None,
        pipelines,
    })
    .await?)
}

/// Submits `n` messages from `producers` tasks; the intake rate (msg/s).
async fn intake(engine: &Engine, n: usize, producers: usize) -> Res<f64> {
    let p = engine.pipeline("bench").ok_or("no pipeline")?.clone();
    let pad = "x".repeat(1000);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..producers {
        let p = p.clone();
        let pad = pad.clone();
        tasks.spawn(async move {
            for i in (t..n).step_by(producers) {
                let body = format!(r#"{{"seq":{i},"pad":"{pad}"}}"#);
                p.submit(NewMessage::new("bench", "", "json", body.into_bytes()))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

async fn done(engine: &Engine) -> i64 {
    engine
        .store
        .counts()
        .await
        .map(|c| {
            c.iter()
                .filter(|(_, s, _)| *s == State::Done)
                .map(|x| x.2)
                .sum()
        })
        .unwrap_or(0)
}

async fn run(cfg: Config) -> Res<()> {
    let base = cfg.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("huizhen-buffer-{}", std::process::id()))
    });
    let n = cfg.messages;
    println!(
        "journal_buffer: {n} messages of 1 KB, {} producers, queue 1024, concurrency 4, SQLite, encrypted bodies",
        cfg.producers
    );

    // Down: the destination hangs; everything beyond the queue waits in the journal.
    DOWN.store(true, Ordering::SeqCst);
    let down_engine = engine(&base.join("down"), cfg.sqlite_cache).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, idle_rss) = memory_kib();
    let down = intake(&down_engine, n, cfg.producers).await?;
    let (peak, rss_waiting) = memory_kib();
    let waiting = down_engine
        .store
        .backlog_of(&["bench".to_owned()])
        .await?
        .iter()
        .map(|b| b.messages)
        .sum::<i64>();

    if cfg.down_only {
        println!(
            "down only: {down:.0} msg/s, {waiting} waiting, RSS idle {:.1} MB → {:.1} MB (+{:.1} MB), peak {:.1} MB, sqlite_cache {} MiB",
            idle_rss as f64 / 1024.0,
            rss_waiting as f64 / 1024.0,
            (rss_waiting as f64 - idle_rss as f64) / 1024.0,
            peak as f64 / 1024.0,
            cfg.sqlite_cache / (1024 * 1024)
        );
        down_engine.shutdown(Duration::from_secs(30)).await;
        if cfg.dir.is_none() {
            let _ = std::fs::remove_dir_all(&base);
        }
        return Ok(());
    }

    // Drain: the destination comes back.
    let t0 = Instant::now();
    DOWN.store(false, Ordering::SeqCst);
    RELEASED.notify_waiters();
    while (done(&down_engine).await as usize) < n {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drain = t0.elapsed();
    down_engine.shutdown(Duration::from_secs(30)).await;

    // Up: a fast destination (measured second, so the memory figures above are of a fresh
    // process).
    DOWN.store(false, Ordering::SeqCst);
    let up_engine = engine(&base.join("up"), cfg.sqlite_cache).await?;
    let up = intake(&up_engine, n, cfg.producers).await?;
    up_engine.shutdown(Duration::from_secs(30)).await;
    let _ = std::fs::remove_dir_all(base.join("up"));

    if cfg.dir.is_none() {
        let _ = std::fs::remove_dir_all(&base);
    }

    println!();
    println!("| measurement | figure |");
    println!("|---|---|");
    println!("| intake, destination up | {up:.0} msg/s |");
    println!("| intake, destination down | {down:.0} msg/s |");
    println!("| down ÷ up (target ≥ 0.9) | {:.2} |", down / up);
    println!("| waiting in the journal after intake | {waiting} |");
    println!(
        "| RSS idle engine → with {waiting} waiting | {:.1} MB → {:.1} MB (+{:.1} MB; target ≤ +50 MB) |",
        idle_rss as f64 / 1024.0,
        rss_waiting as f64 / 1024.0,
        (rss_waiting as f64 - idle_rss as f64) / 1024.0
    );
    println!(
        "| peak RSS of the process (down run) | {:.1} MB |",
        peak as f64 / 1024.0
    );
    println!(
        "| drain {n} to a fast destination | {:.1} s ({:.0} msg/s) |",
        drain.as_secs_f64(),
        n as f64 / drain.as_secs_f64()
    );
    Ok(())
}

fn main() {
    let cfg = match Config::parse() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("journal_buffer: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(run(cfg)) {
        eprintln!("journal_buffer: {e}");
        std::process::exit(1);
    }
}
