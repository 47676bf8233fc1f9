//! `filter`: keeps a message only when a CEL expression is true.
//!
//! ```yaml
//! - filter: { expr: "body.type == 'ADT'" }
//! ```
//! A message for which it is false is done without reaching the sinks; its header
//! `huizhen-stopped` says which filter stopped it. An expression error fails the message.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Step, StepConfig};
use crate::expr::Expr;
use crate::runner::BuildContext;
use crate::work::{Flow, StepError, Work};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// A CEL expression that must give true or false.
    pub expr: Expr,
}

#[typetag::deserialize(name = "filter")]
impl StepConfig for FilterConfig {
    fn type_name(&self) -> &'static str {
        "filter"
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Arc<dyn Step>, String> {
        Ok(Arc::new(Filter {
            expr: self.expr.clone(),
        }))
    }
}

struct Filter {
    expr: Expr,
}

impl Step for Filter {
    fn apply<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Flow, StepError>> {
        Box::pin(async move {
            if self.expr.eval_bool(work)? {
                Ok(Flow::Continue)
            } else {
                Ok(Flow::Stop(format!("filter {:?}", self.expr.source())))
            }
        })
    }
}
