//! The FHIR store and facade end to end (issue 16), on SQLite and PostgreSQL: transaction
//! Bundles through a pipeline into the `fhir_store` sink (FHIR-20: conditional entries,
//! replays, an ambiguous condition to the dead letters); the facade's searches, paging,
//! `_include`, ETags and errors over what was stored ([`store`]); a consultation read as Task +
//! ServiceRequest + Encounter + opinion, moved by `PUT Task` under `If-Match`, `$everything`,
//! `$match` and `$ihe-pix` ([`consultation`]); the CapabilityStatement against the routes
//! ([`capability`]). Every resource the facade answers is read back through fhir-sdk's model
//! (`huizhen_fhir::facade::model::round_trip`). The `fhir_poll` source and the `fhir` sink of
//! another engine against this facade ([`client_facade`]).

mod capability;
mod care;
mod client_facade;
mod consultation;
mod encounter;
mod rekey;
mod store;

use std::sync::Arc;
use std::time::Duration;

use huizhen_core::clock::FakeClock;
use huizhen_core::security::Role;
use huizhen_signing::testca::TestCa;
use serde_json::{Value, json};

use crate::consultations::{REQ, Wf, start_on, t0, token};
use crate::support::{Backend, fresh_db};

/// The pipeline the tests send Bundles through: facility F-REQ (the requesting hospital).
const PIPELINE: &str = "version: 1\nname: fhir-in\nfacility: F-REQ\nsource:\n  http: { path: /in/fhir, kind: json }\nsinks:\n  - fhir_store: {}\n";

pub(crate) fn admin() -> String {
    token(Role::Admin, "admin", "*")
}

/// An integrator of the requesting facility.
pub(crate) fn integrator() -> String {
    token(Role::Integrator, "int-a", REQ)
}

pub(crate) async fn start(b: Backend) -> Option<Wf> {
    let db = fresh_db(b).await?;
    let ca = Arc::new(TestCa::generate("Huizhen FHIR E2E CA").unwrap());
    Some(start_on(db, ca, Arc::new(FakeClock::new(t0())), &[PIPELINE]).await)
}

/// A response of the facade: status, JSON body, ETag.
pub(crate) struct Got {
    pub status: u16,
    pub body: Value,
    pub etag: Option<String>,
    pub content_type: String,
}

/// A request to the facade (`path` under the server root).
pub(crate) async fn fhir(
    wf: &Wf,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
    if_match: Option<&str>,
) -> Got {
    let url = if path.starts_with("http") {
        path.to_owned()
    } else {
        format!("{}{path}", wf.base)
    };
    let mut req = match method {
        "GET" => wf.client.get(url),
        "PUT" => wf.client.put(url),
        "DELETE" => wf.client.delete(url),
        "PATCH" => wf.client.patch(url),
        _ => wf.client.post(url),
    };
    if let Some(b) = body {
        req = req
            .header("content-type", "application/fhir+json")
            .body(b.to_string());
    }
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    if let Some(v) = if_match {
        req = req.header("if-match", v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let header = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let etag = header("etag");
    let content_type = header("content-type").unwrap_or_default();
    let text = r.text().await.unwrap_or_default();
    Got {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        etag,
        content_type,
    }
}

/// GET as `bearer`, expecting 200; the body, read back through the model.
pub(crate) async fn ok(wf: &Wf, path: &str, bearer: &str) -> Value {
    let g = fhir(wf, "GET", path, Some(bearer), None, None).await;
    assert_eq!(g.status, 200, "GET {path}: {}", g.body);
    assert!(
        g.content_type.starts_with("application/fhir+json"),
        "{}",
        g.content_type
    );
    huizhen_fhir::facade::model::round_trip(&g.body).unwrap_or_else(|e| {
        panic!(
            "GET {path}: the answer does not read back through the model: {e}\n{}",
            g.body
        )
    });
    g.body
}

/// The ids of a searchset's entries of search mode `mode`.
pub(crate) fn ids(bundle: &Value, mode: &str) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == mode)
        .map(|e| {
            format!(
                "{}/{}",
                e["resource"]["resourceType"].as_str().unwrap(),
                e["resource"]["id"].as_str().unwrap()
            )
        })
        .collect()
}

/// Sends a Bundle through the pipeline; waits until it is done or dead; its id and state.
pub(crate) async fn send(wf: &Wf, bundle: &Value) -> (String, huizhen_core::message::State) {
    let r = wf
        .client
        .post(format!("{}/in/fhir", wf.base))
        .bearer_auth(admin())
        .header("content-type", "application/json")
        .body(bundle.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let state = settled(wf, &id).await;
    (id, state)
}

/// Waits until message `id` is done or dead.
pub(crate) async fn settled(wf: &Wf, id: &str) -> huizhen_core::message::State {
    use huizhen_core::message::State;
    crate::support::wait_for("the Bundle applied", Duration::from_secs(20), || {
        let store = wf.engine.store.clone();
        let id = id.to_owned();
        async move {
            let m = store.get(&id).await.ok()??;
            matches!(m.state, State::Done | State::Dead).then_some(m.state)
        }
    })
    .await
}

/// A laboratory result as a conversion makes it: the Patient (conditional on its MRN), the
/// Observations (conditional on their ids) and the report (conditional on its accession),
/// linked by `urn:uuid:` references.
pub(crate) fn lab_bundle(
    mrn: &str,
    accession: &str,
    when: &str,
    results: &[(&str, &str, f64)],
) -> Value {
    let mut entries = vec![json!({
        "fullUrl": "urn:uuid:patient",
        "resource": {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:oid:1.2.156.112604.1.2.1", "value": mrn}],
            "name": [{"family": "张", "given": ["伟"], "text": "张伟"}],
            "gender": "male",
            "birthDate": "1962-05-02"
        },
        "request": {"method": "POST", "url": "Patient", "ifNoneExist": format!("identifier=urn:oid:1.2.156.112604.1.2.1|{mrn}")}
    })];
    let mut refs = Vec::new();
    for (i, (code, name, value)) in results.iter().enumerate() {
        let full = format!("urn:uuid:obs-{i}");
        refs.push(json!({"reference": full}));
        let oid = format!("{accession}-{code}");
        entries.push(json!({
            "fullUrl": full,
            "resource": {
                "resourceType": "Observation",
                "identifier": [{"system": "urn:huizhen:test:obx", "value": oid}],
                "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": name}]},
                "subject": {"reference": "urn:uuid:patient"},
                "effectiveDateTime": when,
                "valueQuantity": {"value": value, "unit": "g/L"}
            },
            "request": {"method": "POST", "url": "Observation", "ifNoneExist": format!("identifier=urn:huizhen:test:obx|{oid}")}
        }));
    }
    entries.push(json!({
        "fullUrl": "urn:uuid:report",
        "resource": {
            "resourceType": "DiagnosticReport",
            "identifier": [{"system": "urn:huizhen:test:accession", "value": accession}],
            "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "58410-2", "display": "CBC panel"}]},
            "subject": {"reference": "urn:uuid:patient"},
            "effectiveDateTime": when,
            "result": refs
        },
        "request": {"method": "POST", "url": "DiagnosticReport", "ifNoneExist": format!("identifier=urn:huizhen:test:accession|{accession}")}
    }));
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

/// The stored Patient id a report points at.
pub(crate) fn subject_id(report: &Value) -> String {
    report["subject"]["reference"]
        .as_str()
        .unwrap()
        .strip_prefix("Patient/")
        .unwrap()
        .to_owned()
}
