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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use sqlx::any::{Any, AnyArguments};
use sqlx::query::Query;
use sqlx::{AnyConnection, Arguments, AssertSqlSafe, Connection, Encode, Row, Type};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{Backend, Result, Store, StoreError, q};
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
        msg: NewMessage,
        reply: oneshot::Sender<Result<Accepted>>,
    },
    Transition {
        t: Transition,
        reply: Option<oneshot::Sender<Result<bool>>>,
    },
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
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").finish_non_exhaustive()
    }
}

impl Journal {
    /// Starts the writer task(s) on the current tokio runtime.
    pub fn start(store: Store, opts: JournalOptions) -> Journal {
        let (tx, rx) = mpsc::channel(opts.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let counters = Arc::new(Counters::default());
        let writers = match store.backend() {
            super::Backend::Sqlite => 1,
            super::Backend::Postgres => opts.writers.max(1),
        };
        for _ in 0..writers {
            let rx = rx.clone();
            let store = store.clone();
            let counters = counters.clone();
            let max_batch = opts.max_batch.max(1);
            tokio::spawn(async move { writer_loop(store, rx, counters, max_batch).await });
        }
        Journal {
            tx,
            store,
            counters,
        }
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
    pub async fn append(&self, msg: NewMessage) -> Result<Accepted> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Op::Append { msg, reply })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Applies a transition and waits for its commit. Returns whether the message was in a state
    /// that allowed it.
    pub async fn transition(&self, t: Transition) -> Result<bool> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Op::Transition {
                t,
                reply: Some(reply),
            })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Queues a transition without waiting for it (used for `processing`, which is informational:
    /// if it is lost in a crash the message is still `received` and is recovered the same way).
    pub async fn transition_nowait(&self, t: Transition) {
        let _ = self.tx.send(Op::Transition { t, reply: None }).await;
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
        commit_batch(&store, batch).await;
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
    hash: Option<String>,
    headers_json: String,
    reused_key: bool,
}

enum AppendPlan {
    Insert(usize),
    Duplicate(Accepted),
}

async fn commit_batch(store: &Store, batch: Vec<Op>) {
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
        let msgs: Vec<&NewMessage> = appends.iter().map(|(m, _)| m).collect();
        let ts: Vec<&Transition> = transitions.iter().map(|(t, _)| t).collect();
        apply(store, &msgs, &ts, now).await
    };
    match result {
        Ok((accepted, applied)) => {
            for ((_, reply), a) in appends.into_iter().zip(accepted) {
                let _ = reply.send(Ok(a));
            }
            for ((_, reply), ok) in transitions.into_iter().zip(applied) {
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(ok));
                }
            }
        }
        Err(err) if appends.len() + transitions.len() == 1 => {
            tracing::error!(error = %err, "journal write failed");
            if let Some((_, reply)) = appends.into_iter().next() {
                let _ = reply.send(Err(err));
            } else if let Some((_, Some(reply))) = transitions.into_iter().next() {
                let _ = reply.send(Err(err));
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, ops = appends.len() + transitions.len(), "journal batch failed; retrying its operations one by one");
            for (msg, reply) in appends {
                let r = apply(store, &[&msg], &[], now)
                    .await
                    .map(|(mut a, _)| a.remove(0));
                let _ = reply.send(r);
            }
            for (t, reply) in transitions {
                let r = apply(store, &[], &[&t], now)
                    .await
                    .map(|(_, mut a)| a.remove(0));
                if let Err(e) = &r {
                    tracing::error!(error = %e, message = t.id(), "journal transition failed");
                }
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
        }
    }
}

/// Most rows in one multi-row statement.
const CHUNK: usize = 500;

/// Applies appends and transitions in one transaction.
async fn apply(
    store: &Store,
    appends: &[&NewMessage],
    transitions: &[&Transition],
    now: i64,
) -> Result<(Vec<Accepted>, Vec<bool>)> {
    let mut conn = store
        .write_pool()
        .acquire()
        .await
        .map_err(q("acquire writer connection"))?;
    let backend = store.backend();
    // The common batch, fresh messages without dedup keys and nothing else, is a single INSERT
    // statement: it is atomic and durable on its own (autocommit), which saves the round trips
    // of BEGIN and COMMIT.
    if transitions.is_empty()
        && appends.len() <= CHUNK
        && appends.iter().all(|m| m.dedup_key.is_none())
    {
        let accepted = append_all(&mut conn, backend, appends, now).await?;
        return Ok((accepted, Vec::new()));
    }
    let mut tx = conn.begin().await.map_err(q("begin journal batch"))?;
    let accepted = append_all(&mut tx, backend, appends, now).await?;
    let applied = transition_all(&mut tx, backend, transitions, now).await?;
    tx.commit().await.map_err(q("commit journal batch"))?;
    Ok((accepted, applied))
}

/// SQL text and arguments for the writer's statements. Like `super::sql::Sql`, but SQLite gets
/// anonymous `?` placeholders: sqlx's SQLite driver binds a numbered `$n` parameter by asking
/// SQLite for its name (`sqlite3_bind_parameter_name`, a linear scan of the statement's
/// parameters), which makes binding a multi-row insert quadratic in its number of parameters.
/// PostgreSQL needs `$n`. Values are bound in the order their placeholders appear.
struct Stmt {
    text: String,
    args: AnyArguments,
    n: usize,
    numbered: bool,
}

impl Stmt {
    fn new(backend: Backend, text: &str) -> Stmt {
        Stmt {
            text: text.to_owned(),
            args: AnyArguments::default(),
            n: 0,
            numbered: backend == Backend::Postgres,
        }
    }

    fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }

    fn bind<'t, T>(&mut self, value: T)
    where
        T: Encode<'t, Any> + Type<Any>,
    {
        self.n += 1;
        if self.numbered {
            use std::fmt::Write;
            let _ = write!(self.text, "${}", self.n);
        } else {
            self.text.push('?');
        }
        // Adding an argument to AnyArguments only fails for types the Any driver cannot encode,
        // which the bounds above rule out.
        let _ = self.args.add(value);
    }

    fn query(self) -> Query<'static, Any, AnyArguments> {
        sqlx::query_with(AssertSqlSafe(self.text), self.args)
    }
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

async fn known_keys<'a>(
    conn: &mut AnyConnection,
    backend: Backend,
    appends: &[&'a NewMessage],
) -> Result<HashMap<(&'a str, &'a str), Vec<KnownKey>>> {
    let mut by_pipeline: BTreeMap<&'a str, Vec<&'a str>> = BTreeMap::new();
    for m in appends {
        if let Some(k) = m.dedup_key.as_deref() {
            by_pipeline.entry(m.pipeline.as_str()).or_default().push(k);
        }
    }
    let mut out: HashMap<(&'a str, &'a str), Vec<KnownKey>> = HashMap::new();
    for (pipeline, mut keys) in by_pipeline {
        keys.sort_unstable();
        keys.dedup();
        for chunk in keys.chunks(500) {
            let mut s = Stmt::new(
                backend,
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
            let rows = s
                .query()
                .fetch_all(&mut *conn)
                .await
                .map_err(q("look up dedup keys"))?;
            for r in &rows {
                let key: String = r.try_get("dedup_key").map_err(q("decode dedup"))?;
                // Map back to the borrowed key of this batch.
                let Some(k) = chunk.iter().find(|k| **k == key) else {
                    continue;
                };
                out.entry((pipeline, *k)).or_default().push(KnownKey {
                    id: r.try_get("id").map_err(q("decode dedup"))?,
                    hash: r.try_get("body_hash").map_err(q("decode dedup"))?,
                    state: r.try_get("state").map_err(q("decode dedup"))?,
                    headers: r.try_get("headers").map_err(q("decode dedup"))?,
                });
            }
        }
    }
    Ok(out)
}

async fn append_all(
    conn: &mut AnyConnection,
    backend: Backend,
    appends: &[&NewMessage],
    now: i64,
) -> Result<Vec<Accepted>> {
    let mut plans = Vec::with_capacity(appends.len());
    let mut rows: Vec<Prepared> = Vec::with_capacity(appends.len());
    // Dedup keys seen earlier in this batch: (pipeline, key) -> [(hash, row index)].
    let mut in_batch: HashMap<(&str, &str), Vec<(String, usize)>> = HashMap::new();
    // Dedup keys already in the journal, looked up once per batch (one query per pipeline and
    // 500 keys, not one per message).
    let known = known_keys(conn, backend, appends).await?;
    for msg in appends {
        let mut reused_key = false;
        let mut hash = None;
        if let Some(key) = msg.dedup_key.as_deref() {
            let h = body_hash(&msg.body);
            let mut dup = None;
            if let Some(prev) = in_batch.get(&(msg.pipeline.as_str(), key)) {
                for (ph, idx) in prev {
                    if *ph == h {
                        dup = Some(Accepted {
                            id: rows[*idx].id.clone(),
                            duplicate: true,
                            reused_key: rows[*idx].reused_key,
                            state: State::Received,
                        });
                    } else {
                        reused_key = true;
                    }
                }
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
        let mut headers = msg.headers.clone();
        if reused_key {
            headers.insert(REUSED_KEY_HEADER.into(), "reused-key".into());
            tracing::warn!(
                pipeline = %msg.pipeline,
                dedup_key = msg.dedup_key.as_deref().unwrap_or(""),
                "dedup key reused with a different body: processing it and flagging it"
            );
        }
        let headers_json = serde_json::to_string(&headers).unwrap_or_else(|_| "{}".into());
        let idx = rows.len();
        if let (Some(key), Some(h)) = (msg.dedup_key.as_deref(), hash.as_ref()) {
            in_batch
                .entry((msg.pipeline.as_str(), key))
                .or_default()
                .push((h.clone(), idx));
        }
        rows.push(Prepared {
            id: new_id(),
            msg,
            hash,
            headers_json,
            reused_key,
        });
        plans.push(AppendPlan::Insert(idx));
    }

    // Multi-row inserts. A concurrent writer (PostgreSQL) may have inserted the same dedup key in
    // the meantime: ON CONFLICT DO NOTHING, then the rows that did not come back are duplicates.
    let mut lost: Vec<usize> = Vec::new();
    for (chunk_no, chunk) in rows.chunks(CHUNK).enumerate() {
        let deduped = chunk.iter().any(|r| r.hash.is_some());
        let mut s = Stmt::new(
            backend,
            "INSERT INTO messages (id, facility, pipeline, kind, body, headers, source, received_at, trace_id, dedup_key, body_hash, parent_id, state, updated_at) VALUES ",
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
            s.bind(r.msg.trace_id.clone().unwrap_or_else(|| r.id.clone()));
            s.push(", ");
            s.bind(r.msg.dedup_key.as_deref());
            s.push(", ");
            s.bind(r.hash.as_deref());
            s.push(", ");
            s.bind(r.msg.parent_id.as_deref());
            s.push(", 'received', ");
            s.bind(now);
            s.push(")");
        }
        if deduped {
            s.push(" ON CONFLICT DO NOTHING RETURNING id");
            let back = s
                .query()
                .fetch_all(&mut *conn)
                .await
                .map_err(q("append messages"))?;
            let ids: std::collections::HashSet<String> = back
                .iter()
                .filter_map(|r| r.try_get::<String, _>("id").ok())
                .collect();
            for (i, r) in chunk.iter().enumerate() {
                if !ids.contains(&r.id) {
                    lost.push(chunk_no * CHUNK + i);
                }
            }
        } else {
            s.query()
                .execute(&mut *conn)
                .await
                .map_err(q("append messages"))?;
        }
    }
    // Messages their source refused are kept, as dead letters with the reason (rare: one
    // statement each, in the same transaction as their insert).
    for r in rows.iter().filter(|r| r.msg.rejected.is_some()) {
        let mut s = Stmt::new(backend, "UPDATE messages SET state = 'dead', last_error = ");
        s.bind(r.msg.rejected.as_deref());
        s.push(" WHERE id = ");
        s.bind(r.id.as_str());
        s.query()
            .execute(&mut *conn)
            .await
            .map_err(q("record refused message"))?;
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
        let row = s
            .query()
            .fetch_one(&mut *conn)
            .await
            .map_err(q("look up raced duplicate"))?;
        let st: String = row.try_get("state").map_err(q("decode dedup"))?;
        raced.insert(
            idx,
            Accepted {
                id: row.try_get("id").map_err(q("decode dedup"))?,
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
            AppendPlan::Insert(idx) => raced.remove(&idx).unwrap_or_else(|| Accepted {
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

async fn transition_all(
    conn: &mut AnyConnection,
    backend: Backend,
    transitions: &[&Transition],
    now: i64,
) -> Result<Vec<bool>> {
    let mut applied = vec![false; transitions.len()];
    // Processing first, then done: a message's processing marker always precedes its outcome.
    let processing: Vec<usize> = (0..transitions.len())
        .filter(|&i| matches!(transitions[i], Transition::Processing { .. }))
        .collect();
    for chunk in processing.chunks(CHUNK) {
        let mut s = Stmt::new(
            backend,
            "UPDATE messages SET state = 'processing', updated_at = ",
        );
        s.bind(now);
        s.push(" WHERE state = 'received' AND next_attempt_at IS NULL AND id IN (");
        for (n, &i) in chunk.iter().enumerate() {
            if n > 0 {
                s.push(", ");
            }
            s.bind(transitions[i].id());
        }
        s.push(")");
        s.query()
            .execute(&mut *conn)
            .await
            .map_err(q("mark processing"))?;
        for &i in chunk {
            applied[i] = true;
        }
    }
    let done: Vec<usize> = (0..transitions.len())
        .filter(|&i| matches!(transitions[i], Transition::Done { .. }))
        .collect();
    for chunk in done.chunks(CHUNK) {
        let mut s = Stmt::new(
            backend,
            "UPDATE messages SET state = 'done', next_attempt_at = NULL, last_error = NULL, updated_at = ",
        );
        s.bind(now);
        s.push(" WHERE state IN ('received', 'processing') AND id IN (");
        for (n, &i) in chunk.iter().enumerate() {
            if n > 0 {
                s.push(", ");
            }
            s.bind(transitions[i].id());
        }
        s.push(") RETURNING id");
        let back = s
            .query()
            .fetch_all(&mut *conn)
            .await
            .map_err(q("mark done"))?;
        let ids: std::collections::HashSet<String> = back
            .iter()
            .filter_map(|r| r.try_get::<String, _>("id").ok())
            .collect();
        let mut effects = Stmt::new(
            backend,
            "INSERT INTO effects (message_id, sink, pipeline, body, recorded_at) VALUES ",
        );
        let mut any_effect = false;
        for &i in chunk {
            let Transition::Done { id, effects: e } = transitions[i] else {
                continue;
            };
            applied[i] = ids.contains(id);
            if !applied[i] {
                continue;
            }
            for eff in e {
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
            effects.push(" ON CONFLICT (message_id, sink) DO NOTHING");
            effects
                .query()
                .execute(&mut *conn)
                .await
                .map_err(q("record effects"))?;
        }
    }
    for (i, t) in transitions.iter().enumerate() {
        let (id, attempt, step, error, state, retry_at) = match t {
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
        s.bind(format!("{step}: {error}"));
        s.push(", updated_at = ");
        s.bind(now);
        s.push(" WHERE id = ");
        s.bind(id.as_str());
        s.push(" AND state IN ('received', 'processing')");
        let r = s
            .query()
            .execute(&mut *conn)
            .await
            .map_err(q("record failure"))?;
        applied[i] = r.rows_affected() == 1;
        if applied[i] {
            let mut e = Stmt::new(
                backend,
                "INSERT INTO message_errors (message_id, attempt, at, step, error) VALUES (",
            );
            e.bind(id.as_str());
            e.push(", ");
            e.bind(attempt);
            e.push(", ");
            e.bind(now);
            e.push(", ");
            e.bind(step.as_str());
            e.push(", ");
            e.bind(error.as_str());
            e.push(")");
            e.query()
                .execute(&mut *conn)
                .await
                .map_err(q("record attempt error"))?;
        }
    }
    Ok(applied)
}
