//! `route`: hands the message to another pipeline.
//!
//! ```yaml
//! - route: { to: lab-results, when: "headers.type == 'ORU'" }
//! ```
//! The copy is journaled in the target pipeline with the dedup key `route:<this message id>`,
//! so a retry of this message never routes it twice. Unless `continue: true`, processing in
//! this pipeline stops there (the message is done). Without `when` it always routes.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Step, StepConfig};
use crate::expr::Expr;
use crate::message::NewMessage;
use crate::runner::{BuildContext, Router};
use crate::work::{Flow, StepError, Work};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The name of the target pipeline.
    pub to: String,
    /// Route only when this CEL expression is true.
    #[serde(default)]
    pub when: Option<Expr>,
    /// Go on with the next steps of this pipeline after routing.
    #[serde(default, rename = "continue")]
    pub continue_: bool,
}

#[typetag::deserialize(name = "route")]
impl StepConfig for RouteConfig {
    fn type_name(&self) -> &'static str {
        "route"
    }

    fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Step>, String> {
        if self.to == ctx.pipeline {
            return Err(format!(
                "route to {:?} would loop back into the same pipeline",
                self.to
            ));
        }
        Ok(Arc::new(Route {
            config: self.clone(),
            router: ctx.router.clone(),
        }))
    }

    fn routes_to(&self) -> Vec<String> {
        vec![self.to.clone()]
    }
}

struct Route {
    config: RouteConfig,
    router: Router,
}

impl Step for Route {
    fn apply<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Flow, StepError>> {
        Box::pin(async move {
            if let Some(when) = &self.config.when
                && !when.eval_bool(work)?
            {
                return Ok(Flow::Continue);
            }
            let target = self.router.get(&self.config.to).ok_or_else(|| {
                StepError::new(format!(
                    "route: pipeline {:?} is not running",
                    self.config.to
                ))
            })?;
            let body = work.body().to_vec();
            let mut m = NewMessage::new(&self.config.to, &work.facility, &work.kind, body);
            m.headers = work.headers.clone();
            m.source = format!("route from {}", work.pipeline);
            m.dedup_key = Some(format!("route:{}", work.id));
            m.trace_id = Some(work.trace_id.clone());
            m.parent_id = Some(work.id.clone());
            let accepted = target
                .submit(m)
                .await
                .map_err(|e| StepError::new(format!("route to {:?}: {e}", self.config.to)))?;
            work.headers.insert(
                "huizhen-routed-to".into(),
                format!("{}:{}", self.config.to, accepted.id),
            );
            if self.config.continue_ {
                Ok(Flow::Continue)
            } else {
                Ok(Flow::Stop(format!("routed to {}", self.config.to)))
            }
        })
    }
}
