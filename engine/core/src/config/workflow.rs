//! The care workflow's part of `workflow:` in the root file (prescriptions, appointments, the
//! case library's ranking, the scheduled statistics export) and where the consultation's
//! events are announced (`consultations`); the consultation workflow's part (`sla`,
//! `matching`, `signing_roots`, `sweep_interval`) is in `crate::workflow`. The rules they
//! tune are the domain's; the types of the domain are used as they are where they fit, so a key
//! means the same here as in `huizhen_domain`.
//!
//! ```yaml
//! workflow:
//!   consultations:
//!     outbound_pipeline: consultation-events  # consultation.completed (the signed opinion for
//!                                             # the HIS), .accepted, .escalated, .cancelled, .failed
//!   prescriptions:
//!     deny:                                   # controlled drugs (CN-20), never prescribable
//!       codes: [XN02AAM001A001010100000]
//!       name_contains: [吗啡, 芬太尼]
//!       categories: [麻醉药品, 第一类精神药品]
//!     max_lines: 5
//!     signature_skew_seconds: 300
//!     outbound_pipeline: prescriptions-out    # where approved prescriptions are announced
//!   appointments: { slot_minutes: 30, grace_minutes: 15, utc_offset_minutes: 480 }
//!   case_library:
//!     weights: { specialty: 0.3, code: 0.5, recency: 0.2, half_life_days: 365 }
//!   stats_export: { schedule: "0 0 1 * * *", dir: exports/, period: 24h }
//! ```
//!
//! Unknown keys are errors with their position, like everywhere else; values out of range are
//! reported by [`WorkflowConfig::care_problems`] (through `huizhen validate` and at start).

use std::path::PathBuf;
use std::time::Duration;

use huizhen_domain::case_library::RecommendWeights;
use huizhen_domain::prescription::{DenyList, PrescriptionPolicy};
use serde::Deserialize;

/// The `workflow:` block: the consultation workflow's settings (`sla`, `matching`,
/// `signing_roots`, `sweep_interval`) and the care workflow's below.
pub use crate::workflow::WorkflowConfig;

/// `workflow.prescriptions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrescriptionsConfig {
    /// The controlled-drug deny list: `codes`, `name_contains`, `categories`.
    #[serde(default)]
    pub deny: DenyList,
    /// At most this many lines per prescription (default 5).
    #[serde(default = "default_max_lines")]
    pub max_lines: usize,
    /// How far a signature's time may be ahead of the engine's clock (default 300 s).
    #[serde(default = "default_skew")]
    pub signature_skew_seconds: u32,
    /// The pipeline an approved prescription is submitted to (a `json` message from source
    /// `workflow:prescription`); none: the event is kept in the outbox only.
    #[serde(default)]
    pub outbound_pipeline: Option<String>,
}

fn default_max_lines() -> usize {
    PrescriptionPolicy::default().max_lines
}

fn default_skew() -> u32 {
    PrescriptionPolicy::default().signature_skew_seconds
}

impl Default for PrescriptionsConfig {
    fn default() -> Self {
        PrescriptionsConfig {
            deny: DenyList::default(),
            max_lines: default_max_lines(),
            signature_skew_seconds: default_skew(),
            outbound_pipeline: None,
        }
    }
}

impl PrescriptionsConfig {
    /// The domain's policy for these settings.
    pub fn policy(&self) -> PrescriptionPolicy {
        PrescriptionPolicy {
            deny_list: self.deny.clone(),
            max_lines: self.max_lines,
            signature_skew_seconds: self.signature_skew_seconds,
        }
    }
}

/// `workflow.consultations`: where the consultation workflow announces its events.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsultationsConfig {
    /// The pipeline the consultation's events are submitted to (`json` messages from source
    /// `workflow:consultation`, header `x-huizhen-event`: `consultation.completed` with the
    /// signed opinion `hl7_build` reads, `.accepted`, `.escalated`, `.cancelled`, `.failed`);
    /// none: the events are kept in the outbox only.
    #[serde(default)]
    pub outbound_pipeline: Option<String>,
}

/// `workflow.case_library`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseLibraryConfig {
    /// Weights of specialty, code and recency, and the recency half-life.
    #[serde(default)]
    pub weights: RecommendWeights,
}

/// `workflow.regulator_export`: the day's records pushed to the provincial supervision platform
/// (CN-14) through a pipeline (its steps map them, e.g. a plugin; its sink sends them).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegulatorExportConfig {
    /// The pipeline the day's report is submitted to (must exist; an `internal` source).
    pub pipeline: String,
    /// When: six cron fields, seconds first, UTC (`0 30 16 * * *`: 00:30 the next day in
    /// +08:00). Each tick submits the local day before it (`workflow.matching.utc_offset_minutes`).
    pub schedule: String,
}

/// `workflow.stats_export`: a CSV of the statistics written on a schedule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsExportConfig {
    /// When: six cron fields, seconds first, UTC (`0 0 1 * * *`: every day at 01:00).
    pub schedule: String,
    /// The folder the files go to (created if missing), relative to the working directory.
    #[serde(default = "default_export_dir")]
    pub dir: PathBuf,
    /// The period each file covers, ending at the tick (default 24h).
    #[serde(default = "default_export_period", with = "super::duration")]
    pub period: Duration,
}

fn default_export_dir() -> PathBuf {
    "exports".into()
}

fn default_export_period() -> Duration {
    Duration::from_secs(24 * 3600)
}

impl WorkflowConfig {
    /// What is out of range in the care workflow's settings, each named by its path under
    /// `workflow.` (part of [`WorkflowConfig::problems`]).
    pub fn care_problems(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let rx = &self.prescriptions;
        if let Err(e) = rx.deny.validate() {
            errors.push(format!("workflow.prescriptions.deny.{} is blank", e.path));
        }
        if rx.max_lines == 0 {
            errors.push("workflow.prescriptions.max_lines: must be at least 1".into());
        }
        if let Some(p) = &rx.outbound_pipeline
            && p.trim().is_empty()
        {
            errors.push("workflow.prescriptions.outbound_pipeline: is blank".into());
        }
        if let Some(p) = &self.consultations.outbound_pipeline
            && p.trim().is_empty()
        {
            errors.push("workflow.consultations.outbound_pipeline: is blank".into());
        }
        if let Err(e) = self.appointments.validate() {
            errors.push(format!(
                "workflow.appointments.{}: {} is out of range ({})",
                e.field, e.value, e.range
            ));
        }
        if let Err(e) = self.case_library.weights.validate() {
            errors.push(format!("workflow.case_library.weights: {e}"));
        }
        if let Some(x) = &self.regulator_export
            && let Err(e) = crate::sources::parse_schedule(&x.schedule)
        {
            errors.push(format!("workflow.regulator_export.schedule: {e}"));
        }
        if let Some(x) = &self.stats_export {
            if let Err(e) = crate::sources::parse_schedule(&x.schedule) {
                errors.push(format!("workflow.stats_export.schedule: {e}"));
            }
            if x.period.is_zero() {
                errors.push("workflow.stats_export.period: must be longer than 0".into());
            }
            if x.dir.as_os_str().is_empty() {
                errors.push("workflow.stats_export.dir: is empty".into());
            }
        }
        errors
    }

    /// The outbound pipelines named under `workflow:` (consultations, prescriptions), each with
    /// its key: they must name pipelines the engine runs.
    pub fn outbound_pipelines(&self) -> Vec<(&'static str, &str)> {
        [
            (
                "workflow.consultations.outbound_pipeline",
                self.consultations.outbound_pipeline.as_deref(),
            ),
            (
                "workflow.prescriptions.outbound_pipeline",
                self.prescriptions.outbound_pipeline.as_deref(),
            ),
            (
                "workflow.regulator_export.pipeline",
                self.regulator_export.as_ref().map(|r| r.pipeline.as_str()),
            ),
        ]
        .into_iter()
        .filter_map(|(key, p)| p.map(str::trim).filter(|p| !p.is_empty()).map(|p| (key, p)))
        .collect()
    }

    pub fn unknown_outbound_pipelines<'a>(
        &self,
        names: impl Iterator<Item = &'a str> + Clone,
    ) -> Vec<String> {
        self.outbound_pipelines()
            .into_iter()
            .filter(|(_, p)| !names.clone().any(|n| n == *p))
            .map(|(key, p)| {
                let hint = super::error::did_you_mean(p, names.clone())
                    .map(|s| format!("; did you mean {s:?}?"))
                    .unwrap_or_default();
                format!("{key}: no pipeline named {p:?}{hint}")
            })
            .collect()
    }
}
