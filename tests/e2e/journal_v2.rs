//! Journal v2 (migration 0024): a journal written by v1 (bodies in the state row, effects as
//! copies) moves forward with every message readable, reprocessable and deduplicated, on both
//! backends; and v2's own writes (bodies by id, effects by reference) read back the same.

use huizhen_core::crypto::{Binding, EncryptionConfig, Keyring};
use huizhen_core::message::{NewMessage, State};
use huizhen_core::store::{Effect, Journal, JournalOptions, ListFilter, Store, StoreOptions};
use sqlx::Row;

use crate::support::{Backend, both_backends, fresh_db, rekey_pass};

both_backends!(
    v1_journal_moves_forward,
    effect_of_the_body_as_received_is_a_reference,
);

/// A v1 row: its state and what goes with it.
struct V1 {
    state: &'static str,
    body: &'static str,
    key: Option<&'static str>,
    due: bool,
    error: Option<&'static str>,
    effect: Option<&'static str>,
}

const V1_ROWS: &[V1] = &[
    V1 {
        state: "received",
        body: "MSH|received 张三",
        key: Some("HIS|1"),
        due: false,
        error: None,
        effect: None,
    },
    V1 {
        state: "processing",
        body: "MSH|processing",
        key: Some("HIS|2"),
        due: false,
        error: None,
        effect: None,
    },
    V1 {
        state: "done",
        body: "MSH|done with effect",
        key: Some("HIS|3"),
        due: false,
        error: None,
        effect: Some("delivered 李四"),
    },
    // A filtered message: done without any effect.
    V1 {
        state: "done",
        body: "MSH|filtered",
        key: None,
        due: false,
        error: None,
        effect: None,
    },
    V1 {
        state: "failed",
        body: "MSH|failed",
        key: Some("HIS|5"),
        due: true,
        error: Some("timeout 王五"),
        effect: None,
    },
    V1 {
        state: "dead",
        body: "MSH|dead",
        key: Some("HIS|6"),
        due: false,
        error: Some("AE: unknown patient 赵六"),
        effect: None,
    },
];

fn key_ring(db: &crate::support::TestDb) -> std::sync::Arc<Keyring> {
    Keyring::from_config(&EncryptionConfig {
        keys_file: db.dir.path().join("keys"),
        ..Default::default()
    })
    .unwrap()
    .unwrap()
}

async fn raw_pool(db: &crate::support::TestDb) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(&db.url).await.unwrap()
}

/// Writes `V1_ROWS` through the v1 schema (migrations up to 0023), sealed as v1 sealed them.
async fn write_v1(pool: &sqlx::AnyPool, ring: &Keyring) -> Vec<String> {
    let mut ids = Vec::new();
    for (n, r) in V1_ROWS.iter().enumerate() {
        let id = huizhen_core::message::new_id();
        let at = 1_700_000_000_000_i64 + n as i64;
        let headers = serde_json::json!({
            "x-patient": ring.seal_text("患者", &Binding::new(&id, "header/x-patient")),
        })
        .to_string();
        let last_error = r
            .error
            .map(|e| ring.seal_text(&format!("mllp#0: {e}"), &Binding::new(&id, "last_error")));
        sqlx::query(
            "INSERT INTO messages (id, facility, pipeline, kind, body, headers, source, \
             received_at, trace_id, dedup_key, dedup_key_sealed, body_hash, parent_id, state, \
             attempts, next_attempt_at, last_error, updated_at) VALUES ($1, 'clinic-a', 'p', \
             'hl7v2', $2, $3, 'mllp', $4, $5, $6, $7, $8, NULL, $9, $10, $11, $12, $13)",
        )
        .bind(id.clone())
        .bind(ring.seal(r.body.as_bytes(), &Binding::new(&id, "body")))
        .bind(headers)
        .bind(at)
        .bind(id.clone())
        .bind(r.key.map(|k| ring.dedup_index(k)))
        .bind(
            r.key
                .map(|k| ring.seal_text(k, &Binding::new(&id, "dedup_key"))),
        )
        .bind(r.key.map(|_| ring.blind_index(r.body.as_bytes())))
        .bind(r.state)
        .bind(i64::from(r.error.is_some()))
        .bind(r.due.then_some(at))
        .bind(last_error)
        .bind(at)
        .execute(pool)
        .await
        .unwrap();
        if let Some(e) = r.error {
            sqlx::query(
                "INSERT INTO message_errors (message_id, attempt, at, step, error) \
                 VALUES ($1, 1, $2, 'mllp#0', $3)",
            )
            .bind(id.clone())
            .bind(at)
            .bind(ring.seal_text(e, &Binding::new(&id, "error")))
            .execute(pool)
            .await
            .unwrap();
        }
        if let Some(e) = r.effect {
            sqlx::query(
                "INSERT INTO effects (message_id, sink, pipeline, body, recorded_at) \
                 VALUES ($1, 'journal#0', 'p', $2, $3)",
            )
            .bind(id.clone())
            .bind(ring.seal(e.as_bytes(), &Binding::new(&id, "effect/journal#0")))
            .bind(at)
            .execute(pool)
            .await
            .unwrap();
        }
        ids.push(id);
    }
    ids
}

fn resend(r: &V1) -> NewMessage {
    let mut m = NewMessage::new("p", "clinic-a", "hl7v2", r.body.as_bytes().to_vec());
    m.source = "mllp".into();
    m.dedup_key = r.key.map(str::to_owned);
    m
}

async fn v1_journal_moves_forward(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let ring = key_ring(&db);
    let s = Store::open(&StoreOptions::new(db.url.clone()))
        .await
        .unwrap()
        .with_keyring(Some(ring.clone()));
    s.migrate_up_to(23).await.unwrap();
    let pool = raw_pool(&db).await;
    let ids = write_v1(&pool, &ring).await;

    s.migrate().await.unwrap();

    // Every message reads back in its state, body and fields opened where they belong.
    for (r, id) in V1_ROWS.iter().zip(&ids) {
        let m = s.get(id).await.unwrap().expect("kept");
        assert_eq!(m.body, r.body.as_bytes(), "{}", r.state);
        assert_eq!(m.state.as_str(), r.state);
        assert_eq!(m.headers["x-patient"], "患者");
        assert_eq!(m.dedup_key.as_deref(), r.key);
        assert_eq!(
            m.last_error,
            r.error.map(|e| format!("mllp#0: {e}")),
            "{}",
            r.state
        );
        let errors = s.attempt_errors(id).await.unwrap();
        assert_eq!(
            errors.iter().map(|e| e.error.as_str()).collect::<Vec<_>>(),
            r.error.into_iter().collect::<Vec<_>>()
        );
        let effects = s.effects_of(id).await.unwrap();
        assert_eq!(
            effects
                .iter()
                .map(|e| String::from_utf8_lossy(&e.body).into_owned())
                .collect::<Vec<_>>(),
            r.effect.into_iter().map(str::to_owned).collect::<Vec<_>>()
        );
    }
    // The raw shape: bodies by id, no body in the state row.
    let bodies: i64 = sqlx::query("SELECT COUNT(*) AS n FROM bodies")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("n");
    assert_eq!(bodies, V1_ROWS.len() as i64);
    assert!(
        sqlx::query("SELECT body FROM messages")
            .fetch_all(&pool)
            .await
            .is_err(),
        "the state row has no body column any more"
    );

    // Listing by state walks the one state index, and finds each.
    for st in State::ALL {
        let page = s
            .list(&ListFilter {
                state: Some(st),
                ..Default::default()
            })
            .await
            .unwrap();
        let want: Vec<&String> = V1_ROWS
            .iter()
            .zip(&ids)
            .rev()
            .filter(|(r, _)| r.state == st.as_str())
            .map(|(_, id)| id)
            .collect();
        assert_eq!(
            page.messages.iter().map(|m| &m.id).collect::<Vec<_>>(),
            want,
            "{st:?}"
        );
    }

    // Dedup holds across the migration: a resend of each keyed message is its duplicate.
    let j = Journal::start(s.clone(), JournalOptions::default());
    for (r, id) in V1_ROWS.iter().zip(&ids) {
        if r.key.is_none() {
            continue;
        }
        let a = j.append(resend(r)).await.unwrap();
        assert!(a.duplicate, "{}", r.state);
        assert_eq!(&a.id, id);
        assert_eq!(a.state.as_str(), r.state);
    }

    // Recovery makes what v1 left in flight due; reprocess puts dead and done back.
    assert_eq!(s.recover_in_flight().await.unwrap(), 2);
    let dead = &ids[5];
    let m = s.reprocess(dead).await.unwrap();
    assert_eq!(m.state, State::Received);
    assert_eq!(m.body, b"MSH|dead");
    assert_eq!(s.reprocess_all("p", State::Done).await.unwrap(), 2);
    let effects = s.effects_of(&ids[2]).await.unwrap();
    assert_eq!(effects[0].body, "delivered 李四".as_bytes());

    // Key rotation re-seals the bodies table (and the v1 effect's copy) with the new key.
    let new_key = huizhen_core::crypto::add_key(&db.dir.path().join("keys")).unwrap();
    let s = s.with_keyring(Some(key_ring(&db)));
    assert_eq!(
        rekey_pass(&s, &["messages", "effects"], 4).await,
        V1_ROWS.len() as u64 + 1,
        "every message and the v1 effect's copy"
    );
    assert_eq!(rekey_pass(&s, &["messages", "effects"], 4).await, 0);
    for row in sqlx::query("SELECT body FROM bodies")
        .fetch_all(&pool)
        .await
        .unwrap()
    {
        let body: Vec<u8> = row.get("body");
        assert_eq!(
            huizhen_core::crypto::Cipher::key_of(&body).as_deref(),
            Some(new_key.as_str())
        );
    }
    for (r, id) in V1_ROWS.iter().zip(&ids) {
        assert_eq!(s.get(id).await.unwrap().unwrap().body, r.body.as_bytes());
    }
    pool.close().await;
}

async fn effect_of_the_body_as_received_is_a_reference(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let ring = key_ring(&db);
    let s = crate::support::store(&db)
        .await
        .with_keyring(Some(ring.clone()));
    let j = Journal::start(s.clone(), JournalOptions::default());
    let mut m = NewMessage::new(
        "p",
        "clinic-a",
        "json",
        r#"{"name":"欧阳"}"#.as_bytes().to_vec(),
    );
    m.source = "test".into();
    let id = j.append(m).await.unwrap().id;
    assert!(
        j.transition(huizhen_core::store::Transition::Done {
            id: id.clone(),
            effects: vec![
                Effect {
                    sink: "journal#0".into(),
                    pipeline: "p".into(),
                    body: Vec::new(),
                    as_received: true,
                },
                Effect::copy("journal#1", "p", b"changed".to_vec()),
            ],
        })
        .await
        .unwrap()
    );
    let effects = s.effects_of(&id).await.unwrap();
    assert_eq!(effects.len(), 2);
    assert_eq!(effects[0].body, r#"{"name":"欧阳"}"#.as_bytes());
    assert_eq!(effects[1].body, b"changed");
    assert_eq!(s.effects(Some("p")).await.unwrap().len(), 2);
    // Stored: a reference (NULL) for the first, its own sealed copy for the second.
    let pool = raw_pool(&db).await;
    let rows = sqlx::query("SELECT sink, body FROM effects WHERE message_id = $1 ORDER BY sink")
        .bind(id.clone())
        .fetch_all(&pool)
        .await
        .unwrap();
    let stored: Vec<Option<Vec<u8>>> = rows.iter().map(|r| r.get("body")).collect();
    assert_eq!(stored[0], None);
    let own = stored[1].as_deref().expect("a copy");
    assert_ne!(own, b"changed", "sealed");
    // A rotation leaves the reference alone and re-seals the copy and the body.
    huizhen_core::crypto::add_key(&db.dir.path().join("keys")).unwrap();
    let s = s.with_keyring(Some(key_ring(&db)));
    assert_eq!(rekey_pass(&s, &["messages", "effects"], 8).await, 2);
    let effects = s.effects_of(&id).await.unwrap();
    assert_eq!(effects[0].body, r#"{"name":"欧阳"}"#.as_bytes());
    assert_eq!(effects[1].body, b"changed");
    pool.close().await;
}
