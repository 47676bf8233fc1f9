//! Evaluation of linkage against a known truth: records arrive one at a time, each is decided
//! against the index of those before it and then filed (under the person it was linked to
//! automatically, else a new person), exactly as the engine would run.
//!
//! A *predicted link* is a pair (incoming record, earlier record) whose person the decision
//! graded `certain` or `probable`; a *true link* is a pair of records of the same real person.
//! Precision, recall and F1 are over pairs. Auto-links (`certain`) are counted apart, with
//! those joining twins or a parent and child, which must never happen. Twins and parent and
//! child may reach `probable` (a human decides), but only with the guard's finding in the
//! explanation (`twin_pattern`, `household_pattern`), so the reviewer sees why.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::blocking::MemoryIndex;
use super::demographics::Demographics;
use super::matcher::{Grade, MatchDecision, Matcher, PairFinding};
use super::normalize::normalize;
use super::synth::{Relation, Truth, relation};

/// The figures of one evaluation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Records decided.
    pub decided: u64,
    /// Pairs of records of the same person where at least one was decided.
    pub true_pairs: u64,
    /// Pairs graded certain or probable.
    pub predicted_pairs: u64,
    /// Predicted pairs that are true.
    pub true_positives: u64,
    /// Pairs graded certain (auto-links).
    pub certain_pairs: u64,
    /// Certain pairs that are true.
    pub certain_true: u64,
    /// Certain pairs between twins.
    pub twin_auto_links: u64,
    /// Certain pairs between a parent and their child.
    pub parent_child_auto_links: u64,
    /// Predicted (certain or probable) pairs between twins.
    pub twin_predicted: u64,
    /// Predicted pairs between a parent and their child.
    pub parent_child_predicted: u64,
    /// Certain pairs between siblings (not twins).
    #[serde(default)]
    pub sibling_auto_links: u64,
    /// Predicted pairs between siblings (not twins).
    #[serde(default)]
    pub sibling_predicted: u64,
    /// Predicted pairs between twins, a parent and child, or siblings whose explanation
    /// names neither guard ([`PairFinding::TwinPattern`], [`PairFinding::HouseholdPattern`]):
    /// queued without telling the reviewer why they may be two people.
    #[serde(default)]
    pub guard_unexplained: u64,
}

#[allow(clippy::cast_precision_loss)]
fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 1.0 } else { a as f64 / b as f64 }
}

impl Evaluation {
    /// True positives / predicted pairs (1 when nothing was predicted).
    pub fn precision(&self) -> f64 {
        ratio(self.true_positives, self.predicted_pairs)
    }

    /// True positives / true pairs (1 when there are none).
    pub fn recall(&self) -> f64 {
        ratio(self.true_positives, self.true_pairs)
    }

    /// The harmonic mean of precision and recall.
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }

    /// True certain pairs / certain pairs (1 when there are none).
    pub fn certain_precision(&self) -> f64 {
        ratio(self.certain_true, self.certain_pairs)
    }
}

/// Runs records through a matcher and an index, counting against their truth.
#[derive(Debug)]
pub struct Evaluator<'m> {
    matcher: &'m Matcher,
    /// The index records are filed in.
    pub index: MemoryIndex,
    truth: HashMap<(String, String), Truth>,
    records_per_person: HashMap<u64, (u64, u64)>,
    eval: Evaluation,
}

impl<'m> Evaluator<'m> {
    /// An evaluator with an empty index.
    pub fn new(matcher: &'m Matcher) -> Evaluator<'m> {
        Evaluator {
            matcher,
            index: MemoryIndex::new(),
            truth: HashMap::new(),
            records_per_person: HashMap::new(),
            eval: Evaluation::default(),
        }
    }

    /// Files a record without deciding it (an initial import as separate persons); pairs
    /// among preloaded records are not evaluated.
    pub fn preload(&mut self, d: &Demographics, truth: Truth) {
        let id = self.index.new_person_id();
        self.index.insert(id, normalize(d));
        self.truth
            .insert((d.facility.clone(), d.local_id.clone()), truth);
        self.records_per_person.entry(truth.person).or_default().1 += 1;
    }

    /// Decides a record against everything filed so far, counts, then files it.
    pub fn decide(&mut self, d: &Demographics, truth: Truth) -> MatchDecision {
        let incoming = normalize(d);
        let decision = self.matcher.decide_normalized(&incoming, &self.index);
        self.eval.decided += 1;
        for c in &decision.candidates {
            if c.grade > Grade::Probable {
                continue;
            }
            for r in &c.records {
                let Some(other) = self.truth.get(&(r.facility.clone(), r.local_id.clone())) else {
                    continue;
                };
                let rel = relation(&truth, other);
                self.eval.predicted_pairs += 1;
                if rel == Relation::Same {
                    self.eval.true_positives += 1;
                }
                if c.grade == Grade::Certain {
                    self.eval.certain_pairs += 1;
                    match rel {
                        Relation::Same => self.eval.certain_true += 1,
                        Relation::Twins => self.eval.twin_auto_links += 1,
                        Relation::ParentChild => self.eval.parent_child_auto_links += 1,
                        Relation::Siblings => self.eval.sibling_auto_links += 1,
                        Relation::Other => {}
                    }
                }
                match rel {
                    Relation::Twins => self.eval.twin_predicted += 1,
                    Relation::ParentChild => self.eval.parent_child_predicted += 1,
                    Relation::Siblings => self.eval.sibling_predicted += 1,
                    Relation::Same | Relation::Other => continue,
                }
                let explained = c
                    .findings
                    .iter()
                    .any(|f| matches!(f, PairFinding::TwinPattern | PairFinding::HouseholdPattern));
                if !explained {
                    self.eval.guard_unexplained += 1;
                }
            }
        }
        let person = match decision.auto_link() {
            Some(p) => p,
            None => self.index.new_person_id(),
        };
        self.index.insert(person, incoming);
        self.truth
            .insert((d.facility.clone(), d.local_id.clone()), truth);
        self.records_per_person.entry(truth.person).or_default().0 += 1;
        decision
    }

    /// The figures so far.
    pub fn evaluation(&self) -> Evaluation {
        let mut e = self.eval;
        e.true_pairs = self
            .records_per_person
            .values()
            .map(|&(decided, preloaded)| {
                let n = decided + preloaded;
                n * n.saturating_sub(1) / 2 - preloaded * preloaded.saturating_sub(1) / 2
            })
            .sum();
        e
    }
}
