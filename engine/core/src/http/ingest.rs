//! `POST /in/…`: the `http` sources' ingestion endpoint.

use super::*;

pub(super) async fn ingest(
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
    // A sharing agreement lets a facility read another's data, never send into its pipelines.
    if !caller.write_scope.allows(pipeline.facility()) {
        audit(
            &s.store,
            &caller
                .event(
                    "message.ingest",
                    "Pipeline",
                    pipeline.name(),
                    "denied",
                    format!(
                        "the pipeline belongs to facility {:?}, outside the caller's write scope",
                        pipeline.facility()
                    ),
                )
                .about(pipeline.facility()),
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
        m.set_traceparent(tp);
    }
    m.headers
        .insert("x-huizhen-sender".into(), caller.principal.sub.clone());
    match pipeline.submit(m).await {
        Ok(a) => {
            // Recorded after the journal commit (the journal writer's batch cannot take it).
            let ev = caller
                .event(
                    "message.ingest",
                    "Message",
                    &a.id,
                    "success",
                    format!("pipeline {}", pipeline.name()),
                )
                .about(pipeline.facility());
            if let Err(e) = s.store.audit(&ev).await {
                tracing::error!(error = %e, id = %a.id, "ingest not audited");
            }
            Ok((StatusCode::ACCEPTED, Json(a)).into_response())
        }
        Err(e) if e.is_backlog() => {
            tracing::warn!(pipeline = pipeline.name(), error = %e, "backlog limit reached: 503");
            let mut r = ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response();
            r.headers_mut().insert(
                header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("5"),
            );
            Ok(r)
        }
        Err(e) => Err(ApiError::internal(
            StatusCode::SERVICE_UNAVAILABLE,
            "the message was not journaled; send it again",
            &e,
        )),
    }
}
