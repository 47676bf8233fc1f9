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
