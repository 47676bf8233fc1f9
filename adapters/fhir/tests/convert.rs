//! HL7 v2 → FHIR golden conversions (insta snapshots in tests/snapshots/), one per trigger
//! `hl7v2_to_fhir` converts, including a GB18030 patient and an ORU with two patients. The
//! `urn:uuid:` fullUrls (derived from the message id) are redacted to `urn:uuid:#n` in order
//! of appearance, which keeps the references between entries checkable; nothing else in the
//! output depends on when or where it ran (times come from the message).
//!
//! Every Bundle, and every resource in it, must read back through the fhir-sdk model into
//! exactly the same JSON (no loss), and, when the FHIR validator is installed
//! (tests/support/validate.rs), validate against the R4 JSON schema (all fixtures in one run
//! of the validator).

// Tests report what they skipped on stderr.
#![allow(clippy::print_stderr)]

use std::collections::BTreeMap;
use std::path::Path;

use huizhen_fhir::convert::wire::{differences, round_trip};
use huizhen_fhir::convert::{CodeMaps, Options, convert};
use huizhen_hl7::Message;
use serde_json::Value;

mod support;

fn fixture(name: &str) -> Message {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hl7")
        .join(name);
    let bytes = std::fs::read(&path).unwrap();
    let decoded = huizhen_hl7::expr::decode_body(&bytes, &BTreeMap::new()).unwrap();
    Message::from_decoded(decoded).unwrap()
}

fn run(name: &str, options: &Options) -> (Value, Vec<String>) {
    let m = fixture(name);
    let c = convert(&m, options, "01JTESTMESSAGE").unwrap_or_else(|e| panic!("{name}: {e}"));
    let v = serde_json::to_value(&c.bundle).unwrap();
    check_round_trip(name, &v);
    (v, c.warnings)
}

/// The Bundle and each entry's resource read back unchanged.
fn check_round_trip(name: &str, bundle: &Value) {
    let back = round_trip(bundle).unwrap();
    assert_eq!(&back, bundle, "{name}: {:?}", differences(bundle, &back));
    for (i, e) in bundle["entry"].as_array().unwrap().iter().enumerate() {
        let r = &e["resource"];
        let back = round_trip(r).unwrap();
        assert_eq!(&back, r, "{name} entry {i}: {:?}", differences(r, &back));
    }
}

/// `urn:uuid:…` → `urn:uuid:#n`, numbered in order of first appearance.
fn redact(v: &mut Value, seen: &mut Vec<String>) {
    match v {
        Value::String(s) if s.starts_with("urn:uuid:") => {
            let n = match seen.iter().position(|x| x == s) {
                Some(i) => i + 1,
                None => {
                    seen.push(s.clone());
                    seen.len()
                }
            };
            *s = format!("urn:uuid:#{n}");
        }
        Value::Array(a) => a.iter_mut().for_each(|x| redact(x, seen)),
        Value::Object(o) => o.values_mut().for_each(|x| redact(x, seen)),
        _ => {}
    }
}

fn golden(name: &str) -> Value {
    let (mut v, warnings) = run(name, &Options::default());
    redact(&mut v, &mut Vec::new());
    serde_json::json!({ "bundle": v, "warnings": warnings })
}

macro_rules! golden {
    ($test:ident, $file:literal) => {
        #[test]
        fn $test() {
            insta::assert_json_snapshot!(golden($file));
        }
    };
}

golden!(adt_a01_gb18030_patient_and_encounter, "adt_a01_gb18030.hl7");
golden!(adt_a04_outpatient, "adt_a04.hl7");
golden!(adt_a08_nulls, "adt_a08_nulls.hl7");
golden!(adt_a40_merges, "adt_a40_two_merges.hl7");
golden!(oru_r01_two_patients, "oru_r01_two_patients.hl7");
golden!(orm_o01_consult_order, "orm_o01.hl7");
golden!(oml_o21_two_orders, "oml_o21_two_orders.hl7");
golden!(siu_s12_booked, "siu_s12.hl7");
golden!(siu_s13_rescheduled, "siu_s13.hl7");
golden!(siu_s14_modified, "siu_s14.hl7");
golden!(siu_s15_cancelled, "siu_s15.hl7");
golden!(mdm_t02_document, "mdm_t02.hl7");

const FIXTURES: &[&str] = &[
    "adt_a01_gb18030.hl7",
    "adt_a04.hl7",
    "adt_a08_nulls.hl7",
    "adt_a40_two_merges.hl7",
    "oru_r01_two_patients.hl7",
    "orm_o01.hl7",
    "oml_o21_two_orders.hl7",
    "siu_s12.hl7",
    "siu_s13.hl7",
    "siu_s14.hl7",
    "siu_s15.hl7",
    "mdm_t02.hl7",
];

#[test]
fn every_conversion_is_valid_fhir_r4() {
    let bundles: Vec<(&str, Value)> = FIXTURES
        .iter()
        .map(|f| (*f, run(f, &Options::default()).0))
        .collect();
    support::validate::bundles(&bundles);
}

fn entries(v: &Value) -> &Vec<Value> {
    v["entry"].as_array().unwrap()
}

fn of_type<'a>(v: &'a Value, t: &str) -> Vec<&'a Value> {
    entries(v)
        .iter()
        .filter(|e| e["resource"]["resourceType"] == t)
        .collect()
}

#[test]
fn chinese_names_are_kept_from_gb18030() {
    let (v, _) = run("adt_a01_gb18030.hl7", &Options::default());
    let p = &of_type(&v, "Patient")[0]["resource"];
    // 䶮 (U+4DAE) is a four-byte GB18030 character.
    assert_eq!(p["name"][0]["text"], "刘䶮");
    assert_eq!(p["name"][0]["family"], "刘");
    assert_eq!(p["name"][0]["given"][0], "䶮");
    assert_eq!(p["address"][0]["district"], "安吉县");
}

#[test]
fn several_patients_give_one_report_set_each() {
    let (v, _) = run("oru_r01_two_patients.hl7", &Options::default());
    let patients = of_type(&v, "Patient");
    let reports = of_type(&v, "DiagnosticReport");
    assert_eq!((patients.len(), reports.len()), (2, 2));
    for (p, r) in patients.iter().zip(&reports) {
        assert_eq!(r["resource"]["subject"]["reference"], p["fullUrl"]);
        for res in r["resource"]["result"].as_array().unwrap() {
            let obs = entries(&v)
                .iter()
                .find(|e| e["fullUrl"] == res["reference"])
                .expect("every result is an entry");
            assert_eq!(obs["resource"]["subject"]["reference"], p["fullUrl"]);
        }
    }
    // The first patient's PDF is the report's presentedForm, not an Observation.
    assert_eq!(
        reports[0]["resource"]["presentedForm"][0]["contentType"],
        "application/pdf"
    );
}

#[test]
fn replays_are_the_same_conditional_bundle() {
    let m = fixture("oru_r01_two_patients.hl7");
    let a = convert(&m, &Options::default(), "m1").unwrap();
    let b = convert(&m, &Options::default(), "m1").unwrap();
    assert_eq!(
        serde_json::to_value(&a.bundle).unwrap(),
        serde_json::to_value(&b.bundle).unwrap()
    );
    let v = serde_json::to_value(&a.bundle).unwrap();
    for e in entries(&v) {
        let req = &e["request"];
        let conditional = req["url"].as_str().unwrap().contains("?identifier=")
            || req["ifNoneExist"]
                .as_str()
                .is_some_and(|s| s.starts_with("identifier="));
        assert!(conditional, "{req}");
    }
}

#[test]
fn code_maps_add_standard_codings() {
    let maps = CodeMaps::parse(
        Path::new("codes.yaml"),
        "version: 1\nidentifier_systems:\n  COUNTY: http://county.example.cn/fhir/sid/mrn\ncodes:\n  OBX-3:\n    L|GLU: { system: http://loinc.org, code: 2345-7, display: Glucose }\nvalues:\n  OBX-11: { F: amended }\n",
    )
    .unwrap();
    let options = Options {
        maps,
        ..Options::default()
    };
    let (v, _) = run("oru_r01_two_patients.hl7", &options);
    let obs = &of_type(&v, "Observation")[0]["resource"];
    assert_eq!(obs["code"]["coding"][0]["system"], "http://loinc.org");
    assert_eq!(obs["code"]["coding"][1]["code"], "GLU");
    assert_eq!(obs["status"], "amended");
    let p = &of_type(&v, "Patient")[0]["resource"];
    assert_eq!(
        p["identifier"][0]["system"],
        "http://county.example.cn/fhir/sid/mrn"
    );
}

#[test]
fn what_cannot_be_converted_names_the_path() {
    let cases = [
        (
            "MSH|^~\\&|A|F|||||ADT^A99|1|P|2.5\rPID|1||X",
            "MSH-9: ADT^A99 is not",
        ),
        (
            "MSH|^~\\&|A|F|||||ADT^A01|1|P|2.5\rPID|1",
            "PID-3: no patient identifier",
        ),
        (
            "MSH|^~\\&|A|F|||||ORU^R01|1|P|2.5\rPID|1||A\rOBR|1||F1|X\rOBX|1|NM|G||1\rPID|2\rPV1|1",
            "PATIENT_RESULT[2]: OBR:",
        ),
        (
            "MSH|^~\\&|A|F|||||SIU^S12|1|P|2.5\rSCH|P1|F1\rPID|1||A",
            "TQ1-7: no start time",
        ),
        (
            "MSH|^~\\&|A|F|||||MDM^T02|1|P|2.5\rPID|1||A\rTXA|1|CN",
            "OBX: no document content",
        ),
    ];
    for (text, want) in cases {
        let m = Message::parse(text).unwrap();
        let e = convert(&m, &Options::default(), "x")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(want), "{e}");
    }
}

#[test]
fn the_validator_rejects_what_is_not_fhir() {
    let bad = serde_json::json!({"resourceType": "Patient", "gender": "男"});
    if let Some(e) = support::validate::errors(&[&bad]) {
        assert!(!e[0].is_empty(), "the schema should refuse gender 男");
    }
}
