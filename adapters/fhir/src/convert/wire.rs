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
    diff(want, got, String::new(), &mut |p, a, b| {
        out.push(describe(p, a, b))
    });
    out
}

/// A difference between R4 JSON and what the R4B model writes back that is not a loss: the
/// same value in another spelling. docs/fhir.md lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WireException {
    /// `decimal` is an f64 in the model: `100` comes back as `100.0` and `1.50` as `1.5`
    /// (same number; the precision its digits implied is not kept).
    Decimal,
    /// `dateTime`/`instant` with an offset of zero: `+00:00` comes back as `Z` (same instant).
    UtcOffset,
    /// `base64Binary` with whitespace inside (allowed by R4) comes back without it (same bytes).
    Base64Whitespace,
}

/// Like [`differences`], but the [`WireException`]s are counted apart instead of listed:
/// what is left is a real difference.
pub fn r4_differences(want: &Value, got: &Value) -> (Vec<String>, Vec<(String, WireException)>) {
    let mut real = Vec::new();
    let mut known = Vec::new();
    diff(
        want,
        got,
        String::new(),
        &mut |p, a, b| match exception(a, b) {
            Some(x) => known.push((p.to_owned(), x)),
            None => real.push(describe(p, a, b)),
        },
    );
    (real, known)
}

fn exception(want: Option<&Value>, got: Option<&Value>) -> Option<WireException> {
    match (want?, got?) {
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {
            Some(WireException::Decimal)
        }
        (Value::String(a), Value::String(b)) => {
            let instant = |s: &str| chrono::DateTime::parse_from_rfc3339(s).ok();
            if let (Some(x), Some(y)) = (instant(a), instant(b))
                && x == y
                && a.ends_with("+00:00")
                && b.ends_with('Z')
            {
                return Some(WireException::UtcOffset);
            }
            let squeezed: String = a.chars().filter(|c| !c.is_whitespace()).collect();
            let base64 = |s: &str| {
                s.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"+/=".contains(&c))
            };
            (squeezed == *b && base64(b) && squeezed.len() != a.len())
                .then_some(WireException::Base64Whitespace)
        }
        _ => None,
    }
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

fn describe(path: &str, want: Option<&Value>, got: Option<&Value>) -> String {
    match (want, got) {
        (Some(_), None) => format!("{path}: dropped"),
        (None, Some(_)) => format!("{path}: added"),
        (Some(Value::Array(a)), Some(Value::Array(b))) if a.len() != b.len() => {
            format!("{path}: {} items became {}", a.len(), b.len())
        }
        (Some(a), Some(b)) => format!("{path}: {} changed (now {})", kind(a), kind(b)),
        (None, None) => format!("{path}: ?"),
    }
}

type Sink<'a> = dyn FnMut(&str, Option<&Value>, Option<&Value>) + 'a;

fn diff(want: &Value, got: &Value, path: String, out: &mut Sink<'_>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    match (want, got) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                match b.get(k) {
                    Some(vb) => diff(va, vb, join(k), out),
                    None => out(&join(k), Some(va), None),
                }
            }
            for (k, vb) in b.iter().filter(|(k, _)| !a.contains_key(*k)) {
                out(&join(k), None, Some(vb));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (va, vb)) in a.iter().zip(b).enumerate() {
                diff(va, vb, format!("{path}[{i}]"), out);
            }
        }
        _ if want == got => {}
        _ => out(&path, Some(want), Some(got)),
    }
}

/// The `resourceType` of a resource.
pub fn resource_type_name(resource: &Resource) -> String {
    resource.resource_type().as_ref().to_owned()
}
