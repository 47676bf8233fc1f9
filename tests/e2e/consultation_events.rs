//! The consultation's notices through the demo's pipelines (issue 15 item 6), on SQLite and
//! PostgreSQL: an urgent request nobody in the registry can take is escalated to the duty
//! coordinator at approval, and the `consultation.escalated` notice reaches the demo's
//! `coordinator-alerts` pipeline (where a deployment hands it to an SMS or phone gateway)
//! through `consultation-events`, with no patient data in it. The signed opinion's way to the
//! HIS is in `hl7_consultation.rs`.

use std::time::Duration;

use huizhen_core::message::State;
use huizhen_core::store::ListFilter;
use serde_json::{Value, json};

use crate::hl7_consultation::{doctor, free_port, start_demo};
use crate::support::{Backend, both_backends, wait_for};

both_backends!(an_escalation_reaches_the_coordinator_alerts);

async fn an_escalation_reaches_the_coordinator_alerts(b: Backend) {
    let Some(wf) = start_demo(b, free_port(), free_port()).await else {
        return;
    };
    // A department no expert of demo/experts.yaml practises: the assignment finds nobody.
    let (s, v, _) = wf
        .call(
            "POST",
            "/api/consultations",
            &doctor(),
            Some(json!({
            "patient": 7, "requesting_facility": "demo-clinic", "requesting_doctor": "D001",
            "urgency": "urgent", "department": "05.01", "min_title": "attending",
            "reason": "皮疹待查", "purpose": "明确诊断", "case_summary": "皮疹两周。",
            "requested_time": {"kind": "as_soon_as_possible"},
            "service_type": "institution-to-institution", "agreement": "AG-DEMO-1"
            })),
            None,
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    wf.ok(&id, "submit", &doctor(), json!({})).await;
    let v = wf.ok(&id, "approve", &doctor(), json!({})).await;
    assert_eq!(v["state"], "pending-match", "{v}");
    assert_eq!(
        v["timeline"].as_array().unwrap().last().unwrap()["event"],
        "escalated"
    );
    let store = wf.engine.store.clone();
    let alert = wait_for("the alert", Duration::from_secs(20), || {
        let store = store.clone();
        async move {
            let page = store
                .list(&ListFilter {
                    pipeline: Some("coordinator-alerts".into()),
                    ..ListFilter::default()
                })
                .await
                .unwrap();
            let m = page.messages.into_iter().next()?;
            (m.state == State::Done).then_some(m)
        }
    })
    .await;
    assert_eq!(
        alert.headers.get("x-huizhen-event").map(String::as_str),
        Some("consultation.escalated")
    );
    let m = store.get(&alert.id).await.unwrap().unwrap();
    let body: Value = serde_json::from_slice(&m.body).unwrap();
    assert_eq!(body["consultation_id"], id.as_str());
    assert_eq!(body["escalated_to"], "duty-coordinator");
    assert_eq!(
        (body["urgency"].as_str(), body["department"].as_str()),
        (Some("urgent"), Some("05.01"))
    );
    for phi in ["patient", "case_summary", "reason_for_study"] {
        assert!(body.get(phi).is_none(), "{phi} in a notice: {body}");
    }
    let (_, v) = wf.get(&format!("/api/consultations/{id}"), &doctor()).await;
    assert_eq!(v["outbound"][0]["topic"], "consultation.escalated", "{v}");
    assert!(v["outbound"][0]["sent_at"].is_number(), "{v}");
    wf.stop().await;
}
