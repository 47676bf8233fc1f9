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
