//! A paced HL7 v2 sender over MLLP that measures each message's ACK latency: `connections`
//! connections share `rate` messages per second for a `duration`, each on its own schedule
//! (staggered over the interval; a send that falls behind goes at once), one message in flight
//! per connection, as real senders do. The latency runs from the write of the frame to its ACK
//! (`MSA-1` `AA` or `CA` for the `MSH-10` sent; anything else counts as an error).
//!
//! Used by the e2e slow-plugin test (`tests/e2e/plugin_load.rs`) and, through `#[path]`, by the
//! `plugin_engine` bench of the `huizhen` package, with [`guest`], which builds the plugins they
//! load.

use std::time::{Duration, Instant};

use huizhen_hl7::mllp::{Deframer, Event, frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What one paced run measured.
#[derive(Debug, Default, Clone)]
pub struct Paced {
    pub sent: usize,
    /// ACK latencies in microseconds, sorted.
    pub latencies_us: Vec<u64>,
    /// Negative ACKs, wrong `MSA-2`, closed connections, ACKs that never came (5 s).
    pub errors: usize,
    /// From the first send to the last ACK.
    pub elapsed: Duration,
}

impl Paced {
    /// The latency below which `q` (0..=1) of the ACKs came (nearest rank), in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * q).round() as usize;
        self.latencies_us[i] as f64 / 1e3
    }

    /// ACKed messages per second.
    pub fn rate(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A plugin of `plugins/` built for wasm32-wasip2 (release, the folder's own target, as the
/// host's tests build them): the path of its component.
pub fn guest(crate_name: &str) -> std::path::PathBuf {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins");
    let target = root.join("target");
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            crate_name,
        ])
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("cargo");
    assert!(
        out.status.success(),
        "building plugins/{crate_name} (rustup target add wasm32-wasip2):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = crate_name.replace('-', "_");
    target.join(format!("wasm32-wasip2/release/{file}.wasm"))
}

/// A loopback port free now (for a listener the engine binds next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An `ADT^A04` of about 1 KB from `facility` (MSH-4) with control id `id` (MSH-10).
pub fn adt(facility: &str, id: &str) -> Vec<u8> {
    let note = "入院评估：患者一般情况可，神志清，精神可，饮食睡眠可，二便正常。".repeat(8);
    format!(
        "MSH|^~\\&|HIS|{facility}|HUIZHEN|省会诊中心|20261206093000||ADT^A04^ADT_A01|{id}|P|2.5|||||CHN|UNICODE UTF-8\rEVN|A04|20261206093000\rPID|1||330523199001011234^^^{facility}^MR||张三||19900101|M\rPV1|1|O|内科门诊\rNTE|1||{note}\r"
    )
    .into_bytes()
}

/// Sends `rate` msg/s over `connections` connections to 127.0.0.1:`port` for `duration`;
/// message `n` of connection `c` has control id `{prefix}-{c}-{n}` and comes from `facility`.
pub async fn run(
    port: u16,
    rate: f64,
    duration: Duration,
    connections: usize,
    prefix: &str,
    facility: &str,
) -> Paced {
    let connections = connections.max(1);
    let interval = Duration::from_secs_f64(connections as f64 / rate);
    let per_conn = ((duration.as_secs_f64() * rate) / connections as f64).ceil() as usize;
    let start = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let prefix = prefix.to_owned();
            let facility = facility.to_owned();
            let first = start + interval.mul_f64(c as f64 / connections as f64);
            tokio::spawn(async move {
                one_connection(port, first, interval, per_conn, &prefix, c, &facility).await
            })
        })
        .collect();
    let mut out = Paced::default();
    for t in tasks {
        let p = t.await.expect("a paced connection task");
        out.sent += p.sent;
        out.errors += p.errors;
        out.latencies_us.extend(p.latencies_us);
    }
    out.elapsed = start.elapsed();
    out.latencies_us.sort_unstable();
    out
}

async fn one_connection(
    port: u16,
    first: Instant,
    interval: Duration,
    count: usize,
    prefix: &str,
    c: usize,
    facility: &str,
) -> Paced {
    let mut out = Paced::default();
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        out.errors = count;
        return out;
    };
    let _ = stream.set_nodelay(true);
    let mut deframer = Deframer::new(1 << 20);
    let mut buf = vec![0u8; 16 * 1024];
    for n in 0..count {
        let due = first + interval.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        let id = format!("{prefix}-{c}-{n}");
        let framed = frame(&adt(facility, &id));
        let sent = Instant::now();
        out.sent += 1;
        if stream.write_all(&framed).await.is_err() {
            out.errors += count - n;
            return out;
        }
        let ack = loop {
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
            let got = match read {
                Ok(Ok(k)) if k > 0 => k,
                _ => break None,
            };
            if let Some(f) = deframer
                .push(&buf[..got])
                .into_iter()
                .find_map(|e| match e {
                    Event::Frame(f) => Some(f),
                    _ => None,
                })
            {
                break Some(f);
            }
        };
        let took = sent.elapsed();
        match ack {
            Some(f) if acked(&f, &id) => out.latencies_us.push(took.as_micros() as u64),
            Some(_) => out.errors += 1,
            None => {
                out.errors += count - n;
                return out;
            }
        }
    }
    out
}

/// `MSA-1` is `AA` or `CA` and `MSA-2` is `id`.
fn acked(ack: &[u8], id: &str) -> bool {
    let text = String::from_utf8_lossy(ack);
    text.split('\r').any(|seg| {
        let mut f = seg.split('|');
        f.next() == Some("MSA") && matches!(f.next(), Some("AA" | "CA")) && f.next() == Some(id)
    })
}
