//! `hl7_build` with `as: dft_p03`: billing's charge (the body of `settlement.settled`) and its
//! credit (`settlement.cancelled`) as `DFT^P03`, golden files re-read by our parser and by
//! `hl7-parser`; amounts in yuan with two decimals from integer fen; the checks name the JSON
//! path.

use huizhen_hl7::build::{BuildOptions, NHSA_ITEMS, OutboundKind, TextType, build_charge};
use serde_json::{Value, json};

use crate::outbound::built;
use crate::{get, golden, parse};

/// 张三丰's consultation, settled through the insurance platform: the consultation and 2 blocks
/// of extra time.
pub fn charge(transaction: &str) -> Value {
    json!({
        "settlement_id": "0190a3c4-5e77-7000-8000-00000000a001",
        "consultation_id": "HZ-2026-000123",
        "transaction": transaction,
        "facility": "H45010300001",
        "department": "心内科",
        "placer_order_number": { "id": "HZSQ-20260115-0007", "namespace": "HIS" },
        "patient": {
            "identifiers": [{ "id": "0001234567", "assigning_authority": "HXXRMYY", "type_code": "MR" }],
            "name": { "family": "张", "given": "三丰" }
        },
        "expert": { "id": "E1001", "name": "李四" },
        "posted_at": "2026-01-15T11:05:00+08:00",
        "service_at": "2026-01-15T10:30:00+08:00",
        "items": [
            { "name": "远程会诊", "national_code": "003101000010000", "local_code": "HZ-YCHZ-01",
              "province_code": "310100001-1", "mapping_version": "2026.01", "quantity": 1,
              "unit_price_fen": 30000, "amount_fen": 30000, "covered": true },
            { "name": "远程会诊加时", "national_code": "003101000020000", "local_code": "HZ-YCHZ-02",
              "province_code": "310100002-1", "mapping_version": "2026.01", "quantity": 2,
              "unit_price_fen": 5005, "amount_fen": 10010, "covered": true }
        ],
        "payers": { "total_fen": 40010, "fund_fen": 15000, "account_fen": 0, "cash_fen": 25010 },
        "insurance": { "psn_no": "45000000000000000001", "insuplc_admdvs": "450100",
                       "plan": "310", "insurer": "南宁市医疗保障局",
                       "mdtrt_id": "MDT-1", "setl_id": "SETL-20260115-1" }
    })
}

fn dft() -> Value {
    json!({ "as": "dft_p03" })
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

#[test]
fn golden_dft_p03_charge_read_by_both_parsers() {
    let (text, work) = built(&charge("charge"), dft()).unwrap();
    golden("outbound_dft_p03.hl7", &text.replace('\r', "\n")).unwrap();
    assert_eq!(work.kind, "hl7v2");
    assert_eq!(
        work.headers.get("hl7-type").map(String::as_str),
        Some("DFT^P03")
    );

    let m = parse(&text);
    for (path, want) in [
        ("MSH-7", "20260115110500+0800"),
        ("MSH-9", "DFT^P03^DFT_P03"),
        ("MSH-12", "2.5.1"),
        ("EVN-1", "P03"),
        ("EVN-2", "20260115110500+0800"),
        ("PID-3.1", "0001234567"),
        ("PID-3.5", "MR"),
        ("PID-5.1", "张"),
        ("PV1-2", "N"),
        ("PV1-19.1", "HZ-2026-000123"),
        ("FT1[1]-1", "1"),
        ("FT1[1]-2", "0190a3c4-5e77-7000-8000-00000000a001"),
        ("FT1[1]-3", "SETL-20260115-1"),
        ("FT1[1]-4", "20260115103000+0800"),
        ("FT1[1]-5", "20260115110500+0800"),
        ("FT1[1]-6", "CG"),
        ("FT1[1]-7.1", "003101000010000"),
        ("FT1[1]-7.2", "远程会诊"),
        ("FT1[1]-7.3", NHSA_ITEMS),
        ("FT1[1]-7.4", "HZ-YCHZ-01"),
        ("FT1[1]-7.6", "L"),
        ("FT1[1]-7.7", "2026.01"),
        ("FT1[1]-10", "1"),
        ("FT1[1]-11.1.1", "300.00"),
        ("FT1[1]-11.1.2", "CNY"),
        ("FT1[1]-12.1.1", "300.00"),
        ("FT1[1]-13", "心内科"),
        ("FT1[1]-16.4", "H45010300001"),
        ("FT1[1]-20.1", "E1001"),
        ("FT1[1]-20.2", "李四"),
        ("FT1[1]-23.1", "HZ-2026-000123"),
        ("FT1[1]-23.2", "HUIZHEN"),
        ("FT1[2]-1", "2"),
        ("FT1[2]-7.1", "003101000020000"),
        ("FT1[2]-10", "2"),
        ("FT1[2]-11.1.1", "100.10"),
        ("FT1[2]-12.1.1", "50.05"),
        ("IN1-1", "1"),
        ("IN1-2", "310"),
        ("IN1-3.1", "450100"),
        ("IN1-3.4", "NHSA"),
        ("IN1-4", "南宁市医疗保障局"),
        ("IN1-36", "45000000000000000001"),
    ] {
        assert_eq!(get(&m, path).as_deref(), Some(want), "{path}");
    }
    assert_eq!(m.segments_named("FT1").count(), 2);

    // hl7-parser finds the same segments and values.
    let theirs = hl7_parser_reads(&text);
    assert_eq!(theirs.segments().count(), m.segment_count());
    assert_eq!(theirs.segment_count("FT1"), 2);
    for (q, want) in [
        ("MSH.9", "DFT^P03^DFT_P03"),
        ("EVN.1", "P03"),
        ("PID.3.1", "0001234567"),
        ("FT1[1].6", "CG"),
        ("FT1[1].7.1", "003101000010000"),
        ("FT1[1].7.4", "HZ-YCHZ-01"),
        ("FT1[1].11.1.1", "300.00"),
        ("FT1[1].11.1.2", "CNY"),
        ("FT1[2].10", "2"),
        ("FT1[2].11.1.1", "100.10"),
        ("FT1[2].12.1.1", "50.05"),
        ("IN1.36", "45000000000000000001"),
    ] {
        assert_eq!(their(&theirs, q), want, "{q}");
    }
}

#[test]
fn golden_dft_p03_credit_negates_quantities_and_amounts() {
    let (text, _) = built(&charge("credit"), dft()).unwrap();
    golden("outbound_dft_p03_credit.hl7", &text.replace('\r', "\n")).unwrap();
    let m = parse(&text);
    for (path, want) in [
        ("FT1[1]-2", "0190a3c4-5e77-7000-8000-00000000a001"),
        ("FT1[1]-6", "CD"),
        ("FT1[1]-10", "-1"),
        ("FT1[1]-11.1.1", "-300.00"),
        ("FT1[1]-12.1.1", "300.00"),
        ("FT1[2]-6", "CD"),
        ("FT1[2]-10", "-2"),
        ("FT1[2]-11.1.1", "-100.10"),
    ] {
        assert_eq!(get(&m, path).as_deref(), Some(want), "{path}");
    }
    let theirs = hl7_parser_reads(&text);
    assert_eq!(their(&theirs, "FT1[2].6"), "CD");
    assert_eq!(their(&theirs, "FT1[2].11.1.1"), "-100.10");
}

#[test]
fn self_pay_has_no_in1() {
    let mut c = charge("charge");
    c.as_object_mut().unwrap().remove("insurance");
    let (text, _) = built(&c, dft()).unwrap();
    let m = parse(&text);
    assert_eq!(m.segments_named("IN1").count(), 0);
    assert_eq!(
        get(&m, "FT1[1]-3").unwrap_or_default(),
        "",
        "no platform settlement id"
    );
}

/// A change that spoils a charge.
type Change = fn(&mut Value);

#[test]
fn bad_charges_are_refused_naming_the_path() {
    let cases: Vec<(Change, &str)> = vec![
        (|c| c["items"] = json!([]), "items:"),
        (
            |c| c["items"][1]["amount_fen"] = json!(10000),
            "items[1].amount_fen:",
        ),
        (
            |c| c["items"][0]["quantity"] = json!(0),
            "items[0].quantity:",
        ),
        (
            |c| c["items"][0]["national_code"] = json!(" 003101000010000"),
            "items[0].national_code:",
        ),
        (|c| c["payers"]["cash_fen"] = json!(1), "payers:"),
        (|c| c["payers"]["total_fen"] = json!(1), "payers.total_fen:"),
        (
            |c| c["patient"]["identifiers"] = json!([]),
            "patient.identifiers:",
        ),
        (|c| c["posted_at"] = json!("yesterday"), "posted_at:"),
        (
            |c| c["insurance"]["psn_no"] = json!(" "),
            "insurance.psn_no:",
        ),
        (
            |c| c["items"][0]["nationl_code"] = json!("x"),
            "items[0].nationl_code: unknown field",
        ),
    ];
    for (change, want) in cases {
        let mut c = charge("charge");
        change(&mut c);
        let e = built(&c, dft()).unwrap_err();
        assert!(e.contains(want), "{want}: {e}");
    }
    // An opinion body given to `dft_p03` is refused as a charge, and a charge to `build`.
    let e = built(&crate::outbound::opinion(), dft()).unwrap_err();
    assert!(e.contains("unknown field"), "{e}");
}

#[test]
fn the_library_call_builds_the_same_message() {
    let options = BuildOptions {
        kind: OutboundKind::DftP03,
        sending_application: "HUIZHEN".into(),
        sending_facility: "GXYCHZ".into(),
        receiving_application: "HIS".into(),
        receiving_facility: "HXXRMYY".into(),
        processing_id: "P".into(),
        text: TextType::Tx,
        document_type: "CN".into(),
    };
    let typed = serde_json::from_value(charge("charge")).unwrap();
    let control = huizhen_hl7::build::control_id("0190a3c4-0000-7000-8000-000000000001", 1);
    let lib = build_charge(&typed, &options, &control, None).unwrap();
    let (step, _) = built(&charge("charge"), dft()).unwrap();
    assert_eq!(lib.text, step);
    assert_eq!(lib.message_type, "DFT^P03");
}
