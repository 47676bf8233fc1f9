//! The consultation workflow (STANDARDS FHIR-10, FHIR-11, MATCH-20, MATCH-21, CN-01 … CN-12,
//! CN-21, CN-80) as an event-sourced aggregate, pure: no I/O, no clock read.
//!
//! * [`decide`]`(&Consultation, &Command, &Context) -> Result<Vec<Event>, ConsultError>`
//!   checks a command against the state machine ([`state`]: FHIR-10's states and edges, no
//!   more, no fewer), the role matrix, the version guard (FHIR-11), the gates before the
//!   session ([`gates`]) and the completion rules ([`opinion`]), and returns the events.
//! * [`apply`]`(Consultation, &Event) -> Consultation` folds an event; a consultation is the
//!   fold of its events ([`Consultation::replay`]), which is all the store persists. Each
//!   event carries who, in which role, when, why and which plugin version decided, and the
//!   consultation's version after it (one more per event).
//! * [`on_deadline`] turns an offer's passed deadline into the next step (re-offer, fan-out,
//!   escalation) under the [`SlaPolicy`] ([`sla`]), from a fresh match's candidates.
//! * [`load_changes`] says whose open-case load a change took or gave back (MATCH-30).
//! * [`Consultation::timeline`] and [`Consultation::milestones`] give the history and the
//!   MATCH-21 timestamps.
//! * [`announcements`] ([`outbound`]) turns appended events into what the engine announces
//!   outside: the signed opinion for the HIS on completion, notices of the other turns.
//! * [`record_vital_alert`] ([`vital_alert`]) records a device reading's threshold alert on an
//!   open consultation of the patient (issue 25), once per reading.
//!
//! docs/workflow.md has the state table for integrators.

mod aggregate;
pub mod call_quality;
mod command;
mod decide;
mod error;
pub mod event;
pub mod gates;
mod load;
pub mod opinion;
pub mod outbound;
pub mod request;
pub mod room;
pub mod sla;
pub mod state;
pub mod study;
pub mod timeline;
pub mod vital_alert;

pub use aggregate::{
    Attempt, AttemptOutcome, Consultation, Decline, RecordedDecision, RecordedOpinion, ReplayError,
    apply,
};
pub use command::{Command, Context, StartCheck};
pub use decide::decide;
pub use error::ConsultError;
pub use event::{Actor, Appointment, Event, EventKind, Offeree, PluginRef, Role};
pub use gates::{
    Consent, ConsentSigner, EvidenceKind, GateRecords, LocalPhysician, PriorDiagnosis,
    RecordingConsent, Requirement, Subject, Verification, VerificationMethod, VerificationResult,
};
pub use load::load_changes;
pub use opinion::{
    CANONICAL_VERSION, DecisionOutcome, Diagnosis, LocalDecision, Opinion, SignedOpinion,
    sign_opinion, verify_opinion,
};
pub use outbound::{Announcement, HisOrder, KnownPatient, Notice, OutboundOpinion, announcements};
pub use request::{
    Attachments, ConsultationRequest, FieldProblem, RequestError, RequestedTime, ServiceType,
    TriageOutput, Urgency,
};
pub use sla::{
    NextCandidates, NextStep, SlaKey, SlaOverride, SlaPolicy, SlaRule, SlaScope, needs_candidates,
    on_deadline,
};
pub use state::{Action, FailReason, State, TaskStatus};
pub use study::{AttachedStudy, StudyMatch, attach_study};
pub use timeline::{Milestones, TimelineEntry};
pub use vital_alert::{FiredRule, VitalAlert, record_vital_alert};
