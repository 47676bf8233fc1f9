//! HL7 v2 over MLLP, end to end on loopback: N connections, each sending a 1 KB ORU^R01 and
//! waiting for its ACK before the next (as real senders do); the engine answers AA only after
//! the journal commit (SQLite, default durability: survives kill -9). Reports msg/s, ACK latency
//! percentiles, the time until every message is processed (`done`), peak RSS, and the rate of
//! the parser alone on the same message.
//!
//! `cargo bench -p huizhen-hl7 --bench mllp_ack` (options: `BENCH_MESSAGES`, default 50000;
//! `BENCH_CONNECTIONS`, default `8,64`; `BENCH_PACED` msg/s for the latency run, default 5000).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::Path;
use std::time::{Duration, Instant};

use huizhen_core::Engine;
use huizhen_core::config::{Loaded, LoadedPipeline, RootConfig, check, parse_yaml};
use huizhen_core::message::State;
use huizhen_hl7::mllp::{Deframer, Event, frame};
use huizhen_hl7::{Message, OnInvalid, charset};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn oru(control_id: &str) -> Vec<u8> {
    let mut s = format!(
        "MSH|^~\\&|LIS|县人民医院检验科|HUIZHEN|省会诊中心|20261123101500||ORU^R01^ORU_R01|{control_id}|P|2.5\rPID|1||330523199001011238^^^H1^MR||张^三丰||19900101|M\rOBR|1||L0042|CBC^血常规\r"
    );
    let mut i = 1;
    while s.len() < 1000 {
        s.push_str(&format!(
            "OBX|{i}|NM|T{i}^检验项目{i}||{}.{i}|mmol/L|3.9-6.1|N|||F\r",
            4 + i % 5
        ));
        i += 1;
    }
    encoding_rs::GB18030.encode(&s).0.into_owned()
}

fn rss_peak_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

async fn start(dir: &Path, port: u16) -> Engine {
    let mut root = RootConfig::default();
    root.store.url = format!("sqlite://{}/bench.db", dir.display());
    let yaml = format!(
        "version: 1\nname: bench\nsource:\n  mllp: {{ listen: \"127.0.0.1:{port}\", max_connections: 512 }}\nconcurrency: 4\nqueue: 100000\nsinks:\n  - journal: {{}}\n"
    );
    let file = dir.join("p.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let pipelines = vec![LoadedPipeline {
        file: file.clone(),
        config: parse_yaml(&file, &yaml).unwrap(),
    }];
    assert!(check(&pipelines).is_empty());
    let engine = Engine::start(Loaded {
        root,
        root_file: None,
        pipelines,
    })
    .await
    .unwrap();
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    engine
}

/// One sender: `count` messages, each waiting for its ACK; returns the latencies.
async fn sender(port: u16, conn: usize, count: usize, pace: Option<Duration>) -> Vec<Duration> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.set_nodelay(true).unwrap();
    let mut d = Deframer::new(1 << 20);
    let mut buf = vec![0u8; 8192];
    let mut lat = Vec::with_capacity(count);
    let start = Instant::now();
    for n in 0..count {
        if let Some(p) = pace {
            let due = start + p * n as u32;
            tokio::time::sleep_until(due.into()).await;
        }
        let id = format!("C{conn}-{n}");
        // Encoding the message is the sender's cost, not the engine's: done before timing.
        let framed = frame(&oru(&id));
        let t0 = Instant::now();
        s.write_all(&framed).await.unwrap();
        let ack = 'read: loop {
            let k = s.read(&mut buf).await.unwrap();
            assert!(k > 0, "connection closed");
            for ev in d.push(&buf[..k]) {
                if let Event::Frame(f) = ev {
                    break 'read f;
                }
            }
        };
        lat.push(t0.elapsed());
        let m = Message::from_decoded(
            charset::decode(&ack, encoding_rs::UTF_8, OnInvalid::Replace).unwrap(),
        )
        .unwrap();
        assert_eq!(m.get_str("MSA-1").unwrap().as_deref(), Some("AA"));
        assert_eq!(m.get_str("MSA-2").unwrap().as_deref(), Some(id.as_str()));
    }
    lat
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn run(messages: usize, connections: usize, paced: Option<f64>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let engine = start(dir.path(), port).await;
    let per = messages / connections;
    let pace = paced.map(|rate| Duration::from_secs_f64(connections as f64 / rate));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|c| tokio::spawn(sender(port, c, per, pace)))
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let acked = t0.elapsed();
    let total = per * connections;
    let store = engine.store.clone();
    loop {
        let done: i64 = store
            .counts()
            .await
            .unwrap()
            .iter()
            .filter(|c| c.1 == State::Done)
            .map(|c| c.2)
            .sum();
        if done as usize >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let processed = t0.elapsed();
    let st = engine.journal.stats();
    eprintln!(
        "  journal: {} batches, {} ops, {:.1} ops/batch, {:.2} ms/batch",
        st.batches,
        st.ops,
        st.ops as f64 / st.batches.max(1) as f64,
        processed.as_secs_f64() * 1000.0 / st.batches.max(1) as f64
    );
    lat.sort();
    engine.shutdown(Duration::from_secs(10)).await;
    format!(
        "| {connections} | {} | {total} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} |",
        paced.map_or("as fast as ACKs allow".to_owned(), |r| format!(
            "paced {r:.0}/s"
        )),
        total as f64 / acked.as_secs_f64(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&lat, 1.0),
        total as f64 / processed.as_secs_f64(),
    )
}

fn parse_rate() -> f64 {
    let raw = oru("P1");
    let n = 50_000;
    let t0 = Instant::now();
    for _ in 0..n {
        let d = charset::decode(&raw, encoding_rs::GB18030, OnInvalid::Reject).unwrap();
        let m = Message::from_decoded(d).unwrap();
        std::hint::black_box(m.header());
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

fn main() {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let messages: usize = env("BENCH_MESSAGES", "50000").parse().unwrap();
    let conns: Vec<usize> = env("BENCH_CONNECTIONS", "8,64")
        .split(',')
        .map(|c| c.trim().parse().unwrap())
        .collect();
    let paced: f64 = env("BENCH_PACED", "5000").parse().unwrap();
    println!(
        "message size: {} bytes (GB18030 ORU^R01)",
        oru("C0-0").len()
    );
    let parse = parse_rate();
    println!("parser alone (decode + parse + header), one core: {parse:.0} msg/s\n");
    println!(
        "| connections | load | messages | ACKed msg/s | p50 ms | p99 ms | max ms | processed (done) msg/s |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    let rt = tokio::runtime::Runtime::new().unwrap();
    for &c in &conns {
        println!("{}", rt.block_on(run(messages, c, None)));
    }
    let c = *conns.last().unwrap_or(&64);
    let paced_msgs = (paced * 5.0) as usize;
    println!("{}", rt.block_on(run(paced_msgs, c, Some(paced))));
    println!(
        "\npeak RSS of the process (engine + clients): {} MiB",
        rss_peak_kb() / 1024
    );
}
