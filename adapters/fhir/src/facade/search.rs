//! Search requests (FHIR-21): the query string read against the type's parameters in
//! [`super::table`] into the store's criteria, and the `searchset` Bundle with its paging
//! links.
//!
//! A parameter the type does not list is refused with 400 naming it (the CapabilityStatement
//! lists the same set). A comma is OR, a repeated parameter AND. Modifiers: `:missing` on
//! every token, reference and string parameter, `:exact` on strings (matching is on whole
//! normalised words either way), `:{Type}` on references. Result parameters: `_count` (default
//! 20, at most 200), `_offset` (the paging links'), `_include` and `_revinclude` where the type
//! lists them, `_format=json`, and `_sort` on `_lastUpdated`: the facade's one order is the
//! newest change first (`-_lastUpdated`, applied and kept in the links); `_sort=_lastUpdated`
//! (what FHIR clients that poll send) is answered in that order too, with a warning
//! OperationOutcome entry (search mode `outcome`) saying so, and left out of the `self` link
//! (FHIR: the link shows what was applied). Any other `_sort` is refused.

use axum::http::StatusCode;
use huizhen_core::store::fhir::{Criterion, DatePrefix};
use serde_json::{Value, json};

use super::index::{date_range, normalise, reference_text};
use super::outcome::Fail;
use super::table::{Include, Kind, ResourceDef, RevInclude, param};

/// The default and largest page.
pub const DEFAULT_COUNT: usize = 20;
pub const MAX_COUNT: usize = 200;

/// A parsed search.
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    pub criteria: Vec<Criterion>,
    pub count: usize,
    pub offset: usize,
    pub includes: Vec<Include>,
    pub revincludes: Vec<RevInclude>,
    /// The parameters as given, but paging (for the links).
    pub params: Vec<(String, String)>,
    /// What was asked but not applied as asked, for a warning entry.
    pub warnings: Vec<String>,
}

impl SearchRequest {
    /// The values of a `Terms` criterion on `param` (every such criterion's values).
    pub fn terms(&self, param: &str) -> Vec<&str> {
        self.criteria
            .iter()
            .filter_map(|c| match c {
                Criterion::Terms { param: p, any_of } if p == param => Some(any_of),
                _ => None,
            })
            .flatten()
            .map(String::as_str)
            .collect()
    }

    /// The ids of an `_id` criterion, if there is one.
    pub fn ids(&self) -> Option<Vec<String>> {
        self.criteria.iter().find_map(|c| match c {
            Criterion::Id(ids) => Some(ids.clone()),
            _ => None,
        })
    }
}

fn date_prefix(v: &str) -> (DatePrefix, &str) {
    let prefixes = [
        ("eq", DatePrefix::Eq),
        ("ne", DatePrefix::Ne),
        ("gt", DatePrefix::Gt),
        ("lt", DatePrefix::Lt),
        ("ge", DatePrefix::Ge),
        ("le", DatePrefix::Le),
        ("sa", DatePrefix::Sa),
        ("eb", DatePrefix::Eb),
    ];
    for (p, d) in prefixes {
        if let Some(rest) = v.strip_prefix(p)
            && rest.starts_with(|c: char| c.is_ascii_digit())
        {
            return (d, rest);
        }
    }
    (DatePrefix::Eq, v)
}

fn date_values(name: &str, raw: &str) -> Result<Vec<(DatePrefix, i64, i64)>, Fail> {
    raw.split(',')
        .map(|v| {
            let (prefix, date) = date_prefix(v.trim());
            let (lo, hi) = date_range(date).ok_or_else(|| {
                Fail::invalid(
                    name,
                    format!("{name}: {v:?} is not a FHIR date (YYYY, YYYY-MM, YYYY-MM-DD or a dateTime), with an optional prefix eq, ne, gt, lt, ge, le, sa, eb"),
                )
            })?;
            Ok((prefix, lo, hi))
        })
        .collect()
}

/// Reads the query pairs against `def`.
pub fn parse(def: &ResourceDef, pairs: &[(String, String)]) -> Result<SearchRequest, Fail> {
    let mut req = SearchRequest {
        count: DEFAULT_COUNT,
        ..SearchRequest::default()
    };
    for (key, raw) in pairs {
        let value = raw.trim();
        match key.as_str() {
            "_count" => {
                req.count = value
                    .parse::<usize>()
                    .map_err(|_| {
                        Fail::invalid("_count", format!("_count: {value:?} is not a number"))
                    })?
                    .min(MAX_COUNT);
                continue;
            }
            "_offset" => {
                req.offset = value.parse::<usize>().map_err(|_| {
                    Fail::invalid("_offset", format!("_offset: {value:?} is not a number"))
                })?;
                continue;
            }
            "_sort" => {
                match value {
                    "-_lastUpdated" => req.params.push((key.clone(), value.to_owned())),
                    "_lastUpdated" => req.warnings.push(
                        "_sort=_lastUpdated: not applied; results are sorted by -_lastUpdated (newest change first), the only order the facade serves".into(),
                    ),
                    _ => {
                        return Err(Fail::invalid(
                            "_sort",
                            format!("_sort: {value:?} is not supported (supported: -_lastUpdated; _lastUpdated is answered newest first)"),
                        ));
                    }
                }
                continue;
            }
            "_format" => {
                if !matches!(value, "json" | "application/json" | "application/fhir+json") {
                    return Err(Fail {
                        status: StatusCode::NOT_ACCEPTABLE,
                        ..Fail::invalid(
                            "_format",
                            format!("_format: {value:?}: only JSON is served"),
                        )
                    });
                }
                continue;
            }
            "_include" => {
                let inc = def
                    .includes
                    .iter()
                    .find(|i| {
                        let base = format!("{}:{}", def.name, i.param);
                        value == base || value == format!("{base}:{}", i.target)
                    })
                    .ok_or_else(|| {
                        let listed: Vec<String> = def
                            .includes
                            .iter()
                            .map(|i| format!("{}:{}", def.name, i.param))
                            .collect();
                        Fail::invalid(
                            "_include",
                            format!(
                                "_include: {value:?} is not supported on {} (supported: {})",
                                def.name,
                                if listed.is_empty() {
                                    "none".into()
                                } else {
                                    listed.join(", ")
                                }
                            ),
                        )
                    })?;
                req.includes.push(*inc);
                req.params.push((key.clone(), value.to_owned()));
                continue;
            }
            "_revinclude" => {
                let rev = def
                    .revincludes
                    .iter()
                    .find(|r| value == format!("{}:{}", r.source, r.param))
                    .ok_or_else(|| {
                        Fail::invalid(
                            "_revinclude",
                            format!("_revinclude: {value:?} is not supported on {}", def.name),
                        )
                    })?;
                req.revincludes.push(*rev);
                req.params.push((key.clone(), value.to_owned()));
                continue;
            }
            _ => {}
        }
        let (name, modifier) = match key.split_once(':') {
            Some((n, m)) => (n, Some(m)),
            None => (key.as_str(), None),
        };
        let Some(p) = param(def, name) else {
            return Err(Fail::invalid(
                name,
                format!(
                    "unknown search parameter {name:?} for {} (supported: {})",
                    def.name,
                    def.params
                        .iter()
                        .map(|p| p.name)
                        .chain([
                            "_id",
                            "_lastUpdated",
                            "_count",
                            "_sort",
                            "_include",
                            "_revinclude",
                        ])
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        req.params.push((key.clone(), value.to_owned()));
        if value.is_empty() {
            return Err(Fail::invalid(name, format!("{name}: no value")));
        }
        if modifier == Some("missing") {
            if p.kind == Kind::Date || p.name.starts_with('_') {
                return Err(Fail::invalid(
                    name,
                    format!("{name}: :missing is not supported on it"),
                ));
            }
            let missing = match value {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(Fail::invalid(
                        name,
                        format!("{name}:missing: expected true or false"),
                    ));
                }
            };
            req.criteria.push(Criterion::Missing {
                param: p.name.to_owned(),
                missing,
            });
            continue;
        }
        match (p.name, p.kind, modifier) {
            ("_id", _, None) => {
                req.criteria.push(Criterion::Id(
                    value.split(',').map(|v| v.trim().to_owned()).collect(),
                ));
            }
            ("_lastUpdated", _, None) => {
                let values = date_values(name, value)?;
                let [(prefix, lo, hi)] = values[..] else {
                    return Err(Fail::invalid(
                        name,
                        "_lastUpdated: one value (repeat the parameter for a range)",
                    ));
                };
                req.criteria.push(Criterion::LastUpdated(prefix, lo, hi));
            }
            (_, Kind::Date, None) => req.criteria.push(Criterion::Date {
                param: p.name.to_owned(),
                any_of: date_values(name, value)?,
            }),
            (_, Kind::Token, None) => req.criteria.push(Criterion::Terms {
                param: p.name.to_owned(),
                any_of: value.split(',').map(|v| v.trim().to_owned()).collect(),
            }),
            (_, Kind::String, None | Some("exact")) => req.criteria.push(Criterion::Terms {
                param: p.name.to_owned(),
                any_of: value.split(',').map(normalise).collect(),
            }),
            (_, Kind::Reference, m) => {
                if let Some(m) = m
                    && (!m.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                        || p.target.is_some_and(|t| t != m))
                {
                    return Err(Fail::invalid(
                        name,
                        format!("{name}: modifier :{m} is not supported"),
                    ));
                }
                let target = m.or(p.target);
                let any_of = value
                    .split(',')
                    .map(|v| {
                        let v = v.trim();
                        match (reference_text(v), target) {
                            (Some((t, id)), _) => format!("{t}/{id}"),
                            (None, Some(t)) => format!("{t}/{v}"),
                            (None, None) => v.to_owned(),
                        }
                    })
                    .collect();
                req.criteria.push(Criterion::Terms {
                    param: p.name.to_owned(),
                    any_of,
                });
            }
            (_, _, Some(m)) => {
                return Err(Fail::invalid(
                    name,
                    format!("{name}: modifier :{m} is not supported"),
                ));
            }
        }
    }
    Ok(req)
}

/// One entry of a searchset.
pub struct Entry {
    pub resource: Value,
    /// `match`, `include` or `outcome`.
    pub mode: &'static str,
}

/// The `searchset` Bundle of a page: `self`, and `next`/`previous` when there are more.
pub fn bundle(
    base: &str,
    resource_type: &str,
    req: &SearchRequest,
    total: usize,
    entries: Vec<Entry>,
) -> Value {
    let link = |offset: usize| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &req.params {
            q.append_pair(k, v);
        }
        q.append_pair("_count", &req.count.to_string());
        q.append_pair("_offset", &offset.to_string());
        format!("{base}/{resource_type}?{}", q.finish())
    };
    let mut links = vec![json!({"relation": "self", "url": link(req.offset)})];
    if req.offset + req.count < total && req.count > 0 {
        links.push(json!({"relation": "next", "url": link(req.offset + req.count)}));
    }
    if req.offset > 0 {
        links.push(
            json!({"relation": "previous", "url": link(req.offset.saturating_sub(req.count))}),
        );
    }
    let warning = (!req.warnings.is_empty()).then(|| Entry {
        resource: json!({
            "resourceType": "OperationOutcome",
            "issue": req.warnings.iter().map(|w| json!({
                "severity": "warning",
                "code": "not-supported",
                "diagnostics": w,
            })).collect::<Vec<_>>(),
        }),
        mode: "outcome",
    });
    let entries: Vec<Value> = entries
        .into_iter()
        .chain(warning)
        .map(|e| {
            if e.mode == "outcome" {
                return json!({"resource": e.resource, "search": {"mode": e.mode}});
            }
            let ty = e.resource["resourceType"].as_str().unwrap_or_default();
            let id = e.resource["id"].as_str().unwrap_or_default();
            json!({
                "fullUrl": format!("{base}/{ty}/{id}"),
                "resource": e.resource,
                "search": {"mode": e.mode},
            })
        })
        .collect();
    let mut b = json!({
        "resourceType": "Bundle",
        "id": huizhen_core::message::new_id(),
        "type": "searchset",
        "total": total,
        "link": links,
    });
    if !entries.is_empty() {
        b["entry"] = Value::Array(entries);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facade::table::def;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn an_unknown_parameter_is_named() {
        let e = parse(def("Observation").unwrap(), &pairs(&[("colour", "red")])).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.expression.as_deref(), Some("colour"));
        assert!(e.text.contains("colour"), "{}", e.text);
    }

    #[test]
    fn references_get_their_target_type() {
        let r = parse(
            def("Observation").unwrap(),
            &pairs(&[("patient", "p1,Patient/p2")]),
        )
        .unwrap();
        assert_eq!(
            r.criteria,
            vec![Criterion::Terms {
                param: "patient".into(),
                any_of: vec!["Patient/p1".into(), "Patient/p2".into()]
            }]
        );
    }

    #[test]
    fn dates_take_prefixes_and_bad_ones_are_named() {
        let r = parse(
            def("Observation").unwrap(),
            &pairs(&[("date", "ge2024-01-01")]),
        )
        .unwrap();
        assert!(
            matches!(&r.criteria[0], Criterion::Date { any_of, .. } if any_of[0].0 == DatePrefix::Ge)
        );
        let e = parse(
            def("Observation").unwrap(),
            &pairs(&[("date", "yesterday")]),
        )
        .unwrap_err();
        assert_eq!(e.expression.as_deref(), Some("date"));
    }

    #[test]
    fn includes_must_be_listed() {
        let r = parse(
            def("DiagnosticReport").unwrap(),
            &pairs(&[("_include", "DiagnosticReport:result")]),
        )
        .unwrap();
        assert_eq!(r.includes[0].target, "Observation");
        assert!(
            parse(
                def("Observation").unwrap(),
                &pairs(&[("_include", "Observation:performer")])
            )
            .is_err()
        );
    }

    #[test]
    fn sort_on_last_updated_is_newest_first_and_says_so() {
        let d = def("Observation").unwrap();
        let r = parse(d, &pairs(&[("_sort", "-_lastUpdated")])).unwrap();
        assert!(r.warnings.is_empty());
        let b = bundle("http://h/fhir/r4", "Observation", &r, 0, vec![]);
        assert!(
            b["link"][0]["url"]
                .as_str()
                .unwrap()
                .contains("_sort=-_lastUpdated")
        );
        assert!(b.get("entry").is_none(), "{b}");
        let r = parse(d, &pairs(&[("_sort", "_lastUpdated")])).unwrap();
        let b = bundle("http://h/fhir/r4", "Observation", &r, 0, vec![]);
        assert!(!b["link"][0]["url"].as_str().unwrap().contains("_sort"));
        assert_eq!(b["entry"][0]["search"]["mode"], "outcome");
        assert_eq!(b["entry"][0]["resource"]["issue"][0]["severity"], "warning");
        let e = parse(d, &pairs(&[("_sort", "date")])).unwrap_err();
        assert_eq!(e.expression.as_deref(), Some("_sort"));
    }

    #[test]
    fn paging_links_carry_the_search() {
        let mut r = parse(
            def("Observation").unwrap(),
            &pairs(&[("code", "718-7"), ("_count", "2")]),
        )
        .unwrap();
        let b = bundle("http://h/fhir/r4", "Observation", &r, 5, vec![]);
        let next = b["link"][1]["url"].as_str().unwrap();
        assert_eq!(
            next,
            "http://h/fhir/r4/Observation?code=718-7&_count=2&_offset=2"
        );
        r.offset = 4;
        let b = bundle("http://h/fhir/r4", "Observation", &r, 5, vec![]);
        assert_eq!(b["link"].as_array().unwrap().len(), 2, "{b}");
        assert_eq!(b["link"][1]["relation"], "previous");
    }
}
