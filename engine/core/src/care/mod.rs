//! The care workflow at run time (issue 15 items 4, 7, 8, 9): the settings the API and the
//! jobs share ([`Care`], made from `workflow:` and kept in the engine's `Extensions`), the
//! relay that submits outbox events to their pipelines ([`relay_outbox`]), and the scheduled
//! jobs ([`jobs`]: the no-show sweep every minute, the statistics CSV export on its cron
//! schedule). State is in `store::care`, rules in `huizhen_domain`, the API in `http::care`.

pub mod jobs;
mod outbox;

use std::path::PathBuf;
use std::sync::Arc;

use huizhen_domain::appointment::AppointmentConfig;
use huizhen_domain::case_library::RecommendWeights;
use huizhen_domain::prescription::PrescriptionPolicy;
use huizhen_domain::signature::SignatureVerifier;

pub use outbox::{OUTBOX_LEASE_MS, relay_outbox};

use crate::config::workflow::WorkflowConfig;
use crate::extensions::Extensions;

/// The care workflow's settings, checked.
#[derive(Debug, Clone, Default)]
pub struct Care {
    /// The prescription rules (deny list, lines, signature skew).
    pub policy: PrescriptionPolicy,
    /// Where approved prescriptions are announced.
    pub outbound_pipeline: Option<String>,
    /// Slots, grace period, local offset.
    pub appointments: AppointmentConfig,
    /// The case library's ranking.
    pub weights: RecommendWeights,
    /// The scheduled statistics export.
    pub stats_export: Option<StatsExport>,
    /// The regulator's daily records (CN-14).
    pub regulator_export: Option<RegulatorExport>,
}

/// `workflow.regulator_export`, parsed.
#[derive(Debug, Clone)]
pub struct RegulatorExport {
    /// When (UTC); each tick reports the local day before it.
    pub schedule: cron::Schedule,
    /// The pipeline the report is submitted to.
    pub pipeline: String,
    /// The local time zone of the days, minutes east of UTC.
    pub utc_offset_minutes: i32,
}

/// The verifier of prescribers' signatures (CN-21): when the engine's `Extensions` hold one
/// (put there by what holds the trusted roots, `extensions.get_or_try_init`), `sign` and
/// `submit` also verify the signature over the prescription's canonical bytes (the value, the
/// chain, validity at the signing time); without one, the domain's checks of the signature's
/// shape and time are all there is.
pub struct PrescriptionSignatures(pub Arc<dyn SignatureVerifier>);

/// `workflow.stats_export`, parsed.
#[derive(Debug, Clone)]
pub struct StatsExport {
    /// When (UTC).
    pub schedule: cron::Schedule,
    /// Where the files go.
    pub dir: PathBuf,
    /// The period each file covers, ending at the tick.
    pub period: chrono::Duration,
}

impl Care {
    /// The settings of `cfg`; every problem at once, each named by its path.
    pub fn from_config(cfg: &WorkflowConfig) -> Result<Care, String> {
        let errors = cfg.care_problems();
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        let stats_export = match &cfg.stats_export {
            Some(x) => Some(StatsExport {
                schedule: crate::sources::parse_schedule(&x.schedule)?,
                dir: x.dir.clone(),
                period: chrono::Duration::from_std(x.period)
                    .map_err(|e| format!("workflow.stats_export.period: {e}"))?,
            }),
            None => None,
        };
        let regulator_export = match &cfg.regulator_export {
            Some(x) => Some(RegulatorExport {
                schedule: crate::sources::parse_schedule(&x.schedule)?,
                pipeline: x.pipeline.trim().to_owned(),
                utc_offset_minutes: cfg.matching.utc_offset_minutes,
            }),
            None => None,
        };
        Ok(Care {
            regulator_export,
            policy: cfg.prescriptions.policy(),
            outbound_pipeline: cfg
                .prescriptions
                .outbound_pipeline
                .as_deref()
                .map(|p| p.trim().to_owned()),
            appointments: cfg.appointments,
            weights: cfg.case_library.weights,
            stats_export,
        })
    }

    /// The engine's settings (put into its `Extensions` at start), or the defaults when the
    /// extensions were made without an engine (tests of the router alone).
    pub fn of(extensions: &Extensions) -> Arc<Care> {
        extensions
            .get::<Care>()
            .unwrap_or_else(|| Arc::new(Care::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_and_the_outbound_pipelines_must_exist() {
        let mut cfg = WorkflowConfig::default();
        cfg.prescriptions.deny.codes = vec!["X1".into()];
        cfg.prescriptions.outbound_pipeline = Some(" rx-out ".into());
        cfg.consultations.outbound_pipeline = Some("his-out".into());
        let care = Care::from_config(&cfg).unwrap();
        assert_eq!(care.policy.deny_list.codes, ["X1"]);
        assert_eq!(care.outbound_pipeline.as_deref(), Some("rx-out"));
        let names = ["rx-out", "his-out"];
        assert!(
            cfg.unknown_outbound_pipelines(names.iter().copied())
                .is_empty()
        );
        let err = cfg.unknown_outbound_pipelines(["rx-out", "his-oru"].iter().copied());
        assert_eq!(
            err,
            [
                "workflow.consultations.outbound_pipeline: no pipeline named \"his-out\"; did you mean \"his-oru\"?"
            ]
        );
        cfg.consultations.outbound_pipeline = Some(" ".into());
        cfg.prescriptions.deny.categories = vec![" ".into()];
        cfg.appointments.grace_minutes = 999;
        let err = Care::from_config(&cfg).unwrap_err();
        assert!(
            err.contains("workflow.prescriptions.deny.categories[0] is blank"),
            "{err}"
        );
        assert!(
            err.contains("workflow.appointments.grace_minutes: 999"),
            "{err}"
        );
        assert!(
            err.contains("workflow.consultations.outbound_pipeline: is blank"),
            "{err}"
        );
    }
}
