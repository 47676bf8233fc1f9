//! Sinks: where a pipeline delivers a message after its steps.
//!
//! One file per sink, registered by its `#[typetag::deserialize(name = "…")]` line. Delivery is
//! at least once: a sink may see the same message id again after a crash or a retry, and must
//! make that harmless (use the message id as the idempotency key downstream).

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::runner::BuildContext;
use crate::store::Effect;
use crate::work::{StepError, Work};

mod journal;

/// The YAML side of a sink: `- <type>: {…}` in a pipeline's `sinks:` list.
#[typetag::deserialize]
pub trait SinkConfig: std::fmt::Debug + Send + Sync {
    /// Builds the sink without doing I/O (`validate` calls it too).
    fn build(&self, ctx: &BuildContext, index: usize) -> Result<Arc<dyn Sink>, String>;
}

/// A built sink.
pub trait Sink: Send + Sync {
    /// The sink's name in errors and metrics, e.g. `journal#0`.
    fn name(&self) -> &str;

    /// Delivers the message. Effects returned are committed together with the `done` state,
    /// once per (message, sink).
    fn deliver<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Vec<Effect>, StepError>>;

    /// Called once when the message goes to the dead-letter state (after its last attempt),
    /// with the reason, so a sink can tell its destination (e.g. an HL7 application ACK with
    /// AE). Best effort: an error here is logged, the message is dead either way.
    fn on_dead<'a>(
        &'a self,
        _work: &'a mut Work,
        _reason: &'a str,
    ) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(async { Ok(()) })
    }
}
