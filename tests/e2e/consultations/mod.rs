//! The consultation workflow through the real router, store and workflow service (issue 15),
//! on SQLite and PostgreSQL: a consultation walked from creation to a signed opinion with the
//! timeline read back through the API; 50 experts accepting one fan-out at once (exactly one
//! 200, 49 × 412 "the case is taken"); invalid transitions (409 with the allowed actions),
//! missing reasons and invalid fields (422 with paths); the facility scope. The SLA sweep,
//! restarts, the live stream and patient merges are in `consultation_sla.rs`.
//!
//! This file holds what the tests share (the engine on a fake clock behind the real router,
//! tokens, the request, the registry); each test module is one seam of the workflow.

mod accept_race;
mod china;
mod no_show;
mod refusals;
mod regulator;
mod rekey;
mod reoffer;
mod walk;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use huizhen_core::Engine;
use huizhen_core::clock::FakeClock;
use huizhen_core::security::{Role, SecurityConfig};
use huizhen_domain::expert::{
    Agreement, AgreementKind, Expert, IcdCode, Load, Presence, ResponseHistory, Schedule, Title,
};
use huizhen_signing::testca::TestCa;
use serde_json::{Value, json};

use crate::support::{Backend, JsonApi, TestDb, fresh_db, loaded, serve};

pub(crate) const SECRET: &str = "e2e-consultation-secret-0123456789abcdef";
pub(crate) const REQ: &str = "F-REQ";
pub(crate) const EXP: &str = "F-EXP";

/// A bearer token for `sub` in `role` at `facility`.
pub(crate) fn token(role: Role, sub: &str, facility: &str) -> String {
    huizhen_core::security::issue_from_config(
        &SecurityConfig {
            jwt_secret: Some(SECRET.into()),
            ..SecurityConfig::default()
        },
        sub,
        role,
        facility,
        Duration::from_secs(3600),
    )
    .unwrap()
    .token
}

pub(crate) fn doctor() -> String {
    token(Role::LocalDoctor, "D1", REQ)
}

pub(crate) fn expert(id: &str) -> String {
    token(Role::Expert, id, EXP)
}

/// An engine on a fake clock, served on a free port with the real router and security, with a
/// test CA whose root `workflow.signing_roots` trusts.
/// The API calls go through [`JsonApi`] (`wf.get`, `wf.base`, `wf.client`).
pub(crate) struct Wf {
    pub engine: Engine,
    pub api: JsonApi,
    pub clock: Arc<FakeClock>,
    pub ca: Arc<TestCa>,
    pub db: TestDb,
}

/// The start of every test's fake time: now, to the second (tokens and certificates are
/// checked against the real clock).
pub(crate) fn t0() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp(now.timestamp(), 0).unwrap()
}

pub(crate) async fn start(b: Backend) -> Option<Wf> {
    let db = fresh_db(b).await?;
    let ca = Arc::new(TestCa::generate("Huizhen E2E CA").unwrap());
    Some(start_on(db, ca, Arc::new(FakeClock::new(t0())), &[]).await)
}

pub(crate) async fn start_on(
    db: TestDb,
    ca: Arc<TestCa>,
    clock: Arc<FakeClock>,
    pipelines: &[&str],
) -> Wf {
    start_configured(db, ca, clock, pipelines, |_| {}).await
}

/// [`start_on`] with the workflow's settings changed by `configure` first.
pub(crate) async fn start_configured(
    db: TestDb,
    ca: Arc<TestCa>,
    clock: Arc<FakeClock>,
    pipelines: &[&str],
    configure: impl FnOnce(&mut huizhen_core::workflow::WorkflowConfig),
) -> Wf {
    let roots = db.dir.path().join("ca-roots.pem");
    ca.write_root_pem(&roots).unwrap();
    let mut cfg = loaded(&db, pipelines);
    cfg.root.workflow.signing_roots = Some(roots);
    configure(&mut cfg.root.workflow);
    let engine = Engine::start_with_clock(cfg, clock.clone()).await.unwrap();
    engine
        .store
        .upsert_experts(&[], &[agreement_ag1()], None)
        .await
        .unwrap();
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

impl std::ops::Deref for Wf {
    type Target = JsonApi;

    fn deref(&self) -> &JsonApi {
        &self.api
    }
}

impl Wf {
    /// Stops the engine and hands back the database and the CA (for a restart).
    pub(crate) async fn stop(self) -> (TestDb, Arc<TestCa>) {
        self.engine.shutdown(Duration::from_secs(5)).await;
        (self.db, self.ca)
    }

    /// A request; `if_match` sets `If-Match: W/"n"`. Status, JSON body, ETag.
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        bearer: &str,
        body: Option<Value>,
        if_match: Option<u64>,
    ) -> (u16, Value, Option<String>) {
        let mut req = self.api.request(method, path, bearer, body);
        if let Some(v) = if_match {
            req = req.header("if-match", format!("W/\"{v}\""));
        }
        let r = JsonApi::send(req).await;
        (r.status, r.body, r.etag)
    }

    /// `POST /api/consultations/{id}/{action}`.
    pub(crate) async fn act(
        &self,
        id: &str,
        action: &str,
        bearer: &str,
        body: Value,
    ) -> (u16, Value) {
        let (s, v, _) = self
            .call(
                "POST",
                &format!("/api/consultations/{id}/{action}"),
                bearer,
                Some(body),
                None,
            )
            .await;
        (s, v)
    }

    /// Acts and expects 200; returns the consultation.
    pub(crate) async fn ok(&self, id: &str, action: &str, bearer: &str, body: Value) -> Value {
        let (s, v) = self.act(id, action, bearer, body).await;
        assert_eq!(s, 200, "{action}: {v}");
        v
    }

    /// The local doctor attaches D1 as the accompanying physician (CN-06).
    pub(crate) async fn attach_physician(&self, id: &str) {
        self.ok(
            id,
            "attach-physician",
            &doctor(),
            json!({"physician": {"practitioner": "D1", "licence": "110450000001"}}),
        )
        .await;
    }

    /// Creates a consultation as the local doctor; its id.
    pub(crate) async fn create(&self, request: Value) -> String {
        let (s, v, etag) = self
            .call("POST", "/api/consultations", &doctor(), Some(request), None)
            .await;
        assert_eq!(s, 201, "{v}");
        assert_eq!(etag.as_deref(), Some("W/\"1\""));
        assert_eq!(v["state"], "drafting");
        v["id"].as_str().unwrap().to_owned()
    }

    /// Creates, submits and approves (the assignment runs); the consultation after it.
    pub(crate) async fn approved(&self, request: Value) -> (String, Value) {
        let id = self.create(request).await;
        self.ok(&id, "submit", &doctor(), json!({})).await;
        let v = self.ok(&id, "approve", &doctor(), json!({})).await;
        (id, v)
    }

    /// The event types of a consultation's timeline.
    pub(crate) async fn events(&self, id: &str) -> Vec<String> {
        let (s, v) = self
            .get(&format!("/api/consultations/{id}"), &doctor())
            .await;
        assert_eq!(s, 200, "{v}");
        v["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// An urgent cardiology request from F-REQ under agreement AG-1.
pub(crate) fn request(patient: u64) -> Value {
    json!({
        "patient": patient,
        "requesting_facility": REQ,
        "requesting_doctor": "D1",
        "province": "45",
        "urgency": "urgent",
        "department": "03.02",
        "min_title": "attending",
        "icd10": "I25.1",
        "reason": "胸痛待查",
        "purpose": "明确诊断并给出治疗方案",
        "case_summary": "男，62岁，反复胸痛3天。",
        "requested_time": {"kind": "as_soon_as_possible"},
        "attachments": {"studies": ["1.2.840.113619.2.55.3.1"]},
        "service_type": "institution-to-institution",
        "agreement": "AG-1"
    })
}

/// An on-call cardiologist of F-EXP.
pub(crate) fn cardiologist(id: &str, title: Title) -> Expert {
    Expert {
        id: id.into(),
        name: format!("专家{id}"),
        facility: EXP.into(),
        departments: vec!["03.02".into()],
        expertise: vec![IcdCode::parse("I25").unwrap()],
        title,
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
    }
}

/// The cooperation agreement AG-1 (F-REQ → F-EXP, in force since 2020) the requests of
/// [`request`] name (CN-02): every engine of [`start_configured`] has it.
pub(crate) fn agreement_ag1() -> Agreement {
    Agreement {
        id: "AG-1".into(),
        requesting_facility: REQ.into(),
        expert_facility: EXP.into(),
        kind: AgreementKind::MedicalConsortium,
        valid_from: NaiveDate::from_ymd_opt(2020, 1, 1).unwrap(),
        valid_to: None,
    }
}

/// `n` cardiologists E1…En of F-EXP and the agreement AG-1 (F-REQ → F-EXP).
pub(crate) async fn seed_registry(wf: &Wf, n: usize) {
    let experts: Vec<Expert> = (1..=n)
        .map(|i| cardiologist(&format!("E{i}"), Title::Chief))
        .collect();
    wf.engine
        .store
        .upsert_experts(&experts, &[agreement_ag1()], None)
        .await
        .unwrap();
}

/// The offerees of the current attempt.
pub(crate) fn offerees(v: &Value) -> Vec<String> {
    v["attempts"]
        .as_array()
        .and_then(|a| a.last())
        .map(|a| {
            a["offerees"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["expert"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}
