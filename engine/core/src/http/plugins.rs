//! Plugins over HTTP: list and reload.

use super::*;

/// The loaded plugins: name, version, sha256, world, signer, loaded_at, calls, errors, p50/p99
/// latency and the last load error (a broken new version leaves the old one serving).
pub(super) async fn plugins(State(s): State<AppState>) -> Json<serde_json::Value> {
    let list = s
        .extensions
        .plugin_catalog()
        .map(|c| c.list())
        .unwrap_or_default();
    Json(json!({ "plugins": list }))
}

/// Reloads one plugin from its package now; the old version serves until the new one is
/// compiled and checked, and keeps serving if the new one is refused (409 with the reason).
pub(super) async fn reload_plugin(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use crate::extensions::CatalogError;
    // A plugin serves every facility's pipelines: only platform admins reload it.
    if caller.scope != Scope::All {
        let reason = format!(
            "reloading plugin {name} affects every facility; it needs platform scope (facility *), not {}",
            caller.principal.facility
        );
        audit(
            &s.store,
            &caller.event("plugin.reload", "Plugin", &name, "denied", reason.clone()),
        )
        .await?;
        return Err(ApiError(StatusCode::FORBIDDEN, reason));
    }
    let Some(catalog) = s.extensions.plugin_catalog() else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "this engine has no plugin host".into(),
        ));
    };
    let n = name.clone();
    let result = tokio::task::spawn_blocking(move || catalog.reload(&n))
        .await
        .map_err(|e| {
            ApiError::internal(StatusCode::INTERNAL_SERVER_ERROR, "the reload failed", &e)
        })?;
    let (outcome, detail) = match &result {
        Ok(v) => ("success", format!("version {}", v["version"])),
        Err(e) => ("failure", e.to_string()),
    };
    audit(
        &s.store,
        &caller.event("plugin.reload", "Plugin", &name, outcome, detail),
    )
    .await?;
    match result {
        Ok(v) => Ok(Json(v)),
        Err(e @ CatalogError::NotFound(_)) => Err(ApiError(StatusCode::NOT_FOUND, e.to_string())),
        Err(e @ CatalogError::Refused(_)) => Err(ApiError(StatusCode::CONFLICT, e.to_string())),
    }
}

/// The shadowed plugin steps of a pipeline the caller can see (404 otherwise).
fn shadow_board(
    s: &AppState,
    caller: &Caller,
    pipeline: &str,
) -> Result<
    (
        crate::runner::PipelineHandle,
        Option<Arc<crate::runner::shadow::ShadowBoard>>,
    ),
    ApiError,
> {
    let handle = s
        .pipelines
        .get(pipeline)
        .filter(|h| caller.scope.allows(h.facility()))
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("no pipeline {pipeline:?} among your facilities' pipelines"),
            )
        })?;
    Ok((
        handle,
        s.extensions.get::<crate::runner::shadow::ShadowBoard>(),
    ))
}

/// `GET /api/pipelines/{name}/shadow`: each plugin step of the pipeline that runs a shadow
/// version: the versions, how often they agreed and disagreed, the facilities the shadow
/// decides for and the latest disagreements (message ids, the two decisions).
pub(super) async fn shadow_report(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (_, board) = shadow_board(&s, &caller, &name)?;
    let reports = board.map(|b| b.reports(&name)).unwrap_or_default();
    Ok(Json(json!({ "pipeline": name, "shadows": reports })))
}

#[derive(Debug, Deserialize)]
pub(super) struct ShadowChange {
    facility: Option<String>,
}

/// `POST /api/pipelines/{name}/shadow/{plugin}/promote` (or `/rollback`) with
/// `{"facility": "F"}`: the shadow version decides for facility F's messages from now on (or
/// no longer). Kept in the store (a restart or reload keeps it) and audited; the caller must
/// be able to write for F.
pub(super) async fn shadow_change(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path((name, plugin, action)): Path<(String, String, String)>,
    Json(body): Json<ShadowChange>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let promote = match action.as_str() {
        "promote" => true,
        "rollback" => false,
        _ => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("no shadow action {action:?}: promote or rollback"),
            ));
        }
    };
    let (handle, board) = shadow_board(&s, &caller, &name)?;
    let Some(step) = board.and_then(|b| b.get(&name, &plugin)) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("pipeline {name:?} has no plugin step {plugin:?} with a shadow version"),
        ));
    };
    let Some(facility) = body.facility.filter(|f| !f.trim().is_empty()) else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "facility: name the facility whose messages the shadow decides for".into(),
        ));
    };
    let what = format!("plugin.shadow.{action}");
    if !caller.write_scope.allows(&facility) {
        let reason = format!(
            "{action} for facility {facility:?}: outside the facilities you may change ({})",
            caller.principal.facility
        );
        audit(
            &s.store,
            &caller
                .event(&what, "Pipeline", &name, "denied", reason.clone())
                .about(handle.facility()),
        )
        .await?;
        return Err(ApiError(StatusCode::FORBIDDEN, reason));
    }
    let changed = s
        .store
        .set_shadow_promotion(&name, &plugin, &facility, promote, &caller.principal.sub)
        .await?;
    step.set_promoted(&facility, promote);
    let report = step.report();
    audit(
        &s.store,
        &caller
            .event(
                &what,
                "Pipeline",
                &name,
                "success",
                format!(
                    "plugin {plugin}: for facility {facility} the {} version decides ({} → {}){}",
                    if promote { "shadow" } else { "primary" },
                    report.primary_version,
                    report.shadow_version,
                    if changed { "" } else { "; it already did" }
                ),
            )
            .about(&facility),
    )
    .await?;
    Ok(Json(json!({ "changed": changed, "shadow": report })))
}
