//! `hl7_build`: golden `ORU^R01` / `MDM^T02` messages re-read by our parser, by our own `ORU`
//! mapping and by `hl7-parser`; escaping round trips with awkward text (delimiters, Chinese,
//! line breaks, text that looks like escapes); the errors, which name the JSON path; the step's
//! headers, control id and message time.

use huizhen_core::work::Work;
use huizhen_hl7::Message;
use huizhen_hl7::build::{
    BuildOptions, OutboundKind, OutboundOpinion, TextType, build, control_id,
};
use huizhen_hl7::mapping::{Mapped, ObservationValue, map};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::{get, golden, journaled, parse, run_step};

const NI: &str = "450821198503120035";
const MESSAGE_ID: &str = "0190a3c4-0000-7000-8000-000000000001";

/// The expert's signed opinion on 张三丰's chest pain.
pub fn opinion() -> Value {
    json!({
        "consultation_id": "HZ-2026-000123",
        "placer_order_number": { "id": "HZSQ-20260115-0007", "namespace": "HIS" },
        "patient": {
            "identifiers": [
                { "id": "0001234567", "assigning_authority": "HXXRMYY", "type_code": "MR" },
                { "id": NI, "assigning_authority": "CHN", "type": "NI" }
            ],
            "name": { "family": "张", "given": "三丰" }
        },
        "expert": { "id": "E1001", "name": "李四" },
        "local_doctor": { "id": "D0456", "name": "王建国" },
        "diagnoses": [
            { "code": "I20.000", "text": "不稳定型心绞痛" },
            { "code": "I10.x00", "text": "高血压 2级（很高危）" }
        ],
        "treatment_plan": "1. 阿司匹林 100mg qd\n2. 阿托伐他汀 20mg qn\n3. 复查心电图、肌钙蛋白 q6h（血压 150/95 | 心率 88）",
        "advice": "建议转上级医院行冠脉造影；胸痛持续 >20 分钟立即启动胸痛中心流程。",
        "signed_at": "2026-01-15T10:30:00+08:00",
        "signer": { "id": "E1001", "name": "李四" },
        "signature_ref": "sig-7f3a2c"
    })
}

pub fn step_config(extra: Value) -> Value {
    let mut c = json!({
        "sending_application": "HUIZHEN",
        "sending_facility": "GXYCHZ",
        "receiving_application": "HIS",
        "receiving_facility": "HXXRMYY"
    });
    if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            c.insert(k.clone(), v.clone());
        }
    }
    json!({ "hl7_build": c })
}

/// Runs `hl7_build` with `extra` config on `body`; the built text, or the step's error.
pub fn built(body: &Value, extra: Value) -> Result<(String, Work), String> {
    let mut work = Work::from_message(&journaled(serde_json::to_vec(body).unwrap(), "json", &[]));
    run_step(step_config(extra), &mut work)?;
    let text = String::from_utf8(work.body().to_vec()).unwrap();
    Ok((text, work))
}

fn options(kind: OutboundKind, text: TextType) -> BuildOptions {
    BuildOptions {
        kind,
        sending_application: "HUIZHEN".into(),
        sending_facility: "GXYCHZ".into(),
        receiving_application: "HIS".into(),
        receiving_facility: "HXXRMYY".into(),
        processing_id: "P".into(),
        text,
        document_type: "CN".into(),
    }
}

fn typed(v: &Value) -> OutboundOpinion {
    serde_json::from_value(v.clone()).unwrap()
}

/// The golden file form: one segment per line.
fn as_lines(text: &str) -> String {
    assert!(!text.contains('\n'), "no LF inside a built message");
    text.replace('\r', "\n")
}

fn hl7_parser_reads(text: &str) -> hl7_parser::Message<'_> {
    hl7_parser::Message::parse(text).unwrap_or_else(|e| panic!("hl7-parser refuses it: {e}"))
}

fn their(theirs: &hl7_parser::Message<'_>, q: &str) -> String {
    theirs
        .query(q)
        .map(|r| r.raw_value().to_owned())
        .unwrap_or_default()
}

/// The OBX segments whose OBX-3.1 is `code`, as (OBX-2, decoded OBX-5 repetitions).
fn obx_with(msg: &Message, code: &str) -> Vec<(String, Vec<String>)> {
    msg.segments_named("OBX")
        .filter(|s| {
            s.field(3)
                .and_then(|f| f.component(1))
                .map(|c| c.text().into_owned())
                == Some(code.to_owned())
        })
        .map(|s| {
            let kind = s
                .field(2)
                .map(|f| f.text().into_owned())
                .unwrap_or_default();
            let values = s
                .field(5)
                .map(|f| {
                    f.repetitions()
                        .map(|r| r.value().text().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            (kind, values)
        })
        .collect()
}

#[test]
fn golden_oru_r01_read_by_both_parsers_and_our_oru_mapping() {
    let (text, work) = built(&opinion(), json!({})).unwrap();
    golden("outbound_oru_r01.hl7", &as_lines(&text)).unwrap();
    assert_eq!(work.kind, "hl7v2");

    let m = parse(&text);
    let control = control_id(MESSAGE_ID, 1);
    for (path, want) in [
        ("MSH-3", "HUIZHEN"),
        ("MSH-4", "GXYCHZ"),
        ("MSH-5", "HIS"),
        ("MSH-6", "HXXRMYY"),
        ("MSH-7", "20260115103000+0800"),
        ("MSH-9", "ORU^R01^ORU_R01"),
        ("MSH-10", control.as_str()),
        ("MSH-11", "P"),
        ("MSH-12", "2.5.1"),
        ("MSH-18", "UNICODE UTF-8"),
        ("PID-3[1].1", "0001234567"),
        ("PID-3[1].4", "HXXRMYY"),
        ("PID-3[1].5", "MR"),
        ("PID-3[2].1", NI),
        ("PID-3[2].5", "NI"),
        ("PID-5.1", "张"),
        ("PID-5.2", "三丰"),
        ("ORC-1", "RE"),
        ("ORC-2.1", "HZSQ-20260115-0007"),
        ("ORC-2.2", "HIS"),
        ("ORC-3.1", "HZ-2026-000123"),
        ("ORC-3.2", "HUIZHEN"),
        ("ORC-5", "CM"),
        ("ORC-12.2", "王建国"),
        ("OBR-2.1", "HZSQ-20260115-0007"),
        ("OBR-3.1", "HZ-2026-000123"),
        ("OBR-4.1", "11488-4"),
        ("OBR-16.1", "D0456"),
        ("OBR-20", "HZ-2026-000123"),
        ("OBR-25", "F"),
        ("OBR-32.1.1", "E1001"),
        ("OBR-32.1.2", "李四"),
        ("OBX[1]-2", "CWE"),
        ("OBX[1]-3.1", "29308-4"),
        ("OBX[1]-4", "1"),
        ("OBX[1]-5.1", "I20.000"),
        ("OBX[1]-5.2", "不稳定型心绞痛"),
        ("OBX[1]-5.3", "I10"),
        ("OBX[1]-11", "F"),
        ("OBX[1]-14", "20260115103000+0800"),
        ("OBX[1]-16.2", "李四"),
        ("OBX[2]-5.2", "高血压 2级（很高危）"),
        ("OBX[3]-2", "TX"),
        ("OBX[3]-3.1", "18776-5"),
        (
            "OBX[3]-5[3]",
            "3. 复查心电图、肌钙蛋白 q6h（血压 150/95 | 心率 88）",
        ),
        ("OBX[4]-3.1", "HZ-ADVICE"),
        ("OBX[5]-2", "ST"),
        ("OBX[5]-3.1", "HZ-SIGREF"),
        ("OBX[5]-5", "sig-7f3a2c"),
    ] {
        assert_eq!(get(&m, path).as_deref(), Some(want), "{path}");
    }
    assert_eq!(m.segments_named("OBX").count(), 5);

    // Our own ORU mapping reads it as the HIS would.
    let Ok(Mapped::Observations(o)) = map(&m) else {
        panic!("not read as results")
    };
    assert!(o.warnings.is_empty(), "{:?}", o.warnings);
    let order = &o.orders[0];
    assert_eq!(
        order.filler_number.as_ref().map(|f| f.id.as_str()),
        Some("HZ-2026-000123")
    );
    assert_eq!(order.result_status.as_deref(), Some("F"));
    match &order.observations[0].values[..] {
        [ObservationValue::Coded(c)] => {
            assert_eq!(c.code.as_deref(), Some("I20.000"));
            assert_eq!(c.system.as_deref(), Some("I10"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(order.observations[2].values.len(), 3, "three plan lines");

    // hl7-parser finds the same structure and values.
    let theirs = hl7_parser_reads(&text);
    assert_eq!(theirs.segments().count(), m.segment_count());
    for (q, want) in [
        ("MSH.9", "ORU^R01^ORU_R01"),
        ("MSH.10", control.as_str()),
        ("MSH.12", "2.5.1"),
        ("PID.3[2].1", NI),
        ("ORC.1", "RE"),
        ("OBR.3.1", "HZ-2026-000123"),
        ("OBR.25", "F"),
        ("OBX[1].5.1", "I20.000"),
        ("OBX[1].5.3", "I10"),
        ("OBX[3].5[2].1", "2. 阿托伐他汀 20mg qn"),
        ("OBX[5].5", "sig-7f3a2c"),
    ] {
        assert_eq!(their(&theirs, q), want, "{q}");
    }
    // The `|` in the plan is escaped, as hl7-parser's own encoder would write it.
    let line = "3. 复查心电图、肌钙蛋白 q6h（血压 150/95 | 心率 88）";
    assert_eq!(
        their(&theirs, "OBX[3].5[3]"),
        theirs.separators.encode(line).to_string()
    );
}

#[test]
fn golden_oru_r01_ft() {
    let (text, _) = built(&opinion(), json!({ "text": "ft" })).unwrap();
    golden("outbound_oru_r01_ft.hl7", &as_lines(&text)).unwrap();
    let m = parse(&text);
    assert_eq!(get(&m, "OBX[3]-2").as_deref(), Some("FT"));
    let plan = obx_with(&m, "18776-5");
    assert_eq!(plan.len(), 1);
    assert_eq!(
        plan[0].1,
        vec![typed(&opinion()).treatment_plan.unwrap()],
        "one FT value, \\.br\\ read as line breaks"
    );
    let theirs = hl7_parser_reads(&text);
    assert_eq!(theirs.segment_count("OBX"), 5);
    assert!(their(&theirs, "OBX[3].5").contains("\\.br\\"));
}

#[test]
fn golden_mdm_t02_read_by_both_parsers() {
    let (text, work) = built(&opinion(), json!({ "as": "mdm_t02" })).unwrap();
    golden("outbound_mdm_t02.hl7", &as_lines(&text)).unwrap();
    assert_eq!(
        work.headers.get("hl7-type").map(String::as_str),
        Some("MDM^T02")
    );
    let m = parse(&text);
    let names: Vec<&str> = m.segments().map(|s| s.name()).collect();
    assert_eq!(names[..5], ["MSH", "EVN", "PID", "PV1", "TXA"]);
    for (path, want) in [
        ("MSH-9", "MDM^T02^MDM_T02"),
        ("EVN-1", "T02"),
        ("EVN-2", "20260115103000+0800"),
        ("PV1-2", "N"),
        ("TXA-2", "CN"),
        ("TXA-3", "TX"),
        ("TXA-4", "20260115103000+0800"),
        ("TXA-5.1", "E1001"),
        ("TXA-9.2", "李四"),
        ("TXA-12.1", "HZ-2026-000123"),
        ("TXA-12.2", "HUIZHEN"),
        ("TXA-14.1", "HZSQ-20260115-0007"),
        ("TXA-15.1", "HZ-2026-000123"),
        ("TXA-17", "AU"),
        ("TXA-19", "AV"),
        ("TXA-22.1", "E1001"),
        ("TXA-22.15", "20260115103000+0800"),
        ("OBX[1]-2", "TX"),
        ("OBX[1]-5", "I20.000 不稳定型心绞痛"),
    ] {
        assert_eq!(get(&m, path).as_deref(), Some(want), "{path}");
    }
    assert!(
        m.segments_named("OBX")
            .all(|s| s.field(2).map(|f| f.raw()) == Some("TX")
                || s.field(2).map(|f| f.raw()) == Some("ST")),
        "TX lines, and the ST signature reference"
    );
    let plan: Vec<String> = obx_with(&m, "18776-5")
        .into_iter()
        .map(|(_, v)| v.concat())
        .collect();
    assert_eq!(
        plan.join("\n"),
        typed(&opinion()).treatment_plan.unwrap(),
        "one OBX per line"
    );
    let theirs = hl7_parser_reads(&text);
    for (q, want) in [
        ("TXA.12.1", "HZ-2026-000123"),
        ("TXA.17", "AU"),
        ("TXA.22.15", "20260115103000+0800"),
        ("EVN.1", "T02"),
    ] {
        assert_eq!(their(&theirs, q), want, "{q}");
    }
    assert_eq!(theirs.segment_count("OBX"), m.segments_named("OBX").count());
}

/// Text that must survive the trip: every delimiter, Chinese, CRLF/CR/LF, a blank line, a
/// tab, and text that looks like escape sequences.
const AWKWARD: &str = "a|b^c~d\\e&f\r\n第二行：血压 150/95 mmHg（复查）\r\n\n\t缩进 \\.br\\ 不是换行，\\X0D\\ 也不是\r末行 \\F\\";

fn normalised(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace('\r', "\n")
        .trim_end_matches('\n')
        .to_owned()
}

fn awkward_opinion() -> Value {
    let mut o = opinion();
    o["treatment_plan"] = json!(AWKWARD);
    o["advice"] = json!("注意：^~\\&|");
    o["patient"]["name"] = json!({ "family": "欧阳^|~", "given": "娜娜\\&" });
    o["consultation_id"] = json!("HZ&2026|000123~^");
    o
}

#[test]
fn escaping_round_trips_in_every_layout() {
    let body = awkward_opinion();
    let want = normalised(AWKWARD);
    for (extra, layout) in [
        (json!({}), "ORU TX"),
        (json!({ "text": "ft" }), "ORU FT"),
        (json!({ "as": "mdm_t02" }), "MDM"),
    ] {
        let (text, _) = built(&body, extra).unwrap();
        assert_eq!(
            text.matches('\r').count(),
            parse(&text).segment_count(),
            "{layout}: no CR inside values"
        );
        let m = parse(&text);
        let plan = obx_with(&m, "18776-5");
        let got = match layout {
            "MDM" => plan
                .iter()
                .map(|(_, v)| v.concat())
                .collect::<Vec<_>>()
                .join("\n"),
            _ => plan[0].1.join("\n"),
        };
        assert_eq!(got, want, "{layout}");
        assert_eq!(get(&m, "PID-5.1").as_deref(), Some("欧阳^|~"), "{layout}");
        assert_eq!(get(&m, "PID-5.2").as_deref(), Some("娜娜\\&"), "{layout}");
        let advice = obx_with(&m, "HZ-ADVICE");
        assert_eq!(advice[0].1.concat(), "注意：^~\\&|", "{layout}");
        let id_path = if layout == "MDM" {
            "TXA-12.1"
        } else {
            "OBR-3.1"
        };
        assert_eq!(
            get(&m, id_path).as_deref(),
            Some("HZ&2026|000123~^"),
            "{layout}"
        );

        // hl7-parser: same segments, and every TX line is what its own encoder writes.
        let theirs = hl7_parser_reads(&text);
        assert_eq!(theirs.segments().count(), m.segment_count(), "{layout}");
        if layout == "ORU TX" {
            let lines: Vec<&str> = want.split('\n').collect();
            for (i, line) in lines.iter().enumerate() {
                let raw = their(&theirs, &format!("OBX[3].5[{}]", i + 1));
                assert_eq!(
                    raw,
                    theirs.separators.encode(line).to_string(),
                    "line {}",
                    i + 1
                );
                if line.is_ascii() {
                    assert_eq!(theirs.separators.decode(&raw).to_string(), *line);
                }
            }
        }
    }
}

fn text_atom() -> impl Strategy<Value = String> {
    proptest::sample::select(vec![
        "|", "^", "~", "\\", "&", "\r", "\n", "\r\n", "\t", " ", "a", "Z", "0", "张", "三丰", "（",
        "：", "\\.br\\", "\\F\\", "\\X0D\\", "\"\"", "·", "😀",
    ])
    .prop_map(str::to_owned)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any text with something besides whitespace comes back line-break-normalised, as TX,
    /// FT and MDM lines alike.
    #[test]
    fn any_text_round_trips(atoms in proptest::collection::vec(text_atom(), 1..24)) {
        let text: String = atoms.concat();
        prop_assume!(!text.trim().is_empty());
        let mut body = opinion();
        body["treatment_plan"] = json!(text);
        let want = normalised(&text);
        for (kind, tt) in [
            (OutboundKind::OruR01, TextType::Tx),
            (OutboundKind::OruR01, TextType::Ft),
            (OutboundKind::MdmT02, TextType::Tx),
        ] {
            let b = build(&typed(&body), &options(kind, tt), "C1", None).unwrap();
            let m = parse(&b.text);
            let plan = obx_with(&m, "18776-5");
            let got = if kind == OutboundKind::MdmT02 {
                plan.iter().map(|(_, v)| v.concat()).collect::<Vec<_>>().join("\n")
            } else {
                plan[0].1.join("\n")
            };
            prop_assert_eq!(&got, &want);
            prop_assert!(hl7_parser::Message::parse(&b.text).is_ok());
        }
    }
}

#[test]
fn errors_name_the_json_path() {
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/consultation_id", json!(" "), "consultation_id: empty"),
        (
            "/patient/identifiers",
            json!([]),
            "patient.identifiers: at least one",
        ),
        (
            "/patient/identifiers/1/id",
            json!("4508\n21"),
            "patient.identifiers[1].id: holds a control character",
        ),
        (
            "/patient/name/family",
            json!(""),
            "patient.name.family: empty",
        ),
        (
            "/expert/name",
            json!("李\u{0b}四"),
            "expert.name: holds a control character",
        ),
        (
            "/diagnoses/1/code",
            json!("高血压"),
            "diagnoses[1].code: not an ICD-10 code",
        ),
        ("/diagnoses/0/text", json!(""), "diagnoses[0].text: empty"),
        (
            "/advice",
            json!("a\u{1c}b"),
            "advice: holds a control character other than a line break or a tab",
        ),
        (
            "/signed_at",
            json!("2026-01-15 10:30"),
            "signed_at: not an RFC 3339 date-time",
        ),
        ("/signature_ref", json!(""), "signature_ref: empty"),
        (
            "/placer_order_number/id",
            json!(""),
            "placer_order_number.id: empty",
        ),
    ];
    for (pointer, value, want) in cases {
        let mut body = opinion();
        *body.pointer_mut(pointer).unwrap() = value;
        let e = build(
            &typed(&body),
            &options(OutboundKind::OruR01, TextType::Tx),
            "C1",
            None,
        )
        .unwrap_err();
        assert!(e.to_string().starts_with(want), "{pointer}: {e}");
        assert!(!e.to_string().contains("4508"), "no patient data: {e}");
        // Through the step, the same error, permanent, with the message id.
        let err = built(&body, json!({})).unwrap_err();
        assert!(err.contains(&format!("hl7_build: body: {want}")), "{err}");
    }
    // An empty opinion.
    let mut body = opinion();
    body["diagnoses"] = json!([]);
    body["treatment_plan"] = json!(" \n");
    body.as_object_mut().unwrap().remove("advice");
    let err = built(&body, json!({})).unwrap_err();
    assert!(
        err.contains("body: diagnoses: the opinion is empty"),
        "{err}"
    );

    // JSON shape errors name the path too.
    let mut body = opinion();
    body["expert"]["title"] = json!("主任医师");
    let err = built(&body, json!({})).unwrap_err();
    assert!(
        err.contains("body: expert.title: unknown field `title`"),
        "{err}"
    );
    let mut body = opinion();
    body.as_object_mut().unwrap().remove("signed_at");
    let err = built(&body, json!({})).unwrap_err();
    assert!(err.contains("body: missing field `signed_at`"), "{err}");
}

#[test]
fn step_headers_control_id_and_message_time() {
    let (text, work) = built(&opinion(), json!({})).unwrap();
    let h = |k: &str| work.headers.get(k).cloned();
    let control = control_id(MESSAGE_ID, 1);
    assert_eq!(h("hl7-type").as_deref(), Some("ORU^R01"));
    assert_eq!(h("hl7-control-id"), Some(control.clone()));
    assert_eq!(h("hl7-version").as_deref(), Some("2.5.1"));
    assert_eq!(h("hl7-charset").as_deref(), Some("UTF-8"));
    assert_eq!(h("hl7-build-seq").as_deref(), Some("1"));
    assert!(control.len() <= 20, "MSH-10 fits v2.5.1");

    // Deterministic: building again (a retry) gives the same bytes.
    let (again, _) = built(&opinion(), json!({})).unwrap();
    assert_eq!(again, text);

    // A second hl7_build on the same message counts on.
    let mut work = Work::from_message(&journaled(
        serde_json::to_vec(&opinion()).unwrap(),
        "json",
        &[("hl7-build-seq", "1"), ("hl7-charset", "GB18030")],
    ));
    run_step(step_config(json!({ "as": "mdm_t02" })), &mut work).unwrap();
    let m = parse(std::str::from_utf8(work.body()).unwrap());
    assert_eq!(get(&m, "MSH-10"), Some(control_id(MESSAGE_ID, 2)));
    assert_eq!(
        work.headers.get("hl7-charset").map(String::as_str),
        Some("UTF-8"),
        "the body is UTF-8 now, whatever came in"
    );

    // MSH-7 from the received time at the configured offset.
    let (text, _) = built(&opinion(), json!({ "time": "received" })).unwrap();
    assert_eq!(
        get(&parse(&text), "MSH-7").as_deref(),
        Some("20260115103100+0800")
    );
    let (text, _) = built(&opinion(), json!({ "time": "received", "utc_offset": "Z" })).unwrap();
    assert_eq!(
        get(&parse(&text), "MSH-7").as_deref(),
        Some("20260115023100+0000")
    );
    assert_eq!(
        get(&parse(&text), "OBX[1]-14").as_deref(),
        Some("20260115103000+0800"),
        "observation times stay the signing time"
    );

    // Not JSON: a clear, permanent error.
    let mut work = Work::from_message(&journaled(b"MSH|^~\\&|X\r".to_vec(), "hl7v2", &[]));
    let err = run_step(step_config(json!({})), &mut work).unwrap_err();
    assert!(
        err.contains("the body is kind hl7v2; hl7_build reads a JSON opinion"),
        "{err}"
    );
}

#[test]
fn config_errors() {
    for (extra, want) in [
        (json!({ "as": "oru_r02" }), "unknown variant `oru_r02`"),
        (json!({ "sending_app": "X" }), "unknown field `sending_app`"),
        (json!({ "processing_id": "X" }), "processing_id: must be P"),
        (
            json!({ "utc_offset": "8" }),
            "utc_offset: \"8\" is not an offset",
        ),
        (
            json!({ "receiving_facility": "" }),
            "receiving_facility: empty",
        ),
        (json!({ "text": "rtf" }), "unknown variant `rtf`"),
    ] {
        let mut work = Work::from_message(&journaled(
            serde_json::to_vec(&opinion()).unwrap(),
            "json",
            &[],
        ));
        let err = run_step(step_config(extra.clone()), &mut work).unwrap_err();
        assert!(err.contains(want), "{extra}: {err}");
    }
    let mut work = Work::from_message(&journaled(Vec::new(), "json", &[]));
    let err = run_step(
        json!({ "hl7_build": { "sending_application": "HZ" } }),
        &mut work,
    )
    .unwrap_err();
    assert!(err.contains("missing field"), "{err}");
}
