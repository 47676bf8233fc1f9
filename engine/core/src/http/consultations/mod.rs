//! The consultation workflow over HTTP (issue 15; STANDARDS FHIR-10, FHIR-11, MATCH-21).
//!
//! | method | path | what | roles |
//! |---|---|---|---|
//! | POST | /api/consultations | create from the domain's `ConsultationRequest` (201, `drafting`) | admin, integrator, local-doctor |
//! | GET | /api/consultations?state=&facility=&department=&patient=&limit=&cursor= | a page, newest first | admin, integrator, auditor, expert, local-doctor |
//! | GET | /api/consultations/{id} | state, Task status and businessStatus, version (`ETag: W/"n"`), the timeline, the outbound events | as above |
//! | POST | /api/consultations/{id}/{action} | every action of the domain (`submit`, `accept`, `record_consent`, …; `-` or `_`) | admin, integrator, expert, local-doctor |
//! | POST | /api/consultations/{id}/room/tokens | the call's room tokens, one per participant ([`room`], RTC-04) | admin, integrator, expert (own), local-doctor |
//! | POST | /api/consultations/{id}/recording | `{"action": "start"\|"stop"}` the call's recording ([`record`], RTC-30) | expert (accepted), local-doctor |
//! | GET | /api/consultations/{id}/recordings | the call's recorded tracks ([`recordings`], RTC-30, CN-30) | admin, auditor, expert, local-doctor |
//! | GET | /api/consultations/{id}/recordings/{recording} | one track, decrypted (`x-content-sha256`) | as above |
//! | GET | /api/consultations/{id}/call | the call: who joined when and left, the quality per session and track, the alerts ([`call`], RTC-20) | as for reads |
//! | GET | /api/consultations/events | Server-Sent Events of the changes the caller may see ([`stream`]) | as for reads |
//!
//! **Who acts.** The actor is the token's subject, its domain role from the token's role:
//! `local-doctor` → local doctor, `expert` → expert (the subject is the expert id, so an
//! expert can only open or accept an offer made to them), `admin` and `integrator` →
//! coordinator (the dispatch desk). The domain decides what each may do; a local doctor
//! creates a consultation only as its `requesting_doctor` (403 `not-requesting-doctor`
//! otherwise), a coordinator on a doctor's behalf.
//!
//! **Scope.** A consultation is visible to the facilities in its access list: the requesting
//! facility and the facility of every expert it was offered to; others get 404 (audited as
//! denied). Acting needs the requesting facility in the caller's write scope, except for an
//! expert, who acts from an offered facility.
//!
//! **Errors** are JSON: `{"error", "code", "allowed", "missing", "problems", "taken_by"}` as
//! they apply: 409 with the allowed actions for an invalid transition, 412 "the case is taken
//! by …" for a lost acceptance race or a stale `If-Match`, 422 naming each field path, 428 for
//! an `accept` without a version. Every change is audited by the store in its transaction;
//! every read and every refusal is audited here.

mod call;
mod record;
mod recordings;
mod room;
mod stream;

use huizhen_domain::consultation::{
    Action, Actor, Command, ConsultError, ConsultationRequest, Role as DomainRole, State as CState,
};

use super::*;
use crate::security::Role;
use crate::store::consultations::{
    CommandBy, ConsultationError, ConsultationFilter, StoredConsultation,
};
use crate::workflow::Workflow;

pub(super) use call::call_view;
pub(super) use record::record_call;
pub(super) use recordings::{download_recording, list_recordings};
pub(super) use room::issue_tokens;
pub(super) use stream::events;

/// A refusal of the workflow API, rendered as the JSON error body.
pub(super) enum WfError {
    Api(ApiError),
    Domain(ConsultError),
    /// A status and a JSON body of its own.
    Body(StatusCode, serde_json::Value),
}

impl From<ApiError> for WfError {
    fn from(e: ApiError) -> Self {
        WfError::Api(e)
    }
}

impl From<StoreError> for WfError {
    fn from(e: StoreError) -> Self {
        WfError::Api(e.into())
    }
}

impl From<ConsultationError> for WfError {
    fn from(e: ConsultationError) -> Self {
        match e {
            ConsultationError::NotFound(id) => WfError::Api(ApiError(
                StatusCode::NOT_FOUND,
                format!("no consultation {id}"),
            )),
            ConsultationError::Refused(d) => WfError::Domain(d),
            ConsultationError::Busy(m) => WfError::Api(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("consultation {m}: too many concurrent changes; try again"),
            )),
            ConsultationError::Store(s) => WfError::Api(s.into()),
        }
    }
}

/// The JSON body of a domain refusal.
fn domain_body(e: &ConsultError) -> serde_json::Value {
    let mut v = json!({ "error": e.to_string(), "code": e.code() });
    match e {
        ConsultError::InvalidTransition { from, allowed, .. } => {
            v["state"] = json!(from.code());
            v["allowed"] = json!(allowed.iter().map(|a| a.name()).collect::<Vec<_>>());
        }
        ConsultError::Missing { missing, .. } => {
            v["missing"] = json!(missing.iter().map(ToString::to_string).collect::<Vec<_>>());
            // Each with the rule of STANDARDS.md §4 it comes from.
            v["rules"] = json!(
                missing
                    .iter()
                    .map(|m| json!({ "rule": m.rule(), "reason": m.to_string() }))
                    .collect::<Vec<_>>()
            );
        }
        ConsultError::Request(r) => v["problems"] = json!(r.0),
        ConsultError::Invalid { problems, .. } => v["problems"] = json!(problems),
        ConsultError::Taken { by } => v["taken_by"] = json!(by),
        ConsultError::VersionConflict { actual, .. } => v["version"] = json!(actual),
        ConsultError::MissingReason { .. } => {
            v["problems"] = json!([{"path": "reason", "problem": "is required"}])
        }
        ConsultError::FailReasonNotAllowed { allowed, .. } => {
            v["allowed"] = json!(allowed.iter().map(|r| r.code()).collect::<Vec<_>>());
        }
        _ => {}
    }
    v
}

impl IntoResponse for WfError {
    fn into_response(self) -> Response {
        match self {
            WfError::Api(e) => e.into_response(),
            WfError::Domain(e) => {
                let status =
                    StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                (status, Json(domain_body(&e))).into_response()
            }
            WfError::Body(status, body) => (status, Json(body)).into_response(),
        }
    }
}

impl WfError {
    fn status(&self) -> StatusCode {
        match self {
            WfError::Api(e) => e.0,
            WfError::Domain(e) => {
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            WfError::Body(s, _) => *s,
        }
    }

    fn text(&self) -> String {
        match self {
            WfError::Api(e) => e.1.clone(),
            WfError::Domain(e) => e.to_string(),
            WfError::Body(_, b) => b["error"].as_str().unwrap_or_default().to_owned(),
        }
    }
}

fn unprocessable(path: &str, problem: impl Into<String>) -> WfError {
    let problem = problem.into();
    WfError::Body(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({
            "error": format!("{path}: {problem}"),
            "code": "invalid-request",
            "problems": [{ "path": path, "problem": problem }],
        }),
    )
}

/// Reads a JSON value into `T`; an error names the field path (`attachments.studies[1]`).
fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, WfError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." || path.is_empty() {
            "(body)".to_owned()
        } else {
            path
        };
        unprocessable(&path, e.into_inner().to_string())
    })
}

/// The body as a JSON object (an empty body is `{}`).
fn body_object(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, WfError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object".into(),
        )
        .into()),
        Err(e) => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("the body is not JSON: {e}"),
        )
        .into()),
    }
}

/// The workflow service of this engine.
fn workflow(s: &AppState) -> Result<Arc<Workflow>, WfError> {
    s.extensions.get::<Workflow>().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the consultation workflow is not running in this engine".into(),
        )
        .into()
    })
}

/// The domain role a token's role acts in; `None` for roles that never act on consultations.
pub fn domain_role(role: Role) -> Option<DomainRole> {
    match role {
        Role::Admin | Role::Integrator => Some(DomainRole::Coordinator),
        Role::LocalDoctor => Some(DomainRole::LocalDoctor),
        Role::Expert => Some(DomainRole::Expert),
        Role::Auditor | Role::Pharmacist | Role::Patient | Role::Logistics => None,
    }
}

fn actor_of(caller: &Caller) -> Result<Actor, WfError> {
    let role = domain_role(caller.principal.role).ok_or_else(|| {
        ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "role {} does not act on consultations",
                caller.principal.role
            ),
        )
    })?;
    Ok(Actor::new(caller.principal.sub.clone(), role))
}

fn by<'a>(caller: &'a Caller, actor: &'a Actor) -> CommandBy<'a> {
    let mut by = CommandBy::new(actor);
    by.facility = &caller.principal.facility;
    by.source = &caller.source;
    by.purpose = &caller.purpose;
    by
}

/// The weak ETag of a version.
fn etag(version: u64) -> String {
    format!("W/\"{version}\"")
}

/// A version from `If-Match` (`W/"3"`, `"3"` or `3`); `Err` names what is wrong.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, WfError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = v.to_str().unwrap_or("").trim();
    let bare = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    bare.parse::<u64>().map(Some).map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("If-Match: {text:?} is not a consultation version (W/\"n\")"),
        )
        .into()
    })
}

/// What the API shows of a consultation: the aggregate, its FHIR Task status and
/// businessStatus, the allowed actions, the timeline, and the access list.
fn view(s: &StoredConsultation) -> serde_json::Value {
    let c = &s.consultation;
    let mut v = serde_json::to_value(c).unwrap_or_else(|_| json!({}));
    v["state"] = json!(c.state().code());
    v["status"] = json!(c.state().task_status().code());
    v["businessStatus"] = json!(c.state().code());
    v["allowed"] = json!(
        c.allowed_actions()
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>()
    );
    v["milestones"] = serde_json::to_value(c.milestones()).unwrap_or_default();
    v["studies"] = serde_json::to_value(c.studies()).unwrap_or_default();
    v["facilities"] = json!(s.facilities);
    v["candidates"] = json!(s.candidates);
    v["match_decision"] = json!(s.match_decision);
    v["created_at"] = json!(s.created_at);
    v["updated_at"] = json!(s.updated_at);
    v
}

fn respond(status: StatusCode, s: &StoredConsultation) -> Response {
    respond_with(status, s, view(s))
}

/// `body` (the view of `s`, with more) and the ETag of `s`.
fn respond_with(status: StatusCode, s: &StoredConsultation, body: serde_json::Value) -> Response {
    let mut r = (status, Json(body)).into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&etag(s.consultation.version())) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

/// The consultation if the caller may read it; 404 (audited as denied) otherwise.
async fn readable(
    s: &AppState,
    wf: &Workflow,
    caller: &Caller,
    id: &str,
    action: &str,
) -> Result<StoredConsultation, WfError> {
    let not_found = || ApiError(StatusCode::NOT_FOUND, format!("no consultation {id}"));
    let Some(stored) = wf.store().consultation(id).await? else {
        return Err(not_found().into());
    };
    if !stored.facilities.iter().any(|f| caller.scope.allows(f)) {
        let facility = stored.consultation.request().requesting_facility.clone();
        audit(
            &s.store,
            &caller
                .event(
                    action,
                    "Consultation",
                    id,
                    "denied",
                    format!("facility {facility} is outside the caller's scope"),
                )
                .about(&facility),
        )
        .await?;
        return Err(not_found().into());
    }
    Ok(stored)
}

/// A consultation the caller may see, its read audited as `action`.
async fn read_audited(
    s: &AppState,
    wf: &Workflow,
    caller: &Caller,
    id: &str,
    action: &str,
) -> Result<StoredConsultation, WfError> {
    let stored = readable(s, wf, caller, id, action).await?;
    let facility = stored.consultation.request().requesting_facility.clone();
    audit(
        &s.store,
        &caller
            .event(action, "Consultation", id, "success", String::new())
            .about(&facility),
    )
    .await?;
    Ok(stored)
}

pub(super) async fn create(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Bytes,
) -> Result<Response, WfError> {
    let wf = workflow(&s)?;
    let object = body_object(&body)?;
    let request: ConsultationRequest = from_json(serde_json::Value::Object(object))?;
    let facility = request.requesting_facility.trim().to_owned();
    if !caller.write_scope.allows(&facility) {
        let reason = format!(
            "requesting_facility: {} may not request consultations for {facility}",
            caller.principal.facility
        );
        audit(
            &s.store,
            &caller
                .event(
                    "consultation.create",
                    "Consultation",
                    "",
                    "denied",
                    reason.clone(),
                )
                .about(&facility),
        )
        .await?;
        return Err(ApiError(StatusCode::FORBIDDEN, reason).into());
    }
    let actor = actor_of(&caller)?;
    let id = crate::message::new_id();
    // The domain refuses a local doctor asking in another doctor's name (403) and an invalid
    // request (422); each refusal is audited like a refused action.
    let (stored, _) = match wf.create(&id, request, &by(&caller, &actor), None).await {
        Ok(created) => created,
        Err(e) => {
            let e = WfError::from(e);
            let outcome = if e.status() == StatusCode::FORBIDDEN {
                "denied"
            } else {
                "failed"
            };
            audit(
                &s.store,
                &caller
                    .event("consultation.create", "Consultation", "", outcome, e.text())
                    .about(&facility),
            )
            .await?;
            return Err(e);
        }
    };
    let mut r = respond(StatusCode::CREATED, &stored);
    if let Ok(v) = axum::http::HeaderValue::from_str(&format!("/api/consultations/{id}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

pub(super) async fn get_one(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, WfError> {
    let wf = workflow(&s)?;
    let stored = read_audited(&s, &wf, &caller, &id, "consultation.read").await?;
    // What it announced (the signed opinion for the HIS, notices), with when each reached
    // its pipeline's journal and as which message.
    let mut body = view(&stored);
    body["outbound"] = json!(s.store.outbox_of(&id).await?);
    Ok(respond_with(StatusCode::OK, &stored, body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    state: Option<String>,
    facility: Option<String>,
    department: Option<String>,
    patient: Option<u64>,
    limit: Option<i64>,
    cursor: Option<String>,
}

pub(super) async fn list(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, WfError> {
    let wf = workflow(&s)?;
    let clean = |v: Option<String>| v.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
    let state = clean(q.state);
    if let Some(st) = &state
        && CState::from_code(st).is_none()
    {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "state: {st:?} is not a consultation state ({})",
                CState::ALL.map(|s| s.code()).join(", ")
            ),
        )
        .into());
    }
    let filter = ConsultationFilter {
        state,
        facility: clean(q.facility),
        department: clean(q.department),
        patient: q.patient,
        scope: caller.scope.facilities(),
        limit: q.limit,
        cursor: clean(q.cursor),
    };
    let page = wf.store().list_consultations(&filter).await?;
    let detail = format!(
        "state={} facility={} department={} patient={} → {} consultations",
        filter.state.as_deref().unwrap_or(""),
        filter.facility.as_deref().unwrap_or(""),
        filter.department.as_deref().unwrap_or(""),
        filter.patient.map(|p| p.to_string()).unwrap_or_default(),
        page.consultations.len()
    );
    audit(
        &s.store,
        &caller.event("consultation.list", "Consultation", "", "success", detail),
    )
    .await?;
    Ok(Json(serde_json::to_value(&page).unwrap_or_default()))
}

/// An action name from the URL: the domain's snake_case names, `-` accepted for `_`.
fn action_of(name: &str) -> Result<Action, WfError> {
    let wanted = name.trim().replace('-', "_");
    Action::ALL
        .into_iter()
        .find(|a| a.name() == wanted)
        .ok_or_else(|| {
            WfError::Body(
                StatusCode::NOT_FOUND,
                json!({
                    "error": format!("no consultation action {name:?}"),
                    "code": "unknown-action",
                    "actions": Action::ALL.map(|a| a.name()),
                }),
            )
        })
}

/// Whether the caller may act on `stored`: an expert from any facility of its access list
/// (the domain then lets only an offered or the accepted expert act); everyone else from the
/// requesting facility.
fn may_write(caller: &Caller, stored: &StoredConsultation) -> bool {
    if caller.principal.role == Role::Expert {
        stored
            .facilities
            .iter()
            .any(|f| caller.write_scope.allows(f))
    } else {
        caller
            .write_scope
            .allows(&stored.consultation.request().requesting_facility)
    }
}

/// The command of `action` from the body, with what the API adds: an empty reason where one
/// is required but absent (so the domain answers 422 `missing-reason`), the version of an
/// accept, an SLA deadline for an offer or fan-out that gives none.
fn command_of(
    wf: &Workflow,
    stored: &StoredConsultation,
    action: Action,
    mut body: serde_json::Map<String, serde_json::Value>,
    expected: Option<u64>,
) -> Result<Command, WfError> {
    if action.needs_reason() {
        body.entry("reason").or_insert_with(|| json!(""));
    }
    if action == Action::Accept {
        let from_body = body
            .remove("version")
            .or_else(|| body.remove("expected_version"));
        let version = match (expected, from_body) {
            (Some(v), _) => v,
            (None, Some(v)) => v
                .as_u64()
                .ok_or_else(|| unprocessable("version", "is not a version number"))?,
            (None, None) => {
                return Err(WfError::Body(
                    StatusCode::PRECONDITION_REQUIRED,
                    json!({
                        "error": "accept needs the version the expert saw: If-Match: W/\"n\" or a `version` field",
                        "code": "version-required",
                        "version": stored.consultation.version(),
                    }),
                ));
            }
        };
        body.insert("expected_version".into(), json!(version));
    }
    if matches!(action, Action::Offer | Action::FanOut) && !body.contains_key("deadline") {
        let c = &stored.consultation;
        let facility = body
            .get("to")
            .and_then(|t| t.get("facility"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        let deadline = wf.sla().deadline(
            &c.sla_key(facility.as_deref()),
            c.request().urgency,
            wf.now(),
        );
        body.insert("deadline".into(), json!(deadline));
    }
    body.insert("action".into(), json!(action.name()));
    from_json(serde_json::Value::Object(body))
}

pub(super) async fn act(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WfError> {
    let action = action_of(&name)?;
    let input = if_match(&headers).and_then(|expected| Ok((expected, body_object(&body)?)));
    let done = act_parsed(&s, &caller, &id, action, input).await?;
    Ok(respond(StatusCode::OK, &done))
}

/// Why [`act_as`] refused: the status and the JSON body `POST /api/consultations/{id}/{action}`
/// answers with (`error`, `code`, and `allowed`, `problems`, `taken_by`, `version` as they
/// apply).
#[derive(Debug, Clone)]
pub struct ActRefusal {
    pub status: StatusCode,
    pub body: serde_json::Value,
}

/// Runs `action` on consultation `id` for `caller` exactly as
/// `POST /api/consultations/{id}/{action}` does — read scope (404), write scope (403), the
/// domain's decision, the audit of a refusal — with `expected` as its `If-Match` and `body` as
/// its JSON body. For other front ends of the workflow (the FHIR facade's Task update).
pub async fn act_as(
    s: &AppState,
    caller: &Caller,
    id: &str,
    action: Action,
    expected: Option<u64>,
    body: serde_json::Map<String, serde_json::Value>,
) -> Result<StoredConsultation, ActRefusal> {
    act_parsed(s, caller, id, action, Ok((expected, body)))
        .await
        .map_err(|e| {
            let status = e.status();
            let body = match e {
                WfError::Api(ApiError(_, text)) => json!({ "error": text }),
                WfError::Domain(d) => domain_body(&d),
                WfError::Body(_, b) => b,
            };
            ActRefusal { status, body }
        })
}

type ActInput = Result<(Option<u64>, serde_json::Map<String, serde_json::Value>), WfError>;

async fn act_parsed(
    s: &AppState,
    caller: &Caller,
    id: &str,
    action: Action,
    input: ActInput,
) -> Result<StoredConsultation, WfError> {
    let wf = workflow(s)?;
    let audit_action = format!("consultation.{}", action.name());
    let stored = readable(s, &wf, caller, id, &audit_action).await?;
    let facility = stored.consultation.request().requesting_facility.clone();
    let result = run_action(&wf, caller, &stored, action, input).await;
    match result {
        Ok(done) => Ok(done),
        Err(e) => {
            let outcome = if e.status() == StatusCode::FORBIDDEN {
                "denied"
            } else {
                "failed"
            };
            audit(
                &s.store,
                &caller
                    .event(&audit_action, "Consultation", id, outcome, e.text())
                    .about(&facility),
            )
            .await?;
            Err(e)
        }
    }
}

async fn run_action(
    wf: &Workflow,
    caller: &Caller,
    stored: &StoredConsultation,
    action: Action,
    input: ActInput,
) -> Result<StoredConsultation, WfError> {
    if !may_write(caller, stored) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "{} may not act on consultations of {}",
                caller.principal.facility,
                stored.consultation.request().requesting_facility
            ),
        )
        .into());
    }
    let actor = actor_of(caller)?;
    let (expected, body) = input?;
    let reason = body
        .get("reason")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned);
    let command = command_of(wf, stored, action, body, expected)?;
    let mut by = by(caller, &actor);
    if !action.needs_reason() {
        by.reason = reason.as_deref().filter(|r| !r.trim().is_empty());
    }
    // An accept carries its version in the command (the domain tells a lost race from a
    // stale version); other actions are checked against If-Match when one is given.
    let guard = if action == Action::Accept {
        None
    } else {
        expected
    };
    let done = wf
        .execute(stored.consultation.id(), guard, &command, &by)
        .await?;
    Ok(done.stored)
}
