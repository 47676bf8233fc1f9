//! The typed patient record (STANDARDS HL7-32, HL7-40, MATCH-05): what an ADT, a FHIR Patient
//! or an import file says about a person, as sent. Adapters fill it (the HL7 v2 mapping reads
//! `PID`, `PV1`, `MRG` into it); matching reads it.
//!
//! **Not sent, null, value (HL7-32).** Every optional patient field is a [`Field`]: not sent
//! ("keep what is stored"), the explicit null ("delete what is stored"), or a value. In JSON
//! this is merge-patch shaped: a field not sent is left out, a null is `null`, a value is the
//! value.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::datetime::parse_dtm;

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
