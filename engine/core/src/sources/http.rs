//! `http`: messages POSTed to the engine's HTTP server.
//!
//! ```yaml
//! source:
//!   http: { path: /in/demo, kind: json }
//! ```
//! `POST <path>` with any body returns `202 {"id", "duplicate", "state"}` once the message is
//! journaled. An `Idempotency-Key` header becomes the dedup key: the same key and body again
//! returns the first message's id with `"duplicate": true` and is not processed again.
//! `content-type` and `x-*` request headers are copied into the message headers.

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Source, SourceConfig, SourceContext};
use crate::runner::BuildContext;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSourceConfig {
    /// Path on the engine's HTTP server; must start with `/in/`.
    pub path: String,
    /// Message kind: `json`, `text`, `bytes` or another adapter's kind. By default `json` when
    /// the request says `content-type: application/json`, else `text`.
    #[serde(default)]
    pub kind: Option<String>,
}

#[typetag::deserialize(name = "http")]
impl SourceConfig for HttpSourceConfig {
    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn Source>, String> {
        if !self.path.starts_with("/in/") || self.path.len() <= 4 {
            return Err(format!(
                "http source path {:?} must start with /in/ followed by a name, e.g. /in/adt",
                self.path
            ));
        }
        if self.path.contains(char::is_whitespace) || self.path.contains('?') {
            return Err(format!(
                "http source path {:?} may not contain spaces or '?'",
                self.path
            ));
        }
        Ok(Box::new(HttpSource {
            config: self.clone(),
        }))
    }

    fn http_path(&self) -> Option<String> {
        Some(self.path.clone())
    }
}

struct HttpSource {
    config: HttpSourceConfig,
}

impl Source for HttpSource {
    fn describe(&self) -> String {
        format!("http POST {}", self.config.path)
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async move {
            ctx.ingress.register(
                &self.config.path,
                ctx.pipeline.clone(),
                self.config.kind.clone(),
            );
            ctx.shutdown.cancelled().await;
            ctx.ingress.unregister_for(&self.config.path, &ctx.pipeline);
            Ok(())
        })
    }
}
