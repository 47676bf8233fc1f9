//! Security: the authorisation matrix (role × facility × endpoint), API keys, throttling of
//! failed logins, and tamper detection of the audit trail (API, store and `huizhen audit
//! verify`).

use std::sync::Arc;
use std::time::Duration;

use huizhen_core::Engine;
use huizhen_core::security::{Role, Security, SecurityConfig};

use crate::support::{Backend, fresh_db, loaded, store};

const SECRET: &str = "e2e-security-secret-0123456789abcdef";

fn security_config() -> SecurityConfig {
    SecurityConfig {
        jwt_secret: Some(SECRET.into()),
        ..SecurityConfig::default()
    }
}

fn token(role: Role, facility: &str) -> String {
    huizhen_core::security::issue_from_config(
        &security_config(),
        &format!("{}@{facility}", role.as_str()),
        role,
        facility,
        Duration::from_secs(600),
    )
    .unwrap()
    .token
}

struct Server {
    engine: Engine,
    base: String,
    client: reqwest::Client,
    _db: crate::support::TestDb,
}

/// An engine with two facilities' pipelines (`/in/a` for county hospital A, `/in/b` for B),
/// served on a free port with the real router and security.
async fn server(max_failures: u32) -> Server {
    server_with(SecurityConfig {
        max_failures,
        ..security_config()
    })
    .await
}

async fn server_with(cfg: SecurityConfig) -> Server {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let a = "version: 1\nname: a\nfacility: hosp-a\nsource:\n  http: { path: /in/a, kind: json }\nsinks:\n  - journal: {}\n";
    let b = "version: 1\nname: b\nfacility: hosp-b\nsource:\n  http: { path: /in/b, kind: json }\nsinks:\n  - journal: {}\n";
    let engine = Engine::start(loaded(&db, &[a, b])).await.unwrap();
    let security = Security::new(&cfg, engine.store.clone()).unwrap();
    let app = huizhen_core::http::router(
        engine.app_state(),
        &huizhen_core::config::HttpConfig::default(),
        Arc::new(security),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = huizhen_core::config::HttpConfig::default();
    let stop = engine.shutdown_token();
    tokio::spawn(async move { huizhen_core::http::serve(listener, app, &cfg, None, stop).await });
    Server {
        engine,
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        _db: db,
    }
}

impl Server {
    async fn call(&self, method: &str, path: &str, bearer: Option<&str>) -> u16 {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "GET" => self.client.get(url),
            "PUT" => self
                .client
                .put(url)
                .header("content-type", "application/json")
                .body(r#"{"patient":"P1"}"#),
            _ => self
                .client
                .post(url)
                .header("content-type", "application/json")
                .body(r#"{"patient":"P1"}"#),
        };
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap().status().as_u16()
    }

    /// `GET path` with `bearer`: the string field `field` of each item of the array `list`.
    async fn strings(&self, path: &str, bearer: String, list: &str, field: &str) -> Vec<String> {
        let v: serde_json::Value = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(bearer)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m[field].as_str().unwrap().to_owned())
            .collect()
    }

    async fn ingest(&self, path: &str) -> String {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token(Role::Admin, "*"))
            .header("content-type", "application/json")
            .body(r#"{"patient":"张三"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let v: serde_json::Value = r.json().await.unwrap();
        v["id"].as_str().unwrap().to_owned()
    }
}

/// The matrix, generated from the route table: every (method, route) of
/// `huizhen_core::security::ROUTES` must have a row here (a new route without one fails the
/// test, and so does a row for a route that is gone). Each row: the concrete request, then the
/// expected status for each role, for a token of facility A (which owns the message and
/// pipeline), B (unrelated), C (reads A's data under a sharing agreement) and every facility
/// (`*`). `/metrics` is not public in this server. A changed cell fails the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorisation_matrix_role_by_facility_by_endpoint() {
    // Every denied cell counts as a failure of its (address, subject); the table has more
    // cells per subject than the default allows before throttling.
    let s = server_with(SecurityConfig {
        max_failures: 10_000,
        max_failures_per_address: 100_000,
        // The table is walked as fast as the server answers: no request rate limit here
        // (clients_over_the_rate_limit_get_429 tests it).
        rate_limit: huizhen_core::security::RateLimit {
            per_second: 0.0,
            burst: 1.0,
        },
        public_metrics: false,
        sharing: vec![huizhen_core::security::Sharing {
            owner: "hosp-a".into(),
            reader: "hosp-c".into(),
        }],
        ..security_config()
    })
    .await;
    let id = s.ingest("/in/a").await;
    let wait_done = || {
        let store = s.engine.store.clone();
        let id = id.clone();
        async move {
            crate::support::wait_for("message done", Duration::from_secs(10), || {
                let store = store.clone();
                let id = id.clone();
                async move {
                    (store.get(&id).await.ok()??.state == huizhen_core::message::State::Done)
                        .then_some(())
                }
            })
            .await
        }
    };
    wait_done().await;
    let msg = format!("/api/messages/{id}");
    let reprocess = format!("/api/messages/{id}/reprocess");
    use Role::*;
    let roles = [
        Admin,
        Integrator,
        Auditor,
        Expert,
        LocalDoctor,
        Pharmacist,
        Patient,
        Logistics,
    ];
    const NO: [u16; 4] = [403, 403, 403, 403];
    const ALL: [u16; 4] = [200, 200, 200, 200];
    const PLATFORM: [u16; 4] = [403, 403, 403, 200];
    const BAD: [u16; 4] = [400, 400, 400, 400];
    const UNFIT: [u16; 4] = [422, 422, 422, 422];
    const GONE: [u16; 4] = [404, 404, 404, 404];
    const PRECONDITION: [u16; 4] = [428, 428, 428, 428];
    // (method, route pattern, concrete path, [[A, B, C, *] per role in the order above])
    let table: Vec<(&str, &str, &str, [[u16; 4]; 8])> = vec![
        (
            "GET",
            "/api/pipelines",
            "/api/pipelines",
            [ALL, ALL, ALL, NO, NO, NO, NO, NO],
        ),
        (
            "GET",
            "/api/backlog",
            "/api/backlog",
            [ALL, ALL, ALL, NO, NO, NO, NO, NO],
        ),
        (
            "GET",
            "/api/cluster",
            "/api/cluster",
            [PLATFORM, PLATFORM, PLATFORM, NO, NO, NO, NO, NO],
        ),
        (
            "GET",
            "/api/messages",
            "/api/messages",
            [ALL, ALL, ALL, NO, NO, NO, NO, NO],
        ),
        (
            "GET",
            "/api/messages/{id}",
            &msg,
            [
                [200, 404, 200, 200],
                [200, 404, 200, 200],
                [200, 404, 200, 200],
                NO,
                NO,
                NO,
                NO,
                NO,
            ],
        ),
        (
            "POST",
            "/api/messages/{id}/reprocess",
            &reprocess,
            [
                [200, 404, 403, 200],
                [200, 404, 403, 200],
                NO,
                NO,
                NO,
                NO,
                NO,
                NO,
            ],
        ),
        (
            "POST",
            "/in/{*path}",
            "/in/a",
            [
                [202, 403, 403, 202],
                [202, 403, 403, 202],
                NO,
                NO,
                NO,
                NO,
                NO,
                NO,
            ],
        ),
        (
            "GET",
            "/api/audit",
            "/api/audit",
            [ALL, NO, ALL, NO, NO, NO, NO, NO],
        ),
        (
            "GET",
            "/api/audit/verify",
            "/api/audit/verify",
            [PLATFORM, NO, PLATFORM, NO, NO, NO, NO, NO],
        ),
        (
            "GET",
            "/api/plugins",
            "/api/plugins",
            [ALL, ALL, ALL, NO, NO, NO, NO, NO],
        ),
        (
            "POST",
            "/api/plugins/{name}/reload",
            "/api/plugins/no-such-plugin/reload",
            // Platform admins get as far as the registry: no such plugin.
            [[403, 403, 403, 404], NO, NO, NO, NO, NO, NO, NO],
        ),
        (
            "GET",
            "/metrics",
            "/metrics",
            [ALL, ALL, ALL, NO, NO, NO, NO, NO],
        ),
        // Patient identity: bodies and queries that pass the guard answer 400 (the matrix's
        // body is no demographics, no reason) or 404 (no such person).
        (
            "POST",
            "/api/patients/match",
            "/api/patients/match",
            [BAD, BAD, BAD, NO, BAD, NO, NO, NO],
        ),
        (
            "GET",
            "/api/patients/identifiers",
            "/api/patients/identifiers",
            [BAD, BAD, BAD, NO, BAD, NO, NO, NO],
        ),
        (
            "GET",
            "/api/patients/{person_id}/identifiers",
            "/api/patients/999999/identifiers",
            [GONE, GONE, GONE, NO, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/api/patients/review",
            "/api/patients/review",
            [ALL, ALL, ALL, NO, ALL, NO, NO, NO],
        ),
        (
            "POST",
            "/api/patients/review/{id}/accept",
            "/api/patients/review/1/accept",
            [BAD, BAD, NO, NO, NO, NO, NO, NO],
        ),
        (
            "POST",
            "/api/patients/review/{id}/reject",
            "/api/patients/review/1/reject",
            [BAD, BAD, NO, NO, NO, NO, NO, NO],
        ),
        (
            "POST",
            "/api/patients/{person_id}/unlink",
            "/api/patients/1/unlink",
            [BAD, BAD, NO, NO, NO, NO, NO, NO],
        ),
        (
            "POST",
            "/api/patients/{person_id}/relink",
            "/api/patients/1/relink",
            [BAD, BAD, NO, NO, NO, NO, NO, NO],
        ),
        // Expert matching: the probe body is not a case (422) and no decision exists (404).
        (
            "POST",
            "/api/experts/match",
            "/api/experts/match",
            [UNFIT, UNFIT, NO, NO, UNFIT, NO, NO, NO],
        ),
        (
            "POST",
            "/api/experts/heartbeat",
            "/api/experts/heartbeat",
            [NO, NO, NO, UNFIT, NO, NO, NO, NO],
        ),
        (
            "GET",
            "/api/experts/fairness",
            "/api/experts/fairness",
            [ALL, ALL, ALL, NO, NO, NO, NO, NO],
        ),
        (
            "GET",
            "/api/match-decisions/{id}",
            "/api/match-decisions/no-such-decision",
            [GONE, GONE, GONE, NO, GONE, NO, NO, NO],
        ),
        (
            "POST",
            "/api/match-decisions/{id}/override",
            "/api/match-decisions/no-such-decision/override",
            [UNFIT, UNFIT, NO, NO, NO, NO, NO, NO],
        ),
        // The care workflow (http/care/): probe bodies are not what the endpoints take (422),
        // and the ids do not exist (404).
        (
            "POST",
            "/api/prescriptions",
            "/api/prescriptions",
            [NO, NO, NO, UNFIT, UNFIT, NO, NO, NO],
        ),
        (
            "GET",
            "/api/prescriptions",
            "/api/prescriptions",
            [ALL, ALL, ALL, ALL, ALL, ALL, NO, NO],
        ),
        (
            "GET",
            "/api/prescriptions/{id}",
            "/api/prescriptions/no-such",
            [GONE, GONE, GONE, GONE, GONE, GONE, NO, NO],
        ),
        (
            "POST",
            "/api/prescriptions/{id}/delivery",
            "/api/prescriptions/no-such/delivery",
            [NO, NO, NO, NO, NO, NO, NO, UNFIT],
        ),
        (
            "POST",
            "/api/prescriptions/{id}/{action}",
            "/api/prescriptions/no-such/approve",
            [UNFIT, UNFIT, NO, UNFIT, UNFIT, UNFIT, NO, NO],
        ),
        (
            "POST",
            "/api/appointments",
            "/api/appointments",
            [UNFIT, UNFIT, NO, UNFIT, UNFIT, NO, NO, NO],
        ),
        (
            "GET",
            "/api/appointments/{id}",
            "/api/appointments/no-such",
            [GONE, GONE, GONE, GONE, GONE, NO, NO, NO],
        ),
        (
            "POST",
            "/api/appointments/{id}/cancel",
            "/api/appointments/no-such/cancel",
            [UNFIT, UNFIT, NO, UNFIT, UNFIT, NO, NO, NO],
        ),
        (
            "POST",
            "/api/appointments/{id}/join",
            "/api/appointments/no-such/join",
            [NO, NO, NO, GONE, GONE, NO, GONE, NO],
        ),
        // The queue of an unregistered expert: platform staff only; an expert reads its own.
        (
            "GET",
            "/api/experts/{id}/queue",
            "/api/experts/no-such/queue",
            [PLATFORM, PLATFORM, NO, NO, NO, NO, NO, NO],
        ),
        (
            "GET",
            "/api/cases",
            "/api/cases",
            [ALL, ALL, ALL, ALL, ALL, NO, NO, NO],
        ),
        // The callers are not in the expert registry and name no department.
        (
            "GET",
            "/api/cases/recommend",
            "/api/cases/recommend",
            [UNFIT, UNFIT, UNFIT, UNFIT, UNFIT, NO, NO, NO],
        ),
        (
            "GET",
            "/api/stats",
            "/api/stats",
            [ALL, ALL, ALL, NO, NO, NO, NO, NO],
        ),
        // The consultation workflow: the probe body is not a request (422); no consultation
        // exists (404); lists and the live stream answer every reading role.
        (
            "POST",
            "/api/consultations",
            "/api/consultations",
            [UNFIT, UNFIT, NO, NO, UNFIT, NO, NO, NO],
        ),
        (
            "GET",
            "/api/consultations",
            "/api/consultations",
            [ALL, ALL, ALL, ALL, ALL, NO, NO, NO],
        ),
        (
            "GET",
            "/api/consultations/events",
            "/api/consultations/events",
            [ALL, ALL, ALL, ALL, ALL, NO, NO, NO],
        ),
        (
            "GET",
            "/api/consultations/{id}",
            "/api/consultations/no-such-consultation",
            [GONE, GONE, GONE, GONE, GONE, NO, NO, NO],
        ),
        (
            "POST",
            "/api/consultations/{id}/{action}",
            "/api/consultations/no-such-consultation/submit",
            [GONE, GONE, NO, GONE, GONE, NO, NO, NO],
        ),
        // The FHIR facade (adapters/fhir): searches answer an empty Bundle, unknown ids 404,
        // operations without their parameters 400, a Task update without If-Match 428; an
        // expert's $everything of a patient of none of their consultations is 403 (FHIR-22).
        (
            "GET",
            "/fhir/r4/Patient",
            "/fhir/r4/Patient",
            [ALL, ALL, ALL, NO, ALL, NO, NO, NO],
        ),
        (
            "POST",
            "/fhir/r4/Patient/$match",
            "/fhir/r4/Patient/$match",
            [BAD, BAD, BAD, NO, BAD, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/Patient/$ihe-pix",
            "/fhir/r4/Patient/$ihe-pix",
            [BAD, BAD, BAD, NO, BAD, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/Patient/{id}",
            "/fhir/r4/Patient/no-such-patient",
            [GONE, GONE, GONE, GONE, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/Patient/{id}/_history/{vid}",
            "/fhir/r4/Patient/no-such-patient/_history/1",
            [GONE, GONE, GONE, GONE, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/Patient/{id}/$everything",
            "/fhir/r4/Patient/no-such-patient/$everything",
            [GONE, GONE, GONE, NO, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/Observation",
            "/fhir/r4/Observation",
            [ALL, ALL, ALL, ALL, ALL, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/Observation/{id}",
            "/fhir/r4/Observation/no-such",
            [GONE, GONE, GONE, GONE, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/Observation/{id}/_history/{vid}",
            "/fhir/r4/Observation/no-such/_history/1",
            [GONE, GONE, GONE, GONE, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/DiagnosticReport",
            "/fhir/r4/DiagnosticReport",
            [ALL, ALL, ALL, ALL, ALL, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/DiagnosticReport/{id}",
            "/fhir/r4/DiagnosticReport/no-such",
            [GONE, GONE, GONE, GONE, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/DiagnosticReport/{id}/_history/{vid}",
            "/fhir/r4/DiagnosticReport/no-such/_history/1",
            [GONE, GONE, GONE, GONE, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/ServiceRequest",
            "/fhir/r4/ServiceRequest",
            [ALL, ALL, ALL, ALL, ALL, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/ServiceRequest/{id}",
            "/fhir/r4/ServiceRequest/no-such",
            [GONE, GONE, GONE, GONE, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/ServiceRequest/{id}/_history/{vid}",
            "/fhir/r4/ServiceRequest/no-such/_history/1",
            [GONE, GONE, GONE, GONE, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/Encounter",
            "/fhir/r4/Encounter",
            [ALL, ALL, ALL, ALL, ALL, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/Encounter/{id}",
            "/fhir/r4/Encounter/no-such",
            [GONE, GONE, GONE, GONE, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/Encounter/{id}/_history/{vid}",
            "/fhir/r4/Encounter/no-such/_history/1",
            [GONE, GONE, GONE, GONE, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/DocumentReference",
            "/fhir/r4/DocumentReference",
            [ALL, ALL, ALL, ALL, ALL, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/DocumentReference/{id}",
            "/fhir/r4/DocumentReference/no-such",
            [GONE, GONE, GONE, GONE, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/DocumentReference/{id}/_history/{vid}",
            "/fhir/r4/DocumentReference/no-such/_history/1",
            [GONE, GONE, GONE, GONE, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/Appointment",
            "/fhir/r4/Appointment",
            [ALL, ALL, ALL, ALL, ALL, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/Appointment/{id}",
            "/fhir/r4/Appointment/no-such",
            [GONE, GONE, GONE, GONE, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/Appointment/{id}/_history/{vid}",
            "/fhir/r4/Appointment/no-such/_history/1",
            [GONE, GONE, GONE, GONE, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/Task",
            "/fhir/r4/Task",
            [ALL, ALL, ALL, ALL, ALL, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/Task/{id}",
            "/fhir/r4/Task/no-such",
            [GONE, GONE, GONE, GONE, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/Task/{id}/_history/{vid}",
            "/fhir/r4/Task/no-such/_history/1",
            [GONE, GONE, GONE, GONE, GONE, NO, NO, NO],
        ),
        (
            "PUT",
            "/fhir/r4/Task/{id}",
            "/fhir/r4/Task/no-such",
            [
                PRECONDITION,
                PRECONDITION,
                NO,
                PRECONDITION,
                PRECONDITION,
                NO,
                NO,
                NO,
            ],
        ),
        (
            "GET",
            "/fhir/r4/Provenance",
            "/fhir/r4/Provenance",
            [ALL, ALL, ALL, ALL, ALL, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/Provenance/{id}",
            "/fhir/r4/Provenance/no-such",
            [GONE, GONE, GONE, GONE, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/Practitioner",
            "/fhir/r4/Practitioner",
            [ALL, ALL, ALL, ALL, ALL, ALL, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/Practitioner/{id}",
            "/fhir/r4/Practitioner/no-such",
            [GONE, GONE, GONE, GONE, GONE, GONE, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/PractitionerRole",
            "/fhir/r4/PractitionerRole",
            [ALL, ALL, ALL, ALL, ALL, ALL, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/PractitionerRole/{id}",
            "/fhir/r4/PractitionerRole/no-such",
            [GONE, GONE, GONE, GONE, GONE, GONE, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/Organization",
            "/fhir/r4/Organization",
            [ALL, ALL, ALL, ALL, ALL, ALL, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/Organization/{id}",
            "/fhir/r4/Organization/no-such",
            [GONE, GONE, GONE, GONE, GONE, GONE, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/Consent",
            "/fhir/r4/Consent",
            [ALL, ALL, ALL, ALL, ALL, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/Consent/{id}",
            "/fhir/r4/Consent/no-such",
            [GONE, GONE, GONE, GONE, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/Consent/{id}/_history/{vid}",
            "/fhir/r4/Consent/no-such/_history/1",
            [GONE, GONE, GONE, GONE, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/MedicationRequest",
            "/fhir/r4/MedicationRequest",
            [ALL, ALL, ALL, ALL, ALL, ALL, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/MedicationRequest/{id}",
            "/fhir/r4/MedicationRequest/no-such",
            [GONE, GONE, GONE, GONE, GONE, GONE, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/AuditEvent",
            "/fhir/r4/AuditEvent",
            [ALL, NO, ALL, NO, NO, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/AuditEvent/{id}",
            "/fhir/r4/AuditEvent/no-such",
            [GONE, NO, GONE, NO, NO, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/Schedule",
            "/fhir/r4/Schedule",
            [ALL, ALL, ALL, ALL, ALL, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/Schedule/{id}",
            "/fhir/r4/Schedule/no-such",
            [GONE, GONE, GONE, GONE, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/Slot",
            "/fhir/r4/Slot",
            [ALL, ALL, ALL, ALL, ALL, NO, NO, NO],
        ),
        (
            "GET",
            "/fhir/r4/Slot/{id}",
            "/fhir/r4/Slot/no-such",
            [GONE, GONE, GONE, GONE, GONE, NO, NO, NO],
        ),
    ];
    let mut wrong = Vec::new();
    for (method, pattern, _) in huizhen_core::security::ROUTES {
        if !table.iter().any(|r| r.0 == *method && r.1 == *pattern) {
            wrong.push(format!(
                "{method} {pattern} is in the route table but has no row in the matrix"
            ));
        }
    }
    for (method, pattern, ..) in &table {
        if !huizhen_core::security::ROUTES
            .iter()
            .any(|r| r.0 == *method && r.1 == *pattern)
        {
            wrong.push(format!(
                "the matrix has a row for {method} {pattern}, which is not in the route table"
            ));
        }
    }
    for (method, _, path, expect) in &table {
        for (ri, role) in roles.iter().enumerate() {
            for (fi, facility) in ["hosp-a", "hosp-b", "hosp-c", "*"].iter().enumerate() {
                let got = s.call(method, path, Some(&token(*role, facility))).await;
                if got != expect[ri][fi] {
                    wrong.push(format!(
                        "{method} {path} as {role}@{facility}: expected {}, got {got}",
                        expect[ri][fi]
                    ));
                }
                if got == 200 && path.ends_with("/reprocess") {
                    // The next reprocess needs the message finished again.
                    wait_done().await;
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "matrix cells changed:\n{}",
        wrong.join("\n")
    );

    // Without a token: 401 everywhere but the public endpoints (and /metrics is not public here).
    for (method, _, path, _) in &table {
        assert_eq!(s.call(method, path, None).await, 401, "{method} {path}");
    }
    assert_eq!(s.call("GET", "/health", None).await, 200);
    assert_eq!(s.call("GET", "/ready", None).await, 200);
    let open = server(100).await;
    assert_eq!(
        open.call("GET", "/metrics", None).await,
        200,
        "/metrics is public by default"
    );
    open.engine.shutdown(Duration::from_secs(5)).await;

    // The list of facility B's integrator holds none of A's messages, and A's holds them.
    let list = |t: String| s.strings("/api/messages", t, "messages", "facility");
    let b_sees = list(token(Integrator, "hosp-b")).await;
    assert!(b_sees.is_empty(), "{b_sees:?}");
    let a_sees = list(token(Integrator, "hosp-a")).await;
    assert!(!a_sees.is_empty() && a_sees.iter().all(|f| f == "hosp-a"));

    // The backlog shows the pipelines of the caller's facilities only.
    let backlog = |t: String| s.strings("/api/backlog", t, "pipelines", "pipeline");
    assert_eq!(backlog(token(Integrator, "hosp-b")).await, ["b"]);
    assert_eq!(backlog(token(Integrator, "hosp-c")).await, ["a"]);
    assert_eq!(backlog(token(Integrator, "*")).await, ["a", "b"]);

    // Every read, write, denial and failed login was audited, and the chain is intact.
    let report = s.engine.store.verify_audit().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let events = s
        .engine
        .store
        .audit_events(&huizhen_core::store::audit::AuditFilter {
            limit: Some(10_000),
            ..Default::default()
        })
        .await
        .unwrap();
    let count = |action: &str, outcome: &str| {
        events
            .iter()
            .filter(|e| e.event.action == action && e.event.outcome == outcome)
            .count()
    };
    assert_eq!(
        count("message.read", "success"),
        9,
        "reads of the message (A, C, *)"
    );
    assert!(
        count("message.read", "denied") >= 3,
        "B's attempts on A's message"
    );
    assert_eq!(count("message.reprocess", "success"), 4);
    let refused_by_sharing = events
        .iter()
        .filter(|e| {
            e.event.action == "message.reprocess"
                && e.event.outcome == "denied"
                && e.event.resource_type == "Message"
        })
        .count();
    assert_eq!(
        refused_by_sharing, 2,
        "C may read A's message but not reprocess it (admin and integrator of C)"
    );
    assert!(count("message.ingest", "success") >= 5);
    assert!(count("login.failed", "failed") >= 7);
    let read = events
        .iter()
        .find(|e| e.event.action == "message.read" && e.event.outcome == "success")
        .unwrap();
    assert_eq!(read.event.resource_id, id);
    assert!(read.event.source.starts_with("127.0.0.1:"));
    s.engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_work_until_revoked_and_bad_tokens_are_throttled() {
    let s = server_with(SecurityConfig {
        max_failures: 3,
        max_failures_per_address: 8,
        ..security_config()
    })
    .await;
    let (key, row) = huizhen_core::security::new_api_key("lis-a", Role::Integrator, "hosp-a");
    s.engine.store.create_api_key(&row).await.unwrap();
    assert_eq!(s.call("POST", "/in/a", Some(&key)).await, 202);
    assert_eq!(
        s.call("POST", "/in/b", Some(&key)).await,
        403,
        "other facility"
    );
    // The stored hash is not the key.
    assert!(!row.hash.contains(key.rsplit('_').next().unwrap()));
    s.engine.store.revoke_api_key(&row.id).await.unwrap();
    assert_eq!(s.call("POST", "/in/a", Some(&key)).await, 401);

    // Failed attempts count per (address, claimed subject): after max_failures (3) the same
    // subject from this address gets 429, while a colleague behind the same (NAT) address
    // still gets in; after max_failures_per_address (8), whatever subject, the address does.
    let forged = |sub: &str| {
        huizhen_core::security::issue_from_config(
            &SecurityConfig {
                jwt_secret: Some("another-secret-another-secret-0000".into()),
                ..SecurityConfig::default()
            },
            sub,
            Role::Admin,
            "*",
            Duration::from_secs(600),
        )
        .unwrap()
        .token
    };
    // The revoked key was failure 1 of this address (subject apikey:<id>).
    for _ in 0..3 {
        assert_eq!(
            s.call("GET", "/api/pipelines", Some(&forged("mallory")))
                .await,
            401
        );
    }
    assert_eq!(
        s.call("GET", "/api/pipelines", Some(&forged("mallory")))
            .await,
        429,
        "the same subject from the same address is throttled"
    );
    let good = token(Role::Admin, "*");
    assert_eq!(
        s.call("GET", "/api/pipelines", Some(&good)).await,
        200,
        "another subject from the same address is not"
    );
    // A spray: made-up keys, not a JWT, no token, other names — 4 more failures reach 8.
    assert_eq!(
        s.call("GET", "/api/pipelines", Some("hzk_0000_ffff")).await,
        401
    );
    assert_eq!(
        s.call("GET", "/api/pipelines", Some("not.a.jwt")).await,
        401
    );
    assert_eq!(s.call("GET", "/api/pipelines", None).await, 401);
    assert_eq!(
        s.call("GET", "/api/pipelines", Some(&forged("eve"))).await,
        401
    );
    assert_eq!(
        s.call("GET", "/api/pipelines", Some(&good)).await,
        429,
        "the whole address after max_failures_per_address"
    );
    s.engine.shutdown(Duration::from_secs(5)).await;
}

/// Five events, then one kind of tampering; `verify_audit` and `huizhen audit verify` name it.
async fn tampered(sql: &str) -> (Vec<String>, std::process::Output) {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let s = store(&db).await;
    for i in 0..5 {
        s.audit(&crate::audit::event(i)).await.unwrap();
    }
    assert!(s.verify_audit().await.unwrap().problems.is_empty());
    // The test's own audit key and checkpoint file (the defaults under the working directory
    // are shared by every test that runs the binary there).
    let config = db.dir.path().join("huizhen.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1\nsecurity:\n  audit: {{ key_file: {}, checkpoint_file: {} }}\npipelines: []\n",
            db.dir.path().join("audit.key").display(),
            db.dir.path().join("audit.checkpoints").display()
        ),
    )
    .unwrap();
    let verify = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_huizhen"))
            .arg("-c")
            .arg(&config)
            .args(["--database-url", &db.url, "audit", "verify"])
            .output()
            .unwrap()
    };
    let cli_ok = verify();
    assert!(cli_ok.status.success(), "{cli_ok:?}");
    {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        // Through SQL the table is append-only.
        let refused = sqlx::raw_sql("UPDATE audit_events SET actor = 'x' WHERE seq = 2")
            .execute(&mut c)
            .await;
        assert!(refused.is_err(), "the trigger refuses changes");
        // Someone with the file removes the triggers first.
        sqlx::raw_sql("DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete;")
            .execute(&mut c)
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut c)
            .await
            .unwrap();
    }
    let problems = s.verify_audit().await.unwrap().problems;
    (problems, verify())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_names_a_changed_a_deleted_and_a_reordered_row() {
    let (p, out) = tampered("UPDATE audit_events SET resource_id = 'm9' WHERE seq = 3").await;
    assert_eq!(
        p,
        vec!["audit row 3: its content does not match its hash (changed after it was written)"]
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("audit row 3: its content"));

    let (p, out) = tampered("DELETE FROM audit_events WHERE seq = 2").await;
    assert!(p[0].contains("audit rows 2..2 are missing"), "{p:?}");
    assert!(
        p.iter()
            .any(|x| x.contains("audit row 3: it does not follow"))
    );
    assert_eq!(out.status.code(), Some(1));

    let (p, _) = tampered("DELETE FROM audit_events WHERE seq = 5").await;
    assert_eq!(p, vec!["audit rows 5..5 are missing at the end (deleted)"]);

    // Swap rows 2 and 4 (their content moves, their positions stay).
    let (p, out) = tampered(
        "UPDATE audit_events SET seq = -2 WHERE seq = 2; UPDATE audit_events SET seq = 2 WHERE seq = 4; UPDATE audit_events SET seq = 4 WHERE seq = -2;",
    )
    .await;
    assert!(p.iter().any(|x| x.starts_with("audit row 2")), "{p:?}");
    assert!(p.iter().any(|x| x.starts_with("audit row 4")), "{p:?}");
    assert!(!out.status.success());
}

/// Patient data in the database file is unreadable without the key: the name and identity number
/// of a message and its effect appear nowhere in the SQLite file or its WAL; with the key file
/// the API shows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_encrypted_at_rest() {
    let s = server(100).await;
    let body =
        r#"{"patient":{"name":"欧阳明月","id_number":"330523199001011238","phone":"13912345678"}}"#;
    let r = s
        .client
        .post(format!("{}/in/a", s.base))
        .bearer_auth(token(Role::Integrator, "hosp-a"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    crate::support::wait_for("done", Duration::from_secs(10), || {
        let store = s.engine.store.clone();
        let id = id.clone();
        async move {
            (store.get(&id).await.ok()??.state == huizhen_core::message::State::Done).then_some(())
        }
    })
    .await;
    let v: serde_json::Value = s
        .client
        .get(format!("{}/api/messages/{id}", s.base))
        .bearer_auth(token(Role::Integrator, "hosp-a"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["body"], body, "decrypted for an authorised reader");
    assert_eq!(v["effects"][0]["body"], body);
    let dir = s._db.dir.path().to_owned();
    s.engine.shutdown(Duration::from_secs(5)).await;
    let mut raw = Vec::new();
    for f in ["journal.db", "journal.db-wal"] {
        if let Ok(b) = std::fs::read(dir.join(f)) {
            raw.extend(b);
        }
    }
    assert!(raw.len() > 4096, "the database was read");
    for secret in ["欧阳明月", "330523199001011238", "13912345678"] {
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} is readable in the database file"
        );
    }
    // And without the key file, the store refuses rather than returning ciphertext.
    let bare = store(&s._db).await;
    assert!(matches!(
        bare.get(&id).await,
        Err(huizhen_core::store::StoreError::Crypto { .. })
    ));
}

/// `huizhen keys rotate` while messages keep arriving: afterwards every body, old and new,
/// decrypts to what was sent, the engine has moved to the new key by itself, and nothing is
/// left on the old key once the rotation's second pass is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_under_concurrent_writes_leaves_every_record_readable() {
    let s = server(100).await;
    let dir = s._db.dir.path().to_owned();
    let config = dir.join("huizhen.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1\nstore: {{ url: \"{}\" }}\nsecurity:\n  jwt_secret: \"{SECRET}\"\n  encryption: {{ keys_file: \"{}\" }}\npipelines: []\n",
            s._db.url,
            dir.join("keys").display()
        ),
    )
    .unwrap();
    let pipeline = s.engine.pipeline("a").unwrap().clone();
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = {
        let sent = sent.clone();
        tokio::spawn(async move {
            for i in 0..400 {
                let body = format!(r#"{{"patient":"患者{i}","seq":{i}}}"#);
                let m = huizhen_core::message::NewMessage::new(
                    "a",
                    "hosp-a",
                    "json",
                    body.clone().into_bytes(),
                );
                let a = pipeline.submit(m).await.unwrap();
                sent.lock().unwrap().push((a.id, body));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_huizhen"))
        .arg("-c")
        .arg(&config)
        .args(["keys", "rotate", "--batch", "50"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("active data key: k"), "{stdout}");
    writer.await.unwrap();
    crate::support::wait_for("all done", Duration::from_secs(20), || {
        let store = s.engine.store.clone();
        async move {
            let c = store.counts().await.ok()?;
            let done: i64 = c
                .iter()
                .filter(|(p, st, _)| p == "a" && *st == huizhen_core::message::State::Done)
                .map(|x| x.2)
                .sum();
            (done == 400).then_some(())
        }
    })
    .await;
    // Every record reads back as sent, with a key ring loaded fresh from the file.
    let ring =
        huizhen_core::crypto::Keyring::from_config(&huizhen_core::crypto::EncryptionConfig {
            keys_file: dir.join("keys"),
            ..Default::default()
        })
        .unwrap()
        .unwrap();
    let active = ring.cipher().active().to_owned();
    assert_ne!(active, "k1");
    let fresh = store(&s._db).await.with_keyring(Some(ring));
    let sent: Vec<(String, String)> = sent.lock().unwrap().clone();
    for (id, body) in &sent {
        let m = fresh.get(id).await.unwrap().unwrap();
        assert_eq!(m.body, body.as_bytes(), "message {id}");
    }
    assert_eq!(fresh.effects(Some("a")).await.unwrap().len(), 400);
    // The engine switched to the new key by itself: the last messages were sealed with it.
    let raw = {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&s._db.url).await.unwrap();
        let last = sent.last().unwrap().0.clone();
        let row: (Vec<u8>,) = sqlx::query_as("SELECT body FROM messages WHERE id = ?")
            .bind(last)
            .fetch_one(&mut c)
            .await
            .unwrap();
        row.0
    };
    assert_eq!(huizhen_core::crypto::Cipher::key_of(&raw), Some(active));
    s.engine.shutdown(Duration::from_secs(5)).await;
}

/// Logs carry ids and reasons, never patient data: the real binary at debug level takes a good
/// JSON message, one that fails a step, one that is not JSON, an HL7 ADT over MLLP and a broken
/// HL7 frame, all naming the same patient; the log names none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_hold_no_patient_name_or_id() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let dir = db.dir.path();
    let (http_port, mllp_port) = {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        (
            a.local_addr().unwrap().port(),
            b.local_addr().unwrap().port(),
        )
    };
    std::fs::create_dir_all(dir.join("pipelines")).unwrap();
    std::fs::write(
        dir.join("huizhen.yaml"),
        format!(
            "version: 1\nstore: {{ url: \"{}\" }}\nhttp: {{ bind: \"127.0.0.1:{http_port}\" }}\nsecurity:\n  jwt_secret: \"{SECRET}\"\n  encryption: {{ keys_file: keys }}\njournal: {{ scheduler_poll: 50ms }}\npipelines: [\"pipelines/*.yaml\"]\n",
            db.url
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("pipelines/p.yaml"),
        format!(
            "version: 1\nname: referrals\nsource:\n  http: {{ path: /in/r, kind: json }}\nretry: {{ max_attempts: 2, backoff: 10ms }}\nsteps:\n  - set: {{ headers: {{ dept: \"body.department\" }} }}\nsinks:\n  - journal: {{}}\n---\nversion: 1\nname: adt\nsource:\n  mllp: {{ listen: \"127.0.0.1:{mllp_port}\" }}\nsteps:\n  - hl7_map: {{}}\nsinks:\n  - journal: {{}}\n"
        ),
    )
    .unwrap();
    let log = dir.join("huizhen.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_huizhen"))
        .args(["-c", "huizhen.yaml", "run"])
        .current_dir(dir)
        .env("RUST_LOG", "debug")
        .stdout(std::fs::File::create(dir.join("stdout.log")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{http_port}");
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client
            .get(format!("{base}/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let name = "司马相如";
    let id_number = "330523199001011238";
    let t = token(Role::Integrator, "default");
    for body in [
        format!(
            r#"{{"department":"cardiology","patient":{{"name":"{name}","id":"{id_number}"}}}}"#
        ),
        format!(r#"{{"patient":{{"name":"{name}","id":"{id_number}"}}}}"#),
        format!(r#"{{"patient": {name} {id_number}"#),
    ] {
        let r = client
            .post(format!("{base}/in/r"))
            .bearer_auth(&t)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let adt = format!(
        "MSH|^~\\&|HIS|H|HZ|P|20261123||ADT^A01|L1|P|2.5\rPID|1||{id_number}^^^H^MR||{name}||19900101|M\rPV1|1|I\r"
    );
    let broken =
        format!("MSH|^~\\&|HIS|H|HZ|P|20261123||ADT^A01|L2|P|9.9\rPID|1||{id_number}||{name}\r");
    let no_id = format!("MSH|^~\\&|HIS|H|HZ|P|20261123||ADT^A01|L3|P|2.5\rPID|1||||{name}\r");
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", mllp_port))
        .await
        .unwrap();
    for m in [adt, broken, no_id] {
        let mut f = vec![0x0b];
        f.extend(encoding_rs::GB18030.encode(&m).0.iter());
        f.extend([0x1c, 0x0d]);
        c.write_all(&f).await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("message failed") && text.contains("refused"),
        "the failures were logged:\n{text}"
    );
    let gb_name = encoding_rs::GB18030.encode(name).0.into_owned();
    let raw = std::fs::read(&log).unwrap();
    for (what, needle) in [
        ("name", name.as_bytes()),
        ("name in GB18030", gb_name.as_slice()),
        ("identity number", id_number.as_bytes()),
    ] {
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle),
            "the patient's {what} is in the log:\n{text}"
        );
    }
}

/// `huizhen export --deidentify default` on an encrypted journal: the patient's name, identity
/// number and phone are gone from the output, the rest of the message is there, and the export
/// is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deidentified_export_removes_patient_data() {
    let s = server(100).await;
    s.ingest("/in/a").await;
    let body = r#"{"referral":{"department":"cardiology","patient":{"name":"欧阳明月","id_number":"330523199001011238","phone":"13912345678","birth_date":"1990-01-05"}}}"#;
    let r = s
        .client
        .post(format!("{}/in/a", s.base))
        .bearer_auth(token(Role::Admin, "*"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let dir = s._db.dir.path().to_owned();
    let config = dir.join("huizhen.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1\nstore: {{ url: \"{}\" }}\nsecurity:\n  jwt_secret: \"{SECRET}\"\n  encryption: {{ keys_file: \"{}\" }}\npipelines: []\n",
            s._db.url,
            dir.join("keys").display()
        ),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_huizhen"))
        .arg("-c")
        .arg(&config)
        .args(["export", "--deidentify", "default", "--pipeline", "a"])
        .env("HUIZHEN_DEID_KEY", "export-test-key-0123456789")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(text.lines().count(), 2, "{text}");
    for secret in [
        "欧阳明月",
        "330523199001011238",
        "13912345678",
        "1990-01-05",
    ] {
        assert!(!text.contains(secret), "{secret} exported:\n{text}");
    }
    assert!(
        text.contains("cardiology") && !text.contains("欧") && text.contains("\"h:"),
        "{text}"
    );
    let events = s
        .engine
        .store
        .audit_events(&huizhen_core::store::audit::AuditFilter {
            action: Some("message.export".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    s.engine.shutdown(Duration::from_secs(5)).await;
}

/// Per-client rate limit: a burst, then 429 with Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_over_the_rate_limit_get_429() {
    let s = server_with(SecurityConfig {
        // Slow refill (one request every 2 s), so that a loaded machine cannot refill the bucket
        // between the calls below.
        rate_limit: huizhen_core::security::RateLimit {
            per_second: 0.5,
            burst: 5.0,
        },
        ..security_config()
    })
    .await;
    let t = token(Role::Auditor, "*");
    let mut codes = Vec::new();
    for _ in 0..7 {
        codes.push(s.call("GET", "/api/pipelines", Some(&t)).await);
    }
    assert_eq!(codes, vec![200, 200, 200, 200, 200, 429, 429]);
    let r = s
        .client
        .get(format!("{}/api/pipelines", s.base))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    // Health checks are not limited.
    assert_eq!(s.call("GET", "/health", None).await, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        s.call("GET", "/api/pipelines", Some(&t)).await,
        200,
        "refilled"
    );
    s.engine.shutdown(Duration::from_secs(5)).await;
}

/// Patient data that arrives outside the body is not in the database either (issue 12, item 7):
/// an `x-` header and an `Idempotency-Key` carrying it, a remote system whose refusal (HL7 AE,
/// ERR text in the error history) names the patient, and a message search for the patient's
/// phone and name (recorded in the audit trail). None of the name, identity number or phone is
/// in the SQLite file or its WAL; an authorised reader still sees them through the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phi_in_headers_keys_errors_and_searches_is_not_in_the_database() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const NAME: &str = "欧阳明月";
    const ID_NO: &str = "330523199001011238";
    const PHONE: &str = "13912345678";
    // HTTP header values are visible ASCII: the name in pinyin.
    const PINYIN: &str = "OUYANG MINGYUE";
    // A receiver that refuses every message with AE, naming the patient in MSA-3.
    let remote = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let remote_port = remote.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = remote.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = c.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(2).position(|w| w == b"\x1c\r") {
                        let frame: Vec<u8> = buf.drain(..end + 2).collect();
                        let text = String::from_utf8_lossy(&frame);
                        let control = text
                            .trim_start_matches('\x0b')
                            .split('\r')
                            .next()
                            .and_then(|msh| msh.split('|').nth(9))
                            .unwrap_or("")
                            .to_owned();
                        let ack = format!(
                            "\x0bMSH|^~\\&|HIS|H|HZ|P|20261123093000||ACK^A01^ACK|R{control}|P|2.5\rMSA|AE|{control}|patient {NAME} {ID_NO} {PHONE} is not registered\r\x1c\r"
                        );
                        if c.write_all(ack.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let a = "version: 1\nname: a\nfacility: hosp-a\nsource:\n  http: { path: /in/a, kind: json }\nsinks:\n  - journal: {}\n";
    let m = format!(
        "version: 1\nname: m\nfacility: hosp-a\nsource:\n  http: {{ path: /in/m, kind: hl7v2 }}\nretry: {{ max_attempts: 1, backoff: 10ms }}\nsinks:\n  - mllp: {{ to: \"127.0.0.1:{remote_port}\", ack_timeout: 5s }}\n"
    );
    let engine = Engine::start(loaded(&db, &[a, &m])).await.unwrap();
    let security = Security::new(&security_config(), engine.store.clone()).unwrap();
    let app = huizhen_core::http::router(
        engine.app_state(),
        &huizhen_core::config::HttpConfig::default(),
        Arc::new(security),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let cfg = huizhen_core::config::HttpConfig::default();
    let stop = engine.shutdown_token();
    tokio::spawn(async move { huizhen_core::http::serve(listener, app, &cfg, None, stop).await });
    let client = reqwest::Client::new();
    let admin = token(Role::Admin, "*");
    let post = async |path: &str, req: reqwest::RequestBuilder| {
        let r = req.bearer_auth(&admin).send().await.unwrap();
        assert_eq!(r.status(), 202, "{path}");
        r.json::<serde_json::Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let with_headers = post(
        "/in/a",
        client
            .post(format!("{base}/in/a"))
            .header("content-type", "application/json")
            .header("x-patient-name", PINYIN)
            .header("x-patient-phone", PHONE)
            .header("idempotency-key", ID_NO)
            .body(r#"{"referral":1}"#),
    )
    .await;
    let adt = format!(
        "MSH|^~\\&|HIS|H|HZ|P|20261123093000||ADT^A01^ADT_A01|C1|P|2.5\rPID|1||{ID_NO}^^^H^MR||{NAME}||19900101|M|||||{PHONE}\r"
    );
    let refused = post(
        "/in/m",
        client
            .post(format!("{base}/in/m"))
            .header("content-type", "text/plain")
            .body(adt.into_bytes()),
    )
    .await;
    for q in [PHONE, NAME] {
        let r = client
            .get(format!("{base}/api/messages"))
            .query(&[("q", q)])
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    for (id, state) in [(&with_headers, "done"), (&refused, "dead")] {
        crate::support::wait_for(state, Duration::from_secs(15), || {
            let store = engine.store.clone();
            let id = id.clone();
            async move { (store.get(&id).await.ok()??.state.as_str() == state).then_some(()) }
        })
        .await;
    }
    // An authorised reader sees it all, opened.
    let detail = async |id: &str| -> serde_json::Value {
        client
            .get(format!("{base}/api/messages/{id}"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    };
    let v = detail(&with_headers).await;
    assert_eq!(v["headers"]["x-patient-name"], PINYIN, "{v}");
    assert_eq!(v["headers"]["x-patient-phone"], PHONE);
    let v = detail(&refused).await;
    let last = v["last_error"].as_str().unwrap_or("");
    assert!(last.contains(NAME), "{v}");
    assert!(
        v["errors"][0]["error"]
            .as_str()
            .unwrap_or("")
            .contains(NAME),
        "{v}"
    );
    // The search terms were audited, as keyed hashes with their length.
    let listed = engine
        .store
        .audit_events(&huizhen_core::store::audit::AuditFilter {
            action: Some("message.list".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let terms: Vec<&str> = listed
        .iter()
        .filter_map(|r| r.event.detail.split(" q=").nth(1))
        .collect();
    assert_eq!(terms.len(), 2, "{listed:?}");
    assert!(
        terms[0].starts_with("hmac:") && terms[0].contains("(11 chars)"),
        "{terms:?}"
    );
    assert!(
        terms[1].contains("(4 chars)") && terms[0][..21] != terms[1][..21],
        "{terms:?}"
    );
    engine.shutdown(Duration::from_secs(5)).await;
    let mut raw = Vec::new();
    for f in ["journal.db", "journal.db-wal"] {
        if let Ok(b) = std::fs::read(db.dir.path().join(f)) {
            raw.extend(b);
        }
    }
    assert!(raw.len() > 4096, "the database was read");
    for secret in [NAME, PINYIN, ID_NO, PHONE] {
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} is readable in the database file"
        );
    }
}
