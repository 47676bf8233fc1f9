//! One running pipeline: its in-memory queue, its workers and the handle sources submit to.
//!
//! The journal is the buffer; the in-memory queue is a cache in front of it. `submit` journals
//! every message and acknowledges it whether or not a worker is free: with room in memory the
//! message goes straight to a worker, without it the message is journaled as due and the
//! pipeline's feeder (one task per pipeline, which also takes up retries, reprocessed and
//! recovered messages) claims it from the journal in order as room frees up.
//!
//! A pipeline runs until its own stop token is cancelled: at shutdown (a child of the engine's)
//! or when a reload replaces or removes it. A replaced handle is *retired*: what is still
//! submitted to it (a route step or a connection that held it) goes to its successor.
//!
//! The seams: `feeder.rs` (the journal → memory side), `worker.rs` (steps, sinks, outcomes),
//! `tickets.rs` (the broker's side with `queue: amqp://…`).

mod feeder;
mod tickets;
mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Metrics, Router};
use crate::config::PipelineConfig;
use crate::expr::Expr;
use crate::message::{Accepted, Message, NewMessage, now_ms};
use crate::sinks::Sink;
use crate::steps::Step;
use crate::store::{Journal, StoreError};
use crate::work::Work;
pub(crate) use tickets::Remote;
use tickets::{TicketRequest, ticket_batcher};
use worker::Limiter;
pub(in crate::runner) use worker::spawn_workers;

/// Why a message could not be accepted. Nothing was journaled: the sender must not be
/// acknowledged and should send again.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("pipeline {pipeline}: message not journaled: {source}")]
    Journal {
        pipeline: String,
        #[source]
        source: StoreError,
    },
    /// The pipeline's journal backlog is at its bound (`backlog_limit`, or the disk's free
    /// space floor): the sender keeps the message and sends it again later.
    #[error("pipeline {pipeline}: backlog limit reached: {reason}; send it again later")]
    Backlog { pipeline: String, reason: String },
    /// A reload removed the pipeline (or the engine is stopping): nothing takes messages
    /// for it any more.
    #[error("pipeline {pipeline} is not running (removed by a reload, or the engine stops)")]
    Stopped { pipeline: String },
}

impl SubmitError {
    /// Whether the sender should simply try again later (the engine is full, not broken).
    pub fn is_backlog(&self) -> bool {
        matches!(self, SubmitError::Backlog { .. })
    }
}

/// The intake span's facts, taken before the journal consumes the message (traces on).
struct TracedIntake {
    start: std::time::SystemTime,
    sender: Option<crate::telemetry::TraceParent>,
    routed_from: Option<String>,
    kind: String,
    facility: String,
}

enum Dispatch {
    Shared(async_channel::Sender<Message>),
    Partitioned(Vec<mpsc::Sender<Message>>),
}

pub(super) enum Receivers {
    Shared(async_channel::Receiver<Message>, usize),
    Partitioned(Vec<mpsc::Receiver<Message>>),
}

struct Inner {
    name: String,
    facility: String,
    description: String,
    source: String,
    /// The source's type (`mllp`, `http`, …: the first word of `source`), the `source` label.
    source_kind: String,
    journal: Journal,
    dispatch: Dispatch,
    queue_capacity: usize,
    concurrency: usize,
    ordering_key: Option<Expr>,
    dedup_key: Option<Expr>,
    dedup_window: Duration,
    max_attempts: i64,
    backoff: Duration,
    max_backoff: Duration,
    steps: Vec<(String, Arc<dyn Step>)>,
    sinks: Vec<Arc<dyn Sink>>,
    limit: Option<Limiter>,
    metrics: Arc<Metrics>,
    running: AtomicBool,
    error: Mutex<Option<String>>,
    /// This version's stop: a child of the engine's shutdown, cancelled by a reload that
    /// replaces or removes the pipeline. Sources, feeders and workers end on it.
    stop: CancellationToken,
    /// Replaced by a reload: submits go to the pipeline of the same name in `router`.
    retired: AtomicBool,
    router: Router,
    /// The file this version was loaded from, and when (ms since the epoch).
    file: String,
    loaded_at: i64,
    /// Why the last reload left this version running (its file did not validate), if it did.
    reload_error: Mutex<Option<String>>,
    /// Set when work goes through a broker (`queue: amqp://…`).
    remote: Option<Remote>,
    /// The ticket batcher's queue (with `remote`).
    tickets: Option<mpsc::Sender<TicketRequest>>,
    /// Messages of tickets in progress at once on this node (`concurrency`).
    slots: Arc<tokio::sync::Semaphore>,
    /// Ticket messages this node is working on now.
    active: Mutex<std::collections::HashSet<String>>,
    /// Room in the in-memory queue: one semaphore per partition (one for a shared queue). A
    /// message goes to memory only with a permit, so sending never waits; the worker gives the
    /// permit back when it takes the message.
    room: Vec<Arc<tokio::sync::Semaphore>>,
    /// Whether new messages go to memory or stay in the journal for the feeder.
    spill: Mutex<Spill>,
    /// Wakes the feeder: messages were journaled as due.
    feed: tokio::sync::Notify,
    backlog_limit: crate::config::BacklogLimit,
    backlog: Mutex<BacklogCount>,
    taps: super::tap::Taps,
    dry_run: bool,
    /// Traces on: the spans of intake, attempts, steps and deliveries. `None` costs one test.
    telemetry: Option<crate::telemetry::Tracer>,
}

/// What this pipeline holds in the journal, as last counted (`sync_backlog`, every few seconds)
/// plus what was accepted since; bytes are estimated from the mean body size.
#[derive(Debug, Default)]
struct BacklogCount {
    counted: i64,
    /// Accepted since the count in `counted` began (`backlog_mark` .. `sync_backlog`): a
    /// message accepted while the journal was being counted may be missing from the count, so
    /// it stays here until the next one.
    accepted_since: i64,
    body_bytes: u64,
    bodies: u64,
    /// Set when the journal's disk is below its free-space floor.
    disk_low: Option<String>,
}

/// The in-memory queue is a cache in front of the journal. Once it had no room for a message,
/// the pipeline is *spilled*: every new message is journaled as due (not handed to memory), so
/// none overtakes one that waits in the journal, and the feeder takes them up in journal order.
/// The feeder ends the spill once a claim found nothing due, no due append is in flight
/// (`pending`) and none committed since the claim began (`appended`). A pipeline starts
/// spilled: what a previous run left in the journal (a backlog, recovered in-flight messages)
/// goes first, and the feeder's first claim that finds nothing more due ends the spill.
#[derive(Debug)]
struct Spill {
    spilled: bool,
    /// The spill was logged (the queue filled up): its end is logged too.
    announced: bool,
    pending: u32,
    appended: u64,
}

/// Where a message goes after its append.
enum Place {
    /// To a worker in memory (its room is reserved).
    Memory(usize, tokio::sync::OwnedSemaphorePermit),
    /// Stays in the journal as due, for the feeder.
    Journal,
    /// Nowhere: a broker ticket, or a refused message journaled as dead.
    Elsewhere,
}

/// An open connection of a listener source, counted in `huizhen_listener_connections` until
/// dropped ([`PipelineHandle::connection`]).
pub struct ConnectionGuard {
    pipeline: PipelineHandle,
    listen: String,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let i = &self.pipeline.inner;
        i.metrics
            .connections(&i.name, &i.source_kind, &self.listen, -1);
    }
}

/// The handle to a running pipeline. Cheap to clone.
#[derive(Clone)]
pub struct PipelineHandle {
    inner: Arc<Inner>,
}

/// What `/api/pipelines` shows of a pipeline.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PipelineInfo {
    pub name: String,
    pub facility: String,
    pub description: String,
    pub source: String,
    pub steps: Vec<String>,
    pub sinks: Vec<String>,
    pub concurrency: usize,
    pub ordered: bool,
    pub queue_depth: usize,
    pub queue_capacity: usize,
    pub max_attempts: i64,
    pub running: bool,
    pub error: Option<String>,
    /// The file this version was loaded from.
    pub file: String,
    /// When this version started (ms since the epoch): at the engine's start or a reload.
    pub loaded_at: i64,
    /// Why the last reload kept this version (the file's errors), until a reload applies.
    pub reload_error: Option<String>,
}

/// What every pipeline is wired to: the engine's journal, metrics, shutdown, broker and the
/// registry of running pipelines.
#[derive(Clone)]
pub(in crate::runner) struct Wiring {
    pub journal: Journal,
    pub metrics: Arc<Metrics>,
    /// The engine's shutdown: the ticket batcher runs until it (a retired version's submits
    /// in flight still get their tickets published).
    pub shutdown: CancellationToken,
    pub remote: Option<Remote>,
    pub router: Router,
    /// Who watches messages pass (`huizhen test`, `huizhen tap`).
    pub taps: super::tap::Taps,
    /// Sinks are not called: what they would get is reported to the taps (`huizhen test`).
    pub dry_run: bool,
    /// The tracer when traces are on (`telemetry:`).
    pub telemetry: Option<crate::telemetry::Tracer>,
}

impl PipelineHandle {
    /// A pipeline version, not yet running: its workers, feeder and source are started by the
    /// engine (`runner::fleet`). `stop` ends this version.
    pub(super) fn new(
        cfg: &PipelineConfig,
        source: String,
        steps: Vec<(String, Arc<dyn Step>)>,
        sinks: Vec<Arc<dyn Sink>>,
        wiring: &Wiring,
        stop: CancellationToken,
        file: String,
    ) -> (PipelineHandle, Receivers) {
        let remote = wiring.remote.clone();
        let concurrency = cfg.concurrency.max(1);
        let capacity = cfg.queue.max(1);
        let partitions = if cfg.ordering_key.is_some() {
            concurrency
        } else {
            1
        };
        let room = (0..partitions)
            .map(|_| {
                Arc::new(tokio::sync::Semaphore::new(
                    capacity.div_ceil(partitions).max(1),
                ))
            })
            .collect();
        let (dispatch, receivers) = if cfg.ordering_key.is_some() {
            let per = capacity.div_ceil(concurrency).max(1);
            let (txs, rxs): (Vec<_>, Vec<_>) = (0..concurrency).map(|_| mpsc::channel(per)).unzip();
            (Dispatch::Partitioned(txs), Receivers::Partitioned(rxs))
        } else {
            let (tx, rx) = async_channel::bounded(capacity);
            (Dispatch::Shared(tx), Receivers::Shared(rx, concurrency))
        };
        let tickets = remote.as_ref().map(|r| {
            let (tx, rx) = mpsc::channel(capacity.max(1024));
            tokio::spawn(ticket_batcher(
                cfg.name.value.clone(),
                r.queue.clone(),
                rx,
                wiring.shutdown.clone(),
            ));
            tx
        });
        let source_kind = source
            .split_whitespace()
            .next()
            .unwrap_or("source")
            .to_owned();
        let labels: Vec<String> = steps
            .iter()
            .map(|(l, _)| l.clone())
            .chain(sinks.iter().map(|s| s.name().to_owned()))
            .collect();
        wiring
            .metrics
            .init_pipeline(&cfg.name.value, &source_kind, &labels);
        let handle = PipelineHandle {
            inner: Arc::new(Inner {
                name: cfg.name.value.clone(),
                facility: cfg.facility.clone(),
                description: cfg.description.clone(),
                source,
                source_kind,
                journal: wiring.journal.clone(),
                dispatch,
                queue_capacity: capacity,
                concurrency,
                ordering_key: cfg.ordering_key.clone(),
                dedup_key: cfg.dedup.key.clone(),
                dedup_window: cfg.dedup.window,
                max_attempts: i64::from(cfg.retry.max_attempts.max(1)),
                backoff: cfg.retry.backoff,
                max_backoff: cfg.retry.max_backoff,
                steps,
                sinks,
                limit: cfg
                    .deliver_limit
                    .as_ref()
                    .map(|l| Limiter::new(l, concurrency)),
                metrics: wiring.metrics.clone(),
                running: AtomicBool::new(false),
                error: Mutex::new(None),
                stop,
                retired: AtomicBool::new(false),
                router: wiring.router.clone(),
                file,
                loaded_at: now_ms(),
                reload_error: Mutex::new(None),
                remote,
                tickets,
                slots: Arc::new(tokio::sync::Semaphore::new(concurrency)),
                active: Mutex::default(),
                room,
                spill: Mutex::new(Spill {
                    spilled: true,
                    announced: false,
                    pending: 0,
                    appended: 0,
                }),
                feed: tokio::sync::Notify::new(),
                backlog_limit: cfg.backlog_limit,
                backlog: Mutex::default(),
                taps: wiring.taps.clone(),
                dry_run: wiring.dry_run,
                telemetry: wiring.telemetry.clone(),
            }),
        };
        (handle, receivers)
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn facility(&self) -> &str {
        &self.inner.facility
    }

    pub(super) fn dedup_window(&self) -> Duration {
        self.inner.dedup_window
    }

    /// Whether the source runs, and why it stopped; also the `huizhen_source_up` gauge.
    pub(super) fn set_running(&self, running: bool, error: Option<String>) {
        self.inner.running.store(running, Ordering::SeqCst);
        self.inner
            .metrics
            .source_up(&self.inner.name, &self.inner.source_kind, running);
        if let Ok(mut e) = self.inner.error.lock() {
            *e = error;
        }
    }

    /// Creates the source's protocol series at zero (its verdicts, a listener's connections).
    pub(super) fn init_source(&self, source: &dyn crate::sources::Source) {
        let i = &self.inner;
        i.metrics.init_source(
            &i.name,
            &i.source_kind,
            source.verdicts(),
            source.listens_on().as_deref(),
        );
    }

    /// Counts an answer the source gave its sender, in the protocol's words (`AA`, `AR`, …),
    /// for `huizhen_intake_verdicts_total`.
    pub fn verdict(&self, verdict: &str) {
        let i = &self.inner;
        i.metrics.verdict(&i.name, &i.source_kind, verdict);
    }

    /// Counts an open connection of the listener on `listen` until the guard is dropped, for
    /// `huizhen_listener_connections`.
    pub fn connection(&self, listen: &str) -> ConnectionGuard {
        let i = &self.inner;
        i.metrics.connections(&i.name, &i.source_kind, listen, 1);
        ConnectionGuard {
            pipeline: self.clone(),
            listen: listen.to_owned(),
        }
    }

    /// Whether the source runs now.
    pub fn is_running(&self) -> bool {
        self.inner.running.load(Ordering::SeqCst)
    }

    /// This version's stop token.
    pub(super) fn stop_token(&self) -> CancellationToken {
        self.inner.stop.clone()
    }

    /// The file this version was loaded from.
    pub fn file(&self) -> &str {
        &self.inner.file
    }

    /// Records why a reload kept this version (`None`: the last reload had nothing against it).
    pub(super) fn set_reload_error(&self, error: Option<String>) {
        if let Ok(mut e) = self.inner.reload_error.lock() {
            *e = error;
        }
    }

    /// Hands this version's intake to its successor in the registry and stops it: sources,
    /// feeder and workers end (a worker finishes the message it is on).
    pub(super) fn retire(&self) {
        self.inner.retired.store(true, Ordering::SeqCst);
        self.inner.stop.cancel();
    }

    /// The same version (not a successor of the same name).
    pub fn same_version(&self, other: &PipelineHandle) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Messages waiting in memory for a worker.
    pub fn queue_depth(&self) -> usize {
        match &self.inner.dispatch {
            Dispatch::Shared(tx) => tx.len(),
            Dispatch::Partitioned(txs) => txs.iter().map(|t| t.max_capacity() - t.capacity()).sum(),
        }
    }

    pub fn info(&self) -> PipelineInfo {
        let i = &self.inner;
        PipelineInfo {
            name: i.name.clone(),
            facility: i.facility.clone(),
            description: i.description.clone(),
            source: i.source.clone(),
            steps: i.steps.iter().map(|(n, _)| n.clone()).collect(),
            sinks: i.sinks.iter().map(|s| s.name().to_owned()).collect(),
            concurrency: i.concurrency,
            ordered: i.ordering_key.is_some(),
            queue_depth: self.queue_depth(),
            queue_capacity: i.queue_capacity,
            max_attempts: i.max_attempts,
            running: i.running.load(Ordering::SeqCst),
            error: i.error.lock().ok().and_then(|e| e.clone()),
            file: i.file.clone(),
            loaded_at: i.loaded_at,
            reload_error: i.reload_error.lock().ok().and_then(|e| e.clone()),
        }
    }

    /// Journals a message and queues it for processing. Returns once it is committed; the
    /// caller may then acknowledge its sender. Waits while the queue is full.
    pub async fn submit(&self, msg: NewMessage) -> Result<Accepted, SubmitError> {
        if self.inner.retired.load(Ordering::SeqCst) {
            // A reload replaced this version: its successor takes the message (it journals it
            // as due; the new workers start once this version's have finished).
            return match self.inner.router.get(&self.inner.name) {
                Some(next) if !next.same_version(self) => Box::pin(next.submit(msg)).await,
                _ => Err(SubmitError::Stopped {
                    pipeline: self.inner.name.clone(),
                }),
            };
        }
        self.submit_here(msg).await
    }

    async fn submit_here(&self, mut msg: NewMessage) -> Result<Accepted, SubmitError> {
        let i = &self.inner;
        // Traces on: what the intake span needs of the message before the journal takes it.
        let traced = i.telemetry.as_ref().map(|_| TracedIntake {
            start: std::time::SystemTime::now(),
            sender: msg.sender_span,
            routed_from: msg.parent_id.clone(),
            kind: msg.kind.clone(),
            facility: if msg.facility.is_empty() {
                i.facility.clone()
            } else {
                msg.facility.clone()
            },
        });
        msg.pipeline.clone_from(&i.name);
        if msg.facility.is_empty() {
            msg.facility.clone_from(&i.facility);
        }
        if msg.dedup_key.is_none()
            && let Some(expr) = &i.dedup_key
        {
            let mut w = Work::from_message(&preview(&msg));
            match expr.eval_string(&mut w) {
                Ok(k) if !k.is_empty() => msg.dedup_key = Some(k),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(pipeline = %i.name, error = %e, "dedup key not computed; the message is accepted without one")
                }
            }
        }
        if let Some(r) = &i.remote {
            msg.owner = Some(r.node.to_string());
        }
        if msg.rejected.is_none()
            && let Some(reason) = self.refusing()
        {
            i.metrics.backlog_refused(&i.name);
            i.metrics.intake(&i.name, &i.source_kind, "busy");
            return Err(SubmitError::Backlog {
                pipeline: i.name.clone(),
                reason,
            });
        }
        let body_len = msg.body.len() as u64;
        if msg.rejected.is_none()
            && i.ordering_key.is_some()
            && let Some(h) = self.ordering_hash(&preview(&msg))
        {
            msg.ordering = Some((h, h % i.concurrency.max(1) as i64));
        }
        let place = if i.remote.is_some() || msg.rejected.is_some() {
            Place::Elsewhere
        } else {
            let part = msg.ordering.map_or(0, |o| o.1 as usize);
            self.reserve(part)
        };
        msg.due = matches!(place, Place::Journal);
        // The copy the in-memory queue (or the broker's ticket) gets, made before the journal
        // takes `msg` and seals it in place: one copy of the body per message (there were
        // three), none for a refused message or one that waits in the journal.
        let rejected = msg.rejected.is_some();
        let queued = (!rejected && !matches!(place, Place::Journal)).then(|| preview(&msg));
        let trace_id = msg.trace_id.clone();
        let appended = i.journal.append(msg).await;
        if matches!(place, Place::Journal) {
            // The due row (if any) is committed now: the feeder may end the spill only after
            // it has seen it.
            let mut s = self.spill();
            s.pending -= 1;
            if matches!(appended, Ok(ref a) if !a.duplicate) {
                s.appended += 1;
            }
            drop(s);
            i.feed.notify_one();
        }
        let accepted = appended.map_err(|source| {
            i.metrics.intake(&i.name, &i.source_kind, "failed");
            SubmitError::Journal {
                pipeline: i.name.clone(),
                source,
            }
        })?;
        if let (Some(t), Some(traced)) = (&i.telemetry, traced) {
            let outcome = if accepted.duplicate {
                "duplicate"
            } else if rejected {
                "refused"
            } else {
                "accepted"
            };
            t.intake(crate::telemetry::Intake {
                message_id: &accepted.id,
                trace_id: trace_id.as_deref().unwrap_or(&accepted.id),
                pipeline: &i.name,
                facility: &traced.facility,
                source: &i.source_kind,
                kind: &traced.kind,
                outcome,
                sender: traced.sender,
                routed_from: traced.routed_from.as_deref(),
                start: traced.start,
            });
        }
        // A resend or a refused message is a sign of life of the sender too.
        i.metrics.last_message(&i.name, &i.source_kind, now_ms());
        if accepted.duplicate {
            i.metrics.duplicate(&i.name);
            i.metrics.intake(&i.name, &i.source_kind, "duplicate");
            return Ok(accepted);
        }
        if rejected {
            // Journaled as a dead letter by the source's decision; nothing to run.
            i.metrics.received(&i.name);
            i.metrics.dead(&i.name);
            i.metrics.intake(&i.name, &i.source_kind, "refused");
            return Ok(accepted);
        }
        i.metrics.received(&i.name);
        i.metrics.intake(&i.name, &i.source_kind, "accepted");
        if let Ok(mut b) = i.backlog.lock() {
            b.accepted_since += 1;
            b.body_bytes += body_len;
            b.bodies += 1;
        }
        let Some(mut m) = queued else {
            // Journaled as due: the feeder takes it up from the journal.
            return Ok(accepted);
        };
        m.id.clone_from(&accepted.id);
        m.trace_id = trace_id.unwrap_or_else(|| accepted.id.clone());
        if accepted.reused_key {
            m.headers.insert(
                crate::message::REUSED_KEY_HEADER.into(),
                "reused-key".into(),
            );
        }
        if i.retired.load(Ordering::SeqCst) && matches!(place, Place::Memory(..)) {
            // A reload retired this version while the message was being journaled: its workers
            // may be gone, so the successor's feeder takes it from the journal.
            drop(place);
            match i.journal.store().make_due(&m.id).await {
                Ok(_) => {
                    if let Some(next) = i.router.get(&i.name) {
                        next.wake_feeder();
                    }
                }
                Err(e) => {
                    tracing::warn!(pipeline = %i.name, id = %m.id, error = %e, "a message accepted during a reload waits in the journal until the next start")
                }
            }
            return Ok(accepted);
        }
        match place {
            Place::Elsewhere => self.publish_ticket(&m).await,
            Place::Memory(part, permit) => self.send(part, m, permit),
            Place::Journal => {}
        }
        Ok(accepted)
    }

    /// Why new messages are refused now, if they are: the backlog is at `backlog_limit` or the
    /// journal's disk below its free-space floor.
    pub fn refusing(&self) -> Option<String> {
        let i = &self.inner;
        let b = i.backlog.lock().ok()?;
        if let Some(d) = &b.disk_low {
            return Some(d.clone());
        }
        let waiting = (b.counted + b.accepted_since).max(0) as u64;
        if waiting >= i.backlog_limit.messages {
            return Some(format!(
                "{waiting} messages wait in the journal (backlog_limit.messages {})",
                i.backlog_limit.messages
            ));
        }
        let mean = b.body_bytes.checked_div(b.bodies).unwrap_or(0);
        let bytes = waiting.saturating_mul(mean);
        if bytes >= i.backlog_limit.bytes {
            return Some(format!(
                "about {bytes} bytes wait in the journal (backlog_limit.bytes {})",
                i.backlog_limit.bytes
            ));
        }
        None
    }

    /// Taken just before the journal's backlog is counted: the messages accepted so far, which
    /// the count includes (pass it to [`PipelineHandle::sync_backlog`]).
    pub(super) fn backlog_mark(&self) -> i64 {
        self.inner.backlog.lock().map_or(0, |b| b.accepted_since)
    }

    /// The journal's count of this pipeline's unfinished messages, and the disk's state. `mark`
    /// is [`PipelineHandle::backlog_mark`] from before the count began: only what was accepted
    /// before it is in the count; what was accepted while it ran still counts on top of it.
    pub(super) fn sync_backlog(&self, counted: i64, disk_low: Option<String>, mark: i64) {
        let i = &self.inner;
        let was = self.refusing();
        if let Ok(mut b) = i.backlog.lock() {
            b.counted = counted;
            b.accepted_since = (b.accepted_since - mark).max(0);
            b.disk_low = disk_low;
        }
        match (was, self.refusing()) {
            (None, Some(r)) => {
                tracing::warn!(pipeline = %i.name, reason = %r, "backlog limit reached: sources refuse new messages")
            }
            (Some(_), None) => {
                tracing::info!(pipeline = %i.name, "backlog below its limit again: sources accept")
            }
            _ => {}
        }
    }

    fn spill(&self) -> std::sync::MutexGuard<'_, Spill> {
        self.inner.spill.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Room in memory for a new message of partition `part`, or the journal when there is none
    /// (or the pipeline is spilled already: nothing may overtake what waits in the journal).
    fn reserve(&self, part: usize) -> Place {
        let i = &self.inner;
        let mut s = self.spill();
        if !s.spilled
            && let Ok(permit) = i.room[part].clone().try_acquire_owned()
        {
            return Place::Memory(part, permit);
        }
        if !s.spilled {
            s.spilled = true;
            s.announced = true;
            tracing::info!(pipeline = %i.name, "in-memory queue full: new messages wait in the journal");
        }
        s.pending += 1;
        Place::Journal
    }

    /// Hands a message to its partition's queue with the room reserved for it (never waits).
    fn send(&self, part: usize, m: Message, permit: tokio::sync::OwnedSemaphorePermit) {
        let i = &self.inner;
        let sent = match &i.dispatch {
            Dispatch::Shared(tx) => tx.try_send(m).is_ok(),
            Dispatch::Partitioned(txs) => txs[part].try_send(m).is_ok(),
        };
        if sent {
            // The worker that takes it gives the room back.
            permit.forget();
        } else if !i.stop.is_cancelled() {
            // Cannot happen while permits match the channel's capacity; the message is
            // journaled `received` and recovered at the next start.
            tracing::error!(pipeline = %i.name, "in-memory queue refused a message it had room for");
        }
    }
}

/// A `Message` view of a not-yet-journaled message (for expressions evaluated at submit time).
fn preview(m: &NewMessage) -> Message {
    m.preview()
}
