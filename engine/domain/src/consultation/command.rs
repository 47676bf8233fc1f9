//! What callers ask of a consultation ([`Command`]), the circumstances they ask in
//! ([`Context`]: the clock's time, the actor, the reason, the deciding plugin, the signature
//! verifier), and who may ask what ([`Action::roles`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::identity::PersonId;
use crate::signature::SignatureVerifier;

use super::event::{Actor, Appointment, Offeree, PluginRef, Role};
use super::gates::{Consent, LocalPhysician, PriorDiagnosis, RecordingConsent, Verification};
use super::opinion::{LocalDecision, SignedOpinion};
use super::state::{Action, FailReason};

/// A request to change a consultation. JSON: `{"action":"reject","reason":"…"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Command {
    /// Drafting → pending local approval.
    Submit,
    /// Pending local approval → pending match (the local QC step; a facility without one has
    /// its pipeline approve as `system`).
    Approve,
    /// A new attempt offered to one expert, answerable until `deadline`.
    Offer {
        /// The expert.
        to: Offeree,
        /// The SLA deadline ([`SlaPolicy::deadline`](super::SlaPolicy::deadline)).
        deadline: DateTime<Utc>,
    },
    /// A new attempt offered to a pool; the first to accept wins.
    FanOut {
        /// The experts (at least two, distinct).
        pool: Vec<Offeree>,
        /// The SLA deadline.
        deadline: DateTime<Utc>,
    },
    /// The offered expert opened the case.
    Open,
    /// The offered expert accepts, if the consultation is still at `expected_version`.
    Accept {
        /// The version the expert saw (HTTP `If-Match: W/"n"`).
        expected_version: u64,
    },
    /// The offered expert declines (or a coordinator declines the attempt for them).
    Reject {
        /// Why (CN-04); required.
        reason: String,
    },
    /// Hand the case to a coordinator or duty officer.
    Escalate {
        /// The coordinator or duty roster id.
        to: String,
    },
    /// Book or move the appointment.
    Schedule {
        /// The appointment.
        appointment: Appointment,
    },
    /// Record the informed consent.
    RecordConsent {
        /// The consent.
        consent: Consent,
    },
    /// Record a participant's consent to recording the call, or its withdrawal (RTC-30).
    RecordRecordingConsent {
        /// The consent.
        consent: RecordingConsent,
    },
    /// Attach the accompanying local physician.
    AttachPhysician {
        /// The physician.
        physician: LocalPhysician,
    },
    /// Record a real-name verification.
    RecordVerification {
        /// The verification.
        verification: Verification,
    },
    /// Record prior-diagnosis evidence.
    RecordPriorDiagnosis {
        /// The evidence.
        evidence: PriorDiagnosis,
    },
    /// Start the session (gated).
    Start,
    /// Interrupt the session.
    Pause,
    /// Continue the session.
    Resume,
    /// End the session; the report is awaited.
    RequestReport,
    /// Record the expert's signed opinion.
    SignOpinion {
        /// The opinion with its signature.
        signed: SignedOpinion,
    },
    /// Record the local doctor's decision.
    RecordLocalDecision {
        /// The decision.
        decision: LocalDecision,
    },
    /// Complete (signed opinion and local decision on record).
    Complete,
    /// Cancel.
    Cancel {
        /// Why; required.
        reason: String,
    },
    /// Fail.
    Fail {
        /// The failure code.
        code: FailReason,
        /// Why, in words; required.
        reason: String,
    },
    /// Mark as entered in error.
    MarkEnteredInError,
    /// Re-point to the surviving patient of a merge.
    RepointPatient {
        /// The retired person id (must be the consultation's patient).
        from: PersonId,
        /// The surviving person id.
        to: PersonId,
    },
}

impl Command {
    /// The action this command performs.
    pub fn action(&self) -> Action {
        match self {
            Command::Submit => Action::Submit,
            Command::Approve => Action::Approve,
            Command::Offer { .. } => Action::Offer,
            Command::FanOut { .. } => Action::FanOut,
            Command::Open => Action::Open,
            Command::Accept { .. } => Action::Accept,
            Command::Reject { .. } => Action::Reject,
            Command::Escalate { .. } => Action::Escalate,
            Command::Schedule { .. } => Action::Schedule,
            Command::RecordConsent { .. } => Action::RecordConsent,
            Command::RecordRecordingConsent { .. } => Action::RecordRecordingConsent,
            Command::AttachPhysician { .. } => Action::AttachPhysician,
            Command::RecordVerification { .. } => Action::RecordVerification,
            Command::RecordPriorDiagnosis { .. } => Action::RecordPriorDiagnosis,
            Command::Start => Action::Start,
            Command::Pause => Action::Pause,
            Command::Resume => Action::Resume,
            Command::RequestReport => Action::RequestReport,
            Command::SignOpinion { .. } => Action::SignOpinion,
            Command::RecordLocalDecision { .. } => Action::RecordLocalDecision,
            Command::Complete => Action::Complete,
            Command::Cancel { .. } => Action::Cancel,
            Command::Fail { .. } => Action::Fail,
            Command::MarkEnteredInError => Action::MarkEnteredInError,
            Command::RepointPatient { .. } => Action::RepointPatient,
        }
    }

    /// The reason the command itself carries (reject, cancel, fail).
    pub fn reason(&self) -> Option<&str> {
        match self {
            Command::Reject { reason }
            | Command::Cancel { reason }
            | Command::Fail { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// The circumstances of a command: the time (from the caller's clock: the domain never reads
/// one), who acts, why, which plugin decided, and the verifier for signed opinions.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// Now.
    pub now: DateTime<Utc>,
    /// Who acts.
    pub actor: &'a Actor,
    /// Why, for actions whose command carries no reason (optional).
    pub reason: Option<&'a str>,
    /// The plugin that decided (required when the actor's role is `plugin`).
    pub plugin: Option<&'a PluginRef>,
    /// Checks the signature of an opinion (required for `sign_opinion`).
    pub verifier: Option<&'a dyn SignatureVerifier>,
    /// The China rules of the consultation's service type at its facility, with the
    /// verification ages and the patient's age, for `start` (none: the law's rules, any passed
    /// verification counts, the age unknown).
    pub start: Option<StartCheck>,
}

/// What `start` checks besides the consultation's own records (see [`Context::start`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartCheck {
    /// The rules.
    pub rules: crate::compliance::Rules,
    /// The time, the patient's birth date, today's local date.
    pub facts: crate::compliance::StartFacts,
}

impl<'a> Context<'a> {
    /// A context with no reason, plugin or verifier.
    pub fn new(now: DateTime<Utc>, actor: &'a Actor) -> Context<'a> {
        Context {
            now,
            actor,
            reason: None,
            plugin: None,
            verifier: None,
            start: None,
        }
    }

    /// With a reason.
    pub fn with_reason(mut self, reason: &'a str) -> Context<'a> {
        self.reason = Some(reason);
        self
    }

    /// With the deciding plugin.
    pub fn with_plugin(mut self, plugin: &'a PluginRef) -> Context<'a> {
        self.plugin = Some(plugin);
        self
    }

    /// With the China rules and facts for `start`.
    pub fn with_start(mut self, start: StartCheck) -> Context<'a> {
        self.start = Some(start);
        self
    }

    /// With a signature verifier.
    pub fn with_verifier(mut self, verifier: &'a dyn SignatureVerifier) -> Context<'a> {
        self.verifier = Some(verifier);
        self
    }
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("now", &self.now)
            .field("actor", &self.actor)
            .field("reason", &self.reason)
            .field("plugin", &self.plugin)
            .field("verifier", &self.verifier.map(|_| "<verifier>"))
            .field("start", &self.start)
            .finish()
    }
}

impl Action {
    /// The roles that may perform the action. Physicians act in person (CN-11): only an
    /// expert accepts, opens, signs; only a local doctor records the local decision. A plugin
    /// may only offer (its ranking decided; the plugin's identity is on the event), never
    /// hold the case or sign (CN-11, CN-20). Pharmacists act on prescriptions, not here.
    pub fn roles(self) -> &'static [Role] {
        use Role::*;
        match self {
            Action::Submit => &[LocalDoctor, Coordinator, System],
            Action::Approve => &[LocalDoctor, Coordinator, System],
            Action::Offer | Action::FanOut => &[Coordinator, System, Plugin],
            Action::Open | Action::Accept => &[Expert],
            Action::Reject => &[Expert, Coordinator],
            Action::Escalate => &[Coordinator, System],
            Action::Schedule => &[Expert, LocalDoctor, Coordinator, System],
            Action::RecordConsent | Action::AttachPhysician => &[LocalDoctor, Coordinator],
            Action::RecordVerification => &[LocalDoctor, Coordinator, System],
            Action::RecordRecordingConsent => &[Expert, LocalDoctor, Coordinator],
            Action::RecordPriorDiagnosis => &[LocalDoctor, Expert, Coordinator],
            Action::Start
            | Action::Pause
            | Action::Resume
            | Action::RequestReport
            | Action::Complete => &[Expert, LocalDoctor, Coordinator, System],
            Action::SignOpinion => &[Expert],
            Action::RecordLocalDecision => &[LocalDoctor],
            Action::Cancel => &[LocalDoctor, Coordinator, System],
            Action::Fail => &[Coordinator, System],
            Action::MarkEnteredInError => &[LocalDoctor, Coordinator],
            Action::RepointPatient => &[Coordinator, System],
        }
    }
}
