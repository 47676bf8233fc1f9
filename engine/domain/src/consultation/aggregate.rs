//! The consultation aggregate: its data, read accessors, creation, and the fold of events
//! ([`apply`], [`Consultation::replay`]). Fields are private: only events change a
//! consultation, so what the store persists is all there is.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::identity::PersonId;

use super::command::{Command, Context};
use super::decide::{check_context, decide, stamp};
use super::error::ConsultError;
use super::event::{Appointment, Event, EventKind, Offeree, Role};
use super::gates::{GateRecords, Requirement};
use super::opinion::{LocalDecision, SignedOpinion};
use super::request::ConsultationRequest;
use super::state::{Action, State};
use super::study::AttachedStudy;
use super::timeline::{Milestones, TimelineEntry};

/// One attempt to find an expert: a FHIR Task of its own with the consultation's `focus` and
/// `groupIdentifier` (the consultation id). A rejection or a timeout ends it; the next offer
/// is a new attempt (FHIR-10 (c)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1, 2, …
    pub number: u32,
    /// One expert, or the pool of a fan-out.
    pub offerees: Vec<Offeree>,
    /// True for a fan-out.
    pub fan_out: bool,
    /// When offered.
    pub offered_at: DateTime<Utc>,
    /// The SLA deadline.
    pub deadline: DateTime<Utc>,
    /// Who opened it first, and when.
    #[serde(default)]
    pub opened: Option<(String, DateTime<Utc>)>,
    /// Each decline: the expert (none: a coordinator for the attempt), the reason, the time.
    #[serde(default)]
    pub declines: Vec<Decline>,
    /// Where it was escalated to, if it was.
    #[serde(default)]
    pub escalated_to: Option<String>,
    /// How it ended; none while open (or when the consultation ended around it).
    #[serde(default)]
    pub outcome: Option<AttemptOutcome>,
}

/// A decline of an attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decline {
    /// The declining expert; none when a coordinator declined the attempt.
    pub expert: Option<String>,
    /// Why (CN-04).
    pub reason: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// Accepted by this expert.
    Accepted {
        /// The expert.
        expert: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// Every offeree declined (or a coordinator declined it).
    Declined {
        /// When.
        at: DateTime<Utc>,
    },
    /// The deadline passed and the case was offered again (MATCH-20: `failed(sla-breached)`
    /// for this Task).
    Expired {
        /// When the expiry was recorded.
        at: DateTime<Utc>,
    },
}

impl Attempt {
    /// True when `expert` is offered this attempt and has not declined it.
    pub fn is_open_to(&self, expert: &str) -> bool {
        self.outcome.is_none()
            && self.offerees.iter().any(|o| o.expert == expert)
            && !self
                .declines
                .iter()
                .any(|d| d.expert.as_deref() == Some(expert))
    }

    /// The offerees who have not declined.
    pub fn remaining(&self) -> Vec<&Offeree> {
        self.offerees
            .iter()
            .filter(|o| {
                !self
                    .declines
                    .iter()
                    .any(|d| d.expert.as_deref() == Some(o.expert.as_str()))
            })
            .collect()
    }
}

/// The expert's signed opinion as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedOpinion {
    /// The opinion and its signature.
    pub signed: SignedOpinion,
    /// The signer as the verifier named them when it was recorded.
    pub verified_signer: String,
    /// When it was recorded.
    pub at: DateTime<Utc>,
}

/// The local doctor's decision as recorded: a separate act by a separate person (CN-07).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedDecision {
    /// The decision.
    pub decision: LocalDecision,
    /// The local doctor.
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// A consultation: the fold of its events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consultation {
    id: String,
    version: u64,
    state: State,
    request: ConsultationRequest,
    attempts: Vec<Attempt>,
    accepted_by: Option<String>,
    appointment: Option<Appointment>,
    gates: GateRecords,
    opinion: Option<RecordedOpinion>,
    local_decision: Option<RecordedDecision>,
    status_reason: Option<String>,
    last_modified: DateTime<Utc>,
    milestones: Milestones,
    timeline: Vec<TimelineEntry>,
    /// The imaging studies attached (DCM-07).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    studies: Vec<AttachedStudy>,
}

/// Why a list of events does not make a consultation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// No events.
    #[error("no events")]
    Empty,
    /// The first event is not `created`.
    #[error("the first event (version {version}) is `{kind}`, not `created`")]
    NotCreated {
        /// Its version.
        version: u64,
        /// Its type.
        kind: &'static str,
    },
    /// Versions are not 1, 2, 3, …
    #[error("event {index} has version {found}, expected {expected}")]
    Gap {
        /// The position in the list.
        index: usize,
        /// The version expected.
        expected: u64,
        /// The version found.
        found: u64,
    },
}

impl Consultation {
    /// Validates a request and returns the `created` event (version 1). Local doctors,
    /// coordinators and the engine (a pipeline from an HIS order) create consultations; a local
    /// doctor only as the requesting doctor (`NotRequestingDoctor` otherwise), the others on a
    /// doctor's behalf.
    pub fn create(
        id: &str,
        request: ConsultationRequest,
        ctx: &Context<'_>,
    ) -> Result<Event, ConsultError> {
        check_context(None, ctx)?;
        if !matches!(
            ctx.actor.role,
            Role::LocalDoctor | Role::Coordinator | Role::System
        ) {
            return Err(ConsultError::RoleNotAllowed {
                action: "create",
                role: ctx.actor.role,
            });
        }
        // A local doctor asks for themself; a coordinator or the engine (an HIS order) asks on
        // a doctor's behalf. A blank doctor is the validation's to report.
        let doctor = request.requesting_doctor.trim();
        if ctx.actor.role == Role::LocalDoctor
            && !doctor.is_empty()
            && doctor != ctx.actor.id.trim()
        {
            return Err(ConsultError::NotRequestingDoctor {
                actor: ctx.actor.id.clone(),
                doctor: doctor.to_owned(),
            });
        }
        if id.trim().is_empty() {
            return Err(ConsultError::invalid(None, "id", "is blank"));
        }
        request.validate()?;
        let kind = EventKind::Created {
            consultation: id.to_owned(),
            request,
        };
        Ok(stamp(0, ctx, None, vec![kind]).remove(0))
    }

    /// The consultation a `created` event starts; `None` for any other event.
    pub fn from_created(event: &Event) -> Option<Consultation> {
        let EventKind::Created {
            consultation,
            request,
        } = &event.kind
        else {
            return None;
        };
        let mut c = Consultation {
            id: consultation.clone(),
            version: event.version,
            state: State::Drafting,
            request: request.clone(),
            attempts: Vec::new(),
            accepted_by: None,
            appointment: None,
            gates: GateRecords::default(),
            opinion: None,
            local_decision: None,
            status_reason: None,
            last_modified: event.at,
            milestones: Milestones {
                created: Some(event.at),
                ..Milestones::default()
            },
            timeline: Vec::new(),
            studies: Vec::new(),
        };
        c.timeline
            .push(entry(event, State::Drafting, State::Drafting));
        Some(c)
    }

    /// Rebuilds a consultation from its stored events, checking they start with `created`
    /// and their versions run 1, 2, 3, ….
    pub fn replay(events: &[Event]) -> Result<Consultation, ReplayError> {
        let first = events.first().ok_or(ReplayError::Empty)?;
        let mut c = Consultation::from_created(first).ok_or(ReplayError::NotCreated {
            version: first.version,
            kind: first.kind.name(),
        })?;
        if first.version != 1 {
            return Err(ReplayError::Gap {
                index: 0,
                expected: 1,
                found: first.version,
            });
        }
        for (index, e) in events.iter().enumerate().skip(1) {
            if e.version != c.version + 1 || matches!(e.kind, EventKind::Created { .. }) {
                return Err(ReplayError::Gap {
                    index,
                    expected: c.version + 1,
                    found: e.version,
                });
            }
            c = apply(c, e);
        }
        Ok(c)
    }

    /// Decides `command` and folds the events: the new consultation and what to persist.
    pub fn execute(
        &self,
        command: &Command,
        ctx: &Context<'_>,
    ) -> Result<(Consultation, Vec<Event>), ConsultError> {
        let events = decide(self, command, ctx)?;
        let next = events.iter().fold(self.clone(), apply);
        Ok((next, events))
    }

    /// The id (also the FHIR `groupIdentifier` of the attempts).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The number of events so far (the `ETag`: `W/"version"`).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The state.
    pub fn state(&self) -> State {
        self.state
    }

    /// True while the consultation waits for the engine's assignment: pending a match and not
    /// escalated since its (last) approval. An escalated case waits for a person, so an
    /// assignment that runs twice (at approval and from its timer) escalates it once.
    pub fn awaits_assignment(&self) -> bool {
        self.state == State::PendingMatch
            && !self
                .timeline
                .iter()
                .rev()
                .take_while(|e| e.event != "approved")
                .any(|e| e.event == "escalated")
    }

    /// The request (with the current patient after a merge).
    pub fn request(&self) -> &ConsultationRequest {
        &self.request
    }

    /// The patient's person id.
    pub fn patient(&self) -> PersonId {
        self.request.patient
    }

    /// Every attempt, oldest first.
    pub fn attempts(&self) -> &[Attempt] {
        &self.attempts
    }

    /// The latest attempt.
    pub fn current_attempt(&self) -> Option<&Attempt> {
        self.attempts.last()
    }

    /// The imaging studies attached, in the order they were first attached (DCM-07).
    pub fn studies(&self) -> &[AttachedStudy] {
        &self.studies
    }

    /// The expert who accepted.
    pub fn accepted_by(&self) -> Option<&str> {
        self.accepted_by.as_deref()
    }

    /// The booked appointment.
    pub fn appointment(&self) -> Option<&Appointment> {
        self.appointment.as_ref()
    }

    /// The gate records.
    pub fn gates(&self) -> &GateRecords {
        &self.gates
    }

    /// The signed opinion.
    pub fn opinion(&self) -> Option<&RecordedOpinion> {
        self.opinion.as_ref()
    }

    /// The local decision.
    pub fn local_decision(&self) -> Option<&RecordedDecision> {
        self.local_decision.as_ref()
    }

    /// The reason of the latest reject, cancel, fail or entered-in-error (`Task.statusReason`).
    pub fn status_reason(&self) -> Option<&str> {
        self.status_reason.as_deref()
    }

    /// When the last event happened (`Task.lastModified`).
    pub fn last_modified(&self) -> DateTime<Utc> {
        self.last_modified
    }

    /// The MATCH-21 timestamps.
    pub fn milestones(&self) -> &Milestones {
        &self.milestones
    }

    /// One entry per event, oldest first.
    pub fn timeline(&self) -> Vec<TimelineEntry> {
        self.timeline.clone()
    }

    /// What this state allows (guards may still refuse: see [`State::allowed_actions`]).
    pub fn allowed_actions(&self) -> Vec<Action> {
        self.state.allowed_actions()
    }

    /// What is missing before the session may start (empty: nothing).
    pub fn missing_for_start(&self) -> Vec<Requirement> {
        self.gates
            .missing_for_start(self.request.service_type, self.accepted_by.as_deref())
    }

    /// What is missing before the session can start under `rules` with `facts` (the China
    /// rules of the facility: [`crate::compliance`]).
    pub fn missing_under(
        &self,
        rules: &crate::compliance::Rules,
        facts: Option<&crate::compliance::StartFacts>,
    ) -> Vec<Requirement> {
        self.gates
            .missing_under(rules, self.accepted_by.as_deref(), facts)
    }

    /// What is missing before completion (empty: nothing).
    pub fn missing_for_completion(&self) -> Vec<Requirement> {
        let mut missing = Vec::new();
        if self.opinion.is_none() {
            missing.push(Requirement::SignedOpinion);
        }
        if self.local_decision.is_none() {
            missing.push(Requirement::LocalDecision);
        }
        missing
    }
}

fn entry(e: &Event, from: State, to: State) -> TimelineEntry {
    TimelineEntry {
        version: e.version,
        at: e.at,
        event: e.kind.name().to_owned(),
        actor: e.actor.clone(),
        plugin: e.plugin.clone(),
        reason: e.reason.clone(),
        from,
        to,
    }
}

/// Folds one event into the consultation. Total: events were decided against the state they
/// follow, so this only records them (a `created` event starts a new consultation).
pub fn apply(mut c: Consultation, e: &Event) -> Consultation {
    if let Some(fresh) = Consultation::from_created(e) {
        return fresh;
    }
    let from = c.state;
    let m = &mut c.milestones;
    match &e.kind {
        EventKind::Created { .. } => {}
        EventKind::Submitted => c.state = State::PendingLocalApproval,
        EventKind::Approved => {
            c.state = State::PendingMatch;
            m.local_approval.get_or_insert(e.at);
        }
        EventKind::Offered {
            attempt,
            offerees,
            fan_out,
            deadline,
        } => {
            c.attempts.push(Attempt {
                number: *attempt,
                offerees: offerees.clone(),
                fan_out: *fan_out,
                offered_at: e.at,
                deadline: *deadline,
                opened: None,
                declines: Vec::new(),
                escalated_to: None,
                outcome: None,
            });
            c.state = State::Offered;
            m.offered.get_or_insert(e.at);
        }
        EventKind::OfferExpired { attempt } => {
            if let Some(a) = c.attempts.iter_mut().find(|a| a.number == *attempt) {
                a.outcome = Some(AttemptOutcome::Expired { at: e.at });
            }
        }
        EventKind::Opened { attempt } => {
            if let Some(a) = c.attempts.iter_mut().find(|a| a.number == *attempt) {
                a.opened.get_or_insert((e.actor.id.clone(), e.at));
            }
            c.state = State::Reviewing;
            m.opened.get_or_insert(e.at);
        }
        EventKind::Accepted { attempt } => {
            if let Some(a) = c.attempts.iter_mut().find(|a| a.number == *attempt) {
                a.outcome = Some(AttemptOutcome::Accepted {
                    expert: e.actor.id.clone(),
                    at: e.at,
                });
            }
            c.accepted_by = Some(e.actor.id.clone());
            c.state = State::Scheduled;
            m.accepted.get_or_insert(e.at);
        }
        EventKind::Rejected { attempt, expert } => {
            if let Some(a) = c.attempts.iter_mut().find(|a| a.number == *attempt) {
                a.declines.push(Decline {
                    expert: expert.clone(),
                    reason: e.reason.clone(),
                    at: e.at,
                });
                if expert.is_none() || a.remaining().is_empty() {
                    a.outcome = Some(AttemptOutcome::Declined { at: e.at });
                    c.state = State::Declined;
                    c.status_reason = e.reason.clone();
                }
            }
        }
        EventKind::Escalated { attempt, to } => {
            if let Some(a) = c.attempts.iter_mut().find(|a| Some(a.number) == *attempt) {
                a.escalated_to = Some(to.clone());
            }
        }
        EventKind::AppointmentBooked { appointment } => c.appointment = Some(appointment.clone()),
        EventKind::ConsentRecorded { consent } => c.gates.consent = Some(consent.clone()),
        EventKind::RecordingConsentRecorded { consent } => {
            c.gates.recording_consents.push(consent.clone())
        }
        EventKind::PhysicianAttached { physician } => c.gates.physician = Some(physician.clone()),
        EventKind::VerificationRecorded { verification } => {
            c.gates.verifications.push(verification.clone())
        }
        EventKind::PriorDiagnosisRecorded { evidence } => {
            c.gates.prior_diagnoses.push(evidence.clone())
        }
        EventKind::Started => {
            c.state = State::InSession;
            m.joined.get_or_insert(e.at);
        }
        EventKind::Paused => c.state = State::Paused,
        EventKind::Resumed => c.state = State::InSession,
        EventKind::ReportRequested => c.state = State::ReportPending,
        EventKind::OpinionSigned {
            signed,
            verified_signer,
        } => {
            c.opinion = Some(RecordedOpinion {
                signed: signed.clone(),
                verified_signer: verified_signer.clone(),
                at: e.at,
            });
            m.report_signed = Some(e.at);
        }
        EventKind::LocalDecisionRecorded { decision } => {
            c.local_decision = Some(RecordedDecision {
                decision: decision.clone(),
                by: e.actor.id.clone(),
                at: e.at,
            })
        }
        EventKind::Completed => c.state = State::ReportSigned,
        EventKind::Cancelled => {
            c.state = State::Cancelled;
            c.status_reason = e.reason.clone();
        }
        EventKind::Failed { code } => {
            c.state = State::Failed(*code);
            c.status_reason = e.reason.clone();
        }
        EventKind::EnteredInError => {
            c.state = State::EnteredInError;
            c.status_reason = e.reason.clone();
        }
        EventKind::PatientRepointed { to, .. } => c.request.patient = *to,
        EventKind::StudyAttached { study } => super::study::fold(&mut c.studies, study),
        EventKind::VitalAlertRaised { .. } => {}
    }
    c.version = e.version;
    c.last_modified = e.at;
    let to = c.state;
    c.timeline.push(entry(e, from, to));
    c
}
