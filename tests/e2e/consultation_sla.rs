//! The consultation workflow over time and from the HIS (issue 15), on SQLite and PostgreSQL:
//! SLA escalation driven by a fake clock (an urgent offer unanswered at 10 minutes goes to the
//! next candidate, then a fan-out, then the coordinator), a decline moving on at once, a
//! deadline that passed while the engine was down firing at start, the live stream delivering
//! each change once per subscriber (and resuming from `Last-Event-ID`), an ADT^A40 merge
//! re-pointing open consultations, and an HL7 order creating a consultation end to end.

use std::time::Duration;

use chrono::TimeDelta;
use huizhen_core::clock::{Clock, FakeClock};
use huizhen_core::security::Role;
use huizhen_core::store::audit::AuditFilter;
use serde_json::{Value, json};
use std::sync::Arc;

use crate::consultations::{
    EXP, REQ, Wf, cardiologist, doctor, expert, offerees, request, seed_registry, start, start_on,
    token,
};
use crate::support::{Backend, both_backends, wait_for};

both_backends!(
    unanswered_offers_move_on_then_escalate,
    a_decline_moves_to_the_next_candidate_at_once,
    a_deadline_that_passed_while_the_engine_was_down_fires_at_start,
    the_stream_delivers_each_change_once_per_subscriber,
    a_patient_merge_repoints_open_consultations,
    an_hl7_order_creates_and_cancels_a_consultation,
    a_no_show_fails_the_scheduled_consultation,
);

/// The consultation as the local doctor sees it.
async fn current(wf: &Wf, id: &str) -> Value {
    let (s, v) = wf.get(&format!("/api/consultations/{id}"), &doctor()).await;
    assert_eq!(s, 200, "{v}");
    v
}

/// Advances the fake clock and runs the sweep once (the engine's own sweep may fire the same
/// timer first; either way the step has been taken when this returns).
async fn tick(wf: &Wf, minutes: i64) {
    wf.clock.advance(TimeDelta::minutes(minutes));
    wf.engine.workflow().sweep().await.unwrap();
}

fn candidates(v: &Value) -> Vec<String> {
    v["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["expert"].as_str().unwrap().to_owned())
        .collect()
}

async fn unanswered_offers_move_on_then_escalate(b: Backend) {
    let Some(wf) = start(b).await else { return };
    seed_registry(&wf, 4).await;
    let (id, v) = wf.approved(request(4004)).await;
    let c = candidates(&v);
    assert_eq!(offerees(&v), [c[0].clone()]);
    // Nine minutes: still open.
    tick(&wf, 9).await;
    assert_eq!(offerees(&current(&wf, &id).await), [c[0].clone()]);
    // Ten: the next candidate, the first attempt expired (MATCH-20).
    tick(&wf, 1).await;
    let v = current(&wf, &id).await;
    assert_eq!(
        (v["state"].as_str(), offerees(&v)),
        (Some("offered"), vec![c[1].clone()])
    );
    assert_eq!(v["attempts"][0]["outcome"]["outcome"], "expired");
    // Two failed offers: a fan-out to the rest (first accept wins).
    tick(&wf, 10).await;
    let v = current(&wf, &id).await;
    assert_eq!(offerees(&v), [c[2].clone(), c[3].clone()]);
    assert_eq!(v["attempts"][2]["fan_out"], true);
    // Three: the duty coordinator.
    tick(&wf, 10).await;
    let v = current(&wf, &id).await;
    assert_eq!(v["attempts"][2]["escalated_to"], "duty-coordinator", "{v}");
    // Nothing more is due.
    tick(&wf, 60).await;
    assert!(
        wf.engine
            .store
            .consultation_timers(&id)
            .await
            .unwrap()
            .is_empty()
    );
    let events = wf.events(&id).await;
    assert_eq!(
        &events[3..],
        [
            "offered",
            "offer_expired",
            "offered",
            "offer_expired",
            "offered",
            "escalated"
        ]
    );
    // Each step is on the timeline with its reason and time, and audited as the engine's.
    let v = current(&wf, &id).await;
    let escalated = v["timeline"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        escalated["actor"],
        json!({"id": "workflow", "role": "system"})
    );
    assert!(
        escalated["reason"]
            .as_str()
            .unwrap()
            .contains("escalated after 3 failed offers"),
        "{escalated}"
    );
    let audit = wf
        .engine
        .store
        .audit_events(&AuditFilter {
            resource_id: Some(id.clone()),
            action: Some("consultation.escalated".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (
            audit[0].event.actor.as_str(),
            audit[0].event.source.as_str()
        ),
        ("workflow", "sla-timer")
    );
    wf.stop().await;
}

async fn a_decline_moves_to_the_next_candidate_at_once(b: Backend) {
    let Some(wf) = start(b).await else { return };
    seed_registry(&wf, 3).await;
    let (id, v) = wf.approved(request(5005)).await;
    let c = candidates(&v);
    let (s, v) = wf.act(&id, "reject", &expert(&c[0]), json!({})).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (422, Some("missing-reason")),
        "{v}"
    );
    let v = wf
        .ok(
            &id,
            "reject",
            &expert(&c[0]),
            json!({"reason": "手术中，无法接诊"}),
        )
        .await;
    assert_eq!(
        (v["state"].as_str(), v["status"].as_str()),
        (Some("declined"), Some("rejected"))
    );
    // The decline wakes the sweep: the next candidate is offered without the clock moving.
    let next = c[1].clone();
    wait_for(
        "the next candidate offered",
        Duration::from_secs(10),
        || {
            let wf = &wf;
            let id = id.clone();
            let next = next.clone();
            async move {
                let v = current(wf, &id).await;
                (v["state"] == "offered" && offerees(&v) == [next]).then_some(())
            }
        },
    )
    .await;
    let v = current(&wf, &id).await;
    assert_eq!(
        v["attempts"][0]["declines"][0]["reason"],
        "手术中，无法接诊"
    );
    // The one who declined cannot accept the new attempt.
    let (s, _, _) = wf
        .call(
            "POST",
            &format!("/api/consultations/{id}/accept"),
            &expert(&c[0]),
            None,
            v["version"].as_u64(),
        )
        .await;
    assert_eq!(s, 403);
    wf.stop().await;
}

async fn a_deadline_that_passed_while_the_engine_was_down_fires_at_start(b: Backend) {
    let Some(wf) = start(b).await else { return };
    seed_registry(&wf, 3).await;
    let (id, v) = wf.approved(request(6006)).await;
    let c = candidates(&v);
    let later = wf.clock.now() + TimeDelta::minutes(11);
    let (db, ca) = wf.stop().await;
    // Eleven minutes later the engine starts again: its first sweep fires the deadline.
    let wf = start_on(db, ca, Arc::new(FakeClock::new(later)), &[]).await;
    wait_for(
        "the re-offer after the restart",
        Duration::from_secs(10),
        || {
            let wf = &wf;
            let id = id.clone();
            async move {
                let v = current(wf, &id).await;
                (v["attempts"].as_array().unwrap().len() == 2).then_some(v)
            }
        },
    )
    .await;
    let v = current(&wf, &id).await;
    assert_eq!(offerees(&v), [c[1].clone()]);
    let at = v["timeline"].as_array().unwrap().last().unwrap()["at"].clone();
    assert_eq!(at, json!(later), "stamped by the new engine's clock");
    wf.stop().await;
}

/// Reads server-sent events until `until` says it has enough or `limit` passes.
async fn read_sse(
    resp: &mut reqwest::Response,
    limit: Duration,
    until: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let mut text = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while !until(&events) {
        let Ok(chunk) = tokio::time::timeout_at(deadline, resp.chunk()).await else {
            break;
        };
        let Some(chunk) = chunk.unwrap() else { break };
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let mut id = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(v.to_owned());
                }
            }
            if let Some(d) = data {
                let v: Value = serde_json::from_str(&d).unwrap();
                assert_eq!(id.as_deref(), Some(v["seq"].to_string().as_str()));
                events.push(v);
            }
        }
    }
    events
}

async fn subscribe(wf: &Wf, bearer: &str, last: Option<i64>) -> reqwest::Response {
    let mut req = wf
        .client
        .get(format!("{}/api/consultations/events", wf.base))
        .bearer_auth(bearer);
    if let Some(l) = last {
        req = req.header("last-event-id", l.to_string());
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    r
}

async fn the_stream_delivers_each_change_once_per_subscriber(b: Backend) {
    let Some(wf) = start(b).await else { return };
    let mut one = subscribe(&wf, &doctor(), None).await;
    let mut two = subscribe(&wf, &token(Role::Integrator, "desk", REQ), None).await;
    let mut outsider = subscribe(&wf, &token(Role::LocalDoctor, "D9", "F-OTHER"), None).await;
    // created, submitted, approved, escalated (nobody in the registry), cancelled.
    let (id, _) = wf.approved(request(7007)).await;
    wf.ok(&id, "cancel", &doctor(), json!({"reason": "患者转院"}))
        .await;
    let five = |e: &[Value]| e.len() >= 5;
    for sub in [&mut one, &mut two] {
        let got = read_sse(sub, Duration::from_secs(10), five).await;
        let versions: Vec<i64> = got.iter().map(|e| e["version"].as_i64().unwrap()).collect();
        assert_eq!(versions, [1, 2, 3, 4, 5], "{got:?}");
        let kinds: Vec<&str> = got.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            ["created", "submitted", "approved", "escalated", "cancelled"]
        );
        assert!(got.iter().all(|e| e["consultation"] == id.as_str()));
        assert!(
            got.windows(2)
                .all(|w| w[0]["seq"].as_i64() < w[1]["seq"].as_i64())
        );
        assert!(
            got.iter()
                .all(|e| e.get("request").is_none() && e.get("case_summary").is_none())
        );
        // Nothing is delivered twice.
        let more = read_sse(sub, Duration::from_millis(1500), |e| !e.is_empty()).await;
        assert!(more.is_empty(), "{more:?}");
    }
    let seen = read_sse(&mut outsider, Duration::from_millis(1500), |e| {
        !e.is_empty()
    })
    .await;
    assert!(
        seen.is_empty(),
        "another facility sees none of it: {seen:?}"
    );
    // A client that lost its connection after version 2 resumes with what it missed.
    let all = wf
        .engine
        .store
        .consultation_changes(0, None, 100)
        .await
        .unwrap();
    let second = all.iter().find(|c| c.version == 2).unwrap().seq;
    let mut again = subscribe(&wf, &doctor(), Some(second)).await;
    let got = read_sse(&mut again, Duration::from_secs(10), |e| e.len() >= 3).await;
    let versions: Vec<i64> = got.iter().map(|e| e["version"].as_i64().unwrap()).collect();
    assert_eq!(versions, [3, 4, 5]);
    wf.stop().await;
}

/// An HL7 pipeline of F-REQ: `hl7_map`, then `steps`, then the journal.
fn hl7_pipeline(name: &str, steps: &str) -> String {
    format!(
        "version: 1\nname: {name}\nfacility: {REQ}\nsource:\n  http: {{ path: /in/{name}, kind: hl7v2 }}\nsteps:\n  - hl7_map: {{}}\n{steps}sinks:\n  - journal: {{}}\n"
    )
}

/// Sends a message as an admin and waits until it is done; what the journal sink recorded.
async fn send(wf: &Wf, path: &str, body: String) -> Value {
    let r = wf
        .client
        .post(format!("{}{path}", wf.base))
        .bearer_auth(token(Role::Admin, "admin", "*"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    let id = v["id"].as_str().unwrap().to_owned();
    let store = wf.engine.store.clone();
    wait_for("message done", Duration::from_secs(20), || {
        let store = store.clone();
        let id = id.clone();
        async move {
            let m = store.get(&id).await.ok()??;
            match m.state {
                huizhen_core::message::State::Done => Some(()),
                huizhen_core::message::State::Dead => panic!("message dead: {:?}", m.last_error),
                _ => None,
            }
        }
    })
    .await;
    let e = wf.engine.store.effects_of(&id).await.unwrap();
    serde_json::from_slice(&e[0].body).unwrap()
}

fn adt(control: &str, pid3: &str, birth: &str) -> String {
    format!(
        "MSH|^~\\&|HIS|{REQ}|HZ|HZ|20260301080000||ADT^A01|{control}|P|2.5\rEVN|A01|20260301080000\rPID|1||{pid3}||张^三||{birth}|M\rPV1|1|I\r"
    )
}

async fn a_patient_merge_repoints_open_consultations(b: Backend) {
    let Some(db) = crate::support::fresh_db(b).await else {
        return;
    };
    let adt_steps =
        "  - match_patient: {}\n  - set: { body: { \"person\": \"headers['person-id']\" } }\n";
    let p = hl7_pipeline("adt", adt_steps);
    let ca = Arc::new(huizhen_signing::testca::TestCa::generate("CA").unwrap());
    let wf = start_on(
        db,
        ca,
        Arc::new(FakeClock::new(crate::consultations::t0())),
        &[&p],
    )
    .await;
    let old: u64 = send(&wf, "/in/adt", adt("A-1", "OLD1^^^F-REQ^MR", "19700102")).await["person"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let new: u64 = send(&wf, "/in/adt", adt("A-2", "NEW1^^^F-REQ^MR", "19700103")).await["person"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(old, new);
    let open = wf.create(request(old)).await;
    wf.ok(&open, "submit", &doctor(), json!({})).await;
    let closed = wf.create(request(old)).await;
    wf.ok(&closed, "cancel", &doctor(), json!({"reason": "重复申请"}))
        .await;
    let a40 = format!(
        "MSH|^~\\&|HIS|{REQ}|HZ|HZ|20260301090000||ADT^A40|A-3|P|2.5\rEVN|A40|20260301090000\rPID|1||NEW1^^^F-REQ^MR||张^三||19700103|M\rMRG|OLD1^^^F-REQ^MR\r"
    );
    send(&wf, "/in/adt", a40).await;
    let v = current(&wf, &open).await;
    assert_eq!(
        v["request"]["patient"], new,
        "the open consultation follows the merge"
    );
    assert_eq!(v["state"], "pending-local-approval");
    let last = v["timeline"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["event"], "patient_repointed");
    assert_eq!(
        last["actor"],
        json!({"id": "pipeline:adt", "role": "system"})
    );
    let v = current(&wf, &closed).await;
    assert_eq!(
        v["request"]["patient"], old,
        "a cancelled consultation stays as it was"
    );
    let (_, page) = wf
        .get(&format!("/api/consultations?patient={new}"), &doctor())
        .await;
    assert_eq!(page["consultations"].as_array().unwrap().len(), 1, "{page}");
    let audit = wf
        .engine
        .store
        .audit_events(&AuditFilter {
            resource_id: Some(open.clone()),
            action: Some("consultation.patient_repointed".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    wf.stop().await;
}

/// An `OML^O21` (v2.5.1) consultation order of F-REQ for patient `P100`.
fn order(control: &str, placer: &str, extra: &str) -> String {
    format!(
        "MSH|^~\\&|EMR|{REQ}|HZ|HZ|20260302071500+0800||OML^O21^OML_O21|{placer}-{control}|P|2.5.1\r\
PID|1||P100^^^{REQ}^MR||张^三||19640101|M\r\
ORC|{control}|{placer}^EMR|||||||20260302071200+0800|||D1^李^四{extra}\r\
TQ1|1||||||20260302073000+0800||S^Stat^HL70485\r\
OBR|1|{placer}^EMR||HZ-XNK^心内科会诊^L^^^|||||||||胸痛3天，心电图ST段压低|||D1^李^四|||||||||||||||I25.1^动脉硬化性心脏病^ICD-10\r\
DG1|1||I25.1^动脉硬化性心脏病^I10|||W\r\
OBX|1|ST|113014^Study^DCM||1.2.156.112604.1.2.20260302.7781||||||F\r"
    )
}

async fn an_hl7_order_creates_and_cancels_a_consultation(b: Backend) {
    let Some(db) = crate::support::fresh_db(b).await else {
        return;
    };
    let adt_pipeline = hl7_pipeline("adt", "  - match_patient: {}\n");
    let orders = hl7_pipeline(
        "orders",
        "  - consultation_create: { departments: { HZ-XNK: \"03.02\" }, approve: true, province: \"45\" }\n  - set: { body: { \"consultation\": \"headers['consultation-id']\" } }\n",
    );
    let ca = Arc::new(huizhen_signing::testca::TestCa::generate("CA").unwrap());
    let wf = start_on(
        db,
        ca,
        Arc::new(FakeClock::new(crate::consultations::t0())),
        &[&adt_pipeline, &orders],
    )
    .await;
    seed_registry(&wf, 3).await;
    send(&wf, "/in/adt", adt("A-1", "P100^^^F-REQ^MR", "19640101")).await;
    let person = wf
        .engine
        .store
        .identity(REQ, "P100")
        .await
        .unwrap()
        .unwrap()
        .person_id;
    let out = send(&wf, "/in/orders", order("NW", "ORD-1", "")).await;
    let id = out["consultation"].as_str().unwrap().to_owned();
    let v = current(&wf, &id).await;
    assert_eq!(
        v["state"], "offered",
        "approved by the pipeline, then assigned: {v}"
    );
    let r = &v["request"];
    assert_eq!(r["patient"], person);
    assert_eq!(
        (
            r["urgency"].as_str(),
            r["department"].as_str(),
            r["icd10"].as_str(),
            r["agreement"].as_str()
        ),
        (Some("critical"), Some("03.02"), Some("I25.1"), Some("AG-1"))
    );
    assert_eq!(r["requesting_doctor"], "D1");
    assert_eq!(
        r["attachments"]["studies"],
        json!(["1.2.156.112604.1.2.20260302.7781"])
    );
    assert!(r["case_summary"].as_str().unwrap().contains("胸痛3天"));
    assert_eq!(
        v["timeline"][0]["actor"],
        json!({"id": "pipeline:orders", "role": "system"})
    );
    assert_eq!(v["facilities"], json!([EXP, REQ]));
    // The same order again (a resend) finds the same consultation.
    let again = send(&wf, "/in/orders", order("NW", "ORD-1", "")).await;
    assert_eq!(again["consultation"], id.as_str());
    let (_, page) = wf.get("/api/consultations", &doctor()).await;
    assert_eq!(page["consultations"].as_array().unwrap().len(), 1);
    // The HIS cancels it (ORC-1 CA, ORC-16 the reason).
    send(&wf, "/in/orders", order("CA", "ORD-1", "||||^患者已转院")).await;
    let v = current(&wf, &id).await;
    assert_eq!(
        (v["state"].as_str(), v["status_reason"].as_str()),
        (Some("cancelled"), Some("患者已转院"))
    );
    wf.stop().await;
}

/// A booked, scheduled consultation whose appointment nobody joined: the no-show sweep at a
/// fixed time after the grace period fails it with `no-show` as the `system` actor, audited,
/// and the statistics count it failed. Within the grace period nothing happens.
async fn a_no_show_fails_the_scheduled_consultation(b: Backend) {
    use chrono::{TimeZone, Utc};
    use huizhen_core::care::Care;
    use huizhen_core::care::jobs::{NO_SHOW_ACTOR, sweep_no_shows};
    use huizhen_core::store::audit::AuditEvent;
    use huizhen_domain::appointment::{BookingRequest, Urgency};
    use huizhen_domain::expert::{Agreement, AgreementKind, Title};

    let Some(wf) = start(b).await else { return };
    // E1, bookable all day, and the agreement F-REQ → F-EXP.
    let mut e1 = cardiologist("E1", Title::Chief);
    e1.schedule.windows = vec![
        serde_json::from_value(json!({"days": "daily", "from": "00:00", "to": "00:00"})).unwrap(),
    ];
    let agreement = Agreement {
        id: "AG-1".into(),
        requesting_facility: REQ.into(),
        expert_facility: EXP.into(),
        kind: AgreementKind::MedicalConsortium,
        valid_from: chrono::NaiveDate::from_ymd_opt(2020, 1, 1).unwrap(),
        valid_to: None,
    };
    let store = wf.engine.store.clone();
    store
        .upsert_experts(&[e1], &[agreement], None)
        .await
        .unwrap();
    let (id, v) = wf.approved(request(2001)).await;
    assert_eq!(offerees(&v), ["E1"], "{v}");
    let version = current(&wf, &id).await["version"].as_u64().unwrap();
    let (s, v, _) = wf
        .call(
            "POST",
            &format!("/api/consultations/{id}/accept"),
            &expert("E1"),
            None,
            Some(version),
        )
        .await;
    assert_eq!((s, v["state"].as_str()), (200, Some("scheduled")), "{v}");

    // Booked tomorrow on the minute (the engine's own sweep, at the real time, leaves it).
    let care = Care::of(&wf.engine.extensions);
    let now0 = wf.clock.now();
    let begin = Utc
        .timestamp_opt((now0 + TimeDelta::days(1)).timestamp() / 60 * 60, 0)
        .unwrap();
    let booking = BookingRequest {
        booking_id: "nb1".into(),
        consultation_id: id.clone(),
        expert_id: "E1".into(),
        patient_id: "2001".into(),
        start: begin,
        end: begin + TimeDelta::minutes(30),
        urgency: Urgency::Urgent,
    };
    let audit = AuditEvent {
        action: "appointment.book".into(),
        actor: "test".into(),
        ..AuditEvent::default()
    };
    store
        .book_appointment(&booking, REQ, &care.appointments, now0, &audit)
        .await
        .unwrap()
        .unwrap();
    assert!(
        sweep_no_shows(&store, &care, begin + TimeDelta::minutes(14))
            .await
            .unwrap()
            .is_empty(),
        "within the grace period"
    );
    assert_eq!(current(&wf, &id).await["state"], "scheduled");

    let marked = sweep_no_shows(&store, &care, begin + TimeDelta::minutes(46))
        .await
        .unwrap();
    assert_eq!(marked.len(), 1, "{marked:?}");
    let v = current(&wf, &id).await;
    assert_eq!(v["status"], "failed", "{v}");
    let last = v["timeline"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (
            last["event"].as_str(),
            last["actor"]["id"].as_str(),
            last["actor"]["role"].as_str(),
        ),
        (Some("failed"), Some(NO_SHOW_ACTOR), Some("system")),
        "{last}"
    );
    assert!(last["reason"].as_str().unwrap().contains("nb1"), "{last}");
    let failed: Vec<_> = store
        .audit_events(&AuditFilter {
            resource_id: Some(id.clone()),
            ..AuditFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.event.action == "consultation.failed")
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        (
            failed[0].event.actor.as_str(),
            failed[0].event.role.as_str()
        ),
        (NO_SHOW_ACTOR, "system")
    );
    // The statistics' facts followed: failed, not open.
    let facts = store
        .consultation_facts(now0 - TimeDelta::days(1), now0 + TimeDelta::days(2))
        .await
        .unwrap();
    assert_eq!(facts.len(), 1);
    assert!(
        facts[0].failed && facts[0].accepted_at.is_some(),
        "{facts:?}"
    );
    // A second sweep finds nothing more.
    assert!(
        sweep_no_shows(&store, &care, begin + TimeDelta::minutes(90))
            .await
            .unwrap()
            .is_empty()
    );
    wf.stop().await;
}
