//! `internal`: a pipeline fed only from inside the engine.
//!
//! ```yaml
//! source:
//!   internal: {}
//! ```
//! Messages arrive from the `route` step of other pipelines and from what the engine itself
//! announces (`workflow.consultations.outbound_pipeline`, `billing.outbound_pipeline`,
//! `device_reading`'s `alert_to`, the DICOM prefetch). Nothing outside the engine can send to
//! it: there is no HTTP path, no port, no folder. `huizhen validate` still requires every
//! `route` target to be a known pipeline, whatever its source.

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Source, SourceConfig, SourceContext};
use crate::runner::BuildContext;

/// `internal: {}` takes no settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternalSourceConfig {}

#[typetag::deserialize(name = "internal")]
impl SourceConfig for InternalSourceConfig {
    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn Source>, String> {
        Ok(Box::new(InternalSource))
    }
}

struct InternalSource;

impl Source for InternalSource {
    fn describe(&self) -> String {
        "internal (routed messages only)".into()
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async move {
            ctx.shutdown.cancelled().await;
            Ok(())
        })
    }
}
