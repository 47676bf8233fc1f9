//! Trace and span ids of a message, and the W3C `traceparent` header (Trace Context level 1,
//! version `00`).
//!
//! A message's spans are made wherever its work runs: the intake on the node that accepted it,
//! the steps and sinks on whichever node picks it up from the journal, maybe after a restart.
//! So the ids they share are not kept in memory but derived from what is journaled:
//!
//! - the **trace id** from the message's `trace_id` field: the sender's trace id when it came
//!   with a `traceparent` (32 hex digits, used as they are), the message id when it did not (a
//!   UUID, whose 32 hex digits are used as they are, so a trace can be looked up by message id),
//!   and for anything else the first 16 bytes of its SHA-256;
//! - the **intake span id** from the message id: the steps' and sinks' spans are its children
//!   in every process.

use sha2::{Digest, Sha256};

/// A W3C trace context: the trace, the caller's span and whether the caller samples it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl TraceParent {
    /// Reads a `traceparent` header value: `VERSION-TRACEID-PARENTID-FLAGS`, lowercase hex.
    /// `None` for a malformed value, an all-zero id or version `ff` (the recommendation says to
    /// ignore such a header). A later version is read by its first four fields, as the
    /// recommendation asks.
    pub fn parse(value: &str) -> Option<TraceParent> {
        let v = value.trim();
        let mut parts = v.split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" || !lower_hex(version) {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        if flags.len() != 2 || !lower_hex(flags) {
            return None;
        }
        let trace_id: [u8; 16] = decode(trace)?;
        let span_id: [u8; 8] = decode(span)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(TraceParent {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The header value, version `00`.
    pub fn header(&self) -> String {
        format!(
            "00-{}-{}-{}",
            hex::encode(self.trace_id),
            hex::encode(self.span_id),
            if self.sampled { "01" } else { "00" }
        )
    }

    /// The trace id as 32 lowercase hex digits (what a message's `trace_id` field holds).
    pub fn trace_hex(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The context the engine hands on for a message when no span of its own is open (traces
    /// off): the message's trace and its intake span, marked sampled so that a traced
    /// receiver keeps the trace.
    pub fn of_message(message_id: &str, trace_id: &str) -> TraceParent {
        TraceParent {
            trace_id: trace_id_of(trace_id),
            span_id: intake_span_id(message_id),
            sampled: true,
        }
    }
}

fn lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Exactly `2 × N` lowercase hex digits.
fn decode<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !lower_hex(s) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// The trace id of a message's `trace_id` field (see the module's paragraph): 32 hex digits
/// (hyphens aside, any case) are the id itself; anything else is hashed.
pub fn trace_id_of(trace: &str) -> [u8; 16] {
    let mut digits = [0u8; 32];
    let mut n = 0;
    let mut plain = true;
    for b in trace.bytes().filter(|b| *b != b'-') {
        if n == 32 || !b.is_ascii_hexdigit() {
            plain = false;
            break;
        }
        digits[n] = b.to_ascii_lowercase();
        n += 1;
    }
    if plain && n == 32 {
        let mut id = [0u8; 16];
        if hex::decode_to_slice(digits, &mut id).is_ok() && id != [0; 16] {
            return id;
        }
    }
    let d = Sha256::digest(trace.as_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&d[..16]);
    id
}

/// The span id of a message's intake span: derived from the message id, so that the spans of
/// its steps and sinks name it as their parent in any process, at any later time.
pub fn intake_span_id(message_id: &str) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(b"huizhen intake ");
    h.update(message_id.as_bytes());
    let d = h.finalize();
    let mut id = [0u8; 8];
    id.copy_from_slice(&d[..8]);
    if id == [0; 8] {
        id[7] = 1;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(header: &str, expected: Option<(&str, &str, bool)>) {
        let got = TraceParent::parse(header)
            .map(|t| (hex::encode(t.trace_id), hex::encode(t.span_id), t.sampled));
        let expected = expected.map(|(t, s, f)| (t.to_owned(), s.to_owned(), f));
        assert_eq!(got, expected, "{header}");
    }

    #[test]
    fn traceparent_headers() {
        let t = "4bf92f3577b34da6a3ce929d0e0e4736";
        let s = "00f067aa0ba902b7";
        check(&format!("00-{t}-{s}-01"), Some((t, s, true)));
        check(&format!("00-{t}-{s}-00"), Some((t, s, false)));
        check(&format!(" 00-{t}-{s}-03 "), Some((t, s, true)));
        // A later version: its first four fields.
        check(&format!("01-{t}-{s}-01-extra"), Some((t, s, true)));
        check(&format!("00-{t}-{s}-01-extra"), None);
        check(&format!("ff-{t}-{s}-01"), None);
        check(&format!("00-{}-{s}-01", t.to_uppercase()), None);
        check(&format!("00-{}-{s}-01", "0".repeat(32)), None);
        check(&format!("00-{t}-{}-01", "0".repeat(16)), None);
        check(&format!("00-{t}-{s}"), None);
        check(&format!("00-{}-{s}-01", &t[1..]), None);
        check("", None);
        check("00-xyz-abc-01", None);
        check(
            "00-éééééééééééééééééééééééééééééééé-00f067aa0ba902b7-01",
            None,
        );
    }

    #[test]
    fn the_header_round_trips() {
        let h = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(TraceParent::parse(h).unwrap().header(), h);
    }

    #[test]
    fn trace_ids_of_messages() {
        // The sender's trace id, and a message id (UUID): their hex digits.
        assert_eq!(
            hex::encode(trace_id_of("4bf92f3577b34da6a3ce929d0e0e4736")),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            hex::encode(trace_id_of("0190F3A2-7B1C-7D2E-8F00-123456789ABC")),
            "0190f3a27b1c7d2e8f00123456789abc"
        );
        // Anything else: hashed, the same every time.
        let a = trace_id_of("trace-1");
        assert_eq!(a, trace_id_of("trace-1"));
        assert_ne!(a, trace_id_of("trace-2"));
        assert_ne!(trace_id_of(&"0".repeat(32)), [0; 16]);
        assert_ne!(trace_id_of(&"a".repeat(33)), trace_id_of(&"a".repeat(32)));
    }

    #[test]
    fn intake_spans_are_the_message_ids() {
        let a = intake_span_id("0190f3a2-7b1c-7d2e-8f00-123456789abc");
        assert_eq!(a, intake_span_id("0190f3a2-7b1c-7d2e-8f00-123456789abc"));
        assert_ne!(a, intake_span_id("0190f3a2-7b1c-7d2e-8f00-123456789abd"));
        let t = TraceParent::of_message("m-1", "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.span_id, intake_span_id("m-1"));
        assert!(t.sampled);
    }
}
