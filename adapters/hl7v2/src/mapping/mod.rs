//! Built-in mappings from HL7 v2 messages to typed records (STANDARDS HL7-32, HL7-34, HL7-40,
//! MATCH-05, CN-03): [`map`] turns an `ADT^A01/A04/A05/A08/A28/A31/A40` into a
//! [`PatientRecord`], an `ORU^R01` into [`Observations`], and an `ORM^O01` or `OML^O21` (a
//! consultation request from the HIS) into a [`ConsultationOrder`]. Pure code: no I/O, no
//! clock, no panics on any input. One file per family: `adt` (and the `PID`/`PV1` parts the
//! others reuse), `oru`, `order`; `read` holds the element readers they share.
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
//! without any result, an order without what [`ConsultationOrder`] lists as required, or several
//! patients in one message (mapping them as one would attach results or merges to the wrong
//! patient).
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

mod adt;
mod order;
mod oru;
mod read;

pub use order::{
    Attachment, ConsultationOrder, Department, Diagnosis, OrderAction, OrderControl, OrderFacility,
    Priority, Urgency, is_icd10_code,
};
pub use oru::{Observation, ObservationValue, Observations, Order};

use crate::parse::Message;
use adt::map_adt;

/// The element and segment readers the mappings share, for adapters that read segments these
/// mappings do not (huizhen-fhir's `hl7v2_to_fhir` reads `SCH`/`AIP`/`TXA` with them), so a
/// `PID`, a date or a coded value reads the same everywhere.
pub mod readers {
    pub use super::adt::{summary_of, visit_of};
    pub use super::read::{
        clean, coded_of, comp, doctor_of, entity_of, identifier_of, list, location_of, note_of,
        one, text_of, timestamp_of,
    };
}
use order::map_order;
use oru::map_oru;
use read::{hd, one, text_of, timestamp_of};

/// An entity identifier (EI), e.g. a placer or filler order number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityId {
    /// EI.1.
    pub id: String,
    /// EI.2, namespace (the application that assigned it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// What [`map`] returns. In JSON, `"record": "patient"`, `"record": "observations"` or
/// `"record": "order"` next to the record's fields. (All are boxed: they are large, and sizes
/// differ.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Mapped {
    Patient(Box<PatientRecord>),
    Observations(Box<Observations>),
    Order(Box<ConsultationOrder>),
}

/// Why a message cannot be mapped. Carries paths and message types, never patient data.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// `MSH-9` names a type no built-in mapping reads.
    #[error(
        "MSH-9: {message_type} is not a message type the built-in mapping reads (it reads ADT^A01, A04, A05, A08, A28, A31, A40, ORU^R01, ORM^O01 and OML^O21)"
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

/// What every record takes from `MSH` (and `EVN-1`).
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
        msh9.and_then(|f| read::comp(f, c))
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

/// Maps a message to its typed record (see the module documentation).
///
/// Reads `ADT^A01`, `A04`, `A05`, `A08`, `A28`, `A31`, `A40` as a [`PatientRecord`],
/// `ORU^R01` as [`Observations`] and `ORM^O01`/`OML^O21` as a [`ConsultationOrder`]; any other
/// type is [`MappingError::Unsupported`].
pub fn map(message: &Message) -> Result<Mapped, MappingError> {
    let h = header(message)?;
    match (h.message_type.as_str(), h.trigger.as_str()) {
        ("ADT", "A01" | "A04" | "A05" | "A08" | "A28" | "A31" | "A40") => {
            map_adt(message, h).map(|p| Mapped::Patient(Box::new(p)))
        }
        ("ORU", "R01") => map_oru(message, h).map(|o| Mapped::Observations(Box::new(o))),
        ("ORM", "O01") | ("OML", "O21") => {
            map_order(message, h).map(|o| Mapped::Order(Box::new(o)))
        }
        (t, e) => Err(MappingError::Unsupported {
            message_type: format!("{t}^{e}"),
        }),
    }
}
