//! `Encounter/{id}/$everything` (FHIR-22) over stored resources, on SQLite and PostgreSQL: the
//! Encounter, its Patient and what names it as its `encounter`, with `_type`, `_since`,
//! `_count`; another facility gets 404, as for a read.

use huizhen_core::message::State;
use huizhen_core::security::Role;
use serde_json::json;

use super::{fhir, ids, integrator, ok, send, start};
use crate::consultations::token;
use crate::support::{Backend, both_backends};

both_backends!(encounter_everything_gathers_what_names_the_encounter);

async fn encounter_everything_gathers_what_names_the_encounter(b: Backend) {
    let Some(wf) = start(b).await else { return };
    let patient = json!({
        "fullUrl": "urn:uuid:patient",
        "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:huizhen:test:mrn", "value": "MRN-E1"}], "gender": "female"},
        "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:huizhen:test:mrn|MRN-E1"}
    });
    let encounter = json!({
        "fullUrl": "urn:uuid:enc",
        "resource": {
            "resourceType": "Encounter",
            "identifier": [{"system": "urn:huizhen:test:visit", "value": "V-1"}],
            "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "subject": {"reference": "urn:uuid:patient"}
        },
        "request": {"method": "POST", "url": "Encounter", "ifNoneExist": "identifier=urn:huizhen:test:visit|V-1"}
    });
    let obs = |n: &str, enc: bool| {
        let mut r = json!({
            "resourceType": "Observation",
            "identifier": [{"system": "urn:huizhen:test:obx", "value": n}],
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": "urn:uuid:patient"},
            "valueQuantity": {"value": 72.0, "unit": "/min"}
        });
        if enc {
            r["encounter"] = json!({"reference": "urn:uuid:enc"});
        }
        json!({
            "fullUrl": format!("urn:uuid:{n}"),
            "resource": r,
            "request": {"method": "POST", "url": "Observation", "ifNoneExist": format!("identifier=urn:huizhen:test:obx|{n}")}
        })
    };
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        patient, encounter, obs("O-1", true), obs("O-2", true), obs("O-3", false)
    ]});
    assert_eq!(send(&wf, &bundle).await.1, State::Done);
    let bearer = integrator();
    let found = ok(
        &wf,
        "/fhir/r4/Encounter?identifier=urn:huizhen:test:visit|V-1",
        &bearer,
    )
    .await;
    let enc = found["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let pid = found["entry"][0]["resource"]["subject"]["reference"]
        .as_str()
        .unwrap()
        .to_owned();

    let all = ok(
        &wf,
        &format!("/fhir/r4/Encounter/{enc}/$everything"),
        &bearer,
    )
    .await;
    let mut got = ids(&all, "match");
    got.sort();
    assert_eq!(all["total"], 4, "{all}");
    assert!(got.contains(&format!("Encounter/{enc}")), "{got:?}");
    assert!(got.contains(&pid), "{got:?}");
    assert_eq!(
        got.iter().filter(|i| i.starts_with("Observation/")).count(),
        2,
        "{got:?}"
    );
    // The Observation without the encounter is not part of it.
    let o3 = ok(
        &wf,
        "/fhir/r4/Observation?identifier=urn:huizhen:test:obx|O-3",
        &bearer,
    )
    .await;
    let o3 = format!(
        "Observation/{}",
        o3["entry"][0]["resource"]["id"].as_str().unwrap()
    );
    assert!(!got.contains(&o3), "{got:?}");

    let typed = ok(
        &wf,
        &format!("/fhir/r4/Encounter/{enc}/$everything?_type=Observation&_count=1"),
        &bearer,
    )
    .await;
    assert_eq!(typed["total"], 2, "{typed}");
    assert_eq!(ids(&typed, "match").len(), 1);
    let next = typed["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .unwrap()["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let page2 = ok(&wf, &next, &bearer).await;
    assert_eq!(ids(&page2, "match").len(), 1);
    assert_ne!(ids(&page2, "match"), ids(&typed, "match"));
    let none = ok(
        &wf,
        &format!("/fhir/r4/Encounter/{enc}/$everything?_since=2999-01-01"),
        &bearer,
    )
    .await;
    assert_eq!(none["total"], 0, "{none}");

    let g = fhir(
        &wf,
        "GET",
        &format!("/fhir/r4/Encounter/{enc}/$everything?start=2024"),
        Some(&bearer),
        None,
        None,
    )
    .await;
    assert_eq!(
        (g.status, &g.body["issue"][0]["expression"][0]),
        (400, &json!("start"))
    );
    let other = token(Role::Integrator, "int-b", "F-OTHER");
    let g = fhir(
        &wf,
        "GET",
        &format!("/fhir/r4/Encounter/{enc}/$everything"),
        Some(&other),
        None,
        None,
    )
    .await;
    assert_eq!(g.status, 404);
    assert_eq!(g.body["resourceType"], "OperationOutcome");
    // The CapabilityStatement lists it.
    let cs = fhir(&wf, "GET", "/fhir/r4/metadata", None, None, None)
        .await
        .body;
    let e = cs["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Encounter")
        .unwrap();
    assert!(
        e["operation"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["name"] == "everything"),
        "{e}"
    );
}
