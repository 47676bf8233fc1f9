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

use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::escape::escape_cow;
use crate::parse::{Delimiters, Element, Message, Segment, Value};

// ---------------------------------------------------------------------------------------------
// Field: not sent / null / value
// ---------------------------------------------------------------------------------------------

/// An optional field of an update (HL7-32): not sent (keep), null (delete) or a value.
///
/// Serialized merge-patch style: use it with
/// `#[serde(default, skip_serializing_if = "Field::is_not_sent")]` so that `NotSent` is left
/// out; `Null` is `null` and `Value(v)` is `v`. (Serialized on its own, `NotSent` is `null`
/// too.)
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Field<T> {
    /// Empty or missing in the message: keep what is stored.
    #[default]
    NotSent,
    /// The explicit null `""`: delete what is stored.
    Null,
    /// A value.
    Value(T),
}

impl<T> Field<T> {
    /// True for [`Field::NotSent`].
    pub fn is_not_sent(&self) -> bool {
        matches!(self, Field::NotSent)
    }

    /// True for [`Field::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Field::Null)
    }

    /// The value, if there is one.
    pub fn value(&self) -> Option<&T> {
        match self {
            Field::Value(v) => Some(v),
            Field::NotSent | Field::Null => None,
        }
    }

    /// The value, if there is one, by value.
    pub fn into_value(self) -> Option<T> {
        match self {
            Field::Value(v) => Some(v),
            Field::NotSent | Field::Null => None,
        }
    }

    /// Maps the value, keeping `NotSent` and `Null`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Field<U> {
        match self {
            Field::NotSent => Field::NotSent,
            Field::Null => Field::Null,
            Field::Value(v) => Field::Value(f(v)),
        }
    }
}

impl<T: Serialize> Serialize for Field<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Value(v) => s.serialize_some(v),
            Field::NotSent | Field::Null => s.serialize_none(),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Field<T> {
    /// A present key: `null` is [`Field::Null`], anything else a value. A missing key is
    /// [`Field::NotSent`] through `#[serde(default)]`.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(d)? {
            Some(v) => Field::Value(v),
            None => Field::Null,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Value types
// ---------------------------------------------------------------------------------------------

/// An HL7 date/time (DTM/TS) as sent, and in ISO 8601 when it is a valid one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timestamp {
    /// The value as sent (first component of a TS).
    pub raw: String,
    /// ISO 8601 with the precision that was sent: `1985`, `1985-03`, `1985-03-12`,
    /// `2026-01-15T08:30` (an hour alone gets `:00`), `2026-01-15T08:30:05.25+08:00`. Absent
    /// when `raw` is not a valid date/time (a warning says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iso: Option<String>,
}

impl Timestamp {
    /// Reads an HL7 date/time `YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]`. Also accepts
    /// the dashed form some HIS send (`1985-03-12`, `2026-01-15 08:30:00`).
    pub fn parse(raw: &str) -> Timestamp {
        Timestamp {
            raw: raw.to_owned(),
            iso: parse_dtm(raw),
        }
    }

    /// The `YYYY-MM-DD` date, when the value is valid and has day precision or better.
    pub fn date(&self) -> Option<&str> {
        self.iso.as_deref().and_then(|s| s.get(..10))
    }
}

/// A coded value (CE, CWE, CNE): code, text and coding system, plus the alternate triplet
/// (often the national code next to the local one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coded {
    /// Component 1, the identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Component 2, the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Component 3, the name of the coding system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Component 4, the alternate identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alt_code: Option<String>,
    /// Component 5, the alternate text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alt_text: Option<String>,
    /// Component 6, the alternate coding system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alt_system: Option<String>,
}

/// Sex, normalised (the FHIR AdministrativeGender values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sex {
    Male,
    Female,
    Other,
    Unknown,
}

impl fmt::Display for Sex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Sex::Male => "male",
            Sex::Female => "female",
            Sex::Other => "other",
            Sex::Unknown => "unknown",
        })
    }
}

/// `PID-8` as sent and normalised. HL7 table 0001 (`M`, `F`, `O`, `A` → other, `U`, `N` →
/// unknown) and GB/T 2261.1 (`1` 男, `2` 女, `0`, `9` → unknown) are read, and the words
/// 男/女/未知/未说明; any other code is kept and read as unknown, with a warning.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdministrativeSex {
    /// The code as sent.
    pub code: String,
    /// What it means.
    pub normalized: Sex,
}

/// What an 18-character resident identity number (居民身份证号, GB 11643) encodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResidentId {
    /// Characters 1–6, the administrative region (GB/T 2260) where it was issued.
    pub region: String,
    /// Characters 7–14 as `YYYY-MM-DD`.
    pub birth_date: String,
    /// From character 17: odd male, even female.
    pub sex: Sex,
}

/// A patient identifier (CX).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identifier {
    /// CX.1, as sent (trimmed).
    pub id: String,
    /// CX.4, the assigning authority: its namespace id (HD.1), else its universal id (HD.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigning_authority: Option<String>,
    /// CX.5, the identifier type code (table 0203): `MR` medical record number, `NI` national
    /// identifier (居民身份证号), `PI` patient internal, `SS`, `PN`, `VN` visit number, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_code: Option<String>,
    /// For `NI` identifiers only: whether the id is a valid resident identity number
    /// ([`check_resident_id`]). An invalid one is kept, and a warning says why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resident_id_valid: Option<bool>,
    /// For valid `NI` identifiers: what the number encodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resident_id: Option<ResidentId>,
}

/// A person name (XPN).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Name {
    /// XPN.1 (its surname subcomponent): family name, 姓. Some HIS send the whole name here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// XPN.2, given name, 名.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given: Option<String>,
    /// XPN.3, further given names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub further_given: Option<String>,
    /// XPN.4, suffix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// XPN.5, prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// XPN.7, name type (table 0200: `L` legal, `A` alias, `D` display, `M` maiden, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_type: Option<String>,
    /// XPN.8, name representation (table 4000: `I` ideographic, e.g. 张三丰; `P` phonetic or
    /// `A` alphabetic, e.g. pinyin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub representation: Option<String>,
    /// Family, given and further given names joined: without spaces when any part holds CJK
    /// characters (`张三丰`, `阿依古丽·买买提`), with single spaces otherwise (`ZHANG SANFENG`).
    pub text: String,
}

/// An address (XAD).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// XAD.1 (its first subcomponent): street or mailing address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub street: Option<String>,
    /// XAD.2, other designation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other: Option<String>,
    /// XAD.3, city (市).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// XAD.4, state or province (省).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub province: Option<String>,
    /// XAD.5, postal code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// XAD.6, country.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// XAD.7, address type (table 0190: `H` home, `B` business, `BR` birth, `C` current, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_type: Option<String>,
    /// XAD.9, county or district (区/县), code or name as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub county: Option<String>,
}

/// A phone number or e-mail address (XTN).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Telecom {
    /// The number: XTN.1, else XTN.12 (unformatted), else XTN.5–8 put together
    /// (`+86 0771 5551234 x801`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    /// The digits of `number`, without a `+86`/`0086`/`86` prefix in front of an 11-digit
    /// mainland mobile number, for comparing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digits: Option<String>,
    /// XTN.2, use (table 0201: `PRN` primary residence, `WPN` work, `ORN`, `NET`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_code: Option<String>,
    /// XTN.3, equipment (table 0202: `PH` phone, `CP` cell phone, `Internet`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equipment_type: Option<String>,
    /// XTN.4, e-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// A location (PL).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// PL.1, point of care (ward, clinic: 病区/科室).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_of_care: Option<String>,
    /// PL.2, room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// PL.3, bed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bed: Option<String>,
    /// PL.4 (HD.1), facility.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facility: Option<String>,
    /// PL.7, building.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub building: Option<String>,
    /// PL.8, floor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<String>,
    /// PL.9, description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A doctor (XCN).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Doctor {
    /// XCN.1, the doctor's id (工号).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// XCN.2 (its surname subcomponent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// XCN.3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given: Option<String>,
    /// Family and given names joined as in [`Name::text`]; absent without a name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// XCN.9 (HD.1, else HD.2), who assigned the id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigning_authority: Option<String>,
}

/// The visit (`PV1`); every field follows HL7-32.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Visit {
    /// PV1-2, patient class (table 0004: `I` inpatient, `O` outpatient, `E` emergency, …).
    #[serde(default, skip_serializing_if = "Field::is_not_sent")]
    pub patient_class: Field<String>,
    /// PV1-3, assigned location.
    #[serde(default, skip_serializing_if = "Field::is_not_sent")]
    pub location: Field<Location>,
    /// PV1-7, attending doctors.
    #[serde(default, skip_serializing_if = "Field::is_not_sent")]
    pub attending_doctors: Field<Vec<Doctor>>,
    /// PV1-10, hospital service (department code).
    #[serde(default, skip_serializing_if = "Field::is_not_sent")]
    pub hospital_service: Field<String>,
    /// PV1-19, visit number (门诊号/住院号 of this visit).
    #[serde(default, skip_serializing_if = "Field::is_not_sent")]
    pub visit_number: Field<Identifier>,
    /// PV1-44, admit date/time.
    #[serde(default, skip_serializing_if = "Field::is_not_sent")]
    pub admit_time: Field<Timestamp>,
}

/// The merge of an `ADT^A40` (`MRG`): the patient in `PID` absorbs the one identified here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Merge {
    /// MRG-1, every repetition: the identifiers being retired (never empty).
    pub prior_identifiers: Vec<Identifier>,
    /// MRG-3, prior patient account number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_account_number: Option<Identifier>,
    /// MRG-5, prior visit number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_visit_number: Option<Identifier>,
    /// MRG-7, prior names.
    #[serde(default)]
    pub prior_names: Vec<Name>,
}

/// A patient from an `ADT^A01/A04/A05/A08/A28/A31/A40`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientRecord {
    /// `MSH-9.1^MSH-9.2`, e.g. `ADT^A08`.
    pub message_type: String,
    /// The trigger event, `MSH-9.2` (or `EVN-1` when that is empty), e.g. `A08`.
    pub event: String,
    /// `EVN-2` (recorded date/time), else `MSH-7`.
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
    /// Every repetition of `PID-3` with an id (never empty). When `PID-3` has none, those of
    /// `PID-2`, else `PID-4` (older HIS), with a warning.
    pub identifiers: Vec<Identifier>,
    /// PID-5, every repetition (e.g. the ideographic name and its pinyin).
    #[serde(default, skip_serializing_if = "Field::is_not_sent")]
    pub names: Field<Vec<Name>>,
    /// PID-7.
    #[serde(default, skip_serializing_if = "Field::is_not_sent")]
    pub birth_date: Field<Timestamp>,
    /// PID-8.
    #[serde(default, skip_serializing_if = "Field::is_not_sent")]
    pub sex: Field<AdministrativeSex>,
    /// PID-11, every repetition.
    #[serde(default, skip_serializing_if = "Field::is_not_sent")]
    pub addresses: Field<Vec<Address>>,
    /// PID-13, every repetition.
    #[serde(default, skip_serializing_if = "Field::is_not_sent")]
    pub home_phones: Field<Vec<Telecom>>,
    /// PID-14, every repetition.
    #[serde(default, skip_serializing_if = "Field::is_not_sent")]
    pub business_phones: Field<Vec<Telecom>>,
    /// PID-16.
    #[serde(default, skip_serializing_if = "Field::is_not_sent")]
    pub marital_status: Field<Coded>,
    /// PID-22, first repetition (in China, GB/T 3304 民族 codes: `01` 汉族, …).
    #[serde(default, skip_serializing_if = "Field::is_not_sent")]
    pub ethnic_group: Field<Coded>,
    /// The first `PV1`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visit: Option<Visit>,
    /// `MRG`, for `A40` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<Merge>,
    /// What could not be read as expected, by path; values are kept as sent.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// The patient of an `ORU^R01`: the part results are matched on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientSummary {
    /// PID-3 (or PID-2/PID-4, as for [`PatientRecord::identifiers`]); may be empty here
    /// (results can still be placed by their order numbers), with a warning.
    pub identifiers: Vec<Identifier>,
    /// PID-5, every repetition.
    #[serde(default)]
    pub names: Vec<Name>,
    /// PID-7.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<Timestamp>,
    /// PID-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sex: Option<AdministrativeSex>,
}

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

// ---------------------------------------------------------------------------------------------
// Resident identity numbers (GB 11643)
// ---------------------------------------------------------------------------------------------

const ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const ID_CHECK: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];

/// Validates an 18-character resident identity number (居民身份证号, GB 11643): 17 digits
/// (6 region, 8 birth date `YYYYMMDD`, 3 sequence, the last odd for men) and the ISO 7064
/// MOD 11-2 check character (`0`–`9` or `X`; a lower-case `x` is accepted). Surrounding
/// whitespace is ignored. The error says what is wrong without repeating the number.
pub fn check_resident_id(s: &str) -> Result<ResidentId, String> {
    let chars: Vec<char> = s.trim().chars().collect();
    if chars.len() == 15 && chars.iter().all(char::is_ascii_digit) {
        return Err(
            "15-digit first-generation number, which has no check character (expected 18 characters)"
                .into(),
        );
    }
    if chars.len() != 18 {
        return Err(format!("{} characters, expected 18", chars.len()));
    }
    let mut sum = 0u32;
    let mut digits = [0u32; 17];
    for (i, (c, w)) in chars.iter().zip(ID_WEIGHTS).enumerate() {
        let Some(d) = c.to_digit(10) else {
            return Err(format!("character {} is not a digit", i + 1));
        };
        if let Some(slot) = digits.get_mut(i) {
            *slot = d;
        }
        sum += d * w;
    }
    let last = chars.get(17).map(char::to_ascii_uppercase);
    if !matches!(last, Some('0'..='9' | 'X')) {
        return Err("character 18 is not a digit or X".into());
    }
    let birth: String = chars.get(6..14).unwrap_or_default().iter().collect();
    let date = parse_dtm(&birth)
        .filter(|d| d.len() == 10)
        .ok_or_else(|| "characters 7-14 are not a valid birth date (YYYYMMDD)".to_owned())?;
    let expected = ID_CHECK.get((sum % 11) as usize).copied();
    if last != expected {
        return Err("the check character is wrong (ISO 7064 MOD 11-2)".into());
    }
    let sex = if digits.get(16).copied().unwrap_or(0) % 2 == 1 {
        Sex::Male
    } else {
        Sex::Female
    };
    Ok(ResidentId {
        region: chars.get(..6).unwrap_or_default().iter().collect(),
        birth_date: date,
        sex,
    })
}

// ---------------------------------------------------------------------------------------------
// Scalar readers
// ---------------------------------------------------------------------------------------------

/// HL7 DTM → ISO 8601 at the precision sent; `None` when not a valid date/time.
fn parse_dtm(input: &str) -> Option<String> {
    let s = input.trim();
    let dashed;
    let s = if s.as_bytes().get(4) == Some(&b'-') {
        // 1985-03-12, 2026-01-15 08:30:00, 2026-01-15T08:30:00+08:00
        if s.as_bytes().get(7) != Some(&b'-') {
            return None;
        }
        let head: String = s
            .chars()
            .take(19)
            .filter(|c| !matches!(c, '-' | ':' | ' ' | 'T'))
            .collect();
        let tail: String = s.chars().skip(19).filter(|c| *c != ':').collect();
        dashed = head + &tail;
        dashed.as_str()
    } else {
        s
    };
    let (main, tz) = match s.find(['+', '-']) {
        Some(i) => (s.get(..i)?, Some(s.get(i..)?)),
        None => (s, None),
    };
    let (whole, frac) = match main.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (main, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || ![4, 6, 8, 10, 12, 14].contains(&whole.len()) {
        return None;
    }
    if let Some(f) = frac
        && (whole.len() != 14 || !digits(f) || f.len() > 4)
    {
        return None;
    }
    let num = |a: usize, b: usize| -> Option<u32> { whole.get(a..b)?.parse().ok() };
    let year = num(0, 4)?;
    let mut out = format!("{year:04}");
    if whole.len() >= 6 {
        let month = num(4, 6)?;
        if !(1..=12).contains(&month) {
            return None;
        }
        out.push_str(&format!("-{month:02}"));
        if whole.len() >= 8 {
            let day = num(6, 8)?;
            NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
            out.push_str(&format!("-{day:02}"));
        }
    }
    if whole.len() >= 10 {
        let hour = num(8, 10)?;
        let minute = if whole.len() >= 12 { num(10, 12)? } else { 0 };
        if hour > 23 || minute > 59 {
            return None;
        }
        out.push_str(&format!("T{hour:02}:{minute:02}"));
        if whole.len() >= 14 {
            let second = num(12, 14)?;
            if second > 59 {
                return None;
            }
            out.push_str(&format!(":{second:02}"));
            if let Some(f) = frac {
                out.push('.');
                out.push_str(f);
            }
        }
    }
    if let Some(tz) = tz {
        let (sign, rest) = tz.split_at_checked(1)?;
        if rest.len() != 4 || !digits(rest) {
            return None;
        }
        let hh: u32 = rest.get(..2)?.parse().ok()?;
        let mm: u32 = rest.get(2..)?.parse().ok()?;
        if hh > 14 || mm > 59 {
            return None;
        }
        if whole.len() >= 10 {
            out.push_str(&format!("{sign}{hh:02}:{mm:02}"));
        }
    }
    Some(out)
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
    fn resident_id_check_character() {
        // The GB 11643 examples.
        let r = check_resident_id("11010519491231002X").unwrap();
        assert_eq!(r.region, "110105");
        assert_eq!(r.birth_date, "1949-12-31");
        assert_eq!(r.sex, Sex::Female);
        let r = check_resident_id("440524188001010014").unwrap();
        assert_eq!(r.birth_date, "1880-01-01");
        assert_eq!(r.sex, Sex::Male);
        assert!(check_resident_id(" 11010519491231002x ").is_ok());
        let err = check_resident_id("110105194912310021").unwrap_err();
        assert!(err.contains("check character"), "{err}");
        assert!(
            !err.contains("1101"),
            "errors never repeat the number: {err}"
        );
        assert!(
            check_resident_id("110105491231002")
                .unwrap_err()
                .contains("15-digit")
        );
        assert!(
            check_resident_id("1101051949123100")
                .unwrap_err()
                .contains("16 characters")
        );
        assert!(
            check_resident_id("11010519491231A02X")
                .unwrap_err()
                .contains("character 15")
        );
        assert!(
            check_resident_id("11010519491231002Y")
                .unwrap_err()
                .contains("character 18")
        );
        // 1949-02-30 does not exist (whatever the check character).
        assert!(
            check_resident_id("110105194902300020")
                .unwrap_err()
                .contains("birth date")
        );
        assert!(check_resident_id("张三丰张三丰张三丰张三丰张三丰张三丰").is_err());
        assert!(check_resident_id("").is_err());
    }

    #[test]
    fn dtm_to_iso() {
        let cases = [
            ("1985", Some("1985")),
            ("198503", Some("1985-03")),
            ("19850312", Some("1985-03-12")),
            ("1985031208", Some("1985-03-12T08:00")),
            ("198503120830", Some("1985-03-12T08:30")),
            ("20260115083005", Some("2026-01-15T08:30:05")),
            (
                "20260115083005.25+0800",
                Some("2026-01-15T08:30:05.25+08:00"),
            ),
            ("202601150830-0500", Some("2026-01-15T08:30-05:00")),
            ("19850312+0800", Some("1985-03-12")),
            ("1985-03-12", Some("1985-03-12")),
            ("2026-01-15 08:30:00", Some("2026-01-15T08:30:00")),
            (
                "2026-01-15T08:30:00+08:00",
                Some("2026-01-15T08:30:00+08:00"),
            ),
            ("20240229", Some("2024-02-29")),
            ("20230229", None),
            ("19851312", None),
            ("198503121", None),
            ("2026011508300", None),
            ("20260115250000", None),
            ("20260115083005+08", None),
            ("1985-3-12", None),
            ("unknown", None),
            ("", None),
            ("张三", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_dtm(input).as_deref(), want, "{input}");
        }
        assert_eq!(Timestamp::parse("198503120830").date(), Some("1985-03-12"));
        assert_eq!(Timestamp::parse("198503").date(), None);
    }

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
