//! The message while it is being processed: what steps read and change.
//!
//! The journaled body is never changed (it stays as received, for replay). Steps work on this
//! copy; the body is parsed as JSON at most once and written back only if a step changed it.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::message::{Message, MessageId};

/// A step or sink failure: the message is retried, then dead-lettered with this text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    pub message: String,
    /// `false` for errors that retrying cannot fix (e.g. a body that is not JSON): the message
    /// goes to `dead` at once instead of using up its retries.
    pub retryable: bool,
    /// The destination asked not to be tried again before this long (HTTP `Retry-After`): the
    /// next attempt waits at least this, or the backoff if that is longer.
    pub retry_after: Option<std::time::Duration>,
}

impl StepError {
    pub fn new(message: impl Into<String>) -> StepError {
        StepError {
            message: message.into(),
            retryable: true,
            retry_after: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> StepError {
        StepError {
            message: message.into(),
            retryable: false,
            retry_after: None,
        }
    }

    /// The next attempt no sooner than `wait` from now (a retryable error only).
    pub fn not_before(mut self, wait: std::time::Duration) -> StepError {
        self.retry_after = Some(wait);
        self
    }
}

/// An error and its chain of sources, `: `-joined (`cannot connect: Connection refused`).
pub fn causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// The wait an HTTP `Retry-After` value asks for: delta-seconds (`120`) or an HTTP-date (a date
/// already past is no wait). `None` when it is neither.
pub fn parse_retry_after(value: &str) -> Option<std::time::Duration> {
    let v = value.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(std::time::Duration::from_secs(s));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let when: std::time::SystemTime = when.into();
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StepError {}

/// What happens after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    /// Go on with the next step.
    Continue,
    /// Stop here: the message is done and no sink runs (e.g. filtered out, or routed away).
    Stop(String),
}

/// The in-flight message.
pub struct Work {
    pub id: MessageId,
    pub pipeline: String,
    pub facility: String,
    pub kind: String,
    pub source: String,
    pub trace_id: String,
    pub attempts: i64,
    pub received_at: i64,
    pub headers: BTreeMap<String, String>,
    body: Vec<u8>,
    json: Option<serde_json::Value>,
    json_dirty: bool,
    /// A step replaced the body or took it for changing: it may differ from the journaled one.
    changed: bool,
    /// Parsed forms of the body made by adapters (see [`Work::cached`]).
    cache: Vec<Arc<dyn Any + Send + Sync>>,
    /// The span a sink's call is part of, while a delivery span is open (traces on).
    span: Option<crate::telemetry::TraceParent>,
}

impl fmt::Debug for Work {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Work")
            .field("id", &self.id)
            .field("pipeline", &self.pipeline)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Work {
    pub fn from_message(m: &Message) -> Work {
        Work {
            id: m.id.clone(),
            pipeline: m.pipeline.clone(),
            facility: m.facility.clone(),
            kind: m.kind.clone(),
            source: m.source.clone(),
            trace_id: m.trace_id.clone(),
            attempts: m.attempts,
            received_at: m.received_at,
            headers: m.headers.clone(),
            body: m.body.clone(),
            json: None,
            json_dirty: false,
            changed: false,
            cache: Vec::new(),
            span: None,
        }
    }

    /// The W3C `traceparent` a sink sends downstream: the message's trace and the delivery's
    /// span (traces on), or the message's intake span (traces off; marked sampled).
    pub fn traceparent(&self) -> String {
        self.span
            .unwrap_or_else(|| crate::telemetry::TraceParent::of_message(&self.id, &self.trace_id))
            .header()
    }

    /// Sets (or clears) the open delivery span that [`Work::traceparent`] names.
    pub(crate) fn set_span(&mut self, span: Option<crate::telemetry::TraceParent>) {
        self.span = span;
    }

    /// A parsed form of the body, made once per message (per body) by `make` and shared by
    /// every later step and expression. Replacing the body drops it.
    pub fn cached<T, F>(&mut self, make: F) -> Result<Arc<T>, StepError>
    where
        T: Any + Send + Sync,
        F: FnOnce(&Work) -> Result<T, StepError>,
    {
        if let Some(hit) = self
            .cache
            .iter()
            .find_map(|c| c.clone().downcast::<T>().ok())
        {
            return Ok(hit);
        }
        self.body();
        let made = Arc::new(make(self)?);
        self.cache.push(made.clone());
        Ok(made)
    }

    /// Whether the body may differ from the message's journaled body: a step replaced it or
    /// took its JSON for changing. `false` means it is exactly the body as received.
    pub fn body_changed(&self) -> bool {
        self.changed
    }

    /// The body bytes as they are now (without re-serializing pending JSON changes).
    pub fn raw_body(&self) -> &[u8] {
        &self.body
    }

    /// The body bytes, including any change a step made to its JSON.
    pub fn body(&mut self) -> &[u8] {
        if self.json_dirty {
            if let Some(j) = &self.json {
                self.body = serde_json::to_vec(j).unwrap_or_default();
            }
            self.json_dirty = false;
        }
        &self.body
    }

    /// Replaces the body with raw bytes.
    pub fn set_body(&mut self, body: Vec<u8>) {
        self.body = body;
        self.changed = true;
        self.cache.clear();
        self.json = None;
        self.json_dirty = false;
    }

    /// The body as JSON, parsed on first use. A body that is not UTF-8 or not JSON is a
    /// permanent error naming the byte offset or line and column.
    pub fn json(&mut self) -> Result<&serde_json::Value, StepError> {
        self.parse_json()?;
        Ok(self.json.as_ref().expect("parsed above"))
    }

    /// The body as JSON, for changing it.
    pub fn json_mut(&mut self) -> Result<&mut serde_json::Value, StepError> {
        self.parse_json()?;
        self.json_dirty = true;
        self.changed = true;
        self.cache.clear();
        Ok(self.json.as_mut().expect("parsed above"))
    }

    fn parse_json(&mut self) -> Result<(), StepError> {
        if self.json.is_none() {
            let text = std::str::from_utf8(&self.body).map_err(|e| {
                StepError::permanent(format!(
                    "message {}: body is not UTF-8 (invalid byte at offset {}), but JSON was expected",
                    self.id,
                    e.valid_up_to()
                ))
            })?;
            let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                StepError::permanent(format!(
                    "message {}: body is not valid JSON at line {} column {}: {}",
                    self.id,
                    e.line(),
                    e.column(),
                    e
                ))
            })?;
            self.json = Some(v);
        }
        Ok(())
    }

    /// Replaces the body with a JSON value.
    pub fn set_json(&mut self, v: serde_json::Value) {
        self.cache.clear();
        self.json = Some(v);
        self.json_dirty = true;
        self.changed = true;
        self.kind = "json".into();
    }

    /// The body as an expression value: JSON for `json` messages, text for UTF-8, else bytes.
    pub(crate) fn body_value(&mut self) -> Result<cel::Value, StepError> {
        if self.kind == "json" {
            let j = self.json()?;
            return cel::to_value(j)
                .map_err(|e| StepError::permanent(format!("message {}: body: {e}", self.id)));
        }
        Ok(match std::str::from_utf8(self.body()) {
            Ok(s) => cel::Value::String(std::sync::Arc::new(s.to_owned())),
            Err(_) => cel::Value::Bytes(std::sync::Arc::new(self.body.clone())),
        })
    }
}
