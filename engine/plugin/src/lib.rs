//! The WASM plugin host (component model, wasmtime 48): packages, the registry with hot reload,
//! typed calls for every world, and the `plugin` pipeline step.
//!
//! One wasmtime [`Engine`] per process (pooling allocator, epoch interruption); each component
//! is compiled once (cached by its sha256) and pre-linked ([`wasmtime::component::InstancePre`]);
//! every call gets a store with a memory cap and an epoch deadline, so a trap, an endless loop or
//! a huge allocation fails that one call with the plugin's name, version and the reason, and the
//! engine and the other messages carry on. Guests built for `wasm32-wasip2` import WASI; they get
//! only the interfaces their manifest grants ([`wasi`]): no files, no sockets, no environment,
//! no arguments; the clocks with `clock`, real random numbers with `random`; what they print
//! reaches the engine's log with `log` and is dropped (and counted) without it.
//!
//! The contract is `sdk/wit/plugin.wit` (`huizhen:plugin@0.1.2`); all `bindgen!` calls are in
//! [`bindings`]. Components built for 0.1.0 and 0.1.1 keep working: the worlds that changed in
//! 0.1.1 (`scorer` gained `score-many`, `match-weights` three thresholds) and in 0.1.2
//! (`coverage` gained eligibility, deductible, annual limit and the year's usage) are detected
//! from the component's exports and called through their older form ([`legacy`]). A loaded
//! `coverage` plugin serves the domain's `CoveragePolicy` port through
//! [`coverage::PluginCoverage`]. A loaded `scorer`
//! serves the domain's `Scorer` port through [`scorer::PluginScorer`]. Calls made from async code
//! run on a pool of their own, off the tokio workers ([`pool`]). Packages and signatures: [`package`]; the registry and hot reload:
//! [`registry`]; JSON forms of every world's input and output: [`json`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits,
    StoreLimitsBuilder,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

mod cache;
pub mod coverage;
pub mod json;
pub mod legacy;
pub mod names;
pub mod package;
pub mod pool;
pub mod registry;
pub mod reuse;
pub mod scorer;
pub mod stats;
pub mod step;
pub mod wasi;

pub use package::{Manifest, World};
pub use registry::{Registry, Slot};
pub use stats::Stats;

/// Every `bindgen!` of the host. The `rule` world's bindings own the shared `host` and `types`
/// interfaces; the other worlds reuse them (`with`).
pub mod bindings {
    wasmtime::component::bindgen!({
        world: "rule",
        path: "../../sdk/wit",
        imports: { default: trappable },
    });

    pub mod scorer {
        wasmtime::component::bindgen!({
            world: "scorer",
            path: "../../sdk/wit",
            imports: { default: trappable },
            with: {
                "huizhen:plugin/host": super::huizhen::plugin::host,
                "huizhen:plugin/types": super::huizhen::plugin::types,
            },
        });
    }

    pub mod coverage {
        wasmtime::component::bindgen!({
            world: "coverage",
            path: "../../sdk/wit",
            imports: { default: trappable },
            with: { "huizhen:plugin/host": super::huizhen::plugin::host },
        });
    }

    pub mod match_weights {
        wasmtime::component::bindgen!({
            world: "match-weights",
            path: "../../sdk/wit",
            imports: { default: trappable },
            with: { "huizhen:plugin/host": super::huizhen::plugin::host },
        });
    }

    pub mod triage {
        wasmtime::component::bindgen!({
            world: "triage",
            path: "../../sdk/wit",
            imports: { default: trappable },
            with: { "huizhen:plugin/host": super::huizhen::plugin::host },
        });
    }
}

use bindings::huizhen::plugin::host::Level;
use bindings::huizhen::plugin::types::{Decision, Message};

/// The contract version this engine implements (`huizhen:plugin@…`).
pub const CONTRACT: &str = "0.1.2";

/// How long one epoch tick lasts: deadlines are counted in ticks.
const TICK: Duration = Duration::from_millis(1);

/// Limits of one plugin's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A call running longer is interrupted (default 50 ms).
    pub deadline: Duration,
    /// Linear memory a call may grow to (default 64 MiB).
    pub memory: usize,
    /// Fuel (wasm instructions, roughly) a call — or a scoring session — may burn; none:
    /// unlimited (the deadline still holds). Unlike the deadline, running out of fuel happens at
    /// the same point on every machine, so a budget can be part of a replayable decision.
    pub fuel: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Duration::from_millis(50),
            memory: 64 << 20,
            fuel: None,
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
        // Every store gets fuel (unlimited unless the call has a budget): see `Limits::fuel`.
        config.consume_fuel(true);
        // A new version of a plugin mostly repeats the functions of the one it replaces (the
        // SDK, serde, the standard library): Cranelift keeps each function's machine code by a
        // hash of its body and reuses it, so a hot swap compiles only what changed.
        config
            .enable_incremental_compilation(Arc::new(cache::FunctionCache::default()))
            .expect("the incremental compilation cache");
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

/// Compiles a component once per process: a version swapped out and back in again, or the same
/// package checked by `validate` and then started, is not compiled twice.
fn compile(bytes: &[u8], sha256: &str) -> Result<Component, String> {
    static CACHE: OnceLock<Mutex<HashMap<String, Component>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(c) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(sha256) {
        return Ok(c.clone());
    }
    let c = Component::from_binary(engine(), bytes)
        .map_err(|e| format!("not a WebAssembly component: {e:#}"))?;
    let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
    if map.len() >= 256 {
        map.clear();
    }
    map.insert(sha256.to_owned(), c.clone());
    Ok(c)
}

/// The host capabilities a manifest can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Capability {
    /// `host.log`, and stdout/stderr to the engine's log.
    Log,
    /// `host.now-ms`, and the WASI clocks.
    Clock,
    /// `host.config`.
    Config,
    /// Real random numbers from `wasi:random` (a fixed sequence without it).
    Random,
}

impl Capability {
    pub const ALL: [Capability; 4] = [
        Capability::Log,
        Capability::Clock,
        Capability::Config,
        Capability::Random,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Log => "log",
            Capability::Clock => "clock",
            Capability::Config => "config",
            Capability::Random => "random",
        }
    }

    pub fn parse(s: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// What one call (or one session of calls) gets besides its arguments.
#[derive(Debug, Clone)]
pub struct CallOptions {
    pub limits: Limits,
    /// The step's `config:` values (`host.config`).
    pub config: Arc<BTreeMap<String, String>>,
    /// What `host.now-ms` answers: the message's received time.
    pub now_ms: i64,
}

impl Default for CallOptions {
    fn default() -> Self {
        CallOptions {
            limits: Limits::default(),
            config: Arc::new(BTreeMap::new()),
            now_ms: 0,
        }
    }
}

/// What a call's store holds.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    /// The memory cap in bytes, for the error when a call goes past it.
    cap: usize,
    plugin: Arc<str>,
    caps: Arc<[Capability]>,
    /// What `host.now-ms` and the WASI wall clock read; set before each call.
    now_ms: Arc<AtomicI64>,
    config: Arc<BTreeMap<String, String>>,
}

impl CallState {
    fn allow(&self, cap: Capability, function: &str) -> wasmtime::Result<()> {
        if self.caps.contains(&cap) {
            Ok(())
        } else {
            Err(wasmtime::Error::msg(format!(
                "called host.{function} without the `{}` capability in its manifest",
                cap.as_str()
            )))
        }
    }
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
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.allow(Capability::Log, "log")?;
        let plugin = &*self.plugin;
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
        Ok(())
    }

    fn now_ms(&mut self) -> wasmtime::Result<i64> {
        self.allow(Capability::Clock, "now-ms")?;
        Ok(self.now_ms.load(Ordering::Relaxed))
    }

    fn config(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        self.allow(Capability::Config, "config")?;
        Ok(self.config.get(&key).cloned())
    }
}

impl bindings::huizhen::plugin::types::Host for CallState {}

/// Why a call did not give an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The plugin ran past its deadline.
    #[error("plugin {plugin}: interrupted after {limit:?} (deadline)")]
    Deadline { plugin: String, limit: Duration },
    /// The plugin burnt its fuel budget.
    #[error("plugin {plugin}: out of fuel (budget {fuel})")]
    OutOfFuel { plugin: String, fuel: u64 },
    /// The plugin went past its memory cap.
    #[error("plugin {plugin}: out of memory: {reason}")]
    Memory { plugin: String, reason: String },
    /// The plugin trapped (a panic, an invalid operation, a host call it may not make).
    #[error("plugin {plugin}: {reason}")]
    Trap { plugin: String, reason: String },
    /// The plugin answered with an error of its own.
    #[error("plugin {plugin} refused: {reason}")]
    Refused { plugin: String, reason: String },
    /// The call is not one this plugin's world offers.
    #[error("plugin {plugin} is a `{world}` plugin, not a `{wanted}` one")]
    WrongWorld {
        plugin: String,
        world: World,
        wanted: World,
    },
}

impl CallError {
    /// The same input would fail the same way: do not retry.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, CallError::Refused { .. })
    }
}

/// A component linked for its world.
#[derive(Clone)]
enum Compiled {
    Rule(bindings::RulePre<CallState>),
    Scorer(bindings::scorer::ScorerPre<CallState>),
    /// A 0.1.0 scorer (exports `score` only).
    ScorerV0(wasmtime::component::InstancePre<CallState>),
    Coverage(bindings::coverage::CoveragePre<CallState>),
    /// A 0.1.0/0.1.1 `coverage` plugin (`patient-coverage` without the year's usage).
    CoverageV1(wasmtime::component::InstancePre<CallState>),
    MatchWeights(bindings::match_weights::MatchWeightsPre<CallState>),
    /// A 0.1.0 `match-weights` plugin (two thresholds).
    MatchWeightsV0(wasmtime::component::InstancePre<CallState>),
    Triage(bindings::triage::TriagePre<CallState>),
}

fn link(
    component: &Component,
    world: World,
    caps: &[Capability],
    label: &str,
) -> Result<Compiled, String> {
    wasi::check_imports(component, caps, label)?;
    let engine = engine();
    let mut linker: Linker<CallState> = Linker::new(engine);
    wasi::add_to_linker(&mut linker, caps).map_err(|e| format!("linking WASI: {e:#}"))?;
    let fit = |e: wasmtime::Error| {
        format!(
            "does not fit the `{world}` world of huizhen:plugin@{CONTRACT} (built for another world or contract version?): {e:#}"
        )
    };
    let host = |e: wasmtime::Error| format!("linking the host interface: {e:#}");
    Ok(match world {
        World::Rule => {
            bindings::Rule::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(host)?;
            let pre = linker.instantiate_pre(component).map_err(fit)?;
            Compiled::Rule(bindings::RulePre::new(pre).map_err(fit)?)
        }
        World::Scorer => {
            bindings::scorer::Scorer::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
                .map_err(host)?;
            let pre = linker.instantiate_pre(component).map_err(fit)?;
            if legacy::is_v0_scorer(component) {
                legacy::check_v0_scorer(&pre).map_err(fit)?;
                Compiled::ScorerV0(pre)
            } else {
                Compiled::Scorer(bindings::scorer::ScorerPre::new(pre).map_err(fit)?)
            }
        }
        World::Coverage => {
            bindings::coverage::Coverage::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
                .map_err(host)?;
            let pre = linker.instantiate_pre(component).map_err(fit)?;
            if legacy::is_v1_coverage(component, engine) {
                legacy::check_v1_coverage(&pre).map_err(fit)?;
                Compiled::CoverageV1(pre)
            } else {
                Compiled::Coverage(bindings::coverage::CoveragePre::new(pre).map_err(fit)?)
            }
        }
        World::MatchWeights => {
            bindings::match_weights::MatchWeights::add_to_linker::<_, HasSelf<_>>(
                &mut linker,
                |s| s,
            )
            .map_err(host)?;
            let pre = linker.instantiate_pre(component).map_err(fit)?;
            if legacy::is_v0_weights(component, engine) {
                legacy::check_v0_weights(&pre).map_err(fit)?;
                Compiled::MatchWeightsV0(pre)
            } else {
                Compiled::MatchWeights(
                    bindings::match_weights::MatchWeightsPre::new(pre).map_err(fit)?,
                )
            }
        }
        World::Triage => {
            bindings::triage::Triage::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
                .map_err(host)?;
            let pre = linker.instantiate_pre(component).map_err(fit)?;
            Compiled::Triage(bindings::triage::TriagePre::new(pre).map_err(fit)?)
        }
    })
}

/// One loaded version of a plugin: compiled, linked for its world, ready to be called. Calls
/// hold an `Arc<Plugin>`, so a version swapped out finishes the calls it has started.
pub struct Plugin {
    manifest: Manifest,
    /// `name@version`, as errors and the log name it.
    label: Arc<str>,
    caps: Arc<[Capability]>,
    sha256: String,
    signer: Option<String>,
    origin: std::path::PathBuf,
    loaded_at: chrono::DateTime<chrono::Utc>,
    compiled: Compiled,
    stats: Arc<Stats>,
    /// A warning about dropped output was logged for this version.
    warned: std::sync::atomic::AtomicBool,
    /// `rule` instances between calls of the `plugin` step ([`reuse`]).
    idle: reuse::Idle,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("label", &self.label)
            .field("world", &self.manifest.world)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// A store for one call or one session of calls.
struct Sandbox {
    store: Store<CallState>,
    stdout: wasi::Printed,
    stderr: wasi::Printed,
    deadline: Duration,
    fuel: Option<u64>,
}

impl Plugin {
    /// Compiles (or takes from the cache) and links `wasm` for the manifest's world.
    pub fn new(
        manifest: Manifest,
        wasm: &[u8],
        sha256: String,
        signer: Option<String>,
        origin: std::path::PathBuf,
        stats: Arc<Stats>,
    ) -> Result<Plugin, String> {
        let component = compile(wasm, &sha256)?;
        let label = format!("{}@{}", manifest.name, manifest.version);
        let compiled = link(&component, manifest.world, &manifest.capabilities, &label)?;
        Ok(Plugin {
            label: label.into(),
            caps: manifest.capabilities.clone().into(),
            manifest,
            sha256,
            signer,
            origin,
            loaded_at: chrono::Utc::now(),
            compiled,
            stats,
            warned: Default::default(),
            idle: Default::default(),
        })
    }

    /// [`Plugin::new`] from a package read by [`package::read_package`].
    pub fn from_package(pkg: package::Package, stats: Arc<Stats>) -> Result<Plugin, String> {
        let package::Package {
            dir,
            manifest,
            wasm,
            sha256,
            signer,
        } = pkg;
        Plugin::new(manifest, &wasm, sha256, signer, dir, stats)
    }

    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    pub fn version(&self) -> &str {
        &self.manifest.version
    }

    /// `name@version`.
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn world(&self) -> World {
        self.manifest.world
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The trusted key that signed the package (`None`: loaded unsigned, development only).
    pub fn signer(&self) -> Option<&str> {
        self.signer.as_deref()
    }

    pub fn origin(&self) -> &std::path::Path {
        &self.origin
    }

    pub fn loaded_at(&self) -> chrono::DateTime<chrono::Utc> {
        self.loaded_at
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn sandbox(&self, call: &CallOptions) -> Sandbox {
        // What the plugin prints is held for the call, then logged (`log`) or dropped.
        let stdout = wasi::Printed::default();
        let stderr = wasi::Printed::default();
        let now_ms = Arc::new(AtomicI64::new(call.now_ms));
        let state = CallState {
            wasi: wasi::context(&self.caps, &now_ms, &stdout, &stderr),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(call.limits.memory)
                .instances(16)
                .tables(16)
                .memories(16)
                .trap_on_grow_failure(true)
                .build(),
            cap: call.limits.memory,
            plugin: self.label.clone(),
            caps: self.caps.clone(),
            now_ms,
            config: call.config.clone(),
        };
        let mut store = Store::new(engine(), state);
        store.limiter(|s| &mut s.limits);
        // Cannot fail: the engine consumes fuel.
        let _ = store.set_fuel(call.limits.fuel.unwrap_or(u64::MAX));
        Sandbox {
            store,
            stdout,
            stderr,
            deadline: call.limits.deadline,
            fuel: call.limits.fuel,
        }
    }

    fn arm(sb: &mut Sandbox) {
        let ticks = (sb.deadline.as_micros() / TICK.as_micros()).max(1) as u64;
        sb.store.set_epoch_deadline(ticks);
    }

    /// Logs what the call printed (or drops it), maps a trap to its reason, records the call.
    fn finish<T>(
        &self,
        sb: &mut Sandbox,
        started: Instant,
        result: wasmtime::Result<Result<T, String>>,
    ) -> Result<T, CallError> {
        let new_err = self.printed(sb);
        let plugin = self.label.to_string();
        let mapped = match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(reason)) => Err(CallError::Refused { plugin, reason }),
            Err(e) => Err(self.trap(e, sb, &new_err)),
        };
        self.stats.record(started.elapsed(), mapped.is_ok());
        mapped
    }

    /// What the call printed goes to the engine's log as the plugin's log when its manifest
    /// grants `log` (at most [`wasi::OUTPUT_LINES`] lines and [`wasi::OUTPUT_LIMIT`] bytes per
    /// stream); without `log` it is dropped. Bytes not logged are counted
    /// ([`Stats::output_dropped`]) and the first time a version drops any, one warning names
    /// the plugin (never the text). Returns stderr's text, for a trap's reason.
    fn printed(&self, sb: &Sandbox) -> String {
        let (out, out_over) = sb.stdout.take();
        let (err, err_over) = sb.stderr.take();
        if out.is_empty() && err.is_empty() && out_over + err_over == 0 {
            return String::new();
        }
        let stderr = String::from_utf8_lossy(&err).into_owned();
        let mut dropped = out_over + err_over;
        if self.caps.contains(&Capability::Log) {
            let (lines, left) = wasi::lines(&out);
            dropped += left;
            for line in lines {
                tracing::info!(plugin = %self.label, stream = "stdout", "{line}");
            }
            let (lines, left) = wasi::lines(&err);
            dropped += left;
            for line in lines {
                tracing::warn!(plugin = %self.label, stream = "stderr", "{line}");
            }
            if dropped > 0 && !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(plugin = %self.label, bytes = dropped, "plugin printed more than its per-call limit; the rest is dropped (counted in output_dropped_bytes)");
            }
        } else {
            dropped += (out.len() + err.len()) as u64;
            if dropped > 0 && !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(plugin = %self.label, bytes = dropped, "plugin printed without the `log` capability; its output is dropped (counted in output_dropped_bytes)");
            }
        }
        self.stats.record_dropped_output(dropped);
        stderr
    }

    fn trap(&self, e: wasmtime::Error, sb: &Sandbox, stderr: &str) -> CallError {
        let plugin = self.label.to_string();
        let trap = e.downcast_ref::<wasmtime::Trap>().copied();
        if trap == Some(wasmtime::Trap::OutOfFuel) {
            return CallError::OutOfFuel {
                plugin,
                fuel: sb.fuel.unwrap_or(u64::MAX),
            };
        }
        if trap == Some(wasmtime::Trap::Interrupt) {
            return CallError::Deadline {
                plugin,
                limit: sb.deadline,
            };
        }
        // A memory.grow refused by the store's limiter traps (trap_on_grow_failure) with a
        // message naming the limit; a guest allocator that gets null aborts (unreachable):
        // either way the instance asked for more than its cap.
        let text = format!("{e:#}");
        let over_cap = text.contains("memory minimum size")
            || text.contains("forcing trap when growing memory")
            || text.contains("memory allocation")
            || stderr.contains("memory allocation of");
        if over_cap {
            return CallError::Memory {
                plugin,
                reason: format!(
                    "the call asked for more than its cap of {} MiB",
                    sb.store.data().limits_cap() >> 20
                ),
            };
        }
        // The trap itself ("wasm `unreachable` instruction executed"…) without the wasm
        // backtrace; anything else in full; a panic's message is on stderr.
        let mut reason = match trap {
            Some(t) => format!("trapped: {t}"),
            None => text.replace('\n', " "),
        };
        if !stderr.trim().is_empty() {
            reason = format!(
                "{reason} (stderr: {})",
                stderr.trim().lines().take(2).collect::<Vec<_>>().join(" ")
            );
        }
        CallError::Trap { plugin, reason }
    }

    fn wrong(&self, wanted: World) -> CallError {
        CallError::WrongWorld {
            plugin: self.label.to_string(),
            world: self.manifest.world,
            wanted,
        }
    }

    /// `rule`: decides on a message (a fresh store per call).
    pub fn decide(&self, msg: &Message, call: &CallOptions) -> Result<Decision, CallError> {
        let Compiled::Rule(pre) = &self.compiled else {
            return Err(self.wrong(World::Rule));
        };
        let mut sb = self.sandbox(call);
        Self::arm(&mut sb);
        let started = Instant::now();
        let r = pre
            .instantiate(&mut sb.store)
            .and_then(|w| w.call_decide(&mut sb.store, msg));
        self.finish(&mut sb, started, r)
    }

    /// `scorer`: a session of calls in one instance, for scoring many candidates of one case.
    pub fn scorer(&self, call: &CallOptions) -> Result<ScorerSession<'_>, CallError> {
        if !matches!(self.compiled, Compiled::Scorer(_) | Compiled::ScorerV0(_)) {
            return Err(self.wrong(World::Scorer));
        }
        Ok(ScorerSession {
            plugin: self,
            call: call.clone(),
            live: None,
        })
    }

    /// `coverage`: the covered and self-pay amounts of fee items and the deductible met (a
    /// fresh store per call), in the 0.1.2 form whatever the plugin's contract version (an
    /// older plugin is called through [`legacy::call_v1_cover`]).
    pub fn cover(
        &self,
        items: &[bindings::coverage::FeeItem],
        patient: &bindings::coverage::PatientCoverage,
        call: &CallOptions,
    ) -> Result<bindings::coverage::CoverageAnswer, CallError> {
        let mut sb = self.sandbox(call);
        Self::arm(&mut sb);
        let started = Instant::now();
        let r = match &self.compiled {
            Compiled::Coverage(pre) => pre
                .instantiate(&mut sb.store)
                .and_then(|w| w.call_cover(&mut sb.store, items, patient)),
            Compiled::CoverageV1(pre) => legacy::call_v1_cover(pre, &mut sb.store, items, patient),
            _ => return Err(self.wrong(World::Coverage)),
        };
        self.finish(&mut sb, started, r)
    }

    /// The contract version of this component's world: `0.1.0` for a scorer without
    /// `score-many` or a `match-weights` plugin with two thresholds, `0.1.1` for a `coverage`
    /// plugin without the year's usage (0.1.0 and 0.1.1 had the same `coverage`), else
    /// [`CONTRACT`].
    pub fn world_version(&self) -> &'static str {
        match self.compiled {
            Compiled::ScorerV0(_) | Compiled::MatchWeightsV0(_) => "0.1.0",
            Compiled::CoverageV1(_) => "0.1.1",
            _ => CONTRACT,
        }
    }

    /// `match-weights`: the identity-matching weights and thresholds, always in the 0.1.1 form
    /// (a 0.1.0 plugin's two thresholds are mapped: [`legacy::WeightsV0::upgrade`]).
    pub fn weights(
        &self,
        call: &CallOptions,
    ) -> Result<bindings::match_weights::Weights, CallError> {
        let mut sb = self.sandbox(call);
        Self::arm(&mut sb);
        let started = Instant::now();
        let r = match &self.compiled {
            Compiled::MatchWeights(pre) => pre
                .instantiate(&mut sb.store)
                .and_then(|w| w.call_weights(&mut sb.store).map(Ok)),
            Compiled::MatchWeightsV0(pre) => {
                legacy::call_v0_weights(pre, &mut sb.store).map(|w| Ok(w.upgrade()))
            }
            _ => return Err(self.wrong(World::MatchWeights)),
        };
        self.finish(&mut sb, started, r)
    }

    /// `triage`: symptoms, a suggested department and follow-up questions for a complaint.
    pub fn triage(
        &self,
        complaint: &str,
        call: &CallOptions,
    ) -> Result<bindings::triage::TriageResult, CallError> {
        let Compiled::Triage(pre) = &self.compiled else {
            return Err(self.wrong(World::Triage));
        };
        let mut sb = self.sandbox(call);
        Self::arm(&mut sb);
        let started = Instant::now();
        let r = pre
            .instantiate(&mut sb.store)
            .and_then(|w| w.call_triage(&mut sb.store, complaint));
        self.finish(&mut sb, started, r)
    }
}

impl CallState {
    fn limits_cap(&self) -> usize {
        self.cap
    }
}

/// Scoring calls that share one instance (one case, many candidates): instantiating once saves
/// ~10 µs per call. Only calls of one request share it; a trap ends the instance and the next
/// call gets a fresh one. The fuel budget is the session's: it is set when the instance is made.
pub struct ScorerSession<'p> {
    plugin: &'p Plugin,
    call: CallOptions,
    live: Option<(Sandbox, Live)>,
}

/// A live scorer instance: 0.1.1 bindings, or a 0.1.0 instance called by export name.
enum Live {
    Current(bindings::scorer::Scorer),
    V0(wasmtime::component::Instance),
}

impl ScorerSession<'_> {
    /// Makes the instance when there is none; the error is the call's.
    fn ensure(&mut self, started: Instant) -> Result<(), CallError> {
        if self.live.is_some() {
            return Ok(());
        }
        let mut sb = self.plugin.sandbox(&self.call);
        Plugin::arm(&mut sb);
        let made = match &self.plugin.compiled {
            Compiled::Scorer(pre) => pre.instantiate(&mut sb.store).map(Live::Current),
            Compiled::ScorerV0(pre) => pre.instantiate(&mut sb.store).map(Live::V0),
            _ => unreachable!("a scorer session is made for scorer plugins only"),
        };
        match made {
            Ok(live) => {
                self.live = Some((sb, live));
                Ok(())
            }
            Err(e) => self.plugin.finish(&mut sb, started, Err(e)),
        }
    }

    /// One candidate's score (the world's `score`).
    pub fn score(
        &mut self,
        case: &[bindings::scorer::Feature],
        expert: &[bindings::scorer::Feature],
    ) -> Result<bindings::scorer::Score, CallError> {
        let started = Instant::now();
        self.ensure(started)?;
        let (sb, live) = self.live.as_mut().expect("instantiated above");
        Plugin::arm(sb);
        let r = match live {
            Live::Current(w) => w.call_score(&mut sb.store, case, expert),
            Live::V0(i) => legacy::call_v0_score(i, &mut sb.store, case, expert),
        };
        let trapped = r.is_err();
        let out = self.plugin.finish(sb, started, r);
        if trapped {
            self.live = None;
        }
        out
    }

    /// Every candidate of one case: one `score-many` call (0.1.1), or `score` once per
    /// candidate in this one instance under one deadline (0.1.0). The number of scores is the
    /// plugin's: the caller checks it.
    pub fn score_many(
        &mut self,
        case: &[bindings::scorer::Feature],
        candidates: &[Vec<bindings::scorer::Feature>],
    ) -> Result<Vec<bindings::scorer::Score>, CallError> {
        let started = Instant::now();
        self.ensure(started)?;
        let (sb, live) = self.live.as_mut().expect("instantiated above");
        Plugin::arm(sb);
        let r = match live {
            Live::Current(w) => w.call_score_many(&mut sb.store, case, candidates),
            Live::V0(i) => {
                let mut out = Vec::with_capacity(candidates.len());
                let mut result = Ok(Ok(Vec::new()));
                for c in candidates {
                    match legacy::call_v0_score(i, &mut sb.store, case, c) {
                        Ok(Ok(s)) => out.push(s),
                        Ok(Err(reason)) => {
                            result = Ok(Err(reason));
                            break;
                        }
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                match result {
                    Ok(Ok(_)) => Ok(Ok(out)),
                    other => other,
                }
            }
        };
        let trapped = r.is_err();
        let out = self.plugin.finish(sb, started, r);
        if trapped {
            self.live = None;
        }
        out
    }
}
