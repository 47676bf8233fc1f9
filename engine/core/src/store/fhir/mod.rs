//! The FHIR resource store (issue 16; STANDARDS FHIR-01, FHIR-20, FHIR-21; migration 0014):
//! resources by type and id with every version, `meta.lastUpdated`, the Patient they are
//! about, and the search index the facade reads.
//!
//! **Model-free.** The core knows no FHIR model: the adapter (`huizhen-fhir`) reads the
//! resources with fhir-sdk, extracts the search terms and date ranges of each one
//! ([`FhirIndex`]) and hands over the JSON text; the store keeps JSON and index rows. Five
//! tables:
//!
//! * `fhir_resources`: per resource its current version, facility (the writing pipeline's),
//!   patient (a Patient id) and last change;
//! * `fhir_versions`: every version's JSON, append-only, sealed when encryption is on (bound to
//!   `Type/id` and `fhir/v<n>`);
//! * `fhir_terms`: equality terms of the current version (`param`, `value`): token forms
//!   (`system|code`, `code`, `system|`, `|code`), references (`Patient/7`, `7`), normalised
//!   words. The value is stored as its blind index when encryption is on, so a search compares
//!   keyed hashes; that is also why string search matches whole words, never prefixes;
//! * `fhir_dates`: date ranges `[lo, hi)` in ms, at the precision of the value;
//! * `fhir_applied`: what a sink applied for a message (its transaction-response), so a replay
//!   of the message writes nothing again.
//!
//! **Writes** ([`Store::fhir_apply`]) are one transaction per batch: the caller decided against
//! what it read ([`FhirCheck`]: each conditional search it ran and the ids and versions it
//! saw); the store runs each check again inside the transaction and, if anything differs (a
//! concurrent writer), writes nothing and answers [`FhirApplied::Changed`], so the caller
//! decides again. A resource is created at version 1 only if absent, and updated only from
//! the version the caller saw.

mod projection;
mod read;
mod write;

pub use projection::ConsultationSelect;
pub use read::{FhirPage, FhirQuery};

use super::{Result, Store, StoreError};

/// The search index of one resource version, extracted by the adapter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FhirIndex {
    /// Equality terms: (search parameter, value as searched).
    pub terms: Vec<(String, String)>,
    /// Date ranges: (search parameter, lo, hi) in ms since the epoch, `hi` exclusive.
    pub dates: Vec<(String, i64, i64)>,
    /// The Patient the resource is about (its id), if any.
    pub patient: Option<String>,
}

/// One resource to write.
#[derive(Debug, Clone)]
pub struct FhirWrite {
    pub resource_type: String,
    pub id: String,
    /// The resource JSON (with its `id`; `meta.versionId`/`lastUpdated` are the store's and
    /// are set by the reader from the row).
    pub body: String,
    pub index: FhirIndex,
    /// `None`: create (the resource must not exist); `Some(v)`: update from version `v`.
    pub expected: Option<i64>,
}

/// A date comparison (FHIR search prefixes), over the value's range `[lo, hi)` and the
/// searched range `[plo, phi)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatePrefix {
    /// The searched range contains the value's.
    Eq,
    /// Not `Eq`.
    Ne,
    /// The value's range reaches past the searched one.
    Gt,
    /// The value's range starts before the searched one.
    Lt,
    /// `Gt` or `Eq`.
    Ge,
    /// `Lt` or `Eq`.
    Le,
    /// The value's range starts at or after the end of the searched one.
    Sa,
    /// The value's range ends at or before the start of the searched one.
    Eb,
}

impl DatePrefix {
    /// The comparison in memory (the SQL of a search does the same): the value's range
    /// `[lo, hi)` against the searched `[plo, phi)`.
    pub fn holds(self, lo: i64, hi: i64, plo: i64, phi: i64) -> bool {
        let eq = lo >= plo && hi <= phi;
        match self {
            DatePrefix::Eq => eq,
            DatePrefix::Ne => !eq,
            DatePrefix::Gt => hi > phi,
            DatePrefix::Lt => lo < plo,
            DatePrefix::Ge => hi > phi || eq,
            DatePrefix::Le => lo < plo || eq,
            DatePrefix::Sa => lo >= phi,
            DatePrefix::Eb => hi <= plo,
        }
    }
}

/// One condition of a search; conditions are AND-ed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Criterion {
    /// The resource has a term `param` equal to one of `any_of`.
    Terms { param: String, any_of: Vec<String> },
    /// The resource has no term `param` at all (`:missing=true`) or has one (`false`).
    Missing { param: String, missing: bool },
    /// One of the resource's `param` dates compares with `[lo, hi)`; several alternatives
    /// (a comma list) are OR-ed.
    Date {
        param: String,
        any_of: Vec<(DatePrefix, i64, i64)>,
    },
    /// The resource id is one of these.
    Id(Vec<String>),
    /// `meta.lastUpdated` compares with `[lo, hi)`.
    LastUpdated(DatePrefix, i64, i64),
    /// The resource is about one of these Patients (ids).
    Patient(Vec<String>),
}

impl Criterion {
    /// The condition in memory, over a resource's id, last change and index (for resources
    /// the facade projects from the engine's own data rather than reads from the store).
    pub fn matches(&self, id: &str, last_updated: i64, index: &FhirIndex) -> bool {
        match self {
            Criterion::Terms { param, any_of } => index
                .terms
                .iter()
                .any(|(p, v)| p == param && any_of.contains(v)),
            Criterion::Missing { param, missing } => {
                index.terms.iter().any(|(p, _)| p == param) != *missing
            }
            Criterion::Date { param, any_of } => index.dates.iter().any(|(p, lo, hi)| {
                p == param
                    && any_of
                        .iter()
                        .any(|(prefix, plo, phi)| prefix.holds(*lo, *hi, *plo, *phi))
            }),
            Criterion::Id(ids) => ids.iter().any(|i| i == id),
            Criterion::LastUpdated(prefix, plo, phi) => {
                prefix.holds(last_updated, last_updated + 1, *plo, *phi)
            }
            Criterion::Patient(ids) => index
                .patient
                .as_ref()
                .is_some_and(|p| ids.iter().any(|i| i == p)),
        }
    }
}

/// What a writer saw when it decided: a search (`criteria` over `resource_type`, within
/// `facility` when given) and the `(id, version)` of every match, in any order.
#[derive(Debug, Clone)]
pub struct FhirCheck {
    pub resource_type: String,
    pub criteria: Vec<Criterion>,
    pub facility: Option<String>,
    pub seen: Vec<(String, i64)>,
}

/// One batch: a message's transaction Bundle, applied once per (message, sink).
#[derive(Debug, Clone)]
pub struct FhirBatch<'a> {
    pub message_id: &'a str,
    pub sink: &'a str,
    /// The facility of every resource written.
    pub facility: &'a str,
    /// `meta.lastUpdated` of every version written, ms since the epoch.
    pub at_ms: i64,
    pub checks: &'a [FhirCheck],
    pub writes: &'a [FhirWrite],
    /// What to answer a replay of this message with (the transaction-response).
    pub outcome: &'a str,
}

/// How a batch went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FhirApplied {
    /// Written.
    Applied,
    /// This message was applied before by this sink: nothing was written; its outcome then.
    Replayed(String),
    /// A check saw something else inside the transaction: nothing was written; decide again.
    Changed,
}

/// A stored resource version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FhirRow {
    pub resource_type: String,
    pub id: String,
    pub version: i64,
    pub facility: String,
    pub patient: Option<String>,
    /// ms since the epoch.
    pub last_updated: i64,
    /// The resource JSON as written (opened).
    pub body: String,
}

impl Store {
    /// A search term as stored: its blind index (over type, parameter and value) when
    /// encryption is on.
    fn fhir_term(&self, resource_type: &str, param: &str, value: &str) -> String {
        match &self.keyring {
            Some(k) => {
                let mut data = b"fhir-term\0".to_vec();
                for part in [resource_type, param, value] {
                    data.extend_from_slice(part.as_bytes());
                    data.push(0);
                }
                format!("{}{}", crate::crypto::INDEX_PREFIX, k.blind_index(&data))
            }
            None => value.to_owned(),
        }
    }

    fn fhir_binding(resource_type: &str, id: &str, version: i64) -> (String, String) {
        (format!("{resource_type}/{id}"), format!("fhir/v{version}"))
    }

    fn seal_fhir(&self, resource_type: &str, id: &str, version: i64, body: &str) -> String {
        let (rid, field) = Self::fhir_binding(resource_type, id, version);
        match &self.keyring {
            Some(k) => k.seal_text(body, &crate::crypto::Binding::new(&rid, &field)),
            None => body.to_owned(),
        }
    }

    fn open_fhir(
        &self,
        resource_type: &str,
        id: &str,
        version: i64,
        raw: String,
    ) -> Result<String> {
        let (rid, field) = Self::fhir_binding(resource_type, id, version);
        self.open_text(&rid, &field, raw)
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Inconsistent(format!("fhir store: {what}: {e}"))
}
