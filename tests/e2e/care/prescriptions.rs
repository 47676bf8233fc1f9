//! The pharmacist gate end to end through the API (CN-20, CN-21): draft → sign → submit → a
//! non-pharmacist cannot approve → the pharmacist approves → active → the outbound event is in
//! the journal → the logistics partner reports dispatched and delivered; a duplicate callback
//! changes nothing, a late one is recorded and ignored, an impossible one is 409 naming the
//! state. A controlled drug is refused with its line; a service token (API key) and a
//! coordinator's token cannot draft.

use std::time::Duration;

use chrono::Utc;
use huizhen_core::config::workflow::WorkflowConfig;
use huizhen_core::security::Role;
use serde_json::{Value, json};

use super::{Api, audited, token};
use crate::support::{Backend, both_backends, wait_for};

both_backends!(pharmacist_gate_and_delivery_callbacks);

const OUT: &str = "version: 1\nname: rx-out\nfacility: H-CITY-1\nsource:\n  http: { path: /in/rx-out, kind: json }\nsinks:\n  - journal: {}\n";

fn workflow() -> WorkflowConfig {
    let mut w = WorkflowConfig::default();
    w.prescriptions.deny.name_contains = vec!["吗啡".into(), "芬太尼".into()];
    w.prescriptions.deny.categories = vec!["麻醉药品".into()];
    w.prescriptions.outbound_pipeline = Some("rx-out".into());
    w
}

fn line(code: &str, name: &str) -> Value {
    json!({
        "drug_code": code, "drug_name": name, "dose": "20", "dose_unit": "mg",
        "route": "oral", "frequency": "qd", "days": 14, "quantity": 2, "quantity_unit": "盒"
    })
}

fn draft(id: &str, lines: Vec<Value>) -> Value {
    json!({ "id": id, "consultation_id": "c-100", "patient_id": "P-4711", "lines": lines })
}

fn signature(signer: &str) -> Value {
    json!({
        "algorithm": "ecdsa-p256-sha256", "value": "30440220aa", "certificate_chain": ["3082010a"],
        "signed_at": Utc::now(), "signer": signer
    })
}

fn callback(event_id: &str, status: &str, occurred_at: chrono::DateTime<Utc>) -> Value {
    json!({ "event_id": event_id, "status": status, "occurred_at": occurred_at, "tracking": "SF1234567" })
}

async fn pharmacist_gate_and_delivery_callbacks(backend: Backend) {
    let Some(api) = Api::start(backend, workflow(), &[OUT]).await else {
        return;
    };
    let store = api.engine.store.clone();
    let expert = token("e-1", Role::Expert, "H-CITY-1");
    let other_expert = token("e-2", Role::Expert, "H-CITY-1");
    let pharmacist = token("ph-1", Role::Pharmacist, "H-CITY-1");
    let far_pharmacist = token("ph-9", Role::Pharmacist, "H-FAR");
    let logistics = token("sf-express", Role::Logistics, "*");

    // A controlled drug is refused, naming the line (CN-20).
    let (st, v) = api
        .post(
            "/api/prescriptions",
            &expert,
            draft(
                "rx-m",
                vec![line("A1", "阿托伐他汀钙片"), line("N2", "盐酸吗啡缓释片")],
            ),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    assert_eq!(v["code"], "controlled_drug");
    assert_eq!(v["line"], 1);
    assert_eq!(v["field"], "lines[1]");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("lines[1] `盐酸吗啡缓释片`"),
        "{v}"
    );
    let mut by_category = line("N3", "某镇痛注射液");
    by_category["category"] = json!("麻醉药品");
    let (st, v) = api
        .post(
            "/api/prescriptions",
            &expert,
            draft("rx-m", vec![by_category]),
        )
        .await;
    assert_eq!((st, v["line"].clone()), (422, json!(0)), "{v}");

    // A service credential (API key, even one naming a physician role) cannot prescribe: the
    // domain refuses an automated actor (CN-20). A coordinator's token is kept out by the route.
    let (key, row) = huizhen_core::security::new_api_key("his-bridge", Role::Expert, "H-CITY-1");
    store.create_api_key(&row).await.unwrap();
    let (st, v) = api
        .post(
            "/api/prescriptions",
            &key,
            draft("rx-k", vec![line("A1", "阿托伐他汀钙片")]),
        )
        .await;
    assert_eq!(st, 403, "{v}");
    assert_eq!(v["code"], "automated");
    assert!(v["error"].as_str().unwrap().contains("CN-20"), "{v}");
    let (st, _) = api
        .post(
            "/api/prescriptions",
            &token("coord", Role::Integrator, "H-CITY-1"),
            draft("rx-k", vec![line("A1", "阿托伐他汀钙片")]),
        )
        .await;
    assert_eq!(st, 403);
    let (st, _) = api.get("/api/prescriptions/rx-k", &pharmacist).await;
    assert_eq!(st, 404, "nothing was drafted");

    // Draft, revise, sign, submit.
    let (st, v) = api
        .post(
            "/api/prescriptions",
            &expert,
            draft("rx-1", vec![line("A1", "阿托伐他汀钙片")]),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(
        (v["state"].as_str(), v["version"].as_u64()),
        (Some("draft"), Some(1))
    );
    let (st, _) = api
        .post(
            "/api/prescriptions",
            &expert,
            draft("rx-1", vec![line("A1", "阿托伐他汀钙片")]),
        )
        .await;
    assert_eq!(st, 409, "the id is taken");
    let (st, v) = api
        .post(
            "/api/prescriptions/rx-1/revise",
            &other_expert,
            json!({ "lines": [line("A2", "阿司匹林肠溶片")] }),
        )
        .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (403, Some("not_prescriber")),
        "{v}"
    );
    let (st, v) = api
        .post(
            "/api/prescriptions/rx-1/revise",
            &expert,
            json!({ "lines": [line("A1", "阿托伐他汀钙片"), line("A2", "阿司匹林肠溶片")] }),
        )
        .await;
    assert_eq!((st, v["version"].as_u64()), (200, Some(2)), "{v}");
    let (st, v) = api
        .post("/api/prescriptions/rx-1/approve", &pharmacist, json!({}))
        .await;
    assert_eq!(st, 409, "not submitted yet: {v}");
    assert_eq!(v["state"], "draft");
    assert_eq!(v["allowed"], json!(["revise", "submit", "cancel"]));
    let (st, v) = api
        .post("/api/prescriptions/rx-1/submit", &expert, json!({}))
        .await;
    assert_eq!(
        (st, v["field"].as_str()),
        (422, Some("signature")),
        "no signature: {v}"
    );
    let (st, v) = api
        .post(
            "/api/prescriptions/rx-1/sign",
            &expert,
            json!({ "signature": signature("Dr E-1") }),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["signature_pending"], true);
    assert_eq!(v["state"], "draft");
    let (st, v) = api
        .post(
            "/api/prescriptions/rx-1/submit",
            &expert,
            json!({ "version": 1 }),
        )
        .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (412, Some("version")),
        "a stale version: {v}"
    );
    let (st, v) = api
        .post("/api/prescriptions/rx-1/submit", &expert, json!({}))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["state"], "pending-review");
    assert_eq!(v["review"]["task_id"], "rx-1/pharmacist-review");

    // The pharmacist's queue; a pharmacist of another facility sees nothing of it.
    let (_, v) = api
        .get("/api/prescriptions?state=pending-review", &pharmacist)
        .await;
    let ids: Vec<&str> = v["prescriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["rx-1"]);
    let (_, v) = api
        .get("/api/prescriptions?state=pending-review", &far_pharmacist)
        .await;
    assert!(v["prescriptions"].as_array().unwrap().is_empty(), "{v}");
    let (st, _) = api
        .get("/api/prescriptions?state=waiting", &pharmacist)
        .await;
    assert_eq!(st, 400);

    // Only a pharmacist approves (and only one who may change it).
    let (st, v) = api
        .post("/api/prescriptions/rx-1/approve", &expert, json!({}))
        .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (403, Some("role_not_allowed")),
        "{v}"
    );
    let (st, _) = api
        .post(
            "/api/prescriptions/rx-1/approve",
            &far_pharmacist,
            json!({}),
        )
        .await;
    assert_eq!(st, 404, "outside the scope");
    let (st, _) = api
        .post("/api/prescriptions/rx-1/approve", &logistics, json!({}))
        .await;
    assert_eq!(st, 403, "the logistics role acts on deliveries only");
    // A delivery before approval is impossible (409, naming the state).
    let (st, v) = api
        .post(
            "/api/prescriptions/rx-1/delivery",
            &logistics,
            callback("ev-0", "dispatched", Utc::now()),
        )
        .await;
    assert_eq!(
        (st, v["code"].as_str(), v["state"].as_str()),
        (409, Some("not_active"), Some("pending-review")),
        "{v}"
    );
    let (st, v) = api
        .post(
            "/api/prescriptions/rx-1/approve",
            &pharmacist,
            json!({ "note": "剂量合适" }),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["state"], "active");
    assert_eq!(v["review"]["pharmacist"], "ph-1");

    // The outbound event is in the journal of `rx-out`, once.
    let message_id = wait_for(
        "the outbound event to be journaled",
        Duration::from_secs(10),
        || {
            let store = store.clone();
            async move {
                let e = store.outbox_of("rx-1").await.ok()?.into_iter().next()?;
                e.message_id
            }
        },
    )
    .await;
    let m = store.get(&message_id).await.unwrap().unwrap();
    assert_eq!(
        (m.pipeline.as_str(), m.kind.as_str(), m.source.as_str()),
        ("rx-out", "json", "workflow:prescription")
    );
    assert_eq!(m.facility, "H-CITY-1");
    let body: Value = serde_json::from_slice(&m.body).unwrap();
    assert_eq!(body["event"], "prescription.approved");
    assert_eq!(body["prescription"]["id"], "rx-1");
    assert_eq!(body["approved_by"], "ph-1");
    assert_eq!(store.outbox_of("rx-1").await.unwrap().len(), 1);

    // Delivery callbacks: only the logistics partner; dispatched, delivered.
    let t0 = Utc::now();
    let (st, _) = api
        .post(
            "/api/prescriptions/rx-1/delivery",
            &pharmacist,
            callback("ev-1", "dispatched", t0),
        )
        .await;
    assert_eq!(st, 403);
    let (st, v) = api
        .post(
            "/api/prescriptions/rx-1/delivery",
            &logistics,
            callback("ev-1", "dispatched", t0),
        )
        .await;
    assert_eq!(
        (
            st,
            v["result"].as_str(),
            v["prescription"]["state"].as_str()
        ),
        (200, Some("recorded"), Some("dispatched")),
        "{v}"
    );
    let t1 = t0 + chrono::Duration::hours(20);
    let (st, v) = api
        .post(
            "/api/prescriptions/rx-1/delivery",
            &logistics,
            callback("ev-2", "delivered", t1),
        )
        .await;
    assert_eq!(
        (st, v["prescription"]["state"].as_str()),
        (200, Some("delivered")),
        "{v}"
    );
    let version = v["prescription"]["version"].as_u64().unwrap();
    // The same callback again: 200, nothing changes.
    let (st, v) = api
        .post(
            "/api/prescriptions/rx-1/delivery",
            &logistics,
            callback("ev-2", "delivered", t1),
        )
        .await;
    assert_eq!(
        (st, v["result"].as_str(), v["changed"].as_bool()),
        (200, Some("duplicate"), Some(false)),
        "{v}"
    );
    assert_eq!(v["prescription"]["version"].as_u64(), Some(version));
    // A late one (dispatched again, from before the delivery): recorded, the state unchanged.
    let (st, v) = api
        .post(
            "/api/prescriptions/rx-1/delivery",
            &logistics,
            callback("ev-3", "dispatched", t0 + chrono::Duration::hours(1)),
        )
        .await;
    assert_eq!(
        (st, v["result"].as_str(), v["changed"].as_bool()),
        (200, Some("late"), Some(false)),
        "{v}"
    );
    assert_eq!(v["prescription"]["state"], "delivered");
    assert_eq!(v["prescription"]["notes"].as_array().unwrap().len(), 1);
    // A malformed callback names the field.
    let (st, v) = api
        .post(
            "/api/prescriptions/rx-1/delivery",
            &logistics,
            json!({ "event_id": "ev-4", "status": "lost", "occurred_at": t1 }),
        )
        .await;
    assert_eq!(st, 422);
    assert!(v["error"].as_str().unwrap().contains("status"), "{v}");

    // The history: every event with its version, and the canonical form that was signed.
    let (st, v) = api.get("/api/prescriptions/rx-1", &pharmacist).await;
    assert_eq!(st, 200);
    let kinds: Vec<&str> = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "drafted",
            "revised",
            "submitted",
            "approved",
            "delivery-recorded",
            "delivery-recorded",
            "callback-noted"
        ]
    );
    let versions: Vec<u64> = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7]);
    assert!(
        v["canonical"]
            .as_str()
            .unwrap()
            .starts_with("huizhen-prescription/1\nid:4:rx-1\n")
    );
    assert_eq!(v["outbound"][0]["topic"], "prescription.approved");

    // A rejection needs a reason; a cancelled draft cannot be submitted.
    let (st, _) = api
        .post(
            "/api/prescriptions",
            &expert,
            draft("rx-2", vec![line("A1", "阿托伐他汀钙片")]),
        )
        .await;
    assert_eq!(st, 201);
    api.post(
        "/api/prescriptions/rx-2/submit",
        &expert,
        json!({ "signature": signature("Dr E-1") }),
    )
    .await;
    let (st, v) = api
        .post("/api/prescriptions/rx-2/reject", &pharmacist, json!({}))
        .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (422, Some("missing_reason")),
        "{v}"
    );
    let (st, v) = api
        .post(
            "/api/prescriptions/rx-2/reject",
            &pharmacist,
            json!({ "reason": "重复用药" }),
        )
        .await;
    assert_eq!((st, v["state"].as_str()), (200, Some("rejected")), "{v}");
    assert!(
        store.outbox_of("rx-2").await.unwrap().is_empty(),
        "a rejection is not announced"
    );
    let (st, v) = api
        .post("/api/prescriptions/rx-2/frobnicate", &expert, json!({}))
        .await;
    assert_eq!(st, 404, "{v}");

    // Six pharmacists approve at once: one approval, one outbound event; the others find it
    // active (409) when they decide again.
    let (st, _) = api
        .post(
            "/api/prescriptions",
            &expert,
            draft("rx-3", vec![line("A1", "阿托伐他汀钙片")]),
        )
        .await;
    assert_eq!(st, 201);
    let (st, _) = api
        .post(
            "/api/prescriptions/rx-3/submit",
            &expert,
            json!({ "signature": signature("Dr E-1") }),
        )
        .await;
    assert_eq!(st, 200);
    let tokens: Vec<String> = (0..6)
        .map(|i| token(&format!("ph-{i}"), Role::Pharmacist, "H-CITY-1"))
        .collect();
    let approvals = tokens.iter().map(|t| async {
        api.post("/api/prescriptions/rx-3/approve", t, json!({}))
            .await
            .0
    });
    let mut statuses = futures::future::join_all(approvals).await;
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409, 409, 409, 409, 409]);
    let history = store.prescription_history("rx-3").await.unwrap();
    let approved = history
        .iter()
        .filter(|e| {
            matches!(
                e.event,
                huizhen_domain::prescription::PrescriptionEvent::Approved { .. }
            )
        })
        .count();
    assert_eq!((approved, history.len()), (1, 3));
    assert_eq!(store.outbox_of("rx-3").await.unwrap().len(), 1);

    // With a signature verifier in the engine (CN-21), a submission's signature must verify
    // over the canonical form the prescriber was shown.
    api.engine
        .extensions
        .get_or_try_init(|| {
            Ok::<_, std::convert::Infallible>(huizhen_core::care::PrescriptionSignatures(
                std::sync::Arc::new(DigestVerifier),
            ))
        })
        .unwrap();
    let (st, _) = api
        .post(
            "/api/prescriptions",
            &expert,
            draft("rx-4", vec![line("A1", "阿托伐他汀钙片")]),
        )
        .await;
    assert_eq!(st, 201);
    let (st, v) = api
        .post(
            "/api/prescriptions/rx-4/submit",
            &expert,
            json!({ "signature": signature("Dr E-1") }),
        )
        .await;
    assert_eq!((st, v["code"].as_str()), (422, Some("signature")), "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("does not match"),
        "{v}"
    );
    let (_, v) = api.get("/api/prescriptions/rx-4", &expert).await;
    let canonical = v["canonical"].as_str().unwrap().to_owned();
    let mut good = signature("Dr E-1");
    good["value"] = json!(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        canonical.as_bytes()
    )));
    let (st, v) = api
        .post(
            "/api/prescriptions/rx-4/submit",
            &expert,
            json!({ "signature": good }),
        )
        .await;
    assert_eq!(
        (st, v["state"].as_str()),
        (200, Some("pending-review")),
        "{v}"
    );

    // Patient data is sealed at rest; every change and refusal is audited; the chain holds.
    let pool = sqlx::AnyPool::connect(&api.db.url).await.unwrap();
    let bodies: Vec<String> = sqlx::query_scalar("SELECT body FROM prescription_events")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(!bodies.is_empty());
    assert!(
        bodies
            .iter()
            .all(|b| !b.contains("P-4711") && !b.contains("阿托伐他汀")),
        "sealed"
    );
    pool.close().await;
    let approvals = audited(&store, "prescription.approve").await;
    assert!(
        approvals.iter().any(|(o, id, d)| o == "success"
            && id == "rx-1"
            && d.contains("pending-review → active")),
        "{approvals:?}"
    );
    assert!(
        approvals
            .iter()
            .any(|(o, _, d)| o == "denied" && d.contains("expert")),
        "{approvals:?}"
    );
    let drafts = audited(&store, "prescription.draft").await;
    assert!(
        drafts
            .iter()
            .any(|(o, _, d)| o == "denied" && d.contains("CN-20")),
        "{drafts:?}"
    );
    // ev-0 (not active), the pharmacist's (denied by the route), ev-1, ev-2, ev-2 again, ev-3.
    assert_eq!(
        audited(&store, "prescription.delivery").await.len(),
        6,
        "every callback, refused ones too"
    );
    let report = store.verify_audit().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    api.stop().await;
}

/// Accepts a signature whose value is the SHA-256 of the document (a stand-in for a CA-backed
/// verifier).
struct DigestVerifier;

impl huizhen_domain::signature::SignatureVerifier for DigestVerifier {
    fn verify(
        &self,
        document: &[u8],
        signature: &huizhen_domain::signature::Signature,
    ) -> Result<String, huizhen_domain::signature::SignatureError> {
        use sha2::Digest;
        if signature.value[..] == sha2::Sha256::digest(document)[..] {
            Ok(signature.signer.clone())
        } else {
            Err(huizhen_domain::signature::SignatureError::Mismatch)
        }
    }
}
