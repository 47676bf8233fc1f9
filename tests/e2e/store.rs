//! The store suite: the same tests on SQLite and PostgreSQL.

use huizhen_core::message::{NewMessage, REUSED_KEY_HEADER, State, now_ms};
use huizhen_core::store::{Effect, Journal, JournalOptions, ListFilter, Transition};

use crate::support::{Backend, both_backends, fresh_db, store};

both_backends!(
    append_and_read_back,
    dedup_same_body_is_duplicate_different_body_is_flagged,
    concurrent_identical_resends_insert_once,
    done_records_effects_once,
    retry_dead_reprocess_cycle,
    list_filters_and_pages,
    recovery_makes_in_flight_due,
    dedup_keys_expire,
    cluster_claims_heartbeats_and_reaping,
);

fn msg(pipeline: &str, body: &str) -> NewMessage {
    let mut m = NewMessage::new(pipeline, "clinic-a", "json", body.as_bytes().to_vec());
    m.source = "test".into();
    m
}

async fn append_and_read_back(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let s = store(&db).await;
    let j = Journal::start(s.clone(), JournalOptions::default());
    let mut m = msg("p", r#"{"name":"张三"}"#);
    m.headers.insert("x-a".into(), "1".into());
    m.trace_id = Some("trace-1".into());
    let a = j.append(m).await.unwrap();
    assert!(!a.duplicate);
    let got = s.get(&a.id).await.unwrap().expect("stored");
    assert_eq!(got.body, r#"{"name":"张三"}"#.as_bytes());
    assert_eq!(got.headers.get("x-a").map(String::as_str), Some("1"));
    assert_eq!(got.state, State::Received);
    assert_eq!(got.facility, "clinic-a");
    assert_eq!(got.trace_id, "trace-1");
    assert!(s.get("no-such-id").await.unwrap().is_none());
    // Non-UTF-8 bodies are kept byte for byte.
    let raw = vec![0xff, 0x00, 0xc3, 0x28];
    let a2 = j
        .append(NewMessage::new("p", "clinic-a", "bytes", raw.clone()))
        .await
        .unwrap();
    assert_eq!(s.get(&a2.id).await.unwrap().unwrap().body, raw);
}

async fn dedup_same_body_is_duplicate_different_body_is_flagged(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let s = store(&db).await;
    let j = Journal::start(s.clone(), JournalOptions::default());
    let mut m1 = msg("p", "body-1");
    m1.dedup_key = Some("HIS|HOSP|MSG0001".into());
    let a1 = j.append(m1.clone()).await.unwrap();
    let a2 = j.append(m1.clone()).await.unwrap();
    assert!(!a1.duplicate);
    assert!(a2.duplicate, "identical resend must be a duplicate");
    assert_eq!(a1.id, a2.id);
    // The same key in another pipeline is independent.
    let mut other = m1.clone();
    other.pipeline = "q".into();
    assert!(!j.append(other).await.unwrap().duplicate);
    // Same key, different body: processed and flagged.
    let mut m3 = msg("p", "body-2");
    m3.dedup_key = m1.dedup_key.clone();
    let a3 = j.append(m3).await.unwrap();
    assert!(!a3.duplicate);
    assert!(a3.reused_key);
    assert_ne!(a3.id, a1.id);
    let stored = s.get(&a3.id).await.unwrap().unwrap();
    assert_eq!(
        stored.headers.get(REUSED_KEY_HEADER).map(String::as_str),
        Some("reused-key")
    );
    // The duplicate answer carries the first message's current state.
    j.transition(Transition::Processing { id: a1.id.clone() })
        .await
        .unwrap();
    j.transition(Transition::Done {
        id: a1.id.clone(),
        effects: vec![],
    })
    .await
    .unwrap();
    let again = j.append(m1).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.state, State::Done);
}

async fn concurrent_identical_resends_insert_once(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let s = store(&db).await;
    let j = Journal::start(s.clone(), JournalOptions::default());
    let mut m = msg("p", "same");
    m.dedup_key = Some("k".into());
    let results = futures::future::join_all((0..50).map(|_| j.append(m.clone()))).await;
    let ids: std::collections::BTreeSet<String> =
        results.into_iter().map(|r| r.unwrap().id).collect();
    assert_eq!(
        ids.len(),
        1,
        "50 identical resends must journal one message"
    );
    let page = s
        .list(&ListFilter {
            pipeline: Some("p".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1);
}

async fn done_records_effects_once(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let s = store(&db).await;
    let j = Journal::start(s.clone(), JournalOptions::default());
    let a = j.append(msg("p", "x")).await.unwrap();
    let eff = || Effect {
        sink: "journal#0".into(),
        pipeline: "p".into(),
        body: b"out".to_vec(),
    };
    j.transition_nowait(Transition::Processing { id: a.id.clone() })
        .await;
    let first = j
        .transition(Transition::Done {
            id: a.id.clone(),
            effects: vec![eff()],
        })
        .await
        .unwrap();
    // A redelivery after a crash tries to complete again: no second effect.
    let second = j
        .transition(Transition::Done {
            id: a.id.clone(),
            effects: vec![eff()],
        })
        .await
        .unwrap();
    assert!(first);
    assert!(!second, "a done message cannot be completed twice");
    let effects = s.effects(Some("p")).await.unwrap();
    assert_eq!(effects.len(), 1);
    assert_eq!(effects[0].body, b"out");
    assert_eq!(s.get(&a.id).await.unwrap().unwrap().state, State::Done);
}

async fn retry_dead_reprocess_cycle(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let s = store(&db).await;
    let j = Journal::start(s.clone(), JournalOptions::default());
    let a = j.append(msg("p", "x")).await.unwrap();
    let names = vec!["p".to_owned()];
    // Not due: fresh messages are handled in memory, never claimed by the scheduler.
    assert!(s.claim_due(&names, 10).await.unwrap().is_empty());
    j.transition(Transition::Failed {
        id: a.id.clone(),
        attempt: 1,
        retry_at: now_ms() + 60_000,
        step: "filter#0".into(),
        error: "boom".into(),
    })
    .await
    .unwrap();
    let m = s.get(&a.id).await.unwrap().unwrap();
    assert_eq!(m.state, State::Failed);
    assert_eq!(m.attempts, 1);
    assert_eq!(m.last_error.as_deref(), Some("filter#0: boom"));
    assert!(
        s.claim_due(&names, 10).await.unwrap().is_empty(),
        "backoff not over"
    );
    // Only a received or processing message can fail: a second report is refused.
    let refused = j
        .transition(Transition::Failed {
            id: a.id.clone(),
            attempt: 2,
            retry_at: now_ms() - 1,
            step: "filter#0".into(),
            error: "again".into(),
        })
        .await
        .unwrap();
    assert!(!refused);
    assert_eq!(s.get(&a.id).await.unwrap().unwrap().attempts, 1);
    // A message whose backoff is over is claimed once.
    let b2 = j.append(msg("p", "y")).await.unwrap();
    j.transition(Transition::Failed {
        id: b2.id.clone(),
        attempt: 1,
        retry_at: now_ms() - 1,
        step: "set#1".into(),
        error: "later".into(),
    })
    .await
    .unwrap();
    let claimed = s.claim_due(&names, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, b2.id);
    assert_eq!(claimed[0].state, State::Processing);
    assert_eq!(claimed[0].body, b"y");
    // Claimed once only.
    assert!(s.claim_due(&names, 10).await.unwrap().is_empty());
    j.transition(Transition::Dead {
        id: b2.id.clone(),
        attempt: 2,
        step: "set#1".into(),
        error: "still".into(),
    })
    .await
    .unwrap();
    assert_eq!(s.get(&b2.id).await.unwrap().unwrap().state, State::Dead);
    let errors = s.attempt_errors(&b2.id).await.unwrap();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[1].error, "still");
    // Received messages cannot be reprocessed; dead ones can.
    let c = j.append(msg("p", "z")).await.unwrap();
    assert!(s.reprocess(&c.id).await.is_err());
    let r = s.reprocess(&b2.id).await.unwrap();
    assert_eq!(r.state, State::Received);
    assert_eq!(r.attempts, 0);
    let claimed = s.claim_due(&names, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, b2.id);
    // Bulk reprocess of dead letters.
    j.transition(Transition::Dead {
        id: b2.id.clone(),
        attempt: 1,
        step: "s".into(),
        error: "e".into(),
    })
    .await
    .unwrap();
    assert_eq!(s.reprocess_all("p", State::Dead).await.unwrap(), 1);
    assert!(s.reprocess_all("p", State::Received).await.is_err());
}

async fn list_filters_and_pages(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let s = store(&db).await;
    let j = Journal::start(s.clone(), JournalOptions::default());
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut m = msg(if i % 2 == 0 { "even" } else { "odd" }, "b");
        m.dedup_key = Some(format!("key-{i}"));
        ids.push(j.append(m).await.unwrap().id);
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = s
            .list(&ListFilter {
                pipeline: Some("even".into()),
                limit: Some(2),
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        seen.extend(page.messages.iter().map(|m| m.id.clone()));
        assert!(
            page.messages.iter().all(|m| m.body.is_empty()),
            "lists carry no bodies"
        );
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let expected: Vec<String> = ids.iter().step_by(2).rev().cloned().collect();
    assert_eq!(seen, expected, "newest first, every page once");
    let found = s
        .list(&ListFilter {
            q: Some("key-3".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(found.messages.len(), 1);
    assert_eq!(found.messages[0].id, ids[3]);
    let none = s
        .list(&ListFilter {
            state: Some(State::Dead),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.messages.is_empty());
    let counts = s.counts().await.unwrap();
    assert!(counts.contains(&("even".into(), State::Received, 4)));
    assert!(counts.contains(&("odd".into(), State::Received, 3)));
}

async fn recovery_makes_in_flight_due(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let s = store(&db).await;
    let j = Journal::start(s.clone(), JournalOptions::default());
    let a = j.append(msg("p", "1")).await.unwrap();
    let b2 = j.append(msg("p", "2")).await.unwrap();
    let c = j.append(msg("p", "3")).await.unwrap();
    j.transition(Transition::Processing { id: b2.id.clone() })
        .await
        .unwrap();
    j.transition(Transition::Processing { id: c.id.clone() })
        .await
        .unwrap();
    j.transition(Transition::Done {
        id: c.id.clone(),
        effects: vec![],
    })
    .await
    .unwrap();
    // As after a crash: a and b are in flight, c is done.
    assert_eq!(s.recover_in_flight().await.unwrap(), 2);
    let claimed = s.claim_due(&["p".to_owned()], 10).await.unwrap();
    let ids: Vec<_> = claimed.iter().map(|m| m.id.clone()).collect();
    assert_eq!(ids, vec![a.id, b2.id], "recovered in arrival order");
}

async fn dedup_keys_expire(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let s = store(&db).await;
    let j = Journal::start(s.clone(), JournalOptions::default());
    let mut m = msg("p", "x");
    m.dedup_key = Some("k".into());
    let a = j.append(m.clone()).await.unwrap();
    assert_eq!(s.expire_dedup_keys("p", 60_000).await.unwrap(), 0);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(s.expire_dedup_keys("p", 1).await.unwrap(), 1);
    let again = j.append(m).await.unwrap();
    assert!(!again.duplicate, "an expired key is accepted as new");
    assert_ne!(again.id, a.id);
}

/// Scale-out in the store: who may claim a ticket's message, heartbeats, reaping a dead node
/// (exactly one reaper adopts its messages), and the backlog.
async fn cluster_claims_heartbeats_and_reaping(b: Backend) {
    use huizhen_core::store::cluster::NodeInfo;
    let Some(db) = fresh_db(b).await else { return };
    let s = store(&db).await;
    let j = Journal::start(s.clone(), JournalOptions::default());
    let node = |id: &str| NodeInfo {
        id: id.into(),
        host: "h".into(),
        pid: 1,
        queue: "amqp://x".into(),
        started_at: now_ms(),
        heartbeat_at: now_ms(),
    };
    let (a, bn) = (node("a"), node("b"));
    assert!(s.heartbeat(&a, true).await.unwrap());
    assert!(s.heartbeat(&bn, true).await.unwrap());
    let mut ids = Vec::new();
    for i in 0..4 {
        let mut m = msg("p", &format!(r#"{{"n":{i}}}"#));
        m.owner = Some("a".into());
        ids.push(j.append(m).await.unwrap().id);
    }
    let since = now_ms() - 5_000;
    // Received: anyone may claim; the claim makes it b's.
    let got = s.claim_tickets(&ids[..2], "b", since, false).await.unwrap();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|m| m.state == State::Processing));
    let h = s.holder(&ids[0]).await.unwrap().unwrap();
    assert_eq!(
        (h.state, h.owner.as_deref()),
        (State::Processing, Some("b"))
    );
    // Processing by a live node: not claimable by another, nor by itself unless it says so.
    assert!(
        s.claim_tickets(&ids[..1], "a", since, false)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.claim_tickets(&ids[..1], "b", since, false)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.claim_tickets(&ids[..1], "b", since, true)
            .await
            .unwrap()
            .len(),
        1
    );
    // Done: never claimable.
    assert!(
        j.transition(Transition::Done {
            id: ids[1].clone(),
            effects: vec![]
        })
        .await
        .unwrap()
    );
    assert!(
        s.claim_tickets(&ids[1..2], "a", since, true)
            .await
            .unwrap()
            .is_empty()
    );
    // b stops its heartbeat: its processing message is claimable once b counts as dead.
    let later = now_ms() + 10_000;
    assert!(
        s.claim_tickets(&ids[..1], "a", since, false)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.claim_tickets(&ids[..1], "a", later, false)
            .await
            .unwrap()
            .len(),
        1
    );
    // Live nodes, and reaping: a's messages (2 still received) are adopted by b, exactly once.
    let live: Vec<String> = s
        .live_nodes(since)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(live, ["a", "b"]);
    let (dead, adopted) = s
        .reap_dead_node("b", later)
        .await
        .unwrap()
        .expect("a is reaped");
    assert_eq!(dead, "a");
    // ids[0] is processing by a (claimed above): adopted too, with ids[2] and ids[3].
    let mut adopted: Vec<String> = adopted.into_iter().map(|m| m.id).collect();
    adopted.sort();
    let mut want = vec![ids[0].clone(), ids[2].clone(), ids[3].clone()];
    want.sort();
    assert_eq!(adopted, want);
    assert!(
        s.reap_dead_node("b", later).await.unwrap().is_none(),
        "reaped once"
    );
    let h = s.holder(&ids[2]).await.unwrap().unwrap();
    assert_eq!((h.state, h.owner.as_deref()), (State::Received, Some("b")));
    // A reaped node that comes back is told so by its heartbeat.
    assert!(!s.heartbeat(&a, false).await.unwrap());
    // Messages of nobody (a single-process run) are adopted by the first cluster node.
    let lone = j.append(msg("p", r#"{"lone":1}"#)).await.unwrap().id;
    let orphans: Vec<String> = s
        .adopt_orphans("b")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(orphans, [lone]);
    // The backlog: ids[0], ids[2], ids[3] and the lone one are unfinished.
    let bl = s.backlog().await.unwrap();
    assert_eq!(bl.len(), 1);
    assert_eq!(bl[0].messages, 4);
    assert!(bl[0].oldest_received_at.unwrap() <= now_ms());
}

/// `store.durability` as written in `huizhen.yaml` reaches SQLite: `power-loss` makes the
/// journal writer's own connection (where every journal commit happens) and the pool's fsync
/// each commit (`synchronous=FULL`); the default and `process-crash` give `NORMAL`. Read back
/// from the connections, so a setting that is parsed but not applied fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_setting_sets_sqlite_synchronous() {
    for (setting, want) in [
        ("", "NORMAL"),
        ("  durability: process-crash\n", "NORMAL"),
        ("  durability: power-loss\n", "FULL"),
    ] {
        let db = fresh_db(Backend::Sqlite).await.unwrap();
        let file = db.dir.path().join("huizhen.yaml");
        std::fs::write(
            &file,
            format!("version: 1\nstore:\n  url: \"{}\"\n{setting}", db.url),
        )
        .unwrap();
        let (root, _) = huizhen_core::config::load_root(Some(&file)).unwrap();
        let mut loaded = crate::support::loaded(&db, &[]);
        loaded.root.store = root.store;
        let engine = huizhen_core::Engine::start(loaded).await.unwrap();
        assert_eq!(
            engine.journal.sqlite_synchronous(),
            Some(want),
            "journal writer with {setting:?}"
        );
        assert_eq!(
            engine.store.sqlite_synchronous().await.unwrap(),
            Some(want),
            "store pool with {setting:?}"
        );
        engine.shutdown(std::time::Duration::from_secs(5)).await;
    }
}

/// The failure report of the tests that wait for messages tells a `dead` message (with its last
/// error) from a missing one, and counts each group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fates_tell_dead_from_lost() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let s = store(&db).await;
    let j = Journal::start(s.clone(), JournalOptions::default());
    let done = j.append(msg("p", "a")).await.unwrap().id;
    let dead = j.append(msg("p", "b")).await.unwrap().id;
    let waiting = j.append(msg("p", "c")).await.unwrap().id;
    j.transition(Transition::Done {
        id: done.clone(),
        effects: vec![],
    })
    .await
    .unwrap();
    j.transition(Transition::Dead {
        id: dead.clone(),
        attempt: 3,
        step: "sink#0".into(),
        error: "refused".into(),
    })
    .await
    .unwrap();
    let lost = "0000-never-journaled".to_owned();
    let report =
        crate::support::fates(&s, &[done, dead.clone(), waiting.clone(), lost.clone()]).await;
    assert_eq!(
        report,
        format!(
            "of 4 messages expected done: done 1; dead 1 (e.g. {dead} (sink#0: refused)); failed 0; processing 0; received 1 (e.g. {waiting}); missing 1 (e.g. {lost}); unreadable 0;"
        )
    );
}
