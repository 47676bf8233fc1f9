//! The HTTP server (axum): health, readiness, metrics, the admin API and `http` sources.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | /health | the process is up |
//! | GET | /ready | the store answers and every pipeline's source runs (503 with reasons if not) |
//! | GET | /metrics | Prometheus/OpenMetrics text |
//! | GET | /api/pipelines | pipelines with queue depth and journal counts per state |
//! | GET | /api/backlog | unfinished messages per pipeline: count, oldest age, broker depth |
//! | GET | /api/cluster | the broker queue, this node, the live nodes (`queue: amqp://…`) |
//! | GET | /api/messages?pipeline=&state=&q=&limit=&cursor= | messages, newest first |
//! | GET | /api/messages/{id} | one message with its body, attempt errors and effects |
//! | POST | /api/messages/{id}/reprocess | put a failed/dead/done message back to work |
//! | POST | /in/… | `http` sources |
//! | GET | /api/audit?actor=&action=&resource_id=&after=&limit= | the audit trail, oldest first |
//! | GET | /api/audit/verify | recompute the audit hash chain |
//!
//! Every error is JSON: `{"error": "…"}`. Bodies are limited to `http.max_body_bytes` and
//! requests to `http.request_timeout`.
//!
//! Every route except `/health`, `/ready` (and `/metrics` unless `security.public_metrics` is
//! off) needs a bearer token; [`guard`] authenticates it, checks the role against
//! [`crate::security::ROUTES`] and passes the [`Caller`] to the handler, which applies the
//! facility scope and writes the audit event of patient-data reads and writes.

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
use crate::security::{AuthError, Principal, ROUTES, Scope, Security};
use crate::store::audit::{AuditEvent, AuditFilter};
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
    pub extensions: crate::extensions::Extensions,
    /// This process as a cluster node, with a broker queue.
    pub cluster: Option<crate::cluster::Node>,
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

/// Who is calling, as [`guard`] found it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub scope: Scope,
    /// The client's address.
    pub source: String,
    /// The `X-Purpose-Of-Use` header, if any.
    pub purpose: String,
}

impl Caller {
    /// An audit event of this caller.
    pub fn event(
        &self,
        action: &str,
        resource_type: &str,
        resource_id: &str,
        outcome: &str,
        detail: String,
    ) -> AuditEvent {
        AuditEvent {
            actor: self.principal.sub.clone(),
            role: self.principal.role.as_str().to_owned(),
            facility: self.principal.facility.clone(),
            action: action.to_owned(),
            resource_type: resource_type.to_owned(),
            resource_id: resource_id.to_owned(),
            outcome: outcome.to_owned(),
            source: self.source.clone(),
            purpose: self.purpose.clone(),
            detail,
        }
    }
}

/// Writes an audit event; a request whose audit cannot be written fails (503) rather than
/// going unrecorded.
async fn audit(store: &Store, e: &AuditEvent) -> Result<(), ApiError> {
    store.audit(e).await.map(|_| ()).map_err(|err| {
        tracing::error!(error = %err, action = %e.action, "audit event not written; refusing the request");
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the audit trail cannot be written; try again later".into(),
        )
    })
}

/// Authentication and the role check for every non-public route (see [`crate::security`]).
pub async fn guard(State(sec): State<Arc<Security>>, mut req: Request, next: Next) -> Response {
    let Some(pattern) = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_owned())
    else {
        return next.run(req).await;
    };
    if sec.is_public(&pattern) {
        return next.run(req).await;
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let ip = peer.map_or(std::net::IpAddr::from([127, 0, 0, 1]), |p| p.ip());
    let source = peer.map(|p| p.to_string()).unwrap_or_default();
    let purpose = req
        .headers()
        .get("x-purpose-of-use")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(200)
        .collect::<String>();
    let method = req.method().as_str().to_owned();
    let Some(action) = ROUTES
        .iter()
        .find(|(m, p, _)| *m == method && *p == pattern)
        .map(|r| r.2)
    else {
        return ApiError(
            StatusCode::FORBIDDEN,
            format!("{method} {pattern} is not in the access policy"),
        )
        .into_response();
    };
    if let Err(e) = sec.check_throttle(ip) {
        return ApiError(StatusCode::TOO_MANY_REQUESTS, e.to_string()).into_response();
    }
    // Ingestion is held back by the journal's back-pressure instead: a hospital system's burst
    // is slowed down, not refused.
    if action != crate::security::Action::Ingest
        && let Err(wait) = sec.take_request(ip)
    {
        let mut r = ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "more than security.rate_limit requests per second from {ip}; retry in {wait}s"
            ),
        )
        .into_response();
        if let Ok(v) = axum::http::HeaderValue::from_str(&wait.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::to_owned);
    let principal = match sec.authenticate(bearer.as_deref()).await {
        Ok(p) => p,
        Err(AuthError::Unavailable(m)) => {
            return ApiError(StatusCode::SERVICE_UNAVAILABLE, m).into_response();
        }
        Err(e) => {
            sec.record_failure(ip);
            tracing::warn!(%source, endpoint = %format!("{method} {pattern}"), error = %e, "authentication failed");
            let ev = AuditEvent {
                actor: "anonymous".into(),
                action: "login.failed".into(),
                resource_type: "Endpoint".into(),
                resource_id: format!("{method} {pattern}"),
                outcome: "failed".into(),
                source,
                purpose,
                detail: e.to_string(),
                ..AuditEvent::default()
            };
            if let Err(err) = sec.store().audit(&ev).await {
                tracing::error!(error = %err, "failed login not audited");
            }
            let mut r = ApiError(StatusCode::UNAUTHORIZED, e.to_string()).into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    };
    let caller = Caller {
        scope: sec.scope(&principal),
        principal,
        source,
        purpose,
    };
    if let Err(e) = sec.authorize(&caller.principal, action) {
        let ev = caller.event(
            action.name(),
            "Endpoint",
            &format!("{method} {pattern}"),
            "denied",
            e.to_string(),
        );
        if let Err(err) = sec.store().audit(&ev).await {
            tracing::error!(error = %err, "denied request not audited");
        }
        return ApiError(StatusCode::FORBIDDEN, e.to_string()).into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// Builds the router. Every route but the public ones goes through [`guard`].
pub fn router(state: AppState, cfg: &HttpConfig, security: Arc<Security>) -> Router {
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
        .route("/api/audit", get(audit_events))
        .route("/api/audit/verify", get(audit_verify))
        .route("/api/backlog", get(backlog))
        .route("/api/cluster", get(cluster))
        .route("/api/plugins", get(plugins))
        .route("/api/plugins/{name}/reload", post(reload_plugin))
        .route_layer(middleware::from_fn_with_state(security, guard))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        .layer(middleware::from_fn(peer_from_tls))
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

/// Unfinished work per pipeline: in the journal (all nodes) and, with a broker, at the broker.
async fn backlog_of(s: &AppState) -> Result<Vec<serde_json::Value>, ApiError> {
    let rows = s.store.backlog().await?;
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
    Ok(s.pipelines
        .keys()
        .map(|p| {
            let row = rows.iter().find(|r| &r.pipeline == p);
            let oldest = row.and_then(|r| r.oldest_received_at);
            json!({
                "pipeline": p,
                "messages": row.map_or(0, |r| r.messages),
                "oldest_received_at": oldest,
                "oldest_age_seconds": oldest.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0),
                "in_memory": s.pipelines.get(p).map_or(0, |h| h.queue_depth()),
                "broker": broker.as_ref().map(|b| b.iter().find(|(n, _)| n == p).map_or(0, |x| x.1)),
            })
        })
        .collect())
}

async fn backlog(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(json!({ "pipelines": backlog_of(&s).await? })))
}

async fn cluster(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
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

async fn metrics(State(s): State<AppState>) -> Response {
    for p in s.pipelines.values() {
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

async fn pipelines(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let counts = s.store.counts().await?;
    let list: Vec<serde_json::Value> = s
        .pipelines
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
    let detail = format!(
        "pipeline={} state={} q={}",
        q.pipeline.as_deref().unwrap_or(""),
        q.state.as_deref().unwrap_or(""),
        q.q.as_deref().unwrap_or("")
    );
    let page = s
        .store
        .list(&ListFilter {
            pipeline: q.pipeline.filter(|p| !p.is_empty()),
            state,
            q: q.q,
            limit: q.limit,
            cursor: q.cursor.filter(|c| !c.is_empty()),
            facilities: caller.scope.facilities(),
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

/// A message outside the caller's scope is answered as if it did not exist.
async fn scoped_facility(s: &AppState, caller: &Caller, id: &str) -> Result<(), ApiError> {
    let facility = s.store.get(id).await?.map(|m| m.facility);
    match facility {
        Some(f) if caller.scope.allows(&f) => Ok(()),
        Some(f) => {
            audit(
                &s.store,
                &caller.event(
                    "message.read",
                    "Message",
                    id,
                    "denied",
                    format!("facility {f} is outside the caller's scope"),
                ),
            )
            .await?;
            Err(StoreError::NotFound(id.to_owned()).into())
        }
        None => Err(StoreError::NotFound(id.to_owned()).into()),
    }
}

async fn get_message(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    scoped_facility(&s, &caller, &id).await?;
    let detail = message_detail(&s.store, &id).await?;
    audit(
        &s.store,
        &caller.event("message.read", "Message", &id, "success", String::new()),
    )
    .await?;
    Ok(Json(detail))
}

async fn reprocess(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    scoped_facility(&s, &caller, &id).await?;
    let event = caller.event(
        "message.reprocess",
        "Message",
        &id,
        "success",
        String::new(),
    );
    let m = s.store.reprocess_audited(&id, Some(&event)).await?;
    s.wake.notify_one();
    tracing::info!(id = %m.id, pipeline = %m.pipeline, "reprocess requested");
    Ok(Json(
        json!({ "id": m.id, "pipeline": m.pipeline, "state": m.state }),
    ))
}

async fn ingest(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
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
    if !caller.scope.allows(pipeline.facility()) {
        audit(
            &s.store,
            &caller.event(
                "message.ingest",
                "Pipeline",
                pipeline.name(),
                "denied",
                format!(
                    "the pipeline belongs to facility {:?}, outside the caller's scope",
                    pipeline.facility()
                ),
            ),
        )
        .await?;
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "{} may not send into pipeline {} (facility {:?})",
                caller.principal.sub,
                pipeline.name(),
                pipeline.facility()
            ),
        ));
    }
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
    m.headers
        .insert("x-huizhen-sender".into(), caller.principal.sub.clone());
    match pipeline.submit(m).await {
        Ok(a) => {
            // Recorded after the journal commit (the journal writer's batch cannot take it).
            let ev = caller.event(
                "message.ingest",
                "Message",
                &a.id,
                "success",
                format!("pipeline {}", pipeline.name()),
            );
            if let Err(e) = s.store.audit(&ev).await {
                tracing::error!(error = %e, id = %a.id, "ingest not audited");
            }
            Ok((StatusCode::ACCEPTED, Json(a)).into_response())
        }
        Err(e) => Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    resource_id: Option<String>,
    after: Option<i64>,
    limit: Option<i64>,
}

async fn audit_events(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let rows = s
        .store
        .audit_events(&AuditFilter {
            actor: q.actor,
            action: q.action,
            resource_id: q.resource_id,
            after: q.after,
            limit: q.limit,
        })
        .await?;
    // Facility staff see the events of their own facilities.
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|r| caller.scope.allows(&r.event.facility))
        .collect();
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

async fn audit_verify(
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

/// The loaded plugins: name, version, sha256, world, signer, loaded_at, calls, errors, p50/p99
/// latency and the last load error (a broken new version leaves the old one serving).
async fn plugins(State(s): State<AppState>) -> Json<serde_json::Value> {
    let list = s
        .extensions
        .plugin_catalog()
        .map(|c| c.list())
        .unwrap_or_default();
    Json(json!({ "plugins": list }))
}

/// Reloads one plugin from its package now; the old version serves until the new one is
/// compiled and checked, and keeps serving if the new one is refused (409 with the reason).
async fn reload_plugin(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use crate::extensions::CatalogError;
    let Some(catalog) = s.extensions.plugin_catalog() else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "this engine has no plugin host".into(),
        ));
    };
    let n = name.clone();
    let result = tokio::task::spawn_blocking(move || catalog.reload(&n))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
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

/// An axum listener that completes the TLS handshake of each connection (in a task of its own,
/// so a slow or plaintext client holds up nobody) before handing it to the server.
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        SocketAddr,
    )>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(
        listener: tokio::net::TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
    ) -> TlsListener {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "HTTPS accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let hs = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(tcp),
                    )
                    .await;
                    match hs {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(%peer, error = %e, "HTTPS handshake failed (a plaintext client on the TLS port?)");
                        }
                        Err(_) => tracing::warn!(%peer, "HTTPS handshake timed out"),
                    }
                });
            }
        });
        TlsListener { rx, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The client address of a TLS connection (axum's `ConnectInfo<SocketAddr>` is only provided for
/// plain TCP listeners); [`router`] turns it into `ConnectInfo<SocketAddr>` for the handlers.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for PeerAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

async fn peer_from_tls(mut req: Request, next: Next) -> Response {
    if let Some(ConnectInfo(PeerAddr(a))) = req.extensions().get::<ConnectInfo<PeerAddr>>().copied()
    {
        req.extensions_mut().insert(ConnectInfo(a));
    }
    next.run(req).await
}
