//! `mllp`: an HL7 v2 listener (MLLP over TCP).
//!
//! ```yaml
//! source:
//!   mllp:
//!     listen: 127.0.0.1:2575
//!     charset: GB18030          # when MSH-18 is empty (county HIS rarely fill it)
//!     on_invalid_charset: reject  # or replace (decode with U+FFFD and flag the message)
//!     allow: [127.0.0.1, 10.12.0.0/16]
//!     frame_timeout: 30s        # a frame must be complete 30 s after its first byte
//!     max_buffered_bytes: 268435456   # unfinished frames of all connections together
//! ```
//! For each frame: decode with the charset `MSH-18` names (or the default), read the header,
//! check version and processing id, journal the raw bytes, and only then answer AA/CA
//! (STANDARDS HL7-11). The dedup key is `MSH-3|MSH-4|MSH-10` (HL7-14): an identical resend gets
//! the same ACK and is not processed again. A frame that cannot be decoded or parsed, or whose
//! header is unsupported, is answered AE/AR with an ERR segment and still journaled, as a dead
//! letter with the reason, so nothing is lost. If the journal cannot commit, the answer is
//! AR/CR (the sender may resend unchanged); never AA.
//!
//! Messages are stored with kind `hl7v2`, the raw bytes as received, and headers `hl7-type`
//! (`ADT^A01`), `hl7-control-id`, `hl7-version`, `hl7-charset` (the encoding used),
//! `hl7-sending-application`, `hl7-sending-facility`, and `hl7-app-ack` when the sender asked
//! for an application ACK (enhanced mode).
//!
//! Limits (the plumbing, shared with the `dicom` source, is [`huizhen_core::listener`]): `max_connections` served at once, each
//! frame at most `max_frame_bytes` and complete within `frame_timeout` of its first byte (the
//! `idle_timeout` between frames restarts with every byte, so it alone cannot stop a trickle),
//! and at most `max_buffered_bytes` held in unfinished frames by all connections together: a
//! connection whose next read would pass that waits (reading paused, logged) until others
//! release bytes or its frame deadline closes it. Peers outside `allow` are refused; a
//! listener on a non-loopback address without `allow` is warned about by `validate` and at
//! start.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use huizhen_core::config::duration;
use huizhen_core::listener::{
    Accepted, ByteBudget, ListenerSpec, NoRefusal, TcpServer, UnitClock, WhenFull, read_some,
};
use huizhen_core::message::NewMessage;
use huizhen_core::runner::{BuildContext, PipelineHandle};
use huizhen_core::sources::{Running, Source, SourceConfig, SourceContext};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::ack::{self, AckCode, ErrorCode, ErrorDetail, Outcome};
use crate::charset::{self, OnInvalid};
use crate::mllp::{Deframer, Event, frame};
use crate::parse::{Delimiters, Header, Message};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvalidCharsetPolicy {
    /// Answer AE and keep the message as a dead letter.
    #[default]
    Reject,
    /// Decode with U+FFFD for bad bytes, accept, and flag it (`hl7-charset-replaced: true`).
    Replace,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MllpSourceConfig {
    /// Address to listen on, e.g. `127.0.0.1:2575` or `0.0.0.0:2575`.
    pub listen: String,
    /// Character set when `MSH-18` is empty (an HL7 table 0211 name or a common label).
    #[serde(default = "default_charset")]
    pub charset: String,
    #[serde(default)]
    pub on_invalid_charset: InvalidCharsetPolicy,
    /// Largest frame accepted; a larger one closes the connection.
    #[serde(default = "default_max_frame")]
    pub max_frame_bytes: usize,
    /// A connection idle this long between frames is closed.
    #[serde(default = "default_idle", with = "duration")]
    pub idle_timeout: Duration,
    /// A frame must be complete this long after its first byte, or the connection is closed
    /// (so are stray bytes outside frames that go on this long). Unlike `idle_timeout` it does
    /// not restart with each byte, so a peer trickling bytes cannot hold a connection forever.
    #[serde(default = "default_frame_timeout", with = "duration")]
    pub frame_timeout: Duration,
    /// Bytes that all connections of this listener may hold in unfinished frames at once
    /// (default 256 MiB; without it 256 connections × 16 MiB frames could hold 4 GiB). A
    /// connection whose next read would pass it stops reading until bytes are released or its
    /// `frame_timeout` closes it. At least `max_frame_bytes` plus one read (64 KiB).
    #[serde(default = "default_max_buffered")]
    pub max_buffered_bytes: usize,
    /// Connections served at once; more wait in the listen backlog.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Peers allowed to connect: IP addresses or CIDR blocks. Empty allows every peer (warned
    /// about when `listen` is not a loopback address).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Version assumed when `MSH-12` is empty (HL7-35); the original is kept.
    #[serde(default = "default_version")]
    pub default_version: String,
    /// Message types this channel takes, as `TYPE^EVENT` with `*` for any event (`ADT^*`,
    /// `ORU^R01`). Others get AR with ERR 200 (type) or 201 (event). Empty takes every type.
    #[serde(default)]
    pub accept_types: Vec<String>,
    /// TLS (1.2+): certificate, key and, for mutual TLS, the CA of client certificates.
    #[serde(default)]
    pub tls: Option<huizhen_core::tls::TlsConfig>,
    /// With `MSH-18` empty, bytes that are valid UTF-8 but that `charset` would misread (a
    /// multi-byte charset swallowing a delimiter, or invalid sequences) are read as UTF-8 and
    /// flagged `hl7-charset-detected: UTF-8` (default). `false`: answered AE instead.
    #[serde(default = "yes")]
    pub detect_utf8: bool,
    /// A frame holding an `FHS`/`BHS` batch is answered with a batch of ACKs: one per message
    /// (`all`, the default) or only those that are not AA/CA (`errors`) (HL7-36).
    #[serde(default)]
    pub batch_ack: BatchAck,
}

/// Which ACKs the answer to a batch frame holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchAck {
    #[default]
    All,
    Errors,
}

fn yes() -> bool {
    true
}

fn default_charset() -> String {
    charset::LISTENER_DEFAULT.into()
}
fn default_max_frame() -> usize {
    16 * 1024 * 1024
}
fn default_idle() -> Duration {
    Duration::from_secs(300)
}
fn default_frame_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_buffered() -> usize {
    256 * 1024 * 1024
}
/// Largest single read from a connection.
const READ_CHUNK: usize = 64 * 1024;
/// Line ends and spaces tolerated between frames before they count as stray bytes that must
/// stop within `frame_timeout` (some senders put CR LF after the end block).
const BETWEEN_FRAMES: usize = 8;

fn default_max_connections() -> usize {
    256
}
fn default_version() -> String {
    "2.5".into()
}

#[typetag::deserialize(name = "mllp")]
impl SourceConfig for MllpSourceConfig {
    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn Source>, String> {
        let default_charset = charset::encoding_for_msh18(&self.charset).ok_or_else(|| {
            format!(
                "unknown charset {:?}: use an HL7 table 0211 name such as \"UNICODE UTF-8\", \"GB 18030-2000\" or a label such as GBK",
                self.charset
            )
        })?;
        let server = self.listener().build()?;
        let need = self.max_frame_bytes.saturating_add(self.read_chunk());
        if self.max_buffered_bytes < need {
            return Err(format!(
                "max_buffered_bytes ({}) must be at least max_frame_bytes plus one read ({need}), or no frame of the largest size could ever be buffered",
                self.max_buffered_bytes
            ));
        }
        for t in &self.accept_types {
            let ok =
                matches!(t.split_once('^'), Some((ty, ev)) if !ty.is_empty() && !ev.is_empty());
            if !ok {
                return Err(format!(
                    "accept_types: {t:?} should look like ADT^A01 or ADT^*"
                ));
            }
        }
        Ok(Box::new(MllpSource {
            config: Arc::new(self.clone()),
            default_charset,
            server,
        }))
    }

    fn warnings(&self) -> Vec<String> {
        self.listener().warnings()
    }
}

impl MllpSourceConfig {
    /// Bytes asked of the socket at once: no more than a frame may hold.
    fn read_chunk(&self) -> usize {
        READ_CHUNK.min(self.max_frame_bytes.saturating_add(2))
    }

    /// The listener settings, checked by the shared plumbing.
    fn listener(&self) -> ListenerSpec<'_> {
        ListenerSpec {
            kind: "mllp",
            listen: &self.listen,
            allow: &self.allow,
            tls: self.tls.as_ref(),
            max_connections: self.max_connections,
            timeouts: [
                ("frame_timeout", self.frame_timeout),
                ("idle_timeout", self.idle_timeout),
            ],
        }
    }
}

struct MllpSource {
    config: Arc<MllpSourceConfig>,
    default_charset: &'static encoding_rs::Encoding,
    server: TcpServer,
}

impl Source for MllpSource {
    fn describe(&self) -> String {
        self.server.describe()
    }

    fn verdicts(&self) -> &'static [&'static str] {
        VERDICTS
    }

    fn listens_on(&self) -> Option<String> {
        Some(self.server.listen().to_owned())
    }

    /// Binds the port first: a port in use stops the engine's start (or a reload) with the
    /// reason instead of leaving the pipeline without its listener.
    fn start(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<Running, String>> {
        Box::pin(async move {
            let MllpSource {
                config,
                default_charset,
                server,
            } = *self;
            let bound = server.bind().await?;
            let shared = Arc::new(Shared {
                config: config.clone(),
                default_charset,
                pipeline: ctx.pipeline.clone(),
                budget: ByteBudget::new(config.max_buffered_bytes),
            });
            let running: Running = Box::pin(async move {
                // Over max_connections a sender waits in the listen backlog (it retries nothing).
                bound
                    .run(
                        ctx.pipeline.name(),
                        ctx.shutdown,
                        WhenFull::<NoRefusal>::Wait,
                        move |conn: Accepted, shutdown| {
                            let shared = shared.clone();
                            async move { serve(conn.stream, conn.peer, &shared, shutdown).await }
                        },
                    )
                    .await
            });
            Ok(running)
        })
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> Running {
        Box::pin(async move { self.start(ctx).await?.await })
    }
}

struct Shared {
    config: Arc<MllpSourceConfig>,
    default_charset: &'static encoding_rs::Encoding,
    pipeline: PipelineHandle,
    /// The bytes all connections of this listener may hold in unfinished frames.
    budget: ByteBudget,
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    s: &Shared,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), String> {
    let _open = s.pipeline.connection(&s.config.listen);
    let mut deframer = Deframer::new(s.config.max_frame_bytes);
    let mut buf = vec![0u8; s.config.read_chunk()];
    let mut clock = UnitClock::new(s.config.frame_timeout, "frame");
    let mut hold = s.budget.hold();
    let mut conn = Conn {
        peer,
        source: format!("mllp {peer}"),
        acks: AckEncoder::default(),
        batch_headers: Vec::new(),
    };
    loop {
        let n = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = read_some(&mut stream, &mut buf, s.config.idle_timeout, &clock) => {
                r.map_err(|e| e.to_string())?
            }
        };
        if n == 0 {
            if let Some(len) = deframer.finish() {
                return Err(format!(
                    "closed in the middle of a frame ({len} bytes, no end block): nothing was acknowledged"
                ));
            }
            if deframer.pending_noise() > 0 {
                tracing::warn!(%peer, bytes = deframer.pending_noise(), "bytes outside any MLLP frame discarded");
            }
            return Ok(());
        }
        // Bytes arrived: until they complete a frame (or prove to be a line end between
        // frames), the frame clock runs, also while waiting for room in the budget.
        clock.start();
        if !hold.try_grow(n) {
            tracing::warn!(pipeline = s.pipeline.name(), %peer, budget = s.budget.total(), "MLLP buffer budget (max_buffered_bytes) in use by unfinished frames: reading from this connection paused");
            if hold.grow(n, clock.deadline()).await.is_err() {
                return Err(format!(
                    "no room in the buffer budget ({} bytes, max_buffered_bytes) before the frame deadline ({:?}): connection closed, nothing acknowledged",
                    s.budget.total(),
                    s.config.frame_timeout
                ));
            }
        }
        let mut completed = false;
        for ev in deframer.push(&buf[..n]) {
            match ev {
                Event::Frame(raw) => {
                    completed = true;
                    let ack = if crate::batch::is_batch(&raw) {
                        handle_batch(s, &mut conn, raw).await
                    } else {
                        handle(s, &mut conn, raw).await.bytes
                    };
                    stream
                        .write_all(&frame(&ack))
                        .await
                        .map_err(|e| format!("cannot send ACK: {e}"))?;
                }
                Event::Noise(bytes) => {
                    tracing::warn!(%peer, bytes, "bytes outside any MLLP frame discarded");
                }
                Event::Interrupted(bytes) => {
                    tracing::warn!(%peer, bytes, "MLLP frame interrupted by a new start block; its bytes were discarded unacknowledged");
                }
                Event::TooLarge { limit } => {
                    return Err(format!(
                        "frame larger than {limit} bytes (max_frame_bytes): connection closed, nothing acknowledged"
                    ));
                }
            }
        }
        hold.shrink_to(deframer.buffered());
        if completed {
            clock.finish();
        }
        if deframer.in_frame()
            || deframer.pending_noise() > 0
            || deframer.between_frames() > BETWEEN_FRAMES
        {
            clock.start();
        } else {
            clock.finish();
        }
    }
}

/// What a connection keeps from one message to the next.
struct Conn {
    peer: SocketAddr,
    /// The messages' `source`: `mllp <peer>`.
    source: String,
    acks: AckEncoder,
    /// Headers added to every message of the batch being handled.
    batch_headers: Vec<(String, String)>,
}

/// The answer to one message: the ACK bytes, and whether it was accepted (AA/CA).
struct Answer {
    bytes: Vec<u8>,
    accepted: bool,
}

/// Turns ACK text into bytes in the message's charset, remembering what repeats from one ACK
/// of a connection to the next: the encoded form of each run of non-ASCII text (the names in
/// MSH-3..6, copied into every ACK) and MSH-7 within the same second. encoding_rs looks a hanzi
/// up in the GBK/GB18030 tables by linear search, which made encoding the ACK cost more than
/// decoding and parsing the message.
///
/// The bytes are those of `charset::encode`: ASCII is copied as is only for charsets that
/// encode ASCII as itself and keep no state between characters (all but ISO-2022-JP and the
/// UTF-16 family, which go through `charset::encode` whole), and when a character cannot be
/// encoded the ACK goes out as UTF-8, as before.
#[derive(Default)]
struct AckEncoder {
    encoding: Option<&'static encoding_rs::Encoding>,
    runs: std::collections::HashMap<String, Vec<u8>>,
    second: i64,
    stamp: String,
}

/// Most non-ASCII runs remembered per connection (a sender repeats a handful).
const ACK_RUNS: usize = 64;

impl AckEncoder {
    /// MSH-7 of an ACK: now, to the second.
    fn now(&mut self) -> &str {
        let now = chrono::Utc::now();
        if self.stamp.is_empty() || now.timestamp() != self.second {
            self.second = now.timestamp();
            self.stamp = now.format("%Y%m%d%H%M%S").to_string();
        }
        &self.stamp
    }

    fn encode(&mut self, text: String, encoding: &'static encoding_rs::Encoding) -> Vec<u8> {
        if encoding == encoding_rs::UTF_8 {
            return text.into_bytes();
        }
        if !encoding.is_ascii_compatible() {
            return charset::encode(&text, encoding).unwrap_or_else(|_| text.into_bytes());
        }
        if self.encoding != Some(encoding) || self.runs.len() >= ACK_RUNS {
            self.runs.clear();
            self.encoding = Some(encoding);
        }
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 2);
        let mut i = 0;
        while i < bytes.len() {
            // An ASCII byte is a character boundary, so `start` and `end` are.
            let start = bytes[i..]
                .iter()
                .position(|b| !b.is_ascii())
                .map_or(bytes.len(), |p| i + p);
            out.extend_from_slice(&bytes[i..start]);
            if start == bytes.len() {
                break;
            }
            let end = bytes[start..]
                .iter()
                .position(u8::is_ascii)
                .map_or(bytes.len(), |p| start + p);
            let run = text.get(start..end).unwrap_or_default();
            match self.runs.get(run) {
                Some(encoded) => out.extend_from_slice(encoded),
                None => match charset::encode(run, encoding) {
                    Ok(encoded) => {
                        out.extend_from_slice(&encoded);
                        self.runs.insert(run.to_owned(), encoded);
                    }
                    Err(_) => return text.into_bytes(),
                },
            }
            i = end;
        }
        out
    }
}

/// A header read leniently from text that did not parse, so that even a broken message gets
/// an ACK its sender can correlate (MSA-2 = its MSH-10, when that can be found).
fn fallback_header(text: &str) -> Header {
    let first = text.split(['\r', '\n']).next().unwrap_or("");
    let mut h = Header {
        delimiters: Delimiters::default(),
        ..Header::default()
    };
    if let Some(rest) = first.strip_prefix("MSH")
        && let Some(sep) = rest.chars().next()
    {
        let fields: Vec<&str> = rest.split(sep).collect();
        // fields[0] is empty (before MSH-1); fields[n-1] is MSH-n for n >= 2.
        let get = |n: usize| {
            fields
                .get(n - 1)
                .map(|s| (*s).to_owned())
                .unwrap_or_default()
        };
        h.sending_application = get(3);
        h.sending_facility = get(4);
        h.receiving_application = get(5);
        h.receiving_facility = get(6);
        h.control_id = get(10);
        h.processing_id = get(11).chars().take(1).collect();
        h.version = get(12);
        if sep.is_ascii_punctuation() && sep != '^' {
            h.delimiters.field = sep;
        }
    }
    h
}

/// The headers and dedup key an accepted message gets from its MSH: `hl7-type`,
/// `hl7-control-id`, `hl7-version` (`default_version` when MSH-12 is empty), `hl7-charset`,
/// the sending application and facility, `hl7-app-ack` when the sender asked for application
/// acknowledgements, and MSH-3|MSH-4|MSH-10 as the dedup key.
pub(crate) fn intake_headers(
    m: &mut NewMessage,
    h: &Header,
    default_version: &str,
    encoding: &'static encoding_rs::Encoding,
) {
    let version = if h.version.is_empty() {
        default_version.to_owned()
    } else {
        h.version.clone()
    };
    m.headers.insert(
        "hl7-type".into(),
        format!("{}^{}", h.message_type, h.trigger),
    );
    m.headers
        .insert("hl7-control-id".into(), h.control_id.clone());
    m.headers.insert("hl7-version".into(), version);
    m.headers
        .insert("hl7-charset".into(), encoding.name().to_owned());
    m.headers.insert(
        "hl7-sending-application".into(),
        h.sending_application.clone(),
    );
    m.headers
        .insert("hl7-sending-facility".into(), h.sending_facility.clone());
    let plan = ack::plan(&h.accept_ack, &h.app_ack, &Outcome::Accepted);
    if let Some(c) = plan.application {
        m.headers.insert("hl7-app-ack".into(), format!("{c:?}"));
    }
    if !h.control_id.is_empty() {
        m.dedup_key = Some(format!(
            "{}|{}|{}",
            h.sending_application, h.sending_facility, h.control_id
        ));
    }
}

/// An HL7 message that enters a pipeline without the MLLP source (`huizhen test`'s inputs):
/// decoded as an `hl7v2` body is, given the headers the source would give it.
fn intake(m: &mut NewMessage) -> Result<(), String> {
    let decoded = crate::expr::decode_body(&m.body, &m.headers).map_err(|e| e.to_string())?;
    let encoding = decoded.encoding;
    let message = Message::from_decoded(decoded)
        .map_err(|e| format!("not a readable HL7 v2 message: {e}"))?;
    let h = message.header();
    let given = std::mem::take(&mut m.headers);
    intake_headers(m, &h, &default_version(), encoding);
    // Headers the input names itself win over the source's.
    m.headers.extend(given);
    Ok(())
}

inventory::submit! {
    huizhen_core::expr::KindIntake { kind: "hl7v2", intake }
}

/// Handles one message: returns the ACK to send back.
async fn handle(s: &Shared, conn: &mut Conn, raw: Vec<u8>) -> Answer {
    let peer = conn.peer;
    let on_invalid = match s.config.on_invalid_charset {
        InvalidCharsetPolicy::Reject => OnInvalid::Reject,
        InvalidCharsetPolicy::Replace => OnInvalid::Replace,
    };
    let mut detected_utf8 = false;
    let decoded = match charset::decode(&raw, s.default_charset, on_invalid) {
        Ok(d) => d,
        // UTF-8 without MSH-18 on a channel whose default would misread it: taken as UTF-8 when
        // the channel allows it, and said so (header, warning), never silently.
        Err(charset::CharsetError::LooksLikeUtf8 { encoding, .. })
            if s.config.detect_utf8
                && let Ok(text) = std::str::from_utf8(&raw) =>
        {
            tracing::warn!(%peer, channel_charset = encoding, "MSH-18 is empty and the bytes are UTF-8, which the channel's charset would misread: read as UTF-8 (hl7-charset-detected)");
            detected_utf8 = true;
            charset::Decoded {
                text: text.to_owned(),
                encoding: encoding_rs::UTF_8,
                declared: None,
                replaced: false,
            }
        }
        Err(e) => {
            // Read the header anyway (its fields are ASCII) to answer something correlatable.
            let lossy = charset::decode(&raw, s.default_charset, OnInvalid::Replace)
                .map(|d| d.text)
                .unwrap_or_else(|_| String::from_utf8_lossy(&raw).into_owned());
            let h = Message::parse(&lossy)
                .map(|m| m.header())
                .unwrap_or_else(|_| fallback_header(&lossy));
            let code = match e {
                charset::CharsetError::Unknown(_) => ErrorCode::TableValueNotFound,
                _ => ErrorCode::DataType,
            };
            let detail = ErrorDetail {
                code,
                segment: "MSH".into(),
                sequence: 1,
                field: 18,
                text: e.to_string(),
            };
            return reject(
                s,
                conn,
                raw,
                &h,
                Outcome::ContentError(detail),
                s.default_charset,
            )
            .await;
        }
    };
    let encoding = decoded.encoding;
    let replaced = decoded.replaced;
    let message = match Message::from_decoded(decoded) {
        Ok(m) => m,
        Err(e) => {
            let text = encoding.decode_without_bom_handling(&raw).0.into_owned();
            let h = fallback_header(&text);
            let detail = ErrorDetail {
                code: ErrorCode::SegmentSequence,
                segment: "MSH".into(),
                sequence: 1,
                field: 0,
                text: format!("not a readable HL7 v2 message: {e}"),
            };
            return reject(s, conn, raw, &h, Outcome::Rejected(detail), encoding).await;
        }
    };
    let h = message.header();
    if let Some(detail) = check_header(&h).or_else(|| check_type(&s.config.accept_types, &h)) {
        return reject(s, conn, raw, &h, Outcome::Rejected(detail), encoding).await;
    }
    let mut m = NewMessage::new(s.pipeline.name(), s.pipeline.facility(), "hl7v2", raw);
    m.source.clone_from(&conn.source);
    m.headers.extend(conn.batch_headers.iter().cloned());
    if h.version.is_empty() {
        tracing::warn!(%peer, control_id = %h.control_id, default = %s.config.default_version, "MSH-12 is empty; the channel's default version applies");
    }
    intake_headers(&mut m, &h, &s.config.default_version, encoding);
    if replaced {
        m.headers
            .insert("hl7-charset-replaced".into(), "true".into());
    }
    if detected_utf8 {
        m.headers
            .insert("hl7-charset-detected".into(), "UTF-8".into());
    }
    let outcome = match s.pipeline.submit(m).await {
        Ok(a) => {
            if a.reused_key {
                tracing::warn!(%peer, control_id = %h.control_id, id = %a.id, "control id reused with a different message: processed and flagged");
            }
            Outcome::Accepted
        }
        Err(e) if e.is_backlog() => {
            // HL7-11: AR/CR with ERR-3 207; the sender keeps the message and sends it later.
            tracing::warn!(%peer, control_id = %h.control_id, error = %e, "backlog limit reached: answering AR/CR");
            Outcome::Rejected(ErrorDetail {
                code: ErrorCode::InternalError,
                segment: "MSH".into(),
                sequence: 1,
                field: 0,
                text: "backlog limit reached; send the message again later".into(),
            })
        }
        Err(e) => {
            tracing::error!(%peer, control_id = %h.control_id, error = %e, "message not journaled: answering AR/CR");
            Outcome::Rejected(ErrorDetail {
                code: ErrorCode::InternalError,
                segment: "MSH".into(),
                sequence: 1,
                field: 0,
                text: "the engine could not store the message; send it again".into(),
            })
        }
    };
    ack_bytes(&s.pipeline, &mut conn.acks, &h, &outcome, encoding)
}

/// Version and processing id checks (HL7-11, HL7-35): AR for what cannot be handled at all.
fn check_header(h: &Header) -> Option<ErrorDetail> {
    let err = |code, field, text: String| {
        Some(ErrorDetail {
            code,
            segment: "MSH".into(),
            sequence: 1,
            field,
            text,
        })
    };
    if !h.version.is_empty() && !h.version.trim().starts_with("2.") {
        return err(
            ErrorCode::UnsupportedVersion,
            12,
            format!("version {:?} is not HL7 v2.x", h.version),
        );
    }
    if !matches!(h.processing_id.trim(), "P" | "D" | "T" | "") {
        return err(
            ErrorCode::UnsupportedProcessingId,
            11,
            format!("processing id {:?} is not P, D or T", h.processing_id),
        );
    }
    if h.message_type.trim().is_empty() {
        return err(
            ErrorCode::RequiredFieldMissing,
            9,
            "MSH-9 (message type) is empty".into(),
        );
    }
    None
}

/// The channel's `accept_types` (HL7-11: AR 200 for a type, 201 for an event it does not take).
fn check_type(accept: &[String], h: &Header) -> Option<ErrorDetail> {
    if accept.is_empty() {
        return None;
    }
    let (ty, ev) = (h.message_type.trim(), h.trigger.trim());
    let type_known = accept.iter().any(|a| a.split('^').next() == Some(ty));
    let taken = accept.iter().any(|a| match a.split_once('^') {
        Some((t, e)) => t == ty && (e == "*" || e == ev),
        None => false,
    });
    if taken {
        return None;
    }
    let (code, text) = if type_known {
        (
            ErrorCode::UnsupportedEvent,
            format!("event {ty}^{ev} is not taken by this channel"),
        )
    } else {
        (
            ErrorCode::UnsupportedMessageType,
            format!("message type {ty} is not taken by this channel"),
        )
    };
    Some(ErrorDetail {
        code,
        segment: "MSH".into(),
        sequence: 1,
        field: 9,
        text,
    })
}

/// Journals a message that cannot be accepted as a dead letter with the reason, and builds
/// its AE/AR.
async fn reject(
    s: &Shared,
    conn: &mut Conn,
    raw: Vec<u8>,
    h: &Header,
    outcome: Outcome,
    encoding: &'static encoding_rs::Encoding,
) -> Answer {
    let (kind, detail) = match &outcome {
        Outcome::ContentError(d) => ("AE", d),
        Outcome::Rejected(d) => ("AR", d),
        Outcome::Accepted => {
            return ack_bytes(&s.pipeline, &mut conn.acks, h, &outcome, encoding);
        }
    };
    let peer = conn.peer;
    tracing::warn!(%peer, control_id = %h.control_id, code = detail.code.code(), reason = %detail.text, "HL7 message refused ({kind})");
    let mut m = NewMessage::new(s.pipeline.name(), s.pipeline.facility(), "hl7v2", raw);
    m.source.clone_from(&conn.source);
    m.headers.extend(conn.batch_headers.iter().cloned());
    m.headers
        .insert("hl7-control-id".into(), h.control_id.clone());
    m.headers
        .insert("hl7-charset".into(), encoding.name().to_owned());
    m.headers.insert("hl7-ack".into(), kind.into());
    m.rejected = Some(format!(
        "mllp: {kind} {} {}: {}",
        detail.code.code(),
        detail.code.text(),
        detail.text
    ));
    if let Err(e) = s.pipeline.submit(m).await {
        tracing::error!(%peer, error = %e, "refused message could not be journaled either");
    }
    ack_bytes(&s.pipeline, &mut conn.acks, h, &outcome, encoding)
}

/// The ACK codes this listener answers with (`huizhen_intake_verdicts_total{verdict}`).
const VERDICTS: &[&str] = &["AA", "AE", "AR", "CA", "CE", "CR"];

fn ack_bytes(
    pipeline: &PipelineHandle,
    acks: &mut AckEncoder,
    h: &Header,
    outcome: &Outcome,
    encoding: &'static encoding_rs::Encoding,
) -> Answer {
    let plan = ack::plan(&h.accept_ack, &h.app_ack, outcome);
    // A sender that said "never" (or "on error only") for the accept ACK still needs MLLP to
    // move on; an empty answer is not allowed by the protocol, so the code goes out anyway
    // when the condition suppresses it. (Senders asking NE in practice do not wait.)
    let code = plan.immediate.unwrap_or(match outcome {
        Outcome::Accepted => AckCode::CA,
        Outcome::ContentError(_) => AckCode::CE,
        Outcome::Rejected(_) => AckCode::CR,
    });
    pipeline.verdict(code.as_str());
    let detail = match outcome {
        Outcome::Accepted => None,
        Outcome::ContentError(d) | Outcome::Rejected(d) => Some(d),
    };
    let id = huizhen_core::message::new_id();
    let text = ack::build(h, code, detail, &id, acks.now());
    Answer {
        bytes: acks.encode(text, encoding),
        accepted: matches!(outcome, Outcome::Accepted),
    }
}

/// Handles a frame that holds an `FHS`/`BHS` batch (HL7-36): every message in it goes through
/// [`handle`] in order (each journaled and deduplicated on its own), and the answer is a batch
/// of their ACKs (`batch_ack`) in an envelope that mirrors the sender's: `BHS-3..6` swapped,
/// `BHS-11` new, `BHS-12` = the sender's `BHS-11` (the same for `FHS`), `BTS-1` = the ACKs in
/// it. A count in `BTS-1`/`FTS-1` that does not match is reported in `BTS-2`, logged, and
/// recorded on every message of the batch (`hl7-batch-discrepancy`); the messages found are
/// still processed.
async fn handle_batch(s: &Shared, conn: &mut Conn, raw: Vec<u8>) -> Vec<u8> {
    let peer = conn.peer;
    let split = crate::batch::split_raw(&raw);
    let envelope = crate::batch::Envelope::read(&raw, s.default_charset);
    let discrepancy = split.discrepancies.join("; ");
    if !discrepancy.is_empty() {
        tracing::warn!(%peer, batch = %envelope.batch_control_id(), %discrepancy, messages = split.messages.len(), "HL7 batch counts do not match; the messages found are processed");
    }
    conn.batch_headers.clear();
    conn.batch_headers
        .push(("hl7-batch".into(), envelope.batch_control_id().to_owned()));
    if !discrepancy.is_empty() {
        conn.batch_headers
            .push(("hl7-batch-discrepancy".into(), discrepancy.clone()));
    }
    let mut acks = Vec::new();
    let mut count = 0usize;
    for message in split.messages {
        let answer = handle(s, conn, message).await;
        if s.config.batch_ack == BatchAck::All || !answer.accepted {
            acks.extend_from_slice(&answer.bytes);
            count += 1;
        }
    }
    conn.batch_headers.clear();
    let (head, tail) = envelope.answer(
        &huizhen_core::message::new_id(),
        conn.acks.now(),
        count,
        &discrepancy,
    );
    let mut out = conn.acks.encode(head, s.default_charset);
    out.extend_from_slice(&acks);
    out.extend_from_slice(&conn.acks.encode(tail, s.default_charset));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ACK bytes are exactly what `charset::encode` gives (or UTF-8 when it fails), for
    /// every charset, with the run cache cold or warm.
    #[test]
    fn ack_encoder_matches_charset_encode() {
        let encodings = [
            encoding_rs::UTF_8,
            encoding_rs::GB18030,
            encoding_rs::GBK,
            encoding_rs::BIG5,
            encoding_rs::SHIFT_JIS,
            encoding_rs::EUC_KR,
            encoding_rs::ISO_2022_JP,
            encoding_rs::WINDOWS_1252,
            encoding_rs::ISO_8859_5,
        ];
        let texts = [
            "MSH|^~\\&|HUIZHEN|省会诊中心|LIS|县人民医院检验科|20261123101500||ACK^R01^ACK|x|P|2.5\rMSA|AA|C1\r",
            "MSH|^~\\&|A|B\r",
            "",
            "张",
            "MSH|^~\\&|病院|東京|ソウル|서울|Zürich|Москва\rMSA|AA|1\r",
            "MSH|^~\\&|𠀀|县|€|Ω\r",
            "全部非ASCII文字",
        ];
        let mut enc = AckEncoder::default();
        for round in 0..2 {
            for e in encodings {
                for t in texts {
                    let want = charset::encode(t, e).unwrap_or_else(|_| t.as_bytes().to_vec());
                    assert_eq!(
                        enc.encode(t.to_owned(), e),
                        want,
                        "{} round {round}: {t:?}",
                        e.name()
                    );
                }
            }
        }
    }

    #[test]
    fn fallback_header_finds_the_control_id() {
        let h = fallback_header("MSH|^~\\&|HIS|H1|HZ|P|2026||ADT^A01|C123|P|2.4\rPID|broken");
        assert_eq!(h.control_id, "C123");
        assert_eq!(h.sending_application, "HIS");
        assert_eq!(h.version, "2.4");
    }
}
