//! HL7 v2 escape sequences (STANDARDS HL7-31), decoded on access by the value model.
//!
//! [`unescape`] turns the escape sequences of one data value into text: `\F\ \S\ \T\ \R\ \E\`
//! become the active field, component, subcomponent, repetition and escape characters, `\P\`
//! the truncation character (v2.7+, only when `MSH-2` declares one), `\Xhh…\` the bytes `hh…`
//! decoded in the message's character set (so `\X0D\` is CR and `\XE5BCA0\` is 张 in UTF-8),
//! and the formatting command `\.br\` a line break, written as `"\n"` (one LF, the line break
//! of Rust strings; CR is the HL7 segment terminator and CRLF would put it back into values).
//!
//! Everything else is kept verbatim, escape characters included: the highlighting sequences
//! `\H\ \N\`, the character-set switches `\Cxxyy\ \Mxxyyzz\`, local `\Z…\` sequences, the other
//! formatting commands (`\.sp\`, `\.in\`, …), `\X…\` with an odd number of hex digits or bytes
//! invalid in the charset, and any unknown sequence. A lone escape character that does not
//! open a sequence (no closing escape character in the value, or a "sequence" that is empty or
//! would span a delimiter) is kept literally, so `a\b` stays `a\b` (lenient mode).
//!
//! [`escape`] is the inverse for outbound data: every delimiter in the data is escaped, CR
//! becomes `\X0D\` and LF `\X0A\` (not `\.br\`, which is only defined for the FT data type; the
//! `\X..\` form is valid in every text type, and any ASCII-compatible charset decodes it
//! back). `unescape(&escape(s, d), d, cs) == s` for every string and every valid delimiter set
//! (a property test checks this).

use std::borrow::Cow;

use encoding_rs::Encoding;

use crate::charset::decode_fragment;
use crate::parse::Delimiters;

/// Decodes the escape sequences in one raw value (see the module documentation).
///
/// `charset` is the message's character set, used for `\Xhh…\`.
pub fn unescape(raw: &str, d: &Delimiters, charset: &'static Encoding) -> String {
    unescape_cow(raw, d, charset).into_owned()
}

/// Like [`unescape`], borrowing `raw` when it holds no escape character (the usual case).
pub fn unescape_cow<'a>(raw: &'a str, d: &Delimiters, charset: &'static Encoding) -> Cow<'a, str> {
    let e = d.escape;
    if !raw.contains(e) {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some((before, after)) = rest.split_once(e) {
        out.push_str(before);
        let Some((content, tail)) = after.split_once(e) else {
            // Lone escape character: keep it and the rest literally.
            out.push(e);
            rest = after;
            break;
        };
        if content.is_empty() || content.chars().any(|c| d.is_delimiter(c)) {
            // Not a sequence: the escape character is data; resume right after it.
            out.push(e);
            rest = after;
            continue;
        }
        if !decode_sequence(content, d, charset, &mut out) {
            out.push(e);
            out.push_str(content);
            out.push(e);
        }
        rest = tail;
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Appends the meaning of a recognised sequence to `out`; false to keep it verbatim.
fn decode_sequence(
    content: &str,
    d: &Delimiters,
    charset: &'static Encoding,
    out: &mut String,
) -> bool {
    let ch = match content {
        "F" => Some(d.field),
        "S" => Some(d.component),
        "T" => Some(d.subcomponent),
        "R" => Some(d.repetition),
        "E" => Some(d.escape),
        "P" => d.truncation,
        ".br" => Some('\n'),
        _ => None,
    };
    if let Some(c) = ch {
        out.push(c);
        return true;
    }
    let Some(hex) = content.strip_prefix('X') else {
        return false;
    };
    let Some(bytes) = hex_bytes(hex) else {
        return false;
    };
    match decode_fragment(&bytes, charset) {
        Some(text) => {
            out.push_str(&text);
            true
        }
        None => false,
    }
}

/// Parses an even, non-zero number of hex digits.
fn hex_bytes(hex: &str) -> Option<Vec<u8>> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    hex.as_bytes()
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(s, 16).ok()
        })
        .collect()
}

/// Escapes text for use as one data value (see the module documentation).
pub fn escape(text: &str, d: &Delimiters) -> String {
    escape_cow(text, d).into_owned()
}

/// Like [`escape`], borrowing `text` when nothing needs escaping.
pub fn escape_cow<'a>(text: &'a str, d: &Delimiters) -> Cow<'a, str> {
    let needs = |c: char| d.is_delimiter(c) || c == '\r' || c == '\n';
    if !text.chars().any(needs) {
        return Cow::Borrowed(text);
    }
    let e = d.escape;
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        let code = if c == d.escape {
            "E"
        } else if c == d.field {
            "F"
        } else if c == d.component {
            "S"
        } else if c == d.subcomponent {
            "T"
        } else if c == d.repetition {
            "R"
        } else if Some(c) == d.truncation {
            "P"
        } else if c == '\r' {
            "X0D"
        } else if c == '\n' {
            "X0A"
        } else {
            out.push(c);
            continue;
        };
        out.push(e);
        out.push_str(code);
        out.push(e);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use encoding_rs::{GB18030, UTF_8};

    fn un(raw: &str) -> String {
        unescape(raw, &Delimiters::default(), UTF_8)
    }

    #[test]
    fn table() {
        let cases = [
            (r"a\F\b", "a|b"),
            (r"\S\\T\\R\\E\", "^&~\\"),
            (r"line1\.br\line2", "line1\nline2"),
            (r"x\X0D\y", "x\ry"),
            (r"\X0D0A\", "\r\n"),
            (r"\XE5BCA0\三", "张三"),
            (r"\H\bold\N\", r"\H\bold\N\"),
            (r"\C2842\x", r"\C2842\x"),
            (r"\M2442\", r"\M2442\"),
            (r"\Zlocal\", r"\Zlocal\"),
            (r"\.sp2\", r"\.sp2\"),
            (r"\Q\", r"\Q\"),
            (r"\X0\", r"\X0\"),
            (r"\XZZ\", r"\XZZ\"),
            (r"\XFF\", r"\XFF\"), // not valid UTF-8
            (r"\P\", r"\P\"),     // no truncation character declared
            (r"a\b", r"a\b"),
            (r"C:\temp", r"C:\temp"),
            (r"\", r"\"),
            (r"\\F\", r"\|"),
            (r"a\b^c\d", r"a\b^c\d"),
            ("", ""),
            ("plain 张三", "plain 张三"),
        ];
        for (raw, want) in cases {
            assert_eq!(un(raw), want, "{raw}");
        }
    }

    #[test]
    fn hex_uses_the_message_charset() {
        // 张 is D5 C5 in GB18030.
        let d = Delimiters::default();
        assert_eq!(unescape(r"\XD5C5\", &d, GB18030), "张");
    }

    #[test]
    fn truncation_when_declared() {
        let d = Delimiters {
            truncation: Some('#'),
            ..Delimiters::default()
        };
        assert_eq!(unescape(r"a\P\b", &d, UTF_8), "a#b");
        assert_eq!(escape("a#b", &d), r"a\P\b");
    }

    #[test]
    fn escapes_every_delimiter() {
        let d = Delimiters::default();
        assert_eq!(
            escape("a|b^c&d~e\\f\rg\nh", &d),
            r"a\F\b\S\c\T\d\R\e\E\f\X0D\g\X0A\h"
        );
        assert!(matches!(escape_cow("张三", &d), Cow::Borrowed(_)));
    }
}
