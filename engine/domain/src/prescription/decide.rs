//! Commands, events, errors, and the two functions of the aggregate: [`PrescriptionPolicy::decide`]
//! (may this command happen now? which events record it?) and [`Prescription::apply`] (the
//! state after an event). `decide` never changes anything; `apply` never refuses.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::delivery::{Verdict, classify};
use super::deny::{DenyList, DenyListError, DenyMatch};
use super::model::{
    Actor, DeliveryCallback, DeliveryStep, Note, Prescription, PrescriptionLine, PrescriptionState,
    Review, Role,
};
use crate::signature::{Signature, SignatureError, SignatureVerifier};

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
    /// [`Prescription::canonical_bytes`], made by the engine's `Signer` for this prescriber.
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
        status: super::model::DeliveryStatus,
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

/// The configurable rules `decide` applies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrescriptionPolicy {
    /// Controlled drugs refused on draft, revision and submission.
    #[serde(default)]
    pub deny_list: DenyList,
    /// At most this many lines (处方管理办法 第六条: 每张处方不得超过5种药品). Default 5.
    #[serde(default = "default_max_lines")]
    pub max_lines: usize,
    /// How far a signature's time may lie ahead of `now` (signer clock skew). Default 300 s.
    #[serde(default = "default_skew")]
    pub signature_skew_seconds: u32,
}

fn default_max_lines() -> usize {
    5
}

fn default_skew() -> u32 {
    300
}

impl Default for PrescriptionPolicy {
    fn default() -> Self {
        PrescriptionPolicy {
            deny_list: DenyList::default(),
            max_lines: default_max_lines(),
            signature_skew_seconds: default_skew(),
        }
    }
}

/// The actions possible in a state, for the `InvalidTransition` error and the API.
pub fn allowed_actions(state: PrescriptionState) -> &'static [&'static str] {
    use PrescriptionState as S;
    match state {
        S::New => &["draft"],
        S::Draft => &["revise", "submit", "cancel"],
        S::PendingReview => &["approve", "reject", "cancel"],
        S::Active => &["cancel", "delivery"],
        S::Dispatched | S::DeliveryFailed | S::Delivered | S::Returned => &["delivery"],
        S::Rejected | S::Cancelled => &[],
    }
}

fn blank(text: &str) -> bool {
    text.trim().is_empty()
}

fn is_positive_decimal(text: &str) -> bool {
    let t = text.trim();
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    !whole.is_empty()
        && digits(whole)
        && digits(frac)
        && !(t.contains('.') && frac.is_empty())
        && t.bytes().any(|b| (b'1'..=b'9').contains(&b))
}

impl PrescriptionPolicy {
    /// Refuses a policy that cannot work (a blank deny-list entry, no lines allowed).
    pub fn validate(&self) -> Result<(), DenyListError> {
        if self.max_lines == 0 {
            return Err(DenyListError {
                path: "max_lines (0)".into(),
            });
        }
        self.deny_list.validate()
    }

    /// Decides `command` against `rx` at `now`: the events to persist (none for a duplicate
    /// delivery callback), or why not. Pure: `rx` is unchanged; apply the events to move it.
    pub fn decide(
        &self,
        rx: &Prescription,
        command: &PrescriptionCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<PrescriptionEvent>, PrescriptionError> {
        let id = match command {
            PrescriptionCommand::Draft {
                prescription_id, ..
            } if rx.state == PrescriptionState::New => prescription_id.clone(),
            _ => rx.id.clone(),
        };
        let action = command.action();
        // A delivery callback on a prescription not in effect gets its own error (`NotActive`,
        // CN-20), not the generic transition one.
        let is_delivery = matches!(command, PrescriptionCommand::Delivery { .. });
        if !is_delivery && !allowed_actions(rx.state).contains(&action) {
            return Err(PrescriptionError::InvalidTransition {
                id,
                state: rx.state,
                action,
                allowed: allowed_list(rx.state),
            });
        }
        let cx = Cx { id, action, now };
        match command {
            PrescriptionCommand::Draft {
                prescription_id,
                consultation_id,
                patient_id,
                lines,
                by,
            } => {
                cx.prescriber_role(by)?;
                for (field, value) in [
                    ("prescription_id", prescription_id),
                    ("consultation_id", consultation_id),
                    ("patient_id", patient_id),
                ] {
                    if blank(value) {
                        return Err(cx.invalid(field, "is blank"));
                    }
                }
                self.check_lines(&cx, lines)?;
                Ok(vec![PrescriptionEvent::Drafted {
                    prescription_id: prescription_id.trim().to_owned(),
                    consultation_id: consultation_id.trim().to_owned(),
                    patient_id: patient_id.trim().to_owned(),
                    prescriber: by.clone(),
                    lines: lines.clone(),
                    at: now,
                }])
            }
            PrescriptionCommand::Revise { lines, by } => {
                cx.the_prescriber(rx, by)?;
                self.check_lines(&cx, lines)?;
                Ok(vec![PrescriptionEvent::Revised {
                    by: by.clone(),
                    lines: lines.clone(),
                    at: now,
                }])
            }
            PrescriptionCommand::Submit { signature, by } => {
                cx.the_prescriber(rx, by)?;
                self.check_lines(&cx, &rx.lines)?;
                self.check_signature(&cx, rx, signature)?;
                Ok(vec![PrescriptionEvent::Submitted {
                    by: by.clone(),
                    signature: signature.clone(),
                    review_task_id: format!("{}/pharmacist-review", rx.id),
                    at: now,
                }])
            }
            PrescriptionCommand::Approve { by, note } => {
                cx.pharmacist(rx, by)?;
                let note = note.as_deref().map(str::trim).filter(|n| !n.is_empty());
                Ok(vec![PrescriptionEvent::Approved {
                    by: by.clone(),
                    note: note.map(str::to_owned),
                    at: now,
                }])
            }
            PrescriptionCommand::Reject { by, reason } => {
                cx.pharmacist(rx, by)?;
                let reason = cx.reason(reason)?;
                Ok(vec![PrescriptionEvent::Rejected {
                    by: by.clone(),
                    reason,
                    at: now,
                }])
            }
            PrescriptionCommand::Cancel { by, reason } => {
                cx.canceller(rx, by)?;
                let reason = cx.reason(reason)?;
                Ok(vec![PrescriptionEvent::Cancelled {
                    by: by.clone(),
                    reason,
                    at: now,
                }])
            }
            PrescriptionCommand::Delivery { callback } => cx.delivery(rx, callback),
        }
    }

    fn check_lines(&self, cx: &Cx, lines: &[PrescriptionLine]) -> Result<(), PrescriptionError> {
        if lines.is_empty() {
            return Err(cx.invalid("lines", "no drug lines"));
        }
        if lines.len() > self.max_lines {
            return Err(cx.invalid(
                "lines",
                &format!("{} lines, at most {} allowed", lines.len(), self.max_lines),
            ));
        }
        for (i, line) in lines.iter().enumerate() {
            let texts = [
                ("drug_code", &line.drug_code),
                ("drug_name", &line.drug_name),
                ("dose_unit", &line.dose_unit),
                ("frequency", &line.frequency),
                ("quantity_unit", &line.quantity_unit),
            ];
            if let Some((name, _)) = texts.iter().find(|(_, v)| blank(v)) {
                return Err(cx.invalid(&format!("lines[{i}].{name}"), "is blank"));
            }
            if !is_positive_decimal(&line.dose) {
                return Err(cx.invalid(
                    &format!("lines[{i}].dose"),
                    &format!("`{}` is not a positive decimal number", line.dose),
                ));
            }
            if line.days == 0 {
                return Err(cx.invalid(&format!("lines[{i}].days"), "must be at least 1"));
            }
            if line.quantity == 0 {
                return Err(cx.invalid(&format!("lines[{i}].quantity"), "must be at least 1"));
            }
        }
        match self.deny_list.check(lines) {
            Some((line, hit)) => Err(PrescriptionError::ControlledDrug {
                id: cx.id.clone(),
                line,
                drug: lines[line].drug_name.clone(),
                hit,
            }),
            None => Ok(()),
        }
    }

    fn check_signature(
        &self,
        cx: &Cx,
        rx: &Prescription,
        signature: &Signature,
    ) -> Result<(), PrescriptionError> {
        let bad = |problem: String| PrescriptionError::Signature {
            id: cx.id.clone(),
            problem,
        };
        if signature.value.is_empty() {
            return Err(bad("the signature value is empty".into()));
        }
        if signature.certificate_chain.is_empty() {
            return Err(bad(
                "no certificate chain (it must be kept to verify later, CN-21)".into(),
            ));
        }
        let skew = Duration::seconds(i64::from(self.signature_skew_seconds));
        if signature.signed_at > cx.now + skew {
            return Err(bad(format!(
                "signed at {} is after now ({})",
                signature.signed_at, cx.now
            )));
        }
        if let Some(changed) = rx.updated_at
            && signature.signed_at < changed
        {
            return Err(bad(format!(
                "signed at {} before the last change at {changed}: sign the current content",
                signature.signed_at
            )));
        }
        Ok(())
    }
}

fn allowed_list(state: PrescriptionState) -> String {
    let allowed = allowed_actions(state);
    if allowed.is_empty() {
        "none".into()
    } else {
        allowed.join(", ")
    }
}

/// The command's context for error construction.
struct Cx {
    id: String,
    action: &'static str,
    now: DateTime<Utc>,
}

impl Cx {
    fn invalid(&self, field: &str, problem: &str) -> PrescriptionError {
        PrescriptionError::Invalid {
            id: self.id.clone(),
            field: field.to_owned(),
            problem: problem.to_owned(),
        }
    }

    fn not_automated(&self, by: &Actor) -> Result<(), PrescriptionError> {
        if by.role.is_automated() {
            return Err(PrescriptionError::Automated {
                id: self.id.clone(),
                action: self.action,
                actor: by.clone(),
            });
        }
        if blank(&by.id) {
            return Err(self.invalid("by.id", "is blank"));
        }
        Ok(())
    }

    fn prescriber_role(&self, by: &Actor) -> Result<(), PrescriptionError> {
        self.not_automated(by)?;
        if !by.role.is_prescriber() {
            return Err(PrescriptionError::RoleNotAllowed {
                id: self.id.clone(),
                action: self.action,
                actor: by.clone(),
                allowed: "an expert or a local doctor",
            });
        }
        Ok(())
    }

    fn the_prescriber(&self, rx: &Prescription, by: &Actor) -> Result<(), PrescriptionError> {
        self.prescriber_role(by)?;
        let prescriber = rx.prescriber.as_ref().map_or("", |p| p.id.as_str());
        if by.id != prescriber {
            return Err(PrescriptionError::NotPrescriber {
                id: self.id.clone(),
                action: self.action,
                actor: by.clone(),
                prescriber: prescriber.to_owned(),
            });
        }
        Ok(())
    }

    fn pharmacist(&self, rx: &Prescription, by: &Actor) -> Result<(), PrescriptionError> {
        self.not_automated(by)?;
        if by.role != Role::Pharmacist {
            return Err(PrescriptionError::RoleNotAllowed {
                id: self.id.clone(),
                action: self.action,
                actor: by.clone(),
                allowed: "a pharmacist",
            });
        }
        if rx.prescriber.as_ref().is_some_and(|p| p.id == by.id) {
            return Err(PrescriptionError::SelfReview {
                id: self.id.clone(),
                pharmacist: by.id.clone(),
            });
        }
        Ok(())
    }

    fn canceller(&self, rx: &Prescription, by: &Actor) -> Result<(), PrescriptionError> {
        let is_prescriber = rx.prescriber.as_ref().is_some_and(|p| p.id == by.id);
        let ok = match by.role {
            Role::Pharmacist | Role::Coordinator | Role::System => true,
            Role::Expert | Role::LocalDoctor => is_prescriber,
            Role::Patient | Role::Plugin => false,
        };
        if ok && !blank(&by.id) {
            Ok(())
        } else {
            Err(PrescriptionError::RoleNotAllowed {
                id: self.id.clone(),
                action: self.action,
                actor: by.clone(),
                allowed: "the prescriber, a pharmacist, a coordinator or the system",
            })
        }
    }

    fn reason(&self, reason: &str) -> Result<String, PrescriptionError> {
        if blank(reason) {
            return Err(PrescriptionError::MissingReason {
                id: self.id.clone(),
                action: self.action,
            });
        }
        Ok(reason.trim().to_owned())
    }

    fn delivery(
        &self,
        rx: &Prescription,
        callback: &DeliveryCallback,
    ) -> Result<Vec<PrescriptionEvent>, PrescriptionError> {
        if blank(&callback.event_id) {
            return Err(self.invalid("callback.event_id", "is blank"));
        }
        match classify(rx, callback) {
            Verdict::Duplicate => Ok(Vec::new()),
            Verdict::Apply => Ok(vec![PrescriptionEvent::DeliveryRecorded {
                callback: callback.clone(),
                at: self.now,
            }]),
            Verdict::Late(note) => Ok(vec![PrescriptionEvent::CallbackNoted {
                callback: callback.clone(),
                state: rx.state,
                note,
                at: self.now,
            }]),
            Verdict::NotActive => Err(PrescriptionError::NotActive {
                id: self.id.clone(),
                state: rx.state,
                status: callback.status,
            }),
        }
    }
}

impl Prescription {
    /// The state after `event`. Never refuses: events are facts `decide` already checked.
    pub fn apply(&mut self, event: &PrescriptionEvent) {
        match event {
            PrescriptionEvent::Drafted {
                prescription_id,
                consultation_id,
                patient_id,
                prescriber,
                lines,
                at,
            } => {
                self.id.clone_from(prescription_id);
                self.consultation_id.clone_from(consultation_id);
                self.patient_id.clone_from(patient_id);
                self.prescriber = Some(prescriber.clone());
                self.lines.clone_from(lines);
                self.drafted_at = Some(*at);
                self.state = PrescriptionState::Draft;
            }
            PrescriptionEvent::Revised { lines, .. } => self.lines.clone_from(lines),
            PrescriptionEvent::Submitted {
                signature,
                review_task_id,
                at,
                ..
            } => {
                self.signature = Some(signature.clone());
                self.review = Some(Review {
                    task_id: review_task_id.clone(),
                    opened_at: *at,
                    pharmacist: None,
                    approved: None,
                    note: None,
                    decided_at: None,
                });
                self.state = PrescriptionState::PendingReview;
            }
            PrescriptionEvent::Approved { by, note, at } => {
                self.decide_review(by, true, note.clone(), *at);
                self.state = PrescriptionState::Active;
            }
            PrescriptionEvent::Rejected { by, reason, at } => {
                self.decide_review(by, false, Some(reason.clone()), *at);
                self.state = PrescriptionState::Rejected;
            }
            PrescriptionEvent::Cancelled { by, reason, .. } => {
                self.cancellation = Some((by.clone(), reason.clone()));
                self.state = PrescriptionState::Cancelled;
            }
            PrescriptionEvent::DeliveryRecorded { callback, at } => {
                self.delivery.push(DeliveryStep {
                    status: callback.status,
                    occurred_at: callback.occurred_at,
                    received_at: *at,
                    event_id: callback.event_id.clone(),
                });
                self.seen_callbacks.push(callback.event_id.clone());
                self.state = callback.status.target_state();
            }
            PrescriptionEvent::CallbackNoted {
                callback, note, at, ..
            } => {
                self.seen_callbacks.push(callback.event_id.clone());
                self.notes.push(Note {
                    at: *at,
                    text: note.clone(),
                });
            }
        }
        self.version += 1;
        self.updated_at = Some(event.at());
    }

    fn decide_review(
        &mut self,
        by: &Actor,
        approved: bool,
        note: Option<String>,
        at: DateTime<Utc>,
    ) {
        if let Some(review) = self.review.as_mut() {
            review.pharmacist = Some(by.id.clone());
            review.approved = Some(approved);
            review.note = note;
            review.decided_at = Some(at);
        }
    }

    /// The prescription rebuilt from its events, in order.
    pub fn replay<'a>(events: impl IntoIterator<Item = &'a PrescriptionEvent>) -> Prescription {
        let mut rx = Prescription::default();
        for event in events {
            rx.apply(event);
        }
        rx
    }

    /// Re-checks the stored signature against the canonical bytes with `verifier` (the
    /// engine's CA-backed implementation): the signer's name, or why it fails (the content
    /// changed, the chain, the time). A prescription without a signature fails as a mismatch.
    pub fn verify_signature(
        &self,
        verifier: &dyn SignatureVerifier,
    ) -> Result<String, SignatureError> {
        let signature = self.signature.as_ref().ok_or(SignatureError::Mismatch)?;
        verifier.verify(&self.canonical_bytes(), signature)
    }
}
