//! What the consultation workflow announces outside (issue 15 items 6 and 11): the expert's
//! signed opinion for the requesting facility's HIS when a consultation completes, and short
//! notices of the other turns (accepted, escalated to a coordinator, cancelled, failed) for
//! notification gateways (SMS, phone, the duty desk). Pure: the engine gives the consultation
//! after its new events and what it knows beside it ([`KnownPatient`], the expert's name, the
//! local time offset), and gets [`Announcement`]s to put into its outbox in the same
//! transaction as the events.
//!
//! * [`OutboundOpinion`] is the body of `consultation.completed`, and exactly what the HL7
//!   adapter's `hl7_build` step reads to make the `ORU^R01` (or `MDM^T02`) for the HIS: the
//!   consultation id, the HIS's order numbers and patient identifiers from the order the
//!   consultation answers ([`HisOrder`]), the expert, the ICD-10 diagnoses, the treatment plan
//!   and advice, who signed and when, and a reference to the stored signature (the signature
//!   itself stays in the engine).
//! * [`Notice`] is the body of `consultation.accepted`, `.escalated`, `.cancelled` and
//!   `.failed`: ids, the state, who, why, the department and urgency, never patient data.

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::aggregate::{AttemptOutcome, Consultation};
use super::event::{Actor, Event, EventKind};
use super::request::{FieldProblem, Urgency};
use super::state::FailReason;

/// The topic of a completed consultation's signed opinion.
pub const COMPLETED: &str = "consultation.completed";
/// An expert accepted.
pub const ACCEPTED: &str = "consultation.accepted";
/// Handed to a coordinator after the SLA ran out (MATCH-20).
pub const ESCALATED: &str = "consultation.escalated";
/// Cancelled.
pub const CANCELLED: &str = "consultation.cancelled";
/// Failed (SLA breached, technical failure, no-show).
pub const FAILED: &str = "consultation.failed";
/// An imaging study was attached while an expert has the case (accepted or offered): the
/// expert is told there is something new to read (DCM-07).
pub const STUDY_ATTACHED: &str = "consultation.study_attached";

/// The signed consultation opinion as the HIS receives it (unknown fields are refused).
///
/// ```json
/// {
///   "consultation_id": "HZ-2026-000123",
///   "placer_order_number": { "id": "P-778", "namespace": "HIS" },
///   "patient": {
///     "identifiers": [{ "id": "0001234567", "assigning_authority": "HXXRMYY", "type_code": "MR" }],
///     "name": { "family": "张", "given": "三丰" }
///   },
///   "expert": { "id": "E1001", "name": "李四" },
///   "local_doctor": { "id": "D0456", "name": "王建国" },
///   "diagnoses": [{ "code": "I20.000", "text": "不稳定型心绞痛" }],
///   "treatment_plan": "阿司匹林 100mg qd\n复查心电图",
///   "advice": "建议转上级医院行冠脉造影",
///   "signed_at": "2026-01-15T10:30:00+08:00",
///   "signer": { "id": "E1001", "name": "李四" },
///   "signature_ref": "sig-7f3a"
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundOpinion {
    /// The consultation's id: `OBR-3`/`ORC-3` (filler order number) unless
    /// `filler_order_number` is given, always `OBR-20`, and `TXA-12` (unique document number).
    pub consultation_id: String,
    /// The HIS's order number (`ORC-2` of its `ORM`/`OML`): `ORC-2`, `OBR-2`, `TXA-14`.
    #[serde(default)]
    pub placer_order_number: Option<OrderNumber>,
    /// The filler order number the HIS knows, when it is not the consultation id under the
    /// sending application: `ORC-3`, `OBR-3`, `TXA-15`.
    #[serde(default)]
    pub filler_order_number: Option<OrderNumber>,
    /// `PID`.
    pub patient: OutboundPatient,
    /// The consulting expert (受邀方医师): `OBR-32`, `OBX-16`, `TXA-5`, `TXA-9`.
    pub expert: Clinician,
    /// The local doctor who asked (邀请方医师): `ORC-12`, `OBR-16`.
    #[serde(default)]
    pub local_doctor: Option<Clinician>,
    /// The diagnoses, ICD-10: one `OBX` each (`CWE`, coding system `I10`).
    #[serde(default)]
    pub diagnoses: Vec<OpinionDiagnosis>,
    /// The treatment plan (治疗方案), multi-line text.
    #[serde(default)]
    pub treatment_plan: Option<String>,
    /// The advice (会诊建议), multi-line text.
    #[serde(default)]
    pub advice: Option<String>,
    /// When the opinion was signed, RFC 3339 (`2026-01-15T10:30:00+08:00`): `OBR-7`,
    /// `OBR-22`, `OBX-14`, `TXA-4`, `TXA-22`, and `MSH-7` by default.
    pub signed_at: String,
    /// Who signed (usually the expert): `OBX-16` of the signature `OBX`, `TXA-22`, `EVN-5`.
    pub signer: Clinician,
    /// The id of the stored signature (the signature itself is not sent in HL7).
    pub signature_ref: String,
    /// `OBR-4`, what the HIS ordered; default `11488-4^Consult note^LN`.
    #[serde(default)]
    pub service: Option<ServiceCode>,
}

/// An entity identifier (EI): `id^namespace`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderNumber {
    /// EI.1.
    pub id: String,
    /// EI.2, the application that assigned it.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// The patient as the HIS knows them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundPatient {
    /// `PID-3`, at least one.
    pub identifiers: Vec<PatientIdentifier>,
    /// `PID-5`.
    pub name: PersonName,
}

/// A patient identifier (CX): `id^^^assigning_authority^type_code`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientIdentifier {
    /// CX.1.
    pub id: String,
    /// CX.4 (HD.1), e.g. `HXXRMYY`.
    #[serde(default)]
    pub assigning_authority: Option<String>,
    /// CX.5 (table 0203: `MR`, `NI`, …); `type` is accepted too.
    #[serde(default, alias = "type")]
    pub type_code: Option<String>,
}

/// A person's name (XPN): `family^given`. A name that is not split goes whole in `family`,
/// as most Chinese HIS send it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonName {
    /// XPN.1.
    pub family: String,
    /// XPN.2.
    #[serde(default)]
    pub given: Option<String>,
}

/// A doctor (XCN): `id^name` (the whole name in the family-name component).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clinician {
    /// XCN.1.
    pub id: String,
    /// XCN.2.
    pub name: String,
}

/// A diagnosis: an ICD-10 code and its text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpinionDiagnosis {
    /// ICD-10 (`I20.000`, `J18.9`; the national clinical version's `K35.800x002` too).
    pub code: String,
    /// Its text (`不稳定型心绞痛`).
    pub text: String,
}

/// A coded value (CE/CWE): `code^text^system`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceCode {
    /// Component 1.
    pub code: String,
    /// Component 2.
    #[serde(default)]
    pub text: Option<String>,
    /// Component 3, the coding system (`LN`, `L`, …).
    #[serde(default)]
    pub system: Option<String>,
}

/// The HIS order a consultation answers (FHIR `Task.basedOn`, the ServiceRequest), as the HIS
/// identified it: what the result going back must carry for the HIS to file it. Set by the
/// `consultation_create` step from an `ORM^O01`/`OML^O21`; an HTTP request may give it too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HisOrder {
    /// `ORC-2`, the placer order number.
    pub placer: OrderNumber,
    /// `ORC-3`, the filler order number, when the HIS sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filler: Option<OrderNumber>,
    /// `PID-3` as the HIS sent it: its own patient ids (national numbers are left out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patient_identifiers: Vec<PatientIdentifier>,
    /// `PID-3`'s national numbers (resident identity number `NI`, insurance numbers): kept for
    /// billing, which identifies the person to the insurance platform by them (CN-60); never
    /// sent back in a result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub national_identifiers: Vec<PatientIdentifier>,
    /// `ORC-12`/`OBR-16`, the ordering doctor with the name as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_provider: Option<Clinician>,
    /// `OBR-4`, the service ordered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceCode>,
}

impl HisOrder {
    /// Ids and names are one line, not blank (they go into HL7 fields); paths start with
    /// `his_order.`.
    pub fn problems(&self) -> Vec<FieldProblem> {
        let mut out = Vec::new();
        let mut line = |path: String, value: &str| {
            let problem = if value.trim().is_empty() {
                "is blank"
            } else if value.chars().any(char::is_control) {
                "holds a control character (a line break, a tab, …)"
            } else {
                return;
            };
            out.push(FieldProblem {
                path,
                problem: problem.into(),
            });
        };
        let mut number = |path: &str, n: &OrderNumber| {
            line(format!("his_order.{path}.id"), &n.id);
            if let Some(ns) = &n.namespace {
                line(format!("his_order.{path}.namespace"), ns);
            }
        };
        number("placer", &self.placer);
        if let Some(f) = &self.filler {
            number("filler", f);
        }
        for (list, ids) in [
            ("patient_identifiers", &self.patient_identifiers),
            ("national_identifiers", &self.national_identifiers),
        ] {
            for (i, id) in ids.iter().enumerate() {
                line(format!("his_order.{list}[{i}].id"), &id.id);
                for (k, v) in [
                    ("assigning_authority", &id.assigning_authority),
                    ("type_code", &id.type_code),
                ] {
                    if let Some(v) = v {
                        line(format!("his_order.{list}[{i}].{k}"), v);
                    }
                }
            }
        }
        if let Some(d) = &self.ordering_provider {
            line("his_order.ordering_provider.id".into(), &d.id);
            line("his_order.ordering_provider.name".into(), &d.name);
        }
        if let Some(s) = &self.service {
            line("his_order.service.code".into(), &s.code);
            for (k, v) in [("text", &s.text), ("system", &s.system)] {
                if let Some(v) = v {
                    line(format!("his_order.service.{k}"), v);
                }
            }
        }
        out
    }
}

/// What the engine knows of the patient beside the consultation (its identity index): the
/// patient's ids at the requesting facility, used when the consultation came with no HIS
/// order ids, and the name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KnownPatient {
    /// The patient's ids at the requesting facility.
    pub identifiers: Vec<PatientIdentifier>,
    /// The name, when one is known.
    pub name: Option<PersonName>,
}

/// A turn of a consultation that is not its result: who to tell, never patient data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notice {
    /// The consultation.
    pub consultation_id: String,
    /// `accepted`, `escalated`, `cancelled` or `failed` (the event's type).
    pub event: String,
    /// The consultation's version after the event.
    pub version: u64,
    /// The state after the change (its businessStatus code).
    pub state: String,
    /// When, RFC 3339 in the engine's local offset.
    pub at: String,
    /// Who.
    pub actor: Actor,
    /// Why, when given (a cancellation's or failure's reason, the sweep's account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The inviting facility.
    pub requesting_facility: String,
    /// The requested department.
    pub department: String,
    /// Routine, urgent or critical.
    pub urgency: Urgency,
    /// The HIS's order number, when the consultation answers an order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placer_order_number: Option<OrderNumber>,
    /// `accepted`: the expert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expert: Option<String>,
    /// `escalated`: the coordinator or duty roster to reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalated_to: Option<String>,
    /// `escalated`: offers that expired or were declined before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_offers: Option<u32>,
    /// `failed`: the failure code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailReason>,
    /// The Study Instance UID, for `study_attached`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub study: Option<String>,
}

/// One event to announce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Announcement {
    /// `consultation.completed`: the signed opinion for the HIS.
    Completed(Box<OutboundOpinion>),
    /// `consultation.accepted`, `.escalated`, `.cancelled`, `.failed`.
    Notice(Box<Notice>),
}

impl Announcement {
    /// The topic (`consultation.completed`, …).
    pub fn topic(&self) -> &'static str {
        match self {
            Announcement::Completed(_) => COMPLETED,
            Announcement::Notice(n) => match n.event.as_str() {
                "accepted" => ACCEPTED,
                "escalated" => ESCALATED,
                "cancelled" => CANCELLED,
                "study_attached" => STUDY_ATTACHED,
                _ => FAILED,
            },
        }
    }
}

/// True when one of `events` is announced; the engine reads what [`announcements`] needs
/// only then.
pub fn announces(events: &[Event]) -> bool {
    events.iter().any(|e| {
        matches!(
            e.kind,
            EventKind::Completed
                | EventKind::Accepted { .. }
                | EventKind::Escalated { .. }
                | EventKind::Cancelled
                | EventKind::Failed { .. }
                | EventKind::StudyAttached { .. }
        )
    })
}

/// What the engine gives beside the consultation.
#[derive(Clone, Copy, Debug)]
pub struct OutboundContext<'a> {
    /// The patient as the identity index knows them (read only when the events complete).
    pub patient: &'a KnownPatient,
    /// The expert's name from the registry; the signer's name when unknown.
    pub expert_name: Option<&'a str>,
    /// The offset times are written in (the HIS's local time: +08:00 in China).
    pub offset: FixedOffset,
}

/// The announcements of `events`, just appended to the consultation, which `c` is after them:
/// one per announced event, in order.
pub fn announcements(
    c: &Consultation,
    events: &[Event],
    ctx: &OutboundContext<'_>,
) -> Vec<Announcement> {
    let mut out = Vec::new();
    for e in events {
        let notice = |event: &str| Notice {
            consultation_id: c.id().to_owned(),
            event: event.to_owned(),
            version: e.version,
            state: c.state().code().to_owned(),
            at: local(e.at, ctx.offset),
            actor: e.actor.clone(),
            reason: e.reason.clone(),
            requesting_facility: c.request().requesting_facility.clone(),
            department: c.request().department.clone(),
            urgency: c.request().urgency,
            placer_order_number: c.request().his_order.as_deref().map(|o| o.placer.clone()),
            expert: None,
            escalated_to: None,
            failed_offers: None,
            failure: None,
            study: None,
        };
        let a = match &e.kind {
            EventKind::Completed => match opinion_of(c, ctx) {
                Some(o) => Announcement::Completed(Box::new(o)),
                None => continue,
            },
            EventKind::Accepted { attempt } => Announcement::Notice(Box::new(Notice {
                expert: accepted_in(c, *attempt).or_else(|| c.accepted_by().map(str::to_owned)),
                ..notice("accepted")
            })),
            EventKind::Escalated { to, .. } => Announcement::Notice(Box::new(Notice {
                escalated_to: Some(to.clone()),
                failed_offers: Some(failed_offers(c)),
                ..notice("escalated")
            })),
            EventKind::Cancelled => Announcement::Notice(Box::new(notice("cancelled"))),
            EventKind::Failed { code } => Announcement::Notice(Box::new(Notice {
                failure: Some(*code),
                ..notice("failed")
            })),
            EventKind::StudyAttached { study } => match expert_of(c) {
                Some(expert) => Announcement::Notice(Box::new(Notice {
                    expert: Some(expert),
                    study: Some(study.study_uid.clone()),
                    ..notice("study_attached")
                })),
                None => continue,
            },
            _ => continue,
        };
        out.push(a);
    }
    out
}

/// `at` in RFC 3339 at `offset`, to the second.
fn local(at: DateTime<Utc>, offset: FixedOffset) -> String {
    at.with_timezone(&offset)
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

fn accepted_in(c: &Consultation, attempt: u32) -> Option<String> {
    c.attempts()
        .iter()
        .find(|a| a.number == attempt)
        .and_then(|a| match &a.outcome {
            Some(AttemptOutcome::Accepted { expert, .. }) => Some(expert.clone()),
            _ => None,
        })
}

/// Offers that expired or were declined.
/// The expert who has the case: the accepted one, else the one an open single offer went to.
fn expert_of(c: &Consultation) -> Option<String> {
    if let Some(e) = c.accepted_by() {
        return Some(e.to_owned());
    }
    let a = c.current_attempt()?;
    match (&a.outcome, a.offerees.as_slice()) {
        (None, [one]) => Some(one.expert.clone()),
        _ => None,
    }
}

fn failed_offers(c: &Consultation) -> u32 {
    let n = c
        .attempts()
        .iter()
        .filter(|a| {
            matches!(
                a.outcome,
                Some(AttemptOutcome::Expired { .. } | AttemptOutcome::Declined { .. })
            )
        })
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The signed opinion of a completed consultation, with the HIS's identifiers; `None` when
/// no opinion is recorded (never after a `complete`, which requires one).
fn opinion_of(c: &Consultation, ctx: &OutboundContext<'_>) -> Option<OutboundOpinion> {
    let recorded = c.opinion()?;
    let opinion = &recorded.signed.opinion;
    let signature = &recorded.signed.signature;
    let order = c.request().his_order.as_deref();
    let identifiers = match order {
        Some(o) if !o.patient_identifiers.is_empty() => o.patient_identifiers.clone(),
        _ => ctx.patient.identifiers.clone(),
    };
    let name = ctx.patient.name.clone().unwrap_or(PersonName {
        family: String::new(),
        given: None,
    });
    let signer_name = recorded.verified_signer.trim();
    let expert_name = ctx
        .expert_name
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or(signer_name);
    let requesting = c.request().requesting_doctor.trim();
    let local_doctor = order
        .and_then(|o| o.ordering_provider.clone())
        .filter(|d| d.id.trim() == requesting);
    let signed_version = c
        .timeline()
        .iter()
        .rev()
        .find(|t| t.event == "opinion_signed")
        .map_or(c.version(), |t| t.version);
    let text = |t: &str| (!t.trim().is_empty()).then(|| t.to_owned());
    Some(OutboundOpinion {
        consultation_id: c.id().to_owned(),
        placer_order_number: order.map(|o| o.placer.clone()),
        filler_order_number: order.and_then(|o| o.filler.clone()),
        patient: OutboundPatient { identifiers, name },
        expert: Clinician {
            id: opinion.expert.clone(),
            name: expert_name.to_owned(),
        },
        local_doctor,
        diagnoses: opinion
            .diagnoses
            .iter()
            .map(|d| {
                let code = d.code.to_string();
                let text = if d.text.trim().is_empty() {
                    code.clone()
                } else {
                    d.text.clone()
                };
                OpinionDiagnosis { code, text }
            })
            .collect(),
        treatment_plan: text(&opinion.treatment_plan),
        advice: text(&opinion.advice),
        signed_at: local(signature.signed_at, ctx.offset),
        signer: Clinician {
            id: opinion.expert.clone(),
            name: signer_name.to_owned(),
        },
        signature_ref: format!("{}/opinion/{signed_version}", c.id()),
        service: order.and_then(|o| o.service.clone()),
    })
}
