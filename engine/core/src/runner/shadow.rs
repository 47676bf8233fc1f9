//! Plugin shadow mode, the engine's side: the board of the steps that run a shadow plugin
//! version beside their primary (the `plugin` step of `huizhen-plugin` registers itself here
//! when it is built), what the API shows of them, and their counts in /metrics:
//!
//! - `huizhen_plugin_shadow_decisions_total{pipeline, plugin, result}`: per message, whether
//!   the two versions agreed (`agree`), disagreed (`disagree`) or the one not serving failed
//!   (`shadow_error`).
//!
//! A step's shadow decides for the facilities it was promoted for (`POST
//! /api/pipelines/{name}/shadow/{plugin}/promote`, kept in the store, audited); the primary
//! then runs beside it as the shadow, so disagreements are still counted.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Serialize;

/// One disagreement, kept as a sample (no message content: the decisions' kinds and targets).
#[derive(Debug, Clone, Serialize)]
pub struct Disagreement {
    pub message_id: String,
    pub facility: String,
    /// When (ms since the epoch).
    pub at: i64,
    /// What the primary decided, e.g. `route(labs-county-3)`, `drop`, `transform(84 bytes)`.
    pub primary: String,
    /// What the shadow decided.
    pub shadow: String,
    /// Whose decision applied: `primary`, or `shadow` for a promoted facility.
    pub served: String,
}

/// What the API shows of a shadowed step.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowReport {
    pub pipeline: String,
    /// The primary plugin's name (the key of the promote and rollback calls).
    pub plugin: String,
    /// The versions serving now: `name@version`.
    pub primary_version: String,
    pub shadow_version: String,
    pub agree: u64,
    pub disagree: u64,
    pub shadow_errors: u64,
    /// The facilities the shadow decides for.
    pub promoted: Vec<String>,
    /// The latest disagreements, newest last.
    pub samples: Vec<Disagreement>,
}

/// A step with a shadow, as the board holds it.
pub trait ShadowStep: Send + Sync {
    fn report(&self) -> ShadowReport;
    /// Applies a promotion (`true`) or rollback made through the API (already stored).
    fn set_promoted(&self, facility: &str, promoted: bool);
}

/// The engine's shadowed steps, by (pipeline, primary plugin name). A reload's new version of
/// a step replaces the old one's entry.
#[derive(Default)]
pub struct ShadowBoard {
    steps: Mutex<BTreeMap<(String, String), Arc<dyn ShadowStep>>>,
}

impl ShadowBoard {
    pub fn register(&self, pipeline: &str, plugin: &str, step: Arc<dyn ShadowStep>) {
        self.steps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((pipeline.to_owned(), plugin.to_owned()), step);
    }

    pub fn get(&self, pipeline: &str, plugin: &str) -> Option<Arc<dyn ShadowStep>> {
        self.steps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(pipeline.to_owned(), plugin.to_owned()))
            .cloned()
    }

    /// The reports of `pipeline`'s shadowed steps.
    pub fn reports(&self, pipeline: &str) -> Vec<ShadowReport> {
        self.steps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((p, _), _)| p == pipeline)
            .map(|(_, s)| s.report())
            .collect()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShadowLabels {
    pipeline: String,
    plugin: String,
    result: String,
}

fn family() -> &'static Family<ShadowLabels, Counter> {
    static F: OnceLock<Family<ShadowLabels, Counter>> = OnceLock::new();
    F.get_or_init(Family::default)
}

/// Registers the process-wide shadow counters into an engine's registry.
pub(crate) fn register(registry: &mut Registry) {
    registry.register(
        "plugin_shadow_decisions",
        "Messages a step's primary and shadow plugin versions both decided on, by whether they agreed (agree, disagree, shadow_error)",
        family().clone(),
    );
}

/// Counts one message of a shadowed step: `result` is `agree`, `disagree` or `shadow_error`.
pub fn count(pipeline: &str, plugin: &str, result: &str) {
    family()
        .get_or_create(&ShadowLabels {
            pipeline: pipeline.to_owned(),
            plugin: plugin.to_owned(),
            result: result.to_owned(),
        })
        .inc();
}
