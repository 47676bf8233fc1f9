//! Encryption at rest: bodies unreadable in the database file without the key, and
//! `huizhen keys rotate` under concurrent writes.

use std::sync::Arc;
use std::time::Duration;

use huizhen_core::security::Role;

use super::{SECRET, server, token};
use crate::support::store;

/// Patient data in the database file is unreadable without the key: the name and identity number
/// of a message and its effect appear nowhere in the SQLite file or its WAL; with the key file
/// the API shows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_encrypted_at_rest() {
    let s = server(100).await;
    let body =
        r#"{"patient":{"name":"欧阳明月","id_number":"330523199001011238","phone":"13912345678"}}"#;
    let r = s
        .client
        .post(format!("{}/in/a", s.base))
        .bearer_auth(token(Role::Integrator, "hosp-a"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    crate::support::wait_for("done", Duration::from_secs(10), || {
        let store = s.engine.store.clone();
        let id = id.clone();
        async move {
            (store.get(&id).await.ok()??.state == huizhen_core::message::State::Done).then_some(())
        }
    })
    .await;
    let v: serde_json::Value = s
        .client
        .get(format!("{}/api/messages/{id}", s.base))
        .bearer_auth(token(Role::Integrator, "hosp-a"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["body"], body, "decrypted for an authorised reader");
    assert_eq!(v["effects"][0]["body"], body);
    let dir = s._db.dir.path().to_owned();
    s.engine.shutdown(Duration::from_secs(5)).await;
    let mut raw = Vec::new();
    for f in ["journal.db", "journal.db-wal"] {
        if let Ok(b) = std::fs::read(dir.join(f)) {
            raw.extend(b);
        }
    }
    assert!(raw.len() > 4096, "the database was read");
    for secret in ["欧阳明月", "330523199001011238", "13912345678"] {
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} is readable in the database file"
        );
    }
    // And without the key file, the store refuses rather than returning ciphertext.
    let bare = store(&s._db).await;
    assert!(matches!(
        bare.get(&id).await,
        Err(huizhen_core::store::StoreError::Crypto { .. })
    ));
}

/// `huizhen keys rotate` while messages keep arriving: afterwards every body, old and new,
/// decrypts to what was sent, the engine has moved to the new key by itself, and nothing is
/// left on the old key once the rotation's second pass is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_under_concurrent_writes_leaves_every_record_readable() {
    let s = server(100).await;
    let dir = s._db.dir.path().to_owned();
    let config = dir.join("huizhen.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1\nstore: {{ url: \"{}\" }}\nsecurity:\n  jwt_secret: \"{SECRET}\"\n  encryption: {{ keys_file: \"{}\" }}\npipelines: []\n",
            s._db.url,
            dir.join("keys").display()
        ),
    )
    .unwrap();
    let pipeline = s.engine.pipeline("a").unwrap().clone();
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = {
        let sent = sent.clone();
        tokio::spawn(async move {
            for i in 0..400 {
                let body = format!(r#"{{"patient":"患者{i}","seq":{i}}}"#);
                let m = huizhen_core::message::NewMessage::new(
                    "a",
                    "hosp-a",
                    "json",
                    body.clone().into_bytes(),
                );
                let a = pipeline.submit(m).await.unwrap();
                sent.lock().unwrap().push((a.id, body));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_huizhen"))
        .arg("-c")
        .arg(&config)
        .args(["keys", "rotate", "--batch", "50"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("active data key: k"), "{stdout}");
    writer.await.unwrap();
    crate::support::wait_for("all done", Duration::from_secs(20), || {
        let store = s.engine.store.clone();
        async move {
            let c = store.counts().await.ok()?;
            let done: i64 = c
                .iter()
                .filter(|(p, st, _)| p == "a" && *st == huizhen_core::message::State::Done)
                .map(|x| x.2)
                .sum();
            (done == 400).then_some(())
        }
    })
    .await;
    // Every record reads back as sent, with a key ring loaded fresh from the file.
    let ring =
        huizhen_core::crypto::Keyring::from_config(&huizhen_core::crypto::EncryptionConfig {
            keys_file: dir.join("keys"),
            ..Default::default()
        })
        .unwrap()
        .unwrap();
    let active = ring.cipher().active().to_owned();
    assert_ne!(active, "k1");
    let fresh = store(&s._db).await.with_keyring(Some(ring));
    let sent: Vec<(String, String)> = sent.lock().unwrap().clone();
    for (id, body) in &sent {
        let m = fresh.get(id).await.unwrap().unwrap();
        assert_eq!(m.body, body.as_bytes(), "message {id}");
    }
    assert_eq!(fresh.effects(Some("a")).await.unwrap().len(), 400);
    // The engine switched to the new key by itself: the last messages were sealed with it.
    let raw = {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&s._db.url).await.unwrap();
        let last = sent.last().unwrap().0.clone();
        let row: (Vec<u8>,) = sqlx::query_as("SELECT body FROM bodies WHERE id = ?")
            .bind(last)
            .fetch_one(&mut c)
            .await
            .unwrap();
        row.0
    };
    assert_eq!(huizhen_core::crypto::Cipher::key_of(&raw), Some(active));
    s.engine.shutdown(Duration::from_secs(5)).await;
}
