//! The FHIR R4 client (issue 16, item 2): [`http::FhirClient`] (reqwest with rustls/ring,
//! bearer auth, `application/fhir+json; fhirVersion=4.0`, `Retry-After`, OperationOutcome text
//! in errors), the `fhir_poll` source ([`source`]: `_lastUpdated` search from a cursor kept in
//! the store, paging through `next` links, one message per resource version) and the `fhir`
//! sink ([`sink`]: transaction/batch Bundles, update, conditional create; idempotent replays,
//! FHIR-20). The JSON is handled as `serde_json::Value` here: the client moves resources, it
//! does not read them (the fhir-sdk model is used where a value must be understood).

pub mod http;
pub mod sink;
pub mod source;

pub use http::{ClientError, ClientOptions, FhirClient};
