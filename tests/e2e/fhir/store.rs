//! Transaction Bundles through the `fhir_store` sink, and the facade's searches over them.

use chrono::TimeDelta;
use huizhen_core::clock::Clock;
use huizhen_core::message::State;
use huizhen_core::security::Role;
use serde_json::{Value, json};

use super::{admin, fhir, ids, integrator, lab_bundle, ok, send, start, subject_id};
use crate::consultations::token;
use crate::support::{Backend, both_backends};

both_backends!(
    a_report_is_found_by_patient_with_its_observations,
    conditional_entries_are_idempotent_and_never_pick_one,
    every_search_parameter_paging_and_errors,
);

async fn a_report_is_found_by_patient_with_its_observations(b: Backend) {
    let Some(wf) = start(b).await else { return };
    let bundle = lab_bundle(
        "MRN-1001",
        "ACC-1",
        "2024-03-05T08:30:00+08:00",
        &[("718-7", "Hemoglobin", 135.0), ("6690-2", "WBC", 6.1)],
    );
    let (id, state) = send(&wf, &bundle).await;
    assert_eq!(state, State::Done);
    // The transaction-response is the sink's effect: three creates, ids assigned.
    let outcome = wf
        .engine
        .store
        .fhir_applied(&id, "fhir_store#0")
        .await
        .unwrap()
        .unwrap();
    let outcome: Value = serde_json::from_str(&outcome).unwrap();
    let statuses: Vec<&str> = outcome["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["201 Created"; 4]);

    let reports = ok(&wf, "/fhir/r4/DiagnosticReport?code=58410-2", &integrator()).await;
    assert_eq!(reports["total"], 1, "{reports}");
    let report = &reports["entry"][0]["resource"];
    let patient = subject_id(report);
    // The Done-when: the report by its patient, with its Observations.
    let found = ok(
        &wf,
        &format!("/fhir/r4/DiagnosticReport?patient={patient}&_include=DiagnosticReport:result"),
        &integrator(),
    )
    .await;
    assert_eq!(ids(&found, "match").len(), 1, "{found}");
    let included = ids(&found, "include");
    assert_eq!(included.len(), 2, "{found}");
    assert!(
        included.iter().all(|i| i.starts_with("Observation/")),
        "{included:?}"
    );
    let result_refs: Vec<&str> = report["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reference"].as_str().unwrap())
        .collect();
    for r in &result_refs {
        assert!(included.contains(&(*r).to_owned()), "{r} in {included:?}");
    }
    let obs = ok(
        &wf,
        &format!("/fhir/r4/Observation?patient=Patient/{patient}"),
        &integrator(),
    )
    .await;
    assert_eq!(obs["total"], 2);

    // Read and vread, with the ETag of the version.
    let rid = report["id"].as_str().unwrap();
    let g = fhir(
        &wf,
        "GET",
        &format!("/fhir/r4/DiagnosticReport/{rid}"),
        Some(&integrator()),
        None,
        None,
    )
    .await;
    assert_eq!((g.status, g.etag.as_deref()), (200, Some("W/\"1\"")));
    assert_eq!(g.body["meta"]["versionId"], "1");
    huizhen_fhir::facade::model::round_trip(&g.body).unwrap();
    let v1 = ok(
        &wf,
        &format!("/fhir/r4/DiagnosticReport/{rid}/_history/1"),
        &integrator(),
    )
    .await;
    assert_eq!(v1["id"], rid);
    let g = fhir(
        &wf,
        "GET",
        &format!("/fhir/r4/DiagnosticReport/{rid}/_history/2"),
        Some(&integrator()),
        None,
        None,
    )
    .await;
    assert_eq!(g.status, 404);
    assert_eq!(g.body["resourceType"], "OperationOutcome");
    ok(&wf, &format!("/fhir/r4/Patient/{patient}"), &integrator()).await;

    // Access: another facility sees nothing of F-REQ's, a pharmacist may not read clinical
    // data, no token is 401.
    let other = token(Role::Integrator, "int-b", "F-OTHER");
    let none = ok(&wf, "/fhir/r4/DiagnosticReport", &other).await;
    assert_eq!(none["total"], 0, "{none}");
    assert_eq!(
        fhir(
            &wf,
            "GET",
            &format!("/fhir/r4/DiagnosticReport/{rid}"),
            Some(&other),
            None,
            None
        )
        .await
        .status,
        404
    );
    let pharmacist = token(Role::Pharmacist, "ph", "F-REQ");
    let g = fhir(
        &wf,
        "GET",
        "/fhir/r4/DiagnosticReport",
        Some(&pharmacist),
        None,
        None,
    )
    .await;
    assert_eq!(g.status, 403);
    assert_eq!(
        fhir(&wf, "GET", "/fhir/r4/DiagnosticReport", None, None, None)
            .await
            .status,
        401
    );
    // An expert with no consultation sees no patient's data.
    let expert = token(Role::Expert, "E9", "F-REQ");
    assert_eq!(ok(&wf, "/fhir/r4/Observation", &expert).await["total"], 0);
    assert_eq!(
        fhir(
            &wf,
            "GET",
            &format!("/fhir/r4/DiagnosticReport/{rid}"),
            Some(&expert),
            None,
            None
        )
        .await
        .status,
        404
    );
}

async fn conditional_entries_are_idempotent_and_never_pick_one(b: Backend) {
    let Some(wf) = start(b).await else { return };
    let bundle = lab_bundle(
        "MRN-2002",
        "ACC-2",
        "2024-03-05",
        &[("718-7", "Hemoglobin", 120.0)],
    );
    // The same ORU three times (FHIR-20's acceptance test): one report, one Patient.
    let (first, _) = send(&wf, &bundle).await;
    for _ in 0..2 {
        let (id, state) = send(&wf, &bundle).await;
        assert_eq!(state, State::Done);
        let outcome: Value = serde_json::from_str(
            &wf.engine
                .store
                .fhir_applied(&id, "fhir_store#0")
                .await
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        for e in outcome["entry"].as_array().unwrap() {
            assert_eq!(e["response"]["status"], "200 OK", "{outcome}");
        }
    }
    for (q, n) in [
        (
            "DiagnosticReport?identifier=urn:huizhen:test:accession|ACC-2",
            1,
        ),
        (
            "Patient?identifier=urn:oid:1.2.156.112604.1.2.1|MRN-2002",
            1,
        ),
        ("Observation?identifier=ACC-2-718-7", 1),
    ] {
        assert_eq!(
            ok(&wf, &format!("/fhir/r4/{q}"), &admin()).await["total"],
            n,
            "{q}"
        );
    }
    // A reprocessed message is a replay of the same message: nothing is written again.
    let before = wf
        .engine
        .store
        .fhir_applied(&first, "fhir_store#0")
        .await
        .unwrap();
    wf.engine.store.reprocess(&first).await.unwrap();
    wf.engine.wake_scheduler();
    assert_eq!(super::settled(&wf, &first).await, State::Done);
    assert_eq!(
        wf.engine
            .store
            .fhir_applied(&first, "fhir_store#0")
            .await
            .unwrap(),
        before
    );
    assert_eq!(ok(&wf, "/fhir/r4/Observation", &admin()).await["total"], 1);

    // A PUT with the same content writes no version; a changed one writes version 2.
    let report = &ok(&wf, "/fhir/r4/DiagnosticReport", &admin()).await["entry"][0]["resource"];
    let rid = report["id"].as_str().unwrap().to_owned();
    let mut same = report.clone();
    same.as_object_mut().unwrap().remove("meta");
    let put = |r: Value| json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": r, "request": {"method": "PUT", "url": format!("DiagnosticReport/{rid}")}}]});
    assert_eq!(send(&wf, &put(same.clone())).await.1, State::Done);
    assert_eq!(
        ok(&wf, &format!("/fhir/r4/DiagnosticReport/{rid}"), &admin()).await["meta"]["versionId"],
        "1"
    );
    wf.clock.advance(TimeDelta::seconds(5));
    same["status"] = json!("amended");
    assert_eq!(send(&wf, &put(same)).await.1, State::Done);
    let v2 = ok(&wf, &format!("/fhir/r4/DiagnosticReport/{rid}"), &admin()).await;
    assert_eq!(
        (v2["meta"]["versionId"].as_str(), v2["status"].as_str()),
        (Some("2"), Some("amended"))
    );
    assert_eq!(
        ok(
            &wf,
            &format!("/fhir/r4/DiagnosticReport/{rid}/_history/1"),
            &admin()
        )
        .await["status"],
        "final"
    );
    assert_eq!(
        ok(&wf, "/fhir/r4/DiagnosticReport?status=amended", &admin()).await["total"],
        1
    );
    assert_eq!(
        ok(&wf, "/fhir/r4/DiagnosticReport?status=final", &admin()).await["total"],
        0
    );

    // Two Patients with one identifier (created without a condition), then a conditional
    // create on it: the message is dead with the entry named, and nothing was written.
    let plain = |given: &str| json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"resourceType": "Patient", "identifier": [{"system": "urn:x", "value": "DUP-1"}], "name": [{"given": [given]}]}, "request": {"method": "POST", "url": "Patient"}}]});
    send(&wf, &plain("a")).await;
    send(&wf, &plain("b")).await;
    let mut conditional = lab_bundle(
        "DUP-1",
        "ACC-3",
        "2024-03-06",
        &[("718-7", "Hemoglobin", 99.0)],
    );
    conditional["entry"][0]["request"]["ifNoneExist"] = json!("identifier=urn:x|DUP-1");
    let (dead, state) = send(&wf, &conditional).await;
    assert_eq!(state, State::Dead);
    let m = wf.engine.store.get(&dead).await.unwrap().unwrap();
    let reason = m.last_error.unwrap_or_default();
    assert!(
        reason.contains("entry[0]")
            && reason.contains("more than one Patient")
            && reason.contains("FHIR-20"),
        "{reason}"
    );
    assert_eq!(
        ok(&wf, "/fhir/r4/DiagnosticReport?identifier=ACC-3", &admin()).await["total"],
        0
    );
    // A Bundle the model does not read is refused at once, naming the element, not the value.
    let mut bad = lab_bundle("MRN-9", "ACC-9", "2024-03-06", &[]);
    bad["entry"][0]["resource"]["gender"] = json!("robot");
    let (dead, state) = send(&wf, &bad).await;
    assert_eq!(state, State::Dead);
    let reason = wf
        .engine
        .store
        .get(&dead)
        .await
        .unwrap()
        .unwrap()
        .last_error
        .unwrap_or_default();
    assert!(
        reason.contains("entry[0].resource: gender") && !reason.contains("robot"),
        "{reason}"
    );
}

async fn every_search_parameter_paging_and_errors(b: Backend) {
    let Some(wf) = start(b).await else { return };
    send(
        &wf,
        &lab_bundle(
            "MRN-1",
            "A-1",
            "2024-03-05T08:30:00Z",
            &[("718-7", "Hb", 1.0), ("6690-2", "WBC", 2.0)],
        ),
    )
    .await;
    wf.clock.advance(TimeDelta::minutes(1));
    let mark = wf.clock.now();
    send(
        &wf,
        &lab_bundle("MRN-1", "A-2", "2024-04-10", &[("718-7", "Hb", 3.0)]),
    )
    .await;
    let mut other = lab_bundle("MRN-2", "A-3", "2025-01-02", &[("2345-7", "Glucose", 5.0)]);
    other["entry"][0]["resource"]["name"] = json!([{"family": "李", "given": ["娜"]}]);
    other["entry"][0]["resource"]["gender"] = json!("female");
    other["entry"][0]["resource"]["birthDate"] = json!("1980-01-09");
    send(&wf, &other).await;
    let a = integrator();
    let total = |q: &'static str| {
        let wf = &wf;
        let a = a.clone();
        async move {
            ok(wf, &format!("/fhir/r4/{q}"), &a).await["total"]
                .as_u64()
                .unwrap()
        }
    };
    let p1 = subject_id(
        &ok(&wf, "/fhir/r4/DiagnosticReport?identifier=A-1", &a).await["entry"][0]["resource"],
    );
    for (q, n) in [
        ("Observation", 4),
        ("Observation?code=718-7", 2),
        ("Observation?code=http://loinc.org|718-7", 2),
        ("Observation?code=http://loinc.org|", 4),
        ("Observation?code=718-7,2345-7", 3),
        ("Observation?code=http://other|718-7", 0),
        ("Observation?category=laboratory", 4),
        ("Observation?status=final", 4),
        ("Observation?status:missing=false", 4),
        ("Observation?date=2024", 3),
        ("Observation?date=2024-03-05", 2),
        ("Observation?date=ge2024-04-01", 2),
        ("Observation?date=lt2024-04-01", 2),
        ("Observation?date=ge2024-01-01&date=lt2025-01-01", 3),
        ("Observation?date=sa2024-12-31", 1),
        ("Observation?date=eb2024-03-06", 2),
        ("Observation?date=ne2024", 1),
        ("Observation?identifier=A-1-718-7", 1),
        ("Observation?identifier=urn:huizhen:test:obx|A-1-718-7", 1),
        ("DiagnosticReport?category=LAB", 3),
        ("DiagnosticReport?code=58410-2&date=2025", 1),
        ("DiagnosticReport?status=final", 3),
        ("Patient", 2),
        ("Patient?name=张伟", 1),
        ("Patient?name=张", 1),
        ("Patient?family=李", 1),
        ("Patient?given=娜", 1),
        ("Patient?name=王", 0),
        ("Patient?birthdate=1962-05-02", 1),
        ("Patient?birthdate=1980", 1),
        ("Patient?gender=female", 1),
        ("Patient?identifier=MRN-2", 1),
        ("Patient?identifier=urn:oid:1.2.156.112604.1.2.1|", 2),
    ] {
        assert_eq!(total(q).await, n, "{q}");
    }
    for q in [
        format!("Observation?patient={p1}"),
        format!("Observation?subject=Patient/{p1}"),
        format!("DiagnosticReport?patient=Patient/{p1}"),
    ] {
        let n = ok(&wf, &format!("/fhir/r4/{q}"), &a).await["total"]
            .as_u64()
            .unwrap();
        assert!(n >= 2, "{q}: {n}");
    }
    assert_eq!(
        ok(&wf, &format!("/fhir/r4/Patient?_id={p1}"), &a).await["total"],
        1
    );
    let since = huizhen_fhir::facade::index::instant(mark.timestamp_millis());
    assert_eq!(
        ok(
            &wf,
            &format!("/fhir/r4/Observation?_lastUpdated=ge{since}"),
            &a
        )
        .await["total"],
        2
    );
    assert_eq!(
        ok(
            &wf,
            &format!("/fhir/r4/Observation?_lastUpdated=lt{since}"),
            &a
        )
        .await["total"],
        2
    );
    // _include of the report's patient.
    let with = ok(
        &wf,
        "/fhir/r4/DiagnosticReport?identifier=A-3&_include=DiagnosticReport:patient",
        &a,
    )
    .await;
    assert_eq!(ids(&with, "include").len(), 1, "{with}");

    // Paging: _count=2 over four Observations, following next links.
    let mut seen = Vec::new();
    let mut next = Some("/fhir/r4/Observation?_count=2".to_owned());
    let mut pages = 0;
    while let Some(url) = next {
        let page = ok(&wf, &url, &a).await;
        assert_eq!(page["total"], 4);
        seen.extend(ids(&page, "match"));
        next = page["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().unwrap().to_owned());
        pages += 1;
    }
    assert_eq!(pages, 2);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 4, "{seen:?}");

    // Errors: an OperationOutcome naming the parameter.
    for (q, param) in [
        ("Observation?colour=red", "colour"),
        ("Observation?date=yesterday", "date"),
        ("Observation?_include=Observation:performer", "_include"),
        ("Observation?code:fuzzy=1", "code"),
        ("Patient?_sort=name", "_sort"),
    ] {
        let g = fhir(&wf, "GET", &format!("/fhir/r4/{q}"), Some(&a), None, None).await;
        assert_eq!(g.status, 400, "{q}: {}", g.body);
        assert_eq!(g.body["resourceType"], "OperationOutcome");
        assert_eq!(
            g.body["issue"][0]["expression"][0], param,
            "{q}: {}",
            g.body
        );
        huizhen_fhir::facade::model::round_trip(&g.body).unwrap();
    }
    let g = fhir(
        &wf,
        "GET",
        "/fhir/r4/Observation/no-such",
        Some(&a),
        None,
        None,
    )
    .await;
    assert_eq!(
        (g.status, g.body["issue"][0]["code"].as_str()),
        (404, Some("not-found"))
    );
}
