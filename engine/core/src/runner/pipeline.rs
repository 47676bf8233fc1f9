//! One running pipeline: its in-memory queue, its workers and the handle sources submit to.
//!
//! The journal is the buffer; the in-memory queue is a cache in front of it. `submit` journals
//! every message and acknowledges it whether or not a worker is free: with room in memory the
//! message goes straight to a worker, without it the message is journaled as due and the
//! pipeline's feeder (one task per pipeline, which also takes up retries, reprocessed and
//! recovered messages) claims it from the journal in order as room frees up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Metrics;
use crate::cluster::{Handled, Ticket, WorkQueue};
use crate::config::PipelineConfig;
use crate::expr::Expr;
use crate::message::{Accepted, Message, NewMessage, State, now_ms};
use crate::sinks::Sink;
use crate::steps::Step;
use crate::store::{Journal, StoreError, Transition};
use crate::work::{Flow, StepError, Work};

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
}

impl SubmitError {
    /// Whether the sender should simply try again later (the engine is full, not broken).
    pub fn is_backlog(&self) -> bool {
        matches!(self, SubmitError::Backlog { .. })
    }
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
    shutdown: CancellationToken,
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
}

/// What this pipeline holds in the journal, as last counted (`sync_backlog`, every few seconds)
/// plus what was accepted since; bytes are estimated from the mean body size.
#[derive(Debug, Default)]
struct BacklogCount {
    counted: i64,
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

/// Waits for the `done` commits of a ticket's messages: `Ack` when all committed, `Requeue`
/// when one could not be recorded (the redelivered ticket finds the others done).
async fn committed(commits: Vec<oneshot::Receiver<()>>) -> Handled {
    for c in commits {
        if c.await.is_err() {
            return Handled::Requeue;
        }
    }
    Handled::Ack
}

/// A message whose ticket the batcher should publish.
struct TicketRequest {
    id: String,
    partition: Option<u32>,
    confirmed: oneshot::Sender<()>,
}

/// Publishes tickets in batches: whatever is waiting when the batcher comes round goes out
/// together, one broker message per partition (as the journal's group commit does for
/// appends). Tickets are sent in order on one channel; their confirms are awaited concurrently
/// (up to 16 batches), so the broker's confirm latency does not limit throughput. A ticket that
/// cannot be sent or confirmed is tried again with backoff while the broker is away.
async fn ticket_batcher(
    pipeline: String,
    queue: Arc<dyn WorkQueue>,
    mut rx: mpsc::Receiver<TicketRequest>,
    shutdown: CancellationToken,
) {
    const MAX: usize = 512;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(16));
    loop {
        let first = tokio::select! {
            r = rx.recv() => match r { Some(r) => r, None => return },
            _ = shutdown.cancelled() => return,
        };
        let mut batch = vec![first];
        // Let the other submitters woken by the same journal commit join this batch.
        tokio::task::yield_now().await;
        while batch.len() < MAX {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let mut groups: std::collections::BTreeMap<Option<u32>, Vec<TicketRequest>> =
            std::collections::BTreeMap::new();
        for r in batch {
            groups.entry(r.partition).or_default().push(r);
        }
        for (partition, reqs) in groups {
            let ticket = Ticket {
                pipeline: pipeline.clone(),
                partition,
                ids: reqs.iter().map(|r| r.id.clone()).collect(),
            };
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                return;
            };
            let Some(confirm) = send_ticket(&*queue, &ticket, &shutdown).await else {
                return;
            };
            let queue = queue.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut confirm = confirm;
                loop {
                    match confirm.await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(pipeline = %ticket.pipeline, error = %e, "ticket not confirmed by the broker; sending it again");
                            match send_ticket(&*queue, &ticket, &shutdown).await {
                                Some(c) => confirm = c,
                                None => return,
                            }
                        }
                    }
                }
                drop(permit);
                for r in reqs {
                    let _ = r.confirmed.send(());
                }
            });
        }
    }
}

/// Sends one ticket, trying again with backoff until it is sent; `None` on shutdown.
async fn send_ticket(
    queue: &dyn WorkQueue,
    ticket: &Ticket,
    shutdown: &CancellationToken,
) -> Option<crate::cluster::Confirm> {
    let mut attempt = 0u32;
    loop {
        match queue.publish(ticket).await {
            Ok(c) => return Some(c),
            Err(e) => {
                let wait = Duration::from_millis(100u64 << attempt.min(5));
                attempt += 1;
                if attempt == 1 || attempt.is_multiple_of(20) {
                    tracing::warn!(pipeline = %ticket.pipeline, error = %e, attempt, "ticket not sent to the broker; trying again");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        tracing::warn!(pipeline = %ticket.pipeline, "shutting down with tickets unpublished; their messages stay journaled for another node");
                        return None;
                    }
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// A pipeline's link to the cluster's work queue.
#[derive(Clone)]
pub(crate) struct Remote {
    pub queue: Arc<dyn WorkQueue>,
    /// This node's id (messages it accepts or claims are owned by it).
    pub node: Arc<str>,
    /// A holder without a heartbeat for this long is dead.
    pub dead_after: Duration,
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
}

impl PipelineHandle {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        cfg: &PipelineConfig,
        source: String,
        steps: Vec<(String, Arc<dyn Step>)>,
        sinks: Vec<Arc<dyn Sink>>,
        journal: Journal,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        remote: Option<Remote>,
    ) -> (PipelineHandle, Receivers) {
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
                shutdown.clone(),
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
        metrics.init_pipeline(&cfg.name.value, &source_kind, &labels);
        let handle = PipelineHandle {
            inner: Arc::new(Inner {
                name: cfg.name.value.clone(),
                facility: cfg.facility.clone(),
                description: cfg.description.clone(),
                source,
                source_kind,
                journal,
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
                limit: cfg.deliver_limit.as_ref().map(|l| Limiter {
                    per_second: l.per_second.max(f64::MIN_POSITIVE),
                    burst: l.burst.max(1.0),
                    bucket: Mutex::new((l.burst.max(1.0), Instant::now())),
                    in_flight: Arc::new(tokio::sync::Semaphore::new(
                        l.max_in_flight.unwrap_or(concurrency).max(1),
                    )),
                }),
                metrics,
                running: AtomicBool::new(false),
                error: Mutex::new(None),
                shutdown,
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
        }
    }

    /// Journals a message and queues it for processing. Returns once it is committed; the
    /// caller may then acknowledge its sender. Waits while the queue is full.
    pub async fn submit(&self, mut msg: NewMessage) -> Result<Accepted, SubmitError> {
        let i = &self.inner;
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

    /// The journal's count of this pipeline's unfinished messages, and the disk's state.
    pub(super) fn sync_backlog(&self, counted: i64, disk_low: Option<String>) {
        let i = &self.inner;
        let was = self.refusing();
        if let Ok(mut b) = i.backlog.lock() {
            b.counted = counted;
            b.accepted_since = 0;
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
        } else if !i.shutdown.is_cancelled() {
            // Cannot happen while permits match the channel's capacity; the message is
            // journaled `received` and recovered at the next start.
            tracing::error!(pipeline = %i.name, "in-memory queue refused a message it had room for");
        }
    }

    /// Publishes the ticket of a journaled message and waits for the broker's confirm (the
    /// batcher tries again with backoff while the broker is away: the sender waits, which is
    /// back-pressure). On shutdown it gives up: the message is journaled and owned by this
    /// node, so once this node is gone another node adopts it and publishes the ticket again.
    pub(crate) async fn publish_ticket(&self, m: &Message) {
        let _ = self.queue_ticket(m).await.await;
    }

    /// Hands a message's ticket to the batcher; the returned receiver resolves once the
    /// broker confirmed it (an error: the batcher gave up at shutdown).
    pub(crate) async fn queue_ticket(&self, m: &Message) -> oneshot::Receiver<()> {
        let i = &self.inner;
        let (tx, rx) = oneshot::channel();
        let Some(b) = &i.tickets else {
            return rx;
        };
        let partition = i
            .ordering_key
            .as_ref()
            .map(|_| self.partition(m, i.concurrency) as u32);
        let req = TicketRequest {
            id: m.id.clone(),
            partition,
            confirmed: tx,
        };
        if b.send(req).await.is_err() {
            tracing::warn!(pipeline = %i.name, id = %m.id, "ticket batcher stopped; the message stays journaled for another node");
        }
        rx
    }

    /// Handles a ticket from the broker: claims its messages (one `UPDATE` for all) and runs
    /// them here, or finds that there is nothing to do. A message another live node is
    /// processing is waited for; one whose holder died is claimed. An ordered pipeline's
    /// ticket runs one message at a time, in order; others run up to `concurrency` at once.
    pub(crate) async fn handle_ticket(&self, ids: Vec<String>) -> Handled {
        let i = &self.inner;
        let Some(r) = &i.remote else {
            return Handled::Requeue;
        };
        if i.shutdown.is_cancelled() {
            return Handled::Requeue;
        }
        let since = crate::message::now_ms() - r.dead_after.as_millis() as i64;
        let mut claimed: std::collections::HashMap<String, Message> = match i
            .journal
            .store()
            .claim_tickets(&ids, &r.node, since, false)
            .await
        {
            Ok(ms) => ms.into_iter().map(|m| (m.id.clone(), m)).collect(),
            Err(e) => {
                tracing::warn!(pipeline = %i.name, error = %e, "cannot claim the messages of a ticket; returned to the queue");
                tokio::select! {
                    _ = i.shutdown.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                return Handled::Requeue;
            }
        };
        if let Ok(mut a) = i.active.lock() {
            a.extend(claimed.keys().cloned());
        }
        let ordered = i.ordering_key.is_some();
        if ordered {
            // One at a time, in order; the next starts once the previous outcome is recorded
            // (a `done` commits in the background, and is awaited before the ticket's ack).
            let mut commits = Vec::new();
            for id in ids {
                let outcome = match claimed.remove(&id) {
                    Some(m) => self.processed(self.process_ticketed(m, true).await, &mut commits),
                    None => self.handle_one(&id, &mut commits).await,
                };
                if outcome == Handled::Requeue {
                    return Handled::Requeue;
                }
            }
            return committed(commits).await;
        }
        let mut running = tokio::task::JoinSet::new();
        for id in ids {
            let h = self.clone();
            let m = claimed.remove(&id);
            let slots = i.slots.clone();
            running.spawn(async move {
                let mut commits = Vec::new();
                let outcome = match m {
                    Some(m) => {
                        let _slot = slots.acquire_owned().await;
                        h.processed(h.process_ticketed(m, false).await, &mut commits)
                    }
                    // Waits without a slot: the message it waits for may be one this node
                    // claimed for another ticket and needs a slot to run.
                    None => h.handle_one(&id, &mut commits).await,
                };
                // The slot is free while the outcome commits.
                match outcome {
                    Handled::Ack => committed(commits).await,
                    Handled::Requeue => Handled::Requeue,
                }
            });
        }
        let mut all = Handled::Ack;
        while let Some(r) = running.join_next().await {
            if !matches!(r, Ok(Handled::Ack)) {
                all = Handled::Requeue;
            }
        }
        all
    }

    /// [`PipelineHandle::process`] for a claimed ticket message, known as active meanwhile.
    async fn process_ticketed(&self, m: Message, in_place: bool) -> Option<oneshot::Receiver<()>> {
        let id = m.id.clone();
        if let Ok(mut a) = self.inner.active.lock() {
            a.insert(id.clone());
        }
        let r = self.process(m, in_place).await;
        if let Ok(mut a) = self.inner.active.lock() {
            a.remove(&id);
        }
        r
    }

    /// What a processed ticket message means for its ticket: interrupted by a shutdown (the
    /// ticket goes back), or done with a commit to wait for.
    fn processed(
        &self,
        commit: Option<oneshot::Receiver<()>>,
        commits: &mut Vec<oneshot::Receiver<()>>,
    ) -> Handled {
        if self.inner.shutdown.is_cancelled() && commit.is_none() {
            return Handled::Requeue;
        }
        commits.extend(commit);
        Handled::Ack
    }

    /// A ticket's message that the batch claim did not get: done elsewhere (nothing to do), or
    /// held by another node (wait until it is done or its holder is dead, then claim it).
    async fn handle_one(&self, id: &str, commits: &mut Vec<oneshot::Receiver<()>>) -> Handled {
        let i = &self.inner;
        let Some(r) = &i.remote else {
            return Handled::Requeue;
        };
        let mut waited = 0u32;
        loop {
            let mut mine = false;
            match i.journal.store().holder(id).await {
                Ok(Some(h))
                    if h.state == State::Processing
                        && h.owner.as_deref() == Some(&*r.node)
                        && !i.active.lock().is_ok_and(|a| a.contains(id)) =>
                {
                    // Held by this node but not being worked on (its outcome could not be
                    // recorded): take it up again.
                    mine = true;
                }
                Ok(Some(h)) if h.state == State::Processing => {
                    if waited == 0 {
                        tracing::debug!(pipeline = %i.name, %id, owner = ?h.owner, "ticket for a message in progress elsewhere; waiting");
                    }
                    waited += 1;
                }
                Ok(Some(h)) if h.state == State::Received => {}
                Ok(Some(_)) => return Handled::Ack,
                Ok(None) => {
                    tracing::warn!(pipeline = %i.name, %id, "ticket for a message that is not in the journal; dropped");
                    return Handled::Ack;
                }
                Err(e) => {
                    tracing::warn!(pipeline = %i.name, %id, error = %e, "cannot read the message of a ticket");
                }
            }
            tokio::select! {
                _ = i.shutdown.cancelled() => return Handled::Requeue,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
            let since = crate::message::now_ms() - r.dead_after.as_millis() as i64;
            match i
                .journal
                .store()
                .claim_tickets(&[id.to_owned()], &r.node, since, mine)
                .await
            {
                Ok(mut ms) if !ms.is_empty() => {
                    let m = ms.remove(0);
                    let ordered = i.ordering_key.is_some();
                    let _slot = if ordered {
                        None
                    } else {
                        i.slots.clone().acquire_owned().await.ok()
                    };
                    let commit = self.process_ticketed(m, ordered).await;
                    return self.processed(commit, commits);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(pipeline = %i.name, %id, error = %e, "cannot claim the message of a ticket");
                }
            }
        }
    }

    /// Queues a journaled message for a worker, waiting for room. During shutdown it is left in
    /// the journal instead (the next start recovers it).
    pub async fn enqueue(&self, m: Message) {
        let i = &self.inner;
        let part = self.partition(&m, i.room.len());
        let permit = tokio::select! {
            _ = i.shutdown.cancelled() => return,
            p = i.room[part].clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        self.send(part, m, permit);
    }

    /// A worker took a message of partition `part` from memory: its room is free again.
    fn taken(&self, part: usize) {
        self.inner.room[part].add_permits(1);
        // An ordered pipeline's feeder waits for room in a partition, not on it.
        if self.inner.room.len() > 1 && self.spill().spilled {
            self.inner.feed.notify_one();
        }
    }

    /// Wakes the feeder (a reprocess, a retry that fell due).
    pub fn wake_feeder(&self) {
        self.inner.feed.notify_one();
    }

    /// Feeds the workers from the journal: claims this pipeline's due messages (those the
    /// in-memory queue had no room for, retries whose backoff passed, reprocessed and
    /// recovered ones) in journal order, a batch at a time, and queues them as room frees up.
    /// Memory holds at most the queue and one batch, however long the backlog.
    pub(super) async fn feeder(self, poll: Duration) {
        const BATCH: i64 = 256;
        let i = &self.inner;
        if i.room.len() > 1 && i.remote.is_none() {
            return self.partition_feeder(poll).await;
        }
        let names = [i.name.clone()];
        let node = i.remote.as_ref().map(|r| r.node.clone());
        loop {
            if i.shutdown.is_cancelled() {
                return;
            }
            let seen = self.spill().appended;
            let mut full = false;
            match i
                .journal
                .store()
                .claim_due_by(&names, BATCH, node.as_deref())
                .await
            {
                Ok(claimed) => {
                    full = claimed.len() as i64 == BATCH;
                    for m in claimed {
                        self.enqueue(m).await;
                    }
                    if !full {
                        let mut s = self.spill();
                        if s.spilled && s.pending == 0 && s.appended == seen {
                            s.spilled = false;
                            if std::mem::take(&mut s.announced) {
                                tracing::info!(pipeline = %i.name, "journal backlog taken up: new messages go to memory again");
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(pipeline = %i.name, error = %e, "feeder could not claim due messages")
                }
            }
            if !full {
                tokio::select! {
                    _ = i.shutdown.cancelled() => return,
                    _ = i.feed.notified() => {}
                    _ = tokio::time::sleep(poll) => {}
                }
            }
        }
    }

    /// The feeder of an ordered pipeline: takes each partition's due messages in journal order
    /// as that partition has room, never waiting on one partition, so a partition whose head of
    /// line is retrying in place holds back only its own keys. Claims a partition once a quarter
    /// of its room is free (or it is idle), a batch per claim.
    async fn partition_feeder(self, poll: Duration) {
        const BATCH: usize = 256;
        let i = &self.inner;
        let n = i.room.len();
        let store = i.journal.store();
        match store.repartition(&i.name, n as i64).await {
            Ok(0) => {}
            Ok(moved) => {
                tracing::info!(pipeline = %i.name, moved, partitions = n, "waiting messages mapped to the pipeline's partitions (its concurrency changed)")
            }
            Err(e) => {
                tracing::warn!(pipeline = %i.name, error = %e, "waiting messages not mapped to the new partitions")
            }
        }
        // Messages journaled before they carried their partition (an upgraded journal) go
        // first, in journal order, waiting for room as the feeder of an unordered pipeline does
        // (the pipeline starts spilled: nothing new overtakes them).
        loop {
            if i.shutdown.is_cancelled() {
                return;
            }
            match store.claim_due_unpartitioned(&i.name, BATCH as i64).await {
                Ok(claimed) if claimed.is_empty() => break,
                Ok(claimed) => {
                    for m in claimed {
                        self.enqueue(m).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(pipeline = %i.name, error = %e, "feeder could not claim due messages");
                    tokio::select! {
                        _ = i.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(poll) => {}
                    }
                }
            }
        }
        let per = i.queue_capacity.div_ceil(n).max(1);
        let threshold = (per / 4).clamp(1, BATCH);
        loop {
            if i.shutdown.is_cancelled() {
                return;
            }
            let seen = self.spill().appended;
            // Every partition was asked and none has more due now: the spill may end.
            let mut drained = true;
            let mut more = false;
            for part in 0..n {
                let free = i.room[part].available_permits();
                let idle = free >= per;
                if free < threshold && !idle {
                    drained = false;
                    continue;
                }
                let mut permits = Vec::new();
                while permits.len() < free.min(BATCH) {
                    match i.room[part].clone().try_acquire_owned() {
                        Ok(p) => permits.push(p),
                        Err(_) => break,
                    }
                }
                if permits.is_empty() {
                    drained = false;
                    continue;
                }
                let asked = permits.len();
                match store
                    .claim_due_partition(&i.name, part as i64, asked as i64, None)
                    .await
                {
                    Ok(claimed) => {
                        if claimed.len() == asked {
                            more = true;
                            drained = false;
                        }
                        for (m, permit) in claimed.into_iter().zip(permits.drain(..)) {
                            self.send(part, m, permit);
                        }
                    }
                    Err(e) => {
                        drained = false;
                        tracing::warn!(pipeline = %i.name, part, error = %e, "feeder could not claim due messages")
                    }
                }
                // Unused permits go back with `permits`.
            }
            if drained {
                let mut s = self.spill();
                if s.spilled && s.pending == 0 && s.appended == seen {
                    s.spilled = false;
                    if std::mem::take(&mut s.announced) {
                        tracing::info!(pipeline = %i.name, "journal backlog taken up: new messages go to memory again");
                    }
                }
            }
            if !more {
                tokio::select! {
                    _ = i.shutdown.cancelled() => return,
                    _ = i.feed.notified() => {}
                    _ = tokio::time::sleep(poll) => {}
                }
            }
        }
    }

    /// The stable hash of a message's ordering key (`None` without an `ordering_key`). Stable
    /// across processes and versions (FNV-1a, 63 bits): it is journaled, and every node of a
    /// cluster must map a key to the same partition.
    fn ordering_hash(&self, m: &Message) -> Option<i64> {
        let expr = self.inner.ordering_key.as_ref()?;
        let mut w = Work::from_message(m);
        let key = match expr.eval_string(&mut w) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(pipeline = %self.inner.name, id = %m.id, error = %e, "ordering key not computed; using partition 0");
                return Some(0);
            }
        };
        Some(stable_hash(key.as_bytes()))
    }

    fn partition(&self, m: &Message, n: usize) -> usize {
        match self.ordering_hash(m) {
            Some(h) => (h as u64 % n.max(1) as u64) as usize,
            None => 0,
        }
    }
}

/// FNV-1a over `bytes`, as a non-negative `i64` (the journal's `ordering_hash`).
fn stable_hash(bytes: &[u8]) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 1) as i64
}

/// A `Message` view of a not-yet-journaled message (for expressions evaluated at submit time).
fn preview(m: &NewMessage) -> Message {
    let now = now_ms();
    Message {
        id: String::new(),
        facility: m.facility.clone(),
        pipeline: m.pipeline.clone(),
        kind: m.kind.clone(),
        body: m.body.clone(),
        headers: m.headers.clone(),
        source: m.source.clone(),
        received_at: now,
        trace_id: m.trace_id.clone().unwrap_or_default(),
        dedup_key: m.dedup_key.clone(),
        parent_id: m.parent_id.clone(),
        state: State::Received,
        attempts: 0,
        next_attempt_at: None,
        last_error: None,
        updated_at: now,
    }
}

pub(super) fn spawn_workers(
    tracker: &TaskTracker,
    handle: &PipelineHandle,
    receivers: Receivers,
    shutdown: CancellationToken,
) {
    match receivers {
        Receivers::Shared(rx, n) => {
            for _ in 0..n {
                let rx = rx.clone();
                let h = handle.clone();
                let shutdown = shutdown.clone();
                tracker.spawn(async move {
                    loop {
                        let m = tokio::select! {
                            biased;
                            _ = shutdown.cancelled() => return,
                            m = rx.recv() => match m { Ok(m) => m, Err(_) => return },
                        };
                        h.taken(0);
                        h.process(m, false).await;
                    }
                });
            }
        }
        Receivers::Partitioned(rxs) => {
            for (part, mut rx) in rxs.into_iter().enumerate() {
                let h = handle.clone();
                let shutdown = shutdown.clone();
                tracker.spawn(async move {
                    loop {
                        let m = tokio::select! {
                            biased;
                            _ = shutdown.cancelled() => return,
                            m = rx.recv() => match m { Some(m) => m, None => return },
                        };
                        h.taken(part);
                        h.process(m, true).await;
                    }
                });
            }
        }
    }
}

/// `deliver_limit`: a token bucket and a cap on deliveries in progress, shared by the workers.
struct Limiter {
    per_second: f64,
    burst: f64,
    bucket: Mutex<(f64, Instant)>,
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl Limiter {
    async fn acquire(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let permit = self.in_flight.clone().acquire_owned().await.ok();
        loop {
            let wait = {
                let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                b.0 =
                    (b.0 + now.duration_since(b.1).as_secs_f64() * self.per_second).min(self.burst);
                b.1 = now;
                if b.0 >= 1.0 {
                    b.0 -= 1.0;
                    return permit;
                }
                Duration::from_secs_f64((1.0 - b.0) / self.per_second)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// How long a fresh message's first attempt runs before it is marked `processing`.
const PROCESSING_MARK_AFTER: Duration = Duration::from_millis(500);

enum Outcome {
    Done(Vec<crate::store::Effect>),
    Failed { step: String, error: StepError },
}

impl PipelineHandle {
    /// Runs one message to an outcome and records it. `in_place` retries (ordered pipelines)
    /// keep the message in its partition until it is done or dead.
    ///
    /// A `done` commits while the caller goes on; the returned receiver resolves once it is
    /// committed (a ticket is acknowledged only then). Other outcomes are committed on return.
    async fn process(&self, mut m: Message, in_place: bool) -> Option<oneshot::Receiver<()>> {
        let i = &self.inner;
        let mut marked = m.state != State::Received;
        loop {
            let outcome = if marked {
                self.run_once(&m).await
            } else {
                // A fresh message is marked `processing` only if its first attempt is still
                // running after PROCESSING_MARK_AFTER (a slow sink, a retrying destination), so
                // that the API shows it as in flight. Most messages are done well before: writing
                // the marker for them would cost a journal write each and show nothing.
                let run = self.run_once(&m);
                tokio::pin!(run);
                tokio::select! {
                    biased;
                    o = &mut run => o,
                    _ = tokio::time::sleep(PROCESSING_MARK_AFTER) => {
                        i.journal
                            .transition_nowait(Transition::Processing { id: m.id.clone() })
                            .await;
                        run.await
                    }
                }
            };
            let attempt = m.attempts + 1;
            let result = match outcome {
                Outcome::Done(effects) => {
                    // The worker goes on to its next message while this one commits.
                    let metrics = i.metrics.clone();
                    let (name, id) = (i.name.clone(), m.id.clone());
                    let (committed, rx) = oneshot::channel();
                    i.journal
                        .transition_then(
                            Transition::Done {
                                id: m.id.clone(),
                                effects,
                            },
                            move |r| {
                                match r {
                                    Ok(true) => metrics.done(&name),
                                    Ok(false) => {}
                                    Err(e) => {
                                        tracing::error!(pipeline = %name, %id, error = %e, "could not record the outcome; the message stays in flight");
                                        return;
                                    }
                                }
                                let _ = committed.send(());
                            },
                        )
                        .await;
                    return Some(rx);
                }
                Outcome::Failed { step, error } => {
                    let last = !error.retryable || attempt >= i.max_attempts;
                    // A destination's Retry-After: not before it, whatever the backoff says.
                    let wait = error.retry_after.unwrap_or_default();
                    // The reason stays out of the log (it may quote patient data); it is in the journal.
                    tracing::warn!(pipeline = %i.name, id = %m.id, attempt, step = %step, dead = last, "message failed; the reason is in the journal (huizhen messages show ID)");
                    i.metrics.failed(&i.name);
                    i.metrics.step_error(&i.name, &step);
                    if last {
                        i.metrics.dead(&i.name);
                        let reason = format!("{step}: {}", error.message);
                        for sink in &i.sinks {
                            let mut w = Work::from_message(&m);
                            if let Err(e) = sink.on_dead(&mut w, &reason).await {
                                tracing::warn!(pipeline = %i.name, id = %m.id, sink = sink.name(), error = %e, "dead-letter notice not delivered");
                            }
                        }
                        i.journal
                            .transition(Transition::Dead {
                                id: m.id.clone(),
                                attempt,
                                step,
                                error: error.message,
                            })
                            .await
                    } else if in_place {
                        let r = i
                            .journal
                            .transition(Transition::Retrying {
                                id: m.id.clone(),
                                attempt,
                                step,
                                error: error.message,
                            })
                            .await;
                        if let Err(e) = r {
                            tracing::error!(pipeline = %i.name, id = %m.id, error = %e, "could not record the failure; the message stays in flight");
                            return None;
                        }
                        m.attempts = attempt;
                        // `Retrying` left it `processing` in the journal.
                        marked = true;
                        tokio::select! {
                            _ = i.shutdown.cancelled() => return None,
                            _ = tokio::time::sleep(self.backoff(attempt).max(wait)) => {}
                        }
                        continue;
                    } else {
                        let retry_at =
                            now_ms() + self.backoff(attempt).max(wait).as_millis() as i64;
                        i.journal
                            .transition(Transition::Failed {
                                id: m.id.clone(),
                                attempt,
                                retry_at,
                                step,
                                error: error.message,
                            })
                            .await
                    }
                }
            };
            if let Err(e) = result {
                // The message stays received/processing in the journal and is recovered.
                tracing::error!(pipeline = %i.name, id = %m.id, error = %e, "could not record the outcome; the message stays in flight");
            }
            return None;
        }
    }

    async fn run_once(&self, m: &Message) -> Outcome {
        let i = &self.inner;
        let mut work = Work::from_message(m);
        for (label, step) in &i.steps {
            let t0 = Instant::now();
            let r = step.apply(&mut work).await;
            i.metrics.step_latency(&i.name, label, t0.elapsed());
            match r {
                Ok(Flow::Continue) => {}
                Ok(Flow::Stop(reason)) => {
                    tracing::debug!(pipeline = %i.name, id = %m.id, step = %label, %reason, "stopped");
                    return Outcome::Done(Vec::new());
                }
                Err(error) => {
                    return Outcome::Failed {
                        step: label.clone(),
                        error,
                    };
                }
            }
        }
        // A slow destination's pace (deliver_limit): wait for a slot and a token, and hold the
        // slot until the sinks are done.
        let _slot = match &i.limit {
            Some(l) if !i.sinks.is_empty() => Some(l.acquire().await),
            _ => None,
        };
        let mut effects = Vec::new();
        for sink in &i.sinks {
            let t0 = Instant::now();
            let r = sink.deliver(&mut work).await;
            i.metrics.step_latency(&i.name, sink.name(), t0.elapsed());
            match r {
                Ok(e) => effects.extend(e),
                Err(error) => {
                    return Outcome::Failed {
                        step: sink.name().to_owned(),
                        error,
                    };
                }
            }
        }
        Outcome::Done(effects)
    }

    /// Exponential backoff with jitter: `backoff × 2^(attempt-1)`, capped, then a random
    /// factor in [0.5, 1.0] so that many failing messages do not retry in lockstep.
    fn backoff(&self, attempt: i64) -> Duration {
        let i = &self.inner;
        let exp = attempt.saturating_sub(1).clamp(0, 30) as u32;
        let base = i
            .backoff
            .saturating_mul(2u32.saturating_pow(exp))
            .min(i.max_backoff);
        let factor: f64 = rand::rng().random_range(0.5..=1.0);
        base.mul_f64(factor)
    }
}
