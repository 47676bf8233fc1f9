//! A transaction Bundle against the FHIR resource store, with FHIR-20's conditional
//! semantics (see the module docs of [`super`]).

use huizhen_core::store::Store;
use huizhen_core::store::fhir::{Criterion, FhirApplied, FhirBatch, FhirCheck, FhirWrite};
use serde_json::{Map, Value, json};

use crate::facade::index::{index, instant};
use crate::facade::search;
use crate::facade::table::{self, Source, TABLE, prefix};

/// How often a batch is decided again when concurrent writers keep changing the answer.
const ATTEMPTS: usize = 8;

/// Why a Bundle was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleError {
    pub text: String,
    /// True when retrying cannot help (a bad Bundle, an ambiguous condition).
    pub permanent: bool,
}

fn bad(text: impl Into<String>) -> BundleError {
    BundleError {
        text: text.into(),
        permanent: true,
    }
}

/// What a Bundle did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The transaction-response Bundle (JSON).
    pub outcome: String,
    /// True when this message had been applied before (nothing was written now).
    pub replayed: bool,
}

/// One entry as read.
struct Entry {
    index: usize,
    resource_type: &'static str,
    full_url: Option<String>,
    resource: Value,
    kind: Kind,
}

enum Kind {
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

fn read_entries(bundle: &Value) -> Result<Vec<Entry>, BundleError> {
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

/// Replaces every `reference` equal to a key of `map` (a `fullUrl`) with its value.
fn rewrite(v: &mut Value, map: &[(String, String)]) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                if k == "reference"
                    && let Value::String(s) = x
                    && let Some((_, to)) = map.iter().find(|(from, _)| from == s)
                {
                    *s = to.clone();
                } else {
                    rewrite(x, map);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite(x, map)),
        _ => {}
    }
}

/// The resource as stored: no `meta.versionId`/`lastUpdated` (the store's), the final id.
fn as_stored(mut r: Value, id: &str) -> Value {
    r["id"] = json!(id);
    if let Some(meta) = r.get_mut("meta").and_then(Value::as_object_mut) {
        meta.remove("versionId");
        meta.remove("lastUpdated");
        if meta.is_empty() {
            r.as_object_mut().map(|o| o.remove("meta"));
        }
    }
    r
}

/// What one entry resolved to.
struct Decision {
    id: String,
    /// The version seen (none: absent).
    current: Option<(i64, String)>,
    /// Written at all (a kept conditional create or an unchanged update is not).
    write: bool,
    created: bool,
}

/// Decides every entry against the store now; the checks, the writes and the response.
async fn decide(
    store: &Store,
    entries: &[Entry],
    facility: &str,
    at_ms: i64,
) -> Result<(Vec<FhirCheck>, Vec<FhirWrite>, Value), BundleError> {
    let store_err = |e: huizhen_core::store::StoreError| BundleError {
        text: format!("the FHIR store: {e}"),
        permanent: false,
    };
    let mut checks = Vec::new();
    let mut decisions: Vec<Decision> = Vec::new();
    // Conditions already resolved in this Bundle (the same ifNoneExist twice → one resource).
    let mut resolved: Vec<(&'static str, String, String)> = Vec::new();
    for e in entries {
        let at = format!("entry[{}]", e.index);
        let conditional = |crit: &Vec<Criterion>| FhirCheck {
            resource_type: e.resource_type.to_owned(),
            criteria: crit.clone(),
            facility: Some(facility.to_owned()),
            seen: Vec::new(),
        };
        let d = match &e.kind {
            Kind::Create(None) => Decision {
                id: huizhen_core::message::new_id(),
                current: None,
                write: true,
                created: true,
            },
            Kind::Create(Some((crit, text))) => {
                if let Some((_, _, id)) = resolved
                    .iter()
                    .find(|(t, c, _)| *t == e.resource_type && c == text)
                {
                    Decision {
                        id: id.clone(),
                        current: None,
                        write: false,
                        created: false,
                    }
                } else {
                    let found = store
                        .fhir_match(e.resource_type, crit, Some(facility), 3)
                        .await
                        .map_err(store_err)?;
                    let mut check = conditional(crit);
                    check.seen = found.clone();
                    checks.push(check);
                    let d = match found.as_slice() {
                        [] => Decision {
                            id: huizhen_core::message::new_id(),
                            current: None,
                            write: true,
                            created: true,
                        },
                        [(id, v)] => Decision {
                            id: id.clone(),
                            current: Some((*v, String::new())),
                            write: false,
                            created: false,
                        },
                        many => return Err(ambiguous(&at, e.resource_type, "ifNoneExist", many)),
                    };
                    resolved.push((e.resource_type, text.clone(), d.id.clone()));
                    d
                }
            }
            Kind::ConditionalUpdate(crit) => {
                let found = store
                    .fhir_match(e.resource_type, crit, Some(facility), 3)
                    .await
                    .map_err(store_err)?;
                let mut check = conditional(crit);
                check.seen = found.clone();
                checks.push(check);
                match found.as_slice() {
                    [] => Decision {
                        id: huizhen_core::message::new_id(),
                        current: None,
                        write: true,
                        created: true,
                    },
                    [(id, _)] => current_of(store, e.resource_type, id, facility, &at).await?,
                    many => {
                        return Err(ambiguous(
                            &at,
                            e.resource_type,
                            "the conditional update",
                            many,
                        ));
                    }
                }
            }
            Kind::Put(id) => {
                let d = current_of(store, e.resource_type, id, facility, &at).await?;
                checks.push(FhirCheck {
                    resource_type: e.resource_type.to_owned(),
                    criteria: vec![Criterion::Id(vec![id.clone()])],
                    facility: None,
                    seen: d
                        .current
                        .as_ref()
                        .map(|(v, _)| vec![(id.clone(), *v)])
                        .unwrap_or_default(),
                });
                d
            }
        };
        decisions.push(d);
    }
    // References to entries' fullUrls become Type/id.
    let map: Vec<(String, String)> = entries
        .iter()
        .zip(&decisions)
        .filter_map(|(e, d)| {
            e.full_url
                .clone()
                .map(|u| (u, format!("{}/{}", e.resource_type, d.id)))
        })
        .collect();
    let mut writes = Vec::new();
    let mut response = Vec::new();
    for (e, d) in entries.iter().zip(decisions.iter_mut()) {
        let mut r = e.resource.clone();
        rewrite(&mut r, &map);
        let r = as_stored(r, &d.id);
        if let (Kind::Put(_) | Kind::ConditionalUpdate(_), Some((_, body))) = (&e.kind, &d.current)
        {
            let old: Value = serde_json::from_str(body).unwrap_or(Value::Null);
            d.write = as_stored(old, &d.id) != r;
        }
        let (version, last) = match (&d.current, d.write) {
            (Some((v, _)), false) => (*v, None),
            (Some((v, _)), true) => (v + 1, Some(at_ms)),
            (None, _) => (1, Some(at_ms)),
        };
        if d.write {
            let def = table::def(e.resource_type)
                .unwrap_or_else(|| unreachable!("a storable type is in the table"));
            writes.push(FhirWrite {
                resource_type: e.resource_type.to_owned(),
                id: d.id.clone(),
                body: serde_json::to_string(&r).unwrap_or_default(),
                index: index(def, &r),
                expected: d.current.as_ref().map(|(v, _)| *v),
            });
        }
        let status = if d.created && d.write {
            "201 Created"
        } else {
            "200 OK"
        };
        let mut resp = Map::new();
        resp.insert("status".into(), json!(status));
        resp.insert(
            "location".into(),
            json!(format!("{}/{}/_history/{version}", e.resource_type, d.id)),
        );
        resp.insert("etag".into(), json!(format!("W/\"{version}\"")));
        if let Some(t) = last {
            resp.insert("lastModified".into(), json!(instant(t)));
        }
        response.push(json!({ "response": Value::Object(resp) }));
    }
    let outcome = json!({
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": response,
    });
    Ok((checks, writes, outcome))
}

fn ambiguous(at: &str, resource_type: &str, what: &str, many: &[(String, i64)]) -> BundleError {
    let ids: Vec<String> = many
        .iter()
        .take(2)
        .map(|(id, _)| format!("{resource_type}/{id}"))
        .collect();
    bad(format!(
        "{at}: {what} matches more than one {resource_type} ({}, …); FHIR-20: none is picked — resolve the duplicates (identity review), then reprocess the message",
        ids.join(", ")
    ))
}

/// The current version and body of a resource (its facility must be the pipeline's).
async fn current_of(
    store: &Store,
    resource_type: &str,
    id: &str,
    facility: &str,
    at: &str,
) -> Result<Decision, BundleError> {
    let row = store
        .fhir_read(resource_type, id)
        .await
        .map_err(|e| BundleError {
            text: format!("the FHIR store: {e}"),
            permanent: false,
        })?;
    match row {
        None => Ok(Decision {
            id: id.to_owned(),
            current: None,
            write: true,
            created: true,
        }),
        Some(r) if r.facility != facility => Err(bad(format!(
            "{at}: {resource_type}/{id} belongs to another facility; a pipeline of {facility} may not change it"
        ))),
        Some(r) => Ok(Decision {
            id: id.to_owned(),
            current: Some((r.version, r.body)),
            write: true,
            created: false,
        }),
    }
}

/// Applies a transaction Bundle (JSON bytes) for message `message_id` through sink `sink`
/// of a pipeline of `facility`.
pub async fn apply_bundle(
    store: &Store,
    body: &[u8],
    message_id: &str,
    sink: &str,
    facility: &str,
) -> Result<Applied, BundleError> {
    if let Some(outcome) = store
        .fhir_applied(message_id, sink)
        .await
        .map_err(|e| BundleError {
            text: format!("the FHIR store: {e}"),
            permanent: false,
        })?
    {
        return Ok(Applied {
            outcome,
            replayed: true,
        });
    }
    let bundle: Value = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "the message is not JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let entries = read_entries(&bundle)?;
    for _ in 0..ATTEMPTS {
        let at_ms = store.clock().now().timestamp_millis();
        let (checks, writes, outcome) = decide(store, &entries, facility, at_ms).await?;
        let outcome = serde_json::to_string(&outcome).unwrap_or_default();
        let batch = FhirBatch {
            message_id,
            sink,
            facility,
            at_ms,
            checks: &checks,
            writes: &writes,
            outcome: &outcome,
        };
        match store.fhir_apply(&batch).await.map_err(|e| BundleError {
            text: format!("the FHIR store: {e}"),
            permanent: false,
        })? {
            FhirApplied::Applied => {
                return Ok(Applied {
                    outcome,
                    replayed: false,
                });
            }
            FhirApplied::Replayed(outcome) => {
                return Ok(Applied {
                    outcome,
                    replayed: true,
                });
            }
            FhirApplied::Changed => tokio::task::yield_now().await,
        }
    }
    Err(BundleError {
        text: "concurrent writers kept changing the resources this Bundle conditions on; retrying later".into(),
        permanent: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_to_full_urls_are_rewritten() {
        let mut v = json!({"subject": {"reference": "urn:uuid:p"}, "result": [{"reference": "urn:uuid:o"}, {"reference": "Observation/x"}]});
        rewrite(
            &mut v,
            &[
                ("urn:uuid:p".into(), "Patient/1".into()),
                ("urn:uuid:o".into(), "Observation/2".into()),
            ],
        );
        assert_eq!(
            v,
            json!({"subject": {"reference": "Patient/1"}, "result": [{"reference": "Observation/2"}, {"reference": "Observation/x"}]})
        );
    }

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

    #[test]
    fn stored_bodies_lose_the_stores_meta() {
        let r = as_stored(
            json!({"resourceType": "Patient", "meta": {"versionId": "3", "lastUpdated": "x"}}),
            "p",
        );
        assert_eq!(r, json!({"resourceType": "Patient", "id": "p"}));
        let r = as_stored(
            json!({"resourceType": "Patient", "meta": {"profile": ["x"], "versionId": "3"}}),
            "p",
        );
        assert_eq!(
            r,
            json!({"resourceType": "Patient", "id": "p", "meta": {"profile": ["x"]}})
        );
    }
}
