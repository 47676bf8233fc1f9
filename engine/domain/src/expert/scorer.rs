//! The scoring port (STANDARDS MATCH-02) and the built-in [`DefaultScorer`].
//!
//! [`Scorer::score_many`] scores every eligible candidate of one case in one call: it maps
//! one-to-one onto the `scorer` world's batched export (contract 0.1.1)
//! `score-many: func(case-features: list<feature>, candidates: list<list<feature>>) ->
//! result<list<score>, string>` (one plugin instance, one fuel budget, one call per case); for a
//! 0.1.0 plugin, which exports only `score`, the plugin host calls `score` once per candidate in
//! one session (engine/plugin/src/scorer.rs). WIT's `contribution { feature, points }` is
//! [`Contribution`] `{ name, value }`.
//!
//! The plugin host implements [`Scorer`] for a WASM scorer and maps its failures onto
//! [`ScorerError`] (out of fuel, deadline, trap, an error string). Matching then falls back to
//! [`DefaultScorer`] and the decision records that and why.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::features::{Feature, feature};
use super::model::Title;

/// A candidate's score: the total (higher is better) and each feature's share of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Score {
    /// The total.
    pub total: f64,
    /// Each feature's contribution (the explanation, MATCH-31).
    pub contributions: Vec<Contribution>,
}

/// One feature's share of a score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contribution {
    /// The contribution's name (usually the feature's): borrowed when it is a fixed word (the
    /// built-in scorer's), owned when a plugin or JSON gave it.
    pub name: Cow<'static, str>,
    /// Its points.
    pub value: f64,
}

/// Which scorer produced a score: recorded in every decision so that a replay can use the
/// same one (MATCH-02, MATCH-31).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScorerIdentity {
    /// The scorer's name (`expert-score`, `builtin-default`).
    pub name: String,
    /// Its version.
    pub version: String,
    /// The hash of the WASM module (`sha256:…`); `builtin` for native scorers.
    pub module_hash: String,
    /// The fuel and time budget of each call, as the host words it (`fuel=1000000,
    /// deadline=50ms`); none for native scorers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<String>,
}

/// Why a scorer gave no usable scores.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "detail")]
pub enum ScorerError {
    /// The plugin ran out of fuel.
    #[error("out of fuel ({0})")]
    OutOfFuel(String),
    /// The plugin passed its deadline.
    #[error("deadline passed ({0})")]
    Timeout(String),
    /// The plugin trapped.
    #[error("trap: {0}")]
    Trap(String),
    /// The plugin cannot be called (not loaded, wrong world, instantiation failed).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The scorer returned an error.
    #[error("scorer error: {0}")]
    Failed(String),
    /// A feature value the scorer cannot use.
    #[error("feature {feature}: {value} is not a usable value")]
    InvalidFeature {
        /// The feature name.
        feature: String,
        /// The value, as text.
        value: String,
    },
    /// The scorer returned a different number of scores than candidates.
    #[error("returned {got} scores for {expected} candidates")]
    WrongCount {
        /// Candidates sent.
        expected: usize,
        /// Scores returned.
        got: usize,
    },
    /// A total is NaN or infinite.
    #[error("candidate {0}: the total is not a finite number")]
    NonFinite(usize),
}

impl ScorerError {
    /// A stable short code for the decision record and alerts.
    pub fn code(&self) -> &'static str {
        match self {
            ScorerError::OutOfFuel(_) => "out-of-fuel",
            ScorerError::Timeout(_) => "timeout",
            ScorerError::Trap(_) => "trap",
            ScorerError::Unavailable(_) => "unavailable",
            ScorerError::Failed(_) => "failed",
            ScorerError::InvalidFeature { .. } => "invalid-feature",
            ScorerError::WrongCount { .. } => "wrong-count",
            ScorerError::NonFinite(_) => "non-finite",
        }
    }
}

/// Scores the eligible candidates of one case. Must be deterministic: the same features give
/// the same scores (no clock, no unseeded randomness), so a decision can be replayed.
pub trait Scorer {
    /// One score per candidate, in the candidates' order.
    fn score_many(
        &self,
        case: &[Feature],
        candidates: &[Vec<Feature>],
    ) -> Result<Vec<Score>, ScorerError>;

    /// Name, version and module hash, recorded in the decision.
    fn identity(&self) -> ScorerIdentity;
}

impl<T: Scorer + ?Sized> Scorer for &T {
    fn score_many(
        &self,
        case: &[Feature],
        candidates: &[Vec<Feature>],
    ) -> Result<Vec<Score>, ScorerError> {
        (**self).score_many(case, candidates)
    }
    fn identity(&self) -> ScorerIdentity {
        (**self).identity()
    }
}

/// The built-in scorer: the fallback when a plugin fails, and the scorer when none is
/// configured. The same kind of rule as the reference plugin `plugins/expert-score` (title,
/// experience, response time), extended with the other MATCH-02 features. One contribution per
/// feature present; a missing feature gives none:
///
/// | contribution | points |
/// |---|---|
/// | `title` | 主任医师 +50, 副主任医师 +30, others 0 (as the plugin) |
/// | `years` | years × 2, at most 40 (the plugin does not cap) |
/// | `response` | (30 − median minutes) × 2, within −60…+60 (the plugin does not clamp); doubled for urgent cases |
/// | `specificity` | exact +30, subcategory +20, category +10, department only 0 |
/// | `load` | −5 per open consultation, −2 per session today |
/// | `acceptance` | (rate − 0.5) × 40: −20…+20 |
/// | `language` | +15 when the expert speaks the requested language |
/// | `relationship` | priority × 20 (医联体 +20 … other +4; same facility +20) |
/// | `continuity` | +40 for the follow-up's earlier expert |
/// | `preference` | +25 for the preferred expert |
///
/// The plugin's `urgency` bonus (+20 to every candidate of a critical case) changes no ranking
/// and is left out. Negative or non-finite numbers are an error, as in the plugin.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultScorer;

impl DefaultScorer {
    /// The identity recorded in decisions.
    pub const NAME: &'static str = "builtin-default";
    /// Bump when the rule changes: replays of older decisions then report the difference.
    pub const VERSION: &'static str = "1";

    /// Scores one candidate.
    pub fn score_one(&self, case: &[Feature], expert: &[Feature]) -> Result<Score, ScorerError> {
        let mut parts: Vec<Contribution> = Vec::with_capacity(10);
        let mut add = |name: &'static str, value: f64| {
            parts.push(Contribution {
                name: Cow::Borrowed(name),
                value,
            })
        };
        let urgent = feature(case, "urgency").is_some_and(|f| f.value >= 1.0);
        let read = Read::of(expert);
        if let Some(f) = read.title {
            let title = f.text.as_deref().and_then(|t| t.parse::<Title>().ok());
            add(
                "title",
                match title {
                    Some(Title::Chief) => 50.0,
                    Some(Title::AssociateChief) => 30.0,
                    _ => 0.0,
                },
            );
        }
        if let Some(years) = number(read.years)? {
            add("years", (years * 2.0).min(40.0));
        }
        if let Some(minutes) = number(read.median_response_minutes)? {
            let points = ((30.0 - minutes) * 2.0).clamp(-60.0, 60.0);
            add("response", if urgent { points * 2.0 } else { points });
        }
        if let Some(s) = number(read.specificity)? {
            add("specificity", s * 10.0);
        }
        let open = number(read.open_consultations)?;
        let today = number(read.sessions_today)?;
        if open.is_some() || today.is_some() {
            add(
                "load",
                -5.0 * open.unwrap_or(0.0) - 2.0 * today.unwrap_or(0.0),
            );
        }
        if let Some(rate) = number(read.acceptance_rate)? {
            add("acceptance", (rate.min(1.0) - 0.5) * 40.0);
        }
        if let Some(l) = number(read.language)? {
            add("language", if l >= 1.0 { 15.0 } else { 0.0 });
        }
        if let Some(p) = number(read.relationship)? {
            add("relationship", p.min(1.0) * 20.0);
        }
        if let Some(c) = number(read.continuity)? {
            add("continuity", if c >= 1.0 { 40.0 } else { 0.0 });
        }
        if let Some(p) = number(read.preferred)? {
            add("preference", if p >= 1.0 { 25.0 } else { 0.0 });
        }
        Ok(Score {
            total: parts.iter().map(|c| c.value).sum(),
            contributions: parts,
        })
    }
}

/// The expert features the built-in rule reads, found in one pass over the list (the first of
/// each name, as [`feature`] finds it) instead of one search per name.
#[derive(Default)]
struct Read<'a> {
    title: Option<&'a Feature>,
    years: Option<&'a Feature>,
    median_response_minutes: Option<&'a Feature>,
    specificity: Option<&'a Feature>,
    open_consultations: Option<&'a Feature>,
    sessions_today: Option<&'a Feature>,
    acceptance_rate: Option<&'a Feature>,
    language: Option<&'a Feature>,
    relationship: Option<&'a Feature>,
    continuity: Option<&'a Feature>,
    preferred: Option<&'a Feature>,
}

impl<'a> Read<'a> {
    fn of(features: &'a [Feature]) -> Read<'a> {
        let mut r = Read::default();
        for f in features {
            let slot = match &*f.name {
                "title" => &mut r.title,
                "years" => &mut r.years,
                "median_response_minutes" => &mut r.median_response_minutes,
                "specificity" => &mut r.specificity,
                "open_consultations" => &mut r.open_consultations,
                "sessions_today" => &mut r.sessions_today,
                "acceptance_rate" => &mut r.acceptance_rate,
                "language" => &mut r.language,
                "relationship" => &mut r.relationship,
                "continuity" => &mut r.continuity,
                "preferred" => &mut r.preferred,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(f);
            }
        }
        r
    }
}

/// A numeric feature, when present, that must be finite and not negative.
fn number(found: Option<&Feature>) -> Result<Option<f64>, ScorerError> {
    match found {
        None => Ok(None),
        Some(f) if f.value.is_finite() && f.value >= 0.0 => Ok(Some(f.value)),
        Some(f) => Err(ScorerError::InvalidFeature {
            feature: f.name.to_string(),
            value: f.value.to_string(),
        }),
    }
}

impl Scorer for DefaultScorer {
    fn score_many(
        &self,
        case: &[Feature],
        candidates: &[Vec<Feature>],
    ) -> Result<Vec<Score>, ScorerError> {
        candidates.iter().map(|c| self.score_one(case, c)).collect()
    }

    fn identity(&self) -> ScorerIdentity {
        ScorerIdentity {
            name: DefaultScorer::NAME.to_owned(),
            version: DefaultScorer::VERSION.to_owned(),
            module_hash: "builtin".to_owned(),
            budget: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total(case: &[Feature], expert: &[Feature]) -> f64 {
        DefaultScorer.score_one(case, expert).unwrap().total
    }

    #[test]
    fn the_reference_rule_where_it_agrees_with_the_plugin() {
        // The plugin's fixture chief-critical: title 50 + years 20×2 + response (30−12)×2.
        let expert = [
            Feature::text("title", 4.0, "主任医师"),
            Feature::num("years", 20.0),
            Feature::num("median_response_minutes", 12.0),
        ];
        let s = DefaultScorer.score_one(&[], &expert).unwrap();
        assert_eq!(s.total, 50.0 + 40.0 + 36.0);
        let names: Vec<&str> = s.contributions.iter().map(|c| &*c.name).collect();
        assert_eq!(names, ["title", "years", "response"]);
        assert_eq!(
            total(&[], &[Feature::text("title", 3.0, "副主任医师")]),
            30.0
        );
        assert_eq!(total(&[], &[Feature::text("title", 2.0, "主治医师")]), 0.0);
        assert_eq!(total(&[], &[]), 0.0);
    }

    #[test]
    fn caps_and_urgency() {
        assert_eq!(total(&[], &[Feature::num("years", 35.0)]), 40.0);
        assert_eq!(
            total(&[], &[Feature::num("median_response_minutes", 600.0)]),
            -60.0
        );
        let urgent = [Feature::text("urgency", 1.0, "urgent")];
        let fast = [Feature::num("median_response_minutes", 5.0)];
        assert_eq!(total(&[], &fast), 50.0);
        assert_eq!(total(&urgent, &fast), 100.0);
    }

    #[test]
    fn each_soft_feature_counts() {
        let check = |f: Feature, points: f64| {
            assert_eq!(total(&[], std::slice::from_ref(&f)), points, "{f:?}");
        };
        check(Feature::text("specificity", 3.0, "exact"), 30.0);
        check(Feature::text("specificity", 1.0, "category"), 10.0);
        check(Feature::num("open_consultations", 2.0), -10.0);
        check(Feature::num("sessions_today", 3.0), -6.0);
        check(Feature::num("acceptance_rate", 1.0), 20.0);
        check(Feature::num("acceptance_rate", 0.25), -10.0);
        check(Feature::text("language", 1.0, "yue"), 15.0);
        check(Feature::text("language", 0.0, "yue"), 0.0);
        check(
            Feature::text("relationship", 0.8, "specialty-alliance"),
            16.0,
        );
        check(Feature::num("continuity", 1.0), 40.0);
        check(Feature::num("preferred", 1.0), 25.0);
        check(Feature::num("preferred", 0.0), 0.0);
    }

    #[test]
    fn bad_numbers_are_errors() {
        for v in [-1.0, f64::NAN, f64::INFINITY] {
            let err = DefaultScorer
                .score_one(&[], &[Feature::num("years", v)])
                .unwrap_err();
            assert_eq!(err.code(), "invalid-feature");
        }
    }
}
