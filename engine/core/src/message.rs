//! The message envelope: what every source produces and every step, sink and store sees.
//!
//! A message is created by a source as a [`NewMessage`], made durable by the journal (which
//! assigns the [`MessageId`] and sets the state to [`State::Received`]) and only then
//! acknowledged to the sender. The body is opaque bytes; the `kind` says how steps may read it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A message id: a UUID v7 in its hyphenated text form, so ids sort by arrival time.
pub type MessageId = String;

/// Creates a new time-ordered message id.
pub fn new_id() -> MessageId {
    uuid::Uuid::now_v7().to_string()
}

/// Milliseconds since the Unix epoch, the time unit stored in the journal.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Where a message is in its life.
///
/// `received → processing → done`, or `processing → failed → (retry) processing …`, and
/// `failed → dead` once the pipeline's `max_attempts` is used up. A person (or the API) may
/// reprocess a `dead`, `failed` or `done` message, which puts it back to `received`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Received,
    Processing,
    Done,
    Failed,
    Dead,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Received,
        State::Processing,
        State::Done,
        State::Failed,
        State::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Received => "received",
            State::Processing => "processing",
            State::Done => "done",
            State::Failed => "failed",
            State::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// What a source hands to the journal. Everything a later step needs must be in here:
/// nothing about the transport survives except what the source copies into `headers`.
#[derive(Clone, PartialEq)]
pub struct NewMessage {
    /// The facility (tenant) the message belongs to.
    pub facility: String,
    pub pipeline: String,
    /// How the body is encoded: `json`, `text`, `bytes`, `event`, `hl7v2`, …
    pub kind: String,
    pub body: Vec<u8>,
    pub headers: BTreeMap<String, String>,
    /// Which source accepted it, e.g. `http 127.0.0.1:53122` or `file inbox/a.csv#3`.
    pub source: String,
    /// The sender's identity of the message (e.g. MSH-3+MSH-4+MSH-10). A second message with the
    /// same key and the same body is a resend: acknowledged again, not processed again.
    pub dedup_key: Option<String>,
    /// Carried from the sender when it has one (W3C traceparent, or a parent message).
    pub trace_id: Option<String>,
    /// The sender's span from its W3C `traceparent` (see [`NewMessage::set_traceparent`]): the
    /// intake span is its child when traces are on. Not journaled; only the trace id is.
    pub sender_span: Option<crate::telemetry::TraceParent>,
    /// The message this one was routed from, if any.
    pub parent_id: Option<MessageId>,
    /// Set when the source refused the message (e.g. an HL7 frame that does not parse): it is
    /// journaled straight into the `dead` state with this reason, so nothing received is lost,
    /// and it is not processed. It is reprocessed only on explicit request (`include_refused`:
    /// the sender was told it was not accepted), and its reason stays on record as its intake
    /// row (see [`crate::store::Store::reprocess_with`]).
    pub rejected: Option<String>,
    /// The dedup hash of the body, computed by the journal before it seals the body (sources
    /// leave it `None`): SHA-256, or the keyed blind index when bodies are encrypted.
    pub body_hash: Option<String>,
    /// The engine process (cluster node) that accepted it and answers for it until a node
    /// claims it; `None` with the local queue. Set by the pipeline, not by sources.
    pub owner: Option<String>,
    /// Journaled as due (`next_attempt_at` = now) rather than handed to a worker in memory:
    /// the pipeline's in-memory queue was full, so the journal holds it until the pipeline's
    /// feeder takes it up. Set by the pipeline, not by sources.
    pub due: bool,
    /// For a pipeline with an `ordering_key`: the key's stable hash and the partition it maps
    /// to (`hash % concurrency`), journaled so that the feeder takes up waiting messages one
    /// partition at a time (a partition whose head of line is retrying holds only its own keys).
    /// Set by the pipeline, not by sources.
    pub ordering: Option<(i64, i64)>,
}

impl NewMessage {
    /// A `Message` view of this message before it is journaled (no id yet): what expressions
    /// evaluated at submit time (dedup and ordering keys) see.
    pub fn preview(&self) -> Message {
        let now = now_ms();
        Message {
            id: String::new(),
            facility: self.facility.clone(),
            pipeline: self.pipeline.clone(),
            kind: self.kind.clone(),
            body: self.body.clone(),
            headers: self.headers.clone(),
            source: self.source.clone(),
            received_at: now,
            trace_id: self.trace_id.clone().unwrap_or_default(),
            dedup_key: self.dedup_key.clone(),
            parent_id: self.parent_id.clone(),
            state: State::Received,
            attempts: 0,
            next_attempt_at: None,
            last_error: None,
            updated_at: now,
        }
    }

    /// Takes the sender's W3C `traceparent` header: the message joins the sender's trace (its
    /// `trace_id`) and its intake span becomes a child of the sender's span. A malformed value
    /// is ignored, as the W3C recommendation says; `false` then.
    pub fn set_traceparent(&mut self, value: &str) -> bool {
        match crate::telemetry::TraceParent::parse(value) {
            Some(t) => {
                self.trace_id = Some(t.trace_hex());
                self.sender_span = Some(t);
                true
            }
            None => false,
        }
    }

    pub fn new(pipeline: &str, facility: &str, kind: &str, body: Vec<u8>) -> NewMessage {
        NewMessage {
            facility: facility.to_owned(),
            pipeline: pipeline.to_owned(),
            kind: kind.to_owned(),
            body,
            headers: BTreeMap::new(),
            source: String::new(),
            dedup_key: None,
            trace_id: None,
            sender_span: None,
            parent_id: None,
            rejected: None,
            body_hash: None,
            owner: None,
            due: false,
            ordering: None,
        }
    }
}

// Bodies carry patient data: never print them.
impl fmt::Debug for NewMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewMessage")
            .field("pipeline", &self.pipeline)
            .field("facility", &self.facility)
            .field("kind", &self.kind)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// A journaled message with its processing state.
#[derive(Clone, Serialize)]
pub struct Message {
    pub id: MessageId,
    pub facility: String,
    pub pipeline: String,
    pub kind: String,
    #[serde(skip)]
    pub body: Vec<u8>,
    pub headers: BTreeMap<String, String>,
    pub source: String,
    pub received_at: i64,
    pub trace_id: String,
    pub dedup_key: Option<String>,
    pub parent_id: Option<MessageId>,
    pub state: State,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub last_error: Option<String>,
    pub updated_at: i64,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("id", &self.id)
            .field("pipeline", &self.pipeline)
            .field("kind", &self.kind)
            .field("state", &self.state)
            .field("attempts", &self.attempts)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .finish_non_exhaustive()
    }
}

/// The journal's answer to an append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Accepted {
    pub id: MessageId,
    /// `true` when an identical message with the same dedup key was already journaled; `id`
    /// and `state` are then those of the first one and nothing new will be processed.
    pub duplicate: bool,
    /// `true` when the dedup key was seen before with a *different* body (a sender reusing
    /// control ids). The message is processed and carries the header `huizhen-dedup: reused-key`.
    pub reused_key: bool,
    pub state: State,
}

/// Header set on a message whose dedup key was already used by a different body.
pub const REUSED_KEY_HEADER: &str = "huizhen-dedup";

/// Formats milliseconds since the epoch as RFC 3339 UTC (`2026-11-23T20:19:16.123Z`).
pub fn format_ms(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}
