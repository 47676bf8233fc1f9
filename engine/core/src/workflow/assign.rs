//! Expert matching for the workflow (MATCH-01, MATCH-20): the assignment after approval and
//! the fresh match at each re-offer go through the same code path as the `match_experts` step
//! and `POST /api/experts/match` (prefetch from the registry, `match_experts`, the decision
//! stored and audited). The assignment then, in one consultation transaction, stores the
//! decision, the ranked candidates and the offer to the best one with the SLA deadline, or
//! escalates the case when nobody is eligible.
//!
//! A workflow decision is stored in the transaction of the step it leads to
//! ([`CommandBy::decision`]), so a match whose step another sweep took first is not kept. It
//! takes no load by itself: the offer made from it does, in that transaction, and the
//! offer's end gives it back.

use huizhen_domain::consultation::{Actor, Command, Consultation, Context, Offeree, Role, decide};
use huizhen_domain::expert::{MatchError, match_experts};

use super::Workflow;
use crate::store::StoreError;
use crate::store::audit::AuditEvent;
use crate::store::consultations::{CommandBy, Committed, ConsultationError, NewDecision};

/// The actor id of the assignment and of the SLA sweep.
pub const ENGINE_ACTOR: &str = "workflow";

/// A match decision for a consultation, to be stored with the step it leads to.
pub(super) struct Matched {
    /// The decision id (`GET /api/match-decisions/{id}`).
    pub decision_id: String,
    /// The decision (MATCH-31).
    pub decision: huizhen_domain::expert::MatchDecision,
    /// Its audit row (`expert.match`).
    pub audit: AuditEvent,
    /// The eligible experts, best first.
    pub candidates: Vec<Offeree>,
    /// Those of them on the on-call roster at decision time.
    pub on_call: Vec<String>,
}

/// Every expert offered `c` so far (declined, timed out, or still holding an offer).
pub(super) fn offered_before(c: &Consultation) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for o in c.attempts().iter().flat_map(|a| a.offerees.iter()) {
        if !out.contains(&o.expert) {
            out.push(o.expert.clone());
        }
    }
    out
}

impl Matched {
    /// The decision as a command stores it.
    pub(super) fn to_store(&self) -> NewDecision<'_> {
        NewDecision {
            id: &self.decision_id,
            decision: &self.decision,
            audit: &self.audit,
        }
    }
}

impl Workflow {
    /// Matches consultation `c` now, leaving out `exclude` (the experts offered it before: each
    /// appears in the decision's exclusions with its reason). The registry's current
    /// availability and load decide. The caller stores the decision with its step
    /// ([`Matched::to_store`]).
    pub(super) async fn match_case(
        &self,
        c: &Consultation,
        exclude: &[String],
    ) -> Result<Matched, ConsultationError> {
        let id = c.id();
        let mut case = c.request().case_request(id);
        for e in exclude {
            if !case.exclude_experts.contains(e) {
                case.exclude_experts.push(e.clone());
            }
        }
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
        let why = if exclude.is_empty() {
            String::new()
        } else {
            format!(" again, without {}", exclude.join(","))
        };
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
            detail: format!("case {id}{why}; selected {}", decision.selected.join(",")),
            subject_facility: facility,
        };
        let candidates: Vec<Offeree> = decision
            .ranked
            .iter()
            .map(|r| Offeree {
                expert: r.expert_id.clone(),
                facility: r.facility.clone(),
            })
            .collect();
        let on_call = decision
            .snapshot
            .experts
            .iter()
            .filter(|e| e.schedule.on_call && candidates.iter().any(|c| c.expert == e.id))
            .map(|e| e.id.clone())
            .collect();
        Ok(Matched {
            decision_id,
            decision,
            audit,
            candidates,
            on_call,
        })
    }

    /// Matches and offers a consultation in `pending-match`; nothing for any other state.
    /// `None` when there was nothing to do.
    pub async fn assign(&self, id: &str) -> Result<Option<Committed>, ConsultationError> {
        let Some(stored) = self.store.consultation(id).await? else {
            return Err(ConsultationError::NotFound(id.to_owned()));
        };
        if !stored.consultation.awaits_assignment() {
            return Ok(None);
        }
        let matched = self.match_case(&stored.consultation, &[]).await?;
        let (decision_id, candidates) = (&matched.decision_id, &matched.candidates);
        let system = Actor::new(ENGINE_ACTOR, Role::System);
        let mut by = CommandBy::new(&system);
        by.source = "assignment";
        by.candidates = Some((candidates, Some(decision_id)));
        by.decision = Some(matched.to_store());
        let sla = &self.config.sla;
        let committed = self
            .store
            .consultation_command(id, None, &by, |s, ctx| {
                let c = &s.consultation;
                // Checked again on the version this command applies to: the assignment at
                // approval and the `assign` timer's may both have matched.
                if !c.awaits_assignment() {
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
