//! Refusals name what to fix: invalid fields (422 with paths), a facility requesting for
//! another, a local doctor requesting in another doctor's name (a coordinator may), invalid
//! transitions (409 with the allowed actions), missing reasons, roles, an
//! unknown action, a stale `If-Match`; refusals are audited.

use huizhen_core::security::Role;
use huizhen_core::store::audit::AuditFilter;
use serde_json::json;

use super::{REQ, doctor, expert, request, start, token};
use crate::support::{Backend, both_backends};

both_backends!(refusals_name_what_to_fix);

async fn refusals_name_what_to_fix(b: Backend) {
    let Some(wf) = start(b).await else { return };
    // Validation: every problem with its field path.
    let mut bad = request(3003);
    bad["attachments"]["studies"] = json!(["1.2.840.01"]);
    bad["case_summary"] = json!(" ");
    let (s, v, _) = wf
        .call("POST", "/api/consultations", &doctor(), Some(bad), None)
        .await;
    assert_eq!(s, 422, "{v}");
    let paths: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["case_summary", "attachments.studies[0]"], "{v}");
    let mut bad = request(3003);
    bad["patient"] = json!("张三");
    let (s, v, _) = wf
        .call("POST", "/api/consultations", &doctor(), Some(bad), None)
        .await;
    assert_eq!(
        (s, v["problems"][0]["path"].as_str()),
        (422, Some("patient")),
        "{v}"
    );
    // A facility requests for itself only.
    let mut other = request(3003);
    other["requesting_facility"] = json!("F-OTHER");
    let (s, _, _) = wf
        .call("POST", "/api/consultations", &doctor(), Some(other), None)
        .await;
    assert_eq!(s, 403);

    // A local doctor asks as themself; a coordinator of the facility on a doctor's behalf.
    let mut theirs = request(3003);
    theirs["requesting_doctor"] = json!("D2");
    let (s, v, _) = wf
        .call(
            "POST",
            "/api/consultations",
            &doctor(),
            Some(theirs.clone()),
            None,
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (403, Some("not-requesting-doctor")),
        "{v}"
    );
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("D1 may not request a consultation as D2"),
        "{v}"
    );
    let denied = wf
        .engine
        .store
        .audit_events(&AuditFilter {
            action: Some("consultation.create".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert!(
        denied.iter().any(|r| r.event.outcome == "denied"
            && r.event.actor == "D1"
            && r.event.detail.contains("as D2")),
        "{denied:?}"
    );
    for coordinator in [
        token(Role::Integrator, "dispatch", REQ),
        token(Role::Admin, "admin", "*"),
    ] {
        let (s, v, _) = wf
            .call(
                "POST",
                "/api/consultations",
                &coordinator,
                Some(theirs.clone()),
                None,
            )
            .await;
        assert_eq!(s, 201, "{v}");
        assert_eq!(v["request"]["requesting_doctor"], "D2", "{v}");
    }

    let id = wf.create(request(3003)).await;
    // 409 with the allowed actions.
    let (s, v) = wf.act(&id, "approve", &doctor(), json!({})).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (409, Some("invalid-transition")),
        "{v}"
    );
    assert_eq!(
        v["allowed"],
        json!([
            "submit",
            "record_consent",
            "attach_physician",
            "record_verification",
            "record_prior_diagnosis",
            "cancel",
            "mark_entered_in_error",
            "repoint_patient"
        ])
    );
    // 422 without a reason (and with a blank one).
    let (s, v) = wf.act(&id, "cancel", &doctor(), json!({})).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (422, Some("missing-reason")),
        "{v}"
    );
    let (s, _) = wf
        .act(&id, "cancel", &doctor(), json!({"reason": "  "}))
        .await;
    assert_eq!(s, 422);
    // Roles: an expert may not submit, a coordinator of another facility may not act.
    let (s, _) = wf.act(&id, "submit", &expert("E1"), json!({})).await;
    assert_eq!(s, 404, "an expert never offered it does not see it");
    let (s, _) = wf
        .act(
            &id,
            "submit",
            &token(Role::Integrator, "c", "F-OTHER"),
            json!({}),
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = wf
        .act(&id, "submit", &token(Role::Auditor, "a", REQ), json!({}))
        .await;
    assert_eq!(s, 403);
    // An unknown action lists the known ones.
    let (s, v) = wf.act(&id, "approve-all", &doctor(), json!({})).await;
    assert_eq!(s, 404);
    assert!(
        v["actions"]
            .as_array()
            .unwrap()
            .contains(&json!("request_report")),
        "{v}"
    );
    // A stale If-Match on any action is a 412.
    let (s, v, _) = wf
        .call(
            "POST",
            &format!("/api/consultations/{id}/submit"),
            &doctor(),
            None,
            Some(7),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (412, Some("version-conflict")),
        "{v}"
    );
    let v = wf
        .ok(&id, "cancel", &doctor(), json!({"reason": "患者转院"}))
        .await;
    assert_eq!(
        (
            v["state"].as_str(),
            v["statusReason"].as_str().or(v["status_reason"].as_str())
        ),
        (Some("cancelled"), Some("患者转院"))
    );
    // Refusals are audited too.
    let audit = wf
        .engine
        .store
        .audit_events(&AuditFilter {
            resource_id: Some(id.clone()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert!(
        audit
            .iter()
            .any(|r| r.event.action == "consultation.cancel" && r.event.outcome == "failed")
    );
    wf.stop().await;
}
