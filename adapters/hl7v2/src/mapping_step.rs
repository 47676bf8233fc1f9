//! `hl7_map`: the pipeline step that replaces the body of an `hl7v2` message with its typed
//! record from [`crate::mapping::map`] (a [`PatientRecord`](crate::mapping::PatientRecord)
//! for ADT, [`Observations`](crate::mapping::Observations) for `ORU^R01`, a
//! [`ConsultationOrder`](crate::mapping::ConsultationOrder) for `ORM^O01`/`OML^O21`), as JSON,
//! so the steps and sinks after it read `body.identifiers`, `body.orders[0].observations`,
//! `body.urgency`, … The message kind becomes `json`; headers are kept.
//!
//! ```yaml
//! - filter: { expr: "hl7('MSH-9.1') in ['ADT', 'ORU', 'ORM', 'OML']" }
//! - hl7_map: {}
//! ```
//!
//! A message the mapping cannot read (an unsupported type, no patient identifier, …) fails
//! the step with a permanent error naming the type or the path, so it goes to the dead letters
//! at once: retrying cannot change it.

use std::sync::Arc;

use futures::future::BoxFuture;
use huizhen_core::runner::BuildContext;
use huizhen_core::steps::{Step, StepConfig};
use huizhen_core::work::{Flow, StepError, Work};
use serde::Deserialize;

use crate::expr::parsed;
use crate::mapping::map;

/// `- hl7_map: {}`; no options.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hl7MapConfig {}

#[typetag::deserialize(name = "hl7_map")]
impl StepConfig for Hl7MapConfig {
    fn type_name(&self) -> &'static str {
        "hl7_map"
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Arc<dyn Step>, String> {
        Ok(Arc::new(Hl7Map))
    }
}

/// The built `hl7_map` step.
struct Hl7Map;

impl Step for Hl7Map {
    fn apply<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Flow, StepError>> {
        Box::pin(async move {
            // Straight to bytes: a later step that reads `body` parses them once; the sinks
            // take the bytes as they are (no `serde_json::Value` in between, which cost more than
            // the mapping itself).
            let bytes = mapped_bytes(work)?;
            work.set_body(bytes);
            work.kind = "json".into();
            Ok(Flow::Continue)
        })
    }
}

/// The mapped record of the message as JSON text, or a permanent error.
pub fn mapped_bytes(work: &mut Work) -> Result<Vec<u8>, StepError> {
    if work.kind == "json" {
        return Err(StepError::permanent(format!(
            "message {}: hl7_map: the body is already JSON (kind json); hl7_map reads hl7v2 messages",
            work.id
        )));
    }
    let message = parsed(work)?;
    let mapped = map(&message)
        .map_err(|e| StepError::permanent(format!("message {}: hl7_map: {e}", work.id)))?;
    serde_json::to_vec(&mapped)
        .map_err(|e| StepError::permanent(format!("message {}: hl7_map: {e}", work.id)))
}
