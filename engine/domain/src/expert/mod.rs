//! Explainable expert matching for remote consultations (STANDARDS MATCH-01, MATCH-02,
//! MATCH-30, MATCH-31; CN-02, CN-06, CN-11, CN-42). Pure: the store, the plugin host and the
//! clock reach it through parameters and the [`ExpertIndex`] and [`Scorer`] ports.
//!
//! The flow of [`match_experts`]:
//!
//! 1. [`ExpertIndex::candidates`] narrows the directory to the case's department and ICD-10
//!    category (the store's registry copy and [`MemoryExpertIndex`] with a [`CardIndex`]:
//!    each expert as an [`ExpertCard`], the facts the filters read prepared once, [`card`]);
//! 2. the hard filters ([`filter`]) run on every candidate; each exclusion keeps every failed
//!    constraint as a [`ReasonCode`] and a text;
//! 3. [`features`] turns the case and each eligible expert into named features (the case
//!    carries no protected attribute, [`case`]);
//! 4. the [`Scorer`] (a WASM plugin through the host, or [`DefaultScorer`]) scores them all in
//!    one call; when it fails, [`DefaultScorer`] scores and the decision says why;
//! 5. ranking: score, then lower load, then a seeded hash, so the same inputs give the same
//!    order and equal experts share the work;
//! 6. the [`MatchDecision`] keeps the inputs, the ranking with contributions, the exclusions,
//!    the selection and the scorer identity; [`MatchDecision::replay`] re-runs it and
//!    [`MatchDecision::override_with`] records a coordinator's override.
//!
//! [`fairness`] reports how work and waiting are spread (MATCH-30); [`import`] reads the CSV
//! registry, [`model`] documents the YAML one.

pub mod card;
pub mod case;
pub mod config;
pub mod fairness;
pub mod features;
pub mod filter;
pub mod icd;
pub mod import;
pub mod index;
pub mod matching;
pub mod model;
pub mod overrides;
pub mod schedule;
pub mod scorer;
pub mod synth;

#[cfg(test)]
mod tests;

pub use card::{ExpertCard, department_key_iter, department_keys, expertise_keys};
pub use case::{CaseError, CaseRequest, TimeWindow, Urgency};
pub use config::{ConfigError, MatchConfig};
pub use fairness::{
    AcceptTime, AssignmentCount, DepartmentFairness, FacilityLatency, FairnessReport,
    fairness_report, gini, top_decile_share,
};
pub use features::{Feature, case_features, expert_features};
pub use filter::{CaseFilter, Eligible, Reason, ReasonCode, check_expert};
pub use icd::{IcdCode, IcdError, Specificity};
pub use import::{ImportError, ImportProblem, parse_csv};
pub use index::{Candidates, CardIndex, ExpertIndex, MemoryExpertIndex};
pub use matching::{
    Exclusion, Fallback, MatchDecision, MatchError, RankedCandidate, Replay, Snapshot,
    match_experts, tie_break_key,
};
pub use model::{
    Agreement, AgreementKind, ClockTime, Days, Expert, ExpertRegistry, Load, Presence,
    ResponseHistory, Schedule, Title, WeeklyWindow,
};
pub use overrides::{Override, OverrideError, Standing};
pub use scorer::{Contribution, DefaultScorer, Score, Scorer, ScorerError, ScorerIdentity};
