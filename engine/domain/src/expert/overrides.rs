//! A coordinator's override of a match decision (STANDARDS MATCH-31, CN-42: a human can
//! overrule the automated decision). The reason is mandatory; choosing an expert the filters
//! excluded is allowed but flagged, with the exclusion reasons copied into the record, and
//! marked regulatory when a CN-02/CN-06/CN-11 constraint was failed.

use serde::{Deserialize, Serialize};

use super::filter::Reason;
use super::matching::MatchDecision;

/// Where the chosen expert stood in the decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "standing")]
pub enum Standing {
    /// Eligible, at this rank (1 = best).
    Ranked {
        /// The rank.
        rank: usize,
    },
    /// Excluded by the hard filters for these reasons.
    Excluded {
        /// The failed constraints.
        reasons: Vec<Reason>,
        /// One of them is regulatory (agreement, licence, registration, practice years,
        /// multi-site filing).
        regulatory: bool,
    },
    /// Not among the candidates the index returned: no filter was run on them.
    NotConsidered,
}

/// An override, ready for the audit log and for the offer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// The case (Task) id.
    pub case_id: String,
    /// The chosen expert.
    pub expert_id: String,
    /// Why (trimmed, never blank).
    pub reason: String,
    /// Who overrode (the coordinator's user id).
    pub by: String,
    /// The selection it replaces.
    pub replaces: Vec<String>,
    /// Where the chosen expert stood.
    pub standing: Standing,
    /// True unless the expert was eligible: the override goes against the hard filters (or
    /// around them) and needs review.
    pub flagged: bool,
}

/// Why an override is refused. The HTTP layer answers 422 with the text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OverrideError {
    /// No reason given (MATCH-31: the reason is mandatory).
    #[error("override of case `{case}`: a reason is required")]
    BlankReason {
        /// The case id.
        case: String,
    },
    /// No coordinator named.
    #[error("override of case `{case}`: who overrides is required")]
    BlankActor {
        /// The case id.
        case: String,
    },
    /// No expert named.
    #[error("override of case `{case}`: the expert id is blank")]
    BlankExpert {
        /// The case id.
        case: String,
    },
}

impl MatchDecision {
    /// A coordinator (`by`) chooses `expert_id` instead of the selection, for `reason`.
    /// Refused when the reason, the actor or the expert is blank. An excluded (or never
    /// considered) expert is allowed, flagged, with the exclusion reasons recorded.
    pub fn override_with(
        &self,
        expert_id: &str,
        reason: &str,
        by: &str,
    ) -> Result<Override, OverrideError> {
        let case = || self.case.id.clone();
        let (expert_id, reason, by) = (expert_id.trim(), reason.trim(), by.trim());
        if reason.is_empty() {
            return Err(OverrideError::BlankReason { case: case() });
        }
        if by.is_empty() {
            return Err(OverrideError::BlankActor { case: case() });
        }
        if expert_id.is_empty() {
            return Err(OverrideError::BlankExpert { case: case() });
        }
        let standing = if let Some(c) = self.candidate(expert_id) {
            Standing::Ranked { rank: c.rank }
        } else if let Some(x) = self.exclusion(expert_id) {
            Standing::Excluded {
                regulatory: x.reasons.iter().any(|r| r.code.is_regulatory()),
                reasons: x.reasons.clone(),
            }
        } else {
            Standing::NotConsidered
        };
        Ok(Override {
            case_id: case(),
            expert_id: expert_id.to_owned(),
            reason: reason.to_owned(),
            by: by.to_owned(),
            replaces: self.selected.clone(),
            flagged: !matches!(standing, Standing::Ranked { .. }),
            standing,
        })
    }
}
