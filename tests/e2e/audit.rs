//! The audit trail's anchor (issue 12 item 3) and its smaller points (item 10).
//!
//! An attacker who can write the database, but not the engine's audit key and checkpoint file,
//! truncates the trail and resets its head, cuts its tail before the last checkpoint, or appends
//! rows with recomputed hashes. Each time the hash chain alone still verifies (shown by a store
//! without the anchor, which verifies as the code before it did), and the anchored verify names
//! what happened. Then: `huizhen audit verify|list|export` (their own events carry the OS uid),
//! and auditors see the events about their facility's messages, a full page at a time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use huizhen_core::Engine;
use huizhen_core::security::{Role, Security, SecurityConfig};
use huizhen_core::store::Store;
use huizhen_core::store::anchor::{AuditAnchor, AuditConfig};
use huizhen_core::store::audit::{AuditEvent, AuditFilter, chain_hash};

use crate::support::{Backend, TestDb, both_backends, fresh_db, loaded, store};

both_backends!(
    truncating_the_trail_and_resetting_its_head_is_detected,
    cutting_the_tail_before_the_last_checkpoint_is_detected,
    forged_rows_appended_with_recomputed_hashes_are_detected,
);

fn audit_config(db: &TestDb) -> AuditConfig {
    AuditConfig {
        key_file: db.dir.path().join("audit.key"),
        checkpoint_file: db.dir.path().join("audit.checkpoints"),
        ..AuditConfig::default()
    }
}

/// The store as the engine opens it: rows signed, checkpoints to the test's file.
async fn anchored(db: &TestDb) -> Store {
    let anchor = AuditAnchor::open(&audit_config(db), "test-node", true).unwrap();
    store(db).await.with_audit_anchor(Some(Arc::new(anchor)))
}

/// An expert's read of message `m{i}` (also the events `security.rs` tampers with).
pub(crate) fn event(i: usize) -> AuditEvent {
    AuditEvent {
        actor: "doctor-li".into(),
        role: "expert".into(),
        facility: "hosp-a".into(),
        action: "message.read".into(),
        resource_type: "Message".into(),
        resource_id: format!("m{i}"),
        outcome: "success".into(),
        source: "127.0.0.1:5000".into(),
        ..AuditEvent::default()
    }
}

/// Seven events with a checkpoint after the fifth; intact and anchored.
async fn trail(db: &TestDb) -> Store {
    let s = anchored(db).await;
    for i in 0..5 {
        s.audit(&event(i)).await.unwrap();
    }
    let c = s.checkpoint_audit().await.unwrap().expect("a checkpoint");
    assert_eq!(c.seq, 5);
    for i in 5..7 {
        s.audit(&event(i)).await.unwrap();
    }
    let r = s.verify_audit().await.unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(
        (
            r.anchor.checkpoints,
            r.anchor.latest_seq,
            r.anchor.keyed_rows
        ),
        (1, 5, 7)
    );
    s
}

/// Runs SQL as the database's owner can: past the append-only triggers.
async fn tamper(db: &TestDb, b: Backend, sql: &str) {
    use sqlx::Connection;
    match b {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::raw_sql(
                "DROP TRIGGER IF EXISTS audit_events_no_update; DROP TRIGGER IF EXISTS audit_events_no_delete;",
            )
            .execute(&mut c)
            .await
            .unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&mut c)
                .await
                .unwrap();
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::raw_sql("ALTER TABLE audit_events DISABLE TRIGGER USER")
                .execute(&mut c)
                .await
                .unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(&mut c)
                .await
                .unwrap();
        }
    }
}

/// What the hash chain alone finds (the verifier as it was before the anchor).
async fn chain_only(db: &TestDb) -> Vec<String> {
    store(db).await.verify_audit().await.unwrap().problems
}

async fn truncating_the_trail_and_resetting_its_head_is_detected(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let s = trail(&db).await;
    let truncate = match b {
        Backend::Sqlite => "DELETE FROM audit_events",
        Backend::Postgres => "TRUNCATE audit_events",
    };
    tamper(
        &db,
        b,
        &format!("{truncate}; UPDATE audit_head SET seq = 0, hash = 'genesis' WHERE id = 1"),
    )
    .await;
    assert_eq!(
        chain_only(&db).await,
        Vec::<String>::new(),
        "the chain alone sees nothing"
    );
    let p = s.verify_audit().await.unwrap().problems;
    assert!(
        p.iter()
            .any(|x| x.contains("ends at row 0") && x.contains("vouches for row 5")),
        "{p:?}"
    );

    // The engine writes on into the emptied table and checkpoints the new chain: the old
    // checkpoint still disagrees with the row now at its place.
    for i in 0..8 {
        s.audit(&event(i)).await.unwrap();
    }
    assert_eq!(s.checkpoint_audit().await.unwrap().unwrap().seq, 8);
    assert!(chain_only(&db).await.is_empty());
    let p = s.verify_audit().await.unwrap().problems;
    assert!(
        p.iter()
            .any(|x| x.starts_with("audit row 5 is not the row the checkpoint")),
        "{p:?}"
    );
}

async fn cutting_the_tail_before_the_last_checkpoint_is_detected(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let s = trail(&db).await;
    let cut_to = |n: i64| {
        format!(
            "DELETE FROM audit_events WHERE seq > {n}; UPDATE audit_head SET seq = {n}, hash = (SELECT hash FROM audit_events WHERE seq = {n}) WHERE id = 1"
        )
    };
    // The window, stated honestly: rows after the last checkpoint (6, 7) go unseen.
    tamper(&db, b, &cut_to(6)).await;
    let r = s.verify_audit().await.unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.last_seq, 6);
    // Before it, they do not.
    tamper(&db, b, &cut_to(3)).await;
    assert!(
        chain_only(&db).await.is_empty(),
        "the chain alone sees nothing"
    );
    let p = s.verify_audit().await.unwrap().problems;
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("the audit trail ends at row 3 but the checkpoint of")
            && p[0].contains("vouches for row 5: rows 4..5 were cut"),
        "{p:?}"
    );
}

async fn forged_rows_appended_with_recomputed_hashes_are_detected(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let s = trail(&db).await;
    let rows = s
        .audit_events(&AuditFilter {
            limit: Some(100),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let last = rows.last().unwrap();
    // Three forged rows after the real ones, each hashed as the engine would: one without a
    // MAC, one with the last real row's (valid) MAC, one claiming another key.
    let macs = [String::new(), last.mac.clone(), "0badc0de:00".to_owned()];
    let mut prev = last.hash.clone();
    let mut sql = String::new();
    for (i, mac) in macs.iter().enumerate() {
        let seq = last.seq + 1 + i as i64;
        let at = huizhen_core::message::now_ms();
        let mut e = event(100 + i);
        e.actor = "nobody-saw-this".into();
        let hash = chain_hash(&prev, seq, at, &e);
        sql.push_str(&format!(
            "INSERT INTO audit_events (seq, at, actor, role, facility, action, resource_type, resource_id, outcome, source, purpose, detail, prev_hash, hash, mac) VALUES ({seq}, {at}, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '', '', '{prev}', '{hash}', '{mac}'); ",
            e.actor, e.role, e.facility, e.action, e.resource_type, e.resource_id, e.outcome, e.source
        ));
        prev = hash;
    }
    sql.push_str(&format!(
        "UPDATE audit_head SET seq = {}, hash = '{prev}' WHERE id = 1",
        last.seq + 3
    ));
    tamper(&db, b, &sql).await;
    assert!(
        chain_only(&db).await.is_empty(),
        "the chain alone sees nothing"
    );
    let p = s.verify_audit().await.unwrap().problems;
    assert_eq!(
        p,
        vec![
            "audit row 8: it has no MAC, written after the audit key was in use (added outside the engine, or its MAC removed)"
                .to_owned(),
            "audit row 9: its MAC does not match (forged: added or rewritten without the audit key)"
                .to_owned(),
            format!(
                "audit row 10: signed with audit key 0badc0de, not {} (forged, or written by a process with another key file)",
                s.audit_anchor().unwrap().key().unwrap().kid()
            ),
        ]
    );
    // Removing every MAC does not pass the rows off as written before the key: rows after
    // the first checkpoint must have one.
    tamper(&db, b, "UPDATE audit_events SET mac = ''").await;
    assert!(
        chain_only(&db).await.is_empty(),
        "the chain alone sees nothing"
    );
    let p = s.verify_audit().await.unwrap().problems;
    let unsigned: Vec<&str> = p
        .iter()
        .filter(|x| x.contains("it has no MAC"))
        .map(|x| &x[..12])
        .collect();
    assert_eq!(
        unsigned,
        [
            "audit row 6:",
            "audit row 7:",
            "audit row 8:",
            "audit row 9:",
            "audit row 10"
        ],
        "{p:?}"
    );
}

fn cli(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_huizhen"))
        .arg("-c")
        .arg(dir.join("huizhen.yaml"))
        .args(args)
        .output()
        .unwrap()
}

/// `huizhen audit verify` with the config's key and checkpoint file fails on a truncated trail;
/// `audit list` and `audit export` are audited, with the OS uid of the user who ran them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_audit_is_anchored_and_audited() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let dir = db.dir.path();
    std::fs::write(
        dir.join("huizhen.yaml"),
        format!(
            "version: 1\nstore: {{ url: \"{}\" }}\nsecurity:\n  jwt_secret_file: {}\n  audit: {{ key_file: {}, checkpoint_file: {} }}\npipelines: []\n",
            db.url,
            dir.join("jwt.secret").display(),
            dir.join("audit.key").display(),
            dir.join("audit.checkpoints").display(),
        ),
    )
    .unwrap();
    let s = trail(&db).await;
    s.audit(&event(8).about("hosp-b")).await.unwrap();

    let out = cli(dir, &["audit", "list", "--limit", "3"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
    let out = cli(dir, &["audit", "export", "--fhir"]);
    assert!(out.status.success(), "{out:?}");
    let exported = String::from_utf8_lossy(&out.stdout).to_string();

    let events = s
        .audit_events(&AuditFilter {
            limit: Some(100),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let uid = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(dir).unwrap().uid()
    };
    let read = events
        .iter()
        .find(|e| e.event.action == "audit.read")
        .expect("audit list is audited");
    assert!(read.event.actor.starts_with("cli:"), "{read:?}");
    assert_eq!(read.event.source, format!("cli uid={uid}"));
    assert!(read.event.detail.contains("limit=3; 3 events"), "{read:?}");
    let export = events
        .iter()
        .find(|e| e.event.action == "audit.export")
        .expect("audit export is audited");
    assert_eq!(export.event.source, format!("cli uid={uid}"));
    // Written before the first line: the export holds its own event.
    assert!(
        exported.contains(&format!("\"huizhen-audit-{}\"", export.seq)),
        "{exported}"
    );
    // The subject facility is in the FHIR export, on the entity.
    let about: Vec<serde_json::Value> = exported
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["entity"][0]["extension"][0]["valueString"] == "hosp-b")
        .collect();
    assert_eq!(about.len(), 1, "{exported}");
    assert_eq!(about[0]["id"], "huizhen-audit-8");

    let out = cli(dir, &["audit", "verify"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("anchored: 1 checkpoint(s)"), "{text}");
    assert!(text.contains("vouches for row 5"), "{text}");
    assert!(
        text.contains("signed: 10 row(s) with a valid MAC"),
        "{text}"
    );

    tamper(
        &db,
        Backend::Sqlite,
        "DELETE FROM audit_events; UPDATE audit_head SET seq = 0, hash = 'genesis' WHERE id = 1",
    )
    .await;
    let out = cli(dir, &["audit", "verify"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("the audit trail ends at row 0 but the checkpoint of"),
        "{text}"
    );
    // Another node's checkpoint file is checked too.
    std::fs::rename(
        dir.join("audit.checkpoints"),
        dir.join("node-b.checkpoints"),
    )
    .unwrap();
    let out = cli(dir, &["audit", "verify"]);
    assert!(out.status.success(), "{out:?}");
    let other = dir.join("node-b.checkpoints");
    let out = cli(
        dir,
        &["audit", "verify", "--checkpoints", other.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

const SECRET: &str = "e2e-audit-secret-0123456789abcdef0123";

fn token(role: Role, facility: &str) -> String {
    huizhen_core::security::issue_from_config(
        &SecurityConfig {
            jwt_secret: Some(SECRET.into()),
            ..SecurityConfig::default()
        },
        &format!("{}@{facility}", role.as_str()),
        role,
        facility,
        Duration::from_secs(600),
    )
    .unwrap()
    .token
}

/// A platform admin sends into and reads facility A's pipeline, after three messages into B. A's
/// auditor sees those events about A's message (not only events by A's own staff), B's auditor
/// does not; and a page of one is a full page (filtered in SQL, not after the limit). The
/// engine's own checkpoints anchor what was written (and reach the witness command), and a clean
/// shutdown checkpoints the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditors_see_events_about_their_facility_and_the_engine_checkpoints() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let a = "version: 1\nname: a\nfacility: hosp-a\nsource:\n  http: { path: /in/a, kind: json }\nsinks:\n  - journal: {}\n";
    let b = "version: 1\nname: b\nfacility: hosp-b\nsource:\n  http: { path: /in/b, kind: json }\nsinks:\n  - journal: {}\n";
    let mut l = loaded(&db, &[a, b]);
    l.root.security.audit.checkpoint_every = 3;
    let witness = db.dir.path().join("witness.log");
    l.root.security.audit.witness_command = vec![
        "sh".into(),
        "-c".into(),
        format!("cat >> '{}'", witness.display()),
    ];
    let engine = Engine::start(l).await.unwrap();
    let security = Security::new(
        &SecurityConfig {
            jwt_secret: Some(SECRET.into()),
            ..SecurityConfig::default()
        },
        engine.store.clone(),
    )
    .unwrap();
    let app = huizhen_core::http::router(
        engine.app_state(),
        &huizhen_core::config::HttpConfig::default(),
        Arc::new(security),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    let c = reqwest::Client::new();
    let admin = token(Role::Admin, "*");
    let send = async |path: &str| -> String {
        let r = c
            .post(format!("{base}{path}"))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body(r#"{"patient":"P1"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let v: serde_json::Value = r.json().await.unwrap();
        v["id"].as_str().unwrap().to_owned()
    };
    for _ in 0..3 {
        send("/in/b").await;
    }
    let id = send("/in/a").await;
    let r = c
        .get(format!("{base}/api/messages/{id}"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let events = async |facility: &str, limit: u32| -> Vec<serde_json::Value> {
        let v: serde_json::Value = c
            .get(format!("{base}/api/audit?limit={limit}"))
            .bearer_auth(token(Role::Auditor, facility))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["events"].as_array().unwrap().clone()
    };
    let page = events("hosp-a", 1).await;
    assert_eq!(page.len(), 1, "a full page: {page:?}");
    assert_eq!(page[0]["action"], "message.ingest");
    assert_eq!(page[0]["resource_id"], id.as_str());
    assert_eq!(page[0]["actor"], "admin@*");
    assert_eq!(page[0]["subject_facility"], "hosp-a");
    let all = events("hosp-a", 100).await;
    assert!(
        all.iter()
            .any(|e| e["action"] == "message.read" && e["resource_id"] == id.as_str()),
        "{all:?}"
    );
    assert!(
        all.iter()
            .all(|e| e["subject_facility"] == "hosp-a" || e["facility"] == "hosp-a"),
        "{all:?}"
    );
    let b_sees = events("hosp-b", 100).await;
    assert!(
        b_sees.iter().all(|e| e["subject_facility"] != "hosp-a"),
        "{b_sees:?}"
    );
    assert_eq!(
        b_sees
            .iter()
            .filter(|e| e["action"] == "message.ingest")
            .count(),
        3
    );

    // Every third event woke the checkpointer; the shutdown checkpoints the rest.
    let cp_file = db.dir.path().join("audit.checkpoints");
    let mut checkpointed = false;
    for _ in 0..100 {
        let (cps, _) = huizhen_core::store::anchor::read_checkpoints(&cp_file).unwrap();
        if cps.iter().any(|c| c.checkpoint.seq >= 3) {
            checkpointed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(checkpointed, "a checkpoint after 3 events");
    // The witness got checkpoint lines as the file has them.
    let mut witnessed = Vec::new();
    for _ in 0..100 {
        witnessed = huizhen_core::store::anchor::read_checkpoints(&witness)
            .unwrap()
            .0;
        if !witnessed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!witnessed.is_empty(), "the witness got a checkpoint");
    // Read after the witness: a checkpoint written meanwhile is in the file before it is
    // handed to the witness.
    let (cps, _) = huizhen_core::store::anchor::read_checkpoints(&cp_file).unwrap();
    assert!(
        witnessed
            .iter()
            .all(|w| cps.iter().any(|c| c.checkpoint == w.checkpoint)),
        "{witnessed:?}"
    );
    let store = engine.store.clone();
    let (head, _) = store.audit_head().await.unwrap();
    engine.shutdown(Duration::from_secs(5)).await;
    let (cps, bad) = huizhen_core::store::anchor::read_checkpoints(&cp_file).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(
        cps.last().unwrap().checkpoint.seq,
        head,
        "the shutdown's checkpoint"
    );
    let r = anchored(&db).await.verify_audit().await.unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.anchor.latest_seq, head);
    assert_eq!(r.anchor.keyed_rows as i64, head);
}
