//! Fellegi–Sunter weights and grading thresholds, their validation, and their estimation
//! from data by Expectation–Maximisation.
//!
//! For each field and agreement level, `m` is the probability of that level among record
//! pairs of the same person and `u` among pairs of different people (within the blocked
//! candidates). A level's weight is `log2(m / u)`; a pair's score is the sum over the fields
//! both records have (a missing field adds 0).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::compare::{ComparisonVector, FIELD_COUNT, FieldKind, LEVEL_COUNT, Level};

/// The m and u probabilities of one agreement level.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelWeight {
    /// P(level | same person).
    pub m: f64,
    /// P(level | different people).
    pub u: f64,
}

impl LevelWeight {
    /// `log2(m / u)`.
    pub fn weight(&self) -> f64 {
        (self.m / self.u).log2()
    }
}

/// Per field, per level m and u probabilities. Serialisable (JSON/YAML config): a map from
/// field (`name`, `birth_date`, …) to a map from level (`exact`, `phonetic`, …) to `{m, u}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    /// Every field with every one of its [`FieldKind::levels`].
    pub fields: BTreeMap<FieldKind, BTreeMap<Level, LevelWeight>>,
}

/// Grading thresholds on the score (sum of log2 weights).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// A score at or above this grades `certain` without a deterministic rule. `None` (the
    /// default): a probabilistic score never links automatically (MATCH-05); a facility
    /// may enable it explicitly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_link: Option<f64>,
    /// At or above: `probable` (to the human work-queue).
    pub probable: f64,
    /// At or above: `possible`.
    pub possible: f64,
}

impl Default for Thresholds {
    /// No auto-link; probable ≥ 22, possible ≥ 10. With the default weights a record needs
    /// about two strong agreements (name and birth date, or an id) plus a third field to be
    /// probable; parent and child (different birth dates, the household guard) stay below,
    /// twins sharing a household's phone and address may reach probable (the twin guard
    /// keeps them from `certain` and names the pattern for the reviewer).
    fn default() -> Self {
        Thresholds {
            auto_link: None,
            probable: 22.0,
            possible: 10.0,
        }
    }
}

/// Why weights or thresholds were refused.
#[derive(Clone, Debug, PartialEq, Error)]
pub enum WeightsError {
    /// A field is missing from the weights.
    #[error("match weights: field `{0:?}` is missing")]
    MissingField(FieldKind),
    /// A level of a field is missing, or one that field cannot take is present.
    #[error("match weights: field `{field:?}` must have exactly the levels {expected:?}")]
    Levels {
        /// The field.
        field: FieldKind,
        /// Its levels.
        expected: &'static [Level],
    },
    /// A probability outside (0, 1).
    #[error("match weights: {field:?}.{level:?}.{which} = {value} is not strictly between 0 and 1")]
    Probability {
        /// The field.
        field: FieldKind,
        /// The level.
        level: Level,
        /// `m` or `u`.
        which: &'static str,
        /// The value.
        value: f64,
    },
    /// The m (or u) probabilities of a field do not sum to 1.
    #[error("match weights: the {which} probabilities of {field:?} sum to {sum}, not 1 (±0.01)")]
    Sum {
        /// The field.
        field: FieldKind,
        /// `m` or `u`.
        which: &'static str,
        /// Their sum.
        sum: f64,
    },
    /// Thresholds out of order or not finite.
    #[error("match thresholds: {0}")]
    Thresholds(String),
    /// EM had nothing to learn from.
    #[error("match weights: EM needs at least one comparison vector")]
    NoData,
}

impl Thresholds {
    /// Checks `possible ≤ probable ≤ auto_link` and that all are finite.
    pub fn validate(&self) -> Result<(), WeightsError> {
        let all = [Some(self.possible), Some(self.probable), self.auto_link];
        if all.iter().flatten().any(|v| !v.is_finite()) {
            return Err(WeightsError::Thresholds(
                "every threshold must be a finite number".into(),
            ));
        }
        if self.possible > self.probable {
            return Err(WeightsError::Thresholds(format!(
                "possible ({}) must not be above probable ({})",
                self.possible, self.probable
            )));
        }
        if let Some(a) = self.auto_link
            && a < self.probable
        {
            return Err(WeightsError::Thresholds(format!(
                "auto_link ({a}) must not be below probable ({})",
                self.probable
            )));
        }
        Ok(())
    }
}

/// Built-in m/u values per field, best level first (in [`FieldKind::levels`] order).
const DEFAULTS: [(FieldKind, &[(f64, f64)]); FIELD_COUNT] = [
    // exact, phonetic, fuzzy, partial, disagree
    (
        FieldKind::Name,
        &[
            (0.86, 0.0005),
            (0.06, 0.001),
            (0.04, 0.004),
            (0.03, 0.06),
            (0.01, 0.9345),
        ],
    ),
    // exact, swapped, typo, one off, disagree
    (
        FieldKind::BirthDate,
        &[
            (0.93, 0.0001),
            (0.01, 0.0001),
            (0.035, 0.0005),
            (0.01, 0.0025),
            (0.015, 0.9973),
        ],
    ),
    (FieldKind::Sex, &[(0.98, 0.5), (0.02, 0.5)]),
    (FieldKind::Phone, &[(0.7, 0.002), (0.3, 0.998)]),
    // exact, partial, disagree
    (
        FieldKind::Address,
        &[(0.6, 0.002), (0.25, 0.02), (0.15, 0.978)],
    ),
    // exact, close, disagree
    (
        FieldKind::Postcode,
        &[(0.85, 0.01), (0.03, 0.002), (0.12, 0.988)],
    ),
    // exact, close, disagree
    (
        FieldKind::ResidentId,
        &[(0.96, 0.000_001), (0.03, 0.000_01), (0.01, 0.999_989)],
    ),
    (
        FieldKind::Insurance,
        &[(0.97, 0.000_001), (0.03, 0.999_999)],
    ),
    (
        FieldKind::NationalId,
        &[(0.94, 0.000_001), (0.04, 0.000_01), (0.02, 0.999_989)],
    ),
];

impl Default for Weights {
    /// Hand-set priors for Chinese patient registers: names and birth dates agree in most
    /// records of one person, random pairs rarely share a birth day (u ≈ 1/10,000 within
    /// the blocked candidates); ids are near-certain. Estimate better ones with
    /// [`estimate_em`] once a facility has data.
    fn default() -> Self {
        let mut fields = BTreeMap::new();
        for (field, values) in DEFAULTS {
            let levels = field
                .levels()
                .iter()
                .zip(values.iter())
                .map(|(l, &(m, u))| (*l, LevelWeight { m, u }))
                .collect();
            fields.insert(field, levels);
        }
        Weights { fields }
    }
}

impl Weights {
    /// Checks that every field has exactly its levels, every probability is in (0, 1), and
    /// the m and u probabilities of each field sum to 1 (±0.01).
    pub fn validate(&self) -> Result<(), WeightsError> {
        for field in FieldKind::ALL {
            let levels = self
                .fields
                .get(&field)
                .ok_or(WeightsError::MissingField(field))?;
            let expected = field.levels();
            if levels.len() != expected.len() || expected.iter().any(|l| !levels.contains_key(l)) {
                return Err(WeightsError::Levels { field, expected });
            }
            let (mut sm, mut su) = (0.0, 0.0);
            for (level, w) in levels {
                for (which, value) in [("m", w.m), ("u", w.u)] {
                    if !(value > 0.0 && value < 1.0) {
                        return Err(WeightsError::Probability {
                            field,
                            level: *level,
                            which,
                            value,
                        });
                    }
                }
                sm += w.m;
                su += w.u;
            }
            for (which, sum) in [("m", sm), ("u", su)] {
                if (sum - 1.0).abs() > 0.01 {
                    return Err(WeightsError::Sum { field, which, sum });
                }
            }
        }
        Ok(())
    }

    /// The log2 weight of a field at a level; 0 for a missing field or an unknown level.
    pub fn weight(&self, field: FieldKind, level: Option<Level>) -> f64 {
        level
            .and_then(|l| self.fields.get(&field)?.get(&l))
            .map_or(0.0, LevelWeight::weight)
    }

    /// A dense table `[field][level]` of log2 weights for scoring in a loop.
    pub(crate) fn table(&self) -> [[f64; LEVEL_COUNT]; FIELD_COUNT] {
        let mut t = [[0.0; LEVEL_COUNT]; FIELD_COUNT];
        for field in FieldKind::ALL {
            for level in field.levels() {
                if let Some(slot) = t
                    .get_mut(field.index())
                    .and_then(|r| r.get_mut(*level as usize))
                {
                    *slot = self.weight(field, Some(*level));
                }
            }
        }
        t
    }
}

/// Settings of [`estimate_em_with`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EmOptions {
    /// Stop after this many iterations.
    pub max_iterations: usize,
    /// Stop when no probability moves by more than this.
    pub tolerance: f64,
    /// The starting share of matches among the vectors.
    pub initial_match_proportion: f64,
    /// Keep the initial u probabilities (estimate m and the match share only): use with u
    /// from [`u_from_random_pairs`] when the blocked pairs hold too few non-matches for EM
    /// to learn u from.
    pub fix_u: bool,
    /// Make the weights of each field's levels non-increasing from the best level to the
    /// worst (see [`monotone_levels`]): a closer agreement never counts less than a looser
    /// one, whatever the sampling noise or a level the data never showed.
    pub monotone: bool,
}

impl Default for EmOptions {
    fn default() -> Self {
        EmOptions {
            max_iterations: 200,
            tolerance: 1e-6,
            initial_match_proportion: 0.1,
            fix_u: false,
            monotone: true,
        }
    }
}

/// What EM found.
#[derive(Clone, Debug, PartialEq)]
pub struct EmEstimate {
    /// The estimated weights (fields never observed keep their initial values).
    pub weights: Weights,
    /// The estimated share of same-person pairs among the vectors.
    pub match_proportion: f64,
    /// Iterations run.
    pub iterations: usize,
    /// Whether the tolerance was reached.
    pub converged: bool,
}

/// Estimates m and u by EM from comparison vectors of blocked candidate pairs (see
/// [`super::Matcher::comparison_vectors`]), starting from `initial`. Same as
/// [`estimate_em_with`] with default options, returning the weights only.
pub fn estimate_em(
    vectors: &[ComparisonVector],
    initial: &Weights,
) -> Result<Weights, WeightsError> {
    estimate_em_with(vectors, initial, EmOptions::default()).map(|e| e.weights)
}

/// Estimates m and u by Expectation–Maximisation over comparison vectors (Winkler 1988; a
/// two-class latent mixture with conditionally independent fields; a missing field is left
/// out of a vector's likelihood). Identical vectors are pooled, so millions of pairs cost
/// little. Probabilities are kept in [1e-6, 1 - 1e-6] so that no level becomes impossible.
/// With [`EmOptions::monotone`] (the default) the result's levels are then put in order by
/// [`monotone_levels`].
pub fn estimate_em_with(
    vectors: &[ComparisonVector],
    initial: &Weights,
    options: EmOptions,
) -> Result<EmEstimate, WeightsError> {
    initial.validate()?;
    if vectors.is_empty() {
        return Err(WeightsError::NoData);
    }
    let mut patterns: HashMap<ComparisonVector, f64> = HashMap::new();
    for v in vectors {
        *patterns.entry(*v).or_insert(0.0) += 1.0;
    }
    let patterns: Vec<(ComparisonVector, f64)> = patterns.into_iter().collect();
    // Dense m/u tables [field][level].
    let mut m = [[0.0f64; LEVEL_COUNT]; FIELD_COUNT];
    let mut u = [[0.0f64; LEVEL_COUNT]; FIELD_COUNT];
    for field in FieldKind::ALL {
        for level in field.levels() {
            if let Some(w) = initial.fields.get(&field).and_then(|f| f.get(level)) {
                m[field.index()][*level as usize] = w.m;
                u[field.index()][*level as usize] = w.u;
            }
        }
    }
    let mut p = options.initial_match_proportion.clamp(1e-6, 1.0 - 1e-6);
    let mut iterations = 0;
    let mut converged = false;
    while iterations < options.max_iterations {
        iterations += 1;
        let mut m_num = [[0.0f64; LEVEL_COUNT]; FIELD_COUNT];
        let mut u_num = [[0.0f64; LEVEL_COUNT]; FIELD_COUNT];
        let (mut g_total, mut n_total) = (0.0, 0.0);
        for (v, count) in &patterns {
            let (mut lm, mut lu) = (p.ln(), (1.0 - p).ln());
            for (f, level) in v.levels.iter().enumerate() {
                if let Some(l) = level {
                    lm += m[f][*l as usize].ln();
                    lu += u[f][*l as usize].ln();
                }
            }
            let g = 1.0 / (1.0 + (lu - lm).exp());
            g_total += g * count;
            n_total += count;
            for (f, level) in v.levels.iter().enumerate() {
                if let Some(l) = level {
                    m_num[f][*l as usize] += g * count;
                    u_num[f][*l as usize] += (1.0 - g) * count;
                }
            }
        }
        let mut delta: f64 = 0.0;
        for field in FieldKind::ALL {
            let f = field.index();
            let levels = field.levels();
            for (is_u, table, num) in [(false, &mut m, &m_num), (true, &mut u, &u_num)] {
                if is_u && options.fix_u {
                    continue;
                }
                let total: f64 = levels.iter().map(|l| num[f][*l as usize]).sum();
                if total <= 1e-12 {
                    continue; // never observed: keep the initial values
                }
                let mut new: Vec<f64> = levels
                    .iter()
                    .map(|l| (num[f][*l as usize] / total).clamp(1e-6, 1.0 - 1e-6))
                    .collect();
                let s: f64 = new.iter().sum();
                new.iter_mut().for_each(|x| *x /= s);
                for (l, x) in levels.iter().zip(new) {
                    delta = delta.max((table[f][*l as usize] - x).abs());
                    table[f][*l as usize] = x;
                }
            }
        }
        let new_p = (g_total / n_total).clamp(1e-6, 1.0 - 1e-6);
        delta = delta.max((new_p - p).abs());
        p = new_p;
        if delta < options.tolerance {
            converged = true;
            break;
        }
    }
    let mut fields = BTreeMap::new();
    for field in FieldKind::ALL {
        let mut levels: Vec<(Level, LevelWeight)> = field
            .levels()
            .iter()
            .map(|l| {
                (
                    *l,
                    LevelWeight {
                        m: m[field.index()][*l as usize],
                        u: u[field.index()][*l as usize],
                    },
                )
            })
            .collect();
        if options.monotone {
            monotone_levels(&mut levels);
        }
        fields.insert(field, levels.into_iter().collect());
    }
    Ok(EmEstimate {
        weights: Weights { fields },
        match_proportion: p,
        iterations,
        converged,
    })
}

/// Makes the weights `log2(m/u)` of a field's levels (best first) non-increasing by pooling
/// adjacent violators: a run of levels whose weights rise is given its pooled ratio
/// `Σm / Σu`, each level keeping its m and taking `u = m · Σu / Σm` (so the run's u still sum
/// to the same). EM on few pairs can rank levels backwards (an identifier one typo apart
/// weighing more than an equal one, because random pairs held a few true matches with equal
/// ids), and a level never observed among matches (pinyin homophones in Latin data) gets a
/// weight below a looser level's; the agreement levels are ordered by construction, so the
/// order is imposed (isotonic regression of the likelihood ratio).
pub fn monotone_levels(levels: &mut [(Level, LevelWeight)]) {
    // Blocks of consecutive levels: (first index, end index, Σm, Σu).
    let mut blocks: Vec<(usize, usize, f64, f64)> = Vec::with_capacity(levels.len());
    for (i, (_, w)) in levels.iter().enumerate() {
        blocks.push((i, i + 1, w.m, w.u));
        // Merge while the previous block's ratio is below the last one's.
        while blocks.len() >= 2 {
            let n = blocks.len();
            let (Some(&(s0, _, m0, u0)), Some(&(_, e1, m1, u1))) =
                (blocks.get(n - 2), blocks.get(n - 1))
            else {
                break;
            };
            if m0 * u1 >= m1 * u0 {
                break;
            }
            blocks.truncate(n - 2);
            blocks.push((s0, e1, m0 + m1, u0 + u1));
        }
    }
    for (start, end, m, u) in blocks {
        if end - start < 2 || m <= 0.0 {
            continue;
        }
        for (_, w) in levels.iter_mut().take(end).skip(start) {
            w.u = w.m * u / m;
        }
    }
}

/// Replaces the u probabilities of `initial` by the level frequencies among comparison
/// vectors of random record pairs (nearly all of different people), smoothed by half a count
/// so that no level is impossible. Fields absent from every vector keep their u.
pub fn u_from_random_pairs(random_pairs: &[ComparisonVector], initial: &Weights) -> Weights {
    let mut out = initial.clone();
    for field in FieldKind::ALL {
        let levels = field.levels();
        let counts: Vec<f64> = levels
            .iter()
            .map(|l| {
                #[allow(clippy::cast_precision_loss)]
                let n = random_pairs
                    .iter()
                    .filter(|v| v.get(field) == Some(*l))
                    .count() as f64;
                n
            })
            .collect();
        let total: f64 = counts.iter().sum();
        if total == 0.0 {
            continue;
        }
        #[allow(clippy::cast_precision_loss)]
        let denom = total + 0.5 * levels.len() as f64;
        if let Some(f) = out.fields.get_mut(&field) {
            for (l, n) in levels.iter().zip(counts) {
                if let Some(w) = f.get_mut(l) {
                    w.u = ((n + 0.5) / denom).clamp(1e-6, 1.0 - 1e-6);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_round_trip_through_json() {
        let w = Weights::default();
        w.validate().unwrap();
        Thresholds::default().validate().unwrap();
        let json = serde_json::to_string(&w).unwrap();
        let back: Weights = serde_json::from_str(&json).unwrap();
        assert_eq!(back, w);
        assert!(json.contains("\"birth_date\"") && json.contains("\"phonetic\""));
        assert!(w.weight(FieldKind::Name, Some(Level::Exact)) > 10.0);
        assert!(w.weight(FieldKind::Name, Some(Level::Disagree)) < -5.0);
        assert_eq!(w.weight(FieldKind::Name, None), 0.0);
    }

    #[test]
    fn invalid_weights_and_thresholds_are_refused_with_the_reason() {
        let mut w = Weights::default();
        w.fields
            .get_mut(&FieldKind::Sex)
            .unwrap()
            .insert(Level::Exact, LevelWeight { m: 1.0, u: 0.5 });
        assert!(matches!(
            w.validate(),
            Err(WeightsError::Probability {
                field: FieldKind::Sex,
                level: Level::Exact,
                which: "m",
                ..
            })
        ));
        let mut w = Weights::default();
        w.fields
            .get_mut(&FieldKind::Sex)
            .unwrap()
            .insert(Level::Exact, LevelWeight { m: 0.5, u: 0.5 });
        assert!(matches!(
            w.validate(),
            Err(WeightsError::Sum {
                field: FieldKind::Sex,
                which: "m",
                ..
            })
        ));
        let mut w = Weights::default();
        w.fields
            .get_mut(&FieldKind::Sex)
            .unwrap()
            .insert(Level::Phonetic, LevelWeight { m: 0.5, u: 0.5 });
        assert!(matches!(
            w.validate(),
            Err(WeightsError::Levels {
                field: FieldKind::Sex,
                ..
            })
        ));
        let mut w = Weights::default();
        w.fields.remove(&FieldKind::Phone);
        assert_eq!(
            w.validate(),
            Err(WeightsError::MissingField(FieldKind::Phone))
        );
        let t = Thresholds {
            auto_link: None,
            probable: 5.0,
            possible: 10.0,
        };
        assert!(
            t.validate()
                .unwrap_err()
                .to_string()
                .contains("possible (10)")
        );
        let t = Thresholds {
            auto_link: Some(1.0),
            probable: 5.0,
            possible: 0.0,
        };
        assert!(t.validate().unwrap_err().to_string().contains("auto_link"));
        let t = Thresholds {
            auto_link: None,
            probable: f64::NAN,
            possible: 0.0,
        };
        assert!(t.validate().is_err());
        let bad = r#"{"fields": {}, "extra": 1}"#;
        assert!(serde_json::from_str::<Weights>(bad).is_err());
    }

    fn lw(m: f64, u: f64) -> LevelWeight {
        LevelWeight { m, u }
    }

    #[test]
    fn monotone_levels_pool_a_run_of_rising_weights() {
        // An identifier: `close` weighs more than `exact` (random pairs held true matches).
        let mut levels = vec![
            (Level::Exact, lw(0.84, 0.000_117)),
            (Level::Close, lw(0.045, 0.000_002)),
            (Level::Disagree, lw(0.115, 0.999_881)),
        ];
        monotone_levels(&mut levels);
        let w: Vec<f64> = levels.iter().map(|(_, x)| x.weight()).collect();
        assert!((w[0] - w[1]).abs() < 1e-9, "{w:?}");
        let pooled = ((0.84 + 0.045) / (0.000_117 + 0.000_002f64)).log2();
        assert!((w[0] - pooled).abs() < 1e-9, "{w:?}");
        assert!(w[1] > w[2]);
        // m untouched, the u of the run still sum to the same.
        assert_eq!(levels[0].1.m, 0.84);
        let u: f64 = levels.iter().map(|(_, x)| x.u).sum();
        assert!((u - 1.0).abs() < 1e-9);
        // A level never seen among matches (m at the floor) joins the looser level after it,
        // and a run of three pools at once.
        let mut levels = vec![
            (Level::Exact, lw(0.5, 0.000_06)),
            (Level::Phonetic, lw(0.000_001, 0.000_003)),
            (Level::Fuzzy, lw(0.27, 0.000_26)),
            (Level::Partial, lw(0.2, 0.01)),
            (Level::Disagree, lw(0.03, 0.989)),
        ];
        monotone_levels(&mut levels);
        let w: Vec<f64> = levels.iter().map(|(_, x)| x.weight()).collect();
        assert!(w.windows(2).all(|p| p[0] >= p[1] - 1e-9), "{w:?}");
        assert!((w[1] - w[2]).abs() < 1e-9 && w[0] > w[1], "{w:?}");
        // Already ordered: unchanged.
        let ordered = vec![
            (Level::Exact, lw(0.9, 0.01)),
            (Level::Partial, lw(0.08, 0.09)),
            (Level::Disagree, lw(0.02, 0.9)),
        ];
        let mut same = ordered.clone();
        monotone_levels(&mut same);
        assert_eq!(same, ordered);
        let mut pooled = vec![
            (Level::Exact, lw(0.3, 0.3)),
            (Level::Partial, lw(0.3, 0.2)),
            (Level::Disagree, lw(0.4, 0.5)),
        ];
        monotone_levels(&mut pooled);
        assert!((pooled[0].1.weight() - pooled[1].1.weight()).abs() < 1e-9);
    }

    #[test]
    fn em_recovers_the_generating_probabilities() {
        // 1,000 matches: name exact 90 %, else fuzzy; 9,000 non-matches: name exact 1 %,
        // birth date exact 0.5 %.
        let mut vectors = Vec::new();
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as f64 / (1u64 << 31) as f64
        };
        for i in 0..10_000 {
            let is_match = i < 1_000;
            let mut v = ComparisonVector::default();
            let name = if is_match {
                if next() < 0.9 {
                    Level::Exact
                } else {
                    Level::Fuzzy
                }
            } else if next() < 0.01 {
                Level::Exact
            } else {
                Level::Disagree
            };
            let dob = if is_match {
                if next() < 0.95 {
                    Level::Exact
                } else {
                    Level::Disagree
                }
            } else if next() < 0.005 {
                Level::Exact
            } else {
                Level::Disagree
            };
            let sex = if is_match || next() < 0.5 {
                Level::Exact
            } else {
                Level::Disagree
            };
            v.levels[FieldKind::Name.index()] = Some(name);
            v.levels[FieldKind::BirthDate.index()] = Some(dob);
            v.levels[FieldKind::Sex.index()] = Some(sex);
            vectors.push(v);
        }
        let est = estimate_em_with(&vectors, &Weights::default(), EmOptions::default()).unwrap();
        est.weights.validate().unwrap();
        assert!(
            (est.match_proportion - 0.1).abs() < 0.01,
            "{}",
            est.match_proportion
        );
        let name = &est.weights.fields[&FieldKind::Name];
        assert!(
            (name[&Level::Exact].m - 0.9).abs() < 0.03,
            "{:?}",
            name[&Level::Exact]
        );
        assert!(
            (name[&Level::Exact].u - 0.01).abs() < 0.005,
            "{:?}",
            name[&Level::Exact]
        );
        let dob = &est.weights.fields[&FieldKind::BirthDate];
        assert!((dob[&Level::Exact].m - 0.95).abs() < 0.03);
        // Every field's weights fall from its best level to its worst (monotone by default).
        for (field, levels) in &est.weights.fields {
            let w: Vec<f64> = field.levels().iter().map(|l| levels[l].weight()).collect();
            assert!(w.windows(2).all(|p| p[0] >= p[1] - 1e-9), "{field:?} {w:?}");
        }
        // A field absent from every vector keeps its initial values.
        assert_eq!(
            est.weights.fields[&FieldKind::Phone],
            Weights::default().fields[&FieldKind::Phone]
        );
        assert_eq!(
            estimate_em(&[], &Weights::default()),
            Err(WeightsError::NoData)
        );
    }
}
