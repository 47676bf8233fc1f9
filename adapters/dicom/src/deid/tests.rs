//! Table-driven: an object holding every Table E.1-1 attribute, de-identified under each
//! option set; each attribute must have come out as its action for those options says, and no
//! identifying value may survive anywhere unless an option chosen keeps that attribute.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;
use dicom_object::InMemDicomObject;

use super::table::{Act, Opt, TABLE, action};
use super::*;

const NAME: &str = "Wang^XiaoDong=王^小东";
const SECRET: &[u8] = b"0123456789abcdef-test-secret";

fn vr_of(t: Tag) -> VR {
    StandardDataDictionary
        .by_tag(t)
        .map(|e| e.vr().relaxed())
        .unwrap_or(VR::LO)
}

fn value(vr: VR, n: usize) -> PrimitiveValue {
    match vr {
        VR::UI => PrimitiveValue::from(format!("1.2.826.0.1.3680043.2.1125.{n}")),
        VR::DA => PrimitiveValue::from("20240315"),
        VR::TM => PrimitiveValue::from("101500"),
        VR::DT => PrimitiveValue::from("20240315101500"),
        VR::PN => PrimitiveValue::from(NAME),
        VR::AS => PrimitiveValue::from("045Y"),
        VR::US => PrimitiveValue::from(7_u16),
        VR::SS => PrimitiveValue::from(7_i16),
        VR::UL => PrimitiveValue::from(7_u32),
        VR::SL => PrimitiveValue::from(7_i32),
        VR::FL => PrimitiveValue::from(7.5_f32),
        VR::FD => PrimitiveValue::from(7.5_f64),
        VR::IS => PrimitiveValue::from("7"),
        VR::DS => PrimitiveValue::from("7.5"),
        VR::OB | VR::OW | VR::UN => PrimitiveValue::U8(vec![1, 2, 3, 4].into()),
        VR::CS => PrimitiveValue::from(format!("IDENT{n}")),
        _ => PrimitiveValue::from(format!("ident {n} of XiaoDong at 人民医院")),
    }
}

/// An item that identifies: a name, an id, a UID.
fn item(n: usize) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        DataElement::new(Tag(0x0010, 0x0010), VR::PN, PrimitiveValue::from(NAME)),
        DataElement::new(
            Tag(0x0008, 0x1155),
            VR::UI,
            PrimitiveValue::from(format!("1.2.826.0.1.3680043.2.1125.{n}")),
        ),
    ])
}

fn corpus() -> InMemDicomObject {
    let mut o = InMemDicomObject::new_empty();
    for (n, row) in TABLE.iter().enumerate() {
        let t = Tag(row.0, row.1);
        if row.0 == 0x0002 {
            continue; // file meta: apply_file's business
        }
        let vr = vr_of(t);
        if vr == VR::SQ {
            o.put(DataElement::new(
                t,
                VR::SQ,
                DataSetSequence::from(vec![item(n)]),
            ));
        } else {
            o.put(DataElement::new(t, vr, value(vr, n)));
        }
    }
    o.put(DataElement::new(
        Tag(0x0010, 0x0020),
        VR::LO,
        PrimitiveValue::from("P-12345"),
    ));
    o.put(DataElement::new(
        Tag(0x0008, 0x0060),
        VR::CS,
        PrimitiveValue::from("CT"),
    ));
    o.put(DataElement::new(
        Tag(0x0028, 0x0301),
        VR::CS,
        PrimitiveValue::from("NO"),
    ));
    // Private attributes, a curve and an overlay.
    o.put(DataElement::new(
        Tag(0x0009, 0x0010),
        VR::LO,
        PrimitiveValue::from("ACME 1.0"),
    ));
    o.put(DataElement::new(
        Tag(0x0009, 0x1001),
        VR::LO,
        PrimitiveValue::from("XiaoDong"),
    ));
    o.put(DataElement::new(
        Tag(0x5000, 0x3000),
        VR::OW,
        PrimitiveValue::U8(vec![0; 4].into()),
    ));
    o.put(DataElement::new(
        Tag(0x6000, 0x3000),
        VR::OW,
        PrimitiveValue::U8(vec![0; 4].into()),
    ));
    o.put(DataElement::new(
        Tag(0x6000, 0x4000),
        VR::LT,
        PrimitiveValue::from("XiaoDong"),
    ));
    // Not in the table: kept.
    o.put(DataElement::new(
        Tag(0x0018, 0x0050),
        VR::DS,
        PrimitiveValue::from("1.25"),
    ));
    o
}

fn text(o: &InMemDicomObject, t: Tag) -> Option<String> {
    o.element(t)
        .ok()
        .map(|e| e.to_str().map(|s| s.into_owned()).unwrap_or_default())
}

fn all_text(o: &InMemDicomObject, out: &mut String) {
    for e in o.iter() {
        match e.value() {
            dicom_core::value::Value::Sequence(s) => {
                for i in s.items() {
                    all_text(i, out);
                }
            }
            _ => {
                if let Ok(s) = e.to_str() {
                    out.push_str(&s);
                    out.push('\n');
                }
            }
        }
    }
}

fn option_sets() -> Vec<Vec<Opt>> {
    use Opt::*;
    let mut sets = vec![vec![]];
    for o in [
        RetainUids,
        RetainDeviceIdentity,
        RetainInstitutionIdentity,
        RetainPatientCharacteristics,
        RetainLongitudinalFullDates,
        RetainLongitudinalModifiedDates,
        CleanDescriptors,
        CleanStructuredContent,
    ] {
        sets.push(vec![o]);
    }
    sets.push(vec![
        RetainUids,
        RetainDeviceIdentity,
        RetainInstitutionIdentity,
        RetainPatientCharacteristics,
        RetainLongitudinalModifiedDates,
        CleanDescriptors,
        CleanStructuredContent,
    ]);
    sets
}

#[test]
fn every_table_attribute_gets_its_action_under_each_option_set() {
    let mut failures = Vec::new();
    for opts in option_sets() {
        let d = Deidentifier::new("teaching-2026", SECRET, opts.clone()).unwrap();
        let input = corpus();
        let out = d.apply(input.clone()).unwrap();
        for row in TABLE.iter().filter(|r| r.0 != 0x0002) {
            let t = Tag(row.0, row.1);
            let before = text(&input, t);
            let after = text(&out, t);
            let is_seq = vr_of(t) == VR::SQ;
            let act = action(row, &opts);
            let ok = match act {
                Act::X => after.is_none(),
                Act::K => {
                    if is_seq {
                        out.element(t).is_ok()
                    } else {
                        after == before
                    }
                }
                Act::Z | Act::XZ if t == Tag(0x0010, 0x0010) || t == Tag(0x0010, 0x0020) => {
                    after.as_deref().is_some_and(|v| v.starts_with("ANON-"))
                }
                Act::Z | Act::XZ => {
                    if is_seq {
                        out.element(t)
                            .is_ok_and(|e| e.items().is_some_and(|i| i.is_empty()))
                    } else {
                        after.as_deref() == Some("")
                    }
                }
                Act::U => after.as_deref().is_some_and(|v| {
                    v.starts_with("2.25.") && Some(v) != before.as_deref() && v.len() <= 64
                }),
                // Whole days are shifted: times of day stay; a timezone offset stays when it
                // is one (this corpus's is not: it is emptied).
                Act::C if matches!(vr_of(t), VR::TM) => after == before,
                Act::C if t == Tag(0x0008, 0x0201) => after.as_deref() == Some(""),
                Act::D | Act::ZD | Act::XD | Act::XZD | Act::C | Act::XZU => {
                    if is_seq {
                        // Kept as a sequence, its items de-identified.
                        out.element(t).is_ok_and(|e| {
                            e.items().is_some_and(|items| {
                                items
                                    .iter()
                                    .all(|i| text(i, Tag(0x0010, 0x0010)).as_deref() != Some(NAME))
                            })
                        })
                    } else {
                        after.is_some() && after != before
                    }
                }
            };
            if !ok {
                failures.push(format!(
                    "{:?} ({:04X},{:04X}) {}: {act:?}: {before:?} → {after:?}",
                    opts, row.0, row.1, row.2
                ));
            }
        }
        // Private attributes, curves and overlays are gone; an unlisted one is kept.
        for t in [
            Tag(0x0009, 0x0010),
            Tag(0x0009, 0x1001),
            Tag(0x5000, 0x3000),
            Tag(0x6000, 0x3000),
            Tag(0x6000, 0x4000),
        ] {
            if out.element(t).is_ok() {
                failures.push(format!("{opts:?} {t} survived"));
            }
        }
        assert_eq!(text(&out, Tag(0x0018, 0x0050)).as_deref(), Some("1.25"));
        // The required attributes.
        assert_eq!(text(&out, Tag(0x0012, 0x0062)).as_deref(), Some("YES"));
        assert!(text(&out, Tag(0x0012, 0x0063)).is_some_and(|m| m.contains("Basic")));
        let codes = out.element(Tag(0x0012, 0x0064)).unwrap().items().unwrap();
        assert_eq!(codes.len(), 1 + opts.len(), "{opts:?}");
        assert_eq!(
            text(&codes[0], Tag(0x0008, 0x0100)).as_deref(),
            Some("113100")
        );
        // No name, no patient id, anywhere (no option keeps them).
        // Attributes an option keeps keep their (test) values; everything else is scanned.
        let mut scanned = out.clone();
        for row in TABLE.iter().filter(|r| action(r, &opts) == Act::K) {
            scanned.remove_element(Tag(row.0, row.1));
        }
        let mut all = String::new();
        all_text(&scanned, &mut all);
        for leak in ["XiaoDong", "小东", "P-12345"] {
            if all.contains(leak) {
                failures.push(format!("{opts:?}: {leak:?} still in the output"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Identifying attributes listed by hand from PS3.15 E.1-1 (not from `TABLE`): under the basic
/// profile none keeps its value.
#[test]
fn the_basic_profile_keeps_no_identifying_value() {
    let d = Deidentifier::new("p", SECRET, []).unwrap();
    let input = corpus();
    let out = d.apply(input.clone()).unwrap();
    for t in [
        Tag(0x0010, 0x0010), // Patient's Name
        Tag(0x0010, 0x0020), // Patient ID
        Tag(0x0010, 0x0030), // Patient's Birth Date
        Tag(0x0010, 0x1040), // Patient's Address
        Tag(0x0010, 0x1000), // Other Patient IDs
        Tag(0x0010, 0x2154), // Patient's Telephone Numbers
        Tag(0x0008, 0x0050), // Accession Number
        Tag(0x0008, 0x0080), // Institution Name
        Tag(0x0008, 0x0090), // Referring Physician's Name
        Tag(0x0008, 0x1070), // Operators' Name
        Tag(0x0008, 0x0020), // Study Date
        Tag(0x0020, 0x000D), // Study Instance UID
        Tag(0x0008, 0x0018), // SOP Instance UID
        Tag(0x0018, 0x1000), // Device Serial Number
        Tag(0x0038, 0x0010), // Admission ID
    ] {
        let before = text(&input, t);
        assert!(before.is_some(), "{t} in the corpus");
        assert_ne!(text(&out, t), before, "{t} kept its value");
    }
}

#[test]
fn uids_map_consistently_within_a_project_and_differ_across_projects() {
    let a = Deidentifier::new("teaching", SECRET, []).unwrap();
    let b = Deidentifier::new("research", SECRET, []).unwrap();
    let uid = "1.2.840.113619.2.55.3.604688119";
    assert_eq!(a.uid(uid), a.uid(uid));
    assert_ne!(a.uid(uid), b.uid(uid));
    assert_ne!(a.uid(uid), a.uid("1.2.840.113619.2.55.3.604688120"));
    assert!(crate::uids::is_valid(&a.uid(uid)), "{}", a.uid(uid));
    // A reference inside a sequence maps like the instance it points to (KOS/SR integrity).
    let mut o = corpus();
    let sop = "1.2.826.0.1.3680043.2.1125.999";
    o.put(DataElement::new(
        Tag(0x0008, 0x0018),
        VR::UI,
        PrimitiveValue::from(sop),
    ));
    o.put(DataElement::new(
        Tag(0x0008, 0x1140),
        VR::SQ,
        DataSetSequence::from(vec![item(999)]),
    ));
    let out = a.apply(o).unwrap();
    let new_sop = text(&out, Tag(0x0008, 0x0018)).unwrap();
    let seq = out.element(Tag(0x0008, 0x1140)).unwrap().items().unwrap();
    assert_eq!(text(&seq[0], Tag(0x0008, 0x1155)).unwrap(), new_sop);
    // The same patient: the same pseudonym and date shift in the project.
    let out2 = a.apply(corpus()).unwrap();
    assert_eq!(
        text(&out2, Tag(0x0010, 0x0020)),
        text(&a.apply(corpus()).unwrap(), Tag(0x0010, 0x0020))
    );
}

#[test]
fn modified_dates_shift_and_full_dates_stay() {
    let m = Deidentifier::new("p", SECRET, [Opt::RetainLongitudinalModifiedDates]).unwrap();
    let out = m.apply(corpus()).unwrap();
    let d = text(&out, Tag(0x0008, 0x0020)).unwrap();
    assert_ne!(d, "20240315");
    let shifted = chrono::NaiveDate::parse_from_str(&d, "%Y%m%d").unwrap();
    let orig = chrono::NaiveDate::from_ymd_opt(2024, 3, 15).unwrap();
    let days = (orig - shifted).num_days();
    assert!((1..=3650).contains(&days), "{days}");
    // Every date of the object moved by the same number of days.
    assert_eq!(text(&out, Tag(0x0008, 0x0021)).unwrap(), d);
    assert_eq!(text(&out, Tag(0x0028, 0x0303)).as_deref(), Some("MODIFIED"));
    let f = Deidentifier::new("p", SECRET, [Opt::RetainLongitudinalFullDates]).unwrap();
    let out = f.apply(corpus()).unwrap();
    assert_eq!(text(&out, Tag(0x0008, 0x0020)).as_deref(), Some("20240315"));
    assert!(
        Deidentifier::new(
            "p",
            SECRET,
            [
                Opt::RetainLongitudinalFullDates,
                Opt::RetainLongitudinalModifiedDates
            ]
        )
        .is_err()
    );
}

#[test]
fn burned_in_annotation_is_excluded() {
    let d = Deidentifier::new("p", SECRET, []).unwrap();
    let mut o = corpus();
    o.put(DataElement::new(
        Tag(0x0028, 0x0301),
        VR::CS,
        PrimitiveValue::from("YES"),
    ));
    assert!(d.apply(o).unwrap_err().contains("Burned In Annotation"));
    let mut us = corpus();
    us.put(DataElement::new(
        Tag(0x0008, 0x0060),
        VR::CS,
        PrimitiveValue::from("US"),
    ));
    us.remove_element(Tag(0x0028, 0x0301));
    assert!(d.apply(us).unwrap_err().contains("US"));
}
