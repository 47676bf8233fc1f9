//! The consultation workflow through the real router, store and workflow service (issue 15),
//! on SQLite and PostgreSQL: a consultation walked from creation to a signed opinion with the
//! timeline read back through the API; 50 experts accepting one fan-out at once (exactly one
//! 200, 49 × 412 "the case is taken"); invalid transitions (409 with the allowed actions),
//! missing reasons and invalid fields (422 with paths); the facility scope. The SLA sweep,
//! restarts, the live stream and patient merges are in `consultation_sla.rs`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use huizhen_core::Engine;
use huizhen_core::clock::{Clock, FakeClock};
use huizhen_core::security::{Role, Security, SecurityConfig};
use huizhen_core::store::audit::AuditFilter;
use huizhen_domain::consultation::{Consultation, Diagnosis, Opinion, sign_opinion};
use huizhen_domain::expert::{
    Agreement, AgreementKind, Expert, IcdCode, Load, Presence, ResponseHistory, Schedule, Title,
};
use huizhen_domain::identity::{Demographics, PersonName, normalize};
use huizhen_signing::testca::TestCa;
use serde_json::{Value, json};

use crate::support::{Backend, TestDb, both_backends, fresh_db, loaded};

both_backends!(
    a_consultation_walks_from_request_to_signed_opinion,
    fifty_concurrent_accepts_have_one_winner,
    refusals_name_what_to_fix,
);

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
pub(crate) struct Wf {
    pub engine: Engine,
    pub base: String,
    pub client: reqwest::Client,
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
    let roots = db.dir.path().join("ca-roots.pem");
    ca.write_root_pem(&roots).unwrap();
    let mut cfg = loaded(&db, pipelines);
    cfg.root.workflow.signing_roots = Some(roots);
    let engine = Engine::start_with_clock(cfg, clock.clone()).await.unwrap();
    let security = Security::new(
        &SecurityConfig {
            jwt_secret: Some(SECRET.into()),
            ..SecurityConfig::default()
        },
        engine.store.clone(),
    )
    .unwrap();
    let http = huizhen_core::config::HttpConfig::default();
    let app = huizhen_core::http::router(engine.app_state(), &http, Arc::new(security));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = engine.shutdown_token();
    tokio::spawn(async move { huizhen_core::http::serve(listener, app, &http, None, stop).await });
    Wf {
        engine,
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        clock,
        ca,
        db,
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
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "GET" => self.client.get(url),
            _ => self.client.post(url).json(&body.unwrap_or(json!({}))),
        };
        if let Some(v) = if_match {
            req = req.header("if-match", format!("W/\"{v}\""));
        }
        let r = req.bearer_auth(bearer).send().await.unwrap();
        let status = r.status().as_u16();
        let etag = r
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (status, r.json().await.unwrap_or(Value::Null), etag)
    }

    pub(crate) async fn get(&self, path: &str, bearer: &str) -> (u16, Value) {
        let (s, v, _) = self.call("GET", path, bearer, None, None).await;
        (s, v)
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

/// `n` cardiologists E1…En of F-EXP and the agreement AG-1 (F-REQ → F-EXP).
pub(crate) async fn seed_registry(wf: &Wf, n: usize) {
    let experts: Vec<Expert> = (1..=n)
        .map(|i| cardiologist(&format!("E{i}"), Title::Chief))
        .collect();
    let agreement = Agreement {
        id: "AG-1".into(),
        requesting_facility: REQ.into(),
        expert_facility: EXP.into(),
        kind: AgreementKind::MedicalConsortium,
        valid_from: NaiveDate::from_ymd_opt(2020, 1, 1).unwrap(),
        valid_to: None,
    };
    wf.engine
        .store
        .upsert_experts(&experts, &[agreement], None)
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
    wf.ok(
        &id,
        "attach-physician",
        &doctor(),
        json!({"physician": {"practitioner": "D1", "licence": "110450000001"}}),
    )
    .await;
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

async fn fifty_concurrent_accepts_have_one_winner(b: Backend) {
    let Some(wf) = start(b).await else { return };
    // No registry: the assignment finds nobody and escalates; the coordinator fans out.
    let (id, v) = wf.approved(request(2002)).await;
    assert_eq!(v["state"], "pending-match", "{v}");
    assert_eq!(wf.events(&id).await.last().unwrap(), "escalated");
    let pool: Vec<Value> = (0..50)
        .map(|i| json!({"expert": format!("X{i}"), "facility": EXP}))
        .collect();
    let coordinator = token(Role::Integrator, "dispatch", REQ);
    let v = wf
        .ok(&id, "fan-out", &coordinator, json!({ "pool": pool }))
        .await;
    assert_eq!(v["state"], "offered");
    let version = v["version"].as_u64().unwrap();
    let accepts = (0..50).map(|i| {
        let wf = &wf;
        let id = id.clone();
        async move {
            wf.call(
                "POST",
                &format!("/api/consultations/{id}/accept"),
                &expert(&format!("X{i}")),
                None,
                Some(version),
            )
            .await
        }
    });
    let results = futures::future::join_all(accepts).await;
    let winners: Vec<&Value> = results
        .iter()
        .filter(|r| r.0 == 200)
        .map(|r| &r.1)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "{:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    let winner = winners[0]["accepted_by"].as_str().unwrap().to_owned();
    let losers: Vec<&Value> = results
        .iter()
        .filter(|r| r.0 == 412)
        .map(|r| &r.1)
        .collect();
    assert_eq!(losers.len(), 49);
    for l in losers {
        assert_eq!(l["code"], "taken", "{l}");
        assert_eq!(l["taken_by"], winner.as_str());
        assert!(
            l["error"].as_str().unwrap().contains("the case is taken"),
            "{l}"
        );
    }
    let history = wf.engine.store.consultation_history(&id).await.unwrap();
    assert_eq!(
        history
            .iter()
            .filter(|e| e.kind.name() == "accepted")
            .count(),
        1
    );
    let (_, v) = wf.get(&format!("/api/consultations/{id}"), &doctor()).await;
    assert_eq!(
        (v["state"].as_str(), v["accepted_by"].as_str()),
        (Some("scheduled"), Some(winner.as_str()))
    );
    wf.stop().await;
}

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
