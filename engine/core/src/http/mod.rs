//! The HTTP server (axum): health, readiness, metrics, the admin API and `http` sources.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | /health | the process is up |
//! | GET | /ready | the store answers and every pipeline's source runs (503 with reasons if not) |
//! | GET | /metrics | Prometheus/OpenMetrics text |
//! | GET | /api/pipelines | pipelines with queue depth and journal counts per state |
//! | GET | /api/messages?pipeline=&state=&q=&limit=&cursor= | messages, newest first |
//! | GET | /api/messages/{id} | one message with its body, attempt errors and effects |
//! | POST | /api/messages/{id}/reprocess | put a failed/dead/done message back to work |
//! | POST | /in/… | `http` sources |
//!
//! Every error is JSON: `{"error": "…"}`. Bodies are limited to `http.max_body_bytes` and
//! requests to `http.request_timeout`.

use std::collections::{BTreeMap, HashMap};
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

    fn get(&self, path: &str) -> Option<IngressRoute> {
        self.routes.read().ok().and_then(|r| r.get(path).cloned())
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub pipelines: BTreeMap<String, PipelineHandle>,
    pub metrics: Arc<Metrics>,
    pub ingress: HttpIngress,
    pub wake: Arc<Notify>,
}

/// A JSON error response.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => ApiError(StatusCode::NOT_FOUND, e.to_string()),
            StoreError::NotReprocessable { .. } => ApiError(StatusCode::CONFLICT, e.to_string()),
            _ => {
                tracing::error!(error = %e, "store error in API");
                ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
        }
    }
}

/// Builds the router.
pub fn router(state: AppState, cfg: &HttpConfig) -> Router {
    let timeout = cfg.request_timeout;
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/pipelines", get(pipelines))
        .route("/api/messages", get(list_messages))
        .route("/api/messages/{id}", get(get_message))
        .route("/api/messages/{id}/reprocess", post(reprocess))
        .route("/in/{*path}", post(ingest))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        .layer(middleware::from_fn(
            move |req: Request, next: Next| async move {
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

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(s): State<AppState>) -> Response {
    let mut problems = Vec::new();
    if !s.store.ping().await {
        problems.push("store is not reachable".to_owned());
    }
    for p in s.pipelines.values() {
        let info = p.info();
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

async fn metrics(State(s): State<AppState>) -> Response {
    for p in s.pipelines.values() {
        s.metrics.set_queue_depth(p.name(), p.queue_depth());
    }
    if let Ok(counts) = s.store.counts().await {
        for p in s.pipelines.keys() {
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

async fn pipelines(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let counts = s.store.counts().await?;
    let list: Vec<serde_json::Value> = s
        .pipelines
        .values()
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

#[derive(Debug, Deserialize)]
struct ListQuery {
    pipeline: Option<String>,
    state: Option<String>,
    q: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

async fn list_messages(
    State(s): State<AppState>,
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
    let page = s
        .store
        .list(&ListFilter {
            pipeline: q.pipeline.filter(|p| !p.is_empty()),
            state,
            q: q.q,
            limit: q.limit,
            cursor: q.cursor.filter(|c| !c.is_empty()),
        })
        .await?;
    Ok(Json(serde_json::to_value(page).unwrap_or_default()))
}

/// A message as the API shows it: metadata, the body (text when UTF-8, else base64), the error
/// of every failed attempt and the effects recorded by `journal` sinks.
pub async fn message_detail(store: &Store, id: &str) -> Result<serde_json::Value, StoreError> {
    let m = store
        .get(id)
        .await?
        .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
    let errors = store.attempt_errors(id).await?;
    let effects: Vec<serde_json::Value> = store
        .effects(Some(&m.pipeline))
        .await?
        .into_iter()
        .filter(|e| e.message_id == id)
        .map(|e| {
            let (body, enc) = body_repr(&e.body);
            json!({ "sink": e.sink, "recorded_at": e.recorded_at, "body": body, "body_encoding": enc })
        })
        .collect();
    let (body, enc) = body_repr(&m.body);
    let mut v = serde_json::to_value(&m).unwrap_or_default();
    v["body"] = body.into();
    v["body_encoding"] = enc.into();
    if let Some(k) = crate::expr::kind_support(&m.kind) {
        v["parsed"] = match (k.describe)(&m.body, &m.headers) {
            Ok(p) => p,
            Err(e) => json!({ "error": e }),
        };
    }
    v["errors"] = serde_json::to_value(errors).unwrap_or_default();
    v["effects"] = effects.into();
    Ok(v)
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

async fn get_message(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(message_detail(&s.store, &id).await?))
}

async fn reprocess(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let m = s.store.reprocess(&id).await?;
    s.wake.notify_one();
    tracing::info!(id = %m.id, pipeline = %m.pipeline, "reprocess requested");
    Ok(Json(
        json!({ "id": m.id, "pipeline": m.pipeline, "state": m.state }),
    ))
}

async fn ingest(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let full = format!("/in/{path}");
    let Some((pipeline, kind)) = s.ingress.get(&full) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no http source listens on {full}"),
        ));
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let kind = kind.unwrap_or_else(|| {
        if content_type.starts_with("application/json") || content_type.ends_with("+json") {
            "json".into()
        } else {
            "text".into()
        }
    });
    let mut m = NewMessage::new(pipeline.name(), pipeline.facility(), &kind, body.to_vec());
    m.source = format!("http {peer}");
    for (name, value) in &headers {
        let n = name.as_str();
        if (n == "content-type" || n.starts_with("x-"))
            && let Ok(v) = value.to_str()
        {
            m.headers.insert(n.to_owned(), v.to_owned());
        }
    }
    if let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) {
        m.dedup_key = Some(key.to_owned());
    }
    if let Some(tp) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        // W3C traceparent: version-traceid-parentid-flags
        if let Some(trace) = tp.split('-').nth(1) {
            m.trace_id = Some(trace.to_owned());
        }
    }
    match pipeline.submit(m).await {
        Ok(a) => Ok((StatusCode::ACCEPTED, Json(a)).into_response()),
        Err(e) => Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}
