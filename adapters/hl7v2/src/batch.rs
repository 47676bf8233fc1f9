//! HL7 files and batches as bytes (STANDARDS HL7-33, HL7-36): cuts a file into messages before
//! any character decoding, which is safe because CR, LF and the ASCII segment names never occur
//! as trail bytes in UTF-8, GBK or GB18030.
//!
//! Line ends: CR, CRLF, or LF alone when the file has no CR at all (an LF inside a
//! CR-terminated message is data, e.g. in `OBX-5`). A new message starts at each `MSH`.
//! `FHS`/`BHS`/`BTS`/`FTS` envelopes are removed; `BTS-1` (messages in the batch) and `FTS-1`
//! (batches in the file) are checked, and a mismatch is reported while every message found is
//! kept. Registered as the `file` source's `split: hl7`.

use std::collections::BTreeMap;

use huizhen_core::sources::{SplitOutput, Splitter};

/// The messages of a file, CR-terminated, with count problems.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RawBatch {
    pub messages: Vec<Vec<u8>>,
    pub discrepancies: Vec<String>,
}

fn count_field(seg: &[u8]) -> Option<usize> {
    let sep = *seg.get(3)?;
    let field = seg.split(|b| *b == sep).nth(1)?;
    let text = std::str::from_utf8(field).ok()?.trim();
    if text.is_empty() {
        return None;
    }
    Some(text.parse().unwrap_or(usize::MAX))
}

/// Whether a frame or file starts with a batch envelope (`FHS` or `BHS`).
pub fn is_batch(bytes: &[u8]) -> bool {
    let b = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let b = b.trim_ascii_start();
    b.starts_with(b"FHS") || b.starts_with(b"BHS")
}

/// The `FHS` and `BHS` header segments of a batch, as the answer to it needs them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// `FHS` fields: index `n - 1` holds `FHS-n` for n ≥ 2 (index 0 is empty).
    file: Option<Vec<String>>,
    /// `BHS` fields, the same way.
    batch: Option<Vec<String>>,
    separator: char,
    encoding_characters: String,
}

impl Envelope {
    /// Reads the first `FHS` and the first `BHS` of the bytes (decoded with `charset`, bad bytes
    /// replaced: only names and ids are read from them).
    pub fn read(bytes: &[u8], charset: &'static encoding_rs::Encoding) -> Envelope {
        let text = charset.decode_without_bom_handling(bytes).0;
        let mut env = Envelope {
            separator: '|',
            encoding_characters: "^~\\&".into(),
            ..Envelope::default()
        };
        for line in text.split(['\r', '\n']) {
            let line = line.trim_start_matches('\u{feff}').trim();
            let (is_file, rest) = if let Some(rest) = line.strip_prefix("FHS") {
                (true, rest)
            } else if let Some(rest) = line.strip_prefix("BHS") {
                (false, rest)
            } else {
                continue;
            };
            let Some(sep) = rest.chars().next() else {
                continue;
            };
            if (is_file && env.file.is_some()) || (!is_file && env.batch.is_some()) {
                continue;
            }
            let fields: Vec<String> = rest.split(sep).map(str::to_owned).collect();
            if env.file.is_none() && env.batch.is_none() {
                env.separator = sep;
                if let Some(enc) = fields.get(1).filter(|e| !e.is_empty()) {
                    env.encoding_characters.clone_from(enc);
                }
            }
            if is_file {
                env.file = Some(fields);
            } else {
                env.batch = Some(fields);
            }
        }
        env
    }

    fn field(fields: Option<&Vec<String>>, n: usize) -> &str {
        fields.and_then(|f| f.get(n - 1)).map_or("", String::as_str)
    }

    /// `BHS-11` (or `FHS-11` when there is no `BHS`): the sender's batch control id.
    pub fn batch_control_id(&self) -> &str {
        let b = Self::field(self.batch.as_ref(), 11);
        if b.is_empty() {
            Self::field(self.file.as_ref(), 11)
        } else {
            b
        }
    }

    /// The envelope of the answer: the text before its ACKs and the text after them. `id` is
    /// the answer's own control id, `now` its time stamp, `count` the ACKs it holds and
    /// `comment` goes to `BTS-2` (escaped).
    pub fn answer(&self, id: &str, now: &str, count: usize, comment: &str) -> (String, String) {
        // Unreadable delimiters in the sender's header: answer with the standard ones.
        let (d, encoding_characters) =
            match crate::parse::Delimiters::from_msh(self.separator, &self.encoding_characters) {
                Ok(d) => (d, self.encoding_characters.as_str()),
                Err(_) => (crate::parse::Delimiters::default(), "^~\\&"),
            };
        let sep = d.field;
        // The sender's fields are echoed as they came (already escaped for its delimiters).
        let header = |name: &str, fields: Option<&Vec<String>>| {
            let f = |n| Self::field(fields, n);
            format!(
                "{name}{sep}{enc}{sep}{a}{sep}{b}{sep}{c}{sep}{e}{sep}{now}{sep}{sep}{sep}{sep}{id}{sep}{reference}\r",
                enc = encoding_characters,
                a = f(5),
                b = f(6),
                c = f(3),
                e = f(4),
                reference = f(11),
            )
        };
        let mut head = String::new();
        let mut tail = format!(
            "BTS{sep}{count}{sep}{}\r",
            crate::escape::escape(comment, &d)
        );
        if self.file.is_some() {
            head.push_str(&header("FHS", self.file.as_ref()));
            tail.push_str(&format!("FTS{sep}1\r"));
        }
        head.push_str(&header("BHS", self.batch.as_ref().or(self.file.as_ref())));
        (head, tail)
    }
}

/// Splits a file's bytes into messages.
pub fn split_raw(bytes: &[u8]) -> RawBatch {
    let has_cr = bytes.contains(&b'\r');
    let segments: Vec<&[u8]> = if has_cr {
        bytes
            .split(|b| *b == b'\r')
            .map(|s| s.strip_prefix(b"\n").unwrap_or(s))
            .collect()
    } else {
        bytes.split(|b| *b == b'\n').collect()
    };
    let mut out = RawBatch::default();
    let mut in_batch = 0usize;
    let mut batches = 0usize;
    let mut current: Option<Vec<u8>> = None;
    for seg in segments {
        let seg = seg.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(seg);
        let trimmed = seg.trim_ascii();
        if trimmed.is_empty() {
            continue;
        }
        let name = trimmed.get(..3).unwrap_or(trimmed);
        match name {
            b"FHS" | b"BHS" => {
                out.messages.extend(current.take());
                if name == b"FHS" {
                    batches = 0;
                } else {
                    batches += 1;
                    in_batch = 0;
                }
            }
            b"BTS" | b"FTS" => {
                out.messages.extend(current.take());
                let (label, actual) = if name == b"BTS" {
                    ("BTS-1", in_batch)
                } else {
                    ("FTS-1", batches)
                };
                if let Some(declared) = count_field(trimmed)
                    && declared != actual
                {
                    let shown = if declared == usize::MAX {
                        "an unreadable count".to_owned()
                    } else {
                        declared.to_string()
                    };
                    out.discrepancies.push(format!(
                        "{label} declares {shown} but the {} holds {actual}",
                        if name == b"BTS" { "batch" } else { "file" }
                    ));
                }
            }
            _ => {
                if name == b"MSH" {
                    out.messages.extend(current.take());
                    in_batch += 1;
                }
                let cur = current.get_or_insert_with(Vec::new);
                cur.extend_from_slice(seg.trim_ascii_end());
                cur.push(b'\r');
            }
        }
    }
    out.messages.extend(current);
    out
}

/// One message as an HL7 batch file (the `file` sink's `hl7_batch`): `FHS`, `BHS`, the
/// message, `BTS|1`, `FTS|1`. The envelope takes the message's delimiters and its `MSH-3`…`MSH-6`
/// (sending and receiving application and facility) as they are written, `time` (HL7 `DTM`) as
/// `FHS-7`/`BHS-7` and `control_id` as `FHS-11`/`BHS-11`; the same inputs give the same bytes.
/// Segments end with CR (a body with LF line ends only is converted).
pub fn wrap(body: &[u8], control_id: &str, time: &str) -> Result<Vec<u8>, String> {
    if is_batch(body) {
        return Err("the body is already an HL7 batch (FHS/BHS)".into());
    }
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut message: Vec<u8> = if body.contains(&b'\r') {
        body.to_vec()
    } else {
        body.iter()
            .map(|b| if *b == b'\n' { b'\r' } else { *b })
            .collect()
    };
    while matches!(message.last(), Some(b'\r' | b'\n')) {
        message.pop();
    }
    message.push(b'\r');
    let start = message
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(0);
    let msh = message[start..]
        .split(|b| *b == b'\r')
        .next()
        .unwrap_or_default();
    if !msh.starts_with(b"MSH") || msh.len() < 8 {
        return Err("the body is not an HL7 v2 message (it does not start with MSH)".into());
    }
    let sep = msh[3];
    let fields: Vec<&[u8]> = msh.split(|b| *b == sep).collect();
    let f = |i: usize| fields.get(i).copied().unwrap_or_default();
    let s = [sep];
    let header = |name: &[u8]| {
        let mut h = name.to_vec();
        for part in [f(1), f(2), f(3), f(4), f(5), time.as_bytes()] {
            h.extend_from_slice(&s);
            h.extend_from_slice(part);
        }
        h.extend_from_slice(&[sep, sep, sep, sep]);
        h.extend_from_slice(control_id.as_bytes());
        h.push(b'\r');
        h
    };
    let mut out = header(b"FHS");
    out.extend(header(b"BHS"));
    out.extend_from_slice(&message[start..]);
    for trailer in [b"BTS", b"FTS"] {
        out.extend_from_slice(trailer);
        out.extend_from_slice(&[sep, b'1', b'\r']);
    }
    Ok(out)
}

fn split_for_file(bytes: &[u8]) -> SplitOutput {
    let b = split_raw(bytes);
    SplitOutput {
        parts: b
            .messages
            .into_iter()
            .map(|m| (m, BTreeMap::new()))
            .collect(),
        warnings: b.discrepancies,
    }
}

inventory::submit! {
    Splitter { name: "hl7", split: split_for_file }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_message_wrapped_as_a_batch_file_reads_back() {
        let msg = b"MSH|^~\\&|LIS|COUNTY|HIS|PROV|20251206||ORU^R01|42|P|2.5\nPID|1||P1\n";
        let file = wrap(msg, "m-1", "20251206083000").unwrap();
        let text = String::from_utf8(file.clone()).unwrap();
        assert_eq!(
            text,
            "FHS|^~\\&|LIS|COUNTY|HIS|PROV|20251206083000||||m-1\r\
             BHS|^~\\&|LIS|COUNTY|HIS|PROV|20251206083000||||m-1\r\
             MSH|^~\\&|LIS|COUNTY|HIS|PROV|20251206||ORU^R01|42|P|2.5\rPID|1||P1\r\
             BTS|1\rFTS|1\r"
        );
        let back = split_raw(&file);
        assert!(back.discrepancies.is_empty(), "{:?}", back.discrepancies);
        assert_eq!(back.messages.len(), 1);
        assert_eq!(wrap(msg, "m-1", "20251206083000").unwrap(), file);
        assert!(wrap(&file, "m-1", "x").is_err());
        assert!(wrap(b"{\"json\":1}", "m-1", "x").is_err());
    }

    #[test]
    fn any_line_end_and_envelopes() {
        let lf = b"MSH|^~\\&|A\nPID|1\nMSH|^~\\&|B\nPID|2\n";
        let crlf = b"MSH|^~\\&|A\r\nPID|1\r\nMSH|^~\\&|B\r\nPID|2\r\n";
        let batch = b"FHS|^~\\&\rBHS|^~\\&\rMSH|^~\\&|A\rPID|1\rMSH|^~\\&|B\rPID|2\rBTS|2\rFTS|1\r";
        for bytes in [&lf[..], &crlf[..], &batch[..]] {
            let b = split_raw(bytes);
            assert_eq!(
                b.messages,
                vec![
                    b"MSH|^~\\&|A\rPID|1\r".to_vec(),
                    b"MSH|^~\\&|B\rPID|2\r".to_vec()
                ]
            );
            assert!(b.discrepancies.is_empty());
        }
        let b = split_raw(b"MSH|^~\\&|A\rNTE|1||line1\nline2\r");
        assert_eq!(
            b.messages,
            vec![b"MSH|^~\\&|A\rNTE|1||line1\nline2\r".to_vec()]
        );
    }

    /// HL7-36 AT: BTS-1 says 10, the batch holds 9: the 9 are kept and the mismatch reported.
    #[test]
    fn wrong_count_keeps_the_messages_and_reports() {
        let mut f = b"BHS|^~\\&|LIS\r".to_vec();
        for i in 0..9 {
            f.extend(
                format!("MSH|^~\\&|LIS|H|HZ|P|2026||ORU^R01|B{i}|P|2.4\rOBX|1|NM|GLU||5.{i}\r")
                    .bytes(),
            );
        }
        f.extend(b"BTS|10\r");
        let b = split_raw(&f);
        assert_eq!(b.messages.len(), 9);
        assert_eq!(
            b.discrepancies,
            vec!["BTS-1 declares 10 but the batch holds 9".to_owned()]
        );
    }

    #[test]
    fn gbk_bytes_are_not_cut() {
        // 丨 in GBK is A87C: its trail byte is '|'. Splitting works on CR/LF only.
        let text = "MSH|^~\\&|HIS|县医院\rPID|1||1||丨^三\r";
        let raw = encoding_rs::GBK.encode(text).0.into_owned();
        let b = split_raw(&raw);
        assert_eq!(b.messages, vec![raw]);
    }
}
