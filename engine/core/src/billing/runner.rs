//! The saga runner: opens a settlement for a completed consultation (fees from the facility's
//! schedule, the local coverage estimate) and drives the domain's saga through the insurer.
//!
//! Each step: take the saga's lease, allocate a msgid, `begin` the call, build the request,
//! **persist the saga and the request**, send, `complete` with the answer, persist again (with
//! the ledger entries now due). A saga found with a call in flight under an expired lease was
//! left by a runner that died between sending and recording: its outcome is uncertain, and the
//! saga reverses it (2601) rather than sending it again. Saves are version-guarded; a lost race
//! reloads and decides again.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use huizhen_domain::billing::outbound::{ChargeContext, charge_announcement};
use huizhen_domain::billing::{
    Amounts, Billable, CoverageError, CoverageItem, Eligibility, FeeError, Kind, LedgerEntry, Next,
    Outcome, PatientCoverage, Phase, RevenueShare, SagaError, Settlement, compute_fees, split,
    usage_change,
};
use huizhen_domain::consultation::outbound::KnownPatient;
use tokio_util::sync::CancellationToken;

use super::BillingSettings;
use super::insurer::Answer;
use crate::store::audit::AuditEvent;
use crate::store::billing::{CallWrite, Opened, SettlementChange, StoredSettlement};
use crate::store::care::NewOutboxEvent;
use crate::store::{Store, StoreError};

/// Why billing refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    /// No such consultation or settlement.
    #[error("{0} not found")]
    NotFound(String),
    /// The consultation cannot be billed (not completed, not priced).
    #[error(transparent)]
    Fee(#[from] FeeError),
    /// The coverage policy failed or answered inconsistently.
    #[error(transparent)]
    Coverage(#[from] CoverageError),
    /// The saga refused the command.
    #[error(transparent)]
    Saga(#[from] SagaError),
    /// No fee schedule for the facility.
    #[error("facility {0} has no fee schedule (billing.schedules)")]
    NoSchedule(String),
    /// An insured settlement without an insurer configured.
    #[error("no insurance platform is configured (billing.insurer); only self-pay settlements")]
    NoInsurer,
    /// The insurer cannot build a request.
    #[error("insurer {insurer}: {reason}")]
    Request {
        /// The adapter.
        insurer: String,
        /// Why.
        reason: String,
    },
    /// The statement file does not read (each problem as `file:line:column`).
    #[error("the statement does not read: {}", .0.join("; "))]
    Statement(Vec<String>),
    /// Another runner holds the saga.
    #[error("settlement {0} is being worked on by another runner; try again shortly")]
    Busy(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The billing service of one engine (in its `Extensions`).
pub struct Billing {
    store: Store,
    settings: BillingSettings,
    /// This runner's name on leases (each drive adds an id of its own).
    owner: String,
}

impl std::fmt::Debug for Billing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Billing")
            .field("settings", &self.settings)
            .field("owner", &self.owner)
            .finish()
    }
}

impl Billing {
    /// The service over `store` with `settings`; `node` names this runner on leases.
    pub fn new(store: Store, settings: BillingSettings, node: &str) -> Billing {
        Billing {
            store,
            settings,
            owner: format!("{node}/{}", crate::message::new_id()),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &BillingSettings {
        &self.settings
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn now(&self) -> DateTime<Utc> {
        self.store.clock().now()
    }

    /// Opens the settlement of a completed consultation (or finds its live one: a duplicate
    /// request charges nothing twice). `true` when it is new.
    pub async fn open(
        &self,
        consultation_id: &str,
        kind: Kind,
        audit: &AuditEvent,
    ) -> Result<(StoredSettlement, bool), BillingError> {
        if let Some(existing) = self
            .store
            .settlement_of_consultation(consultation_id)
            .await?
            && existing.settlement.phase() != Phase::Aborted
        {
            return Ok((existing, false));
        }
        if matches!(kind, Kind::Insured { .. }) && self.settings.insurer.is_none() {
            return Err(BillingError::NoInsurer);
        }
        let stored = self
            .store
            .consultation(consultation_id)
            .await
            .map_err(|e| match e {
                crate::store::consultations::ConsultationError::Store(e) => BillingError::Store(e),
                other => BillingError::NotFound(other.to_string()),
            })?
            .ok_or_else(|| BillingError::NotFound(format!("consultation {consultation_id}")))?;
        let c = &stored.consultation;
        let expert_id = c.accepted_by().unwrap_or_default().to_owned();
        let expert = self.store.expert(&expert_id).await?;
        let title = expert.as_ref().map(|e| e.title).ok_or_else(|| {
            BillingError::NotFound(format!("expert {expert_id:?} in the registry"))
        })?;
        let billable = Billable::from_consultation(c, title, expert.map(|e| e.facility))?;
        let schedule = self
            .settings
            .schedules
            .get(&billable.facility)
            .ok_or_else(|| BillingError::NoSchedule(billable.facility.clone()))?;
        let bill = compute_fees(schedule, &billable)?;
        let items = CoverageItem::of_bill(&bill);
        let year = huizhen_domain::billing::insurance_year(self.now(), self.settings.offset);
        let year_to_date = match &kind {
            Kind::Insured { .. } => self.store.year_to_date(bill.billable.patient, year).await?,
            Kind::SelfPay => Default::default(),
        };
        let assumed = PatientCoverage {
            insurer: match &kind {
                Kind::Insured { .. } => "medical insurance (to be confirmed by 1101)".into(),
                Kind::SelfPay => "none".into(),
            },
            plan: String::new(),
            active: matches!(kind, Kind::Insured { .. }),
            eligibility: Eligibility::Eligible,
            deductible: self.settings.terms.deductible,
            annual_limit: self.settings.terms.annual_limit,
            year_to_date,
        };
        let estimate = self.estimate(items.clone(), assumed.clone()).await?;
        estimate.check(&items, &assumed)?;
        let id = crate::message::new_id();
        let facility = bill.billable.facility.clone();
        let s = Settlement::open(&id, &facility, kind, bill, estimate, self.now());
        let mut audit = audit.clone();
        audit.resource_id.clone_from(&id);
        match self
            .store
            .open_settlement(&s, &audit.about(&facility))
            .await?
        {
            Opened::New(s) => Ok((s, true)),
            Opened::Existing(s) => Ok((s, false)),
        }
    }

    /// The coverage estimate of the items for this patient, off the async workers (a plugin
    /// call blocks for up to its deadline).
    async fn estimate(
        &self,
        items: Vec<CoverageItem>,
        patient: PatientCoverage,
    ) -> Result<huizhen_domain::billing::CoverageResult, BillingError> {
        let policy = self.settings.policy.clone();
        let name = policy.name();
        tokio::task::spawn_blocking(move || policy.cover(&items, &patient))
            .await
            .map_err(|e| {
                BillingError::Coverage(CoverageError::Failed {
                    policy: name,
                    reason: e.to_string(),
                })
            })?
            .map_err(BillingError::Coverage)
    }

    /// The ledger entries the saga's state makes due (CN-63).
    fn ledger(&self, s: &Settlement) -> Vec<LedgerEntry> {
        let b = &s.bill.billable;
        let Some(schedule) = self.settings.schedules.get(&b.facility) else {
            return Vec::new();
        };
        let share = match (&b.agreement, &b.expert_facility) {
            (Some(a), Some(invited)) => schedule.agreements.get(a).map(|rate| RevenueShare {
                agreement: a,
                invited,
                share: *rate,
            }),
            _ => None,
        };
        split(s, &schedule.province, share)
            .map(|x| x.ledger)
            .unwrap_or_default()
    }

    async fn save(
        &self,
        before: Phase,
        s: &Settlement,
        expected: u64,
        call: Option<CallWrite<'_>>,
        audit: Option<&AuditEvent>,
    ) -> Result<bool, BillingError> {
        let ledger = self.ledger(s);
        let usage = usage_change(before, s, self.settings.offset);
        let outbox = self.charge_event(before, s).await?;
        Ok(self
            .store
            .save_settlement(SettlementChange {
                settlement: s,
                expected_version: expected,
                call,
                ledger: &ledger,
                usage: usage.as_ref(),
                audit,
                outbox: outbox.as_ref(),
            })
            .await?)
    }

    /// The charge a change from `before` to `s` announces to the HIS (`settlement.settled`,
    /// `.cancelled`; see `huizhen_domain::billing::outbound`), with the consultation's HIS order
    /// and the patient as the identity index knows them.
    async fn charge_event(
        &self,
        before: Phase,
        s: &Settlement,
    ) -> Result<Option<NewOutboxEvent>, BillingError> {
        let now = s.phase();
        if now == before || !matches!(now, Phase::Settled | Phase::Cancelled) {
            return Ok(None);
        }
        let cid = &s.bill.billable.consultation_id;
        let consultation = match self.store.consultation(cid).await {
            Ok(c) => c.map(|c| c.consultation),
            Err(crate::store::consultations::ConsultationError::Store(e)) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(settlement = %s.id, consultation = %cid, error = %e, "the consultation does not read; the charge goes without the HIS order");
                None
            }
        };
        let patient = match &consultation {
            Some(c) => self.store.known_patient(c).await?,
            None => KnownPatient::default(),
        };
        let expert_name = match self.store.expert(&s.bill.billable.expert).await? {
            Some(e) => Some(e.name),
            None => None,
        };
        let ctx = ChargeContext {
            consultation: consultation.as_ref(),
            patient: &patient,
            expert_name: expert_name.as_deref(),
            offset: self.settings.offset,
        };
        let Some((topic, body)) = charge_announcement(before, s, &ctx) else {
            return Ok(None);
        };
        let body = serde_json::to_value(&body).map_err(|e| {
            StoreError::Inconsistent(format!("settlement {}: cannot encode {topic}: {e}", s.id))
        })?;
        Ok(Some(NewOutboxEvent {
            topic: topic.to_owned(),
            resource_id: s.id.clone(),
            facility: s.facility.clone(),
            pipeline: self.settings.outbound_pipeline.clone(),
            body,
        }))
    }

    async fn load(&self, id: &str) -> Result<Settlement, BillingError> {
        Ok(self
            .store
            .settlement(id)
            .await?
            .ok_or_else(|| BillingError::NotFound(format!("settlement {id}")))?
            .settlement)
    }

    /// Drives a saga until it rests (settled, waiting for the patient, backed out, or waiting
    /// for a person) and returns it. `Busy` when another runner holds it.
    pub async fn drive(&self, id: &str) -> Result<Settlement, BillingError> {
        let lease_ms = i64::try_from(self.settings.lease.as_millis()).unwrap_or(i64::MAX);
        // Each drive is a holder of its own: two requests in this process exclude each other
        // as two processes do.
        let holder = format!("{}/{}", self.owner, crate::message::new_id());
        let result = self.drive_leased(id, &holder, lease_ms).await;
        if let Err(e) = self.store.release_settlement(id, &holder).await {
            tracing::warn!(settlement = id, error = %e, "the settlement lease was not released; it runs out by itself");
        }
        if let Ok(s) = &result
            && let Err(e) = self.invoice(s).await
        {
            tracing::warn!(settlement = id, error = %e, "e-invoice not issued; the resume loop asks again");
        }
        result
    }

    async fn drive_leased(
        &self,
        id: &str,
        holder: &str,
        lease_ms: i64,
    ) -> Result<Settlement, BillingError> {
        loop {
            let now = self.now();
            let now_ms = now.timestamp_millis();
            if !self
                .store
                .lease_settlement(id, holder, now_ms, now_ms.saturating_add(lease_ms))
                .await?
            {
                return Err(BillingError::Busy(id.to_owned()));
            }
            let mut s = self.load(id).await?;
            let expected = s.version;
            let before = s.phase();
            match s.next() {
                Next::Send { .. } => {
                    let insurer = self
                        .settings
                        .insurer
                        .clone()
                        .ok_or(BillingError::NoInsurer)?;
                    let msgid = self
                        .store
                        .allocate_msgid(&self.settings.institution, now, self.settings.offset)
                        .await?;
                    let call = s.begin(msgid, now)?;
                    let request = insurer.request(&s, &call, now).map_err(|reason| {
                        BillingError::Request {
                            insurer: insurer.name().to_owned(),
                            reason,
                        }
                    })?;
                    let begin = CallWrite::Begin {
                        call: &call,
                        request: &request,
                    };
                    if !self.save(before, &s, expected, Some(begin), None).await? {
                        continue;
                    }
                    // Persisted: from here a crash leaves the call in flight, uncertain.
                    let Answer { outcome, response } = insurer.send(&call, &request).await;
                    let expected = s.version;
                    let before = s.phase();
                    let code = outcome_code(&outcome);
                    let unreachable = matches!(outcome, Outcome::NotSent { .. });
                    s.complete(&call.msgid, outcome, self.now())?;
                    let answer = CallWrite::Answer {
                        msgid: call.msgid.as_str(),
                        outcome: code,
                        response: response.as_deref(),
                    };
                    if !self.save(before, &s, expected, Some(answer), None).await? {
                        tracing::warn!(settlement = id, msgid = %call.msgid, "the saga changed while its call was in flight; the call is treated as uncertain");
                    } else if unreachable {
                        // The platform is not reachable: the resume loop asks again later.
                        tracing::warn!(
                            settlement = id,
                            insurer = insurer.name(),
                            "the insurance platform is not reachable; the settlement waits"
                        );
                        return Ok(s);
                    }
                }
                Next::AwaitOutcome(call) => {
                    // We hold the lease, so the runner that sent this call is gone.
                    tracing::warn!(settlement = id, msgid = %call.msgid, infno = %call.txn, "a call was left in flight by a stopped runner; its outcome is uncertain");
                    s.complete(
                        &call.msgid,
                        Outcome::Uncertain {
                            why: "no answer was recorded before the previous runner stopped".into(),
                        },
                        now,
                    )?;
                    let answer = CallWrite::Answer {
                        msgid: call.msgid.as_str(),
                        outcome: "uncertain",
                        response: None,
                    };
                    self.save(before, &s, expected, Some(answer), None).await?;
                }
                Next::WaitForPatient | Next::Finished(_) => return Ok(s),
            }
        }
    }

    /// The patient (or staff for them) confirms the pre-settlement's amounts; then the saga
    /// settles.
    pub async fn confirm(
        &self,
        id: &str,
        by: &str,
        amounts: Amounts,
        audit: &AuditEvent,
    ) -> Result<Settlement, BillingError> {
        for _ in 0..3 {
            let mut s = self.load(id).await?;
            let expected = s.version;
            let before = s.phase();
            s.confirm(by, amounts, self.now())?;
            if self.save(before, &s, expected, None, Some(audit)).await? {
                return self.drive(id).await;
            }
        }
        Err(BillingError::Busy(id.to_owned()))
    }

    /// Cancels: backs out before settlement, 2208 and a refund after it.
    pub async fn cancel(
        &self,
        id: &str,
        reason: &str,
        audit: &AuditEvent,
    ) -> Result<Settlement, BillingError> {
        for _ in 0..3 {
            let mut s = self.load(id).await?;
            let expected = s.version;
            let before = s.phase();
            s.cancel(reason, self.now())?;
            if self.save(before, &s, expected, None, Some(audit)).await? {
                return self.drive(id).await;
            }
        }
        Err(BillingError::Busy(id.to_owned()))
    }

    /// Takes up every saga left unfinished whose lease ran out (after a restart, a runner's
    /// crash or a lost race). Returns how many were driven.
    pub async fn resume(&self) -> usize {
        let now_ms = self.now().timestamp_millis();
        let ids = match self.store.settlements_to_resume(now_ms, 100).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list settlements to resume");
                return 0;
            }
        };
        let mut n = 0;
        for id in ids {
            match self.drive(&id).await {
                Ok(s) => {
                    n += 1;
                    tracing::info!(settlement = %id, phase = %s.phase(), "settlement resumed");
                }
                Err(BillingError::Busy(_)) => {}
                Err(e) => tracing::warn!(settlement = %id, error = %e, "settlement not resumed"),
            }
        }
        n
    }

    /// Resumes unfinished sagas at start and every `resume_interval`, and reconciles on
    /// `billing.reconciliation.schedule` (the engine's clock), until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut next_resume = tokio::time::Instant::now();
        let mut next_tick = self
            .settings
            .reconciliation
            .as_ref()
            .and_then(|r| r.schedule.after(&self.now()).next());
        loop {
            if tokio::time::Instant::now() >= next_resume {
                self.resume().await;
                self.invoice_missing().await;
                next_resume = tokio::time::Instant::now() + self.settings.resume_interval;
            }
            // Every tick that fell due (a long stop runs the days it missed, in order).
            while let (Some(r), Some(tick)) = (&self.settings.reconciliation, next_tick)
                && self.now() >= tick
            {
                self.reconcile_tick(r, tick).await;
                next_tick = r.schedule.after(&tick).next();
            }
            let nap = self
                .settings
                .resume_interval
                .min(std::time::Duration::from_secs(2));
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(nap) => {}
            }
        }
    }
}

fn outcome_code(o: &Outcome) -> &'static str {
    match o {
        Outcome::Ok { .. } => "ok",
        Outcome::Refused { .. } => "refused",
        Outcome::Uncertain { .. } => "uncertain",
        Outcome::NotSent { .. } => "not-sent",
    }
}
