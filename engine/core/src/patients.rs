//! Patient identity in the engine: the glue between the pure matcher
//! ([`huizhen_domain::identity`]) and the identity index of the store
//! ([`crate::store::identity`]), shared by the `match_patient` step, `/api/patients` and
//! `huizhen patients import`.
//!
//! One decision: normalise the demographics, compute their blocking keys, prefetch the
//! candidates of those keys from the store, let the matcher decide in memory. Linking decides
//! inside the store's write transaction and records the decision in it (a batch of records in
//! one transaction for a bulk import).

use huizhen_domain::identity::{
    Demographics, Grade, MatchDecision, Matcher, NormalizedPerson, Rule, Thresholds, Weights,
    blocking_keys, normalize,
};

use crate::store::audit::AuditEvent;
use crate::store::identity::{Audited, Recorded};
use crate::store::{Result, Store};

/// The matcher with the default weights and thresholds (no auto-linking on a score).
pub fn default_matcher() -> Matcher {
    // The defaults are valid by construction (the domain's tests check them).
    Matcher::new(Weights::default(), Thresholds::default())
        .unwrap_or_else(|e| unreachable!("the default match weights are valid: {e}"))
}

/// Decides a normalised record against the index (only records of `facilities` when given).
/// Does not write.
pub async fn decide(
    store: &Store,
    matcher: &Matcher,
    person: &NormalizedPerson,
    facilities: Option<&[String]>,
) -> Result<MatchDecision> {
    let keys = blocking_keys(person);
    let index = store
        .identity_prefetch(&keys, matcher.candidate_limit, facilities)
        .await?;
    Ok(matcher.decide_normalized(person, &index))
}

/// True when the decision links on a facility's auto-link score threshold rather than on a
/// deterministic rule (such a link is audited).
pub fn auto_linked_on_score(decision: &MatchDecision) -> bool {
    decision.grade == Grade::Certain
        && decision
            .candidates
            .first()
            .is_some_and(|c| c.rule == Some(Rule::AutoLinkThreshold))
}

/// What [`link`] did.
#[derive(Debug, Clone)]
pub struct Linked {
    /// The matcher's decision.
    pub decision: MatchDecision,
    /// What the store recorded.
    pub recorded: Recorded,
}

/// Normalises, decides and records one record (auto-link for `certain` only, review-queue
/// entries for probable and possible candidates). `audit_auto_link` makes the audit event
/// written with the decision when it links on a score threshold.
pub async fn link(
    store: &Store,
    matcher: &Matcher,
    demographics: &Demographics,
    actor: &str,
    audit_auto_link: impl FnMut(&MatchDecision) -> AuditEvent,
) -> Result<Linked> {
    let person = normalize(demographics);
    let mut linked = link_normalized(store, matcher, &[person], actor, audit_auto_link).await?;
    linked.pop().ok_or_else(|| {
        crate::store::StoreError::Inconsistent("identity: a batch of one linked nothing".into())
    })
}

/// Decides and records normalised records in order, in one transaction, each against the
/// index and the records before it (what a bulk import does; see
/// [`Store::identity_link_batch`]). Returns what was done for each, in order.
pub async fn link_normalized(
    store: &Store,
    matcher: &Matcher,
    persons: &[NormalizedPerson],
    actor: &str,
    mut audit_auto_link: impl FnMut(&MatchDecision) -> AuditEvent,
) -> Result<Vec<Linked>> {
    let linked = store
        .identity_link_batch(
            persons,
            matcher.candidate_limit,
            actor,
            |person, index| matcher.decide_normalized(person, index),
            |decision| {
                if auto_linked_on_score(decision) {
                    Audited {
                        event: Some(audit_auto_link(decision)),
                        reason: "auto-link above the facility's score threshold",
                    }
                } else {
                    Audited::default()
                }
            },
        )
        .await?;
    Ok(linked
        .into_iter()
        .map(|l| Linked {
            decision: l.decision,
            recorded: l.recorded,
        })
        .collect())
}
