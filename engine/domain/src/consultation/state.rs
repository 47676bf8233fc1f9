//! The consultation's states and the edges between them, exactly as STANDARDS FHIR-10 lists
//! them: each state is a FHIR `Task.status` plus a sub-state in `Task.businessStatus` (a local
//! code system), and [`State::allowed_actions`] is the one table every decision consults.
//!
//! Two kinds of action appear in the table. *Transitions* move the Task along a FHIR-10 edge
//! (submit, approve, offer, open, accept, reject, start, pause, resume, request_report,
//! complete, cancel, fail, mark_entered_in_error). *Records* add facts without changing the
//! state (consent, verification, physician, prior diagnosis, appointment, opinion, local
//! decision, escalation, patient re-pointing); they are listed in the states where the fact can
//! still matter. docs/workflow.md has the same table for readers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a consultation failed: the `businessStatus` of a `failed` Task (FHIR-10, MATCH-20).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailReason {
    /// A deadline passed with nobody acting (no expert found, no report delivered in time).
    SlaBreached,
    /// The platform, the network or the media session failed.
    TechnicalFailure,
    /// A participant did not come to a scheduled session (the Appointment becomes `noshow`).
    NoShow,
}

impl FailReason {
    /// Every reason, in declaration order.
    pub const ALL: [FailReason; 3] = [
        FailReason::SlaBreached,
        FailReason::TechnicalFailure,
        FailReason::NoShow,
    ];

    /// The businessStatus code (`sla-breached`, `technical-failure`, `no-show`).
    pub fn code(self) -> &'static str {
        match self {
            FailReason::SlaBreached => "sla-breached",
            FailReason::TechnicalFailure => "technical-failure",
            FailReason::NoShow => "no-show",
        }
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A consultation state (FHIR-10). Serialised as its `businessStatus` code, which is unique
/// per state (`drafting`, …, `sla-breached`, `entered-in-error`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// 草稿: the local doctor is writing the request. Task `draft`.
    Drafting,
    /// 已提交/待本院审核: submitted, awaiting the local facility's quality check. Task
    /// `requested`.
    PendingLocalApproval,
    /// 待分诊/待派单: approved, awaiting matching. Task `requested`.
    PendingMatch,
    /// 已派单: offered to an expert (or a pool), with a deadline. Task `requested`, owner set.
    Offered,
    /// 专家已查阅: an offered expert opened the case. Task `received`.
    Reviewing,
    /// 已接受/已排期: an expert accepted. Task `accepted`.
    Scheduled,
    /// 会诊中: the session runs. Task `in-progress`.
    InSession,
    /// 暂停: the session is interrupted (network drop, patient absent). Task `on-hold`.
    Paused,
    /// 待出具报告: the session ended, the signed report is awaited. Task `in-progress`.
    ReportPending,
    /// 已完成: the expert's signed opinion and the local decision are recorded. Task
    /// `completed`. Terminal.
    ReportSigned,
    /// 已拒绝: the current offer was declined (with a reason). Task `rejected`: terminal for
    /// this Task; the consultation continues only with a new attempt (offer or fan-out), which
    /// FHIR-10 lists as this row's side effect.
    Declined,
    /// 已取消: cancelled with a reason. Task `cancelled`. Terminal.
    Cancelled,
    /// 失败/超时: failed with a reason. Task `failed`. Terminal.
    Failed(FailReason),
    /// 录入错误: created or moved by mistake. Task `entered-in-error`. Terminal.
    EnteredInError,
}

/// FHIR R4 `Task.status` codes used by the consultation (FHIR-10 column 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskStatus {
    /// `draft`.
    Draft,
    /// `requested`.
    Requested,
    /// `received`.
    Received,
    /// `accepted`.
    Accepted,
    /// `rejected`.
    Rejected,
    /// `in-progress`.
    InProgress,
    /// `on-hold`.
    OnHold,
    /// `completed`.
    Completed,
    /// `cancelled`.
    Cancelled,
    /// `failed`.
    Failed,
    /// `entered-in-error`.
    EnteredInError,
}

impl TaskStatus {
    /// The FHIR code.
    pub fn code(self) -> &'static str {
        match self {
            TaskStatus::Draft => "draft",
            TaskStatus::Requested => "requested",
            TaskStatus::Received => "received",
            TaskStatus::Accepted => "accepted",
            TaskStatus::Rejected => "rejected",
            TaskStatus::InProgress => "in-progress",
            TaskStatus::OnHold => "on-hold",
            TaskStatus::Completed => "completed",
            TaskStatus::Cancelled => "cancelled",
            TaskStatus::Failed => "failed",
            TaskStatus::EnteredInError => "entered-in-error",
        }
    }
}

/// Everything that can be asked of a consultation; the names are the HTTP action names
/// (`POST /api/consultations/{id}/{action}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Drafting → pending local approval.
    Submit,
    /// Local quality check passed → pending match.
    Approve,
    /// Offer to one expert (a new attempt); from `offered` only once the deadline passed.
    Offer,
    /// Offer to a pool at once: the first to accept wins (FHIR-11).
    FanOut,
    /// The offered expert opened the case → reviewing.
    Open,
    /// The offered expert accepts (version-guarded) → scheduled.
    Accept,
    /// The offered expert declines, with a reason → declined.
    Reject,
    /// Hand the case to a coordinator or duty officer (MATCH-20); records only.
    Escalate,
    /// Book or move the appointment; records only.
    Schedule,
    /// Record the informed consent (CN-05); records only.
    RecordConsent,
    /// Record a participant's recording consent or its withdrawal (RTC-30); records only,
    /// from acceptance until the session ends.
    RecordRecordingConsent,
    /// Attach the accompanying local physician (CN-06); records only.
    AttachPhysician,
    /// Record a real-name verification (CN-11, CN-12); records only.
    RecordVerification,
    /// Record prior-diagnosis evidence for a follow-up (CN-10); records only.
    RecordPriorDiagnosis,
    /// The session starts (gated: CN-05, CN-06, CN-10, CN-11, CN-12) → in session.
    Start,
    /// The session is interrupted → paused.
    Pause,
    /// The session continues → in session.
    Resume,
    /// The session ended; the report is awaited → report pending.
    RequestReport,
    /// The expert's signed opinion (CN-07, CN-21); records only.
    SignOpinion,
    /// The local doctor's separate decision (CN-07); records only.
    RecordLocalDecision,
    /// Signed opinion and local decision present → report signed.
    Complete,
    /// Cancel, with a reason.
    Cancel,
    /// Fail, with a code and a reason.
    Fail,
    /// Mark as entered in error (from any other state).
    MarkEnteredInError,
    /// Re-point to the surviving patient of a merge (MATCH-05); records only.
    RepointPatient,
}

impl Action {
    /// Every action, in declaration order.
    pub const ALL: [Action; 25] = [
        Action::Submit,
        Action::Approve,
        Action::Offer,
        Action::FanOut,
        Action::Open,
        Action::Accept,
        Action::Reject,
        Action::Escalate,
        Action::Schedule,
        Action::RecordConsent,
        Action::RecordRecordingConsent,
        Action::AttachPhysician,
        Action::RecordVerification,
        Action::RecordPriorDiagnosis,
        Action::Start,
        Action::Pause,
        Action::Resume,
        Action::RequestReport,
        Action::SignOpinion,
        Action::RecordLocalDecision,
        Action::Complete,
        Action::Cancel,
        Action::Fail,
        Action::MarkEnteredInError,
        Action::RepointPatient,
    ];

    /// The snake_case name (as serialised and in URLs).
    pub fn name(self) -> &'static str {
        match self {
            Action::Submit => "submit",
            Action::Approve => "approve",
            Action::Offer => "offer",
            Action::FanOut => "fan_out",
            Action::Open => "open",
            Action::Accept => "accept",
            Action::Reject => "reject",
            Action::Escalate => "escalate",
            Action::Schedule => "schedule",
            Action::RecordConsent => "record_consent",
            Action::RecordRecordingConsent => "record_recording_consent",
            Action::AttachPhysician => "attach_physician",
            Action::RecordVerification => "record_verification",
            Action::RecordPriorDiagnosis => "record_prior_diagnosis",
            Action::Start => "start",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::RequestReport => "request_report",
            Action::SignOpinion => "sign_opinion",
            Action::RecordLocalDecision => "record_local_decision",
            Action::Complete => "complete",
            Action::Cancel => "cancel",
            Action::Fail => "fail",
            Action::MarkEnteredInError => "mark_entered_in_error",
            Action::RepointPatient => "repoint_patient",
        }
    }

    /// True when the action needs a non-blank reason (FHIR-10: `statusReason` is required for
    /// rejected, cancelled and failed; CN-04 for a decline).
    pub fn needs_reason(self) -> bool {
        matches!(self, Action::Reject | Action::Cancel | Action::Fail)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The four records that establish the session's gates; allowed wherever the session has not
/// started yet and the consultation is alive.
const GATE_RECORDS: [Action; 4] = [
    Action::RecordConsent,
    Action::AttachPhysician,
    Action::RecordVerification,
    Action::RecordPriorDiagnosis,
];

impl State {
    /// Every state, the three failed sub-states included, in FHIR-10's row order.
    pub const ALL: [State; 16] = [
        State::Drafting,
        State::PendingLocalApproval,
        State::PendingMatch,
        State::Offered,
        State::Reviewing,
        State::Scheduled,
        State::InSession,
        State::Paused,
        State::ReportPending,
        State::ReportSigned,
        State::Declined,
        State::Cancelled,
        State::Failed(FailReason::SlaBreached),
        State::Failed(FailReason::TechnicalFailure),
        State::Failed(FailReason::NoShow),
        State::EnteredInError,
    ];

    /// The FHIR `Task.status`.
    pub fn task_status(self) -> TaskStatus {
        match self {
            State::Drafting => TaskStatus::Draft,
            State::PendingLocalApproval | State::PendingMatch | State::Offered => {
                TaskStatus::Requested
            }
            State::Reviewing => TaskStatus::Received,
            State::Scheduled => TaskStatus::Accepted,
            State::InSession | State::ReportPending => TaskStatus::InProgress,
            State::Paused => TaskStatus::OnHold,
            State::ReportSigned => TaskStatus::Completed,
            State::Declined => TaskStatus::Rejected,
            State::Cancelled => TaskStatus::Cancelled,
            State::Failed(_) => TaskStatus::Failed,
            State::EnteredInError => TaskStatus::EnteredInError,
        }
    }

    /// The `Task.businessStatus` code (local code system). FHIR-10 leaves the cell empty for
    /// entered-in-error and puts the free-text reason there for cancelled; the engine uses the
    /// codes `entered-in-error` and `cancelled` and carries the reason in `Task.statusReason`.
    pub fn code(self) -> &'static str {
        match self {
            State::Drafting => "drafting",
            State::PendingLocalApproval => "pending-local-approval",
            State::PendingMatch => "pending-match",
            State::Offered => "offered",
            State::Reviewing => "reviewing",
            State::Scheduled => "scheduled",
            State::InSession => "in-session",
            State::Paused => "paused",
            State::ReportPending => "report-pending",
            State::ReportSigned => "report-signed",
            State::Declined => "declined",
            State::Cancelled => "cancelled",
            State::Failed(reason) => reason.code(),
            State::EnteredInError => "entered-in-error",
        }
    }

    /// True when nothing but marking entered-in-error can follow (FHIR-10 "terminal").
    /// `declined` is not terminal for the consultation: a new attempt may follow.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            State::ReportSigned | State::Cancelled | State::Failed(_) | State::EnteredInError
        )
    }

    /// The actions this state allows (FHIR-10). Guards can still refuse an allowed action:
    /// the role, the offer's deadline, the version, the gates, the completion requirements.
    pub fn allowed_actions(self) -> Vec<Action> {
        use Action as A;
        let mut out: Vec<Action> = match self {
            State::Drafting => vec![A::Submit, A::Cancel],
            State::PendingLocalApproval => vec![A::Approve, A::Cancel],
            State::PendingMatch => vec![A::Offer, A::FanOut, A::Escalate, A::Cancel, A::Fail],
            State::Offered => vec![
                A::Open,
                A::Accept,
                A::Reject,
                A::Offer,
                A::FanOut,
                A::Escalate,
                A::Cancel,
            ],
            State::Reviewing => vec![A::Accept, A::Reject, A::Escalate, A::Cancel],
            State::Declined => vec![A::Offer, A::FanOut, A::Escalate],
            State::Scheduled => vec![A::Schedule, A::Start, A::Cancel, A::Fail],
            State::InSession => vec![
                A::Pause,
                A::RequestReport,
                A::SignOpinion,
                A::RecordLocalDecision,
                A::Complete,
                A::Fail,
                A::Cancel,
            ],
            State::Paused => vec![A::Resume, A::Cancel, A::Fail],
            State::ReportPending => {
                vec![A::SignOpinion, A::RecordLocalDecision, A::Complete, A::Fail]
            }
            State::ReportSigned | State::Cancelled | State::Failed(_) | State::EnteredInError => {
                vec![]
            }
        };
        if self.before_session() {
            out.extend(GATE_RECORDS);
        }
        if matches!(self, State::Scheduled | State::InSession | State::Paused) {
            out.push(A::RecordRecordingConsent);
        }
        if !self.is_terminal() {
            out.push(A::RepointPatient);
        }
        if self != State::EnteredInError {
            out.push(A::MarkEnteredInError);
        }
        out.sort();
        out
    }

    /// True when `action` is in [`State::allowed_actions`].
    pub fn allows(self, action: Action) -> bool {
        self.allowed_actions().contains(&action)
    }

    /// The failure codes allowed from this state: `no-show` only from `scheduled` (FHIR-10's
    /// scheduled row), `sla-breached` and `technical-failure` from the other states with a
    /// `failed` edge (the failed row).
    pub fn fail_reasons(self) -> &'static [FailReason] {
        match self {
            State::Scheduled => &[FailReason::NoShow],
            State::PendingMatch | State::InSession | State::Paused | State::ReportPending => {
                &[FailReason::SlaBreached, FailReason::TechnicalFailure]
            }
            _ => &[],
        }
    }

    /// True in the live states before the session: the gate records are accepted there.
    pub fn before_session(self) -> bool {
        matches!(
            self,
            State::Drafting
                | State::PendingLocalApproval
                | State::PendingMatch
                | State::Offered
                | State::Reviewing
                | State::Declined
                | State::Scheduled
        )
    }

    /// Parses a businessStatus code.
    pub fn from_code(code: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.code() == code)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Why a text is not a state code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a consultation state (drafting, pending-local-approval, …, entered-in-error)"
)]
pub struct StateError(pub String);

impl FromStr for State {
    type Err = StateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::from_code(s.trim()).ok_or_else(|| StateError(s.trim().to_owned()))
    }
}

impl Serialize for State {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for State {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_parse_back() {
        for s in State::ALL {
            assert_eq!(State::from_code(s.code()), Some(s), "{s:?}");
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(serde_json::from_str::<State>(&json).unwrap(), s);
        }
        assert!("waiting".parse::<State>().is_err());
    }

    #[test]
    fn failed_reasons_share_one_task_status() {
        for r in FailReason::ALL {
            assert_eq!(State::Failed(r).task_status(), TaskStatus::Failed);
            assert_eq!(State::Failed(r).code(), r.code());
        }
    }

    #[test]
    fn only_entered_in_error_allows_nothing() {
        for s in State::ALL {
            assert_eq!(
                s.allowed_actions().is_empty(),
                s == State::EnteredInError,
                "{s}"
            );
        }
    }
}
