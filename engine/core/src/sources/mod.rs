//! Sources: where messages come from.
//!
//! One file per source, registered by its `#[typetag::deserialize(name = "…")]` line. A source
//! turns what it receives into a [`crate::message::NewMessage`], hands it to
//! [`crate::runner::PipelineHandle::submit`] and acknowledges its sender only after that returns
//! `Ok` (the journal has committed it). `submit` waits when the pipeline's queue is full, which
//! is how back-pressure reaches the socket or the folder.

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::http::HttpIngress;
use crate::runner::{BuildContext, PipelineHandle};

mod cron;
mod file;
mod http;
mod internal;

pub(crate) use cron::parse_schedule;
pub use http::HttpSourceConfig;
pub use internal::InternalSourceConfig;

/// A way to cut a file into messages, for the `file` source's `split:` (besides the built-in
/// `whole` and `lines`). Adapters register one with `inventory::submit!`, e.g. `hl7` for HL7
/// batch files (FHS/BHS … BTS/FTS) and files of several messages.
pub struct Splitter {
    pub name: &'static str,
    pub split: fn(&[u8]) -> SplitOutput,
}

/// The messages found in a file, with headers for each, and problems worth an alert (e.g. a
/// batch trailer whose count does not match). Problems never drop a message.
#[derive(Debug, Default)]
pub struct SplitOutput {
    pub parts: Vec<(Vec<u8>, std::collections::BTreeMap<String, String>)>,
    pub warnings: Vec<String>,
}

inventory::collect!(Splitter);

pub(crate) fn splitter(name: &str) -> Option<&'static Splitter> {
    inventory::iter::<Splitter>
        .into_iter()
        .find(|s| s.name == name)
}

pub(crate) fn splitter_names() -> Vec<&'static str> {
    inventory::iter::<Splitter>
        .into_iter()
        .map(|s| s.name)
        .collect()
}

/// The YAML side of a source: `source: { <type>: {…} }` in a pipeline.
#[typetag::deserialize]
pub trait SourceConfig: std::fmt::Debug + Send + Sync {
    /// Builds the source without doing I/O (`validate` calls it too).
    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Source>, String>;

    /// The HTTP path this source listens on, if it is an HTTP source (checked for clashes).
    fn http_path(&self) -> Option<String> {
        None
    }

    /// Settings that work but are risky (an MLLP listener open to every host): logged as
    /// warnings with the file and line by `validate` and at start, never an error.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

/// What a running source gets.
#[derive(Clone)]
pub struct SourceContext {
    pub pipeline: PipelineHandle,
    pub shutdown: CancellationToken,
    pub ingress: HttpIngress,
}

/// A source that has started: runs until its pipeline stops; an error is why it stopped.
pub type Running = BoxFuture<'static, Result<(), String>>;

/// A built source.
pub trait Source: Send {
    /// A short description for `/api/pipelines`, e.g. `http POST /in/demo`.
    fn describe(&self) -> String;

    /// Opens what the source cannot run without (a listener binds its port) and returns the
    /// rest of its run. The engine awaits it before it reports started: a source that cannot
    /// start (a port in use) stops `huizhen run` with the reason, and refuses a reload. The
    /// default opens nothing: the source starts at once.
    fn start(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<Running, String>> {
        Box::pin(std::future::ready(Ok(self.run(ctx))))
    }

    /// The answers this source gives its senders, in its protocol's words (`AA`, `AR`, …),
    /// counted with [`PipelineHandle::verdict`]; each is a series at zero from the start.
    fn verdicts(&self) -> &'static [&'static str] {
        &[]
    }

    /// The address a listener source accepts connections on (its open connections are a
    /// gauge from the start, counted with [`PipelineHandle::connection`]).
    fn listens_on(&self) -> Option<String> {
        None
    }

    /// Runs until `ctx.shutdown` is cancelled. An error stops the source and is reported.
    fn run(self: Box<Self>, ctx: SourceContext) -> Running;
}
