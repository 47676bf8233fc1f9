//! Patient identity matching (STANDARDS MATCH-05; feeds PIX, IHE-01, and PDQ `$match`,
//! IHE-02): which master person an incoming facility record belongs to, with a grade and an
//! explanation.
//!
//! The flow: [`Demographics`] (from an ADT [`crate::patient::PatientRecord`] or built
//! directly) → [`normalize`] → [`blocking_keys`] → [`CandidateIndex::candidates`] (the store's
//! SQL, or [`MemoryIndex`]) → [`Matcher::decide`]: deterministic rules, a Fellegi–Sunter
//! score with m/u [`Weights`] (defaults, or [`estimate_em`] from the data), grading by
//! [`Thresholds`], safety guards, and per-field contributions for the explanation.
//!
//! Only `certain` links automatically; by default only a deterministic rule makes a
//! `certain` (a facility may enable [`Thresholds::auto_link`]). `probable` goes to a human.
//!
//! [`synth`] generates labelled Chinese test populations and [`eval`] scores decisions
//! against their truth.

pub mod blocking;
pub mod compare;
pub mod demographics;
pub mod eval;
pub mod febrl;
pub mod matcher;
pub mod normalize;
pub mod synth;
pub mod t2s;
pub mod weights;

pub use blocking::{
    BlockingKey, CandidateIndex, IndexedIdentity, MemoryIndex, PersonId, blocking_keys,
};
pub use compare::{ComparisonVector, FieldKind, Level, compare};
pub use demographics::{
    BirthDate, Demographics, OtherId, PersonName, PostalAddress, parse_birth_date,
};
pub use matcher::{
    Candidate, Contribution, Grade, MatchDecision, Matcher, PairFinding, RecordMatch, Rule,
    random_pair_vectors,
};
pub use normalize::{NormalizedPerson, RecordFinding, normalize};
pub use weights::{
    EmEstimate, EmOptions, LevelWeight, Thresholds, Weights, WeightsError, estimate_em,
    estimate_em_with, monotone_levels, u_from_random_pairs,
};
