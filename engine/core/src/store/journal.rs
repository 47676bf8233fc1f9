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

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use sqlx::any::{Any, AnyArguments};
use sqlx::query::Query;
use sqlx::{AnyConnection, Arguments, AssertSqlSafe, Connection, Row};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{Backend, Result, Store, StoreError, q};
use crate::crypto::Binding;
use crate::message::{Accepted, MessageId, NewMessage, REUSED_KEY_HEADER, State, new_id, now_ms};

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
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Effect")
            .field("sink", &self.sink)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
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
            }
        }
        let msg = Box::new(Sealed {
            id,
            msg,
            dedup_key_sealed,
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
                for e in effects {
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

/// The SQLite writer's own connection, when the store is a SQLite file.
///
/// sqlx runs each SQLite connection on a worker thread of its own and sends it every statement
/// (and BEGIN and COMMIT) as a message, so a batch of a dedup lookup, an insert and a few
/// updates costs half a dozen thread hand-offs. Under many small concurrent requests (MLLP
/// senders waiting for their ACK) those hand-offs, not SQLite, were the cost of the journal. The
/// writer therefore runs on a thread that owns a rusqlite connection to the same file (rusqlite
/// links the same `libsqlite3-sys` as sqlx) and takes whole batches from its queue: one
/// hand-off per batch. Everything else (reads, migrations, the scheduler) stays on sqlx.
fn sqlite_writer(store: &Store) -> Result<Option<rusqlite::Connection>> {
    let Some(path) = store.sqlite_file() else {
        return Ok(None);
    };
    let sq = |op| move |source| StoreError::Sqlite { op, source };
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
            | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sq("open the journal writer connection"))?;
    let sync = match store.durability() {
        super::Durability::ProcessCrash => "NORMAL",
        super::Durability::PowerLoss => "FULL",
    };
    // A negative cache_size is KiB.
    let cache_kib = (store.sqlite_cache() / 1024).max(64);
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA cache_size=-{cache_kib}; PRAGMA temp_store=MEMORY;"
    ))
    .map_err(sq("configure the journal writer connection"))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sq("configure the journal writer connection"))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(Some(conn))
}

/// How often the checkpointer copies the WAL back into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Runs WAL checkpoints on a thread of their own, so that the writer's commits do not.
///
/// SQLite checkpoints by default inside the commit that takes the WAL past 1,000 pages, which
/// put copying pages back into the database file (and its fsync) on the journal writer's path:
/// 15% of its time under load, and the writer is what limits throughput. The writer connection
/// therefore has `wal_autocheckpoint=0`, and this thread, with a connection of its own, runs a
/// PASSIVE checkpoint (which never blocks the writer or readers) every [`CHECKPOINT_EVERY`],
/// and a last one when the writer stops. Returns the sender whose drop
/// tells it to stop.
fn start_checkpointer(path: &std::path::Path) -> Option<std::sync::mpsc::Sender<()>> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .and_then(|c| {
        c.busy_timeout(std::time::Duration::from_secs(10))
            .map(|()| c)
    });
    let conn = match conn {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "journal: no checkpoint thread; the writer checkpoints itself");
            return None;
        }
    };
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("huizhen-checkpoint".into())
        .spawn(move || {
            let checkpoint = |conn: &rusqlite::Connection| {
                // (busy, WAL frames, frames checkpointed)
                conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                })
            };
            let mut last = (0, -1, -1);
            loop {
                let done = matches!(
                    stopped.recv_timeout(CHECKPOINT_EVERY),
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) | Ok(())
                );
                match checkpoint(&conn) {
                    Ok(now) => last = now,
                    Err(e) => tracing::warn!(error = %e, last_frames = last.1, "journal: WAL checkpoint failed; retrying"),
                }
                if done {
                    return;
                }
            }
        });
    match spawned {
        Ok(_) => Some(stop),
        Err(e) => {
            tracing::warn!(error = %e, "journal: no checkpoint thread; the writer checkpoints itself");
            None
        }
    }
}

fn sqlite_writer_loop(
    mut conn: rusqlite::Connection,
    mut rx: mpsc::Receiver<Op>,
    counters: &Counters,
    max_batch: usize,
) {
    // Group commit without waiting: while one batch commits, the requests that arrive queue up
    // and are all taken as the next batch.
    let path = conn.path().map(std::path::PathBuf::from);
    let _checkpointer = match path.as_deref().and_then(start_checkpointer) {
        Some(stop) => match conn.pragma_update(None, "wal_autocheckpoint", 0) {
            Ok(()) => Some(stop),
            Err(e) => {
                tracing::warn!(error = %e, "journal: the writer keeps checkpointing itself");
                None
            }
        },
        None => None,
    };
    while let Some(first) = rx.blocking_recv() {
        let mut batch = Vec::with_capacity(64);
        batch.push(first);
        drain(&mut rx, &mut batch, max_batch);
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters
            .ops
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        // The rusqlite executor never waits, so polling the batch once runs it to the end.
        futures::executor::block_on(commit_batch(&mut LiteApplier(&mut conn), batch));
    }
}

async fn writer_loop(
    store: Store,
    rx: Arc<Mutex<mpsc::Receiver<Op>>>,
    counters: Arc<Counters>,
    max_batch: usize,
) {
    loop {
        let mut batch = Vec::with_capacity(64);
        {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            batch.push(first);
            drain(&mut rx, &mut batch, max_batch);
            // Producers that are runnable right now (typically those whose previous operation
            // was just committed) are about to send their next one: let them run and take what
            // they send into this batch too, while each round still brings something. At idle
            // this costs one yield.
            for _ in 0..MAX_GATHER_ROUNDS {
                if batch.len() >= max_batch {
                    break;
                }
                let before = batch.len();
                tokio::task::yield_now().await;
                drain(&mut rx, &mut batch, max_batch);
                if batch.len() == before {
                    break;
                }
            }
        }
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters
            .ops
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        commit_batch(&mut PoolApplier(&store), batch).await;
    }
}

/// Most times the writer yields to let more operations arrive before it commits a batch.
const MAX_GATHER_ROUNDS: usize = 8;

fn drain(rx: &mut mpsc::Receiver<Op>, batch: &mut Vec<Op>, max_batch: usize) {
    while batch.len() < max_batch {
        match rx.try_recv() {
            Ok(op) => batch.push(op),
            Err(_) => break,
        }
    }
}

struct Prepared<'a> {
    id: MessageId,
    msg: &'a NewMessage,
    dedup_key_sealed: Option<&'a str>,
    hash: Option<String>,
    headers_json: String,
    reused_key: bool,
}

enum AppendPlan {
    Insert(usize),
    Duplicate(Accepted),
    /// A resend of row `usize` of the same batch: it gets that row's outcome, which is another
    /// writer's id when that row lost the race for its dedup key.
    DuplicateOf(usize),
}

type Applied = (Vec<Accepted>, Vec<bool>);

/// Applies appends and transitions in one transaction.
trait Applier {
    async fn apply(
        &mut self,
        appends: &[&Sealed],
        transitions: &[&Staged],
        now: i64,
    ) -> Result<Applied>;
}

/// The common batch, fresh messages without dedup keys and nothing else, is a single INSERT
/// statement: it is atomic and durable on its own (autocommit), which saves BEGIN and COMMIT.
fn single_statement(appends: &[&Sealed], transitions: &[&Staged]) -> bool {
    transitions.is_empty()
        && appends.len() <= CHUNK
        && appends.iter().all(|m| m.msg.dedup_key.is_none())
}

async fn apply_on<E: Exec>(
    e: &mut E,
    appends: &[&Sealed],
    transitions: &[&Staged],
    now: i64,
) -> Result<Applied> {
    let accepted = append_all(e, appends, now).await?;
    let applied = transition_all(e, transitions, now).await?;
    Ok((accepted, applied))
}

/// Through sqlx's pool (PostgreSQL, and SQLite when the file cannot be opened directly).
struct PoolApplier<'s>(&'s Store);

impl Applier for PoolApplier<'_> {
    async fn apply(
        &mut self,
        appends: &[&Sealed],
        transitions: &[&Staged],
        now: i64,
    ) -> Result<Applied> {
        let backend = self.0.backend();
        let mut conn = self
            .0
            .write_pool()
            .acquire()
            .await
            .map_err(q("acquire writer connection"))?;
        if single_statement(appends, transitions) {
            return apply_on(&mut SqlxExec(&mut conn, backend), appends, &[], now).await;
        }
        let mut tx = conn.begin().await.map_err(q("begin journal batch"))?;
        let r = apply_on(&mut SqlxExec(&mut tx, backend), appends, transitions, now).await?;
        tx.commit().await.map_err(q("commit journal batch"))?;
        Ok(r)
    }
}

/// On the SQLite writer thread's own connection.
struct LiteApplier<'c>(&'c mut rusqlite::Connection);

impl Applier for LiteApplier<'_> {
    async fn apply(
        &mut self,
        appends: &[&Sealed],
        transitions: &[&Staged],
        now: i64,
    ) -> Result<Applied> {
        let sq = |op| move |source| StoreError::Sqlite { op, source };
        if single_statement(appends, transitions) {
            return apply_on(&mut LiteExec(self.0), appends, &[], now).await;
        }
        // IMMEDIATE: take the write lock now, so that the dedup lookup and the writes see the
        // same database even if another connection (the scheduler's) writes in between.
        let tx = self
            .0
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sq("begin journal batch"))?;
        let r = apply_on(&mut LiteExec(&tx), appends, transitions, now).await?;
        tx.commit().map_err(sq("commit journal batch"))?;
        Ok(r)
    }
}

async fn commit_batch<A: Applier>(a: &mut A, batch: Vec<Op>) {
    let mut appends = Vec::new();
    let mut transitions = Vec::new();
    for op in batch {
        match op {
            Op::Append { msg, reply } => appends.push((msg, reply)),
            Op::Transition { t, reply } => transitions.push((t, reply)),
        }
    }
    let now = now_ms();
    let result = {
        let msgs: Vec<&Sealed> = appends.iter().map(|(m, _)| &**m).collect();
        let ts: Vec<&Staged> = transitions.iter().map(|(t, _)| t).collect();
        a.apply(&msgs, &ts, now).await
    };
    match result {
        Ok((accepted, applied)) => {
            for ((_, reply), a) in appends.into_iter().zip(accepted) {
                let _ = reply.send(Ok(a));
            }
            for ((_, reply), ok) in transitions.into_iter().zip(applied) {
                reply.send(Ok(ok));
            }
        }
        Err(err) if appends.len() + transitions.len() == 1 => {
            tracing::error!(error = %err, "journal write failed");
            if let Some((_, reply)) = appends.into_iter().next() {
                let _ = reply.send(Err(err));
            } else if let Some((_, reply)) = transitions.into_iter().next() {
                reply.send(Err(err));
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, ops = appends.len() + transitions.len(), "journal batch failed; retrying its operations one by one");
            for (msg, reply) in appends {
                let r = a
                    .apply(&[&msg], &[], now)
                    .await
                    .map(|(mut a, _)| a.remove(0));
                let _ = reply.send(r);
            }
            for (t, reply) in transitions {
                let r = a.apply(&[], &[&t], now).await.map(|(_, mut a)| a.remove(0));
                if let Err(e) = &r {
                    tracing::error!(error = %e, message = t.t.id(), "journal transition failed");
                }
                reply.send(r);
            }
        }
    }
}

/// Most rows in one multi-row statement.
const CHUNK: usize = 500;

/// A value bound to a statement.
enum Value<'a> {
    Null,
    Int(i64),
    Text(Cow<'a, str>),
    Blob(&'a [u8]),
}

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<Option<i64>> for Value<'_> {
    fn from(v: Option<i64>) -> Self {
        v.map_or(Value::Null, Value::Int)
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Text(Cow::Borrowed(v))
    }
}

impl From<String> for Value<'_> {
    fn from(v: String) -> Self {
        Value::Text(Cow::Owned(v))
    }
}

impl<'a> From<Option<&'a str>> for Value<'a> {
    fn from(v: Option<&'a str>) -> Self {
        v.map_or(Value::Null, Value::from)
    }
}

impl<'a> From<&'a [u8]> for Value<'a> {
    fn from(v: &'a [u8]) -> Self {
        Value::Blob(v)
    }
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(v) => ValueRef::Integer(*v),
            Value::Text(v) => ValueRef::Text(v.as_bytes()),
            Value::Blob(v) => ValueRef::Blob(v),
        }))
    }
}

/// SQL text and its arguments, for either executor. SQLite gets anonymous `?` placeholders
/// (sqlx's SQLite driver binds a numbered `$n` by asking SQLite for its name, a linear scan,
/// which makes binding a multi-row insert quadratic); PostgreSQL needs `$n`. Values are bound in
/// the order their placeholders appear.
struct Stmt<'a> {
    text: String,
    args: Vec<Value<'a>>,
    numbered: bool,
}

impl<'a> Stmt<'a> {
    fn new(backend: Backend, text: &str) -> Stmt<'a> {
        Stmt {
            text: text.to_owned(),
            args: Vec::new(),
            numbered: backend == Backend::Postgres,
        }
    }

    fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }

    fn bind(&mut self, value: impl Into<Value<'a>>) {
        self.args.push(value.into());
        if self.numbered {
            use std::fmt::Write;
            let _ = write!(self.text, "${}", self.args.len());
        } else {
            self.text.push('?');
        }
    }
}

/// Rows come back as text columns (all the writer reads back is ids, keys, hashes, states and
/// headers).
type Rows = Vec<Vec<Option<String>>>;

/// Runs the writer's statements: sqlx (PostgreSQL, or SQLite through the pool) or rusqlite.
trait Exec {
    fn backend(&self) -> Backend;
    async fn execute(&mut self, s: Stmt<'_>, op: &'static str) -> Result<u64>;
    async fn fetch(&mut self, s: Stmt<'_>, op: &'static str) -> Result<Rows>;
}

struct SqlxExec<'c>(&'c mut AnyConnection, Backend);

impl SqlxExec<'_> {
    fn query(s: Stmt<'_>) -> Query<'static, Any, AnyArguments> {
        let mut args = AnyArguments::default();
        for v in s.args {
            // Adding an argument to AnyArguments only fails for types the Any driver cannot
            // encode; these four it can.
            let _ = match v {
                Value::Null => args.add(None::<i64>),
                Value::Int(v) => args.add(v),
                Value::Text(v) => args.add(v.into_owned()),
                Value::Blob(v) => args.add(v.to_vec()),
            };
        }
        sqlx::query_with(AssertSqlSafe(s.text), args)
    }
}

impl Exec for SqlxExec<'_> {
    fn backend(&self) -> Backend {
        self.1
    }

    async fn execute(&mut self, s: Stmt<'_>, op: &'static str) -> Result<u64> {
        let r = Self::query(s).execute(&mut *self.0).await.map_err(q(op))?;
        Ok(r.rows_affected())
    }

    async fn fetch(&mut self, s: Stmt<'_>, op: &'static str) -> Result<Rows> {
        let rows = Self::query(s)
            .fetch_all(&mut *self.0)
            .await
            .map_err(q(op))?;
        rows.iter()
            .map(|r| {
                (0..r.columns().len())
                    .map(|i| r.try_get::<Option<String>, _>(i).map_err(q(op)))
                    .collect()
            })
            .collect()
    }
}

struct LiteExec<'c>(&'c rusqlite::Connection);

impl Exec for LiteExec<'_> {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn execute(&mut self, s: Stmt<'_>, op: &'static str) -> Result<u64> {
        let sq = |source| StoreError::Sqlite { op, source };
        let n = if cacheable(&s) {
            self.0
                .prepare_cached(&s.text)
                .map_err(sq)?
                .execute(rusqlite::params_from_iter(s.args.iter()))
        } else {
            self.0
                .prepare(&s.text)
                .map_err(sq)?
                .execute(rusqlite::params_from_iter(s.args.iter()))
        }
        .map_err(sq)?;
        Ok(n as u64)
    }

    async fn fetch(&mut self, s: Stmt<'_>, op: &'static str) -> Result<Rows> {
        let sq = |source| StoreError::Sqlite { op, source };
        if cacheable(&s) {
            let mut st = self.0.prepare_cached(&s.text).map_err(sq)?;
            rows_of(&mut st, &s.args).map_err(sq)
        } else {
            let mut st = self.0.prepare(&s.text).map_err(sq)?;
            rows_of(&mut st, &s.args).map_err(sq)
        }
    }
}

/// Whether the writer keeps a statement prepared: not the many-row ones (a multi-row insert,
/// an id list), whose text differs with every batch size and whose compiled programs, 64 of
/// them cached, grew the engine by tens of MB under a long backlog; preparing one again costs
/// little next to the rows it writes.
fn cacheable(s: &Stmt<'_>) -> bool {
    s.args.len() <= super::sql::MAX_CACHED_ARGS
}

fn rows_of(st: &mut rusqlite::Statement<'_>, args: &[Value<'_>]) -> rusqlite::Result<Rows> {
    let n = st.column_count();
    let mut rows = st.query(rusqlite::params_from_iter(args.iter()))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(
            (0..n)
                .map(|i| r.get::<_, Option<String>>(i))
                .collect::<rusqlite::Result<Vec<_>>>()?,
        );
    }
    Ok(out)
}

fn body_hash(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// A journaled message with a dedup key, as the dedup check needs it.
struct KnownKey {
    id: String,
    hash: Option<String>,
    state: String,
    headers: String,
}

async fn known_keys<'a, E: Exec>(
    e: &mut E,
    appends: &[&'a Sealed],
) -> Result<HashMap<(&'a str, &'a str), Vec<KnownKey>>> {
    let mut by_pipeline: BTreeMap<&'a str, Vec<&'a str>> = BTreeMap::new();
    for m in appends {
        if let Some(k) = m.msg.dedup_key.as_deref() {
            by_pipeline
                .entry(m.msg.pipeline.as_str())
                .or_default()
                .push(k);
        }
    }
    let mut out: HashMap<(&'a str, &'a str), Vec<KnownKey>> = HashMap::new();
    for (pipeline, mut keys) in by_pipeline {
        keys.sort_unstable();
        keys.dedup();
        for chunk in keys.chunks(500) {
            let mut s = Stmt::new(
                e.backend(),
                "SELECT id, dedup_key, body_hash, state, headers FROM messages WHERE pipeline = ",
            );
            s.bind(pipeline);
            s.push(" AND dedup_key IN (");
            for (i, k) in chunk.iter().enumerate() {
                if i > 0 {
                    s.push(", ");
                }
                s.bind(*k);
            }
            s.push(") ORDER BY id");
            for r in e.fetch(s, "look up dedup keys").await? {
                let mut r = r.into_iter();
                let mut col = || r.next().flatten();
                let (id, key, hash, state, headers) = (col(), col(), col(), col(), col());
                // Map back to the borrowed key of this batch.
                let Some(k) = chunk.iter().find(|k| Some(**k) == key.as_deref()) else {
                    continue;
                };
                out.entry((pipeline, *k)).or_default().push(KnownKey {
                    id: id.unwrap_or_default(),
                    hash,
                    state: state.unwrap_or_default(),
                    headers: headers.unwrap_or_default(),
                });
            }
        }
    }
    Ok(out)
}

async fn append_all<E: Exec>(e: &mut E, appends: &[&Sealed], now: i64) -> Result<Vec<Accepted>> {
    let backend = e.backend();
    let mut plans = Vec::with_capacity(appends.len());
    let mut rows: Vec<Prepared> = Vec::with_capacity(appends.len());
    // Dedup keys seen earlier in this batch: (pipeline, key) -> [(hash, row index)].
    let mut in_batch: HashMap<(&str, &str), Vec<(String, usize)>> = HashMap::new();
    // Dedup keys already in the journal, looked up once per batch (one query per pipeline and
    // 500 keys, not one per message).
    let known = known_keys(e, appends).await?;
    for a in appends {
        let msg = &a.msg;
        let mut reused_key = false;
        let mut hash = None;
        if let Some(key) = msg.dedup_key.as_deref() {
            let h = msg
                .body_hash
                .clone()
                .unwrap_or_else(|| body_hash(&msg.body));
            let mut dup = None;
            let mut same_batch = None;
            if let Some(prev) = in_batch.get(&(msg.pipeline.as_str(), key)) {
                for (ph, idx) in prev {
                    if *ph == h {
                        same_batch = Some(*idx);
                    } else {
                        reused_key = true;
                    }
                }
            }
            if let Some(idx) = same_batch {
                plans.push(AppendPlan::DuplicateOf(idx));
                continue;
            }
            if dup.is_none() {
                for r in known
                    .get(&(msg.pipeline.as_str(), key))
                    .into_iter()
                    .flatten()
                {
                    if r.hash.as_deref() == Some(h.as_str()) {
                        dup = Some(Accepted {
                            id: r.id.clone(),
                            duplicate: true,
                            reused_key: r.headers.contains(REUSED_KEY_HEADER),
                            state: State::parse(&r.state).unwrap_or(State::Received),
                        });
                        break;
                    }
                    reused_key = true;
                }
            }
            if let Some(d) = dup {
                plans.push(AppendPlan::Duplicate(d));
                continue;
            }
            hash = Some(h);
        }
        let headers_json = if reused_key {
            let mut headers = msg.headers.clone();
            headers.insert(REUSED_KEY_HEADER.into(), "reused-key".into());
            tracing::warn!(
                pipeline = %msg.pipeline,
                dedup_key = msg.dedup_key.as_deref().unwrap_or(""),
                "dedup key reused with a different body: processing it and flagging it"
            );
            serde_json::to_string(&headers)
        } else {
            serde_json::to_string(&msg.headers)
        }
        .unwrap_or_else(|_| "{}".into());
        let idx = rows.len();
        if let (Some(key), Some(h)) = (msg.dedup_key.as_deref(), hash.as_ref()) {
            in_batch
                .entry((msg.pipeline.as_str(), key))
                .or_default()
                .push((h.clone(), idx));
        }
        rows.push(Prepared {
            id: a.id.clone(),
            msg,
            dedup_key_sealed: a.dedup_key_sealed.as_deref(),
            hash,
            headers_json,
            reused_key,
        });
        plans.push(AppendPlan::Insert(idx));
    }

    // Multi-row inserts. A concurrent writer (PostgreSQL) may have inserted the same dedup key in
    // the meantime: ON CONFLICT DO NOTHING, then the rows that did not come back are duplicates.
    // On SQLite the statements are `OR IGNORE`: a statement that cannot abort needs no statement
    // journal (SQLite otherwise copies every page a multi-row statement touches inside a
    // transaction, 7% of the writer's time; and conflicts are what `OR IGNORE` skips, as ON
    // CONFLICT DO NOTHING would).
    let mut lost: Vec<usize> = Vec::new();
    for (chunk_no, chunk) in rows.chunks(CHUNK).enumerate() {
        let deduped = chunk.iter().any(|r| r.hash.is_some());
        let mut s = Stmt::new(
            backend,
            if backend == Backend::Sqlite {
                "INSERT OR IGNORE INTO messages (id, facility, pipeline, kind, body, headers, source, received_at, trace_id, dedup_key, dedup_key_sealed, body_hash, parent_id, owner, ordering_hash, part, next_attempt_at, state, updated_at) VALUES "
            } else {
                "INSERT INTO messages (id, facility, pipeline, kind, body, headers, source, received_at, trace_id, dedup_key, dedup_key_sealed, body_hash, parent_id, owner, ordering_hash, part, next_attempt_at, state, updated_at) VALUES "
            },
        );
        for (i, r) in chunk.iter().enumerate() {
            s.push(if i == 0 { "(" } else { ", (" });
            s.bind(r.id.as_str());
            s.push(", ");
            s.bind(r.msg.facility.as_str());
            s.push(", ");
            s.bind(r.msg.pipeline.as_str());
            s.push(", ");
            s.bind(r.msg.kind.as_str());
            s.push(", ");
            s.bind(r.msg.body.as_slice());
            s.push(", ");
            s.bind(r.headers_json.as_str());
            s.push(", ");
            s.bind(r.msg.source.as_str());
            s.push(", ");
            s.bind(now);
            s.push(", ");
            s.bind(r.msg.trace_id.as_deref().unwrap_or(r.id.as_str()));
            s.push(", ");
            s.bind(r.msg.dedup_key.as_deref());
            s.push(", ");
            s.bind(r.dedup_key_sealed);
            s.push(", ");
            s.bind(r.hash.as_deref());
            s.push(", ");
            s.bind(r.msg.parent_id.as_deref());
            s.push(", ");
            s.bind(r.msg.owner.as_deref());
            s.push(", ");
            s.bind(r.msg.ordering.map(|o| o.0));
            s.push(", ");
            s.bind(r.msg.ordering.map(|o| o.1));
            s.push(", ");
            // A message the in-memory queue had no room for is due at once: the pipeline's
            // feeder takes it from here, in journal order.
            s.bind(r.msg.due.then_some(now));
            s.push(", 'received', ");
            s.bind(now);
            s.push(")");
        }
        if deduped {
            s.push(if backend == Backend::Sqlite {
                " RETURNING id"
            } else {
                " ON CONFLICT DO NOTHING RETURNING id"
            });
            let back = e.fetch(s, "append messages").await?;
            let ids: std::collections::HashSet<String> = back
                .into_iter()
                .filter_map(|r| r.into_iter().next().flatten())
                .collect();
            for (i, r) in chunk.iter().enumerate() {
                if !ids.contains(&r.id) {
                    lost.push(chunk_no * CHUNK + i);
                }
            }
        } else {
            let n = e.execute(s, "append messages").await?;
            // OR IGNORE (SQLite) would skip a row that broke a constraint rather than fail; with
            // fresh ids and no dedup key none can, but a row must never vanish silently.
            if n != chunk.len() as u64 {
                return Err(StoreError::Inconsistent(format!(
                    "append messages: {n} of {} rows inserted",
                    chunk.len()
                )));
            }
        }
    }
    // Messages their source refused are kept, as dead letters with the reason (rare: one
    // statement each, in the same transaction as their insert).
    for r in rows.iter().filter(|r| r.msg.rejected.is_some()) {
        let mut s = Stmt::new(backend, "UPDATE messages SET state = 'dead', last_error = ");
        s.bind(r.msg.rejected.as_deref());
        s.push(" WHERE id = ");
        s.bind(r.id.as_str());
        e.execute(s, "record refused message").await?;
    }
    let mut raced: BTreeMap<usize, Accepted> = BTreeMap::new();
    for idx in lost {
        let r = &rows[idx];
        let mut s = Stmt::new(backend, "SELECT id, state FROM messages WHERE pipeline = ");
        s.bind(r.msg.pipeline.as_str());
        s.push(" AND dedup_key = ");
        s.bind(r.msg.dedup_key.as_deref());
        s.push(" AND body_hash = ");
        s.bind(r.hash.as_deref());
        let row = e
            .fetch(s, "look up raced duplicate")
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| {
                // Not visible yet to this transaction: the batch fails and its operations are
                // retried one by one, which finds the row as a known key.
                StoreError::Inconsistent(format!(
                    "message with dedup key {:?} conflicted but is not visible",
                    r.msg.dedup_key.as_deref().unwrap_or("")
                ))
            })?;
        let mut row = row.into_iter();
        let id = row.next().flatten().unwrap_or_default();
        let st = row.next().flatten().unwrap_or_default();
        raced.insert(
            idx,
            Accepted {
                id,
                duplicate: true,
                reused_key: r.reused_key,
                state: State::parse(&st).unwrap_or(State::Received),
            },
        );
    }
    Ok(plans
        .into_iter()
        .map(|p| match p {
            AppendPlan::Duplicate(a) => a,
            AppendPlan::DuplicateOf(idx) => match raced.get(&idx) {
                Some(a) => a.clone(),
                None => Accepted {
                    id: rows[idx].id.clone(),
                    duplicate: true,
                    reused_key: rows[idx].reused_key,
                    state: State::Received,
                },
            },
            AppendPlan::Insert(idx) => raced.get(&idx).cloned().unwrap_or_else(|| Accepted {
                id: rows[idx].id.clone(),
                duplicate: false,
                reused_key: rows[idx].reused_key,
                state: if rows[idx].msg.rejected.is_some() {
                    State::Dead
                } else {
                    State::Received
                },
            }),
        })
        .collect())
}

async fn transition_all<E: Exec>(
    e: &mut E,
    transitions: &[&Staged],
    now: i64,
) -> Result<Vec<bool>> {
    let backend = e.backend();
    let mut applied = vec![false; transitions.len()];
    // Processing first, then done: a message's processing marker always precedes its outcome.
    let processing: Vec<usize> = (0..transitions.len())
        .filter(|&i| matches!(transitions[i].t, Transition::Processing { .. }))
        .collect();
    for chunk in processing.chunks(CHUNK) {
        let mut s = Stmt::new(
            backend,
            if backend == Backend::Sqlite {
                "UPDATE OR IGNORE messages SET state = 'processing', updated_at = "
            } else {
                "UPDATE messages SET state = 'processing', updated_at = "
            },
        );
        s.bind(now);
        s.push(" WHERE state = 'received' AND next_attempt_at IS NULL AND id IN (");
        for (n, &i) in chunk.iter().enumerate() {
            if n > 0 {
                s.push(", ");
            }
            s.bind(transitions[i].t.id());
        }
        s.push(")");
        e.execute(s, "mark processing").await?;
        for &i in chunk {
            applied[i] = true;
        }
    }
    let done: Vec<usize> = (0..transitions.len())
        .filter(|&i| matches!(transitions[i].t, Transition::Done { .. }))
        .collect();
    for chunk in done.chunks(CHUNK) {
        let mut s = Stmt::new(
            backend,
            if backend == Backend::Sqlite {
                "UPDATE OR IGNORE messages SET state = 'done', next_attempt_at = NULL, last_error = NULL, updated_at = "
            } else {
                "UPDATE messages SET state = 'done', next_attempt_at = NULL, last_error = NULL, updated_at = "
            },
        );
        s.bind(now);
        s.push(" WHERE state IN ('received', 'processing') AND id IN (");
        for (n, &i) in chunk.iter().enumerate() {
            if n > 0 {
                s.push(", ");
            }
            s.bind(transitions[i].t.id());
        }
        s.push(") RETURNING id");
        let ids: std::collections::HashSet<String> = e
            .fetch(s, "mark done")
            .await?
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect();
        let mut effects = Stmt::new(
            backend,
            if backend == Backend::Sqlite {
                "INSERT OR IGNORE INTO effects (message_id, sink, pipeline, body, recorded_at) VALUES "
            } else {
                "INSERT INTO effects (message_id, sink, pipeline, body, recorded_at) VALUES "
            },
        );
        let mut any_effect = false;
        for &i in chunk {
            let Transition::Done { id, effects: eff } = &transitions[i].t else {
                continue;
            };
            applied[i] = ids.contains(id);
            if !applied[i] {
                continue;
            }
            for eff in eff {
                effects.push(if any_effect { ", (" } else { "(" });
                any_effect = true;
                effects.bind(id.as_str());
                effects.push(", ");
                effects.bind(eff.sink.as_str());
                effects.push(", ");
                effects.bind(eff.pipeline.as_str());
                effects.push(", ");
                effects.bind(eff.body.as_slice());
                effects.push(", ");
                effects.bind(now);
                effects.push(")");
            }
        }
        if any_effect {
            if backend == Backend::Postgres {
                effects.push(" ON CONFLICT (message_id, sink) DO NOTHING");
            }
            e.execute(effects, "record effects").await?;
        }
    }
    for (i, staged) in transitions.iter().enumerate() {
        let (id, attempt, step, error, state, retry_at) = match &staged.t {
            Transition::Failed {
                id,
                attempt,
                retry_at,
                step,
                error,
            } => (id, *attempt, step, error, State::Failed, Some(*retry_at)),
            Transition::Retrying {
                id,
                attempt,
                step,
                error,
            } => (id, *attempt, step, error, State::Processing, None),
            Transition::Dead {
                id,
                attempt,
                step,
                error,
            } => (id, *attempt, step, error, State::Dead, None),
            _ => continue,
        };
        let mut s = Stmt::new(backend, "UPDATE messages SET state = ");
        s.bind(state.as_str());
        s.push(", attempts = ");
        s.bind(attempt);
        s.push(", next_attempt_at = ");
        s.bind(retry_at);
        s.push(", last_error = ");
        s.bind(
            staged
                .last_error
                .clone()
                .unwrap_or_else(|| format!("{step}: {error}")),
        );
        s.push(", updated_at = ");
        s.bind(now);
        s.push(" WHERE id = ");
        s.bind(id.as_str());
        s.push(" AND state IN ('received', 'processing')");
        applied[i] = e.execute(s, "record failure").await? == 1;
        if applied[i] {
            let mut s = Stmt::new(
                backend,
                "INSERT INTO message_errors (message_id, attempt, at, step, error) VALUES (",
            );
            s.bind(id.as_str());
            s.push(", ");
            s.bind(attempt);
            s.push(", ");
            s.bind(now);
            s.push(", ");
            s.bind(step.as_str());
            s.push(", ");
            s.bind(error.as_str());
            s.push(")");
            e.execute(s, "record attempt error").await?;
        }
    }
    Ok(applied)
}
