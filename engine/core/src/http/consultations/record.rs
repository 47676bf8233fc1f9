//! `POST /api/consultations/{id}/recording` `{"action": "start" | "stop"}`: start or stop the
//! recording of the consultation's call from the API (issue 18, RTC-30), with the same rules
//! as the `record` signaling message — the media adapter applies them ([`CallControl`]): the
//! informed consent and every present participant's recording consent on file, the room held
//! now; everyone in the room gets `recording`; start, stop and refusals are audited.
//!
//! Who: the accepted expert (as the room's expert), or a local doctor of the requesting
//! facility (as the local physician); both room roles may record (RTC-04). Answers 200
//! `{"consultation", "room", "recording", "active"}`; 403 for another expert or facility;
//! 409 `no-recording-consent` (naming who has not consented), `already-recording`,
//! `not-recording`, `not-in-call` (nobody in the room); 503 `recording-unavailable` when the
//! engine has no object store or no media adapter.

use huizhen_domain::consultation::room::{RoomRole, room_id};

use super::*;
use crate::media::{CallControl, RecordRequest, call_control};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordBody {
    action: String,
}

/// A refusal with its code, audited as denied.
async fn refuse(
    s: &AppState,
    caller: &Caller,
    id: &str,
    facility: &str,
    action: &str,
    (status, code, why): (StatusCode, &str, String),
) -> Result<Response, WfError> {
    audit(
        &s.store,
        &caller
            .event(action, "Consultation", id, "denied", why.clone())
            .about(facility),
    )
    .await?;
    Err(WfError::Body(status, json!({ "error": why, "code": code })))
}

pub(in crate::http) async fn record_call(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, WfError> {
    let wf = workflow(&s)?;
    let stored = readable(&s, &wf, &caller, &id, "recording.start").await?;
    let request: RecordBody = from_json(serde_json::Value::Object(body_object(&body)?))?;
    let active = match request.action.as_str() {
        "start" => true,
        "stop" => false,
        other => {
            return Err(unprocessable(
                "action",
                format!("{other:?} is not start or stop"),
            ));
        }
    };
    let action = if active {
        "recording.start"
    } else {
        "recording.stop"
    };
    let c = &stored.consultation;
    let facility = c.request().requesting_facility.clone();
    let role = match caller.principal.role {
        Role::Expert if c.accepted_by() == Some(caller.principal.sub.as_str()) => RoomRole::Expert,
        Role::LocalDoctor if may_write(&caller, &stored) => RoomRole::LocalPhysician,
        _ => {
            let why = "only the accepted expert or a local doctor of the requesting facility starts or stops the call's recording".to_owned();
            return refuse(
                &s,
                &caller,
                &id,
                &facility,
                action,
                (StatusCode::FORBIDDEN, "not-permitted", why),
            )
            .await;
        }
    };
    let control: std::sync::Arc<dyn CallControl> = match call_control(&s) {
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            return Err(WfError::Body(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": e, "code": "recording-unavailable" }),
            ));
        }
        None => {
            return Err(WfError::Body(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": "this engine has no media adapter", "code": "recording-unavailable" }),
            ));
        }
    };
    let req = RecordRequest {
        consultation: id.clone(),
        by: caller.principal.sub.clone(),
        role,
        active,
        source: caller.source.clone(),
    };
    match control.record(req).await {
        Ok(recording) => Ok(Json(json!({
            "consultation": id,
            "room": room_id(&id),
            "recording": recording,
            "active": active,
        }))
        .into_response()),
        Err(e) => {
            let status = match e.code {
                "not-permitted" => StatusCode::FORBIDDEN,
                "recording-unavailable" | "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::CONFLICT,
            };
            // The media adapter audits its own refusals (consent); the others are audited here.
            if e.code == "no-recording-consent" || e.code == "not-permitted" {
                return Err(WfError::Body(
                    status,
                    json!({ "error": e.message, "code": e.code }),
                ));
            }
            refuse(
                &s,
                &caller,
                &id,
                &facility,
                action,
                (status, e.code, e.message),
            )
            .await
        }
    }
}
