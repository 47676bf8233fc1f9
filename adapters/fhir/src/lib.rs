//! Huizhen's FHIR adapter: FHIR R4 on the wire, held in the fhir-sdk R4B model (models and
//! their builders, not its client).
//!
//! * [`patient`]: one FHIR `Patient` resource (JSON) into the matcher's
//!   [`huizhen_domain::identity::Demographics`], used by `huizhen patients import`;
//! * [`store`]: the `fhir_store` sink, a transaction Bundle into the engine's FHIR resource
//!   store with FHIR-20 conditional semantics;
//! * [`facade`]: the FHIR R4 facade at `/fhir/r4` over the store and the engine's own data
//!   (consultations, identity index, registry, bookings, prescriptions, audit trail),
//!   registered into the engine's router and route table (docs/fhir.md).
//! * [`convert`]: the `hl7v2_to_fhir` step (HL7 v2 → FHIR R4 transaction Bundles) and the R4
//!   wire functions;
//! * [`client`]: the FHIR REST client, the `fhir_poll` source and the `fhir` sink.
//!
//! **Why one crate owns the model.** fhir-model is the slowest crate of the stack to compile
//! (≈100 s debug, ≈200 s release; reference/CRATES.md §3.2–3.3), and every crate that calls
//! `serde_json::from_*::<Patient>` compiles the model's serde code again in release. So the
//! deserialisation happens here, behind non-generic functions (`&str` in, domain type or
//! [`FhirError`] out); other crates depend on this one, not on fhir-sdk.
//!
//! **Errors** name the element path (`name[0].given`, `birthDate`, `resourceType`) and say
//! what is wrong, never the value: a FHIR resource is patient data.

pub mod client;
pub mod convert;
pub mod error;
pub mod facade;
pub mod patient;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::FhirError;
pub use patient::{demographics, parse_patient, patient_demographics};

/// The fhir-sdk R4B model this crate reads (re-exported so callers name the same types).
pub use fhir_sdk::r4b;
