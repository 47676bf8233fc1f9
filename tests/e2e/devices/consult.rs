//! A high blood pressure of a patient with an open consultation: the alert message, and a
//! `vital_alert_raised` event in that consultation's timeline (`GET /api/consultations/{id}`)
//! with its audit row; the patient's closed consultation and another patient's get nothing.

use std::time::Duration;

use huizhen_core::message::State;
use serde_json::{Value, json};

use super::{Engine, FACILITY, bp, broker_ready, publish, unique};
use crate::support::{Backend, fresh_db, journaled, wait_for};

fn request(person: &str) -> Value {
    let n: u64 = person.trim_start_matches("person-").parse().unwrap();
    json!({
        "patient": n, "requesting_facility": FACILITY, "requesting_doctor": "D1",
        "urgency": "routine", "department": "03.02", "min_title": "attending",
        "reason": "高血压随访", "purpose": "调整降压方案", "case_summary": "高血压十年。",
        "requested_time": {"kind": "as_soon_as_possible"},
        "service_type": "institution-to-institution", "agreement": "AG-1"
    })
}

async fn call(e: &Engine, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!("http://127.0.0.1:{}{path}", e.port);
    let r = match body {
        Some(b) => e
            .http
            .request(method.parse().unwrap(), &url)
            .json(&b)
            .send(),
        None => e.http.request(method.parse().unwrap(), &url).send(),
    }
    .await
    .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn create(e: &Engine, person: &str) -> String {
    let (s, v) = call(e, "POST", "/api/consultations", Some(request(person))).await;
    assert_eq!(s, 201, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

async fn events(e: &Engine, id: &str) -> Vec<Value> {
    let (s, v) = call(e, "GET", &format!("/api/consultations/{id}"), None).await;
    assert_eq!(s, 200, "{v}");
    v["timeline"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_bp_raises_an_event_on_the_patient_s_open_consultation() {
    if !broker_ready() {
        return;
    }
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let topic = unique("hz-consult");
    let mut e = Engine::new(&db, &topic, &unique("hz-consult"));
    let person = e.patient_with_device("MR-2001", "BP-2001", "2026-01-01T00:00:00+08:00");
    let other = e.patient_with_device("MR-2002", "BP-2002", "2026-01-01T00:00:00+08:00");
    e.start().await;
    // The cooperation agreement the requests name (CN-02).
    super::open_store(&db)
        .await
        .upsert_experts(
            &[],
            &[huizhen_domain::expert::Agreement {
                id: "AG-1".into(),
                requesting_facility: FACILITY.into(),
                expert_facility: "F-EXP".into(),
                kind: huizhen_domain::expert::AgreementKind::MedicalConsortium,
                valid_from: chrono::NaiveDate::from_ymd_opt(2020, 1, 1).unwrap(),
                valid_to: None,
            }],
            None,
        )
        .await
        .unwrap();
    let open = create(&e, &person).await;
    let closed = create(&e, &person).await;
    let (s, v) = call(
        &e,
        "POST",
        &format!("/api/consultations/{closed}/cancel"),
        Some(json!({"reason": "duplicate request"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let others = create(&e, &other).await;
    let s = super::open_store(&db).await;
    let vitals = format!("{topic}/gw-1/vitals");
    // A normal reading first (the subscription is in place once it went through): no event.
    super::prime(
        &e,
        &vitals,
        &bp("BP-2001", "2026-03-01T08:00:00+08:00", 126, 80, 70),
        &person,
        2,
    )
    .await;
    assert_eq!(events(&e, &open).await.len(), 1, "created only");

    publish(
        &vitals,
        &bp("BP-2001", "2026-03-01T20:00:00+08:00", 176, 102, 90),
    );
    let alerts = wait_for("the alert message", Duration::from_secs(30), || async {
        let a = journaled(&s, "device-alerts").await;
        (a.iter().any(|m| m.state == State::Done)).then_some(a)
    })
    .await;
    let alert: Value = serde_json::from_slice(&alerts[0].body).unwrap();
    assert_eq!(alert["consultations"], json!([open]), "{alert}");
    let timeline = events(&e, &open).await;
    assert_eq!(timeline.len(), 2, "{timeline:?}");
    let ev = &timeline[1];
    assert_eq!(ev["event"], "vital_alert_raised");
    assert_eq!(ev["actor"]["role"], "system");
    assert_eq!(
        (ev["from"].as_str(), ev["to"].as_str()),
        (Some("drafting"), Some("drafting"))
    );
    let reason = ev["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("bp-high (high) on device BP-2001 at 2026-03-01T20:00:00+08:00"),
        "{reason}"
    );
    assert!(
        !reason.contains("176"),
        "no value in the timeline: {reason}"
    );
    // Audited.
    let (st, audit) = call(&e, "GET", "/api/audit?limit=200", None).await;
    assert_eq!(st, 200, "{audit}");
    assert!(
        audit["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "consultation.vital_alert_raised"
                && a["resource_id"] == open.as_str()
                && a["actor"] == "device_reading"),
        "{audit}"
    );
    // The cancelled consultation and the other patient's are untouched.
    assert!(
        events(&e, &closed)
            .await
            .iter()
            .all(|t| t["event"] != "vital_alert_raised")
    );
    assert_eq!(events(&e, &others).await.len(), 1);

    // The same reading again (a gateway resend): no second event.
    publish(
        &vitals,
        &bp("BP-2001", "2026-03-01T20:00:00+08:00", 176, 102, 90),
    );
    // A second high reading: a second event.
    publish(
        &vitals,
        &bp("BP-2001", "2026-03-02T07:00:00+08:00", 168, 96, 84),
    );
    wait_for("the second alert", Duration::from_secs(30), || async {
        let a = journaled(&s, "device-alerts").await;
        (a.iter().filter(|m| m.state == State::Done).count() == 2).then_some(())
    })
    .await;
    let timeline = events(&e, &open).await;
    let raised: Vec<_> = timeline
        .iter()
        .filter(|t| t["event"] == "vital_alert_raised")
        .collect();
    assert_eq!(raised.len(), 2, "{timeline:?}");
    assert_eq!(journaled(&s, "device-alerts").await.len(), 2);
    e.stop();
    assert!(!e.log_text().contains("panicked"), "{}", e.log_text());
}
