//! The runner end to end, in process: retries, dead letters, reprocessing, ordering, routing,
//! filtering, dedup, on both backends. Test-only steps are registered here with one
//! `#[typetag::deserialize]` line each, the same way an adapter crate adds its own.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use huizhen_core::Engine;
use huizhen_core::message::{NewMessage, State};
use huizhen_core::runner::BuildContext;
use huizhen_core::steps::{Step, StepConfig};
use huizhen_core::work::{Flow, StepError, Work};
use serde::Deserialize;

use crate::support::{Backend, both_backends, fresh_db, loaded, wait_for};

/// Per-pipeline switches so tests running in parallel do not see each other.
static HEALED: LazyLock<Mutex<HashMap<String, Arc<AtomicBool>>>> = LazyLock::new(Default::default);
/// (patient, seq) pairs seen by `record`, per pipeline.
type Seen = HashMap<String, Vec<(String, i64)>>;
static SEEN: LazyLock<Mutex<Seen>> = LazyLock::new(Default::default);

fn healed(pipeline: &str) -> Arc<AtomicBool> {
    HEALED
        .lock()
        .unwrap()
        .entry(pipeline.to_owned())
        .or_default()
        .clone()
}

/// `flaky: {}` fails every attempt until the test "heals" its pipeline.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlakyConfig {}

#[typetag::deserialize(name = "flaky")]
impl StepConfig for FlakyConfig {
    fn type_name(&self) -> &'static str {
        "flaky"
    }
    fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Step>, String> {
        Ok(Arc::new(Flaky(healed(&ctx.pipeline))))
    }
}

struct Flaky(Arc<AtomicBool>);

impl Step for Flaky {
    fn apply<'a>(&'a self, _work: &'a mut Work) -> BoxFuture<'a, Result<Flow, StepError>> {
        Box::pin(async move {
            if self.0.load(Ordering::SeqCst) {
                Ok(Flow::Continue)
            } else {
                Err(StepError::new("downstream HIS unavailable"))
            }
        })
    }
}

/// `record: {}` notes (patient, seq) of each message it sees, after a random pause.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordConfig {}

#[typetag::deserialize(name = "record")]
impl StepConfig for RecordConfig {
    fn type_name(&self) -> &'static str {
        "record"
    }
    fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Step>, String> {
        Ok(Arc::new(Record(ctx.pipeline.clone())))
    }
}

struct Record(String);

impl Step for Record {
    fn apply<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Flow, StepError>> {
        Box::pin(async move {
            let j = work.json()?.clone();
            let patient = j["patient"].as_str().unwrap_or_default().to_owned();
            let seq = j["seq"].as_i64().unwrap_or_default();
            let pause = (seq * 7919 % 5) as u64;
            tokio::time::sleep(Duration::from_millis(pause)).await;
            SEEN.lock()
                .unwrap()
                .entry(self.0.clone())
                .or_default()
                .push((patient, seq));
            Ok(Flow::Continue)
        })
    }
}

both_backends!(
    retries_then_dead_then_reprocess_done,
    bad_json_goes_dead_at_once_with_the_reason,
    ordering_key_keeps_per_patient_order,
    filter_route_and_set,
    resend_is_not_processed_twice,
);

async fn state_of(engine: &Engine, id: &str) -> State {
    engine.store.get(id).await.unwrap().unwrap().state
}

fn json_msg(body: &str) -> NewMessage {
    NewMessage::new("", "", "json", body.as_bytes().to_vec())
}

async fn retries_then_dead_then_reprocess_done(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let name = format!("flaky-{}", if b == Backend::Sqlite { "s" } else { "p" });
    let yaml = format!(
        "version: 1\nname: {name}\nsource:\n  http: {{ path: /in/{name} }}\nretry: {{ max_attempts: 3, backoff: 20ms, max_backoff: 100ms }}\nsteps:\n  - flaky: {{}}\nsinks:\n  - journal: {{}}\n"
    );
    let engine = Engine::start(loaded(&db, &[&yaml])).await.unwrap();
    let p = engine.pipeline(&name).unwrap().clone();
    let a = p.submit(json_msg(r#"{"n":1}"#)).await.unwrap();
    let id = a.id.clone();
    wait_for("dead letter", Duration::from_secs(20), || async {
        (state_of(&engine, &id).await == State::Dead).then_some(())
    })
    .await;
    let m = engine.store.get(&id).await.unwrap().unwrap();
    assert_eq!(m.attempts, 3, "max_attempts counts every attempt");
    assert_eq!(
        m.last_error.as_deref(),
        Some("flaky#0: downstream HIS unavailable")
    );
    let errors = engine.store.attempt_errors(&id).await.unwrap();
    assert_eq!(errors.len(), 3);
    // Backoff grows: the gap before the third attempt is at least half of 2 × 20 ms.
    assert!(errors[2].at - errors[1].at >= 20, "{errors:?}");
    assert!(engine.store.effects(Some(&name)).await.unwrap().is_empty());

    healed(&name).store(true, Ordering::SeqCst);
    engine.store.reprocess(&id).await.unwrap();
    engine.wake_scheduler();
    wait_for("done after reprocess", Duration::from_secs(20), || async {
        (state_of(&engine, &id).await == State::Done).then_some(())
    })
    .await;
    let effects = engine.store.effects(Some(&name)).await.unwrap();
    assert_eq!(effects.len(), 1);
    assert_eq!(effects[0].message_id, id);
    engine.shutdown(Duration::from_secs(5)).await;
}

async fn bad_json_goes_dead_at_once_with_the_reason(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let yaml = "version: 1\nname: strict\nsource:\n  http: { path: /in/strict }\nsteps:\n  - filter: { expr: \"body.ok == true\" }\nsinks:\n  - journal: {}\n";
    let engine = Engine::start(loaded(&db, &[yaml])).await.unwrap();
    let p = engine.pipeline("strict").unwrap().clone();
    let a = p.submit(json_msg("{\"ok\": tru")).await.unwrap();
    let id = a.id.clone();
    wait_for("dead letter", Duration::from_secs(10), || async {
        (state_of(&engine, &id).await == State::Dead).then_some(())
    })
    .await;
    let m = engine.store.get(&id).await.unwrap().unwrap();
    assert_eq!(m.attempts, 1, "a body that is not JSON is not retried");
    let err = m.last_error.unwrap();
    assert!(err.starts_with("filter#0: "), "{err}");
    assert!(
        err.contains(&id) && err.contains("not valid JSON at line 1"),
        "{err}"
    );
    // The raw body is kept for inspection and replay.
    assert_eq!(m.body, b"{\"ok\": tru");
    engine.shutdown(Duration::from_secs(5)).await;
}

async fn ordering_key_keeps_per_patient_order(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let name = format!("ordered-{}", if b == Backend::Sqlite { "s" } else { "p" });
    let yaml = format!(
        "version: 1\nname: {name}\nsource:\n  http: {{ path: /in/{name} }}\nordering_key: \"body.patient\"\nconcurrency: 4\nsteps:\n  - record: {{}}\nsinks:\n  - journal: {{}}\n"
    );
    let engine = Engine::start(loaded(&db, &[&yaml])).await.unwrap();
    let p = engine.pipeline(&name).unwrap().clone();
    let patients = ["P1", "P2", "P3", "P4", "P5", "P6"];
    let mut expected: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for seq in 0..120_i64 {
        let patient = patients[(seq * 31 % 6) as usize];
        expected.entry(patient.into()).or_default().push(seq);
        p.submit(json_msg(&format!(
            r#"{{"patient":"{patient}","seq":{seq}}}"#
        )))
        .await
        .unwrap();
    }
    let store = engine.store.clone();
    let pname = name.clone();
    wait_for("all done", Duration::from_secs(30), || {
        let store = store.clone();
        let pname = pname.clone();
        async move { (store.effects(Some(&pname)).await.unwrap().len() == 120).then_some(()) }
    })
    .await;
    let seen = SEEN.lock().unwrap().get(&name).cloned().unwrap_or_default();
    let mut got: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (patient, seq) in seen {
        got.entry(patient).or_default().push(seq);
    }
    assert_eq!(got, expected, "each patient's events in arrival order");
    engine.shutdown(Duration::from_secs(5)).await;
}

async fn filter_route_and_set(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let intake = "version: 1\nname: intake\nsource:\n  http: { path: /in/intake }\nsteps:\n  - filter: { expr: \"body.type != 'noise'\" }\n  - set:\n      headers: { dept: \"body.dept\" }\n      body: { \"meta.seen\": \"true\" }\n  - route: { to: labs, when: \"headers.dept == 'lab'\" }\nsinks:\n  - journal: { name: intake-out }\n";
    let labs = "version: 1\nname: labs\nsource:\n  http: { path: /in/labs }\nsteps:\n  - map:\n      body: { \"result.dept\": \"headers.dept\", \"result.seen\": \"body.meta.seen\" }\nsinks:\n  - journal: { name: labs-out }\n";
    let engine = Engine::start(loaded(&db, &[intake, labs])).await.unwrap();
    let p = engine.pipeline("intake").unwrap().clone();
    let noise = p.submit(json_msg(r#"{"type":"noise"}"#)).await.unwrap();
    let ward = p
        .submit(json_msg(r#"{"type":"x","dept":"ward"}"#))
        .await
        .unwrap();
    let lab = p
        .submit(json_msg(r#"{"type":"x","dept":"lab"}"#))
        .await
        .unwrap();
    let store = engine.store.clone();
    let labs_effects = wait_for("routed message done", Duration::from_secs(10), || {
        let store = store.clone();
        async move {
            let e = store.effects(Some("labs")).await.unwrap();
            (!e.is_empty()).then_some(e)
        }
    })
    .await;
    for id in [&noise.id, &ward.id, &lab.id] {
        let id = id.clone();
        wait_for("intake done", Duration::from_secs(10), || async {
            (state_of(&engine, &id).await == State::Done).then_some(())
        })
        .await;
    }
    let intake_effects = engine.store.effects(Some("intake")).await.unwrap();
    // noise: filtered; lab: routed away (stops here); ward: delivered with the set fields.
    assert_eq!(intake_effects.len(), 1);
    assert_eq!(intake_effects[0].message_id, ward.id);
    let out: serde_json::Value = serde_json::from_slice(&intake_effects[0].body).unwrap();
    assert_eq!(out["meta"]["seen"], true);
    assert_eq!(labs_effects.len(), 1);
    let routed: serde_json::Value = serde_json::from_slice(&labs_effects[0].body).unwrap();
    assert_eq!(
        routed,
        serde_json::json!({"result": {"dept": "lab", "seen": true}})
    );
    let child = engine
        .store
        .get(&labs_effects[0].message_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(child.parent_id.as_deref(), Some(lab.id.as_str()));
    assert_eq!(child.dedup_key, Some(format!("route:{}", lab.id)));
    engine.shutdown(Duration::from_secs(5)).await;
}

async fn resend_is_not_processed_twice(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let yaml = "version: 1\nname: dedup\nsource:\n  http: { path: /in/dedup }\ndedup: { key: \"body.msg_id\" }\nsinks:\n  - journal: {}\n";
    let engine = Engine::start(loaded(&db, &[yaml])).await.unwrap();
    let p = engine.pipeline("dedup").unwrap().clone();
    let first = p
        .submit(json_msg(r#"{"msg_id":"A1","v":1}"#))
        .await
        .unwrap();
    let id = first.id.clone();
    wait_for("done", Duration::from_secs(10), || async {
        (state_of(&engine, &id).await == State::Done).then_some(())
    })
    .await;
    let again = p
        .submit(json_msg(r#"{"msg_id":"A1","v":1}"#))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.id, first.id);
    assert_eq!(
        again.state,
        State::Done,
        "a resend gets the first one's outcome"
    );
    let reused = p
        .submit(json_msg(r#"{"msg_id":"A1","v":2}"#))
        .await
        .unwrap();
    assert!(!reused.duplicate && reused.reused_key);
    let rid = reused.id.clone();
    wait_for("reused done", Duration::from_secs(10), || async {
        (state_of(&engine, &rid).await == State::Done).then_some(())
    })
    .await;
    assert_eq!(engine.store.effects(Some("dedup")).await.unwrap().len(), 2);
    engine.shutdown(Duration::from_secs(5)).await;
}
