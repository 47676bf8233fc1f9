//! The care workflow over HTTP (issue 15 items 4, 7, 8, 9; STANDARDS CN-20, CN-21): the
//! handlers turn a request into a domain command with the caller as the actor, persist what the
//! domain decided through `store::care`, and map the domain's refusals to statuses.
//!
//! | method | path | what | roles |
//! |---|---|---|---|
//! | POST | /api/prescriptions | draft (a physician personally; CN-20) | expert, local-doctor |
//! | GET | /api/prescriptions?state=&consultation=&limit= | list; `state=pending-review` is the pharmacist's queue | admin, integrator, auditor, expert, local-doctor, pharmacist |
//! | GET | /api/prescriptions/{id} | one, with its history, outbound events and canonical form | same |
//! | POST | /api/prescriptions/{id}/{action} | `revise`, `sign`, `submit`, `approve`, `reject`, `cancel` | admin, integrator, expert, local-doctor, pharmacist (the domain decides per action) |
//! | POST | /api/prescriptions/{id}/delivery | the logistics webhook (药品配送) | logistics |
//! | POST | /api/appointments | book | admin, integrator, expert, local-doctor |
//! | GET | /api/appointments/{id} | one booking | admin, integrator, auditor, expert, local-doctor |
//! | POST | /api/appointments/{id}/cancel | cancel with a reason | admin, integrator, expert, local-doctor |
//! | POST | /api/appointments/{id}/join | record the caller joining | expert, local-doctor, patient |
//! | GET | /api/experts/{id}/queue?date= | the expert's waiting queue for a local day | admin, integrator, expert (own) |
//! | GET | /api/cases?icd=&department=&flag=&limit= | search the de-identified case library | admin, integrator, auditor, expert, local-doctor |
//! | GET | /api/cases/recommend?doctor=&icd=&flag=&limit= | ranked cases with reasons | same |
//! | GET | /api/stats?from=&to=&facility=&format= | statistics, JSON or CSV | admin, integrator, auditor |
//!
//! **The actor.** The domain's actor comes from the token, never from the body: its subject and
//! role (`admin`/`integrator` act as the platform's coordinators). A token that is an **API key**
//! is a system credential: it acts as the domain's `system` actor whatever role it names, so
//! it can never draft a prescription (the domain refuses an automated actor, CN-20). The route
//! table keeps every other role out of drafting.
//!
//! **Errors** are JSON with `error` (the domain's message, naming the field or the state),
//! `code`, and the details a client needs (`allowed` actions, the refused line, the conflicting
//! booking).

mod appointments;
mod cases;
mod prescriptions;
mod stats;

use axum::extract::Query;
use chrono::{DateTime, NaiveDate, Utc};
use huizhen_domain::prescription::{Actor, Role as RxRole};

use super::*;
use crate::care::Care;
use crate::security::Role;

/// The care routes (merged into the router by [`super::router`]).
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/prescriptions",
            post(prescriptions::draft).get(prescriptions::list),
        )
        .route("/api/prescriptions/{id}", get(prescriptions::detail))
        .route(
            "/api/prescriptions/{id}/delivery",
            post(prescriptions::delivery),
        )
        .route("/api/prescriptions/{id}/{action}", post(prescriptions::act))
        .route("/api/appointments", post(appointments::book))
        .route("/api/appointments/{id}", get(appointments::detail))
        .route("/api/appointments/{id}/cancel", post(appointments::cancel))
        .route("/api/appointments/{id}/join", post(appointments::join))
        .route("/api/experts/{id}/queue", get(appointments::queue))
        .route("/api/cases", get(cases::search))
        .route("/api/cases/recommend", get(cases::recommend))
        .route("/api/stats", get(stats::stats))
        .route(
            "/api/compliance/regulator/daily",
            get(stats::regulator_daily),
        )
}

/// A refusal with a JSON body: `error`, and for domain refusals `code` and details.
pub(super) struct Refusal(StatusCode, serde_json::Value);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal(e.0, json!({ "error": e.1 }))
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal(status, json!({ "error": message.into() }))
    }

    /// The refusal's message, for the audit event.
    fn message(&self) -> String {
        self.1["error"].as_str().unwrap_or_default().to_owned()
    }
}

type Reply = Result<Response, Refusal>;

/// The domain's actor for `caller`: its subject in its role; an API key acts as `system`.
pub(super) fn actor_of(caller: &Caller) -> Actor {
    let p = &caller.principal;
    let role = if p.method == "api-key" {
        RxRole::System
    } else {
        match p.role {
            Role::Expert => RxRole::Expert,
            Role::LocalDoctor => RxRole::LocalDoctor,
            Role::Pharmacist => RxRole::Pharmacist,
            Role::Patient => RxRole::Patient,
            Role::Admin | Role::Integrator => RxRole::Coordinator,
            Role::Auditor | Role::Logistics => RxRole::System,
        }
    };
    Actor::new(p.sub.clone(), role)
}

/// Parses a JSON body into `T`: 400 when it is not JSON, 422 when it does not fit (naming the
/// field). An empty body is `{}`.
/// The facility a care request is made for: the body's `facility`, else the caller's own; a
/// platform token (facility `*`) must name one. `purpose` completes the error ("the facility
/// the prescription is issued for").
pub(super) fn requesting_facility(
    caller: &Caller,
    given: Option<&str>,
    purpose: &str,
) -> Result<String, Refusal> {
    match given.map(str::trim).filter(|f| !f.is_empty()) {
        Some(f) => Ok(f.to_owned()),
        None if caller.principal.facility == "*" => Err(Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("facility: a platform token (facility *) must name {purpose}"),
        )),
        None => Ok(caller.principal.facility.clone()),
    }
}

/// The client's id for a new record when it gave one (idempotent retries), else a new one.
pub(super) fn id_or_new(given: Option<&str>) -> String {
    given
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map_or_else(crate::message::new_id, str::to_owned)
}

pub(super) fn parse<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, Refusal> {
    let v: serde_json::Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("{what}: the body is not JSON: {e}"),
            )
        })?
    };
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!("{path}: ")
        };
        Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{what}: {at}{}", e.into_inner()),
        )
    })
}

/// A time parameter: RFC 3339, or a date (midnight UTC).
pub(super) fn instant(name: &str, text: &str) -> Result<DateTime<Utc>, Refusal> {
    let t = text.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("{name}: {t:?} is neither RFC 3339 nor YYYY-MM-DD"),
            )
        })
}

/// Query parameters as pairs (repeated keys kept), refusing names not in `known`.
pub(super) fn params(
    pairs: Vec<(String, String)>,
    known: &[&str],
) -> Result<Vec<(String, String)>, Refusal> {
    if let Some((k, _)) = pairs.iter().find(|(k, _)| !known.contains(&k.as_str())) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("unknown parameter {k:?} (known: {})", known.join(", ")),
        ));
    }
    Ok(pairs)
}

/// The value of a parameter given once (blank counts as absent).
pub(super) fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, v)| k == name && !v.trim().is_empty())
        .map(|(_, v)| v.trim())
}

/// `limit` between 1 and `max` (default `default`).
pub(super) fn limit(
    pairs: &[(String, String)],
    default: usize,
    max: usize,
) -> Result<usize, Refusal> {
    match param(pairs, "limit") {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    format!("limit: {v:?} is not a number from 1 to {max}"),
                )
            }),
    }
}

/// Writes an audit event; a change whose audit cannot be written is refused (503).
async fn audited(store: &Store, e: &AuditEvent) -> Result<(), Refusal> {
    audit(store, e).await.map_err(Refusal::from)
}

/// The care settings of this engine.
fn care(s: &AppState) -> std::sync::Arc<Care> {
    Care::of(&s.extensions)
}

/// `Query` of raw pairs, for handlers that read repeated keys.
type Pairs = Query<Vec<(String, String)>>;
