//! FHIR JSON through the fhir-sdk R4B model, behind non-generic functions (the model's serde
//! code is monomorphised here once, not in every caller; lib.rs says why).
//!
//! The engine speaks FHIR R4 4.0.1 on the wire (FHIR-01) and holds resources in the R4B
//! model: for the resources it serves and emits the two are the same JSON, which
//! `tests/r4_examples.rs` proves over the official R4 examples. The exceptions, and how each
//! is handled, are listed in docs/fhir.md ("R4 on the wire, R4B in the model").

use fhir_sdk::r4b::resources::Resource;
use serde_json::Value;

use crate::FhirError;

/// Reads any resource (its `resourceType` picks the model type). Errors name the element path.
pub fn parse_resource(json: &str) -> Result<Resource, FhirError> {
    let mut de = serde_json::Deserializer::from_str(json);
    let r: Resource = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| FhirError::from_json(e.path().to_string(), e.inner()))?;
    de.end()
        .map_err(|e| FhirError::from_json(String::new(), &e))?;
    Ok(r)
}

/// Reads any resource from a JSON value.
pub fn resource_from_value(value: Value) -> Result<Resource, FhirError> {
    serde_path_to_error::deserialize(value)
        .map_err(|e| FhirError::from_json(e.path().to_string(), e.inner()))
}

/// A resource as a JSON value.
pub fn resource_to_value(resource: &Resource) -> Value {
    // The model's Serialize writes into a Value without error (no non-string map keys).
    serde_json::to_value(resource).unwrap_or(Value::Null)
}

/// A resource as JSON text.
pub fn resource_to_vec(resource: &Resource) -> Vec<u8> {
    serde_json::to_vec(resource).unwrap_or_default()
}

/// Parses `value` with the model and writes it back: what the engine would send for what
/// it received.
pub fn round_trip(value: &Value) -> Result<Value, FhirError> {
    let r = resource_from_value(value.clone())?;
    Ok(resource_to_value(&r))
}

/// Where two JSON documents differ, as element paths (`name[0].given[1]`,
/// `valueQuantity.value`) with both sides' JSON types — never their values, which may be
/// patient data. Empty when they are equal.
pub fn differences(want: &Value, got: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff(want, got, String::new(), &mut out);
    out
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "decimal",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn diff(want: &Value, got: &Value, path: String, out: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(vb) => diff(va, vb, p, out),
                    None => out.push(format!("{p}: dropped")),
                }
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                out.push(format!("{p}: added"));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (va, vb)) in a.iter().zip(b).enumerate() {
                diff(va, vb, format!("{path}[{i}]"), out);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            out.push(format!("{path}: {} items became {}", a.len(), b.len()));
        }
        _ if want == got => {}
        _ => out.push(format!(
            "{path}: {} changed (now {})",
            kind(want),
            kind(got)
        )),
    }
}

/// The `resourceType` of a resource.
pub fn resource_type_name(resource: &Resource) -> String {
    resource.resource_type().as_ref().to_owned()
}
