//! Scale-out with the real binary: several `huizhen run` processes with `queue: amqp://…` on one
//! PostgreSQL store (RabbitMQ at `AMQP_URL`, PostgreSQL at `DATABASE_URL`).
//!
//! - 100,000 messages through 3 processes; one is killed with SIGKILL mid-run; afterwards every
//!   message is done, none is lost, no effect is applied twice.
//! - The broker is stopped and started mid-run (`rabbitmqctl stop_app` / `start_app`): senders
//!   see back-pressure or errors and retry, every acknowledged message is done exactly once, and
//!   the engines reconnect by themselves.
//! - An ordered pipeline across 2 processes keeps each patient's messages in order, also when
//!   one of them is killed mid-run (a message it delivered but could not record is delivered
//!   again right after, never after a later one).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use huizhen_core::message::State;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

use crate::crash::{TEST_SECRET, authed_client, free_port, wait_ready};
use crate::support::{
    Backend, TestDb, amqp_url, broker_exclusive, broker_shared, broker_up, delete_queues, fates,
    fresh_db, get_json, signal, stop_broker, store, wait_for, wait_for_or,
};

/// One engine process of a test cluster.
struct Proc {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes the shared config (PostgreSQL store, the broker queue with a test prefix) and the
/// pipelines.
fn write_cluster_config(db: &TestDb, prefix: &str, pipelines: &str) -> PathBuf {
    let dir = db.dir.path();
    std::fs::create_dir_all(dir.join("pipelines")).unwrap();
    std::fs::write(
        dir.join("huizhen.yaml"),
        format!(
            "version: 1\nstore:\n  url: \"{}\"\n  max_connections: 6\nqueue: \"{}\"\ncluster:\n  heartbeat: 300ms\n  dead_after: 1500ms\n  prefix: {prefix}\njournal:\n  scheduler_poll: 200ms\nsecurity:\n  jwt_secret: \"{TEST_SECRET}\"\n  encryption: {{ keys_file: \"{}\" }}\npipelines: [\"pipelines/*.yaml\"]\n",
            db.url,
            amqp_url(),
            dir.join("keys").display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("pipelines/p.yaml"), pipelines).unwrap();
    dir.join("huizhen.yaml")
}

async fn start_node(config: &Path, name: &str, client: &reqwest::Client) -> Proc {
    let port = free_port();
    let log = config.with_file_name(format!("{name}.log"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_huizhen"))
        .arg("-c")
        .arg(config)
        .arg("run")
        .arg("--bind")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--node")
        .arg(name)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .expect("start huizhen");
    wait_ready(client, port, &mut child, &log).await;
    Proc { child, port, log }
}

/// Counts of one pipeline's messages per state.
async fn states(
    s: &huizhen_core::store::Store,
    pipeline: &str,
) -> std::collections::HashMap<State, i64> {
    s.counts()
        .await
        .unwrap()
        .into_iter()
        .filter(|(p, _, _)| p == pipeline)
        .map(|(_, st, n)| (st, n))
        .collect()
}

/// Reads what the `amqp` sink delivered into `out`, in delivery order, until every patient's
/// `per` messages came, and checks that each patient's came in order `0..per`. A delivery that
/// repeats the patient's previous one (at least once, after a failure) is counted apart, not as
/// out of order. Returns how many repeated.
async fn assert_in_order(out: &str, patients: usize, per: usize) -> usize {
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let (mut total, mut repeats) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while total < patients * per {
        assert!(Instant::now() < deadline, "only {total} delivered");
        let Some(m) = ch
            .basic_get(out.into(), lapin::options::BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let v: serde_json::Value = serde_json::from_slice(&m.delivery.data).unwrap();
        let seqs = seen
            .entry(v["patient"].as_str().unwrap().to_owned())
            .or_default();
        let seq = v["seq"].as_u64().unwrap();
        if seqs.last() == Some(&seq) {
            repeats += 1;
            continue;
        }
        seqs.push(seq);
        total += 1;
    }
    let _ = conn.close(200, "read".into()).await;
    assert_eq!(seen.len(), patients);
    for (patient, seqs) in &seen {
        assert_eq!(
            seqs,
            &(0..per as u64).collect::<Vec<_>>(),
            "{patient} delivered out of order"
        );
    }
    repeats
}

/// The nodes that hold (processed) a pipeline's messages.
async fn owners(db: &TestDb, pipeline: &str) -> Vec<String> {
    use sqlx::Connection as _;
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query_scalar::<_, String>(
        "SELECT DISTINCT owner FROM messages WHERE pipeline = $1 AND owner IS NOT NULL ORDER BY owner",
    )
    .bind(pipeline)
    .fetch_all(&mut c)
    .await
    .unwrap()
}

/// The unfinished messages (`received` or `processing`) of `pipeline` that `node` answers for.
async fn held_by(c: &mut sqlx::PgConnection, pipeline: &str, node: &str) -> Vec<String> {
    sqlx::query_scalar::<_, String>(
        "SELECT id FROM messages WHERE pipeline = $1 AND owner = $2 AND state IN ('received', 'processing') ORDER BY id",
    )
    .bind(pipeline)
    .bind(node)
    .fetch_all(c)
    .await
    .unwrap()
}

/// Kills `victim` (SIGKILL) at a moment it holds unfinished work of `pipeline`, and returns the
/// ids it held: a kill of an idle process would prove nothing about taking over its work. Each
/// try freezes it (SIGSTOP, so the journal holds still while it is read), waits 100 ms (what it
/// had already sent the database lands meanwhile), reads what it holds, and kills it if that is
/// something, else lets it go on (SIGCONT) and tries again a moment later. Fails if it never
/// holds anything within `within`.
async fn kill_holding_work(
    db: &TestDb,
    pipeline: &str,
    victim: &mut Proc,
    node: &str,
    within: Duration,
) -> Vec<String> {
    use sqlx::Connection as _;
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let deadline = Instant::now() + within;
    let mut tries = 0;
    loop {
        tries += 1;
        signal(&victim.child, "-STOP");
        // What it sent the database before it froze lands (or not) meanwhile.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let held = held_by(&mut c, pipeline, node).await;
        if !held.is_empty() {
            victim.child.kill().expect("SIGKILL");
            victim.child.wait().unwrap();
            eprintln!(
                "killed {node} holding {} unfinished messages (try {tries})",
                held.len()
            );
            return held;
        }
        signal(&victim.child, "-CONT");
        assert!(
            Instant::now() < deadline,
            "{node} held no unfinished work of {pipeline} in {tries} looks over {within:?}: the kill would test nothing"
        );
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

/// Asserts that each message the victim held at its kill ended `done`, taken over by one of
/// `survivors` (a ticket redelivered to it, or the reaper's adoption): the path that makes a
/// dead node's work someone else's ran, and for every such message.
async fn assert_taken_over(db: &TestDb, held: &[String], survivors: &[&str]) {
    use sqlx::Connection as _;
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let rows: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT id, state, owner FROM messages WHERE id = ANY($1)")
            .bind(held)
            .fetch_all(&mut c)
            .await
            .unwrap();
    assert_eq!(
        rows.len(),
        held.len(),
        "messages held at the kill went missing"
    );
    let wrong: Vec<_> = rows
        .iter()
        .filter(|(_, state, owner)| {
            state != "done" || !owner.as_deref().is_some_and(|o| survivors.contains(&o))
        })
        .take(5)
        .collect();
    assert!(
        wrong.is_empty(),
        "messages the victim held at the kill that were not taken over and done by {survivors:?}: {wrong:?}"
    );
}

pub(crate) fn keyring(db: &TestDb) -> Option<Arc<huizhen_core::crypto::Keyring>> {
    huizhen_core::crypto::Keyring::from_config(&huizhen_core::crypto::EncryptionConfig {
        keys_file: db.dir.path().join("keys"),
        ..Default::default()
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_100k_messages_one_killed_nothing_lost_nothing_twice() {
    const TOTAL: usize = 100_000;
    let _broker = broker_shared().await;
    if !broker_up().await {
        return;
    }
    let Some(db) = fresh_db(Backend::Postgres).await else {
        return;
    };
    let prefix = format!("hz-kill-{}", &huizhen_core::message::new_id()[28..]);
    let inbound = format!("{prefix}.in");
    let config = write_cluster_config(
        &db,
        &prefix,
        &format!(
            "version: 1\nname: hub\nsource:\n  amqp: {{ url: \"{}\", queue: {inbound}, prefetch: 256 }}\nconcurrency: 32\nqueue: 4096\nsinks:\n  - journal: {{}}\n",
            amqp_url()
        ),
    );
    let client = authed_client(Duration::from_secs(30));
    let mut nodes = Vec::new();
    for name in ["n1", "n2", "n3"] {
        nodes.push(start_node(&config, name, &client).await);
    }

    // The facility side: 100,000 messages of ~1 KB into the hub's inbound queue, confirmed.
    let started = Instant::now();
    let conn = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let _ = ch
        .queue_declare(
            inbound.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the engines declared the inbound queue");
    let pad = "x".repeat(1000);
    let s = store(&db).await.with_keyring(keyring(&db));
    let mut held = None;
    for chunk in (0..TOTAL).collect::<Vec<_>>().chunks(1000) {
        let mut confirms = Vec::with_capacity(chunk.len());
        for &i in chunk {
            let body = format!(r#"{{"seq":{i},"patient":"P{}","pad":"{pad}"}}"#, i % 997);
            confirms.push(
                ch.basic_publish(
                    "".into(),
                    inbound.as_str().into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    BasicProperties::default()
                        .with_message_id(format!("m-{i}").as_str().into())
                        .with_content_type("application/json".into())
                        .with_delivery_mode(2),
                )
                .await
                .unwrap(),
            );
        }
        for c in confirms {
            assert!(c.await.unwrap().is_ack(), "broker confirmed the message");
        }
        // Kill -9 one process once a fifth is done, while the rest is still arriving, at a
        // moment it holds unfinished work.
        if held.is_none() {
            let done = states(&s, "hub").await.get(&State::Done).copied();
            if done.unwrap_or(0) as usize >= TOTAL / 5 {
                held = Some(
                    kill_holding_work(&db, "hub", &mut nodes[1], "n2", Duration::from_secs(20))
                        .await,
                );
                eprintln!(
                    "killed n2 with {} done after {:?}",
                    done.unwrap_or(0),
                    started.elapsed()
                );
            }
        }
    }
    let _ = conn.close(200, "sent".into()).await;
    let held = match held {
        Some(held) => held,
        // The engines were faster than the sender: kill now, with the tail still in flight.
        None => kill_holding_work(&db, "hub", &mut nodes[1], "n2", Duration::from_secs(20)).await,
    };

    wait_for("every message done", Duration::from_secs(900), || {
        let s = s.clone();
        async move {
            let st = states(&s, "hub").await;
            (st.get(&State::Done).copied().unwrap_or(0) as usize == TOTAL).then_some(())
        }
    })
    .await;
    let elapsed = started.elapsed();
    eprintln!(
        "{TOTAL} messages through 3 processes (one killed) in {elapsed:?}: {:.0} msg/s",
        TOTAL as f64 / elapsed.as_secs_f64()
    );
    // Settle: nothing else shows up (a late redelivery would be a duplicate message).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let st = states(&s, "hub").await;
    assert_eq!(
        st.values().sum::<i64>() as usize,
        TOTAL,
        "one journaled message per sent message, all done: {st:?}"
    );

    // Exactly once: one effect per message, every sequence number once.
    let effects = s.effects(Some("hub")).await.unwrap();
    assert_eq!(effects.len(), TOTAL, "one effect per message");
    let mut seqs = BTreeSet::new();
    for e in &effects {
        let v: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
        assert!(
            seqs.insert(v["seq"].as_u64().unwrap()),
            "sequence number {} applied twice",
            v["seq"]
        );
    }
    assert_eq!(seqs.len(), TOTAL);
    assert_eq!(seqs.last().copied(), Some(TOTAL as u64 - 1));
    // What n2 held when it died was taken over by the survivors.
    assert_taken_over(&db, &held, &["n1", "n3"]).await;

    // The survivors saw n2 die and took over; the API shows two live nodes.
    let v: serde_json::Value = get_json(
        &client,
        &format!("http://127.0.0.1:{}/api/cluster", nodes[0].port),
    )
    .await
    .unwrap();
    let live: Vec<&str> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(live, ["n1", "n3"], "{v}");
    let metrics = client
        .get(format!("http://127.0.0.1:{}/metrics", nodes[2].port))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("huizhen_backlog_messages{pipeline=\"hub\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains("huizhen_cluster_nodes 2"), "{metrics}");
    drop(nodes);
    delete_queues(&prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_stopped_and_started_mid_run_no_loss_no_false_ack() {
    const TOTAL: usize = 3_000;
    let broker = broker_exclusive().await;
    if !broker_up().await {
        return;
    }
    let Some(db) = fresh_db(Backend::Postgres).await else {
        return;
    };
    let prefix = format!("hz-restart-{}", &huizhen_core::message::new_id()[28..]);
    let config = write_cluster_config(
        &db,
        &prefix,
        "version: 1\nname: adt\nsource:\n  http: { path: /in/adt, kind: json }\nconcurrency: 8\nsinks:\n  - journal: {}\n",
    );
    let client = authed_client(Duration::from_secs(10));
    let nodes = vec![
        start_node(&config, "r1", &client).await,
        start_node(&config, "r2", &client).await,
    ];
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();

    // Senders: each message is sent until a 2xx comes back (alternating nodes, the same
    // Idempotency-Key every time), as an HIS with a retry loop would.
    let acked = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for w in 0..8usize {
        let client = client.clone();
        let ports = ports.clone();
        let acked = acked.clone();
        let retries = retries.clone();
        senders.push(tokio::spawn(async move {
            let mut ids = BTreeMap::new();
            for seq in (w..TOTAL).step_by(8) {
                let mut attempt = 0usize;
                loop {
                    let port = ports[(seq + attempt) % ports.len()];
                    let r = client
                        .post(format!("http://127.0.0.1:{port}/in/adt"))
                        .header("content-type", "application/json")
                        .header("idempotency-key", format!("adt-{seq}"))
                        .body(format!(r#"{{"seq":{seq}}}"#))
                        .send()
                        .await;
                    match r {
                        Ok(r) if r.status().is_success() => {
                            let v: serde_json::Value = r.json().await.unwrap();
                            ids.insert(seq, v["id"].as_str().unwrap().to_owned());
                            acked.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        _ => {
                            attempt += 1;
                            retries.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            ids
        }));
    }
    while acked.load(Ordering::SeqCst) < TOTAL / 4 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if let Some(down) = stop_broker(&broker) {
        let at_stop = acked.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(4)).await;
        let during = acked.load(Ordering::SeqCst) - at_stop;
        down.start().await;
        eprintln!("broker down for 4 s: {during} messages acknowledged meanwhile");
        // An ACK needs the ticket's confirm: with the broker gone, at most the requests that
        // were already confirmed when it stopped can still be answered.
        assert!(
            during <= 8,
            "{during} messages acknowledged while the broker was down"
        );
    }
    let mut ids = BTreeMap::new();
    for s in senders {
        let got = tokio::time::timeout(Duration::from_secs(180), s)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "senders still retrying after 180 s: {} of {TOTAL} acknowledged",
                    acked.load(Ordering::SeqCst)
                )
            })
            .unwrap();
        ids.extend(got);
    }
    assert_eq!(ids.len(), TOTAL, "every message acknowledged in the end");
    eprintln!("{} retries by the senders", retries.load(Ordering::SeqCst));
    let s = store(&db).await.with_keyring(keyring(&db));
    let acked_ids: Vec<String> = ids.values().cloned().collect();
    wait_for_or(
        "every message done",
        Duration::from_secs(120),
        || {
            let s = s.clone();
            async move {
                let st = states(&s, "adt").await;
                (st.get(&State::Done).copied().unwrap_or(0) as usize == TOTAL).then_some(())
            }
        },
        async || fates(&s, &acked_ids).await,
    )
    .await;
    let st = states(&s, "adt").await;
    assert_eq!(st.values().sum::<i64>() as usize, TOTAL, "{st:?}");
    let effects = s.effects(Some("adt")).await.unwrap();
    let effect_ids: BTreeSet<&str> = effects.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(effects.len(), TOTAL);
    for id in ids.values() {
        assert!(effect_ids.contains(id.as_str()), "acked {id} has no effect");
    }
    // Both engines are connected again: a message after the restart goes through either.
    for n in &nodes {
        let r = client
            .post(format!("http://127.0.0.1:{}/in/adt", n.port))
            .body(r#"{"seq":"after"}"#)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", n.log.display());
    }
    wait_for(
        "the messages after the restart",
        Duration::from_secs(60),
        || {
            let s = s.clone();
            async move {
                let st = states(&s, "adt").await;
                (st.get(&State::Done).copied().unwrap_or(0) as usize == TOTAL + 2).then_some(())
            }
        },
    )
    .await;
    drop(nodes);
    delete_queues(&prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_pipeline_keeps_each_patients_order_across_processes() {
    const PATIENTS: usize = 12;
    const PER: usize = 60;
    let _broker = broker_shared().await;
    if !broker_up().await {
        return;
    }
    let Some(db) = fresh_db(Backend::Postgres).await else {
        return;
    };
    let prefix = format!("hz-order-{}", &huizhen_core::message::new_id()[28..]);
    // The sink records the order it delivers in: an `amqp` sink into a queue the test reads.
    let out = format!("{prefix}.out");
    let config = write_cluster_config(
        &db,
        &prefix,
        &format!(
            "version: 1\nname: adt\nsource:\n  http: {{ path: /in/adt, kind: json }}\nordering_key: body.patient\nconcurrency: 4\nsinks:\n  - amqp: {{ url: \"{}\", routing_key: {out}, declare_queue: {out} }}\n",
            amqp_url()
        ),
    );
    let client = authed_client(Duration::from_secs(30));
    let nodes = vec![
        start_node(&config, "o1", &client).await,
        start_node(&config, "o2", &client).await,
    ];
    // Each patient's messages are sent in order, to alternating nodes.
    let mut senders = Vec::new();
    for p in 0..PATIENTS {
        let client = client.clone();
        let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
        senders.push(tokio::spawn(async move {
            for seq in 0..PER {
                let r = client
                    .post(format!("http://127.0.0.1:{}/in/adt", ports[seq % 2]))
                    .header("content-type", "application/json")
                    .body(format!(r#"{{"patient":"P{p}","seq":{seq}}}"#))
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success());
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let repeats = assert_in_order(&out, PATIENTS, PER).await;
    assert_eq!(repeats, 0, "nothing delivered twice without a failure");
    // Both processes took part (each consumes its share of the partitions).
    let owners = owners(&db, "adt").await;
    assert_eq!(owners, ["o1", "o2"], "the nodes that processed messages");
    let v: serde_json::Value = get_json(
        &client,
        &format!("http://127.0.0.1:{}/api/cluster", nodes[0].port),
    )
    .await
    .unwrap();
    assert_eq!(v["partitions"]["live"], 2, "{v}");
    drop(nodes);
    delete_queues(&prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_pipeline_keeps_order_when_a_process_is_killed() {
    const PATIENTS: usize = 8;
    const PER: usize = 150;
    let _broker = broker_shared().await;
    if !broker_up().await {
        return;
    }
    let Some(db) = fresh_db(Backend::Postgres).await else {
        return;
    };
    let prefix = format!("hz-okill-{}", &huizhen_core::message::new_id()[28..]);
    let out = format!("{prefix}.out");
    // A slow-ish step keeps messages in flight at the kill: each delivery waits on the
    // broker's confirm of the `amqp` sink.
    let config = write_cluster_config(
        &db,
        &prefix,
        &format!(
            "version: 1\nname: adt\nsource:\n  http: {{ path: /in/adt, kind: json }}\nordering_key: body.patient\nconcurrency: 4\nsinks:\n  - amqp: {{ url: \"{}\", routing_key: {out}, declare_queue: {out} }}\n",
            amqp_url()
        ),
    );
    let client = authed_client(Duration::from_secs(30));
    let survivor = start_node(&config, "k1", &client).await;
    let mut victim = start_node(&config, "k2", &client).await;
    // Wait until both share the partitions.
    wait_for("two nodes", Duration::from_secs(20), || async {
        let v: serde_json::Value = get_json(
            &client,
            &format!("http://127.0.0.1:{}/api/cluster", survivor.port),
        )
        .await?;
        (v["partitions"]["live"] == 2).then_some(())
    })
    .await;
    // Every patient's messages in order, all accepted by the survivor (so no ticket depends on
    // the victim's reaper); the victim processes its share of the partitions until it dies.
    let sent = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for p in 0..PATIENTS {
        let client = client.clone();
        let port = survivor.port;
        let sent = sent.clone();
        senders.push(tokio::spawn(async move {
            for seq in 0..PER {
                let r = client
                    .post(format!("http://127.0.0.1:{port}/in/adt"))
                    .header("content-type", "application/json")
                    .body(format!(r#"{{"patient":"P{p}","seq":{seq}}}"#))
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success());
                sent.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    while sent.load(Ordering::SeqCst) < PATIENTS * PER / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Killed while it is processing: messages it claimed (owner k2, `processing`), maybe
    // delivered, and could not record.
    let held = kill_holding_work(&db, "adt", &mut victim, "k2", Duration::from_secs(30)).await;
    for s in senders {
        s.await.unwrap();
    }
    let s = store(&db).await.with_keyring(keyring(&db));
    wait_for("every message done", Duration::from_secs(120), || {
        let s = s.clone();
        async move {
            let st = states(&s, "adt").await;
            (st.get(&State::Done).copied().unwrap_or(0) as usize == PATIENTS * PER).then_some(())
        }
    })
    .await;
    // A message the victim delivered but could not record is delivered again right after
    // (at least once), never after a later one.
    let redelivered = assert_in_order(&out, PATIENTS, PER).await;
    eprintln!("{redelivered} deliveries repeated after the kill (at least once)");
    // The redelivery path ran: every message the victim was processing at its kill was claimed
    // again by the survivor (its ticket redelivered, or adopted by the reaper) and is done.
    assert_taken_over(&db, &held, &["k1"]).await;
    assert_eq!(
        owners(&db, "adt").await,
        ["k1", "k2"],
        "the victim had processed its share before the kill"
    );
    drop(survivor);
    delete_queues(&prefix);
}

/// Issue 23, item 3: in a cluster nothing in the accept path waits on processing. The destination
/// hangs (an MLLP receiver that takes each request and answers only once a gate opens); a node
/// with 2 workers and an in-memory queue of 8 accepts 3,000 messages meanwhile (each journaled
/// and its ticket confirmed by the broker), shows them in its backlog, and delivers every one once
/// the destination answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_accepts_far_beyond_its_workers_while_the_destination_hangs() {
    const N: usize = 3_000;
    let _broker = broker_shared().await;
    if !broker_up().await {
        return;
    }
    let Some(db) = fresh_db(Backend::Postgres).await else {
        return;
    };
    let (gate_tx, gate) = tokio::sync::watch::channel(false);
    let (his_port, his) = crate::buffer::fake_his_gated(Duration::ZERO, gate).await;
    let prefix = format!("hz-hang-{}", &huizhen_core::message::new_id()[28..]);
    let yaml = format!(
        "version: 1\nname: hang\nsource:\n  http: {{ path: /in/hang, kind: hl7v2 }}\nconcurrency: 2\nqueue: 8\nretry: {{ max_attempts: 1000, backoff: 200ms, max_backoff: 1s }}\nsinks:\n  - mllp: {{ to: \"127.0.0.1:{his_port}\", ack_timeout: 120s }}\n"
    );
    let mut loaded = crate::support::loaded(&db, &[&yaml]);
    loaded.root.queue = amqp_url();
    loaded.root.cluster.prefix = prefix.clone();
    loaded.root.cluster.heartbeat = Duration::from_millis(300);
    loaded.root.cluster.dead_after = Duration::from_millis(1500);
    let engine = huizhen_core::Engine::start(loaded).await.unwrap();
    let p = engine.pipeline("hang").unwrap().clone();

    let t0 = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for s in 0..16 {
        let p = p.clone();
        senders.spawn(async move {
            for i in (s..N).step_by(16) {
                let body = format!(
                    "MSH|^~\\&|HZ|P|HIS|H|20261204||ADT^A08^ADT_A01|H{i}|P|2.5\rPID|1||{i}^^^H^MR||TEST^PATIENT\r"
                );
                p.submit(huizhen_core::message::NewMessage::new(
                    "hang",
                    "default",
                    "hl7v2",
                    body.into_bytes(),
                ))
                .await
                .unwrap();
            }
        });
    }
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(r) = senders.join_next().await {
            r.unwrap();
        }
    })
    .await
    .expect("the node accepts while its workers hang on the destination");
    eprintln!(
        "cluster node, destination hanging: {N} accepted in {:?}",
        t0.elapsed()
    );
    assert!(
        his.controls.lock().unwrap().is_empty(),
        "nothing reached the hanging destination"
    );
    let waiting: i64 = engine
        .store
        .backlog()
        .await
        .unwrap()
        .iter()
        .filter(|b| b.pipeline == "hang")
        .map(|b| b.messages)
        .sum();
    assert_eq!(waiting as usize, N, "every accepted message waits");

    // The destination answers again: every message arrives.
    gate_tx.send_replace(true);
    wait_for_or(
        "every message at the destination",
        Duration::from_secs(180),
        || async {
            let c = engine.store.counts().await.ok()?;
            let done: i64 = c
                .iter()
                .filter(|(p, s, _)| p == "hang" && *s == State::Done)
                .map(|x| x.2)
                .sum();
            (done as usize == N).then_some(())
        },
        async || {
            format!(
                "{} received by the destination",
                his.controls.lock().unwrap().len()
            )
        },
    )
    .await;
    let got: BTreeSet<String> = his.controls.lock().unwrap().iter().cloned().collect();
    assert_eq!(got.len(), N, "each message reached the destination");
    engine.shutdown(Duration::from_secs(5)).await;
    delete_queues(&prefix);
}
