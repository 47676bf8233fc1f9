//! [`PrescriptionPolicy::decide`]: may this command happen now, and which events record it?
//! `decide` never changes anything; [`Prescription::apply`](super::Prescription::apply) moves
//! the state.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::commands::{PrescriptionCommand, PrescriptionError, PrescriptionEvent};
use super::delivery::{Verdict, classify};
use super::deny::{DenyList, DenyListError};
use super::model::{
    Actor, DeliveryCallback, Prescription, PrescriptionLine, PrescriptionState, Role,
};
use crate::signature::Signature;

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
