//! The journal writer: group commit for appends and state transitions.
//!
//! Sources call [`Journal::append`] and acknowledge their sender only after it returns `Ok`: by
//! then the message is committed (durability per [`super::Durability`]). Many concurrent callers
//! are served by one writer task per connection, which drains whatever requests are waiting (up
//! to `max_batch`) and commits them in a single transaction. Before closing a batch the writer
//! yields to the runtime for as long as that brings more requests, so the producers woken by the
//! previous commit get their next message into this batch rather than into a nearly empty one.
//! Under load the batch grows and the cost of a commit is shared; at idle a lone request is
//! committed at once (after one yield).
//!
//! Dedup: a message with a dedup key whose (pipeline, key, body hash) is already journaled is not
//! inserted again; the caller gets the first message's id and state (`duplicate: true`). The same
//! key with a different body is inserted and flagged `reused_key` (STANDARDS HL7-14).
//!
//! If a batch fails, its operations are retried one by one in their own transactions, so one bad
//! operation cannot fail the others.

//!
//! The module's parts: this file (the handle, operations and sealing on the caller's task),
//! `writer.rs` (the batch loop, the retry one by one, the pool path), `sqlite.rs` (the SQLite
//! writer thread with its rusqlite connection and the checkpointer), `exec.rs` (statements for
//! either driver) and `batch.rs` (the SQL of a batch: appends with dedup, transitions).

mod batch;
mod exec;
mod sqlite;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Mutex, mpsc, oneshot};

use super::{Result, Store, StoreError};
use crate::crypto::Binding;
use crate::message::{Accepted, MessageId, NewMessage, new_id};
use batch::body_hash;
use sqlite::{sqlite_writer, sqlite_writer_loop};
use writer::writer_loop;

/// Tuning of the journal writer.
#[derive(Debug, Clone)]
pub struct JournalOptions {
    /// Most operations committed in one transaction.
    pub max_batch: usize,
    /// Requests waiting for the writer before callers are made to wait (back-pressure).
    pub queue: usize,
    /// Writer tasks; SQLite always uses one.
    pub writers: usize,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            max_batch: 2048,
            queue: 16384,
            writers: 4,
        }
    }
}

/// A delivery recorded atomically with the `done` transition (the `journal` sink).
#[derive(Clone)]
pub struct Effect {
    pub sink: String,
    pub pipeline: String,
    /// The delivered bytes; empty when `as_received`.
    pub body: Vec<u8>,
    /// The delivered body is the message's body as received: the journal records a reference
    /// to it (no second copy, nothing to seal again) and reads show the message's body.
    pub as_received: bool,
}

impl Effect {
    /// An effect whose body is `body`, stored as its own copy.
    pub fn copy(sink: impl Into<String>, pipeline: impl Into<String>, body: Vec<u8>) -> Effect {
        Effect {
            sink: sink.into(),
            pipeline: pipeline.into(),
            body,
            as_received: false,
        }
    }
}

impl std::fmt::Debug for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Effect")
            .field("sink", &self.sink)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .field("as_received", &self.as_received)
            .finish()
    }
}

/// A change of a message's state.
#[derive(Debug, Clone)]
pub enum Transition {
    /// Picked up by a worker (fresh messages only; claimed ones are already processing).
    Processing { id: MessageId },
    /// All steps and sinks succeeded. `effects` are recorded in the same transaction, at most
    /// once per (message, sink), which makes redelivery after a crash harmless.
    Done { id: MessageId, effects: Vec<Effect> },
    /// An attempt failed; it will be retried at `retry_at` (ms since the epoch).
    Failed {
        id: MessageId,
        attempt: i64,
        retry_at: i64,
        step: String,
        error: String,
    },
    /// An attempt failed and the worker retries in place (ordered pipelines): the state stays
    /// `processing`, the attempt and error are recorded.
    Retrying {
        id: MessageId,
        attempt: i64,
        step: String,
        error: String,
    },
    /// The last attempt failed: the message waits for a person.
    Dead {
        id: MessageId,
        attempt: i64,
        step: String,
        error: String,
    },
}

impl Transition {
    fn id(&self) -> &str {
        match self {
            Transition::Processing { id }
            | Transition::Done { id, .. }
            | Transition::Failed { id, .. }
            | Transition::Retrying { id, .. }
            | Transition::Dead { id, .. } => id,
        }
    }
}

enum Op {
    Append {
        msg: Box<Sealed>,
        reply: oneshot::Sender<Result<Accepted>>,
    },
    Transition {
        t: Staged,
        reply: Reply,
    },
}

/// A message on its way to the writer: its id, assigned before sealing because every sealed
/// field is bound to it, and its fields as they will be stored (sealed, the dedup key hashed,
/// when encryption is on).
struct Sealed {
    id: MessageId,
    msg: NewMessage,
    /// The dedup key sealed for people reading the message (`msg.dedup_key` is then its
    /// blind index).
    dedup_key_sealed: Option<String>,
    /// For a message its source refused: the reason as the intake row of `message_errors`
    /// stores it (sealed as field `error` when encryption is on), so that no later reprocess
    /// erases why the sender was refused.
    refusal: Option<String>,
}

/// A transition on its way to the writer, its texts as they will be stored: the effect bodies
/// and the error sealed when encryption is on, and `last_error` (`step: error`) sealed for
/// the message's `last_error` column (`None`: written in clear).
struct Staged {
    t: Transition,
    last_error: Option<String>,
}

/// What the writer does with the outcome of a transition.
enum Reply {
    /// Nothing (the writer logs a failure).
    None,
    /// Sends it to a waiting caller.
    Wait(oneshot::Sender<Result<bool>>),
    /// Calls this on the writer (a caller that goes on without waiting).
    Then(Box<dyn FnOnce(Result<bool>) + Send>),
}

impl Reply {
    fn send(self, r: Result<bool>) {
        match self {
            Reply::None => {}
            Reply::Wait(tx) => {
                let _ = tx.send(r);
            }
            Reply::Then(f) => f(r),
        }
    }
}

/// Counters of the journal writer (for benchmarks and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Batches the writer has taken from its queue: one transaction each (more if the batch
    /// failed and its operations were retried one by one).
    pub batches: u64,
    /// Operations (appends and transitions) in those batches.
    pub ops: u64,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    ops: AtomicU64,
}

/// Handle to the journal writer. Cheap to clone; the writer stops when every handle is dropped.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<Op>,
    store: Store,
    counters: Arc<Counters>,
    /// `PRAGMA synchronous` as the SQLite writer's own connection reports it once configured.
    synchronous: Option<&'static str>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").finish_non_exhaustive()
    }
}

impl Journal {
    /// Starts the writer on the current tokio runtime: on SQLite one thread with its own
    /// connection to the database file, on PostgreSQL `opts.writers` tasks over the pool.
    pub fn start(store: Store, opts: JournalOptions) -> Journal {
        let (tx, rx) = mpsc::channel(opts.queue.max(1));
        let counters = Arc::new(Counters::default());
        let max_batch = opts.max_batch.max(1);
        let mut synchronous = None;
        let rx = match sqlite_writer(&store) {
            Ok(Some(conn)) => {
                synchronous = conn
                    .pragma_query_value(None, "synchronous", |r| r.get::<_, i64>(0))
                    .ok()
                    .map(super::synchronous_name);
                let counters = counters.clone();
                let spawned = std::thread::Builder::new()
                    .name("huizhen-journal".into())
                    .spawn(move || sqlite_writer_loop(conn, rx, &counters, max_batch));
                match spawned {
                    Ok(_) => None,
                    Err(e) => panic!("cannot start the journal writer thread: {e}"),
                }
            }
            Ok(None) => Some(rx),
            Err(e) => {
                tracing::warn!(error = %e, "journal writer: the SQLite file could not be opened directly; writing through the connection pool");
                Some(rx)
            }
        };
        if let Some(rx) = rx {
            let rx = Arc::new(Mutex::new(rx));
            let writers = match store.backend() {
                super::Backend::Sqlite => 1,
                super::Backend::Postgres => opts.writers.max(1),
            };
            for _ in 0..writers {
                let rx = rx.clone();
                let store = store.clone();
                let counters = counters.clone();
                tokio::spawn(async move { writer_loop(store, rx, counters, max_batch).await });
            }
        }
        Journal {
            tx,
            store,
            counters,
            synchronous,
        }
    }

    /// The SQLite `synchronous` level of the writer's own connection, where every journal
    /// commit happens (`NORMAL` for `durability: process-crash`, `FULL` for `power-loss`),
    /// as that connection reported it; `None` on PostgreSQL or when writing through the pool.
    pub fn sqlite_synchronous(&self) -> Option<&'static str> {
        self.synchronous
    }

    /// What the writer has done so far.
    pub fn stats(&self) -> JournalStats {
        JournalStats {
            batches: self.counters.batches.load(Ordering::Relaxed),
            ops: self.counters.ops.load(Ordering::Relaxed),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Journals a message; returns once it is committed.
    pub async fn append(&self, mut msg: NewMessage) -> Result<Accepted> {
        // Hashing and sealing happen here, on the caller's task, not on the writer. The id is
        // assigned here too: every sealed field is bound to it.
        let id = new_id();
        let mut dedup_key_sealed = None;
        let mut refusal = msg.rejected.clone();
        if msg.dedup_key.is_some() && msg.body_hash.is_none() {
            msg.body_hash = Some(match self.store.keyring() {
                Some(k) => k.blind_index(&msg.body),
                None => body_hash(&msg.body),
            });
        }
        if let Some(k) = self.store.keyring() {
            let c = k.cipher();
            msg.body = c.seal(&msg.body, &Binding::new(&id, "body"));
            for (name, v) in msg.headers.iter_mut() {
                if !super::CLEAR_HEADERS.contains(&name.as_str()) {
                    *v = c.seal_text(v, &Binding::new(&id, &format!("header/{name}")));
                }
            }
            if let Some(key) = msg.dedup_key.take() {
                msg.dedup_key = Some(c.dedup_index(&key));
                dedup_key_sealed = Some(c.seal_text(&key, &Binding::new(&id, "dedup_key")));
            }
            if let Some(r) = msg.rejected.take() {
                msg.rejected = Some(c.seal_text(&r, &Binding::new(&id, "last_error")));
                refusal = Some(c.seal_text(&r, &Binding::new(&id, "error")));
            }
        }
        let msg = Box::new(Sealed {
            id,
            msg,
            dedup_key_sealed,
            refusal,
        });
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Op::Append { msg, reply })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Seals the bodies of a `done`'s effects and the error of a failure, bound to the message,
    /// when encryption is on.
    fn seal(&self, mut t: Transition) -> Staged {
        let Some(k) = self.store.keyring() else {
            return Staged {
                t,
                last_error: None,
            };
        };
        let c = k.cipher();
        let mut last_error = None;
        match &mut t {
            Transition::Processing { .. } => {}
            Transition::Done { id, effects } => {
                for e in effects.iter_mut().filter(|e| !e.as_received) {
                    let field = format!("effect/{}", e.sink);
                    e.body = c.seal(&e.body, &Binding::new(id, &field));
                }
            }
            Transition::Failed {
                id, step, error, ..
            }
            | Transition::Retrying {
                id, step, error, ..
            }
            | Transition::Dead {
                id, step, error, ..
            } => {
                last_error =
                    Some(c.seal_text(&format!("{step}: {error}"), &Binding::new(id, "last_error")));
                *error = c.seal_text(error, &Binding::new(id, "error"));
            }
        }
        Staged { t, last_error }
    }

    /// Applies a transition and waits for its commit. Returns whether the message was in a state
    /// that allowed it.
    pub async fn transition(&self, t: Transition) -> Result<bool> {
        let t = self.seal(t);
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Op::Transition {
                t,
                reply: Reply::Wait(reply),
            })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Queues a transition without waiting for it (used for `processing`, which is informational:
    /// if it is lost in a crash the message is still `received` and is recovered the same way).
    pub async fn transition_nowait(&self, t: Transition) {
        let _ = self
            .tx
            .send(Op::Transition {
                t: self.seal(t),
                reply: Reply::None,
            })
            .await;
    }

    /// Queues a transition and returns once it is queued (waiting only while the writer's queue
    /// is full); `then` is called with its outcome after the commit, on the writer. Workers use
    /// it for `done`, so that they take their next message while the last one commits. A crash
    /// in between leaves the message `received`, and recovery runs it again (the journal sink's
    /// effect is recorded at most once).
    pub async fn transition_then(
        &self,
        t: Transition,
        then: impl FnOnce(Result<bool>) + Send + 'static,
    ) {
        let t = self.seal(t);
        let op = Op::Transition {
            t,
            reply: Reply::Then(Box::new(then)),
        };
        if let Err(mpsc::error::SendError(Op::Transition { reply, .. })) = self.tx.send(op).await {
            reply.send(Err(StoreError::WriterGone));
        }
    }
}
