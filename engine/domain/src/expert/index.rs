//! Where candidates come from: the [`ExpertIndex`] port (the store implements it with SQL:
//! pre-filter by department and ICD category from an index) and [`MemoryExpertIndex`], the pure
//! in-memory implementation with hash indexes, for tests, the bench and small deployments.

use std::collections::HashMap;

use super::case::CaseRequest;
use super::model::{Agreement, Expert, ExpertRegistry, Load, Presence};

/// The candidates of one lookup: borrowed from an in-memory directory, or owned (built by a
/// store query). Matching clones only the eligible ones (into the decision's snapshot).
#[derive(Debug)]
pub enum Candidates<'a> {
    /// References into the index.
    Borrowed(Vec<&'a Expert>),
    /// Owned experts.
    Owned(Vec<Expert>),
}

impl Candidates<'_> {
    /// The experts, in the index's order.
    pub fn iter(&self) -> Box<dyn Iterator<Item = &Expert> + '_> {
        match self {
            Candidates::Borrowed(v) => Box::new(v.iter().copied()),
            Candidates::Owned(v) => Box::new(v.iter()),
        }
    }

    /// How many.
    pub fn len(&self) -> usize {
        match self {
            Candidates::Borrowed(v) => v.len(),
            Candidates::Owned(v) => v.len(),
        }
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The source of candidate experts and of the requesting facility's agreements.
///
/// Contract: `candidates` returns at least every expert that could pass the hard filters for
/// the case (same department or below it; with an ICD-10 code, expertise in its category). It
/// may return more (the filters exclude them, with reasons), but never fewer: an expert the
/// index leaves out is never considered and appears in no exclusion. Each expert once, in a
/// stable order (the order does not change the ranking, but a stable one keeps exclusions
/// lists comparable).
pub trait ExpertIndex {
    /// The candidate experts for the case, with their current state (presence, load,
    /// response history).
    fn candidates(&self, case: &CaseRequest) -> Vec<Expert>;

    /// The cooperation agreements whose requesting facility is `requesting_facility`, in force
    /// or not (the filters check the dates against `now` and record expired ones).
    fn agreements(&self, requesting_facility: &str) -> Vec<Agreement>;

    /// The candidates without copying them when the index holds them in memory; what
    /// [`match_experts`](super::match_experts) calls. The default wraps
    /// [`candidates`](ExpertIndex::candidates) (right for a store that builds experts from
    /// rows anyway).
    fn candidate_refs(&self, case: &CaseRequest) -> Candidates<'_> {
        Candidates::Owned(self.candidates(case))
    }
}

/// An in-memory directory: experts indexed by department (each dotted ancestor too: an expert
/// in `03.02` is found under `03`) and by ICD-10 category of their expertise, so that a lookup
/// touches only the experts of the case's department and category instead of scanning all.
#[derive(Clone, Debug, Default)]
pub struct MemoryExpertIndex {
    experts: Vec<Expert>,
    by_id: HashMap<String, usize>,
    by_department: HashMap<String, Vec<usize>>,
    by_category: HashMap<String, Vec<usize>>,
    agreements: HashMap<String, Vec<Agreement>>,
}

impl MemoryExpertIndex {
    /// Builds the indexes. A later expert with an id already seen replaces the earlier one.
    pub fn new(experts: Vec<Expert>, agreements: Vec<Agreement>) -> MemoryExpertIndex {
        let mut unique: Vec<Expert> = Vec::with_capacity(experts.len());
        let mut by_id = HashMap::with_capacity(experts.len());
        for e in experts {
            match by_id.get(&e.id) {
                Some(&i) => unique[i] = e,
                None => {
                    by_id.insert(e.id.clone(), unique.len());
                    unique.push(e);
                }
            }
        }
        let mut by_department: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_category: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, e) in unique.iter().enumerate() {
            let mut keys: Vec<&str> = Vec::new();
            for d in &e.departments {
                let d = d.trim();
                keys.push(d);
                // Every dotted ancestor: 03.02.01 → 03.02, 03.
                let mut rest = d;
                while let Some((head, _)) = rest.rsplit_once('.') {
                    keys.push(head);
                    rest = head;
                }
            }
            keys.sort_unstable();
            keys.dedup();
            for k in keys {
                by_department.entry(k.to_owned()).or_default().push(i);
            }
            let mut cats: Vec<&str> = e.expertise.iter().map(|c| c.category()).collect();
            cats.sort_unstable();
            cats.dedup();
            for c in cats {
                by_category.entry(c.to_owned()).or_default().push(i);
            }
        }
        let mut by_facility: HashMap<String, Vec<Agreement>> = HashMap::new();
        for a in agreements {
            by_facility
                .entry(a.requesting_facility.trim().to_owned())
                .or_default()
                .push(a);
        }
        MemoryExpertIndex {
            experts: unique,
            by_id,
            by_department,
            by_category,
            agreements: by_facility,
        }
    }

    /// The index of a registry file's experts and agreements.
    pub fn from_registry(registry: ExpertRegistry) -> MemoryExpertIndex {
        MemoryExpertIndex::new(registry.experts, registry.agreements)
    }

    /// All experts, in insertion order.
    pub fn experts(&self) -> &[Expert] {
        &self.experts
    }

    /// One expert by id.
    pub fn get(&self, id: &str) -> Option<&Expert> {
        self.by_id.get(id).map(|&i| &self.experts[i])
    }

    /// Replaces an expert's load (runtime state; the indexes do not depend on it). False when
    /// the id is unknown.
    pub fn set_load(&mut self, id: &str, load: Load) -> bool {
        self.state_mut(id).map(|e| e.load = load).is_some()
    }

    /// Replaces an expert's presence (runtime state). False when the id is unknown.
    pub fn set_presence(&mut self, id: &str, presence: Presence) -> bool {
        self.state_mut(id).map(|e| e.presence = presence).is_some()
    }

    fn state_mut(&mut self, id: &str) -> Option<&mut Expert> {
        let i = *self.by_id.get(id)?;
        self.experts.get_mut(i)
    }

    /// The positions of the candidates, ascending.
    fn candidate_positions(&self, case: &CaseRequest) -> Vec<usize> {
        let Some(dept) = self.by_department.get(case.department.trim()) else {
            return Vec::new();
        };
        let Some(code) = &case.icd10 else {
            return dept.clone();
        };
        let Some(cat) = self.by_category.get(code.category()) else {
            return Vec::new();
        };
        // Both lists are ascending: merge-intersect.
        let (mut a, mut b) = (dept.iter().peekable(), cat.iter().peekable());
        let mut out = Vec::with_capacity(dept.len().min(cat.len()));
        while let (Some(&&x), Some(&&y)) = (a.peek(), b.peek()) {
            match x.cmp(&y) {
                std::cmp::Ordering::Less => {
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    out.push(x);
                    a.next();
                    b.next();
                }
            }
        }
        out
    }
}

impl ExpertIndex for MemoryExpertIndex {
    fn candidates(&self, case: &CaseRequest) -> Vec<Expert> {
        self.candidate_positions(case)
            .into_iter()
            .map(|i| self.experts[i].clone())
            .collect()
    }

    fn candidate_refs(&self, case: &CaseRequest) -> Candidates<'_> {
        Candidates::Borrowed(
            self.candidate_positions(case)
                .into_iter()
                .map(|i| &self.experts[i])
                .collect(),
        )
    }

    fn agreements(&self, requesting_facility: &str) -> Vec<Agreement> {
        self.agreements
            .get(requesting_facility.trim())
            .cloned()
            .unwrap_or_default()
    }
}

impl<T: ExpertIndex + ?Sized> ExpertIndex for &T {
    fn candidates(&self, case: &CaseRequest) -> Vec<Expert> {
        (**self).candidates(case)
    }
    fn agreements(&self, requesting_facility: &str) -> Vec<Agreement> {
        (**self).agreements(requesting_facility)
    }
    fn candidate_refs(&self, case: &CaseRequest) -> Candidates<'_> {
        (**self).candidate_refs(case)
    }
}
