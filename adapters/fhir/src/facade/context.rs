//! A request's context (the engine's state, the caller, the base URL), what an expert may see
//! (FHIR-22), and the dispatch of reads and searches to the sources of a type.

use axum::http::{HeaderMap, StatusCode, header};
use huizhen_core::http::{AppState, Caller, Scheme};
use huizhen_core::security::Role;
use huizhen_core::store::audit::AuditEvent;
use serde_json::Value;
use tokio::sync::OnceCell;

use super::outcome::Fail;
use super::search::SearchRequest;
use super::table::{ResourceDef, Source, prefix};
use super::{audit, care, consult, directory, patient, schedule, stored};

/// The base of the facade's URLs.
pub const BASE_PATH: &str = "/fhir/r4";

/// One resource as served, with what sorting and auditing need.
#[derive(Debug, Clone)]
pub struct Served {
    /// The resource, `meta.versionId` and `meta.lastUpdated` set.
    pub json: Value,
    /// ms since the epoch.
    pub last_updated: i64,
    /// The facility the data belongs to, for the audit row.
    pub facility: Option<String>,
}

/// What an expert may see: the consultations they own or owned (accepted, or open to their
/// offer) and those consultations' patients, as persons and as stored Patients.
#[derive(Debug, Clone, Default)]
pub struct ExpertView {
    pub consultations: Vec<String>,
    pub persons: Vec<i64>,
    pub stored_patients: Vec<String>,
}

pub struct Ctx {
    pub s: AppState,
    pub caller: Caller,
    /// `http(s)://host/fhir/r4`.
    pub base: String,
    expert: OnceCell<Option<ExpertView>>,
}

impl Ctx {
    pub fn new(s: AppState, caller: Caller, headers: &HeaderMap, scheme: Option<Scheme>) -> Ctx {
        Ctx {
            s,
            caller,
            base: Ctx::base_of(headers, scheme),
            expert: OnceCell::new(),
        }
    }

    /// `http(s)://host/fhir/r4` of a request (the Host header when it is a plain host name).
    pub fn base_of(headers: &HeaderMap, scheme: Option<Scheme>) -> String {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                !h.is_empty()
                    && h.chars().all(|c| {
                        c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']')
                    })
            })
            .unwrap_or("localhost");
        let scheme = scheme.map_or("http", |s| s.0);
        format!("{scheme}://{host}{BASE_PATH}")
    }

    pub fn is_expert(&self) -> bool {
        self.caller.principal.role == Role::Expert
    }

    /// For an expert, what they may see (worked out once per request); `None` for others.
    pub async fn expert(&self) -> Result<Option<&ExpertView>, Fail> {
        if !self.is_expert() {
            return Ok(None);
        }
        let v = self
            .expert
            .get_or_try_init(|| async { consult::expert_view(self).await.map(Some) })
            .await?;
        Ok(v.as_ref())
    }

    /// Writes an audit event; a request whose audit cannot be written fails.
    pub async fn audit(&self, e: &AuditEvent) -> Result<(), Fail> {
        self.s.store.audit(e).await.map(|_| ()).map_err(|err| {
            tracing::error!(error = %err, action = %e.action, "audit event not written; refusing the request");
            Fail::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "transient",
                "the audit trail cannot be written; try again later",
            )
        })
    }

    /// An audit event of this caller.
    pub fn event(
        &self,
        action: &str,
        resource_type: &str,
        id: &str,
        outcome: &str,
        detail: String,
    ) -> AuditEvent {
        self.caller
            .event(action, resource_type, id, outcome, detail)
    }
}

/// The source that owns `id` among the type's sources.
pub fn source_of(def: &ResourceDef, id: &str) -> Option<Source> {
    def.sources
        .iter()
        .copied()
        .find(|s| prefix(*s, def.name).is_some_and(|p| id.starts_with(p)))
        .or_else(|| {
            def.sources
                .iter()
                .copied()
                .find(|s| prefix(*s, def.name).is_none())
        })
}

/// Reads one resource (the current version, or `version`) the caller may see; `None` when
/// it does not exist or is not visible (the caller cannot tell which).
pub async fn read(
    ctx: &Ctx,
    def: &ResourceDef,
    id: &str,
    version: Option<i64>,
) -> Result<Option<Served>, Fail> {
    let Some(source) = source_of(def, id) else {
        return Ok(None);
    };
    match source {
        Source::Stored => stored::read(ctx, def, id, version).await,
        Source::Consultation => consult::read(ctx, def, id, version).await,
        Source::Person => patient::read(ctx, id, version).await,
        Source::Directory if version.is_none() => directory::read(ctx, def, id).await,
        Source::Booking => Ok(care::read_booking(ctx, id).await?.filter(|s| {
            version.is_none_or(|v| {
                s.json["meta"]["versionId"].as_str() == Some(v.to_string().as_str())
            })
        })),
        Source::Prescription if version.is_none() => care::read_medication(ctx, id).await,
        Source::Audit if version.is_none() => audit::read(ctx, id).await,
        Source::Schedule if version.is_none() => schedule::read(ctx, def, id).await,
        Source::Directory | Source::Prescription | Source::Audit | Source::Schedule => Ok(None),
    }
}

/// The first `need` matches of a search in one source, newest change first, and how many
/// match in all.
async fn search_source(
    ctx: &Ctx,
    def: &ResourceDef,
    source: Source,
    req: &SearchRequest,
    need: usize,
) -> Result<(Vec<Served>, usize), Fail> {
    match source {
        Source::Stored => stored::search(ctx, def, req, need).await,
        Source::Consultation => consult::search(ctx, def, req, need).await,
        Source::Person => patient::search(ctx, req, need).await,
        Source::Directory => directory::search(ctx, def, req, need).await,
        Source::Booking => care::search_bookings(ctx, def, req, need).await,
        Source::Prescription => care::search_medications(ctx, def, req, need).await,
        Source::Audit => audit::search(ctx, def, req, need).await,
        Source::Schedule => schedule::search(ctx, def, req, need).await,
    }
}

/// One page of a search over every source of the type: each source gives its first
/// `offset + count` matches, merged by last change (newest first, then id).
pub async fn search(
    ctx: &Ctx,
    def: &ResourceDef,
    req: &SearchRequest,
) -> Result<(Vec<Served>, usize), Fail> {
    let need = req.offset + req.count;
    let mut all = Vec::new();
    let mut total = 0;
    for source in def.sources {
        let (found, n) = search_source(ctx, def, *source, req, need).await?;
        all.extend(found);
        total += n;
    }
    all.sort_by(|a, b| {
        b.last_updated
            .cmp(&a.last_updated)
            .then_with(|| b.json["id"].as_str().cmp(&a.json["id"].as_str()))
    });
    let page = all.into_iter().skip(req.offset).take(req.count).collect();
    Ok((page, total))
}

/// Sets `meta.versionId` and `meta.lastUpdated` (keeping other meta elements).
pub fn with_meta(mut json: Value, version: i64, last_updated: i64) -> Value {
    if !json["meta"].is_object() {
        json["meta"] = serde_json::json!({});
    }
    json["meta"]["versionId"] = Value::String(version.to_string());
    json["meta"]["lastUpdated"] = Value::String(super::index::instant(last_updated));
    json
}
