//! `GET /api/consultations/{id}/call`: the consultation's call as it happened (issue 18,
//! STANDARDS RTC-20): who joined the room when, was admitted (out of the lobby, CN-06), left
//! and why, and the per-session quality summary of every track (the participants' getStats()
//! samples and the SFU's RTCP receiver reports), with the alerts raised at the RTC-21
//! thresholds. Readable like the consultation (its facilities' staff, its experts); the read is
//! audited (`consultation.call.read`).
//!
//! The response is an object of named fields: `consultation`, `room`, `participation`,
//! `quality`, `alerts` (the count raised per metric), `recording` (the one running now, if
//! any), `recordings` (the recorded tracks: codec, size, SHA-256, retention class, who started
//! and stopped them; the files at `/api/consultations/{id}/recordings/{recording}`) and
//! `active_alerts` (per participant, the RTC-21 alerts raised and not cleared yet).

use huizhen_domain::consultation::call_quality::Metric;
use huizhen_domain::consultation::room::room_id;

use super::*;

pub(in crate::http) async fn call_view(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, WfError> {
    let wf = workflow(&s)?;
    let stored = read_audited(&s, &wf, &caller, &id, "consultation.call.read").await?;
    let sessions = s.store.call_sessions(&id).await?;
    let quality = s.store.call_quality(&id).await?;
    let mut alerts = serde_json::Map::new();
    for (i, m) in Metric::ALL.into_iter().enumerate() {
        let n: u64 = quality.iter().map(|q| u64::from(q.summary.alerts[i])).sum();
        alerts.insert(
            m.code().into(),
            json!({"threshold": m.threshold(), "raised": n}),
        );
    }
    let quality: Vec<serde_json::Value> = quality
        .into_iter()
        .map(|q| {
            let role = sessions
                .iter()
                .find(|c| c.session == q.session)
                .map(|c| c.role.clone());
            let mut v = json!(q);
            v["role"] = json!(role);
            let mut by_metric = serde_json::Map::new();
            for (i, m) in Metric::ALL.into_iter().enumerate() {
                by_metric.insert(m.code().into(), json!(q.summary.alerts[i]));
            }
            v["summary"]["alerts"] = serde_json::Value::Object(by_metric);
            v
        })
        .collect();
    let live = match crate::media::call_control(&s) {
        Some(Ok(c)) => c.live(&id).await,
        Some(Err(e)) => {
            tracing::warn!(error = %e, "the call view without the live room");
            crate::media::LiveCall::default()
        }
        None => crate::media::LiveCall::default(),
    };
    let recordings: Vec<serde_json::Value> = s
        .store
        .recordings(&id)
        .await?
        .into_iter()
        .map(|r| {
            json!({
                "id": r.id,
                "recording": r.recording,
                "participant": r.participant,
                "role": r.role,
                "source": r.source,
                "kind": r.kind,
                "codec": r.codec,
                "container": r.container,
                "bytes": r.bytes,
                "sha256": r.sha256,
                "retention_class": r.retention_class,
                "started_at": r.started_at,
                "ended_at": r.ended_at,
                "started_by": r.started_by,
                "stopped_by": r.stopped_by,
                "stop_reason": r.stop_reason,
                "href": format!("/api/consultations/{id}/recordings/{}", r.id),
            })
        })
        .collect();
    let body = json!({
        "consultation": id,
        "room": room_id(&id),
        "state": stored.consultation.state(),
        "participation": sessions,
        "present": sessions.iter().filter(|c| c.left_at.is_none()).count(),
        "quality": quality,
        "alerts": alerts,
        "active_alerts": live.alerts,
        "recording": live.recording,
        "recordings": recordings,
    });
    Ok((StatusCode::OK, Json(body)).into_response())
}
