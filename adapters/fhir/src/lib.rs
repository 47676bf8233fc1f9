//! Huizhen's FHIR adapter: FHIR R4/R4B resources, read with the fhir-sdk model (R4B, models
//! only), turned into the domain's types.
//!
//! Today it holds [`patient`]: one FHIR `Patient` resource (JSON) into the matcher's
//! [`huizhen_domain::identity::Demographics`], used by `huizhen patients import`. The FHIR
//! issue adds the REST client, the FHIR sink and the facade here, one module each, beside
//! `patient`.
//!
//! **Why one crate owns the model.** fhir-model is the slowest crate of the stack to compile
//! (≈100 s debug, ≈200 s release; reference/CRATES.md §3.2–3.3), and every crate that calls
//! `serde_json::from_*::<Patient>` compiles the model's serde code again in release. So the
//! deserialisation happens here, behind non-generic functions (`&str` in, domain type or
//! [`FhirError`] out); other crates depend on this one, not on fhir-sdk.
//!
//! **Errors** name the element path (`name[0].given`, `birthDate`, `resourceType`) and say
//! what is wrong, never the value: a FHIR resource is patient data.

pub mod error;
pub mod facade;
pub mod patient;
pub mod store;

pub use error::FhirError;
pub use patient::{demographics, parse_patient, patient_demographics};

/// The fhir-sdk R4B model this crate reads (re-exported so callers name the same types).
pub use fhir_sdk::r4b;
