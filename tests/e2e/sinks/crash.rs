//! Redelivery after a crash, with the real binary: a message goes through the `file`, `sql`
//! (SQLite) and `http` sinks in that order; the HTTP receiver holds the request open, and the
//! engine is killed (`kill -9`) while it waits, after the file and the row were written but
//! before `done` was committed. Restarted, the engine delivers the message again: the file is
//! found as written (same inode), the ledger keeps the row from being inserted twice, the
//! receiver gets the same idempotency key again, and the journal holds one effect per sink.

use std::os::unix::fs::MetadataExt as _;
use std::time::Duration;

use huizhen_core::message::State;
use sqlx::AnyPool;

use super::{Receiver, Reply};
use crate::crash::{authed_client, start, wait_ready, write_config};
use crate::support::{Backend, fresh_db, store, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_delivery_then_restart_gives_one_effect_per_sink() {
    let Some(db) = fresh_db(Backend::Sqlite).await else {
        return;
    };
    let recv = Receiver::start().await;
    recv.script(vec![Reply::Hang]);
    let out = db.dir.path().join("outbox");
    let lab = db.dir.path().join("lab.db");
    sqlx::any::install_default_drivers();
    let lab_url = format!("sqlite://{}?mode=rwc", lab.display());
    let pool = AnyPool::connect(&lab_url).await.unwrap();
    sqlx::query("CREATE TABLE results (message_id VARCHAR(64) NOT NULL, n BIGINT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let pipeline = format!(
        r#"version: 1
name: fanout
source:
  http: {{ path: /in/fanout, kind: json }}
retry: {{ backoff: 50ms, max_backoff: 200ms }}
sinks:
  - file: {{ dir: "{out}" }}
  - sql:
      url: "{lab_url}"
      statements:
        - sql: INSERT INTO results (message_id, n) VALUES (?, ?)
          params: [message.id, body.n]
  - http: {{ url: "{recv}/hook", timeout: 120s }}
"#,
        out = out.display(),
        recv = recv.url,
    );
    let setup = write_config(&db, &pipeline);
    let log = db.dir.path().join("huizhen.log");
    let client = authed_client(Duration::from_secs(20));
    let mut child = start(&setup, &log);
    wait_ready(&client, setup.port, &mut child, &log).await;

    let r = client
        .post(format!("http://127.0.0.1:{}/in/fanout", setup.port))
        .header("content-type", "application/json")
        .body(r#"{"n":7}"#)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The receiver holds the request: the file and the row are written, `done` is not.
    wait_for(
        "the request at the receiver",
        Duration::from_secs(60),
        || async { (!recv.seen().is_empty()).then_some(()) },
    )
    .await;
    child.kill().expect("SIGKILL");
    child.wait().unwrap();

    let file = out.join(format!("{id}.json"));
    let inode = std::fs::metadata(&file).unwrap().ino();
    assert_eq!(std::fs::read(&file).unwrap(), br#"{"n":7}"#);
    let rows = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM results")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(rows().await, 1);
    let s = store(&db).await.with_keyring(crate::cluster::keyring(&db));
    let before = s.get(&id).await.unwrap().unwrap();
    assert!(
        matches!(before.state, State::Received | State::Processing),
        "killed before done: {:?}",
        before.state
    );

    // Restarted: the message is recovered and delivered again; the receiver answers now.
    let mut child = start(&setup, &log);
    wait_ready(&client, setup.port, &mut child, &log).await;
    wait_for("the message done", Duration::from_secs(60), || {
        let s = s.clone();
        let id = id.clone();
        async move {
            let m = s.get(&id).await.unwrap()?;
            (m.state == State::Done).then_some(())
        }
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();

    let seen = recv.seen();
    assert_eq!(seen.len(), 2, "sent before the kill and after the restart");
    assert!(seen.iter().all(|r| r.headers["idempotency-key"] == id));
    assert_eq!(
        std::fs::metadata(&file).unwrap().ino(),
        inode,
        "the file is not written twice"
    );
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [format!("{id}.json")], "no temporary file left");
    assert_eq!(rows().await, 1, "the row is not inserted twice");
    let ledger = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM huizhen_deliveries")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(ledger, 1);
    let mut sinks: Vec<String> = s
        .effects_of(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.sink)
        .collect();
    sinks.sort();
    assert_eq!(sinks, ["file#0", "http#2", "sql#1"], "one effect per sink");
    pool.close().await;
}
