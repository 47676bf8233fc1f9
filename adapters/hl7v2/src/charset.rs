//! Character sets for HL7 v2 (STANDARDS HL7-20, HL7-21, HL7-22): the mapping from `MSH-18`
//! values (HL7 table 0211, plus spellings seen in Chinese HIS traffic) to `encoding_rs`
//! encodings, reading `MSH-18` from the raw bytes before anything is decoded, decoding a whole
//! message with a per-channel default and an explicit policy for invalid bytes, and encoding
//! outbound text that fails loudly (never `?`) on a character the target charset cannot hold.
//!
//! Decoding always happens on the whole de-framed message, before the tokenizer runs
//! (HL7-21): GBK/GB18030 trail bytes cover 0x40–0x7E, which includes `|`, `^`, `~` and `\`, so
//! splitting bytes on delimiters would cut Chinese characters in half.
//!
//! Notes on the mapping (see [`encoding_for_msh18`]):
//! - `encoding_rs` implements the WHATWG Encoding Standard, so `8859/1` (and `ISO IR100`)
//!   decode as windows-1252, a superset of ISO 8859-1; `8859/9` decodes as windows-1254.
//! - `ASCII` / `ISO IR6` also map to windows-1252 (the WHATWG meaning of the label `ascii`), but
//!   [`decode`] checks them strictly: a byte ≥ 0x80 in a message that declares ASCII is an
//!   invalid byte, handled by the channel's [`OnInvalid`] policy, never silently read as Latin-1.
//! - `UNICODE` (the deprecated ISO/IEC 10646 value of table 0211) is read as UTF-8, as HAPI does.
//!   `UNICODE UTF-16` / `UTF-32` are not supported: their `MSH` segment cannot be read from the
//!   raw bytes, and they cannot travel over MLLP unharmed. They are reported as unknown.
//! - `CNS 11643-1992` maps to Big5. Systems that declare it send Big5 in practice; the
//!   repertoires of CNS 11643 planes 1–2 and Big5 coincide, the byte encodings (EUC-TW) do not,
//!   so true EUC-TW bytes show up as invalid and go through the [`OnInvalid`] policy.
//! - `GB2312` maps to GBK (its superset, as in WHATWG). Decoding GBK accepts the whole of GB18030
//!   (WHATWG's GBK decoder is the GB18030 decoder); *encoding* to GBK refuses characters outside
//!   GBK, such as U+20000 (HL7-22).
//! - Any other label known to the WHATWG Encoding Standard (`windows-1252`, `shift_jis`,
//!   `euc-jp`, …) is accepted as a last resort, except the UTF-16 family and the
//!   "replacement" encoding.

use std::borrow::Cow;
use std::ops::Range;

use encoding_rs::{
    BIG5, DecoderResult, EUC_KR, EncoderResult, Encoding, GB18030, GBK, ISO_2022_JP, ISO_8859_2,
    ISO_8859_3, ISO_8859_4, ISO_8859_5, ISO_8859_6, ISO_8859_7, ISO_8859_8, ISO_8859_15,
    REPLACEMENT, UTF_8, UTF_16BE, UTF_16LE, WINDOWS_1252, WINDOWS_1254, X_USER_DEFINED,
};

/// The `mllp` listener's `charset` when its config names none: what county HIS send with an
/// empty MSH-18. `huizhen hl7 parse` reads files with the same default.
pub const LISTENER_DEFAULT: &str = "GB18030";

/// What to do with bytes that are not valid in the message's character set (HL7-20).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnInvalid {
    /// Refuse the message ([`CharsetError::Invalid`]); the listener answers AE/CE.
    #[default]
    Reject,
    /// Decode with U+FFFD for each invalid sequence and set [`Decoded::replaced`].
    Replace,
}

/// A message decoded to Unicode, with what was used to decode it.
#[derive(Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The decoded text (segment terminators not yet normalised; see `Message::parse`).
    pub text: String,
    /// The encoding used: the one `MSH-18` names, or the channel default when it is empty.
    pub encoding: &'static Encoding,
    /// `MSH-18` as sent (first repetition, trimmed), if present and not empty.
    pub declared: Option<String>,
    /// True when invalid bytes were replaced with U+FFFD ([`OnInvalid::Replace`]).
    pub replaced: bool,
}

impl std::fmt::Debug for Decoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Message text is patient data: never printed.
        f.debug_struct("Decoded")
            .field("text", &format_args!("<{} bytes>", self.text.len()))
            .field("encoding", &self.encoding.name())
            .field("declared", &self.declared)
            .field("replaced", &self.replaced)
            .finish()
    }
}

/// A character-set failure. None of the variants carries message content.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CharsetError {
    /// `MSH-18` names a character set this engine does not know.
    #[error("unknown character set {0:?} in MSH-18")]
    Unknown(String),
    /// `MSH-18` is empty, the channel's charset is a multi-byte one, and the bytes are UTF-8:
    /// decoding them with the channel's charset would fail or, worse, read a delimiter as the
    /// second byte of a character and shift every field after it. Refused rather than guessed.
    #[error(
        "the message is UTF-8 (non-ASCII from byte offset {offset}) but MSH-18 is empty and the channel's charset is {encoding}: set MSH-18 to UNICODE UTF-8, or the channel's charset to UTF-8"
    )]
    LooksLikeUtf8 {
        encoding: &'static str,
        offset: usize,
    },
    /// The bytes are not valid in the character set in force.
    #[error("invalid {encoding} byte sequence at byte offset {offset}")]
    Invalid {
        /// Name of the encoding (`encoding_rs` name, e.g. `UTF-8`, `gb18030`).
        encoding: &'static str,
        /// Byte offset, in the raw message, of the first invalid sequence.
        offset: usize,
    },
    /// A character cannot be represented in the target character set (HL7-22).
    #[error("character U+{:04X} at byte offset {offset} cannot be encoded in {encoding}", u32::from(*ch))]
    Unmappable {
        /// The character.
        ch: char,
        /// Byte offset of the character in the UTF-8 text being encoded.
        offset: usize,
        /// Name of the target encoding.
        encoding: &'static str,
    },
}

/// Maps an `MSH-18` value (HL7 table 0211, or a common spelling) to an encoding.
///
/// Matching ignores case, surrounding whitespace, and inner spaces, `-` and `_`, so
/// `UNICODE UTF-8`, `utf-8`, `UTF8`, `GB 18030-2000`, `GB18030`, `BIG-5`, `Big5` and the DICOM
/// spelling `ISO_IR 192` are all understood. Returns `None` for an empty or unknown value.
/// See the module documentation for the choices made for `ASCII`, `8859/1`, `UNICODE` and
/// `CNS 11643-1992`.
pub fn encoding_for_msh18(value: &str) -> Option<&'static Encoding> {
    let key: String = value
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '_' | '\t'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let enc = match key.as_str() {
        "" => return None,
        "ASCII" | "USASCII" | "ISOIR6" => WINDOWS_1252,
        "8859/1" | "ISOIR100" | "ISO88591" | "LATIN1" => WINDOWS_1252,
        "8859/2" | "ISOIR101" | "ISO88592" => ISO_8859_2,
        "8859/3" | "ISOIR109" | "ISO88593" => ISO_8859_3,
        "8859/4" | "ISOIR110" | "ISO88594" => ISO_8859_4,
        "8859/5" | "ISOIR144" | "ISO88595" => ISO_8859_5,
        "8859/6" | "ISOIR127" | "ISO88596" => ISO_8859_6,
        "8859/7" | "ISOIR126" | "ISO88597" => ISO_8859_7,
        "8859/8" | "ISOIR138" | "ISO88598" => ISO_8859_8,
        "8859/9" | "ISOIR148" | "ISO88599" => WINDOWS_1254,
        "8859/15" | "ISO885915" => ISO_8859_15,
        "UNICODEUTF8" | "UNICODE" | "UTF8" | "ISOIR192" => UTF_8,
        "GB180302000" | "GB18030" | "GB180302005" => GB18030,
        "GBK" | "GB2312" | "GB231280" | "CP936" | "ISOIR58" => GBK,
        "BIG5" | "CNS116431992" => BIG5,
        "ISOIR87" | "ISO2022JP" => ISO_2022_JP,
        "KSX1001" | "ISOIR149" | "EUCKR" => EUC_KR,
        _ => {
            let enc = Encoding::for_label_no_replacement(value.trim().as_bytes())?;
            if enc == UTF_16LE || enc == UTF_16BE || enc == REPLACEMENT || enc == X_USER_DEFINED {
                return None;
            }
            enc
        }
    };
    Some(enc)
}

/// True for the labels that promise 7-bit ASCII (`ASCII`, `ISO IR6`), which [`decode`] checks
/// strictly.
fn declares_ascii(value: &str) -> bool {
    let key: String = value
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '_' | '\t'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    matches!(key.as_str(), "ASCII" | "USASCII" | "ISOIR6")
}

/// What [`sniff`] found: `MSH-18`, whether everything up to it was 7-bit (so the byte-level
/// split is certainly right), and the bytes of the `MSH` segment.
struct Sniffed {
    value: Option<String>,
    ascii_prefix: bool,
    segment: Range<usize>,
}

fn sniff(raw: &[u8]) -> Sniffed {
    let none = Sniffed {
        value: None,
        ascii_prefix: true,
        segment: 0..0,
    };
    // Skip a byte-order mark and leading whitespace.
    let mut start = 0;
    if raw.starts_with(&[0xEF, 0xBB, 0xBF]) {
        start = 3;
    }
    while raw
        .get(start)
        .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
    {
        start += 1;
    }
    // The first segment that starts with MSH: at the start, or right after CR or LF.
    let mut msh = None;
    let mut i = start;
    while i + 3 <= raw.len() {
        if (i == start || matches!(raw.get(i.wrapping_sub(1)), Some(b'\r' | b'\n')))
            && raw.get(i..i + 3) == Some(b"MSH")
        {
            msh = Some(i);
            break;
        }
        i += 1;
    }
    let Some(msh) = msh else { return none };
    let Some(tail) = raw.get(msh..) else {
        return none;
    };
    let len = tail
        .iter()
        .position(|b| matches!(b, b'\r' | b'\n'))
        .unwrap_or(tail.len());
    let Some(segment) = tail.get(..len) else {
        return none;
    };
    let range = msh..msh + len;
    let Some(&sep) = segment.get(3) else {
        return none;
    };
    if !sep.is_ascii() || sep.is_ascii_alphanumeric() || sep.is_ascii_whitespace() {
        return none;
    }
    // items[0] = "MSH", items[1] = MSH-2, items[k] = MSH-(k+1): MSH-1 is the separator itself.
    let mut ascii_prefix = true;
    let mut msh18 = None;
    let mut msh2: &[u8] = &[];
    for (k, item) in segment.split(|&b| b == sep).enumerate() {
        if k == 1 {
            msh2 = item;
        }
        if k == 17 {
            msh18 = Some(item);
            break;
        }
        ascii_prefix &= item.iter().all(|&b| b.is_ascii() && b != 0x1B);
    }
    let Some(msh18) = msh18 else {
        return Sniffed {
            value: None,
            ascii_prefix,
            segment: range,
        };
    };
    // First repetition only (the repetition separator is the 2nd encoding character).
    let first = match msh2.get(1) {
        Some(&rep) => msh18.split(|&b| b == rep).next().unwrap_or(msh18),
        None => msh18,
    };
    let value = String::from_utf8_lossy(first).trim().to_owned();
    Sniffed {
        value: (!value.is_empty()).then_some(value),
        ascii_prefix,
        segment: range,
    }
}

/// Reads `MSH-18` (first repetition, trimmed) from raw bytes without decoding them.
///
/// Finds the first segment that starts with `MSH` (so batch headers before it are skipped),
/// takes the byte after `MSH` as the field separator, and splits that segment (up to the first
/// CR or LF) on it. `MSH-1` is the separator itself, so the items after `MSH` are `MSH-2`,
/// `MSH-3`, …, and `MSH-18` is the 17th. Returns `None` when there is no `MSH` segment, the
/// segment is shorter than 18 fields, or `MSH-18` is empty.
///
/// The split is exact when the fields before `MSH-18` are 7-bit, as they are in practice;
/// [`decode`] re-reads the value from decoded text when they are not.
pub fn sniff_msh18(raw: &[u8]) -> Option<String> {
    sniff(raw).value
}

/// Decodes a raw (de-framed) message to Unicode (HL7-20).
///
/// The encoding is the one `MSH-18` names when present, else `default` (the channel's
/// default, e.g. GB18030 for a Chinese HIS). An `MSH-18` value that [`encoding_for_msh18`]
/// does not know is an error ([`CharsetError::Unknown`]): the engine does not guess. Invalid
/// bytes are handled by `on_invalid`. No byte-order mark handling is done here; the parser
/// skips a leading U+FEFF.
///
/// When a field before `MSH-18` holds 8-bit bytes (a Chinese facility name in `MSH-4`, say), a
/// GBK or Big5 trail byte may look like a field separator to [`sniff_msh18`]. Then the `MSH`
/// segment alone is decoded with the byte-level candidate, the channel default and GB18030, in
/// that order, and the first encoding whose decoded `MSH-18` names that same encoding (or is
/// empty, for the default) is used; failing that, the value read from the first decoding
/// without invalid bytes. Either way the declaration decides, read correctly.
pub fn decode(
    raw: &[u8],
    default: &'static Encoding,
    on_invalid: OnInvalid,
) -> Result<Decoded, CharsetError> {
    let sniffed = sniff(raw);
    let byte_level = match &sniffed.value {
        Some(v) => encoding_for_msh18(v),
        None => Some(default),
    };
    if !sniffed.ascii_prefix {
        let segment = raw.get(sniffed.segment.clone()).unwrap_or_default();
        match resolve_by_text(segment, default, byte_level) {
            Some(Resolution::Found(enc, declared)) => {
                return decode_with(raw, enc, declared, on_invalid);
            }
            Some(Resolution::Unknown(value)) => return Err(CharsetError::Unknown(value)),
            None => {}
        }
    }
    let Some(enc) = byte_level else {
        return Err(CharsetError::Unknown(sniffed.value.unwrap_or_default()));
    };
    decode_with(raw, enc, sniffed.value, on_invalid)
}

/// What reading `MSH-18` from decoded text found.
enum Resolution {
    /// Decode with this encoding; `MSH-18` was this value.
    Found(&'static Encoding, Option<String>),
    /// A clean decoding declares a charset this engine does not know.
    Unknown(String),
}

/// Finds an encoding whose decoding of the `MSH` segment declares that same encoding in
/// `MSH-18` (or declares nothing, for the default). Failing that, the declaration read from
/// the first decoding without invalid bytes. At most five decodes of one segment.
fn resolve_by_text(
    segment: &[u8],
    default: &'static Encoding,
    first: Option<&'static Encoding>,
) -> Option<Resolution> {
    let mut queue: Vec<&'static Encoding> = first.into_iter().chain([default, GB18030]).collect();
    let mut tried: Vec<&'static Encoding> = Vec::new();
    let mut fallback = None;
    let mut i = 0;
    while let Some(&candidate) = queue.get(i) {
        i += 1;
        if tried.contains(&candidate) {
            continue;
        }
        if tried.len() >= 5 {
            break;
        }
        tried.push(candidate);
        let (text, had_errors) = candidate.decode_without_bom_handling(segment);
        let value = sniff(text.as_bytes()).value;
        let declared = match &value {
            None => Resolution::Found(default, None),
            Some(v) => match encoding_for_msh18(v) {
                Some(named) => Resolution::Found(named, value.clone()),
                None => Resolution::Unknown(v.clone()),
            },
        };
        if let Resolution::Found(named, _) = &declared {
            if *named == candidate {
                return Some(declared);
            }
            queue.insert(i, named);
        }
        if !had_errors && fallback.is_none() {
            fallback = Some(declared);
        }
    }
    fallback
}

/// With no `MSH-18`, UTF-8 bytes read with a multi-byte default (GBK, GB18030, Big5, …) either
/// fail or lose delimiters inside characters (HL7-21). Detects the second case too: the bytes
/// are valid UTF-8 with non-ASCII, and decoding them with `enc` leaves fewer field separators,
/// component separators or segment ends than the bytes hold.
fn utf8_in_disguise(raw: &[u8], enc: &'static Encoding) -> Option<CharsetError> {
    if enc == UTF_8 || !enc.is_ascii_compatible() || enc.is_single_byte() {
        return None;
    }
    let offset = raw.iter().position(|b| !b.is_ascii())?;
    std::str::from_utf8(raw).ok()?;
    let (text, had_errors) = enc.decode_without_bom_handling(raw);
    let field = raw
        .get(3)
        .copied()
        .filter(u8::is_ascii_punctuation)
        .unwrap_or(b'|');
    let lost = had_errors
        || [field, b'^', b'~', b'\\', b'\r'].iter().any(|&d| {
            raw.iter().filter(|&&b| b == d).count() != text.bytes().filter(|&b| b == d).count()
        });
    lost.then_some(CharsetError::LooksLikeUtf8 {
        encoding: enc.name(),
        offset,
    })
}

fn decode_with(
    raw: &[u8],
    enc: &'static Encoding,
    declared: Option<String>,
    on_invalid: OnInvalid,
) -> Result<Decoded, CharsetError> {
    if declared.is_none()
        && let Some(e) = utf8_in_disguise(raw, enc)
    {
        return Err(e);
    }
    let ascii = declared.as_deref().is_some_and(declares_ascii);
    if ascii && let Some(offset) = raw.iter().position(|b| !b.is_ascii()) {
        return match on_invalid {
            OnInvalid::Reject => Err(CharsetError::Invalid {
                encoding: "US-ASCII",
                offset,
            }),
            OnInvalid::Replace => Ok(Decoded {
                text: raw
                    .iter()
                    .map(|&b| {
                        if b.is_ascii() {
                            char::from(b)
                        } else {
                            '\u{FFFD}'
                        }
                    })
                    .collect(),
                encoding: enc,
                declared,
                replaced: true,
            }),
        };
    }
    match on_invalid {
        OnInvalid::Replace => {
            let (text, replaced) = enc.decode_without_bom_handling(raw);
            Ok(Decoded {
                text: text.into_owned(),
                encoding: enc,
                declared,
                replaced,
            })
        }
        OnInvalid::Reject => {
            let text = decode_strict(raw, enc)?;
            Ok(Decoded {
                text,
                encoding: enc,
                declared,
                replaced: false,
            })
        }
    }
}

/// Decodes without replacement; the error carries the byte offset of the first invalid
/// sequence.
fn decode_strict(raw: &[u8], enc: &'static Encoding) -> Result<String, CharsetError> {
    let mut decoder = enc.new_decoder_without_bom_handling();
    let capacity = decoder
        .max_utf8_buffer_length_without_replacement(raw.len())
        .unwrap_or(raw.len());
    let mut out = String::with_capacity(capacity);
    let mut pos = 0usize;
    loop {
        let src = raw.get(pos..).unwrap_or_default();
        let (result, read) = decoder.decode_to_string_without_replacement(src, &mut out, true);
        pos += read;
        match result {
            DecoderResult::InputEmpty => return Ok(out),
            DecoderResult::OutputFull => out.reserve(src.len().saturating_sub(read) * 3 + 16),
            DecoderResult::Malformed(bad, after) => {
                let offset = pos
                    .saturating_sub(usize::from(after))
                    .saturating_sub(usize::from(bad));
                return Err(CharsetError::Invalid {
                    encoding: enc.name(),
                    offset,
                });
            }
        }
    }
}

/// Encodes text for an outbound message (HL7-22).
///
/// A character that `enc` cannot represent is an error naming the character and its byte
/// offset in `text`; nothing is ever replaced with `?` or a numeric character reference.
/// Encodings that `encoding_rs` only decodes (UTF-16) encode as UTF-8, their output encoding.
pub fn encode(text: &str, enc: &'static Encoding) -> Result<Vec<u8>, CharsetError> {
    if enc == UTF_8 {
        return Ok(text.as_bytes().to_vec());
    }
    let mut encoder = enc.new_encoder();
    let capacity = encoder
        .max_buffer_length_from_utf8_without_replacement(text.len())
        .unwrap_or(text.len());
    let mut out = Vec::with_capacity(capacity);
    let mut pos = 0usize;
    loop {
        let src = text.get(pos..).unwrap_or_default();
        let (result, read) =
            encoder.encode_from_utf8_to_vec_without_replacement(src, &mut out, true);
        pos += read;
        match result {
            EncoderResult::InputEmpty => return Ok(out),
            EncoderResult::OutputFull => out.reserve(src.len().saturating_sub(read) * 4 + 16),
            EncoderResult::Unmappable(ch) => {
                return Err(CharsetError::Unmappable {
                    ch,
                    offset: pos.saturating_sub(ch.len_utf8()),
                    encoding: enc.output_encoding().name(),
                });
            }
        }
    }
}

/// Decodes bytes from a `\Xhh…\` escape in the message charset, or `None` if they are not
/// valid there (the escape is then kept verbatim by the caller).
pub(crate) fn decode_fragment<'a>(bytes: &'a [u8], enc: &'static Encoding) -> Option<Cow<'a, str>> {
    enc.decode_without_bom_handling_and_without_replacement(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_0211_values() {
        let cases: &[(&str, &'static Encoding)] = &[
            ("ASCII", WINDOWS_1252),
            ("8859/1", WINDOWS_1252),
            ("8859/2", ISO_8859_2),
            ("8859/5", ISO_8859_5),
            ("8859/9", WINDOWS_1254),
            ("UNICODE UTF-8", UTF_8),
            ("unicode utf-8", UTF_8),
            ("UNICODE", UTF_8),
            ("GB 18030-2000", GB18030),
            ("GB 18030", GB18030),
            ("BIG-5", BIG5),
            ("CNS 11643-1992", BIG5),
            ("ISO IR87", ISO_2022_JP),
            ("ISO IR6", WINDOWS_1252),
            ("ISO IR100", WINDOWS_1252),
            ("ISO IR192", UTF_8),
            ("ISO_IR 192", UTF_8),
            ("KS X 1001", EUC_KR),
            (" UTF-8 ", UTF_8),
            ("utf8", UTF_8),
            ("GBK", GBK),
            ("gb2312", GBK),
            ("GB18030", GB18030),
            ("windows-1252", WINDOWS_1252),
        ];
        for (value, enc) in cases {
            assert_eq!(encoding_for_msh18(value), Some(*enc), "{value}");
        }
        for value in [
            "",
            "  ",
            "KLINGON",
            "UNICODE UTF-16",
            "UTF-16LE",
            "x-user-defined",
        ] {
            assert_eq!(encoding_for_msh18(value), None, "{value}");
        }
    }

    #[test]
    fn sniff_counts_msh1_as_the_separator() {
        // MSH-18 is the 17th item after "MSH"; MSH-17 (country) and MSH-19 must not be taken.
        let msg = b"MSH|^~\\&|3|4|5|6|7|8|ADT^A01|10|P|2.5|13|14|AL|NE|CHN|GB18030~UTF-8|19\rPID|1";
        assert_eq!(sniff_msh18(msg).as_deref(), Some("GB18030"));
        let short = b"MSH|^~\\&|3|4|5|6|7|8|ADT^A01|10|P|2.5|13|14|AL|NE|CHN\rPID|1";
        assert_eq!(sniff_msh18(short), None);
        let empty = b"MSH|^~\\&|3|4|5|6|7|8|ADT^A01|10|P|2.5|13|14|AL|NE|CHN||19";
        assert_eq!(sniff_msh18(empty), None);
        let other_sep = b"MSH!@#$%!3!4!5!6!7!8!ADT@A01!10!P!2.5!13!14!AL!NE!CHN! UTF-8 #GBK";
        assert_eq!(sniff_msh18(other_sep).as_deref(), Some("UTF-8"));
        let batch = b"FHS|^~\\&\nBHS|^~\\&\nMSH|^~\\&|||||||ADT^A01|1|P|2.5||||||GBK\n";
        assert_eq!(sniff_msh18(batch).as_deref(), Some("GBK"));
        assert_eq!(sniff_msh18(b""), None);
        assert_eq!(sniff_msh18(b"MSH"), None);
        assert_eq!(sniff_msh18(b"PID|1|2"), None);
    }

    #[test]
    fn strict_decode_reports_the_offset() {
        let mut raw = b"MSH|^~\\&|||||||ADT^A01|1|P|2.5||||||UTF-8\rPID|||".to_vec();
        let at = raw.len();
        raw.extend_from_slice(&[0xD5, 0xC5]); // 张 in GBK, invalid UTF-8
        let err = decode(&raw, GB18030, OnInvalid::Reject).unwrap_err();
        assert_eq!(
            err,
            CharsetError::Invalid {
                encoding: "UTF-8",
                offset: at
            }
        );
        let ok = decode(&raw, GB18030, OnInvalid::Replace).unwrap();
        assert!(ok.replaced);
        assert_eq!(ok.encoding, UTF_8);
        assert!(ok.text.ends_with('\u{FFFD}'));
    }

    #[test]
    fn ascii_is_checked_strictly() {
        let raw = b"MSH|^~\\&|||||||ADT^A01|1|P|2.5||||||ASCII\rPID|||\xD5\xC5";
        let err = decode(raw, GB18030, OnInvalid::Reject).unwrap_err();
        assert!(matches!(err, CharsetError::Invalid { offset, .. } if offset == raw.len() - 2));
        let ok = decode(raw, GB18030, OnInvalid::Replace).unwrap();
        assert!(ok.replaced);
        assert!(ok.text.ends_with("\u{FFFD}\u{FFFD}"));
    }

    #[test]
    fn unknown_charset_is_named() {
        let raw = b"MSH|^~\\&|||||||ADT^A01|1|P|2.5||||||EBCDIC\rPID|1";
        assert_eq!(
            decode(raw, GB18030, OnInvalid::Replace).unwrap_err(),
            CharsetError::Unknown("EBCDIC".into())
        );
    }

    #[test]
    fn encode_refuses_unmappable() {
        let err = encode("患者𠀀", GBK).unwrap_err();
        assert_eq!(
            err,
            CharsetError::Unmappable {
                ch: '\u{20000}',
                offset: "患者".len(),
                encoding: "GBK"
            }
        );
        let bytes = encode("患者𠀀", GB18030).unwrap();
        assert_eq!(GB18030.decode_without_bom_handling(&bytes).0, "患者𠀀");
        assert!(encode("é", ISO_2022_JP).is_err());
        assert_eq!(encode("abc", UTF_8).unwrap(), b"abc");
    }
}

#[cfg(test)]
mod utf8_in_disguise_tests {
    use super::*;

    /// A modern sender's UTF-8 without MSH-18 on a GB18030 channel: `院` (E9 99 A2) followed by
    /// `|` (7C) reads in GB18030 as a character A2 7C, swallowing the separator. Refused, with a
    /// message that says what to change.
    #[test]
    fn utf8_bytes_on_a_gb18030_channel_are_refused_not_misread() {
        let msg = "MSH|^~\\&|LAB|县医院|HZ|省中心|20261124||ORU^R01|PY001|P|2.3\rPID|1||12345^^^H^MR||王^小明\r";
        for policy in [OnInvalid::Reject, OnInvalid::Replace] {
            let e = decode(msg.as_bytes(), GB18030, policy).unwrap_err();
            assert!(
                matches!(e, CharsetError::LooksLikeUtf8 { offset: 13, .. }),
                "{e}"
            );
            assert!(e.to_string().contains("set MSH-18 to UNICODE UTF-8"));
        }
        // Declared, it is read as UTF-8.
        let declared = msg.replacen("|P|2.3", "|P|2.3||||||UNICODE UTF-8", 1);
        let d = decode(declared.as_bytes(), GB18030, OnInvalid::Reject).unwrap();
        assert_eq!(d.encoding, UTF_8);
        // A UTF-8 channel takes it as it is.
        assert!(decode(msg.as_bytes(), UTF_8, OnInvalid::Reject).is_ok());
    }

    /// Real GB18030 text whose characters have `|`, `^`, `~` or `\` as their second byte is not
    /// valid UTF-8, so it is decoded as before (the delimiters inside characters are data).
    #[test]
    fn gbk_characters_with_delimiter_trail_bytes_still_decode() {
        let tricky: String = (0x4E00u32..0x9FA5)
            .filter_map(char::from_u32)
            .filter(|c| {
                let s = c.to_string();
                let (b, _, _) = GBK.encode(&s);
                b.len() == 2 && matches!(b[1], b'|' | b'^' | b'~' | b'\\')
            })
            .take(4)
            .collect();
        assert_eq!(tricky.chars().count(), 4, "such characters exist");
        let text =
            format!("MSH|^~\\&|HIS|H|HZ|P|2026||ADT^A01|C1|P|2.5\rPID|1||1^^^H^MR||{tricky}\r");
        let raw = GB18030.encode(&text).0.into_owned();
        let d = decode(&raw, GB18030, OnInvalid::Reject).unwrap();
        assert_eq!(d.text, text);
    }
}
