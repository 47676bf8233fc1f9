//! A transaction Bundle against the FHIR resource store, with FHIR-20's conditional
//! semantics (see the module docs of [`super`]).

use huizhen_core::store::Store;
use huizhen_core::store::fhir::{Criterion, FhirApplied, FhirBatch, FhirCheck, FhirWrite};
use serde_json::{Map, Value, json};

use super::entries::{Entry, Kind, read_entries};
use crate::facade::index::{index, instant};
use crate::facade::table;

/// How often a batch is decided again when concurrent writers keep changing the answer.
const ATTEMPTS: usize = 8;

/// Why a Bundle was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleError {
    pub text: String,
    /// True when retrying cannot help (a bad Bundle, an ambiguous condition).
    pub permanent: bool,
}

pub(super) fn bad(text: impl Into<String>) -> BundleError {
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
    // With the id and the version the first one left it at.
    let mut resolved: Vec<(&'static str, String, String, i64)> = Vec::new();
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
                if let Some((_, _, id, version)) = resolved
                    .iter()
                    .find(|(t, c, ..)| *t == e.resource_type && c == text)
                {
                    Decision {
                        id: id.clone(),
                        current: Some((*version, String::new())),
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
                    let version = d.current.as_ref().map_or(1, |(v, _)| *v);
                    resolved.push((e.resource_type, text.clone(), d.id.clone(), version));
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
