//! Property tests: escape round trips (HL7-31), tokenizer round trips under random delimiters
//! (HL7-30), and no panic on any input.

use encoding_rs::{GB18030, UTF_8};
use huizhen_hl7::Delimiters;
use huizhen_hl7::Message;
use huizhen_hl7::escape::{escape, unescape};
use proptest::prelude::*;

/// Characters a delimiter may be: printable ASCII punctuation and a few symbols seen in
/// non-default MSH-2 values.
const POOL: &[char] = &[
    '!', '"', '#', '$', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', ':', ';', '<', '=',
    '>', '?', '@', '[', '\\', ']', '^', '_', '`', '{', '|', '}', '~', '¦', '§', '¤', '〜', '＼',
    '•',
];

fn delimiters() -> impl Strategy<Value = Delimiters> {
    (
        proptest::sample::subsequence(POOL.to_vec(), 6).prop_shuffle(),
        any::<bool>(),
    )
        .prop_map(|(c, truncation)| Delimiters {
            field: c[0],
            component: c[1],
            repetition: c[2],
            escape: c[3],
            subcomponent: c[4],
            truncation: truncation.then_some(c[5]),
        })
}

/// Text with a high share of characters that matter to HL7.
fn hl7ish() -> impl Strategy<Value = String> {
    let atoms = vec![
        "|",
        "^",
        "~",
        "\\",
        "&",
        "#",
        "\r",
        "\n",
        "\r\n",
        "\"\"",
        "MSH",
        "PID",
        "OBX",
        "-",
        ".",
        "\\F\\",
        "\\X0D\\",
        "\\XE5BCA0\\",
        "\\.br\\",
        "\\H\\",
        "\\E\\",
        "\\P\\",
        "X",
        "br",
        "0",
        "9",
        "A",
        "F",
        " ",
        "张",
        "三",
        "\u{FEFF}",
        "\u{1C}",
        "\u{0B}",
        "𠀀",
    ];
    proptest::collection::vec(proptest::sample::select(atoms), 0..80).prop_map(|v| v.concat())
}

type Tree = Vec<(String, Vec<Vec<Vec<Vec<String>>>>)>;

fn tree() -> impl Strategy<Value = Tree> {
    let name = "[ACDEGHIJKLNOPQRSTUVWXYZ][A-Z0-9]{2}";
    let leaf = prop_oneof![
        any::<String>(),
        hl7ish(),
        Just(String::new()),
        Just("\"\"".to_owned())
    ];
    let subs = proptest::collection::vec(leaf, 1..3);
    let comps = proptest::collection::vec(subs, 1..3);
    let reps = proptest::collection::vec(comps, 1..3);
    let fields = proptest::collection::vec(reps, 0..5);
    proptest::collection::vec((name, fields), 0..5)
}

fn serialise(tree: &Tree, d: &Delimiters) -> String {
    let join = |parts: Vec<String>, sep: char| parts.join(&sep.to_string());
    let mut segments = vec![format!(
        "MSH{f}{enc}{f}APP{f}FAC",
        f = d.field,
        enc = d.encoding_characters()
    )];
    for (name, fields) in tree {
        let mut s = name.clone();
        for field in fields {
            s.push(d.field);
            let reps = field
                .iter()
                .map(|comps| {
                    let comps = comps
                        .iter()
                        .map(|subs| {
                            let subs = subs.iter().map(|t| escape(t, d)).collect();
                            join(subs, d.subcomponent)
                        })
                        .collect();
                    join(comps, d.component)
                })
                .collect();
            s.push_str(&join(reps, d.repetition));
        }
        segments.push(s);
    }
    segments.push("ZZZ".to_owned() + &d.field.to_string() + "end");
    segments.join("\r")
}

fn read_back(m: &Message) -> Tree {
    m.segments()
        .skip(1)
        .take(m.segment_count().saturating_sub(2))
        .map(|seg| {
            let fields = seg
                .fields()
                .map(|f| {
                    f.repetitions()
                        .map(|r| {
                            r.components()
                                .map(|c| c.subcomponents().map(|s| s.text().into_owned()).collect())
                                .collect()
                        })
                        .collect()
                })
                .collect();
            (seg.name().to_owned(), fields)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// HL7-31 AT: decode(encode(s)) == s under random delimiter sets.
    #[test]
    fn escape_round_trips(s in prop_oneof![any::<String>(), hl7ish()], d in delimiters()) {
        let escaped = escape(&s, &d);
        prop_assert!(!escaped.contains('\r') && !escaped.contains('\n'));
        for c in [d.field, d.component, d.repetition, d.subcomponent] {
            prop_assert!(!escaped.contains(c));
        }
        prop_assert_eq!(&unescape(&escaped, &d, UTF_8), &s);
        prop_assert_eq!(&unescape(&escaped, &d, GB18030), &s);
    }

    /// HL7-30: any tree written with any delimiter set reads back identically.
    #[test]
    fn tokenizer_round_trips(t in tree(), d in delimiters()) {
        let text = serialise(&t, &d);
        let m = Message::parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(*m.delimiters(), d);
        prop_assert_eq!(m.segment_count(), t.len() + 2);
        prop_assert_eq!(read_back(&m), t);
    }

    /// No input starting like a message makes the parser or any accessor panic.
    #[test]
    fn parse_never_panics(tail in prop_oneof![any::<String>(), hl7ish()]) {
        let text = format!("MSH|^~\\&|{tail}");
        super::corpus::exercise(text.as_bytes());
        let m = Message::parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(m.segment_count() >= 1);
    }

    /// Arbitrary bytes, and arbitrary text in front of a header, never panic either.
    #[test]
    fn arbitrary_input_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        text in hl7ish(),
    ) {
        super::corpus::exercise(&bytes);
        super::corpus::exercise(text.as_bytes());
        let mut framed = b"MSH|^~\\&|||||||ADT^A01|1|P|2.5||||||GBK\r".to_vec();
        framed.extend_from_slice(&bytes);
        super::corpus::exercise(&framed);
    }
}
