//! The "done when": `mosquitto_pub` → a vital-sign Observation of the right patient on
//! /fhir/r4/Observation, a high blood pressure → an alert message; a malformed payload → a dead
//! letter with the reason.

use std::time::Duration;

use huizhen_core::message::State;

use super::{Engine, bp, broker_ready, publish, unique};
use crate::support::{Backend, fresh_db, journaled, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_reading_becomes_an_observation_and_high_bp_an_alert() {
    if !broker_ready() {
        return;
    }
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let topic = unique("hz-walk");
    let mut e = Engine::new(&db, &topic, &unique("hz-walk"));
    let person = e.patient_with_device("MR-1001", "BP-0001", "2026-01-01T00:00:00+08:00");
    // Another patient's cuff: its readings must not show up under the first patient.
    let other = e.patient_with_device("MR-1002", "BP-0002", "2026-01-01T00:00:00+08:00");
    assert_ne!(person, other);
    e.start().await;
    let s = super::open_store(&db).await;
    // The subscription is in place once a first reading went through.
    let topic1 = format!("{topic}/gw-1/vitals");
    super::prime(
        &e,
        &topic1,
        &bp("BP-0001", "2026-03-01T08:00:00+08:00", 128, 82, 70),
        &person,
        2,
    )
    .await;
    let first = e.observations(&person).await;
    assert_eq!(first.len(), 2);
    let panel = first
        .iter()
        .find(|o| o["code"]["coding"][0]["code"] == "85354-9")
        .expect("the BP panel");
    assert_eq!(panel["subject"]["reference"], format!("Patient/{person}"));
    assert_eq!(panel["effectiveDateTime"], "2026-03-01T08:00:00+08:00");
    assert_eq!(panel["category"][0]["coding"][0]["code"], "vital-signs");
    assert_eq!(panel["component"][0]["code"]["coding"][0]["code"], "8480-6");
    assert_eq!(panel["component"][0]["valueQuantity"]["value"], 128.0);
    assert_eq!(panel["component"][0]["valueQuantity"]["code"], "mm[Hg]");
    assert_eq!(panel["component"][1]["code"]["coding"][0]["code"], "8462-4");
    let hr = first
        .iter()
        .find(|o| o["code"]["coding"][0]["code"] == "8867-4")
        .expect("the heart rate");
    assert_eq!(hr["valueQuantity"]["code"], "/min");
    assert_eq!(
        journaled(&s, "device-alerts").await.len(),
        0,
        "128/82 raises no alert"
    );

    // High blood pressure: an alert message in device-alerts, the Observation stored as well.
    publish(
        &format!("{topic}/gw-1/vitals"),
        &bp("BP-0001", "2026-03-01T20:00:00+08:00", 172, 104, 88),
    );
    let alerts = wait_for("the alert message", Duration::from_secs(30), || async {
        let a = journaled(&s, "device-alerts").await;
        (a.iter().any(|m| m.state == State::Done)).then_some(a)
    })
    .await;
    assert_eq!(alerts.len(), 1);
    let alert: serde_json::Value = serde_json::from_slice(&alerts[0].body).unwrap();
    assert_eq!(alert["record"], "vital_alert");
    assert_eq!(alert["alerts"][0]["name"], "bp-high");
    assert_eq!(alert["patient"]["person"], person);
    assert_eq!(alert["values"]["systolic"], 172.0);
    wait_for(
        "the high reading's Observations",
        Duration::from_secs(30),
        || async { (e.observations(&person).await.len() == 4).then_some(()) },
    )
    .await;
    assert_eq!(
        e.observations(&other).await.len(),
        0,
        "nothing under the other patient"
    );

    // The same reading again (a gateway resend): no second Observation, no second alert.
    publish(
        &format!("{topic}/gw-1/vitals"),
        &bp("BP-0001", "2026-03-01T20:00:00+08:00", 172, 104, 88),
    );
    // A malformed payload and an implausible one: dead letters naming what is wrong.
    publish(&format!("{topic}/gw-1/vitals"), "{not json");
    publish(
        &format!("{topic}/gw-1/vitals"),
        &bp("BP-0001", "2026-03-02T08:00:00+08:00", 900, 80, 70),
    );
    // A device bound to nobody.
    publish(
        &format!("{topic}/gw-1/vitals"),
        &bp("BP-9999", "2026-03-02T08:00:00+08:00", 120, 80, 70),
    );
    let dead = wait_for("three dead letters", Duration::from_secs(30), || async {
        let d: Vec<_> = journaled(&s, "devices")
            .await
            .into_iter()
            .filter(|m| m.state == State::Dead)
            .collect();
        (d.len() == 3).then_some(d)
    })
    .await;
    let reasons: Vec<String> = dead
        .iter()
        .map(|m| m.last_error.clone().unwrap_or_default())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("not JSON")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("systolic") && r.contains("plausible") && !r.contains("900")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("bound to no patient")),
        "{reasons:?}"
    );
    let all = journaled(&s, "devices").await;
    assert_eq!(
        all.len(),
        5,
        "the resend was taken as a duplicate: {}",
        all.len()
    );
    assert_eq!(e.observations(&person).await.len(), 4);
    assert_eq!(journaled(&s, "device-alerts").await.len(), 1);
    e.stop();
    assert!(!e.log_text().contains("panicked"), "{}", e.log_text());
}
