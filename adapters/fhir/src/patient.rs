//! FHIR R4/R4B `Patient` → [`Demographics`], the matcher's input (STANDARDS MATCH-05,
//! IHE-01 PIX feed).
//!
//! [`parse_patient`] reads one Patient resource (JSON) with fhir-sdk's R4B model; R4 Patients
//! read the same (the element set the matcher uses did not change between R4 and R4B).
//! [`demographics`] maps it; [`patient_demographics`] does both.
//!
//! The mapping (the rules `huizhen patients import` has always used, docs/matching.md):
//!
//! * **local id**: the first identifier (with a value) of type `MR`, else the first `usual`
//!   one that is no resident id or insurance number, else the first such plain one, else the
//!   resource `id`; none of these is an error at `identifier`;
//! * **resident id** (居民身份证号): type code `NI`, or, with no type code, a type text naming
//!   the resident identity card (`居民身份证`, `身份证`);
//! * **insurance number** (医保 `psn_no`): type code `PSN_NO` or `PSN`, or, with no type code, a
//!   type text naming 医保; the region is the assigner's display, else the identifier system;
//! * every other identifier is a national id: system = the identifier's system, else its type
//!   code;
//! * `name` (family, given parts joined by a space, text: 张伟 as text or as 张 + 伟),
//!   `birthDate` (as sent: `YYYY`, `YYYY-MM` or `YYYY-MM-DD`), `gender`, `address` (the text,
//!   else state, city, district and lines; the postal code apart), `telecom` phones (system
//!   `phone`, `sms` or none).
//!
//! The type code is the first coding's code that is set, compared case-insensitively.
//! Extensions, primitive extensions (`_birthDate`) and elements the model does not know are
//! accepted and ignored.

use fhir_sdk::Date;
use fhir_sdk::r4b::codes::{AdministrativeGender, IdentifierUse};
use fhir_sdk::r4b::resources::Patient;
use fhir_sdk::r4b::types::Identifier;
use huizhen_domain::identity::{Demographics, OtherId, PersonName, PostalAddress};
use huizhen_domain::patient::Sex;
use serde::Deserialize;

use crate::FhirError;

/// Reads one FHIR `Patient` resource from JSON. Errors name the element path (never the
/// value): `resourceType` when the resource is not a Patient, `birthDate` for a date that is
/// not a FHIR date, `name[0].given` for a wrong shape, …
pub fn parse_patient(json: &str) -> Result<Patient, FhirError> {
    check_resource_type(json)?;
    let mut de = serde_json::Deserializer::from_str(json);
    let patient: Patient = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| FhirError::from_json(e.path().to_string(), e.inner()))?;
    de.end()
        .map_err(|e| FhirError::from_json(String::new(), &e))?;
    Ok(patient)
}

/// One Patient resource (JSON) as the demographics of a record at `facility`:
/// [`parse_patient`] then [`demographics`].
pub fn patient_demographics(json: &str, facility: &str) -> Result<Demographics, FhirError> {
    demographics(&parse_patient(json)?, facility)
}

/// The model checks no `resourceType` when it reads a Patient (it defaults it), so it is
/// read first, alone: a missing one or another resource is named as such. A document that
/// is not even JSON falls through to the model, whose error has the path.
fn check_resource_type(json: &str) -> Result<(), FhirError> {
    #[derive(Deserialize)]
    struct Head {
        #[serde(rename = "resourceType")]
        resource_type: Option<serde_json::Value>,
    }
    let Ok(head) = serde_json::from_str::<Head>(json) else {
        return Ok(());
    };
    match head.resource_type {
        Some(serde_json::Value::String(t)) if t == "Patient" => Ok(()),
        Some(serde_json::Value::String(t)) => {
            // A resource type is no patient data, but the field may hold anything: keep
            // what could be a type name.
            let t: String = t
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(40)
                .collect();
            Err(FhirError::at(
                "resourceType",
                format!("expected Patient, found {t}"),
            ))
        }
        Some(_) => Err(FhirError::at("resourceType", "expected the string Patient")),
        None => Err(FhirError::at("resourceType", "missing (expected Patient)")),
    }
}

/// What an identifier is to the matcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Type `MR`: the facility's record number.
    Record,
    /// 居民身份证号.
    Resident,
    /// 医保 `psn_no`.
    Insurance,
    /// Anything else.
    Plain,
}

/// The identifier's type code: the first coding's code that is set, upper-cased.
fn type_code(i: &Identifier) -> Option<String> {
    i.r#type
        .as_ref()?
        .coding
        .iter()
        .flatten()
        .find_map(|c| c.code.as_deref())
        .map(str::to_ascii_uppercase)
}

fn kind(i: &Identifier) -> Kind {
    match type_code(i).as_deref() {
        Some("MR") => Kind::Record,
        Some("NI") => Kind::Resident,
        Some("PSN_NO" | "PSN") => Kind::Insurance,
        Some(_) => Kind::Plain,
        None => {
            let text = i.r#type.as_ref().and_then(|t| t.text.as_deref());
            match text.map(str::trim) {
                Some("居民身份证" | "身份证" | "居民身份证号" | "身份证号") => {
                    Kind::Resident
                }
                Some(t) if t.contains("医保") => Kind::Insurance,
                _ => Kind::Plain,
            }
        }
    }
}

fn value(i: &Identifier) -> Option<&str> {
    i.value.as_deref().filter(|v| !v.trim().is_empty())
}

/// The demographics of a Patient at `facility` (the rules in the module doc). Fails only
/// when no local id can be found (`identifier`) or the birth date's year has not 4 digits
/// (`birthDate`).
pub fn demographics(p: &Patient, facility: &str) -> Result<Demographics, FhirError> {
    let ids: Vec<(&Identifier, &str, Kind)> = p
        .identifier
        .iter()
        .flatten()
        .filter_map(|i| Some((i, value(i)?, kind(i))))
        .collect();
    let special = |k: Kind| matches!(k, Kind::Resident | Kind::Insurance);
    let local = ids
        .iter()
        .position(|(_, _, k)| *k == Kind::Record)
        .or_else(|| {
            ids.iter()
                .position(|(i, _, k)| i.r#use == Some(IdentifierUse::Usual) && !special(*k))
        })
        .or_else(|| ids.iter().position(|(_, _, k)| !special(*k)));
    let local_id = match local {
        Some(n) => ids[n].1.to_owned(),
        None => {
            p.id.clone()
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| {
                    FhirError::at(
                        "identifier",
                        "no local id: no MR, usual or other plain identifier, and no resource id",
                    )
                })?
        }
    };
    let identifiers = ids
        .iter()
        .enumerate()
        .filter(|(n, _)| Some(*n) != local)
        .map(|(_, (i, v, k))| {
            let value = v.trim().to_owned();
            match k {
                Kind::Resident => OtherId::ResidentId { value },
                Kind::Insurance => OtherId::Insurance {
                    psn_no: value,
                    region: i
                        .assigner
                        .as_ref()
                        .and_then(|a| a.display.clone())
                        .or_else(|| i.system.clone())
                        .unwrap_or_default(),
                },
                Kind::Record | Kind::Plain => OtherId::National {
                    system: i
                        .system
                        .clone()
                        .or_else(|| type_code(i))
                        .unwrap_or_default(),
                    value,
                },
            }
        })
        .collect();
    let names = p
        .name
        .iter()
        .flatten()
        .map(|n| {
            let given: Vec<&str> = n.given.iter().flatten().map(String::as_str).collect();
            (n, given)
        })
        .filter(|(n, given)| n.family.is_some() || !given.is_empty() || n.text.is_some())
        .map(|(n, given)| PersonName {
            family: n.family.clone(),
            given: (!given.is_empty()).then(|| given.join(" ")),
            text: n.text.clone().unwrap_or_default(),
        })
        .collect();
    let sex = p.gender.map(|g| match g {
        AdministrativeGender::Male => Sex::Male,
        AdministrativeGender::Female => Sex::Female,
        AdministrativeGender::Other => Sex::Other,
        AdministrativeGender::Unknown => Sex::Unknown,
    });
    let birth_date = p.birth_date.as_ref().map(birth_date).transpose()?;
    let addresses = p
        .address
        .iter()
        .flatten()
        .map(|a| {
            let text = a.text.clone().unwrap_or_else(|| {
                [&a.state, &a.city, &a.district]
                    .into_iter()
                    .flatten()
                    .chain(a.line.iter().flatten())
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            });
            PostalAddress {
                text,
                postal_code: a.postal_code.clone(),
            }
        })
        .filter(|a| !a.text.trim().is_empty() || a.postal_code.is_some())
        .collect();
    let phones = p
        .telecom
        .iter()
        .flatten()
        .filter(|t| {
            t.system.is_none_or(|s| {
                matches!(
                    s,
                    fhir_sdk::r4b::codes::ContactPointSystem::Phone
                        | fhir_sdk::r4b::codes::ContactPointSystem::Sms
                )
            })
        })
        .filter_map(|t| t.value.clone())
        .collect();
    Ok(Demographics {
        facility: facility.to_owned(),
        local_id: local_id.trim().to_owned(),
        identifiers,
        names,
        birth_date,
        sex,
        phones,
        addresses,
    })
}

/// A FHIR date as it was sent (`1949`, `1949-12`, `1949-12-31`). The model reads any
/// integer as a year; FHIR's is 4 digits (a `19491231` is a HIS date, not a year).
fn birth_date(d: &Date) -> Result<String, FhirError> {
    let year = match d {
        Date::Year(y) | Date::YearMonth(y, _) => *y,
        Date::Date(d) => d.year(),
    };
    if !(1000..=9999).contains(&year) {
        return Err(FhirError::at(
            "birthDate",
            "not a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD): the year is not 4 digits",
        ));
    }
    Ok(match d {
        Date::Year(y) => format!("{y:04}"),
        Date::YearMonth(y, m) => format!("{y:04}-{:02}", *m as u8),
        Date::Date(d) => format!("{:04}-{:02}-{:02}", d.year(), d.month() as u8, d.day()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> FhirError {
        patient_demographics(json, "h").unwrap_err()
    }

    #[test]
    fn a_chinese_patient_with_ni_mr_and_psn_no() {
        let json = r#"{"resourceType":"Patient","id":"p-1",
            "identifier":[
              {"use":"official","type":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v2-0203","code":"NI"}]},"system":"urn:oid:2.16.156.10011.1.3","value":"11010519491231002X"},
              {"type":{"coding":[{"code":"PSN_NO"}]},"system":"urn:nhsa:psn_no","value":" 45010000000012345678 ","assigner":{"display":"450100"}},
              {"use":"usual","type":{"coding":[{"code":"mr"}]},"system":"urn:hosp-a:mrn","value":"MR-7"},
              {"system":"urn:ehc","value":"EHC-1"},
              {"type":{"text":"居民身份证"},"value":"450102199001011234"}
            ],
            "name":[{"use":"official","family":"欧阳","given":["娜","娜"]},{"text":"阿依古丽·买买提"},{"use":"old"}],
            "gender":"female","birthDate":"1949-12-31",
            "telecom":[{"system":"phone","value":"13800138000"},{"system":"email","value":"a@b.cn"},{"value":"0771 5551234"},{"system":"sms","value":"13900139000"}],
            "address":[{"line":["民族大道100号"],"city":"南宁市","district":"青秀区","state":"广西","postalCode":"530000"},{"text":"北京市东城区"}]}"#;
        let d = patient_demographics(json, "hosp-a").unwrap();
        assert_eq!(d.facility, "hosp-a");
        assert_eq!(d.local_id, "MR-7");
        assert_eq!(
            d.identifiers,
            vec![
                OtherId::ResidentId {
                    value: "11010519491231002X".into()
                },
                OtherId::Insurance {
                    psn_no: "45010000000012345678".into(),
                    region: "450100".into()
                },
                OtherId::National {
                    system: "urn:ehc".into(),
                    value: "EHC-1".into()
                },
                OtherId::ResidentId {
                    value: "450102199001011234".into()
                },
            ]
        );
        assert_eq!(
            d.names,
            vec![
                PersonName::parts("欧阳", "娜 娜"),
                PersonName::text("阿依古丽·买买提")
            ]
        );
        assert_eq!(d.sex, Some(Sex::Female));
        assert_eq!(d.birth_date.as_deref(), Some("1949-12-31"));
        assert_eq!(d.phones, ["13800138000", "0771 5551234", "13900139000"]);
        assert_eq!(
            d.addresses,
            vec![
                PostalAddress {
                    text: "广西 南宁市 青秀区 民族大道100号".into(),
                    postal_code: Some("530000".into())
                },
                PostalAddress {
                    text: "北京市东城区".into(),
                    postal_code: None
                }
            ]
        );
    }

    #[test]
    fn a_minimal_patient_is_keyed_on_its_resource_id() {
        let d = patient_demographics(r#"{"resourceType":"Patient","id":"x1"}"#, "h").unwrap();
        assert_eq!(d.local_id, "x1");
        assert!(d.identifiers.is_empty() && d.names.is_empty() && d.phones.is_empty());
        assert_eq!((d.birth_date, d.sex), (None, None));
        // No identifier and no id: nothing to key the record on.
        let e = err(r#"{"resourceType":"Patient"}"#);
        assert_eq!(e.path, "identifier");
        assert!(e.what.contains("no local id"), "{e}");
    }

    #[test]
    fn the_local_id_falls_back_to_usual_then_plain() {
        let json = r#"{"resourceType":"Patient","identifier":[
            {"type":{"coding":[{"code":"NI"}]},"value":"11010519491231002X"},
            {"system":"urn:a","value":"A-1"},
            {"use":"usual","system":"urn:b","value":"B-1"}]}"#;
        assert_eq!(patient_demographics(json, "h").unwrap().local_id, "B-1");
        let json = r#"{"resourceType":"Patient","id":"r","identifier":[
            {"type":{"coding":[{"code":"NI"}]},"value":"11010519491231002X"},
            {"type":{"coding":[{"code":"XX"}]},"value":"  "},
            {"type":{"coding":[{"code":"PPN"}]},"value":"E123"}]}"#;
        let d = patient_demographics(json, "h").unwrap();
        assert_eq!(d.local_id, "E123");
        assert_eq!(d.identifiers.len(), 1);
    }

    #[test]
    fn extensions_and_unknown_elements_are_accepted() {
        let json = r#"{"resourceType":"Patient","id":"e1",
            "meta":{"profile":["http://example.cn/fhir/StructureDefinition/cn-patient"]},
            "text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">张三</div>"},
            "extension":[{"url":"http://example.cn/fhir/ext/ethnicity","valueCoding":{"code":"01","display":"汉族"}}],
            "modifierExtension":[{"url":"http://example.cn/fhir/ext/flag","valueBoolean":true}],
            "identifier":[{"type":{"coding":[{"code":"MR"}]},"value":"MR-9","extension":[{"url":"urn:x","valueString":"y"}]}],
            "name":[{"family":"张","given":["三"],"_family":{"extension":[{"url":"urn:x","valueCode":"SYL"}]}}],
            "birthDate":"1985-03","_birthDate":{"extension":[{"url":"http://hl7.org/fhir/StructureDefinition/patient-birthTime","valueDateTime":"1985-03-12T08:30:00+08:00"}]},
            "deceasedBoolean":false,
            "maritalStatus":{"coding":[{"code":"M"}]},
            "somethingFromALaterVersion":{"a":[1,2,3]}}"#;
        let d = patient_demographics(json, "h").unwrap();
        assert_eq!(d.local_id, "MR-9");
        assert_eq!(d.names, vec![PersonName::parts("张", "三")]);
        assert_eq!(d.birth_date.as_deref(), Some("1985-03"));
        let d = patient_demographics(
            r#"{"resourceType":"Patient","id":"y","birthDate":"1985"}"#,
            "h",
        )
        .unwrap();
        assert_eq!(d.birth_date.as_deref(), Some("1985"));
    }

    #[test]
    fn another_resource_is_named_at_resource_type() {
        let e = err(r#"{"resourceType":"Observation","status":"final","id":"o"}"#);
        assert_eq!(e.path, "resourceType");
        assert_eq!(e.what, "expected Patient, found Observation");
        let e = err(r#"{"id":"x"}"#);
        assert_eq!(e.path, "resourceType");
        assert!(e.what.contains("missing"), "{e}");
        let e = err(r#"{"resourceType":"<script>Bundle"}"#);
        assert_eq!(e.what, "expected Patient, found scriptBundle");
    }

    #[test]
    fn an_invalid_birth_date_is_named_without_its_value() {
        for bad in [
            "1985-13-01",
            "1985年3月12日",
            "12/03/1985",
            "19850312",
            "1985-02-30",
        ] {
            let e = err(&format!(
                r#"{{"resourceType":"Patient","id":"x","birthDate":"{bad}"}}"#
            ));
            assert_eq!(e.path, "birthDate", "{bad}: {e}");
            assert!(e.what.starts_with("not a FHIR date"), "{bad}: {e}");
            assert!(!e.to_string().contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn errors_name_the_path_without_the_value() {
        let e = err(r#"{"resourceType":"Patient","name":[{"given":"王五"}]}"#);
        assert_eq!(e.path, "name[0].given");
        assert!(!e.what.contains("王五"), "{e}");
        assert!(e.column.is_some());
        let e = err(r#"{"resourceType":"Patient","id":"x","gender":"男性"}"#);
        assert_eq!(e.path, "gender");
        assert_eq!(e.what, "not one of male, female, other, unknown");
        let e =
            err(r#"{"resourceType":"Patient","telecom":[{"system":"wechat-秘密","value":"1"}]}"#);
        assert_eq!(e.path, "telecom[0].system");
        assert!(!e.to_string().contains("秘密"), "{e}");
        let e = err(r#"{"resourceType":"Patient","id":"x"} {"more":1}"#);
        assert_eq!(e.path, "");
        let e = err(r#"{"resourceType":"Patient","name":[{"family":"张"#);
        assert!(!e.to_string().contains('张'), "{e}");
    }
}
