//! Tests of the built-in mappings (`huizhen_hl7::mapping`) and the `hl7_map` step: realistic
//! county-hospital ADT and LIS ORU messages, the not-sent/null distinction of HL7-32, resident
//! identity number checks (MATCH-05), tolerance of unexpected segments (HL7-34), the errors,
//! golden JSON files (`UPDATE_GOLDEN=1 cargo test -p huizhen-hl7 --test mapping` rewrites
//! them), and no panic on arbitrary input.

use std::collections::BTreeMap;
use std::path::PathBuf;

use huizhen_core::message::{Message as Journaled, State};
use huizhen_core::runner::{BuildContext, Router};
use huizhen_core::steps::StepConfig;
use huizhen_core::work::{Flow, Work};
use huizhen_hl7::Message;
use huizhen_hl7::mapping::{
    Field, Mapped, MappingError, ObservationValue, Observations, PatientRecord, Sex,
    check_resident_id, map,
};
use proptest::prelude::*;
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// A segment from (field number, value) pairs; fields not listed are empty.
fn seg(name: &str, fields: &[(usize, &str)]) -> String {
    let last = fields.iter().map(|(n, _)| *n).max().unwrap_or(0);
    let mut out = name.to_owned();
    for n in 1..=last {
        out.push('|');
        if let Some((_, v)) = fields.iter().find(|(k, _)| *k == n) {
            out.push_str(v);
        }
    }
    out
}

fn msh(sender: &str, time: &str, message_type: &str, control_id: &str) -> String {
    format!(
        "MSH|^~\\&|{sender}|HXXRMYY^450821001^L|HZ|GXYCHZ|{time}||{message_type}|{control_id}|P|2.5|||AL|NE||UNICODE UTF-8"
    )
}

fn cr(segments: &[String]) -> String {
    segments.join("\r") + "\r"
}

/// 张三丰, born 1985-03-12, male: a valid resident identity number.
const NI_VALID: &str = "450821198503120035";
/// The same number with a wrong check character.
const NI_BAD_CHECK: &str = "450821198503120036";

/// A county hospital (县人民医院) admits 张三丰 (inpatient, internal medicine).
fn adt_a01() -> String {
    let ids = format!("0001234567^^^HXXRMYY^MR~{NI_VALID}^^^CHN&1.2.156.112604^NI");
    cr(&[
        msh(
            "HIS",
            "20260115083000+0800",
            "ADT^A01^ADT_A01",
            "A01-20260115-0001",
        ),
        seg(
            "EVN",
            &[(1, "A01"), (2, "20260115082955"), (5, "D0123^李^明")],
        ),
        seg(
            "PID",
            &[
                (1, "1"),
                (3, &ids),
                (5, "张^三丰^^^^^L^I~ZHANG^SANFENG^^^^^L^P"),
                (7, "19850312"),
                (8, "M"),
                (
                    11,
                    "人民路12号^3单元501^贵港市^广西壮族自治区^537100^CHN^H^^港北区",
                ),
                (13, "13800138000^PRN^CP~^NET^Internet^zsf@example.cn"),
                (14, "0775-4221234^WPN^PH"),
                (16, "M^已婚^GB/T 2261.2"),
                (22, "01^汉族^GB/T 3304"),
            ],
        ),
        seg(
            "PV1",
            &[
                (1, "1"),
                (2, "I"),
                (3, "NK1^301^12^HXXRMYY^^^住院楼^3^内科一病区"),
                (7, "D0456^王^建国^^^^^^HXXRMYY"),
                (10, "NK"),
                (19, "ZY2026000123^^^HXXRMYY^VN"),
                (44, "20260115080000"),
            ],
        ),
        seg("ZPI", &[(1, "1"), (2, "新农合"), (3, "NCMS-2026-778")]),
        seg("NK1", &[(1, "1"), (2, "张^小明"), (3, "SON^儿子")]),
    ])
}

/// An A08 update: a new name, the home phone and the address cleared (`""`), the business
/// phone and the rest not sent (empty), the location cleared.
fn adt_a08() -> String {
    cr(&[
        msh("HIS", "20260116090000", "ADT^A08^ADT_A01", "A08-0001"),
        seg("EVN", &[(1, "A08"), (2, "20260116085959")]),
        seg(
            "PID",
            &[
                (1, "1"),
                (3, "0001234567^^^HXXRMYY^MR"),
                (5, "张^三峰"),
                (7, ""),
                (8, "1"),
                (11, "\"\""),
                (13, "\"\""),
                (14, ""),
            ],
        ),
        seg("PV1", &[(1, "1"), (2, "I"), (3, "\"\""), (7, "")]),
    ])
}

/// An A40 merge: record 0009998887 (and its resident id) is merged into 0001234567.
fn adt_a40() -> String {
    cr(&[
        msh("MPI", "20260117100000", "ADT^A40^ADT_A39", "A40-0001"),
        seg("EVN", &[(1, "A40"), (2, "20260117095900")]),
        seg(
            "PID",
            &[(1, "1"), (3, "0001234567^^^HXXRMYY^MR"), (5, "张^三丰")],
        ),
        seg(
            "MRG",
            &[
                (1, &format!("0009998887^^^HXXRMYY^MR~{NI_VALID}^^^CHN^NI")),
                (3, "AC778^^^HXXRMYY"),
                (7, "张^三峰"),
            ],
        ),
    ])
}

/// LIS results: a glucose panel (NM with a note after the OBX, a Z-segment in the middle, an
/// ST remark) and a hepatitis B panel (CE values, a TX with two repetitions, an order note).
fn oru_r01() -> String {
    cr(&[
        msh("LIS", "20260115103000", "ORU^R01^ORU_R01", "R01-0001"),
        seg(
            "PID",
            &[
                (1, "1"),
                (3, &format!("0001234567^^^HXXRMYY^MR~{NI_VALID}^^^CHN^NI")),
                (5, "张^三丰"),
                (7, "19850312"),
                (8, "M"),
            ],
        ),
        seg("PV1", &[(1, "1"), (2, "I"), (3, "NK1^301^12")]),
        seg("ORC", &[(1, "RE"), (2, "P-778^HIS"), (3, "F-991^LIS")]),
        seg(
            "OBR",
            &[
                (1, "1"),
                (3, "F-991^LIS"),
                (4, "GLU-P^血糖组合^L"),
                (7, "20260115070000"),
                (25, "F"),
            ],
        ),
        seg(
            "OBX",
            &[
                (1, "1"),
                (2, "NM"),
                (3, "2345-7^葡萄糖^LN^GLU^葡萄糖^L"),
                (5, "6.8"),
                (6, "mmol/L"),
                (7, "3.9-6.1"),
                (8, "H"),
                (11, "F"),
                (14, "20260115090000"),
            ],
        ),
        seg("NTE", &[(1, "1"), (2, "L"), (3, "空腹采血\\.br\\已复核")]),
        seg("ZLS", &[(1, "1"), (2, "仪器A"), (3, "批号2026")]),
        seg("NTE", &[(1, "2"), (2, "L"), (3, "复查建议")]),
        seg(
            "OBX",
            &[
                (1, "2"),
                (2, "ST"),
                (3, "GLU-R^标本状态^L"),
                (5, "标本轻度溶血"),
                (11, "F"),
            ],
        ),
        seg("EVN", &[(1, "R01")]),
        seg(
            "OBR",
            &[
                (1, "2"),
                (2, "P-779^HIS"),
                (3, "F-992^LIS"),
                (4, "HBV-5^乙肝五项^L"),
                (7, "20260115070500"),
                (25, "F"),
            ],
        ),
        seg("NTE", &[(1, "1"), (2, "L"), (3, "急诊加做")]),
        seg(
            "OBX",
            &[
                (1, "1"),
                (2, "CE"),
                (3, "HBSAG^乙肝表面抗原^L"),
                (5, "NEG^阴性^L"),
                (8, "N"),
                (11, "F"),
            ],
        ),
        seg(
            "OBX",
            &[
                (1, "2"),
                (2, "CWE"),
                (3, "HBSAB^乙肝表面抗体^L"),
                (5, "POS^阳性^L"),
                (8, "A"),
                (11, "F"),
            ],
        ),
        seg(
            "OBX",
            &[
                (1, "3"),
                (2, "TX"),
                (3, "HBV-C^结论^L"),
                (5, "乙肝表面抗体阳性~提示既往接种或感染"),
                (11, "F"),
            ],
        ),
        seg(
            "OBX",
            &[
                (1, "4"),
                (2, "SN"),
                (3, "HBV-DNA^乙肝病毒DNA^L"),
                (5, "<^500"),
                (6, "IU/mL"),
                (11, "F"),
            ],
        ),
    ])
}

fn parse(text: &str) -> Message {
    match Message::parse(text) {
        Ok(m) => m,
        Err(e) => panic!("fixture does not parse: {e}"),
    }
}

fn patient(text: &str) -> PatientRecord {
    match map(&parse(text)) {
        Ok(Mapped::Patient(p)) => *p,
        Ok(other) => panic!("expected a patient, got {other:?}"),
        Err(e) => panic!("mapping failed: {e}"),
    }
}

fn results(text: &str) -> Observations {
    match map(&parse(text)) {
        Ok(Mapped::Observations(o)) => *o,
        Ok(other) => panic!("expected observations, got {other:?}"),
        Err(e) => panic!("mapping failed: {e}"),
    }
}

fn error(text: &str) -> MappingError {
    match map(&parse(text)) {
        Ok(m) => panic!("expected an error, got {m:?}"),
        Err(e) => e,
    }
}

/// Replaces one segment (by name, first occurrence) of a fixture.
fn with_segment(text: &str, name: &str, replacement: &str) -> String {
    let segs: Vec<String> = text
        .split('\r')
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.starts_with(&format!("{name}|")) {
                replacement.to_owned()
            } else {
                s.to_owned()
            }
        })
        .collect();
    cr(&segs)
}

// ---------------------------------------------------------------------------------------------
// ADT
// ---------------------------------------------------------------------------------------------

#[test]
fn a01_county_hospital_admission() {
    let p = patient(&adt_a01());
    assert_eq!(p.message_type, "ADT^A01");
    assert_eq!(p.event, "A01");
    assert_eq!(
        p.event_time.as_ref().and_then(|t| t.iso.as_deref()),
        Some("2026-01-15T08:29:55"),
        "EVN-2 wins over MSH-7"
    );
    assert_eq!(p.control_id.as_deref(), Some("A01-20260115-0001"));
    assert_eq!(p.sending_application.as_deref(), Some("HIS"));
    assert_eq!(p.sending_facility.as_deref(), Some("HXXRMYY"));

    assert_eq!(p.identifiers.len(), 2);
    let mr = &p.identifiers[0];
    assert_eq!(mr.id, "0001234567");
    assert_eq!(mr.assigning_authority.as_deref(), Some("HXXRMYY"));
    assert_eq!(mr.type_code.as_deref(), Some("MR"));
    assert_eq!(mr.resident_id_valid, None);
    let ni = &p.identifiers[1];
    assert_eq!(ni.id, NI_VALID);
    assert_eq!(ni.assigning_authority.as_deref(), Some("CHN"));
    assert_eq!(ni.type_code.as_deref(), Some("NI"));
    assert_eq!(ni.resident_id_valid, Some(true));
    let r = ni.resident_id.as_ref().unwrap();
    assert_eq!(r.region, "450821");
    assert_eq!(r.birth_date, "1985-03-12");
    assert_eq!(r.sex, Sex::Male);

    let names = p.names.value().unwrap();
    assert_eq!(names.len(), 2);
    assert_eq!(names[0].family.as_deref(), Some("张"));
    assert_eq!(names[0].given.as_deref(), Some("三丰"));
    assert_eq!(names[0].text, "张三丰");
    assert_eq!(names[0].name_type.as_deref(), Some("L"));
    assert_eq!(names[0].representation.as_deref(), Some("I"));
    assert_eq!(names[1].text, "ZHANG SANFENG");
    assert_eq!(names[1].representation.as_deref(), Some("P"));

    let birth = p.birth_date.value().unwrap();
    assert_eq!(birth.raw, "19850312");
    assert_eq!(birth.date(), Some("1985-03-12"));
    let sex = p.sex.value().unwrap();
    assert_eq!((sex.code.as_str(), sex.normalized), ("M", Sex::Male));

    let addr = &p.addresses.value().unwrap()[0];
    assert_eq!(addr.street.as_deref(), Some("人民路12号"));
    assert_eq!(addr.other.as_deref(), Some("3单元501"));
    assert_eq!(addr.city.as_deref(), Some("贵港市"));
    assert_eq!(addr.province.as_deref(), Some("广西壮族自治区"));
    assert_eq!(addr.postal_code.as_deref(), Some("537100"));
    assert_eq!(addr.country.as_deref(), Some("CHN"));
    assert_eq!(addr.address_type.as_deref(), Some("H"));
    assert_eq!(addr.county.as_deref(), Some("港北区"));

    let home = p.home_phones.value().unwrap();
    assert_eq!(home.len(), 2);
    assert_eq!(home[0].number.as_deref(), Some("13800138000"));
    assert_eq!(home[0].digits.as_deref(), Some("13800138000"));
    assert_eq!(home[0].use_code.as_deref(), Some("PRN"));
    assert_eq!(home[0].equipment_type.as_deref(), Some("CP"));
    assert_eq!(home[1].number, None);
    assert_eq!(home[1].email.as_deref(), Some("zsf@example.cn"));
    let work = &p.business_phones.value().unwrap()[0];
    assert_eq!(work.digits.as_deref(), Some("07754221234"));
    assert_eq!(work.use_code.as_deref(), Some("WPN"));

    let marital = p.marital_status.value().unwrap();
    assert_eq!(marital.code.as_deref(), Some("M"));
    assert_eq!(marital.text.as_deref(), Some("已婚"));
    let ethnic = p.ethnic_group.value().unwrap();
    assert_eq!(ethnic.code.as_deref(), Some("01"));
    assert_eq!(ethnic.text.as_deref(), Some("汉族"));
    assert_eq!(ethnic.system.as_deref(), Some("GB/T 3304"));

    let visit = p.visit.as_ref().unwrap();
    assert_eq!(visit.patient_class, Field::Value("I".to_owned()));
    let loc = visit.location.value().unwrap();
    assert_eq!(loc.point_of_care.as_deref(), Some("NK1"));
    assert_eq!(loc.room.as_deref(), Some("301"));
    assert_eq!(loc.bed.as_deref(), Some("12"));
    assert_eq!(loc.facility.as_deref(), Some("HXXRMYY"));
    assert_eq!(loc.building.as_deref(), Some("住院楼"));
    assert_eq!(loc.description.as_deref(), Some("内科一病区"));
    let doc = &visit.attending_doctors.value().unwrap()[0];
    assert_eq!(doc.id.as_deref(), Some("D0456"));
    assert_eq!(doc.text.as_deref(), Some("王建国"));
    assert_eq!(doc.assigning_authority.as_deref(), Some("HXXRMYY"));
    assert_eq!(visit.hospital_service, Field::Value("NK".to_owned()));
    let vn = visit.visit_number.value().unwrap();
    assert_eq!(
        (vn.id.as_str(), vn.type_code.as_deref()),
        ("ZY2026000123", Some("VN"))
    );
    assert_eq!(
        visit.admit_time.value().and_then(|t| t.iso.as_deref()),
        Some("2026-01-15T08:00:00")
    );

    assert_eq!(p.merge, None);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn a04_resident_id_with_a_wrong_check_digit_is_kept_and_flagged() {
    let text = adt_a01()
        .replace("ADT^A01^ADT_A01", "ADT^A04^ADT_A01")
        .replace("EVN|A01", "EVN|A04")
        .replace(NI_VALID, NI_BAD_CHECK);
    let p = patient(&text);
    assert_eq!(p.event, "A04");
    assert_eq!(p.identifiers.len(), 2, "never rejected, never dropped");
    let ni = &p.identifiers[1];
    assert_eq!(ni.id, NI_BAD_CHECK);
    assert_eq!(ni.resident_id_valid, Some(false));
    assert_eq!(ni.resident_id, None);
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert!(
        p.warnings[0]
            .starts_with("PID-3[2]: NI identifier is not a valid resident identity number")
            && p.warnings[0].contains("check character"),
        "{}",
        p.warnings[0]
    );
    assert!(
        !p.warnings[0].contains("4508"),
        "warnings carry no patient data"
    );
    assert!(check_resident_id(NI_BAD_CHECK).is_err());
    assert!(check_resident_id(NI_VALID).is_ok());
}

#[test]
fn resident_id_disagreeing_with_pid_7_and_pid_8_is_flagged() {
    let text = adt_a01()
        .replace("|19850312|M|", "|19850313|F|")
        .replace("ADT^A01^ADT_A01", "ADT^A28^ADT_A05");
    let p = patient(&text);
    assert_eq!(p.event, "A28");
    assert_eq!(
        p.warnings,
        vec![
            "PID-7: the birth date differs from the one in the resident identity number PID-3[2]",
            "PID-8: the sex differs from the one in the resident identity number PID-3[2]",
        ]
    );
}

#[test]
fn a08_tells_null_from_not_sent() {
    let p = patient(&adt_a08());
    assert_eq!(p.event, "A08");
    // PID-13 "" → clear the phones; PID-14 empty → keep them.
    assert_eq!(p.home_phones, Field::Null);
    assert_eq!(p.business_phones, Field::NotSent);
    assert_eq!(p.addresses, Field::Null);
    // PID-7 empty, PID-16/22 beyond the end of the segment: not sent.
    assert_eq!(p.birth_date, Field::NotSent);
    assert_eq!(p.marital_status, Field::NotSent);
    assert_eq!(p.ethnic_group, Field::NotSent);
    assert_eq!(p.names.value().unwrap()[0].text, "张三峰");
    let sex = p.sex.value().unwrap();
    assert_eq!(
        (sex.code.as_str(), sex.normalized),
        ("1", Sex::Male),
        "GB/T 2261.1"
    );
    let visit = p.visit.as_ref().unwrap();
    assert_eq!(visit.location, Field::Null);
    assert_eq!(visit.attending_doctors, Field::NotSent);
    assert_eq!(visit.visit_number, Field::NotSent);

    // In JSON: not sent is left out, null is null.
    let v = serde_json::to_value(Mapped::Patient(Box::new(p.clone()))).unwrap();
    assert_eq!(v["record"], "patient");
    assert_eq!(v["home_phones"], serde_json::Value::Null);
    assert!(v.as_object().unwrap().contains_key("home_phones"));
    assert!(!v.as_object().unwrap().contains_key("business_phones"));
    assert!(!v.as_object().unwrap().contains_key("birth_date"));
    assert_eq!(v["visit"]["location"], serde_json::Value::Null);
    assert!(
        !v["visit"]
            .as_object()
            .unwrap()
            .contains_key("attending_doctors")
    );

    // And back.
    let back: Mapped = serde_json::from_value(v).unwrap();
    assert_eq!(back, Mapped::Patient(Box::new(p)));
}

#[test]
fn fields_of_only_nulls_or_only_separators() {
    let text = with_segment(
        &adt_a08(),
        "PID",
        "PID|1||0001234567^^^HXXRMYY^MR||\"\"^\"\"||||||^^^^^||\"\"~\"\"|^WPN",
    );
    let p = patient(&text);
    assert_eq!(p.names, Field::Null, "every part null");
    assert_eq!(p.addresses, Field::NotSent, "only separators");
    assert_eq!(p.home_phones, Field::Null);
    assert_eq!(
        p.business_phones,
        Field::NotSent,
        "a use code without a number"
    );
}

#[test]
fn a40_merge() {
    let p = patient(&adt_a40());
    assert_eq!(p.event, "A40");
    assert_eq!(p.identifiers[0].id, "0001234567");
    let m = p.merge.as_ref().unwrap();
    assert_eq!(m.prior_identifiers.len(), 2);
    assert_eq!(m.prior_identifiers[0].id, "0009998887");
    assert_eq!(m.prior_identifiers[0].type_code.as_deref(), Some("MR"));
    assert_eq!(m.prior_identifiers[1].resident_id_valid, Some(true));
    assert_eq!(
        m.prior_account_number.as_ref().map(|i| i.id.as_str()),
        Some("AC778")
    );
    assert_eq!(m.prior_visit_number, None);
    assert_eq!(m.prior_names[0].text, "张三峰");
    assert!(p.visit.is_none());
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);

    // A wrong check character in MRG-1 is flagged with its path.
    let p = patient(&adt_a40().replace(NI_VALID, NI_BAD_CHECK));
    assert!(p.warnings[0].starts_with("MRG-1[2]: "), "{:?}", p.warnings);
}

#[test]
fn errors_name_the_path() {
    let no_id = with_segment(&adt_a08(), "PID", "PID|1||||张^三丰");
    let e = error(&no_id);
    assert_eq!(e.to_string(), "PID-3: no patient identifier");
    assert_eq!(e.path(), "PID-3");

    let null_id = with_segment(&adt_a08(), "PID", "PID|1||\"\"||张^三丰");
    assert_eq!(error(&null_id).path(), "PID-3");

    let no_pid = cr(&[msh("HIS", "20260116", "ADT^A08", "X1")]);
    assert_eq!(error(&no_pid).path(), "PID");

    let no_mrg = adt_a40()
        .split('\r')
        .filter(|s| !s.starts_with("MRG"))
        .collect::<Vec<_>>()
        .join("\r");
    assert_eq!(error(&no_mrg).path(), "MRG");
    let empty_mrg = with_segment(&adt_a40(), "MRG", "MRG||||||张^三峰");
    assert_eq!(
        error(&empty_mrg).to_string(),
        "MRG-1: no prior patient identifier"
    );
    let two_merges = adt_a40() + "PID|2||0005550001^^^HXXRMYY^MR\rMRG|0005550002^^^HXXRMYY^MR\r";
    assert_eq!(error(&two_merges).path(), "PID[2]");

    let a03 = adt_a08().replace("ADT^A08^ADT_A01", "ADT^A03^ADT_A03");
    let e = error(&a03);
    assert_eq!(
        e,
        MappingError::Unsupported {
            message_type: "ADT^A03".into()
        }
    );
    assert!(e.to_string().starts_with("MSH-9: ADT^A03 is not"), "{e}");

    let no_type = adt_a08().replace("ADT^A08^ADT_A01", "");
    assert_eq!(error(&no_type).path(), "MSH-9");
}

#[test]
fn tolerant_header_forms() {
    // Trigger only in EVN-1; type and trigger run together in MSH-9.1.
    let p = patient(&adt_a08().replace("ADT^A08^ADT_A01", "ADT"));
    assert_eq!(p.event, "A08");
    let p = patient(&adt_a08().replace("ADT^A08^ADT_A01", "adt_a08"));
    assert_eq!(p.message_type, "ADT^A08");
    // Legacy: identifier in PID-2, not PID-3.
    let legacy = with_segment(&adt_a08(), "PID", "PID|1|0001234567^^^HXXRMYY^MR|||张^三丰");
    let p = patient(&legacy);
    assert_eq!(p.identifiers[0].id, "0001234567");
    assert_eq!(
        p.warnings,
        vec!["PID-3: no patient identifier; used PID-2 (an older HIS layout)"]
    );
    // A bad date is kept as sent, with a warning; a second PID is ignored, with a warning.
    let odd = with_segment(
        &adt_a08(),
        "PID",
        "PID|1||0001234567^^^HXXRMYY^MR||张^三丰||1985-13-01|X",
    ) + "PID|2||0009999999^^^HXXRMYY^MR\r";
    let p = patient(&odd);
    let birth = p.birth_date.value().unwrap();
    assert_eq!(
        (birth.raw.as_str(), birth.iso.as_deref()),
        ("1985-13-01", None)
    );
    assert_eq!(p.sex.value().unwrap().normalized, Sex::Unknown);
    assert_eq!(p.identifiers.len(), 1);
    assert_eq!(p.warnings.len(), 3, "{:?}", p.warnings);
    assert!(p.warnings.iter().any(|w| w.starts_with("PID[2]:")));
    assert!(p.warnings.iter().any(|w| w.starts_with("PID-7:")));
    assert!(p.warnings.iter().any(|w| w.starts_with("PID-8:")));
}

// ---------------------------------------------------------------------------------------------
// ORU
// ---------------------------------------------------------------------------------------------

#[test]
fn oru_two_orders_typed_values_notes_and_a_z_segment() {
    let o = results(&oru_r01());
    assert_eq!(o.message_type, "ORU^R01");
    assert_eq!(o.event, "R01");
    assert_eq!(o.sending_application.as_deref(), Some("LIS"));
    assert!(o.warnings.is_empty(), "{:?}", o.warnings);
    assert!(o.notes.is_empty());

    let pat = o.patient.as_ref().unwrap();
    assert_eq!(pat.identifiers.len(), 2);
    assert_eq!(pat.identifiers[1].resident_id_valid, Some(true));
    assert_eq!(pat.names[0].text, "张三丰");
    assert_eq!(
        pat.birth_date.as_ref().and_then(|b| b.date()),
        Some("1985-03-12")
    );
    assert_eq!(pat.sex.as_ref().map(|s| s.normalized), Some(Sex::Male));

    assert_eq!(o.orders.len(), 2);
    let glu = &o.orders[0];
    assert_eq!(
        glu.placer_number.as_ref().map(|p| p.id.as_str()),
        Some("P-778"),
        "OBR-2 is empty: ORC-2"
    );
    assert_eq!(
        glu.filler_number
            .as_ref()
            .map(|p| (p.id.as_str(), p.namespace.as_deref())),
        Some(("F-991", Some("LIS")))
    );
    let service = glu.service.as_ref().unwrap();
    assert_eq!(
        (
            service.code.as_deref(),
            service.text.as_deref(),
            service.system.as_deref()
        ),
        (Some("GLU-P"), Some("血糖组合"), Some("L"))
    );
    assert_eq!(
        glu.observation_time.as_ref().and_then(|t| t.iso.as_deref()),
        Some("2026-01-15T07:00:00")
    );
    assert_eq!(glu.result_status.as_deref(), Some("F"));
    assert!(glu.notes.is_empty());
    assert_eq!(glu.observations.len(), 2);

    let nm = &glu.observations[0];
    assert_eq!(nm.set_id.as_deref(), Some("1"));
    assert_eq!(nm.value_type.as_deref(), Some("NM"));
    let code = nm.code.as_ref().unwrap();
    assert_eq!(
        (
            code.code.as_deref(),
            code.text.as_deref(),
            code.system.as_deref()
        ),
        (Some("2345-7"), Some("葡萄糖"), Some("LN"))
    );
    assert_eq!(code.alt_code.as_deref(), Some("GLU"));
    assert_eq!(
        nm.values,
        vec![ObservationValue::Numeric {
            text: "6.8".into(),
            number: Some(6.8)
        }]
    );
    assert_eq!(
        nm.units.as_ref().and_then(|u| u.code.as_deref()),
        Some("mmol/L")
    );
    assert_eq!(nm.reference_range.as_deref(), Some("3.9-6.1"));
    assert_eq!(nm.abnormal_flags, vec!["H"]);
    assert_eq!(nm.result_status.as_deref(), Some("F"));
    assert_eq!(
        nm.observation_time.as_ref().and_then(|t| t.iso.as_deref()),
        Some("2026-01-15T09:00:00")
    );
    assert_eq!(
        nm.notes,
        vec!["空腹采血\n已复核", "复查建议"],
        "both NTEs, across the Z-segment, belong to the OBX"
    );

    let st = &glu.observations[1];
    assert_eq!(
        st.values,
        vec![ObservationValue::Text {
            text: "标本轻度溶血".into()
        }]
    );
    assert!(st.notes.is_empty());

    let hbv = &o.orders[1];
    assert_eq!(
        hbv.placer_number.as_ref().map(|p| p.id.as_str()),
        Some("P-779")
    );
    assert_eq!(hbv.notes, vec!["急诊加做"], "an NTE after the OBR");
    assert_eq!(hbv.observations.len(), 4);
    let ce = &hbv.observations[0];
    match &ce.values[..] {
        [ObservationValue::Coded(c)] => {
            assert_eq!(c.code.as_deref(), Some("NEG"));
            assert_eq!(c.text.as_deref(), Some("阴性"));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(&hbv.observations[1].values[..], [ObservationValue::Coded(c)] if c.code.as_deref() == Some("POS"))
    );
    assert_eq!(
        hbv.observations[2].values,
        vec![
            ObservationValue::Text {
                text: "乙肝表面抗体阳性".into()
            },
            ObservationValue::Text {
                text: "提示既往接种或感染".into()
            },
        ],
        "TX repetitions kept"
    );
    assert_eq!(
        hbv.observations[3].values,
        vec![ObservationValue::Raw {
            text: "<^500".into()
        }]
    );
}

#[test]
fn oru_odd_inputs() {
    // A non-numeric NM is kept as text with a warning.
    let text = oru_r01().replace(
        "|NM|2345-7^葡萄糖^LN^GLU^葡萄糖^L||6.8|",
        "|NM|2345-7||>33.3|",
    );
    let o = results(&text);
    assert_eq!(
        o.orders[0].observations[0].values,
        vec![ObservationValue::Numeric {
            text: ">33.3".into(),
            number: None
        }]
    );
    assert_eq!(
        o.warnings,
        vec!["OBX[1]-5: an NM value that is not a decimal number; kept as text"]
    );

    // OBX before any OBR, no PID, an NTE after the MSH.
    let text = cr(&[
        msh("POCT", "20260115", "ORU^R01", "P1"),
        seg("NTE", &[(3, "床旁检测")]),
        seg("OBX", &[(1, "1"), (2, "NM"), (3, "GLU"), (5, "7.2")]),
    ]);
    let o = results(&text);
    assert_eq!(o.notes, vec!["床旁检测"]);
    assert_eq!(o.orders.len(), 1);
    assert_eq!(o.orders[0].service, None);
    assert_eq!(o.orders[0].observations.len(), 1);
    assert!(o.patient.is_none());
    assert_eq!(o.warnings.len(), 2, "{:?}", o.warnings);

    // Errors: no results; two patients.
    let none = cr(&[
        msh("LIS", "20260115", "ORU^R01", "P2"),
        seg("PID", &[(3, "1^^^H^MR")]),
    ]);
    assert_eq!(error(&none).path(), "OBR");
    let two = oru_r01() + "PID|2||0005550001^^^HXXRMYY^MR\rOBR|1||F-1|X\rOBX|1|NM|X||1\r";
    assert_eq!(error(&two).path(), "PID[2]");
}

#[test]
fn non_default_delimiters_map_the_same() {
    let text = oru_r01();
    assert!(!text.contains(['!', '@', '#', '$']));
    let other: String = text
        .chars()
        .map(|c| match c {
            '^' => '!',
            '~' => '@',
            '\\' => '#',
            '&' => '$',
            c => c,
        })
        .collect();
    assert_eq!(map(&parse(&other)).unwrap(), map(&parse(&text)).unwrap());
}

// ---------------------------------------------------------------------------------------------
// Golden files
// ---------------------------------------------------------------------------------------------

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

#[test]
fn golden_json() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let cases = [
        ("mapping_adt_a01.json", adt_a01()),
        ("mapping_adt_a08.json", adt_a08()),
        ("mapping_oru_r01.json", oru_r01()),
    ];
    let mut failures = Vec::new();
    for (file, text) in cases {
        let mapped = map(&parse(&text)).unwrap();
        let got = serde_json::to_value(&mapped).unwrap();
        let path = golden_dir().join(file);
        if update {
            std::fs::create_dir_all(golden_dir()).unwrap();
            // Written from the record, so the file keeps the fields in declaration order.
            let mut pretty = serde_json::to_string_pretty(&mapped).unwrap();
            pretty.push('\n');
            std::fs::write(&path, pretty).unwrap();
            continue;
        }
        let want: serde_json::Value = match std::fs::read_to_string(&path) {
            Ok(s) => serde_json::from_str(&s).unwrap(),
            Err(e) => panic!(
                "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
                path.display()
            ),
        };
        if got != want {
            failures.push(format!(
                "{file} differs (UPDATE_GOLDEN=1 rewrites it); got:\n{}",
                serde_json::to_string_pretty(&got).unwrap()
            ));
        }
        // The typed records read their own JSON back.
        let back: Mapped = serde_json::from_value(want).unwrap();
        assert_eq!(serde_json::to_value(back).unwrap(), got, "{file}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

// ---------------------------------------------------------------------------------------------
// The hl7_map step
// ---------------------------------------------------------------------------------------------

fn journaled(body: Vec<u8>, headers: &[(&str, &str)]) -> Journaled {
    Journaled {
        id: "0190a3c4-0000-7000-8000-000000000001".into(),
        facility: "HXXRMYY".into(),
        pipeline: "adt-in".into(),
        kind: "hl7v2".into(),
        body,
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        source: "mllp 127.0.0.1:2575".into(),
        received_at: 0,
        trace_id: "t".into(),
        dedup_key: None,
        parent_id: None,
        state: State::Processing,
        attempts: 1,
        next_attempt_at: None,
        last_error: None,
        updated_at: 0,
    }
}

fn run_step(config: serde_json::Value, work: &mut Work) -> Result<Flow, String> {
    let config: Box<dyn StepConfig> =
        serde_json::from_value(config).map_err(|e| format!("config: {e}"))?;
    assert_eq!(config.type_name(), "hl7_map");
    let step = config.build(&BuildContext {
        pipeline: "adt-in".into(),
        facility: "HXXRMYY".into(),
        router: Router::default(),
        extensions: Default::default(),
    })?;
    futures::executor::block_on(step.apply(work)).map_err(|e| {
        assert!(!e.retryable, "hl7_map errors are permanent: {}", e.message);
        e.message
    })
}

#[test]
fn step_replaces_the_body_with_the_record() {
    // A GB18030 body (MSH-18 empty; the mllp source records the charset in hl7-charset).
    let text = adt_a01().replace("|UNICODE UTF-8", "|");
    let (bytes, _, unmappable) = encoding_rs::GB18030.encode(&text);
    assert!(!unmappable);
    let mut work = Work::from_message(&journaled(
        bytes.into_owned(),
        &[("hl7-charset", "GB18030"), ("hl7-type", "ADT^A01")],
    ));
    let flow = run_step(json!({ "hl7_map": {} }), &mut work).unwrap();
    assert_eq!(flow, Flow::Continue);
    assert_eq!(work.kind, "json");
    assert_eq!(
        work.headers.get("hl7-type").map(String::as_str),
        Some("ADT^A01")
    );
    let body = work.json().unwrap().clone();
    assert_eq!(body["record"], "patient");
    assert_eq!(body["names"][0]["text"], "张三丰");
    assert_eq!(
        body["identifiers"][1]["resident_id"]["birth_date"],
        "1985-03-12"
    );
    let bytes: serde_json::Value = serde_json::from_slice(work.body()).unwrap();
    assert_eq!(bytes, body, "the body bytes are the JSON");

    // Running it again on the JSON is a clear, permanent error.
    let err = run_step(json!({ "hl7_map": {} }), &mut work).unwrap_err();
    assert!(err.contains("already JSON"), "{err}");
}

#[test]
fn step_errors_are_permanent_and_name_the_type_or_path() {
    let a03 = adt_a08().replace("ADT^A08^ADT_A01", "ADT^A03^ADT_A03");
    let mut work = Work::from_message(&journaled(a03.into_bytes(), &[]));
    let err = run_step(json!({ "hl7_map": {} }), &mut work).unwrap_err();
    assert!(err.contains("hl7_map: MSH-9: ADT^A03 is not"), "{err}");
    assert_eq!(work.kind, "hl7v2", "body left alone");

    let no_id = with_segment(&adt_a08(), "PID", "PID|1||||张^三丰");
    let mut work = Work::from_message(&journaled(no_id.into_bytes(), &[]));
    let err = run_step(json!({ "hl7_map": {} }), &mut work).unwrap_err();
    assert!(
        err.ends_with("hl7_map: PID-3: no patient identifier"),
        "{err}"
    );
    assert!(!err.contains("张"), "no patient data in errors: {err}");

    let mut work = Work::from_message(&journaled(b"not hl7".to_vec(), &[]));
    let err = run_step(json!({ "hl7_map": {} }), &mut work).unwrap_err();
    assert!(err.contains("does not parse"), "{err}");

    let err = run_step(json!({ "hl7_map": { "mode": "x" } }), &mut work).unwrap_err();
    assert!(err.contains("unknown field"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// No panic on arbitrary input
// ---------------------------------------------------------------------------------------------

fn field_text() -> impl Strategy<Value = String> {
    let atoms = vec![
        "^",
        "~",
        "&",
        "\\",
        "\"\"",
        "",
        "1",
        "NI",
        "MR",
        "NM",
        "CE",
        "TX",
        "X",
        "NW",
        "CA",
        "RP",
        "ED",
        "S",
        "113014",
        "1.2.3",
        "I10",
        "19850312",
        "2026-01-15 08:30",
        "+0800",
        "-",
        ".",
        "张",
        "三丰",
        "·",
        NI_VALID,
        NI_BAD_CHECK,
        "\\.br\\",
        "\\X",
        " ",
        "0086138",
        "9999999999999999999999",
    ];
    proptest::collection::vec(proptest::sample::select(atoms), 0..8).prop_map(|v| v.concat())
}

fn segment_text() -> impl Strategy<Value = String> {
    let names = vec![
        "PID", "PV1", "MRG", "EVN", "OBR", "OBX", "NTE", "ORC", "ZXY", "PD1", "TQ1", "DG1",
    ];
    (
        proptest::sample::select(names),
        proptest::collection::vec(field_text(), 0..26),
    )
        .prop_map(|(n, fields)| format!("{n}|{}", fields.join("|")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn map_never_panics(
        kind in proptest::sample::select(vec![
            "ADT^A01", "ADT^A08", "ADT^A40", "ADT^A31", "ORU^R01", "ADT", "ORU^R02", "",
            "ORM^O01", "OML^O21",
        ]),
        segments in proptest::collection::vec(segment_text(), 0..12),
    ) {
        let mut text = msh("HIS", "20260115", kind, "C1");
        for s in segments {
            text.push('\r');
            text.push_str(&s);
        }
        let message = parse(&text);
        match map(&message) {
            Ok(m) => {
                let v = serde_json::to_value(&m).unwrap();
                let back: Mapped = serde_json::from_value(v.clone()).unwrap();
                prop_assert_eq!(serde_json::to_value(back).unwrap(), v);
            }
            Err(e) => prop_assert!(!e.path().is_empty()),
        }
    }
}
