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

async fn done_count(db_url: &str) -> i64 {
    let mut c = sqlx::PgConnection::connect(db_url).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE state = 'done'")
        .fetch_one(&mut c)
        .await
        .unwrap_or(0);
    let _ = c.close().await;
    n
}

/// N messages through `procs` engine processes; returns msg/s.
async fn engine_run(procs: usize, n: usize, dir: &Path) -> f64 {
    let name = format!("hz_bench_{procs}_{}", std::process::id());
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
    let inbound = format!("hz-bench-in-{procs}");
    declare(&inbound).await;
    let prefix = format!("hz-bench-{procs}");
    let run = dir.join(format!("p{procs}"));
    std::fs::create_dir_all(run.join("pipelines")).unwrap();
    std::fs::write(
        run.join("huizhen.yaml"),
        format!(
            "version: 1\nstore:\n  url: \"{db_url}\"\nqueue: \"{}\"\ncluster:\n  prefix: {prefix}\nsecurity:\n  jwt_secret: \"bench-secret-0123456789abcdef0123456789\"\n  encryption: {{ keys_file: \"{}\" }}\nplugins:\n  watch: false\npipelines: [\"pipelines/*.yaml\"]\n",
            amqp_url(),
            run.join("keys").display()
        ),
    )
    .unwrap();
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
        children.0.push(
            Command::new(env!("CARGO_BIN_EXE_huizhen"))
                .arg("-c")
                .arg(run.join("huizhen.yaml"))
                .arg("run")
                .arg("--bind")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--node")
                .arg(format!("b{i}"))
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        );
        // The first creates the tables and the key file.
        tokio::time::sleep(Duration::from_millis(if i == 0 { 1500 } else { 300 })).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = Instant::now();
    publish(&inbound, n).await;
    loop {
        if done_count(&db_url).await as usize >= n {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "engine run stalled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    drop(children);
    let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut c)
    .await;
    rate
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
    for procs in 1..=3 {
        let r = engine_run(procs, n, dir.path()).await;
        println!(
            "engine, {procs} process{}:        {r:>8.0} msg/s  (ratio to raw {:.2})",
            if procs == 1 { " " } else { "es" },
            r / raw
        );
    }
    let raw_after = raw_lapin(n).await;
    println!("raw lapin again (drift check):   {raw_after:>8.0} msg/s");
}
