//! An engine of its own, for `huizhen test` and `huizhen replay`: the configuration `huizhen
//! run` would load, moved into a temporary folder (store, data keys, audit chain, objects), on
//! the local queue, with no source started, every sink dry-run, one attempt per message and the
//! workflow's clock standing still. Messages are submitted one at a time and followed, with
//! every message routed from them, until all are done or dead.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Loaded;
use crate::message::{Accepted, Message, NewMessage, State};
use crate::runner::tap::{Passage, Tap};
use crate::runner::{Engine, EngineOptions};
use crate::store::ListFilter;

/// A running isolated engine.
pub struct Isolated {
    engine: Engine,
    tap: Tap,
    _dir: TempDir,
}

/// What became of one submitted message.
#[derive(Debug)]
pub struct Trace {
    /// The message as journaled, finished.
    pub root: Message,
    /// It and every message routed from it, finished.
    pub messages: Vec<Message>,
    /// Every step and sink they passed, in order.
    pub passages: Vec<Passage>,
}

impl Isolated {
    /// Starts the engine for `loaded`, moved into a temporary folder, its workflow's clock at
    /// `now`.
    pub async fn start(
        mut loaded: Loaded,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Isolated, String> {
        let dir = TempDir::new().map_err(|e| format!("cannot make a temporary folder: {e}"))?;
        isolate(&mut loaded, &dir.0);
        let engine = Engine::start_with(
            loaded,
            EngineOptions {
                clock: Arc::new(crate::clock::FakeClock::new(now)),
                sources: false,
                dry_run: true,
            },
        )
        .await
        .map_err(|e| format!("the pipelines could not start: {e}"))?;
        let tap = engine.taps().open(None, None, 100_000);
        Ok(Isolated {
            engine,
            tap,
            _dir: dir,
        })
    }

    /// Whether the engine runs a pipeline of that name.
    pub fn has_pipeline(&self, name: &str) -> bool {
        self.engine.pipeline(name).is_some()
    }

    /// Submits a message to its pipeline (`m.pipeline`) as its source would.
    pub async fn submit(&self, m: NewMessage) -> Result<Accepted, String> {
        let Some(handle) = self.engine.pipeline(&m.pipeline) else {
            return Err(format!("pipeline {:?} is not running", m.pipeline));
        };
        let a = handle
            .submit(m)
            .await
            .map_err(|e| format!("the input was not accepted: {e}"))?;
        if a.duplicate {
            return Err("the input was taken as a resend of an earlier one".into());
        }
        Ok(a)
    }

    /// Waits until the message `id` and every message routed from it are done or dead.
    /// `Err`: why not (with the passages seen so far).
    pub async fn wait(
        &mut self,
        id: &str,
        timeout: Duration,
    ) -> Result<Trace, (String, Vec<Passage>)> {
        let started = Instant::now();
        let mut passages: Vec<Passage> = Vec::new();
        loop {
            self.drain(id, &mut passages);
            let list = self
                .engine
                .store
                .list(&ListFilter {
                    q: Some(id.to_owned()),
                    limit: Some(1000),
                    ..ListFilter::default()
                })
                .await;
            let mut trace: Vec<Message> = match list {
                Ok(page) => page
                    .messages
                    .into_iter()
                    .filter(|m| m.id == id || m.trace_id == id)
                    .collect(),
                Err(e) => return Err((format!("the isolated store failed: {e}"), passages)),
            };
            let settled = trace.iter().any(|m| m.id == id)
                && trace
                    .iter()
                    .all(|m| matches!(m.state, State::Done | State::Dead));
            if settled {
                // Passages are reported before the outcome commits: all are in the tap now.
                self.drain(id, &mut passages);
                trace.reverse(); // oldest first
                let root = trace
                    .iter()
                    .find(|m| m.id == id)
                    .cloned()
                    .expect("settled above");
                return Ok(Trace {
                    root,
                    messages: trace,
                    passages,
                });
            }
            if started.elapsed() > timeout {
                let states = trace
                    .iter()
                    .map(|m| format!("{} {:?}", m.pipeline, m.state))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err((
                    format!(
                        "the message did not finish within {timeout:?} (its messages: {states})"
                    ),
                    passages,
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn drain(&mut self, id: &str, into: &mut Vec<Passage>) {
        while let Ok(p) = self.tap.rx.try_recv() {
            if p.trace_id == id {
                into.push(p);
            }
        }
    }

    /// Stops the engine and removes its folder.
    pub async fn stop(self) {
        let Isolated { engine, tap, _dir } = self;
        drop(tap);
        engine.shutdown(Duration::from_secs(5)).await;
    }
}

/// The configuration as `run` loads it, moved into `dir`: the store, keys, audit files,
/// objects and a copy of the plugin name bindings; the local queue; one attempt per message;
/// no plugin folder watch.
fn isolate(loaded: &mut Loaded, dir: &Path) {
    let r = &mut loaded.root;
    r.store.url = format!("sqlite://{}", dir.join("test.db").display());
    r.queue = "local".into();
    r.security.encryption = crate::crypto::EncryptionConfig {
        enabled: true,
        keys_file: dir.join("keys"),
        active: None,
        keys: None,
    };
    r.security.audit.key_file = dir.join("audit.key");
    r.security.audit.checkpoint_file = dir.join("audit.checkpoint");
    r.security.audit.witness_command = Vec::new();
    r.objects.dir = dir.join("objects");
    r.plugins.watch = false;
    // The plugin name bindings as they are, in a copy: a first load binds a name in the copy,
    // never in the installation's file.
    let names = r
        .plugins
        .names_file
        .clone()
        .unwrap_or_else(|| r.plugins.dir.join("names.toml"));
    let copy = dir.join("names.toml");
    if names.is_file() {
        let _ = std::fs::copy(&names, &copy);
    }
    r.plugins.names_file = Some(copy);
    for p in &mut loaded.pipelines {
        p.config.retry.max_attempts = 1;
    }
}

/// A folder removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<TempDir> {
        let d = std::env::temp_dir().join(format!("huizhen-isolated-{}", crate::message::new_id()));
        std::fs::create_dir_all(&d)?;
        Ok(TempDir(d))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
