//! The matcher: deterministic rules first, then a Fellegi–Sunter score, graded and explained
//! (STANDARDS MATCH-05, MATCH-31; the grades are those of PDQm `$match`, IHE-02).
//!
//! For each candidate record found through the blocking keys:
//!
//! 1. **Rules** (grade `certain`): the same facility and local id; a valid resident id that is
//!    equal and consistent with both records' stated birth date and sex, with the same
//!    normalised name (the same hanzi, or the same letters when a side has no hanzi); the same
//!    医保 `psn_no` and insured region with agreeing names.
//! 2. **Score**: the sum of the log2 m/u weights of every field both records have.
//! 3. **Guards**: a conflicting sex or a clearly different birth date (not a swap, a keying
//!    slip or one component off) blocks `certain` (except for the same local id, which *is*
//!    the record). Household members share phone, address and family name:
//!    * the **twin pattern** (the same family name, a near birth date, and different given
//!      names: another pronunciation when both are hanzi, another syllable when either is,
//!      more than one edit for Latin letters; or homophone names with conflicting sexes) is
//!      never `certain`, whatever identifier agrees (a shared 医保 card, an id one typo from
//!      the twin's) and whatever the score (`auto_link_above` included). It is graded by its
//!      score, so a pair reaching `probable` goes to a human with the finding
//!      [`PairFinding::TwinPattern`]: the data cannot tell twins from a duplicate whose given
//!      name was replaced, a reviewer can;
//!    * the **household pattern** (a clearly different birth date, another name, no agreeing
//!      identifier: a parent and child, siblings born apart) is capped at `possible`
//!      ([`PairFinding::HouseholdPattern`]): the person's own fields disagree and only the
//!      household's agree. The same name with another date is more likely a wrong date, left
//!      to the score and a human.
//!
//!    An equal resident id whose names disagree or that contradicts a stated birth date
//!    counts for nothing (an infant under a parent's number); two different persons both
//!    `certain` are both lowered to `probable` for a human.
//!
//! Records of the same person are grouped: the person's grade and score are those of its best
//! record.

use serde::{Deserialize, Serialize};

use super::blocking::{CandidateIndex, PersonId, blocking_keys};
use super::compare::{
    Comparison, ComparisonVector, FIELD_COUNT, FieldKind, LEVEL_COUNT, Level, compare,
};
use super::demographics::Demographics;
use super::normalize::{NormalizedPerson, RecordFinding, normalize};
use super::weights::{Thresholds, Weights, WeightsError};

/// A match grade (the FHIR `match-grade` codes, plus `New` for "no candidate").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grade {
    /// The same person: link automatically.
    Certain,
    /// Likely the same person: a human decides (never merged automatically).
    Probable,
    /// Possibly the same person: shown, not queued.
    Possible,
    /// Not a match: a new person.
    New,
}

impl Grade {
    /// The FHIR `match-grade` code (`certain`, `probable`, `possible`, `certainly-not`).
    pub fn fhir_code(self) -> &'static str {
        match self {
            Grade::Certain => "certain",
            Grade::Probable => "probable",
            Grade::Possible => "possible",
            Grade::New => "certainly-not",
        }
    }
}

/// Which deterministic rule made a candidate `certain`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The same facility and local id: the record itself (an update).
    SameLocalId,
    /// A valid, consistent resident identity number and the same normalised name.
    ResidentIdAndName,
    /// The same 医保 `psn_no` and insured region, with agreeing names.
    InsuranceNumber,
    /// The score reached the facility's explicitly enabled auto-link threshold.
    AutoLinkThreshold,
}

/// Something about a pair that changed or qualifies its grade.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "finding", content = "detail")]
pub enum PairFinding {
    /// The sexes conflict: never `certain`.
    SexConflict,
    /// Both birth dates are present and clearly different: never `certain`.
    BirthDateConflict,
    /// Same family name, the same or nearly the same birth date (exact, swapped, a slip,
    /// one component off) and two different given names (or homophone names with
    /// conflicting sexes): twins look like this, and so does a duplicate whose given name
    /// was replaced. Never `certain` (no rule but the resident id with the same name, which
    /// this pattern never meets, nor `auto_link_above`); `probable` when the score reaches
    /// the threshold, so a human tells twins from a duplicate.
    TwinPattern,
    /// A clearly different birth date under another name and no agreeing identifier: a
    /// parent and child, or siblings born apart, sharing the household's phone, address
    /// and family name. Never `certain`, and at most `possible`: nothing of the person
    /// agrees, only the household.
    HouseholdPattern,
    /// An equal resident id was not counted: the names disagree or the id contradicts a
    /// stated birth date or sex (an infant registered under a parent's number).
    SharedIdIgnored,
    /// Another person was also `certain`: lowered to `probable` for a human.
    AmbiguousCertain,
    /// What was found in the incoming record.
    Incoming(RecordFinding),
    /// What was found in the candidate record.
    Candidate(RecordFinding),
}

/// One field's part in a score.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// The field.
    pub field: FieldKind,
    /// Its agreement level; `None` when either record lacks it.
    pub level: Option<Level>,
    /// The log2 weight added (0 for a missing field).
    pub weight: f64,
}

/// One compared record of a candidate person.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordMatch {
    /// The record's facility.
    pub facility: String,
    /// The record's local id.
    pub local_id: String,
    /// Its grade.
    pub grade: Grade,
    /// Its score.
    pub score: f64,
}

/// A candidate person: the explanation of the best of its records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The master person.
    pub person_id: PersonId,
    /// The best record's facility.
    pub facility: String,
    /// The best record's local id.
    pub local_id: String,
    /// The grade (of the best record).
    pub grade: Grade,
    /// The score (of the best record).
    pub score: f64,
    /// Per-field contributions to the score.
    pub contributions: Vec<Contribution>,
    /// The rule that fired, if any.
    pub rule: Option<Rule>,
    /// Guards and findings that apply.
    pub findings: Vec<PairFinding>,
    /// Every compared record of this person, best first (the best one included).
    pub records: Vec<RecordMatch>,
}

/// The answer for one incoming record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatchDecision {
    /// The best candidate's grade, `New` without candidates.
    pub grade: Grade,
    /// The best candidate's person, when its grade is `certain`, `probable` or `possible`.
    pub person: Option<PersonId>,
    /// Candidate persons graded `possible` or better, best first.
    pub candidates: Vec<Candidate>,
    /// What was found in the incoming record itself.
    pub findings: Vec<RecordFinding>,
}

impl MatchDecision {
    /// The person to link to automatically: only for a `certain` decision.
    pub fn auto_link(&self) -> Option<PersonId> {
        (self.grade == Grade::Certain)
            .then_some(self.person)
            .flatten()
    }
}

/// Decides matches; holds the weights and thresholds.
#[derive(Clone, Debug)]
pub struct Matcher {
    weights: Weights,
    table: [[f64; LEVEL_COUNT]; FIELD_COUNT],
    thresholds: Thresholds,
    /// How many candidate records to fetch from the index per decision (default 64).
    pub candidate_limit: usize,
}

impl Matcher {
    /// A matcher with validated weights and thresholds.
    pub fn new(weights: Weights, thresholds: Thresholds) -> Result<Matcher, WeightsError> {
        weights.validate()?;
        thresholds.validate()?;
        Ok(Matcher {
            table: weights.table(),
            weights,
            thresholds,
            candidate_limit: 64,
        })
    }

    /// The weights in use.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// The thresholds in use.
    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    /// The score of a comparison vector and its per-field contributions.
    pub fn score(&self, v: &ComparisonVector) -> (f64, Vec<Contribution>) {
        let mut total = 0.0;
        let mut parts = Vec::with_capacity(FIELD_COUNT);
        for field in FieldKind::ALL {
            let level = v.get(field);
            let weight = level
                .and_then(|l| self.table.get(field.index())?.get(l as usize).copied())
                .unwrap_or(0.0);
            total += weight;
            parts.push(Contribution {
                field,
                level,
                weight,
            });
        }
        (total, parts)
    }

    /// The score of a comparison vector (the sum of [`Matcher::score`]'s contributions,
    /// without building them).
    pub fn score_value(&self, v: &ComparisonVector) -> f64 {
        v.levels
            .iter()
            .zip(&self.table)
            .map(|(level, row)| {
                level
                    .and_then(|l| row.get(l as usize).copied())
                    .unwrap_or(0.0)
            })
            .sum()
    }

    /// Decides one incoming record against an index.
    pub fn decide(&self, incoming: &Demographics, index: &impl CandidateIndex) -> MatchDecision {
        self.decide_normalized(&normalize(incoming), index)
    }

    /// [`Matcher::decide`] for a record already normalised.
    ///
    /// Every candidate record is graded cheaply first; the explanation (contributions,
    /// findings, record list) is built only for the persons that are shown.
    pub fn decide_normalized(
        &self,
        incoming: &NormalizedPerson,
        index: &impl CandidateIndex,
    ) -> MatchDecision {
        struct Group {
            person_id: PersonId,
            best: usize,
            assessment: Assessment,
            ambiguous: bool,
            records: Vec<(usize, Grade, f64)>,
        }
        let keys = blocking_keys(incoming);
        let found = index.candidates(&keys, self.candidate_limit);
        let mut groups: Vec<Group> = Vec::new();
        for (i, entry) in found.iter().enumerate() {
            let x = self.assess(incoming, &entry.person);
            match groups.iter_mut().find(|g| g.person_id == entry.person_id) {
                Some(g) => {
                    g.records.push((i, x.grade, x.score));
                    if (x.grade, -x.score) < (g.assessment.grade, -g.assessment.score) {
                        g.best = i;
                        g.assessment = x;
                    }
                }
                None => groups.push(Group {
                    person_id: entry.person_id,
                    best: i,
                    records: vec![(i, x.grade, x.score)],
                    assessment: x,
                    ambiguous: false,
                }),
            }
        }
        // Two persons certain: a human decides, unless one is the record itself.
        let certain = groups
            .iter()
            .filter(|g| g.assessment.grade == Grade::Certain)
            .count();
        if certain > 1 {
            let has_self = groups
                .iter()
                .any(|g| g.assessment.rule == Some(Rule::SameLocalId));
            for g in groups
                .iter_mut()
                .filter(|g| g.assessment.grade == Grade::Certain)
            {
                if has_self && g.assessment.rule == Some(Rule::SameLocalId) {
                    continue;
                }
                g.assessment.grade = Grade::Probable;
                g.ambiguous = true;
            }
        }
        let mut persons: Vec<Candidate> = groups
            .into_iter()
            .filter(|g| g.assessment.grade <= Grade::Possible)
            .filter_map(|mut g| {
                let best = &found.get(g.best)?.person;
                let (contributions, mut findings) = self.explain(incoming, best, &g.assessment);
                if g.ambiguous {
                    findings.push(PairFinding::AmbiguousCertain);
                }
                g.records.sort_by(|a, b| {
                    (a.1, -a.2)
                        .partial_cmp(&(b.1, -b.2))
                        .unwrap_or(std::cmp::Ordering::Equal)
                });
                let records = g
                    .records
                    .iter()
                    .filter_map(|&(i, grade, score)| {
                        let p = &found.get(i)?.person;
                        Some(RecordMatch {
                            facility: p.facility.clone(),
                            local_id: p.local_id.clone(),
                            grade,
                            score,
                        })
                    })
                    .collect();
                Some(Candidate {
                    person_id: g.person_id,
                    facility: best.facility.clone(),
                    local_id: best.local_id.clone(),
                    grade: g.assessment.grade,
                    score: g.assessment.score,
                    contributions,
                    rule: g.assessment.rule,
                    findings,
                    records,
                })
            })
            .collect();
        persons.sort_by(|a, b| {
            (a.grade, -a.score, a.person_id)
                .partial_cmp(&(b.grade, -b.score, b.person_id))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let grade = persons.first().map_or(Grade::New, |p| p.grade);
        MatchDecision {
            grade,
            person: persons.first().map(|p| p.person_id),
            candidates: persons,
            findings: incoming.findings.clone(),
        }
    }

    /// Compares two records and grades the pair (rules, score, guards), with the
    /// explanation.
    pub fn judge(&self, a: &NormalizedPerson, b: &NormalizedPerson) -> PairJudgement {
        let x = self.assess(a, b);
        let (contributions, findings) = self.explain(a, b, &x);
        PairJudgement {
            grade: x.grade,
            score: x.score,
            contributions,
            rule: x.rule,
            findings,
            comparison: x.comparison,
        }
    }

    /// The contributions and findings of an assessed pair.
    fn explain(
        &self,
        a: &NormalizedPerson,
        b: &NormalizedPerson,
        x: &Assessment,
    ) -> (Vec<Contribution>, Vec<PairFinding>) {
        let (_, contributions) = self.score(&x.comparison.vector);
        let mut findings: Vec<PairFinding> = Vec::new();
        findings.extend(a.findings.iter().map(|f| PairFinding::Incoming(*f)));
        findings.extend(b.findings.iter().map(|f| PairFinding::Candidate(*f)));
        if x.rule != Some(Rule::SameLocalId) {
            if x.sex_conflict {
                findings.push(PairFinding::SexConflict);
            }
            if x.dob_conflict {
                findings.push(PairFinding::BirthDateConflict);
            }
            if x.twin {
                findings.push(PairFinding::TwinPattern);
            }
            if x.household {
                findings.push(PairFinding::HouseholdPattern);
            }
            if x.comparison.shared_id_ignored {
                findings.push(PairFinding::SharedIdIgnored);
            }
        }
        (contributions, findings)
    }

    /// Grades a pair: rules, score and guards, without the explanation.
    fn assess(&self, a: &NormalizedPerson, b: &NormalizedPerson) -> Assessment {
        let cmp = compare(a, b);
        let score = self.score_value(&cmp.vector);
        let same_record =
            !a.local_id.is_empty() && a.facility == b.facility && a.local_id == b.local_id;
        if same_record {
            return Assessment {
                grade: Grade::Certain,
                score,
                rule: Some(Rule::SameLocalId),
                comparison: cmp,
                sex_conflict: false,
                dob_conflict: false,
                twin: false,
                household: false,
            };
        }
        let name = cmp.vector.get(FieldKind::Name);
        let sex_conflict = cmp.vector.get(FieldKind::Sex) == Some(Level::Disagree);
        let dob_conflict = cmp.vector.get(FieldKind::BirthDate) == Some(Level::Disagree);
        let id_agrees = [
            FieldKind::ResidentId,
            FieldKind::Insurance,
            FieldKind::NationalId,
        ]
        .iter()
        .any(|f| matches!(cmp.vector.get(*f), Some(Level::Exact | Level::Close)));
        let near_birth = matches!(
            cmp.vector.get(FieldKind::BirthDate),
            Some(Level::Exact | Level::Swapped | Level::Typo | Level::OneOff)
        );
        let hanzi = both_have_hanzi(a, b);
        // Boy–girl twins may have homophone names (许晶/许静): different hanzi, the same
        // pinyin, and the sexes conflict.
        let homophone_other_sex = sex_conflict && name == Some(Level::Phonetic) && hanzi;
        // The twin pattern, with or without an agreeing identifier: a twin's record is
        // exactly this, and so is a duplicate whose given name was replaced (FEBRL). An
        // agreeing id speaks for the duplicate but is no proof (parents hand one twin's 医保
        // card in for both; a mistyped id may land on the twin's), so the pattern is never
        // `certain` and its score decides between `probable` (a human looks) and less.
        let twin = near_birth && (cmp.given_names_differ || homophone_other_sex);
        // The whole name agrees (the same hanzi, or the same or nearly the same letters
        // when neither side has hanzi): a different birth date is then more likely a wrong
        // date than a parent or sibling, whose given names differ.
        let whole_name_agrees = match name {
            Some(Level::Exact) => true,
            Some(Level::Fuzzy) => {
                !a.names.iter().any(|n| n.hanzi.is_some())
                    && !b.names.iter().any(|n| n.hanzi.is_some())
            }
            _ => false,
        };
        // A parent, child or sibling born apart: a clearly different birth date under
        // another name, no agreeing identifier. What agrees is the household's (phone,
        // address, family name), not the person's.
        let household = dob_conflict && !id_agrees && !whole_name_agrees;
        // The resident-id rule needs the same name, so it never meets the twin pattern
        // (whose given names differ); the other rules and the score threshold would.
        let blocked = sex_conflict || dob_conflict || twin;
        let mut rule = None;
        if !blocked {
            let hanzi_or_latin_exact = match name {
                Some(Level::Exact) => true,
                // One side has only pinyin/Latin: the same letters count as the same name.
                Some(Level::Phonetic) => !hanzi,
                _ => false,
            };
            if cmp.resident_id_trusted_equal && hanzi_or_latin_exact {
                rule = Some(Rule::ResidentIdAndName);
            } else if cmp.insurance_equal
                && matches!(
                    name,
                    None | Some(Level::Exact | Level::Phonetic | Level::Fuzzy)
                )
            {
                rule = Some(Rule::InsuranceNumber);
            } else if let Some(t) = self.thresholds.auto_link
                && score >= t
            {
                rule = Some(Rule::AutoLinkThreshold);
            }
        }
        let mut grade = if rule.is_some() {
            Grade::Certain
        } else if score >= self.thresholds.probable {
            Grade::Probable
        } else if score >= self.thresholds.possible {
            Grade::Possible
        } else {
            Grade::New
        };
        // Nothing but the household agrees: kept out of the `probable` queue.
        if household && grade < Grade::Possible {
            grade = Grade::Possible;
        }
        Assessment {
            grade,
            score,
            rule,
            comparison: cmp,
            sex_conflict,
            dob_conflict,
            twin,
            household,
        }
    }

    /// Comparison vectors of every blocked candidate pair of `people` against `index`
    /// (excluding a record with itself): the input of [`super::estimate_em`].
    pub fn comparison_vectors(
        &self,
        people: &[NormalizedPerson],
        index: &impl CandidateIndex,
    ) -> Vec<ComparisonVector> {
        let mut out = Vec::new();
        for p in people {
            for c in index.candidates(&blocking_keys(p), self.candidate_limit) {
                if c.person.facility == p.facility && c.person.local_id == p.local_id {
                    continue;
                }
                out.push(compare(p, &c.person).vector);
            }
        }
        out
    }
}

fn both_have_hanzi(a: &NormalizedPerson, b: &NormalizedPerson) -> bool {
    a.names.iter().any(|n| n.hanzi.is_some()) && b.names.iter().any(|n| n.hanzi.is_some())
}

/// The grade of one record pair without its explanation (what [`Matcher::decide`] computes
/// for every candidate record).
#[derive(Clone, Debug)]
struct Assessment {
    grade: Grade,
    score: f64,
    rule: Option<Rule>,
    comparison: Comparison,
    sex_conflict: bool,
    dob_conflict: bool,
    twin: bool,
    household: bool,
}

/// The grade of one record pair, with its explanation.
#[derive(Clone, Debug, PartialEq)]
pub struct PairJudgement {
    /// The grade.
    pub grade: Grade,
    /// The score.
    pub score: f64,
    /// Per-field contributions.
    pub contributions: Vec<Contribution>,
    /// The rule that fired.
    pub rule: Option<Rule>,
    /// Guards and findings.
    pub findings: Vec<PairFinding>,
    /// The comparison behind it.
    pub comparison: Comparison,
}

/// Comparison vectors of `pairs` random record pairs (seeded): the input of
/// [`super::weights::u_from_random_pairs`]. Pairs of a record with itself are skipped.
pub fn random_pair_vectors(
    people: &[NormalizedPerson],
    pairs: usize,
    seed: u64,
) -> Vec<ComparisonVector> {
    let mut rng = super::synth::SplitMix64::new(seed);
    let mut out = Vec::with_capacity(pairs);
    if people.len() < 2 {
        return out;
    }
    while out.len() < pairs {
        let (i, j) = (rng.below(people.len()), rng.below(people.len()));
        if let (Some(a), Some(b)) = (people.get(i), people.get(j))
            && i != j
        {
            out.push(compare(a, b).vector);
        }
    }
    out
}
