//! `set`: sets headers and JSON body fields from CEL expressions.
//!
//! ```yaml
//! - set:
//!     headers: { department: "'cardiology'", patient: "body.patient.id" }
//!     body: { "routing.received_by": "message.pipeline" }
//! ```
//! Header values are strings (numbers and booleans are printed); body paths are dotted and
//! create objects on the way. Setting body fields needs a JSON body.

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
pub struct SetConfig {
    /// Header name → CEL expression.
    #[serde(default)]
    pub headers: BTreeMap<String, Expr>,
    /// Dotted JSON path → CEL expression.
    #[serde(default)]
    pub body: BTreeMap<String, Expr>,
}

#[typetag::deserialize(name = "set")]
impl StepConfig for SetConfig {
    fn type_name(&self) -> &'static str {
        "set"
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Arc<dyn Step>, String> {
        if self.headers.is_empty() && self.body.is_empty() {
            return Err("set needs at least one entry under `headers` or `body`".into());
        }
        Ok(Arc::new(self.clone()))
    }
}

impl Step for SetConfig {
    fn apply<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Flow, StepError>> {
        Box::pin(async move {
            // Evaluate everything against the message as it came in, then apply.
            let mut headers = Vec::with_capacity(self.headers.len());
            for (name, e) in &self.headers {
                headers.push((name.clone(), e.eval_string(work)?));
            }
            let mut fields = Vec::with_capacity(self.body.len());
            for (path, e) in &self.body {
                fields.push((path.as_str(), e.eval_json(work)?));
            }
            work.headers.extend(headers);
            if !fields.is_empty() {
                let id = work.id.clone();
                let json = work.json_mut()?;
                for (path, v) in fields {
                    set_path(json, path, v).map_err(|e| {
                        StepError::permanent(format!("message {id}: set body: {e}"))
                    })?;
                }
            }
            Ok(Flow::Continue)
        })
    }
}
