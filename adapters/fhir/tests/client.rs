//! The FHIR client and the `fhir` sink's writes against a real HTTP FHIR server on loopback
//! (`huizhen_fhir::testing::FakeFhir`): conditional creates and transactions replay without
//! duplicates (FHIR-20), bearer auth, 429 with `Retry-After`, OperationOutcome text in errors.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use huizhen_fhir::client::http::FHIR_R4_JSON;
use huizhen_fhir::client::sink::write;
use huizhen_fhir::client::{ClientOptions, FhirClient};
use huizhen_fhir::convert::{Options, convert};
use huizhen_fhir::testing::FakeFhir;
use serde_json::{Value, json};

fn client(fake: &FakeFhir, token: Option<&str>, retries: u32) -> FhirClient {
    FhirClient::new(ClientOptions {
        base: fake.base(),
        token: token.map(str::to_owned),
        timeout: Duration::from_secs(10),
        retries,
        max_wait: Duration::from_secs(5),
    })
    .unwrap()
}

fn patient() -> Value {
    json!({"resourceType": "Patient", "identifier": [{"system": "urn:huizhen:id:HIS", "value": "MR1"}], "name": [{"text": "王芳"}], "gender": "female"})
}

#[tokio::test]
async fn a_conditional_create_replays_without_a_duplicate() {
    let fake = FakeFhir::start(Some("s3cret")).await;
    let c = client(&fake, Some("s3cret"), 0);
    let first = write(&c, "m1", patient()).await.unwrap();
    let again = write(&c, "m1", patient()).await.unwrap();
    assert_eq!((first.status, again.status), (201, 200));
    assert_eq!(fake.resources("Patient").len(), 1);
    let seen = fake.seen();
    let h = &seen[0].headers;
    assert_eq!(h["authorization"], "Bearer s3cret");
    assert_eq!(h["content-type"], FHIR_R4_JSON);
    assert_eq!(h["accept"], FHIR_R4_JSON);
    assert_eq!(h["if-none-exist"], "identifier=urn:huizhen:id:HIS|MR1");
    assert_eq!(h["x-request-id"], "m1");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].target.as_str()),
        ("POST", "/fhir/Patient")
    );
}

#[tokio::test]
async fn a_resource_without_identifier_is_made_conditional_by_its_message_tag() {
    let fake = FakeFhir::start(None).await;
    let c = client(&fake, None, 0);
    let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "体温"}});
    write(&c, "m7", obs.clone()).await.unwrap();
    write(&c, "m7", obs.clone()).await.unwrap();
    write(&c, "m8", obs).await.unwrap();
    let stored = fake.resources("Observation");
    assert_eq!(stored.len(), 2, "one per message, none per replay");
    assert_eq!(stored[0]["meta"]["tag"][0]["code"], "m7");
    assert_eq!(
        fake.seen()[0].headers["if-none-exist"],
        "_tag=urn:huizhen:message|m7"
    );
}

#[tokio::test]
async fn a_resource_with_an_id_is_an_update() {
    let fake = FakeFhir::start(None).await;
    let c = client(&fake, None, 0);
    let mut p = patient();
    p["id"] = json!("p1");
    write(&c, "m1", p.clone()).await.unwrap();
    p["gender"] = json!("male");
    let a = write(&c, "m2", p).await.unwrap();
    assert_eq!(a.status, 200);
    let stored = fake.resources("Patient");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["gender"], "male");
    assert_eq!(stored[0]["meta"]["versionId"], "2");
    assert_eq!(fake.seen()[1].target, "/fhir/Patient/p1");
}

#[tokio::test]
async fn a_converted_oru_transaction_replays_to_the_same_resources() {
    let fake = FakeFhir::start(None).await;
    let c = client(&fake, None, 0);
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hl7/oru_r01_two_patients.hl7");
    let decoded =
        huizhen_hl7::expr::decode_body(&std::fs::read(path).unwrap(), &BTreeMap::new()).unwrap();
    let message = huizhen_hl7::Message::from_decoded(decoded).unwrap();
    let bundle =
        serde_json::to_value(convert(&message, &Options::default(), "m1").unwrap().bundle).unwrap();
    let count =
        |f: &FakeFhir| ["Patient", "DiagnosticReport", "Observation"].map(|t| f.resources(t).len());
    write(&c, "m1", bundle.clone()).await.unwrap();
    assert_eq!(count(&fake), [2, 2, 5]);
    // A replay (a retried delivery, a reprocessed message) changes nothing in number.
    let again =
        serde_json::to_value(convert(&message, &Options::default(), "m2").unwrap().bundle).unwrap();
    write(&c, "m2", again).await.unwrap();
    assert_eq!(count(&fake), [2, 2, 5]);
    // The references between entries were resolved to the stored resources.
    let reports = fake.resources("DiagnosticReport");
    let subject = reports[0]["subject"]["reference"].as_str().unwrap();
    let patients = fake.resources("Patient");
    assert_eq!(
        subject,
        format!("Patient/{}", patients[0]["id"].as_str().unwrap())
    );
}

#[tokio::test]
async fn retry_after_is_waited_out() {
    let fake = FakeFhir::start(None).await;
    let c = client(&fake, None, 2);
    fake.throttle(1);
    write(&c, "m1", patient()).await.unwrap();
    let statuses: Vec<u16> = fake.seen().iter().map(|s| s.status).collect();
    assert_eq!(statuses, [429, 201]);
}

#[tokio::test]
async fn a_server_that_keeps_throttling_is_a_retryable_error() {
    let fake = FakeFhir::start(None).await;
    let c = client(&fake, None, 1);
    fake.throttle(5);
    let e = write(&c, "m1", patient()).await.unwrap_err();
    assert!(e.retryable, "{e:?}");
    assert_eq!(e.status, Some(429));
    assert!(
        e.message
            .contains("429 Too Many Requests: error throttled: slow down"),
        "{}",
        e.message
    );
    assert!(e.message.contains("Retry-After 1 s"), "{}", e.message);
}

#[tokio::test]
async fn the_operation_outcome_is_in_the_error() {
    let fake = FakeFhir::start(None).await;
    let c = client(&fake, None, 0);
    let mut p = patient();
    p["gender"] = json!("男");
    let e = write(&c, "m1", p).await.unwrap_err();
    assert!(!e.retryable);
    assert_eq!(e.status, Some(422));
    assert_eq!(
        e.message,
        format!(
            "POST {}/Patient: 422 Unprocessable Entity: error code-invalid: Patient.gender: not a code of AdministrativeGender",
            fake.base()
        )
    );
}

#[tokio::test]
async fn without_the_token_the_server_refuses() {
    let fake = FakeFhir::start(Some("s3cret")).await;
    let c = client(&fake, None, 0);
    let e = write(&c, "m1", patient()).await.unwrap_err();
    assert_eq!(e.status, Some(401));
    assert!(!e.retryable);
    assert!(
        e.message.contains("a bearer token is required"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn what_is_not_fhir_is_refused_before_sending() {
    let fake = FakeFhir::start(None).await;
    let c = client(&fake, None, 0);
    for (body, want) in [
        (json!({"a": 1}), "no resourceType"),
        (
            json!({"resourceType": "Patiant"}),
            "not a FHIR resource type",
        ),
        (
            json!({"resourceType": "Bundle", "type": "searchset"}),
            "only transaction and batch",
        ),
    ] {
        let e = write(&c, "m1", body).await.unwrap_err();
        assert!(e.message.contains(want), "{}", e.message);
    }
    assert!(fake.seen().is_empty());
}

#[tokio::test]
async fn an_unreachable_server_is_a_retryable_error() {
    let c = FhirClient::new(ClientOptions {
        base: "http://127.0.0.1:9/fhir".into(),
        token: None,
        timeout: Duration::from_secs(5),
        retries: 0,
        max_wait: Duration::ZERO,
    })
    .unwrap();
    let e = write(&c, "m1", patient()).await.unwrap_err();
    assert!(e.retryable);
    assert_eq!(e.status, None);
    assert!(
        e.message
            .starts_with("POST http://127.0.0.1:9/fhir/Patient: cannot connect"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn search_pages_follow_next_links() {
    let fake = FakeFhir::start(None).await;
    for i in 0..5 {
        fake.put(json!({"resourceType": "Patient", "identifier": [{"value": format!("P{i}")}]}));
    }
    let c = client(&fake, None, 0);
    let mut url = Some(format!("{}/Patient?_count=2", fake.base()));
    let mut ids = Vec::new();
    while let Some(u) = url.take() {
        let b = c.get(&u).await.unwrap();
        for e in b["entry"].as_array().unwrap() {
            ids.push(
                e["resource"]["identifier"][0]["value"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        url = b["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids, ["P0", "P1", "P2", "P3", "P4"]);
}
