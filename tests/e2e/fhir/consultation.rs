//! A consultation through the facade: Task + ServiceRequest + Encounter (class VR) + the
//! signed opinion's DiagnosticReport + Provenance, moved along FHIR-10 by `PUT Task` under
//! `If-Match` (FHIR-11), the patient's `$everything` as its expert sees it (FHIR-22), and
//! `$match`/`$ihe-pix` over the identity index (IHE-01, IHE-02).

use chrono::TimeDelta;
use huizhen_core::clock::Clock;
use huizhen_core::security::Role;
use huizhen_domain::consultation::{Diagnosis, Opinion, sign_opinion};
use huizhen_domain::expert::IcdCode;
use huizhen_domain::identity::{Demographics, PersonName, normalize};
use serde_json::{Value, json};

use super::{Got, fhir, ids, lab_bundle, ok, send, start};
use crate::consultations::{EXP, REQ, Wf, doctor, expert, offerees, request, seed_registry, token};
use crate::support::{Backend, both_backends};

both_backends!(
    a_consultation_is_a_task_a_service_request_and_an_encounter,
    concurrent_task_accepts_have_one_winner,
);

/// `PUT Task/{id}` with `status`/`businessStatus` (and a reason) under `If-Match`.
async fn put_task(wf: &Wf, id: &str, bearer: &str, version: &str, change: Value) -> Got {
    let mut task = json!({"resourceType": "Task", "id": id, "intent": "order"});
    for (k, v) in change.as_object().unwrap() {
        task[k] = v.clone();
    }
    fhir(
        wf,
        "PUT",
        &format!("/fhir/r4/Task/{id}"),
        Some(bearer),
        Some(task),
        Some(version),
    )
    .await
}

async fn etag(wf: &Wf, id: &str, bearer: &str) -> String {
    let g = fhir(
        wf,
        "GET",
        &format!("/fhir/r4/Task/{id}"),
        Some(bearer),
        None,
        None,
    )
    .await;
    assert_eq!(g.status, 200, "{}", g.body);
    g.etag.unwrap()
}

/// PUT that must succeed; the new Task.
async fn moved(wf: &Wf, id: &str, bearer: &str, change: Value) -> Value {
    let version = etag(wf, id, bearer).await;
    let g = put_task(wf, id, bearer, &version, change.clone()).await;
    assert_eq!(g.status, 200, "{change}: {}", g.body);
    huizhen_fhir::facade::model::round_trip(&g.body).unwrap();
    g.body
}

async fn a_consultation_is_a_task_a_service_request_and_an_encounter(b: Backend) {
    let Some(wf) = start(b).await else { return };
    seed_registry(&wf, 2).await;
    let (_, person) = wf
        .engine
        .store
        .identity_upsert(
            &normalize(&Demographics {
                facility: REQ.into(),
                local_id: "MRN-7731".into(),
                identifiers: vec![],
                names: vec![PersonName::text("李建国")],
                birth_date: Some("1964-05-02".into()),
                sex: None,
                phones: vec!["13912345678".into()],
                addresses: vec![],
            }),
            None,
        )
        .await
        .unwrap();
    // The requesting hospital's lab result for the same patient (its MRN).
    send(
        &wf,
        &lab_bundle(
            "MRN-7731",
            "ACC-77",
            "2024-03-05",
            &[("718-7", "Hb", 130.0)],
        ),
    )
    .await;
    let (id, v) = wf.approved(request(person as u64)).await;
    let e = offerees(&v)[0].clone();
    let other = if e == "E1" { "E2" } else { "E1" };
    let d = doctor();
    let me = expert(&e);

    // Offered: the Task has the expert as owner and the SLA deadline; no session yet.
    let task = ok(&wf, &format!("/fhir/r4/Task/{id}"), &d).await;
    assert_eq!(
        (
            task["status"].as_str(),
            task["businessStatus"]["coding"][0]["code"].as_str()
        ),
        (Some("requested"), Some("offered"))
    );
    assert_eq!(task["owner"]["reference"], format!("PractitionerRole/{e}"));
    assert_eq!(task["for"]["reference"], format!("Patient/person-{person}"));
    assert_eq!(
        task["focus"]["reference"],
        format!("ServiceRequest/cr-{id}")
    );
    assert!(task["restriction"]["period"]["end"].is_string(), "{task}");
    let sr = ok(&wf, &format!("/fhir/r4/ServiceRequest/cr-{id}"), &d).await;
    assert_eq!(
        (
            sr["status"].as_str(),
            sr["intent"].as_str(),
            sr["priority"].as_str()
        ),
        (Some("active"), Some("order"), Some("urgent"))
    );
    assert_eq!(sr["reasonCode"][0]["coding"][0]["code"], "I25.1");
    assert_eq!(
        fhir(
            &wf,
            "GET",
            &format!("/fhir/r4/Encounter/cs-{id}"),
            Some(&d),
            None,
            None
        )
        .await
        .status,
        404
    );

    // FHIR-11: a Task update needs If-Match, and a stale one is 412 with an OperationOutcome.
    let g = fhir(
        &wf,
        "PUT",
        &format!("/fhir/r4/Task/{id}"),
        Some(&me),
        Some(json!({"resourceType": "Task", "id": id, "status": "received"})),
        None,
    )
    .await;
    assert_eq!(g.status, 428, "{}", g.body);
    let g = put_task(&wf, &id, &me, "W/\"1\"", json!({"status": "received"})).await;
    assert_eq!(
        (g.status, g.body["resourceType"].as_str()),
        (412, Some("OperationOutcome")),
        "{}",
        g.body
    );
    let t = moved(&wf, &id, &me, json!({"businessStatus": {"coding": [{"system": "urn:huizhen:fhir:consultation-state", "code": "reviewing"}]}})).await;
    assert_eq!(t["status"], "received");
    // Another expert cannot take it; a stale accept is 412; then it is accepted.
    let version = etag(&wf, &id, &me).await;
    let g = put_task(
        &wf,
        &id,
        &expert(other),
        &version,
        json!({"status": "accepted"}),
    )
    .await;
    assert!(
        matches!(g.status, 403 | 404 | 409 | 412),
        "{}: {}",
        g.status,
        g.body
    );
    let g = put_task(&wf, &id, &me, "W/\"2\"", json!({"status": "accepted"})).await;
    assert_eq!(g.status, 412, "{}", g.body);
    let t = moved(&wf, &id, &me, json!({"status": "accepted"})).await;
    assert_eq!(
        (t["status"].as_str(), t["businessStatus"]["text"].as_str()),
        (Some("accepted"), Some("scheduled"))
    );
    let enc = ok(&wf, &format!("/fhir/r4/Encounter/cs-{id}"), &d).await;
    assert_eq!(
        (enc["status"].as_str(), enc["class"]["code"].as_str()),
        (Some("planned"), Some("VR"))
    );
    assert_eq!(
        enc["class"]["system"],
        "http://terminology.hl7.org/CodeSystem/v3-ActCode"
    );
    // A rejection needs its reason (422), and a transition FHIR-10 does not allow is refused.
    let g = put_task(
        &wf,
        &id,
        &me,
        &etag(&wf, &id, &me).await,
        json!({"status": "completed"}),
    )
    .await;
    assert_eq!(g.status, 409, "{}", g.body);
    assert_eq!(g.body["resourceType"], "OperationOutcome");

    // The gates through the workflow API, then the session through the Task.
    let before = wf.clock.now() - TimeDelta::minutes(1);
    wf.ok(&id, "record_consent", &d, json!({"consent": {"signer": "patient", "document": "DocumentReference/consent-1", "signed_at": before}})).await;
    wf.ok(
        &id,
        "attach-physician",
        &d,
        json!({"physician": {"practitioner": "D1", "licence": "110450000001"}}),
    )
    .await;
    for who in [e.as_str(), "D1"] {
        wf.ok(&id, "record_verification", &d, json!({"verification": {"subject": {"kind": "physician", "practitioner": who}, "method": "ca-certificate", "verified_at": before, "result": "passed", "provider_reference": format!("ca-{who}")}})).await;
    }
    let consent = ok(&wf, &format!("/fhir/r4/Consent/cn-{id}"), &d).await;
    assert_eq!(
        consent["sourceReference"]["reference"],
        "DocumentReference/consent-1"
    );
    assert_eq!(
        ok(
            &wf,
            &format!("/fhir/r4/Consent?patient=person-{person}&status=active"),
            &d
        )
        .await["total"],
        1
    );
    let start = wf.clock.now() + TimeDelta::minutes(5);
    wf.ok(
        &id,
        "schedule",
        &me,
        json!({"appointment": {"start": start, "end": start + TimeDelta::minutes(30)}}),
    )
    .await;
    moved(&wf, &id, &me, json!({"status": "in-progress"})).await;
    let t = moved(
        &wf,
        &id,
        &me,
        json!({"status": "on-hold", "statusReason": {"text": "网络中断"}}),
    )
    .await;
    assert_eq!(t["businessStatus"]["text"], "paused");
    moved(&wf, &id, &me, json!({"status": "in-progress"})).await;
    assert_eq!(
        ok(&wf, &format!("/fhir/r4/Encounter/cs-{id}"), &d).await["status"],
        "in-progress"
    );
    moved(
        &wf,
        &id,
        &me,
        json!({"businessStatus": {"text": "report-pending"}}),
    )
    .await;
    let physician = wf
        .ca
        .issue_physician(
            &e,
            wf.clock.now() - TimeDelta::days(1),
            wf.clock.now() + TimeDelta::days(365),
        )
        .unwrap();
    let opinion = Opinion {
        consultation: id.clone(),
        expert: e.clone(),
        diagnoses: vec![Diagnosis {
            code: IcdCode::parse("I25.1").unwrap(),
            text: "动脉硬化性心脏病".into(),
        }],
        treatment_plan: "冠脉造影".into(),
        advice: "低脂饮食，规律随访".into(),
    };
    let signed = sign_opinion(opinion, &physician.signer().unwrap(), wf.clock.now()).unwrap();
    wf.ok(&id, "sign_opinion", &me, json!({ "signed": signed }))
        .await;
    wf.ok(
        &id,
        "record_local_decision",
        &d,
        json!({"decision": {"outcome": "adopted", "final_diagnoses": ["I25.1"], "note": ""}}),
    )
    .await;
    let t = moved(&wf, &id, &me, json!({"status": "completed"})).await;
    assert_eq!(
        t["output"][0]["valueReference"]["reference"],
        format!("DiagnosticReport/co-{id}")
    );
    assert!(t["executionPeriod"]["end"].is_string(), "{t}");

    // Item 5: the signed opinion as a DiagnosticReport, the session finished, the request done.
    let report = ok(&wf, &format!("/fhir/r4/DiagnosticReport/co-{id}"), &d).await;
    assert_eq!(
        (
            report["status"].as_str(),
            report["code"]["coding"][0]["code"].as_str()
        ),
        (Some("final"), Some("11488-4"))
    );
    assert_eq!(report["conclusionCode"][0]["coding"][0]["code"], "I25.1");
    assert_eq!(
        ok(&wf, &format!("/fhir/r4/Encounter/cs-{id}"), &d).await["status"],
        "finished"
    );
    assert_eq!(
        ok(&wf, &format!("/fhir/r4/ServiceRequest/cr-{id}"), &d).await["status"],
        "completed"
    );
    // vread replays the events: version 1 was the draft.
    let v1 = ok(&wf, &format!("/fhir/r4/Task/{id}/_history/1"), &d).await;
    assert_eq!(
        (v1["status"].as_str(), v1["meta"]["versionId"].as_str()),
        (Some("draft"), Some("1"))
    );

    // Searches over the projections.
    let p = format!("Patient/person-{person}");
    for (q, n) in [
        (format!("Task?patient={p}"), 1),
        (format!("Task?_id={id}"), 1),
        ("Task?status=completed".to_owned(), 1),
        ("Task?status=requested".to_owned(), 0),
        ("Task?business-status=report-signed".to_owned(), 1),
        (format!("Task?owner=PractitionerRole/{e}"), 1),
        (format!("Task?focus=ServiceRequest/cr-{id}"), 1),
        (format!("Task?group-identifier={id}"), 1),
        (
            format!("ServiceRequest?patient={p}&category=consult&priority=urgent"),
            1,
        ),
        (format!("ServiceRequest?performer=PractitionerRole/{e}"), 1),
        ("Encounter?class=VR&status=finished".to_owned(), 1),
        (format!("DiagnosticReport?patient={p}&code=11488-4"), 1),
    ] {
        assert_eq!(
            ok(&wf, &format!("/fhir/r4/{q}"), &d).await["total"],
            n,
            "{q}"
        );
    }
    let with = ok(
        &wf,
        &format!("/fhir/r4/Task?_id={id}&_include=Task:focus&_revinclude=Provenance:target"),
        &d,
    )
    .await;
    let inc = ids(&with, "include");
    assert!(inc.contains(&format!("ServiceRequest/cr-{id}")), "{inc:?}");
    let provenance: Vec<&String> = inc
        .iter()
        .filter(|i| i.starts_with("Provenance/"))
        .collect();
    assert!(provenance.len() >= 15, "{inc:?}");
    let signed_event = with["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["activity"]["coding"][0]["code"] == "opinion_signed")
        .unwrap();
    assert!(
        signed_event["resource"]["signature"][0]["data"].is_string(),
        "{signed_event}"
    );

    // The owner is a PractitionerRole of the registry, at its Organization.
    let with = ok(
        &wf,
        &format!("/fhir/r4/Task?_id={id}&_include=Task:owner"),
        &d,
    )
    .await;
    assert_eq!(ids(&with, "include"), [format!("PractitionerRole/{e}")]);
    let role = ok(&wf, &format!("/fhir/r4/PractitionerRole/{e}"), &d).await;
    assert_eq!(role["organization"]["reference"], "Organization/F-EXP");
    ok(&wf, "/fhir/r4/Organization/F-EXP", &d).await;
    ok(&wf, &format!("/fhir/r4/Practitioner/{e}"), &d).await;
    assert_eq!(
        ok(
            &wf,
            "/fhir/r4/PractitionerRole?specialty=03.02&active=true",
            &d
        )
        .await["total"],
        2
    );
    assert_eq!(
        ok(
            &wf,
            "/fhir/r4/PractitionerRole?organization=F-EXP&role=chief-physician",
            &d
        )
        .await["total"],
        2
    );
    assert_eq!(
        ok(&wf, "/fhir/r4/Organization?name=f-req", &d).await["total"],
        1
    );

    // $everything: the assigned expert gets the case packet (their consultation and the
    // requesting hospital's results); an expert with no consultation of the patient gets 403.
    let all = ok(
        &wf,
        &format!("/fhir/r4/Patient/person-{person}/$everything?_count=100"),
        &me,
    )
    .await;
    let got = ids(&all, "match");
    for want in [
        format!("Task/{id}"),
        format!("DiagnosticReport/co-{id}"),
        format!("Patient/person-{person}"),
    ] {
        assert!(got.contains(&want), "{want} in {got:?}");
    }
    assert!(got.iter().any(|g| g.starts_with("Observation/")), "{got:?}");
    let g = fhir(
        &wf,
        "GET",
        &format!("/fhir/r4/Patient/person-{person}/$everything"),
        Some(&expert(other)),
        None,
        None,
    )
    .await;
    assert_eq!(
        (g.status, g.body["resourceType"].as_str()),
        (403, Some("OperationOutcome")),
        "{}",
        g.body
    );
    let only = ok(
        &wf,
        &format!("/fhir/r4/Patient/person-{person}/$everything?_type=Observation"),
        &d,
    )
    .await;
    assert!(
        ids(&only, "match")
            .iter()
            .all(|i| i.starts_with("Observation/")),
        "{only}"
    );
    // The expert reads the stored results of their patient, and no one else's.
    assert_eq!(ok(&wf, "/fhir/r4/Observation", &me).await["total"], 1);

    // IHE-02 $match and IHE-01 $ihe-pix over the identity index.
    let params = json!({"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": {"resourceType": "Patient", "name": [{"text": "李建国"}], "birthDate": "1964-05-02", "telecom": [{"system": "phone", "value": "13912345678"}]}}]});
    let admin = token(Role::Admin, "admin", "*");
    let g = fhir(
        &wf,
        "POST",
        "/fhir/r4/Patient/$match",
        Some(&admin),
        Some(params),
        None,
    )
    .await;
    assert_eq!(g.status, 200, "{}", g.body);
    huizhen_fhir::facade::model::round_trip(&g.body).unwrap();
    let first = &g.body["entry"][0];
    assert_eq!(first["resource"]["id"], format!("person-{person}"));
    let grade = first["search"]["extension"][0]["valueCode"]
        .as_str()
        .unwrap();
    assert!(
        ["certain", "probable", "possible"].contains(&grade),
        "{grade}"
    );
    let pix = ok(
        &wf,
        "/fhir/r4/Patient/$ihe-pix?sourceIdentifier=urn:huizhen:facility:F-REQ|MRN-7731",
        &admin,
    )
    .await;
    let target = pix["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "targetId")
        .unwrap();
    assert_eq!(
        target["valueReference"]["reference"],
        format!("Patient/person-{person}")
    );
    let g = fhir(
        &wf,
        "GET",
        "/fhir/r4/Patient/$ihe-pix?sourceIdentifier=urn:huizhen:facility:F-REQ|NOPE",
        Some(&admin),
        None,
        None,
    )
    .await;
    assert_eq!(g.status, 404);
    // "Who viewed my record": the reads of the patient are AuditEvents about them.
    let views = ok(
        &wf,
        &format!(
            "/fhir/r4/AuditEvent?patient=Patient/person-{person}&subtype=fhir.everything&agent=D1"
        ),
        &admin,
    )
    .await;
    assert!(views["total"].as_u64().unwrap() >= 1, "{views}");
    assert_eq!(
        views["entry"][0]["resource"]["agent"][0]["who"]["identifier"]["value"],
        "D1"
    );
    let auditor = token(Role::Auditor, "au", "*");
    assert!(
        ok(
            &wf,
            &format!("/fhir/r4/AuditEvent?entity=Task/{id}"),
            &auditor
        )
        .await["total"]
            .as_u64()
            .unwrap()
            > 10
    );
    let person_patient = ok(&wf, &format!("/fhir/r4/Patient/person-{person}"), &admin).await;
    assert_eq!(person_patient["identifier"][0]["value"], "MRN-7731");
}

/// FHIR-11 through the facade: twenty experts of a fan-out accept the same Task version at
/// once with `PUT Task` — exactly one 200, every other one 412 with an OperationOutcome.
async fn concurrent_task_accepts_have_one_winner(b: Backend) {
    let Some(wf) = start(b).await else { return };
    // No registry: the assignment escalates; the coordinator fans out.
    let (id, _) = wf.approved(request(3003)).await;
    let pool: Vec<Value> = (0..20)
        .map(|i| json!({"expert": format!("X{i}"), "facility": EXP}))
        .collect();
    let coordinator = token(Role::Integrator, "dispatch", REQ);
    wf.ok(&id, "fan-out", &coordinator, json!({ "pool": pool }))
        .await;
    let version = etag(&wf, &id, &coordinator).await;
    let accepts = (0..20).map(|i| {
        let wf = &wf;
        let (id, version) = (id.clone(), version.clone());
        async move {
            put_task(
                wf,
                &id,
                &expert(&format!("X{i}")),
                &version,
                json!({"status": "accepted"}),
            )
            .await
        }
    });
    let results = futures::future::join_all(accepts).await;
    let statuses: Vec<u16> = results.iter().map(|g| g.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 412).count(),
        19,
        "{statuses:?}"
    );
    for g in results.iter().filter(|g| g.status == 412) {
        assert_eq!(g.body["resourceType"], "OperationOutcome", "{}", g.body);
        assert_eq!(g.body["issue"][0]["code"], "conflict");
    }
    let task = ok(&wf, &format!("/fhir/r4/Task/{id}"), &coordinator).await;
    assert_eq!(task["status"], "accepted");
}
