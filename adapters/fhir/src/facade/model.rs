//! The facade writes its resources as JSON; this reads any of them back through fhir-sdk's
//! model (R4B) and writes it again, so a test can prove nothing the facade serves is lost or
//! unknown to the model (an element the model does not have would be dropped and the JSON
//! would differ). Non-generic, so callers do not compile the model's serde code again.

use fhir_sdk::r4b::resources::Resource;
use serde_json::Value;

/// Reads `resource` with the model and compares what the model writes back; `Err` names the
/// first difference (a path and both values) or the element that does not read.
pub fn round_trip(resource: &Value) -> Result<(), String> {
    let parsed: Resource = serde_path_to_error::deserialize(resource)
        .map_err(|e| format!("{}: does not read: {}", e.path(), e.inner()))?;
    let back = serde_json::to_value(&parsed).map_err(|e| format!("does not write: {e}"))?;
    match first_difference(resource, &back, String::new()) {
        None => Ok(()),
        Some(d) => Err(d),
    }
}

fn first_difference(a: &Value, b: &Value, path: String) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                let p = format!("{path}.{k}");
                match y.get(k) {
                    None => return Some(format!("{p}: dropped by the model ({v})")),
                    Some(w) => {
                        if let Some(d) = first_difference(v, w, p) {
                            return Some(d);
                        }
                    }
                }
            }
            y.keys()
                .find(|k| !x.contains_key(*k))
                .map(|k| format!("{path}.{k}: added by the model"))
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Some(format!("{path}: {} items became {}", x.len(), y.len()));
            }
            x.iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (v, w))| first_difference(v, w, format!("{path}[{i}]")))
        }
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => None,
        _ if a == b => None,
        _ => Some(format!("{path}: {a} became {b}")),
    }
}
