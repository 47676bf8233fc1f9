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

use super::adt::{summary_of, visit_of};
use super::oru::{Observation, observation_of};
use super::read::{
    coded_of, comp, doctor_of, entity_of, free_text, hd, list, note_of, one, sub, text_of,
    timestamp_of, warn_bad_time,
};
use super::{
    Coded, Doctor, EntityId, Header, MappingError, PatientSummary, Timestamp, Visit, sanitize,
};
use crate::parse::{Element, Message, Segment};

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

/// How soon a consultation is needed (MATCH-20, CN-80 set the acceptance windows).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    /// `R` routine, `C` callback, `PRN`; 常规, 普通.
    #[default]
    Routine,
    /// `A` ASAP, `P` preop, `T` timing critical; 急, 加急, 紧急 (急会诊).
    Urgent,
    /// `S` stat; 危急, 特急, 抢救.
    Critical,
}

impl Urgency {
    /// The urgency of a priority code (HL7 table 0027, or the Chinese words HIS send);
    /// `None` for a code it does not know.
    pub fn of(code: &str) -> Option<Urgency> {
        match code.trim().to_ascii_uppercase().as_str() {
            "S" | "STAT" | "危急" | "特急" | "抢救" | "急救" => Some(Urgency::Critical),
            "A" | "ASAP" | "P" | "T" | "URGENT" | "急" | "加急" | "紧急" | "急诊" => {
                Some(Urgency::Urgent)
            }
            "R" | "ROUTINE" | "C" | "PRN" | "常规" | "普通" | "一般" => {
                Some(Urgency::Routine)
            }
            _ => None,
        }
    }
}

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

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// The segments of the one order in a message.
#[derive(Default)]
struct Parts<'m> {
    pid: Option<Segment<'m>>,
    pv1: Option<Segment<'m>>,
    orc: Option<Segment<'m>>,
    obr: Option<Segment<'m>>,
    tq1: Option<Segment<'m>>,
    dg1: Vec<Segment<'m>>,
    notes: Vec<String>,
    attachments: Vec<Attachment>,
}

pub(super) fn map_order(message: &Message, h: Header) -> Result<ConsultationOrder, MappingError> {
    let mut warnings = Vec::new();
    let p = collect(message, &mut warnings)?;
    let orc = p.orc.ok_or_else(|| {
        MappingError::unusable(
            "ORC",
            "missing: an order message needs ORC-1 (order control)",
        )
    })?;
    let control = order_control(orc)?;
    let pid = p
        .pid
        .ok_or_else(|| MappingError::unusable("PID", "missing: an order needs its patient"))?;
    let patient = summary_of(pid, &mut warnings);
    if patient.identifiers.is_empty() {
        return Err(MappingError::unusable("PID-3", "no patient identifier"));
    }
    let obr = p.obr;
    let placer = number(orc, obr, 2, &mut warnings);
    let filler = number(orc, obr, 3, &mut warnings);
    if placer.is_none() && filler.is_none() {
        return Err(MappingError::unusable(
            "ORC-2",
            "no placer or filler order number (ORC-2, ORC-3, OBR-2, OBR-3): the order could never be answered or cancelled",
        ));
    }
    let requested_service = obr.and_then(|o| one(o, 4, coded_of));
    if control.action == OrderAction::New {
        let Some(service) = &requested_service else {
            return Err(match obr {
                None => MappingError::unusable(
                    "OBR",
                    "missing: a new order (ORC-1 NW) needs the requested service (OBR-4)",
                ),
                Some(_) => MappingError::unusable(
                    "OBR-4.1",
                    "no requested service code: a new order (ORC-1 NW) needs one",
                ),
            });
        };
        if service.code.is_none() {
            return Err(MappingError::unusable(
                "OBR-4.1",
                "no requested service code (only a text): a new order (ORC-1 NW) needs one",
            ));
        }
    }
    let (urgency, priority) = urgency(p.tq1, orc, obr, &mut warnings);
    let requested_time = requested_time(p.tq1, orc, obr, &mut warnings);
    let transaction_time = one(orc, 9, timestamp_of);
    warn_bad_time(transaction_time.as_ref(), "ORC-9", &mut warnings);
    let visit = p.pv1.map(|pv1| visit_of(pv1, &mut warnings));
    let diagnoses = p
        .dg1
        .iter()
        .enumerate()
        .map(|(i, dg1)| diagnosis_of(*dg1, i + 1, &mut warnings))
        .collect();
    let clinical_info = obr.and_then(|o| free_text(o, 13));
    let case_summary = summary_text(clinical_info.as_deref(), &p.notes);
    warn_bad_time(h.event_time.as_ref(), "MSH-7", &mut warnings);
    Ok(ConsultationOrder {
        message_type: format!("{}^{}", h.message_type, h.trigger),
        event: h.trigger,
        event_time: h.event_time,
        control_id: h.control_id,
        requesting_facility: facility(orc, h.sending_facility.as_deref()),
        sending_application: h.sending_application,
        sending_facility: h.sending_facility,
        control,
        control_reason: one(orc, 16, coded_of),
        placer_order_number: placer,
        filler_order_number: filler,
        placer_group_number: one(orc, 4, entity_of),
        order_status: one(orc, 5, text_of).map(|s| s.to_ascii_uppercase()),
        transaction_time,
        patient,
        visit,
        ordering_provider: one(orc, 12, doctor_of)
            .or_else(|| obr.and_then(|o| one(o, 16, doctor_of))),
        urgency,
        priority,
        requested_time,
        requested_department: requested_service.as_ref().and_then(department_of),
        requested_service,
        reason_for_study: obr.map(|o| list(o, 31, coded_of)).unwrap_or_default(),
        diagnoses,
        clinical_info,
        notes: p.notes,
        case_summary,
        attachments: p.attachments,
        warnings,
    })
}

/// Walks the segments once: the single `PID`, `PV1`, `ORC`, `OBR` and `TQ1`, every `DG1`,
/// and the `OBX`/`NTE` in order.
fn collect<'m>(
    message: &'m Message,
    warnings: &mut Vec<String>,
) -> Result<Parts<'m>, MappingError> {
    let mut p = Parts::default();
    let (mut pids, mut orcs, mut obrs, mut obxs) = (0usize, 0usize, 0usize, 0usize);
    let mut after_obx = false;
    for seg in message.segments() {
        let name = seg.name();
        match name {
            "PID" => {
                pids += 1;
                if pids > 1 {
                    return Err(MappingError::unusable(
                        format!("PID[{pids}]"),
                        "an order for several patients; the built-in mapping reads one patient per message (split it)",
                    ));
                }
                p.pid = Some(seg);
            }
            "PV1" if p.pv1.is_none() => p.pv1 = Some(seg),
            "ORC" | "OBR" => {
                let count = if name == "ORC" { &mut orcs } else { &mut obrs };
                *count += 1;
                if *count > 1 {
                    return Err(MappingError::unusable(
                        format!("{name}[{count}]"),
                        "several orders in one message; the built-in mapping reads one consultation request per message (split it)",
                    ));
                }
                if name == "ORC" {
                    p.orc = Some(seg);
                } else {
                    p.obr = Some(seg);
                }
            }
            "TQ1" => {
                if p.tq1.is_none() {
                    p.tq1 = Some(seg);
                } else {
                    warnings.push("TQ1[2]: a second timing segment; only the first is read".into());
                }
            }
            "DG1" => p.dg1.push(seg),
            "OBX" => {
                obxs += 1;
                p.attachments.push(attachment_of(seg, obxs, warnings));
            }
            "NTE" => {
                if let Some(note) = note_of(seg) {
                    match p.attachments.last_mut() {
                        Some(a) if after_obx => a.notes_mut().push(note),
                        _ => p.notes.push(note),
                    }
                }
            }
            // MSH, EVN, PD1, NK1, IN1, AL1, SPM, CTI, BLG, Z-segments …: not read (HL7-34).
            _ => {}
        }
        // An NTE after an OBX (and after other NTEs of it) belongs to the OBX.
        after_obx = match name {
            "OBX" => true,
            "NTE" => after_obx,
            _ => false,
        };
    }
    Ok(p)
}

fn order_control(orc: Segment<'_>) -> Result<OrderControl, MappingError> {
    let code = one(orc, 1, text_of)
        .map(|c| c.to_ascii_uppercase())
        .ok_or_else(|| MappingError::unusable("ORC-1", "no order control code"))?;
    let action = OrderAction::of(&code).ok_or_else(|| {
        MappingError::unusable(
            "ORC-1",
            format!(
                "{} is not an order control code of HL7 table 0119 (NW new, CA cancel, XO change, …)",
                sanitize(&code)
            ),
        )
    })?;
    Ok(OrderControl { code, action })
}

/// `ORC-n`, else `OBR-n` (2: placer, 3: filler), with a warning when both are sent and differ.
fn number(
    orc: Segment<'_>,
    obr: Option<Segment<'_>>,
    n: usize,
    warnings: &mut Vec<String>,
) -> Option<EntityId> {
    let from_orc = one(orc, n, entity_of);
    let from_obr = obr.and_then(|o| one(o, n, entity_of));
    match (from_orc, from_obr) {
        (Some(a), Some(b)) => {
            if a.id != b.id {
                warnings.push(format!("OBR-{n}: differs from ORC-{n}; ORC-{n} is used"));
            }
            Some(a)
        }
        (a, b) => a.or(b),
    }
}

/// Every place that holds a value, in order, with its path.
fn found_in<'m, T>(
    places: impl IntoIterator<Item = (&'static str, Option<Element<'m>>)>,
    read: impl Fn(Element<'m>) -> Option<T>,
) -> Vec<(&'static str, T)> {
    places
        .into_iter()
        .filter_map(|(path, e)| Some((path, read(e?)?)))
        .collect()
}

fn urgency(
    tq1: Option<Segment<'_>>,
    orc: Segment<'_>,
    obr: Option<Segment<'_>>,
    warnings: &mut Vec<String>,
) -> (Urgency, Option<Priority>) {
    let found = found_in(
        [
            (
                "TQ1-9",
                tq1.and_then(|s| s.field(9)).and_then(|f| f.component(1)),
            ),
            ("ORC-7.6", orc.field(7).and_then(|f| f.component(6))),
            (
                "OBR-27.6",
                obr.and_then(|s| s.field(27)).and_then(|f| f.component(6)),
            ),
            (
                "OBR-5",
                obr.and_then(|s| s.field(5)).and_then(|f| f.component(1)),
            ),
        ],
        |e| super::read::clean(Some(e)),
    );
    let mut iter = found.into_iter();
    let Some((path, code)) = iter.next() else {
        return (Urgency::Routine, None);
    };
    let urgency = Urgency::of(&code).unwrap_or_else(|| {
        warnings.push(format!(
            "{path}: priority not in HL7 table 0027 (S, A, R, P, C, T, PRN); read as routine, kept as sent"
        ));
        Urgency::Routine
    });
    for (other, code) in iter {
        if Urgency::of(&code).is_some_and(|u| u != urgency) {
            warnings.push(format!(
                "{other}: the priority differs from {path}; {path} is used"
            ));
        }
    }
    (
        urgency,
        Some(Priority {
            code,
            path: path.to_owned(),
        }),
    )
}

fn requested_time(
    tq1: Option<Segment<'_>>,
    orc: Segment<'_>,
    obr: Option<Segment<'_>>,
    warnings: &mut Vec<String>,
) -> Option<Timestamp> {
    // In a TQ the start time is a TS, whose own components are subcomponents here.
    let ts_in_tq = |e: Element<'_>| sub(e, 4, 1).map(|raw| Timestamp::parse(&raw));
    let found = [
        ("TQ1-7", tq1.and_then(|s| one(s, 7, timestamp_of))),
        ("ORC-7.4", orc.field(7).and_then(ts_in_tq)),
        ("OBR-27.4", obr.and_then(|s| s.field(27)).and_then(ts_in_tq)),
        ("OBR-6", obr.and_then(|s| one(s, 6, timestamp_of))),
    ]
    .into_iter()
    .find_map(|(path, t)| Some((path, t?)));
    let (path, t) = found?;
    warn_bad_time(Some(&t), path, warnings);
    Some(t)
}

fn facility(orc: Segment<'_>, msh4: Option<&str>) -> Option<OrderFacility> {
    if let Some(xon) = orc.field(21) {
        let id = comp(xon, 10).or_else(|| comp(xon, 3));
        let name = comp(xon, 1);
        if id.is_some() || name.is_some() {
            return Some(OrderFacility {
                id,
                name,
                path: "ORC-21".into(),
            });
        }
    }
    if let Some(ce) = orc.field(17) {
        let id = comp(ce, 1);
        let name = comp(ce, 2);
        if id.is_some() || name.is_some() {
            return Some(OrderFacility {
                id,
                name,
                path: "ORC-17".into(),
            });
        }
    }
    msh4.map(|id| OrderFacility {
        id: Some(id.to_owned()),
        name: None,
        path: "MSH-4".into(),
    })
}

/// Words around a department name that name the service instead (see [`Department`]).
const SERVICE_PREFIXES: &[&str] = &["远程", "申请"];
const SERVICE_SUFFIXES: &[&str] = &[
    "会诊申请",
    "会诊",
    "申请",
    "consultation request",
    "consultation",
    "consult",
];

fn department_of(service: &Coded) -> Option<Department> {
    let name = service.text.as_deref().and_then(|text| {
        let mut t = text.trim();
        for p in SERVICE_PREFIXES {
            t = t.strip_prefix(p).unwrap_or(t).trim_start();
        }
        for s in SERVICE_SUFFIXES {
            let cut = t.len().saturating_sub(s.len());
            if let (Some(head), Some(tail)) = (t.get(..cut), t.get(cut..))
                && tail.eq_ignore_ascii_case(s)
            {
                t = head.trim_end();
                break;
            }
        }
        (!t.is_empty()).then(|| t.to_owned())
    });
    if service.code.is_none() && name.is_none() {
        return None;
    }
    Some(Department {
        code: service.code.clone(),
        name,
        system: service.system.clone(),
    })
}

/// True for a coding-system name that means ICD-10 (HL7 table 0396 `I10`, and the names
/// Chinese HIS use: `ICD10`, `ICD-10`, `ICD-10-CN`, `ICD10国家临床版`, `GB/T 14396`).
fn is_icd10_system(system: &str) -> bool {
    let s: String = system
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    s == "I10"
        || (s.starts_with("ICD10") && !s.starts_with("ICD10PCS"))
        || s.starts_with("GBT14396")
}

/// True for a code with the shape of an ICD-10 diagnosis code: a letter, a digit, a digit or
/// letter, then optionally `.` and up to 8 letters or digits, or up to 4 without the dot
/// (`J18`, `J18.9`, `I20.000`, `K35.800x002`, `I209`, `U07.1`).
pub fn is_icd10_code(code: &str) -> bool {
    let b = code.as_bytes();
    let head = b.len() >= 3
        && b[0].is_ascii_alphabetic()
        && b[1].is_ascii_digit()
        && b[2].is_ascii_alphanumeric();
    if !head {
        return false;
    }
    let rest = &b[3..];
    match rest.split_first() {
        None => true,
        Some((b'.', tail)) => {
            (1..=8).contains(&tail.len()) && tail.iter().all(u8::is_ascii_alphanumeric)
        }
        Some(_) => rest.len() <= 4 && rest.iter().all(u8::is_ascii_alphanumeric),
    }
}

fn diagnosis_of(dg1: Segment<'_>, n: usize, warnings: &mut Vec<String>) -> Diagnosis {
    let code = one(dg1, 3, coded_of);
    let icd10 = code.as_ref().and_then(|c| icd10_of(c, n, warnings));
    let time = one(dg1, 5, timestamp_of);
    warn_bad_time(time.as_ref(), &format!("DG1[{n}]-5"), warnings);
    Diagnosis {
        set_id: one(dg1, 1, text_of),
        icd10,
        code,
        description: free_text(dg1, 4),
        time,
        diagnosis_type: one(dg1, 6, text_of).map(|t| t.to_ascii_uppercase()),
    }
}

fn icd10_of(c: &Coded, n: usize, warnings: &mut Vec<String>) -> Option<String> {
    let named = |system: &Option<String>| system.as_deref().is_some_and(is_icd10_system);
    let (path, code) = if named(&c.system) {
        (format!("DG1[{n}]-3.1"), c.code.clone())
    } else if named(&c.alt_system) {
        (format!("DG1[{n}]-3.4"), c.alt_code.clone())
    } else if c.system.is_none() && c.code.as_deref().is_some_and(is_icd10_code) {
        return c.code.clone();
    } else {
        warnings.push(format!(
            "DG1[{n}]-3: no ICD-10 code (neither DG1-3.3 nor DG1-3.6 names ICD-10); kept as sent"
        ));
        return None;
    };
    match code {
        Some(code) if is_icd10_code(&code) => Some(code),
        Some(_) => {
            warnings.push(format!(
                "{path}: not an ICD-10 code although the coding system says so; kept as sent"
            ));
            None
        }
        None => {
            warnings.push(format!("{path}: empty, although a coding system is named"));
            None
        }
    }
}

fn summary_text(clinical_info: Option<&str>, notes: &[String]) -> Option<String> {
    let lines: Vec<&str> = clinical_info
        .into_iter()
        .chain(notes.iter().map(String::as_str))
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// OBX codes that mean "Study Instance UID" (DICOM `113014` Study, tag `0020000D`).
fn names_study_uid(code: &Coded) -> bool {
    let c: String = code
        .code
        .as_deref()
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    matches!(
        c.as_str(),
        "113014" | "0020000D" | "STUDYUID" | "STUDYINSTANCEUID"
    ) || code
        .text
        .as_deref()
        .is_some_and(|t| t.to_ascii_lowercase().contains("study instance uid"))
}

/// A DICOM UID: up to 64 characters, numeric components separated by dots, no leading zero.
fn is_uid(s: &str) -> bool {
    s.len() <= 64
        && s.contains('.')
        && s.split('.').all(|arc| {
            !arc.is_empty()
                && arc.bytes().all(|b| b.is_ascii_digit())
                && (arc == "0" || !arc.starts_with('0'))
        })
}

fn attachment_of(obx: Segment<'_>, n: usize, warnings: &mut Vec<String>) -> Attachment {
    let value_type = one(obx, 2, text_of).map(|t| t.to_ascii_uppercase());
    let set_id = one(obx, 1, text_of);
    let code = one(obx, 3, coded_of);
    let value = obx.field(5).and_then(|f| f.repetition(1));
    let part = |c: usize| value.and_then(|v| comp(v, c));
    if let Some(c) = &code
        && names_study_uid(c)
    {
        match part(1) {
            Some(uid) if is_uid(&uid) => {
                return Attachment::DicomStudy {
                    set_id,
                    code,
                    study_uid: uid,
                    notes: Vec::new(),
                };
            }
            _ => warnings.push(format!(
                "OBX[{n}]-5: OBX-3 names a Study Instance UID but the value is not a DICOM UID; read as an observation"
            )),
        }
    }
    match value_type.as_deref() {
        Some("RP") => {
            if let Some(pointer) = part(1) {
                return Attachment::Reference {
                    set_id,
                    code,
                    pointer,
                    application: value.and_then(|v| hd(v, 2)),
                    data_type: part(3),
                    subtype: part(4),
                    notes: Vec::new(),
                };
            }
        }
        Some("ED") => {
            if let Some(data) = part(5) {
                return Attachment::Embedded {
                    set_id,
                    code,
                    data_type: part(2),
                    subtype: part(3),
                    encoding: part(4),
                    data,
                    notes: Vec::new(),
                };
            }
        }
        _ => {}
    }
    Attachment::Observation(Box::new(observation_of(obx, n, warnings)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icd10_shapes() {
        for good in [
            "J18",
            "J18.9",
            "I20.000",
            "K35.800x002",
            "I209",
            "U07.1",
            "C7A",
            "S72.001A",
        ] {
            assert!(is_icd10_code(good), "{good}");
        }
        for bad in [
            "",
            "J1",
            "18.9",
            "J18.",
            "J18.123456789",
            "J18-9",
            "张三",
            "JJ8",
            "J18 9",
        ] {
            assert!(!is_icd10_code(bad), "{bad}");
        }
        for system in [
            "I10",
            "ICD10",
            "ICD-10",
            "icd-10-cn",
            "ICD10国家临床版",
            "GB/T 14396-2016",
        ] {
            assert!(is_icd10_system(system), "{system}");
        }
        for system in ["I9", "ICD9CM", "I10P", "ICD-10-PCS", "L", "99ZY"] {
            assert!(!is_icd10_system(system), "{system}");
        }
    }

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
            assert_eq!(Urgency::of(code), Some(want), "{code}");
        }
        assert_eq!(Urgency::of("Z"), None);
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

    #[test]
    fn departments_from_the_service_text() {
        let dept = |text: &str| {
            department_of(&Coded {
                code: Some("X".into()),
                text: Some(text.into()),
                ..Coded::default()
            })
            .and_then(|d| d.name)
        };
        assert_eq!(dept("远程心内科会诊").as_deref(), Some("心内科"));
        assert_eq!(dept("神经内科会诊申请").as_deref(), Some("神经内科"));
        assert_eq!(
            dept("Cardiology Consultation").as_deref(),
            Some("Cardiology")
        );
        assert_eq!(dept("呼吸内科").as_deref(), Some("呼吸内科"));
        assert_eq!(dept("远程会诊"), None);
    }

    #[test]
    fn uids() {
        assert!(is_uid("1.2.840.113619.2.55.3.604688119.969.1268071029.320"));
        assert!(is_uid("1.2.156.0.1"));
        assert!(!is_uid("1.2.03"));
        assert!(!is_uid("12345"));
        assert!(!is_uid("1..2"));
        assert!(!is_uid("1.2.a"));
    }
}
