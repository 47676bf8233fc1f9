//! The body of the `parse` fuzz target, shared with the corpus replay test
//! (`tests/hl7/corpus.rs`) so CI runs every seed and every crash reproducer through exactly
//! what the fuzzer runs: decode (GB18030 default, replacement on) → parse → header, paths,
//! the whole value tree, escape round trips, and the batch splitter. Any panic is a bug.

use huizhen_hl7::charset::{OnInvalid, decode};
use huizhen_hl7::escape::{escape, unescape};
use huizhen_hl7::parse::{Batch, Message};

/// Paths read from every input: header fields, repeating and nested values, a wildcard.
const PATHS: &[&str] = &[
    "MSH-1",
    "MSH-2",
    "MSH-9.2",
    "MSH-18",
    "PID-3[2].1",
    "PID-3[*].4.2",
    "PID-5.1.1",
    "PID-13",
    "OBX[3]-5",
    "OBX[*]-5",
    "ZDS-1",
];

/// Runs one input; panics only on a bug.
pub fn exercise(data: &[u8]) {
    let Ok(decoded) = decode(data, encoding_rs::GB18030, OnInvalid::Replace) else {
        return;
    };
    let Ok(msg) = Message::from_decoded(decoded) else {
        return;
    };
    let _ = msg.header();
    for path in PATHS {
        let _ = msg.get_str(path);
        let _ = msg.is_null(path);
        if let Ok(p) = path.parse() {
            let _ = msg.get_all(&p);
        }
    }
    let d = *msg.delimiters();
    for segment in msg.segments() {
        let _ = segment.name();
        for field in segment.fields() {
            for rep in field.repetitions() {
                for comp in rep.components() {
                    for sub in comp.subcomponents() {
                        let text = sub.text();
                        let again = unescape(&escape(&text, &d), &d, msg.charset());
                        assert_eq!(again, text, "escape round trip");
                    }
                }
            }
        }
    }
    let reparsed = Message::parse(msg.text()).map(|m| m.segment_count());
    assert_eq!(
        reparsed.ok(),
        Some(msg.segment_count()),
        "normalised text reparses"
    );
    let _ = Batch::parse(msg.text());
}
