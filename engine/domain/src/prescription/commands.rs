//! The prescription's commands (what someone asks), events (what happened, persisted) and
//! errors (why a command was refused).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::deny::DenyMatch;
use super::model::{Actor, DeliveryCallback, DeliveryStatus, PrescriptionLine, PrescriptionState};
use crate::signature::Signature;

/// What someone asks of a prescription. The actor comes from authentication, not the body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "action")]
pub enum PrescriptionCommand {
    /// Write a new prescription (only on a `New` aggregate): a physician, personally.
    Draft {
        /// The new prescription's id.
        prescription_id: String,
        /// The consultation it belongs to.
        consultation_id: String,
        /// The patient.
        patient_id: String,
        /// The drugs.
        lines: Vec<PrescriptionLine>,
        /// The drafting physician.
        by: Actor,
    },
    /// Replace the lines of a draft (the prescriber only).
    Revise {
        /// The new lines.
        lines: Vec<PrescriptionLine>,
        /// The prescriber.
        by: Actor,
    },
    /// Sign and send for pharmacist review (the prescriber only). The signature is over
    /// [`Prescription::canonical_bytes`](super::Prescription::canonical_bytes), made by the engine's `Signer` for this prescriber.
    Submit {
        /// The prescriber's signature.
        signature: Signature,
        /// The prescriber.
        by: Actor,
    },
    /// The pharmacist approves: the prescription takes effect.
    Approve {
        /// A pharmacist other than the prescriber.
        by: Actor,
        /// An optional review note.
        #[serde(default)]
        note: Option<String>,
    },
    /// The pharmacist rejects, with a reason.
    Reject {
        /// A pharmacist other than the prescriber.
        by: Actor,
        /// Why (required).
        reason: String,
    },
    /// Withdraw before dispatch, with a reason.
    Cancel {
        /// The prescriber, a pharmacist, a coordinator or the system.
        by: Actor,
        /// Why (required).
        reason: String,
    },
    /// A logistics webhook call.
    Delivery {
        /// The callback.
        callback: DeliveryCallback,
    },
}

impl PrescriptionCommand {
    /// The action's name (as in errors and the allowed-actions lists).
    pub fn action(&self) -> &'static str {
        match self {
            PrescriptionCommand::Draft { .. } => "draft",
            PrescriptionCommand::Revise { .. } => "revise",
            PrescriptionCommand::Submit { .. } => "submit",
            PrescriptionCommand::Approve { .. } => "approve",
            PrescriptionCommand::Reject { .. } => "reject",
            PrescriptionCommand::Cancel { .. } => "cancel",
            PrescriptionCommand::Delivery { .. } => "delivery",
        }
    }
}

/// What happened: the facts the store persists, each with the time it was decided (`at`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "event")]
pub enum PrescriptionEvent {
    /// A physician drafted the prescription.
    Drafted {
        /// The prescription id.
        prescription_id: String,
        /// The consultation.
        consultation_id: String,
        /// The patient.
        patient_id: String,
        /// The prescriber.
        prescriber: Actor,
        /// The drugs.
        lines: Vec<PrescriptionLine>,
        /// When.
        at: DateTime<Utc>,
    },
    /// The prescriber replaced the lines.
    Revised {
        /// The prescriber.
        by: Actor,
        /// The new lines.
        lines: Vec<PrescriptionLine>,
        /// When.
        at: DateTime<Utc>,
    },
    /// Signed and submitted; the pharmacist review task `review_task_id` is open.
    Submitted {
        /// The prescriber.
        by: Actor,
        /// The signature over the canonical bytes.
        signature: Signature,
        /// The review task opened.
        review_task_id: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// A pharmacist approved: the prescription is active, and this event is what the engine
    /// routes to the pharmacy and the logistics partner (药品配送).
    Approved {
        /// The pharmacist.
        by: Actor,
        /// The review note.
        note: Option<String>,
        /// When.
        at: DateTime<Utc>,
    },
    /// A pharmacist rejected.
    Rejected {
        /// The pharmacist.
        by: Actor,
        /// Why.
        reason: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Cancelled before dispatch.
    Cancelled {
        /// Who.
        by: Actor,
        /// Why.
        reason: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// A delivery status was applied.
    DeliveryRecorded {
        /// The callback.
        callback: DeliveryCallback,
        /// When the engine received it.
        at: DateTime<Utc>,
    },
    /// A late callback: kept for the record, the state unchanged.
    CallbackNoted {
        /// The callback.
        callback: DeliveryCallback,
        /// The state it found.
        state: PrescriptionState,
        /// Why it changed nothing.
        note: String,
        /// When the engine received it.
        at: DateTime<Utc>,
    },
}

impl PrescriptionEvent {
    /// When the event was decided.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            PrescriptionEvent::Drafted { at, .. }
            | PrescriptionEvent::Revised { at, .. }
            | PrescriptionEvent::Submitted { at, .. }
            | PrescriptionEvent::Approved { at, .. }
            | PrescriptionEvent::Rejected { at, .. }
            | PrescriptionEvent::Cancelled { at, .. }
            | PrescriptionEvent::DeliveryRecorded { at, .. }
            | PrescriptionEvent::CallbackNoted { at, .. } => *at,
        }
    }
}

/// Why a command was refused. Each names the prescription and what was wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrescriptionError {
    /// A plugin or the system tried to write a prescription (CN-20).
    #[error(
        "prescription `{id}`: {actor} may not {action}: a prescription is issued by a physician \
         personally, never generated by a plugin or the system (CN-20)"
    )]
    Automated {
        /// The prescription.
        id: String,
        /// The action.
        action: &'static str,
        /// Who tried.
        actor: Actor,
    },
    /// The actor's role may not do this.
    #[error("prescription `{id}`: {actor} may not {action} (only {allowed})")]
    RoleNotAllowed {
        /// The prescription.
        id: String,
        /// The action.
        action: &'static str,
        /// Who tried.
        actor: Actor,
        /// Who may.
        allowed: &'static str,
    },
    /// Someone other than the prescriber tried to change or submit the draft.
    #[error("prescription `{id}`: only its prescriber `{prescriber}` may {action}, not {actor}")]
    NotPrescriber {
        /// The prescription.
        id: String,
        /// The action.
        action: &'static str,
        /// Who tried.
        actor: Actor,
        /// The prescriber's id.
        prescriber: String,
    },
    /// The prescriber tried to review their own prescription.
    #[error("prescription `{id}`: pharmacist `{pharmacist}` wrote it and may not review it")]
    SelfReview {
        /// The prescription.
        id: String,
        /// The pharmacist (also the prescriber).
        pharmacist: String,
    },
    /// A line is a controlled drug.
    #[error("prescription `{id}`: lines[{line}] `{drug}` is refused: {hit}")]
    ControlledDrug {
        /// The prescription.
        id: String,
        /// The line's index (from 0).
        line: usize,
        /// The line's drug name.
        drug: String,
        /// The deny-list entry it hit.
        hit: DenyMatch,
    },
    /// A field is missing or out of range.
    #[error("prescription `{id}`: {field}: {problem}")]
    Invalid {
        /// The prescription.
        id: String,
        /// The field path, e.g. `lines[1].days`.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// Reject and cancel need a reason.
    #[error("prescription `{id}`: {action} needs a reason")]
    MissingReason {
        /// The prescription.
        id: String,
        /// The action.
        action: &'static str,
    },
    /// The action is not possible in this state.
    #[error("prescription `{id}` is {state}: cannot {action} (possible now: {allowed})")]
    InvalidTransition {
        /// The prescription.
        id: String,
        /// Its state.
        state: PrescriptionState,
        /// The action.
        action: &'static str,
        /// The actions possible in this state, comma-separated (`none` when terminal).
        allowed: String,
    },
    /// A delivery callback for a prescription that never took effect (CN-20: no drug is
    /// supplied before the prescription is active).
    #[error(
        "prescription `{id}` is {state}: a `{status}` delivery callback is impossible, no drug \
         may be supplied unless a pharmacist approved it"
    )]
    NotActive {
        /// The prescription.
        id: String,
        /// Its state.
        state: PrescriptionState,
        /// The status reported.
        status: DeliveryStatus,
    },
    /// The submitted signature cannot be the prescriber's over this content.
    #[error("prescription `{id}`: signature: {problem}")]
    Signature {
        /// The prescription.
        id: String,
        /// What is wrong.
        problem: String,
    },
}
