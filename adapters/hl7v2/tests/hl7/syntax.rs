//! HL7-30…36: delimiters, escapes in context, null vs empty, terminators, tolerant structure,
//! version, batches; and the header the MLLP listener reads.

use huizhen_hl7::escape::escape;
use huizhen_hl7::parse::{Batch, CountMismatch, DelimiterError};
use huizhen_hl7::{Delimiters, Level, Message, ParseError, ParseErrorKind, Value};

use crate::{adt_a01, cr, get, parse};

/// Rewrites a message with other delimiters, leaf by leaf (decode, then escape again).
fn redelimit(msg: &Message, to: &Delimiters) -> String {
    let mut segments = Vec::new();
    for seg in msg.segments() {
        let mut s = String::from(seg.name());
        let header = seg.name() == "MSH";
        let first = if header {
            s.push(to.field);
            s.push_str(&to.encoding_characters());
            3
        } else {
            1
        };
        for n in first..=seg.field_count() {
            s.push(to.field);
            let Some(field) = seg.field(n) else { continue };
            let reps: Vec<String> = field
                .repetitions()
                .map(|r| {
                    r.components()
                        .map(|c| {
                            c.subcomponents()
                                .map(|sc| escape(&sc.text(), to))
                                .collect::<Vec<_>>()
                                .join(&to.subcomponent.to_string())
                        })
                        .collect::<Vec<_>>()
                        .join(&to.component.to_string())
                })
                .collect();
            s.push_str(&reps.join(&to.repetition.to_string()));
        }
        segments.push(s);
    }
    segments.join("\r")
}

/// Every addressable leaf path of a message with its decoded text and null flag, except
/// MSH-1 and MSH-2 (which hold the delimiters themselves).
fn tree(msg: &Message) -> Vec<(String, Option<String>, bool)> {
    let mut out = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for seg in msg.segments() {
        let name = seg.name().to_owned();
        seen.push(name.clone());
        let occ = seen.iter().filter(|n| **n == name).count();
        for n in 1..=seg.field_count() {
            if name == "MSH" && n <= 2 {
                continue;
            }
            let Some(field) = seg.field(n) else { continue };
            for (r, rep) in field.repetitions().enumerate() {
                for (c, comp) in rep.components().enumerate() {
                    for (s, _) in comp.subcomponents().enumerate() {
                        let path = format!("{name}[{occ}]-{n}[{}].{}.{}", r + 1, c + 1, s + 1);
                        let value = get(msg, &path);
                        let null = msg.is_null(&path).unwrap_or(false);
                        out.push((path, value, null));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn hl7_30_other_delimiters_give_the_same_tree() {
    let original = parse(&adt_a01("UNICODE UTF-8"));
    let reference = tree(&original);
    assert!(
        reference.len() > 150,
        "the fixture is rich: {} paths",
        reference.len()
    );
    let sets = [
        ('|', "!@#$%"),
        ('|', "!@#$"),
        ('#', "^~\\&"),
        ('*', "@!%$"),
        ('¦', "§〜＼＆"),
    ];
    for (field, enc) in sets {
        let d = Delimiters::from_msh(field, enc).unwrap();
        let text = redelimit(&original, &d);
        assert!(text.starts_with(&format!("MSH{field}{enc}{field}HIS{field}")));
        let other = parse(&text);
        assert_eq!(*other.delimiters(), d);
        assert_eq!(tree(&other), reference, "delimiters {field}{enc}");
        assert_eq!(get(&other, "MSH-1").unwrap(), field.to_string());
        assert_eq!(get(&other, "MSH-2").unwrap(), enc);
        assert_eq!(other.header().control_id, "HIS20240315000123");
    }
    // The literal acceptance example, written by hand.
    let bang = cr(&[
        "MSH|!@#$%|HIS|JDXRMYY|||20240315083012||ADT!A01!ADT_A01|42|P|2.7",
        "PID|1||H001!!!JDXRMYY!MR@330781199001011234!!!CHN!NNCHN||张三!!!!!!L||||||路#S#88号$东区",
    ]);
    let m = parse(&bang);
    assert_eq!(m.delimiters().truncation, Some('%'));
    assert_eq!(get(&m, "MSH-9.2").unwrap(), "A01");
    assert_eq!(get(&m, "PID-3[2].1").unwrap(), "330781199001011234");
    assert_eq!(get(&m, "PID-3[2].5").unwrap(), "NNCHN");
    assert_eq!(get(&m, "PID-5.1").unwrap(), "张三");
    assert_eq!(get(&m, "PID-11.1.1").unwrap(), "路!88号");
    assert_eq!(get(&m, "PID-11.1.2").unwrap(), "东区");
}

#[test]
fn hl7_30_msh_numbering() {
    let m = parse(&adt_a01("UNICODE UTF-8"));
    assert_eq!(get(&m, "MSH-1").unwrap(), "|");
    assert_eq!(get(&m, "MSH-2").unwrap(), "^~\\&");
    assert_eq!(get(&m, "MSH-2.1").unwrap(), "^~\\&", "MSH-2 is opaque");
    assert_eq!(get(&m, "MSH-2.2"), None);
    assert_eq!(get(&m, "MSH-3").unwrap(), "HIS");
    assert_eq!(get(&m, "MSH-9").unwrap(), "ADT^A01^ADT_A01");
    assert_eq!(get(&m, "MSH-9.3").unwrap(), "ADT_A01");
    assert_eq!(get(&m, "MSH-10").unwrap(), "HIS20240315000123");
    assert_eq!(get(&m, "MSH-17").unwrap(), "CHN");
    assert_eq!(get(&m, "MSH-18").unwrap(), "UNICODE UTF-8");
    assert_eq!(get(&m, "MSH-19"), None);
    let msh = m.segment("MSH", 1).unwrap();
    assert_eq!(msh.field_count(), 18);
    assert_eq!(msh.field(1).unwrap().level(), Level::Field);
    assert!(msh.field(0).is_none());
}

#[test]
fn hl7_30_unusable_delimiters_are_errors_with_a_place() {
    let err = |text: &str| Message::parse(text).unwrap_err();
    assert_eq!(
        err(""),
        ParseError {
            segment: 1,
            offset: 0,
            kind: ParseErrorKind::Empty
        }
    );
    assert_eq!(err("\r\n \n").kind, ParseErrorKind::Empty);
    let e = err("\u{FEFF}\r\nPID|1||123\rMSH|^~\\&");
    assert_eq!(
        e.kind,
        ParseErrorKind::NotMsh {
            found: "PID".into()
        }
    );
    assert_eq!((e.segment, e.offset), (1, 3));
    assert_eq!(
        e.to_string(),
        "segment 1, character 3: the first segment is \"PID\", expected MSH"
    );
    assert_eq!(err("MSH").kind, ParseErrorKind::MshTooShort);
    assert_eq!(err("MSH|").kind, ParseErrorKind::MshTooShort);
    assert_eq!(err("MSH||HIS").kind, ParseErrorKind::MshTooShort);
    assert_eq!(
        err("MSH|^~\\|HIS").kind,
        ParseErrorKind::Delimiters(DelimiterError::Length(3))
    );
    assert_eq!(
        err("MSH|^~\\&#!|HIS").kind,
        ParseErrorKind::Delimiters(DelimiterError::Length(6))
    );
    assert_eq!(
        err("MSH|^~^&|HIS").kind,
        ParseErrorKind::Delimiters(DelimiterError::Duplicate('^'))
    );
    assert_eq!(
        err("MSH|^~\\||HIS").kind,
        ParseErrorKind::Delimiters(DelimiterError::Length(3)),
        "MSH-2 ends at the field separator"
    );
    assert_eq!(
        err("MSHA^~\\&A").kind,
        ParseErrorKind::Delimiters(DelimiterError::NotAllowed('A'))
    );
    assert_eq!(
        err("MSH ^~\\&").kind,
        ParseErrorKind::Delimiters(DelimiterError::NotAllowed(' '))
    );
    // The smallest usable message.
    let m = parse("MSH|^~\\&");
    assert_eq!(m.segment_count(), 1);
    assert_eq!(get(&m, "MSH-3"), None);
}

#[test]
fn hl7_31_escapes_in_messages() {
    let m = parse(&adt_a01("UNICODE UTF-8"));
    assert_eq!(get(&m, "OBX[1]-5").unwrap(), "胸闷、胸痛 3 天\n加重 2 小时");
    assert_eq!(
        get(&m, "OBX[3]-5").unwrap(),
        "血压 150^95；药物过敏：青霉素&头孢",
        "escaped delimiters are data, not structure"
    );
    assert_eq!(get(&m, "OBX[3]-5.2"), None);
    let raw = m.get(&"OBX[3]-5".parse().unwrap()).unwrap();
    assert_eq!(raw.raw(), "血压 150\\S\\95；药物过敏：青霉素\\T\\头孢");

    let m = parse(&cr(&[
        "MSH|^~\\&|LIS|JDXRMYY|||20240315||ORU^R01|7|P|2.5",
        "OBX|1|TX|NOTE||第一行\\X0D\\第二行|||||F",
        "NTE|1||a\\b",
        "NTE|2||\\H\\危急值\\N\\ \\Zlocal\\ \\C2842\\",
        "NTE|3||路径 C:\\temp\\",
        "NTE|4||\\XD5C5\\",
    ]));
    assert_eq!(get(&m, "OBX-5").unwrap(), "第一行\r第二行");
    assert_eq!(
        get(&m, "NTE-3").unwrap(),
        "a\\b",
        "a lone backslash survives"
    );
    assert_eq!(
        get(&m, "NTE[2]-3").unwrap(),
        "\\H\\危急值\\N\\ \\Zlocal\\ \\C2842\\",
        "highlighting, local and charset escapes are preserved verbatim"
    );
    assert_eq!(get(&m, "NTE[3]-3").unwrap(), "路径 C:\\temp\\");
    assert_eq!(
        get(&m, "NTE[4]-3").unwrap(),
        "\\XD5C5\\",
        "bytes invalid in UTF-8 stay verbatim"
    );
    let mut m = m;
    m.set_charset(encoding_rs::GB18030);
    assert_eq!(
        get(&m, "NTE[4]-3").unwrap(),
        "张",
        "\\X..\\ uses the message charset"
    );
}

#[test]
fn hl7_32_null_is_not_empty() {
    let a08 = |pid13: &str| {
        cr(&[
            "MSH|^~\\&|HIS|JDXRMYY|HUIZHEN|PROVINCE-RC|20240317090000||ADT^A08^ADT_A01|HIS20240317000009|P|2.5",
            "EVN|A08|20240317090000",
            &format!("PID|1||H00012345^^^JDXRMYY^MR||张三^^^^^^L||19900101|M|||||{pid13}|||M"),
            "PV1|1|I",
        ])
    };
    let cleared = parse(&a08("\"\""));
    assert!(cleared.is_null("PID-13").unwrap());
    assert_eq!(get(&cleared, "PID-13").unwrap(), "");
    let v = cleared.get(&"PID-13".parse().unwrap()).unwrap();
    assert!(matches!(v, Value::Null));
    assert_eq!(v.raw(), "\"\"");
    assert!(
        cleared.is_null("PID-13.1").unwrap(),
        "a null field is a null first component"
    );
    assert_eq!(get(&cleared, "PID-13.2"), None);

    let unchanged = parse(&a08(""));
    assert!(!unchanged.is_null("PID-13").unwrap());
    assert_eq!(get(&unchanged, "PID-13").unwrap(), "");
    assert!(matches!(
        unchanged.get(&"PID-13".parse().unwrap()),
        Some(Value::Empty)
    ));

    let phone = parse(&a08("^PRN^CP^^86^^13800138000"));
    assert_eq!(get(&phone, "PID-13.7").unwrap(), "13800138000");
    assert!(!phone.is_null("PID-13").unwrap());

    // Not sent at all: the segment ends before the field.
    assert_eq!(get(&phone, "PID-40"), None);
    assert!(!phone.is_null("PID-40").unwrap());
    assert_eq!(get(&phone, "PV1-3"), None);
    assert_eq!(get(&phone, "PV1-2").unwrap(), "I");
    // A component-level null.
    let comp = parse(&a08("\"\"^PRN"));
    assert!(comp.is_null("PID-13.1").unwrap());
    assert!(!comp.is_null("PID-13").unwrap());
}

#[test]
fn hl7_33_all_lf_message_parses() {
    let lf = adt_a01("UNICODE UTF-8").replace('\r', "\n");
    let m = parse(&lf);
    assert_eq!(m.segment_count(), 10);
    assert_eq!(get(&m, "PID-5.1").unwrap(), "张三");
    assert_eq!(get(&m, "ZDS-1.2").unwrap(), "HIS");
    assert!(!m.text().contains('\n'), "terminators are normalised to CR");
}

#[test]
fn hl7_33_lf_inside_a_cr_message_is_data() {
    let text = cr(&[
        "MSH|^~\\&|LIS|JDXRMYY|||20240315||ORU^R01|8|P|2.5",
        "OBX|1|TX|NOTE||结论：\n1. 窦性心律\n2. 未见明显异常|||||F",
        "NTE|1||第一行\n第二行|L",
        "NTE|2||末尾",
    ]);
    let text = text + "\r";
    let m = parse(&text);
    assert_eq!(m.segment_count(), 4);
    assert_eq!(get(&m, "NTE-3").unwrap(), "第一行\n第二行");
    assert_eq!(get(&m, "NTE-4").unwrap(), "L");
    assert_eq!(
        get(&m, "OBX-5").unwrap(),
        "结论：\n1. 窦性心律\n2. 未见明显异常"
    );
    assert_eq!(m.text(), text, "already normal: kept as is");
}

#[test]
fn hl7_33_trailing_terminators_make_no_empty_segment() {
    let base = adt_a01("UNICODE UTF-8");
    for tail in ["\r", "\r\n", "\n", "\r\n\r\n", "\r\n  \t", "\r\u{1C}\r"] {
        let m = parse(&format!("{base}{tail}"));
        assert_eq!(m.segment_count(), 10, "tail {tail:?}");
        assert_eq!(m.segments().last().unwrap().name(), "ZDS");
        assert_eq!(m.text(), format!("{base}\r"));
    }
    // CRLF everywhere, a blank line, and a BOM in front.
    let crlf = format!("\u{FEFF}{}\r\n", base.replace('\r', "\r\n\r\n"));
    let m = parse(&crlf);
    assert_eq!(m.segment_count(), 10);
    assert_eq!(m.text(), format!("{base}\r"));
    assert_eq!(get(&m, "PID-5.1").unwrap(), "张三");
    // A stray LF before the CR of a segment is a broken line ending, not data.
    let m = parse("MSH|^~\\&|A\n\rPID|1|\n\r");
    assert_eq!(get(&m, "MSH-3").unwrap(), "A");
    assert_eq!(get(&m, "PID-2").unwrap(), "");
}

#[test]
fn hl7_34_orm_with_evn_and_zds_keeps_everything() {
    let m = parse(&cr(&[
        "MSH|^~\\&|HIS|JDXRMYY|RIS|JDXRMYY|20240316101500||ORM^O01|HIS20240316000456|P|2.3|||AL|NE|CHN|UNICODE UTF-8",
        "EVN|O01|20240316101500",
        "PID|1||H00023456^^^JDXRMYY^MR||王五^^^^^^L||19751212|M",
        "PV1|1|O|FSK^^^JDXRMYY||||1102^赵^敏",
        "ORC|NW|ORD20240316001|||SC||||20240316101400|||1102^赵^敏",
        "OBR|1|ORD20240316001||CT-HEAD^头颅CT平扫^L|||20240316101400|||||||||||||||||CT|||^^^^^R",
        "ZDS|1.2.156.112604.1.2.1.20240316.1^HIS^Application^DICOM",
        "NTE|1||请远程会诊专家阅片|L|extra|beyond|spec",
        "ZXY|自定义|段",
    ]));
    let names: Vec<&str> = m.segments().map(|s| s.name()).collect();
    assert_eq!(
        names,
        [
            "MSH", "EVN", "PID", "PV1", "ORC", "OBR", "ZDS", "NTE", "ZXY"
        ]
    );
    assert_eq!(get(&m, "PID-5.1").unwrap(), "王五");
    assert_eq!(get(&m, "PID-3.1").unwrap(), "H00023456");
    assert_eq!(get(&m, "PV1-2").unwrap(), "O");
    assert_eq!(get(&m, "PV1-7.2").unwrap(), "赵");
    assert_eq!(get(&m, "ORC-1").unwrap(), "NW");
    assert_eq!(get(&m, "ORC-2").unwrap(), "ORD20240316001");
    assert_eq!(get(&m, "OBR-4.2").unwrap(), "头颅CT平扫");
    assert_eq!(get(&m, "OBR-24").unwrap(), "CT");
    assert_eq!(get(&m, "OBR-27.6").unwrap(), "R");
    let zds = m.segment("ZDS", 1).unwrap();
    assert_eq!(zds.index(), 6);
    assert_eq!(
        zds.field(1).unwrap().component(1).unwrap().text(),
        "1.2.156.112604.1.2.1.20240316.1"
    );
    assert_eq!(get(&m, "ZDS-1.4").unwrap(), "DICOM");
    assert_eq!(
        get(&m, "NTE-7").unwrap(),
        "spec",
        "fields beyond the spec are kept"
    );
    assert_eq!(m.segment("NTE", 1).unwrap().field_count(), 7);
    assert_eq!(get(&m, "ZXY-2").unwrap(), "段");
    assert_eq!(m.field("EVN", 2).unwrap().text(), "20240316101500");
    let h = m.header();
    assert_eq!(
        (h.message_type.as_str(), h.trigger.as_str()),
        ("ORM", "O01")
    );
    assert_eq!(h.structure, "");
}

#[test]
fn hl7_35_version_as_sent() {
    let mdm = parse(&cr(&[
        "MSH|^~\\&|EMR|JDXRMYY|HUIZHEN||20240318||MDM^T02|9|P|2.2",
        "EVN|T02|20240318",
        "TXA|1|CN|TX",
    ]));
    assert_eq!(mdm.header().version, "2.2");
    let missing = parse("MSH|^~\\&|EMR|JDXRMYY|HUIZHEN||20240318||MDM^T02|9|P");
    assert_eq!(missing.header().version, "");
    let vid = parse("MSH|^~\\&|||||20240318||ADT^A01|9|P|2.5.1^CHN^HL7CN");
    assert_eq!(vid.header().version, "2.5.1");
}

#[test]
fn header_for_the_ack_and_the_dedup_key() {
    let text = adt_a01("UNICODE UTF-8").replacen(
        "HIS|JDXRMYY|",
        "HIS^1.2.156.1^ISO|兰溪市人民医院^330781^L\\S\\X|",
        1,
    );
    let m = parse(&text);
    let h = m.header();
    assert_eq!(h.sending_application, "HIS^1.2.156.1^ISO");
    assert_eq!(
        h.sending_facility, "兰溪市人民医院^330781^L\\S\\X",
        "as sent"
    );
    assert_eq!(get(&m, "MSH-4.3").unwrap(), "L^X");
    assert_eq!(h.receiving_application, "HUIZHEN");
    assert_eq!(h.receiving_facility, "PROVINCE-RC");
    assert_eq!(h.datetime, "20240315083012");
    assert_eq!(h.message_type, "ADT");
    assert_eq!(h.trigger, "A01");
    assert_eq!(h.structure, "ADT_A01");
    assert_eq!(h.control_id, "HIS20240315000123");
    assert_eq!(h.processing_id, "P");
    assert_eq!(h.version, "2.5");
    assert_eq!(h.accept_ack, "AL");
    assert_eq!(h.app_ack, "NE");
    assert_eq!(h.charset, "UNICODE UTF-8");
    assert_eq!(h.delimiters, Delimiters::default());

    let bare = parse("MSH|^~\\&");
    assert_eq!(bare.header().control_id, "");
    assert_eq!(bare.header().charset, "");
    let repeated = parse("MSH|^~\\&|||||||ADT^A01|1|P|2.5||||||GB18030~UNICODE UTF-8");
    assert_eq!(repeated.header().charset, "GB18030");
    assert_eq!(repeated.charset(), encoding_rs::GB18030);
}

#[test]
fn segments_and_elements() {
    let m = parse(&adt_a01("UNICODE UTF-8"));
    assert_eq!(m.segment_count(), 10);
    assert_eq!(m.segments().len(), 10);
    assert_eq!(m.segments_named("OBX").count(), 3);
    let obx2 = m.segment("OBX", 2).unwrap();
    assert_eq!(obx2.index(), 7);
    assert!(obx2.raw().starts_with("OBX|2|NM|"));
    assert!(m.segment("OBX", 4).is_none());
    assert!(m.segment("OBX", 0).is_none());
    let pid3 = m.field("PID", 3).unwrap();
    let ids: Vec<String> = pid3
        .repetitions()
        .map(|r| r.component(1).unwrap().text().into_owned())
        .collect();
    assert_eq!(ids, ["H00012345", "330781199001011234"]);
    let all = m.get_all(&"PID-3[*].5".parse().unwrap());
    let types: Vec<_> = all.iter().map(|v| v.text().into_owned()).collect();
    assert_eq!(types, ["MR", "NNCHN"]);
    let obx_values = m.get_all(&"OBX[*]-2".parse().unwrap());
    assert_eq!(obx_values.len(), 3);
    assert_eq!(get(&m, "OBX[*]-5").unwrap(), "胸闷、胸痛 3 天\n加重 2 小时");
    assert_eq!(get(&m, "PID-5[2].2").unwrap(), "SAN");
    assert_eq!(get(&m, "PID-5[3]"), None);
    assert_eq!(get(&m, "PID-5.1.1").unwrap(), "张三");
    assert_eq!(get(&m, "PID-5.1.2"), None);
    assert_eq!(get(&m, "PID-5").unwrap(), "张三^^^^^^L");
    assert_eq!(get(&m, "NK1-3.2").unwrap(), "配偶");
    assert!(m.get_str("pid-5").is_err());
    let debug = format!("{m:?} {:?} {:?}", m.segment("PID", 1).unwrap(), pid3);
    assert!(
        !debug.contains("张三") && !debug.contains("H00012345"),
        "{debug}"
    );
}

#[test]
fn hl7_36_batch_counts() {
    let msg = |n: usize| {
        cr(&[
            &format!("MSH|^~\\&|LIS|JDXRMYY|||20240315||ORU^R01|LIS{n:04}|P|2.5"),
            &format!("PID|1||P{n}||病人{n}"),
            "OBX|1|NM|GLU^血糖||5.6|mmol/L",
        ])
    };
    let mut parts = vec![
        "FHS|^~\\&|LIS|JDXRMYY".to_owned(),
        "BHS|^~\\&|LIS|JDXRMYY".to_owned(),
    ];
    parts.extend((1..=9).map(msg));
    parts.push("BTS|10".to_owned());
    parts.push("FTS|1".to_owned());
    let text = parts.join("\r\n") + "\r\n";
    let batch = Batch::parse(&text);
    assert_eq!(batch.messages.len(), 9);
    for (i, m) in batch.messages.iter().enumerate() {
        let m = m.as_ref().unwrap();
        assert_eq!(m.header().control_id, format!("LIS{:04}", i + 1));
        assert_eq!(m.segment_count(), 3);
        assert_eq!(get(m, "PID-5").unwrap(), format!("病人{}", i + 1));
    }
    assert_eq!(
        batch.discrepancies,
        [CountMismatch {
            trailer: "BTS",
            segment: 30,
            declared: "10".into(),
            actual: 9
        }]
    );
    // Matching counts, and an unparsable message that does not hide its siblings.
    let text = cr(&["BHS|^~\\&", &msg(1), "PID|orphan", &msg(2), "BTS|2"]);
    let batch = Batch::parse(&text);
    assert_eq!(batch.messages.len(), 2, "PID|orphan joins message 1");
    assert!(batch.discrepancies.is_empty());
    let text = cr(&["BHS|^~\\&", "NTE|junk", &msg(1), "BTS|1"]);
    let batch = Batch::parse(&text);
    assert_eq!(batch.messages.len(), 2);
    assert!(batch.messages[0].is_err());
    assert!(batch.messages[1].is_ok());
    assert!(
        batch.discrepancies.is_empty(),
        "only MSH-started messages count"
    );
}
