//! DICOMweb (PS3.18, DCM-03) under `/dicomweb`: QIDO-RS search ([`qido`]), WADO-RS retrieve
//! ([`wado`]: instances as `multipart/related; type="application/dicom"` with transfer-syntax
//! negotiation, metadata as `application/dicom+json`, frames, rendered) and STOW-RS ([`stow`]:
//! streamed, one instance at a time). The routes are added to the engine's API through
//! [`huizhen_core::extensions::HttpRoutes`], so they pass the same authentication and route
//! table (`ROUTES`: `study.read` and `study.store`) as every other route.
//!
//! Who reaches which study ([`Reach`]): an expert only the studies of the consultations they
//! accepted or that are open to their offer — those attached to it (`study_attached`: the
//! study-complete match by accession or patient, the prefetched priors) and those its request
//! names (`attachments.studies`) — any other study answers 403, even another study of the same
//! patient; staff the studies of the facilities in their scope (their own and those sharing
//! with it; platform staff all).

pub mod json;
pub mod multipart;
pub mod qido;
pub mod render;
pub mod stow;
pub mod wado;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use huizhen_core::extensions::Extensions;
use huizhen_core::http::{AppState, Caller};
use huizhen_core::security::{Action, Role};
use huizhen_core::store::dicom::DicomStudy;

use crate::charset::Charset;
use crate::source::Rules;

/// The base of the DICOMweb URLs.
pub const BASE: &str = "/dicomweb";

/// A `dicom` source STOW-RS can store into.
#[derive(Debug, Clone)]
pub struct Target {
    pub pipeline: String,
    pub storage: PathBuf,
    /// The facilities of its `accept` entries, with each one's default charset.
    pub facilities: Vec<(String, Charset)>,
    /// Its AE title (the C-MOVE destination of a prefetch) and its registry of remote AEs.
    pub ae_title: String,
    pub remote: std::sync::Arc<crate::qr::remote::Registry>,
}

/// The `dicom` sources of an engine, by pipeline.
#[derive(Debug, Default)]
pub struct Targets(Mutex<BTreeMap<String, Target>>);

/// Called by the `dicom` source when it is built.
pub fn register(
    ext: &Extensions,
    pipeline: &str,
    storage: &Path,
    rules: &Rules,
    ae_title: &str,
    remote: std::sync::Arc<crate::qr::remote::Registry>,
) {
    let targets = ext
        .get_or_try_init::<Targets, std::convert::Infallible>(|| Ok(Targets::default()))
        .unwrap_or_else(|e| match e {});
    let mut facilities: Vec<(String, Charset)> = Vec::new();
    for r in &rules.0 {
        if !facilities.iter().any(|(f, _)| f == &r.facility) {
            facilities.push((r.facility.clone(), r.charset.clone()));
        }
    }
    targets.0.lock().unwrap_or_else(|p| p.into_inner()).insert(
        pipeline.to_owned(),
        Target {
            pipeline: pipeline.to_owned(),
            storage: storage.to_path_buf(),
            facilities,
            ae_title: ae_title.to_owned(),
            remote,
        },
    );
}

impl Targets {
    /// The source of `pipeline`.
    pub fn of_pipeline(&self, pipeline: &str) -> Option<Target> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(pipeline)
            .cloned()
    }

    /// The source a STOW-RS of `facility` goes to: the one whose `accept` names the facility
    /// (the first by pipeline name), or the only one there is.
    pub fn for_facility(&self, facility: &str) -> Option<(Target, Charset)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for t in map.values() {
            if let Some((_, cs)) = t.facilities.iter().find(|(f, _)| f == facility) {
                return Some((t.clone(), cs.clone()));
            }
        }
        if map.len() == 1 {
            let t = map.values().next().expect("one");
            let cs = t.facilities.first().map(|(_, c)| c.clone())?;
            return Some((t.clone(), cs));
        }
        None
    }
}

/// Every route: (method, axum pattern, action), for the engine's route table.
pub fn route_rows() -> Vec<(&'static str, String, Action)> {
    let r = Action::ReadStudies;
    let s = format!("{BASE}/studies/{{study}}");
    let se = format!("{s}/series/{{series}}");
    let i = format!("{se}/instances/{{instance}}");
    vec![
        ("GET", format!("{BASE}/studies"), r),
        ("POST", format!("{BASE}/studies"), Action::StoreStudies),
        ("GET", format!("{BASE}/series"), r),
        ("GET", format!("{BASE}/instances"), r),
        ("GET", s.clone(), r),
        ("POST", s.clone(), Action::StoreStudies),
        ("GET", format!("{s}/metadata"), r),
        ("GET", format!("{s}/series"), r),
        ("GET", format!("{s}/instances"), r),
        ("GET", se.clone(), r),
        ("GET", format!("{se}/metadata"), r),
        ("GET", format!("{se}/instances"), r),
        ("GET", i.clone(), r),
        ("GET", format!("{i}/metadata"), r),
        ("GET", format!("{i}/rendered"), r),
        ("GET", format!("{i}/frames/{{frames}}"), r),
    ]
}

/// The router (merged into the engine's before its guard).
pub fn routes() -> Router<AppState> {
    let s = format!("{BASE}/studies/{{study}}");
    let se = format!("{s}/series/{{series}}");
    let i = format!("{se}/instances/{{instance}}");
    Router::new()
        .route(
            &format!("{BASE}/studies"),
            get(qido::studies).post(stow::store),
        )
        .route(&format!("{BASE}/series"), get(qido::all_series))
        .route(&format!("{BASE}/instances"), get(qido::all_instances))
        .route(&s, get(wado::study).post(stow::store_in_study))
        .route(&format!("{s}/metadata"), get(wado::study_metadata))
        .route(&format!("{s}/series"), get(qido::series_of_study))
        .route(&format!("{s}/instances"), get(qido::instances_of_study))
        .route(&se, get(wado::series))
        .route(&format!("{se}/metadata"), get(wado::series_metadata))
        .route(&format!("{se}/instances"), get(qido::instances_of_series))
        .route(&i, get(wado::instance))
        .route(&format!("{i}/metadata"), get(wado::instance_metadata))
        .route(&format!("{i}/rendered"), get(wado::instance_rendered))
        .route(&format!("{i}/frames/{{frames}}"), get(wado::frames))
}

inventory::submit! {
    huizhen_core::extensions::HttpRoutes { name: "dicomweb", routes }
}

// STOW-RS and WADO-RS move whole studies: `http.transfer_timeout`, not `request_timeout`.
inventory::submit! {
    huizhen_core::extensions::TransferRoutes { prefix: BASE }
}

/// An error answer: a status and a reason (PS3.18 says little about bodies; a short text).
#[derive(Debug)]
pub struct Fail(pub StatusCode, pub String);

impl Fail {
    pub fn new(status: StatusCode, why: impl Into<String>) -> Fail {
        Fail(status, why.into())
    }

    pub fn bad(why: impl Into<String>) -> Fail {
        Fail(StatusCode::BAD_REQUEST, why.into())
    }

    /// A store failure: the details to the log under a reference.
    pub fn store(e: &dyn std::fmt::Display) -> Fail {
        let reference = huizhen_core::message::new_id();
        tracing::error!(%reference, error = %e, "dicomweb: the store failed");
        Fail(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the store is not available (reference {reference})"),
        )
    }

    pub fn forbidden() -> Fail {
        Fail(
            StatusCode::FORBIDDEN,
            "this study is not part of a consultation you take part in".into(),
        )
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        let mut r = (self.0, self.1).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    }
}

/// Which studies a caller reaches.
#[derive(Debug, Clone)]
pub enum Reach {
    /// Studies of the facilities in scope (`None`: all).
    Facilities(Option<Vec<String>>),
    /// An expert: these studies only.
    Studies(Vec<DicomStudy>),
}

impl Reach {
    pub async fn of(s: &AppState, caller: &Caller) -> Result<Reach, Fail> {
        if caller.principal.role != Role::Expert {
            return Ok(Reach::Facilities(caller.scope.facilities()));
        }
        let me = &caller.principal.sub;
        let scope = caller.scope.facilities();
        let ids = s
            .store
            .fhir_expert_consultation_ids(me, scope.as_deref())
            .await
            .map_err(|e| Fail::store(&e))?;
        let mut uids: Vec<String> = Vec::new();
        for cid in ids {
            let Some(stored) = s
                .store
                .consultation(&cid)
                .await
                .map_err(|e| Fail::store(&e))?
            else {
                continue;
            };
            let c = &stored.consultation;
            let open_to_me = c.current_attempt().is_some_and(|a| a.is_open_to(me));
            if c.accepted_by() == Some(me.as_str()) || open_to_me {
                let attached = c.studies().iter().map(|a| &a.study_uid);
                let requested = c.request().attachments.studies.iter();
                for uid in attached.chain(requested) {
                    if !uids.contains(uid) {
                        uids.push(uid.clone());
                    }
                }
            }
        }
        let mut studies: Vec<DicomStudy> = Vec::new();
        for uid in &uids {
            if let Some(st) = s
                .store
                .dicom_study(uid)
                .await
                .map_err(|e| Fail::store(&e))?
            {
                studies.push(st);
            }
        }
        Ok(Reach::Studies(studies))
    }

    pub fn allows(&self, study: &DicomStudy) -> bool {
        match self {
            Reach::Facilities(None) => true,
            Reach::Facilities(Some(f)) => f.contains(&study.facility),
            Reach::Studies(list) => list.iter().any(|s| s.study_uid == study.study_uid),
        }
    }
}

/// A study the caller may read: 404 when there is none, 403 when it is not theirs.
pub async fn readable(s: &AppState, caller: &Caller, study_uid: &str) -> Result<DicomStudy, Fail> {
    if !crate::uids::is_valid(study_uid) {
        return Err(Fail::bad(format!("{study_uid:?} is not a UID")));
    }
    let reach = Reach::of(s, caller).await?;
    let study = s
        .store
        .dicom_study(study_uid)
        .await
        .map_err(|e| Fail::store(&e))?;
    match study {
        Some(st) if reach.allows(&st) => Ok(st),
        Some(_) => Err(Fail::forbidden()),
        // An expert learns nothing about studies outside their consultations.
        None if matches!(reach, Reach::Studies(_)) => Err(Fail::forbidden()),
        None => Err(Fail::new(StatusCode::NOT_FOUND, "no such study")),
    }
}

/// Writes an audit row for a read or a store of patient data; a request whose audit cannot be
/// written fails.
pub async fn audit(
    s: &AppState,
    caller: &Caller,
    action: &str,
    study_uid: &str,
    detail: String,
) -> Result<(), Fail> {
    let e = caller.event(action, "ImagingStudy", study_uid, "success", detail);
    s.store.audit(&e).await.map(|_| ()).map_err(|err| {
        tracing::error!(error = %err, "dicomweb: audit event not written; refusing the request");
        Fail::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the audit trail cannot be written; try again later",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every DICOMweb route is in the engine's route table with the same action, and the table
    /// has no DICOMweb row that is not a route.
    #[test]
    fn the_route_table_holds_every_route() {
        let rows = route_rows();
        for (m, p, a) in &rows {
            assert!(
                huizhen_core::security::ROUTES
                    .iter()
                    .any(|r| r.0 == *m && r.1 == p && r.2 == *a),
                "{m} {p} {a:?} missing from ROUTES"
            );
        }
        for r in huizhen_core::security::ROUTES
            .iter()
            .filter(|r| r.1.starts_with(BASE))
        {
            assert!(
                rows.iter()
                    .any(|(m, p, a)| r.0 == *m && r.1 == p && r.2 == *a),
                "{} {} is in ROUTES but not a route",
                r.0,
                r.1
            );
        }
    }
}
