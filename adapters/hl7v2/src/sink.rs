//! `mllp`: an HL7 v2 sender (MLLP over TCP) that waits for each message's own ACK
//! (STANDARDS HL7-13, HL7-22, HL7-03).
//!
//! ```yaml
//! sinks:
//!   - mllp: { to: 10.0.0.5:6661, charset: GB18030, ack_timeout: 30s, connect_timeout: 5s, set_msh18: true }
//!   - mllp:
//!       to: his.example:6661
//!       tls: { ca: hospital-ca.pem, cert: node.pem, key: node.key, server_name: his.example }
//! ```
//! Each message is decoded and parsed (once per message, shared with the expressions, see
//! [`crate::expr::parsed`]), its `MSH-18` is set to the destination charset's HL7 table 0211
//! name, and the text is encoded in that charset; a character the charset cannot hold is a
//! permanent error naming its code point and place, never a `?` (HL7-22). The bytes are framed
//! (after encoding, so the MLLP control bytes are never transcoded, HL7-03) and sent on a
//! pooled connection; then frames are read until one whose `MSA-2` is the `MSH-10` just sent.
//! Any other ACK is late (for an earlier message, or an earlier attempt) and is discarded with a
//! warning, never matched (HL7-13). `MSH-10` is never changed, so every retry carries the same
//! control id and the receiver can de-duplicate.
//!
//! Outcomes: AA/CA → delivered. AE/CE → permanent error with the receiver's ERR text (the
//! content is wrong; resending it unchanged will not help). AR/CR → permanent error (dead
//! letter; reprocess it once the receiver is fixed). No ACK within `ack_timeout`, a refused
//! or broken connection → retryable error: the runner retries with backoff (`retry:` in the
//! pipeline), so a slow receiver is never flooded.
//!
//! **Connections.** `connections` (default 1) TCP connections to the destination are kept open
//! and reused. Each is guarded by a mutex held for a whole exchange, so at most one message is
//! in flight per connection (the in-flight window of 1; with one connection, messages leave in
//! the order the pipeline's workers hand them over). A connection is dropped after a timeout
//! (so a late ACK cannot arrive on it later), after any I/O error, and when it is found closed
//! by the peer before a send. A reused connection that the peer closed while idle is detected
//! before sending, or, if the send races with the close, the message is sent once more on a
//! fresh connection at once.
//!
//! **TLS.** With `tls:` every connection is TLS 1.2/1.3 (rustls, ring): the receiver's
//! certificate must chain to `tls.ca` and be valid for `tls.server_name` (default: the host of
//! `to`); `cert`/`key` are presented for mutual TLS. A failed handshake (unknown issuer, wrong
//! name) is a retryable error whose reason says so, like a refused connection: the message is
//! retried and, after `retry.max_attempts`, dead with that reason, never lost. The files are
//! read when the pipeline is built, so `validate` reports a missing or empty one.
//!
//! Logs carry the sink, the destination and `MSH-10`, never message content.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use encoding_rs::{
    BIG5, EUC_KR, Encoding, GB18030, GBK, ISO_2022_JP, ISO_8859_2, ISO_8859_3, ISO_8859_4,
    ISO_8859_5, ISO_8859_6, ISO_8859_7, ISO_8859_8, ISO_8859_15, UTF_8, WINDOWS_1252, WINDOWS_1254,
};
use futures::FutureExt;
use futures::future::BoxFuture;
use huizhen_core::config::duration;
use huizhen_core::runner::BuildContext;
use huizhen_core::sinks::{Sink, SinkConfig};
use huizhen_core::store::Effect;
use huizhen_core::work::{StepError, Work};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;
use tokio::time::{Instant, timeout_at};

use crate::charset::{self, CharsetError, OnInvalid};
use crate::escape::escape;
use crate::mllp::{Deframer, EB, Event, SB, frame};
use crate::parse::Message;
use huizhen_core::tls::{ClientTls, ClientTlsConfig, Io};

/// Largest ACK frame read back; a larger one drops the connection.
const MAX_ACK_BYTES: usize = 4 * 1024 * 1024;
/// Most connections one sink may keep.
const MAX_CONNECTIONS: usize = 64;
/// Longest receiver error text kept in a dead letter's reason.
const MAX_ERR_TEXT: usize = 1000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MllpSinkConfig {
    /// The receiver, `host:port` (e.g. `10.0.0.5:6661`, `his.example:6661`, `[::1]:6661`).
    pub to: String,
    /// Character set of the bytes sent: an HL7 table 0211 name (`UNICODE UTF-8`,
    /// `GB 18030-2000`, `8859/1`, `BIG-5`, …) or a label such as `GB18030`, `GBK`, `UTF-8`.
    #[serde(default = "default_charset")]
    pub charset: String,
    /// How long to wait for the message's ACK (from the start of the send).
    #[serde(default = "default_ack_timeout", with = "duration")]
    pub ack_timeout: Duration,
    /// How long to wait for a TCP connection.
    #[serde(default = "default_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// Set `MSH-18` to the charset's table 0211 name (HL7-22). `false` for a receiver known to
    /// reject `MSH-18`: the field is then sent empty (a value naming another charset would be
    /// wrong).
    #[serde(default = "default_true")]
    pub set_msh18: bool,
    /// Connections kept open to the receiver, each with one message in flight at a time.
    #[serde(default = "default_connections")]
    pub connections: usize,
    /// Name in errors and metrics (default `mllp#<index>`).
    #[serde(default)]
    pub name: Option<String>,
    /// TLS to the receiver: `ca` (PEM bundle to trust; default the public roots), `cert` and
    /// `key` (this engine's certificate, for mutual TLS), `server_name` (the name the
    /// receiver's certificate must carry; default the host of `to`). Without it, plain TCP.
    #[serde(default)]
    pub tls: Option<ClientTlsConfig>,
}

impl MllpSinkConfig {
    /// A config for `to` with every default (UTF-8, 30 s ACK timeout, 5 s connect timeout,
    /// `MSH-18` set, one connection).
    pub fn new(to: impl Into<String>) -> MllpSinkConfig {
        MllpSinkConfig {
            to: to.into(),
            charset: default_charset(),
            ack_timeout: default_ack_timeout(),
            connect_timeout: default_connect_timeout(),
            set_msh18: true,
            connections: default_connections(),
            name: None,
            tls: None,
        }
    }
}

fn default_charset() -> String {
    "UNICODE UTF-8".into()
}
fn default_ack_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_true() -> bool {
    true
}
fn default_connections() -> usize {
    1
}

/// Which characters a destination charset may carry beyond what its encoder accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repertoire {
    /// Whatever the encoder can encode.
    Encoder,
    /// 7-bit ASCII only (`encoding_rs` maps the label to windows-1252).
    Ascii,
    /// A true ISO 8859 set that `encoding_rs` implements as its windows superset: bytes
    /// 0x80–0x9F (the windows-only characters such as €) are refused.
    Iso8859,
}

/// A destination character set.
#[derive(Debug, Clone, Copy)]
struct Destination {
    encoding: &'static Encoding,
    /// The table 0211 value written to `MSH-18`, if there is one.
    msh18: Option<&'static str>,
    repertoire: Repertoire,
    /// The name in errors.
    name: &'static str,
}

fn normalise_label(label: &str) -> String {
    label
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '_' | '\t'))
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Reads the `charset` setting. `None` when it names no charset this engine can encode.
fn destination(label: &str) -> Option<Destination> {
    if matches!(
        normalise_label(label).as_str(),
        "ASCII" | "USASCII" | "ISOIR6"
    ) {
        return Some(Destination {
            encoding: WINDOWS_1252,
            msh18: Some("ASCII"),
            repertoire: Repertoire::Ascii,
            name: "ASCII",
        });
    }
    let encoding = charset::encoding_for_msh18(label)?;
    let (msh18, repertoire) = match encoding {
        e if e == UTF_8 => (Some("UNICODE UTF-8"), Repertoire::Encoder),
        e if e == GB18030 => (Some("GB 18030-2000"), Repertoire::Encoder),
        // Table 0211 has no GBK (nor GB2312). Every byte string the GBK encoder makes is valid
        // GB18030 with the same meaning, so the table's superset is declared.
        e if e == GBK => (Some("GB 18030-2000"), Repertoire::Encoder),
        e if e == BIG5 => (Some("BIG-5"), Repertoire::Encoder),
        e if e == WINDOWS_1252 => (Some("8859/1"), Repertoire::Iso8859),
        e if e == WINDOWS_1254 => (Some("8859/9"), Repertoire::Iso8859),
        e if e == ISO_8859_2 => (Some("8859/2"), Repertoire::Encoder),
        e if e == ISO_8859_3 => (Some("8859/3"), Repertoire::Encoder),
        e if e == ISO_8859_4 => (Some("8859/4"), Repertoire::Encoder),
        e if e == ISO_8859_5 => (Some("8859/5"), Repertoire::Encoder),
        e if e == ISO_8859_6 => (Some("8859/6"), Repertoire::Encoder),
        e if e == ISO_8859_7 => (Some("8859/7"), Repertoire::Encoder),
        e if e == ISO_8859_8 => (Some("8859/8"), Repertoire::Encoder),
        e if e == ISO_8859_15 => (Some("8859/15"), Repertoire::Encoder),
        e if e == EUC_KR => (Some("KS X 1001"), Repertoire::Encoder),
        e if e == ISO_2022_JP => (Some("ISO IR87"), Repertoire::Encoder),
        _ => (None, Repertoire::Encoder),
    };
    let name = match repertoire {
        Repertoire::Iso8859 => msh18.unwrap_or("ISO 8859"),
        _ => encoding.name(),
    };
    Some(Destination {
        encoding,
        msh18,
        repertoire,
        name,
    })
}

/// A character that cannot be sent: its code point and its byte offset in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Unmappable {
    ch: char,
    offset: usize,
}

impl Destination {
    /// Encodes outbound text; refuses (never replaces) a character the charset cannot hold.
    fn encode(&self, text: &str) -> Result<Vec<u8>, Unmappable> {
        match self.repertoire {
            Repertoire::Ascii => {
                if let Some((offset, ch)) = text.char_indices().find(|(_, c)| !c.is_ascii()) {
                    return Err(Unmappable { ch, offset });
                }
                Ok(text.as_bytes().to_vec())
            }
            Repertoire::Iso8859 => {
                let bytes = charset::encode(text, self.encoding).map_err(unmappable)?;
                // Single-byte: byte i is character i.
                if let Some(i) = bytes.iter().position(|b| (0x80..=0x9F).contains(b))
                    && let Some((offset, ch)) = text.char_indices().nth(i)
                {
                    return Err(Unmappable { ch, offset });
                }
                Ok(bytes)
            }
            Repertoire::Encoder => charset::encode(text, self.encoding).map_err(unmappable),
        }
    }
}

fn unmappable(e: CharsetError) -> Unmappable {
    match e {
        CharsetError::Unmappable { ch, offset, .. } => Unmappable { ch, offset },
        // `charset::encode` reports nothing else; keep a readable answer anyway.
        _ => Unmappable {
            ch: '\u{FFFD}',
            offset: 0,
        },
    }
}

/// Where a byte offset of normalised message text falls: `PID-5`, `MSH-4`, ….
fn location(text: &str, offset: usize, field_sep: char) -> String {
    let before = text.get(..offset).unwrap_or(text);
    let seg_start = before.rfind('\r').map_or(0, |i| i + 1);
    let segment = text.get(seg_start..).unwrap_or_default();
    let name: String = segment
        .chars()
        .take_while(|c| *c != field_sep && *c != '\r')
        .take(3)
        .collect();
    let in_segment = before.get(seg_start..).unwrap_or_default();
    let seps = in_segment.chars().filter(|c| *c == field_sep).count();
    let field = if name == "MSH" { seps + 1 } else { seps };
    if seps == 0 {
        name
    } else {
        format!("{name}-{field}")
    }
}

/// Rewrites `MSH-18` of normalised message text: `Some(value)` sets it (escaped), `None`
/// empties it. Every other byte is kept.
fn with_msh18(msg: &Message, value: Option<&str>) -> String {
    let text = msg.text();
    let d = msg.delimiters();
    let sep = d.field;
    let (first, rest) = match text.find('\r') {
        Some(i) => (
            text.get(..i).unwrap_or_default(),
            text.get(i..).unwrap_or_default(),
        ),
        None => (text, ""),
    };
    // parts[0] = "MSH", parts[1] = MSH-2, parts[k] = MSH-(k+1): MSH-18 is parts[17].
    let mut parts: Vec<String> = first.split(sep).map(str::to_owned).collect();
    match value {
        Some(v) => {
            while parts.len() < 18 {
                parts.push(String::new());
            }
            if let Some(p) = parts.get_mut(17) {
                *p = escape(v, d);
            }
        }
        None => {
            if let Some(p) = parts.get_mut(17) {
                p.clear();
            }
            // Drop the empty fields this leaves at the end (never MSH-12 or before).
            while parts.len() > 12 && parts.last().is_some_and(String::is_empty) {
                parts.pop();
            }
        }
    }
    let mut out = parts.join(&sep.to_string());
    out.push_str(rest);
    out
}

/// A duration as the config writes it: `30s`, `250ms`.
fn human(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Checks a `host:port` destination without resolving it.
fn check_to(to: &str) -> Result<(), String> {
    let bad = || format!("to: {to:?} is not an address like 10.0.0.5:6661 or his.example:6661");
    let (host, port) = to.trim().rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 || host.is_empty() || host.contains(['/', ' ']) {
        return Err(bad());
    }
    // An IPv6 address is written in brackets: [::1]:6661.
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => Ok(()),
        None if !host.contains([':', '[', ']']) => Ok(()),
        _ => Err(bad()),
    }
}

#[typetag::deserialize(name = "mllp")]
impl SinkConfig for MllpSinkConfig {
    fn build(&self, _ctx: &BuildContext, index: usize) -> Result<Arc<dyn Sink>, String> {
        check_to(&self.to)?;
        let dest = destination(&self.charset).ok_or_else(|| {
            format!(
                "unknown charset {:?}: use an HL7 table 0211 name such as \"UNICODE UTF-8\", \"GB 18030-2000\" or a label such as GBK",
                self.charset
            )
        })?;
        if self.set_msh18 && dest.msh18.is_none() {
            return Err(format!(
                "charset {:?} has no HL7 table 0211 name to put in MSH-18: choose one that has, or set set_msh18: false",
                self.charset
            ));
        }
        if self.connections == 0 || self.connections > MAX_CONNECTIONS {
            return Err(format!(
                "connections must be between 1 and {MAX_CONNECTIONS}"
            ));
        }
        if self.ack_timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err("ack_timeout and connect_timeout must be longer than 0".into());
        }
        let tls = self
            .tls
            .as_ref()
            .map(|t| t.client(self.to.trim()))
            .transpose()?;
        Ok(Arc::new(MllpSink {
            name: self.name.clone().unwrap_or_else(|| format!("mllp#{index}")),
            to: self.to.trim().to_owned(),
            dest,
            set_msh18: self.set_msh18,
            ack_timeout: self.ack_timeout,
            connect_timeout: self.connect_timeout,
            slots: (0..self.connections).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            tls,
        }))
    }
}

/// One open connection and what has been read from it but not yet used.
struct Conn {
    stream: Box<dyn Io>,
    deframer: Deframer,
    pending: VecDeque<Vec<u8>>,
}

struct MllpSink {
    name: String,
    to: String,
    dest: Destination,
    set_msh18: bool,
    ack_timeout: Duration,
    connect_timeout: Duration,
    /// The pool: each slot is one connection (or none yet), one message in flight at a time.
    slots: Vec<Mutex<Option<Conn>>>,
    next: AtomicUsize,
    /// TLS to the receiver, when configured.
    tls: Option<ClientTls>,
}

/// An ACK read from a frame.
struct Ack {
    code: String,
    /// `MSA-2`: the control id it acknowledges.
    control_id: String,
    message: Message,
}

/// Why an exchange ended without this message's ACK.
enum Failure {
    Timeout,
    /// The peer closed the connection, or it broke. `replied` is true when any byte came back
    /// after the send.
    Broken {
        why: String,
        replied: bool,
    },
}

impl Sink for MllpSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Vec<Effect>, StepError>> {
        Box::pin(async move {
            let msg = crate::expr::parsed(work)?;
            let control_id = msg.header().control_id.trim().to_owned();
            if control_id.is_empty() {
                return Err(StepError::permanent(format!(
                    "message {}: MSH-10 is empty, so an ACK could not be matched to it; not sent to {}",
                    work.id, self.to
                )));
            }
            let msh18 = if self.set_msh18 {
                self.dest.msh18
            } else {
                None
            };
            let text = with_msh18(&msg, msh18);
            // Same charset in and out, nothing changed, CR terminators: send the bytes as
            // received, so a message passes through byte for byte (HL7-03), even for the few
            // codes whose decoding does not encode back the same (GB18030 0xA3A0 → U+3000).
            let raw = work.raw_body();
            let untouched = std::ptr::eq(msg.charset(), self.dest.encoding)
                && text == msg.text()
                && !raw.contains(&b'\n')
                && raw.ends_with(b"\r");
            let encoded = if untouched {
                Ok(raw.to_vec())
            } else {
                self.dest.encode(&text)
            };
            let payload = encoded.map_err(|u| {
                StepError::permanent(format!(
                    "message {}: MSH-10 {control_id}: character U+{:04X} at byte offset {} ({}) cannot be encoded in {}; nothing was sent to {}",
                    work.id,
                    u32::from(u.ch),
                    u.offset,
                    location(&text, u.offset, msg.delimiters().field),
                    self.dest.name,
                    self.to
                ))
            })?;
            if let Some(at) = payload.iter().position(|b| *b == SB || *b == EB) {
                return Err(StepError::permanent(format!(
                    "message {}: MSH-10 {control_id}: the encoded message holds the MLLP control byte 0x{:02X} at byte offset {at}, so it cannot be framed; nothing was sent to {}",
                    work.id,
                    payload.get(at).copied().unwrap_or_default(),
                    self.to
                )));
            }
            let framed = frame(&payload);
            drop(payload);
            let ack = self.send(&framed, &control_id).await?;
            self.judge(&ack, &control_id)?;
            tracing::debug!(sink = %self.name, destination = %self.to, control_id = %control_id, code = %ack.code, "HL7 message delivered");
            Ok(Vec::new())
        })
    }
}

impl MllpSink {
    /// Sends one framed message on a pooled connection and returns its ACK.
    async fn send(&self, framed: &[u8], control_id: &str) -> Result<Ack, StepError> {
        let n = self.slots.len().max(1);
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut guard = None;
        for k in 0..n {
            if let Some(slot) = self.slots.get((start + k) % n)
                && let Ok(g) = slot.try_lock()
            {
                guard = Some(g);
                break;
            }
        }
        let mut guard = match guard {
            Some(g) => g,
            None => match self.slots.get(start) {
                Some(slot) => slot.lock().await,
                None => return Err(StepError::new("mllp sink has no connection slot")),
            },
        };
        let mut resent = false;
        loop {
            // Out of the slot while in use: if this future is dropped mid-send, the
            // half-used connection goes with it instead of back into the pool.
            let pooled = guard
                .take()
                .and_then(|mut c| self.still_open(&mut c).then_some(c));
            let (mut conn, reused) = match pooled {
                Some(c) => (c, true),
                None => (self.connect().await?, false),
            };
            let deadline = Instant::now() + self.ack_timeout;
            match self.exchange(&mut conn, framed, control_id, deadline).await {
                Ok(ack) => {
                    *guard = Some(conn);
                    return Ok(ack);
                }
                Err(Failure::Timeout) => {
                    tracing::warn!(sink = %self.name, destination = %self.to, control_id, timeout = %human(self.ack_timeout), "no ACK in time: connection dropped, the message will be retried with the same MSH-10");
                    return Err(StepError::new(format!(
                        "no ACK within {} from {} for MSH-10 {control_id}",
                        human(self.ack_timeout),
                        self.to
                    )));
                }
                Err(Failure::Broken { why, replied }) => {
                    if reused && !replied && !resent {
                        // The peer had closed the idle connection as the message went out.
                        tracing::info!(sink = %self.name, destination = %self.to, control_id, error = %why, "pooled connection was closed by the receiver; sending again on a new one");
                        resent = true;
                        continue;
                    }
                    tracing::warn!(sink = %self.name, destination = %self.to, control_id, error = %why, "connection lost before the ACK");
                    return Err(StepError::new(format!(
                        "connection to {} lost before the ACK for MSH-10 {control_id}: {why}",
                        self.to
                    )));
                }
            }
        }
    }

    async fn connect(&self) -> Result<Conn, StepError> {
        let stream = huizhen_core::tls::connect(&self.to, self.tls.as_ref(), self.connect_timeout)
            .await
            .map_err(|e| {
                tracing::warn!(sink = %self.name, destination = %self.to, error = %e, "MLLP connection failed");
                StepError::new(e)
            })?;
        tracing::debug!(sink = %self.name, destination = %self.to, "MLLP connection opened");
        Ok(Conn {
            stream,
            deframer: Deframer::new(MAX_ACK_BYTES),
            pending: VecDeque::new(),
        })
    }

    /// Before a send on a pooled connection: discards whatever arrived since the last
    /// exchange (late ACKs) and tells whether the peer has closed it.
    fn still_open(&self, conn: &mut Conn) -> bool {
        let mut buf = [0u8; 4096];
        let mut open = true;
        // One poll per read, never a wait: plain or TLS, a read that is not ready now means
        // nothing has arrived (for TLS, no record: a close_notify reads as 0).
        loop {
            match conn.stream.read(&mut buf).now_or_never() {
                None => break,
                Some(Ok(0)) => {
                    open = false;
                    break;
                }
                Some(Ok(n)) => {
                    if !self.take_events(conn, buf.get(..n).unwrap_or_default()) {
                        open = false;
                        break;
                    }
                }
                Some(Err(_)) => {
                    open = false;
                    break;
                }
            }
        }
        while let Some(f) = conn.pending.pop_front() {
            self.discard(&f, None);
        }
        if !open {
            tracing::debug!(sink = %self.name, destination = %self.to, "pooled MLLP connection was closed by the receiver; reconnecting");
        }
        open
    }

    /// Feeds bytes to the deframer; false when the connection must be dropped.
    fn take_events(&self, conn: &mut Conn, bytes: &[u8]) -> bool {
        for ev in conn.deframer.push(bytes) {
            match ev {
                Event::Frame(f) => conn.pending.push_back(f),
                Event::Noise(bytes) => {
                    tracing::warn!(sink = %self.name, destination = %self.to, bytes, "bytes outside any MLLP frame discarded");
                }
                Event::Interrupted(bytes) => {
                    tracing::warn!(sink = %self.name, destination = %self.to, bytes, "MLLP frame interrupted by a new start block; discarded");
                }
                Event::TooLarge { limit } => {
                    tracing::warn!(sink = %self.name, destination = %self.to, limit, "reply frame too large; connection dropped");
                    return false;
                }
            }
        }
        true
    }

    /// Sends the frame and reads until the ACK whose MSA-2 is `control_id`.
    async fn exchange(
        &self,
        conn: &mut Conn,
        framed: &[u8],
        control_id: &str,
        deadline: Instant,
    ) -> Result<Ack, Failure> {
        match timeout_at(deadline, conn.stream.write_all(framed)).await {
            Err(_) => return Err(Failure::Timeout),
            Ok(Err(e)) => {
                return Err(Failure::Broken {
                    why: format!("send failed: {e}"),
                    replied: false,
                });
            }
            Ok(Ok(())) => {}
        }
        let mut buf = vec![0u8; 16 * 1024];
        let mut replied = false;
        loop {
            while let Some(f) = conn.pending.pop_front() {
                match self.read_ack(&f) {
                    Some(ack) if ack.control_id == control_id => return Ok(ack),
                    _ => self.discard(&f, Some(control_id)),
                }
            }
            let n = match timeout_at(deadline, conn.stream.read(&mut buf)).await {
                Err(_) => return Err(Failure::Timeout),
                Ok(Err(e)) => {
                    return Err(Failure::Broken {
                        why: e.to_string(),
                        replied,
                    });
                }
                Ok(Ok(0)) => {
                    let why = match conn.deframer.finish() {
                        Some(len) => {
                            format!("closed by the receiver in the middle of a reply ({len} bytes)")
                        }
                        None => "closed by the receiver".to_owned(),
                    };
                    return Err(Failure::Broken { why, replied });
                }
                Ok(Ok(n)) => n,
            };
            replied = true;
            if !self.take_events(conn, buf.get(..n).unwrap_or_default()) {
                return Err(Failure::Broken {
                    why: format!("reply frame larger than {MAX_ACK_BYTES} bytes"),
                    replied,
                });
            }
        }
    }

    /// Reads a frame as an ACK (`MSA-1`, `MSA-2`); `None` when it is not one.
    fn read_ack(&self, raw: &[u8]) -> Option<Ack> {
        let decoded = match charset::decode(raw, self.dest.encoding, OnInvalid::Replace) {
            Ok(d) => d,
            // An ACK declaring a charset this engine does not know: its MSA is ASCII anyway.
            Err(_) => charset::decode(raw, UTF_8, OnInvalid::Replace).ok()?,
        };
        let message = Message::from_decoded(decoded).ok()?;
        let code = message.get_str("MSA-1").ok()??;
        let control_id = message.get_str("MSA-2").ok()?.unwrap_or_default();
        Some(Ack {
            code: code.trim().to_owned(),
            control_id: control_id.trim().to_owned(),
            message,
        })
    }

    /// Logs a frame that is not the ACK awaited (HL7-13: never matched to this message).
    fn discard(&self, raw: &[u8], awaited: Option<&str>) {
        match self.read_ack(raw) {
            Some(ack) => {
                tracing::warn!(sink = %self.name, destination = %self.to, acknowledges = %ack.control_id, code = %ack.code, awaited = awaited.unwrap_or("-"), "late ACK discarded: its MSA-2 is not the MSH-10 in flight");
            }
            None => {
                tracing::warn!(sink = %self.name, destination = %self.to, bytes = raw.len(), awaited = awaited.unwrap_or("-"), "frame that is not an ACK discarded");
            }
        }
    }

    /// Turns the matching ACK into the outcome.
    fn judge(&self, ack: &Ack, control_id: &str) -> Result<(), StepError> {
        let detail = || {
            let t = err_text(&ack.message);
            if t.is_empty() {
                String::new()
            } else {
                format!(": {t}")
            }
        };
        match ack.code.as_str() {
            "AA" | "CA" => Ok(()),
            "AE" | "CE" => {
                tracing::warn!(sink = %self.name, destination = %self.to, control_id, code = %ack.code, "receiver refused the content (dead letter)");
                Err(StepError::permanent(format!(
                    "{} from {} for MSH-10 {control_id}: the receiver found an error in the content (resending it unchanged will not help){}",
                    ack.code,
                    self.to,
                    detail()
                )))
            }
            "AR" | "CR" if transient(&ack.message) => {
                // HL7-11: AR/CR with 206 (record locked) or 207 (internal error) means the
                // receiver could not take it now; the same message may be sent again later.
                tracing::warn!(sink = %self.name, destination = %self.to, control_id, code = %ack.code, "receiver temporarily unable (will retry)");
                Err(StepError::new(format!(
                    "{} from {} for MSH-10 {control_id}: the receiver could not take the message now{}",
                    ack.code,
                    self.to,
                    detail()
                )))
            }
            "AR" | "CR" => {
                tracing::warn!(sink = %self.name, destination = %self.to, control_id, code = %ack.code, "receiver rejected the message (dead letter)");
                Err(StepError::permanent(format!(
                    "{} from {} for MSH-10 {control_id}: the receiver rejected the message{}",
                    ack.code,
                    self.to,
                    detail()
                )))
            }
            other => Err(StepError::permanent(format!(
                "ACK from {} for MSH-10 {control_id} has an unknown code {:?} in MSA-1",
                self.to,
                other.chars().take(8).collect::<String>()
            ))),
        }
    }
}

/// `true` when an AR/CR carries ERR code 206 or 207 (v2.5 `ERR-3.1` or older `ERR-1.4.1`).
fn transient(ack: &Message) -> bool {
    ["ERR-3.1", "ERR-1.4.1"].iter().any(|p| {
        matches!(
            ack.get_str(p).ok().flatten().as_deref().map(str::trim),
            Some("206" | "207")
        )
    })
}

/// The receiver's explanation: `MSA-3`, and per `ERR` segment the code and text (`ERR-3` from
/// v2.5, `ERR-1` before), the location (`ERR-2`), the diagnostic (`ERR-7`) and user message
/// (`ERR-8`). Capped at [`MAX_ERR_TEXT`] characters.
fn err_text(m: &Message) -> String {
    let get = |p: &str| -> String {
        m.get_str(p)
            .ok()
            .flatten()
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    let mut parts: Vec<String> = Vec::new();
    let msa3 = get("MSA-3");
    if !msa3.is_empty() {
        parts.push(msa3);
    }
    let count = m.segments_named("ERR").count().min(10);
    for i in 1..=count {
        let mut piece = Vec::new();
        let (code, text) = (get(&format!("ERR[{i}]-3.1")), get(&format!("ERR[{i}]-3.2")));
        let (code, text) = if code.is_empty() && text.is_empty() {
            (
                get(&format!("ERR[{i}]-1.4.1")),
                get(&format!("ERR[{i}]-1.4.2")),
            )
        } else {
            (code, text)
        };
        let head = [code, text]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if !head.is_empty() {
            piece.push(head);
        }
        let loc = (1..=4)
            .map(|c| get(&format!("ERR[{i}]-2.{c}")))
            .collect::<Vec<_>>();
        let loc = if loc.iter().all(String::is_empty) {
            (1..=3)
                .map(|c| get(&format!("ERR[{i}]-1.{c}")))
                .collect::<Vec<_>>()
        } else {
            loc
        };
        let loc: Vec<String> = loc.into_iter().filter(|s| !s.is_empty()).collect();
        if !loc.is_empty() {
            piece.push(format!("at {}", loc.join("-")));
        }
        for f in [8, 7] {
            let t = get(&format!("ERR[{i}]-{f}"));
            if !t.is_empty() {
                piece.push(t);
            }
        }
        if !piece.is_empty() {
            parts.push(piece.join(", "));
        }
    }
    let all = parts.join("; ");
    if all.chars().count() > MAX_ERR_TEXT {
        let mut cut: String = all.chars().take(MAX_ERR_TEXT).collect();
        cut.push('…');
        cut
    } else {
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Message {
        Message::parse(text).unwrap()
    }

    #[test]
    fn table_0211_names() {
        let name = |l: &str| destination(l).and_then(|d| d.msh18);
        assert_eq!(name("UTF-8"), Some("UNICODE UTF-8"));
        assert_eq!(name("UNICODE UTF-8"), Some("UNICODE UTF-8"));
        assert_eq!(name("GB18030"), Some("GB 18030-2000"));
        assert_eq!(name("GB 18030-2000"), Some("GB 18030-2000"));
        assert_eq!(name("GBK"), Some("GB 18030-2000"));
        assert_eq!(name("Big5"), Some("BIG-5"));
        assert_eq!(name("8859/1"), Some("8859/1"));
        assert_eq!(name("ascii"), Some("ASCII"));
        assert_eq!(name("KS X 1001"), Some("KS X 1001"));
        assert_eq!(name("shift_jis"), None);
        assert!(destination("EBCDIC").is_none());
        assert_eq!(destination("GBK").unwrap().encoding, GBK);
    }

    #[test]
    fn strict_single_byte_repertoires() {
        let ascii = destination("ASCII").unwrap();
        assert_eq!(ascii.encode("abc").unwrap(), b"abc");
        assert_eq!(
            ascii.encode("abé").unwrap_err(),
            Unmappable {
                ch: 'é', offset: 2
            }
        );
        let latin1 = destination("8859/1").unwrap();
        assert_eq!(latin1.encode("é").unwrap(), vec![0xE9]);
        // € is 0x80 in windows-1252 but not in ISO 8859-1.
        assert_eq!(
            latin1.encode("aé€").unwrap_err(),
            Unmappable {
                ch: '€', offset: 3
            }
        );
        let gbk = destination("GBK").unwrap();
        assert_eq!(
            gbk.encode("张𠀀").unwrap_err(),
            Unmappable {
                ch: '\u{20000}',
                offset: 3
            }
        );
        assert!(destination("GB18030").unwrap().encode("张𠀀").is_ok());
    }

    #[test]
    fn msh18_is_set_padded_or_emptied() {
        let short = parse("MSH|^~\\&|HIS|H|HZ|P|20260101||ADT^A01|C1|P|2.5\rPID|1\r");
        assert_eq!(
            with_msh18(&short, Some("GB 18030-2000")),
            "MSH|^~\\&|HIS|H|HZ|P|20260101||ADT^A01|C1|P|2.5||||||GB 18030-2000\rPID|1\r"
        );
        let long =
            parse("MSH|^~\\&|HIS|H|HZ|P|20260101||ADT^A01|C1|P|2.5|||AL|NE|CHN|GBK~UTF-8|19\r");
        assert_eq!(
            with_msh18(&long, Some("UNICODE UTF-8")),
            "MSH|^~\\&|HIS|H|HZ|P|20260101||ADT^A01|C1|P|2.5|||AL|NE|CHN|UNICODE UTF-8|19\r"
        );
        assert_eq!(
            with_msh18(&long, None),
            "MSH|^~\\&|HIS|H|HZ|P|20260101||ADT^A01|C1|P|2.5|||AL|NE|CHN||19\r"
        );
        let last = parse("MSH|^~\\&|HIS|H|HZ|P|20260101||ADT^A01|C1|P|2.5||||||GBK\r");
        assert_eq!(
            with_msh18(&last, None),
            "MSH|^~\\&|HIS|H|HZ|P|20260101||ADT^A01|C1|P|2.5\r"
        );
        let other = parse("MSH!@#$%!HIS!H!HZ!P!20260101!!ADT@A01!C1!P!2.5\r");
        assert_eq!(
            with_msh18(&other, Some("8859/1")),
            "MSH!@#$%!HIS!H!HZ!P!20260101!!ADT@A01!C1!P!2.5!!!!!!8859/1\r"
        );
    }

    #[test]
    fn locations_name_segment_and_field() {
        let text = "MSH|^~\\&|HIS|县\rPID|1||123||张^三\r";
        let at = text.find('县').unwrap();
        assert_eq!(location(text, at, '|'), "MSH-4");
        let at = text.find('三').unwrap();
        assert_eq!(location(text, at, '|'), "PID-5");
        assert_eq!(location(text, 0, '|'), "MSH");
    }

    #[test]
    fn destinations_are_checked() {
        assert!(check_to("10.0.0.5:6661").is_ok());
        assert!(check_to("his.example:6661").is_ok());
        assert!(check_to("[::1]:6661").is_ok());
        assert!(check_to("10.0.0.5").is_err());
        assert!(check_to("10.0.0.5:0").is_err());
        assert!(check_to(":6661").is_err());
        assert!(check_to("::1:6661").is_err());
        assert!(check_to("10.0.0.5:99999").is_err());
    }

    #[test]
    fn err_text_reads_v25_and_older_err() {
        let v25 = parse(
            "MSH|^~\\&|HIS|H|HZ|P|20260101||ACK^A01^ACK|A1|P|2.5\rMSA|AE|C1\rERR||PID^1^3|101^Required field missing^HL70357|E||||PID-3 is required\r",
        );
        assert_eq!(
            err_text(&v25),
            "101 Required field missing, at PID-1-3, PID-3 is required"
        );
        let v24 = parse(
            "MSH|^~\\&|HIS|H|HZ|P|20260101||ACK^A01|A1|P|2.4\rMSA|AR|C1|unsupported\rERR|MSH^1^9^200&Unsupported message type&HL70357\r",
        );
        assert_eq!(
            err_text(&v24),
            "unsupported; 200 Unsupported message type, at MSH-1-9"
        );
        let none = parse("MSH|^~\\&|HIS|H|HZ|P|20260101||ACK^A01|A1|P|2.5\rMSA|AE|C1\r");
        assert_eq!(err_text(&none), "");
    }

    #[test]
    fn durations_read_as_written() {
        assert_eq!(human(Duration::from_secs(30)), "30s");
        assert_eq!(human(Duration::from_millis(250)), "250ms");
    }
}
