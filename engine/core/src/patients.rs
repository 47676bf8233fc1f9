//! Patient identity in the engine: the glue between the pure matcher
//! ([`huizhen_domain::identity`]) and the identity index of the store
//! ([`crate::store::identity`]), shared by the `match_patient` step, `/api/patients` and
//! `huizhen patients import`.
//!
//! One decision: normalise the demographics, compute their blocking keys, prefetch the
//! candidates of those keys from the store (one query), let the matcher decide in memory, then
//! (when linking) record the decision in one transaction.

use huizhen_domain::identity::{
    Demographics, Grade, MatchDecision, Matcher, NormalizedPerson, Rule, Thresholds, Weights,
    blocking_keys, normalize,
};

use crate::store::identity::{ChangeBy, Recorded};
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
    audit_auto_link: impl FnOnce(&MatchDecision) -> crate::store::audit::AuditEvent,
) -> Result<Linked> {
    let person = normalize(demographics);
    let decision = decide(store, matcher, &person, None).await?;
    let event = auto_linked_on_score(&decision).then(|| audit_auto_link(&decision));
    let reason = if event.is_some() {
        "auto-link above the facility's score threshold"
    } else {
        ""
    };
    let recorded = store
        .identity_record(
            &person,
            &decision,
            ChangeBy {
                actor,
                reason,
                audit: event.as_ref(),
            },
        )
        .await?;
    Ok(Linked { decision, recorded })
}
