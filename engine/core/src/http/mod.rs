//! The HTTP server (axum): health, readiness, metrics, the admin API and `http` sources.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | /health | the process is up |
//! | GET | /ready | the store answers and every pipeline's source runs (503 with reasons if not) |
//! | GET | /metrics | Prometheus/OpenMetrics text |
//! | GET | /api/pipelines | pipelines with queue depth and journal counts per state |
//! | GET | /api/pipelines/history?minutes= | per pipeline, rates and queue depths over the last hour ([`history`]) |
//! | POST | /api/pipelines/reload | reload the pipeline files: only changed pipelines restart |
//! | GET | /api/backlog | unfinished messages per pipeline: count, oldest age, broker depth |
//! | GET | /api/cluster | the broker queue, this node, the live nodes (`queue: amqp://…`) |
//! | GET | /api/messages?pipeline=&state=&q=&after=&before=&text=&control_id=&patient=&limit=&cursor= | messages, newest first (`text`, `control_id`, `patient` read the messages: at most 5,000 per call, `scanned` says how many) |
//! | GET | /api/messages/{id} | one message: its body (and its text in the charset used), intake verdict, attempt errors, reprocesses, history and effects |
//! | POST | /api/messages/{id}/reprocess?include_refused=true | put a failed/dead/done message back to work (one refused at intake only with `include_refused`) |
//! | POST | /api/messages/{id}/dead | move a failed message to dead letter (its retries stop), with a reason |
//! | POST | /in/… | `http` sources |
//! | GET | /api/audit?actor=&action=&resource_id=&outcome=&since=&until=&after=&before=&order=&limit= | the audit trail, oldest first (`order=desc`: newest first) |
//! | GET | /api/audit/verify | recompute the audit hash chain |
//! | … | /api/patients/… | the patient identity index: see `http/patients.rs` |
//! | POST | /api/experts/match, /api/experts/heartbeat; GET /api/experts/fairness | expert matching ([`experts`]) |
//! | GET, POST | /api/match-decisions/{id}, /api/match-decisions/{id}/override | match explanations and overrides |
//! | … | /api/consultations/… | the consultation workflow and its live stream: see `http/consultations/` |
//! | … | /api/devices/… | device → patient bindings (issue 25): see `http/devices.rs` |
//! | … | /api/prescriptions, /api/appointments, /api/experts/{id}/queue, /api/cases, /api/stats | the care workflow ([`care`]) |
//! | … | /fhir/r4/… | the FHIR facade of `huizhen-fhir`, added through [`crate::extensions::HttpRoutes`] |
//!
//! Every error is JSON: `{"error": "…"}`. Bodies are limited to `http.max_body_bytes` and
//! requests to `http.request_timeout`.
//!
//! Every route except `/health`, `/ready` (and `/metrics` unless `security.public_metrics` is
//! off) needs a bearer token; [`guard`] authenticates it, checks the role against
//! [`crate::security::ROUTES`] and passes the [`Caller`] to the handler, which applies the
//! facility scope and writes the audit event of patient-data reads and writes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Notify;

use crate::config::HttpConfig;
use crate::message::{NewMessage, State as MsgState};
use crate::runner::{Metrics, PipelineHandle};
use crate::security::{AuthError, Principal, ROUTES, Scope, Security};
use crate::store::audit::{AuditEvent, AuditFilter};
use crate::store::{ListFilter, Store, StoreError};

/// A registered `http` source: its pipeline and configured message kind.
type IngressRoute = (PipelineHandle, Option<String>);

/// Paths of running `http` sources → their pipelines.
#[derive(Clone, Default)]
pub struct HttpIngress {
    routes: Arc<RwLock<HashMap<String, IngressRoute>>>,
}

impl HttpIngress {
    pub fn register(&self, path: &str, pipeline: PipelineHandle, kind: Option<String>) {
        if let Ok(mut r) = self.routes.write() {
            r.insert(path.to_owned(), (pipeline, kind));
        }
    }

    pub fn unregister(&self, path: &str) {
        if let Ok(mut r) = self.routes.write() {
            r.remove(path);
        }
    }

    /// Unregisters `path` if `pipeline` still holds it (a reload may have given the path to
    /// the pipeline's new version, or to another pipeline, meanwhile).
    pub fn unregister_for(&self, path: &str, pipeline: &PipelineHandle) {
        if let Ok(mut r) = self.routes.write()
            && r.get(path).is_some_and(|(p, _)| p.same_version(pipeline))
        {
            r.remove(path);
        }
    }

    pub(super) fn get(&self, path: &str) -> Option<IngressRoute> {
        self.routes.read().ok().and_then(|r| r.get(path).cloned())
    }
}

/// The scheme a request came in with (`https` on a TLS listener), put into each request's
/// extensions by [`serve`]; for absolute links in responses (FHIR Bundle paging).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheme(pub &'static str);

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// The running pipelines (a reload changes them: look them up, keep no copy).
    pub pipelines: crate::runner::Router,
    /// Reloads the pipeline files (`POST /api/pipelines/reload`).
    pub reloader: crate::runner::Reloader,
    pub metrics: Arc<Metrics>,
    pub ingress: HttpIngress,
    pub wake: Arc<Notify>,
    pub extensions: crate::extensions::Extensions,
    /// This process as a cluster node, with a broker queue.
    pub cluster: Option<crate::cluster::Node>,
    /// The engine's taps (`GET /api/tap`).
    pub taps: crate::runner::tap::Taps,
    /// The engine's shutdown: long-lived streams end on it.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// A JSON error response.
pub struct ApiError(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl ApiError {
    /// An internal failure: the details (driver messages, SQL, file paths, a remote system's
    /// text) go to the engine log under a reference, and the client gets only what failed and
    /// that reference.
    pub fn internal(status: StatusCode, what: &str, error: &dyn std::fmt::Display) -> ApiError {
        let reference = crate::message::new_id();
        tracing::error!(%reference, error = %error, "{what}");
        ApiError(
            status,
            format!("{what} (reference {reference}; the details are in the engine log)"),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => ApiError(StatusCode::NOT_FOUND, e.to_string()),
            StoreError::NotReprocessable { .. } | StoreError::Refused { .. } => {
                ApiError(StatusCode::CONFLICT, e.to_string())
            }
            _ => ApiError::internal(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store is not available; try again later",
                &e,
            ),
        }
    }
}

/// Who is calling, as [`guard`] found it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// The facilities whose data the caller may read (its own and those sharing with it).
    pub scope: Scope,
    /// The facilities into which the caller may write (send, reprocess): its own only.
    pub write_scope: Scope,
    /// The client's address.
    pub source: String,
    /// The `X-Purpose-Of-Use` header, if any.
    pub purpose: String,
}

impl Caller {
    /// An audit event of this caller; `.about(facility)` names the facility of the resource.
    pub fn event(
        &self,
        action: &str,
        resource_type: &str,
        resource_id: &str,
        outcome: &str,
        detail: String,
    ) -> AuditEvent {
        AuditEvent {
            actor: self.principal.sub.clone(),
            role: self.principal.role.as_str().to_owned(),
            facility: self.principal.facility.clone(),
            action: action.to_owned(),
            resource_type: resource_type.to_owned(),
            resource_id: resource_id.to_owned(),
            outcome: outcome.to_owned(),
            source: self.source.clone(),
            purpose: self.purpose.clone(),
            detail,
            subject_facility: String::new(),
        }
    }
}

/// Writes an audit event; a request whose audit cannot be written fails (503) rather than
/// going unrecorded.
async fn audit(store: &Store, e: &AuditEvent) -> Result<(), ApiError> {
    store.audit(e).await.map(|_| ()).map_err(|err| {
        tracing::error!(error = %err, action = %e.action, "audit event not written; refusing the request");
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the audit trail cannot be written; try again later".into(),
        )
    })
}

mod audit;
mod billing;
mod care;
mod consultations;
mod devices;
mod experts;
mod guard;
pub mod history;
mod ingest;
mod messages;
mod ops;
mod patients;
mod plugins;
mod server;
mod tap;

use audit::{audit_events, audit_verify};
pub use consultations::{ActRefusal, act_as, domain_role};
pub use guard::guard;
use ingest::ingest;
pub use messages::message_detail;
use messages::{get_message, list_messages, reprocess};
use ops::{backlog, cluster, health, metrics, pipelines, ready, reload_pipelines};
use plugins::{plugins, reload_plugin, shadow_change, shadow_report};
pub use server::{ServerStats, serve};

/// `/api/patients` (see `http/patients.rs`).
fn patient_routes() -> Router<AppState> {
    use patients::*;
    Router::new()
        .route("/api/patients/match", post(match_patients))
        .route("/api/patients/identifiers", get(identifier_lookup))
        .route(
            "/api/patients/{person_id}/identifiers",
            get(person_identifiers),
        )
        .route("/api/patients/review", get(review_list))
        .route("/api/patients/review/{id}/accept", post(review_accept))
        .route("/api/patients/review/{id}/reject", post(review_reject))
        .route("/api/patients/{person_id}/unlink", post(unlink))
        .route("/api/patients/{person_id}/relink", post(relink))
}

/// `/api/consultations` (see `http/consultations/`).
fn consultation_routes() -> Router<AppState> {
    use consultations::*;
    Router::new()
        .route("/api/consultations", post(create).get(list))
        .route("/api/consultations/events", get(events))
        .route("/api/consultations/{id}", get(get_one))
        .route("/api/consultations/{id}/{action}", post(act))
        .route("/api/consultations/{id}/room/tokens", post(issue_tokens))
        .route("/api/consultations/{id}/recording", post(record_call))
        .route("/api/consultations/{id}/recordings", get(list_recordings))
        .route(
            "/api/consultations/{id}/recordings/{recording}",
            get(download_recording),
        )
        .route("/api/consultations/{id}/call", get(call_view))
}

/// Builds the router. Every route but the public ones goes through [`guard`].
pub fn router(state: AppState, cfg: &HttpConfig, security: Arc<Security>) -> Router {
    let (request_timeout, transfer_timeout) = (cfg.request_timeout, cfg.transfer_timeout);
    // Room tokens (RTC-04): issued by the consultation API, verified by the signaling of
    // `huizhen-media`, both through the engine's extensions.
    let _ = state
        .extensions
        .get_or_try_init(|| Ok::<_, std::convert::Infallible>(security.room_tokens().clone()));
    // The console (huizhen-console) checks its sessions and logins with the same security.
    let _ = state
        .extensions
        .get_or_try_init(|| Ok::<_, std::convert::Infallible>(security.clone()));
    // The dashboard's series: one sampler per engine.
    let mut started = false;
    if let Ok(h) = state.extensions.get_or_try_init(|| {
        started = true;
        Ok::<_, std::convert::Infallible>(history::History::default())
    }) && started
    {
        tokio::spawn(history::sample(state.clone(), h));
    }
    let mut app = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/pipelines", get(pipelines))
        .route("/api/pipelines/reload", post(reload_pipelines))
        .route("/api/pipelines/history", get(history::pipeline_history))
        .route("/api/tap", get(tap::tap))
        .route("/api/pipelines/{name}/shadow", get(shadow_report))
        .route(
            "/api/pipelines/{name}/shadow/{plugin}/{action}",
            post(shadow_change),
        )
        .route("/api/messages", get(list_messages))
        .route("/api/messages/{id}", get(get_message))
        .route("/api/messages/{id}/reprocess", post(reprocess))
        .route("/api/messages/{id}/dead", post(messages::move_to_dead))
        .route("/in/{*path}", post(ingest))
        .route("/api/audit", get(audit_events))
        .route("/api/audit/verify", get(audit_verify))
        .route("/api/backlog", get(backlog))
        .route("/api/cluster", get(cluster))
        .route("/api/plugins", get(plugins))
        .route("/api/plugins/{name}/reload", post(reload_plugin))
        .merge(patient_routes())
        .merge(consultation_routes())
        .route("/api/experts/match", post(experts::match_case))
        .route("/api/experts/heartbeat", post(experts::heartbeat))
        .route("/api/experts/fairness", get(experts::fairness))
        .route("/api/match-decisions/{id}", get(experts::get_decision))
        .route(
            "/api/match-decisions/{id}/override",
            post(experts::override_decision),
        )
        .merge(care::routes())
        .merge(billing::routes())
        .route(
            "/api/devices/bindings",
            get(devices::list_bindings).post(devices::bind),
        )
        .route("/api/devices/{device}/unbind", post(devices::unbind));
    // Routes of adapters (the FHIR facade): before the guard, like every route above.
    for extra in inventory::iter::<crate::extensions::HttpRoutes> {
        app = app.merge((extra.routes)());
    }
    app.route_layer(middleware::from_fn_with_state(security, guard))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        .layer(middleware::from_fn(
            move |req: Request, next: Next| async move {
                // Long transfers (DICOMweb) have their own deadline (`http.transfer_timeout`).
                let timeout = if crate::extensions::is_transfer_path(req.uri().path()) {
                    transfer_timeout
                } else {
                    request_timeout
                };
                match tokio::time::timeout(timeout, next.run(req)).await {
                    Ok(r) => r,
                    Err(_) => ApiError(
                        StatusCode::REQUEST_TIMEOUT,
                        format!("request took longer than {timeout:?}"),
                    )
                    .into_response(),
                }
            },
        ))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store failure answers with what failed and a reference, never the driver's text (which
    /// names tables, SQL, file paths or a remote system's words).
    #[tokio::test]
    async fn store_errors_keep_their_details_out_of_the_response() {
        let e = StoreError::Query {
            op: "append messages",
            source: sqlx::Error::Protocol(
                "relation \"messages\" at /var/lib/postgresql/15/main: disk full".into(),
            ),
        };
        let r = ApiError::from(e).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("the store is not available"), "{text}");
        assert!(text.contains("reference "), "{text}");
        for leak in ["relation", "/var/lib", "disk full", "append messages"] {
            assert!(!text.contains(leak), "{leak} in {text}");
        }
        // Not-found and conflicts keep their own clear words.
        let r = ApiError::from(StoreError::NotFound("m1".into())).into_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
}
