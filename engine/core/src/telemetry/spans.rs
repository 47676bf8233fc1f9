//! The spans of a message's life, made by the runner only when traces are on:
//!
//! ```text
//! receive PIPELINE        the intake: the journal append (Consumer; a child of the sender's
//! │                       span, of the intake of the message it was routed from, or a root)
//! └─ process PIPELINE     one attempt (Consumer), on whichever node runs it
//!    ├─ step LABEL        each step that ran (Internal)
//!    └─ deliver SINK      each sink delivery (Client); its id goes downstream as `traceparent`
//! ```
//!
//! The ids are ours, not the SDK's: the SDK's tracer draws every span id (and a root's trace id)
//! from its generator, while the intake's span id and a root's trace id must be the ones
//! derived from the journal (`ids.rs`). So a span is written as the SDK's `SpanData` when it
//! ends and handed to the batch processor, which exports it; sampling is the SDK's
//! `TraceIdRatioBased` rule on the trace id, decided before anything is built.
//!
//! Attributes are `huizhen.*` ids and names, the attempt and a fixed outcome word; a failed
//! span has the status Error with the outcome word as its description, never the error's text.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, SpanData, SpanEvents, SpanLinks, SpanProcessor,
};

use super::ids::{TraceParent, intake_span_id, trace_id_of};
use crate::message::Message;

/// The engine's tracer (cheap to clone): present only when traces are on.
#[derive(Clone)]
pub struct Tracer(Arc<Inner>);

struct Inner {
    processor: BatchSpanProcessor,
    scope: InstrumentationScope,
    /// `sampling_ratio` as the bound of a trace id's low 63 bits (`None`: every trace).
    bound: Option<u64>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tracer")
    }
}

/// A message's intake, as the pipeline's `submit` saw it.
pub(crate) struct Intake<'a> {
    pub message_id: &'a str,
    /// The message's `trace_id` (the message id when the sender gave none).
    pub trace_id: &'a str,
    pub pipeline: &'a str,
    pub facility: &'a str,
    pub source: &'a str,
    pub kind: &'a str,
    /// `accepted`, `duplicate` or `refused`.
    pub outcome: &'static str,
    /// The sender's span (a `traceparent`), if it gave one.
    pub sender: Option<TraceParent>,
    /// The message this one was routed from.
    pub routed_from: Option<&'a str>,
    pub start: SystemTime,
}

/// What every span of ours is made of.
struct Made {
    trace: [u8; 16],
    span: [u8; 8],
    /// `None`: a root.
    parent: Option<[u8; 8]>,
    parent_is_remote: bool,
    kind: SpanKind,
    name: String,
    start: SystemTime,
    attributes: Vec<KeyValue>,
    outcome: &'static str,
}

fn random_span_id() -> [u8; 8] {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

fn failed(outcome: &str) -> bool {
    matches!(outcome, "failed" | "dead")
}

impl Tracer {
    pub(super) fn new(processor: BatchSpanProcessor, sampling_ratio: f64) -> Tracer {
        let bound =
            (sampling_ratio < 1.0).then(|| (sampling_ratio.max(0.0) * (1u64 << 63) as f64) as u64);
        Tracer(Arc::new(Inner {
            processor,
            scope: InstrumentationScope::builder("huizhen")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            bound,
        }))
    }

    /// Sends what is buffered and stops the processor's thread (blocks: call it off the
    /// runtime's workers).
    pub(super) fn shutdown(&self, grace: std::time::Duration) -> Result<(), String> {
        self.0
            .processor
            .shutdown_with_timeout(grace)
            .map_err(|e| e.to_string())
    }

    /// Whether the trace is kept: the SDK's `TraceIdRatioBased` rule (the low 63 bits of the
    /// trace id below the ratio's share), the same on every node.
    fn sampled(&self, trace: &[u8; 16]) -> bool {
        match self.0.bound {
            None => true,
            Some(bound) => {
                let mut low = [0u8; 8];
                low.copy_from_slice(&trace[8..]);
                (u64::from_be_bytes(low) >> 1) < bound
            }
        }
    }

    fn end(&self, m: Made) {
        let status = if failed(m.outcome) {
            Status::error(m.outcome)
        } else {
            Status::Ok
        };
        let mut attributes = m.attributes;
        attributes.push(KeyValue::new("huizhen.outcome", m.outcome));
        self.0.processor.on_end(SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes(m.trace),
                SpanId::from_bytes(m.span),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: m.parent.map_or(SpanId::INVALID, SpanId::from_bytes),
            parent_span_is_remote: m.parent_is_remote,
            span_kind: m.kind,
            name: Cow::Owned(m.name),
            start_time: m.start,
            end_time: SystemTime::now(),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.0.scope.clone(),
        });
    }

    /// Records the intake span, ended now.
    pub(crate) fn intake(&self, i: Intake<'_>) {
        let trace = trace_id_of(i.trace_id);
        if !self.sampled(&trace) {
            return;
        }
        let (parent, parent_is_remote) = match (i.sender, i.routed_from) {
            (Some(s), _) => (Some(s.span_id), true),
            (None, Some(from)) => (Some(intake_span_id(from)), false),
            (None, None) => (None, false),
        };
        // A resend answered as a duplicate is not the message's intake: an id of its own.
        let span = if i.outcome == "duplicate" {
            random_span_id()
        } else {
            intake_span_id(i.message_id)
        };
        self.end(Made {
            trace,
            span,
            parent,
            parent_is_remote,
            kind: SpanKind::Consumer,
            name: format!("receive {}", i.pipeline),
            start: i.start,
            attributes: vec![
                KeyValue::new("huizhen.message.id", i.message_id.to_owned()),
                KeyValue::new("huizhen.pipeline", i.pipeline.to_owned()),
                KeyValue::new("huizhen.facility", i.facility.to_owned()),
                KeyValue::new("huizhen.source", i.source.to_owned()),
                KeyValue::new("huizhen.message.kind", i.kind.to_owned()),
            ],
            outcome: i.outcome,
        });
    }

    /// Opens the span of one attempt at `m` (attempt number `attempt`), a child of its intake.
    pub(crate) fn process<'a>(&'a self, m: &'a Message, attempt: i64) -> Run<'a> {
        let trace = trace_id_of(&m.trace_id);
        Run {
            tracer: self,
            sampled: self.sampled(&trace),
            trace,
            span: random_span_id(),
            start: SystemTime::now(),
            message: m,
            attempt,
        }
    }
}

/// One attempt's open span; steps and deliveries become its children.
pub(crate) struct Run<'a> {
    tracer: &'a Tracer,
    sampled: bool,
    trace: [u8; 16],
    span: [u8; 8],
    start: SystemTime,
    message: &'a Message,
    attempt: i64,
}

impl Run<'_> {
    fn child(&self, kind: SpanKind, name: String, start: SystemTime, what: KeyValue) -> Made {
        Made {
            trace: self.trace,
            span: random_span_id(),
            parent: Some(self.span),
            parent_is_remote: false,
            kind,
            name,
            start,
            attributes: vec![
                KeyValue::new("huizhen.message.id", self.message.id.clone()),
                what,
                KeyValue::new("huizhen.attempt", self.attempt),
            ],
            outcome: "",
        }
    }

    /// Records a step that ran from `start` until now: `continue`, `stop`, `failed` or `dead`.
    pub(crate) fn step(&self, label: &str, start: SystemTime, outcome: &'static str) {
        if !self.sampled {
            return;
        }
        let mut made = self.child(
            SpanKind::Internal,
            format!("step {label}"),
            start,
            KeyValue::new("huizhen.step", label.to_owned()),
        );
        made.outcome = outcome;
        self.tracer.end(made);
    }

    /// Opens the span of a delivery to `sink`, before the sink is called (its context goes
    /// downstream).
    pub(crate) fn deliver(&self, sink: &str) -> Delivery<'_> {
        let made = self.sampled.then(|| {
            self.child(
                SpanKind::Client,
                format!("deliver {sink}"),
                SystemTime::now(),
                KeyValue::new("huizhen.sink", sink.to_owned()),
            )
        });
        let trace_parent = TraceParent {
            trace_id: self.trace,
            span_id: made.as_ref().map_or(self.span, |m| m.span),
            sampled: self.sampled,
        };
        Delivery {
            tracer: self.tracer,
            made,
            trace_parent,
        }
    }

    /// Ends the attempt: `done`, `failed` (retried later) or `dead`.
    pub(crate) fn end(self, outcome: &'static str) {
        if !self.sampled {
            return;
        }
        let m = self.message;
        self.tracer.end(Made {
            trace: self.trace,
            span: self.span,
            parent: Some(intake_span_id(&m.id)),
            parent_is_remote: false,
            kind: SpanKind::Consumer,
            name: format!("process {}", m.pipeline),
            start: self.start,
            attributes: vec![
                KeyValue::new("huizhen.message.id", m.id.clone()),
                KeyValue::new("huizhen.pipeline", m.pipeline.clone()),
                KeyValue::new("huizhen.facility", m.facility.clone()),
                KeyValue::new("huizhen.attempt", self.attempt),
            ],
            outcome,
        });
    }
}

/// A delivery's open span.
pub(crate) struct Delivery<'a> {
    tracer: &'a Tracer,
    /// `None` when the trace is not sampled.
    made: Option<Made>,
    trace_parent: TraceParent,
}

impl Delivery<'_> {
    /// What the sink hands downstream: this span as the parent (the attempt's when the trace
    /// is not sampled, with the sampled flag off).
    pub(crate) fn trace_parent(&self) -> TraceParent {
        self.trace_parent
    }

    /// Ends the delivery: `delivered`, `failed` (retried later) or `dead`.
    pub(crate) fn end(self, outcome: &'static str) {
        if let Some(mut made) = self.made {
            made.outcome = outcome;
            self.tracer.end(made);
        }
    }
}
