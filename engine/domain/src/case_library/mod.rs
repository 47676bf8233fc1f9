//! The case library (issue 15 item 8): completed consultations, de-identified, searchable by
//! ICD-10 code prefix, department and flags (misdiagnosis, rare disease, emergency), and
//! recommended to a doctor with the reasons.
//!
//! * [`deidentify`] turns a [`CompletedCase`] into a [`CaseRecord`]: no name, identity
//!   number, phone or address; an [`AgeBand`] instead of the birth date; free text redacted
//!   ([`redact_text`]);
//! * [`CaseLibrary::search`] filters by [`CaseQuery`], most recent first;
//! * [`CaseLibrary::recommend`] scores each case for a [`DoctorProfile`]:
//!   `specialty × w_s + code × w_c + recency × w_r` where specialty is 1 (the case's
//!   department is the doctor's or below it) or 0.5 (same top-level department), code is 1
//!   (same code), 0.6 (same category) or 0.3 (same ICD-10 chapter, [`similarity`]), and
//!   recency is `0.5^(age in days / half-life)`. Each [`Recommendation`] lists its
//!   [`Reason`]s with their contributions; ties go by case id.
//!
//! Pure: the store loads the records; `now` is a parameter.

mod deid;
mod from_consultation;
mod library;
pub mod similarity;

#[cfg(test)]
mod tests;

pub use deid::{
    AgeBand, CaseFlags, CaseRecord, CompletedCase, DeidError, PatientFacts, deidentify,
    redact_digit_runs, redact_text,
};
pub use from_consultation::library_record;
pub use library::{
    CaseLibrary, CaseLibraryError, CaseQuery, DoctorProfile, Reason, ReasonKind, RecommendQuery,
    RecommendWeights, Recommendation,
};
pub use similarity::{CodeMatch, best_match, chapter};
