//! The insurance platform port. The core knows no NHSA wire format: an adapter (the `nhsa`
//! HTTP JSON client in `adapters/insurer`) registers an [`InsurerConfig`] under its name with
//! one `#[typetag::deserialize(name = "…")]` line and builds an [`Insurer`].
//!
//! A call goes in two steps so the saga can be persisted between them: [`Insurer::request`]
//! builds the request exactly as it will be sent (the runner stores it with the saga, BEFORE
//! anything leaves the engine), then [`Insurer::send`] sends that text. `send` never fails:
//! what cannot be trusted (a timeout, a lost connection, an answer that does not parse) is
//! `Outcome::Uncertain`, which the saga reverses; only a well-formed refusal is `Refused`.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, Utc};
use futures::future::BoxFuture;
use huizhen_domain::billing::{CallRef, Outcome, Settlement};

/// What the adapter is built with besides its own config.
#[derive(Debug, Clone)]
pub struct InsurerContext {
    /// 定点医药机构编号.
    pub institution: String,
    /// 定点医药机构名称.
    pub institution_name: String,
    /// The institution's local time.
    pub offset: FixedOffset,
    /// The root file's folder (relative files in the adapter's config are relative to it).
    pub base_dir: Option<PathBuf>,
}

/// The answer to a call.
#[derive(Debug, Clone)]
pub struct Answer {
    /// How it ended, for the saga.
    pub outcome: Outcome,
    /// The response body as received, when one was (stored with the call).
    pub response: Option<String>,
}

/// An insurance platform.
pub trait Insurer: Send + Sync {
    /// Its name in logs and errors.
    fn name(&self) -> &str;

    /// The request of `call` for `settlement` at `now`, as it will be sent. An error means
    /// the saga cannot make this call (a field the platform needs is missing).
    fn request(
        &self,
        settlement: &Settlement,
        call: &CallRef,
        now: DateTime<Utc>,
    ) -> Result<String, String>;

    /// Sends a request built by [`Insurer::request`] and persisted.
    fn send<'a>(&'a self, call: &'a CallRef, request: &'a str) -> BoxFuture<'a, Answer>;
}

/// The YAML side of an insurer: `insurer: { <type>: {…} }` in `billing:`.
#[typetag::deserialize]
pub trait InsurerConfig: std::fmt::Debug + Send + Sync {
    /// Builds the adapter (reads its field maps; no network I/O).
    fn build(&self, ctx: &InsurerContext) -> Result<Arc<dyn Insurer>, String>;
}
