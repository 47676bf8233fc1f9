//! `map`: builds a new JSON body from CEL expressions (a transform).
//!
//! ```yaml
//! - map:
//!     body:
//!       patient.id: "body.pid"
//!       patient.name: "body.name"
//!       source: "message.pipeline"
//! ```
//! The result replaces the body and the message kind becomes `json`.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Step, StepConfig, set_path};
use crate::expr::Expr;
use crate::runner::BuildContext;
use crate::work::{Flow, StepError, Work};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapConfig {
    /// Dotted path in the new body → CEL expression over the old message.
    pub body: BTreeMap<String, Expr>,
}

#[typetag::deserialize(name = "map")]
impl StepConfig for MapConfig {
    fn type_name(&self) -> &'static str {
        "map"
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Arc<dyn Step>, String> {
        if self.body.is_empty() {
            return Err("map needs at least one field under `body`".into());
        }
        Ok(Arc::new(self.clone()))
    }
}

impl Step for MapConfig {
    fn apply<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Flow, StepError>> {
        Box::pin(async move {
            let mut out = serde_json::Value::Object(Default::default());
            for (path, e) in &self.body {
                let v = e.eval_json(work)?;
                set_path(&mut out, path, v)
                    .map_err(|e| StepError::permanent(format!("message {}: map: {e}", work.id)))?;
            }
            work.set_json(out);
            Ok(Flow::Continue)
        })
    }
}
