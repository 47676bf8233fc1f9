//! The pipeline runner: builds pipelines from config and moves messages through them.
//!
//! Path of a message: a source calls [`PipelineHandle::submit`] → the journal commits it → the
//! source acknowledges its sender → the message is queued in memory (a bounded channel; a full
//! queue makes `submit` wait, which is back-pressure up to the socket) → a worker runs the steps
//! and the sinks → the journal records `done` (with the sinks' effects), or `failed` with a retry
//! time (exponential backoff with jitter), or `dead` after `retry.max_attempts`.
//!
//! Messages that are not in memory (due retries, reprocessed ones, and those a crash or a
//! shutdown left `received`/`processing`) are found by the scheduler, which claims them in the
//! journal and queues them again. Effects are idempotent by message id, so the at-least-once
//! redelivery after a crash never yields a second effect.
//!
//! With an `ordering_key`, messages are spread over `concurrency` partitions by the key's hash;
//! each partition runs one message at a time and retries in place, so later messages with the
//! same key wait for the earlier one (ADT events for one patient stay in order).

pub mod call_metrics;
mod fleet;
pub mod match_alerts;
mod metrics;
mod pipeline;
mod process_metrics;
mod reload;
pub mod shadow;
pub mod tap;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use metrics::Metrics;
pub(crate) use pipeline::Remote;
pub use pipeline::{ConnectionGuard, PipelineHandle, PipelineInfo, SubmitError};
pub use reload::{FailedPipeline, RefusedFile, ReloadReport};

use crate::cluster::QueueSpec;
use crate::config::Loaded;
use crate::http::HttpIngress;
use crate::store::{Journal, JournalOptions, Store, StoreError, StoreOptions};

/// What a component's `build` gets.
#[derive(Clone)]
pub struct BuildContext {
    pub pipeline: String,
    pub facility: String,
    /// Resolves other pipelines by name once all are built (for `route`).
    pub router: Router,
    /// Engine-wide services (the plugin registry).
    pub extensions: crate::extensions::Extensions,
}

/// The running pipelines by name: the registry every part of the engine reaches pipelines by
/// (`route`, the outbox relay, the API, the cluster's tickets). A reload changes it while the
/// engine runs, so holders look a pipeline up when they need it instead of keeping a copy.
#[derive(Clone, Default)]
pub struct Router {
    inner: Arc<RwLock<Option<BTreeMap<String, PipelineHandle>>>>,
}

impl Router {
    /// The running version of a pipeline.
    pub fn get(&self, name: &str) -> Option<PipelineHandle> {
        self.read().as_ref().and_then(|m| m.get(name).cloned())
    }

    /// Every pipeline as it is now, once the engine has built them.
    pub fn pipelines(&self) -> Option<BTreeMap<String, PipelineHandle>> {
        self.read().clone()
    }

    /// Every pipeline as it is now (none before the engine has built them).
    pub fn snapshot(&self) -> BTreeMap<String, PipelineHandle> {
        self.pipelines().unwrap_or_default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Option<BTreeMap<String, PipelineHandle>>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Option<BTreeMap<String, PipelineHandle>>> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, pipelines: BTreeMap<String, PipelineHandle>) {
        *self.write() = Some(pipelines);
    }

    fn insert(&self, handle: PipelineHandle) {
        self.write()
            .get_or_insert_default()
            .insert(handle.name().to_owned(), handle);
    }

    fn remove(&self, name: &str) {
        if let Some(m) = self.write().as_mut() {
            m.remove(name);
        }
    }

    fn clear(&self) {
        if let Some(m) = self.write().as_mut() {
            m.clear();
        }
    }
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("security: {0}")]
    Security(String),
    #[error("{0}")]
    Extension(String),
    #[error("{0}")]
    Cluster(String),
    #[error("{0}")]
    Workflow(String),
    /// `telemetry:` (or the `OTEL_*` environment) names no usable collector.
    #[error("{0}")]
    Telemetry(String),
    #[error("pipeline {pipeline} ({file}): {message}")]
    Build {
        pipeline: String,
        file: String,
        message: String,
    },
    /// A source could not start (a port in use): the engine does not run without it.
    #[error("pipeline {pipeline} ({file}): source {describe} cannot start: {message}")]
    Source {
        pipeline: String,
        file: String,
        /// The source as `/api/pipelines` shows it (`mllp 127.0.0.1:2575`).
        describe: String,
        message: String,
    },
}

/// A version that could not be built, or whose source could not start, as the engine's error.
fn start_error(e: fleet::StartError) -> EngineError {
    match e.source {
        Some(describe) => EngineError::Source {
            pipeline: e.pipeline,
            file: e.file,
            describe,
            message: e.message,
        },
        None => EngineError::Build {
            pipeline: e.pipeline,
            file: e.file,
            message: e.message,
        },
    }
}

/// A running engine: the store, the journal writer, every pipeline, the scheduler.
pub struct Engine {
    pub store: Store,
    pub journal: Journal,
    pub metrics: Arc<Metrics>,
    pub ingress: HttpIngress,
    /// Engine-wide services (the plugin registry).
    pub extensions: crate::extensions::Extensions,
    /// This process as a cluster node (`queue: amqp://…`); `None` with the local queue.
    pub cluster: Option<crate::cluster::Node>,
    router: Router,
    fleet: Arc<fleet::Fleet>,
    shutdown: CancellationToken,
    workers: TaskTracker,
    sources: TaskTracker,
    wake: Arc<Notify>,
    taps: tap::Taps,
    /// The OTLP exporter when traces are on; flushed at shutdown.
    telemetry: Option<crate::telemetry::Telemetry>,
}

/// How an engine starts: [`Engine::start_with`].
#[derive(Clone)]
pub struct EngineOptions {
    /// The consultation workflow's time (a [`crate::clock::FakeClock`] in tests).
    pub clock: Arc<dyn crate::clock::Clock>,
    /// Start the sources (listeners, pollers). Without them messages enter only by
    /// [`PipelineHandle::submit`] (`huizhen test`).
    pub sources: bool,
    /// Sinks are not called; taps see what they would have got.
    pub dry_run: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            clock: Arc::new(crate::clock::SystemClock),
            sources: true,
            dry_run: false,
        }
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field(
                "pipelines",
                &self.router.snapshot().keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Engine {
    /// Opens the store (running migrations), builds every pipeline, recovers messages a previous
    /// run left in flight, and starts workers, sources and the scheduler.
    pub async fn start(loaded: Loaded) -> Result<Engine, EngineError> {
        Engine::start_with_clock(loaded, Arc::new(crate::clock::SystemClock)).await
    }

    /// [`Engine::start`] with the consultation workflow's time taken from `clock` (a
    /// [`crate::clock::FakeClock`] in tests that drive SLA deadlines).
    pub async fn start_with_clock(
        loaded: Loaded,
        clock: Arc<dyn crate::clock::Clock>,
    ) -> Result<Engine, EngineError> {
        Engine::start_with(
            loaded,
            EngineOptions {
                clock,
                ..EngineOptions::default()
            },
        )
        .await
    }

    /// [`Engine::start`] with its [`EngineOptions`].
    pub async fn start_with(loaded: Loaded, options: EngineOptions) -> Result<Engine, EngineError> {
        let clock = options.clock.clone();
        let root = &loaded.root;
        let store = Store::open(&StoreOptions {
            url: root.store.url.clone(),
            durability: root.store.durability,
            max_connections: root.store.max_connections,
            sqlite_cache: root.store.sqlite_cache,
        })
        .await?;
        store.migrate().await?;
        let keyring = crate::crypto::Keyring::from_config(&root.security.encryption)
            .map_err(EngineError::Security)?;
        // The audit key and checkpoint file that anchor the audit chain outside the database.
        let anchor = crate::store::anchor::AuditAnchor::open(
            &root.security.audit,
            &root.cluster.node_id(),
            true,
        )
        .map_err(EngineError::Security)?;
        let store = store
            .with_keyring(keyring)
            .with_audit_anchor(Some(Arc::new(anchor)))
            .with_clock(clock)
            .with_consultation_outbound(crate::store::consultations::OutboundSettings {
                pipeline: root
                    .workflow
                    .consultations
                    .outbound_pipeline
                    .as_deref()
                    .map(|p| p.trim().to_owned()),
                utc_offset_minutes: root.workflow.matching.utc_offset_minutes,
            });
        let journal = Journal::start(
            store.clone(),
            JournalOptions {
                max_batch: root.journal.max_batch,
                ..JournalOptions::default()
            },
        );
        let metrics = Arc::new(Metrics::new());
        // Traces (off unless a collector is named); a dry run (`huizhen test`) sends none.
        let telemetry = if options.dry_run {
            None
        } else {
            crate::telemetry::Telemetry::start(&root.telemetry).map_err(EngineError::Telemetry)?
        };
        let router = Router::default();
        let shutdown = CancellationToken::new();
        let workers = TaskTracker::new();
        let ingress = HttpIngress::default();
        let extensions = crate::extensions::Extensions::new(&root.plugins);
        if options.dry_run {
            extensions.set_dry_run();
        }
        extensions.start_hooks().map_err(EngineError::Extension)?;
        // Steps that keep state of their own (`match_patient`) find the store here when they run.
        let _ = extensions.get_or_try_init(|| Ok::<_, std::convert::Infallible>(store.clone()));
        // The call's configuration, for the SFU of `huizhen-media` (and the room-token API).
        root.media.check().map_err(EngineError::Extension)?;
        let _ =
            extensions.get_or_try_init(|| Ok::<_, std::convert::Infallible>(root.media.clone()));
        // The object store (recordings), sealed with the same data keys as the journal.
        let objects_dir = root.objects.dir.clone();
        let objects_keys = store.keyring().cloned();
        extensions
            .get_or_try_init(|| {
                crate::objects::ObjectStore::open(&objects_dir, objects_keys)
                    .map_err(|e| format!("objects.dir {}: {e}", objects_dir.display()))
            })
            .map_err(EngineError::Extension)?;
        // The consultation workflow: the API, the `consultation_create` step and the sweep.
        let workflow = extensions
            .get_or_try_init(|| {
                crate::workflow::Workflow::new(
                    store.clone(),
                    root.workflow.clone(),
                    extensions.clone(),
                )
                .map(|w| w.with_stop(shutdown.clone()).with_router(router.clone()))
            })
            .map_err(EngineError::Extension)?;
        // The care workflow's settings, for its API and jobs. Prescribers' signatures are
        // verified against the same roots as the experts' opinions (CN-21).
        let care = extensions
            .get_or_try_init(|| crate::care::Care::from_config(&root.workflow))
            .map_err(EngineError::Workflow)?;
        // Billing (issue 19): the saga runner, for the API, the `settle` step and the resume loop.
        let billing = match &root.billing {
            Some(cfg) => {
                let base = loaded
                    .root_file
                    .as_deref()
                    .and_then(std::path::Path::parent);
                let mut settings = cfg
                    .load(base)
                    .map_err(|p| EngineError::Workflow(p.join("; ")))?;
                cfg.resolve_coverage_plugin(&mut settings, &extensions)
                    .map_err(EngineError::Workflow)?;
                let node = root.cluster.node_id();
                let made = extensions.get_or_try_init(|| {
                    Ok::<_, std::convert::Infallible>(crate::billing::Billing::new(
                        store.clone(),
                        settings,
                        &node,
                    ))
                });
                match made {
                    Ok(b) => Some(b),
                    Err(never) => match never {},
                }
            }
            None => None,
        };
        if let Some(path) = &root.workflow.signing_roots {
            let verifier = huizhen_signing::ChainVerifier::from_pem_file(path).map_err(|e| {
                EngineError::Workflow(format!("workflow.signing_roots: {}: {e}", path.display()))
            })?;
            let _ = extensions.get_or_try_init(|| {
                Ok::<_, std::convert::Infallible>(crate::care::PrescriptionSignatures(Arc::new(
                    verifier,
                )))
            });
        }
        // Scale-out: the broker the pipelines dispatch through, and this node's name.
        let specs: Vec<QueueSpec> = loaded
            .pipelines
            .iter()
            .map(|lp| QueueSpec {
                pipeline: lp.config.name.value.clone(),
                partitions: if lp.config.ordering_key.is_some() {
                    lp.config.concurrency.max(1) as u32
                } else {
                    0
                },
                prefetch: u16::try_from(lp.config.concurrency.max(1)).unwrap_or(u16::MAX),
            })
            .collect();
        let remote = if crate::cluster::is_local(&root.queue) {
            None
        } else {
            root.cluster.check().map_err(EngineError::Cluster)?;
            if store.backend() == crate::store::Backend::Sqlite {
                tracing::warn!(
                    "queue is a broker but the store is SQLite: only processes on this machine can share it; use PostgreSQL to scale out across machines"
                );
            }
            let queue = crate::cluster::work_queue(&root.queue, &root.cluster, &specs)
                .map_err(EngineError::Cluster)?
                .ok_or_else(|| EngineError::Cluster("queue: no broker".into()))?;
            Some(Remote {
                queue,
                node: root.cluster.node_id().into(),
                dead_after: root.cluster.dead_after,
            })
        };
        // The globs and texts a reload reads again (the files as they are now).
        let base = loaded
            .root_file
            .as_ref()
            .and_then(|f| f.parent().map(std::path::Path::to_path_buf))
            .unwrap_or_default();
        let mut texts = BTreeMap::new();
        for lp in &loaded.pipelines {
            if !texts.contains_key(&lp.file)
                && let Ok(t) = std::fs::read_to_string(&lp.file)
            {
                texts.insert(lp.file.clone(), t);
            }
        }
        // A pipeline's fingerprint: its text (its document in its file) as loaded now.
        let mut per_file: BTreeMap<std::path::PathBuf, Vec<String>> = BTreeMap::new();
        for lp in &loaded.pipelines {
            if let Some(t) = texts.get(&lp.file) {
                let n = loaded
                    .pipelines
                    .iter()
                    .filter(|p| p.file == lp.file)
                    .count();
                per_file
                    .entry(lp.file.clone())
                    .or_insert_with(|| reload::fingerprints(&lp.file, t, n));
            }
        }
        let mut seen: BTreeMap<std::path::PathBuf, usize> = BTreeMap::new();
        let fingerprints: Vec<String> = loaded
            .pipelines
            .iter()
            .map(|lp| {
                let i = seen.entry(lp.file.clone()).or_default();
                *i += 1;
                per_file
                    .get(&lp.file)
                    .and_then(|f| f.get(*i - 1).cloned())
                    .unwrap_or_default()
            })
            .collect();
        let reload_state = reload::ReloadState {
            globs: root
                .pipelines
                .iter()
                .map(|g| base.join(g).to_string_lossy().into_owned())
                .collect(),
            texts,
            root_file: loaded
                .root_file
                .clone()
                .unwrap_or_else(|| "huizhen.yaml".into()),
            workflow: root.workflow.clone(),
            billing_outbound: root
                .billing
                .as_ref()
                .and_then(|b| b.outbound_pipeline.clone()),
            cluster: remote.is_some(),
        };
        let sources = TaskTracker::new();
        let taps = tap::Taps::default();
        let fleet = Arc::new(fleet::Fleet::new(
            pipeline::Wiring {
                journal: journal.clone(),
                metrics: metrics.clone(),
                shutdown: shutdown.clone(),
                remote: remote.clone(),
                router: router.clone(),
                taps: taps.clone(),
                dry_run: options.dry_run,
                telemetry: telemetry.as_ref().map(crate::telemetry::Telemetry::tracer),
            },
            store.clone(),
            extensions.clone(),
            ingress.clone(),
            root.journal.scheduler_poll,
            workers.clone(),
            sources.clone(),
            reload_state,
        ));
        let mut built = Vec::new();
        let mut pipelines = BTreeMap::new();
        for (lp, fingerprint) in loaded.pipelines.iter().zip(fingerprints) {
            let mut b = match fleet.build(lp, fingerprint) {
                Ok(b) => b,
                Err(e) => {
                    shutdown.cancel();
                    return Err(start_error(e));
                }
            };
            fleet.spawn_workers(&mut b);
            pipelines.insert(b.handle.name().to_owned(), b.handle.clone());
            built.push(b);
        }
        router.set(pipelines.clone());
        let mut unknown = root
            .workflow
            .unknown_outbound_pipelines(pipelines.keys().map(String::as_str));
        unknown.extend(
            root.billing
                .as_ref()
                .and_then(|b| b.unknown_outbound_pipeline(pipelines.keys().map(String::as_str))),
        );
        if !unknown.is_empty() {
            shutdown.cancel();
            return Err(EngineError::Workflow(unknown.join("; ")));
        }

        let mut cluster = None;
        if let Some(r) = &remote {
            // Other nodes may be running: only what no live node answers for is taken over.
            let c = crate::cluster::Node::join(
                store.clone(),
                r.clone(),
                &root.queue,
                &root.cluster,
                router.clone(),
                shutdown.clone(),
                &workers,
            )
            .await;
            match c {
                Ok(c) => cluster = Some(c),
                Err(e) => {
                    shutdown.cancel();
                    return Err(e);
                }
            }
        } else {
            let recovered = match store.recover_in_flight().await {
                Ok(n) => n,
                Err(e) => {
                    shutdown.cancel();
                    return Err(e.into());
                }
            };
            if recovered > 0 {
                tracing::info!(
                    recovered,
                    "messages left in flight by the previous run will be processed again"
                );
            }
        }
        let wake = Arc::new(Notify::new());
        workers.spawn(store.clone().run_checkpointer(shutdown.clone()));
        // The SLA sweep; its first run fires the timers that fell due while the engine was down.
        workers.spawn(workflow.clone().run(shutdown.clone()));
        for b in &built {
            fleet.feed(b);
        }
        // A dry run opens settlements in its own store but never calls the insurer.
        if let Some(b) = billing.as_ref().filter(|_| !options.dry_run) {
            workers.spawn(b.clone().run(shutdown.clone()));
        }
        workers.spawn(crate::care::jobs::run(
            store.clone(),
            care.clone(),
            router.clone(),
            billing
                .as_ref()
                .is_some_and(|b| b.settings().outbound_pipeline.is_some()),
            shutdown.clone(),
        ));
        let disk = DiskFloor {
            path: crate::store::sqlite_path(&loaded.root.store.url),
            min_free_percent: loaded.root.journal.min_free_disk_percent,
        };
        // The first count before any source starts: a backlog a previous run left over its
        // limit refuses from the first message, and no message accepted meanwhile is missing
        // from the count or counted twice.
        count_backlogs(&store, &router, &disk).await;
        workers.spawn(housekeeping(
            store.clone(),
            router.clone(),
            wake.clone(),
            shutdown.clone(),
            disk,
        ));

        // Every source starts (a listener binds its port) before the engine says it started: a
        // source that cannot start stops the start with the pipeline, the source and the cause.
        for b in built {
            if !options.sources {
                continue;
            }
            if let Err(e) = fleet.start_source(b).await {
                shutdown.cancel();
                return Err(start_error(e));
            }
        }
        tracing::info!(pipelines = pipelines.len(), backend = ?store.backend(), "engine started");
        Ok(Engine {
            store,
            journal,
            metrics,
            ingress,
            extensions,
            cluster,
            router,
            fleet,
            shutdown,
            workers,
            sources,
            wake,
            taps,
            telemetry,
        })
    }

    /// The engine's taps: open one to watch messages pass (see [`tap`]).
    pub fn taps(&self) -> &tap::Taps {
        &self.taps
    }

    /// The consultation workflow service.
    pub fn workflow(&self) -> Arc<crate::workflow::Workflow> {
        self.extensions
            .get::<crate::workflow::Workflow>()
            .expect("Engine::start puts the workflow into the extensions")
    }

    /// The running pipelines, as they are now (a reload may change them).
    pub fn pipelines(&self) -> BTreeMap<String, PipelineHandle> {
        self.router.snapshot()
    }

    /// The running version of a pipeline.
    pub fn pipeline(&self, name: &str) -> Option<PipelineHandle> {
        self.router.get(name)
    }

    /// The registry of running pipelines.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Reloads the pipeline files (`huizhen reload`, SIGHUP): see [`Reloader`].
    pub async fn reload(&self) -> ReloadReport {
        self.reloader().reload().await
    }

    /// What reloads the pipelines, for the HTTP API and the signal handler.
    pub fn reloader(&self) -> Reloader {
        Reloader(self.fleet.clone())
    }

    /// Wakes the feeders (after a reprocess request) instead of waiting for their next poll.
    pub fn wake_scheduler(&self) {
        self.wake.notify_one();
    }

    pub fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// A token cancelled when the engine shuts down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// What the HTTP handlers need.
    pub fn app_state(&self) -> crate::http::AppState {
        crate::http::AppState {
            store: self.store.clone(),
            pipelines: self.router.clone(),
            reloader: self.reloader(),
            metrics: self.metrics.clone(),
            ingress: self.ingress.clone(),
            wake: self.wake.clone(),
            extensions: self.extensions.clone(),
            cluster: self.cluster.clone(),
            taps: self.taps.clone(),
            shutdown: self.shutdown.clone(),
        }
    }

    /// Stops sources, lets workers finish the message they are on (the rest stay in the journal
    /// and are recovered on the next start), then waits for the journal writer.
    pub async fn shutdown(self, grace: Duration) {
        self.shutdown.cancel();
        self.sources.close();
        self.workers.close();
        let _ = tokio::time::timeout(grace, self.sources.wait()).await;
        if tokio::time::timeout(grace, self.workers.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "workers did not finish within {grace:?}; their messages stay in the journal"
            );
        }
        if let Some(c) = &self.cluster {
            c.leave().await;
        }
        self.router.clear();
        self.fleet.clear();
        drop(self.fleet);
        drop(self.journal);
        // The last checkpoint: everything audited up to the shutdown is anchored.
        if let Err(e) = self.store.checkpoint_audit().await {
            tracing::warn!(error = %e, "no audit checkpoint at shutdown");
        }
        self.store.close().await;
        // The spans of the last messages, before the process ends.
        if let Some(t) = self.telemetry {
            t.shutdown(Duration::from_secs(5)).await;
        }
        tracing::info!("engine stopped");
    }
}

/// Reloads the pipeline files of a running engine: every file is validated first, only changed
/// pipelines restart, a refused file leaves its pipelines on their running version (see
/// `runner/reload.rs`). Reloads run one at a time, each to its end even if the caller goes away.
#[derive(Clone)]
pub struct Reloader(Arc<fleet::Fleet>);

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reloader")
    }
}

impl Reloader {
    /// Reloads, then writes `who` (the caller's audit event: actor, role, source) to the audit
    /// trail as `pipeline.reload` with the outcome and the report's summary. Both run in a task
    /// of their own, so the reload is audited even if the caller goes away (a timed-out
    /// request). An error: the audit event could not be written (the reload happened).
    pub async fn reload_audited(
        &self,
        mut who: crate::store::audit::AuditEvent,
    ) -> Result<ReloadReport, StoreError> {
        let fleet = self.0.clone();
        let task = tokio::spawn(async move {
            let report = fleet.reload().await;
            who.action = "pipeline.reload".into();
            who.resource_type = "Pipelines".into();
            who.outcome = if report.ok() { "success" } else { "failure" }.into();
            who.detail = report.summary();
            let audited = fleet.store.audit(&who).await.map(|_| ());
            if let Err(e) = &audited {
                tracing::error!(error = %e, "the reload's audit event was not written");
            }
            (report, audited)
        });
        match task.await {
            Ok((report, audited)) => audited.map(|()| report),
            Err(e) => {
                tracing::error!(error = %e, "the reload task failed");
                Ok(ReloadReport {
                    failed: vec![FailedPipeline {
                        pipeline: String::new(),
                        error: format!("the reload task failed: {e}"),
                    }],
                    ..ReloadReport::default()
                })
            }
        }
    }

    /// Reloads without an audit event of its own (tests; the engine's callers use
    /// [`Reloader::reload_audited`]).
    pub async fn reload(&self) -> ReloadReport {
        let fleet = self.0.clone();
        match tokio::spawn(async move { fleet.reload().await }).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "the reload task failed");
                ReloadReport {
                    failed: vec![FailedPipeline {
                        pipeline: String::new(),
                        error: format!("the reload task failed: {e}"),
                    }],
                    ..ReloadReport::default()
                }
            }
        }
    }
}

/// The journal's free-space floor (SQLite only: a PostgreSQL server's disk is not ours to see).
struct DiskFloor {
    path: Option<std::path::PathBuf>,
    min_free_percent: f64,
}

impl DiskFloor {
    /// Why intake must stop, when the journal's disk is below the floor.
    fn low(&self) -> Option<String> {
        #[cfg(unix)]
        {
            let file = self.path.as_ref()?;
            let dir = file
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let st = rustix::fs::statvfs(dir).ok()?;
            if st.f_blocks == 0 {
                return None;
            }
            let free = st.f_bavail as f64 * 100.0 / st.f_blocks as f64;
            (free < self.min_free_percent).then(|| {
                format!(
                    "the journal's disk ({}) has {free:.1}% free, below journal.min_free_disk_percent ({}%)",
                    dir.display(),
                    self.min_free_percent
                )
            })
        }
        #[cfg(not(unix))]
        {
            let _ = (&self.path, self.min_free_percent);
            None
        }
    }
}

/// Counts each pipeline's backlog in the journal for its `backlog_limit` (and checks the
/// disk's free-space floor).
async fn count_backlogs(store: &Store, router: &Router, disk: &DiskFloor) {
    let pipelines = router.snapshot();
    let names: Vec<String> = pipelines.keys().cloned().collect();
    let low = disk.low();
    // What each pipeline had accepted when the count began: the count includes those, not
    // (all of) the ones accepted while it runs, which stay on top of it until the next count.
    let marks: Vec<(&PipelineHandle, i64)> =
        pipelines.values().map(|p| (p, p.backlog_mark())).collect();
    match store.backlog_of(&names).await {
        Ok(rows) => {
            for (p, mark) in marks {
                let n = rows
                    .iter()
                    .find(|r| r.pipeline == p.name())
                    .map_or(0, |r| r.messages);
                p.sync_backlog(n, low.clone(), mark);
            }
        }
        Err(e) => tracing::warn!(error = %e, "backlog not counted"),
    }
}

/// Passes a wake-up (a reprocess request) on to every pipeline's feeder, counts each
/// pipeline's backlog for its `backlog_limit` every 2 s, and forgets expired dedup keys once a
/// minute. The feeders themselves (`PipelineHandle::feeder`) hand due messages to the workers.
async fn housekeeping(
    store: Store,
    router: Router,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    disk: DiskFloor,
) {
    let mut last_expiry = std::time::Instant::now() - Duration::from_secs(3600);
    // The engine counted once before its sources started.
    let mut last_count = std::time::Instant::now();
    loop {
        // The pipelines as they are now: a reload may have replaced some.
        let pipelines = router.snapshot();
        if last_count.elapsed() >= Duration::from_secs(2) {
            last_count = std::time::Instant::now();
            count_backlogs(&store, &router, &disk).await;
        }
        if last_expiry.elapsed() > Duration::from_secs(60) {
            last_expiry = std::time::Instant::now();
            for p in pipelines.values() {
                let window = p.dedup_window().as_millis() as i64;
                if let Err(e) = store.expire_dedup_keys(p.name(), window).await {
                    tracing::warn!(error = %e, pipeline = p.name(), "dedup key expiry failed");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => {
                for p in pipelines.values() {
                    p.wake_feeder();
                }
            }
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}
