//! Prometheus metrics of the engine (text exposition at `GET /metrics`; docs/metrics.md lists
//! every series with its labels and the alerts they serve).
//!
//! Counters are per process: received, done, failed (attempts), dead, duplicate and refused
//! messages per pipeline; intake outcomes and the protocol's verdicts (AA/AE/AR/CA/CE/CR) per
//! source; errors per step and sink; reprocess requests; a histogram of step and sink latency.
//! Gauges: open connections per listener, whether each source runs, the time of each source's
//! last message; queue depth, journal state counts, backlog and reprocesses recorded in the
//! journal (filled in at scrape time); build info and the process's own figures (RSS, CPU,
//! file descriptors, read from `/proc/self` at scrape time, [`super::process_metrics`]).
//!
//! Every series of a pipeline exists at zero from its start ([`Metrics::init_pipeline`],
//! [`Metrics::init_source`]), so a counter that never moved is a 0, not a missing series, and
//! `rate()`/`increase()` see the first event. No label ever carries patient data: labels are
//! pipeline, source type, step and sink names, listen addresses and fixed vocabularies.

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
struct SourceLabel {
    pipeline: String,
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    pipeline: String,
    source: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabel {
    pipeline: String,
    source: String,
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    pipeline: String,
    source: String,
    listen: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReprocessLabel {
    pipeline: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabel {
    version: String,
    profile: String,
}

/// What `submit` did with a message, for `huizhen_intake_total{outcome}`.
pub const INTAKE_OUTCOMES: [&str; 5] = ["accepted", "duplicate", "refused", "busy", "failed"];

/// The outcomes of `POST /api/messages/{id}/reprocess`, for `huizhen_reprocess_requests_total`.
pub const REPROCESS_OUTCOMES: [&str; 3] = ["reprocessed", "refused_included", "refused_denied"];

type F64Gauge = Gauge<f64, std::sync::atomic::AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    pipeline: String,
    state: String,
}

/// A new family, registered under `name` with `help`.
fn registered<L, M>(registry: &mut Registry, name: &str, help: &str) -> Family<L, M>
where
    Family<L, M>: Default + Clone + prometheus_client::registry::Metric,
{
    let f = Family::<L, M>::default();
    registry.register(name, help, f.clone());
    f
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
    step_errors: Family<StepLabel, Counter>,
    intake: Family<OutcomeLabel, Counter>,
    verdicts: Family<VerdictLabel, Counter>,
    connections: Family<ListenerLabel, Gauge>,
    source_up: Family<SourceLabel, Gauge>,
    last_message: Family<SourceLabel, F64Gauge>,
    reprocess_requests: Family<ReprocessLabel, Counter>,
    journal_reprocesses: Family<PipelineLabel, Gauge>,
    process: super::process_metrics::ProcessMetrics,
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
        super::shadow::register(&mut registry);
        registry.register(
            "step_duration_seconds",
            "Time spent in each step and sink",
            step_seconds.clone(),
        );
        let step_errors = registered(
            &mut registry,
            "step_errors",
            "Failed attempts by the step or sink that failed (step: its label, type#index, or the sink's name)",
        );
        let intake = registered(
            &mut registry,
            "intake",
            "What became of what a source submitted: accepted, duplicate (a resend), refused (journaled as a dead letter, e.g. HL7 AR/AE), busy (backlog limit: not journaled, the sender sends again), failed (not journaled: the journal failed)",
        );
        let verdicts = registered(
            &mut registry,
            "intake_verdicts",
            "Answers a source gave its senders, in the protocol's words (MLLP: AA, AE, AR, CA, CE, CR)",
        );
        let connections = registered(
            &mut registry,
            "listener_connections",
            "Connections open now on a listener source (mllp, dicom)",
        );
        let source_up = registered(
            &mut registry,
            "source_up",
            "1 while the pipeline's source runs (a listener accepts), 0 once it stopped or failed",
        );
        let last_message = registered(
            &mut registry,
            "source_last_message_timestamp_seconds",
            "When the source last submitted a message (accepted, resent or refused), Unix seconds; 0 before the first since this process started",
        );
        let reprocess_requests = registered(
            &mut registry,
            "reprocess_requests",
            "Reprocess requests through this process's API: reprocessed, refused_included (refused at intake, reprocessed on explicit request), refused_denied (refused at intake, not asked explicitly)",
        );
        let journal_reprocesses = registered(
            &mut registry,
            "journal_reprocesses",
            "Reprocesses recorded in the journal (API and CLI, every node)",
        );
        let build = Family::<BuildLabel, Gauge>::default();
        registry.register(
            "build_info",
            "The engine's version and build profile (always 1)",
            build.clone(),
        );
        build
            .get_or_create(&BuildLabel {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                profile: if cfg!(debug_assertions) {
                    "debug".to_owned()
                } else {
                    "release".to_owned()
                },
            })
            .set(1);
        let process = super::process_metrics::ProcessMetrics::register(&mut registry);
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
            step_errors,
            intake,
            verdicts,
            connections,
            source_up,
            last_message,
            reprocess_requests,
            journal_reprocesses,
            process,
        }
    }

    /// Creates every series of a pipeline at zero: its counters, journal gauges, each step's
    /// and sink's latency and errors, its source's intake outcomes, `source_up` and
    /// `source_last_message_timestamp_seconds`, and the reprocess requests. `source` is the
    /// source's type (`mllp`, `http`, …); `steps` the labels of its steps and sinks.
    pub fn init_pipeline(&self, p: &str, source: &str, steps: &[String]) {
        let l = Self::label(p);
        for f in [
            &self.received,
            &self.done,
            &self.failed,
            &self.dead,
            &self.duplicate,
            &self.backlog_refused,
        ] {
            let _ = f.get_or_create(&l);
        }
        let _ = self.queue_depth.get_or_create(&l);
        let _ = self.backlog.get_or_create(&l);
        let _ = self.backlog_age.get_or_create(&l);
        let _ = self.journal_reprocesses.get_or_create(&l);
        for st in crate::message::State::ALL {
            let _ = self.journal.get_or_create(&StateLabel {
                pipeline: p.to_owned(),
                state: st.as_str().to_owned(),
            });
        }
        for step in steps {
            let sl = StepLabel {
                pipeline: p.to_owned(),
                step: step.clone(),
            };
            let _ = self.step_seconds.get_or_create(&sl);
            let _ = self.step_errors.get_or_create(&sl);
        }
        for outcome in INTAKE_OUTCOMES {
            let _ = self.intake.get_or_create(&OutcomeLabel {
                pipeline: p.to_owned(),
                source: source.to_owned(),
                outcome: outcome.to_owned(),
            });
        }
        let sl = SourceLabel {
            pipeline: p.to_owned(),
            source: source.to_owned(),
        };
        let _ = self.source_up.get_or_create(&sl);
        let _ = self.last_message.get_or_create(&sl);
        for outcome in REPROCESS_OUTCOMES {
            let _ = self.reprocess_requests.get_or_create(&ReprocessLabel {
                pipeline: p.to_owned(),
                outcome: outcome.to_owned(),
            });
        }
    }

    /// Creates a source's protocol series at zero: its verdicts and, for a listener, its open
    /// connections (see [`crate::sources::Source::verdicts`] and `listens_on`).
    pub fn init_source(&self, p: &str, source: &str, verdicts: &[&str], listen: Option<&str>) {
        for v in verdicts {
            let _ = self.verdicts.get_or_create(&VerdictLabel {
                pipeline: p.to_owned(),
                source: source.to_owned(),
                verdict: (*v).to_owned(),
            });
        }
        if let Some(listen) = listen {
            let _ = self.connections.get_or_create(&ListenerLabel {
                pipeline: p.to_owned(),
                source: source.to_owned(),
                listen: listen.to_owned(),
            });
        }
    }

    pub fn intake(&self, p: &str, source: &str, outcome: &str) {
        self.intake
            .get_or_create(&OutcomeLabel {
                pipeline: p.to_owned(),
                source: source.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn verdict(&self, p: &str, source: &str, verdict: &str) {
        self.verdicts
            .get_or_create(&VerdictLabel {
                pipeline: p.to_owned(),
                source: source.to_owned(),
                verdict: verdict.to_owned(),
            })
            .inc();
    }

    /// How many answers of `verdict` the source of `p` gave (tests, benchmarks).
    pub fn verdicts_given(&self, p: &str, source: &str, verdict: &str) -> u64 {
        self.verdicts
            .get_or_create(&VerdictLabel {
                pipeline: p.to_owned(),
                source: source.to_owned(),
                verdict: verdict.to_owned(),
            })
            .get()
    }

    /// One more (`delta` 1) or one fewer (-1) open connection on a listener.
    pub fn connections(&self, p: &str, source: &str, listen: &str, delta: i64) {
        self.connections
            .get_or_create(&ListenerLabel {
                pipeline: p.to_owned(),
                source: source.to_owned(),
                listen: listen.to_owned(),
            })
            .inc_by(delta);
    }

    pub fn source_up(&self, p: &str, source: &str, up: bool) {
        self.source_up
            .get_or_create(&SourceLabel {
                pipeline: p.to_owned(),
                source: source.to_owned(),
            })
            .set(i64::from(up));
    }

    pub fn last_message(&self, p: &str, source: &str, unix_ms: i64) {
        self.last_message
            .get_or_create(&SourceLabel {
                pipeline: p.to_owned(),
                source: source.to_owned(),
            })
            .set(unix_ms as f64 / 1000.0);
    }

    pub fn step_error(&self, p: &str, step: &str) {
        self.step_errors
            .get_or_create(&StepLabel {
                pipeline: p.to_owned(),
                step: step.to_owned(),
            })
            .inc();
    }

    pub fn reprocess(&self, p: &str, outcome: &str) {
        self.reprocess_requests
            .get_or_create(&ReprocessLabel {
                pipeline: p.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn set_journal_reprocesses(&self, p: &str, n: i64) {
        self.journal_reprocesses
            .get_or_create(&Self::label(p))
            .set(n);
    }

    /// Reads the process's figures from `/proc/self` (at scrape time).
    pub fn sample_process(&self) {
        self.process.sample();
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

    /// Messages of pipeline `p` received, done, failed (attempts) and dead so far in this
    /// process: the dashboard's series (`GET /api/pipelines/history`).
    pub fn totals(&self, p: &str) -> [u64; 4] {
        let l = Self::label(p);
        [
            self.received.get_or_create(&l).get(),
            self.done.get_or_create(&l).get(),
            self.failed.get_or_create(&l).get(),
            self.dead.get_or_create(&l).get(),
        ]
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
