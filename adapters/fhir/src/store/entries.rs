//! The entries of a transaction Bundle as the sink reads them: method, type, condition, id.

use huizhen_core::store::fhir::Criterion;
use serde_json::Value;

use super::bundle::{BundleError, bad};
use crate::facade::search;
use crate::facade::table::{self, Source, TABLE, prefix};

/// One entry as read.
pub(super) struct Entry {
    pub index: usize,
    pub resource_type: &'static str,
    pub full_url: Option<String>,
    pub resource: Value,
    pub kind: Kind,
}

pub(super) enum Kind {
    /// POST, with the criteria of its `ifNoneExist` and the condition's text.
    Create(Option<(Vec<Criterion>, String)>),
    /// PUT Type/id.
    Put(String),
    /// PUT Type?search.
    ConditionalUpdate(Vec<Criterion>),
}

/// The types a Bundle may write.
fn storable_type(name: &str) -> Option<&'static str> {
    TABLE
        .iter()
        .find(|d| d.name == name && d.sources.contains(&Source::Stored))
        .map(|d| d.name)
}

fn storable_list() -> String {
    TABLE
        .iter()
        .filter(|d| d.sources.contains(&Source::Stored))
        .map(|d| d.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `name=value&…` as the facade's search criteria of `resource_type`.
fn criteria(resource_type: &str, query: &str, at: &str) -> Result<Vec<Criterion>, BundleError> {
    let def = table::def(resource_type)
        .ok_or_else(|| bad(format!("{at}: {resource_type} is not stored here")))?;
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if pairs.is_empty() {
        return Err(bad(format!("{at}: an empty condition")));
    }
    let req = search::parse(def, &pairs).map_err(|f| bad(format!("{at}: {}", f.text)))?;
    if req.criteria.is_empty() {
        return Err(bad(format!("{at}: the condition has no search parameter")));
    }
    Ok(req.criteria)
}

pub(super) fn read_entries(bundle: &Value) -> Result<Vec<Entry>, BundleError> {
    if bundle["resourceType"] != "Bundle" {
        return Err(bad("resourceType: the message is not a FHIR Bundle"));
    }
    match bundle["type"].as_str() {
        Some("transaction" | "batch") => {}
        _ => return Err(bad("type: a transaction (or batch) Bundle is required")),
    }
    let mut out = Vec::new();
    for (i, e) in bundle["entry"].as_array().into_iter().flatten().enumerate() {
        let at = format!("entry[{i}]");
        let resource = e["resource"].clone();
        let rt = resource["resourceType"]
            .as_str()
            .ok_or_else(|| bad(format!("{at}.resource.resourceType: missing")))?;
        let resource_type = storable_type(rt).ok_or_else(|| {
            bad(format!(
                "{at}.resource.resourceType: {rt} is not stored here (stored: {})",
                storable_list()
            ))
        })?;
        super::check_resource(resource_type, &resource)
            .map_err(|m| bad(format!("{at}.resource: {m}")))?;
        let method = e["request"]["method"].as_str().unwrap_or("");
        let url = e["request"]["url"].as_str().unwrap_or("");
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let kind = match method {
            "POST" => {
                if path != resource_type {
                    return Err(bad(format!(
                        "{at}.request.url: POST {url:?} does not name the type {resource_type}"
                    )));
                }
                let cond = match e["request"]["ifNoneExist"]
                    .as_str()
                    .filter(|c| !c.trim().is_empty())
                {
                    Some(c) => {
                        let c = c
                            .trim()
                            .trim_start_matches(&format!("{resource_type}?")[..]);
                        Some((
                            criteria(resource_type, c, &format!("{at}.request.ifNoneExist"))?,
                            c.to_owned(),
                        ))
                    }
                    None => None,
                };
                Kind::Create(cond)
            }
            "PUT" if !query.is_empty() => {
                if path != resource_type {
                    return Err(bad(format!(
                        "{at}.request.url: {url:?} does not name the type {resource_type}"
                    )));
                }
                Kind::ConditionalUpdate(criteria(
                    resource_type,
                    query,
                    &format!("{at}.request.url"),
                )?)
            }
            "PUT" => {
                let id = path
                    .strip_prefix(resource_type)
                    .and_then(|r| r.strip_prefix('/'))
                    .filter(|id| valid_id(id))
                    .ok_or_else(|| bad(format!("{at}.request.url: PUT needs {resource_type}/{{id}} (an id of 1–64 letters, digits, '-' or '.') or {resource_type}?search")))?;
                let def = table::def(resource_type)
                    .unwrap_or_else(|| unreachable!("a storable type is in the table"));
                if let Some(p) = def
                    .sources
                    .iter()
                    .filter_map(|s| prefix(*s, resource_type))
                    .find(|p| id.starts_with(p))
                {
                    return Err(bad(format!(
                        "{at}.request.url: ids starting with {p:?} are the facade's own {resource_type}s"
                    )));
                }
                if resource["id"].as_str().is_some_and(|rid| rid != id) {
                    return Err(bad(format!(
                        "{at}.resource.id: differs from the id in request.url"
                    )));
                }
                Kind::Put(id.to_owned())
            }
            "" => return Err(bad(format!("{at}.request.method: missing"))),
            other => {
                return Err(bad(format!(
                    "{at}.request.method: {other} is not applied here (POST, PUT)"
                )));
            }
        };
        out.push(Entry {
            index: i,
            resource_type,
            full_url: e["fullUrl"].as_str().map(str::to_owned),
            resource,
            kind,
        });
    }
    if out.is_empty() {
        return Err(bad("entry: the Bundle has no entries"));
    }
    Ok(out)
}

/// A FHIR id: 1–64 of `[A-Za-z0-9-.]`.
fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bad_bundles_name_the_entry() {
        let e = read_entries(&json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Task", "status": "draft", "intent": "order"}, "request": {"method": "POST", "url": "Task"}}
        ]})).err().unwrap();
        assert!(
            e.permanent
                && e.text
                    .starts_with("entry[0].resource.resourceType: Task is not stored here"),
            "{}",
            e.text
        );
        let e = read_entries(&json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient"}, "request": {"method": "DELETE", "url": "Patient/1"}}
        ]})).err().unwrap();
        assert!(
            e.text.contains("entry[0].request.method: DELETE"),
            "{}",
            e.text
        );
        let e = read_entries(&json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient", "gender": "robot"}, "request": {"method": "POST", "url": "Patient"}}
        ]})).err().unwrap();
        assert!(
            e.text.starts_with("entry[0].resource: gender"),
            "{}",
            e.text
        );
        let e = read_entries(&json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient"}, "request": {"method": "PUT", "url": "Patient/person-1"}}
        ]})).err().unwrap();
        assert!(e.text.contains("\"person-\""), "{}", e.text);
        let e = read_entries(&json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient", "ifNoneExist": "colour=red"}}
        ]})).err().unwrap();
        assert!(
            e.text.contains("entry[0].request.ifNoneExist") && e.text.contains("colour"),
            "{}",
            e.text
        );
    }
}
