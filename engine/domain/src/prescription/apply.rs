//! [`Prescription::apply`]: the state after an event, never refusing (events are facts
//! `decide` already checked); replay from an event log; signature re-verification.

use chrono::{DateTime, Utc};

use super::commands::PrescriptionEvent;
use super::model::{Actor, DeliveryStep, Note, Prescription, PrescriptionState, Review};
use crate::signature::{SignatureError, SignatureVerifier};

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
