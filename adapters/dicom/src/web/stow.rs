//! STOW-RS (PS3.18 10.5): `POST /dicomweb/studies[/{study}]` with
//! `multipart/related; type="application/dicom"`, one Part 10 file per part. The body is read
//! as it arrives (chunked or not): each part's file meta group is read, then the part is
//! written straight to the object store's `.incoming/` (its bytes exactly as sent), so a study
//! of any size needs the memory of one chunk. A complete part is then filed as a C-STORE is
//! (the same checks, place, index and journal message, `calling_ae: "STOW-RS"`) in the `dicom`
//! source whose `accept` names the caller's facility.
//!
//! The answer is the Store Instances Response Module as `application/dicom+json`: (0008,1190)
//! Retrieve URL, (0008,1199) Referenced SOP Sequence for what was stored, (0008,1198) Failed SOP
//! Sequence with (0008,1197) Failure Reason (and the reason in words in (0000,0902) Error
//! Comment) for each refused part; 200 when all were stored, 202 when some, 409 when none.

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dicom_core::{Tag, VR};
use futures::StreamExt;
use huizhen_core::http::{AppState, Caller, Scheme};
use serde_json::{Map, Value};

use super::multipart::{self, Event};
use super::qido::base_url;
use super::{Fail, Targets, json};
use crate::charset::Charset;
use crate::objects::{Incoming, Objects};

mod file;

/// Failure reasons (PS3.4 Annex B status codes, as STOW-RS uses them).
mod reason {
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    pub const MISMATCH: u16 = 0xA900;
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
}

/// The largest file meta group accepted.
const MAX_META: usize = 64 * 1024;

pub async fn store(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    scheme: Option<Extension<Scheme>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    run(s, c, scheme, headers, None, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

pub async fn store_in_study(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    scheme: Option<Extension<Scheme>>,
    headers: HeaderMap,
    Path(study): Path<String>,
    body: Body,
) -> Response {
    run(s, c, scheme, headers, Some(study), body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// One part's outcome.
struct Outcome {
    sop_class: String,
    sop_instance: String,
    study: String,
    series: String,
    failure: Option<(u16, String)>,
}

/// Where a part is (one per request, on the handler's stack: its size does not matter).
#[allow(clippy::large_enum_variant)]
enum Part {
    /// Gathering the file meta group.
    Head(Vec<u8>),
    /// Writing.
    Body(Incoming, crate::dataset::FileMeta),
    /// Refused; the rest of it is skipped.
    Skip(Outcome),
}

/// What filing needs, per request.
struct Filing<'a> {
    s: &'a AppState,
    caller: &'a Caller,
    objects: Objects,
    pipeline: String,
    facility: String,
    charset: Charset,
    study: Option<String>,
}

/// How much of a refused request's body is read (and dropped) before the answer, at most.
const DRAIN_BYTES: usize = 64 * 1024 * 1024;
/// How long a refused request's body is read before the answer, at most.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads and drops what is left of a refused request's body (up to [`DRAIN_BYTES`] and
/// [`DRAIN_TIME`]) before its answer goes out. A client that sends the whole study before it
/// reads the answer (most STOW-RS clients, and `Connection: close`) would otherwise have the
/// connection reset under it while it writes, and never see why it was refused.
async fn drained(body: Body, fail: Fail) -> Fail {
    let mut stream = body.into_data_stream();
    let mut read = 0usize;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.len();
            if read > DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
    fail
}

async fn run(
    s: AppState,
    c: Caller,
    scheme: Option<Extension<Scheme>>,
    headers: HeaderMap,
    study: Option<String>,
    body: Body,
) -> Result<Response, Fail> {
    let ready = match ready(&s, &c, &headers, study.as_deref()) {
        Ok(r) => r,
        Err(fail) => return Err(drained(body, fail).await),
    };
    store_parts(&s, &c, (&headers, scheme), study, body, ready).await
}

/// What the checks before the body found: the boundary, the pipeline's target and charset,
/// the facility stored for.
struct Ready {
    boundary: String,
    target: super::Target,
    charset: Charset,
    facility: String,
}

/// The checks before any of the body is read: the content type, the study UID of the URL,
/// the caller's facility and its dicom source, the pipeline running.
fn ready(
    s: &AppState,
    c: &Caller,
    headers: &HeaderMap,
    study: Option<&str>,
) -> Result<Ready, Fail> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (boundary, ty) = multipart::parse_content_type(ct)
        .map_err(|e| Fail::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, e))?;
    if ty.as_deref().is_some_and(|t| t != "application/dicom") {
        return Err(Fail::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "STOW-RS here takes type=\"application/dicom\" (Part 10 files), not metadata and bulk data",
        ));
    }
    if let Some(st) = study
        && !crate::uids::is_valid(st)
    {
        return Err(Fail::bad(format!("{st:?} is not a UID")));
    }
    let facility = c.principal.facility.clone();
    let targets = s.extensions.get::<Targets>().ok_or_else(|| {
        Fail::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no dicom source stores studies in this engine",
        )
    })?;
    let (target, charset) = targets.for_facility(&facility).ok_or_else(|| {
        Fail::new(
            StatusCode::FORBIDDEN,
            format!("no dicom source accepts studies for facility {facility}"),
        )
    })?;
    // Platform staff ("*") store for the source's first facility.
    let facility = if facility == "*" {
        target
            .facilities
            .first()
            .map(|f| f.0.clone())
            .unwrap_or_default()
    } else {
        facility
    };
    if !c.write_scope.allows(&facility) {
        return Err(Fail::forbidden());
    }
    if s.pipelines.get(&target.pipeline).is_none() {
        return Err(Fail::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the dicom pipeline is not running",
        ));
    }
    Ok(Ready {
        boundary,
        target,
        charset,
        facility,
    })
}

/// Reads the parts of the body and files each (after [`ready`]).
async fn store_parts(
    s: &AppState,
    c: &Caller,
    (headers, scheme): (&HeaderMap, Option<Extension<Scheme>>),
    study: Option<String>,
    body: Body,
    ready: Ready,
) -> Result<Response, Fail> {
    let Ready {
        boundary,
        target,
        charset,
        facility,
    } = ready;
    let sync = s.store.durability() == huizhen_core::store::Durability::PowerLoss;
    let filing = Filing {
        s,
        caller: c,
        objects: Objects::new(&target.storage, sync),
        pipeline: target.pipeline.clone(),
        facility,
        charset,
        study: study.clone(),
    };
    let mut reader = multipart::Reader::new(&boundary);
    let mut stream = body.into_data_stream();
    let mut part: Option<Part> = None;
    let mut outcomes: Vec<Outcome> = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                if let Some(Part::Body(inc, _)) = part.take() {
                    inc.abandon().await;
                }
                return Err(Fail::bad(format!("the request body ended early: {e}")));
            }
        };
        let events = match reader.push(&chunk) {
            Ok(ev) => ev,
            Err(e) => {
                if let Some(Part::Body(inc, _)) = part.take() {
                    inc.abandon().await;
                }
                return Err(Fail::bad(format!("multipart body: {e}")));
            }
        };
        for ev in events {
            match ev {
                Event::Part(h) => {
                    let ct = h
                        .iter()
                        .find(|(k, _)| k == "content-type")
                        .map(|(_, v)| v.to_ascii_lowercase());
                    part = Some(match ct {
                        Some(t) if !t.starts_with("application/dicom") => Part::Skip(refused(
                            reason::CANNOT_UNDERSTAND,
                            format!("a part of type {t}; each part must be application/dicom"),
                        )),
                        _ => Part::Head(Vec::new()),
                    });
                }
                Event::Data(d) => {
                    part = match part.take() {
                        Some(Part::Head(mut buf)) => {
                            buf.extend_from_slice(&d);
                            Some(filing.head(buf).await)
                        }
                        Some(Part::Body(mut inc, meta)) => match inc.write(&d).await {
                            Ok(()) => Some(Part::Body(inc, meta)),
                            Err(e) => {
                                tracing::error!(error = %e, "STOW-RS: an instance cannot be written");
                                inc.abandon().await;
                                Some(Part::Skip(Outcome {
                                    sop_class: meta.sop_class_uid.clone(),
                                    sop_instance: meta.sop_instance_uid.clone(),
                                    study: String::new(),
                                    series: String::new(),
                                    failure: Some((
                                        reason::OUT_OF_RESOURCES,
                                        "the instance could not be written to storage".into(),
                                    )),
                                }))
                            }
                        },
                        other => other,
                    };
                }
                Event::End => {
                    let done = match part.take() {
                        Some(Part::Head(buf)) => refused(
                            reason::CANNOT_UNDERSTAND,
                            if buf.is_empty() {
                                "an empty part".into()
                            } else {
                                "not a DICOM Part 10 file (no complete file meta group)".into()
                            },
                        ),
                        Some(Part::Body(inc, meta)) => filing.file(inc, meta).await,
                        Some(Part::Skip(o)) => o,
                        None => continue,
                    };
                    outcomes.push(done);
                }
            }
        }
    }
    if let Some(Part::Body(inc, _)) = part.take() {
        inc.abandon().await;
    }
    if !reader.done() {
        return Err(Fail::bad("the multipart body has no closing delimiter"));
    }
    if outcomes.is_empty() {
        return Err(Fail::bad("the multipart body has no part"));
    }
    let stored = outcomes.iter().filter(|o| o.failure.is_none()).count();
    let study_for_audit = study
        .clone()
        .or_else(|| {
            outcomes
                .iter()
                .find(|o| !o.study.is_empty())
                .map(|o| o.study.clone())
        })
        .unwrap_or_else(|| "*".into());
    super::audit(
        s,
        c,
        "dicomweb.store",
        &study_for_audit,
        format!(
            "STOW-RS: {stored} stored, {} failed",
            outcomes.len() - stored
        ),
    )
    .await?;
    let base = base_url(headers, scheme.as_ref().map(|e| &e.0));
    let answer = response(&outcomes, &base, study.as_deref());
    let status = if stored == outcomes.len() {
        StatusCode::OK
    } else if stored > 0 {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CONFLICT
    };
    let mut r = (status, answer.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/dicom+json"),
    );
    Ok(r)
}

fn refused(code: u16, why: String) -> Outcome {
    Outcome {
        sop_class: String::new(),
        sop_instance: String::new(),
        study: String::new(),
        series: String::new(),
        failure: Some((code, why)),
    }
}

impl Filing<'_> {
    /// Gathers the file meta group; once complete, starts the file.
    async fn head(&self, buf: Vec<u8>) -> Part {
        if buf.len() < 144 {
            return Part::Head(buf);
        }
        if &buf[128..132] != b"DICM" || buf[132..136] != [0x02, 0x00, 0x00, 0x00] {
            return Part::Skip(refused(
                reason::CANNOT_UNDERSTAND,
                "not a DICOM Part 10 file (no DICM and file meta group length)".into(),
            ));
        }
        let group = u32::from_le_bytes([buf[140], buf[141], buf[142], buf[143]]) as usize;
        if group > MAX_META {
            return Part::Skip(refused(
                reason::CANNOT_UNDERSTAND,
                format!("a file meta group of {group} bytes"),
            ));
        }
        let head_len = 144 + group;
        if buf.len() < head_len {
            return Part::Head(buf);
        }
        let meta = match crate::dataset::read_file_meta(&mut &buf[..head_len]) {
            Ok(m) => m,
            Err(e) => {
                return Part::Skip(refused(
                    reason::CANNOT_UNDERSTAND,
                    format!("the file meta group: {e}"),
                ));
            }
        };
        let mut inc = match self.objects.begin_raw().await {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(error = %e, "STOW-RS: an instance cannot be written");
                return Part::Skip(Outcome {
                    sop_class: meta.sop_class_uid,
                    sop_instance: meta.sop_instance_uid,
                    study: String::new(),
                    series: String::new(),
                    failure: Some((
                        reason::OUT_OF_RESOURCES,
                        "the instance could not be written to storage".into(),
                    )),
                });
            }
        };
        let written = async {
            inc.write_header(&buf[..head_len]).await?;
            inc.write(&buf[head_len..]).await
        }
        .await;
        if let Err(e) = written {
            tracing::error!(error = %e, "STOW-RS: an instance cannot be written");
            inc.abandon().await;
            return Part::Skip(Outcome {
                sop_class: meta.sop_class_uid,
                sop_instance: meta.sop_instance_uid,
                study: String::new(),
                series: String::new(),
                failure: Some((
                    reason::OUT_OF_RESOURCES,
                    "the instance could not be written to storage".into(),
                )),
            });
        }
        Part::Body(inc, meta)
    }
}

/// The Store Instances Response Module.
fn response(outcomes: &[Outcome], base: &str, study: Option<&str>) -> Value {
    let mut m = Map::new();
    let study = study.map(str::to_owned).or_else(|| {
        outcomes
            .iter()
            .find(|o| o.failure.is_none())
            .map(|o| o.study.clone())
    });
    if let Some(st) = &study {
        json::put(
            &mut m,
            Tag(0x0008, 0x1190),
            VR::UR,
            Some(&format!("{base}/studies/{st}")),
        );
    }
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for o in outcomes {
        let mut item = Map::new();
        json::put(&mut item, Tag(0x0008, 0x1150), VR::UI, Some(&o.sop_class));
        json::put(
            &mut item,
            Tag(0x0008, 0x1155),
            VR::UI,
            Some(&o.sop_instance),
        );
        match &o.failure {
            None => {
                json::put(
                    &mut item,
                    Tag(0x0008, 0x1190),
                    VR::UR,
                    Some(&format!(
                        "{base}/studies/{}/series/{}/instances/{}",
                        o.study, o.series, o.sop_instance
                    )),
                );
                ok.push(Value::Object(item));
            }
            Some((code, why)) => {
                json::put_int(&mut item, Tag(0x0008, 0x1197), VR::US, i64::from(*code));
                json::put(&mut item, Tag(0x0000, 0x0902), VR::LO, Some(why));
                failed.push(Value::Object(item));
            }
        }
    }
    if !failed.is_empty() {
        m.insert(
            "00081198".into(),
            serde_json::json!({"vr": "SQ", "Value": failed}),
        );
    }
    if !ok.is_empty() {
        m.insert(
            "00081199".into(),
            serde_json::json!({"vr": "SQ", "Value": ok}),
        );
    }
    Value::Object(m)
}
