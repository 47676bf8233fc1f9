//! `ORM^O01` (v2.3–2.4) and `OML^O21` (v2.5+) → [`ConsultationOrder`]: a consultation request
//! (会诊申请) from the HIS, or its cancellation, hold, change or status (STANDARDS HL7-40,
//! CN-03). Field positions are those of v2.3 to v2.5.1, which agree on every field read here;
//! `TQ1` only exists from v2.5 and is read whenever it is there.
//!
//! One message is one order: `ORC` with at most one `OBR`, its `TQ1`, `DG1`, `OBX` and `NTE`
//! segments, for one patient. Where the standard has moved a value between versions, the newer
//! place wins and the older places are read when it is empty:
//!
//! | value | read from, in order |
//! |---|---|
//! | order numbers | `ORC-2`/`ORC-3`, else `OBR-2`/`OBR-3` |
//! | ordering provider | `ORC-12`, else `OBR-16` |
//! | requesting facility | `ORC-21` (XON: name, id `XON.10` else `XON.3`), else `ORC-17`, else `MSH-4` |
//! | priority | `TQ1-9`, else `ORC-7.6`, else `OBR-27.6`, else `OBR-5` |
//! | requested time | `TQ1-7`, else `ORC-7.4`, else `OBR-27.4`, else `OBR-6` |
//!
//! Many HIS send no `TQ1` and only `OBR-27`; that is read without a warning. When two places
//! disagree on the priority, the first one is used and the other is named in a warning.

use serde::{Deserialize, Serialize};

use super::oru::Observation;
use super::{Coded, Doctor, EntityId, PatientSummary, Timestamp, Visit};

mod codes;
mod reading;

pub use codes::is_icd10_code;
pub(super) use reading::map_order;

/// A consultation request from the HIS (`ORM^O01`, `OML^O21`), in JSON `"record": "order"`.
///
/// [`crate::mapping::map`] fails (naming the path) when the message has no `ORC` or an
/// `ORC-1` outside HL7 table 0119, no `PID` or no patient identifier, no order number at all
/// (`ORC-2`/`ORC-3`/`OBR-2`/`OBR-3`: the order could never be answered or cancelled), several
/// patients (`PID[2]`) or several orders (`ORC[2]`, `OBR[2]`), or, for a new order (`NW`), no
/// requested service code (`OBR-4.1`). Everything else is optional and read tolerantly: a
/// value that cannot be read is kept as sent with a warning naming its path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConsultationOrder {
    /// `ORM^O01` or `OML^O21`.
    pub message_type: String,
    /// `O01` or `O21`.
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
    /// `ORC-1`: what the HIS asks for.
    pub control: OrderControl,
    /// `ORC-16`, the reason for the control (e.g. why an order is cancelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_reason: Option<Coded>,
    /// `ORC-2`, else `OBR-2`: the HIS's own number for the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placer_order_number: Option<EntityId>,
    /// `ORC-3`, else `OBR-3`: the number the consultation platform gave (on changes and
    /// cancels of an order it has answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filler_order_number: Option<EntityId>,
    /// `ORC-4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placer_group_number: Option<EntityId>,
    /// `ORC-5` (table 0038: `SC` scheduled, `IP` in process, `CM` completed, `CA` cancelled …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_status: Option<String>,
    /// `ORC-9`, when the HIS recorded the order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_time: Option<Timestamp>,
    /// The `PID` (at least one identifier, read as for ADT).
    pub patient: PatientSummary,
    /// The `PV1`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visit: Option<Visit>,
    /// `ORC-12`, else `OBR-16`: the local doctor asking (邀请方医师).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_provider: Option<Doctor>,
    /// `ORC-21`, else `ORC-17`, else `MSH-4`: the inviting facility (邀请方).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requesting_facility: Option<OrderFacility>,
    /// How soon the consultation is needed, from [`ConsultationOrder::priority`]; `routine`
    /// when no priority is sent (the HL7 default).
    pub urgency: Urgency,
    /// The priority code as sent and where it was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// When the consultation is asked for: `TQ1-7`, else `ORC-7.4`, else `OBR-27.4`, else
    /// `OBR-6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_time: Option<Timestamp>,
    /// `OBR-4`, the universal service identifier (e.g. `HZ-XNK^心内科会诊^L`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_service: Option<Coded>,
    /// The department asked for, read from `OBR-4` (see [`Department`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_department: Option<Department>,
    /// `OBR-31`, every repetition: the reason for the request (邀请事由).
    #[serde(default)]
    pub reason_for_study: Vec<Coded>,
    /// Every `DG1`, in order.
    #[serde(default)]
    pub diagnoses: Vec<Diagnosis>,
    /// `OBR-13`, relevant clinical information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clinical_info: Option<String>,
    /// `NTE-3` of every `NTE` that does not follow an `OBX` (those belong to the attachment).
    #[serde(default)]
    pub notes: Vec<String>,
    /// The case summary (病历摘要, CN-03): `clinical_info` and then the `notes`, one per line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_summary: Option<String>,
    /// Every `OBX`, in order: prior results, reports and image references sent with the
    /// request.
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    /// What could not be read as expected, by path; values are kept as sent.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// `ORC-1`, the order control code as sent (upper case) and what it asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderControl {
    /// HL7 table 0119: `NW`, `CA`, `XO`, ….
    pub code: String,
    /// What the code means for a consultation.
    pub action: OrderAction,
}

/// What an `ORC-1` code asks the consultation platform to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderAction {
    /// `NW`: a new request.
    New,
    /// `CA`, `OC`, `CR`, `DC`, `OD`, `DR`: cancel (or discontinue) the request.
    Cancel,
    /// `XO`, `XX`, `XR`, `RP`, `RU`, `RO`, `RQ`: the request was changed or replaced.
    Change,
    /// `HD`, `OH`, `HR`: put the request on hold.
    Hold,
    /// `RL`, `OE`, `OR`: release a held request.
    Release,
    /// `SC`, `SS`, `SR`, `SN`, `NA`, `OK`, `RR`: a status message or request.
    Status,
    /// Any other code of table 0119 (`RE`, `UA`, `CH`, `PA`, refills, …): nothing to do for a
    /// consultation; the pipeline decides.
    Other,
}

impl OrderAction {
    /// The action of a table 0119 code (upper case); `None` for a code not in the table.
    pub fn of(code: &str) -> Option<OrderAction> {
        Some(match code {
            "NW" => OrderAction::New,
            "CA" | "OC" | "CR" | "DC" | "OD" | "DR" => OrderAction::Cancel,
            "XO" | "XX" | "XR" | "RP" | "RU" | "RO" | "RQ" => OrderAction::Change,
            "HD" | "OH" | "HR" => OrderAction::Hold,
            "RL" | "OE" | "OR" => OrderAction::Release,
            "SC" | "SS" | "SR" | "SN" | "NA" | "OK" | "RR" => OrderAction::Status,
            "AF" | "CH" | "CN" | "DE" | "DF" | "FU" | "LI" | "OF" | "OP" | "PA" | "PR" | "PY"
            | "RE" | "RF" | "UA" | "UC" | "UD" | "UF" | "UH" | "UM" | "UN" | "UR" | "UX" => {
                OrderAction::Other
            }
            _ => return None,
        })
    }
}

/// How soon a consultation is needed: the domain's one urgency (routine, urgent, critical).
/// [`Urgency::parse`] reads the order's priority code (HL7 table 0027: `S` stat, `A` ASAP,
/// `R` routine, …) or the Chinese word a HIS sends (急会诊, 危急, 常规, …).
pub use huizhen_domain::Urgency;

/// A priority code as sent and the path it came from (`TQ1-9`, `ORC-7.6`, `OBR-27.6`, `OBR-5`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Priority {
    /// The code as sent (trimmed).
    pub code: String,
    /// Where it was read.
    pub path: String,
}

/// The facility asking for the consultation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderFacility {
    /// `XON.10` (v2.5+), else `XON.3`, of `ORC-21`; `ORC-17.1`; or `MSH-4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `XON.1` of `ORC-21`; `ORC-17.2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where it was read: `ORC-21`, `ORC-17` or `MSH-4`.
    pub path: String,
}

/// The department a consultation is asked of, read from `OBR-4`: its code, and its text with
/// the words that name the service rather than the department taken off (`远程心内科会诊` →
/// `心内科`; `Cardiology consultation` → `Cardiology`). No name when nothing is left
/// (`远程会诊`). A pipeline that needs the platform's own department codes maps `code` with a
/// table (a `map` step or a plugin).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Department {
    /// `OBR-4.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// `OBR-4.2` without the service words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `OBR-4.3`, the coding system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
}

/// A diagnosis (`DG1`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// `DG1-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_id: Option<String>,
    /// `DG1-3` as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Coded>,
    /// The ICD-10 code: `DG1-3.1` when `DG1-3.3` names ICD-10 (`I10`, `ICD10`, `ICD-10-CN`,
    /// `GB/T 14396`, …), else `DG1-3.4` when `DG1-3.6` does, else `DG1-3.1` when no system is
    /// named and it has the shape of one (`I20.000`, `K35.800x002`, `J18.9`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icd10: Option<String>,
    /// `DG1-4`, the description (older HIS put the text here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `DG1-5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Timestamp>,
    /// `DG1-6` (table 0052: `A` admitting, `W` working, `F` final).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis_type: Option<String>,
}

/// Something sent with the request (`OBX`), by `OBX-2`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Attachment {
    /// An `RP` reference pointer (a report or file kept elsewhere).
    Reference {
        /// `OBX-1`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        set_id: Option<String>,
        /// `OBX-3`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<Coded>,
        /// `RP.1`, the pointer (a URL, a file or document id).
        pointer: String,
        /// `RP.2`, the application that holds it (HD.1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        application: Option<String>,
        /// `RP.3`, type of data (table 0191: `AP`, `IM`, `TEXT`, …).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data_type: Option<String>,
        /// `RP.4`, subtype (`PDF`, `JPEG`, `DICOM`, …).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subtype: Option<String>,
        /// The `NTE`s after it.
        #[serde(default)]
        notes: Vec<String>,
    },
    /// A DICOM study (an `OBX-3` of `113014` (DCM), `0020000D`, `StudyInstanceUID` or a text
    /// naming the Study Instance UID, whose value is a UID); the image itself stays in PACS.
    DicomStudy {
        /// `OBX-1`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        set_id: Option<String>,
        /// `OBX-3`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<Coded>,
        /// The Study Instance UID (`OBX-5.1`).
        study_uid: String,
        /// The `NTE`s after it.
        #[serde(default)]
        notes: Vec<String>,
    },
    /// An `ED` document sent inline (its data kept as sent, usually Base64).
    Embedded {
        /// `OBX-1`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        set_id: Option<String>,
        /// `OBX-3`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<Coded>,
        /// `ED.2`, type of data.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data_type: Option<String>,
        /// `ED.3`, subtype.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subtype: Option<String>,
        /// `ED.4`, encoding (`Base64`, `A` ASCII, `Hex`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        encoding: Option<String>,
        /// `ED.5`.
        data: String,
        /// The `NTE`s after it.
        #[serde(default)]
        notes: Vec<String>,
    },
    /// Any other result (a vital sign, a finding, a text), read as an `ORU` observation.
    Observation(Box<Observation>),
}

impl Attachment {
    fn notes_mut(&mut self) -> &mut Vec<String> {
        match self {
            Attachment::Reference { notes, .. }
            | Attachment::DicomStudy { notes, .. }
            | Attachment::Embedded { notes, .. } => notes,
            Attachment::Observation(o) => &mut o.notes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urgencies() {
        for (code, want) in [
            ("S", Urgency::Critical),
            ("stat", Urgency::Critical),
            ("A", Urgency::Urgent),
            ("P", Urgency::Urgent),
            ("T", Urgency::Urgent),
            ("急", Urgency::Urgent),
            ("R", Urgency::Routine),
            ("PRN", Urgency::Routine),
            ("常规", Urgency::Routine),
        ] {
            assert_eq!(Urgency::parse(code), Some(want), "{code}");
        }
        assert_eq!(Urgency::parse("Z"), None);
    }

    #[test]
    fn order_actions() {
        assert_eq!(OrderAction::of("NW"), Some(OrderAction::New));
        assert_eq!(OrderAction::of("CA"), Some(OrderAction::Cancel));
        assert_eq!(OrderAction::of("DC"), Some(OrderAction::Cancel));
        assert_eq!(OrderAction::of("XO"), Some(OrderAction::Change));
        assert_eq!(OrderAction::of("HD"), Some(OrderAction::Hold));
        assert_eq!(OrderAction::of("RL"), Some(OrderAction::Release));
        assert_eq!(OrderAction::of("SC"), Some(OrderAction::Status));
        assert_eq!(OrderAction::of("RE"), Some(OrderAction::Other));
        assert_eq!(OrderAction::of("ZZ"), None);
        assert_eq!(OrderAction::of("nw"), None, "callers upper-case first");
    }
}
