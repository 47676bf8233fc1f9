//! A consultation walked from creation to a signed opinion through the API: the assignment
//! on approval, the facility scope, the version-guarded accept, the gates, the opinion and the
//! local decision, then the timeline, the statistics, the case library and the audit trail.

use chrono::{DateTime, TimeDelta, Utc};
use huizhen_core::clock::Clock;
use huizhen_core::security::Role;
use huizhen_core::store::audit::AuditFilter;
use huizhen_domain::consultation::{Consultation, Diagnosis, Opinion, sign_opinion};
use huizhen_domain::expert::IcdCode;
use huizhen_domain::identity::{Demographics, PersonName, normalize};
use serde_json::json;

use super::{REQ, doctor, expert, offerees, request, seed_registry, start, token};
use crate::support::{Backend, both_backends};

both_backends!(a_consultation_walks_from_request_to_signed_opinion);

async fn a_consultation_walks_from_request_to_signed_opinion(b: Backend) {
    let Some(wf) = start(b).await else { return };
    seed_registry(&wf, 3).await;
    // The patient as the requesting facility knows them: the case library must not keep any of
    // this, though the summary names them.
    let patient = normalize(&Demographics {
        facility: REQ.into(),
        local_id: "MRN-7731".into(),
        identifiers: vec![],
        names: vec![PersonName::text("李建国")],
        birth_date: Some("1964-05-02".into()),
        sex: None,
        phones: vec!["13912345678".into()],
        addresses: vec![],
    });
    let (_, person) = wf
        .engine
        .store
        .identity_upsert(&patient, None)
        .await
        .unwrap();
    let mut req = request(person as u64);
    req["case_summary"] = json!("李建国，男，62岁，反复胸痛3天，电话13912345678，病历号MRN-7731。");
    let (id, v) = wf.approved(req).await;
    // Approval ran the assignment: the best-ranked candidate has the offer, with a deadline
    // 10 minutes out (urgent).
    assert_eq!(v["state"], "offered", "{v}");
    assert_eq!(v["status"], "requested");
    let candidates: Vec<String> = v["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["expert"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(candidates.len(), 3, "{v}");
    let e = candidates[0].clone();
    assert_eq!(offerees(&v), vec![e.clone()]);
    let deadline: DateTime<Utc> =
        serde_json::from_value(v["attempts"][0]["deadline"].clone()).unwrap();
    assert_eq!(deadline, wf.clock.now() + TimeDelta::minutes(10));
    assert!(
        v["match_decision"].is_string(),
        "the match decision is kept"
    );

    // The expert sees it (an offered facility); another facility does not.
    assert_eq!(
        wf.get(&format!("/api/consultations/{id}"), &expert(&e))
            .await
            .0,
        200
    );
    let outsider = token(Role::LocalDoctor, "D9", "F-OTHER");
    assert_eq!(
        wf.get(&format!("/api/consultations/{id}"), &outsider)
            .await
            .0,
        404
    );
    let (_, page) = wf.get("/api/consultations", &outsider).await;
    assert_eq!(page["consultations"].as_array().unwrap().len(), 0, "{page}");
    let (_, page) = wf
        .get(
            "/api/consultations?state=offered&department=03.02",
            &doctor(),
        )
        .await;
    assert_eq!(page["consultations"][0]["id"], id.as_str(), "{page}");
    let (s, _) = wf.get("/api/consultations?state=waiting", &doctor()).await;
    assert_eq!(s, 400);

    wf.ok(&id, "open", &expert(&e), json!({})).await;
    // Three minutes from the request to the acceptance (the statistics read it below).
    wf.clock.advance(TimeDelta::minutes(3));
    // Accept needs the version the expert saw; a stale one is refused; then it wins.
    let (s, v) = wf.act(&id, "accept", &expert(&e), json!({})).await;
    assert_eq!(s, 428, "{v}");
    let (s, v, _) = wf
        .call(
            "POST",
            &format!("/api/consultations/{id}/accept"),
            &expert(&e),
            None,
            Some(1),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (412, Some("version-conflict")),
        "{v}"
    );
    let (_, cur, etag) = wf
        .call(
            "GET",
            &format!("/api/consultations/{id}"),
            &expert(&e),
            None,
            None,
        )
        .await;
    let version = cur["version"].as_u64().unwrap();
    assert_eq!(etag, Some(format!("W/\"{version}\"")));
    let (s, v, _) = wf
        .call(
            "POST",
            &format!("/api/consultations/{id}/accept"),
            &expert(&e),
            None,
            Some(version),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["state"].as_str(), v["status"].as_str()),
        (Some("scheduled"), Some("accepted"))
    );
    assert_eq!(v["accepted_by"], e.as_str());

    // The gates (CN-05, CN-06, CN-11) are named until they are recorded.
    let (s, v) = wf.act(&id, "start", &expert(&e), json!({})).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (409, Some("missing-requirements")),
        "{v}"
    );
    assert_eq!(v["missing"].as_array().unwrap().len(), 3, "{v}");
    let before = wf.clock.now() - TimeDelta::minutes(1);
    wf.ok(&id, "record_consent", &doctor(), json!({"consent": {"signer": "patient", "document": "DocumentReference/consent-1", "signed_at": before}})).await;
    wf.attach_physician(&id).await;
    for who in [e.as_str(), "D1"] {
        wf.ok(&id, "record_verification", &doctor(), json!({"verification": {"subject": {"kind": "physician", "practitioner": who}, "method": "ca-certificate", "verified_at": before, "result": "passed", "provider_reference": format!("ca-{who}")}})).await;
    }
    let start = wf.clock.now() + TimeDelta::minutes(5);
    wf.ok(
        &id,
        "schedule",
        &expert(&e),
        json!({"appointment": {"start": start, "end": start + TimeDelta::minutes(30)}}),
    )
    .await;
    wf.ok(&id, "start", &expert(&e), json!({})).await;
    wf.ok(&id, "pause", &expert(&e), json!({"reason": "网络中断"}))
        .await;
    wf.ok(&id, "resume", &expert(&e), json!({})).await;
    wf.ok(&id, "request-report", &expert(&e), json!({})).await;

    // The signed opinion (CN-21, test CA) and the local doctor's decision (CN-07).
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
    let (s, v) = wf.act(&id, "complete", &expert(&e), json!({})).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (409, Some("missing-requirements")),
        "{v}"
    );
    wf.ok(
        &id,
        "sign_opinion",
        &expert(&e),
        json!({ "signed": signed }),
    )
    .await;
    wf.ok(
        &id,
        "record_local_decision",
        &doctor(),
        json!({"decision": {"outcome": "adopted", "final_diagnoses": ["I25.1"], "note": ""}}),
    )
    .await;
    let v = wf.ok(&id, "complete", &expert(&e), json!({})).await;
    assert_eq!(
        (v["state"].as_str(), v["status"].as_str()),
        (Some("report-signed"), Some("completed"))
    );

    // The whole timeline through the API, with the MATCH-21 milestones.
    assert_eq!(
        wf.events(&id).await,
        [
            "created",
            "submitted",
            "approved",
            "offered",
            "opened",
            "accepted",
            "consent_recorded",
            "physician_attached",
            "verification_recorded",
            "verification_recorded",
            "appointment_booked",
            "started",
            "paused",
            "resumed",
            "report_requested",
            "opinion_signed",
            "local_decision_recorded",
            "completed",
        ]
    );
    let (_, v) = wf.get(&format!("/api/consultations/{id}"), &doctor()).await;
    for m in [
        "created",
        "local_approval",
        "offered",
        "opened",
        "accepted",
        "joined",
        "report_signed",
    ] {
        assert!(v["milestones"][m].is_string(), "milestone {m}: {v}");
    }
    assert_eq!(v["timeline"][12]["reason"], "网络中断");

    // The statistics' facts were written with the events: one consultation, accepted three
    // minutes after the request, completed.
    let day = wf.clock.now().date_naive();
    let (s, stats) = wf
        .get(
            &format!(
                "/api/stats?from={}&to={}",
                day.pred_opt().unwrap(),
                day.succ_opt().unwrap().succ_opt().unwrap()
            ),
            &token(Role::Admin, "admin", "*"),
        )
        .await;
    assert_eq!(s, 200, "{stats}");
    let all = &stats["rows"][0];
    assert_eq!(
        (
            all["volume"].as_u64(),
            all["accepted"].as_u64(),
            all["median_accept_seconds"].as_u64(),
            all["p90_accept_seconds"].as_u64(),
            all["completed"].as_u64(),
            all["sla_breaches"].as_u64(),
        ),
        (Some(1), Some(1), Some(180), Some(180), Some(1), Some(0)),
        "{stats}"
    );

    // The completion put the de-identified case in the library, searchable by its code, with
    // nothing that identifies the patient.
    let (s, cases) = wf.get("/api/cases?icd=I25", &doctor()).await;
    assert_eq!(s, 200, "{cases}");
    let case = &cases["cases"][0];
    assert_eq!(case["case_id"], id.as_str(), "{cases}");
    assert_eq!(case["department"], "03.02");
    assert_eq!(case["diagnoses"], json!(["I25.1"]));
    assert_eq!(case["flags"]["emergency"], true, "an urgent request");
    assert_eq!(case["expert_id"], e.as_str());
    let stored = wf
        .engine
        .store
        .search_cases(&huizhen_domain::case_library::CaseQuery::default(), 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.len(), 1);
    let body = serde_json::to_string(&stored[0]).unwrap();
    for secret in ["李建国", "13912345678", "MRN-7731", "1964-05-02"] {
        assert!(!body.contains(secret), "{secret} stored: {body}");
    }
    assert!(stored[0].summary.contains("[姓名]"), "{body}");

    // The stored events replay to the stored snapshot.
    let history = wf.engine.store.consultation_history(&id).await.unwrap();
    let stored = wf.engine.store.consultation(&id).await.unwrap().unwrap();
    assert_eq!(Consultation::replay(&history).unwrap(), stored.consultation);
    // Every transition is audited, with the actor and role.
    let audit = wf
        .engine
        .store
        .audit_events(&AuditFilter {
            resource_id: Some(id.clone()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let accepted: Vec<_> = audit
        .iter()
        .filter(|r| r.event.action == "consultation.accepted")
        .collect();
    assert_eq!(accepted.len(), 1);
    assert_eq!(
        (
            accepted[0].event.actor.as_str(),
            accepted[0].event.role.as_str()
        ),
        (e.as_str(), "expert")
    );
    assert_eq!(
        audit
            .iter()
            .filter(|r| r.event.action.starts_with("consultation.")
                && r.event.outcome == "success"
                && r.event.action != "consultation.read")
            .count(),
        history.len(),
        "one audit row per event: {:?}",
        audit
            .iter()
            .map(|r| r.event.action.clone())
            .collect::<Vec<_>>()
    );
    wf.stop().await;
}
