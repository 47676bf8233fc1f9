//! Matching one case (STANDARDS MATCH-01, MATCH-02, MATCH-30, MATCH-31): candidates from the
//! index, the hard filters, features, the scorer (with the built-in fallback), the ranking, and
//! a [`MatchDecision`] holding everything needed to explain and replay it.
//!
//! **Ranking.** Score descending; then lower current load first (open consultations, then
//! today's sessions), so equally scored experts share the work; then a tie-break key hashed
//! from the seed, the case id and the expert id (FNV-1a + SplitMix64, stable across Rust
//! versions and platforms: no `std` hasher, no randomness); then the expert id. The same inputs
//! always give the same ranking.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::card::Profile;
use super::case::{CaseError, CaseRequest};
use super::config::{ConfigError, MatchConfig};
use super::features::{Feature, case_features, expert_features};
use super::filter::{CaseFilter, Reason, ReasonCode};
use super::icd::Specificity;
use super::index::{Candidates, ExpertIndex};
use super::model::{Agreement, Expert};
use super::scorer::{Contribution, DefaultScorer, Score, Scorer, ScorerError, ScorerIdentity};

/// One eligible expert in the ranking, with the explanation of its score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankedCandidate {
    /// Position, 1 = best.
    pub rank: usize,
    /// The expert.
    pub expert_id: String,
    /// The expert's facility.
    pub facility: String,
    /// The agreement the case would be routed under (CN-02: stored on the ServiceRequest);
    /// none within the requester's own facility.
    pub agreement_id: Option<String>,
    /// How well the expertise fits the case code.
    pub specificity: Specificity,
    /// The score.
    pub total: f64,
    /// Each feature's share of the score.
    pub contributions: Vec<Contribution>,
    /// The features the scorer was given (for replay and the explanation).
    pub features: Vec<Feature>,
    /// Open consultations at decision time (the first tie-break).
    pub open_consultations: u32,
    /// Sessions today at decision time (the second tie-break).
    pub sessions_today: u32,
    /// The seeded tie-break key (the third).
    pub tie_break: u64,
}

/// An expert that failed a hard filter, with every failed constraint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exclusion {
    /// The expert.
    pub expert_id: String,
    /// Every failed constraint, in filter order.
    pub reasons: Vec<Reason>,
}

/// The configured scorer failed; the built-in one scored instead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fallback {
    /// A stable code of the failure (`out-of-fuel`, `timeout`, `trap`, …).
    pub code: String,
    /// What went wrong.
    pub error: ScorerError,
    /// The scorer that scored instead.
    pub used: ScorerIdentity,
}

/// What a replay needs, as it was at decision time: the eligible experts (full state) and the
/// requesting facility's agreements. Replaying uses these, not the directory's current state.
/// Excluded experts are kept as their exclusion reasons only, so that a decision stays small
/// (a first-level department can return thousands of candidates).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// The eligible experts, with their state at decision time: shared with the index that
    /// gave them when it shares (an expert's later state is a new value, never this one).
    pub experts: Vec<Arc<Expert>>,
    /// The requesting facility's agreements.
    pub agreements: Vec<Agreement>,
}

/// A match decision: what was asked, who was ranked and why, who was excluded and why, who was
/// selected, by which scorer (MATCH-31). Serialisable for storage; [`MatchDecision::replay`]
/// checks that the same inputs give the same ranking.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchDecision {
    /// The case as asked (carries no patient attribute).
    pub case: CaseRequest,
    /// The decision time (filters and features were evaluated at it).
    pub now: DateTime<Utc>,
    /// The tie-break seed.
    pub seed: u64,
    /// The settings used.
    pub config: MatchConfig,
    /// The case features given to the scorer.
    pub case_features: Vec<Feature>,
    /// Eligible experts, best first.
    pub ranked: Vec<RankedCandidate>,
    /// Excluded experts, in index order.
    pub exclusions: Vec<Exclusion>,
    /// The first `top_n` of `ranked`: the experts to offer the case to, in order.
    pub selected: Vec<String>,
    /// The configured scorer.
    pub scorer: ScorerIdentity,
    /// Set when the configured scorer failed and the built-in one scored.
    pub fallback: Option<Fallback>,
    /// The inputs, for replay.
    pub snapshot: Snapshot,
}

/// Why no decision could be made.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum MatchError {
    /// The case is invalid.
    #[error(transparent)]
    Case(#[from] CaseError),
    /// The settings are invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Both the configured scorer and the built-in fallback failed.
    #[error(
        "case `{case}`: scorer failed ({scorer}) and so did the built-in fallback ({fallback})"
    )]
    Scoring {
        /// The case id.
        case: String,
        /// The configured scorer's failure.
        scorer: ScorerError,
        /// The fallback's failure.
        fallback: ScorerError,
    },
}

/// The seeded tie-break key of an expert for a case: FNV-1a over the case id and expert id,
/// mixed with the seed by SplitMix64. Stable across platforms and Rust versions.
pub fn tie_break_key(seed: u64, case_id: &str, expert_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = case_id
        .bytes()
        .chain(std::iter::once(0xff))
        .chain(expert_id.bytes());
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = h ^ seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn checked(scores: Vec<Score>, expected: usize) -> Result<Vec<Score>, ScorerError> {
    if scores.len() != expected {
        return Err(ScorerError::WrongCount {
            expected,
            got: scores.len(),
        });
    }
    for (i, s) in scores.iter().enumerate() {
        if !s.total.is_finite() || s.contributions.iter().any(|c| !c.value.is_finite()) {
            return Err(ScorerError::NonFinite(i));
        }
    }
    Ok(scores)
}

/// Matches one case: candidates from `index`, hard filters, features, `scorer` (falling back to
/// [`DefaultScorer`] when it fails or returns unusable scores), ranking and selection.
/// `now` is the decision time (schedules, presence, agreement dates, practice years);
/// `seed` feeds the tie-break.
pub fn match_experts(
    case: &CaseRequest,
    index: &(impl ExpertIndex + ?Sized),
    scorer: &(impl Scorer + ?Sized),
    config: &MatchConfig,
    now: DateTime<Utc>,
    seed: u64,
) -> Result<MatchDecision, MatchError> {
    case.validate()?;
    config.validate()?;
    let found = index.candidate_refs(case);
    let agreements = index.agreements(&case.requesting_facility);
    decide(case, &found, agreements, scorer, config, now, seed)
}

fn decide(
    case: &CaseRequest,
    found: &Candidates<'_>,
    agreements: Vec<Agreement>,
    scorer: &(impl Scorer + ?Sized),
    config: &MatchConfig,
    now: DateTime<Utc>,
    seed: u64,
) -> Result<MatchDecision, MatchError> {
    let experts: Vec<&Expert> = found.iter().collect();
    // What the filters read: from the cards, or prepared here for candidates without one.
    let prepared: Vec<Profile> = if found.has_profiles() {
        Vec::new()
    } else {
        experts.iter().map(|e| Profile::of(e)).collect()
    };
    let profile = |i: usize| found.profile(i).or_else(|| prepared.get(i));
    let profiles: Vec<&Profile> = (0..experts.len()).filter_map(profile).collect();
    // Each expert once, the first occurrence (the index contract says so; a store bug must
    // not double an offer). Ids that strictly ascend (what an index sorted by id gives) are
    // checked in one pass instead of hashing every one.
    let ids: Vec<&str> = experts
        .iter()
        .zip(&profiles)
        .map(|(e, p)| p.id(e))
        .collect();
    let ascending = ids.windows(2).all(|w| w[0] < w[1]);
    let mut seen = (!ascending).then(|| HashSet::with_capacity(experts.len()));
    let mut eligible = Vec::new();
    // Positions in `found` of the eligible experts (for the snapshot).
    let mut positions = Vec::new();
    let mut exclusions = Vec::new();
    let filter = CaseFilter::new(case, &agreements, config, now);
    for (i, (&e, &p)) in experts.iter().zip(&profiles).enumerate() {
        if let Some(seen) = &mut seen
            && !seen.insert(ids[i])
        {
            continue;
        }
        match filter.check_profiled(e, p) {
            Ok(ok) => {
                eligible.push(ok);
                positions.push(i);
            }
            Err(reasons) => exclusions.push(Exclusion {
                expert_id: ids[i].to_owned(),
                reasons,
            }),
        }
    }
    drop(filter);
    let case_features = case_features(case);
    let features: Vec<Vec<Feature>> = eligible
        .iter()
        .map(|el| expert_features(case, el, config, now))
        .collect();
    let identity = scorer.identity();
    let (scores, fallback) = if features.is_empty() {
        (Vec::new(), None)
    } else {
        match scorer
            .score_many(&case_features, &features)
            .and_then(|s| checked(s, features.len()))
        {
            Ok(s) => (s, None),
            Err(err) => {
                let builtin = DefaultScorer;
                let s = builtin
                    .score_many(&case_features, &features)
                    .and_then(|s| checked(s, features.len()))
                    .map_err(|fallback| MatchError::Scoring {
                        case: case.id.clone(),
                        scorer: err.clone(),
                        fallback,
                    })?;
                let fb = Fallback {
                    code: err.code().to_owned(),
                    error: err,
                    used: builtin.identity(),
                };
                (s, Some(fb))
            }
        }
    };
    let mut ranked: Vec<RankedCandidate> = eligible
        .iter()
        .zip(features)
        .zip(scores)
        .map(|((el, features), score)| RankedCandidate {
            rank: 0,
            expert_id: el.expert.id.clone(),
            facility: el.expert.facility.clone(),
            agreement_id: el.agreement.map(|a| a.id.clone()),
            specificity: el.specificity,
            total: score.total,
            contributions: score.contributions,
            features,
            open_consultations: el.expert.load.open_consultations,
            sessions_today: el.expert.load.sessions_today,
            tie_break: tie_break_key(seed, &case.id, &el.expert.id),
        })
        .collect();
    ranked.sort_by(|a, b| {
        b.total
            .total_cmp(&a.total)
            .then(a.open_consultations.cmp(&b.open_consultations))
            .then(a.sessions_today.cmp(&b.sessions_today))
            .then(a.tie_break.cmp(&b.tie_break))
            .then_with(|| a.expert_id.cmp(&b.expert_id))
    });
    for (i, r) in ranked.iter_mut().enumerate() {
        r.rank = i + 1;
    }
    let selected = ranked
        .iter()
        .take(config.top_n)
        .map(|r| r.expert_id.clone())
        .collect();
    let snapshot_experts = positions.iter().filter_map(|&i| found.share(i)).collect();
    drop(eligible);
    Ok(MatchDecision {
        case: case.clone(),
        now,
        seed,
        config: config.clone(),
        case_features,
        ranked,
        exclusions,
        selected,
        scorer: identity,
        fallback,
        snapshot: Snapshot {
            experts: snapshot_experts,
            agreements,
        },
    })
}

/// The result of replaying a decision: the new decision and how it differs from the stored
/// one (empty: identical).
#[derive(Clone, Debug)]
pub struct Replay {
    /// The decision made again from the stored inputs.
    pub decision: MatchDecision,
    /// Each difference, in words.
    pub differences: Vec<String>,
}

impl Replay {
    /// True when the replay reproduced the decision exactly.
    pub fn is_identical(&self) -> bool {
        self.differences.is_empty()
    }
}

impl MatchDecision {
    /// Makes the decision again from its stored inputs (case, snapshot, config, time, seed)
    /// with `scorer`, and lists every difference: scorer identity, fallback, an eligible
    /// expert now excluded, ranking (order, totals, contributions), selection (MATCH-02 AT:
    /// same inputs and plugin hash → identical ranking). The stored exclusions are carried
    /// over.
    pub fn replay(&self, scorer: &(impl Scorer + ?Sized)) -> Result<Replay, MatchError> {
        let found = Candidates::Shared(Cow::Borrowed(&self.snapshot.experts));
        let mut again = decide(
            &self.case,
            &found,
            self.snapshot.agreements.clone(),
            scorer,
            &self.config,
            self.now,
            self.seed,
        )?;
        let mut differences = Vec::new();
        // Exclusions are evidence: carried over, not recomputed (the snapshot holds the
        // eligible experts only). An expert eligible then but excluded now is a difference.
        let now_excluded = std::mem::replace(&mut again.exclusions, self.exclusions.clone());
        for x in now_excluded {
            let codes: Vec<&str> = x.reasons.iter().map(|r| r.code.as_str()).collect();
            differences.push(format!(
                "expert {}: eligible then, excluded on replay ({})",
                x.expert_id,
                codes.join(", ")
            ));
            again.exclusions.push(x);
        }
        if again.scorer != self.scorer {
            differences.push(format!(
                "scorer: stored {} {} ({}), replayed {} {} ({})",
                self.scorer.name,
                self.scorer.version,
                self.scorer.module_hash,
                again.scorer.name,
                again.scorer.version,
                again.scorer.module_hash
            ));
        }
        if again.fallback != self.fallback {
            differences.push(format!(
                "fallback: stored {:?}, replayed {:?}",
                self.fallback.as_ref().map(|f| &f.code),
                again.fallback.as_ref().map(|f| &f.code)
            ));
        }
        let order = |d: &MatchDecision| -> Vec<String> {
            d.ranked.iter().map(|r| r.expert_id.clone()).collect()
        };
        if order(&again) != order(self) {
            differences.push(format!(
                "ranking: stored {:?}, replayed {:?}",
                order(self),
                order(&again)
            ));
        }
        for (a, b) in self.ranked.iter().zip(&again.ranked) {
            if a.expert_id == b.expert_id
                && (a.total.to_bits() != b.total.to_bits() || a.contributions != b.contributions)
            {
                differences.push(format!(
                    "expert {}: stored total {}, replayed {}",
                    a.expert_id, a.total, b.total
                ));
            }
        }
        if again.selected != self.selected {
            differences.push(format!(
                "selection: stored {:?}, replayed {:?}",
                self.selected, again.selected
            ));
        }
        Ok(Replay {
            decision: again,
            differences,
        })
    }

    /// The ranked candidate for an expert, if eligible.
    pub fn candidate(&self, expert_id: &str) -> Option<&RankedCandidate> {
        self.ranked.iter().find(|r| r.expert_id == expert_id)
    }

    /// The exclusion of an expert, if excluded.
    pub fn exclusion(&self, expert_id: &str) -> Option<&Exclusion> {
        self.exclusions.iter().find(|x| x.expert_id == expert_id)
    }

    /// How many excluded experts failed each constraint (an expert that failed two counts
    /// under both): the summary of a long exclusion list (a first-level department case can
    /// exclude a thousand experts), in filter order.
    pub fn exclusion_counts(&self) -> Vec<(ReasonCode, usize)> {
        let mut counts = [0usize; ReasonCode::ALL.len()];
        for r in self.exclusions.iter().flat_map(|x| &x.reasons) {
            if let Some(i) = ReasonCode::ALL.iter().position(|c| *c == r.code) {
                counts[i] += 1;
            }
        }
        ReasonCode::ALL
            .into_iter()
            .zip(counts)
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}
