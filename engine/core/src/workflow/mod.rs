//! The consultation workflow service (issue 15): what the HTTP API, the `consultation_create`
//! step and the SLA sweep share. The rules are the domain's
//! ([`huizhen_domain::consultation`]); this module wires them to the store, the clock, expert
//! matching and the signature verifier:
//!
//! * [`Workflow::create`] and [`Workflow::execute`] run the domain against the store, one
//!   transaction per command ([`Store::consultation_command`]);
//! * approval (→ `pending-match`) files an `assign` timer and runs the assignment at once
//!   ([`assign`]): expert matching on the domain request's `case_request()`, the decision
//!   stored with the offer to the best expert (SLA deadline), or an escalation when nobody is
//!   eligible;
//! * what a command announces (the signed opinion on completion, notices of acceptance,
//!   escalation, cancellation and failure) is filed in the outbox by the store in the
//!   command's transaction; the service relays it to `workflow.consultations.outbound_pipeline`
//!   right after the commit ([`Workflow::relay`]), the engine's jobs loop every 2 s after;
//! * the sweep ([`sweep`]) fires due timers: after a passed deadline or a decline it matches
//!   the case again (the experts offered before left out), then the domain's `on_deadline`
//!   re-offers to the best of that match, fans out to the on-call pool, or escalates to a
//!   coordinator, each step an audited event. It runs every `workflow.sweep_interval`
//!   (default 1 s) and once at start, so timers that fell due while the engine was down fire
//!   after a restart;
//! * every command moves the experts' open-case load as the domain's `load_changes` says, in
//!   its own transaction (`store/consultations/write.rs`).
//!
//! ```yaml
//! workflow:
//!   sla:                       # the domain's SlaPolicy (docs/workflow.md)
//!     default: { urgent_minutes: 10, routine_minutes: 1440, fan_out_after: 2, escalate_after: 3 }
//!     overrides:
//!       - { scope: { kind: province, code: "44" }, urgent_minutes: 15 }
//!   matching: { top_n: 3 }     # the matching settings of the assignment
//!   signing_roots: certs/ca-roots.pem   # trusted roots of physicians' signatures (CN-21)
//!   sweep_interval: 1s
//! ```

mod assign;
pub mod studies;
mod sweep;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use huizhen_domain::compliance::{CompliancePolicy, CreateRefusal, StartFacts, check_create};
use huizhen_domain::consultation::outbound::announces;
use huizhen_domain::consultation::{
    Command, ConsultError, ConsultationRequest, Context, EventKind, FieldProblem, RequestError,
    SlaPolicy, StartCheck, State, decide,
};
use huizhen_domain::expert::MatchConfig;
use huizhen_domain::signature::SignatureVerifier;
use serde::Deserialize;
use tokio::sync::Notify;

use crate::extensions::Extensions;
use crate::store::Store;
use crate::store::consultations::{CommandBy, Committed, ConsultationError, StoredConsultation};

/// The root configuration's `workflow:` block.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowConfig {
    /// Offer deadlines, fan-out and escalation, with per-province, agreement and facility-pair
    /// overrides (MATCH-20, CN-80). Default: 10 minutes for urgent and critical, 24 h for
    /// routine, fan out after 2 failed offers, escalate after 3.
    #[serde(default)]
    pub sla: SlaPolicy,
    /// The matching settings of the assignment after approval.
    #[serde(default)]
    pub matching: MatchConfig,
    /// A PEM file of the root certificates physicians' signatures must chain to (CN-21).
    /// Without it, `sign_opinion` is refused (500, `verifier-missing`).
    #[serde(default)]
    pub signing_roots: Option<PathBuf>,
    /// How often the SLA sweep looks for due timers.
    #[serde(default = "default_sweep", with = "crate::config::duration")]
    pub sweep_interval: Duration,
    /// Where the consultation's events are announced (`outbound_pipeline`; see
    /// `crate::config::workflow`).
    #[serde(default)]
    pub consultations: crate::config::workflow::ConsultationsConfig,
    /// Electronic prescriptions (CN-20): the deny list, lines, signature skew, the outbound
    /// pipeline (see `crate::config::workflow`).
    #[serde(default)]
    pub prescriptions: crate::config::workflow::PrescriptionsConfig,
    /// Appointment slots, the no-show grace period and the local time of schedules.
    #[serde(default)]
    pub appointments: huizhen_domain::appointment::AppointmentConfig,
    /// The case library's recommendation ranking.
    #[serde(default)]
    pub case_library: crate::config::workflow::CaseLibraryConfig,
    /// The scheduled CSV export of the statistics; none: no export.
    #[serde(default)]
    pub stats_export: Option<crate::config::workflow::StatsExportConfig>,
    /// The day's records pushed to the provincial supervision platform through a pipeline
    /// (CN-14); none: no push (the pull API answers either way).
    #[serde(default)]
    pub regulator_export: Option<crate::config::workflow::RegulatorExportConfig>,
    /// The China rules per service type and requesting facility (CN-01 … CN-13): what a
    /// consultation needs to be created and to start, never below the law
    /// (`huizhen_domain::compliance`; docs/workflow.md, "China rules").
    #[serde(default)]
    pub compliance: huizhen_domain::compliance::ComplianceConfig,
}

fn default_sweep() -> Duration {
    Duration::from_secs(1)
}

impl Default for WorkflowConfig {
    fn default() -> Self {
        WorkflowConfig {
            sla: SlaPolicy::default(),
            matching: MatchConfig::default(),
            signing_roots: None,
            sweep_interval: default_sweep(),
            consultations: Default::default(),
            prescriptions: Default::default(),
            appointments: Default::default(),
            case_library: Default::default(),
            stats_export: None,
            regulator_export: None,
            compliance: Default::default(),
        }
    }
}

impl WorkflowConfig {
    /// What serde cannot check, each problem with its path (`workflow.sla.overrides[1].scope`).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(problems) = self.sla.validate() {
            out.extend(
                problems
                    .into_iter()
                    .map(|p| format!("workflow.sla.{}: {}", p.path, p.problem)),
            );
        }
        if let Err(e) = self.matching.validate() {
            out.push(format!("workflow.matching: {e}"));
        }
        if self.sweep_interval.is_zero() {
            out.push("workflow.sweep_interval: must be more than 0".into());
        }
        if let Err(e) = CompliancePolicy::new(&self.compliance) {
            out.push(format!("workflow.{e}"));
        }
        out.extend(self.care_problems());
        out
    }
}

/// The workflow service of one engine (in its [`Extensions`]).
pub struct Workflow {
    store: Store,
    config: WorkflowConfig,
    extensions: Extensions,
    verifier: Option<Arc<dyn SignatureVerifier>>,
    wake: Arc<Notify>,
    /// Cancelled when the engine stops: ends the live streams.
    stop: tokio_util::sync::CancellationToken,
    /// The engine's pipelines, for relaying announced events right after a commit.
    router: Option<crate::runner::Router>,
    /// The China rules (`config.compliance`, checked).
    policy: CompliancePolicy,
}

impl std::fmt::Debug for Workflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workflow")
            .field("sla", &self.config.sla)
            .finish_non_exhaustive()
    }
}

impl Workflow {
    /// The service over `store` (whose clock it uses). Reads `signing_roots` when set.
    pub fn new(
        store: Store,
        config: WorkflowConfig,
        extensions: Extensions,
    ) -> Result<Workflow, String> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        let verifier: Option<Arc<dyn SignatureVerifier>> = match &config.signing_roots {
            None => None,
            Some(path) => {
                let v = huizhen_signing::ChainVerifier::from_pem_file(path)
                    .map_err(|e| format!("workflow.signing_roots: {}: {e}", path.display()))?;
                Some(Arc::new(v))
            }
        };
        let policy =
            CompliancePolicy::new(&config.compliance).map_err(|e| format!("workflow.{e}"))?;
        Ok(Workflow {
            policy,
            store,
            config,
            extensions,
            verifier,
            wake: Arc::new(Notify::new()),
            stop: tokio_util::sync::CancellationToken::new(),
            router: None,
        })
    }

    /// Uses `verifier` for signed opinions (instead of `signing_roots`).
    pub fn with_verifier(mut self, verifier: Arc<dyn SignatureVerifier>) -> Workflow {
        self.verifier = Some(verifier);
        self
    }

    /// Ends the live streams when `stop` is cancelled (the engine's shutdown).
    pub fn with_stop(mut self, stop: tokio_util::sync::CancellationToken) -> Workflow {
        self.stop = stop;
        self
    }

    /// Relays announced events through `router`'s pipelines right after a commit.
    pub fn with_router(mut self, router: crate::runner::Router) -> Workflow {
        self.router = Some(router);
        self
    }

    /// Submits the outbox's pending events to their pipelines (when the store announces the
    /// consultation's events and the pipelines are built); returns how many were journaled.
    /// At least once: the jobs loop relays what this leaves.
    pub async fn relay(&self) -> usize {
        if !self.store.announces_consultations() {
            return 0;
        }
        match self.router.as_ref().and_then(|r| r.pipelines()) {
            Some(pipelines) => crate::care::relay_outbox(&self.store, &pipelines).await,
            None => 0,
        }
    }

    /// A token cancelled when the engine stops.
    pub fn stopping(&self) -> tokio_util::sync::CancellationToken {
        self.stop.clone()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The workflow's configuration.
    pub fn config(&self) -> &WorkflowConfig {
        &self.config
    }

    /// The SLA policy in force.
    pub fn sla(&self) -> &SlaPolicy {
        &self.config.sla
    }

    /// Now, by the workflow's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.store.clock().now()
    }

    /// The signature verifier of signed opinions, if one is configured.
    pub fn verifier(&self) -> Option<&dyn SignatureVerifier> {
        self.verifier.as_deref()
    }

    /// Makes the sweep look for due timers now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Creates a consultation (`drafting`). With a `source_key` (an HIS order number) the same
    /// key gives back the first consultation (`false`).
    pub async fn create(
        &self,
        id: &str,
        request: ConsultationRequest,
        by: &CommandBy<'_>,
        source_key: Option<&str>,
    ) -> Result<(StoredConsultation, bool), ConsultationError> {
        self.check_create(&request).await?;
        self.store
            .create_consultation(id, request, by, source_key)
            .await
    }

    /// The China rules in force.
    pub fn policy(&self) -> &CompliancePolicy {
        &self.policy
    }

    /// Today's local date (the matching settings' UTC offset, as agreements' dates are).
    fn today(&self) -> NaiveDate {
        let offset = TimeDelta::minutes(i64::from(self.config.matching.utc_offset_minutes));
        (self.now() + offset).date_naive()
    }

    /// CN-01 and CN-02 for a new consultation: its facility offers the service type, and the
    /// agreement it names (required where the rules say) is one of the facility's, in force
    /// today. A refusal is a request problem (422) at `service_type` or `agreement` naming the
    /// rule.
    async fn check_create(&self, request: &ConsultationRequest) -> Result<(), ConsultationError> {
        let facility = request.requesting_facility.trim();
        let rules = self.policy.rules(facility, request.service_type);
        let agreements = match request.agreement.as_deref().map(str::trim) {
            Some(a) if !a.is_empty() => self.store.agreements_of(facility).await?,
            _ => Vec::new(),
        };
        check_create(
            &rules,
            facility,
            request.agreement.as_deref(),
            &agreements,
            self.today(),
        )
        .map_err(|refusal| {
            let path = match refusal {
                CreateRefusal::NotOffered { .. } => "service_type",
                _ => "agreement",
            };
            ConsultationError::Refused(ConsultError::Request(RequestError(vec![FieldProblem {
                path: path.into(),
                problem: refusal.to_string(),
            }])))
        })
    }

    /// The rules and facts `start` is checked under: the service type's rules at the
    /// requesting facility, the patient's birth date from the identity index (CN-13), now.
    async fn start_check(&self, id: &str) -> Result<Option<StartCheck>, ConsultationError> {
        let Some(stored) = self.store.consultation(id).await? else {
            return Ok(None);
        };
        let request = stored.consultation.request();
        let rules = self
            .policy
            .rules(&request.requesting_facility, request.service_type);
        let birth_date = self
            .store
            .patient_birth_date(stored.consultation.patient())
            .await?;
        Ok(Some(StartCheck {
            rules,
            facts: StartFacts {
                now: self.now(),
                birth_date,
                today: self.today(),
            },
        }))
    }

    /// Runs `command` as `by` (at `expected`, when given). An approval goes on to the
    /// assignment; a decline wakes the sweep for the next candidate.
    pub async fn execute(
        &self,
        id: &str,
        expected: Option<u64>,
        command: &Command,
        by: &CommandBy<'_>,
    ) -> Result<Committed, ConsultationError> {
        let mut by = *by;
        if by.verifier.is_none() {
            by.verifier = self.verifier.as_deref();
        }
        let start = match command {
            Command::Start => self.start_check(id).await?,
            _ => None,
        };
        let committed = self
            .store
            .consultation_command(id, expected, &by, |s, ctx| match start {
                Some(start) => decide(
                    &s.consultation,
                    command,
                    &Context {
                        start: Some(start),
                        ..*ctx
                    },
                ),
                None => decide(&s.consultation, command, ctx),
            })
            .await?;
        let approved = committed
            .events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Approved));
        if announces(&committed.events) {
            self.relay().await;
        }
        match committed.stored.consultation.state() {
            State::PendingMatch if approved => {
                // The patient's studies already here join the packet before any offer.
                if let Err(e) = self.attach_known_studies(id).await {
                    tracing::warn!(consultation = id, error = %e, "attaching the patient's studies failed");
                }
                // Their priors at the requesting facility's PACS are pulled (DCM-05).
                if let Err(e) = self.request_prefetch(id).await {
                    tracing::warn!(consultation = id, error = %e, "the prior-study prefetch could not be journaled");
                }
                // The assignment runs now; if it fails, its timer retries it.
                if let Err(e) = self.assign(id).await {
                    tracing::warn!(consultation = id, error = %e, "assignment failed; the sweep retries it");
                }
                // An assignment that found nobody escalated: announce it.
                self.relay().await;
                // The caller sees the consultation as the assignment left it.
                let stored = self.store.consultation(id).await?;
                Ok(match stored {
                    Some(stored) => Committed {
                        stored,
                        events: committed.events,
                    },
                    None => committed,
                })
            }
            State::Declined => {
                self.wake();
                Ok(committed)
            }
            _ => Ok(committed),
        }
    }

    /// Runs the sweep every `sweep_interval` (and when woken) until `shutdown`; the first sweep
    /// runs at once, so timers that fell due while the engine was down fire at start.
    pub async fn run(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            match self.sweep().await {
                Ok(n) if n > 0 => {
                    tracing::debug!(fired = n, "consultation timers fired");
                    // An escalation is announced at once.
                    self.relay().await;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "consultation sweep failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.config.sweep_interval) => {}
            }
        }
    }
}
