//! Operational endpoints: health, readiness, metrics, pipelines (and their reload), backlog and
//! cluster.

use super::*;

pub(super) async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

pub(super) async fn ready(State(s): State<AppState>) -> Response {
    let mut problems = Vec::new();
    if !s.store.ping().await {
        problems.push("store is not reachable".to_owned());
    }
    for p in s.pipelines.snapshot().values() {
        let info = p.info();
        if let Some(reason) = p.refusing() {
            problems.push(format!(
                "pipeline {} refuses new messages: backlog limit reached: {reason}",
                info.name
            ));
        }
        if !info.running {
            problems.push(format!(
                "pipeline {} is not running{}",
                info.name,
                info.error.map(|e| format!(": {e}")).unwrap_or_default()
            ));
        }
    }
    if problems.is_empty() {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "problems": problems })),
        )
            .into_response()
    }
}

/// Unfinished work per pipeline: in the journal (all nodes) and, with a broker, at the broker.
async fn backlog_of(s: &AppState) -> Result<Vec<serde_json::Value>, ApiError> {
    let pipelines = s.pipelines.snapshot();
    let names: Vec<String> = pipelines.keys().cloned().collect();
    let rows = s.store.backlog_of(&names).await?;
    let broker = match &s.cluster {
        Some(c) => match c.queue().depth().await {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!(error = %e, "broker queue depth not available");
                None
            }
        },
        None => None,
    };
    let now = crate::message::now_ms();
    Ok(pipelines
        .keys()
        .map(|p| {
            let row = rows.iter().find(|r| &r.pipeline == p);
            let oldest = row.and_then(|r| r.oldest_received_at);
            json!({
                "pipeline": p,
                "messages": row.map_or(0, |r| r.messages),
                "oldest_received_at": oldest,
                "oldest_age_seconds": oldest.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0),
                "in_memory": pipelines.get(p).map_or(0, |h| h.queue_depth()),
                "broker": broker.as_ref().map(|b| b.iter().find(|(n, _)| n == p).map_or(0, |x| x.1)),
            })
        })
        .collect())
}

/// The backlog of the pipelines of the caller's facilities.
pub(super) async fn backlog(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let rows: Vec<_> = backlog_of(&s)
        .await?
        .into_iter()
        .filter(|r| {
            let p = r["pipeline"].as_str().unwrap_or_default();
            s.pipelines
                .get(p)
                .is_some_and(|h| caller.scope.allows(h.facility()))
        })
        .collect();
    Ok(Json(json!({ "pipelines": rows })))
}

/// The cluster's nodes and queue: infrastructure of every facility, so platform staff only.
pub(super) async fn cluster(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if caller.scope != Scope::All {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "the cluster view needs platform scope (facility *)".into(),
        ));
    }
    let Some(c) = &s.cluster else {
        return Ok(Json(json!({ "queue": "local", "nodes": [] })));
    };
    let nodes = c.live_nodes().await?;
    let a = c.assignment();
    Ok(Json(json!({
        "queue": c.queue().describe(),
        "node": c.id(),
        "partitions": { "rank": a.rank, "live": a.live },
        "nodes": nodes,
    })))
}

pub(super) async fn metrics(State(s): State<AppState>) -> Response {
    s.metrics.sample_process();
    let pipelines = s.pipelines.snapshot();
    if let Ok(counts) = s.store.reprocess_counts().await {
        for p in pipelines.keys() {
            let n = counts.iter().find(|(cp, _)| cp == p).map_or(0, |c| c.1);
            s.metrics.set_journal_reprocesses(p, n);
        }
    }
    for p in pipelines.values() {
        s.metrics.set_queue_depth(p.name(), p.queue_depth());
    }
    if let Ok(rows) = backlog_of(&s).await {
        for r in rows {
            let p = r["pipeline"].as_str().unwrap_or_default();
            s.metrics.set_backlog(
                p,
                r["messages"].as_i64().unwrap_or(0),
                r["oldest_age_seconds"].as_f64().unwrap_or(0.0),
            );
            if let Some(d) = r["broker"].as_u64() {
                s.metrics.set_broker_depth(p, d);
            }
        }
    }
    if let Some(c) = &s.cluster
        && let Ok(n) = c.live_nodes().await
    {
        s.metrics.set_nodes(n.len());
    }
    if let Ok(counts) = s.store.counts().await {
        for p in pipelines.keys() {
            for st in MsgState::ALL {
                let n = counts
                    .iter()
                    .find(|(cp, cs, _)| cp == p && *cs == st)
                    .map_or(0, |c| c.2);
                s.metrics.set_journal_count(p, st.as_str(), n);
            }
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

pub(super) async fn pipelines(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let counts = s.store.counts().await?;
    let list: Vec<serde_json::Value> = s
        .pipelines
        .snapshot()
        .values()
        .filter(|p| caller.scope.allows(p.facility()))
        .map(|p| {
            let info = p.info();
            let mut by_state = serde_json::Map::new();
            for st in MsgState::ALL {
                let n = counts
                    .iter()
                    .find(|(cp, cs, _)| *cp == info.name && *cs == st)
                    .map_or(0, |c| c.2);
                by_state.insert(st.as_str().into(), n.into());
            }
            let mut v = serde_json::to_value(&info).unwrap_or_default();
            v["messages"] = serde_json::Value::Object(by_state);
            v
        })
        .collect();
    Ok(Json(json!({ "pipelines": list })))
}

/// Reloads the pipeline files (`huizhen reload`): only changed pipelines restart, a refused file
/// keeps its pipelines on their running version. It changes every facility's pipelines, so
/// only platform admins may; audited either way. 200 with the report when everything applied,
/// 409 with it when a file was refused or a new version did not start.
pub(super) async fn reload_pipelines(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Response, ApiError> {
    if caller.scope != Scope::All {
        let reason = format!(
            "reloading the pipelines affects every facility; it needs platform scope (facility *), not {}",
            caller.principal.facility
        );
        audit(
            &s.store,
            &caller.event("pipeline.reload", "Pipelines", "", "denied", reason.clone()),
        )
        .await?;
        return Err(ApiError(StatusCode::FORBIDDEN, reason));
    }
    let report = s
        .reloader
        .reload_audited(caller.event("pipeline.reload", "Pipelines", "", "", String::new()))
        .await
        .map_err(|err| {
            ApiError::internal(
                StatusCode::SERVICE_UNAVAILABLE,
                "the pipelines were reloaded but the audit trail cannot be written",
                &err,
            )
        })?;
    let status = if report.ok() {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    Ok((status, Json(json!({ "reload": report }))).into_response())
}
