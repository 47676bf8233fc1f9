//! The SLA sweep (MATCH-20, CN-80): fires the durable timers of `consultation_timers` that are
//! due by the workflow's clock. An `assign` timer runs the assignment; an `offer-deadline` or
//! `next-offer` timer asks the domain's [`on_deadline`] what comes next — re-offer to the next
//! candidate, fan out to the on-call pool, escalate to the coordinator — and runs it as the
//! `system` actor, decided against the stored state in the command's own transaction (a
//! consultation accepted meanwhile gives `Wait`/`Idle`, and nothing happens).
//!
//! **A fresh match at each re-offer.** When the step depends on the candidates
//! ([`needs_candidates`]: a passed offer or a decline), the sweep matches the case again
//! first, as the assignment does, leaving out every expert offered it before (declined,
//! timed out): availability and load may have changed since the last match, and the expired
//! offer's load is given back in the same transaction as the next offer takes its own. The
//! decision is stored and audited (`expert.match`) in the step's transaction, replaces the
//! consultation's candidates, and the event's reason names it; when another sweep took the
//! step first, nothing is decided and the match is not kept. A step that fails is logged and
//! its timer postponed by [`RETRY_AFTER_MS`].

use huizhen_domain::consultation::{
    Actor, Context, NextCandidates, NextStep, Role, decide, needs_candidates, on_deadline,
};

use super::Workflow;
use super::assign::{ENGINE_ACTOR, Matched, offered_before};
use crate::store::consultations::{CommandBy, ConsultationError, DueTimer};

/// How long a timer whose step failed waits before the next try.
pub const RETRY_AFTER_MS: i64 = 30_000;

/// Most timers one sweep fires.
const BATCH: i64 = 200;

/// Why the step was taken, for the event's reason; `decision`: the fresh match it came from.
fn reason_of(step: &NextStep, timer: &DueTimer, decision: Option<&str>) -> String {
    let why = if timer.kind == "next-offer" {
        format!("attempt {} was declined", timer.attempt)
    } else {
        format!("the offer deadline of attempt {} passed", timer.attempt)
    };
    let of = decision
        .map(|d| format!(" of decision {d}"))
        .unwrap_or_default();
    match step {
        NextStep::ReOffer { to, .. } => {
            format!("{why}; offered to the next candidate {}{of}", to.expert)
        }
        NextStep::FanOut { pool, .. } => {
            format!("{why}; fanned out to {} experts{of}", pool.len())
        }
        NextStep::Escalate { failed_offers, .. } => match decision {
            Some(d) => format!(
                "{why}; escalated after {failed_offers} failed offers: no other eligible expert (decision {d})"
            ),
            None => format!("{why}; escalated after {failed_offers} failed offers"),
        },
        NextStep::Wait { .. } | NextStep::Idle => why,
    }
}

impl Workflow {
    /// Fires every due timer once. Returns how many changed a consultation.
    pub async fn sweep(&self) -> Result<usize, ConsultationError> {
        let now = self.now().timestamp_millis();
        let due = self.store.due_consultation_timers(now, BATCH).await?;
        let mut fired = 0;
        for t in due {
            match self.fire(&t).await {
                Ok(true) => fired += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(consultation = %t.consultation, timer = %t.kind, error = %e, "consultation timer failed; tried again later");
                    self.store
                        .postpone_consultation_timer(
                            &t.consultation,
                            &t.kind,
                            t.attempt,
                            now + RETRY_AFTER_MS,
                        )
                        .await?;
                }
            }
        }
        Ok(fired)
    }

    /// Fires one timer; true when it changed the consultation.
    async fn fire(&self, t: &DueTimer) -> Result<bool, ConsultationError> {
        if t.kind == "assign" {
            return Ok(self.assign(&t.consultation).await?.is_some());
        }
        let Some(stored) = self.store.consultation(&t.consultation).await? else {
            return Err(ConsultationError::NotFound(t.consultation.clone()));
        };
        let sla = &self.config.sla;
        let c = &stored.consultation;
        // The next candidate comes from a match made now (MATCH-20).
        let fresh: Option<Matched> = if needs_candidates(c, self.now(), sla) {
            Some(self.match_case(c, &offered_before(c)).await?)
        } else {
            None
        };
        let system = Actor::new(ENGINE_ACTOR, Role::System);
        let mut by = CommandBy::new(&system);
        by.source = "sla-timer";
        if let Some(m) = &fresh {
            by.candidates = Some((&m.candidates, Some(&m.decision_id)));
            by.decision = Some(m.to_store());
        }
        let committed = self
            .store
            .consultation_command(&t.consultation, None, &by, |s, ctx| {
                let candidates = match &fresh {
                    Some(m) => NextCandidates {
                        ranked: &m.candidates,
                        on_call: &m.on_call,
                    },
                    None => NextCandidates::from(&s.candidates),
                };
                let step = on_deadline(&s.consultation, ctx.now, candidates, sla);
                let Some(command) = step.command() else {
                    return Ok(Vec::new());
                };
                let decision = fresh.as_ref().map(|m| m.decision_id.as_str());
                let reason = reason_of(&step, t, decision);
                let ctx = Context {
                    reason: Some(&reason),
                    ..*ctx
                };
                decide(&s.consultation, &command, &ctx)
            })
            .await?;
        Ok(!committed.events.is_empty())
    }
}
