//! The message browser: list, read and reprocess journaled messages, within the caller's
//! facility scope, every read and write audited.

use super::*;

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    pipeline: Option<String>,
    state: Option<String>,
    q: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
    /// Received at or after / before: unix ms or RFC 3339.
    after: Option<String>,
    before: Option<String>,
    /// Content filters (opened and read message by message: see `store::ContentFilter`).
    text: Option<String>,
    control_id: Option<String>,
    patient: Option<String>,
}

/// A time parameter: unix milliseconds or an RFC 3339 date-time.
fn time_param(name: &str, v: Option<&str>) -> Result<Option<i64>, ApiError> {
    let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(Some(ms));
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| Some(t.timestamp_millis()))
        .map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("{name}={v:?}: expected unix milliseconds or an RFC 3339 time such as 2026-12-07T08:00:00+08:00 ({e})"),
            )
        })
}

pub(super) async fn list_messages(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let state = match q.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(st) => Some(MsgState::parse(st).ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!(
                    "unknown state {st:?}: expected received, processing, done, failed or dead"
                ),
            )
        })?),
    };
    if let Some(l) = q.limit
        && !(1..=1000).contains(&l)
    {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("limit {l} is out of range 1..=1000"),
        ));
    }
    let received_after = time_param("after", q.after.as_deref())?;
    let received_before = time_param("before", q.before.as_deref())?;
    let content = crate::store::ContentFilter {
        text: q.text.clone(),
        control_id: q.control_id.clone(),
        patient: q.patient.clone(),
    };
    let mut detail = format!(
        "pipeline={} state={} q={}",
        q.pipeline.as_deref().unwrap_or(""),
        q.state.as_deref().unwrap_or(""),
        audit_search_term(&s.store, q.q.as_deref().unwrap_or(""))
    );
    for (name, v) in [
        ("text", &q.text),
        ("control_id", &q.control_id),
        ("patient", &q.patient),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            detail.push_str(&format!(" {name}={}", audit_search_term(&s.store, v)));
        }
    }
    if let Some(t) = received_after {
        detail.push_str(&format!(" after={t}"));
    }
    if let Some(t) = received_before {
        detail.push_str(&format!(" before={t}"));
    }
    let page = s
        .store
        .list(&ListFilter {
            pipeline: q.pipeline.filter(|p| !p.is_empty()),
            state,
            q: q.q,
            limit: q.limit,
            cursor: q.cursor.filter(|c| !c.is_empty()),
            facilities: caller.scope.facilities(),
            received_after,
            received_before,
            content: (!content.is_empty()).then_some(content),
        })
        .await?;
    let ids: Vec<&str> = page.messages.iter().map(|m| m.id.as_str()).collect();
    audit(
        &s.store,
        &caller.event(
            "message.list",
            "Message",
            "",
            "success",
            format!("{detail}; {} messages: {}", ids.len(), ids.join(",")),
        ),
    )
    .await?;
    Ok(Json(serde_json::to_value(page).unwrap_or_default()))
}

/// A message as the API shows it: metadata, the body (text when UTF-8, else base64, with a
/// decoded text view in the charset its kind says: `body_text`, `body_charset`), how it came in
/// (`intake`: accepted, or refused with the reason), the error of every failed attempt (a
/// refused message's intake row first), every reprocess, the whole `history` in time order and
/// the effects recorded by `journal` sinks.
pub async fn message_detail(store: &Store, id: &str) -> Result<serde_json::Value, StoreError> {
    let m = store
        .get(id)
        .await?
        .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
    let errors = store.attempt_errors(id).await?;
    let reprocesses = store.reprocesses(id).await?;
    let intake = store.intake(&m).await?;
    let effects: Vec<serde_json::Value> = store
        .effects_of(id)
        .await?
        .into_iter()
        .map(|e| {
            let (body, enc) = body_repr(&e.body);
            json!({ "sink": e.sink, "recorded_at": e.recorded_at, "body": body, "body_encoding": enc })
        })
        .collect();
    let (body, enc) = body_repr(&m.body);
    let mut v = serde_json::to_value(&m).unwrap_or_default();
    v["body"] = body.into();
    v["body_encoding"] = enc.into();
    match crate::expr::kind_text(&m.kind) {
        Some(t) => match (t.decode)(&m.body, &m.headers) {
            Ok(d) => {
                v["body_charset"] = d.charset.into();
                if enc != "utf-8" {
                    v["body_text"] = d.text.into();
                }
                if d.replaced {
                    v["body_text_replaced"] = true.into();
                }
            }
            Err(e) => v["body_text_error"] = e.into(),
        },
        None if enc == "utf-8" => v["body_charset"] = "UTF-8".into(),
        None => {}
    }
    if let Some(k) = crate::expr::kind_support(&m.kind) {
        v["parsed"] = match (k.describe)(&m.body, &m.headers) {
            Ok(p) => p,
            Err(e) => json!({ "error": e }),
        };
    }
    v["history"] = history(&m, &intake, &errors, &reprocesses).into();
    v["intake"] = serde_json::to_value(&intake).unwrap_or_default();
    v["errors"] = serde_json::to_value(errors).unwrap_or_default();
    v["reprocesses"] = serde_json::to_value(reprocesses).unwrap_or_default();
    v["effects"] = effects.into();
    Ok(v)
}

/// A message's life in time order: received (or refused), each failed attempt with the run it
/// belongs to (0 before the first reprocess), each reprocess, and where it is now.
fn history(
    m: &crate::message::Message,
    intake: &crate::store::Intake,
    errors: &[crate::store::AttemptError],
    reprocesses: &[crate::store::ReprocessRow],
) -> Vec<serde_json::Value> {
    let run_at = |at: i64| reprocesses.iter().filter(|r| r.at <= at).count();
    let mut events: Vec<(i64, u8, serde_json::Value)> = Vec::new();
    events.push((
        m.received_at,
        0,
        match intake.reason.as_deref() {
            Some(reason) => json!({ "at": m.received_at, "event": "refused", "reason": reason }),
            None if intake.verdict == "refused" => {
                json!({ "at": m.received_at, "event": "refused" })
            }
            None => json!({ "at": m.received_at, "event": "received" }),
        },
    ));
    for e in errors
        .iter()
        .filter(|e| !(e.attempt == 0 && e.step == crate::store::INTAKE_STEP))
    {
        events.push((
            e.at,
            1,
            json!({ "at": e.at, "event": "failed", "run": run_at(e.at), "attempt": e.attempt, "step": e.step, "error": e.error }),
        ));
    }
    for (n, r) in reprocesses.iter().enumerate() {
        events.push((
            r.at,
            2,
            json!({ "at": r.at, "event": "reprocessed", "run": n + 1, "from_state": r.from_state, "attempts": r.attempts, "refused": r.refused, "actor": r.actor }),
        ));
    }
    events.sort_by_key(|(at, order, _)| (*at, *order));
    let mut out: Vec<serde_json::Value> = events.into_iter().map(|e| e.2).collect();
    if !(intake.verdict == "refused" && reprocesses.is_empty()) {
        out.push(json!({ "at": m.updated_at, "event": m.state.as_str(), "run": reprocesses.len(), "attempts": m.attempts }));
    }
    out
}

/// A search term as the audit trail records it: a search for a patient's name or phone is
/// itself patient data, so only a keyed hash (the first 16 hex digits of an HMAC with the
/// blind-index key, equal for equal terms, so an auditor can see the same term searched twice)
/// and the length are kept; with encryption off, only the length.
fn audit_search_term(store: &Store, q: &str) -> String {
    if q.is_empty() {
        return String::new();
    }
    let len = q.chars().count();
    match store.keyring() {
        Some(k) => {
            let mut data = b"audit-search\0".to_vec();
            data.extend_from_slice(q.as_bytes());
            let h = k.blind_index(&data);
            format!("hmac:{} ({len} chars)", &h[..16])
        }
        None => format!("({len} chars)"),
    }
}

fn body_repr(b: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(b) {
        Ok(s) => (s.to_owned(), "utf-8"),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(b),
            "base64",
        ),
    }
}

/// A message outside the caller's read scope is answered as if it did not exist. Returns the
/// message's facility (the subject of the audit event).
async fn scoped_facility(s: &AppState, caller: &Caller, id: &str) -> Result<String, ApiError> {
    let facility = s.store.get(id).await?.map(|m| m.facility);
    match facility {
        Some(f) if caller.scope.allows(&f) => Ok(f),
        Some(f) => {
            audit(
                &s.store,
                &caller
                    .event(
                        "message.read",
                        "Message",
                        id,
                        "denied",
                        format!("facility {f} is outside the caller's scope"),
                    )
                    .about(&f),
            )
            .await?;
            Err(StoreError::NotFound(id.to_owned()).into())
        }
        None => Err(StoreError::NotFound(id.to_owned()).into()),
    }
}

pub(super) async fn get_message(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let facility = scoped_facility(&s, &caller, &id).await?;
    let detail = message_detail(&s.store, &id).await?;
    audit(
        &s.store,
        &caller
            .event("message.read", "Message", &id, "success", String::new())
            .about(&facility),
    )
    .await?;
    Ok(Json(detail))
}

#[derive(Debug, Deserialize)]
pub(super) struct ReprocessQuery {
    /// Also a message refused at intake (the sender was told it was not accepted).
    #[serde(default)]
    include_refused: bool,
}

pub(super) async fn reprocess(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    Query(rq): Query<ReprocessQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let facility = scoped_facility(&s, &caller, &id).await?;
    // Readable under a sharing agreement is not writable: only the owner facility reprocesses.
    if !caller.write_scope.allows(&facility) {
        let reason = format!(
            "facility {facility} shares its data for reading only; {} may not reprocess it",
            caller.principal.facility
        );
        audit(
            &s.store,
            &caller
                .event(
                    "message.reprocess",
                    "Message",
                    &id,
                    "denied",
                    reason.clone(),
                )
                .about(&facility),
        )
        .await?;
        return Err(ApiError(StatusCode::FORBIDDEN, reason));
    }
    let event = caller
        .event(
            "message.reprocess",
            "Message",
            &id,
            "success",
            if rq.include_refused {
                "include_refused=true".to_owned()
            } else {
                String::new()
            },
        )
        .about(&facility);
    let req = crate::store::ReprocessRequest {
        include_refused: rq.include_refused,
        audit: Some(&event),
    };
    let m = match s.store.reprocess_with(&id, req).await {
        Ok(m) => m,
        Err(e @ StoreError::Refused { .. }) => {
            // The refusal is audited: someone tried to run what the sender was told was refused.
            let mut denied = event.clone();
            denied.outcome = "denied".into();
            denied.detail = "refused at intake; include_refused not given".into();
            audit(&s.store, &denied).await?;
            s.metrics
                .reprocess(&pipeline_of(&s, &id).await, "refused_denied");
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    s.metrics.reprocess(
        &m.pipeline,
        if rq.include_refused {
            "refused_included"
        } else {
            "reprocessed"
        },
    );
    s.wake.notify_one();
    tracing::info!(id = %m.id, pipeline = %m.pipeline, "reprocess requested");
    Ok(Json(
        json!({ "id": m.id, "pipeline": m.pipeline, "state": m.state }),
    ))
}

/// The pipeline of a message (for a metric label), empty when it cannot be read.
async fn pipeline_of(s: &AppState, id: &str) -> String {
    s.store
        .get(id)
        .await
        .ok()
        .flatten()
        .map(|m| m.pipeline)
        .unwrap_or_default()
}

#[derive(Debug, Deserialize)]
pub(super) struct DeadRequest {
    /// Why the retries stop (kept with the message and in the audit trail).
    #[serde(default)]
    reason: String,
}

/// `POST /api/messages/{id}/dead` with `{"reason": "…"}`: a failed message waiting for its
/// next retry is moved to dead letter (its retries stop); it stays in the journal and can be
/// reprocessed like any dead letter. Only the owner facility may; audited.
pub(super) async fn move_to_dead(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: Option<Json<DeadRequest>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let reason = body.map(|b| b.0.reason).unwrap_or_default();
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "body.reason: say why the message's retries stop (it is kept with the message)".into(),
        ));
    }
    if reason.chars().count() > 500 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "body.reason: at most 500 characters".into(),
        ));
    }
    let facility = scoped_facility(&s, &caller, &id).await?;
    if !caller.write_scope.allows(&facility) {
        let why = format!(
            "facility {facility} shares its data for reading only; {} may not move its messages",
            caller.principal.facility
        );
        audit(
            &s.store,
            &caller
                .event("message.dead", "Message", &id, "denied", why.clone())
                .about(&facility),
        )
        .await?;
        return Err(ApiError(StatusCode::FORBIDDEN, why));
    }
    let event = caller
        .event(
            "message.dead",
            "Message",
            &id,
            "success",
            format!("reason: {reason}"),
        )
        .about(&facility);
    let m = match s.store.move_to_dead(&id, reason, Some(&event)).await {
        Ok(m) => m,
        Err(StoreError::Inconsistent(why)) => return Err(ApiError(StatusCode::CONFLICT, why)),
        Err(e) => return Err(e.into()),
    };
    s.metrics.dead(&m.pipeline);
    tracing::info!(id = %m.id, pipeline = %m.pipeline, "moved to dead letter by request");
    Ok(Json(
        json!({ "id": m.id, "pipeline": m.pipeline, "state": m.state }),
    ))
}
