//! Scale-out: several engine processes share one PostgreSQL store and take their work from a
//! broker (`queue: amqp://…` in the root config) instead of each one's in-memory queue.
//!
//! The path of a message in a cluster:
//!
//! 1. A source on any node calls `submit`: the journal commits the message with `owner` = this
//!    node, then a **ticket** (pipeline, message id, partition) is published to the broker and
//!    confirmed. Only then does `submit` return and the source acknowledge its sender. While the
//!    broker is down `submit` keeps trying (back-pressure on the sender), never a false ACK.
//! 2. Every node consumes tickets as a competing consumer. A ticket is handled by **claiming** the
//!    message in the store (`received` → `processing`, `owner` = the claiming node); the steps and
//!    sinks run; the outcome commits; then the ticket is acknowledged. A node that dies
//!    mid-message leaves its tickets unacknowledged, the broker gives them to another node, and
//!    that node may claim a `processing` message once its owner is dead (no heartbeat within
//!    `cluster.dead_after`). Effects are idempotent by message id, so a second run has no second
//!    effect.
//! 3. Ordered pipelines (`ordering_key`) publish to `concurrency` partition queues by the key's
//!    hash; each partition queue has a single active consumer (RabbitMQ's
//!    `x-single-active-consumer`) and is handled one message at a time, so messages with one key
//!    are processed in order. Partitions are spread over the live nodes (partition `p` belongs to
//!    the node of rank `p mod live`); a node that joins or dies moves partitions.
//! 4. Every node heartbeats into `nodes`. A node whose heartbeat is older than `dead_after` is
//!    reaped by one of the others (`DELETE … RETURNING` picks exactly one): its `received` and
//!    `processing` messages are adopted and their tickets published again (the copy of a ticket
//!    that still sits in the broker finds the message done and is dropped).
//! 5. Retries (`failed` with a backoff) and reprocessing stay on the journal's scheduler, which
//!    any node may run: the claim is one conditional `UPDATE`, so exactly one node gets each.
//!
//! The core knows no AMQP: `huizhen-amqp` registers a [`QueueFactory`] for the `amqp` and
//! `amqps` schemes (through `inventory`, like the step registry).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use tokio_util::task::TaskTracker;

use crate::config::duration;
use crate::message::now_ms;
use crate::runner::{EngineError, Remote, Router};
use crate::store::Store;
use crate::store::cluster::NodeInfo;

/// The root config's `cluster:` block (used with `queue: amqp://…`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This process's name in `nodes` and in messages' `owner` (default `HOST-PID-XXXX`).
    /// Must be unique among the running processes.
    #[serde(default)]
    pub node: Option<String>,
    /// How often a node writes its heartbeat.
    #[serde(default = "default_heartbeat", with = "duration")]
    pub heartbeat: Duration,
    /// A node with no heartbeat for this long is dead: its work is taken over.
    #[serde(default = "default_dead_after", with = "duration")]
    pub dead_after: Duration,
    /// Prefix of the broker's work queues: `PREFIX.PIPELINE` and `PREFIX.PIPELINE.N`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Quorum queues (replicated across a RabbitMQ cluster) instead of classic durable ones.
    #[serde(default)]
    pub quorum: bool,
    /// PEM file of a private CA that issued an `amqps://` broker's certificate (default: the
    /// public roots).
    #[serde(default)]
    pub tls_ca: Option<std::path::PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node: None,
            heartbeat: default_heartbeat(),
            dead_after: default_dead_after(),
            prefix: default_prefix(),
            quorum: false,
            tls_ca: None,
        }
    }
}

fn default_heartbeat() -> Duration {
    Duration::from_secs(1)
}
fn default_dead_after() -> Duration {
    Duration::from_secs(10)
}
fn default_prefix() -> String {
    "huizhen.work".into()
}

impl ClusterConfig {
    /// Checks the values that have rules beyond their type.
    pub fn check(&self) -> Result<(), String> {
        if self.heartbeat.is_zero() {
            return Err("cluster.heartbeat: must be more than 0".into());
        }
        if self.dead_after < self.heartbeat * 3 {
            return Err(format!(
                "cluster.dead_after: {:?} must be at least 3 heartbeats ({:?})",
                self.dead_after,
                self.heartbeat * 3
            ));
        }
        if let Some(n) = &self.node
            && (n.is_empty() || n.len() > 100)
        {
            return Err("cluster.node: 1 to 100 characters".into());
        }
        if self.prefix.is_empty() {
            return Err("cluster.prefix: must not be empty".into());
        }
        Ok(())
    }

    /// This node's id: the configured name, or `HOST-PID-XXXX`.
    pub fn node_id(&self) -> String {
        if let Some(n) = &self.node {
            return n.clone();
        }
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "node".into());
        let tail = &crate::message::new_id().replace('-', "")[28..];
        format!("{host}-{}-{tail}", std::process::id())
    }
}

/// Work for some node: journaled messages of one pipeline (and partition) to process, in
/// order. Tickets of messages accepted together travel as one broker message (the ticket
/// batcher groups them like the journal's group commit), which keeps the broker's work per
/// message small.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub pipeline: String,
    /// The partition of an ordered pipeline; `None` for the pipeline's shared queue.
    pub partition: Option<u32>,
    /// Message ids, in the order they were accepted.
    pub ids: Vec<String>,
}

impl Ticket {
    /// The body on the wire: the ids, one per line.
    pub fn encode(&self) -> Vec<u8> {
        self.ids.join("\n").into_bytes()
    }

    /// Reads a body written by [`Ticket::encode`].
    pub fn decode(pipeline: &str, partition: Option<u32>, body: &[u8]) -> Ticket {
        Ticket {
            pipeline: pipeline.to_owned(),
            partition,
            ids: String::from_utf8_lossy(body)
                .split('\n')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }
}

/// A pipeline's work queues at the broker.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    pub pipeline: String,
    /// 0: one shared queue (competing consumers); n: n single-active-consumer partitions.
    pub partitions: u32,
    /// Tickets in progress at once per node (the pipeline's `concurrency`).
    pub prefetch: u16,
}

/// What a node does with a ticket, and whether the broker may forget it afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Processed here, or already done elsewhere: acknowledge.
    Ack,
    /// Not handled (shutting down, the store unreachable): give it back to the queue.
    Requeue,
}

/// The engine side of a ticket: claim the message, run it, record the outcome.
pub trait TicketHandler: Send + Sync {
    /// Handles every message of the ticket; `Ack` once each is done or not this node's to do.
    fn handle(&self, ticket: Ticket, redelivered: bool) -> BoxFuture<'_, Handled>;
}

/// Which partitions are this node's: partition `p` when `p % live == rank`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    pub rank: usize,
    pub live: usize,
}

impl Assignment {
    pub fn owns(&self, partition: u32) -> bool {
        self.live > 0 && partition as usize % self.live == self.rank
    }
}

/// What a [`WorkQueue`] consumer runs with.
pub struct QueueRun {
    pub handler: Arc<dyn TicketHandler>,
    pub assignment: watch::Receiver<Assignment>,
    pub shutdown: CancellationToken,
}

/// The broker's confirm of a sent ticket.
pub type Confirm = BoxFuture<'static, Result<(), String>>;

/// A broker that carries tickets between nodes.
pub trait WorkQueue: Send + Sync {
    /// For logs: the broker without its password.
    fn describe(&self) -> String;
    /// Sends a ticket (one broker message). The outer future resolves once it is sent (tickets
    /// sent one after the other keep their order in the queue); the returned [`Confirm`]
    /// resolves once the broker has confirmed it stored it.
    fn publish<'a>(&'a self, ticket: &'a Ticket) -> BoxFuture<'a, Result<Confirm, String>>;
    /// Consumes tickets of every pipeline until shutdown, reconnecting as needed. A delivery is
    /// acknowledged only after `handler` returned [`Handled::Ack`].
    fn run(self: Arc<Self>, run: QueueRun) -> BoxFuture<'static, ()>;
    /// Tickets waiting at the broker, per pipeline (for `/metrics` and `/api/backlog`).
    fn depth(&self) -> BoxFuture<'_, Result<Vec<(String, u64)>, String>>;
}

/// A broker implementation, registered with `inventory::submit!` by its adapter crate.
pub struct QueueFactory {
    /// URL schemes it serves, e.g. `["amqp", "amqps"]`.
    pub schemes: &'static [&'static str],
    pub build: BuildQueue,
}

/// Builds a broker's work queue from the `queue` URL, the `cluster` block and the pipelines.
pub type BuildQueue = fn(
    url: &str,
    cluster: &ClusterConfig,
    specs: &[QueueSpec],
) -> Result<Arc<dyn WorkQueue>, String>;

inventory::collect!(QueueFactory);

/// Builds the work queue for `url` (`local` → `None`).
pub fn work_queue(
    url: &str,
    cluster: &ClusterConfig,
    specs: &[QueueSpec],
) -> Result<Option<Arc<dyn WorkQueue>>, String> {
    if is_local(url) {
        return Ok(None);
    }
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or_default();
    for f in inventory::iter::<QueueFactory> {
        if f.schemes.contains(&scheme) {
            return (f.build)(url, cluster, specs).map(Some);
        }
    }
    Err(format!(
        "queue: {:?} is neither `local` nor a URL of a broker this build knows ({})",
        crate::store::redact_url(url),
        known_schemes()
    ))
}

/// `local` (or empty): the in-memory queue of one process.
pub fn is_local(url: &str) -> bool {
    url.is_empty() || url == "local"
}

fn known_schemes() -> String {
    let mut s: Vec<&str> = inventory::iter::<QueueFactory>
        .into_iter()
        .flat_map(|f| f.schemes.iter().copied())
        .map(|s| s.trim_end_matches(':'))
        .collect();
    s.sort_unstable();
    if s.is_empty() {
        "none linked".into()
    } else {
        s.iter()
            .map(|x| format!("{x}://"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// This process as a node of the cluster: its heartbeat, the partitions it consumes, the
/// reaping of dead nodes. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

struct NodeInner {
    id: Arc<str>,
    queue: Arc<dyn WorkQueue>,
    store: Store,
    dead_after: Duration,
    assignment: watch::Receiver<Assignment>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.inner.id).finish()
    }
}

/// Routes tickets to their pipelines.
struct Dispatch {
    /// The running pipelines (a reload may replace one: its tickets go to the new version).
    pipelines: Router,
}

impl TicketHandler for Dispatch {
    fn handle(&self, ticket: Ticket, _redelivered: bool) -> BoxFuture<'_, Handled> {
        Box::pin(async move {
            match self.pipelines.get(&ticket.pipeline) {
                Some(p) => p.handle_ticket(ticket.ids).await,
                None => {
                    tracing::warn!(pipeline = %ticket.pipeline, "ticket for a pipeline this node does not run; returned to the queue");
                    Handled::Requeue
                }
            }
        })
    }
}

impl Node {
    /// Registers this process in `nodes`, adopts messages no live node answers for, and starts
    /// the heartbeat (with reaping) and the ticket consumer on `tracker`.
    pub(crate) async fn join(
        store: Store,
        remote: Remote,
        queue_url: &str,
        cfg: &ClusterConfig,
        pipelines: Router,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<Node, EngineError> {
        let now = now_ms();
        let info = NodeInfo {
            id: remote.node.to_string(),
            host: std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_default(),
            pid: i64::from(std::process::id()),
            queue: crate::store::redact_url(queue_url),
            started_at: now,
            heartbeat_at: now,
        };
        let since = now - cfg.dead_after.as_millis() as i64;
        if store
            .live_nodes(since)
            .await?
            .iter()
            .any(|n| n.id == info.id)
        {
            return Err(EngineError::Cluster(format!(
                "cluster.node: {:?} is already running (its heartbeat is fresh); give each process its own name",
                info.id
            )));
        }
        store.heartbeat(&info, true).await?;
        let (tx, rx) = watch::channel(Assignment { rank: 0, live: 1 });
        let node = Node {
            inner: Arc::new(NodeInner {
                id: remote.node.clone(),
                queue: remote.queue.clone(),
                store: store.clone(),
                dead_after: cfg.dead_after,
                assignment: rx.clone(),
            }),
        };
        update_assignment(&store, &info.id, since, &tx).await;
        let orphans = store.adopt_orphans(&info.id).await?;
        if !orphans.is_empty() {
            tracing::info!(
                count = orphans.len(),
                "messages no running node answered for are taken over"
            );
            republish(&pipelines, orphans, tracker);
        }
        tracing::info!(node = %info.id, queue = %remote.queue.describe(), "joined the cluster");
        tracker.spawn(keeper(
            store,
            info,
            cfg.heartbeat,
            cfg.dead_after,
            tx,
            pipelines.clone(),
            tracker.clone(),
            shutdown.clone(),
        ));
        tracker.spawn(remote.queue.clone().run(QueueRun {
            handler: Arc::new(Dispatch { pipelines }),
            assignment: rx,
            shutdown,
        }));
        Ok(node)
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    pub fn queue(&self) -> &Arc<dyn WorkQueue> {
        &self.inner.queue
    }

    /// The partitions of ordered pipelines this node consumes now.
    pub fn assignment(&self) -> Assignment {
        *self.inner.assignment.borrow()
    }

    /// The nodes with a fresh heartbeat.
    pub async fn live_nodes(&self) -> Result<Vec<NodeInfo>, crate::store::StoreError> {
        let since = now_ms() - self.inner.dead_after.as_millis() as i64;
        self.inner.store.live_nodes(since).await
    }

    /// A clean shutdown: the node is marked gone so that whatever it still holds is taken
    /// over at once.
    pub(crate) async fn leave(&self) {
        if let Err(e) = self.inner.store.leave(&self.inner.id).await {
            tracing::warn!(error = %e, "could not mark this node as gone; it is reaped once its heartbeat is stale");
        }
    }
}

async fn update_assignment(store: &Store, me: &str, since: i64, tx: &watch::Sender<Assignment>) {
    match store.live_nodes(since).await {
        Ok(nodes) => {
            let live = nodes.len().max(1);
            let rank = nodes.iter().position(|n| n.id == me).unwrap_or(0);
            let a = Assignment { rank, live };
            tx.send_if_modified(|old| {
                if *old == a {
                    false
                } else {
                    tracing::info!(rank, live, "partitions of ordered pipelines reassigned");
                    *old = a;
                    true
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot list the cluster's nodes"),
    }
}

/// Publishes the tickets of adopted messages again, in the background.
fn republish(pipelines: &Router, messages: Vec<crate::message::Message>, tracker: &TaskTracker) {
    let pipelines = pipelines.clone();
    tracker.spawn(async move {
        let mut waiting = Vec::new();
        for m in messages {
            match pipelines.get(&m.pipeline) {
                Some(p) => waiting.push(p.queue_ticket(&m).await),
                None => tracing::warn!(pipeline = %m.pipeline, id = %m.id, "adopted a message of a pipeline this node does not run; it stays received"),
            }
        }
        for w in waiting {
            let _ = w.await;
        }
    });
}

/// The heartbeat, the partition assignment and the reaping of dead nodes.
#[allow(clippy::too_many_arguments)]
async fn keeper(
    store: Store,
    info: NodeInfo,
    every: Duration,
    dead_after: Duration,
    tx: watch::Sender<Assignment>,
    pipelines: Router,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match store.heartbeat(&info, false).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                node = %info.id,
                "this node was presumed dead (no heartbeat for {dead_after:?}) and its work taken over; it goes on"
            ),
            Err(e) => tracing::warn!(error = %e, "heartbeat not written"),
        }
        let since = now_ms() - dead_after.as_millis() as i64;
        update_assignment(&store, &info.id, since, &tx).await;
        loop {
            match store.reap_dead_node(&info.id, since).await {
                Ok(Some((dead, adopted))) => {
                    tracing::warn!(node = %dead, adopted = adopted.len(), "node is dead (no heartbeat); its messages are taken over");
                    republish(&pipelines, adopted, &tracker);
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "reaping dead nodes failed");
                    break;
                }
            }
        }
    }
}

/// The wire form of a ticket's body: the message id (the pipeline and partition are in the
/// queue's name and the properties).
pub fn queue_name(prefix: &str, pipeline: &str, partition: Option<u32>) -> String {
    match partition {
        None => format!("{prefix}.{pipeline}"),
        Some(p) => format!("{prefix}.{pipeline}.{p}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_round_trip() {
        let t = Ticket {
            pipeline: "adt".into(),
            partition: Some(3),
            ids: vec!["a".into(), "b".into()],
        };
        assert_eq!(Ticket::decode("adt", Some(3), &t.encode()), t);
        assert!(Ticket::decode("adt", None, b"").ids.is_empty());
    }

    #[test]
    fn partitions_are_spread_over_live_nodes() {
        let nodes: Vec<Assignment> = (0..3).map(|rank| Assignment { rank, live: 3 }).collect();
        for p in 0..8u32 {
            let owners = nodes.iter().filter(|a| a.owns(p)).count();
            assert_eq!(owners, 1, "partition {p} has exactly one owner");
        }
        assert!(!Assignment { rank: 0, live: 0 }.owns(0));
    }

    #[test]
    fn dead_after_needs_three_heartbeats() {
        let c = ClusterConfig {
            dead_after: Duration::from_secs(2),
            ..ClusterConfig::default()
        };
        assert!(c.check().unwrap_err().contains("3 heartbeats"));
        assert!(ClusterConfig::default().check().is_ok());
    }

    #[test]
    fn unknown_schemes_are_named() {
        let e = match work_queue("kafka://x:9092", &ClusterConfig::default(), &[]) {
            Err(e) => e,
            Ok(_) => panic!("kafka is not a broker the core knows"),
        };
        assert!(e.contains("kafka://x:9092"), "{e}");
        assert!(
            work_queue("local", &ClusterConfig::default(), &[])
                .unwrap()
                .is_none()
        );
    }
}
