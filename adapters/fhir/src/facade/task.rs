//! `PUT /fhir/r4/Task/{id}`: a consultation moves along FHIR-10 through its Task (FHIR-11).
//!
//! The update must carry `If-Match: W/"n"` with the Task's current `versionId` (428 without
//! one; 412 with an OperationOutcome when it is stale, or when another expert accepted first).
//! The engine reads only `status`, `businessStatus` and `statusReason` of the body: the wanted
//! state is the businessStatus code, or else follows from the status, and the one domain
//! action that reaches it from the current state runs exactly as
//! `POST /api/consultations/{id}/{action}` would (same roles, scope, gates and audit):
//!
//! | wanted businessStatus (status) | action |
//! |---|---|
//! | pending-local-approval (requested, from draft) | submit |
//! | pending-match | approve |
//! | reviewing (received) | open |
//! | scheduled (accepted) | accept |
//! | declined (rejected) | reject, `statusReason` required |
//! | in-session (in-progress) | start from scheduled, resume from paused |
//! | paused (on-hold) | pause |
//! | report-pending | request_report |
//! | report-signed (completed) | complete |
//! | cancelled (cancelled) | cancel, `statusReason` required |
//! | sla-breached, technical-failure, no-show (failed) | fail, `statusReason` required |
//! | entered-in-error (entered-in-error) | mark_entered_in_error |
//!
//! Offers, gate records, opinions and decisions carry data a Task cannot: they stay on
//! `/api/consultations/{id}/{action}` (422 names it).

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use huizhen_domain::consultation::{Action, State};
use serde_json::{Value, json};

use super::consult::{BUSINESS_STATUS, task};
use super::context::{Ctx, with_meta};
use super::outcome::{Fail, resource};
use super::routes::json_body;

/// The version of an `If-Match` header (`W/"3"`, `"3"`, `3`).
fn if_match(headers: &HeaderMap) -> Result<u64, Fail> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Err(Fail::new(
            StatusCode::PRECONDITION_REQUIRED,
            "required",
            "a Task update needs If-Match: W/\"versionId\" (FHIR-11)",
        ));
    };
    let text = v.to_str().unwrap_or("").trim();
    let bare = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    bare.parse().map_err(|_| {
        Fail::invalid(
            "If-Match",
            format!("If-Match: {text:?} is not a version (W/\"n\")"),
        )
    })
}

/// The state the body asks for.
fn wanted(current: State, body: &Value) -> Result<State, Fail> {
    let code = body["businessStatus"]["coding"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["system"].as_str().is_none_or(|s| s == BUSINESS_STATUS))
        .and_then(|c| c["code"].as_str())
        .or_else(|| body["businessStatus"]["text"].as_str());
    if let Some(code) = code {
        return State::from_code(code).ok_or_else(|| {
            Fail::invalid(
                "Task.businessStatus",
                format!(
                    "{code:?} is not a consultation state ({})",
                    State::ALL.map(|s| s.code()).join(", ")
                ),
            )
        });
    }
    let status = body["status"]
        .as_str()
        .ok_or_else(|| Fail::invalid("Task.status", "status is required"))?;
    if status == current.task_status().code() {
        return Ok(current);
    }
    Ok(match (status, current) {
        ("requested", State::Drafting) => State::PendingLocalApproval,
        ("received", _) => State::Reviewing,
        ("accepted", _) => State::Scheduled,
        ("rejected", _) => State::Declined,
        ("in-progress", State::InSession | State::ReportPending) => current,
        ("in-progress", _) => State::InSession,
        ("on-hold", _) => State::Paused,
        ("completed", _) => State::ReportSigned,
        ("cancelled", _) => State::Cancelled,
        ("entered-in-error", _) => State::EnteredInError,
        ("failed", _) => {
            return Err(Fail::invalid(
                "Task.businessStatus",
                "a failed Task needs its businessStatus: sla-breached, technical-failure or no-show",
            ));
        }
        (other, _) => {
            return Err(Fail::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "business-rule",
                format!(
                    "status {other:?} cannot be reached through a Task update from {}",
                    current.code()
                ),
            ));
        }
    })
}

/// The action that goes from `current` to `target`.
fn action(current: State, target: State) -> Result<Action, Fail> {
    Ok(match target {
        State::PendingLocalApproval => Action::Submit,
        State::PendingMatch => Action::Approve,
        State::Reviewing => Action::Open,
        State::Scheduled => Action::Accept,
        State::Declined => Action::Reject,
        State::InSession if current == State::Paused => Action::Resume,
        State::InSession => Action::Start,
        State::Paused => Action::Pause,
        State::ReportPending => Action::RequestReport,
        State::ReportSigned => Action::Complete,
        State::Cancelled => Action::Cancel,
        State::Failed(_) => Action::Fail,
        State::EnteredInError => Action::MarkEnteredInError,
        State::Drafting | State::Offered => {
            return Err(Fail::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "business-rule",
                format!(
                    "{} is not reached by a Task update: an offer names an expert and a deadline (POST /api/consultations/{{id}}/offer)",
                    target.code()
                ),
            ));
        }
    })
}

fn refusal(status: StatusCode, body: &Value) -> Fail {
    let code = match status.as_u16() {
        403 => "forbidden",
        404 => "not-found",
        409 => "business-rule",
        412 => "conflict",
        422 | 428 => "required",
        400 => "invalid",
        _ => "processing",
    };
    Fail::new(
        status,
        code,
        body["error"].as_str().unwrap_or("refused").to_owned(),
    )
}

pub async fn update(
    ctx: &Ctx,
    id: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, Fail> {
    let expected = if_match(headers)?;
    let body = json_body(body)?;
    if body["resourceType"] != "Task" {
        return Err(Fail::invalid("resourceType", "the body must be a Task"));
    }
    if body["id"].as_str() != Some(id) {
        return Err(Fail::invalid(
            "Task.id",
            format!("the body's id must be {id:?}, the id in the URL"),
        ));
    }
    let Some(stored) = ctx
        .s
        .store
        .consultation(id)
        .await
        .map_err(|e| Fail::store(&e))?
    else {
        return Err(Fail::not_found("Task", id));
    };
    if !stored.facilities.iter().any(|f| ctx.caller.scope.allows(f)) {
        // Read scope first, as the workflow API does (a 404 the caller cannot tell apart).
        let facility = stored.consultation.request().requesting_facility.clone();
        ctx.audit(
            &ctx.event(
                "fhir.update",
                "Task",
                id,
                "denied",
                "outside the caller's scope".into(),
            )
            .about(&facility),
        )
        .await?;
        return Err(Fail::not_found("Task", id));
    }
    let current = stored.consultation.state();
    let target = wanted(current, &body)?;
    if target == current {
        if expected != stored.consultation.version() {
            return Err(Fail::new(
                StatusCode::PRECONDITION_FAILED,
                "conflict",
                format!(
                    "Task/{id} is at version {}, not {expected}",
                    stored.consultation.version()
                ),
            ));
        }
        let t = task(&stored.consultation, stored.created_at);
        let changed = stored.consultation.last_modified().timestamp_millis();
        let version = i64::try_from(stored.consultation.version()).unwrap_or(i64::MAX);
        return Ok(resource(StatusCode::OK, &with_meta(t, version, changed)));
    }
    let action = action(current, target)?;
    let mut args = serde_json::Map::new();
    let reason = body["statusReason"]["text"]
        .as_str()
        .or_else(|| body["statusReason"]["coding"][0]["display"].as_str())
        .map(str::to_owned);
    if let Some(r) = reason {
        args.insert("reason".into(), json!(r));
    }
    if let State::Failed(code) = target {
        args.insert("code".into(), json!(code.code()));
    }
    let done = huizhen_core::http::act_as(&ctx.s, &ctx.caller, id, action, Some(expected), args)
        .await
        .map_err(|r| refusal(r.status, &r.body))?;
    let c = &done.consultation;
    let t = task(c, done.created_at);
    let version = i64::try_from(c.version()).unwrap_or(i64::MAX);
    Ok(resource(
        StatusCode::OK,
        &with_meta(t, version, c.last_modified().timestamp_millis()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wanted_state_comes_from_business_status_then_status() {
        let bs = json!({"businessStatus": {"coding": [{"system": BUSINESS_STATUS, "code": "reviewing"}]}, "status": "received"});
        assert_eq!(wanted(State::Offered, &bs).unwrap(), State::Reviewing);
        assert_eq!(
            wanted(State::Reviewing, &json!({"status": "accepted"})).unwrap(),
            State::Scheduled
        );
        assert_eq!(
            wanted(State::Paused, &json!({"status": "in-progress"})).unwrap(),
            State::InSession
        );
        assert!(wanted(State::InSession, &json!({"status": "failed"})).is_err());
        assert!(
            wanted(
                State::InSession,
                &json!({"businessStatus": {"text": "waiting"}})
            )
            .is_err()
        );
    }

    #[test]
    fn each_reachable_state_has_one_action() {
        assert_eq!(
            action(State::Paused, State::InSession).unwrap(),
            Action::Resume
        );
        assert_eq!(
            action(State::Scheduled, State::InSession).unwrap(),
            Action::Start
        );
        assert_eq!(
            action(State::Offered, State::Scheduled).unwrap(),
            Action::Accept
        );
        assert!(action(State::PendingMatch, State::Offered).is_err());
    }
}
