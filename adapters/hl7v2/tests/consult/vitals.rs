//! `hl7_build` with `as: oru_r01_vitals`: a device reading (`device_reading`'s `output: hl7`)
//! as `ORU^R01`, one `OBX` per value with its LOINC code, value, UCUM unit and measurement
//! time; a golden file re-read by our parser and by `hl7-parser`; the checks name the path.

use huizhen_domain::vitals::mapping::FieldMap;
use huizhen_domain::vitals::outbound::outbound_reading;
use serde_json::{Value, json};

use crate::outbound::built;
use crate::{get, golden, parse};

/// A cuff reading (blood pressure and pulse) plus an oximeter's SpO2 and a scale's weight
/// (in 斤), through the domain's mapping and `outbound_reading`, as the step leaves it.
fn reading() -> Value {
    let gateway = json!({
        "device_id": "BP-0001", "measured_at": "2026-03-01T20:00:00+08:00",
        "systolic": 172, "diastolic": 104, "heart_rate": 88, "spo2": 97,
        "body_weight": 130, "body_weight_unit": "斤"
    });
    let now = chrono::DateTime::parse_from_rfc3339("2026-03-02T00:00:00+08:00").unwrap();
    let r = FieldMap::default().read(&gateway, now).unwrap();
    let patient = huizhen_domain::consultation::outbound::OutboundPatient {
        identifiers: vec![huizhen_domain::consultation::outbound::PatientIdentifier {
            id: "MR-1001".into(),
            assigning_authority: Some("clinic-7".into()),
            type_code: Some("MR".into()),
        }],
        name: huizhen_domain::consultation::outbound::PersonName {
            family: "王芳".into(),
            given: None,
        },
    };
    serde_json::to_value(outbound_reading(
        &r,
        "0190a3c4-0000-7000-8000-00000000b001",
        "clinic-7",
        patient,
    ))
    .unwrap()
}

fn vitals() -> Value {
    json!({ "as": "oru_r01_vitals" })
}

#[test]
fn golden_oru_r01_of_a_reading_read_by_both_parsers() {
    let (text, work) = built(&reading(), vitals()).unwrap();
    golden("outbound_oru_r01_vitals.hl7", &text.replace('\r', "\n")).unwrap();
    assert_eq!(work.kind, "hl7v2");
    assert_eq!(
        work.headers.get("hl7-type").map(String::as_str),
        Some("ORU^R01")
    );
    let m = parse(&text);
    for (path, want) in [
        ("MSH-9", "ORU^R01^ORU_R01"),
        ("MSH-7", "20260301200000+0800"),
        ("PID-3.1", "MR-1001"),
        ("PID-3.4", "clinic-7"),
        ("PID-3.5", "MR"),
        ("PID-5.1", "王芳"),
        ("OBR-3.1", "0190a3c4-0000-7000-8000-00000000b001"),
        ("OBR-3.2", "HUIZHEN"),
        ("OBR-4.1", "85353-1"),
        ("OBR-7", "20260301200000+0800"),
        ("OBR-25", "F"),
        ("OBX[1]-2", "NM"),
        ("OBX[1]-3.1", "8480-6"),
        ("OBX[1]-3.3", "LN"),
        ("OBX[1]-4", "85354-9"),
        ("OBX[1]-5", "172"),
        ("OBX[1]-6.1", "mm[Hg]"),
        ("OBX[1]-6.3", "UCUM"),
        ("OBX[1]-11", "F"),
        ("OBX[1]-14", "20260301200000+0800"),
        ("OBX[1]-18", "BP-0001"),
        ("OBX[2]-3.1", "8462-4"),
        ("OBX[2]-5", "104"),
        ("OBX[3]-3.1", "8867-4"),
        ("OBX[3]-5", "88"),
        ("OBX[3]-6.1", "/min"),
        ("OBX[4]-3.1", "59408-5"),
        ("OBX[4]-6.1", "%"),
        ("OBX[5]-3.1", "29463-7"),
        ("OBX[5]-5", "65"),
        ("OBX[5]-6.1", "kg"),
    ] {
        assert_eq!(get(&m, path).as_deref(), Some(want), "{path}");
    }
    assert_eq!(m.segments_named("OBX").count(), 5);
    let theirs = hl7_parser::Message::parse(&text).unwrap();
    assert_eq!(theirs.segments().count(), m.segment_count());
    for (q, want) in [
        ("OBX[1].3.1", "8480-6"),
        ("OBX[1].6.1", "mm[Hg]"),
        ("OBX[5].5", "65"),
    ] {
        assert_eq!(
            theirs
                .query(q)
                .map(|r| r.raw_value().to_owned())
                .unwrap_or_default(),
            want,
            "{q}"
        );
    }
}

#[test]
fn bad_readings_are_refused_naming_the_path() {
    for (change, path) in [
        (json!({"values": []}), "values"),
        (json!({"measured_at": "yesterday"}), "measured_at"),
        (json!({"device": " "}), "device"),
        (
            json!({"patient": {"identifiers": [], "name": {"family": "王芳"}}}),
            "patient.identifiers",
        ),
    ] {
        let mut r = reading();
        for (k, v) in change.as_object().unwrap() {
            r[k] = v.clone();
        }
        let e = built(&r, vitals()).unwrap_err();
        assert!(e.contains(path), "{change}: {e}");
        assert!(!e.contains("王芳"), "no value in {e}");
    }
    // An opinion step refuses a reading body, and the reading builder an opinion's kind.
    let e = built(&reading(), json!({})).unwrap_err();
    assert!(e.contains("body"), "{e}");
}
