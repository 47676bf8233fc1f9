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

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use huizhen_core::config::duration;
use huizhen_core::message::NewMessage;
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
        let slot = match (&self.name, &self.path) {
            (Some(_), Some(_)) | (None, None) => {
                return Err("give either `name` (a plugin of plugins.dir) or `path`".into());
            }
            (Some(name), None) => {
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
                slot
            }
            (None, Some(path)) => reg.load_path(path, World::Rule)?,
        };
        let Some(current) = slot.current() else {
            return Err(format!(
                "plugin {:?} could not be loaded: {}",
                slot.name(),
                slot.last_error().unwrap_or_default()
            ));
        };
        if current.world() != World::Rule {
            return Err(format!(
                "plugin {} is a `{}` plugin; the plugin step calls `rule` plugins",
                current.label(),
                current.world()
            ));
        }
        Ok(Arc::new(PluginStep {
            slot,
            call: CallOptions {
                limits: Limits {
                    deadline: self.deadline,
                    memory: self.memory_mb << 20,
                    fuel: None,
                },
                config: Arc::new(self.config.clone()),
                now_ms: 0,
            },
            router: ctx.router.clone(),
            pipeline: ctx.pipeline.clone(),
        }))
    }
}

struct PluginStep {
    slot: Arc<Slot>,
    call: CallOptions,
    router: Router,
    pipeline: String,
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
            // On the plugin call pool: a plugin spinning to its deadline holds a pool thread,
            // never an async worker (the listeners of other pipelines keep answering).
            let decision = crate::pool::offload({
                let plugin = plugin.clone();
                move || plugin.decide_reusing(&msg, &call)
            })
            .await
            .map_err(|e| {
                if e.is_permanent() {
                    StepError::permanent(e.to_string())
                } else {
                    StepError::new(e.to_string())
                }
            })?;
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
        })
    }
}
