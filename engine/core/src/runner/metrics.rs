//! Prometheus metrics of the engine (text exposition at `GET /metrics`).
//!
//! Counters are per process: received, done, failed (attempts), dead, duplicate and refused messages per
//! pipeline; a histogram of step and sink latency per pipeline and step. Queue depth and journal
//! state counts are gauges filled in at scrape time. No label ever carries patient data.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PipelineLabel {
    pipeline: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabel {
    pipeline: String,
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    pipeline: String,
    state: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs … ~13 s
    Histogram::new(exponential_buckets(0.00005, 4.0, 10))
}

/// The engine's metrics registry.
pub struct Metrics {
    registry: Registry,
    received: Family<PipelineLabel, Counter>,
    done: Family<PipelineLabel, Counter>,
    failed: Family<PipelineLabel, Counter>,
    dead: Family<PipelineLabel, Counter>,
    duplicate: Family<PipelineLabel, Counter>,
    backlog_refused: Family<PipelineLabel, Counter>,
    queue_depth: Family<PipelineLabel, Gauge>,
    journal: Family<StateLabel, Gauge>,
    backlog: Family<PipelineLabel, Gauge>,
    backlog_age: Family<PipelineLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    broker_depth: Family<PipelineLabel, Gauge>,
    nodes: Gauge,
    step_seconds: Family<StepLabel, Histogram, fn() -> Histogram>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("huizhen");
        let received = Family::default();
        let done = Family::default();
        let failed = Family::default();
        let dead = Family::default();
        let duplicate = Family::default();
        let backlog_refused = Family::default();
        let queue_depth = Family::default();
        let journal = Family::default();
        let backlog = Family::default();
        let backlog_age =
            Family::<PipelineLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let broker_depth = Family::default();
        let nodes = Gauge::default();
        let step_seconds = Family::<StepLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "messages_received",
            "Messages journaled (duplicates excluded)",
            received.clone(),
        );
        registry.register(
            "messages_done",
            "Messages processed to the end",
            done.clone(),
        );
        registry.register(
            "messages_failed",
            "Failed attempts (each retry counts)",
            failed.clone(),
        );
        registry.register(
            "messages_dead",
            "Messages moved to the dead-letter state",
            dead.clone(),
        );
        registry.register(
            "messages_duplicate",
            "Resent messages recognised by their dedup key",
            duplicate.clone(),
        );
        registry.register(
            "messages_backlog_refused",
            "Messages refused because the pipeline's backlog was at backlog_limit or the disk full",
            backlog_refused.clone(),
        );
        registry.register(
            "queue_depth",
            "Messages waiting in memory for a worker",
            queue_depth.clone(),
        );
        registry.register(
            "journal_messages",
            "Messages in the journal by state",
            journal.clone(),
        );
        registry.register(
            "backlog_messages",
            "Unfinished messages (received, processing, failed awaiting retry), all nodes",
            backlog.clone(),
        );
        registry.register(
            "backlog_oldest_age_seconds",
            "Age of the oldest unfinished message (0 when there is none)",
            backlog_age.clone(),
        );
        registry.register(
            "broker_queue_depth",
            "Tickets waiting at the broker (queue: amqp://…)",
            broker_depth.clone(),
        );
        registry.register(
            "cluster_nodes",
            "Engine processes with a fresh heartbeat (queue: amqp://…)",
            nodes.clone(),
        );
        registry.register(
            "match_scorer_fallback",
            "Expert matches where the scorer plugin failed and the built-in scorer ranked instead",
            super::match_alerts::scorer_fallbacks().clone(),
        );
        super::call_metrics::register(&mut registry);
        registry.register(
            "step_duration_seconds",
            "Time spent in each step and sink",
            step_seconds.clone(),
        );
        Metrics {
            registry,
            received,
            done,
            failed,
            dead,
            duplicate,
            backlog_refused,
            queue_depth,
            journal,
            backlog,
            backlog_age,
            broker_depth,
            nodes,
            step_seconds,
        }
    }

    fn label(p: &str) -> PipelineLabel {
        PipelineLabel {
            pipeline: p.to_owned(),
        }
    }

    /// Messages of pipeline `p` journaled, done and dead so far in this process (what the
    /// `/metrics` counters say), for benchmarks that watch an engine of their own.
    pub fn counted(&self, p: &str) -> (u64, u64, u64) {
        let l = Self::label(p);
        (
            self.received.get_or_create(&l).get(),
            self.done.get_or_create(&l).get(),
            self.dead.get_or_create(&l).get(),
        )
    }

    pub fn received(&self, p: &str) {
        self.received.get_or_create(&Self::label(p)).inc();
    }
    pub fn done(&self, p: &str) {
        self.done.get_or_create(&Self::label(p)).inc();
    }
    pub fn failed(&self, p: &str) {
        self.failed.get_or_create(&Self::label(p)).inc();
    }
    pub fn dead(&self, p: &str) {
        self.dead.get_or_create(&Self::label(p)).inc();
    }
    pub fn duplicate(&self, p: &str) {
        self.duplicate.get_or_create(&Self::label(p)).inc();
    }
    pub fn backlog_refused(&self, p: &str) {
        self.backlog_refused.get_or_create(&Self::label(p)).inc();
    }
    pub fn set_queue_depth(&self, p: &str, depth: usize) {
        self.queue_depth
            .get_or_create(&Self::label(p))
            .set(depth as i64);
    }
    pub fn set_journal_count(&self, p: &str, state: &str, n: i64) {
        self.journal
            .get_or_create(&StateLabel {
                pipeline: p.to_owned(),
                state: state.to_owned(),
            })
            .set(n);
    }
    pub fn set_backlog(&self, p: &str, messages: i64, oldest_age_seconds: f64) {
        self.backlog.get_or_create(&Self::label(p)).set(messages);
        self.backlog_age
            .get_or_create(&Self::label(p))
            .set(oldest_age_seconds);
    }
    pub fn set_broker_depth(&self, p: &str, depth: u64) {
        self.broker_depth
            .get_or_create(&Self::label(p))
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }
    pub fn set_nodes(&self, n: usize) {
        self.nodes.set(n as i64);
    }
    pub fn step_latency(&self, p: &str, step: &str, d: Duration) {
        self.step_seconds
            .get_or_create(&StepLabel {
                pipeline: p.to_owned(),
                step: step.to_owned(),
            })
            .observe(d.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
