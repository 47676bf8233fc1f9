//! `log`: writes a line to the engine log for each message.
//!
//! ```yaml
//! - log: { message: "ADT received", level: info, headers: [department] }
//! ```
//! It logs the message id, pipeline, kind and the listed headers. It never logs the body:
//! bodies carry patient data, which must not reach logs.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Step, StepConfig};
use crate::runner::BuildContext;
use crate::work::{Flow, StepError, Work};

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    #[default]
    Info,
    Warn,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Text of the log line.
    #[serde(default = "default_message")]
    pub message: String,
    #[serde(default)]
    pub level: Level,
    /// Header names to include.
    #[serde(default)]
    pub headers: Vec<String>,
}

fn default_message() -> String {
    "message".into()
}

#[typetag::deserialize(name = "log")]
impl StepConfig for LogConfig {
    fn type_name(&self) -> &'static str {
        "log"
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Arc<dyn Step>, String> {
        Ok(Arc::new(self.clone()))
    }
}

impl Step for LogConfig {
    fn apply<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Flow, StepError>> {
        Box::pin(async move {
            let headers: Vec<String> = self
                .headers
                .iter()
                .map(|h| format!("{h}={}", work.headers.get(h).map_or("", String::as_str)))
                .collect();
            let headers = headers.join(" ");
            match self.level {
                Level::Debug => {
                    tracing::debug!(id = %work.id, pipeline = %work.pipeline, kind = %work.kind, %headers, "{}", self.message)
                }
                Level::Info => {
                    tracing::info!(id = %work.id, pipeline = %work.pipeline, kind = %work.kind, %headers, "{}", self.message)
                }
                Level::Warn => {
                    tracing::warn!(id = %work.id, pipeline = %work.pipeline, kind = %work.kind, %headers, "{}", self.message)
                }
            }
            Ok(Flow::Continue)
        })
    }
}
