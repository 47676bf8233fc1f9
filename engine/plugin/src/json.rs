//! Every world's input and output as JSON: what `huizhen plugin test` fixtures hold, and what
//! steps of other issues pass through one host API ([`call`]).
//!
//! | world | input | output |
//! |---|---|---|
//! | rule | `{"message": {"id", "pipeline", "facility", "kind", "body" (text), "headers": {}}}` | `"pass"`, `{"drop": r}`, `{"route": p}`, `{"transform": body}`, `{"annotate": {}}` |
//! | scorer | `{"case": {feature: number or text}, "expert": {…}}` | `{"total", "contributions": [{"feature", "points"}]}` |
//! | coverage | `{"items": [{"code", "amount_fen"}], "patient": {"insurer", "active", "plan", "not_eligible", "deductible_fen", "annual_limit_fen", "year_to_date": {"covered_fen", "deductible_met_fen"}}}` (the 0.1.2 fields optional: eligible, no deductible, no limit, nothing used) | 0.1.2: `{"lines": [{"code", "covered_fen", "self_pay_fen", "reason"}], "deductible_met_fen"}`; a 0.1.0/0.1.1 plugin: the lines alone |
//! | match-weights | `{}` | `{"fields": {name: [agree, disagree]}, "auto_link_threshold", "probable_threshold", "possible_threshold"}` (a 0.1.0 plugin's two thresholds mapped) |
//! | triage | `{"complaint": text}` | `{"symptoms": [], "department": text or null, "questions": []}` |

use serde_json::{Map, Value, json};

use crate::bindings::coverage::{FeeItem, PatientCoverage, Usage};
use crate::bindings::huizhen::plugin::types::{Decision, Message};
use crate::bindings::scorer::Feature;
use crate::{CallError, CallOptions, Plugin, World};

/// Why a JSON call gave no output.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The input does not have the world's shape.
    #[error("input: {0}")]
    Input(String),
    #[error(transparent)]
    Call(#[from] CallError),
}

fn field<'a>(v: &'a Value, path: &str, key: &str) -> Result<&'a Value, JsonError> {
    v.get(key)
        .ok_or_else(|| JsonError::Input(format!("{path}.{key} is missing")))
}

fn text(v: &Value, path: &str, key: &str) -> Result<String, JsonError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(JsonError::Input(format!(
            "{path}.{key}: a string expected, found {other}"
        ))),
    }
}

/// A `rule` input's message.
pub fn message(input: &Value) -> Result<Message, JsonError> {
    let m = field(input, "input", "message")?;
    let headers = match m.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(h)) => h
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(JsonError::Input(format!(
                    "input.message.headers.{k}: a string expected, found {other}"
                ))),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(JsonError::Input(format!(
                "input.message.headers: an object expected, found {other}"
            )));
        }
    };
    Ok(Message {
        id: text(m, "input.message", "id")?,
        pipeline: text(m, "input.message", "pipeline")?,
        facility: text(m, "input.message", "facility")?,
        kind: text(m, "input.message", "kind")?,
        body: text(m, "input.message", "body")?.into_bytes(),
        headers,
    })
}

pub fn decision(d: &Decision) -> Value {
    let utf8 = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match d {
        Decision::Pass => json!("pass"),
        Decision::Drop(r) => json!({ "drop": r }),
        Decision::Route(p) => json!({ "route": p }),
        Decision::Transform(b) => json!({ "transform": utf8(b) }),
        Decision::Annotate(h) => {
            let m: Map<String, Value> = h.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            json!({ "annotate": m })
        }
    }
}

/// `{"name": 3}` → a feature with value 3; `{"name": "text"}` → value 0 with the text;
/// `{"name": {"value": 3, "text": "…"}}` → both.
pub fn features(v: &Value, path: &str) -> Result<Vec<Feature>, JsonError> {
    let Value::Object(m) = v else {
        return Err(JsonError::Input(format!(
            "{path}: an object of features expected, found {v}"
        )));
    };
    m.iter()
        .map(|(name, v)| {
            let (value, text) = match v {
                Value::Number(n) => (n.as_f64().unwrap_or(0.0), None),
                Value::String(s) => (0.0, Some(s.clone())),
                Value::Bool(b) => (if *b { 1.0 } else { 0.0 }, None),
                Value::Object(o) => (
                    o.get("value").and_then(Value::as_f64).unwrap_or(0.0),
                    o.get("text").and_then(Value::as_str).map(str::to_owned),
                ),
                other => {
                    return Err(JsonError::Input(format!(
                        "{path}.{name}: a number, a string or {{value, text}} expected, found {other}"
                    )));
                }
            };
            Ok(Feature {
                name: name.clone(),
                value,
                text,
            })
        })
        .collect()
}

fn int(v: &Value, path: &str, key: &str) -> Result<i64, JsonError> {
    field(v, path, key)?
        .as_i64()
        .ok_or_else(|| JsonError::Input(format!("{path}.{key}: an integer expected (fen)")))
}

pub fn fee_items(input: &Value) -> Result<Vec<FeeItem>, JsonError> {
    let Some(items) = field(input, "input", "items")?.as_array() else {
        return Err(JsonError::Input("input.items: an array expected".into()));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, it)| {
            let path = format!("input.items[{i}]");
            Ok(FeeItem {
                code: text(it, &path, "code")?,
                amount_fen: int(it, &path, "amount_fen")?,
            })
        })
        .collect()
}

pub fn patient(input: &Value) -> Result<PatientCoverage, JsonError> {
    let p = field(input, "input", "patient")?;
    let path = "input.patient";
    let opt_int = |v: &Value, path: &str, key: &str| -> Result<Option<i64>, JsonError> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x.as_i64().map(Some).ok_or_else(|| {
                JsonError::Input(format!("{path}.{key}: an integer expected (fen)"))
            }),
        }
    };
    let ytd = p.get("year_to_date").unwrap_or(&Value::Null);
    let ytd_path = "input.patient.year_to_date";
    Ok(PatientCoverage {
        insurer: text(p, path, "insurer")?,
        active: field(p, path, "active")?
            .as_bool()
            .ok_or_else(|| JsonError::Input("input.patient.active: true or false".into()))?,
        plan: text(p, path, "plan")?,
        not_eligible: match p.get("not_eligible") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(JsonError::Input(format!(
                    "input.patient.not_eligible: a reason (text) or null expected, found {other}"
                )));
            }
        },
        deductible_fen: opt_int(p, path, "deductible_fen")?.unwrap_or(0),
        annual_limit_fen: opt_int(p, path, "annual_limit_fen")?,
        year_to_date: Usage {
            covered_fen: opt_int(ytd, ytd_path, "covered_fen")?.unwrap_or(0),
            deductible_met_fen: opt_int(ytd, ytd_path, "deductible_met_fen")?.unwrap_or(0),
        },
    })
}

/// Calls the plugin's world with a JSON input; the answer as JSON.
pub fn call(plugin: &Plugin, input: &Value, opts: &CallOptions) -> Result<Value, JsonError> {
    Ok(match plugin.world() {
        World::Rule => decision(&plugin.decide(&message(input)?, opts)?),
        World::Scorer => {
            let case = features(field(input, "input", "case")?, "input.case")?;
            let expert = features(field(input, "input", "expert")?, "input.expert")?;
            let s = plugin.scorer(opts)?.score(&case, &expert)?;
            json!({
                "total": s.total,
                "contributions": s.contributions.iter().map(|c| json!({ "feature": c.feature, "points": c.points })).collect::<Vec<_>>(),
            })
        }
        World::Coverage => {
            let answer = plugin.cover(&fee_items(input)?, &patient(input)?, opts)?;
            let lines = Value::Array(
                answer
                    .lines
                    .iter()
                    .map(|l| {
                        json!({
                            "code": l.code,
                            "covered_fen": l.covered_fen,
                            "self_pay_fen": l.self_pay_fen,
                            "reason": l.reason,
                        })
                    })
                    .collect(),
            );
            if plugin.world_version() == crate::CONTRACT {
                json!({ "lines": lines, "deductible_met_fen": answer.deductible_met_fen })
            } else {
                // An older plugin's fixtures expect its own answer: the lines.
                lines
            }
        }
        World::MatchWeights => {
            let w = plugin.weights(opts)?;
            let fields: Map<String, Value> = w
                .fields
                .iter()
                .map(|(k, (a, d))| (k.clone(), json!([a, d])))
                .collect();
            json!({
                "fields": fields,
                "auto_link_threshold": w.auto_link_threshold,
                "probable_threshold": w.probable_threshold,
                "possible_threshold": w.possible_threshold,
            })
        }
        World::Triage => {
            let complaint = field(input, "input", "complaint")?
                .as_str()
                .ok_or_else(|| JsonError::Input("input.complaint: a string expected".into()))?;
            let t = plugin.triage(complaint, opts)?;
            json!({ "symptoms": t.symptoms, "department": t.department, "questions": t.questions })
        }
    })
}

/// Where `actual` differs from `expected` (numbers within 1e-6), as JSON paths; empty when equal.
pub fn differences(expected: &Value, actual: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff("$", expected, actual, &mut out);
    out
}

fn diff(path: &str, e: &Value, a: &Value, out: &mut Vec<String>) {
    match (e, a) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            if (x - y).abs() > 1e-6 {
                out.push(format!("{path}: expected {x}, got {y}"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                match y.get(k) {
                    Some(w) => diff(&format!("{path}.{k}"), v, w, out),
                    None => out.push(format!("{path}.{k}: expected {v}, missing")),
                }
            }
            for (k, w) in y {
                if !x.contains_key(k) {
                    out.push(format!("{path}.{k}: not expected, got {w}"));
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                out.push(format!(
                    "{path}: expected {} items, got {}: {a}",
                    x.len(),
                    y.len()
                ));
                return;
            }
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                diff(&format!("{path}[{i}]"), v, w, out);
            }
        }
        _ if e == a => {}
        _ => out.push(format!("{path}: expected {e}, got {a}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_the_path() {
        let e = json!({ "total": 146.0, "contributions": [{ "feature": "title", "points": 50 }] });
        let a = json!({ "total": 146.0000000001, "contributions": [{ "feature": "years", "points": 50 }] });
        assert_eq!(
            differences(&e, &a),
            vec!["$.contributions[0].feature: expected \"title\", got \"years\""]
        );
        assert!(differences(&e, &e).is_empty());
    }

    #[test]
    fn features_from_numbers_texts_and_objects() {
        let f = features(
            &json!({ "years": 20, "title": "主任医师", "x": { "value": 1.5, "text": "t" } }),
            "input.expert",
        )
        .unwrap();
        assert_eq!(f.len(), 3);
        assert!(features(&json!([1]), "input.case").is_err());
        let e = features(&json!({ "y": [1] }), "input.case").unwrap_err();
        assert!(e.to_string().contains("input.case.y"), "{e}");
    }
}
