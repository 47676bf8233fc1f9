//! The call's recordings on the consultation (issue 18, RTC-30): `GET
//! /api/consultations/{id}/recordings` lists the recorded tracks (participant, codec,
//! container, size, SHA-256, CN-30 retention class and the time before which they are kept);
//! `GET /api/consultations/{id}/recordings/{recording}` downloads one track decrypted, streamed
//! chunk by chunk from the object store, with its recorded SHA-256 in `x-content-sha256` (the
//! stream is cut if what is read does not hash to it). Both need the consultation readable by
//! the caller; both are audited (`recording.list`, `recording.download`), refusals too.

use std::io::Write as _;

use sha2::{Digest, Sha256};

use super::*;
use crate::objects::ObjectStore;

fn content_type(container: &str) -> &'static str {
    match container {
        "ogg" => "audio/ogg",
        "ivf" => "video/x-ivf",
        "h264" => "video/h264",
        _ => "application/octet-stream",
    }
}

pub(in crate::http) async fn list_recordings(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, WfError> {
    let wf = workflow(&s)?;
    let stored = readable(&s, &wf, &caller, &id, "recording.list").await?;
    let facility = stored.consultation.request().requesting_facility.clone();
    let rows = s.store.recordings(&id).await?;
    audit(
        &s.store,
        &caller
            .event(
                "recording.list",
                "Consultation",
                &id,
                "success",
                format!("{} recorded tracks", rows.len()),
            )
            .about(&facility),
    )
    .await?;
    let items: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "recording": r.recording,
                "room": r.room,
                "participant": r.participant,
                "role": r.role,
                "source": r.source,
                "kind": r.kind,
                "codec": r.codec,
                "container": r.container,
                "content_type": content_type(&r.container),
                "bytes": r.bytes,
                "packets": r.packets,
                "sha256": r.sha256,
                "started_at": ms_time(r.started_at),
                "ended_at": ms_time(r.ended_at),
                "started_by": r.started_by,
                "retention_class": r.retention_class,
                "retain_until": ms_time(r.retain_until),
                "href": format!("/api/consultations/{id}/recordings/{}", r.id),
            })
        })
        .collect();
    Ok(Json(json!({ "consultation": id, "recordings": items })).into_response())
}

fn ms_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

pub(in crate::http) async fn download_recording(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path((id, recording)): Path<(String, String)>,
) -> Result<Response, WfError> {
    let wf = workflow(&s)?;
    let stored = readable(&s, &wf, &caller, &id, "recording.download").await?;
    let facility = stored.consultation.request().requesting_facility.clone();
    let Some(row) = s.store.recording(&id, &recording).await? else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no recording {recording} on consultation {id}"),
        )
        .into());
    };
    let Some(objects) = s.extensions.get::<ObjectStore>() else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the object store is not available in this engine".into(),
        )
        .into());
    };
    let reader = objects.read(&row.object_id).map_err(|e| {
        ApiError::internal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the recording cannot be read",
            &e,
        )
    })?;
    audit(
        &s.store,
        &caller
            .event(
                "recording.download",
                "Consultation",
                &id,
                "success",
                format!(
                    "recording {} ({} {} of {}), object {}, sha256 {}",
                    row.id, row.kind, row.container, row.participant, row.object_id, row.sha256
                ),
            )
            .about(&facility),
    )
    .await?;
    // Decrypted on a blocking thread, a few chunks ahead of the client.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let want = row.sha256.clone();
    tokio::task::spawn_blocking(move || {
        let mut hash = Sha256::new();
        for chunk in reader {
            match chunk {
                Ok(c) => {
                    let _ = hash.write_all(&c);
                    if tx.blocking_send(Ok(Bytes::from(c))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "recording download cut");
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                    return;
                }
            }
        }
        let got = hex::encode(hash.finalize());
        if got != want {
            tracing::error!(got, want, "recording download: the SHA-256 does not match");
            let _ = tx.blocking_send(Err(std::io::Error::other("SHA-256 mismatch")));
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut r = axum::body::Body::from_stream(stream).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(content_type(&row.container)),
    );
    if let Ok(v) = axum::http::HeaderValue::from_str(&row.sha256) {
        h.insert("x-content-sha256", v);
    }
    if let Ok(v) = axum::http::HeaderValue::from_str(&row.bytes.to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    Ok(r)
}
