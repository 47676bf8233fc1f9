//! Built-in mappings from HL7 v2 messages to typed records (STANDARDS HL7-32, HL7-34, HL7-40,
//! MATCH-05): [`map`] turns an `ADT^A01/A04/A05/A08/A28/A31/A40` into a [`PatientRecord`] and an
//! `ORU^R01` into [`Observations`]. Pure code: no I/O, no clock, no panics on any input.
//!
//! **Not sent, null, value (HL7-32).** Every optional patient field is a [`Field`]: an empty
//! HL7 field (`||`, or missing) is [`Field::NotSent`] ("keep what is stored"), the explicit
//! null `""` is [`Field::Null`] ("delete what is stored"), anything else is
//! [`Field::Value`]. In JSON this is merge-patch shaped: a field not sent is left out, a null
//! is `null`, a value is the value. Inside a value, `null` never appears: a component that is
//! not there is left out, and lists are always present (possibly empty). A field whose
//! repetitions carry nothing usable (only component separators, `^^^`) counts as not sent; one
//! whose every part is `""` counts as null.
//!
//! **Tolerance (HL7-34).** Segments are looked up by name, wherever they are; Z-segments and
//! segments unexpected for the trigger are ignored. A value that cannot be read (a date that
//! is not a date, a resident identity number with a wrong check character, a sex code outside
//! the tables) is kept as sent and reported in the record's `warnings`, never rejected.
//! Warnings and errors name paths (`PID-3[2]`), never patient data. [`map`] fails only when the
//! message cannot give a usable record: an unsupported type, an ADT without `PID` or without
//! any patient identifier (ADT updates are keyed on it), an `A40` without `MRG-1`, an `ORU`
//! without any result, or several patients in one message (mapping them as one would attach
//! results or merges to the wrong patient).
//!
//! **Resident identity numbers (MATCH-05).** [`check_resident_id`] validates an 18-character
//! 居民身份证号 (GB 11643: region, birth date, sequence, ISO 7064 MOD 11-2 check character).
//! Identifiers of type `NI` are checked; a valid one gets its region, birth date and sex
//! under `resident_id`, which are also compared with `PID-7` and `PID-8`.

use serde::{Deserialize, Serialize};

pub use huizhen_domain::check_resident_id;
pub use huizhen_domain::patient::{
    Address, AdministrativeSex, Coded, Doctor, Field, Identifier, Location, Merge, Name,
    PatientRecord, PatientSummary, ResidentId, Sex, Telecom, Timestamp, Visit,
};

use crate::escape::escape_cow;
use crate::parse::{Delimiters, Element, Message, Segment, Value};

/// An entity identifier (EI), e.g. a placer or filler order number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityId {
    /// EI.1.
    pub id: String,
    /// EI.2, namespace (the application that assigned it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The value of an `OBX`, one per repetition of `OBX-5`, typed by `OBX-2`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ObservationValue {
    /// `NM`: the decimal as sent, and as a number when it is one (`[+-]digits[.digits]`).
    Numeric {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        number: Option<f64>,
    },
    /// `ST`, `TX`, `FT`: text, escapes decoded (`\.br\` is a line break).
    Text { text: String },
    /// `CE`, `CWE`, `CNE`, `CF`.
    Coded(Coded),
    /// Any other type (`SN`, `DT`, `TS`, `ED`, `RP`, …) or none: the value as HL7 text with
    /// the standard delimiters whatever the message used (`^` between components, `&` between
    /// subcomponents, delimiters inside data escaped), so `<^500` for an SN; plain text when
    /// the value has no parts.
    Raw { text: String },
}

/// One result (`OBX`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// OBX-1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_id: Option<String>,
    /// OBX-2, upper case (`NM`, `ST`, `CE`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_type: Option<String>,
    /// OBX-3, the observation identifier (what was measured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Coded>,
    /// OBX-4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_id: Option<String>,
    /// OBX-5, every non-empty repetition.
    #[serde(default)]
    pub values: Vec<ObservationValue>,
    /// OBX-6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<Coded>,
    /// OBX-7, e.g. `3.9-6.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_range: Option<String>,
    /// OBX-8, every repetition (table 0078: `H`, `L`, `A`, `N`, …).
    #[serde(default)]
    pub abnormal_flags: Vec<String>,
    /// OBX-11 (table 0085: `F` final, `P` preliminary, `C` corrected, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_status: Option<String>,
    /// OBX-14.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observation_time: Option<Timestamp>,
    /// `NTE-3` of the `NTE` segments that follow this `OBX`.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// One order (`OBR`) with its results.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// OBR-1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_id: Option<String>,
    /// OBR-2, else ORC-2 of the `ORC` just before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placer_number: Option<EntityId>,
    /// OBR-3, else ORC-3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filler_number: Option<EntityId>,
    /// OBR-4, the universal service identifier (what was ordered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Coded>,
    /// OBR-7.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observation_time: Option<Timestamp>,
    /// OBR-25 (table 0123: `F` final, `P` preliminary, `C` corrected, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_status: Option<String>,
    /// `NTE-3` of the `NTE` segments after the `OBR` (or after its `ORC`), before any `OBX`.
    #[serde(default)]
    pub notes: Vec<String>,
    /// The `OBX` segments after this `OBR`, in order.
    #[serde(default)]
    pub observations: Vec<Observation>,
}

/// The results of an `ORU^R01`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observations {
    /// `MSH-9.1^MSH-9.2`, `ORU^R01`.
    pub message_type: String,
    /// `R01`.
    pub event: String,
    /// `MSH-7`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<Timestamp>,
    /// `MSH-10`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_id: Option<String>,
    /// `MSH-3` (HD.1, else HD.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sending_application: Option<String>,
    /// `MSH-4` (HD.1, else HD.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sending_facility: Option<String>,
    /// The `PID`, if the message has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<PatientSummary>,
    /// Every `OBR` in order (never empty). `OBX` segments before any `OBR` are kept under an
    /// order with no `OBR` fields, with a warning.
    pub orders: Vec<Order>,
    /// `NTE-3` of `NTE` segments outside any order (e.g. after `PID`).
    #[serde(default)]
    pub notes: Vec<String>,
    /// What could not be read as expected, by path; values are kept as sent.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// What [`map`] returns. In JSON, `"record": "patient"` or `"record": "observations"` next to
/// the record's fields. (Both are boxed: they are large, and sizes differ.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Mapped {
    Patient(Box<PatientRecord>),
    Observations(Box<Observations>),
}

/// Why a message cannot be mapped. Carries paths and message types, never patient data.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// `MSH-9` names a type no built-in mapping reads.
    #[error(
        "MSH-9: {message_type} is not a message type the built-in mapping reads (it reads ADT^A01, A04, A05, A08, A28, A31, A40 and ORU^R01)"
    )]
    Unsupported {
        /// `MSH-9.1^MSH-9.2` as sent (letters, digits and `_` only, at most 20 characters).
        message_type: String,
    },
    /// The message lacks what the record needs.
    #[error("{path}: {reason}")]
    Unusable {
        /// The path at fault, e.g. `PID-3`, `MRG-1`, `PID[2]`.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl MappingError {
    /// The path at fault (`MSH-9` for an unsupported type).
    pub fn path(&self) -> &str {
        match self {
            MappingError::Unsupported { .. } => "MSH-9",
            MappingError::Unusable { path, .. } => path,
        }
    }

    fn unusable(path: impl Into<String>, reason: impl Into<String>) -> MappingError {
        MappingError::Unusable {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// An HL7 NM: `[+-]digits[.digits]` (or `.digits`); `None` for anything else.
fn parse_decimal(s: &str) -> Option<f64> {
    let t = s.trim();
    let body = t.strip_prefix(['+', '-']).unwrap_or(t);
    let mut dots = 0;
    let mut digits = 0;
    for c in body.chars() {
        match c {
            '.' => dots += 1,
            '0'..='9' => digits += 1,
            _ => return None,
        }
    }
    if dots > 1 || digits == 0 {
        return None;
    }
    t.parse::<f64>().ok().filter(|f| f.is_finite())
}

fn sex_of(code: &str) -> Option<Sex> {
    match code.trim().to_ascii_uppercase().as_str() {
        "M" | "1" | "MALE" | "男" | "男性" => Some(Sex::Male),
        "F" | "2" | "FEMALE" | "女" | "女性" => Some(Sex::Female),
        "O" | "A" | "OTHER" => Some(Sex::Other),
        "U" | "N" | "0" | "9" | "UNKNOWN" | "未知" | "未知的性别" | "未说明" | "未说明的性别" => {
            Some(Sex::Unknown)
        }
        _ => None,
    }
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x3FFFF | 0x3000..=0x303F)
}

fn join_name(parts: &[&Option<String>]) -> String {
    let parts: Vec<&str> = parts.iter().filter_map(|p| p.as_deref()).collect();
    if parts.iter().any(|p| p.chars().any(is_cjk)) {
        parts.concat()
    } else {
        parts.join(" ")
    }
}

fn phone_digits(number: &str) -> Option<String> {
    let d: String = number.chars().filter(char::is_ascii_digit).collect();
    let mobile = |rest: &str| rest.len() == 11 && rest.starts_with('1');
    let d = if let Some(rest) = d.strip_prefix("0086").filter(|r| mobile(r)) {
        rest.to_owned()
    } else if let Some(rest) = d.strip_prefix("86").filter(|r| mobile(r)) {
        rest.to_owned()
    } else {
        d
    };
    (!d.is_empty()).then_some(d)
}

// ---------------------------------------------------------------------------------------------
// Element readers
// ---------------------------------------------------------------------------------------------

/// The decoded, trimmed text of an element with content; `None` for missing, empty, `""` or
/// blank.
fn clean(e: Option<Element<'_>>) -> Option<String> {
    match e?.value() {
        Value::Data(d) => {
            let t = d.text();
            let t = t.trim();
            (!t.is_empty()).then(|| t.to_owned())
        }
        Value::Empty | Value::Null => None,
    }
}

fn comp(e: Element<'_>, c: usize) -> Option<String> {
    clean(e.component(c))
}

fn sub(e: Element<'_>, c: usize, s: usize) -> Option<String> {
    clean(e.component(c).and_then(|c| c.subcomponent(s)))
}

fn hd(e: Element<'_>, c: usize) -> Option<String> {
    sub(e, c, 1).or_else(|| sub(e, c, 2))
}

/// True when the element has at least one `""` and otherwise only empty parts.
fn only_nulls(field: Element<'_>) -> bool {
    let mut any = false;
    for rep in field.repetitions() {
        for c in rep.components() {
            for s in c.subcomponents() {
                if s.is_null() {
                    any = true;
                } else if !s.raw().trim().is_empty() {
                    return false;
                }
            }
        }
    }
    any
}

/// Every usable repetition of a field, as a [`Field`] (see the module documentation).
fn tri_list<'m, T>(
    seg: Option<Segment<'m>>,
    n: usize,
    f: impl FnMut(Element<'m>) -> Option<T>,
) -> Field<Vec<T>> {
    let Some(field) = seg.and_then(|s| s.field(n)) else {
        return Field::NotSent;
    };
    match field.value() {
        Value::Empty => Field::NotSent,
        Value::Null => Field::Null,
        Value::Data(field) => {
            let items: Vec<T> = field
                .repetitions()
                .filter(|r| !r.is_empty() && !r.is_null())
                .filter_map(f)
                .collect();
            if !items.is_empty() {
                Field::Value(items)
            } else if only_nulls(field) {
                Field::Null
            } else {
                Field::NotSent
            }
        }
    }
}

/// The first usable repetition of a field, as a [`Field`].
fn tri_one<'m, T>(
    seg: Option<Segment<'m>>,
    n: usize,
    f: impl FnMut(Element<'m>) -> Option<T>,
) -> Field<T> {
    match tri_list(seg, n, f) {
        Field::NotSent => Field::NotSent,
        Field::Null => Field::Null,
        Field::Value(v) => v.into_iter().next().map_or(Field::NotSent, Field::Value),
    }
}

/// The first usable repetition of a field, or `None`.
fn one<'m, T>(seg: Segment<'m>, n: usize, f: impl FnMut(Element<'m>) -> Option<T>) -> Option<T> {
    tri_one(Some(seg), n, f).into_value()
}

/// Every usable repetition of a field (empty when not sent or null).
fn list<'m, T>(seg: Segment<'m>, n: usize, f: impl FnMut(Element<'m>) -> Option<T>) -> Vec<T> {
    tri_list(Some(seg), n, f).into_value().unwrap_or_default()
}

/// A repetition re-encoded with the standard delimiters (see [`ObservationValue::Raw`]).
fn standard_encoding(rep: Element<'_>) -> String {
    let d = Delimiters::default();
    let components: Vec<String> = rep
        .components()
        .map(|c| {
            let subs: Vec<String> = c
                .subcomponents()
                .map(|s| match s.value() {
                    Value::Data(x) => escape_cow(&x.text(), &d).into_owned(),
                    Value::Null => "\"\"".to_owned(),
                    Value::Empty => String::new(),
                })
                .collect();
            subs.join("&")
        })
        .collect();
    components.join("^")
}

fn text_of(e: Element<'_>) -> Option<String> {
    comp(e, 1)
}

fn timestamp_of(e: Element<'_>) -> Option<Timestamp> {
    comp(e, 1).map(|raw| Timestamp::parse(&raw))
}

fn coded_of(e: Element<'_>) -> Option<Coded> {
    let c = Coded {
        code: comp(e, 1),
        text: comp(e, 2),
        system: comp(e, 3),
        alt_code: comp(e, 4),
        alt_text: comp(e, 5),
        alt_system: comp(e, 6),
    };
    (c != Coded::default()).then_some(c)
}

fn identifier_of(e: Element<'_>) -> Option<Identifier> {
    Some(Identifier {
        id: comp(e, 1)?,
        assigning_authority: hd(e, 4),
        type_code: comp(e, 5),
        resident_id_valid: None,
        resident_id: None,
    })
}

fn name_of(e: Element<'_>) -> Option<Name> {
    let family = sub(e, 1, 1);
    let given = comp(e, 2);
    let further_given = comp(e, 3);
    if family.is_none() && given.is_none() && further_given.is_none() {
        return None;
    }
    let text = join_name(&[&family, &given, &further_given]);
    Some(Name {
        family,
        given,
        further_given,
        suffix: comp(e, 4),
        prefix: comp(e, 5),
        name_type: comp(e, 7),
        representation: comp(e, 8),
        text,
    })
}

fn address_of(e: Element<'_>) -> Option<Address> {
    let a = Address {
        street: sub(e, 1, 1),
        other: comp(e, 2),
        city: comp(e, 3),
        province: comp(e, 4),
        postal_code: comp(e, 5),
        country: comp(e, 6),
        address_type: comp(e, 7),
        county: comp(e, 9),
    };
    let has_place = a.street.is_some()
        || a.other.is_some()
        || a.city.is_some()
        || a.province.is_some()
        || a.postal_code.is_some()
        || a.country.is_some()
        || a.county.is_some();
    has_place.then_some(a)
}

fn telecom_of(e: Element<'_>) -> Option<Telecom> {
    let composed = || {
        let local = comp(e, 7)?;
        let mut parts = Vec::new();
        if let Some(cc) = comp(e, 5) {
            parts.push(format!("+{}", cc.trim_start_matches('+')));
        }
        parts.extend(comp(e, 6));
        parts.push(local);
        if let Some(ext) = comp(e, 8) {
            parts.push(format!("x{ext}"));
        }
        Some(parts.join(" "))
    };
    let number = comp(e, 1).or_else(|| comp(e, 12)).or_else(composed);
    let email = comp(e, 4);
    if number.is_none() && email.is_none() {
        return None;
    }
    Some(Telecom {
        digits: number.as_deref().and_then(phone_digits),
        number,
        use_code: comp(e, 2),
        equipment_type: comp(e, 3),
        email,
    })
}

fn location_of(e: Element<'_>) -> Option<Location> {
    let l = Location {
        point_of_care: comp(e, 1),
        room: comp(e, 2),
        bed: comp(e, 3),
        facility: hd(e, 4),
        building: comp(e, 7),
        floor: comp(e, 8),
        description: comp(e, 9),
    };
    let any = l.point_of_care.is_some()
        || l.room.is_some()
        || l.bed.is_some()
        || l.facility.is_some()
        || l.building.is_some()
        || l.floor.is_some()
        || l.description.is_some();
    any.then_some(l)
}

fn doctor_of(e: Element<'_>) -> Option<Doctor> {
    let id = comp(e, 1);
    let family = sub(e, 2, 1);
    let given = comp(e, 3);
    if id.is_none() && family.is_none() && given.is_none() {
        return None;
    }
    let text = (family.is_some() || given.is_some()).then(|| join_name(&[&family, &given]));
    Some(Doctor {
        id,
        family,
        given,
        text,
        assigning_authority: hd(e, 9),
    })
}

fn entity_of(e: Element<'_>) -> Option<EntityId> {
    Some(EntityId {
        id: comp(e, 1)?,
        namespace: comp(e, 2),
    })
}

fn sex_field(code: Option<String>, warnings: &mut Vec<String>) -> Option<AdministrativeSex> {
    let code = code?;
    let normalized = sex_of(&code).unwrap_or_else(|| {
        warnings.push(
            "PID-8: code not in HL7 table 0001 or GB/T 2261.1; read as unknown, kept as sent"
                .into(),
        );
        Sex::Unknown
    });
    Some(AdministrativeSex { code, normalized })
}

fn warn_bad_time(ts: Option<&Timestamp>, path: &str, warnings: &mut Vec<String>) {
    if ts.is_some_and(|t| t.iso.is_none()) {
        warnings.push(format!(
            "{path}: not an HL7 date/time (YYYY[MM[DD[HH[MM[SS]]]]][+/-ZZZZ]); kept as sent"
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// Patient parts shared by ADT and ORU
// ---------------------------------------------------------------------------------------------

/// The identifiers of a CX field with their 1-based repetition numbers; `NI` ones checked.
fn identifiers_in(
    seg: Segment<'_>,
    n: usize,
    label: &str,
    warnings: &mut Vec<String>,
) -> Vec<(usize, Identifier)> {
    let Some(field) = seg.field(n) else {
        return Vec::new();
    };
    if field.is_null() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, rep) in field.repetitions().enumerate() {
        if rep.is_null() {
            continue;
        }
        let Some(mut ident) = identifier_of(rep) else {
            continue;
        };
        let is_ni = ident
            .type_code
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("NI"));
        if is_ni {
            match check_resident_id(&ident.id) {
                Ok(r) => {
                    ident.resident_id_valid = Some(true);
                    ident.resident_id = Some(r);
                }
                Err(reason) => {
                    ident.resident_id_valid = Some(false);
                    warnings.push(format!(
                        "{label}[{}]: NI identifier is not a valid resident identity number: {reason}; kept as sent",
                        i + 1
                    ));
                }
            }
        }
        out.push((i + 1, ident));
    }
    out
}

/// `PID-3`, else `PID-2`, else `PID-4`, with the path they came from.
fn patient_identifiers(
    pid: Segment<'_>,
    warnings: &mut Vec<String>,
) -> (&'static str, Vec<(usize, Identifier)>) {
    let found = identifiers_in(pid, 3, "PID-3", warnings);
    if !found.is_empty() {
        return ("PID-3", found);
    }
    for (n, label) in [(2, "PID-2"), (4, "PID-4")] {
        let found = identifiers_in(pid, n, label, warnings);
        if !found.is_empty() {
            warnings.push(format!(
                "PID-3: no patient identifier; used {label} (an older HIS layout)"
            ));
            return (label, found);
        }
    }
    ("PID-3", Vec::new())
}

/// Compares valid resident identity numbers with `PID-7` and `PID-8`.
fn cross_check(
    label: &str,
    ids: &[(usize, Identifier)],
    birth: Option<&Timestamp>,
    sex: Option<&AdministrativeSex>,
    warnings: &mut Vec<String>,
) {
    for (i, ident) in ids {
        let Some(r) = &ident.resident_id else {
            continue;
        };
        if let Some(date) = birth.and_then(Timestamp::date)
            && date != r.birth_date
        {
            warnings.push(format!(
                "PID-7: the birth date differs from the one in the resident identity number {label}[{i}]"
            ));
        }
        if let Some(s) = sex
            && matches!(s.normalized, Sex::Male | Sex::Female)
            && s.normalized != r.sex
        {
            warnings.push(format!(
                "PID-8: the sex differs from the one in the resident identity number {label}[{i}]"
            ));
        }
    }
}

struct Header {
    message_type: String,
    trigger: String,
    event_time: Option<Timestamp>,
    control_id: Option<String>,
    sending_application: Option<String>,
    sending_facility: Option<String>,
}

/// Keeps letters, digits and `_` (at most 20): message types go into error texts and logs.
fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(20)
        .collect()
}

fn header(message: &Message) -> Result<Header, MappingError> {
    let msh = message
        .segment("MSH", 1)
        .ok_or_else(|| MappingError::unusable("MSH", "missing"))?;
    let msh9 = msh.field(9);
    let part = |c: usize| {
        msh9.and_then(|f| comp(f, c))
            .map(|s| s.to_ascii_uppercase())
            .unwrap_or_default()
    };
    let mut message_type = part(1);
    let mut trigger = part(2);
    if message_type.is_empty() {
        return Err(MappingError::unusable("MSH-9", "no message type"));
    }
    if trigger.is_empty()
        && let Some((t, e)) = message_type.clone().split_once('_')
    {
        // ADT_A01 sent in MSH-9.1
        message_type = t.to_owned();
        trigger = e.to_owned();
    }
    if trigger.is_empty() {
        trigger = message
            .segment("EVN", 1)
            .and_then(|evn| one(evn, 1, text_of))
            .map(|s| s.to_ascii_uppercase())
            .unwrap_or_default();
    }
    if trigger.is_empty() {
        return Err(MappingError::unusable("MSH-9.2", "no trigger event"));
    }
    Ok(Header {
        message_type: sanitize(&message_type),
        trigger: sanitize(&trigger),
        event_time: one(msh, 7, timestamp_of),
        control_id: one(msh, 10, text_of),
        sending_application: msh.field(3).and_then(|f| hd(f, 1)),
        sending_facility: msh.field(4).and_then(|f| hd(f, 1)),
    })
}

// ---------------------------------------------------------------------------------------------
// map
// ---------------------------------------------------------------------------------------------

/// Maps a message to its typed record (see the module documentation).
///
/// Reads `ADT^A01`, `A04`, `A05`, `A08`, `A28`, `A31`, `A40` as a [`PatientRecord`] and
/// `ORU^R01` as [`Observations`]; any other type is [`MappingError::Unsupported`].
pub fn map(message: &Message) -> Result<Mapped, MappingError> {
    let h = header(message)?;
    match (h.message_type.as_str(), h.trigger.as_str()) {
        ("ADT", "A01" | "A04" | "A05" | "A08" | "A28" | "A31" | "A40") => {
            map_adt(message, h).map(|p| Mapped::Patient(Box::new(p)))
        }
        ("ORU", "R01") => map_oru(message, h).map(|o| Mapped::Observations(Box::new(o))),
        (t, e) => Err(MappingError::Unsupported {
            message_type: format!("{t}^{e}"),
        }),
    }
}

fn map_adt(message: &Message, h: Header) -> Result<PatientRecord, MappingError> {
    let merge = h.trigger == "A40";
    let mut warnings = Vec::new();
    let pid = message.segment("PID", 1).ok_or_else(|| {
        MappingError::unusable("PID", "missing: an ADT message needs the patient segment")
    })?;
    if message.segment("PID", 2).is_some() {
        if merge {
            return Err(MappingError::unusable(
                "PID[2]",
                "an ADT^A40 with several merges; the built-in mapping reads one merge per message (split it)",
            ));
        }
        warnings.push("PID[2]: a second PID segment; only the first is mapped".into());
    }
    let (id_label, ids) = patient_identifiers(pid, &mut warnings);
    if ids.is_empty() {
        return Err(MappingError::unusable("PID-3", "no patient identifier"));
    }
    let p = Some(pid);
    let birth_date = tri_one(p, 7, timestamp_of);
    warn_bad_time(birth_date.value(), "PID-7", &mut warnings);
    let sex = match tri_one(p, 8, text_of) {
        Field::NotSent => Field::NotSent,
        Field::Null => Field::Null,
        Field::Value(code) => {
            sex_field(Some(code), &mut warnings).map_or(Field::NotSent, Field::Value)
        }
    };
    cross_check(
        id_label,
        &ids,
        birth_date.value(),
        sex.value(),
        &mut warnings,
    );

    let evn = message.segment("EVN", 1);
    let evn_time = evn.and_then(|e| one(e, 2, timestamp_of));
    let event_time = match evn_time {
        Some(t) => {
            warn_bad_time(Some(&t), "EVN-2", &mut warnings);
            Some(t)
        }
        None => {
            warn_bad_time(h.event_time.as_ref(), "MSH-7", &mut warnings);
            h.event_time
        }
    };

    let visit = message.segment("PV1", 1).map(|pv1| {
        let s = Some(pv1);
        let v = Visit {
            patient_class: tri_one(s, 2, text_of),
            location: tri_one(s, 3, location_of),
            attending_doctors: tri_list(s, 7, doctor_of),
            hospital_service: tri_one(s, 10, text_of),
            visit_number: tri_one(s, 19, identifier_of),
            admit_time: tri_one(s, 44, timestamp_of),
        };
        warn_bad_time(v.admit_time.value(), "PV1-44", &mut warnings);
        v
    });

    let merge = if merge {
        let mrg = message.segment("MRG", 1).ok_or_else(|| {
            MappingError::unusable(
                "MRG",
                "missing: an ADT^A40 needs the prior identifiers (MRG-1)",
            )
        })?;
        let prior = identifiers_in(mrg, 1, "MRG-1", &mut warnings);
        if prior.is_empty() {
            return Err(MappingError::unusable(
                "MRG-1",
                "no prior patient identifier",
            ));
        }
        Some(Merge {
            prior_identifiers: prior.into_iter().map(|(_, i)| i).collect(),
            prior_account_number: one(mrg, 3, identifier_of),
            prior_visit_number: one(mrg, 5, identifier_of),
            prior_names: list(mrg, 7, name_of),
        })
    } else {
        None
    };

    Ok(PatientRecord {
        message_type: format!("{}^{}", h.message_type, h.trigger),
        event: h.trigger,
        event_time,
        control_id: h.control_id,
        sending_application: h.sending_application,
        sending_facility: h.sending_facility,
        identifiers: ids.into_iter().map(|(_, i)| i).collect(),
        names: tri_list(p, 5, name_of),
        birth_date,
        sex,
        addresses: tri_list(p, 11, address_of),
        home_phones: tri_list(p, 13, telecom_of),
        business_phones: tri_list(p, 14, telecom_of),
        marital_status: tri_one(p, 16, coded_of),
        ethnic_group: tri_one(p, 22, coded_of),
        visit,
        merge,
        warnings,
    })
}

/// Where an `NTE` goes: the segment it follows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Anchor {
    Top,
    Orc,
    Obr,
    Obx,
}

fn note_of(nte: Segment<'_>) -> Option<String> {
    let field = nte.field(3)?;
    let lines: Vec<String> = field
        .repetitions()
        .filter_map(|r| match r.value() {
            Value::Data(d) => Some(d.text().into_owned()),
            Value::Empty | Value::Null => None,
        })
        .collect();
    let text = lines.join("\n");
    (!text.trim().is_empty()).then_some(text)
}

fn observation_of(obx: Segment<'_>, n: usize, warnings: &mut Vec<String>) -> Observation {
    let value_type = one(obx, 2, text_of).map(|t| t.to_ascii_uppercase());
    let mut values = Vec::new();
    if let Some(field) = obx.field(5) {
        for rep in field.repetitions() {
            let Value::Data(rep) = rep.value() else {
                continue;
            };
            let whole = rep.text();
            if whole.trim().is_empty() {
                continue;
            }
            let v = match value_type.as_deref() {
                Some("NM") => {
                    let text = whole.trim().to_owned();
                    let number = parse_decimal(&text);
                    if number.is_none() {
                        warnings.push(format!(
                            "OBX[{n}]-5: an NM value that is not a decimal number; kept as text"
                        ));
                    }
                    ObservationValue::Numeric { text, number }
                }
                Some("ST" | "TX" | "FT") => ObservationValue::Text {
                    text: whole.into_owned(),
                },
                Some("CE" | "CWE" | "CNE" | "CF") => match coded_of(rep) {
                    Some(c) => ObservationValue::Coded(c),
                    None => continue,
                },
                _ => ObservationValue::Raw {
                    text: standard_encoding(rep),
                },
            };
            values.push(v);
        }
    }
    let observation_time = one(obx, 14, timestamp_of);
    warn_bad_time(observation_time.as_ref(), &format!("OBX[{n}]-14"), warnings);
    Observation {
        set_id: one(obx, 1, text_of),
        value_type,
        code: one(obx, 3, coded_of),
        sub_id: one(obx, 4, text_of),
        values,
        units: one(obx, 6, coded_of),
        reference_range: one(obx, 7, text_of),
        abnormal_flags: list(obx, 8, text_of),
        result_status: one(obx, 11, text_of),
        observation_time,
        notes: Vec::new(),
    }
}

fn order_of(
    obr: Segment<'_>,
    orc: Option<Segment<'_>>,
    n: usize,
    warnings: &mut Vec<String>,
) -> Order {
    let observation_time = one(obr, 7, timestamp_of);
    warn_bad_time(observation_time.as_ref(), &format!("OBR[{n}]-7"), warnings);
    Order {
        set_id: one(obr, 1, text_of),
        placer_number: one(obr, 2, entity_of).or_else(|| orc.and_then(|o| one(o, 2, entity_of))),
        filler_number: one(obr, 3, entity_of).or_else(|| orc.and_then(|o| one(o, 3, entity_of))),
        service: one(obr, 4, coded_of),
        observation_time,
        result_status: one(obr, 25, text_of),
        notes: Vec::new(),
        observations: Vec::new(),
    }
}

fn map_oru(message: &Message, h: Header) -> Result<Observations, MappingError> {
    let mut warnings = Vec::new();
    let mut patient = None;
    let mut orders: Vec<Order> = Vec::new();
    let mut notes = Vec::new();
    let mut pending = Vec::new();
    let mut anchor = Anchor::Top;
    let mut orc = None;
    let (mut pids, mut obrs, mut obxs) = (0usize, 0usize, 0usize);
    for seg in message.segments() {
        match seg.name() {
            "PID" => {
                pids += 1;
                if pids > 1 {
                    return Err(MappingError::unusable(
                        format!("PID[{pids}]"),
                        "an ORU^R01 with results for several patients; the built-in mapping reads one patient per message (split it)",
                    ));
                }
                let (label, ids) = patient_identifiers(seg, &mut warnings);
                if ids.is_empty() {
                    warnings.push(
                        "PID-3: no patient identifier; the results can only be placed by their order numbers"
                            .into(),
                    );
                }
                let birth_date = one(seg, 7, timestamp_of);
                warn_bad_time(birth_date.as_ref(), "PID-7", &mut warnings);
                let sex = sex_field(one(seg, 8, text_of), &mut warnings);
                cross_check(
                    label,
                    &ids,
                    birth_date.as_ref(),
                    sex.as_ref(),
                    &mut warnings,
                );
                patient = Some(PatientSummary {
                    identifiers: ids.into_iter().map(|(_, i)| i).collect(),
                    names: list(seg, 5, name_of),
                    birth_date,
                    sex,
                });
                anchor = Anchor::Top;
            }
            "PD1" | "PV1" | "PV2" | "NK1" => anchor = Anchor::Top,
            "ORC" => {
                notes.append(&mut pending);
                orc = Some(seg);
                anchor = Anchor::Orc;
            }
            "OBR" => {
                obrs += 1;
                let mut order = order_of(seg, orc.take(), obrs, &mut warnings);
                order.notes.append(&mut pending);
                orders.push(order);
                anchor = Anchor::Obr;
            }
            "OBX" => {
                obxs += 1;
                let obs = observation_of(seg, obxs, &mut warnings);
                if orders.is_empty() {
                    warnings.push(format!(
                        "OBX[{obxs}]: a result before any OBR; kept under an order without OBR fields"
                    ));
                    orders.push(Order::default());
                }
                if let Some(order) = orders.last_mut() {
                    order.observations.push(obs);
                }
                anchor = Anchor::Obx;
            }
            "NTE" => {
                let Some(note) = note_of(seg) else {
                    continue;
                };
                let order = orders.last_mut();
                match (anchor, order) {
                    (Anchor::Obx, Some(o)) => match o.observations.last_mut() {
                        Some(obs) => obs.notes.push(note),
                        None => o.notes.push(note),
                    },
                    (Anchor::Obr, Some(o)) => o.notes.push(note),
                    (Anchor::Orc, _) => pending.push(note),
                    _ => notes.push(note),
                }
            }
            // Z-segments, SPM, TQ1, CTI, EVN in odd places …: ignored (HL7-34).
            _ => {}
        }
    }
    notes.append(&mut pending);
    if orders.is_empty() {
        return Err(MappingError::unusable(
            "OBR",
            "no OBR and no OBX: an ORU^R01 without results",
        ));
    }
    if patient.is_none() {
        warnings.push("PID: no patient segment".into());
    }
    warn_bad_time(h.event_time.as_ref(), "MSH-7", &mut warnings);
    Ok(Observations {
        message_type: format!("{}^{}", h.message_type, h.trigger),
        event: h.trigger,
        event_time: h.event_time,
        control_id: h.control_id,
        sending_application: h.sending_application,
        sending_facility: h.sending_facility,
        patient,
        orders,
        notes,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        assert_eq!(parse_decimal("5.6"), Some(5.6));
        assert_eq!(parse_decimal(" -0.25 "), Some(-0.25));
        assert_eq!(parse_decimal("+12"), Some(12.0));
        assert_eq!(parse_decimal(".5"), Some(0.5));
        for bad in [
            "", ".", "-", "1.2.3", "1e5", "NaN", "inf", ">5", "5 mmol", "１２",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_and_phones() {
        let z = Some("张".to_owned());
        let g = Some("三丰".to_owned());
        assert_eq!(join_name(&[&z, &g, &None]), "张三丰");
        let z = Some("ZHANG".to_owned());
        let g = Some("SANFENG".to_owned());
        assert_eq!(join_name(&[&z, &g]), "ZHANG SANFENG");
        assert_eq!(
            phone_digits("+86 138-0013-8000").as_deref(),
            Some("13800138000")
        );
        assert_eq!(
            phone_digits("008613800138000").as_deref(),
            Some("13800138000")
        );
        assert_eq!(phone_digits("0771-5551234").as_deref(), Some("07715551234"));
        assert_eq!(phone_digits("n/a"), None);
    }

    #[test]
    fn sexes() {
        for (code, sex) in [
            ("M", Sex::Male),
            ("f", Sex::Female),
            ("1", Sex::Male),
            ("2", Sex::Female),
            ("男", Sex::Male),
            ("女", Sex::Female),
            ("9", Sex::Unknown),
            ("A", Sex::Other),
        ] {
            assert_eq!(sex_of(code), Some(sex), "{code}");
        }
        assert_eq!(sex_of("X"), None);
    }
}
