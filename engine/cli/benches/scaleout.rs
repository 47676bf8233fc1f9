//! Scale-out throughput: 1 KB messages through engine processes with `queue: amqp://…` on one
//! PostgreSQL store, against a raw lapin publish/consume loop measured in the same run.
//!
//! Each engine run: N messages are published with publisher confirms into an inbound queue that
//! every process consumes (`amqp` source, manual acks after the journal commit); each message is
//! journaled, its ticket published (confirmed) and consumed by some process, claimed, run
//! (a `journal` sink), committed `done` and its ticket acknowledged. The clock runs from the
//! first publish to the last `done` in PostgreSQL.
//!
//! The baseline: the same N messages published with confirms into a queue and consumed with
//! manual acks (prefetch 256) by one consumer, concurrently; the clock runs from the first
//! publish to the last ack.
//!
//! Local mode on the same PostgreSQL (issue 13 item 3): one process with the in-process queue
//! (no `queue:`, no `cluster:`), the same `amqp` source and the same store; cluster mode with one
//! node is reported against it. Each engine run also reports the CPU time per message of the
//! engine processes, PostgreSQL (every `postgres` process), RabbitMQ (`beam.smp`) and this
//! bench's own publisher, read from /proc: what a node costs when the store and the broker have
//! cores of their own.
//!
//! ```sh
//! cargo bench -p huizhen --bench scaleout            # N = 20000; HZ_BENCH_N to change
//! ```
//!
//! Needs RabbitMQ (`AMQP_URL`) and PostgreSQL (`DATABASE_URL`), as the tests do.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use sqlx::Connection as _;

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn pg_admin() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn body(i: usize) -> Vec<u8> {
    let head = format!(r#"{{"seq":{i},"patient":"P{}","pad":""#, i % 997);
    let mut b = head.into_bytes();
    b.resize(1000, b'x');
    b.extend_from_slice(b"\"}");
    b
}

/// Publishes `n` messages with confirms (pipelined, 1,000 outstanding at most).
async fn publish(queue: &str, n: usize) {
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut pending = std::collections::VecDeque::new();
    for i in 0..n {
        let c = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body(i),
                BasicProperties::default()
                    .with_message_id(format!("b-{i}").as_str().into())
                    .with_content_type("application/json".into())
                    .with_delivery_mode(2),
            )
            .await
            .unwrap();
        pending.push_back(c);
        if pending.len() >= 1000
            && let Some(c) = pending.pop_front()
        {
            assert!(c.await.unwrap().is_ack());
        }
    }
    for c in pending {
        assert!(c.await.unwrap().is_ack());
    }
    let _ = conn.close(200, "".into()).await;
}

async fn declare(queue: &str) {
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let _ = ch
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let _ = conn.close(200, "".into()).await;
}

/// The raw lapin loop: publish with confirms and consume with acks, concurrently.
async fn raw_lapin(n: usize) -> f64 {
    let queue = "hz-bench-raw";
    declare(queue).await;
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(256, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let t0 = Instant::now();
    let publisher = tokio::spawn(async move { publish(queue, n).await });
    let mut got = 0;
    while got < n {
        let d = consumer.next().await.unwrap().unwrap();
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
        got += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    publisher.await.unwrap();
    let _ = conn.close(200, "".into()).await;
    n as f64 / secs
}

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn done_count(c: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE state = 'done'")
        .fetch_one(c)
        .await
        .unwrap_or(0)
}

/// Clock ticks per second of /proc's CPU times (USER_HZ: 100 on Linux everywhere).
const TICKS: f64 = 100.0;

/// User + system CPU seconds of a process so far (0 when it is gone).
fn cpu_of(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command may hold spaces: fields count from after its closing parenthesis.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts with field 3 (state); utime and stime are fields 14 and 15.
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|x| x.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(14) + ticks(15)) / TICKS
}

/// CPU seconds of every process whose command name is `comm`, by pid.
fn cpu_by_comm(comm: &str) -> std::collections::HashMap<u32, f64> {
    let mut out = std::collections::HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if name.trim_end() == comm {
                out.insert(pid, cpu_of(pid));
            }
        }
    }
    out
}

/// CPU seconds spent between two readings of [`cpu_by_comm`] by processes alive at the second
/// (a process that started in between counts from zero).
fn cpu_spent(
    before: &std::collections::HashMap<u32, f64>,
    after: &std::collections::HashMap<u32, f64>,
) -> f64 {
    after
        .iter()
        .map(|(pid, t)| t - before.get(pid).copied().unwrap_or(0.0))
        .sum()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The in-process queue (no `queue:`), one process.
    Local,
    /// `queue: amqp://…` with `cluster:`.
    Cluster,
}

/// What one engine run measured.
struct Run {
    rate: f64,
    /// CPU µs per message: engine processes, PostgreSQL, RabbitMQ, this bench (the publisher).
    engine_us: f64,
    pg_us: f64,
    broker_us: f64,
    bench_us: f64,
}

/// N messages through `procs` engine processes; returns msg/s and the CPU per message.
async fn engine_run(mode: Mode, procs: usize, n: usize, dir: &Path) -> Run {
    let tag = match mode {
        Mode::Local => "local".to_owned(),
        Mode::Cluster => format!("{procs}"),
    };
    let name = format!("hz_bench_{tag}_{}", std::process::id());
    let admin = pg_admin();
    {
        let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut c)
        .await
        .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut c)
            .await
            .unwrap();
    }
    let db_url = format!(
        "{}/{name}",
        admin.rsplit_once('/').map_or(admin.as_str(), |x| x.0)
    );
    let inbound = format!("hz-bench-in-{tag}");
    declare(&inbound).await;
    let prefix = format!("hz-bench-{tag}");
    let run = dir.join(format!("p{tag}"));
    std::fs::create_dir_all(run.join("pipelines")).unwrap();
    let queue = match mode {
        Mode::Local => String::new(),
        Mode::Cluster => format!("queue: \"{}\"\ncluster:\n  prefix: {prefix}\n", amqp_url()),
    };
    // A root file per process: one shared data key and audit key, and a checkpoint file of its
    // own for each process (docs: each engine process checkpoints the shared audit chain to a
    // file of its own).
    for i in 0..procs {
        std::fs::write(
            run.join(format!("huizhen-{i}.yaml")),
            format!(
                "version: 1\nstore:\n  url: \"{db_url}\"\n{queue}security:\n  jwt_secret: \"bench-secret-0123456789abcdef0123456789\"\n  encryption: {{ keys_file: \"{}\" }}\n  audit: {{ key_file: \"{}\", checkpoint_file: \"{}\" }}\nplugins:\n  watch: false\npipelines: [\"pipelines/*.yaml\"]\n",
                run.join("keys").display(),
                run.join("audit.key").display(),
                run.join(format!("audit-{i}.checkpoints")).display(),
            ),
        )
        .unwrap();
    }
    std::fs::write(
        run.join("pipelines/p.yaml"),
        format!(
            "version: 1\nname: hub\nsource:\n  amqp: {{ url: \"{}\", queue: {inbound}, prefetch: 512, dead_letter: false }}\nconcurrency: 64\nqueue: 8192\nsinks:\n  - journal: {{}}\n",
            amqp_url()
        ),
    )
    .unwrap();
    let mut children = Procs(Vec::new());
    for i in 0..procs {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_huizhen"));
        // In the run's folder: whatever else defaults to ./data stays there.
        cmd.current_dir(&run)
            .arg("-c")
            .arg(run.join(format!("huizhen-{i}.yaml")))
            .arg("run")
            .arg("--bind")
            .arg(format!("127.0.0.1:{port}"));
        if mode == Mode::Cluster {
            cmd.arg("--node").arg(format!("b{i}"));
        }
        children.0.push(
            cmd.env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        );
        // The first creates the tables and the key file.
        tokio::time::sleep(Duration::from_millis(if i == 0 { 1500 } else { 300 })).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut poll = sqlx::PgConnection::connect(&db_url).await.unwrap();
    let engine_cpu = |c: &Procs| c.0.iter().map(|p| cpu_of(p.id())).sum::<f64>();
    let (e0, pg0, mq0, me0) = (
        engine_cpu(&children),
        cpu_by_comm("postgres"),
        cpu_by_comm("beam.smp"),
        cpu_of(std::process::id()),
    );
    let t0 = Instant::now();
    publish(&inbound, n).await;
    loop {
        if done_count(&mut poll).await as usize >= n {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "engine run stalled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    let per = |s: f64| s * 1e6 / n as f64;
    let out = Run {
        rate,
        engine_us: per(engine_cpu(&children) - e0),
        pg_us: per(cpu_spent(&pg0, &cpu_by_comm("postgres"))),
        broker_us: per(cpu_spent(&mq0, &cpu_by_comm("beam.smp"))),
        bench_us: per(cpu_of(std::process::id()) - me0),
    };
    let _ = poll.close().await;
    drop(children);
    let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut c)
    .await;
    out
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("HZ_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    println!("scale-out: {n} messages of 1 KB, publisher confirms and consumer acks");
    let raw = raw_lapin(n).await;
    println!("raw lapin publish/consume loop: {raw:>8.0} msg/s");
    println!(
        "CPU µs per message: engine processes / PostgreSQL / RabbitMQ / the publisher (this bench)"
    );
    let show = |what: &str, r: &Run, extra: String| {
        println!(
            "{what:<31} {:>8.0} msg/s  (ratio to raw {:.2}{extra})  CPU µs/msg {:.0} / {:.0} / {:.0} / {:.0}",
            r.rate,
            r.rate / raw,
            r.engine_us,
            r.pg_us,
            r.broker_us,
            r.bench_us
        );
    };
    let local = engine_run(Mode::Local, 1, n, dir.path()).await;
    show("local mode, 1 process:", &local, String::new());
    let mut cluster = Vec::new();
    for procs in 1..=3 {
        let r = engine_run(Mode::Cluster, procs, n, dir.path()).await;
        show(
            &format!(
                "cluster, {procs} process{}:",
                if procs == 1 { "" } else { "es" }
            ),
            &r,
            format!(", to local mode {:.2}", r.rate / local.rate),
        );
        cluster.push(r);
    }
    let raw_after = raw_lapin(n).await;
    println!("raw lapin again (drift check):   {raw_after:>8.0} msg/s");
    // On paper: a node's own CPU per message bounds what each node adds when the store and the
    // broker have cores of their own; the store's and the broker's bound the cluster.
    let one = &cluster[0];
    println!(
        "on paper, one core per engine node: {:.0} msg/s per node; PostgreSQL bounds the cluster at {:.0} msg/s per core it has, RabbitMQ at {:.0} per core",
        1e6 / one.engine_us,
        1e6 / one.pg_us,
        1e6 / one.broker_us
    );
}
