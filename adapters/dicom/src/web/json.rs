//! The DICOM JSON Model (PS3.18 F.2): attributes keyed by 8 hex digits, `vr`, `Value` arrays;
//! PN as `{"Alphabetic", "Ideographic", "Phonetic"}`; numbers as JSON numbers; binary values as
//! a `BulkDataURI` (pixel data and values over 1 KiB) or `InlineBinary` (base64).

use base64::Engine as _;
use dicom_core::header::HasLength;
use dicom_core::value::Value as DValue;
use dicom_core::{Tag, VR};
use dicom_object::InMemDicomObject;
use serde_json::{Map, Value, json};

/// Adds `tag` with a string value (omitted values are empty attributes).
pub fn put(m: &mut Map<String, Value>, tag: Tag, vr: VR, value: Option<&str>) {
    let key = format!("{:04X}{:04X}", tag.group(), tag.element());
    let mut a = Map::new();
    a.insert("vr".into(), Value::String(vr.to_string().into()));
    if let Some(v) = value.filter(|v| !v.is_empty()) {
        let values: Vec<Value> = match vr {
            VR::PN => v.split('\\').map(pn).collect(),
            VR::IS | VR::DS => v.split('\\').map(number).collect(),
            _ => v
                .split('\\')
                .map(|s| Value::String(s.trim_end().to_owned()))
                .collect(),
        };
        a.insert("Value".into(), Value::Array(values));
    }
    m.insert(key, Value::Object(a));
}

/// Adds an integer attribute.
pub fn put_int(m: &mut Map<String, Value>, tag: Tag, vr: VR, v: i64) {
    let key = format!("{:04X}{:04X}", tag.group(), tag.element());
    m.insert(key, json!({"vr": vr.to_string(), "Value": [v]}));
}

fn pn(v: &str) -> Value {
    let groups = crate::charset::name_groups(v);
    let mut o = Map::new();
    for (k, g) in ["Alphabetic", "Ideographic", "Phonetic"].iter().zip(groups) {
        if !g.is_empty() {
            o.insert((*k).into(), Value::String(g.to_owned()));
        }
    }
    Value::Object(o)
}

fn number(s: &str) -> Value {
    let s = s.trim();
    if let Ok(i) = s.parse::<i64>() {
        return json!(i);
    }
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() => json!(f),
        _ => Value::String(s.to_owned()),
    }
}

/// A whole data set; binary values larger than 1 KiB (and pixel data) become a BulkDataURI under
/// `bulk` (the instance's URL), nested ones included.
pub fn dataset(o: &InMemDicomObject, bulk: &str) -> Value {
    let mut m = Map::new();
    for e in o.iter() {
        let tag = e.header().tag;
        // Group length attributes are not encoded (F.2.2).
        if tag.element() == 0 {
            continue;
        }
        let vr = e.header().vr;
        let key = format!("{:04X}{:04X}", tag.group(), tag.element());
        let mut a = Map::new();
        a.insert("vr".into(), Value::String(vr.to_string().into()));
        match e.value() {
            DValue::Sequence(seq) => {
                let items: Vec<Value> = seq.items().iter().map(|i| dataset(i, bulk)).collect();
                if !items.is_empty() {
                    a.insert("Value".into(), Value::Array(items));
                }
            }
            DValue::PixelSequence(_) => {
                a.insert(
                    "BulkDataURI".into(),
                    Value::String(format!("{bulk}/bulk/{key}")),
                );
            }
            DValue::Primitive(p) => {
                if p.is_empty() {
                    // present, empty
                } else if matches!(
                    vr,
                    VR::OB | VR::OW | VR::OF | VR::OD | VR::OL | VR::OV | VR::UN
                ) {
                    let bytes = p.to_bytes();
                    if tag == Tag(0x7FE0, 0x0010) || bytes.len() > 1024 {
                        a.insert(
                            "BulkDataURI".into(),
                            Value::String(format!("{bulk}/bulk/{key}")),
                        );
                    } else {
                        a.insert(
                            "InlineBinary".into(),
                            Value::String(base64::engine::general_purpose::STANDARD.encode(&bytes)),
                        );
                    }
                } else {
                    let values: Vec<Value> = match vr {
                        VR::PN => p.to_multi_str().iter().map(|s| pn(s)).collect(),
                        VR::US | VR::SS | VR::UL | VR::SL | VR::UV | VR::SV => p
                            .to_multi_int::<i64>()
                            .map(|v| v.into_iter().map(|i| json!(i)).collect())
                            .unwrap_or_default(),
                        VR::FL | VR::FD => p
                            .to_multi_float64()
                            .map(|v| {
                                v.into_iter()
                                    .map(|f| if f.is_finite() { json!(f) } else { Value::Null })
                                    .collect()
                            })
                            .unwrap_or_default(),
                        VR::IS | VR::DS => p.to_multi_str().iter().map(|s| number(s)).collect(),
                        VR::AT => match p {
                            dicom_core::PrimitiveValue::Tags(v) => v
                                .iter()
                                .map(|t| {
                                    Value::String(format!("{:04X}{:04X}", t.group(), t.element()))
                                })
                                .collect(),
                            _ => Vec::new(),
                        },
                        _ => p
                            .to_multi_str()
                            .iter()
                            .map(|s| Value::String(s.trim_end_matches([' ', '\0']).to_owned()))
                            .collect(),
                    };
                    a.insert("Value".into(), Value::Array(values));
                }
            }
        }
        m.insert(key, Value::Object(a));
    }
    Value::Object(m)
}
