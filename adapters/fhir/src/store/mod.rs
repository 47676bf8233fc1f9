//! `fhir_store`: a sink that applies the message's FHIR transaction Bundle to the engine's
//! FHIR resource store (issue 16; STANDARDS FHIR-20), which the facade at `/fhir/r4` serves.
//!
//! ```yaml
//! steps:
//!   - hl7v2_to_fhir: {}        # ORU^R01 → a transaction Bundle with conditional entries
//! sinks:
//!   - fhir_store: {}           # name: default fhir_store#<index>
//! ```
//!
//! **What it takes.** A `Bundle` of type `transaction` (or `batch`, applied the same way: all
//! or nothing) whose entries are `POST Type` (with `request.ifNoneExist` or without), `PUT
//! Type/id` or `PUT Type?search` (conditional update), of the types the store holds (Patient,
//! Observation, DiagnosticReport, ServiceRequest, Encounter, Appointment, DocumentReference).
//! Each resource is read with fhir-sdk's model of its type first; an entry that does not read,
//! another method or type, or an id of the facade's projections (`person-…`, `cr-…`) is a
//! permanent error naming `entry[i]` and the element, and the message goes to the dead letters.
//!
//! **FHIR-20.** A conditional create (`ifNoneExist`, searched with the facade's parameters
//! within the pipeline's facility): no match → created with a new id (201); one → the existing
//! resource is kept and the entry's `fullUrl` points at it (200); more than one → the message
//! is refused (permanent: dead letter, naming the entry and how many match) — never one picked.
//! A conditional update likewise (0 → create, 1 → update, more → refused). An update whose
//! content equals the stored version writes nothing. `urn:uuid:` references between entries
//! are rewritten to the ids they resolved to.
//!
//! **Idempotent.** The Bundle is applied in one store transaction with the outcome recorded per
//! (message, sink): a retry, reprocess or crash replay of the same message writes nothing again
//! and answers the first outcome; the same content sent again as a new message finds its
//! conditional entries matched. The store re-runs every conditional search inside the
//! transaction and the batch is decided again when another writer changed the answer. The
//! transaction-response Bundle is the sink's effect (`GET /api/messages/{id}`).

mod bundle;
mod entries;
mod model;

use std::sync::Arc;

use futures::future::BoxFuture;
use huizhen_core::extensions::Extensions;
use huizhen_core::runner::BuildContext;
use huizhen_core::sinks::{Sink, SinkConfig};
use huizhen_core::store::{Effect, Store};
use huizhen_core::work::{StepError, Work};
use serde::Deserialize;

pub use bundle::{Applied, apply_bundle};
pub use model::check_resource;

/// `- fhir_store: {…}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FhirStoreSinkConfig {
    /// The sink's name in effects and errors (default `fhir_store#<index>`).
    #[serde(default)]
    pub name: Option<String>,
}

#[typetag::deserialize(name = "fhir_store")]
impl SinkConfig for FhirStoreSinkConfig {
    fn build(&self, ctx: &BuildContext, index: usize) -> Result<Arc<dyn Sink>, String> {
        Ok(Arc::new(FhirStoreSink {
            name: self
                .name
                .clone()
                .unwrap_or_else(|| format!("fhir_store#{index}")),
            pipeline: ctx.pipeline.clone(),
            extensions: ctx.extensions.clone(),
        }))
    }
}

struct FhirStoreSink {
    name: String,
    pipeline: String,
    extensions: Extensions,
}

impl Sink for FhirStoreSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Vec<Effect>, StepError>> {
        Box::pin(async move {
            let store = self.extensions.get::<Store>().ok_or_else(|| {
                StepError::new(format!(
                    "{}: the engine's store is not available",
                    self.name
                ))
            })?;
            let body = work.body().to_vec();
            let facility = work.facility.clone();
            let applied = apply_bundle(&store, &body, &work.id, &self.name, &facility)
                .await
                .map_err(|e| {
                    let text = format!("{}: {}", self.name, e.text);
                    if e.permanent {
                        StepError::permanent(text)
                    } else {
                        StepError::new(text)
                    }
                })?;
            Ok(vec![Effect {
                sink: self.name.clone(),
                pipeline: self.pipeline.clone(),
                body: applied.outcome.into_bytes(),
                as_received: false,
            }])
        })
    }
}
