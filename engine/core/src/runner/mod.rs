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
pub mod match_alerts;
mod metrics;
mod pipeline;
mod process_metrics;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use metrics::Metrics;
pub(crate) use pipeline::Remote;
pub use pipeline::{ConnectionGuard, PipelineHandle, PipelineInfo, SubmitError};

use crate::cluster::QueueSpec;
use crate::config::Loaded;
use crate::http::HttpIngress;
use crate::sources::SourceContext;
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

/// Late-bound access to the running pipelines by name.
#[derive(Clone, Default)]
pub struct Router {
    inner: Arc<OnceLock<BTreeMap<String, PipelineHandle>>>,
}

impl Router {
    pub fn get(&self, name: &str) -> Option<PipelineHandle> {
        self.inner.get().and_then(|m| m.get(name).cloned())
    }

    /// Every pipeline, once the engine has built them.
    pub fn pipelines(&self) -> Option<&BTreeMap<String, PipelineHandle>> {
        self.inner.get()
    }

    fn set(&self, pipelines: BTreeMap<String, PipelineHandle>) {
        let _ = self.inner.set(pipelines);
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
    #[error("pipeline {pipeline} ({file}): {message}")]
    Build {
        pipeline: String,
        file: String,
        message: String,
    },
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
    pipelines: BTreeMap<String, PipelineHandle>,
    shutdown: CancellationToken,
    workers: TaskTracker,
    sources: TaskTracker,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("pipelines", &self.pipelines.keys().collect::<Vec<_>>())
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
        let router = Router::default();
        let shutdown = CancellationToken::new();
        let workers = TaskTracker::new();
        let ingress = HttpIngress::default();
        let extensions = crate::extensions::Extensions::new(&root.plugins);
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
        let mut pipelines = BTreeMap::new();
        let mut built = Vec::new();
        for lp in loaded.pipelines {
            let name = lp.config.name.value.clone();
            let ctx = BuildContext {
                pipeline: name.clone(),
                facility: lp.config.facility.clone(),
                router: router.clone(),
                extensions: extensions.clone(),
            };
            let file = lp.file.display().to_string();
            let err = |message: String| EngineError::Build {
                pipeline: name.clone(),
                file: file.clone(),
                message,
            };
            let source = lp.config.source.value.build(&ctx).map_err(&err)?;
            let mut steps = Vec::new();
            for (i, s) in lp.config.steps.iter().enumerate() {
                let step = s
                    .value
                    .build(&ctx)
                    .map_err(|e| err(format!("steps[{i}]: {e}")))?;
                let label = format!("{}#{i}", s.value.type_name());
                steps.push((label, step));
            }
            let mut sinks = Vec::new();
            for (i, s) in lp.config.sinks.iter().enumerate() {
                sinks.push(
                    s.value
                        .build(&ctx, i)
                        .map_err(|e| err(format!("sinks[{i}]: {e}")))?,
                );
            }
            let (handle, receivers) = PipelineHandle::new(
                &lp.config,
                source.describe(),
                steps,
                sinks,
                journal.clone(),
                metrics.clone(),
                shutdown.clone(),
                remote.clone(),
            );
            pipeline::spawn_workers(&workers, &handle, receivers, shutdown.clone());
            pipelines.insert(name, handle.clone());
            built.push((handle, source));
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
                pipelines.clone(),
                shutdown.clone(),
                &workers,
            )
            .await?;
            cluster = Some(c);
        } else {
            let recovered = store.recover_in_flight().await?;
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
        for p in pipelines.values() {
            workers.spawn(p.clone().feeder(loaded.root.journal.scheduler_poll));
        }
        if let Some(b) = &billing {
            workers.spawn(b.clone().run(shutdown.clone()));
        }
        workers.spawn(crate::care::jobs::run(
            store.clone(),
            care.clone(),
            pipelines.clone(),
            billing
                .as_ref()
                .is_some_and(|b| b.settings().outbound_pipeline.is_some()),
            shutdown.clone(),
        ));
        workers.spawn(housekeeping(
            store.clone(),
            pipelines.clone(),
            wake.clone(),
            shutdown.clone(),
            DiskFloor {
                path: crate::store::sqlite_path(&loaded.root.store.url),
                min_free_percent: loaded.root.journal.min_free_disk_percent,
            },
        ));

        let sources = TaskTracker::new();
        for (handle, source) in built {
            let ctx = SourceContext {
                pipeline: handle.clone(),
                shutdown: shutdown.clone(),
                ingress: ingress.clone(),
            };
            handle.init_source(source.as_ref());
            handle.set_running(true, None);
            sources.spawn(async move {
                let result = source.run(ctx).await;
                match result {
                    Ok(()) => handle.set_running(false, None),
                    Err(e) => {
                        tracing::error!(pipeline = handle.name(), error = %e, "source stopped");
                        handle.set_running(false, Some(e));
                    }
                }
            });
        }
        tracing::info!(pipelines = pipelines.len(), backend = ?store.backend(), "engine started");
        Ok(Engine {
            store,
            journal,
            metrics,
            ingress,
            extensions,
            cluster,
            pipelines,
            shutdown,
            workers,
            sources,
            wake,
        })
    }

    /// The consultation workflow service.
    pub fn workflow(&self) -> Arc<crate::workflow::Workflow> {
        self.extensions
            .get::<crate::workflow::Workflow>()
            .expect("Engine::start puts the workflow into the extensions")
    }

    pub fn pipelines(&self) -> &BTreeMap<String, PipelineHandle> {
        &self.pipelines
    }

    pub fn pipeline(&self, name: &str) -> Option<&PipelineHandle> {
        self.pipelines.get(name)
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
            pipelines: self.pipelines.clone(),
            metrics: self.metrics.clone(),
            ingress: self.ingress.clone(),
            wake: self.wake.clone(),
            extensions: self.extensions.clone(),
            cluster: self.cluster.clone(),
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
        drop(self.pipelines);
        drop(self.journal);
        // The last checkpoint: everything audited up to the shutdown is anchored.
        if let Err(e) = self.store.checkpoint_audit().await {
            tracing::warn!(error = %e, "no audit checkpoint at shutdown");
        }
        self.store.close().await;
        tracing::info!("engine stopped");
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

/// Passes a wake-up (a reprocess request) on to every pipeline's feeder, counts each
/// pipeline's backlog for its `backlog_limit` every 2 s, and forgets expired dedup keys once a
/// minute. The feeders themselves (`PipelineHandle::feeder`) hand due messages to the workers.
async fn housekeeping(
    store: Store,
    pipelines: BTreeMap<String, PipelineHandle>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    disk: DiskFloor,
) {
    let mut last_expiry = std::time::Instant::now() - Duration::from_secs(3600);
    let mut last_count = std::time::Instant::now() - Duration::from_secs(3600);
    let names: Vec<String> = pipelines.keys().cloned().collect();
    loop {
        if last_count.elapsed() >= Duration::from_secs(2) {
            last_count = std::time::Instant::now();
            let low = disk.low();
            match store.backlog_of(&names).await {
                Ok(rows) => {
                    for p in pipelines.values() {
                        let n = rows
                            .iter()
                            .find(|r| r.pipeline == p.name())
                            .map_or(0, |r| r.messages);
                        p.sync_backlog(n, low.clone());
                    }
                }
                Err(e) => tracing::warn!(error = %e, "backlog not counted"),
            }
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
