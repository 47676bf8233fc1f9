//! Huizhen's domain: the patient record, identity numbers and (as it grows) identity matching,
//! expert matching, the consultation workflow and money (billing: fees, coverage, the
//! settlement saga). Pure code: no I/O, no clock read, no
//! async runtime. What it needs from outside (a candidate index, match weights, a scorer) are
//! traits here that the store and the plugin host implement.

pub mod appointment;
pub mod billing;
pub mod case_library;
pub mod compliance;
pub mod consultation;
pub mod datetime;
pub mod expert;
pub mod identity;
pub mod patient;
pub mod prescription;
pub mod resident_id;
pub mod signature;
pub mod stats;
pub mod urgency;
pub mod vitals;

pub use resident_id::check_resident_id;
pub use urgency::Urgency;
