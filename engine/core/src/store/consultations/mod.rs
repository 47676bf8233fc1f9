//! The consultation workflow's persistence (issue 15; STANDARDS FHIR-10, FHIR-11, MATCH-20).
//!
//! The domain decides ([`huizhen_domain::consultation::decide`]); the store keeps what it
//! decided. Four tables (migration 0011):
//!
//! * `consultations`: one row per consultation with the folded snapshot (the domain's
//!   `Consultation` JSON) and, in clear, what lists filter on (state, facilities, department,
//!   urgency, the patient's person id). The snapshot holds the case summary and is sealed when
//!   encryption at rest is on.
//! * `consultation_events`: append-only (triggers refuse UPDATE and DELETE), one row per
//!   event with who, in which role, when, which plugin version decided, and the state after
//!   it; unique by `(consultation, version)`.
//! * `consultation_facilities`: who may read it: the requesting facility and the facility of
//!   every expert it was offered to.
//! * `consultation_timers`: the durable SLA timers the sweep fires.
//!
//! **A command is one transaction** ([`Store::consultation_command`]): read the snapshot,
//! let the caller's closure decide (the closure sees the stored state, so a timer's step is
//! decided against what is really there), write one audit event per event (which takes the
//! audit chain's head: writers queue there, and `seq` order is commit order), append the
//! events, update the snapshot `WHERE version = old`, re-point the timers, commit. Zero rows
//! updated (or a duplicate `(consultation, version)`) means a concurrent writer won: the
//! transaction is rolled back and the closure decides again against the new state, which is
//! how the losers of an acceptance race get the domain's `Taken` (HTTP 412) on both backends.
//!
//! The same transaction files what the change announces outside (`outbound.rs`: the signed
//! opinion on completion, notices of acceptance, escalation, cancellation and failure) in
//! `workflow_outbox`, for the relay to submit to `workflow.consultations.outbound_pipeline`.
//!
//! After a commit the store wakes the live streams ([`Store::subscribe_consultations`]); a
//! stream reads what changed with [`Store::consultation_changes`] from its last `seq`, so each
//! change reaches each subscriber once, and a client resumes with `Last-Event-ID`.

mod outbound;
mod read;
mod wire;
mod write;

use chrono::{DateTime, Utc};
use huizhen_domain::consultation::{
    Actor, ConsultError, Consultation, ConsultationRequest, Context, Event, Offeree, PluginRef,
    Role, State,
};
use huizhen_domain::expert::MatchDecision;
use huizhen_domain::signature::SignatureVerifier;

use super::audit::AuditEvent;
use super::{Store, StoreError};

pub use outbound::OutboundSettings;
pub use read::{ConsultationFilter, ConsultationPage, ConsultationSummary, DueTimer, StreamChange};
pub(crate) use write::repoint_in;

/// Why a consultation operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsultationError {
    /// No consultation with this id.
    #[error("no consultation {0}")]
    NotFound(String),
    /// The domain refused the command (its HTTP status is [`ConsultError::status`]).
    #[error(transparent)]
    Refused(#[from] ConsultError),
    /// Concurrent writers kept winning; the caller may try again.
    #[error("consultation {0}: too many concurrent changes; try again")]
    Busy(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Result<T, E = ConsultationError> = std::result::Result<T, E>;

/// A consultation as stored: the fold of its events and what the engine keeps beside it.
#[derive(Debug, Clone)]
pub struct StoredConsultation {
    /// The aggregate.
    pub consultation: Consultation,
    /// The experts matching ranked for it, best first (what the SLA sweep offers in turn).
    pub candidates: Vec<Offeree>,
    /// The match decision those candidates came from (`GET /api/match-decisions/{id}`).
    pub match_decision: Option<String>,
    /// The facilities that may read it: the requesting facility and every offered expert's.
    pub facilities: Vec<String>,
    /// Created and last changed, ms since the epoch (the workflow's clock).
    pub created_at: i64,
    pub updated_at: i64,
}

/// Who acts, and what the audit rows of the change say about the request.
#[derive(Clone, Copy)]
pub struct CommandBy<'a> {
    /// The actor (id and domain role) stamped on the events.
    pub actor: &'a Actor,
    /// Why, for commands whose own data carries no reason.
    pub reason: Option<&'a str>,
    /// The plugin that decided, when one did.
    pub plugin: Option<&'a PluginRef>,
    /// Checks a signed opinion.
    pub verifier: Option<&'a dyn SignatureVerifier>,
    /// The audit row's facility (the caller's), source (address, `pipeline:x`, `sla-timer`)
    /// and purpose of use.
    pub facility: &'a str,
    pub source: &'a str,
    pub purpose: &'a str,
    /// Replaces the stored ranked candidates (and their match decision) in the same
    /// transaction: the assignment after matching.
    pub candidates: Option<(&'a [Offeree], Option<&'a str>)>,
    /// A match decision to store (with its assignment and audit row, taking no load) in the
    /// same transaction, if the command appends events: a match whose step is no longer due
    /// (another sweep took it first) is not kept.
    pub decision: Option<NewDecision<'a>>,
}

/// A match decision the workflow made for a command (see [`CommandBy::decision`]).
#[derive(Clone, Copy)]
pub struct NewDecision<'a> {
    /// Its id (the candidates name it).
    pub id: &'a str,
    /// The decision.
    pub decision: &'a MatchDecision,
    /// Its audit row (`expert.match`).
    pub audit: &'a AuditEvent,
}

impl<'a> CommandBy<'a> {
    /// An actor with no reason, plugin, verifier or audit context.
    pub fn new(actor: &'a Actor) -> CommandBy<'a> {
        CommandBy {
            actor,
            reason: None,
            plugin: None,
            verifier: None,
            facility: "",
            source: "",
            purpose: "",
            candidates: None,
            decision: None,
        }
    }

    /// The domain context at `now`.
    pub fn context(&self, now: DateTime<Utc>) -> Context<'a> {
        Context {
            now,
            actor: self.actor,
            reason: self.reason,
            plugin: self.plugin,
            verifier: self.verifier,
            start: None,
        }
    }
}

/// What a committed command changed.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The consultation after the change.
    pub stored: StoredConsultation,
    /// The events appended (none when the closure decided nothing was due).
    pub events: Vec<Event>,
}

/// The code of a domain role as stored and audited (`expert`, `local-doctor`, …).
pub fn role_code(role: Role) -> &'static str {
    match role {
        Role::Expert => "expert",
        Role::LocalDoctor => "local-doctor",
        Role::Coordinator => "coordinator",
        Role::Pharmacist => "pharmacist",
        Role::System => "system",
        Role::Plugin => "plugin",
    }
}

/// States a consultation can still change in (a merge re-points only these).
pub fn is_open(state: State) -> bool {
    !state.is_terminal()
}

/// The channel that wakes event streams (carries the last `seq` committed).
pub(super) fn feed() -> tokio::sync::broadcast::Sender<i64> {
    tokio::sync::broadcast::channel(1024).0
}

/// How many times a command is decided again after losing to a concurrent writer.
const MAX_RETRIES: usize = 64;

impl Store {
    /// Creates a consultation from a validated request (the `created` event, version 1), with
    /// its audit row, in one transaction. With a `source_key` (an HIS order number) a second
    /// create with the same key returns the first consultation instead (`false`).
    pub async fn create_consultation(
        &self,
        id: &str,
        request: ConsultationRequest,
        by: &CommandBy<'_>,
        source_key: Option<&str>,
    ) -> Result<(StoredConsultation, bool)> {
        let now = self.clock.now();
        let event = Consultation::create(id, request, &by.context(now))?;
        let created = self.insert_consultation(&event, by, source_key).await?;
        let stored = match created {
            Some(id) => (self.consultation_or_gone(&id).await?, true),
            None => {
                let key = source_key.unwrap_or_default();
                let existing = self
                    .consultation_by_source(key)
                    .await?
                    .ok_or_else(|| ConsultationError::NotFound(format!("with source {key}")))?;
                (self.consultation_or_gone(&existing).await?, false)
            }
        };
        if stored.1 {
            self.notify_consultations();
        }
        Ok(stored)
    }

    /// Runs one command: `decide` gets the stored consultation and the domain context (the
    /// store's clock, `by`) and returns the events (usually `decide(&c, &command, ctx)`); they
    /// are appended with the snapshot, the timers and an audit row each, in one transaction.
    /// With `expected`, a consultation at another version is refused with the domain's
    /// `VersionConflict` (412). A concurrent writer's win makes `decide` run again.
    pub async fn consultation_command<F>(
        &self,
        id: &str,
        expected: Option<u64>,
        by: &CommandBy<'_>,
        decide: F,
    ) -> Result<Committed>
    where
        F: Fn(&StoredConsultation, &Context<'_>) -> Result<Vec<Event>, ConsultError>,
    {
        for _ in 0..MAX_RETRIES {
            match self.try_command(id, expected, by, &decide).await? {
                write::Attempted::Done(c) => {
                    if !c.events.is_empty() {
                        self.notify_consultations();
                    }
                    return Ok(*c);
                }
                write::Attempted::Conflict => tokio::task::yield_now().await,
            }
        }
        Err(ConsultationError::Busy(id.to_owned()))
    }

    /// A consultation by id.
    pub async fn consultation(&self, id: &str) -> Result<Option<StoredConsultation>> {
        let mut conn = self
            .read
            .acquire()
            .await
            .map_err(super::q("acquire a reader"))?;
        read::load_in(&mut conn, self, id).await
    }

    async fn consultation_or_gone(&self, id: &str) -> Result<StoredConsultation> {
        self.consultation(id)
            .await?
            .ok_or_else(|| ConsultationError::NotFound(id.to_owned()))
    }

    /// A receiver woken after each commit that appended consultation events.
    pub fn subscribe_consultations(&self) -> tokio::sync::broadcast::Receiver<i64> {
        self.consultation_feed.subscribe()
    }

    /// Wakes the streams (after a commit).
    pub(crate) fn notify_consultations(&self) {
        // No receiver is not an error: nobody is listening.
        let _ = self.consultation_feed.send(0);
    }

    fn seal_text(&self, id: &str, field: &str, text: String) -> String {
        match &self.keyring {
            Some(k) => k.seal_text(&text, &crate::crypto::Binding::new(id, field)),
            None => text,
        }
    }
}
