//! The WASM plugin host (component model, wasmtime 48) and the `plugin` pipeline step.
//!
//! One wasmtime [`Engine`] per process (pooling allocator, epoch interruption); each plugin file
//! is compiled once and pre-linked ([`wasmtime::component::InstancePre`]); every call gets a
//! fresh [`Store`] with a memory cap and an epoch deadline, so a trap, an endless loop or a huge
//! allocation fails that one call with the plugin's name and the reason, and the engine and the
//! other messages carry on. Guests built for `wasm32-wasip2` import WASI; they get a locked-down
//! context: no preopened directories, no sockets, no environment, no arguments.
//!
//! The contract is `sdk/wit/plugin.wit` (`huizhen:plugin@0.1.0`); all `bindgen!` calls are in
//! [`bindings`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits,
    StoreLimitsBuilder,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub mod step;

/// Every `bindgen!` of the host.
pub mod bindings {
    wasmtime::component::bindgen!({
        world: "rule",
        path: "../../sdk/wit",
    });
}

use bindings::huizhen::plugin::host::Level;
use bindings::huizhen::plugin::types::{Decision, Message};

/// Most bytes of a call's stdout and stderr kept for the log.
const OUTPUT_LIMIT: usize = 64 * 1024;

/// How long one epoch tick lasts: deadlines are counted in ticks.
const TICK: Duration = Duration::from_millis(1);

/// Limits of one plugin's calls.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A call running longer is interrupted (default 50 ms).
    pub deadline: Duration,
    /// Linear memory a call may grow to (default 64 MiB).
    pub memory: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Duration::from_millis(50),
            memory: 64 << 20,
        }
    }
}

/// The process-wide wasmtime engine, and the thread that advances its epoch.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(1000);
        pool.total_memories(1000);
        pool.total_tables(1000);
        pool.total_core_instances(1000);
        // The hard ceiling of any plugin's memory; each call's own cap is set by its store.
        pool.max_memory_size(1 << 30);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = match Engine::new(&config) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "pooling allocator unavailable; plugins use on-demand allocation");
                config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
                Engine::new(&config).expect("a wasmtime engine with the default allocator")
            }
        };
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("huizhen-wasm-epoch".into())
            .spawn(move || {
                while let Some(e) = weak.upgrade() {
                    e.increment_epoch();
                    drop(e);
                    std::thread::sleep(TICK);
                }
            })
            .expect("start the plugin epoch thread");
        engine
    })
}

/// What a call's store holds.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    plugin: Arc<str>,
    now_ms: i64,
    config: Arc<BTreeMap<String, String>>,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::huizhen::plugin::host::Host for CallState {
    fn log(&mut self, level: Level, message: String) {
        let plugin = &*self.plugin;
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }

    fn now_ms(&mut self) -> i64 {
        self.now_ms
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }
}

impl bindings::huizhen::plugin::types::Host for CallState {}

/// A loaded `rule` plugin, ready to be called.
pub struct RulePlugin {
    name: Arc<str>,
    path: PathBuf,
    pre: bindings::RulePre<CallState>,
    limits: Limits,
    config: Arc<BTreeMap<String, String>>,
}

impl std::fmt::Debug for RulePlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RulePlugin")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Why a call did not give a decision.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The plugin ran past its deadline.
    #[error("plugin {plugin}: interrupted after {limit:?} (deadline)")]
    Deadline { plugin: String, limit: Duration },
    /// The plugin trapped (a panic, out of memory, an invalid operation).
    #[error("plugin {plugin}: {reason}")]
    Trap { plugin: String, reason: String },
    /// The plugin answered with an error of its own.
    #[error("plugin {plugin} refused the message: {reason}")]
    Refused { plugin: String, reason: String },
}

impl RulePlugin {
    /// Compiles and links a `rule` component (off the hot path: 25–45 ms for a small one).
    pub fn load(
        path: &Path,
        limits: Limits,
        config: BTreeMap<String, String>,
    ) -> Result<RulePlugin, String> {
        let engine = engine();
        let at = path.display();
        let bytes = std::fs::read(path).map_err(|e| format!("{at}: cannot read: {e}"))?;
        let component = Component::from_binary(engine, &bytes)
            .map_err(|e| format!("{at}: not a WebAssembly component: {e:#}"))?;
        let mut linker: Linker<CallState> = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| format!("linking WASI: {e:#}"))?;
        bindings::Rule::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| format!("linking the host interface: {e:#}"))?;
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            format!("{at}: does not fit the `rule` world of huizhen:plugin@0.1.0: {e:#}")
        })?;
        let pre = bindings::RulePre::new(pre).map_err(|e| {
            format!("{at}: does not export the `rule` world of huizhen:plugin@0.1.0: {e:#}")
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "plugin".into());
        Ok(RulePlugin {
            name: name.into(),
            path: path.to_owned(),
            pre,
            limits,
            config: Arc::new(config),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Calls `decide` in a fresh store with the plugin's limits.
    pub fn decide(&self, msg: &Message, now_ms: i64) -> Result<Decision, CallError> {
        let engine = engine();
        // What the plugin prints goes to the engine's log, tagged with its name.
        let stdout = MemoryOutputPipe::new(OUTPUT_LIMIT);
        let stderr = MemoryOutputPipe::new(OUTPUT_LIMIT);
        let state = CallState {
            wasi: WasiCtx::builder()
                .stdout(stdout.clone())
                .stderr(stderr.clone())
                .build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory)
                .instances(16)
                .tables(16)
                .memories(16)
                .trap_on_grow_failure(true)
                .build(),
            plugin: self.name.clone(),
            now_ms,
            config: self.config.clone(),
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limits);
        let ticks = (self.limits.deadline.as_micros() / TICK.as_micros()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        let started = Instant::now();
        let plugin = self.name.to_string();
        let trap = |e: wasmtime::Error| {
            if e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
                CallError::Deadline {
                    plugin: plugin.clone(),
                    limit: self.limits.deadline,
                }
            } else {
                CallError::Trap {
                    plugin: plugin.clone(),
                    // The trap itself ("wasm `unreachable` instruction executed", "out of
                    // memory"…) without the wasm backtrace; anything else in full.
                    reason: match e.downcast_ref::<wasmtime::Trap>() {
                        Some(t) => format!("trapped: {t}"),
                        None => format!("{e:#}").replace('\n', " "),
                    },
                }
            }
        };
        let result = self
            .pre
            .instantiate(&mut store)
            .and_then(|rule| rule.call_decide(&mut store, msg));
        let out = String::from_utf8_lossy(&stdout.contents()).into_owned();
        let err = String::from_utf8_lossy(&stderr.contents()).into_owned();
        for line in out.lines().filter(|l| !l.trim().is_empty()) {
            tracing::info!(plugin = %self.name, stream = "stdout", "{line}");
        }
        for line in err.lines().filter(|l| !l.trim().is_empty()) {
            tracing::warn!(plugin = %self.name, stream = "stderr", "{line}");
        }
        tracing::trace!(plugin = %self.name, elapsed = ?started.elapsed(), "plugin call");
        match result {
            Ok(r) => r.map_err(|reason| CallError::Refused { plugin, reason }),
            Err(e) => Err(match trap(e) {
                // A panic's message is on stderr: it says more than "unreachable".
                CallError::Trap { plugin, reason } if !err.trim().is_empty() => CallError::Trap {
                    plugin,
                    reason: format!(
                        "{reason} (stderr: {})",
                        err.trim().lines().take(2).collect::<Vec<_>>().join(" ")
                    ),
                },
                other => other,
            }),
        }
    }
}
