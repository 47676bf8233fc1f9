//! The SLA sweep (MATCH-20, CN-80): fires the durable timers of `consultation_timers` that are
//! due by the workflow's clock. An `assign` timer runs the assignment; an `offer-deadline` or
//! `next-offer` timer asks the domain's [`on_deadline`] what comes next — re-offer to the next
//! ranked candidate, fan out to a pool, escalate to the coordinator — and runs it as the
//! `system` actor, decided against the stored state in the command's own transaction (a
//! consultation accepted meanwhile gives `Wait`/`Idle`, and nothing happens). A step that
//! fails is logged and its timer postponed by [`RETRY_AFTER_MS`].

use huizhen_domain::consultation::{Actor, Context, NextStep, Role, decide, on_deadline};

use super::Workflow;
use super::assign::ENGINE_ACTOR;
use crate::store::consultations::{CommandBy, ConsultationError, DueTimer};

/// How long a timer whose step failed waits before the next try.
pub const RETRY_AFTER_MS: i64 = 30_000;

/// Most timers one sweep fires.
const BATCH: i64 = 200;

/// Why the step was taken, for the event's reason.
fn reason_of(step: &NextStep, timer: &DueTimer) -> String {
    let why = if timer.kind == "next-offer" {
        format!("attempt {} was declined", timer.attempt)
    } else {
        format!("the offer deadline of attempt {} passed", timer.attempt)
    };
    match step {
        NextStep::ReOffer { to, .. } => {
            format!("{why}; offered to the next candidate {}", to.expert)
        }
        NextStep::FanOut { pool, .. } => format!("{why}; fanned out to {} experts", pool.len()),
        NextStep::Escalate { failed_offers, .. } => {
            format!("{why}; escalated after {failed_offers} failed offers")
        }
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
        let system = Actor::new(ENGINE_ACTOR, Role::System);
        let mut by = CommandBy::new(&system);
        by.source = "sla-timer";
        let sla = &self.config.sla;
        let committed = self
            .store
            .consultation_command(&t.consultation, None, &by, |s, ctx| {
                let step = on_deadline(&s.consultation, ctx.now, &s.candidates, sla);
                let Some(command) = step.command() else {
                    return Ok(Vec::new());
                };
                let reason = reason_of(&step, t);
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
