//! Edge store-and-forward: a facility's edge engine (SQLite, local queue) accepts and
//! acknowledges messages while its link to the hub's broker is down, shows the backlog, and
//! forwards everything in order when the link returns; the hub engine keeps each message once
//! (dedup by the edge's message id, carried as the AMQP `message-id`).
//!
//! The rural link is a TCP relay in front of RabbitMQ that the test cuts and restores.

use std::time::Duration;

use huizhen_core::Engine;
use huizhen_core::message::{NewMessage, State};

use crate::support::{
    Backend, amqp_url, broker_shared, broker_up, broker_via_cuttable_link, delete_queues, fresh_db,
    loaded, wait_for,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_keeps_acking_while_the_hub_is_away_then_forwards_once_in_order() {
    const BEFORE: usize = 50;
    // Far more than the edge's in-memory queue (16): the journal is the buffer.
    const DURING: usize = 3_000;
    const AFTER: usize = 50;
    let _broker = broker_shared().await;
    if !broker_up().await {
        return;
    }
    let (via_link, up_tx) = broker_via_cuttable_link().await;
    let q = format!("hz-edge-{}", &huizhen_core::message::new_id()[28..]);

    // The edge: accepts over HTTP, journals locally, forwards in order (one partition, retried
    // in place) through the link.
    let edge_db = fresh_db(Backend::Sqlite).await.unwrap();
    let edge_yaml = format!(
        "version: 1\nname: to-hub\nfacility: clinic-07\nsource:\n  http: {{ path: /in/edge, kind: json }}\nordering_key: \"'hub'\"\nconcurrency: 1\nqueue: 16\nretry: {{ max_attempts: 100000, backoff: 100ms, max_backoff: 500ms }}\nsinks:\n  - amqp: {{ url: \"{via_link}\", routing_key: {q}, declare_queue: {q}, confirm_timeout: 2s }}\n"
    );
    let edge = Engine::start(loaded(&edge_db, &[&edge_yaml]))
        .await
        .unwrap();
    // The hub: consumes in queue order and keeps one copy per edge message id.
    let hub_db = fresh_db(Backend::Sqlite).await.unwrap();
    let hub_yaml = format!(
        "version: 1\nname: from-edge\nsource:\n  amqp: {{ url: \"{}\", queue: {q}, ordered: true }}\nsinks:\n  - journal: {{}}\n",
        amqp_url()
    );
    let hub = Engine::start(loaded(&hub_db, &[&hub_yaml])).await.unwrap();

    let p = edge.pipeline("to-hub").unwrap().clone();
    let send = |range: std::ops::Range<usize>| {
        let p = p.clone();
        async move {
            for seq in range {
                let body = format!(r#"{{"seq":{seq},"patient":"P{}"}}"#, seq % 9);
                // `submit` returns once the edge's journal has it: the sender's ACK.
                p.submit(NewMessage::new(
                    "to-hub",
                    "clinic-07",
                    "json",
                    body.into_bytes(),
                ))
                .await
                .expect("the edge acknowledges while the hub is away");
            }
        }
    };
    let hub_done = |hub: &Engine| {
        let s = hub.store.clone();
        async move {
            s.counts()
                .await
                .unwrap()
                .iter()
                .filter(|(p, st, _)| p == "from-edge" && *st == State::Done)
                .map(|c| c.2)
                .sum::<i64>() as usize
        }
    };
    send(0..BEFORE).await;
    wait_for(
        "the first messages at the hub",
        Duration::from_secs(30),
        || async { (hub_done(&hub).await == BEFORE).then_some(()) },
    )
    .await;
    // …and finished at the edge (cut before the broker's last confirm arrives, the edge would
    // retry that message after the link returns and count it as waiting).
    wait_for(
        "the first messages finished at the edge",
        Duration::from_secs(30),
        || async {
            let b = edge.store.backlog_of(&["to-hub".to_owned()]).await.ok()?;
            b.is_empty().then_some(())
        },
    )
    .await;

    // The link goes down; the clinic keeps sending and the edge keeps acknowledging.
    up_tx.send_replace(false);
    let cut = std::time::Instant::now();
    let t0 = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(120), send(BEFORE..BEFORE + DURING))
        .await
        .expect("the edge accepts the whole outage's messages at the clinic's pace");
    eprintln!(
        "{DURING} messages accepted with the hub away in {:?} (in-memory queue 16)",
        t0.elapsed()
    );
    assert!(
        p.queue_depth() <= 16,
        "memory holds at most the queue: {}",
        p.queue_depth()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let backlog = edge.store.backlog().await.unwrap();
    let b = backlog
        .iter()
        .find(|b| b.pipeline == "to-hub")
        .expect("a backlog on the edge");
    assert_eq!(b.messages as usize, DURING, "{backlog:?}");
    let age = huizhen_core::message::now_ms() - b.oldest_received_at.unwrap();
    assert!(age >= 1500, "the oldest waits since the cut: {age} ms");
    assert_eq!(hub_done(&hub).await, BEFORE, "nothing crossed the cut link");
    eprintln!(
        "link down {:?}: edge backlog {} messages, oldest {age} ms",
        cut.elapsed(),
        b.messages
    );

    // The link returns: the backlog drains, then new messages follow.
    up_tx.send_replace(true);
    send(BEFORE + DURING..BEFORE + DURING + AFTER).await;
    let total = BEFORE + DURING + AFTER;
    wait_for(
        "everything at the hub",
        Duration::from_secs(180),
        || async { (hub_done(&hub).await == total).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = edge.store.backlog().await.unwrap();
    assert!(
        b.iter().all(|b| b.messages == 0),
        "edge backlog drained: {b:?}"
    );

    // Once each, in the order the clinic sent them (the hub journals in queue order; ids are
    // time-ordered).
    let all = crate::support::journaled(&hub.store, "from-edge").await;
    assert_eq!(all.len(), total, "one hub message per edge message");
    let mut seqs = Vec::new();
    let mut edge_ids = std::collections::BTreeSet::new();
    for m in &all {
        let v: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
        seqs.push(v["seq"].as_u64().unwrap());
        assert!(edge_ids.insert(m.headers["amqp-message-id"].clone()));
    }
    assert_eq!(seqs, (0..total as u64).collect::<Vec<_>>(), "in order");
    let dupes = hub
        .metrics
        .encode()
        .lines()
        .find(|l| l.starts_with("huizhen_messages_duplicate_total{pipeline=\"from-edge\"}"))
        .map(str::to_owned);
    eprintln!("hub duplicates dropped: {dupes:?}");
    hub.shutdown(Duration::from_secs(3)).await;
    edge.shutdown(Duration::from_secs(3)).await;
    delete_queues(&q);
}
