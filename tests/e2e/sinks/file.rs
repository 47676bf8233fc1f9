//! The `file` sink against temporary folders.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::Duration;

use huizhen_core::Engine;
use huizhen_core::message::{NewMessage, State};

use super::{json, redeliver, settled};
use crate::support::{Backend, fresh_db, loaded};

const ORU: &str = "MSH|^~\\&|LIS|COUNTY|HIS|PROV|20251206083000||ORU^R01|C42|P|2.5\rPID|1||P7^^^HIS\rOBX|1|NM|GLU||5.6|mmol/L\r";

/// Every file under `dir`, relative, sorted (temporary files included).
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sink_writes_each_message_once_atomically_and_as_an_hl7_batch() {
    let Some(db) = fresh_db(Backend::Sqlite).await else {
        return;
    };
    let out = db.dir.path().join("outbox");
    let batches = db.dir.path().join("batches");
    let yaml = format!(
        "version: 1\nname: to-share\nsource:\n  http: {{ path: /in/to-share }}\nsinks:\n  - file: {{ dir: \"{}\", file_name: \"{{{{date}}}}/{{{{header.order}}}}-{{{{id}}}}.hl7\" }}\n  - file: {{ dir: \"{}\", hl7_batch: true }}\n",
        out.display(),
        batches.display()
    );
    let engine = Engine::start(loaded(&db, &[&yaml])).await.unwrap();
    let p = engine.pipeline("to-share").unwrap().clone();
    let mut m = NewMessage::new("", "", "hl7v2", ORU.as_bytes().to_vec());
    m.headers.insert("order".into(), "O-9".into());
    let id = p.submit(m).await.unwrap().id;
    let done = settled(&engine, &id, State::Done).await;

    let date = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(done.received_at)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string();
    let plain = format!("{date}/O-9-{id}.hl7");
    assert_eq!(
        files(&out),
        std::slice::from_ref(&plain),
        "one file, no temporary one left"
    );
    assert_eq!(std::fs::read(out.join(&plain)).unwrap(), ORU.as_bytes());
    let batch_name = format!("{id}.hl7");
    assert_eq!(files(&batches), std::slice::from_ref(&batch_name));
    let batch = std::fs::read(batches.join(&batch_name)).unwrap();
    assert!(batch.starts_with(b"FHS|^~\\&|LIS|COUNTY|HIS|PROV|"));
    let back = huizhen_hl7::batch::split_raw(&batch);
    assert!(back.discrepancies.is_empty(), "{:?}", back.discrepancies);
    assert_eq!(back.messages, [ORU.as_bytes().to_vec()]);

    // Redelivered (a reprocess): both files are found as written and left alone.
    let inodes = |paths: &[&Path]| -> Vec<u64> {
        paths
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().ino())
            .collect()
    };
    let paths = [out.join(&plain), batches.join(&batch_name)];
    let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    let before = inodes(&refs);
    redeliver(&engine, &id).await;
    assert_eq!(inodes(&refs), before, "not written a second time");
    assert_eq!(files(&out), [plain]);
    assert_eq!(std::fs::read(batches.join(&batch_name)).unwrap(), batch);
    let effects = engine.store.effects_of(&id).await.unwrap();
    assert_eq!(effects.len(), 2, "one effect per sink");
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sink_never_overwrites_another_file_and_refuses_unsafe_names() {
    let Some(db) = fresh_db(Backend::Sqlite).await else {
        return;
    };
    let out = db.dir.path().join("outbox");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("X9.json"), "someone else's").unwrap();
    let yaml = format!(
        "version: 1\nname: by-order\nsource:\n  http: {{ path: /in/by-order }}\nretry: {{ max_attempts: 3, backoff: 10ms, max_backoff: 20ms }}\nsinks:\n  - file: {{ dir: \"{}\", file_name: \"{{{{header.order}}}}.json\" }}\n",
        out.display()
    );
    let engine = Engine::start(loaded(&db, &[&yaml])).await.unwrap();
    let p = engine.pipeline("by-order").unwrap().clone();

    let taken = p
        .submit(json(r#"{"n":1}"#, &[("order", "X9")]))
        .await
        .unwrap()
        .id;
    let m = settled(&engine, &taken, State::Dead).await;
    assert_eq!(m.attempts, 1);
    let error = m.last_error.unwrap();
    assert!(
        error.starts_with("file#0: ") && error.ends_with("X9.json: a file of that name exists with other content; it is not overwritten (move it away and reprocess the message)"),
        "{error}"
    );
    assert_eq!(
        std::fs::read(out.join("X9.json")).unwrap(),
        b"someone else's"
    );

    let escape = p
        .submit(json(r#"{"n":2}"#, &[("order", "../../etc/passwd")]))
        .await
        .unwrap()
        .id;
    let m = settled(&engine, &escape, State::Dead).await;
    assert_eq!(
        m.last_error.as_deref(),
        Some(
            "file#0: template \"{{header.order}}.json\": \"../../etc/passwd\" cannot be part of a file name (a `/`, `\\` or control character)"
        )
    );
    let fine = p
        .submit(json(r#"{"n":3}"#, &[("order", "Y1")]))
        .await
        .unwrap()
        .id;
    settled(&engine, &fine, State::Done).await;
    assert_eq!(files(&out), ["X9.json", "Y1.json"]);
    assert_eq!(std::fs::read(out.join("Y1.json")).unwrap(), br#"{"n":3}"#);
    engine.shutdown(Duration::from_secs(5)).await;
}
