//! Helpers shared by the integration tests of huizhen-fhir.

pub mod validate;
