//! WADO-RS (PS3.18 10.4): study, series and instance retrieve as
//! `multipart/related; type="application/dicom"`, one Part 10 file per part, streamed one file
//! at a time; the `transfer-syntax` parameters of Accept choose between the stored syntax and
//! Explicit VR Little Endian ([`crate::transcode`]; 406 when neither is possible). Metadata as
//! `application/dicom+json`; frames of uncompressed pixel data as
//! `multipart/related; type="application/octet-stream"`, of encapsulated pixel data in their
//! compressed form with the syntax's media type; rendered instances as `image/png` for
//! uncompressed grayscale (MONOCHROME1/2, 8 or 16 bits, the first VOI window or the full range)
//! and RGB (8 bits).

use std::path::PathBuf;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dicom_core::Tag;
use dicom_core::value::Value as DValue;
use huizhen_core::http::{AppState, Caller, Scheme};
use huizhen_core::store::dicom::DicomInstance;

use super::multipart;
use super::qido::base_url;
use super::{Fail, readable};
use crate::transcode::{self, Plan, Wanted};

/// The `transfer-syntax` wanted by an Accept header for `application/dicom`.
pub fn wanted(headers: &HeaderMap) -> Result<Wanted, Fail> {
    let Some(a) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(Wanted::Default);
    };
    let mut list = Vec::new();
    let mut default = false;
    for range in split_ranges(a) {
        let mut params = multipart::split_params(&range);
        let media = params.next().unwrap_or("").trim().to_ascii_lowercase();
        let mut ty = None;
        let mut ts = None;
        let mut q = 1.0f32;
        for p in params {
            if let Some((k, v)) = p.split_once('=') {
                let v = v.trim().trim_matches('"').to_owned();
                match k.trim().to_ascii_lowercase().as_str() {
                    "type" => ty = Some(v.to_ascii_lowercase()),
                    "transfer-syntax" => ts = Some(v),
                    "q" => q = v.parse().unwrap_or(1.0),
                    _ => {}
                }
            }
        }
        if q <= 0.0 {
            continue;
        }
        let dicom = match media.as_str() {
            "multipart/related" => ty.as_deref().is_none_or(|t| t == "application/dicom"),
            "application/dicom" | "*/*" | "multipart/*" | "application/*" => true,
            _ => false,
        };
        if !dicom {
            continue;
        }
        match ts {
            Some(t) if t == "*" => return Ok(Wanted::Any),
            Some(t) => list.push(t),
            None => default = true,
        }
    }
    if default {
        return Ok(Wanted::Default);
    }
    if list.is_empty() {
        return Err(Fail::new(
            StatusCode::NOT_ACCEPTABLE,
            "this resource is served as multipart/related; type=\"application/dicom\"",
        ));
    }
    Ok(Wanted::List(list))
}

/// Splits an Accept header at commas outside quotes.
fn split_ranges(a: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in a.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c)
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

async fn instances_of(
    s: &AppState,
    c: &Caller,
    study: &str,
    series: Option<&str>,
    instance: Option<&str>,
) -> Result<Vec<DicomInstance>, Fail> {
    readable(s, c, study).await?;
    let mut list = s
        .store
        .dicom_instances(study, series)
        .await
        .map_err(|e| Fail::store(&e))?;
    if let Some(i) = instance {
        list.retain(|x| x.sop_instance_uid == i);
    }
    if list.is_empty() {
        return Err(Fail::new(
            StatusCode::NOT_FOUND,
            "no such series or instance",
        ));
    }
    Ok(list)
}

/// The retrieve answer: each instance read (or transcoded) when its part is sent.
async fn retrieve(
    s: AppState,
    c: Caller,
    headers: HeaderMap,
    study: String,
    series: Option<String>,
    instance: Option<String>,
) -> Result<Response, Fail> {
    let want = wanted(&headers)?;
    let list = instances_of(&s, &c, &study, series.as_deref(), instance.as_deref()).await?;
    let mut plans = Vec::with_capacity(list.len());
    for i in &list {
        let plan = transcode::choose(&i.transfer_syntax, &want)
            .map_err(|e| Fail::new(StatusCode::NOT_ACCEPTABLE, e))?;
        plans.push((PathBuf::from(&i.path), i.transfer_syntax.clone(), plan));
    }
    super::audit(
        &s,
        &c,
        "dicomweb.retrieve",
        &study,
        format!("WADO-RS: {} instances", plans.len()),
    )
    .await?;
    let boundary = multipart::boundary();
    let b = boundary.clone();
    let stream = futures::stream::unfold((plans.into_iter(), false), move |(mut it, closed)| {
        let b = b.clone();
        async move {
            if closed {
                return None;
            }
            let Some((path, ts, plan)) = it.next() else {
                return Some((
                    Ok::<Bytes, std::io::Error>(Bytes::from(multipart::close(&b))),
                    (it, true),
                ));
            };
            let (bytes, ts) = match plan {
                Plan::AsStored => (tokio::fs::read(&path).await, ts),
                Plan::ToExplicitLe => {
                    let p = path.clone();
                    let r = tokio::task::spawn_blocking(move || transcode::to_explicit_le(&p))
                        .await
                        .map_err(std::io::Error::other)
                        .and_then(|r| r.map_err(std::io::Error::other));
                    (r, transcode::EXPLICIT_LE.to_owned())
                }
            };
            let bytes = match bytes {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "WADO-RS: a stored instance cannot be read");
                    return Some((Err(e), (it, true)));
                }
            };
            let mut out =
                multipart::part_head(&b, &format!("application/dicom; transfer-syntax={ts}"), &[]);
            out.extend_from_slice(&bytes);
            out.extend_from_slice(b"\r\n");
            Some((Ok(Bytes::from(out)), (it, false)))
        }
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&format!(
            "multipart/related; type=\"application/dicom\"; boundary={boundary}"
        ))
        .map_err(|e| Fail::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
    );
    Ok(r)
}

pub async fn study(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    headers: HeaderMap,
    Path(study): Path<String>,
) -> Response {
    retrieve(s, c, headers, study, None, None)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

pub async fn series(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    headers: HeaderMap,
    Path((study, series)): Path<(String, String)>,
) -> Response {
    retrieve(s, c, headers, study, Some(series), None)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

pub async fn instance(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    headers: HeaderMap,
    Path((study, series, instance)): Path<(String, String, String)>,
) -> Response {
    retrieve(s, c, headers, study, Some(series), Some(instance))
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Metadata: every attribute but the pixel data, binary values up to 64 KiB inline.
async fn metadata(
    s: AppState,
    c: Caller,
    headers: HeaderMap,
    scheme: Option<Extension<Scheme>>,
    study: String,
    series: Option<String>,
    instance: Option<String>,
) -> Result<Response, Fail> {
    let list = instances_of(&s, &c, &study, series.as_deref(), instance.as_deref()).await?;
    super::audit(
        &s,
        &c,
        "dicomweb.metadata",
        &study,
        format!("WADO-RS metadata: {} instances", list.len()),
    )
    .await?;
    let base = base_url(&headers, scheme.as_ref().map(|e| &e.0));
    let out = tokio::task::spawn_blocking(move || {
        let mut all = Vec::with_capacity(list.len());
        for i in list {
            let obj = dicom_object::OpenFileOptions::new()
                .read_until(Tag(0x7FE0, 0x0010))
                .open_file(&i.path)
                .map_err(|e| format!("{}: {e}", i.path))?;
            let url = format!(
                "{base}/studies/{}/series/{}/instances/{}",
                i.study_uid, i.series_uid, i.sop_instance_uid
            );
            all.push(super::json::dataset(&obj, &url));
        }
        Ok::<_, String>(serde_json::Value::Array(all))
    })
    .await
    .map_err(|e| Fail::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| {
        tracing::error!(error = %e, "WADO-RS metadata: a stored instance cannot be read");
        Fail::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "a stored instance cannot be read",
        )
    })?;
    let mut r = (StatusCode::OK, out.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/dicom+json"),
    );
    Ok(r)
}

pub async fn study_metadata(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    scheme: Option<Extension<Scheme>>,
    headers: HeaderMap,
    Path(study): Path<String>,
) -> Response {
    metadata(s, c, headers, scheme, study, None, None)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

pub async fn series_metadata(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    scheme: Option<Extension<Scheme>>,
    headers: HeaderMap,
    Path((study, series)): Path<(String, String)>,
) -> Response {
    metadata(s, c, headers, scheme, study, Some(series), None)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

pub async fn instance_metadata(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    scheme: Option<Extension<Scheme>>,
    headers: HeaderMap,
    Path((study, series, instance)): Path<(String, String, String)>,
) -> Response {
    metadata(s, c, headers, scheme, study, Some(series), Some(instance))
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// The media type of a compressed frame of a transfer syntax.
fn frame_type(ts: &str) -> &'static str {
    match ts {
        "1.2.840.10008.1.2.4.50"
        | "1.2.840.10008.1.2.4.51"
        | "1.2.840.10008.1.2.4.57"
        | "1.2.840.10008.1.2.4.70" => "image/jpeg",
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => "image/jls",
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => "image/jp2",
        "1.2.840.10008.1.2.4.201" | "1.2.840.10008.1.2.4.202" | "1.2.840.10008.1.2.4.203" => {
            "image/jphc"
        }
        "1.2.840.10008.1.2.5" => "image/x-dicom-rle",
        _ => "application/octet-stream",
    }
}

/// Frames and their media type.
type Frames = (Vec<Vec<u8>>, String);

/// The frames of an instance (1-based numbers), with their media type.
fn read_frames(path: &str, numbers: &[usize]) -> Result<Frames, (StatusCode, String)> {
    let obj = dicom_object::OpenFileOptions::new()
        .open_file(path)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, format!("{path}: {e}")))?;
    let ts = obj.meta().transfer_syntax().to_owned();
    let int = |t: Tag| -> Option<usize> {
        obj.element(t)
            .ok()?
            .to_int::<i64>()
            .ok()
            .map(|v| v.max(0) as usize)
    };
    let count = int(Tag(0x0028, 0x0008)).unwrap_or(1).max(1);
    if let Some(n) = numbers.iter().find(|n| **n == 0 || **n > count) {
        return Err((
            StatusCode::NOT_FOUND,
            format!("frame {n}: the instance has {count} frames"),
        ));
    }
    let px = obj.element(Tag(0x7FE0, 0x0010)).map_err(|_| {
        (
            StatusCode::NOT_FOUND,
            "the instance has no pixel data".to_owned(),
        )
    })?;
    match px.value() {
        DValue::PixelSequence(seq) => {
            let frags = seq.fragments();
            let frames: Vec<Vec<u8>> = if frags.len() == count {
                frags.iter().map(|f| f.to_vec()).collect()
            } else if count == 1 {
                vec![frags.iter().flat_map(|f| f.iter().copied()).collect()]
            } else {
                return Err((
                    StatusCode::NOT_ACCEPTABLE,
                    "the frames span several fragments; retrieve the instance".into(),
                ));
            };
            let out = numbers.iter().map(|n| frames[n - 1].clone()).collect();
            Ok((out, format!("{}; transfer-syntax={ts}", frame_type(&ts))))
        }
        DValue::Primitive(p) => {
            let rows = int(Tag(0x0028, 0x0010)).unwrap_or(0);
            let cols = int(Tag(0x0028, 0x0011)).unwrap_or(0);
            let spp = int(Tag(0x0028, 0x0002)).unwrap_or(1);
            let bits = int(Tag(0x0028, 0x0100)).unwrap_or(8);
            let size = rows * cols * spp * bits / 8;
            let bytes = p.to_bytes();
            if size == 0 || bytes.len() < size * count {
                return Err((
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "pixel data shorter than its frames".into(),
                ));
            }
            let out = numbers
                .iter()
                .map(|n| bytes[(n - 1) * size..n * size].to_vec())
                .collect();
            Ok((
                out,
                format!(
                    "application/octet-stream; transfer-syntax={}",
                    transcode::EXPLICIT_LE
                ),
            ))
        }
        DValue::Sequence(_) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            "pixel data is a sequence".into(),
        )),
    }
}

pub async fn frames(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((study, series, instance, frames)): Path<(String, String, String, String)>,
) -> Response {
    async move {
        let numbers: Vec<usize> = frames
            .split(',')
            .map(|f| f.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|_| {
                Fail::bad(format!(
                    "frames {frames:?}: a comma-separated list of numbers"
                ))
            })?;
        let list = instances_of(&s, &c, &study, Some(&series), Some(&instance)).await?;
        let path = list[0].path.clone();
        super::audit(
            &s,
            &c,
            "dicomweb.frames",
            &study,
            format!("WADO-RS frames {frames} of {instance}"),
        )
        .await?;
        let (frames, ct) = tokio::task::spawn_blocking(move || read_frames(&path, &numbers))
            .await
            .map_err(|e| Fail::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|(st, m)| Fail::new(st, m))?;
        let boundary = multipart::boundary();
        let mut body = Vec::new();
        for f in frames {
            body.extend(multipart::part_head(&boundary, &ct, &[]));
            body.extend_from_slice(&f);
            body.extend_from_slice(b"\r\n");
        }
        body.extend(multipart::close(&boundary));
        let ty = ct.split(';').next().unwrap_or("application/octet-stream");
        let mut r = (StatusCode::OK, body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&format!(
                "multipart/related; type=\"{ty}\"; boundary={boundary}"
            ))
            .map_err(|e| Fail::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
        );
        Ok::<_, Fail>(r)
    }
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

pub async fn instance_rendered(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    headers: HeaderMap,
    Path((study, series, instance)): Path<(String, String, String)>,
) -> Response {
    async move {
        if let Some(a) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) {
            let ok = a.split(',').any(|m| {
                let m = m
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                matches!(m.as_str(), "image/png" | "image/*" | "*/*" | "")
            });
            if !ok {
                return Err(Fail::new(
                    StatusCode::NOT_ACCEPTABLE,
                    "rendered instances are served as image/png",
                ));
            }
        }
        let list = instances_of(&s, &c, &study, Some(&series), Some(&instance)).await?;
        let path = list[0].path.clone();
        super::audit(
            &s,
            &c,
            "dicomweb.rendered",
            &study,
            format!("WADO-RS rendered {instance}"),
        )
        .await?;
        let png = tokio::task::spawn_blocking(move || super::render::png(&path))
            .await
            .map_err(|e| Fail::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|(st, m)| Fail::new(st, m))?;
        let mut r = (StatusCode::OK, png).into_response();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
        Ok(r)
    }
    .await
    .unwrap_or_else(IntoResponse::into_response)
}
