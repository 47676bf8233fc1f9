//! The store suite: the same tests on SQLite and PostgreSQL.

use huizhen_core::message::{NewMessage, REUSED_KEY_HEADER, State, now_ms};
use huizhen_core::store::{Effect, Journal, JournalOptions, ListFilter, Transition};

use crate::support::{Backend, both_backends, fresh_db, rekey_pass, store};

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
    sealed_values_are_bound_to_their_message_and_field,
    rotation_reseals_every_field_and_seals_what_was_clear,
    message_detail_reads_only_its_own_effects,
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
        as_received: false,
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
    // The engine's count (per pipeline, no sort) agrees, and leaves out pipelines with none.
    let of = s
        .backlog_of(&["p".to_owned(), "nothing-here".to_owned()])
        .await
        .unwrap();
    assert_eq!(of.len(), 1, "{of:?}");
    assert_eq!(
        (
            of[0].pipeline.as_str(),
            of[0].messages,
            of[0].oldest_received_at
        ),
        ("p", 4, bl[0].oldest_received_at)
    );
}

// --- Sealed fields (issue 12, items 6, 7 and 9): every value that can carry patient data is
// sealed bound to its message and field, or hashed.

/// A store that seals with the key file beside the test database, and its key ring.
async fn keyed(
    db: &crate::support::TestDb,
) -> (
    huizhen_core::store::Store,
    std::sync::Arc<huizhen_core::crypto::Keyring>,
) {
    let ring =
        huizhen_core::crypto::Keyring::from_config(&huizhen_core::crypto::EncryptionConfig {
            keys_file: db.dir.path().join("keys"),
            ..Default::default()
        })
        .unwrap()
        .unwrap();
    (store(db).await.with_keyring(Some(ring.clone())), ring)
}

/// Raw SQL on the test database, past the store: what someone with write access can do.
async fn raw_pool(db: &crate::support::TestDb) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(&db.url).await.unwrap()
}

async fn raw_text(pool: &sqlx::AnyPool, sql: &'static str, id: &str) -> Option<String> {
    use sqlx::Row;
    sqlx::query(sql)
        .bind(id.to_owned())
        .fetch_one(pool)
        .await
        .unwrap()
        .try_get::<Option<String>, _>(0)
        .unwrap()
}

async fn exec(pool: &sqlx::AnyPool, sql: &'static str, a: &str, b: &str) {
    sqlx::query(sql)
        .bind(a.to_owned())
        .bind(b.to_owned())
        .execute(pool)
        .await
        .unwrap();
}

/// The store error for `id`, checked to name the message, the field and the reason.
fn refused(
    r: Result<impl std::fmt::Debug, huizhen_core::store::StoreError>,
    id: &str,
    field: &str,
    reason: huizhen_core::crypto::CryptoError,
) {
    match r {
        Err(e @ huizhen_core::store::StoreError::Crypto { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(&format!("message {id} field {field}: {reason}")),
                "{text}"
            );
        }
        other => panic!("expected message {id} field {field} refused ({reason}), got {other:?}"),
    }
}

async fn sealed_values_are_bound_to_their_message_and_field(b: Backend) {
    use huizhen_core::crypto::CryptoError::{Clear, Tampered};
    let Some(db) = fresh_db(b).await else { return };
    let (s, _ring) = keyed(&db).await;
    let j = Journal::start(s.clone(), JournalOptions::default());
    let mut a = msg("p", r#"{"name":"欧阳明月"}"#);
    a.headers.insert("x-patient".into(), "欧阳明月".into());
    a.headers
        .insert("content-type".into(), "application/json".into());
    a.dedup_key = Some("330523199001011238".into());
    let mut bm = msg("p", r#"{"name":"李四"}"#);
    bm.headers.insert("x-patient".into(), "李四".into());
    let a = j.append(a).await.unwrap().id;
    let bid = j.append(bm).await.unwrap().id;
    let mut cm = msg("p", r#"{"name":"王五"}"#);
    cm.headers.insert("x-patient".into(), "王五".into());
    let c = j.append(cm).await.unwrap().id;
    assert!(
        j.transition(Transition::Done {
            id: a.clone(),
            effects: vec![Effect {
                sink: "journal#0".into(),
                pipeline: "p".into(),
                body: b"out-a".to_vec(),
                as_received: false,
            }],
        })
        .await
        .unwrap()
    );
    assert!(
        j.transition(Transition::Dead {
            id: bid.clone(),
            attempt: 1,
            step: "mllp#0".into(),
            error: "AE: patient 欧阳明月 unknown".into(),
        })
        .await
        .unwrap()
    );

    // Everything opens where it belongs.
    let got = s.get(&a).await.unwrap().unwrap();
    assert_eq!(got.body, r#"{"name":"欧阳明月"}"#.as_bytes());
    assert_eq!(got.headers["x-patient"], "欧阳明月");
    assert_eq!(got.headers["content-type"], "application/json");
    assert_eq!(got.dedup_key.as_deref(), Some("330523199001011238"));
    let got_b = s.get(&bid).await.unwrap().unwrap();
    assert_eq!(
        got_b.last_error.as_deref(),
        Some("mllp#0: AE: patient 欧阳明月 unknown")
    );
    assert_eq!(
        s.attempt_errors(&bid).await.unwrap()[0].error,
        "AE: patient 欧阳明月 unknown"
    );
    assert_eq!(s.effects_of(&a).await.unwrap()[0].body, b"out-a");

    // As stored: header values, errors and the dedup key show no patient data.
    let pool = raw_pool(&db).await;
    let headers = raw_text(&pool, "SELECT headers FROM messages WHERE id = $1", &a)
        .await
        .unwrap();
    assert!(!headers.contains("欧阳明月"), "{headers}");
    assert!(
        headers.contains("application/json"),
        "engine headers stay clear"
    );
    let key = raw_text(&pool, "SELECT dedup_key FROM messages WHERE id = $1", &a)
        .await
        .unwrap();
    assert!(
        key.starts_with("hmac:") && !key.contains("3305231990"),
        "{key}"
    );
    let sealed_key = raw_text(
        &pool,
        "SELECT dedup_key_sealed FROM messages WHERE id = $1",
        &a,
    )
    .await
    .unwrap();
    assert!(
        sealed_key.starts_with("hze:") && !sealed_key.contains("3305231990"),
        "{sealed_key}"
    );
    let last = raw_text(&pool, "SELECT last_error FROM messages WHERE id = $1", &bid)
        .await
        .unwrap();
    assert!(
        last.starts_with("hze:") && !last.contains("欧阳明月"),
        "{last}"
    );
    let hist = raw_text(
        &pool,
        "SELECT error FROM message_errors WHERE message_id = $1",
        &bid,
    )
    .await
    .unwrap();
    assert!(
        hist.starts_with("hze:") && !hist.contains("欧阳明月"),
        "{hist}"
    );

    // Dedup and search by the dedup key still work, by the blind index.
    let mut again = msg("p", r#"{"name":"欧阳明月"}"#);
    again.dedup_key = Some("330523199001011238".into());
    let dup = j.append(again).await.unwrap();
    assert!(dup.duplicate);
    assert_eq!(dup.id, a);
    let found = s
        .list(&ListFilter {
            q: Some("330523199001011238".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        found.messages.iter().map(|m| &m.id).collect::<Vec<_>>(),
        [&a]
    );

    // A body copied from message A into message B's row does not open as B's.
    exec(
        &pool,
        "UPDATE bodies SET body = (SELECT body FROM bodies WHERE id = $1) WHERE id = $2",
        &a,
        &bid,
    )
    .await;
    refused(s.get(&bid).await, &bid, "body", Tampered);
    // A's body copied into A's own effect: another field.
    exec(
        &pool,
        "UPDATE effects SET body = (SELECT body FROM bodies WHERE id = $1) WHERE message_id = $2",
        &a,
        &a,
    )
    .await;
    refused(s.effects_of(&a).await, &a, "effect/journal#0", Tampered);
    // B's error copied into C's last_error.
    exec(
        &pool,
        "UPDATE messages SET last_error = (SELECT last_error FROM messages WHERE id = $1) WHERE id = $2",
        &bid,
        &c,
    )
    .await;
    refused(s.get(&c).await, &c, "last_error", Tampered);
    exec(
        &pool,
        "UPDATE messages SET last_error = NULL WHERE id = $1 AND id <> $2",
        &c,
        "",
    )
    .await;
    assert!(s.get(&c).await.is_ok());
    // A's sealed header value moved into C's headers.
    exec(
        &pool,
        "UPDATE messages SET headers = (SELECT headers FROM messages WHERE id = $1) WHERE id = $2",
        &a,
        &c,
    )
    .await;
    refused(s.get(&c).await, &c, "header/x-patient", Tampered);
    // Values written in clear straight into the database are refused, not taken as data.
    exec(
        &pool,
        "UPDATE messages SET headers = $1 WHERE id = $2",
        r#"{"x-patient":"王五"}"#,
        &c,
    )
    .await;
    refused(s.get(&c).await, &c, "header/x-patient", Clear);
    sqlx::query("UPDATE bodies SET body = $1 WHERE id = $2")
        .bind(br#"{"name":"forged"}"#.to_vec())
        .bind(a.clone())
        .execute(&pool)
        .await
        .unwrap();
    refused(s.get(&a).await, &a, "body", Clear);
    exec(
        &pool,
        "UPDATE message_errors SET error = $1 WHERE message_id = $2",
        "plain error",
        &bid,
    )
    .await;
    refused(s.attempt_errors(&bid).await, &bid, "error", Clear);
    // A listing is not stopped by one bad row: the row says what is wrong.
    let page = s.list(&ListFilter::default()).await.unwrap();
    let bad = page.messages.iter().find(|m| m.id == c).unwrap();
    assert!(
        bad.last_error
            .as_deref()
            .unwrap_or("")
            .contains("stored in clear while encryption is on"),
        "{:?}",
        bad.last_error
    );
    pool.close().await;
}

async fn rotation_reseals_every_field_and_seals_what_was_clear(b: Backend) {
    use huizhen_core::crypto::Cipher;
    let Some(db) = fresh_db(b).await else { return };
    // Written while encryption was off.
    let plain = store(&db).await;
    let legacy = {
        let j = Journal::start(plain.clone(), JournalOptions::default());
        let mut m = msg("p", "legacy body");
        m.headers.insert("x-patient".into(), "赵六".into());
        m.dedup_key = Some("LEGACY-1".into());
        let id = j.append(m).await.unwrap().id;
        j.transition(Transition::Dead {
            id: id.clone(),
            attempt: 1,
            step: "s".into(),
            error: "clear error 赵六".into(),
        })
        .await
        .unwrap();
        id
    };
    let (s, _) = keyed(&db).await;
    refused(
        s.get(&legacy).await,
        &legacy,
        "body",
        huizhen_core::crypto::CryptoError::Clear,
    );
    let j = Journal::start(s.clone(), JournalOptions::default());
    let mut m = msg("p", "sealed body");
    m.headers.insert("x-patient".into(), "孙七".into());
    let failed = j.append(m).await.unwrap().id;
    j.transition(Transition::Dead {
        id: failed.clone(),
        attempt: 1,
        step: "s".into(),
        error: "refused 孙七".into(),
    })
    .await
    .unwrap();
    let done = j.append(msg("p", "done body")).await.unwrap().id;
    j.transition(Transition::Done {
        id: done.clone(),
        effects: vec![Effect {
            sink: "journal#0".into(),
            pipeline: "p".into(),
            body: b"effect body".to_vec(),
            as_received: false,
        }],
    })
    .await
    .unwrap();

    // Rotate: a new key, then re-seal in small batches.
    let new_key = huizhen_core::crypto::add_key(&db.dir.path().join("keys")).unwrap();
    let (s, ring) = keyed(&db).await;
    assert_eq!(ring.cipher().active(), new_key);
    let rekey =
        async |s: &huizhen_core::store::Store| rekey_pass(s, &["messages", "effects"], 2).await;
    assert_eq!(rekey(&s).await, 4, "three messages and one effect");
    assert_eq!(
        rekey(&s).await,
        0,
        "nothing left on the old key or in clear"
    );

    // Everything opens with the same binding, sealed with the new key.
    let m = s.get(&legacy).await.unwrap().unwrap();
    assert_eq!(m.body, b"legacy body");
    assert_eq!(m.headers["x-patient"], "赵六");
    assert_eq!(m.last_error.as_deref(), Some("s: clear error 赵六"));
    assert_eq!(
        s.attempt_errors(&legacy).await.unwrap()[0].error,
        "clear error 赵六"
    );
    let m = s.get(&failed).await.unwrap().unwrap();
    assert_eq!(m.body, b"sealed body");
    assert_eq!(m.headers["x-patient"], "孙七");
    assert_eq!(
        s.attempt_errors(&failed).await.unwrap()[0].error,
        "refused 孙七"
    );
    assert_eq!(s.effects_of(&done).await.unwrap()[0].body, b"effect body");
    let pool = raw_pool(&db).await;
    for id in [&legacy, &failed, &done] {
        use sqlx::Row;
        let body: Vec<u8> = sqlx::query("SELECT body FROM bodies WHERE id = $1")
            .bind(id.to_string())
            .fetch_one(&pool)
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        assert_eq!(Cipher::key_of(&body).as_deref(), Some(new_key.as_str()));
    }
    for id in [&legacy, &failed] {
        let e = raw_text(
            &pool,
            "SELECT error FROM message_errors WHERE message_id = $1",
            id,
        )
        .await
        .unwrap();
        assert_eq!(Cipher::key_of_text(&e).as_deref(), Some(new_key.as_str()));
        let h = raw_text(&pool, "SELECT headers FROM messages WHERE id = $1", id)
            .await
            .unwrap();
        assert!(!h.contains("赵六") && !h.contains("孙七"), "{h}");
    }
    let key = raw_text(
        &pool,
        "SELECT dedup_key FROM messages WHERE id = $1",
        &legacy,
    )
    .await
    .unwrap();
    assert_eq!(key, ring.dedup_index("LEGACY-1"));
    assert_eq!(
        s.get(&legacy).await.unwrap().unwrap().dedup_key.as_deref(),
        Some("LEGACY-1")
    );
    pool.close().await;
}

async fn message_detail_reads_only_its_own_effects(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let (s, ring) = keyed(&db).await;
    let j = Journal::start(s.clone(), JournalOptions::default());
    let a = j.append(msg("p", "a")).await.unwrap().id;
    let other = j.append(msg("p", "other")).await.unwrap().id;
    let eff = |sink: &str, body: &str| Effect {
        sink: sink.into(),
        pipeline: "p".into(),
        body: body.as_bytes().to_vec(),
        as_received: false,
    };
    j.transition(Transition::Done {
        id: a.clone(),
        effects: vec![eff("journal#0", "a0"), eff("journal#1", "a1")],
    })
    .await
    .unwrap();
    j.transition(Transition::Done {
        id: other.clone(),
        effects: vec![eff("journal#0", "o0")],
    })
    .await
    .unwrap();
    // Another message of the same pipeline has an effect that does not open (A's, copied in):
    // A's detail neither reads nor decrypts it.
    let pool = raw_pool(&db).await;
    exec(
        &pool,
        "UPDATE effects SET body = (SELECT body FROM effects WHERE message_id = $1 AND sink = 'journal#0') WHERE message_id = $2",
        &a,
        &other,
    )
    .await;
    let v = huizhen_core::http::message_detail(&s, &a).await.unwrap();
    let bodies: Vec<&str> = v["effects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["a0", "a1"]);
    refused(
        huizhen_core::http::message_detail(&s, &other).await,
        &other,
        "effect/journal#0",
        huizhen_core::crypto::CryptoError::Tampered,
    );
    // Bounded: a message with more effect rows than the limit gets the limit.
    let many = j.append(msg("p", "many")).await.unwrap().id;
    let n = huizhen_core::store::MAX_EFFECTS_PER_MESSAGE + 10;
    for i in 0..n {
        let sink = format!("s{i:04}");
        let body = ring.seal(
            b"x",
            &huizhen_core::crypto::Binding::new(&many, &format!("effect/{sink}")),
        );
        sqlx::query(
            "INSERT INTO effects (message_id, sink, pipeline, body, recorded_at) VALUES ($1, $2, 'p', $3, 0)",
        )
        .bind(many.clone())
        .bind(sink)
        .bind(body)
        .execute(&pool)
        .await
        .unwrap();
    }
    assert_eq!(
        s.effects_of(&many).await.unwrap().len() as i64,
        huizhen_core::store::MAX_EFFECTS_PER_MESSAGE
    );
    pool.close().await;
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
