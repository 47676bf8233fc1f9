//! What the billing engine tests share: the engine with billing through the stand-in platforms,
//! a consultation walked to its completed report, the settle request.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use huizhen_core::Engine;
use huizhen_core::billing::{
    BillingConfig, CoverageConfig, InsurerConfig, InvoicePlatformConfig, ReconciliationConfig,
};
use huizhen_core::clock::{Clock, FakeClock};
use huizhen_core::security::SecurityConfig;
use huizhen_domain::consultation::{Opinion, sign_opinion};
use huizhen_signing::testca::TestCa;
use serde_json::{Value, json};

use crate::consultations::{SECRET, Wf, doctor, expert, offerees, request, seed_registry};
use crate::support::{JsonApi, TestDb, loaded, serve};

const SCHEDULE: &str = r#"version: 1
facility: F-REQ
province: "45"
mapping_version: "2026.01"
services:
  - service_type: institution-to-institution
    name: 远程会诊
    local_code: HZ-YCHZ-01
    national_code: "003101000010000"
    province_code: "310100001-1"
    by_title: { chief-physician: 250.00 }
agreements:
  - id: AG-1
    invited_share_percent: 60
"#;

pub(super) fn billing_config(db: &TestDb, platform: &str, finance: Option<&str>) -> BillingConfig {
    let file = db.dir.path().join("fees.yaml");
    std::fs::write(&file, SCHEDULE).unwrap();
    let insurer: Box<dyn InsurerConfig> = huizhen_core::config::parse_yaml(
        std::path::Path::new("insurer.yaml"),
        &format!(
            "nhsa:\n  url: {platform}\n  timeout: 500ms\n  mdtrtarea_admvs: \"450100\"\n  opter: HZ-BILLING\n  opter_name: 会诊计费\n"
        ),
    )
    .unwrap();
    let invoices = finance.map(|url| {
        let cfg: Box<dyn InvoicePlatformConfig> = huizhen_core::config::parse_yaml(
            std::path::Path::new("invoices.yaml"),
            &format!("finance-einvoice:\n  url: {url}\n  timeout: 2s\n  agency_code: \"450103\"\n"),
        )
        .unwrap();
        cfg
    });
    BillingConfig {
        institution: "H45010300001".into(),
        institution_name: "某某人民医院".into(),
        schedules: vec![file],
        utc_offset_minutes: 480,
        // The plan's yearly terms the estimate assumes: the patient's usage (the store's books)
        // says what is left of them.
        coverage: CoverageConfig {
            deductible: Some("20.00".into()),
            annual_limit: Some("3000.00".into()),
            ..CoverageConfig::default()
        },
        lease: Duration::from_secs(60),
        resume_interval: Duration::from_secs(3600),
        insurer: Some(insurer),
        reconciliation: Some(ReconciliationConfig {
            // 16:00 UTC: local midnight (+08:00), reconciling the day that ended.
            schedule: "0 0 16 * * *".into(),
            statements: db.dir.path().join("statements"),
        }),
        invoices,
        outbound_pipeline: None,
    }
}

/// The workflow engine with billing through the stand-in at `platform`.
pub(super) async fn start(
    db: TestDb,
    ca: Arc<TestCa>,
    clock: Arc<FakeClock>,
    platform: &str,
) -> Wf {
    start_with(db, ca, clock, platform, None, None).await
}

/// [`start`] with an outbound pipeline for the consultation's events.
pub(super) async fn start_with(
    db: TestDb,
    ca: Arc<TestCa>,
    clock: Arc<FakeClock>,
    platform: &str,
    outbound: Option<&str>,
    finance: Option<&str>,
) -> Wf {
    let roots = db.dir.path().join("ca-roots.pem");
    ca.write_root_pem(&roots).unwrap();
    let mut cfg = loaded(&db, outbound.as_slice());
    if outbound.is_some() {
        cfg.root.workflow.consultations.outbound_pipeline = Some("consultation-events".into());
    }
    cfg.root.workflow.signing_roots = Some(roots);
    cfg.root.billing = Some(billing_config(&db, platform, finance));
    let engine = Engine::start_with_clock(cfg, clock.clone()).await.unwrap();
    let base = serve(
        &engine,
        &SecurityConfig {
            jwt_secret: Some(SECRET.into()),
            ..SecurityConfig::default()
        },
    )
    .await;
    Wf {
        engine,
        api: JsonApi::new(base),
        clock,
        ca,
        db,
    }
}

/// A consultation walked from the request to the completed report; its id.
pub(super) async fn completed(wf: &Wf) -> String {
    completed_from(wf, request(4711)).await
}

pub(super) async fn completed_from(wf: &Wf, request: Value) -> String {
    seed_registry(wf, 1).await;
    let (id, v) = wf.approved(request).await;
    let e = offerees(&v)[0].clone();
    let (_, v, _) = wf
        .call(
            "GET",
            &format!("/api/consultations/{id}"),
            &expert(&e),
            None,
            None,
        )
        .await;
    let version = v["version"].as_u64().unwrap();
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
    let before = wf.clock.now() - TimeDelta::minutes(1);
    wf.ok(&id, "record_consent", &doctor(), json!({"consent": {"signer": "patient", "document": "DocumentReference/consent-1", "signed_at": before}})).await;
    wf.ok(
        &id,
        "attach_physician",
        &doctor(),
        json!({"physician": {"practitioner": "D001", "licence": "110330000001"}}),
    )
    .await;
    for who in [e.as_str(), "D001"] {
        wf.ok(&id, "record_verification", &doctor(), json!({"verification": {"subject": {"kind": "physician", "practitioner": who}, "method": "ca-certificate", "verified_at": before, "result": "passed", "provider_reference": format!("ca-{who}")}})).await;
    }
    wf.ok(&id, "start", &expert(&e), json!({})).await;
    let now = wf.clock.now();
    let opinion: Opinion = serde_json::from_value(json!({
        "consultation": id, "expert": e,
        "diagnoses": [{"code": "I20.0", "text": "不稳定型心绞痛"}],
        "treatment_plan": "阿司匹林 100mg qd", "advice": "复查心电图"
    }))
    .unwrap();
    let physician = wf
        .ca
        .issue_physician(
            "李振华",
            now - TimeDelta::days(1),
            now + TimeDelta::days(365),
        )
        .unwrap();
    let signed = sign_opinion(opinion, &physician.signer().unwrap(), now).unwrap();
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
        json!({"decision": {"outcome": "adopted", "final_diagnoses": ["I20.0"], "note": ""}}),
    )
    .await;
    let v = wf.ok(&id, "complete", &expert(&e), json!({})).await;
    assert_eq!(v["state"], "report-signed", "{v}");
    id
}

pub(super) fn voucher() -> Value {
    json!({"voucher": {"cert_type": "02", "cert_no": "450103199001011234"}})
}

/// The amounts of the pre-settlement the settlement view shows.
pub(super) fn pre(v: &Value) -> Value {
    v["pre_settlement"].clone()
}
