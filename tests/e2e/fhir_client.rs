//! FHIR client in the engine, against a FHIR server on loopback (`huizhen_fhir::testing`):
//! the `fhir_poll` source journals each resource version once and keeps its `_lastUpdated`
//! cursor in the store across a restart (SQLite and PostgreSQL); an ORU through
//! `hl7v2_to_fhir` and the `fhir` sink lands as a DiagnosticReport with its Observations, once
//! however often it is delivered.

use std::time::Duration;

use huizhen_core::Engine;
use huizhen_core::message::{Message, NewMessage, State};
use huizhen_core::store::ListFilter;
use huizhen_fhir::testing::FakeFhir;
use serde_json::json;

use crate::support::{Backend, both_backends, fresh_db, loaded, wait_for};

async fn messages(engine: &Engine, pipeline: &str) -> Vec<Message> {
    engine
        .store
        .list(&ListFilter {
            pipeline: Some(pipeline.into()),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap()
        .messages
}

fn poll_pipeline(base: &str) -> String {
    format!(
        "version: 1\nname: fhir-in\nfacility: hub\nsource:\n  fhir_poll: {{ base: \"{base}\", token: t0k, types: [Patient], every: 100ms, count: 2 }}\nsinks:\n  - journal: {{}}\n"
    )
}

async fn fhir_poll_journals_each_version_once_and_resumes_from_its_cursor(backend: Backend) {
    let Some(db) = fresh_db(backend).await else {
        return;
    };
    let fake = FakeFhir::start(Some("t0k")).await;
    for i in 0..5 {
        fake.put(json!({"resourceType": "Patient", "identifier": [{"value": format!("P{i}")}]}));
    }
    let yaml = poll_pipeline(&fake.base());
    let engine = Engine::start(loaded(&db, &[&yaml])).await.unwrap();
    wait_for(
        "five patients journaled",
        Duration::from_secs(20),
        || async {
            let m = messages(&engine, "fhir-in").await;
            (m.iter().filter(|m| m.state == State::Done).count() == 5).then_some(())
        },
    )
    .await;
    // An update is a new version: one more message.
    let first = fake.resources("Patient")[0].clone();
    let id = first["id"].as_str().unwrap().to_owned();
    assert!(fake.update(
        "Patient",
        &id,
        json!({"resourceType": "Patient", "gender": "female"})
    ));
    let all = wait_for(
        "the new version journaled",
        Duration::from_secs(20),
        || async {
            let m = messages(&engine, "fhir-in").await;
            (m.len() == 6).then_some(m)
        },
    )
    .await;
    let mut keys: Vec<String> = all.iter().filter_map(|m| m.dedup_key.clone()).collect();
    keys.sort();
    assert!(
        keys.contains(&format!("fhir:Patient/{id}/_history/1")),
        "{keys:?}"
    );
    assert!(
        keys.contains(&format!("fhir:Patient/{id}/_history/2")),
        "{keys:?}"
    );
    assert!(all.iter().all(|m| m.kind == "fhir+json"));
    let newest = fake
        .resources("Patient")
        .iter()
        .filter_map(|r| r["meta"]["lastUpdated"].as_str().map(str::to_owned))
        .max()
        .unwrap();
    let cursor = wait_for("the cursor stored", Duration::from_secs(10), || async {
        let c = engine
            .store
            .source_cursor("fhir_poll:fhir-in:Patient")
            .await
            .unwrap();
        (c.as_deref() == Some(newest.as_str())).then_some(c)
    })
    .await;
    engine.shutdown(Duration::from_secs(5)).await;

    // Restarted, it searches from the stored cursor (less the overlap) and journals nothing new.
    let before = fake.seen().len();
    let engine = Engine::start(loaded(&db, &[&yaml])).await.unwrap();
    wait_for(
        "polls after the restart",
        Duration::from_secs(20),
        || async { (fake.seen().len() >= before + 3).then_some(()) },
    )
    .await;
    let after = &fake.seen()[before];
    assert!(after.target.contains("_lastUpdated=gt"), "{}", after.target);
    assert_eq!(after.headers["authorization"], "Bearer t0k");
    assert_eq!(messages(&engine, "fhir-in").await.len(), 6);
    assert_eq!(
        engine
            .store
            .source_cursor("fhir_poll:fhir-in:Patient")
            .await
            .unwrap(),
        cursor
    );
    engine.shutdown(Duration::from_secs(5)).await;
}

async fn an_oru_reaches_the_fhir_server_once(backend: Backend) {
    let Some(db) = fresh_db(backend).await else {
        return;
    };
    let fake = FakeFhir::start(None).await;
    let yaml = format!(
        "version: 1\nname: results-fhir\nsource:\n  http: {{ path: /in/results-fhir, kind: hl7v2 }}\nsteps:\n  - hl7v2_to_fhir: {{}}\nsinks:\n  - fhir: {{ base: \"{}\" }}\n",
        fake.base()
    );
    let engine = Engine::start(loaded(&db, &[&yaml])).await.unwrap();
    let oru = "MSH|^~\\&|LIS|LAB|HUIZHEN|HUB|20261123101500||ORU^R01^ORU_R01|L-1|P|2.5.1|||||CHN|UNICODE UTF-8\rPID|1||MR1^^^COUNTY^MR||王^芳||19751203|F\rOBR|1||F1^LIS|GLU^血糖^L|||20261123080000||||||||||||||||||F\rOBX|1|NM|GLU^葡萄糖^L||7.8|mmol/L|3.9-6.1|H|||F\rPID|2||MR2^^^COUNTY^MR||陈^明\rOBR|1||F2^LIS|HB^血红蛋白^L\rOBX|1|NM|HB^血红蛋白^L||120|g/L|||||F\r";
    let p = engine.pipeline("results-fhir").unwrap().clone();
    // The same ORU twice under different control ids: two messages, the same resources.
    for control in ["L-1", "L-2"] {
        let body = oru.replace("|L-1|", &format!("|{control}|"));
        p.submit(NewMessage::new(
            "results-fhir",
            "hub",
            "hl7v2",
            body.into_bytes(),
        ))
        .await
        .unwrap();
    }
    wait_for("both delivered", Duration::from_secs(20), || async {
        let m = messages(&engine, "results-fhir").await;
        (m.len() == 2 && m.iter().all(|m| m.state == State::Done)).then_some(())
    })
    .await;
    assert_eq!(fake.resources("Patient").len(), 2);
    assert_eq!(fake.resources("DiagnosticReport").len(), 2);
    assert_eq!(fake.resources("Observation").len(), 2);
    let report = &fake.resources("DiagnosticReport")[0];
    assert_eq!(report["code"]["text"], "血糖");
    assert!(
        report["subject"]["reference"]
            .as_str()
            .unwrap()
            .starts_with("Patient/")
    );
    engine.shutdown(Duration::from_secs(5)).await;
}

both_backends!(
    fhir_poll_journals_each_version_once_and_resumes_from_its_cursor,
    an_oru_reaches_the_fhir_server_once,
);
