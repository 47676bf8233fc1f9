//! The assignment after approval (MATCH-01, MATCH-20): expert matching on the request's
//! `case_request()` through the same code path as the `match_experts` step and
//! `POST /api/experts/match` (prefetch from the registry, `match_experts`, the decision stored
//! and audited), then, in one consultation transaction, the ranked candidates stored and the
//! best one offered with the SLA deadline, or the case escalated when nobody is eligible.

use huizhen_domain::consultation::{Actor, Command, Context, Offeree, Role, State, decide};
use huizhen_domain::expert::{MatchError, match_experts};

use super::Workflow;
use crate::store::StoreError;
use crate::store::audit::AuditEvent;
use crate::store::consultations::{CommandBy, Committed, ConsultationError};

/// The actor id of the assignment and of the SLA sweep.
pub const ENGINE_ACTOR: &str = "workflow";

impl Workflow {
    /// Matches and offers a consultation in `pending-match`; nothing for any other state.
    /// `None` when there was nothing to do.
    pub async fn assign(&self, id: &str) -> Result<Option<Committed>, ConsultationError> {
        let Some(stored) = self.store.consultation(id).await? else {
            return Err(ConsultationError::NotFound(id.to_owned()));
        };
        let c = &stored.consultation;
        if c.state() != State::PendingMatch {
            return Ok(None);
        }
        let case = c.request().case_request(id);
        let facility = case.requesting_facility.clone();
        let index = self.store.prefetch_experts(&case).await?;
        let scorer_name = self.extensions.plugins_config().expert_scorer.clone();
        let scorer = crate::steps::match_experts::resolve_scorer(
            &self.extensions,
            scorer_name.as_deref(),
            crate::extensions::PluginBudget {
                fuel: Some(crate::steps::match_experts::DEFAULT_SCORER_FUEL),
                deadline: std::time::Duration::from_millis(50),
            },
        )
        .map_err(|e| StoreError::Inconsistent(format!("consultation {id}: {e}")))?;
        let decision = match_experts(
            &case,
            &index,
            &*scorer,
            &self.config.matching,
            self.now(),
            0,
        )
        .map_err(|e: MatchError| {
            StoreError::Inconsistent(format!("consultation {id}: matching: {e}"))
        })?;
        crate::runner::match_alerts::alert_scorer_fallback(&decision, ENGINE_ACTOR);
        let decision_id = crate::message::new_id();
        let audit = AuditEvent {
            actor: ENGINE_ACTOR.into(),
            role: "system".into(),
            facility: facility.clone(),
            action: "expert.match".into(),
            resource_type: "MatchDecision".into(),
            resource_id: decision_id.clone(),
            outcome: "success".into(),
            source: format!("consultation {id}"),
            purpose: String::new(),
            detail: format!("case {id}; selected {}", decision.selected.join(",")),
            subject_facility: facility,
        };
        self.store
            .save_match_decision_as(&decision_id, &decision, Some(&audit))
            .await?;
        let candidates: Vec<Offeree> = decision
            .ranked
            .iter()
            .map(|r| Offeree {
                expert: r.expert_id.clone(),
                facility: r.facility.clone(),
            })
            .collect();
        let system = Actor::new(ENGINE_ACTOR, Role::System);
        let mut by = CommandBy::new(&system);
        by.source = "assignment";
        by.candidates = Some((&candidates, Some(&decision_id)));
        let sla = &self.config.sla;
        let committed = self
            .store
            .consultation_command(id, None, &by, |s, ctx| {
                let c = &s.consultation;
                if c.state() != State::PendingMatch {
                    return Ok(Vec::new());
                }
                match candidates.first() {
                    Some(first) => {
                        let deadline = sla.deadline(
                            &c.sla_key(Some(&first.facility)),
                            c.request().urgency,
                            ctx.now,
                        );
                        let reason = format!("best match of decision {decision_id}");
                        let ctx = Context {
                            reason: Some(&reason),
                            ..*ctx
                        };
                        decide(
                            c,
                            &Command::Offer {
                                to: first.clone(),
                                deadline,
                            },
                            &ctx,
                        )
                    }
                    None => {
                        let to = sla.resolve(&c.sla_key(None)).escalate_to;
                        let reason = format!("no eligible expert (decision {decision_id})");
                        let ctx = Context {
                            reason: Some(&reason),
                            ..*ctx
                        };
                        decide(c, &Command::Escalate { to }, &ctx)
                    }
                }
            })
            .await?;
        Ok((!committed.events.is_empty()).then_some(committed))
    }
}
