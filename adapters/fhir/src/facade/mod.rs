//! The FHIR R4 facade at `/fhir/r4` (issue 16 items 3 and 5; STANDARDS FHIR-01, FHIR-02,
//! FHIR-10, FHIR-11, FHIR-21, FHIR-22, IHE-01, IHE-02): the engine's own data as FHIR R4
//! (4.0.1) resources — not a generic FHIR server.
//!
//! * `metadata`: the CapabilityStatement, made from [`table::TABLE`] like the routes
//!   ([`capability`]); public, as SMART clients expect.
//! * read, vread, search with the FHIR-21 parameters, `searchset` Bundles with `_count` and
//!   `next` links, `_include`/`_revinclude` where listed; `ETag: W/"versionId"`; every error
//!   an OperationOutcome ([`outcome`]).
//! * the data: stored resources (the `fhir_store` sink, [`stored`]); the consultation as
//!   Task + ServiceRequest + Encounter (class VR) + the signed opinion's DiagnosticReport +
//!   Provenance ([`consult`]); `PUT Task/{id}` moves it along FHIR-10 under `If-Match`
//!   ([`task`]); the identity index's persons as Patients with `$match` and `$ihe-pix`, and
//!   `$everything` ([`patient`]).
//!
//! **Security.** Every route is merged into the engine's router before its guard
//! ([`huizhen_core::extensions::HttpRoutes`]) and listed in the engine's route table
//! ([`huizhen_core::security::ROUTES`], with the action [`table::TABLE`] gives it; a unit test
//! holds the two equal). Handlers apply the facility scope like the rest of the API; an expert
//! reads clinical data only of the patients of consultations they own or owned (FHIR-22), and
//! every read and search is audited (the search with its parameter names, not its values).

mod audit;
pub mod capability;
mod care;
mod consult;
mod context;
mod directory;
mod everything;
pub mod index;
pub mod model;
pub mod outcome;
mod patient;
mod routes;
mod schedule;
pub mod search;
mod stored;
pub mod table;
mod task;
#[cfg(test)]
mod tests;

pub use routes::{route_rows, routes};

inventory::submit! {
    huizhen_core::extensions::HttpRoutes {
        name: "fhir facade",
        routes,
    }
}
