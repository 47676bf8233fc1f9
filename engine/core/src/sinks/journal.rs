//! `journal`: a sink that only records the delivered body in the store's `effects` table.
//!
//! ```yaml
//! sinks:
//!   - journal: {}
//! ```
//! The record is written in the same transaction as the message's `done` state and at most
//! once per message, so it shows exactly what a downstream system would have received. A body
//! no step changed is recorded as a reference to the message's journaled body, not a copy. Used by
//! tests and demos, and to inspect a pipeline's output (`GET /api/messages/{id}`).

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Sink, SinkConfig};
use crate::runner::BuildContext;
use crate::store::Effect;
use crate::work::{StepError, Work};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalSinkConfig {
    /// Name of the record (default `journal#<index>`).
    #[serde(default)]
    pub name: Option<String>,
}

#[typetag::deserialize(name = "journal")]
impl SinkConfig for JournalSinkConfig {
    fn build(&self, ctx: &BuildContext, index: usize) -> Result<Arc<dyn Sink>, String> {
        Ok(Arc::new(JournalSink {
            name: self
                .name
                .clone()
                .unwrap_or_else(|| format!("journal#{index}")),
            pipeline: ctx.pipeline.clone(),
        }))
    }
}

struct JournalSink {
    name: String,
    pipeline: String,
}

impl Sink for JournalSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Vec<Effect>, StepError>> {
        Box::pin(async move {
            // The body as received is recorded as a reference to the journaled body (journal
            // v2), not a second copy; a body a step changed is recorded as it is now.
            let as_received = !work.body_changed();
            Ok(vec![Effect {
                sink: self.name.clone(),
                pipeline: self.pipeline.clone(),
                body: if as_received {
                    Vec::new()
                } else {
                    work.body().to_vec()
                },
                as_received,
            }])
        })
    }
}
