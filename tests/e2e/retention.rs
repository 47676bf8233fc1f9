//! `huizhen compliance purge` (CN-30) through the real binary: the dry run lists what is due
//! and deletes nothing; the purge deletes only recordings past both their minimum and the
//! configured period, removes their files and audits each; a two-year-old recording is never
//! due; a longer configured period keeps a four-year-old one; a period below the law is refused.

use std::path::Path;
use std::process::Command;

use chrono::{DateTime, Months, TimeDelta, Utc};
use huizhen_core::objects::ObjectStore;
use huizhen_core::store::audit::AuditFilter;
use huizhen_core::store::recordings::RecordingRow;
use huizhen_domain::consultation::room::recording_retained_until;

use crate::support::{Backend, TestDb, fresh_db, store};

fn root(db: &TestDb, retention: &str) -> std::path::PathBuf {
    let d = db.dir.path();
    let file = d.join("huizhen.yaml");
    std::fs::write(
        &file,
        format!(
            "version: 1\nstore: {{ url: \"{}\" }}\nsecurity:\n  jwt_secret_file: {d}/jwt.secret\n  encryption: {{ keys_file: {d}/keys }}\n  audit: {{ key_file: {d}/audit.key, checkpoint_file: {d}/audit.checkpoints }}\nobjects: {{ dir: {d}/objects }}\nworkflow:\n  compliance:\n{retention}pipelines: []\n",
            db.url,
            d = d.display()
        ),
    )
    .unwrap();
    file
}

fn purge(root: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_huizhen"))
        .arg("-c")
        .arg(root)
        .args(["compliance", "purge"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A recording made `months` ago (its file written under the objects folder).
fn recording(id: &str, objects: &ObjectStore, months: u32) -> RecordingRow {
    let started = Utc::now().checked_sub_months(Months::new(months)).unwrap();
    let object = format!("{id}0000000000000000000000000000");
    let path = objects.path(&object).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"OggS...").unwrap();
    let ms = |t: DateTime<Utc>| t.timestamp_millis();
    RecordingRow {
        id: id.into(),
        consultation: format!("c-{id}"),
        facility: "F-REQ".into(),
        room: "room-1".into(),
        recording: "rec-1".into(),
        participant: "E1".into(),
        role: "expert".into(),
        source: "camera".into(),
        kind: "audio".into(),
        codec: "audio/opus".into(),
        container: "ogg".into(),
        object_id: object,
        sha256: "00".repeat(32),
        bytes: 7,
        packets: 1,
        started_at: ms(started),
        ended_at: ms(started + TimeDelta::minutes(20)),
        started_by: "E1".into(),
        retention_class: "process-record-audio-video".into(),
        retain_until: ms(recording_retained_until(started)),
        stopped_by: "E1".into(),
        stop_reason: "stopped by E1 (expert)".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_shows_then_deletes_only_what_is_past_its_minimum() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let s = store(&db).await;
    let objects = ObjectStore::open(&db.dir.path().join("objects"), None).unwrap();
    let old = recording("aa1", &objects, 49);
    let older = recording("aa2", &objects, 61);
    let young = recording("bb1", &objects, 24);
    for r in [&old, &older, &young] {
        s.recording_insert(r).await.unwrap();
    }
    // Five years configured: only the 61-month-old one is due.
    let five = root(
        &db,
        "    retention:\n      process-record-audio-video: { keep_months: 60 }\n",
    );
    let (ok, out, err) = purge(&five, &["--dry-run"]);
    assert!(ok, "{err}");
    assert!(out.contains("would delete 1 record(s) (dry run"), "{out}");
    assert!(
        out.contains("aa2") && !out.contains("aa1") && !out.contains("bb1"),
        "{out}"
    );
    assert!(out.contains("kept: 1 record(s) past the minimum"), "{out}");
    assert!(
        out.contains("medical-record               180 months  (kept: the engine deletes none)"),
        "{out}"
    );
    assert_eq!(
        s.recordings("c-aa2").await.unwrap().len(),
        1,
        "a dry run deletes nothing"
    );

    // The law's minimum (3 years): both old ones go, the two-year-old one stays.
    let law = root(&db, "    {}\n");
    let (ok, out, err) = purge(&law, &["--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["deleted"], 2, "{v}");
    let gone: Vec<&str> = v["due"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(gone, ["aa2", "aa1"]);
    for r in [&old, &older] {
        assert!(s.recordings(&r.consultation).await.unwrap().is_empty());
        assert!(
            !objects.path(&r.object_id).unwrap().exists(),
            "the file is removed"
        );
    }
    assert_eq!(s.recordings("c-bb1").await.unwrap().len(), 1);
    assert!(objects.path(&young.object_id).unwrap().exists());
    let events = s
        .audit_events(&AuditFilter {
            action: Some("retention.purge".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e.event.resource_id.as_str())
        .collect();
    assert_eq!(ids.len(), 2, "{events:?}");
    assert!(ids.contains(&"aa1") && ids.contains(&"aa2"));
    assert!(
        events
            .iter()
            .all(|e| e.event.detail.contains("CN-30") && e.event.resource_type == "Recording")
    );
    // Again: nothing left to delete.
    let (ok, out, _) = purge(&law, &[]);
    assert!(ok && out.contains("deleted 0 record(s)"), "{out}");

    // A period below the law is refused before anything runs.
    let short = root(
        &db,
        "    retention:\n      process-record-audio-video: { keep_months: 24 }\n",
    );
    let (ok, _, err) = purge(&short, &[]);
    assert!(!ok);
    assert!(
        err.contains("below the minimum of 36 months") && err.contains("CN-30"),
        "{err}"
    );
    assert_eq!(s.recordings("c-bb1").await.unwrap().len(), 1);
}
