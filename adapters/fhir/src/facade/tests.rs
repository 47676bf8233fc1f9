//! The facade's table against the engine's route table, and every kind of resource the facade
//! writes read back through fhir-sdk's model without loss.

use chrono::{TimeDelta, TimeZone, Utc};
use huizhen_core::security::{PUBLIC, ROUTES};
use huizhen_domain::consultation::{Actor, Command, Consultation, Context, Offeree, Role};
use serde_json::{Value, json};

use super::capability::statement;
use super::consult::{encounter, provenance, service_request, task};
use super::model::round_trip;
use super::outcome::Fail;
use super::route_rows;
use super::search::{Entry, SearchRequest, bundle};
use super::table::TABLE;

#[test]
fn every_facade_route_is_in_the_engine_route_table_with_its_action() {
    let rows = route_rows();
    for (method, pattern, action) in &rows {
        match action {
            None => assert!(
                PUBLIC.contains(&pattern.as_str()),
                "{method} {pattern} is not public"
            ),
            Some(a) => assert!(
                ROUTES
                    .iter()
                    .any(|(m, p, x)| m == method && p == pattern && x == a),
                "{method} {pattern} ({}) is not in huizhen_core::security::ROUTES",
                a.name()
            ),
        }
    }
    for (m, p, _) in ROUTES.iter().filter(|r| r.1.starts_with("/fhir/")) {
        assert!(
            rows.iter().any(|(rm, rp, _)| rm == m && rp == p),
            "ROUTES has {m} {p}, which the facade does not mount"
        );
    }
}

#[test]
fn the_capability_statement_lists_exactly_the_routes() {
    let cs = statement("http://h/fhir/r4");
    round_trip(&cs).unwrap();
    assert_eq!(cs["fhirVersion"], "4.0.1");
    let rows = route_rows();
    let resources = cs["rest"][0]["resource"].as_array().unwrap();
    assert_eq!(resources.len(), TABLE.len());
    for r in resources {
        let ty = r["type"].as_str().unwrap();
        let base = format!("/fhir/r4/{ty}");
        let has = |m: &str, p: String| rows.iter().any(|(rm, rp, _)| *rm == m && *rp == p);
        for i in r["interaction"].as_array().unwrap() {
            let ok = match i["code"].as_str().unwrap() {
                "read" => has("GET", format!("{base}/{{id}}")),
                "vread" => has("GET", format!("{base}/{{id}}/_history/{{vid}}")),
                "search-type" => has("GET", base.clone()),
                "update" => has("PUT", format!("{base}/{{id}}")),
                other => panic!("{ty}: interaction {other} has no route"),
            };
            assert!(ok, "{ty}: {i} is listed but not routed");
        }
        for o in r["operation"].as_array().into_iter().flatten() {
            let name = o["name"].as_str().unwrap();
            assert!(
                rows.iter()
                    .any(|(_, p, _)| p.starts_with(&base) && p.ends_with(&format!("${name}"))),
                "{ty}: ${name} is listed but not routed"
            );
        }
        let listed = r["interaction"].as_array().unwrap().len();
        let routed = rows
            .iter()
            .filter(|(_, p, _)| p.starts_with(&format!("{base}/")) || *p == base)
            .filter(|(_, p, _)| !p.contains('$'))
            .count();
        assert_eq!(listed, routed, "{ty}: interactions listed vs routed");
    }
}

fn request() -> Value {
    json!({
        "patient": 7,
        "requesting_facility": "F-REQ",
        "requesting_doctor": "D1",
        "urgency": "urgent",
        "department": "03.02",
        "min_title": "attending",
        "icd10": "I25.1",
        "reason": "胸痛待查",
        "purpose": "明确诊断",
        "case_summary": "男，62岁，反复胸痛3天。",
        "requested_time": {"kind": "as_soon_as_possible"},
        "attachments": {"studies": ["1.2.840.113619.2.55.3.1"]},
        "service_type": "institution-to-institution",
        "agreement": "AG-1"
    })
}

/// A consultation walked to `scheduled` by the domain alone, and its events.
fn accepted() -> (Consultation, Vec<huizhen_domain::consultation::Event>) {
    let t0 = Utc.with_ymd_and_hms(2026, 3, 5, 8, 0, 0).unwrap();
    let doctor = Actor::new("D1", Role::LocalDoctor);
    let desk = Actor::new("desk", Role::Coordinator);
    let expert = Actor::new("E1", Role::Expert);
    let ctx = |a: &'static Actor, min: i64| Context {
        now: t0 + TimeDelta::minutes(min),
        actor: a,
        reason: None,
        plugin: None,
        verifier: None,
        start: None,
    };
    let doctor: &'static Actor = Box::leak(Box::new(doctor));
    let desk: &'static Actor = Box::leak(Box::new(desk));
    let expert: &'static Actor = Box::leak(Box::new(expert));
    let created = Consultation::create(
        "c-1",
        serde_json::from_value(request()).unwrap(),
        &ctx(doctor, 0),
    )
    .unwrap();
    let mut c = Consultation::from_created(&created).unwrap();
    let mut events = vec![created];
    let offer = Command::Offer {
        to: Offeree {
            expert: "E1".into(),
            facility: "F-EXP".into(),
        },
        deadline: t0 + TimeDelta::minutes(20),
    };
    for (cmd, who, min) in [
        (Command::Submit, doctor, 1),
        (Command::Approve, doctor, 2),
        (offer, desk, 3),
        (Command::Open, expert, 4),
    ] {
        let (next, ev) = c.execute(&cmd, &ctx(who, min)).unwrap();
        c = next;
        events.extend(ev);
    }
    let (next, ev) = c
        .execute(
            &Command::Accept {
                expected_version: c.version(),
            },
            &ctx(expert, 5),
        )
        .unwrap();
    events.extend(ev);
    (next, events)
}

#[test]
fn the_consultation_reads_back_through_the_model() {
    let (c, events) = accepted();
    let t = task(&c, 0);
    round_trip(&t).unwrap();
    assert_eq!(t["status"], "accepted");
    assert_eq!(t["businessStatus"]["coding"][0]["code"], "scheduled");
    assert_eq!(t["owner"]["reference"], "PractitionerRole/E1");
    round_trip(&service_request(&c, 0)).unwrap();
    let e = encounter(&c).expect("an accepted consultation has its session");
    round_trip(&e).unwrap();
    assert_eq!(e["class"]["code"], "VR");
    assert_eq!(
        e["class"]["system"],
        "http://terminology.hl7.org/CodeSystem/v3-ActCode"
    );
    for ev in &events {
        round_trip(&provenance(&c, ev)).unwrap();
    }
}

#[test]
fn bundles_and_outcomes_read_back_through_the_model() {
    let (c, _) = accepted();
    let req = SearchRequest {
        count: 1,
        ..SearchRequest::default()
    };
    let b = bundle(
        "http://h/fhir/r4",
        "Task",
        &req,
        3,
        vec![Entry {
            resource: super::context::with_meta(task(&c, 0), 6, 1_700_000_000_250),
            mode: "match",
        }],
    );
    round_trip(&b).unwrap();
    round_trip(&Fail::invalid("colour", "unknown search parameter").outcome()).unwrap();
}

#[test]
fn the_directory_reads_back_through_the_model() {
    use chrono::NaiveDate;
    use huizhen_domain::expert::{
        Expert, IcdCode, Load, Presence, ResponseHistory, Schedule, Title,
    };
    let e = Expert {
        id: "E1".into(),
        name: "王医生".into(),
        facility: "F-EXP".into(),
        departments: vec!["03.02".into()],
        expertise: vec![IcdCode::parse("I25").unwrap()],
        title: Title::Chief,
        independent_practice_since: NaiveDate::from_ymd_opt(2005, 7, 1).unwrap(),
        licence_verified: true,
        registration_active: true,
        multi_site_filings: vec![],
        languages: vec!["zh".into()],
        schedule: Schedule {
            windows: vec![],
            on_call: true,
        },
        presence: Presence::default(),
        load: Load::default(),
        response: ResponseHistory::default(),
    };
    round_trip(&super::directory::practitioner(&e)).unwrap();
    let role = super::directory::practitioner_role(&e);
    round_trip(&role).unwrap();
    assert_eq!(role["organization"]["reference"], "Organization/F-EXP");
    round_trip(&super::directory::organization("F-EXP")).unwrap();
}

#[test]
fn care_consent_and_audit_read_back_through_the_model() {
    use huizhen_core::store::audit::{AuditEvent, AuditRow};
    use huizhen_core::store::care::{StoredBooking, StoredPrescription};
    let booking: huizhen_domain::appointment::Booking = serde_json::from_value(json!({
        "id": "b1", "consultation_id": "c-1", "expert_id": "E1", "patient_id": "7",
        "start": "2026-03-05T09:00:00Z", "end": "2026-03-05T09:30:00Z", "urgency": "urgent",
        "status": "cancelled", "booked_at": "2026-03-05T08:00:00Z",
        "cancellation": {"by": "D1", "reason": "改期", "at": "2026-03-05T08:10:00Z"}
    }))
    .unwrap();
    let a = super::care::appointment(&StoredBooking {
        booking,
        facility: "F-REQ".into(),
    });
    round_trip(&a).unwrap();
    assert_eq!(
        (
            a["status"].as_str(),
            a["participant"][1]["actor"]["reference"].as_str()
        ),
        (Some("cancelled"), Some("Patient/person-7"))
    );
    let rx: huizhen_domain::prescription::Prescription = serde_json::from_value(json!({
        "id": "rx1", "consultation_id": "c-1", "patient_id": "7", "state": "active",
        "prescriber": {"id": "E1", "role": "expert"}, "drafted_at": "2026-03-05T10:00:00Z",
        "lines": [{"drug_code": "X01", "drug_name": "阿司匹林肠溶片", "dose": "100", "dose_unit": "mg",
                   "route": "oral", "frequency": "qd", "days": 30, "quantity": 30, "quantity_unit": "片"}]
    }))
    .unwrap();
    let stored = StoredPrescription {
        prescription: rx,
        facility: "F-EXP".into(),
        pending_signature: None,
        created_at: 0,
        updated_at: 0,
    };
    let meds = super::care::medication_requests(&stored);
    assert_eq!(meds.len(), 1);
    round_trip(&meds[0]).unwrap();
    assert_eq!(meds[0]["id"], "rx1-1");
    let row = AuditRow {
        seq: 42,
        at: 1_772_700_000_000,
        event: AuditEvent {
            actor: "D1".into(),
            role: "local-doctor".into(),
            facility: "F-REQ".into(),
            action: "fhir.read".into(),
            resource_type: "Patient".into(),
            resource_id: "7".into(),
            outcome: "success".into(),
            source: "127.0.0.1:5000".into(),
            purpose: "TREAT".into(),
            detail: String::new(),
            subject_facility: String::new(),
        },
        prev_hash: String::new(),
        hash: String::new(),
        mac: String::new(),
    };
    let e = super::audit::audit_event(&row);
    round_trip(&e).unwrap();
    assert_eq!(
        (
            e["action"].as_str(),
            e["entity"][0]["what"]["reference"].as_str()
        ),
        (Some("R"), Some("Patient/person-7"))
    );
}

#[test]
fn the_consent_reads_back_through_the_model() {
    let (c, _) = accepted();
    let t0 = Utc.with_ymd_and_hms(2026, 3, 5, 8, 10, 0).unwrap();
    let doctor = Actor::new("D1", Role::LocalDoctor);
    let cmd: Command = serde_json::from_value(json!({"action": "record_consent", "consent": {"signer": "guardian", "document": "DocumentReference/consent-1", "signed_at": "2026-03-05T08:09:00Z", "not_suitable_to_inform_patient": true}})).unwrap();
    let ctx = Context {
        now: t0,
        actor: &doctor,
        reason: None,
        plugin: None,
        verifier: None,
        start: None,
    };
    let (c, _) = c.execute(&cmd, &ctx).unwrap();
    let consent = super::consult::consent(&c).expect("recorded");
    round_trip(&consent).unwrap();
    assert_eq!(
        consent["sourceReference"]["reference"],
        "DocumentReference/consent-1"
    );
    assert_eq!(consent["patient"]["reference"], "Patient/person-7");
}
