//! The alert raised when a scoring plugin fails and expert matching falls back to the built-in
//! scorer (issue 14, STANDARDS MATCH-02): the counter
//! `huizhen_match_scorer_fallback_total{plugin=…}` and a WARN log naming the plugin and the
//! failure code (never the case: no patient data reaches logs or metrics).

use std::sync::OnceLock;

use huizhen_domain::expert::MatchDecision;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// The `plugin` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PluginLabel {
    plugin: String,
}

/// The process-wide counter (registered into every engine's metrics registry).
pub(crate) fn scorer_fallbacks() -> &'static Family<PluginLabel, Counter> {
    static F: OnceLock<Family<PluginLabel, Counter>> = OnceLock::new();
    F.get_or_init(Family::default)
}

/// Counts and logs a decision's fallback, if it has one. `source` says who matched
/// (`pipeline:NAME` or `api`).
pub fn alert_scorer_fallback(decision: &MatchDecision, source: &str) {
    let Some(fb) = &decision.fallback else {
        return;
    };
    let plugin = &decision.scorer.name;
    scorer_fallbacks()
        .get_or_create(&PluginLabel {
            plugin: plugin.clone(),
        })
        .inc();
    tracing::warn!(
        plugin = %plugin,
        version = %decision.scorer.version,
        code = %fb.code,
        error = %fb.error,
        source,
        "scorer plugin failed; the built-in scorer ranked the case (the decision records the fallback)"
    );
}

/// How many fallbacks of `plugin` this process has counted.
pub fn scorer_fallback_count(plugin: &str) -> u64 {
    scorer_fallbacks()
        .get_or_create(&PluginLabel {
            plugin: plugin.to_owned(),
        })
        .get()
}
