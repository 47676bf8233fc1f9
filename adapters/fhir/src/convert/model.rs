//! Small constructors over the fhir-sdk R4B datatypes the conversion uses (the model's
//! builders for what they require, then its public fields), and HL7 v2 values read into
//! them: coded values, identifiers, names, addresses, phones and date/times.

use fhir_sdk::r4b::codes::{
    AddressUse, AdministrativeGender, ContactPointSystem, ContactPointUse, IdentifierUse, NameUse,
};
use fhir_sdk::r4b::types::{
    Address, Annotation, CodeableConcept, Coding, ContactPoint, Extension, ExtensionValue,
    HumanName, Identifier, Reference,
};
use fhir_sdk::{BuilderError, Date, DateTime, Instant};
use huizhen_hl7::mapping::{
    Address as V2Address, Coded, Doctor, Identifier as V2Identifier, Name, Sex, Telecom, Timestamp,
};

use super::codes::CodeMaps;
use super::{ConvertError, Ctx};

/// The model's builders fail only when a required element is missing; every call here sets
/// them, so this names the type in the (unreachable in practice) error rather than panicking.
pub(super) fn built<T>(r: Result<T, BuilderError>, what: &str) -> Result<T, ConvertError> {
    r.map_err(|e| ConvertError::Model(format!("{what}: {e}")))
}

/// `http://terminology.hl7.org/CodeSystem/v2-0203`, identifier types (MR, NI, PLAC, FILL, VN).
pub(super) const V2_0203: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";
/// HL7 v3 ActCode (Encounter.class).
pub(super) const V3_ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
/// The ISO 21090 name representation extension (IDE ideographic, SYL syllabic, ABC alphabetic).
const EN_REPRESENTATION: &str =
    "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation";
/// 民族 (PID-22), which the FHIR base has no element for.
const ETHNIC_GROUP: &str = "urn:huizhen:fhir:StructureDefinition:ethnic-group";

pub(super) fn coding(
    system: Option<String>,
    code: Option<String>,
    display: Option<String>,
) -> Result<Coding, ConvertError> {
    let mut c = built(Coding::builder().build(), "Coding")?;
    c.system = system;
    c.code = code;
    c.display = display;
    Ok(c)
}

pub(super) fn concept(
    codings: Vec<Coding>,
    text: Option<String>,
) -> Result<CodeableConcept, ConvertError> {
    let mut cc = built(CodeableConcept::builder().build(), "CodeableConcept")?;
    cc.coding = codings.into_iter().map(Some).collect();
    cc.text = text;
    Ok(cc)
}

/// A CodeableConcept with one coding of a fixed system.
pub(super) fn concept_of(
    system: &str,
    code: &str,
    display: Option<&str>,
) -> Result<CodeableConcept, ConvertError> {
    concept(
        vec![coding(
            Some(system.into()),
            Some(code.into()),
            display.map(Into::into),
        )?],
        None,
    )
}

/// A CE/CWE as a CodeableConcept: the mapped coding of the `table` (code maps) first, then the
/// code as sent (CE.1–3) and its alternate (CE.4–6), each with its system resolved through
/// the code maps; the text of CE.2 (else CE.5). `None` when the value holds nothing.
pub(super) fn coded(
    maps: &CodeMaps,
    table: &str,
    c: &Coded,
) -> Result<Option<CodeableConcept>, ConvertError> {
    let mut codings = Vec::new();
    if let Some(mapped) = maps.code(table, c.system.as_deref(), c.code.as_deref()) {
        codings.push(coding(
            Some(mapped.system.clone()),
            Some(mapped.code.clone()),
            mapped.display.clone(),
        )?);
    }
    if let Some(code) = &c.code {
        codings.push(coding(
            Some(maps.code_system(c.system.as_deref())),
            Some(code.clone()),
            c.text.clone(),
        )?);
    }
    if let Some(code) = &c.alt_code {
        codings.push(coding(
            Some(maps.code_system(c.alt_system.as_deref())),
            Some(code.clone()),
            c.alt_text.clone(),
        )?);
    }
    let text = c.text.clone().or_else(|| c.alt_text.clone());
    if codings.is_empty() && text.is_none() {
        return Ok(None);
    }
    concept(codings, text).map(Some)
}

/// A coded value, or the text "unknown" (for elements FHIR requires).
pub(super) fn coded_or_text(
    maps: &CodeMaps,
    table: &str,
    c: Option<&Coded>,
    fallback: &str,
) -> Result<CodeableConcept, ConvertError> {
    if let Some(cc) = c.map(|c| coded(maps, table, c)).transpose()?.flatten() {
        return Ok(cc);
    }
    concept(Vec::new(), Some(fallback.into()))
}

/// An identifier with its system from the code maps (see [`CodeMaps::identifier_system`]) and
/// its HL7 type code (table 0203) as `type`.
pub(super) fn identifier(
    ctx: &Ctx<'_>,
    value: &str,
    authority: Option<&str>,
    type_code: Option<&str>,
) -> Result<Identifier, ConvertError> {
    let mut id = built(Identifier::builder().build(), "Identifier")?;
    id.system = Some(ctx.maps.identifier_system(authority, ctx.facility));
    id.value = Some(value.to_owned());
    if let Some(t) = type_code.filter(|t| !t.is_empty()) {
        let t = t.to_ascii_uppercase();
        id.r#use = match t.as_str() {
            "NI" | "MR" => Some(IdentifierUse::Official),
            _ => None,
        };
        id.r#type = Some(concept_of(V2_0203, &t, None)?);
    }
    Ok(id)
}

/// A patient identifier (CX).
pub(super) fn patient_identifier(
    ctx: &Ctx<'_>,
    i: &V2Identifier,
) -> Result<Identifier, ConvertError> {
    identifier(
        ctx,
        &i.id,
        i.assigning_authority.as_deref(),
        i.type_code.as_deref(),
    )
}

/// `system|value` of an identifier, as a search parameter value (FHIR-20).
pub(super) fn token(id: &Identifier) -> String {
    format!(
        "{}|{}",
        id.system.as_deref().unwrap_or_default(),
        id.value.as_deref().unwrap_or_default()
    )
}

/// A reference to another entry of the Bundle (by its `fullUrl`).
pub(super) fn reference(
    full_url: &str,
    display: Option<String>,
) -> Result<Reference, ConvertError> {
    let mut r = built(Reference::builder().build(), "Reference")?;
    r.reference = Some(full_url.to_owned());
    r.display = display;
    Ok(r)
}

/// A logical reference: the target's type and business identifier (no entry in the Bundle).
pub(super) fn logical_reference(
    type_: &str,
    identifier: Option<Identifier>,
    display: Option<String>,
) -> Result<Reference, ConvertError> {
    let mut r = built(Reference::builder().build(), "Reference")?;
    r.r#type = Some(type_.to_owned());
    r.identifier = identifier;
    r.display = display;
    Ok(r)
}

/// A doctor (XCN) as a logical Practitioner reference: id (with its authority) and name.
pub(super) fn doctor(ctx: &Ctx<'_>, d: &Doctor) -> Result<Option<Reference>, ConvertError> {
    if d.id.is_none() && d.text.is_none() {
        return Ok(None);
    }
    let id =
        d.id.as_deref()
            .map(|v| identifier(ctx, v, d.assigning_authority.as_deref(), None))
            .transpose()?;
    logical_reference("Practitioner", id, d.text.clone()).map(Some)
}

pub(super) fn annotation(text: &str) -> Result<Annotation, ConvertError> {
    built(
        Annotation::builder().text(text.to_owned()).build(),
        "Annotation",
    )
}

pub(super) fn gender(sex: Sex) -> AdministrativeGender {
    match sex {
        Sex::Male => AdministrativeGender::Male,
        Sex::Female => AdministrativeGender::Female,
        Sex::Other => AdministrativeGender::Other,
        Sex::Unknown => AdministrativeGender::Unknown,
    }
}

/// A person name (XPN): family, given (XPN.2 and XPN.3), prefix, suffix, the joined text
/// (`张三丰` for CJK names, without spaces), the use from XPN.7 and the representation
/// (XPN.8: `I` ideographic, `P` phonetic, `A` alphabetic) as the ISO 21090 extension.
pub(super) fn human_name(n: &Name) -> Result<HumanName, ConvertError> {
    let mut h = built(HumanName::builder().build(), "HumanName")?;
    h.family = n.family.clone();
    h.given = [&n.given, &n.further_given]
        .into_iter()
        .flatten()
        .map(|g| Some(g.clone()))
        .collect();
    h.prefix = n.prefix.iter().map(|p| Some(p.clone())).collect();
    h.suffix = n.suffix.iter().map(|s| Some(s.clone())).collect();
    h.text = (!n.text.is_empty()).then(|| n.text.clone());
    h.r#use = match n
        .name_type
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        Some("L") => Some(NameUse::Official),
        Some("D") => Some(NameUse::Usual),
        Some("A" | "N") => Some(NameUse::Nickname),
        Some("M") => Some(NameUse::Maiden),
        Some("C") => Some(NameUse::Old),
        Some("T") => Some(NameUse::Temp),
        _ => None,
    };
    let rep = match n
        .representation
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        Some("I") => Some("IDE"),
        Some("P") => Some("SYL"),
        Some("A") => Some("ABC"),
        _ => None,
    };
    if let Some(code) = rep {
        h.extension.push(extension(
            EN_REPRESENTATION,
            ExtensionValue::Code(code.into()),
        )?);
    }
    Ok(h)
}

pub(super) fn extension(url: &str, value: ExtensionValue) -> Result<Extension, ConvertError> {
    let mut e = built(
        Extension::builder().url(url.to_owned()).build(),
        "Extension",
    )?;
    e.value = Some(value);
    Ok(e)
}

/// 民族 (PID-22) as an extension with a CodeableConcept.
pub(super) fn ethnic_group(maps: &CodeMaps, c: &Coded) -> Result<Option<Extension>, ConvertError> {
    let Some(cc) = coded(maps, "PID-22", c)? else {
        return Ok(None);
    };
    extension(ETHNIC_GROUP, ExtensionValue::CodeableConcept(cc)).map(Some)
}

/// An address (XAD): street and other designation as lines, city, district (XAD.9), state
/// (the province), postal code, country; the use from XAD.7.
pub(super) fn address(a: &V2Address) -> Result<Address, ConvertError> {
    let mut x = built(Address::builder().build(), "Address")?;
    x.line = [&a.street, &a.other]
        .into_iter()
        .flatten()
        .map(|l| Some(l.clone()))
        .collect();
    x.city = a.city.clone();
    x.district = a.county.clone();
    x.state = a.province.clone();
    x.postal_code = a.postal_code.clone();
    x.country = a.country.clone();
    x.r#use = match a
        .address_type
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        Some("H" | "P" | "L") => Some(AddressUse::Home),
        Some("B" | "O") => Some(AddressUse::Work),
        Some("C") => Some(AddressUse::Temp),
        Some("BA") => Some(AddressUse::Old),
        _ => None,
    };
    Ok(x)
}

/// A phone or e-mail (XTN); `work` for PID-14, else by XTN.2/XTN.3 (`CP` → mobile).
pub(super) fn contact_point(t: &Telecom, work: bool) -> Result<Option<ContactPoint>, ConvertError> {
    let mut c = built(ContactPoint::builder().build(), "ContactPoint")?;
    let equipment = t.equipment_type.as_deref().map(str::to_ascii_uppercase);
    let use_code = t.use_code.as_deref().map(str::to_ascii_uppercase);
    if let Some(email) = &t.email {
        c.system = Some(ContactPointSystem::Email);
        c.value = Some(email.clone());
    } else if let Some(n) = &t.number {
        c.system = Some(match (equipment.as_deref(), use_code.as_deref()) {
            (Some("FX"), _) => ContactPointSystem::Fax,
            (Some("BP"), _) => ContactPointSystem::Pager,
            (Some("INTERNET" | "X.400"), _) | (_, Some("NET")) => ContactPointSystem::Email,
            _ => ContactPointSystem::Phone,
        });
        c.value = Some(n.clone());
    } else {
        return Ok(None);
    }
    c.r#use = if equipment.as_deref() == Some("CP") {
        Some(ContactPointUse::Mobile)
    } else if work || use_code.as_deref() == Some("WPN") {
        Some(ContactPointUse::Work)
    } else {
        Some(ContactPointUse::Home)
    };
    Ok(Some(c))
}

/// An HL7 date/time as a FHIR `dateTime`: the precision that was sent, with seconds added
/// to a time without them and the step's `timezone` to a time without an offset (FHIR
/// requires both once there is a time). `None` when the value is not a date/time.
pub(super) fn date_time(ctx: &Ctx<'_>, t: &Timestamp) -> Option<DateTime> {
    let iso = t.iso.as_deref()?;
    iso_date_time(iso, ctx.timezone)
}

pub(super) fn iso_date_time(iso: &str, timezone: &str) -> Option<DateTime> {
    if iso.len() <= 10 {
        return iso.parse::<DateTime>().ok();
    }
    let (date, rest) = iso.split_at(10);
    let time = rest.strip_prefix('T')?;
    // Split off an offset (+08:00, -05:00, Z).
    let (clock, offset) = match time.find(['+', '-', 'Z']) {
        Some(i) => (&time[..i], &time[i..]),
        None => (time, timezone),
    };
    let clock = if clock.len() == 5 {
        format!("{clock}:00")
    } else {
        clock.to_owned()
    };
    format!("{date}T{clock}{offset}").parse::<DateTime>().ok()
}

/// A date/time with at least seconds as a FHIR `instant`; `None` for a date alone.
pub(super) fn instant(ctx: &Ctx<'_>, t: &Timestamp) -> Option<Instant> {
    match date_time(ctx, t)? {
        DateTime::DateTime(i) => Some(i),
        DateTime::Date(_) => None,
    }
}

/// The birth date (date precision, at most the day) of an HL7 timestamp.
pub(super) fn birth_date(t: &Timestamp) -> Option<Date> {
    let iso = t.iso.as_deref()?;
    iso.get(..iso.len().min(10))?.parse::<Date>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_times_get_seconds_and_an_offset() {
        let s = |iso: &str| {
            iso_date_time(iso, "+08:00").map(|d| {
                serde_json::to_value(d)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
        };
        assert_eq!(s("2026").as_deref(), Some("2026"));
        assert_eq!(s("2026-03").as_deref(), Some("2026-03"));
        assert_eq!(s("2026-03-12").as_deref(), Some("2026-03-12"));
        assert_eq!(
            s("2026-03-12T08:30").as_deref(),
            Some("2026-03-12T08:30:00+08:00")
        );
        assert_eq!(
            s("2026-03-12T08:30:05").as_deref(),
            Some("2026-03-12T08:30:05+08:00")
        );
        assert_eq!(
            s("2026-03-12T08:30:05-05:00").as_deref(),
            Some("2026-03-12T08:30:05-05:00")
        );
        assert_eq!(s("2026-03-12T25:30"), None);
    }
}
