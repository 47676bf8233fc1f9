//! QIDO-RS (PS3.18 10.6): `GET /dicomweb/studies`, `/series`, `/instances` and the nested forms,
//! over the study index. Match keys by keyword or tag (`PatientID=…`, `00100020=…`): single
//! values, `*`/`?` wildcards, UID lists, date and time ranges, names against any component
//! group, case-insensitively (PS3.4 C.2.2.2, as C-FIND); `fuzzymatching=true` is answered as
//! exact matching with a `Warning: 299` header, like a key that is not supported here.
//! `limit`/`offset` page the matches (a Warning when more are left), `includefield` adds
//! attributes (`all` for every attribute the index keeps). Answers: `application/dicom+json`.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;
use huizhen_core::http::{AppState, Caller, Scheme};
use huizhen_core::store::dicom::{DicomInstance, DicomSeries, DicomStudy, StudyFilter};
use serde_json::{Map, Value};

use super::{Fail, Reach, json};

type Pairs = Query<Vec<(String, String)>>;

/// Search depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Study,
    Series,
    Instance,
}

const STUDY_TAGS: &[(u16, u16)] = &[
    (0x0008, 0x0005),
    (0x0008, 0x0020),
    (0x0008, 0x0030),
    (0x0008, 0x0050),
    (0x0008, 0x0061),
    (0x0008, 0x0090),
    (0x0008, 0x1190),
    (0x0010, 0x0010),
    (0x0010, 0x0020),
    (0x0010, 0x0030),
    (0x0010, 0x0040),
    (0x0020, 0x000D),
    (0x0020, 0x0010),
    (0x0020, 0x1206),
    (0x0020, 0x1208),
];
const STUDY_EXTRA: &[(u16, u16)] = &[(0x0008, 0x1030)];
const SERIES_TAGS: &[(u16, u16)] = &[
    (0x0008, 0x0005),
    (0x0008, 0x0060),
    (0x0008, 0x1190),
    (0x0020, 0x000E),
    (0x0020, 0x0011),
    (0x0020, 0x1209),
];
const SERIES_EXTRA: &[(u16, u16)] = &[(0x0008, 0x103E)];
const INSTANCE_TAGS: &[(u16, u16)] = &[
    (0x0008, 0x0005),
    (0x0008, 0x0016),
    (0x0008, 0x0018),
    (0x0008, 0x1190),
    (0x0008, 0x3002),
    (0x0020, 0x0013),
];

/// A parsed query.
#[derive(Debug, Default)]
struct Query_ {
    keys: Vec<(Tag, VR, String)>,
    include: Vec<Tag>,
    include_all: bool,
    limit: Option<usize>,
    offset: usize,
    warnings: Vec<String>,
}

fn tag_of(key: &str) -> Option<Tag> {
    if key.len() == 8 && key.chars().all(|c| c.is_ascii_hexdigit()) {
        let g = u16::from_str_radix(&key[..4], 16).ok()?;
        let e = u16::from_str_radix(&key[4..], 16).ok()?;
        return Some(Tag(g, e));
    }
    StandardDataDictionary.by_name(key).map(|e| e.tag())
}

fn vr_of(t: Tag) -> VR {
    StandardDataDictionary
        .by_tag(t)
        .map(|e| e.vr().relaxed())
        .unwrap_or(VR::LO)
}

fn parse(q: &[(String, String)], level: Level) -> Result<Query_, Fail> {
    let mut out = Query_::default();
    for (k, v) in q {
        match k.as_str() {
            "limit" => out.limit = Some(v.parse().map_err(|_| Fail::bad(format!("limit={v:?}")))?),
            "offset" => out.offset = v.parse().map_err(|_| Fail::bad(format!("offset={v:?}")))?,
            "fuzzymatching" => {
                if v == "true" {
                    out.warnings
                        .push("fuzzymatching is not supported; names matched exactly".into());
                }
            }
            "includefield" => {
                for f in v.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                    if f == "all" {
                        out.include_all = true;
                    } else {
                        let t = tag_of(f).ok_or_else(|| {
                            Fail::bad(format!("includefield: unknown attribute {f:?}"))
                        })?;
                        out.include.push(t);
                    }
                }
            }
            _ => {
                let t = tag_of(k).ok_or_else(|| Fail::bad(format!("unknown query key {k:?}")))?;
                let vr = vr_of(t);
                if vr == VR::SQ {
                    return Err(Fail::bad(format!(
                        "{k}: sequence matching is not supported"
                    )));
                }
                if known(t, level).is_none() {
                    out.warnings
                        .push(format!("{k} is not a supported matching key; ignored"));
                    continue;
                }
                out.keys.push((t, vr, v.clone()));
            }
        }
    }
    Ok(out)
}

/// Whether the index keeps `t` at `level` (matching keys of lower levels are unknown).
fn known(t: Tag, level: Level) -> Option<()> {
    let key = (t.group(), t.element());
    let study = STUDY_TAGS.contains(&key) || STUDY_EXTRA.contains(&key);
    let series = SERIES_TAGS.contains(&key) || SERIES_EXTRA.contains(&key);
    let instance = INSTANCE_TAGS.contains(&key);
    let ok = match level {
        Level::Study => study,
        Level::Series => study || series,
        Level::Instance => study || series || instance,
    };
    (ok && key != (0x0008, 0x1190) && key != (0x0008, 0x0005)).then_some(())
}

/// One match: what the index knows of it.
struct Hit<'a> {
    study: &'a DicomStudy,
    series: Option<&'a DicomSeries>,
    instance: Option<&'a DicomInstance>,
}

impl Hit<'_> {
    fn value(&self, t: Tag, base: &str) -> Option<String> {
        let st = self.study;
        let url = |p: String| Some(format!("{base}/studies/{p}"));
        Some(match (t.group(), t.element()) {
            (0x0008, 0x0005) => "ISO_IR 192".into(),
            (0x0008, 0x0020) => st.study_date.clone()?,
            (0x0008, 0x0030) => st.study_time.clone()?,
            (0x0008, 0x0050) => st.accession.clone()?,
            (0x0008, 0x0061) => st.modalities.join("\\"),
            (0x0008, 0x1030) => st.description.clone()?,
            (0x0010, 0x0010) => st.patient.name.clone()?,
            (0x0010, 0x0020) => st.patient_id.clone()?,
            (0x0010, 0x0030) => st.patient.birth_date.clone()?,
            (0x0010, 0x0040) => st.patient.sex.clone()?,
            (0x0020, 0x000D) => st.study_uid.clone(),
            (0x0020, 0x0010) => st.study_id.clone()?,
            (0x0020, 0x1206) => st.series_count.to_string(),
            (0x0020, 0x1208) => st.instance_count.to_string(),
            (0x0008, 0x0060) => self.series?.modality.clone()?,
            (0x0020, 0x000E) => self.series?.series_uid.clone(),
            (0x0020, 0x0011) => self.series?.series_number?.to_string(),
            (0x0008, 0x103E) => self.series?.description.clone()?,
            (0x0020, 0x1209) => self.series?.instance_count.to_string(),
            (0x0008, 0x0016) => self.instance?.sop_class_uid.clone(),
            (0x0008, 0x0018) => self.instance?.sop_instance_uid.clone(),
            (0x0008, 0x3002) => self.instance?.transfer_syntax.clone(),
            (0x0020, 0x0013) => self.instance?.instance_number?.to_string(),
            (0x0008, 0x1190) => match (self.series, self.instance) {
                (_, Some(i)) => url(format!(
                    "{}/series/{}/instances/{}",
                    st.study_uid, i.series_uid, i.sop_instance_uid
                ))?,
                (Some(se), None) => url(format!("{}/series/{}", st.study_uid, se.series_uid))?,
                (None, None) => url(st.study_uid.clone())?,
            },
            _ => return None,
        })
    }

    fn matches(&self, q: &Query_, base: &str) -> bool {
        q.keys.iter().all(|(t, vr, cond)| {
            if cond.is_empty() || cond == "*" {
                return true;
            }
            let actual = self.value(*t, base);
            if *t == Tag(0x0008, 0x0061) {
                // ModalitiesInStudy: any of the study's modalities.
                return self
                    .study
                    .modalities
                    .iter()
                    .any(|m| crate::find::matches(cond, *vr, Some(m)));
            }
            crate::find::matches(cond, *vr, actual.as_deref())
        })
    }

    fn answer(&self, level: Level, q: &Query_, base: &str) -> Value {
        let mut tags: Vec<(u16, u16)> = STUDY_TAGS.to_vec();
        if level != Level::Study {
            tags.retain(|k| matches!(k, (0x0008, 0x0005) | (0x0020, 0x000D)));
            tags.extend_from_slice(SERIES_TAGS);
        }
        if level == Level::Instance {
            tags.retain(|k| matches!(k, (0x0008, 0x0005) | (0x0020, 0x000D) | (0x0020, 0x000E)));
            tags.extend_from_slice(INSTANCE_TAGS);
        }
        if q.include_all {
            tags.extend_from_slice(STUDY_TAGS);
            tags.extend_from_slice(STUDY_EXTRA);
            if level != Level::Study {
                tags.extend_from_slice(SERIES_TAGS);
                tags.extend_from_slice(SERIES_EXTRA);
            }
        }
        for t in q.include.iter().chain(q.keys.iter().map(|k| &k.0)) {
            tags.push((t.group(), t.element()));
        }
        tags.sort();
        tags.dedup();
        let mut m = Map::new();
        for (g, e) in tags {
            let t = Tag(g, e);
            let vr = if t == Tag(0x0008, 0x1190) {
                VR::UR
            } else {
                vr_of(t)
            };
            let v = self.value(t, base);
            match (vr, v) {
                (VR::IS | VR::US | VR::UL, Some(n)) if n.parse::<i64>().is_ok() => {
                    json::put_int(&mut m, t, vr, n.parse().unwrap_or_default())
                }
                (_, v) => json::put(&mut m, t, vr, v.as_deref()),
            }
        }
        Value::Object(m)
    }
}

/// `http(s)://host/dicomweb` of a request.
pub fn base_url(headers: &HeaderMap, scheme: Option<&Scheme>) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        })
        .unwrap_or("localhost");
    format!("{}://{host}{}", scheme.map_or("http", |s| s.0), super::BASE)
}

/// Refuses an Accept header that takes no JSON.
fn accepts_json(headers: &HeaderMap) -> Result<(), Fail> {
    let Some(a) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let ok = a.split(',').any(|m| {
        let m = m
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        matches!(
            m.as_str(),
            "application/dicom+json" | "application/json" | "*/*" | "application/*" | ""
        )
    });
    if ok {
        Ok(())
    } else {
        Err(Fail::new(
            StatusCode::NOT_ACCEPTABLE,
            "QIDO-RS answers application/dicom+json",
        ))
    }
}

/// What a search needs.
struct Search<'a> {
    s: &'a AppState,
    caller: &'a Caller,
    base: String,
    level: Level,
    study: Option<String>,
    series: Option<String>,
}

/// At most this many studies are read per search before Rust-side matching.
const MAX_STUDIES: i64 = 5000;

impl Search<'_> {
    async fn run(&self, raw: &[(String, String)], headers: &HeaderMap) -> Result<Response, Fail> {
        accepts_json(headers)?;
        let q = parse(raw, self.level)?;
        let reach = Reach::of(self.s, self.caller).await?;
        let studies: Vec<DicomStudy> = match (&reach, &self.study) {
            (_, Some(uid)) => vec![super::readable(self.s, self.caller, uid).await?],
            (Reach::Studies(list), None) => list.clone(),
            (Reach::Facilities(f), None) => {
                let exact = |t: Tag| {
                    q.keys
                        .iter()
                        .find(|k| k.0 == t)
                        .map(|k| k.2.clone())
                        .filter(|v| !v.is_empty() && !v.contains(['*', '?', '\\']))
                };
                let (date_from, date_to) = match q.keys.iter().find(|k| k.0 == Tag(0x0008, 0x0020))
                {
                    Some((_, _, v)) if v.len() == 8 && !v.contains('-') => {
                        (Some(v.clone()), Some(v.clone()))
                    }
                    Some((_, _, v)) => match v.split_once('-') {
                        Some((a, b)) => (
                            (!a.is_empty()).then(|| a.to_owned()),
                            (!b.is_empty()).then(|| b.to_owned()),
                        ),
                        None => (None, None),
                    },
                    None => (None, None),
                };
                let study_uids = q
                    .keys
                    .iter()
                    .find(|k| k.0 == Tag(0x0020, 0x000D))
                    .map(|k| {
                        k.2.split('\\')
                            .map(|u| u.trim().to_owned())
                            .filter(|u| !u.is_empty())
                            .collect()
                    })
                    .unwrap_or_default();
                let filter = StudyFilter {
                    facilities: f.clone(),
                    study_uids,
                    patient_id: exact(Tag(0x0010, 0x0020)),
                    accession: exact(Tag(0x0008, 0x0050)),
                    date_from,
                    date_to,
                    limit: MAX_STUDIES,
                };
                self.s
                    .store
                    .dicom_studies(&filter)
                    .await
                    .map_err(|e| Fail::store(&e))?
            }
        };
        let limit = q.limit.unwrap_or(usize::MAX);
        let mut answers = Vec::new();
        let mut matched = 0usize;
        'studies: for st in &studies {
            if self.level == Level::Study {
                let hit = Hit {
                    study: st,
                    series: None,
                    instance: None,
                };
                if hit.matches(&q, &self.base) {
                    matched += 1;
                    if matched > q.offset && answers.len() < limit {
                        answers.push(hit.answer(self.level, &q, &self.base));
                    }
                }
                continue;
            }
            let mut series = self
                .s
                .store
                .dicom_series(&st.study_uid)
                .await
                .map_err(|e| Fail::store(&e))?;
            if let Some(se) = &self.series {
                series.retain(|x| &x.series_uid == se);
                if series.is_empty() {
                    return Err(Fail::new(StatusCode::NOT_FOUND, "no such series"));
                }
            }
            for se in &series {
                if self.level == Level::Series {
                    let hit = Hit {
                        study: st,
                        series: Some(se),
                        instance: None,
                    };
                    if hit.matches(&q, &self.base) {
                        matched += 1;
                        if matched > q.offset && answers.len() < limit {
                            answers.push(hit.answer(self.level, &q, &self.base));
                        }
                    }
                    continue;
                }
                let hit = Hit {
                    study: st,
                    series: Some(se),
                    instance: None,
                };
                if !q.keys.iter().all(|k| {
                    known(k.0, Level::Series).is_none()
                        || hit.matches(
                            &Query_ {
                                keys: vec![k.clone()],
                                ..Default::default()
                            },
                            &self.base,
                        )
                }) {
                    continue;
                }
                let instances = self
                    .s
                    .store
                    .dicom_instances(&st.study_uid, Some(&se.series_uid))
                    .await
                    .map_err(|e| Fail::store(&e))?;
                for i in &instances {
                    let hit = Hit {
                        study: st,
                        series: Some(se),
                        instance: Some(i),
                    };
                    if hit.matches(&q, &self.base) {
                        matched += 1;
                        if matched > q.offset && answers.len() < limit {
                            answers.push(hit.answer(self.level, &q, &self.base));
                        }
                        if matched > q.offset.saturating_add(limit) {
                            break 'studies;
                        }
                    }
                }
            }
        }
        let mut warnings = q.warnings.clone();
        if matched > q.offset.saturating_add(answers.len()) {
            warnings.push("there are more results: page with offset".into());
        }
        let what = match self.level {
            Level::Study => "studies",
            Level::Series => "series",
            Level::Instance => "instances",
        };
        let study_id = self.study.clone().unwrap_or_else(|| "*".into());
        super::audit(
            self.s,
            self.caller,
            "dicomweb.search",
            &study_id,
            format!("QIDO-RS {what}: {} answers", answers.len()),
        )
        .await?;
        let mut r = (StatusCode::OK, Value::Array(answers).to_string()).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/dicom+json"),
        );
        for w in warnings {
            if let Ok(v) = HeaderValue::from_str(&format!("299 huizhen \"{w}\"")) {
                r.headers_mut().append(header::WARNING, v);
            }
        }
        Ok(r)
    }
}

pub async fn series_of_study(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    scheme: Option<Extension<Scheme>>,
    headers: HeaderMap,
    Path(study): Path<String>,
    Query(q): Pairs,
) -> Response {
    nested(s, c, scheme, headers, q, Level::Series, Some(study), None).await
}

pub async fn instances_of_study(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    scheme: Option<Extension<Scheme>>,
    headers: HeaderMap,
    Path(study): Path<String>,
    Query(q): Pairs,
) -> Response {
    nested(s, c, scheme, headers, q, Level::Instance, Some(study), None).await
}

pub async fn instances_of_series(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    scheme: Option<Extension<Scheme>>,
    headers: HeaderMap,
    Path((study, series)): Path<(String, String)>,
    Query(q): Pairs,
) -> Response {
    nested(
        s,
        c,
        scheme,
        headers,
        q,
        Level::Instance,
        Some(study),
        Some(series),
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn nested(
    s: AppState,
    c: Caller,
    scheme: Option<Extension<Scheme>>,
    headers: HeaderMap,
    q: Vec<(String, String)>,
    level: Level,
    study: Option<String>,
    series: Option<String>,
) -> Response {
    let search = Search {
        s: &s,
        caller: &c,
        base: base_url(&headers, scheme.as_ref().map(|e| &e.0)),
        level,
        study,
        series,
    };
    search
        .run(&q, &headers)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn top(
    s: AppState,
    c: Caller,
    scheme: Option<Extension<Scheme>>,
    headers: HeaderMap,
    q: Vec<(String, String)>,
    level: Level,
) -> Response {
    nested(s, c, scheme, headers, q, level, None, None).await
}

pub async fn studies(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    scheme: Option<Extension<Scheme>>,
    headers: HeaderMap,
    Query(q): Pairs,
) -> Response {
    top(s, c, scheme, headers, q, Level::Study).await
}

pub async fn all_series(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    scheme: Option<Extension<Scheme>>,
    headers: HeaderMap,
    Query(q): Pairs,
) -> Response {
    top(s, c, scheme, headers, q, Level::Series).await
}

pub async fn all_instances(
    State(s): State<AppState>,
    Extension(c): Extension<Caller>,
    scheme: Option<Extension<Scheme>>,
    headers: HeaderMap,
    Query(q): Pairs,
) -> Response {
    top(s, c, scheme, headers, q, Level::Instance).await
}
