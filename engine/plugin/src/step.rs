//! `plugin`: a pipeline step that asks a `rule` plugin what to do with each message.
//!
//! ```yaml
//! steps:
//!   - plugin:
//!       path: plugins/dist/route_by_facility.wasm
//!       config: { county-hospital-3: labs-county-3 }   # read by the plugin (host `config`)
//!       deadline: 50ms                                # per call (default 50ms)
//!       memory_mb: 64                                 # per call (default 64)
//! ```
//!
//! `pass` goes on; `drop(reason)` ends the message as done without sinks; `route(p)` sends a
//! copy to pipeline `p` and stops; `transform(body)` goes on with the new body; `annotate`
//! adds headers. A trap, an interrupted call or the plugin's own error fails the attempt with
//! the plugin's name and the reason (retried like any step error; a trap or deadline is
//! permanent, since the same input would fail the same way).
//!
//! **Shadow mode.** With `shadow:` a second version (another package folder, or another plugin
//! of the registry) runs on the same input beside the primary, without effects: its decision
//! is compared with the primary's and thrown away. Agreements, disagreements and the shadow's
//! failures are counted (`huizhen_plugin_shadow_decisions_total`) and the latest
//! disagreements kept with their message ids (`GET /api/pipelines/{name}/shadow`). Two
//! decisions agree when they are of the same kind with the same route target, transformed
//! body or annotated headers (a drop's reason text is not compared). Promoted for a facility
//! (`POST …/shadow/{plugin}/promote`, kept in the store, audited), the shadow decides for that
//! facility's messages and the primary runs beside it; `…/rollback` undoes it.
//!
//! ```yaml
//!   - plugin:
//!       name: triage-rule                             # the registry's serving version
//!       shadow:
//!         path: plugins/candidates/triage-rule-0.2.0  # or name: another registry plugin
//!         samples: 20                                 # disagreements kept (default 20)
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use huizhen_core::config::duration;
use huizhen_core::message::NewMessage;
use huizhen_core::runner::shadow::{Disagreement, ShadowBoard, ShadowReport, ShadowStep};
use huizhen_core::runner::{BuildContext, Router};
use huizhen_core::steps::{Step, StepConfig};
use huizhen_core::work::{Flow, StepError, Work};
use serde::Deserialize;

use crate::bindings::huizhen::plugin::types::{Decision, Message};
use crate::registry::{Slot, registry};
use crate::{CallOptions, Limits, World};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginStepConfig {
    /// A plugin of the registry (`plugins.dir`), by its manifest name; the version serving is
    /// swapped while the engine runs.
    #[serde(default)]
    pub name: Option<String>,
    /// Or a package folder, or (development, `plugins.allow_unsigned`) a bare `.wasm`, relative
    /// to the working directory.
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    #[serde(default = "default_deadline", with = "duration")]
    pub deadline: Duration,
    #[serde(default = "default_memory")]
    pub memory_mb: usize,
    /// A second version run beside this one on the same input, without effects.
    #[serde(default)]
    pub shadow: Option<ShadowConfig>,
}

/// `shadow:` of a plugin step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    /// A plugin of the registry by its manifest name…
    #[serde(default)]
    pub name: Option<String>,
    /// …or a package folder (a version the registry does not serve).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Its `config` (default: the primary's).
    #[serde(default)]
    pub config: Option<BTreeMap<String, String>>,
    /// How many of the latest disagreements are kept for the API (default 20).
    #[serde(default = "default_samples")]
    pub samples: usize,
}

fn default_samples() -> usize {
    20
}

fn default_deadline() -> Duration {
    Limits::default().deadline
}
fn default_memory() -> usize {
    Limits::default().memory >> 20
}

#[typetag::deserialize(name = "plugin")]
impl StepConfig for PluginStepConfig {
    fn type_name(&self) -> &'static str {
        "plugin"
    }

    fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Step>, String> {
        if self.memory_mb == 0 || self.memory_mb > 1024 {
            return Err(format!(
                "memory_mb: {} is out of range 1..=1024",
                self.memory_mb
            ));
        }
        if self.deadline.is_zero() {
            return Err("deadline: must be more than 0".into());
        }
        let reg = registry(&ctx.extensions)?;
        let slot = rule_slot(&reg, self.name.as_deref(), self.path.as_deref(), "")?;
        let call = CallOptions {
            limits: Limits {
                deadline: self.deadline,
                memory: self.memory_mb << 20,
                fuel: None,
            },
            config: Arc::new(self.config.clone()),
            now_ms: 0,
        };
        let shadow = match &self.shadow {
            None => None,
            Some(sh) => {
                // A shadow package is loaded apart: it never replaces the version the registry
                // serves under the same name.
                let shadow_slot = match (&sh.name, &sh.path) {
                    (None, Some(path)) => {
                        let slot = reg
                            .load_detached(path, World::Rule)
                            .map_err(|e| format!("shadow: {e}"))?;
                        rule_slot_checked(slot, "shadow: ")?
                    }
                    _ => rule_slot(&reg, sh.name.as_deref(), sh.path.as_deref(), "shadow: ")?,
                };
                let primary = self.name.clone().unwrap_or_else(|| slot.name().to_owned());
                let state = Arc::new(ShadowState {
                    pipeline: ctx.pipeline.clone(),
                    plugin: primary.clone(),
                    primary: slot.clone(),
                    shadow: shadow_slot,
                    call: CallOptions {
                        config: Arc::new(sh.config.clone().unwrap_or_else(|| self.config.clone())),
                        ..call.clone()
                    },
                    keep: sh.samples,
                    agree: AtomicU64::new(0),
                    disagree: AtomicU64::new(0),
                    errors: AtomicU64::new(0),
                    samples: Mutex::new(VecDeque::new()),
                    promoted: RwLock::new(BTreeSet::new()),
                    loaded: tokio::sync::OnceCell::new(),
                    extensions: ctx.extensions.clone(),
                });
                let board = match ctx
                    .extensions
                    .get_or_try_init(|| Ok::<_, std::convert::Infallible>(ShadowBoard::default()))
                {
                    Ok(b) => b,
                    Err(never) => match never {},
                };
                board.register(&ctx.pipeline, &primary, state.clone());
                Some(state)
            }
        };
        Ok(Arc::new(PluginStep {
            slot,
            call,
            router: ctx.router.clone(),
            pipeline: ctx.pipeline.clone(),
            shadow,
        }))
    }
}

/// The slot of a `rule` plugin given by `name` (the registry's) or `path` (a package folder,
/// or in development a bare `.wasm`); `what` prefixes errors (`shadow: `).
fn rule_slot(
    reg: &crate::registry::Registry,
    name: Option<&str>,
    path: Option<&std::path::Path>,
    what: &str,
) -> Result<Arc<Slot>, String> {
    let slot = match (name, path) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(format!(
                "{what}give either `name` (a plugin of plugins.dir) or `path`"
            ));
        }
        (Some(name), None) => {
            let Some(slot) = reg.slot(name) else {
                let known = reg.plugin_names();
                return Err(format!(
                    "{what}no plugin {name:?} in {} ({})",
                    reg.dir().display(),
                    if known.is_empty() {
                        "it holds no package".to_owned()
                    } else {
                        format!("found: {}", known.join(", "))
                    }
                ));
            };
            slot
        }
        (None, Some(path)) => reg
            .load_path(path, World::Rule)
            .map_err(|e| format!("{what}{e}"))?,
    };
    rule_slot_checked(slot, what)
}

/// `slot` if it serves a `rule` plugin.
fn rule_slot_checked(slot: Arc<Slot>, what: &str) -> Result<Arc<Slot>, String> {
    let Some(current) = slot.current() else {
        return Err(format!(
            "{what}plugin {:?} could not be loaded: {}",
            slot.name(),
            slot.last_error().unwrap_or_default()
        ));
    };
    if current.world() != World::Rule {
        return Err(format!(
            "{what}plugin {} is a `{}` plugin; the plugin step calls `rule` plugins",
            current.label(),
            current.world()
        ));
    }
    Ok(slot)
}

struct PluginStep {
    slot: Arc<Slot>,
    call: CallOptions,
    router: Router,
    pipeline: String,
    shadow: Option<Arc<ShadowState>>,
}

/// A step's shadow: its version, its counts and samples, the facilities it decides for.
struct ShadowState {
    pipeline: String,
    /// The primary plugin's name: the key of the board and the metric's label.
    plugin: String,
    primary: Arc<Slot>,
    shadow: Arc<Slot>,
    call: CallOptions,
    keep: usize,
    agree: AtomicU64,
    disagree: AtomicU64,
    errors: AtomicU64,
    samples: Mutex<VecDeque<Disagreement>>,
    promoted: RwLock<BTreeSet<String>>,
    /// The promotions are read from the store once, at the first message.
    loaded: tokio::sync::OnceCell<()>,
    extensions: huizhen_core::extensions::Extensions,
}

impl ShadowState {
    async fn promoted(&self, facility: &str) -> bool {
        self.loaded
            .get_or_init(|| async {
                let Some(store) = self.extensions.get::<huizhen_core::store::Store>() else {
                    return;
                };
                match store.shadow_promotions(&self.pipeline, &self.plugin).await {
                    Ok(list) => self
                        .promoted
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend(list),
                    Err(e) => {
                        tracing::error!(pipeline = %self.pipeline, plugin = %self.plugin, error = %e, "shadow promotions not read; the primary decides until they are")
                    }
                }
            })
            .await;
        self.promoted
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(facility)
    }

    /// Counts one message and keeps a disagreement as a sample.
    fn record(
        &self,
        work: &Work,
        served_is_shadow: bool,
        primary: &Result<Decision, String>,
        shadow: &Result<Decision, String>,
    ) {
        let result = match (primary, shadow) {
            (Ok(a), Ok(b)) if same(a, b) => "agree",
            // The version that does not decide failed: nothing changes for the message.
            (Ok(_), Err(_)) if !served_is_shadow => "shadow_error",
            (Err(_), Ok(_)) if served_is_shadow => "shadow_error",
            _ => "disagree",
        };
        huizhen_core::runner::shadow::count(&self.pipeline, &self.plugin, result);
        match result {
            "agree" => {
                self.agree.fetch_add(1, Ordering::Relaxed);
            }
            "shadow_error" => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                self.disagree.fetch_add(1, Ordering::Relaxed);
                let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
                if self.keep > 0 {
                    if samples.len() >= self.keep {
                        samples.pop_front();
                    }
                    samples.push_back(Disagreement {
                        message_id: work.id.clone(),
                        facility: work.facility.clone(),
                        at: huizhen_core::message::now_ms(),
                        primary: show(primary),
                        shadow: show(shadow),
                        served: if served_is_shadow {
                            "shadow"
                        } else {
                            "primary"
                        }
                        .into(),
                    });
                }
            }
        }
    }
}

impl ShadowStep for ShadowState {
    fn report(&self) -> ShadowReport {
        let label = |s: &Slot| {
            s.current()
                .map(|p| p.label().to_owned())
                .unwrap_or_else(|| format!("{} (not loaded)", s.name()))
        };
        ShadowReport {
            pipeline: self.pipeline.clone(),
            plugin: self.plugin.clone(),
            primary_version: label(&self.primary),
            shadow_version: label(&self.shadow),
            agree: self.agree.load(Ordering::Relaxed),
            disagree: self.disagree.load(Ordering::Relaxed),
            shadow_errors: self.errors.load(Ordering::Relaxed),
            promoted: self
                .promoted
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned()
                .collect(),
            samples: self
                .samples
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned()
                .collect(),
        }
    }

    fn set_promoted(&self, facility: &str, promoted: bool) {
        let mut set = self.promoted.write().unwrap_or_else(|p| p.into_inner());
        if promoted {
            set.insert(facility.to_owned());
        } else {
            set.remove(facility);
        }
    }
}

/// Whether two decisions agree: the same kind, with the same route target, body or headers (a
/// drop's reason text is not compared).
fn same(a: &Decision, b: &Decision) -> bool {
    match (a, b) {
        (Decision::Pass, Decision::Pass) | (Decision::Drop(_), Decision::Drop(_)) => true,
        (Decision::Route(x), Decision::Route(y)) => x == y,
        (Decision::Transform(x), Decision::Transform(y)) => x == y,
        (Decision::Annotate(x), Decision::Annotate(y)) => {
            let mut x = x.clone();
            let mut y = y.clone();
            x.sort();
            y.sort();
            x == y
        }
        _ => false,
    }
}

/// A decision for a sample, without message content.
fn show(d: &Result<Decision, String>) -> String {
    match d {
        Ok(Decision::Pass) => "pass".into(),
        Ok(Decision::Drop(_)) => "drop".into(),
        Ok(Decision::Route(to)) => format!("route({to})"),
        Ok(Decision::Transform(b)) => format!("transform({} bytes)", b.len()),
        Ok(Decision::Annotate(h)) => format!(
            "annotate({})",
            h.iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(_) => "error".into(),
    }
}

/// Calls `plugin` on `msg` on the plugin call pool (a plugin spinning to its deadline holds a
/// pool thread, never an async worker).
async fn decide(
    plugin: Arc<crate::Plugin>,
    msg: Message,
    call: CallOptions,
) -> Result<Decision, crate::CallError> {
    crate::pool::offload(move || plugin.decide_reusing(&msg, &call)).await
}

impl Step for PluginStep {
    fn apply<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Flow, StepError>> {
        Box::pin(async move {
            let msg = Message {
                id: work.id.clone(),
                pipeline: work.pipeline.clone(),
                facility: work.facility.clone(),
                kind: work.kind.clone(),
                body: work.body().to_vec(),
                headers: work
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            };
            // The version serving now answers for this message, even if a new one is swapped in
            // while it runs.
            let plugin = self.slot.current().ok_or_else(|| {
                StepError::new(format!("plugin {} is not loaded", self.slot.name()))
            })?;
            let call = CallOptions {
                now_ms: work.received_at,
                ..self.call.clone()
            };
            let to_step_error = |e: crate::CallError| {
                if e.is_permanent() {
                    StepError::permanent(e.to_string())
                } else {
                    StepError::new(e.to_string())
                }
            };
            let Some(sh) = &self.shadow else {
                let decision = decide(plugin.clone(), msg, call)
                    .await
                    .map_err(to_step_error)?;
                return self.apply_decision(&plugin, decision, work).await;
            };
            // Shadow mode: both versions on the same input, at once; one decides.
            let shadow_plugin = sh.shadow.current();
            let promoted = shadow_plugin.is_some() && sh.promoted(&work.facility).await;
            let shadow_call = CallOptions {
                now_ms: work.received_at,
                ..sh.call.clone()
            };
            let (primary, shadow) = match &shadow_plugin {
                Some(sp) => {
                    let (a, b) = futures::join!(
                        decide(plugin.clone(), msg.clone(), call),
                        decide(sp.clone(), msg, shadow_call)
                    );
                    (a, b.map_err(|e| e.to_string()))
                }
                None => (
                    decide(plugin.clone(), msg, call).await,
                    Err(format!("shadow plugin {} is not loaded", sh.shadow.name())),
                ),
            };
            let primary_shown = match &primary {
                Ok(d) => Ok(d.clone()),
                Err(e) => Err(e.to_string()),
            };
            sh.record(work, promoted, &primary_shown, &shadow);
            if promoted && let (Some(sp), Ok(d)) = (shadow_plugin, shadow) {
                return self.apply_decision(&sp, d, work).await;
            }
            if promoted {
                // The promoted version failed: its failure is the step's (as the primary's
                // would be).
                return Err(StepError::new(format!(
                    "plugin {} (promoted shadow) failed",
                    sh.shadow.name()
                )));
            }
            let decision = primary.map_err(to_step_error)?;
            self.apply_decision(&plugin, decision, work).await
        })
    }
}

impl PluginStep {
    /// What a decision does to the message.
    async fn apply_decision(
        &self,
        plugin: &crate::Plugin,
        decision: Decision,
        work: &mut Work,
    ) -> Result<Flow, StepError> {
        match decision {
            Decision::Pass => Ok(Flow::Continue),
            Decision::Drop(reason) => {
                Ok(Flow::Stop(format!("plugin {}: {reason}", plugin.label())))
            }
            Decision::Transform(body) => {
                work.set_body(body);
                Ok(Flow::Continue)
            }
            Decision::Annotate(headers) => {
                work.headers.extend(headers);
                Ok(Flow::Continue)
            }
            Decision::Route(to) => {
                if to == self.pipeline {
                    return Err(StepError::permanent(format!(
                        "plugin {} routed the message back into its own pipeline {to:?}",
                        plugin.label()
                    )));
                }
                let target = self.router.get(&to).ok_or_else(|| {
                    StepError::new(format!(
                        "plugin {}: route to {to:?}: no such pipeline is running",
                        plugin.label()
                    ))
                })?;
                let body = work.body().to_vec();
                let mut m = NewMessage::new(&to, &work.facility, &work.kind, body);
                m.headers = work.headers.clone();
                m.source = format!("plugin {} in {}", plugin.label(), work.pipeline);
                m.dedup_key = Some(format!("route:{}", work.id));
                m.trace_id = Some(work.trace_id.clone());
                m.parent_id = Some(work.id.clone());
                let a = target
                    .submit(m)
                    .await
                    .map_err(|e| StepError::new(format!("route to {to:?}: {e}")))?;
                work.headers
                    .insert("huizhen-routed-to".into(), format!("{to}:{}", a.id));
                Ok(Flow::Stop(format!(
                    "routed to {to} by plugin {}",
                    plugin.label()
                )))
            }
        }
    }
}
