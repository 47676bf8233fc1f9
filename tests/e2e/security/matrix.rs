//! The authorisation matrix (role × facility × endpoint), generated from the route table, and
//! the audit rows its requests leave.

use std::time::Duration;

use huizhen_core::security::{Role, SecurityConfig};

use super::{security_config, server, server_with, token};

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
    let dead = format!("/api/messages/{id}/dead");
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
    const UNSUPPORTED: [u16; 4] = [415, 415, 415, 415];
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
            "/api/pipelines/history",
            "/api/pipelines/history",
            [ALL, ALL, ALL, NO, NO, NO, NO, NO],
        ),
        (
            "POST",
            "/api/pipelines/reload",
            "/api/pipelines/reload",
            // Platform admins reload (the files are unchanged: 200, nothing restarts).
            [PLATFORM, NO, NO, NO, NO, NO, NO, NO],
        ),
        (
            "GET",
            "/api/tap",
            // Facility A's pipeline: B's callers do not see it (404); the stream's body is not
            // read (the tap closes when the client drops it).
            "/api/tap?pipeline=a",
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
            "GET",
            "/api/pipelines/{name}/shadow",
            "/api/pipelines/a/shadow",
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
            "/api/pipelines/{name}/shadow/{plugin}/{action}",
            // Platform settings: admins; `a` has no shadowed step (404).
            "/api/pipelines/a/shadow/route-by-facility/promote",
            [GONE, NO, NO, NO, NO, NO, NO, NO],
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
            "/api/messages/{id}/dead",
            // The probe body gives no reason: a 400 before anything is looked up.
            &dead,
            [BAD, BAD, NO, NO, NO, NO, NO, NO],
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
        // The regulator's daily records (CN-14): scoped to the caller's facilities.
        (
            "GET",
            "/api/compliance/regulator/daily",
            "/api/compliance/regulator/daily",
            [ALL, NO, ALL, NO, NO, NO, NO, NO],
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
        // Billing (http/billing.rs): not configured on this server, and nothing to bill (404).
        (
            "POST",
            "/api/consultations/{id}/settlement",
            "/api/consultations/no-such-consultation/settlement",
            [GONE, GONE, NO, NO, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/api/consultations/{id}/settlement",
            "/api/consultations/no-such-consultation/settlement",
            [GONE, GONE, GONE, NO, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/api/settlements/{id}",
            "/api/settlements/no-such",
            [GONE, GONE, GONE, NO, GONE, NO, NO, NO],
        ),
        (
            "POST",
            "/api/settlements/{id}/confirm",
            "/api/settlements/no-such/confirm",
            [GONE, GONE, NO, NO, GONE, NO, NO, NO],
        ),
        (
            "POST",
            "/api/settlements/{id}/cancel",
            "/api/settlements/no-such/cancel",
            [GONE, GONE, NO, NO, GONE, NO, NO, NO],
        ),
        // The call's room tokens (http/consultations/room.rs): nothing to issue for (404).
        (
            "POST",
            "/api/consultations/{id}/room/tokens",
            "/api/consultations/no-such-consultation/room/tokens",
            [GONE, GONE, NO, GONE, GONE, NO, NO, NO],
        ),
        // Starting or stopping the call's recording (http/consultations/record.rs): the
        // accepted expert or a local doctor; no such consultation (404).
        (
            "POST",
            "/api/consultations/{id}/recording",
            "/api/consultations/no-such-consultation/recording",
            [NO, NO, NO, GONE, GONE, NO, NO, NO],
        ),
        // The call's recordings (http/consultations/recordings.rs): nothing recorded (404).
        (
            "GET",
            "/api/consultations/{id}/recordings",
            "/api/consultations/no-such-consultation/recordings",
            [GONE, NO, GONE, GONE, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/api/consultations/{id}/recordings/{recording}",
            "/api/consultations/no-such-consultation/recordings/no-such-recording",
            [GONE, NO, GONE, GONE, GONE, NO, NO, NO],
        ),
        // The call's view (http/consultations/call.rs): read like the consultation (404).
        (
            "GET",
            "/api/consultations/{id}/call",
            "/api/consultations/no-such-consultation/call",
            [GONE, GONE, GONE, GONE, GONE, NO, NO, NO],
        ),
        // Device bindings (issue 25): an empty body is a 400 before anything is looked up.
        (
            "GET",
            "/api/devices/bindings",
            "/api/devices/bindings",
            [ALL, ALL, ALL, NO, ALL, NO, NO, NO],
        ),
        (
            "POST",
            "/api/devices/bindings",
            "/api/devices/bindings",
            [BAD, BAD, NO, NO, BAD, NO, NO, NO],
        ),
        (
            "POST",
            "/api/devices/{device}/unbind",
            "/api/devices/BP-0001/unbind",
            [BAD, BAD, NO, NO, BAD, NO, NO, NO],
        ),
        // The reconciliation covers every facility: platform tokens only; nothing stored.
        (
            "POST",
            "/api/billing/reconciliation/{day}",
            "/api/billing/reconciliation/2026-01-15",
            [
                [403, 403, 403, 404],
                [403, 403, 403, 404],
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
            "/api/billing/reconciliation/{day}",
            "/api/billing/reconciliation/2026-01-15",
            [
                [403, 403, 403, 404],
                [403, 403, 403, 404],
                [403, 403, 403, 404],
                NO,
                NO,
                NO,
                NO,
                NO,
            ],
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
            "/fhir/r4/Encounter/{id}/$everything",
            "/fhir/r4/Encounter/no-such/$everything",
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
        // DICOMweb (huizhen-dicom): no dicom source here, no study. A study that does not
        // exist is 404 for staff, 403 for an expert (who learns nothing of studies outside
        // their consultations); STOW-RS of a JSON body is 415.
        (
            "GET",
            "/dicomweb/studies",
            "/dicomweb/studies",
            [ALL, ALL, ALL, ALL, ALL, NO, NO, NO],
        ),
        (
            "POST",
            "/dicomweb/studies",
            "/dicomweb/studies",
            [UNSUPPORTED, UNSUPPORTED, NO, NO, UNSUPPORTED, NO, NO, NO],
        ),
        (
            "GET",
            "/dicomweb/series",
            "/dicomweb/series",
            [ALL, ALL, ALL, ALL, ALL, NO, NO, NO],
        ),
        (
            "GET",
            "/dicomweb/instances",
            "/dicomweb/instances",
            [ALL, ALL, ALL, ALL, ALL, NO, NO, NO],
        ),
        (
            "POST",
            "/dicomweb/studies/{study}",
            "/dicomweb/studies/1.2.3",
            [UNSUPPORTED, UNSUPPORTED, NO, NO, UNSUPPORTED, NO, NO, NO],
        ),
        (
            "GET",
            "/dicomweb/studies/{study}",
            "/dicomweb/studies/1.2.3",
            [GONE, GONE, GONE, NO, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/dicomweb/studies/{study}/metadata",
            "/dicomweb/studies/1.2.3/metadata",
            [GONE, GONE, GONE, NO, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/dicomweb/studies/{study}/series",
            "/dicomweb/studies/1.2.3/series",
            [GONE, GONE, GONE, NO, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/dicomweb/studies/{study}/instances",
            "/dicomweb/studies/1.2.3/instances",
            [GONE, GONE, GONE, NO, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/dicomweb/studies/{study}/series/{series}",
            "/dicomweb/studies/1.2.3/series/1.2.3.4",
            [GONE, GONE, GONE, NO, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/dicomweb/studies/{study}/series/{series}/metadata",
            "/dicomweb/studies/1.2.3/series/1.2.3.4/metadata",
            [GONE, GONE, GONE, NO, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/dicomweb/studies/{study}/series/{series}/instances",
            "/dicomweb/studies/1.2.3/series/1.2.3.4/instances",
            [GONE, GONE, GONE, NO, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/dicomweb/studies/{study}/series/{series}/instances/{instance}",
            "/dicomweb/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5",
            [GONE, GONE, GONE, NO, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/dicomweb/studies/{study}/series/{series}/instances/{instance}/metadata",
            "/dicomweb/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5/metadata",
            [GONE, GONE, GONE, NO, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/dicomweb/studies/{study}/series/{series}/instances/{instance}/rendered",
            "/dicomweb/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5/rendered",
            [GONE, GONE, GONE, NO, GONE, NO, NO, NO],
        ),
        (
            "GET",
            "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
            "/dicomweb/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5/frames/1",
            [GONE, GONE, GONE, NO, GONE, NO, NO, NO],
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
