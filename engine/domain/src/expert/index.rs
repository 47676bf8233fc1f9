//! Where candidates come from: the [`ExpertIndex`] port, [`CardIndex`] (experts filed as
//! [`ExpertCard`]s under their department keys and ICD-10 categories: the lookup of the store's
//! registry copy and of [`MemoryExpertIndex`]), and [`MemoryExpertIndex`], the pure in-memory
//! directory for tests, the bench and small deployments.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use super::card::{ExpertCard, Profile, department_key_iter, department_keys, expertise_keys};
use super::case::CaseRequest;
use super::icd::category_bytes;
use super::model::{Agreement, Expert, ExpertRegistry, Load, Presence};

/// The candidates of one lookup. The decision's snapshot keeps the eligible ones: shared
/// candidates (cards, `Arc`s) by reference count, the others by a copy.
#[derive(Debug)]
pub enum Candidates<'a> {
    /// References into the index.
    Borrowed(Vec<&'a Expert>),
    /// Owned experts.
    Owned(Vec<Expert>),
    /// Experts shared with the index: neither the lookup nor the snapshot copies one.
    Shared(Cow<'a, [Arc<Expert>]>),
    /// Cards shared with the index ([`CardIndex::lookup`]): the filters read each expert's
    /// facts from its card, laid out for that, instead of from the expert.
    Cards(Arc<Vec<ExpertCard>>),
}

impl Candidates<'_> {
    /// The experts, in the index's order.
    pub fn iter(&self) -> Box<dyn Iterator<Item = &Expert> + '_> {
        match self {
            Candidates::Borrowed(v) => Box::new(v.iter().copied()),
            Candidates::Owned(v) => Box::new(v.iter()),
            Candidates::Shared(v) => Box::new(v.iter().map(|e| &**e)),
            Candidates::Cards(v) => Box::new(v.iter().map(|c| &**c)),
        }
    }

    /// The expert at position `i`.
    pub fn get(&self, i: usize) -> Option<&Expert> {
        match self {
            Candidates::Borrowed(v) => v.get(i).copied(),
            Candidates::Owned(v) => v.get(i),
            Candidates::Shared(v) => v.get(i).map(|e| &**e),
            Candidates::Cards(v) => v.get(i).map(|c| &**c),
        }
    }

    /// The expert at position `i` to keep (in a decision's snapshot): the index's own when
    /// shared, else a copy.
    pub fn share(&self, i: usize) -> Option<Arc<Expert>> {
        match self {
            Candidates::Shared(v) => v.get(i).cloned(),
            Candidates::Cards(v) => v.get(i).map(|c| c.expert().clone()),
            _ => self.get(i).map(|e| Arc::new(e.clone())),
        }
    }

    /// The card's profile at position `i`, when the candidates are cards.
    pub(crate) fn profile(&self, i: usize) -> Option<&Profile> {
        match self {
            Candidates::Cards(v) => v.get(i).map(ExpertCard::profile),
            _ => None,
        }
    }

    /// True when the candidates are cards (each with its profile).
    pub(crate) fn has_profiles(&self) -> bool {
        matches!(self, Candidates::Cards(_))
    }

    /// How many.
    pub fn len(&self) -> usize {
        match self {
            Candidates::Borrowed(v) => v.len(),
            Candidates::Owned(v) => v.len(),
            Candidates::Shared(v) => v.len(),
            Candidates::Cards(v) => v.len(),
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

/// Experts filed as [`ExpertCard`]s under each department key (each department and its dotted
/// ancestors: an expert in `03.02` is found under `03`) and each ICD-10 category of their
/// expertise, every list sorted by id and shared (`Arc`), so that a lookup touches only the
/// experts of the case's department and category, and one without a code copies nothing.
///
/// The lookup of both the store's registry copy and [`MemoryExpertIndex`], so that they give
/// the same candidates in the same order. Changing a list while a lookup's result still holds
/// it copies that list first.
#[derive(Clone, Debug, Default)]
pub struct CardIndex {
    by_department: HashMap<String, Arc<Vec<ExpertCard>>>,
    by_category: HashMap<String, Arc<Vec<ExpertCard>>>,
}

/// Puts `card` into the id-sorted `list`, replacing the card with its id.
fn file_in(list: &mut Vec<ExpertCard>, card: &ExpertCard) {
    match list.binary_search_by(|c| c.id.as_str().cmp(&card.id)) {
        Ok(i) => list[i] = card.clone(),
        Err(i) => list.insert(i, card.clone()),
    }
}

fn file_under(
    index: &mut HashMap<String, Arc<Vec<ExpertCard>>>,
    keys: Vec<String>,
    card: &ExpertCard,
) {
    for k in keys {
        file_in(Arc::make_mut(index.entry(k).or_default()), card);
    }
}

fn unfile_under(index: &mut HashMap<String, Arc<Vec<ExpertCard>>>, keys: Vec<String>, id: &str) {
    for k in keys {
        let Some(list) = index.get_mut(&k) else {
            continue;
        };
        if let Ok(i) = list.binary_search_by(|c| c.id.as_str().cmp(id)) {
            Arc::make_mut(list).remove(i);
        }
        if list.is_empty() {
            index.remove(&k);
        }
    }
}

/// True when the card is filed under department key `key` (see [`department_keys`]).
fn under_department(card: &ExpertCard, key: &str) -> bool {
    match &card.profile().departments {
        Some(keys) => keys.iter().any(|k| k == key.as_bytes()),
        None => department_key_iter(card).any(|k| k == key),
    }
}

/// True when the card is filed under ICD-10 category `key` (see [`expertise_keys`]).
fn under_category(card: &ExpertCard, key: &str) -> bool {
    match &card.profile().codes {
        Some(codes) => codes.iter().any(|c| category_bytes(c) == key.as_bytes()),
        None => card.expertise.iter().any(|c| c.category() == key),
    }
}

impl CardIndex {
    /// Files `card` under its expert's keys, replacing the card with the same id there. When
    /// the expert's facts (departments, expertise) changed, [`CardIndex::unfile`] the old
    /// expert first.
    pub fn file(&mut self, card: &ExpertCard) {
        file_under(&mut self.by_department, department_keys(card), card);
        file_under(&mut self.by_category, expertise_keys(card), card);
    }

    /// Takes `expert` (as it was filed: its keys come from its facts) out of every list.
    pub fn unfile(&mut self, expert: &Expert) {
        unfile_under(&mut self.by_department, department_keys(expert), &expert.id);
        unfile_under(&mut self.by_category, expertise_keys(expert), &expert.id);
    }

    /// The candidates of `case`, by id: the experts filed under its department and, when it
    /// has an ICD-10 code, under the code's category. Without a code, the department's list
    /// itself (shared); with one, the shorter of the two lists is walked and each of its
    /// experts tested for the other key on its card.
    pub fn lookup(&self, case: &CaseRequest) -> Arc<Vec<ExpertCard>> {
        let department = case.department.trim();
        let Some(dept) = self.by_department.get(department) else {
            return Arc::default();
        };
        let Some(code) = &case.icd10 else {
            return dept.clone();
        };
        let category = code.category();
        let Some(cat) = self.by_category.get(category) else {
            return Arc::default();
        };
        let found: Vec<ExpertCard> = if cat.len() < dept.len() {
            cat.iter()
                .filter(|c| under_department(c, department))
                .cloned()
                .collect()
        } else {
            dept.iter()
                .filter(|c| under_category(c, category))
                .cloned()
                .collect()
        };
        Arc::new(found)
    }

    /// How many lists there are (department keys, categories): for tests and diagnostics.
    pub fn key_counts(&self) -> (usize, usize) {
        (self.by_department.len(), self.by_category.len())
    }
}

/// An in-memory directory: experts filed in a [`CardIndex`], so that a lookup touches only the
/// experts of the case's department and category instead of scanning all. Candidates come in
/// id order.
#[derive(Clone, Debug, Default)]
pub struct MemoryExpertIndex {
    /// Shared with the cards and the snapshots of decisions.
    experts: Vec<Arc<Expert>>,
    by_id: HashMap<String, usize>,
    cards: CardIndex,
    agreements: HashMap<String, Vec<Agreement>>,
}

impl MemoryExpertIndex {
    /// Builds the indexes. A later expert with an id already seen replaces the earlier one.
    pub fn new(experts: Vec<Expert>, agreements: Vec<Agreement>) -> MemoryExpertIndex {
        let mut unique: Vec<Arc<Expert>> = Vec::with_capacity(experts.len());
        let mut by_id = HashMap::with_capacity(experts.len());
        for e in experts.into_iter().map(Arc::new) {
            match by_id.get(&e.id) {
                Some(&i) => unique[i] = e,
                None => {
                    by_id.insert(e.id.clone(), unique.len());
                    unique.push(e);
                }
            }
        }
        let mut cards = CardIndex::default();
        for e in &unique {
            cards.file(&ExpertCard::new(e.clone()));
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
            cards,
            agreements: by_facility,
        }
    }

    /// The index of a registry file's experts and agreements.
    pub fn from_registry(registry: ExpertRegistry) -> MemoryExpertIndex {
        MemoryExpertIndex::new(registry.experts, registry.agreements)
    }

    /// All experts, in insertion order.
    pub fn experts(&self) -> &[Arc<Expert>] {
        &self.experts
    }

    /// One expert by id.
    pub fn get(&self, id: &str) -> Option<&Expert> {
        self.by_id.get(id).map(|&i| &*self.experts[i])
    }

    /// Replaces an expert's load (runtime state; the keys do not depend on it). False when
    /// the id is unknown.
    pub fn set_load(&mut self, id: &str, load: Load) -> bool {
        self.change_state(id, |e| e.load = load)
    }

    /// Replaces an expert's presence (runtime state). False when the id is unknown.
    pub fn set_presence(&mut self, id: &str, presence: Presence) -> bool {
        self.change_state(id, |e| e.presence = presence)
    }

    /// Changes an expert's state (copying it first when a decision's snapshot still shares it)
    /// and files its new card under the same keys.
    fn change_state(&mut self, id: &str, change: impl FnOnce(&mut Expert)) -> bool {
        let Some(e) = self.by_id.get(id).and_then(|&i| self.experts.get_mut(i)) else {
            return false;
        };
        change(Arc::make_mut(e));
        self.cards.file(&ExpertCard::new(e.clone()));
        true
    }
}

impl ExpertIndex for MemoryExpertIndex {
    fn candidates(&self, case: &CaseRequest) -> Vec<Expert> {
        self.cards
            .lookup(case)
            .iter()
            .map(|c| Expert::clone(c))
            .collect()
    }

    fn candidate_refs(&self, case: &CaseRequest) -> Candidates<'_> {
        Candidates::Cards(self.cards.lookup(case))
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
