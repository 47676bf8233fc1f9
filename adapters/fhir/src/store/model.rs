//! Every resource the `fhir_store` sink writes is read with fhir-sdk's model of its type
//! first (R4B, wire-identical to R4 for these types' elements the facade indexes), so a
//! resource that would not read back is refused with the element path, never stored.

use fhir_sdk::r4b::resources::{
    Appointment, DiagnosticReport, DocumentReference, Encounter, Observation, Patient,
    ServiceRequest,
};
use serde_json::Value;

fn read<T: serde::de::DeserializeOwned>(v: &Value) -> Result<(), String> {
    serde_path_to_error::deserialize::<_, T>(v)
        .map(|_| ())
        .map_err(|e| crate::FhirError::from_json(e.path().to_string(), e.inner()).to_string())
}

/// Reads `resource` as a `resource_type` with the model; `Err` names the element and the
/// problem, never a value (a resource is patient data).
pub fn check_resource(resource_type: &str, resource: &Value) -> Result<(), String> {
    match resource_type {
        "Patient" => read::<Patient>(resource),
        "Observation" => read::<Observation>(resource),
        "DiagnosticReport" => read::<DiagnosticReport>(resource),
        "ServiceRequest" => read::<ServiceRequest>(resource),
        "Encounter" => read::<Encounter>(resource),
        "Appointment" => read::<Appointment>(resource),
        "DocumentReference" => read::<DocumentReference>(resource),
        other => Err(format!("{other} is not stored here")),
    }
}
