//! The running pipelines: the registry ([`Router`]), each version's tasks, and how a version
//! is built, started and stopped. [`crate::Engine::start`] starts every pipeline through it; a
//! reload (`reload.rs`) adds, replaces and removes versions through it while the others run on.
//!
//! A version's life: `build` (no I/O: source, steps and sinks from its config) → `spawn_workers`
//! (idle until messages reach memory) → `feed` (its feeder takes up what the journal holds for
//! the pipeline) → `start_source` (the source opens what it needs, a listener binds its port;
//! a failure is returned, never left running half-started). `stop` cancels the version's token
//! and waits for its source, then for its workers (each finishes the message it is on and waits
//! for that `done` to commit).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use super::pipeline::{Receivers, Wiring, spawn_workers};
use super::{BuildContext, PipelineHandle};
use crate::config::LoadedPipeline;
use crate::http::HttpIngress;
use crate::sources::{Source, SourceContext};
use crate::store::Store;

/// Where a version's tasks run: on the engine's tracker (which shutdown waits for) and on the
/// version's own (which a reload waits for).
pub(crate) struct Tasks {
    engine: TaskTracker,
    own: TaskTracker,
}

impl Tasks {
    pub(crate) fn spawn<F>(&self, f: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.engine.spawn(self.own.track_future(f));
    }
}

/// A version as built: its handle (not yet registered), its workers' queues, its source.
pub(super) struct Built {
    pub handle: PipelineHandle,
    receivers: Option<Receivers>,
    source: Option<Box<dyn Source>>,
    /// What `/api/pipelines` shows of the source (`mllp 127.0.0.1:2575`).
    pub describe: String,
    /// The pipeline's text as loaded (file and document): unchanged text, unchanged pipeline.
    pub fingerprint: String,
    tasks: Tasks,
    sources: Tasks,
}

/// Why a version could not be built or started.
#[derive(Debug)]
pub(super) struct StartError {
    pub pipeline: String,
    pub file: String,
    /// The source's description, when it is the source that could not start.
    pub source: Option<String>,
    pub message: String,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Some(s) => write!(
                f,
                "pipeline {} ({}): source {s} cannot start: {}",
                self.pipeline, self.file, self.message
            ),
            None => write!(
                f,
                "pipeline {} ({}): {}",
                self.pipeline, self.file, self.message
            ),
        }
    }
}

/// A running version's tasks, kept to stop it.
struct Running {
    handle: PipelineHandle,
    fingerprint: String,
    tasks: TaskTracker,
    sources: TaskTracker,
}

/// The engine's pipelines and what starting one needs.
pub(crate) struct Fleet {
    pub(super) wiring: Wiring,
    pub(super) store: Store,
    pub(super) extensions: crate::extensions::Extensions,
    ingress: HttpIngress,
    poll: Duration,
    workers: TaskTracker,
    source_tasks: TaskTracker,
    running: Mutex<BTreeMap<String, Running>>,
    /// What a reload reads: the pipeline globs, the texts the running versions came from, the
    /// root's checks. Held across a whole reload, so reloads run one at a time.
    pub(super) reload: tokio::sync::Mutex<super::reload::ReloadState>,
}

impl Fleet {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        wiring: Wiring,
        store: Store,
        extensions: crate::extensions::Extensions,
        ingress: HttpIngress,
        poll: Duration,
        workers: TaskTracker,
        source_tasks: TaskTracker,
        reload: super::reload::ReloadState,
    ) -> Fleet {
        Fleet {
            wiring,
            store,
            extensions,
            ingress,
            poll,
            workers,
            source_tasks,
            running: Mutex::default(),
            reload: tokio::sync::Mutex::new(reload),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The fingerprint of the running version of `name`.
    pub(super) fn fingerprint(&self, name: &str) -> Option<String> {
        self.running().get(name).map(|r| r.fingerprint.clone())
    }

    /// Builds a version of a pipeline (no I/O) with a stop token of its own under the engine's.
    pub(super) fn build(
        &self,
        lp: &LoadedPipeline,
        fingerprint: String,
    ) -> Result<Built, StartError> {
        let name = lp.config.name.value.clone();
        let file = lp.file.display().to_string();
        let err = |message: String| StartError {
            pipeline: name.clone(),
            file: file.clone(),
            source: None,
            message,
        };
        let ctx = BuildContext {
            pipeline: name.clone(),
            facility: lp.config.facility.clone(),
            router: self.wiring.router.clone(),
            extensions: self.extensions.clone(),
        };
        let source = lp
            .config
            .source
            .value
            .build(&ctx)
            .map_err(|e| err(format!("source: {e}")))?;
        let mut steps = Vec::new();
        for (i, s) in lp.config.steps.iter().enumerate() {
            let step = s
                .value
                .build(&ctx)
                .map_err(|e| err(format!("steps[{i}]: {e}")))?;
            steps.push((format!("{}#{i}", s.value.type_name()), step));
        }
        let mut sinks = Vec::new();
        for (i, s) in lp.config.sinks.iter().enumerate() {
            sinks.push(
                s.value
                    .build(&ctx, i)
                    .map_err(|e| err(format!("sinks[{i}]: {e}")))?,
            );
        }
        let describe = source.describe();
        let stop = self.wiring.shutdown.child_token();
        let (handle, receivers) = PipelineHandle::new(
            &lp.config,
            describe.clone(),
            steps,
            sinks,
            &self.wiring,
            stop,
            file,
        );
        Ok(Built {
            handle,
            receivers: Some(receivers),
            source: Some(source),
            describe,
            fingerprint,
            tasks: Tasks {
                engine: self.workers.clone(),
                own: TaskTracker::new(),
            },
            sources: Tasks {
                engine: self.source_tasks.clone(),
                own: TaskTracker::new(),
            },
        })
    }

    /// Starts the version's workers (idle until its feeder or a submit gives them work).
    pub(super) fn spawn_workers(&self, b: &mut Built) {
        if let Some(r) = b.receivers.take() {
            spawn_workers(&b.tasks, &b.handle, r);
        }
    }

    /// Starts the version's feeder: it takes up what the journal holds for the pipeline.
    pub(super) fn feed(&self, b: &Built) {
        b.tasks.spawn(b.handle.clone().feeder(self.poll));
    }

    /// Starts the version's source and records the version as running. A source that cannot
    /// start is an error naming the pipeline, the source and the cause; the version is then
    /// recorded as not running (so /ready, /api/pipelines and `huizhen_source_up` say why).
    pub(super) async fn start_source(&self, mut b: Built) -> Result<(), StartError> {
        let handle = b.handle.clone();
        let ctx = SourceContext {
            pipeline: handle.clone(),
            shutdown: handle.stop_token(),
            ingress: self.ingress.clone(),
        };
        let started = match b.source.take() {
            Some(source) => {
                handle.init_source(source.as_ref());
                source.start(ctx).await
            }
            None => Err("the source was started already".to_owned()),
        };
        let result = match started {
            Ok(running) => {
                handle.set_running(true, None);
                let h = handle.clone();
                b.sources.spawn(async move {
                    match running.await {
                        Ok(()) => h.set_running(false, None),
                        Err(e) => {
                            tracing::error!(pipeline = h.name(), error = %e, "source stopped");
                            h.set_running(false, Some(e));
                        }
                    }
                });
                Ok(())
            }
            Err(message) => {
                handle.set_running(false, Some(format!("cannot start: {message}")));
                Err(StartError {
                    pipeline: handle.name().to_owned(),
                    file: handle.file().to_owned(),
                    source: Some(b.describe.clone()),
                    message,
                })
            }
        };
        self.running().insert(
            handle.name().to_owned(),
            Running {
                handle,
                fingerprint: b.fingerprint,
                tasks: b.tasks.own,
                sources: b.sources.own,
            },
        );
        result
    }

    /// Starts a new pipeline: workers, registry, feeder, source.
    pub(super) async fn add(&self, mut b: Built) -> Result<(), StartError> {
        self.spawn_workers(&mut b);
        self.wiring.router.insert(b.handle.clone());
        self.feed(&b);
        self.start_source(b).await
    }

    /// Replaces the running version of a pipeline by `b`. The old version's intake goes to the
    /// new one at once (journaled as due, since a new version starts spilled); the old source
    /// stops (freeing its port, its HTTP path) and the new one starts; the old workers finish
    /// the messages they are on; what the old version left in memory is made due; then the new
    /// feeder starts, so no message of the old version overtakes or runs beside one of the new.
    pub(super) async fn replace(&self, mut b: Built) -> Result<(), StartError> {
        let name = b.handle.name().to_owned();
        self.spawn_workers(&mut b);
        self.wiring.router.insert(b.handle.clone());
        let old = self.running().remove(&name);
        if let Some(old) = &old {
            old.handle.retire();
            old.sources.close();
            old.sources.wait().await;
        }
        let feed = b.handle.clone();
        let tasks = Tasks {
            engine: b.tasks.engine.clone(),
            own: b.tasks.own.clone(),
        };
        let started = self.start_source(b).await;
        if let Some(old) = old {
            wait_workers(&name, &old.tasks).await;
        }
        if self.wiring.remote.is_none() {
            // With a broker the old version's tickets go back to the queue and come to the
            // new one; locally, what waited in its memory is in the journal, not yet due.
            match self.store.recover_pipeline(&name).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(pipeline = %name, messages = n, "messages the old version had queued go to the new one")
                }
                Err(e) => {
                    tracing::warn!(pipeline = %name, error = %e, "messages the old version had queued stay in the journal until the next start")
                }
            }
        }
        tasks.spawn(feed.feeder(self.poll));
        started
    }

    /// Stops and forgets a pipeline a reload removed. Submits to it fail from now on; what it
    /// holds in the journal stays there.
    pub(super) async fn remove(&self, name: &str) {
        self.wiring.router.remove(name);
        let old = self.running().remove(name);
        if let Some(old) = old {
            old.handle.retire();
            old.sources.close();
            old.sources.wait().await;
            wait_workers(name, &old.tasks).await;
            // Its source ended; `huizhen_source_up` says 0 from now on.
            old.handle.set_running(false, None);
        }
    }

    /// Records, on each running version, why the last reload kept it (or clears it).
    pub(super) fn set_reload_errors(&self, errors: &BTreeMap<String, String>) {
        for (name, r) in self.running().iter() {
            r.handle.set_reload_error(errors.get(name).cloned());
        }
    }

    /// The files the running versions came from.
    pub(super) fn files(&self) -> Vec<PathBuf> {
        self.running()
            .values()
            .map(|r| PathBuf::from(r.handle.file()))
            .collect()
    }

    /// Forgets every version (at shutdown, once their tasks ended).
    pub(super) fn clear(&self) {
        self.running().clear();
    }

    /// The names of the running versions.
    pub(super) fn names(&self) -> Vec<String> {
        self.running().keys().cloned().collect()
    }

    /// The running version of `name`.
    pub(super) fn handle(&self, name: &str) -> Option<PipelineHandle> {
        self.running().get(name).map(|r| r.handle.clone())
    }
}

/// Waits for a stopped version's workers and feeder: each worker finishes the message it is on.
async fn wait_workers(name: &str, tasks: &TaskTracker) {
    tasks.close();
    let mut waited = 0u64;
    loop {
        tokio::select! {
            _ = tasks.wait() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {
                waited += 10;
                tracing::warn!(pipeline = %name, waited_seconds = waited, tasks = tasks.len(), "the old version's workers are still finishing their messages");
            }
        }
    }
}
