//! Specific Character Set (0008,0005) decoding for the index and queries (STANDARDS DCM-04).
//!
//! dicom-rs decodes with the first value of (0008,0005) only and has no ISO 2022 code
//! extensions, so a `\ISO 2022 IR 58` object (GB2312 switched in by escape sequences, common
//! from older Chinese modalities) would come out wrong. The text attributes the index needs
//! are therefore decoded here from their raw bytes, with encoding_rs (as the HL7 adapter does):
//!
//! * one value, no code extensions (`ISO_IR 192`, `GB18030`, `GBK`, `ISO_IR 100`, …): the
//!   whole value is decoded at once, then split. GB18030/GBK trail bytes include `^` (0x5E),
//!   so splitting the bytes first would cut characters in half;
//! * `ISO 2022 …` values (code extensions, PS3.5 6.1.2.5): a state machine over the escape
//!   sequences — GB2312 (`ESC $ ) A`, IR 58), KS X 1001 (IR 149), JIS X 0208/0201 (IR 87,
//!   IR 13) and the ISO 8859 G1 sets — that returns to the value-1 set at every delimiter
//!   (`^ = \` CR LF TAB FF), as the standard requires of the writer;
//! * a missing (0008,0005) with non-ASCII bytes: the calling AE's configured default charset
//!   is used and the result is flagged `assumed` (never guessed silently).
//!
//! Bytes that the charset cannot decode become U+FFFD and the result is flagged `replaced`.

use encoding_rs::Encoding;

/// A character set ready to decode values: the initial state of value 1 and whether code
/// extensions (ISO 2022 escape sequences) are in use.
#[derive(Debug, Clone, PartialEq)]
pub struct Charset {
    /// The (0008,0005) values as given (or the default's name), for the index and headers.
    pub name: String,
    mode: Mode,
    /// (0008,0005) was missing and this is the configured default.
    pub assumed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// One encoding for the whole value; `None` is the default repertoire (ASCII only).
    Whole(Option<&'static Encoding>),
    /// ISO 2022 code extensions, starting in (and returning to) this state.
    Extensions(State),
}

/// What G0 (bytes 0x21..0x7E) and G1 (0xA1..0xFE) mean at a point of an ISO 2022 value.
#[derive(Debug, Clone, Copy, PartialEq)]
struct State {
    g0: G0,
    g1: G1,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum G0 {
    Ascii,
    /// JIS X 0201 Roman (IR 13 G0): ASCII but for ¥ and ‾.
    JisRoman,
    /// JIS X 0208 (IR 87): two bytes per character.
    Jis0208,
    /// JIS X 0212 (IR 159): not decodable here, replaced.
    Jis0212,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum G1 {
    None,
    /// One byte per character: an ISO 8859 part, or TIS 620.
    Single(&'static Encoding),
    /// JIS X 0201 Katakana (IR 13 G1).
    Katakana,
    /// GB2312 (IR 58): two bytes per character.
    Gb2312,
    /// KS X 1001 (IR 149): two bytes per character.
    Ksx1001,
}

/// A decoded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub text: String,
    /// Some bytes could not be decoded and became U+FFFD.
    pub replaced: bool,
}

const ESC: u8 = 0x1B;

/// The single-byte or multi-byte encoding of a defined term without code extensions.
fn whole(term: &str) -> Option<Option<&'static Encoding>> {
    use encoding_rs::*;
    Some(Some(match term {
        "" | "ISO_IR 6" => return Some(None),
        "ISO_IR 100" => WINDOWS_1252,
        "ISO_IR 101" => ISO_8859_2,
        "ISO_IR 109" => ISO_8859_3,
        "ISO_IR 110" => ISO_8859_4,
        "ISO_IR 144" => ISO_8859_5,
        "ISO_IR 127" => ISO_8859_6,
        "ISO_IR 126" => ISO_8859_7,
        "ISO_IR 138" => ISO_8859_8,
        "ISO_IR 148" => WINDOWS_1254,
        "ISO_IR 203" => ISO_8859_15,
        "ISO_IR 166" => WINDOWS_874,
        "ISO_IR 13" => SHIFT_JIS,
        "ISO_IR 192" => UTF_8,
        "GB18030" => GB18030,
        "GBK" => GBK,
        _ => return None,
    }))
}

/// The state a value-1 term of code extensions starts in (`ISO 2022 IR 6`, `… IR 100`, …).
fn extension_start(term: &str) -> Option<State> {
    let ascii = |g1| State { g0: G0::Ascii, g1 };
    Some(match term {
        "" | "ISO 2022 IR 6" => ascii(G1::None),
        "ISO 2022 IR 13" => State {
            g0: G0::JisRoman,
            g1: G1::Katakana,
        },
        "ISO 2022 IR 58" => ascii(G1::Gb2312),
        "ISO 2022 IR 149" => ascii(G1::Ksx1001),
        "ISO 2022 IR 87" | "ISO 2022 IR 159" => ascii(G1::None),
        t => {
            let part = t.strip_prefix("ISO 2022 ")?;
            let enc = whole(&part.replace("IR ", "ISO_IR "))??;
            if enc.is_single_byte() {
                ascii(G1::Single(enc))
            } else {
                return None;
            }
        }
    })
}

impl Charset {
    /// From the values of (0008,0005). An unknown defined term is an error naming it.
    pub fn from_values(values: &[String]) -> Result<Charset, String> {
        let trimmed: Vec<&str> = values.iter().map(|v| v.trim()).collect();
        let name = trimmed.join("\\");
        let extensions = trimmed.len() > 1 || trimmed.iter().any(|t| t.starts_with("ISO 2022"));
        for t in trimmed.iter().skip(1) {
            if extension_start(t).is_none() {
                return Err(format!(
                    "Specific Character Set {name:?}: {t:?} is not a defined term with code extensions"
                ));
            }
        }
        let first = trimmed.first().copied().unwrap_or("");
        let mode = if extensions {
            Mode::Extensions(extension_start(first).ok_or_else(|| {
                format!("Specific Character Set {name:?}: unknown first value {first:?}")
            })?)
        } else {
            Mode::Whole(whole(first).ok_or_else(|| {
                format!("Specific Character Set {name:?}: unknown defined term {first:?}")
            })?)
        };
        Ok(Charset {
            name,
            mode,
            assumed: false,
        })
    }

    /// A configured default (a defined term, e.g. `GB18030`) for objects without (0008,0005).
    pub fn default_named(term: &str) -> Result<Charset, String> {
        let mut c = Charset::from_values(&[term.to_owned()])?;
        c.assumed = true;
        Ok(c)
    }

    /// The default repertoire (no (0008,0005) and no configured default).
    pub fn ascii() -> Charset {
        Charset {
            name: String::new(),
            mode: Mode::Whole(None),
            assumed: false,
        }
    }

    /// Decodes one value (trailing spaces and NULs, the padding, are removed).
    pub fn decode(&self, bytes: &[u8]) -> Decoded {
        let end = bytes
            .iter()
            .rposition(|b| *b != b' ' && *b != 0)
            .map_or(0, |p| p + 1);
        let bytes = &bytes[..end];
        match self.mode {
            Mode::Whole(None) => ascii(bytes),
            Mode::Whole(Some(enc)) => {
                let (text, replaced) = enc.decode_without_bom_handling(bytes);
                Decoded {
                    text: text.into_owned(),
                    replaced,
                }
            }
            Mode::Extensions(start) => iso2022(bytes, start),
        }
    }

    /// Whether this charset encodes ASCII as itself (all of those above do).
    pub fn is_default(&self) -> bool {
        self.mode == Mode::Whole(None)
    }
}

fn ascii(bytes: &[u8]) -> Decoded {
    let mut replaced = false;
    let text = bytes
        .iter()
        .map(|&b| {
            if b.is_ascii() {
                b as char
            } else {
                replaced = true;
                char::REPLACEMENT_CHARACTER
            }
        })
        .collect();
    Decoded { text, replaced }
}

/// Decodes a value with ISO 2022 code extensions.
fn iso2022(bytes: &[u8], start: State) -> Decoded {
    let mut out = String::with_capacity(bytes.len());
    let mut replaced = false;
    let mut state = start;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == ESC {
            match escape(&bytes[i + 1..]) {
                Some((len, change)) => {
                    change(&mut state);
                    i += 1 + len;
                }
                None => {
                    replaced = true;
                    out.push(char::REPLACEMENT_CHARACTER);
                    i += 1;
                }
            }
            continue;
        }
        if b < 0x80 {
            match state.g0 {
                G0::Jis0208 | G0::Jis0212 if (0x21..=0x7E).contains(&b) => {
                    let run_end = bytes[i..]
                        .iter()
                        .position(|c| !(0x21..=0x7E).contains(c))
                        .map_or(bytes.len(), |p| i + p);
                    let run = &bytes[i..run_end];
                    if state.g0 == G0::Jis0208 {
                        let mut wrapped = b"\x1b$B".to_vec();
                        wrapped.extend_from_slice(run);
                        wrapped.extend_from_slice(b"\x1b(B");
                        let (t, r) = encoding_rs::ISO_2022_JP.decode_without_bom_handling(&wrapped);
                        out.push_str(&t);
                        replaced |= r;
                    } else {
                        replaced = true;
                        for _ in 0..run.len().div_ceil(2) {
                            out.push(char::REPLACEMENT_CHARACTER);
                        }
                    }
                    i = run_end;
                    continue;
                }
                G0::JisRoman if b == 0x5C => out.push('¥'),
                G0::JisRoman if b == 0x7E => out.push('‾'),
                _ => out.push(b as char),
            }
            if matches!(b, b'^' | b'=' | b'\\' | b'\r' | b'\n' | b'\t' | 0x0C) {
                state = start;
            }
            i += 1;
            continue;
        }
        let (width, enc): (usize, Option<&'static Encoding>) = match state.g1 {
            G1::None => (1, None),
            G1::Single(e) => (1, Some(e)),
            G1::Katakana => (1, Some(encoding_rs::SHIFT_JIS)),
            G1::Gb2312 => (2, Some(encoding_rs::GBK)),
            G1::Ksx1001 => (2, Some(encoding_rs::EUC_KR)),
        };
        let piece = &bytes[i..(i + width).min(bytes.len())];
        match enc {
            Some(e) if piece.len() == width => {
                let (t, r) = e.decode_without_bom_handling(piece);
                out.push_str(&t);
                replaced |= r;
            }
            _ => {
                replaced = true;
                out.push(char::REPLACEMENT_CHARACTER);
            }
        }
        i += piece.len();
    }
    Decoded {
        text: out,
        replaced,
    }
}

type Change = fn(&mut State);

/// The escape sequence after an ESC: its length and what it switches.
fn escape(rest: &[u8]) -> Option<(usize, Change)> {
    use encoding_rs::*;
    let three: &[(&[u8], Change)] = &[
        (b"$)A", |s| s.g1 = G1::Gb2312),
        (b"$)C", |s| s.g1 = G1::Ksx1001),
        (b"$(D", |s| s.g0 = G0::Jis0212),
    ];
    for (seq, change) in three {
        if rest.starts_with(seq) {
            return Some((seq.len(), *change));
        }
    }
    let two: &[(&[u8], Change)] = &[
        (b"(B", |s| s.g0 = G0::Ascii),
        (b"(J", |s| s.g0 = G0::JisRoman),
        (b"$B", |s| s.g0 = G0::Jis0208),
        (b")I", |s| s.g1 = G1::Katakana),
        (b"-A", |s| s.g1 = G1::Single(WINDOWS_1252)),
        (b"-B", |s| s.g1 = G1::Single(ISO_8859_2)),
        (b"-C", |s| s.g1 = G1::Single(ISO_8859_3)),
        (b"-D", |s| s.g1 = G1::Single(ISO_8859_4)),
        (b"-L", |s| s.g1 = G1::Single(ISO_8859_5)),
        (b"-G", |s| s.g1 = G1::Single(ISO_8859_6)),
        (b"-F", |s| s.g1 = G1::Single(ISO_8859_7)),
        (b"-H", |s| s.g1 = G1::Single(ISO_8859_8)),
        (b"-M", |s| s.g1 = G1::Single(WINDOWS_1254)),
        (b"-T", |s| s.g1 = G1::Single(WINDOWS_874)),
        (b"-b", |s| s.g1 = G1::Single(ISO_8859_15)),
    ];
    two.iter()
        .find(|(seq, _)| rest.starts_with(seq))
        .map(|(seq, change)| (seq.len(), *change))
}

/// The component groups of a Person Name: alphabetic, ideographic, phonetic (empty when
/// absent).
pub fn name_groups(pn: &str) -> [&str; 3] {
    let mut it = pn.splitn(3, '=');
    [
        it.next().unwrap_or(""),
        it.next().unwrap_or(""),
        it.next().unwrap_or(""),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(values: &[&str]) -> Charset {
        Charset::from_values(&values.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    /// PS3.5 Annex K.2: GB18030, three component groups.
    #[test]
    fn gb18030_person_name_with_three_groups() {
        let bytes: &[u8] = &[
            0x57, 0x61, 0x6e, 0x67, 0x5e, 0x58, 0x69, 0x61, 0x6f, 0x44, 0x6f, 0x6e, 0x67, 0x3d,
            0xcd, 0xf5, 0x5e, 0xd0, 0xa1, 0xb6, 0xab, 0x3d, 0x20,
        ];
        let d = cs(&["GB18030"]).decode(bytes);
        assert_eq!(d.text, "Wang^XiaoDong=王^小东=");
        assert!(!d.replaced);
        assert_eq!(name_groups(&d.text), ["Wang^XiaoDong", "王^小东", ""]);
    }

    /// A GBK/GB18030 trail byte may be 0x5E (`^`): decoding before splitting keeps the
    /// character whole.
    #[test]
    fn a_caret_trail_byte_does_not_split_a_character() {
        let (bytes, _, _) = encoding_rs::GB18030.encode("張^三");
        assert!(
            bytes.windows(2).any(|w| w[1] == 0x5E && w[0] >= 0x81),
            "{bytes:x?}"
        );
        assert_eq!(cs(&["GB18030"]).decode(&bytes).text, "張^三");
        assert_eq!(cs(&["GBK"]).decode(&bytes).text, "張^三");
    }

    /// PS3.5 Annex K.1: `\ISO 2022 IR 58`, GB2312 invoked by escape sequences, which the
    /// writer repeats after each delimiter.
    #[test]
    fn iso_2022_ir_58_with_escape_sequences() {
        let bytes: &[u8] = &[
            0x5a, 0x68, 0x61, 0x6e, 0x67, 0x5e, 0x58, 0x69, 0x61, 0x6f, 0x44, 0x6f, 0x6e, 0x67,
            0x3d, 0x1b, 0x24, 0x29, 0x41, 0xd5, 0xc5, 0x5e, 0x1b, 0x24, 0x29, 0x41, 0xd0, 0xa1,
            0xb6, 0xab, 0x3d, 0x20,
        ];
        let d = cs(&["", "ISO 2022 IR 58"]).decode(bytes);
        assert_eq!(d.text, "Zhang^XiaoDong=张^小东=");
        assert!(!d.replaced);
        // The same with value 1 spelled out.
        let d = cs(&["ISO 2022 IR 6", "ISO 2022 IR 58"]).decode(bytes);
        assert_eq!(d.text, "Zhang^XiaoDong=张^小东=");
    }

    #[test]
    fn after_a_delimiter_high_bytes_need_a_new_escape() {
        // GB2312 invoked before `^` is gone after it: the writer must invoke it again.
        let bytes: &[u8] = &[0x1b, 0x24, 0x29, 0x41, 0xd5, 0xc5, 0x5e, 0xd0, 0xa1];
        let d = cs(&["", "ISO 2022 IR 58"]).decode(bytes);
        assert_eq!(d.text, "张^\u{fffd}\u{fffd}");
        assert!(d.replaced);
    }

    #[test]
    fn utf8_and_japanese_and_latin() {
        let d = cs(&["ISO_IR 192"]).decode("Wang^XiaoDong=王^小东=".as_bytes());
        assert_eq!(d.text, "Wang^XiaoDong=王^小东=");
        // PS3.5 H.3.1 (abridged): ISO 2022 IR 87, 山田^太郎.
        let bytes: &[u8] = &[
            0x1b, 0x24, 0x42, 0x3b, 0x33, 0x45, 0x44, 0x1b, 0x28, 0x42, 0x5e, 0x1b, 0x24, 0x42,
            0x42, 0x40, 0x4f, 0x3a, 0x1b, 0x28, 0x42,
        ];
        let d = cs(&["", "ISO 2022 IR 87"]).decode(bytes);
        assert_eq!(d.text, "山田^太郎");
        assert!(!d.replaced);
        assert_eq!(cs(&["ISO_IR 100"]).decode(b"M\xfcller").text, "Müller");
    }

    #[test]
    fn missing_charset_is_ascii_or_the_flagged_default() {
        let d = Charset::ascii().decode(b"Li\xcd\xf5");
        assert!(d.replaced);
        assert_eq!(d.text, "Li\u{fffd}\u{fffd}");
        let c = Charset::default_named("GB18030").unwrap();
        assert!(c.assumed);
        assert_eq!(c.decode(b"\xcd\xf5").text, "王");
        assert!(Charset::default_named("KOI8").is_err());
        let e = Charset::from_values(&["GB18030".into(), "ISO 2022 IR 999".into()]).unwrap_err();
        assert!(e.contains("ISO 2022 IR 999"), "{e}");
    }

    #[test]
    fn invalid_bytes_are_replaced_and_flagged() {
        let d = cs(&["ISO_IR 192"]).decode(b"\xff\xfeabc");
        assert!(d.replaced);
        assert!(d.text.ends_with("abc"));
    }
}
