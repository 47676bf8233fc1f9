//! A loaded `scorer` plugin as the domain's scoring port ([`huizhen_domain::expert::Scorer`],
//! STANDARDS MATCH-02, MATCH-31), and the engine's provider of plugin-backed domain ports
//! ([`huizhen_core::extensions::DomainPlugins`]).
//!
//! One case is one batch: one instance, one fuel budget and one deadline for all its
//! candidates (`score-many` for 0.1.1 plugins, `score` once per candidate for 0.1.0 ones). The
//! identity recorded in each decision is the plugin's manifest name and version, the sha256 of
//! its component (`sha256:…`) and the budget (`fuel=…, deadline=…`). Failures map onto
//! [`ScorerError`]: out of fuel → `OutOfFuel`, deadline → `Timeout`, trap or memory cap →
//! `Trap`, the plugin's own error → `Failed`, not loaded or not a scorer → `Unavailable`; the
//! domain then ranks with its built-in scorer and records the fallback.
//!
//! A scorer made from a registry slot reads the version serving at each call, so a hot reload
//! takes over at the next case; a reload landing between a case's `identity()` and its
//! `score_many()` would record the old identity for that one case.

use std::collections::BTreeMap;
use std::sync::Arc;

use huizhen_core::extensions::{DomainPlugins, Extensions, PluginBudget, PluginWeights};
use huizhen_domain::expert::{Contribution, Feature, Score, Scorer, ScorerError, ScorerIdentity};

use crate::bindings::scorer as wit;
use crate::registry::{Serving, Slot, registry};
use crate::{CallError, CallOptions, Limits, Plugin, World};

/// A `scorer` plugin serving the domain's [`Scorer`] port.
#[derive(Clone)]
pub struct PluginScorer {
    source: Serving,
    budget: PluginBudget,
    config: Arc<BTreeMap<String, String>>,
}

impl std::fmt::Debug for PluginScorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginScorer")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl PluginScorer {
    /// A scorer over one loaded plugin version.
    pub fn new(plugin: Arc<Plugin>, budget: PluginBudget) -> PluginScorer {
        PluginScorer {
            source: Serving::Fixed(plugin),
            budget,
            config: Arc::default(),
        }
    }

    /// A scorer over the version serving in `slot`.
    pub fn from_slot(slot: Arc<Slot>, budget: PluginBudget) -> PluginScorer {
        PluginScorer {
            source: Serving::Slot(slot),
            budget,
            config: Arc::default(),
        }
    }

    fn plugin(&self) -> Result<Arc<Plugin>, ScorerError> {
        self.source.current().map_err(ScorerError::Unavailable)
    }

    /// The budget as decisions record it.
    fn budget_text(&self) -> String {
        match self.budget.fuel {
            Some(f) => format!("fuel={f}, deadline={:?}", self.budget.deadline),
            None => format!("fuel=unlimited, deadline={:?}", self.budget.deadline),
        }
    }
}

fn to_wit(f: &Feature) -> wit::Feature {
    wit::Feature {
        name: f.name.clone().into_owned(),
        value: f.value,
        text: f.text.clone().map(|t| t.into_owned()),
    }
}

fn from_wit(s: wit::Score) -> Score {
    Score {
        total: s.total,
        contributions: s
            .contributions
            .into_iter()
            .map(|c| Contribution {
                name: c.feature.into(),
                value: c.points,
            })
            .collect(),
    }
}

/// The domain's reading of a host call failure.
pub fn scorer_error(e: CallError) -> ScorerError {
    let text = e.to_string();
    match e {
        CallError::OutOfFuel { .. } => ScorerError::OutOfFuel(text),
        CallError::Deadline { .. } => ScorerError::Timeout(text),
        CallError::Trap { .. } | CallError::Memory { .. } => ScorerError::Trap(text),
        CallError::Refused { .. } => ScorerError::Failed(text),
        CallError::WrongWorld { .. } => ScorerError::Unavailable(text),
    }
}

impl Scorer for PluginScorer {
    fn score_many(
        &self,
        case: &[Feature],
        candidates: &[Vec<Feature>],
    ) -> Result<Vec<Score>, ScorerError> {
        let plugin = self.plugin()?;
        let call = CallOptions {
            limits: Limits {
                deadline: self.budget.deadline,
                fuel: self.budget.fuel,
                ..Limits::default()
            },
            config: self.config.clone(),
            now_ms: 0,
        };
        let case: Vec<wit::Feature> = case.iter().map(to_wit).collect();
        let candidates: Vec<Vec<wit::Feature>> = candidates
            .iter()
            .map(|c| c.iter().map(to_wit).collect())
            .collect();
        // The port is synchronous (the domain does no I/O); when it is called from the
        // engine's async code, the worker hands its other tasks over while the plugin runs.
        let scores = crate::pool::blocking(|| {
            let mut session = plugin.scorer(&call)?;
            session.score_many(&case, &candidates)
        })
        .map_err(scorer_error)?;
        Ok(scores.into_iter().map(from_wit).collect())
    }

    fn identity(&self) -> ScorerIdentity {
        match self.plugin() {
            Ok(p) => ScorerIdentity {
                name: p.name().to_owned(),
                version: p.version().to_owned(),
                module_hash: format!("sha256:{}", p.sha256()),
                budget: Some(self.budget_text()),
            },
            Err(_) => {
                let name = self.source.name();
                ScorerIdentity {
                    name,
                    version: "unloaded".into(),
                    module_hash: "none".into(),
                    budget: Some(self.budget_text()),
                }
            }
        }
    }
}

/// The engine's [`DomainPlugins`]: plugins of the registry by name.
pub struct RegistryDomain {
    extensions: Extensions,
}

impl RegistryDomain {
    pub fn new(extensions: Extensions) -> RegistryDomain {
        RegistryDomain { extensions }
    }

    fn slot(&self, name: &str, world: World) -> Result<Arc<Slot>, String> {
        let reg = registry(&self.extensions)?;
        let Some(slot) = reg.slot(name) else {
            let known = reg.plugin_names();
            return Err(format!(
                "no plugin {name:?} in {} ({})",
                reg.dir().display(),
                if known.is_empty() {
                    "it holds no package".to_owned()
                } else {
                    format!("found: {}", known.join(", "))
                }
            ));
        };
        let Some(current) = slot.current() else {
            return Err(format!(
                "plugin {name:?} could not be loaded: {}",
                slot.last_error().unwrap_or_default()
            ));
        };
        if current.world() != world {
            return Err(format!(
                "plugin {} is a `{}` plugin, not a `{world}` one",
                current.label(),
                current.world()
            ));
        }
        Ok(slot)
    }
}

impl DomainPlugins for RegistryDomain {
    fn scorer(
        &self,
        name: &str,
        budget: PluginBudget,
    ) -> Result<Arc<dyn Scorer + Send + Sync>, String> {
        let slot = self.slot(name, World::Scorer)?;
        Ok(Arc::new(PluginScorer::from_slot(slot, budget)))
    }

    fn coverage(
        &self,
        name: &str,
        budget: PluginBudget,
        config: BTreeMap<String, String>,
    ) -> Result<Arc<dyn huizhen_domain::billing::CoveragePolicy + Send + Sync>, String> {
        let slot = self.slot(name, World::Coverage)?;
        Ok(Arc::new(crate::coverage::PluginCoverage::from_slot(
            slot, budget, config,
        )))
    }

    fn match_weights(&self, name: &str) -> Result<PluginWeights, String> {
        let slot = self.slot(name, World::MatchWeights)?;
        let plugin = slot
            .current()
            .ok_or_else(|| format!("plugin {name:?} is not loaded"))?;
        plugin_weights(&plugin)
    }
}

fn make_domain(ext: &Extensions) -> Arc<dyn DomainPlugins> {
    Arc::new(RegistryDomain::new(ext.clone()))
}

inventory::submit! {
    huizhen_core::extensions::DomainPluginsFactory { make: make_domain }
}

/// Calls a `match-weights` plugin once (either contract version).
pub fn plugin_weights(plugin: &Plugin) -> Result<PluginWeights, String> {
    let w = plugin
        .weights(&CallOptions::default())
        .map_err(|e| e.to_string())?;
    Ok(PluginWeights {
        plugin: plugin.label().to_owned(),
        contract: plugin.world_version().to_owned(),
        fields: w.fields,
        auto_link: w.auto_link_threshold,
        probable: w.probable_threshold,
        possible: w.possible_threshold,
    })
}
