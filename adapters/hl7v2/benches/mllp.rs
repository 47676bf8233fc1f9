//! HL7 v2 over MLLP, end to end on loopback, against a Python MLLP server doing the same work.
//!
//! `cargo bench -p huizhen-hl7 --bench mllp`
//!
//! Every sender has its own TCP connection, sends a framed 1,024-byte `ORU^R01` (GB18030, `PID`,
//! `PV1`, `OBR`, ten `OBX` with Chinese text, an `NTE`; `MSH-18` empty, so the listener's default
//! charset applies; a unique `MSH-10` per message) and waits for its ACK before sending the next,
//! as real senders do. Each ACK is checked: `MSA-1` = `AA` and `MSA-2` = the `MSH-10` sent.
//!
//! Three processes per measurement, all this binary (so each has its own CPU time and peak RSS):
//!
//! * the **orchestrator** (what `cargo bench` starts) runs the parser alone, starts the server
//!   and the client for each measurement, and prints the tables;
//! * the **engine** (`--serve`): `huizhen_core::Engine` started from pipeline YAML (through
//!   `config::parse_yaml`, `config::check` and `Loaded`, as `huizhen run` does), SQLite in a temp
//!   directory, an `mllp` source on 127.0.0.1 and a `journal` sink; or the Python server
//!   (`benches/python_mllp_server.py`) in its place;
//! * the **client** (`--client`): the senders, tokio tasks on one thread (`current_thread`
//!   runtime), so they take at most one of the two cores away from the server.
//!
//! Measurements:
//!
//! * **ACK path**, 64 and 8 connections, as fast as the ACKs come back. The pipeline's `queue`
//!   holds the whole run, so the in-memory queue never holds a sender back: the rate is that of
//!   the ACK path while the workers process the messages at the same time (they share the cores
//!   and the journal writer). Reported: how many messages were `done` when the last ACK came
//!   back, and when all of them were.
//! * **sustained**: the same with the default `queue: 1024`. Since the journal became the buffer
//!   (a full in-memory queue no longer makes `submit` wait; what does not fit waits in the
//!   journal, taken up in order), ACKs no longer wait for processing here either; the rate until
//!   every message is `done` is the processing rate.
//! * **paced**: each `--rate` in msg/s in all (each connection sends on its own schedule, the
//!   connections staggered over the interval; a send that falls behind goes at once), for
//!   `--paced-seconds`, ACK latency percentiles measured from the write of the frame; once with
//!   the queue holding the run (ACK path) and once with the default queue (sustained).
//! * **full pipeline**: `filter` on `hl7('MSH-9.1') == 'ORU'`, `hl7_map` (ORU → typed JSON),
//!   `journal` sink; default queue; the rate is messages / time until every message is `done`.
//! * **parser alone** on one core: `Message::parse`, `charset::decode` + `Message::from_decoded`,
//!   plus `header()` (what the listener does per frame), plus `hl7_map` to JSON.
//! * **Python**: `python_mllp_server.py` (python-hl7 0.4.x, asyncio, `hl7.parse`, SQLite WAL with
//!   the engine's table and indexes, group commit or one commit per message, `create_ack`), same
//!   client, `--python-messages` per measurement; it only journals (no processing after the
//!   ACK), and has no paced run (it cannot keep up with `--rate`).
//!
//! Options (flag, or the environment variable in brackets):
//!
//! * `--messages N` (`BENCH_MESSAGES`, default 100000): timed messages per throughput measurement
//! * `--connections 64,8` (`BENCH_CONNECTIONS`)
//! * `--rate 5000,1000` (`BENCH_RATE`): msg/s of the paced measurements; `--paced-seconds 10`
//!   (`BENCH_PACED_SECONDS`)
//! * `--warmup N` (`BENCH_WARMUP`, default 20): untimed messages per connection first
//! * `--durability process-crash,power-loss` (`BENCH_DURABILITY`, default `process-crash`)
//! * `--only ack,sustained,paced,full,python,parse` (`BENCH_ONLY`): a subset (default: all)
//! * `--python PATH` (`BENCH_PYTHON`, default `python3`): an interpreter with `hl7` installed
//!   (`pip install hl7==0.4.5`); `none` skips the baseline; `--python-messages N`
//!   (`BENCH_PYTHON_MESSAGES`, default 10000)
//! * `--server-threads N`: tokio worker threads of the engine (default: one per core, as
//!   `huizhen run`)
//! * `--target HOST:PORT`: only run the client (throughput at each connection count, then paced)
//!   against a server started elsewhere; `--target-pid PID` adds its CPU time and peak RSS
//! * `BENCH_SQLITE_CACHE` (bytes): the journal writer's page cache (`store.sqlite_cache`,
//!   default 16 MiB), for comparing sizes
//! * `--dir PATH` (`BENCH_DIR`): where the databases go (default: a temp directory, removed)
//! * `--store URL` (`BENCH_STORE`): the engine's store; default SQLite in `--dir`. A
//!   `postgres://…` URL is an administrative connection: each engine gets the database
//!   `huizhen_bench_mllp` next to it, dropped and created again (never the given database's
//!   tables)
//!
//! **Loopback ceiling** (`--only ceiling`, part of every run): the same client against an
//! ACK-only echo server in this binary (`--echo`: deframe, answer `AA` with the frame's
//! `MSH-10`; no parsing, no persistence, no processing), 64 and 8 connections: what this
//! machine's loopback TCP and the client allow, reported beside the engine's rates.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use huizhen_core::Engine;
use huizhen_core::config::{Loaded, LoadedPipeline, RootConfig, check, parse_yaml};
use huizhen_core::store::Durability;
use huizhen_hl7::mllp::{Deframer, Event, frame};
use huizhen_hl7::{Message, OnInvalid, charset};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = std::result::Result<T, BoxError>;

const MESSAGE_BYTES: usize = 1024;
const PIPELINE: &str = "bench";
const DEFAULT_QUEUE: usize = 1024;

// ---------------------------------------------------------------------------------------------
// The message

/// `MSH-10`: a letter and 12 digits, so every message has the same length.
fn control_id(prefix: char, conn: usize, seq: usize) -> String {
    format!("{prefix}{conn:03}{seq:09}")
}

/// The benchmark's `ORU^R01` in GB18030, exactly [`MESSAGE_BYTES`] long, with `id` as `MSH-10`.
fn oru(id: &str) -> Vec<u8> {
    let mut s = format!(
        "MSH|^~\\&|LIS|县人民医院检验科|HUIZHEN|省会诊中心|20261123101500||ORU^R01^ORU_R01|{id}|P|2.5\r\
         PID|1||330523199001011238^^^县人民医院^MR||张^三丰||19900101|M|||浙江省湖州市安吉县递铺街道胜利西路18号^^安吉县^浙江省^313300^CHN||0572-5123456\r\
         PV1|1|O|检验科^^^县人民医院||||1024^李^明\r\
         OBR|1|ORD20261123001|L20261123042|CBC^血常规^LN|||20261123093000|||||||20261123094500||1024^李^明||||||20261123101000|||F\r"
    );
    let obx = [
        ("WBC", "白细胞计数", "6.8", "10*9/L", "3.5-9.5"),
        ("RBC", "红细胞计数", "4.52", "10*12/L", "4.3-5.8"),
        ("HGB", "血红蛋白", "138", "g/L", "130-175"),
        ("HCT", "红细胞压积", "41.2", "%", "40-50"),
        ("MCV", "平均红细胞体积", "91.2", "fL", "82-100"),
        ("MCH", "平均血红蛋白含量", "30.5", "pg", "27-34"),
        ("MCHC", "平均血红蛋白浓度", "335", "g/L", "316-354"),
        ("PLT", "血小板计数", "212", "10*9/L", "125-350"),
        ("NEUT%", "中性粒细胞百分比", "62.3", "%", "40-75"),
        ("LYMPH%", "淋巴细胞百分比", "28.1", "%", "20-50"),
    ];
    for (i, (code, name, value, unit, range)) in obx.iter().enumerate() {
        s.push_str(&format!(
            "OBX|{}|NM|{code}^{name}^LN||{value}|{unit}|{range}|N|||F\r",
            i + 1
        ));
    }
    s.push_str("NTE|1||标本轻度溶血，结果仅供参考");
    let gb_len = |s: &str| encoding_rs::GB18030.encode(s).0.len();
    let filler: Vec<char> = "；请结合临床，必要时复查".chars().collect();
    let mut i = 0;
    // Chinese characters are 2 bytes in GB18030; the final CR is 1.
    while gb_len(&s) + 2 < MESSAGE_BYTES {
        s.push(filler[i % filler.len()]);
        i += 1;
    }
    while gb_len(&s) + 1 < MESSAGE_BYTES {
        s.push('.');
    }
    s.push('\r');
    let bytes = encoding_rs::GB18030.encode(&s).0.into_owned();
    assert_eq!(bytes.len(), MESSAGE_BYTES, "message size");
    bytes
}

/// A framed message whose `MSH-10` can be overwritten in place.
struct Template {
    framed: Vec<u8>,
    id_at: usize,
}

impl Template {
    fn new() -> Template {
        let placeholder = control_id('X', 0, 0);
        let framed = frame(&oru(&placeholder));
        let id_at = framed
            .windows(placeholder.len())
            .position(|w| w == placeholder.as_bytes())
            .expect("placeholder");
        Template { framed, id_at }
    }

    fn with_id(&self, id: &str) -> Vec<u8> {
        let mut v = self.framed.clone();
        v[self.id_at..self.id_at + id.len()].copy_from_slice(id.as_bytes());
        v
    }
}

/// Checks an ACK without the parser (the client must stay cheap): `MSA-1` is `AA` and `MSA-2`
/// is `id`.
fn check_ack(ack: &[u8], id: &str) -> Result<(), String> {
    let text = String::from_utf8_lossy(ack);
    let msa = text
        .split(['\r', '\n'])
        .find(|s| s.starts_with("MSA|"))
        .ok_or("ACK without MSA")?;
    let mut f = msa.split('|').skip(1);
    let (code, ctrl) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
    if code != "AA" || ctrl != id {
        return Err(format!(
            "ACK {code}/{ctrl} for {id}: expected AA/{id} ({msa})"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Process statistics

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU seconds of a process (all its threads).
fn cpu_seconds(pid: &str, ticks: f64) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name may hold spaces; the fields after it are space-separated.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 3, utime field 14, stime field 15 (1-based in proc(5)).
    let get = |n: usize| {
        f.get(n - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (get(14) + get(15)) / ticks
}

/// A progress bar of a measurement's timed messages on stderr, hidden off a terminal.
fn progress_bar(total: u64, what: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    let target = if std::io::stderr().is_terminal() {
        indicatif::ProgressDrawTarget::stderr()
    } else {
        indicatif::ProgressDrawTarget::hidden()
    };
    let pb = indicatif::ProgressBar::with_draw_target(Some(total), target);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "  {prefix} [{bar:30}] {pos}/{len} ({elapsed}, ETA {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_prefix(what.to_owned());
    pb
}

/// Bytes a process has written through system calls so far (`wchar` of /proc/PID/io).
fn written_bytes(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("wchar:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// `VmHWM` (peak resident set) of a process, in KiB.
fn peak_rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Busy and total CPU time of the whole machine (all cores), in ticks.
fn machine_cpu() -> (u64, u64) {
    let Ok(s) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(line) = s.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

fn free_port() -> Res<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

// ---------------------------------------------------------------------------------------------
// Options

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Steps {
    /// `mllp` → `journal` sink.
    Ack,
    /// `mllp` → `filter` → `hl7_map` → `journal` sink.
    Full,
}

impl Steps {
    fn parse(s: &str) -> Res<Steps> {
        match s {
            "ack" => Ok(Steps::Ack),
            "full" => Ok(Steps::Full),
            other => Err(format!("unknown steps {other}").into()),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Steps::Ack => "ack",
            Steps::Full => "full",
        }
    }
}

fn durability_name(d: Durability) -> &'static str {
    match d {
        Durability::ProcessCrash => "process-crash",
        Durability::PowerLoss => "power-loss",
    }
}

fn parse_durability(s: &str) -> Res<Durability> {
    match s {
        "process-crash" => Ok(Durability::ProcessCrash),
        "power-loss" => Ok(Durability::PowerLoss),
        other => Err(format!("unknown durability {other}").into()),
    }
}

/// Command-line flags (`--name value`), later ones winning, with an environment fallback.
struct Flags(Vec<(String, String)>);

impl Flags {
    fn parse(known: &[&str], switches: &[&str]) -> Res<(Flags, Vec<String>)> {
        let mut flags = Vec::new();
        let mut on = Vec::new();
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            if a == "--bench" {
                // Passed by `cargo bench` to every bench target.
                continue;
            }
            if switches.contains(&a.as_str()) {
                on.push(a);
            } else if known.contains(&a.as_str()) {
                let v = args.next().ok_or_else(|| format!("{a} needs a value"))?;
                flags.push((a, v));
            } else if a == "-h" || a == "--help" {
                eprintln!(
                    "mllp [--messages N] [--connections 64,8] [--rate 5000,1000] [--paced-seconds 10] [--warmup 20] \
                     [--durability process-crash,power-loss] [--only ack,sustained,paced,full,python,parse] \
                     [--python PATH|none] [--python-messages N] [--server-threads N] [--target HOST:PORT [--target-pid PID]] [--dir PATH]"
                );
                std::process::exit(0);
            } else if !a.starts_with('-') {
                // A name filter from `cargo bench <filter>`: one benchmark here.
            } else {
                return Err(format!("unknown option {a}").into());
            }
        }
        Ok((Flags(flags), on))
    }

    fn get(&self, flag: &str, env: &str) -> Option<String> {
        self.0
            .iter()
            .rev()
            .find(|(f, _)| f == flag)
            .map(|(_, v)| v.clone())
            .or_else(|| {
                if env.is_empty() {
                    None
                } else {
                    std::env::var(env).ok().filter(|v| !v.trim().is_empty())
                }
            })
    }

    fn num<T: std::str::FromStr>(&self, flag: &str, env: &str, default: T) -> Res<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(flag, env) {
            Some(v) => v
                .replace('_', "")
                .parse()
                .map_err(|e| format!("{flag} {v}: {e}").into()),
            None => Ok(default),
        }
    }
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|x| x.trim().to_ascii_lowercase())
        .filter(|x| !x.is_empty())
        .collect()
}

const FLAGS: &[&str] = &[
    "--messages",
    "--connections",
    "--rate",
    "--paced-seconds",
    "--warmup",
    "--durability",
    "--only",
    "--python",
    "--python-messages",
    "--target",
    "--target-pid",
    "--dir",
    // Internal: the engine and client processes.
    "--port",
    "--steps",
    "--queue",
    "--server-threads",
    "--store",
];

// ---------------------------------------------------------------------------------------------
// The client process

#[derive(Debug, Serialize, Deserialize)]
struct ClientResult {
    messages: usize,
    seconds: f64,
    /// ACK latency from the moment the frame was written, in ms.
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
    /// Paced runs: the largest delay of a send behind its schedule, in ms.
    behind_max: f64,
    cpu_seconds: f64,
}

struct ConnPlan {
    conn: usize,
    warmup: usize,
    count: usize,
    /// Paced: interval between sends and this connection's offset.
    pace: Option<(Duration, Duration)>,
}

struct ConnOut {
    latencies_us: Vec<u32>,
    behind_max: Duration,
}

async fn exchange(
    s: &mut TcpStream,
    d: &mut Deframer,
    buf: &mut [u8],
    bytes: &[u8],
    id: &str,
) -> Res<()> {
    s.write_all(bytes).await?;
    loop {
        let k = s.read(buf).await?;
        if k == 0 {
            return Err(format!("connection closed before the ACK of {id}").into());
        }
        for ev in d.push(&buf[..k]) {
            if let Event::Frame(f) = ev {
                check_ack(&f, id)?;
                return Ok(());
            }
        }
    }
}

async fn sender(
    addr: String,
    plan: ConnPlan,
    template: Arc<Template>,
    barrier: Arc<tokio::sync::Barrier>,
    acked: Arc<std::sync::atomic::AtomicUsize>,
) -> Res<ConnOut> {
    let mut s = TcpStream::connect(&addr).await?;
    s.set_nodelay(true)?;
    let mut d = Deframer::new(1 << 20);
    let mut buf = vec![0u8; 16 * 1024];
    for n in 0..plan.warmup {
        let id = control_id('W', plan.conn, n);
        exchange(&mut s, &mut d, &mut buf, &template.with_id(&id), &id).await?;
    }
    barrier.wait().await;
    let start = Instant::now();
    let mut out = ConnOut {
        latencies_us: Vec::with_capacity(plan.count),
        behind_max: Duration::ZERO,
    };
    for n in 0..plan.count {
        if let Some((interval, offset)) = plan.pace {
            let due = start + offset + interval * n as u32;
            tokio::time::sleep_until(due.into()).await;
            out.behind_max = out
                .behind_max
                .max(Instant::now().saturating_duration_since(due));
        }
        let id = control_id('C', plan.conn, n);
        let bytes = template.with_id(&id);
        let t0 = Instant::now();
        exchange(&mut s, &mut d, &mut buf, &bytes, &id).await?;
        out.latencies_us
            .push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
        acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(out)
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

/// `--client`: connects, warms up, prints `START`, runs (printing `PROGRESS <acked>` four times
/// a second, for the orchestrator's progress bar), prints `RESULT <json>`.
fn client_main(flags: &Flags) -> Res<()> {
    let target = flags.get("--target", "").ok_or("--target needed")?;
    let connections: usize = flags.num("--connections", "", 64)?;
    let messages: usize = flags.num("--messages", "", 100_000)?;
    let warmup: usize = flags.num("--warmup", "", 20)?;
    let rate: f64 = flags.num("--rate", "", 0.0)?;
    let ticks = clock_ticks();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let template = Arc::new(Template::new());
        let barrier = Arc::new(tokio::sync::Barrier::new(connections + 1));
        let interval = (rate > 0.0).then(|| Duration::from_secs_f64(connections as f64 / rate));
        let mut tasks = Vec::with_capacity(connections);
        let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for c in 0..connections {
            let plan = ConnPlan {
                conn: c,
                warmup,
                count: messages / connections + usize::from(c < messages % connections),
                pace: interval.map(|i| (i, i.mul_f64(c as f64 / connections as f64))),
            };
            tasks.push(tokio::spawn(sender(
                target.clone(),
                plan,
                template.clone(),
                barrier.clone(),
                acked.clone(),
            )));
        }
        barrier.wait().await;
        let cpu0 = cpu_seconds("self", ticks);
        println!("START");
        let t0 = Instant::now();
        let progress = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                println!(
                    "PROGRESS {}",
                    acked.load(std::sync::atomic::Ordering::Relaxed)
                );
            }
        });
        let mut lat = Vec::with_capacity(messages);
        let mut behind = Duration::ZERO;
        for t in tasks {
            let out = t.await??;
            lat.extend(out.latencies_us);
            behind = behind.max(out.behind_max);
        }
        let seconds = t0.elapsed().as_secs_f64();
        progress.abort();
        let cpu = cpu_seconds("self", ticks) - cpu0;
        lat.sort_unstable();
        let r = ClientResult {
            messages: lat.len(),
            seconds,
            p50: pct(&lat, 0.5),
            p90: pct(&lat, 0.9),
            p99: pct(&lat, 0.99),
            p999: pct(&lat, 0.999),
            max: pct(&lat, 1.0),
            behind_max: behind.as_secs_f64() * 1000.0,
            cpu_seconds: cpu,
        };
        println!("RESULT {}", serde_json::to_string(&r)?);
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// The engine process

#[derive(Debug, Default, Serialize, Deserialize)]
struct EngineStats {
    received: u64,
    done: u64,
    dead: u64,
    failed: u64,
    duplicate: u64,
    queue_depth: usize,
    journal_batches: u64,
    journal_ops: u64,
    /// At `quit`: messages in the journal by state, from the database.
    by_state: Vec<(String, i64)>,
}

fn counter(text: &str, name: &str) -> u64 {
    let prefix = format!("huizhen_{name}_total{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum::<f64>() as u64
}

fn engine_stats(engine: &Engine) -> EngineStats {
    let m = engine.metrics.encode();
    let j = engine.journal.stats();
    EngineStats {
        received: counter(&m, "messages_received"),
        done: counter(&m, "messages_done"),
        dead: counter(&m, "messages_dead"),
        failed: counter(&m, "messages_failed"),
        duplicate: counter(&m, "messages_duplicate"),
        queue_depth: engine.pipeline(PIPELINE).map_or(0, |p| p.queue_depth()),
        journal_batches: j.batches,
        journal_ops: j.ops,
        by_state: Vec::new(),
    }
}

fn pipeline_yaml(port: u16, steps: Steps, queue: usize) -> String {
    let steps = match steps {
        Steps::Ack => String::new(),
        Steps::Full => {
            "steps:\n  - filter: { expr: \"hl7('MSH-9.1') == 'ORU'\" }\n  - hl7_map: {}\n"
                .to_owned()
        }
    };
    format!(
        "version: 1\nname: {PIPELINE}\nsource:\n  mllp: {{ listen: \"127.0.0.1:{port}\", max_connections: 512 }}\nqueue: {queue}\n{steps}sinks:\n  - journal: {{}}\n"
    )
}

/// `--serve`: starts the engine, prints `READY`, answers `stats` and `quit` on stdin.
fn serve_main(flags: &Flags) -> Res<()> {
    let port: u16 = flags.num("--port", "", 0)?;
    let dir = PathBuf::from(flags.get("--dir", "").ok_or("--dir needed")?);
    let steps = Steps::parse(&flags.get("--steps", "").unwrap_or_else(|| "ack".into()))?;
    let queue: usize = flags.num("--queue", "", DEFAULT_QUEUE)?;
    let durability = parse_durability(
        &flags
            .get("--durability", "")
            .unwrap_or_else(|| "process-crash".into()),
    )?;
    // As `huizhen run` does (`Runtime::new()`: one worker thread per core), unless
    // `--server-threads` says otherwise.
    let threads: usize = flags.num("--server-threads", "", 0)?;
    let rt = if threads == 0 {
        tokio::runtime::Runtime::new()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    rt.block_on(async move {
        let mut root = RootConfig::default();
        root.store.url = match flags.get("--store", "") {
            Some(url) if url.starts_with("postgres") => fresh_pg(&url).await?,
            Some(url) => url,
            None => format!("sqlite://{}/journal.db", dir.display()),
        };
        root.store.durability = durability;
        // The journal writer's page cache (`store.sqlite_cache`), for comparing sizes.
        if let Some(bytes) = std::env::var("BENCH_SQLITE_CACHE")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            root.store.sqlite_cache = bytes;
        }
        // Bodies are encrypted at rest, as by default; the key file lives with the database.
        root.security.encryption.keys_file = dir.join("keys");
        let yaml = pipeline_yaml(port, steps, queue);
        let file = dir.join("bench.yaml");
        std::fs::write(&file, &yaml)?;
        let config = parse_yaml(&file, &yaml).map_err(|e| format!("{e:?}"))?;
        let pipelines = vec![LoadedPipeline { file, config }];
        let errors = check(&pipelines);
        if !errors.is_empty() {
            return Err(format!("pipeline does not check: {errors:?}").into());
        }
        let engine = Engine::start(Loaded {
            root,
            root_file: None,
            pipelines,
        })
        .await?;
        let mut up = false;
        for _ in 0..500 {
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !up {
            return Err("the MLLP listener did not come up".into());
        }
        println!("READY {port}");
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = lines.next_line().await? {
            match line.trim() {
                "stats" => println!("{}", serde_json::to_string(&engine_stats(&engine))?),
                "quit" => break,
                _ => {}
            }
        }
        let mut stats = engine_stats(&engine);
        stats.by_state = engine
            .store
            .counts()
            .await?
            .into_iter()
            .map(|(_, state, n)| (format!("{state:?}").to_lowercase(), n))
            .collect();
        engine.shutdown(Duration::from_secs(30)).await;
        println!("{}", serde_json::to_string(&stats)?);
        Ok(())
    })
}

/// A fresh PostgreSQL database `huizhen_bench_mllp` next to `admin`'s (dropped and created
/// again); its URL.
async fn fresh_pg(admin: &str) -> Res<String> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(admin).await?;
    sqlx::query("DROP DATABASE IF EXISTS huizhen_bench_mllp WITH (FORCE)")
        .execute(&mut c)
        .await?;
    sqlx::query("CREATE DATABASE huizhen_bench_mllp")
        .execute(&mut c)
        .await?;
    c.close().await?;
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (admin, String::new()),
    };
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    Ok(format!("{base}/huizhen_bench_mllp{query}"))
}

/// `--echo`: the loopback ceiling. Answers every frame with `AA` and its `MSH-10` at once; prints
/// `READY`, then on `quit` the frames answered (as the Python server reports its rows).
fn echo_main(flags: &Flags) -> Res<()> {
    let port: u16 = flags.num("--port", "", 0)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let answered = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let count = answered.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let _ = sock.set_nodelay(true);
                let count = count.clone();
                tokio::spawn(async move {
                    let mut d = Deframer::new(1 << 20);
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let mut out = Vec::new();
                        for ev in d.push(&buf[..n]) {
                            if let Event::Frame(f) = ev {
                                let ctrl = String::from_utf8_lossy(&f)
                                    .split('\r')
                                    .next()
                                    .and_then(|msh| msh.split('|').nth(9).map(str::to_owned))
                                    .unwrap_or_default();
                                let ack = format!(
                                    "MSH|^~\\&|ECHO|ECHO|||20260101000000||ACK|{ctrl}|P|2.5\rMSA|AA|{ctrl}\r"
                                );
                                out.extend_from_slice(&frame(ack.as_bytes()));
                                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                        if !out.is_empty() && sock.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        println!("READY {port}");
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = lines.next_line().await? {
            if line.trim() == "quit" {
                break;
            }
        }
        let n = answered.load(std::sync::atomic::Ordering::Relaxed);
        println!(r#"{{"stored":{n},"batches":0,"rows":0}}"#);
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// The orchestrator

struct Config {
    messages: usize,
    connections: Vec<usize>,
    rates: Vec<f64>,
    paced_seconds: f64,
    warmup: usize,
    durabilities: Vec<Durability>,
    only: Vec<String>,
    python: Option<String>,
    python_messages: usize,
    server_threads: Option<usize>,
    target: Option<String>,
    target_pid: Option<String>,
    dir: Option<PathBuf>,
    store: Option<String>,
}

impl Config {
    fn from(flags: &Flags) -> Res<Config> {
        let connections = match flags.get("--connections", "BENCH_CONNECTIONS") {
            Some(v) => list(&v)
                .iter()
                .map(|x| x.parse::<usize>())
                .collect::<Result<Vec<_>, _>>()?,
            None => vec![64, 8],
        };
        let durabilities = match flags.get("--durability", "BENCH_DURABILITY") {
            Some(v) => list(&v)
                .iter()
                .map(|x| parse_durability(x))
                .collect::<Res<Vec<_>>>()?,
            None => vec![Durability::ProcessCrash],
        };
        let cfg = Config {
            messages: flags.num("--messages", "BENCH_MESSAGES", 100_000)?,
            connections,
            rates: match flags.get("--rate", "BENCH_RATE") {
                Some(v) => list(&v)
                    .iter()
                    .map(|x| x.replace('_', "").parse::<f64>())
                    .collect::<Result<Vec<_>, _>>()?,
                None => vec![5000.0, 1000.0],
            },
            paced_seconds: flags.num("--paced-seconds", "BENCH_PACED_SECONDS", 10.0)?,
            warmup: flags.num("--warmup", "BENCH_WARMUP", 20)?,
            durabilities,
            only: flags
                .get("--only", "BENCH_ONLY")
                .map(|v| list(&v))
                .unwrap_or_default(),
            python: match flags.get("--python", "BENCH_PYTHON") {
                Some(p) if p == "none" => None,
                Some(p) => Some(p),
                None => Some("python3".into()),
            },
            python_messages: flags.num("--python-messages", "BENCH_PYTHON_MESSAGES", 10_000)?,
            server_threads: flags
                .get("--server-threads", "")
                .map(|v| v.parse::<usize>())
                .transpose()?,
            target: flags.get("--target", ""),
            target_pid: flags.get("--target-pid", ""),
            dir: flags.get("--dir", "BENCH_DIR").map(PathBuf::from),
            store: flags.get("--store", "BENCH_STORE"),
        };
        if cfg.messages == 0 || cfg.connections.is_empty() || cfg.connections.contains(&0) {
            return Err("--messages and --connections must be positive".into());
        }
        Ok(cfg)
    }

    fn wants(&self, what: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == what)
    }
}

/// A child process speaking the line protocol (`READY`, `stats`, `quit`).
struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
    pid: String,
    addr: String,
}

impl Server {
    async fn spawn(mut cmd: Command, port: u16) -> Res<Server> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take().ok_or("stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("stdout")?).lines();
        let pid = child.id().ok_or("pid")?.to_string();
        let line = tokio::time::timeout(Duration::from_secs(60), stdout.next_line())
            .await
            .map_err(|_| "server did not start within 60 s")??
            .ok_or("server exited before it was ready")?;
        if !line.starts_with("READY") {
            return Err(format!("server said {line:?}").into());
        }
        Ok(Server {
            child,
            stdin,
            stdout,
            pid,
            addr: format!("127.0.0.1:{port}"),
        })
    }

    async fn ask(&mut self, cmd: &str) -> Res<String> {
        self.stdin.write_all(format!("{cmd}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        let line = tokio::time::timeout(Duration::from_secs(120), self.stdout.next_line())
            .await
            .map_err(|_| "server did not answer")??
            .ok_or("server exited")?;
        Ok(line)
    }

    async fn quit(mut self) -> Res<String> {
        let line = self.ask("quit").await?;
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        Ok(line)
    }
}

#[derive(Clone, Debug)]
enum ServerKind {
    Engine {
        steps: Steps,
        queue: usize,
        durability: Durability,
    },
    Python {
        interpreter: String,
        commit: &'static str,
    },
    /// The ACK-only echo server: the loopback ceiling.
    Echo,
    External,
}

impl ServerKind {
    fn label(&self) -> String {
        match self {
            ServerKind::Engine {
                steps,
                queue,
                durability,
            } => {
                let pipeline = match steps {
                    Steps::Ack => "mllp → journal sink",
                    Steps::Full => "mllp → filter → hl7_map → journal sink",
                };
                let dur = match durability {
                    Durability::ProcessCrash => "kill -9",
                    Durability::PowerLoss => "power loss",
                };
                format!("Huizhen, {pipeline}, queue {queue}, survives {dur}")
            }
            ServerKind::Python { commit, .. } => {
                format!("Python hl7 0.4, SQLite WAL NORMAL, commit {commit}")
            }
            ServerKind::Echo => "ACK-only echo (no parse, no journal): loopback ceiling".into(),
            ServerKind::External => "external server".into(),
        }
    }
}

struct Measurement {
    what: &'static str,
    /// Bytes the server process wrote (`wchar` of /proc/PID/io: the WAL, the checkpoints into
    /// the database file and the ACKs) over the timed phase.
    server_written: u64,
    server: ServerKind,
    connections: usize,
    /// Paced rate, or as fast as possible.
    rate: Option<f64>,
    client: ClientResult,
    server_cpu: f64,
    others_cpu: f64,
    load: String,
    peak_rss_mib: f64,
    /// Engine: processed when the last ACK came back, and the queue depth then.
    done_at_last_ack: Option<(u64, usize)>,
    /// Engine: seconds from the first timed send until every message was processed.
    all_done_after: Option<f64>,
    processed_rate: Option<f64>,
    journal_batch: Option<f64>,
    /// Engine: journal operations per commit between START and the last ACK.
    ack_phase_batch: Option<f64>,
    final_states: String,
}

struct Run<'a> {
    cfg: &'a Config,
    dir: PathBuf,
    ticks: f64,
    exe: PathBuf,
    counter: usize,
    /// Timed messages of the throughput measurements, when not `--messages`.
    messages_override: Option<usize>,
}

impl Run<'_> {
    async fn start_server(&mut self, kind: &ServerKind) -> Res<Option<Server>> {
        self.counter += 1;
        let dir = self.dir.join(format!("m{}", self.counter));
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        let cmd = match kind {
            ServerKind::Engine {
                steps,
                queue,
                durability,
            } => {
                let mut c = Command::new(&self.exe);
                c.args(["--serve", "--port", &port.to_string(), "--dir"])
                    .arg(&dir)
                    .args([
                        "--steps",
                        steps.name(),
                        "--queue",
                        &queue.to_string(),
                        "--durability",
                        durability_name(*durability),
                    ]);
                if let Some(t) = self.cfg.server_threads {
                    c.args(["--server-threads", &t.to_string()]);
                }
                if let Some(url) = &self.cfg.store {
                    c.args(["--store", url]);
                }
                c
            }
            ServerKind::Echo => {
                let mut c = Command::new(&self.exe);
                c.args(["--echo", "--port", &port.to_string()]);
                c
            }
            ServerKind::Python {
                interpreter,
                commit,
            } => {
                let mut c = Command::new(interpreter);
                c.arg(python_script())
                    .args(["--port", &port.to_string(), "--db"])
                    .arg(dir.join("python.db"))
                    .args(["--commit", commit]);
                c
            }
            ServerKind::External => return Ok(None),
        };
        Ok(Some(Server::spawn(cmd, port).await?))
    }

    async fn measure(
        &mut self,
        what: &'static str,
        kind: ServerKind,
        connections: usize,
        rate: Option<f64>,
    ) -> Res<Measurement> {
        let mut server = self.start_server(&kind).await?;
        let addr = match (&server, &self.cfg.target) {
            (Some(s), _) => s.addr.clone(),
            (None, Some(t)) => t.clone(),
            (None, None) => return Err("no server".into()),
        };
        let server_pid = server
            .as_ref()
            .map(|s| s.pid.clone())
            .or_else(|| self.cfg.target_pid.clone());
        let messages = match rate {
            Some(r) => (r * self.cfg.paced_seconds).round() as usize,
            None => self.messages_override.unwrap_or(self.cfg.messages),
        };
        let mut client = Command::new(&self.exe);
        client
            .args([
                "--client",
                "--target",
                &addr,
                "--connections",
                &connections.to_string(),
                "--messages",
                &messages.to_string(),
                "--warmup",
                &self.cfg.warmup.to_string(),
                "--rate",
                &rate.unwrap_or(0.0).to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = client.spawn()?;
        let mut out = BufReader::new(child.stdout.take().ok_or("client stdout")?).lines();
        let first = out.next_line().await?.ok_or("client exited before START")?;
        if first != "START" {
            return Err(format!("client said {first:?}").into());
        }
        let t0 = Instant::now();
        let load0 = loadavg();
        let m0 = machine_cpu();
        let s0 = server_pid
            .as_deref()
            .map_or(0.0, |p| cpu_seconds(p, self.ticks));
        let w0 = server_pid.as_deref().map_or(0, written_bytes);
        let stats0 = match server.as_mut() {
            Some(s) if matches!(kind, ServerKind::Engine { .. }) => {
                serde_json::from_str::<EngineStats>(&s.ask("stats").await?)?
            }
            _ => EngineStats::default(),
        };
        // The client's progress (drawn only when stderr is a terminal), then its result.
        let bar = progress_bar(messages as u64, what);
        let line = loop {
            let line = out
                .next_line()
                .await?
                .ok_or("client exited without a result")?;
            match line.strip_prefix("PROGRESS ") {
                Some(n) => bar.set_position(n.parse().unwrap_or(0)),
                None => break line,
            }
        };
        bar.finish_and_clear();
        let m1 = machine_cpu();
        let s1 = server_pid
            .as_deref()
            .map_or(0.0, |p| cpu_seconds(p, self.ticks));
        let server_written = server_pid
            .as_deref()
            .map_or(0, written_bytes)
            .saturating_sub(w0);
        let status = child.wait().await?;
        let result: ClientResult = serde_json::from_str(
            line.strip_prefix("RESULT ")
                .ok_or_else(|| format!("client said {line:?}"))?,
        )?;
        if !status.success() || result.messages != messages {
            return Err(format!(
                "client failed ({status}); {} of {messages} messages",
                result.messages
            )
            .into());
        }
        let load1 = loadavg();
        let machine_busy = (m1.0 - m0.0) as f64 / self.ticks;
        let server_cpu = s1 - s0;
        let others = (machine_busy - server_cpu - result.cpu_seconds).max(0.0);

        let total = messages + self.cfg.warmup * connections;
        let mut done_at_last_ack = None;
        let mut all_done_after = None;
        let mut processed_rate = None;
        let mut journal_batch = None;
        let mut ack_phase_batch = None;
        let mut final_states = String::new();
        let mut peak = 0.0;
        if let Some(mut s) = server {
            if matches!(kind, ServerKind::Engine { .. }) {
                let st: EngineStats = serde_json::from_str(&s.ask("stats").await?)?;
                done_at_last_ack = Some((st.done, st.queue_depth));
                ack_phase_batch = Some(
                    (st.journal_ops - stats0.journal_ops) as f64
                        / (st.journal_batches - stats0.journal_batches).max(1) as f64,
                );
                let mut st = st;
                let deadline = Instant::now() + Duration::from_secs(600);
                while (st.done + st.dead) < total as u64 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    st = serde_json::from_str(&s.ask("stats").await?)?;
                }
                let after = t0.elapsed().as_secs_f64();
                all_done_after = Some(after);
                processed_rate = Some((st.done - stats0.done) as f64 / after);
                journal_batch = Some(st.journal_ops as f64 / st.journal_batches.max(1) as f64);
                if st.dead > 0 || st.failed > 0 || st.duplicate > 0 {
                    return Err(format!(
                        "unexpected outcomes: {} dead, {} failed, {} duplicates",
                        st.dead, st.failed, st.duplicate
                    )
                    .into());
                }
            }
            peak = peak_rss_kib(&s.pid) as f64 / 1024.0;
            let fin = s.quit().await?;
            if matches!(kind, ServerKind::Engine { .. }) {
                let st: EngineStats = serde_json::from_str(&fin)?;
                let stored: i64 = st.by_state.iter().map(|(_, n)| n).sum();
                if stored != total as i64 {
                    return Err(format!("{stored} messages journaled, expected {total}").into());
                }
                final_states = st
                    .by_state
                    .iter()
                    .map(|(s, n)| format!("{n} {s}"))
                    .collect::<Vec<_>>()
                    .join(", ");
            } else {
                #[derive(Deserialize)]
                struct Py {
                    stored: i64,
                    batches: u64,
                    rows: u64,
                }
                let py: Py = serde_json::from_str(&fin)?;
                if py.stored != total as i64 {
                    return Err(format!("{} rows stored, expected {total}", py.stored).into());
                }
                journal_batch = Some(py.rows as f64 / py.batches.max(1) as f64);
                final_states = format!("{} rows", py.stored);
            }
        } else if let Some(pid) = &self.cfg.target_pid {
            peak = peak_rss_kib(pid) as f64 / 1024.0;
        }
        let m = Measurement {
            what,
            server: kind,
            connections,
            rate,
            server_cpu,
            server_written,
            others_cpu: others,
            load: format!("{load0}→{load1}"),
            peak_rss_mib: peak,
            done_at_last_ack,
            all_done_after,
            processed_rate,
            journal_batch,
            ack_phase_batch,
            final_states,
            client: result,
        };
        eprintln!("  {}", summary(&m));
        Ok(m)
    }
}

fn python_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/python_mllp_server.py")
}

fn fmt_rate(r: f64) -> String {
    let s = (r.round() as u64).to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn rate_of(m: &Measurement) -> f64 {
    m.client.messages as f64 / m.client.seconds
}

fn summary(m: &Measurement) -> String {
    format!(
        "{} | {} | {} conn{} | {} msg/s | p50 {:.2} p99 {:.2} max {:.2} ms | server CPU {:.2}s ({:.0} µs/msg), client {:.2}s, others {:.2}s | server wrote {:.2} KiB/msg | RSS {:.0} MiB{}{} | {}",
        m.what,
        m.server.label(),
        m.connections,
        m.rate
            .map_or(String::new(), |r| format!(", paced {r:.0}/s")),
        fmt_rate(rate_of(m)),
        m.client.p50,
        m.client.p99,
        m.client.max,
        m.server_cpu,
        m.server_cpu * 1e6 / m.client.messages as f64,
        m.client.cpu_seconds,
        m.others_cpu,
        m.server_written as f64 / 1024.0 / m.client.messages as f64,
        m.peak_rss_mib,
        m.done_at_last_ack.map_or(String::new(), |(d, q)| format!(
            " | done at last ACK {d}, queue {q}"
        )),
        m.processed_rate.map_or(String::new(), |r| format!(
            " | all done after {:.2}s: {} msg/s",
            m.all_done_after.unwrap_or(0.0),
            fmt_rate(r)
        )),
        m.final_states,
    )
}

struct ParseRates {
    parse: f64,
    decode_parse: f64,
    decode_parse_header: f64,
    decode_parse_map: f64,
    /// `charset::encode` of the message's AA ACK into GB18030 (what the listener did for every
    /// ACK before it remembered the encoded names per connection).
    ack_encode: f64,
}

/// Runs `f` for about a second on this thread; calls per second.
fn per_second(mut f: impl FnMut()) -> f64 {
    for _ in 0..1000 {
        f();
    }
    let t0 = Instant::now();
    let mut n = 0u64;
    loop {
        for _ in 0..500 {
            f();
        }
        n += 500;
        let dt = t0.elapsed();
        if dt >= Duration::from_secs(1) {
            return n as f64 / dt.as_secs_f64();
        }
    }
}

fn parse_rates() -> Res<ParseRates> {
    let raw = oru(&control_id('P', 0, 1));
    let text = charset::decode(&raw, encoding_rs::GB18030, OnInvalid::Reject)?.text;
    Message::parse(&text)?;
    huizhen_hl7::mapping::map(&Message::parse(&text)?).map_err(|e| e.to_string())?;
    let parse = per_second(|| {
        std::hint::black_box(Message::parse(std::hint::black_box(&text)).ok());
    });
    let decode = || {
        charset::decode(
            std::hint::black_box(&raw),
            encoding_rs::GB18030,
            OnInvalid::Reject,
        )
        .ok()
        .and_then(|d| Message::from_decoded(d).ok())
    };
    let decode_parse = per_second(|| {
        std::hint::black_box(decode());
    });
    let decode_parse_header = per_second(|| {
        std::hint::black_box(decode().map(|m| m.header()));
    });
    let decode_parse_map = per_second(|| {
        let m = decode();
        let json = m
            .as_ref()
            .and_then(|m| huizhen_hl7::mapping::map(m).ok())
            .and_then(|r| serde_json::to_vec(&r).ok());
        std::hint::black_box(json);
    });
    let header = Message::parse(&text)?.header();
    let ack = huizhen_hl7::ack::build(
        &header,
        huizhen_hl7::ack::AckCode::AA,
        None,
        "0192f0c4-8f4e-7cc1-9b53-2f1d3e6a7b8c",
        "20261123101500",
    );
    let ack_encode = per_second(|| {
        std::hint::black_box(
            charset::encode(std::hint::black_box(&ack), encoding_rs::GB18030).ok(),
        );
    });
    Ok(ParseRates {
        parse,
        decode_parse,
        decode_parse_header,
        decode_parse_map,
        ack_encode,
    })
}

/// `hl7.parse` (after decoding) in Python on the same message, msgs/s.
fn python_parse_rate(interpreter: &str, dir: &Path) -> Res<f64> {
    let file = dir.join("oru.hl7");
    std::fs::write(&file, oru(&control_id('P', 0, 1)))?;
    let out = std::process::Command::new(interpreter)
        .arg(python_script())
        .arg("--parse-rate")
        .arg(&file)
        .output()?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
    }
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

fn python_available(interpreter: &str) -> Result<String, String> {
    let out = std::process::Command::new(interpreter)
        .args([
            "-c",
            "import hl7, sqlite3, sys; print(hl7.__version__, 'Python', sys.version.split()[0], 'SQLite', sqlite3.sqlite_version)",
        ])
        .output()
        .map_err(|e| format!("{interpreter}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{interpreter} has no `hl7` module (pip install hl7==0.4.5)"
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

async fn orchestrate(cfg: Config) -> Res<()> {
    let tmp = cfg.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("huizhen-mllp-bench-{}", std::process::id()))
    });
    std::fs::create_dir_all(&tmp)?;
    let mut run = Run {
        cfg: &cfg,
        dir: tmp.clone(),
        ticks: clock_ticks(),
        exe: std::env::current_exe()?,
        counter: 0,
        messages_override: None,
    };
    let started = chrono::Utc::now();
    eprintln!(
        "mllp: {} timed messages of {MESSAGE_BYTES} bytes per throughput measurement (+{} warm-up per connection), connections {:?}, paced {:?} msg/s for {} s each; load {}; files in {}",
        cfg.messages,
        cfg.warmup,
        cfg.connections,
        cfg.rates,
        cfg.paced_seconds,
        loadavg(),
        tmp.display()
    );
    let mut rows: Vec<Measurement> = Vec::new();
    let mut notes: Vec<String> = Vec::new();

    let parse = if cfg.wants("parse") && cfg.target.is_none() {
        let p = parse_rates()?;
        eprintln!(
            "  parser alone, one core: parse {} | decode+parse {} | +header {} | +hl7_map to JSON {} msg/s | ACK charset::encode {} /s",
            fmt_rate(p.parse),
            fmt_rate(p.decode_parse),
            fmt_rate(p.decode_parse_header),
            fmt_rate(p.decode_parse_map),
            fmt_rate(p.ack_encode)
        );
        Some(p)
    } else {
        None
    };

    if cfg.target.is_some() {
        for &c in &cfg.connections {
            rows.push(
                run.measure("throughput", ServerKind::External, c, None)
                    .await?,
            );
        }
        for &rate in &cfg.rates {
            for &c in &cfg.connections {
                rows.push(
                    run.measure("paced", ServerKind::External, c, Some(rate))
                        .await?,
                );
            }
        }
    } else {
        let run_queue = cfg.messages + cfg.warmup * cfg.connections.iter().max().unwrap_or(&64);
        if cfg.wants("ceiling") {
            for &c in &cfg.connections {
                rows.push(run.measure("ceiling", ServerKind::Echo, c, None).await?);
            }
        }
        for &durability in &cfg.durabilities {
            if cfg.wants("ack") {
                for &c in &cfg.connections {
                    let kind = ServerKind::Engine {
                        steps: Steps::Ack,
                        queue: run_queue,
                        durability,
                    };
                    rows.push(run.measure("ACK path", kind, c, None).await?);
                }
            }
            if cfg.wants("sustained") {
                for &c in &cfg.connections {
                    let kind = ServerKind::Engine {
                        steps: Steps::Ack,
                        queue: DEFAULT_QUEUE,
                        durability,
                    };
                    rows.push(run.measure("sustained", kind, c, None).await?);
                }
            }
            if cfg.wants("paced") {
                for &rate in &cfg.rates {
                    let paced_queue = (rate * cfg.paced_seconds) as usize
                        + cfg.warmup * cfg.connections.iter().max().unwrap_or(&64);
                    for &c in &cfg.connections {
                        // The ACK path alone (the queue holds the run), then with the default
                        // queue (ACKs held back when processing falls behind).
                        for (what, queue) in [
                            ("paced, ACK path", paced_queue),
                            ("paced, sustained", DEFAULT_QUEUE),
                        ] {
                            let kind = ServerKind::Engine {
                                steps: Steps::Ack,
                                queue,
                                durability,
                            };
                            rows.push(run.measure(what, kind, c, Some(rate)).await?);
                        }
                    }
                }
            }
            if cfg.wants("full") {
                for &c in &cfg.connections {
                    let kind = ServerKind::Engine {
                        steps: Steps::Full,
                        queue: DEFAULT_QUEUE,
                        durability,
                    };
                    rows.push(run.measure("full pipeline", kind, c, None).await?);
                }
            }
        }
    }

    let mut py_parse = None;
    let mut py_version = None;
    if cfg.wants("python")
        && cfg.target.is_none()
        && let Some(interp) = &cfg.python
    {
        match python_available(interp) {
            Err(e) => {
                eprintln!("  Python baseline skipped: {e}");
                notes.push(format!("Python baseline skipped: {e}."));
            }
            Ok(v) => {
                py_version = Some(v);
                py_parse = Some(python_parse_rate(interp, &tmp)?);
                // Python is far slower: fewer messages, and no paced run (it cannot keep up
                // with --rate, so its latency there would only measure its backlog).
                run.messages_override = Some(cfg.python_messages);
                for commit in ["group", "each"] {
                    let conns: Vec<usize> = if commit == "group" {
                        cfg.connections.clone()
                    } else {
                        cfg.connections.iter().copied().max().into_iter().collect()
                    };
                    for c in conns {
                        let kind = ServerKind::Python {
                            interpreter: interp.clone(),
                            commit,
                        };
                        rows.push(run.measure("throughput", kind, c, None).await?);
                    }
                }
                run.messages_override = None;
            }
        }
    }
    if cfg.dir.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }

    // ---- Report
    if rows.is_empty() && parse.is_none() {
        return Ok(());
    }
    println!();
    println!(
        "Started {} UTC; {} cores; load average at the end {}.",
        started.format("%Y-%m-%d %H:%M"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
    println!();
    if !rows.is_empty() {
        println!(
            "| measurement | server | conns | ACKed msg/s | p50 ms | p99 ms | p99.9 ms | max ms | done at last ACK (queue) | all done after | processed msg/s | server CPU µs/msg | client CPU s | others' CPU s | load | peak RSS MiB | ops per commit (while ACKing / whole run) |"
        );
        println!(
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"
        );
        for m in &rows {
            println!(
                "| {}{} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {} | {:.0} | {} |",
                m.what,
                m.rate.map_or(String::new(), |r| format!(" {r:.0}/s")),
                m.server.label(),
                m.connections,
                fmt_rate(rate_of(m)),
                m.client.p50,
                m.client.p99,
                m.client.p999,
                m.client.max,
                m.done_at_last_ack
                    .map_or("–".into(), |(d, q)| format!("{d} ({q})")),
                m.all_done_after.map_or("–".into(), |s| format!("{s:.2} s")),
                m.processed_rate.map_or("–".into(), fmt_rate),
                m.server_cpu * 1e6 / m.client.messages as f64,
                m.client.cpu_seconds,
                m.others_cpu,
                m.load,
                m.peak_rss_mib,
                match (m.ack_phase_batch, m.journal_batch) {
                    (Some(a), Some(b)) => format!("{a:.1} / {b:.1}"),
                    (None, Some(b)) => format!("{b:.1}"),
                    _ => "–".into(),
                },
            );
        }
        println!();
    }
    let engine_ack = |c: usize| {
        rows.iter().find(|m| {
            m.what == "ACK path"
                && m.connections == c
                && matches!(
                    m.server,
                    ServerKind::Engine {
                        durability: Durability::ProcessCrash,
                        ..
                    }
                )
        })
    };
    let python_group = |c: usize| {
        rows.iter().find(|m| {
            m.what == "throughput"
                && m.connections == c
                && matches!(
                    m.server,
                    ServerKind::Python {
                        commit: "group",
                        ..
                    }
                )
        })
    };
    if let Some(p) = &parse {
        println!(
            "Parser alone, one core, same message: `Message::parse` {} msg/s; `charset::decode` + `Message::from_decoded` {} msg/s; + `header()` {} msg/s; + `hl7_map` record to JSON {} msg/s. Encoding its ACK with `charset::encode` (GB18030): {} ACKs/s ({:.1} µs each).",
            fmt_rate(p.parse),
            fmt_rate(p.decode_parse),
            fmt_rate(p.decode_parse_header),
            fmt_rate(p.decode_parse_map),
            fmt_rate(p.ack_encode),
            1e6 / p.ack_encode
        );
        for &c in &cfg.connections {
            if let Some(m) = engine_ack(c) {
                println!(
                    "Engine ACK path ({c} connections) ÷ decode+parse: {:.3}.",
                    rate_of(m) / p.decode_parse
                );
            }
        }
    }
    if let Some(v) = &py_version {
        println!("Python: hl7 {v}.");
    }
    if let Some(pp) = py_parse {
        println!(
            "Python `hl7.parse` (after decoding), one core: {} msg/s{}.",
            fmt_rate(pp),
            parse.as_ref().map_or(String::new(), |p| format!(
                "; Rust decode+parse is {:.1}× that",
                p.decode_parse / pp
            ))
        );
    }
    for &c in &cfg.connections {
        if let (Some(e), Some(p)) = (engine_ack(c), python_group(c)) {
            println!(
                "Engine ACK path ÷ Python (group commit), {c} connections: {:.2}.",
                rate_of(e) / rate_of(p)
            );
        }
    }
    for &c in &cfg.connections {
        let ceiling = rows
            .iter()
            .find(|m| m.what == "ceiling" && m.connections == c);
        let sustained = rows
            .iter()
            .find(|m| m.what == "sustained" && m.connections == c);
        if let (Some(e), Some(s)) = (ceiling, sustained) {
            let processed = s.processed_rate.unwrap_or_else(|| rate_of(s));
            println!(
                "Sustained ÷ loopback ceiling, {c} connections: {} ÷ {} = {:.3} (ACKed), {:.3} (processed).",
                fmt_rate(rate_of(s)),
                fmt_rate(rate_of(e)),
                rate_of(s) / rate_of(e),
                processed / rate_of(e)
            );
        }
    }
    for n in notes {
        println!("{n}");
    }
    Ok(())
}

fn main() {
    let result = (|| -> Res<()> {
        let (flags, switches) = Flags::parse(FLAGS, &["--serve", "--client", "--echo"])?;
        if switches.iter().any(|s| s == "--serve") {
            return serve_main(&flags);
        }
        if switches.iter().any(|s| s == "--echo") {
            return echo_main(&flags);
        }
        if switches.iter().any(|s| s == "--client") {
            return client_main(&flags);
        }
        let cfg = Config::from(&flags)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(orchestrate(cfg))
    })();
    if let Err(e) = result {
        eprintln!("mllp bench: {e}");
        std::process::exit(1);
    }
}
