//! `rule` instances reused across the calls of one `plugin` step.
//!
//! A fresh store and instance per message costs about ten times the call itself (a WASI
//! context, a store with its limiter, the component's core instances, their memories set up
//! and torn down). The `plugin` step therefore calls [`Plugin::decide_reusing`]: an instance
//! that answered is kept by its version and serves the next message of the same step, with
//! what belongs to a call set again before each one: the epoch deadline, the fuel, the
//! message's time (`host.now-ms` and the WASI wall clock), and what the plugin printed taken
//! and logged per call as before.
//!
//! * **One step's instances.** An instance serves only calls with the same `config:` (the
//!   step's own map, compared by identity) and the same limits, so a plugin that keeps its
//!   configuration in a static never sees another step's.
//! * **A failure ends the instance.** A trap, a deadline, running out of fuel or past the memory
//!   cap drops it; the next call gets a fresh one. The plugin's own `err(...)` is an answer and
//!   keeps the instance.
//! * **Bounded.** At most [`MAX_IDLE`] idle instances per version; a version swapped out drops
//!   its instances when its last call ends.
//! * **State.** Memory the guest keeps in statics survives between the messages of one step; a
//!   plugin must decide from the message and its configuration alone (a replay may meet
//!   another instance). Without the `random` grant the fixed sequence of random numbers runs on
//!   from the instance's start instead of restarting at each message.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::bindings::huizhen::plugin::types::{Decision, Message};
use crate::{CallError, CallOptions, Compiled, Limits, Plugin, Sandbox, World, bindings};

/// Idle instances kept per plugin version.
pub const MAX_IDLE: usize = 16;

/// The idle `rule` instances of one version.
#[derive(Default)]
pub struct Idle(Mutex<Vec<IdleRule>>);

/// An instance between calls, with the step options it serves.
struct IdleRule {
    config: Arc<BTreeMap<String, String>>,
    limits: Limits,
    sb: Sandbox,
    rule: bindings::Rule,
}

impl Idle {
    fn take(&self, call: &CallOptions) -> Option<IdleRule> {
        let mut idle = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let i = idle
            .iter()
            .rposition(|r| Arc::ptr_eq(&r.config, &call.config) && r.limits == call.limits)?;
        Some(idle.swap_remove(i))
    }

    fn put(&self, r: IdleRule) {
        let mut idle = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(r);
        }
    }

    /// How many instances are idle now.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Plugin {
    /// `rule`: decides on a message in an instance kept from an earlier call with the same
    /// options (see the module documentation), or a fresh one.
    pub fn decide_reusing(&self, msg: &Message, call: &CallOptions) -> Result<Decision, CallError> {
        let Compiled::Rule(pre) = &self.compiled else {
            return Err(self.wrong(World::Rule));
        };
        let started = Instant::now();
        let (mut sb, rule) = match self.idle.take(call) {
            Some(r) => {
                r.sb.store
                    .data()
                    .now_ms
                    .store(call.now_ms, Ordering::Relaxed);
                (r.sb, r.rule)
            }
            None => {
                let mut sb = self.sandbox(call);
                Self::arm(&mut sb);
                match pre.instantiate(&mut sb.store) {
                    Ok(rule) => (sb, rule),
                    Err(e) => return self.finish(&mut sb, started, Err(e)),
                }
            }
        };
        Self::arm(&mut sb);
        // Cannot fail: the engine consumes fuel.
        let _ = sb.store.set_fuel(call.limits.fuel.unwrap_or(u64::MAX));
        let r = rule.call_decide(&mut sb.store, msg);
        let trapped = r.is_err();
        let out = self.finish(&mut sb, started, r);
        if !trapped {
            self.idle.put(IdleRule {
                config: call.config.clone(),
                limits: call.limits,
                sb,
                rule,
            });
        }
        out
    }

    /// The `rule` instances this version keeps between calls.
    pub fn idle(&self) -> &Idle {
        &self.idle
    }
}
