//! The consultation's events: the only thing the store persists (state is their fold,
//! [`apply`](super::apply)). Each carries who acted, in which role, when, why, and which plugin
//! version decided when a plugin did (FHIR-10: AuditEvent and Provenance per transition), plus
//! the consultation's version after the event, so a store can append with a unique
//! `(consultation, version)` key and refuse a concurrent writer.
//!
//! JSON: one flat object, `{"version":3,"at":"…","actor":{…},"type":"offered",…}` (the kind is
//! tagged `type`, snake_case). Adding a field to a kind needs `#[serde(default)]` so stored
//! events still read.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::gates::{Consent, LocalPhysician, PriorDiagnosis, RecordingConsent, Verification};
use super::opinion::{LocalDecision, SignedOpinion};
use super::request::ConsultationRequest;
use super::state::FailReason;
use super::vital_alert::VitalAlert;
use crate::identity::PersonId;

/// The role an actor acts in. A plugin is never a physician (CN-11, CN-20): the role matrix
/// ([`Action::roles`](super::Action::roles)) keeps it to offering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The invited (remote) physician.
    Expert,
    /// A physician of the inviting facility.
    LocalDoctor,
    /// A coordinator or duty officer of the platform.
    Coordinator,
    /// A pharmacist (prescription review).
    Pharmacist,
    /// The engine itself (a pipeline, a timer sweep, a verification provider's callback).
    System,
    /// A WASM plugin acting through the engine.
    Plugin,
}

/// Who acted.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// The user, practitioner or component id.
    pub id: String,
    /// The role acted in.
    pub role: Role,
}

impl Actor {
    /// An actor.
    pub fn new(id: impl Into<String>, role: Role) -> Actor {
        Actor {
            id: id.into(),
            role,
        }
    }
}

/// A plugin and the version that decided.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginRef {
    /// The plugin name (`triage`, `scorer-cardio`).
    pub name: String,
    /// Its version (semver).
    pub version: String,
}

/// An expert an offer goes to, with their facility (the 受邀方: per-facility-pair SLAs, CN-02).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offeree {
    /// The expert (practitioner) id.
    pub expert: String,
    /// The expert's facility.
    pub facility: String,
}

/// A booked appointment for the session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Appointment {
    /// Start.
    pub start: DateTime<Utc>,
    /// End, after `start`.
    pub end: DateTime<Utc>,
    /// The Appointment resource or the HIS booking id, when there is one.
    #[serde(default)]
    pub reference: Option<String>,
}

/// One persisted event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The consultation's version after this event: 1 for `created`, then one more per event.
    pub version: u64,
    /// When (the caller's clock, passed in).
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: Actor,
    /// Why (required for reject, cancel and fail; otherwise what the caller gave).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The plugin that decided, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginRef>,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// The consultation was created (in `drafting`).
    Created {
        /// The consultation id; also the FHIR `groupIdentifier` of its attempts.
        consultation: String,
        /// The validated request.
        request: ConsultationRequest,
    },
    /// → pending-local-approval.
    Submitted,
    /// → pending-match.
    Approved,
    /// A new attempt (a new Task with the same focus and group): → offered.
    Offered {
        /// The attempt number, from 1.
        attempt: u32,
        /// One expert, or a pool for a fan-out.
        offerees: Vec<Offeree>,
        /// True for a fan-out (first accept wins).
        fan_out: bool,
        /// The SLA deadline (`Task.restriction.period.end`).
        deadline: DateTime<Utc>,
    },
    /// The current attempt's deadline passed without an answer (MATCH-20); a new offer follows
    /// in the same decision.
    OfferExpired {
        /// The attempt.
        attempt: u32,
    },
    /// An offered expert opened the case: → reviewing.
    Opened {
        /// The attempt.
        attempt: u32,
    },
    /// An offered expert accepted: → scheduled.
    Accepted {
        /// The attempt.
        attempt: u32,
    },
    /// An offered expert (or a coordinator for the whole attempt) declined: → declined once
    /// nobody of the attempt is left.
    Rejected {
        /// The attempt.
        attempt: u32,
        /// The declining expert; none when a coordinator declined the whole attempt.
        #[serde(default)]
        expert: Option<String>,
    },
    /// Handed to a coordinator or duty officer (MATCH-20).
    Escalated {
        /// The attempt that was current, if any.
        #[serde(default)]
        attempt: Option<u32>,
        /// The coordinator or duty roster.
        to: String,
    },
    /// The appointment was booked or moved.
    AppointmentBooked {
        /// The appointment.
        appointment: Appointment,
    },
    /// Informed consent recorded (CN-05).
    ConsentRecorded {
        /// The consent.
        consent: Consent,
    },
    /// A participant's recording consent (or its withdrawal) recorded (RTC-30).
    RecordingConsentRecorded {
        /// The consent.
        consent: RecordingConsent,
    },
    /// The accompanying local physician attached (CN-06).
    PhysicianAttached {
        /// The physician.
        physician: LocalPhysician,
    },
    /// A real-name verification recorded (CN-11, CN-12).
    VerificationRecorded {
        /// The verification.
        verification: Verification,
    },
    /// Prior-diagnosis evidence recorded (CN-10).
    PriorDiagnosisRecorded {
        /// The evidence.
        evidence: PriorDiagnosis,
    },
    /// → in-session.
    Started,
    /// → paused.
    Paused,
    /// → in-session.
    Resumed,
    /// → report-pending.
    ReportRequested,
    /// The expert's opinion, signed and verified (CN-07, CN-21).
    OpinionSigned {
        /// The opinion and the signature over its canonical bytes.
        signed: SignedOpinion,
        /// The signer as the verifier named them.
        verified_signer: String,
    },
    /// The local doctor's decision (CN-07).
    LocalDecisionRecorded {
        /// The decision.
        decision: LocalDecision,
    },
    /// → report-signed.
    Completed,
    /// → cancelled.
    Cancelled,
    /// → failed.
    Failed {
        /// The failure code.
        code: FailReason,
    },
    /// → entered-in-error.
    EnteredInError,
    /// The patient was merged into another (ADT^A40, MATCH-05): the consultation now belongs
    /// to `to`.
    PatientRepointed {
        /// The retired person id.
        from: PersonId,
        /// The surviving person id.
        to: PersonId,
    },
    /// An imaging study joined the consultation packet (DCM-07; [`super::study`]).
    StudyAttached {
        /// The study.
        study: super::study::AttachedStudy,
    },
    /// A device reading of the patient crossed a threshold (issue 25); records only.
    VitalAlertRaised {
        /// The reading and the rules that fired.
        alert: VitalAlert,
    },
}

impl EventKind {
    /// The `type` tag (`offered`, `opinion_signed`, …).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Created { .. } => "created",
            EventKind::Submitted => "submitted",
            EventKind::Approved => "approved",
            EventKind::Offered { .. } => "offered",
            EventKind::OfferExpired { .. } => "offer_expired",
            EventKind::Opened { .. } => "opened",
            EventKind::Accepted { .. } => "accepted",
            EventKind::Rejected { .. } => "rejected",
            EventKind::Escalated { .. } => "escalated",
            EventKind::AppointmentBooked { .. } => "appointment_booked",
            EventKind::ConsentRecorded { .. } => "consent_recorded",
            EventKind::RecordingConsentRecorded { .. } => "recording_consent_recorded",
            EventKind::PhysicianAttached { .. } => "physician_attached",
            EventKind::VerificationRecorded { .. } => "verification_recorded",
            EventKind::PriorDiagnosisRecorded { .. } => "prior_diagnosis_recorded",
            EventKind::Started => "started",
            EventKind::Paused => "paused",
            EventKind::Resumed => "resumed",
            EventKind::ReportRequested => "report_requested",
            EventKind::OpinionSigned { .. } => "opinion_signed",
            EventKind::LocalDecisionRecorded { .. } => "local_decision_recorded",
            EventKind::Completed => "completed",
            EventKind::Cancelled => "cancelled",
            EventKind::Failed { .. } => "failed",
            EventKind::EnteredInError => "entered_in_error",
            EventKind::PatientRepointed { .. } => "patient_repointed",
            EventKind::StudyAttached { .. } => "study_attached",
            EventKind::VitalAlertRaised { .. } => super::vital_alert::EVENT,
        }
    }
}
