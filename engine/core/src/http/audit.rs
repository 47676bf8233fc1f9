//! The audit trail over HTTP: list (by the caller's facility scope: events by its actors or
//! about its resources) and verify (the chain and its anchor, platform scope only).

use super::*;

#[derive(Debug, Deserialize)]
pub(super) struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    resource_id: Option<String>,
    after: Option<i64>,
    limit: Option<i64>,
    /// Sequence numbers below this one (paging back with `order=desc`).
    before: Option<i64>,
    /// Times (unix ms) from / until.
    since: Option<i64>,
    until: Option<i64>,
    outcome: Option<String>,
    /// `asc` (default: sequence order) or `desc` (newest first).
    order: Option<String>,
}

pub(super) async fn audit_events(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let newest_first = match q.order.as_deref() {
        None | Some("") | Some("asc") => false,
        Some("desc") => true,
        Some(o) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("order={o:?}: expected asc or desc"),
            ));
        }
    };
    let clean = |v: Option<String>| v.filter(|x| !x.trim().is_empty());
    let rows = s
        .store
        .audit_events(&AuditFilter {
            actor: clean(q.actor),
            action: clean(q.action),
            resource_id: clean(q.resource_id),
            after: q.after,
            limit: q.limit,
            before: q.before,
            since: q.since,
            until: q.until,
            outcome: clean(q.outcome),
            newest_first,
            // Facility staff see the events by their facilities' actors and those about
            // their facilities' resources (filtered in SQL, so a page is a full page).
            facilities: caller.scope.facilities(),
        })
        .await?;
    audit(
        &s.store,
        &caller.event(
            "audit.read",
            "AuditEvent",
            "",
            "success",
            format!("{} events", rows.len()),
        ),
    )
    .await?;
    Ok(Json(json!({ "events": rows })))
}

pub(super) async fn audit_verify(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Response, ApiError> {
    if caller.scope != Scope::All {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "verifying the whole audit trail needs platform scope (facility *)".into(),
        ));
    }
    let report = s.store.verify_audit().await?;
    let status = if report.problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    Ok((status, Json(report)).into_response())
}
