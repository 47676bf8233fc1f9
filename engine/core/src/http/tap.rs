//! `GET /api/tap`: the live messages of one pipeline as they pass its steps and reach its sinks
//! (the engine's taps, `runner/tap.rs`), as newline-delimited JSON, one passage a line.
//!
//! | query | |
//! |---|---|
//! | `pipeline` | the pipeline (required; its facility must be in the caller's scope) |
//! | `point` | one step or sink: its label (`set#1`), name, or `steps[1]`/`sinks[0]`; default every one |
//! | `filter` | a CEL expression over the message at that point; only passages for which it is true |
//! | `phi` | `true`: headers, body and reasons as they are (admins and integrators, audited) |
//! | `limit` | end the stream after this many passages |
//!
//! **Redacted by default.** Without `phi=true` a passage shows where the message is, its id,
//! kind and outcome, the values of the engine's own headers (`hl7-type`, `hl7-control-id`,
//! `huizhen-*`, …) and the names of the others, the body's size, never its content, and no stop
//! or failure reason (reasons may quote the message). The filter runs on the whole message in
//! the engine. Every tap is audited when it opens (`pipeline.tap`, with the point, the filter
//! and whether PHI was asked for) and when it ends (`pipeline.tap.end`: how many passages were
//! shown and, for a PHI tap, which messages).
//!
//! A reader that falls behind loses passages (the tap's queue is bounded, the pipeline never
//! waits for it): a line `{"dropped": N}` says how many.

use std::convert::Infallible;

use axum::body::Body;
use axum::response::Response;

use super::*;
use crate::runner::tap::{Outcome, Passage, Tap};
use crate::security::Action;

/// The passages a reader may fall behind by before they are dropped.
const QUEUE: usize = 1024;

/// Headers whose values are the engine's, never the patient's: shown in a redacted tap.
const SAFE_HEADERS: &[&str] = &[
    "content-type",
    "dicom-event",
    "dicom-modality",
    "hl7-ack",
    "hl7-app-ack",
    "hl7-charset",
    "hl7-control-id",
    "hl7-sending-application",
    "hl7-sending-facility",
    "hl7-type",
    "hl7-version",
    "x-huizhen-event",
];

const REDACTED: &str = "«redacted»";

#[derive(Debug, Deserialize)]
pub(super) struct TapQuery {
    pipeline: Option<String>,
    point: Option<String>,
    filter: Option<String>,
    #[serde(default)]
    phi: bool,
    limit: Option<u64>,
}

pub(super) async fn tap(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(q): Query<TapQuery>,
) -> Result<Response, ApiError> {
    let Some(name) = q.pipeline.filter(|p| !p.is_empty()) else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "pipeline: name the pipeline to tap (?pipeline=NAME)".into(),
        ));
    };
    let Some(handle) = s.pipelines.get(&name) else {
        let known: Vec<String> = s.pipelines.snapshot().into_keys().collect();
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "no pipeline {name:?}{}",
                crate::config::did_you_mean(&name, known.iter().map(String::as_str))
                    .map(|s| format!("; did you mean {s:?}?"))
                    .unwrap_or_default()
            ),
        ));
    };
    if !caller.scope.allows(handle.facility()) {
        // As a message outside the caller's facilities: not found, not "forbidden".
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no pipeline {name:?} among your facilities' pipelines"),
        ));
    }
    let info = handle.info();
    let point = match q.point.as_deref().filter(|p| !p.is_empty()) {
        None => None,
        Some(p) => Some(resolve_point(&info, p).ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!(
                    "point: pipeline {name:?} has no step or sink {p:?}; it has {}",
                    info.steps
                        .iter()
                        .chain(info.sinks.iter())
                        .map(|s| format!("{s:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?),
    };
    let filter = match q.filter.as_deref().filter(|f| !f.trim().is_empty()) {
        None => None,
        Some(f) => Some(
            crate::expr::Expr::compile(f)
                .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("filter: {e}")))?,
        ),
    };
    let detail = format!(
        "point={} filter={} phi={}",
        point.as_deref().unwrap_or("*"),
        q.filter.as_deref().unwrap_or(""),
        q.phi
    );
    if q.phi && !Action::TapPhi.roles().contains(&caller.principal.role) {
        audit(
            &s.store,
            &caller
                .event("pipeline.tap", "Pipeline", &name, "denied", detail)
                .about(handle.facility()),
        )
        .await?;
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "phi: the role {} may tap messages redacted only (PHI: {})",
                caller.principal.role.as_str(),
                Action::TapPhi
                    .roles()
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    audit(
        &s.store,
        &caller
            .event("pipeline.tap", "Pipeline", &name, "success", detail)
            .about(handle.facility()),
    )
    .await?;
    let tap = s.taps.open(Some(&name), point.as_deref(), QUEUE);
    let feed = Feed {
        tap,
        filter,
        phi: q.phi,
        limit: q.limit,
        shown: 0,
        dropped: 0,
        ids: Vec::new(),
        stop: s.shutdown.clone(),
        end: Some(TapEnd {
            store: s.store.clone(),
            caller,
            pipeline: name,
            facility: handle.facility().to_owned(),
        }),
    };
    let stream = futures::stream::unfold(feed, Feed::next);
    Ok(Response::builder()
        .header("content-type", "application/x-ndjson")
        .header("cache-control", "no-store")
        .body(Body::from_stream(stream))
        .unwrap_or_default())
}

/// `steps[1]` → the label of step 1; a label or sink name as it is, if the pipeline has it.
fn resolve_point(info: &crate::runner::PipelineInfo, p: &str) -> Option<String> {
    let index = |list: &str| -> Option<usize> {
        p.strip_prefix(list)?
            .strip_prefix('[')?
            .strip_suffix(']')?
            .parse()
            .ok()
    };
    if let Some(i) = index("steps") {
        return info.steps.get(i).cloned();
    }
    if let Some(i) = index("sinks") {
        return info.sinks.get(i).cloned();
    }
    info.steps
        .iter()
        .chain(info.sinks.iter())
        .find(|s| *s == p)
        .cloned()
}

/// What the tap's end writes to the audit trail.
struct TapEnd {
    store: Store,
    caller: Caller,
    pipeline: String,
    facility: String,
}

/// One reader's tap.
struct Feed {
    tap: Tap,
    filter: Option<crate::expr::Expr>,
    phi: bool,
    limit: Option<u64>,
    shown: u64,
    dropped: u64,
    /// The messages a PHI tap showed (for its audit row).
    ids: Vec<String>,
    stop: tokio_util::sync::CancellationToken,
    end: Option<TapEnd>,
}

impl Feed {
    async fn next(mut self) -> Option<(Result<bytes::Bytes, Infallible>, Feed)> {
        loop {
            if self.limit.is_some_and(|l| self.shown >= l) {
                return None;
            }
            let dropped = self.tap.dropped();
            if dropped > self.dropped {
                let line = json!({ "dropped": dropped - self.dropped });
                self.dropped = dropped;
                return Some((Ok(ndjson(&line)), self));
            }
            let p = tokio::select! {
                _ = self.stop.cancelled() => return None,
                p = self.tap.rx.recv() => p?,
            };
            if let Some(f) = &self.filter {
                let mut w = work_of(&p);
                // An expression that fails on a message (a missing field) does not match it.
                if !f.eval_bool(&mut w).unwrap_or(false) {
                    continue;
                }
            }
            self.shown += 1;
            if self.phi && !self.ids.contains(&p.message_id) {
                self.ids.push(p.message_id.clone());
            }
            let line = render(&p, self.phi);
            return Some((Ok(ndjson(&line)), self));
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        let Some(end) = self.end.take() else {
            return;
        };
        let detail = if self.phi {
            format!(
                "{} passages shown with PHI; messages: {}",
                self.shown,
                self.ids.join(",")
            )
        } else {
            format!("{} passages shown, redacted", self.shown)
        };
        let event = end
            .caller
            .event(
                "pipeline.tap.end",
                "Pipeline",
                &end.pipeline,
                "success",
                detail,
            )
            .about(&end.facility);
        // The reader went away (or the limit was reached): recorded off the request's task.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = end.store.audit(&event).await {
                    tracing::error!(error = %e, "the end of a tap was not audited");
                }
            });
        }
    }
}

fn ndjson(v: &serde_json::Value) -> bytes::Bytes {
    let mut line = serde_json::to_vec(v).unwrap_or_default();
    line.push(b'\n');
    bytes::Bytes::from(line)
}

/// The passage as a message, for the filter.
fn work_of(p: &Passage) -> crate::work::Work {
    let mut m = crate::message::NewMessage::new(&p.pipeline, "", &p.kind, p.body.clone());
    m.headers = p.headers.clone();
    let mut msg = m.preview();
    msg.id.clone_from(&p.message_id);
    msg.trace_id.clone_from(&p.trace_id);
    crate::work::Work::from_message(&msg)
}

/// A passage as a line: redacted unless `phi`.
fn render(p: &Passage, phi: bool) -> serde_json::Value {
    let outcome = match (&p.outcome, phi) {
        (Outcome::Stop(r) | Outcome::Failed(r), true) => json!(r),
        (Outcome::Stop(_) | Outcome::Failed(_), false) => json!(REDACTED),
        _ => serde_json::Value::Null,
    };
    let result = match &p.outcome {
        Outcome::Continue => "continue",
        Outcome::Stop(_) => "stop",
        Outcome::Failed(_) => "failed",
        Outcome::Delivered => "delivered",
        Outcome::NotDelivered => "not_delivered",
    };
    let headers: serde_json::Map<String, serde_json::Value> = p
        .headers
        .iter()
        .map(|(k, v)| {
            let shown = phi || SAFE_HEADERS.contains(&k.as_str()) || k.starts_with("huizhen-");
            (k.clone(), json!(if shown { v.as_str() } else { REDACTED }))
        })
        .collect();
    let mut line = json!({
        "pipeline": p.pipeline,
        "point": p.point,
        "place": p.place,
        "message_id": p.message_id,
        "trace_id": p.trace_id,
        "at": p.at,
        "result": result,
        "reason": outcome,
        "kind": p.kind,
        "headers": headers,
        "body_bytes": p.body.len(),
    });
    if phi {
        let decoded = crate::expr::kind_text(&p.kind)
            .and_then(|k| (k.decode)(&p.body, &p.headers).ok())
            .map(|d| (d.text, d.charset));
        match decoded {
            Some((text, charset)) => {
                line["body"] = json!(text);
                line["body_charset"] = json!(charset);
            }
            None => match std::str::from_utf8(&p.body) {
                Ok(t) => line["body"] = json!(t),
                Err(_) => {
                    use base64::Engine as _;
                    line["body_base64"] =
                        json!(base64::engine::general_purpose::STANDARD.encode(&p.body));
                }
            },
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::tap::Place;

    fn passage() -> Passage {
        Passage {
            pipeline: "hl7-intake".into(),
            message_id: "m1".into(),
            trace_id: "m1".into(),
            point: "set#1".into(),
            place: Place::Step(1),
            outcome: Outcome::Failed("PID-5 王芳 is not valid".into()),
            kind: "json".into(),
            headers: [
                ("hl7-type".to_owned(), "ADT^A01".to_owned()),
                ("patient-id".to_owned(), "330523199001011238".to_owned()),
                ("huizhen-routed-to".to_owned(), "hl7-adt:m2".to_owned()),
            ]
            .into(),
            body: r#"{"name":"王芳"}"#.as_bytes().to_vec(),
            at: 1,
        }
    }

    #[test]
    fn a_redacted_passage_shows_no_patient_data() {
        let line = render(&passage(), false).to_string();
        assert!(!line.contains("王芳"), "{line}");
        assert!(!line.contains("330523199001011238"), "{line}");
        assert!(line.contains("\"hl7-type\":\"ADT^A01\""), "{line}");
        assert!(
            line.contains("\"huizhen-routed-to\":\"hl7-adt:m2\""),
            "{line}"
        );
        assert!(line.contains("\"patient-id\":\"«redacted»\""), "{line}");
        assert!(line.contains("\"body_bytes\":17"), "{line}");
        assert!(!line.contains("\"body\""), "{line}");
    }

    #[test]
    fn a_phi_passage_shows_the_message() {
        let line = render(&passage(), true);
        assert_eq!(line["body"], json!(r#"{"name":"王芳"}"#));
        assert_eq!(line["headers"]["patient-id"], json!("330523199001011238"));
        assert_eq!(line["reason"], json!("PID-5 王芳 is not valid"));
        assert_eq!(line["result"], json!("failed"));
    }
}
