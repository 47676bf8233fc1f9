//! Why a command was refused, in a form the HTTP layer maps directly: [`ConsultError::status`]
//! is the HTTP status (409 for a state that does not allow the action, 412 for a lost race,
//! 422 for missing or invalid data, 403 for a role or person that may not act), and each
//! variant says what to do next (the allowed actions, the missing records, the winner).

use chrono::{DateTime, Utc};

use crate::identity::PersonId;
use crate::signature::SignatureError;

use super::event::Role;
use super::gates::Requirement;
use super::request::{FieldProblem, RequestError};
use super::state::{Action, FailReason, State};

/// A refused command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConsultError {
    /// The state does not allow the action (FHIR-10). HTTP 409.
    #[error("cannot {action} a consultation in state {from}; allowed: {}", names(.allowed))]
    InvalidTransition {
        /// The current state.
        from: State,
        /// The refused action.
        action: Action,
        /// What the state allows.
        allowed: Vec<Action>,
    },
    /// Reject, cancel and fail need a reason (FHIR-10 statusReason, CN-04). HTTP 422.
    #[error("{action} needs a reason")]
    MissingReason {
        /// The action.
        action: Action,
    },
    /// The caller's version is not the current one (FHIR-11 If-Match). HTTP 412.
    #[error("version conflict: expected {expected}, the consultation is at {actual}")]
    VersionConflict {
        /// The version the caller saw.
        expected: u64,
        /// The current version.
        actual: u64,
    },
    /// Another expert accepted first (FHIR-11). HTTP 412.
    #[error("the case is taken: accepted by {by}")]
    Taken {
        /// The expert who accepted.
        by: String,
    },
    /// The actor's role may not perform the action. HTTP 403.
    #[error("role {role:?} may not {action}")]
    RoleNotAllowed {
        /// The action's name (`create` for creation).
        action: &'static str,
        /// The actor's role.
        role: Role,
    },
    /// The actor is not the person the action belongs to (not an offeree of the current
    /// attempt, not the accepted expert, not the requesting or attached local doctor). HTTP 403.
    #[error("{actor} may not {action}: {why}")]
    NotAssigned {
        /// The action.
        action: Action,
        /// The actor id.
        actor: String,
        /// Who may.
        why: String,
    },
    /// A local doctor asked for a consultation in another doctor's name: a local doctor
    /// requests as themself; coordinators (and the engine, for an HIS order) request on a
    /// doctor's behalf. HTTP 403.
    #[error(
        "{actor} may not request a consultation as {doctor}: a local doctor requests as themself \
         (requesting_doctor must be {actor}); a coordinator may request on a doctor's behalf"
    )]
    NotRequestingDoctor {
        /// The actor id.
        actor: String,
        /// The `requesting_doctor` of the request.
        doctor: String,
    },
    /// Records required before the action are missing (gates: CN-05, CN-06, CN-10, CN-11,
    /// CN-12; completion: CN-07, CN-21). HTTP 409.
    #[error("cannot {action}: {}", missing.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Missing {
        /// The action.
        action: Action,
        /// What is missing.
        missing: Vec<Requirement>,
    },
    /// The current offer has not expired yet, so it cannot be re-offered (FHIR-10: offered →
    /// re-offer on timeout). HTTP 409.
    #[error("the current offer is open until {deadline}; re-offer after it")]
    OfferStillOpen {
        /// The current deadline.
        deadline: DateTime<Utc>,
    },
    /// The failure code is not one this state can fail with. HTTP 409.
    #[error("cannot fail with {reason} from state {from}; allowed: {}", reasons(.allowed))]
    FailReasonNotAllowed {
        /// The current state.
        from: State,
        /// The given code.
        reason: FailReason,
        /// The codes this state allows.
        allowed: Vec<FailReason>,
    },
    /// A merge names a patient the consultation does not belong to. HTTP 409.
    #[error("the consultation belongs to person {current}, not {from}")]
    PatientMismatch {
        /// The consultation's patient.
        current: PersonId,
        /// The `from` of the merge.
        from: PersonId,
    },
    /// The creation request is invalid (every problem, with field paths). HTTP 422.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// A command's data is invalid (field paths relative to the command). HTTP 422.
    #[error("invalid {}: {}", action.map_or("request", Action::name), problems.iter().map(|p| format!("{}: {}", p.path, p.problem)).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// The action (`None` for the context or the creation).
        action: Option<Action>,
        /// The problems.
        problems: Vec<FieldProblem>,
    },
    /// The opinion's signature does not verify. HTTP 422.
    #[error("the opinion's signature does not verify: {0}")]
    Signature(SignatureError),
    /// The engine gave no signature verifier for an opinion: a wiring error. HTTP 500.
    #[error("no signature verifier was given to check the opinion")]
    VerifierMissing,
}

fn names(actions: &[Action]) -> String {
    if actions.is_empty() {
        return "nothing (terminal)".into();
    }
    actions
        .iter()
        .map(|a| a.name())
        .collect::<Vec<_>>()
        .join(", ")
}

fn reasons(reasons: &[FailReason]) -> String {
    if reasons.is_empty() {
        return "none".into();
    }
    reasons
        .iter()
        .map(|r| r.code())
        .collect::<Vec<_>>()
        .join(", ")
}

impl ConsultError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            ConsultError::InvalidTransition { .. }
            | ConsultError::Missing { .. }
            | ConsultError::OfferStillOpen { .. }
            | ConsultError::FailReasonNotAllowed { .. }
            | ConsultError::PatientMismatch { .. } => 409,
            ConsultError::VersionConflict { .. } | ConsultError::Taken { .. } => 412,
            ConsultError::RoleNotAllowed { .. }
            | ConsultError::NotAssigned { .. }
            | ConsultError::NotRequestingDoctor { .. } => 403,
            ConsultError::MissingReason { .. }
            | ConsultError::Request(_)
            | ConsultError::Invalid { .. }
            | ConsultError::Signature(_) => 422,
            ConsultError::VerifierMissing => 500,
        }
    }

    /// A stable machine code for OperationOutcome.issue.code details and client handling.
    pub fn code(&self) -> &'static str {
        match self {
            ConsultError::InvalidTransition { .. } => "invalid-transition",
            ConsultError::MissingReason { .. } => "missing-reason",
            ConsultError::VersionConflict { .. } => "version-conflict",
            ConsultError::Taken { .. } => "taken",
            ConsultError::RoleNotAllowed { .. } => "role-not-allowed",
            ConsultError::NotAssigned { .. } => "not-assigned",
            ConsultError::NotRequestingDoctor { .. } => "not-requesting-doctor",
            ConsultError::Missing { .. } => "missing-requirements",
            ConsultError::OfferStillOpen { .. } => "offer-still-open",
            ConsultError::FailReasonNotAllowed { .. } => "fail-reason-not-allowed",
            ConsultError::PatientMismatch { .. } => "patient-mismatch",
            ConsultError::Request(_) => "invalid-request",
            ConsultError::Invalid { .. } => "invalid-command",
            ConsultError::Signature(_) => "bad-signature",
            ConsultError::VerifierMissing => "verifier-missing",
        }
    }

    /// One invalid field of `action`.
    pub(crate) fn invalid(action: Option<Action>, path: &str, problem: impl Into<String>) -> Self {
        ConsultError::Invalid {
            action,
            problems: vec![FieldProblem {
                path: path.into(),
                problem: problem.into(),
            }],
        }
    }
}
