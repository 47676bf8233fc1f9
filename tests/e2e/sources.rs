//! The built-in sources (file, cron) and the journal as the buffer behind a full in-memory
//! queue, in process on SQLite.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use huizhen_core::Engine;
use huizhen_core::message::{NewMessage, State};
use huizhen_core::runner::BuildContext;
use huizhen_core::steps::{Step, StepConfig};
use huizhen_core::store::ListFilter;
use huizhen_core::work::{Flow, StepError, Work};
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::support::{Backend, fresh_db, loaded, wait_for};

static GATES: LazyLock<Mutex<HashMap<String, Arc<Semaphore>>>> = LazyLock::new(Default::default);
/// The bodies each gated pipeline let through, in the order it did.
static PASSED: LazyLock<Mutex<HashMap<String, Vec<String>>>> = LazyLock::new(Default::default);

/// Lets `n` more messages through the `gate` step of `pipeline`.
pub(crate) fn open_gate(pipeline: &str, n: usize) {
    gate(pipeline).add_permits(n);
}

fn gate(pipeline: &str) -> Arc<Semaphore> {
    GATES
        .lock()
        .unwrap()
        .entry(pipeline.to_owned())
        .or_insert_with(|| Arc::new(Semaphore::new(0)))
        .clone()
}

/// `gate: {}` holds each message until the test adds a permit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GateConfig {}

#[typetag::deserialize(name = "gate")]
impl StepConfig for GateConfig {
    fn type_name(&self) -> &'static str {
        "gate"
    }
    fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Step>, String> {
        Ok(Arc::new(Gate(gate(&ctx.pipeline), ctx.pipeline.clone())))
    }
}

struct Gate(Arc<Semaphore>, String);

impl Step for Gate {
    fn apply<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Flow, StepError>> {
        Box::pin(async move {
            self.0
                .acquire()
                .await
                .map_err(|e| StepError::new(e.to_string()))?
                .forget();
            let body = String::from_utf8_lossy(work.body()).into_owned();
            PASSED
                .lock()
                .unwrap()
                .entry(self.1.clone())
                .or_default()
                .push(body);
            Ok(Flow::Continue)
        })
    }
}

/// A full in-memory queue does not hold up intake: with room for 2 and the worker held, 500
/// messages are each journaled and acknowledged at once; memory holds 2 of them, the journal the
/// rest; once the worker goes, all 500 are processed, in order for an ordered pipeline. New
/// messages accepted while the backlog drains do not overtake it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_leaves_messages_in_the_journal_in_order() {
    for (name, ordered) in [("gated-ordered", true), ("gated-shared", false)] {
        let db = fresh_db(Backend::Sqlite).await.unwrap();
        let yaml = format!(
            "version: 1\nname: {name}\nsource:\n  http: {{ path: /in/{name} }}\nconcurrency: 1\nqueue: 2\n{}steps:\n  - gate: {{}}\nsinks:\n  - journal: {{}}\n",
            if ordered {
                "ordering_key: \"'one'\"\n"
            } else {
                ""
            }
        );
        let engine = Engine::start(loaded(&db, &[&yaml])).await.unwrap();
        let p = engine.pipeline(name).unwrap().clone();
        let submit = |n: usize| {
            let p = p.clone();
            async move {
                p.submit(NewMessage::new(
                    "",
                    "",
                    "text",
                    format!("m{n:04}").into_bytes(),
                ))
                .await
                .unwrap()
            }
        };
        for n in 0..500 {
            tokio::time::timeout(Duration::from_secs(5), submit(n))
                .await
                .unwrap_or_else(|_| panic!("{name}: message {n} was not accepted at once"));
        }
        assert!(
            p.queue_depth() <= 2,
            "{name}: {} in memory",
            p.queue_depth()
        );
        // `huizhen backlog` shows what waits (all but the one held by the worker and the two
        // in memory are in the journal; every one of the 500 is unfinished).
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_huizhen"))
            .args(["--database-url", &db.url, "backlog"])
            .current_dir(db.dir.path())
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&out.stdout);
        let row = shown
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} not in `huizhen backlog`:\n{shown}"));
        let waiting: i64 = row.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert_eq!(waiting, 500, "{row}");
        // Let the backlog start to drain, and keep accepting meanwhile.
        gate(name).add_permits(100);
        for n in 500..600 {
            tokio::time::timeout(Duration::from_secs(5), submit(n))
                .await
                .unwrap_or_else(|_| panic!("{name}: message {n} was not accepted at once"));
        }
        gate(name).add_permits(10_000);
        wait_for(
            &format!("{name}: 600 done"),
            Duration::from_secs(60),
            || async {
                let page = engine
                    .store
                    .list(&ListFilter {
                        pipeline: Some(name.into()),
                        state: Some(State::Done),
                        limit: Some(1000),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                (page.messages.len() == 600).then_some(())
            },
        )
        .await;
        let passed = PASSED
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .unwrap_or_default();
        assert_eq!(passed.len(), 600, "{name}: each message once");
        if ordered {
            let expected: Vec<String> = (0..600).map(|n| format!("m{n:04}")).collect();
            assert_eq!(passed, expected, "{name}: in the order accepted");
        } else {
            let mut sorted = passed.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 600, "{name}: no duplicates");
        }
        engine.shutdown(Duration::from_secs(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_source_takes_settled_files_and_moves_them_aside() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let inbox = db.dir.path().join("inbox");
    let processed = db.dir.path().join("done");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(
        inbox.join("batch.csv"),
        "P1,glucose,5.6\r\n\r\nP2,glucose,7.1\nP3,hb,130\n",
    )
    .unwrap();
    std::fs::write(inbox.join("single.csv"), "P9,k,4.1").unwrap();
    std::fs::write(inbox.join("ignored.txt"), "not mine").unwrap();
    let yaml = format!(
        "version: 1\nname: lab-drop\nsource:\n  file: {{ dir: \"{}\", pattern: \"*.csv\", processed_dir: \"{}\", split: lines, poll: 50ms, settle: 200ms }}\nsinks:\n  - journal: {{}}\n",
        inbox.display(),
        processed.display()
    );
    let engine = Engine::start(loaded(&db, &[&yaml])).await.unwrap();
    let store = engine.store.clone();
    let page = wait_for(
        "4 lines journaled and done",
        Duration::from_secs(10),
        || {
            let store = store.clone();
            async move {
                let page = store
                    .list(&ListFilter {
                        pipeline: Some("lab-drop".into()),
                        state: Some(State::Done),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                (page.messages.len() == 4).then_some(page)
            }
        },
    )
    .await;
    let mut bodies = Vec::new();
    for m in &page.messages {
        let full = engine.store.get(&m.id).await.unwrap().unwrap();
        bodies.push(String::from_utf8(full.body).unwrap());
        assert!(full.dedup_key.unwrap().starts_with("file:"));
    }
    bodies.sort();
    assert_eq!(
        bodies,
        ["P1,glucose,5.6", "P2,glucose,7.1", "P3,hb,130", "P9,k,4.1"]
    );
    wait_for("files moved", Duration::from_secs(5), || async {
        (!inbox.join("batch.csv").exists() && !inbox.join("single.csv").exists()).then_some(())
    })
    .await;
    let moved: Vec<String> = std::fs::read_dir(&processed)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(moved.len(), 2, "{moved:?}");
    assert!(moved.iter().any(|n| n.ends_with("-batch.csv")));
    assert!(
        inbox.join("ignored.txt").exists(),
        "files outside the pattern stay"
    );
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_source_emits_each_tick_once() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let yaml = "version: 1\nname: ticker\nsource:\n  cron: { schedule: \"* * * * * *\", body: '{\"job\":\"reconcile\"}' }\nsinks:\n  - journal: {}\n";
    let engine = Engine::start(loaded(&db, &[yaml])).await.unwrap();
    let store = engine.store.clone();
    let effects = wait_for("two ticks", Duration::from_secs(10), || {
        let store = store.clone();
        async move {
            let e = store.effects(Some("ticker")).await.unwrap();
            (e.len() >= 2).then_some(e)
        }
    })
    .await;
    assert_eq!(effects[0].body, br#"{"job":"reconcile"}"#);
    let mut keys = Vec::new();
    for e in &effects {
        let m = engine.store.get(&e.message_id).await.unwrap().unwrap();
        assert_eq!(m.kind, "json");
        keys.push(m.dedup_key.unwrap());
    }
    keys.dedup();
    assert_eq!(keys.len(), effects.len(), "one dedup key per tick");
    assert!(keys[0].starts_with("cron:20"));
    engine.shutdown(Duration::from_secs(5)).await;
}

/// HL7-36: a batch file dropped by a LIS whose BTS-1 says 10 but holds 9 messages, GBK-encoded
/// with LF line ends: 9 messages processed, the mismatch reported on each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hl7_batch_file_with_a_wrong_count() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let inbox = db.dir.path().join("lis");
    std::fs::create_dir_all(&inbox).unwrap();
    let mut text = String::from("FHS|^~\\&|LIS\nBHS|^~\\&|LIS\n");
    for i in 0..9 {
        text.push_str(&format!(
            "MSH|^~\\&|LIS|检验科|HZ|P|20261123||ORU^R01|B{i}|P|2.4\nPID|1||P{i}||王^小{i}\nOBX|1|NM|GLU^血糖||5.{i}\n"
        ));
    }
    text.push_str("BTS|10\nFTS|1\n");
    std::fs::write(inbox.join("batch.hl7"), encoding_rs::GBK.encode(&text).0).unwrap();
    let yaml = format!(
        "version: 1\nname: lis-drop\nsource:\n  file: {{ dir: \"{}\", pattern: \"*.hl7\", split: hl7, kind: hl7v2, poll: 50ms, settle: 100ms }}\nsteps:\n  - set: {{ headers: {{ given: \"hl7('PID-5.2')\" }} }}\nsinks:\n  - journal: {{}}\n",
        inbox.display()
    );
    let engine = Engine::start(loaded(&db, &[&yaml])).await.unwrap();
    let store = engine.store.clone();
    let page = wait_for("9 messages done", Duration::from_secs(10), || {
        let store = store.clone();
        async move {
            let page = store
                .list(&ListFilter {
                    pipeline: Some("lis-drop".into()),
                    state: Some(State::Done),
                    ..Default::default()
                })
                .await
                .unwrap();
            (page.messages.len() == 9).then_some(page)
        }
    })
    .await;
    assert!(
        page.messages
            .iter()
            .all(|m| m.headers["file-warnings"] == "BTS-1 declares 10 but the batch holds 9")
    );
    // Decoded from GBK (no MSH-18, not UTF-8) for expressions.
    let m = engine
        .store
        .get(&page.messages[0].id)
        .await
        .unwrap()
        .unwrap();
    let detail = huizhen_core::http::message_detail(&engine.store, &m.id)
        .await
        .unwrap();
    let parsed = detail["parsed"].as_array().unwrap();
    assert!(
        parsed
            .iter()
            .any(|l| l["path"] == "MSH-4" && l["value"] == "检验科"),
        "{parsed:?}"
    );
    engine.shutdown(Duration::from_secs(5)).await;
}
