//! `GET Patient/{id}/$everything` (FHIR-22): the patient's record the caller may see, as a
//! `searchset` — the Patient (the person of the identity index and the stored Patients that
//! are the same person, found by identifier), the stored resources about them, and their
//! consultations (Task, ServiceRequest, Encounter, opinion).
//!
//! An expert gets only patients of consultations they own or owned (403 otherwise, audited),
//! and of those only their own consultations; others see what their facility scope allows.
//! Parameters: `start`, `end` (the resource's clinical dates, where it has one), `_since`
//! (last change), `_type` (a comma list), `_count` and `_offset`.

use serde_json::Value;

use super::consult;
use super::context::{self, Ctx, Served};
use super::index::{date_range, index};
use super::outcome::Fail;
use super::patient::linked;
use super::search::{self, Entry, SearchRequest};
use super::stored;
use super::table::{Source, TABLE, def};

/// Most resources of one type gathered.
const PER_TYPE: usize = 1_000;

pub async fn patient(ctx: &Ctx, id: &str, pairs: &[(String, String)]) -> Result<Value, Fail> {
    let mut start = None;
    let mut end = None;
    let mut since = None;
    let mut types: Option<Vec<String>> = None;
    let mut req = SearchRequest {
        count: search::DEFAULT_COUNT,
        ..SearchRequest::default()
    };
    for (k, v) in pairs {
        let date = |name: &str| {
            date_range(v)
                .ok_or_else(|| Fail::invalid(name, format!("{name}: {v:?} is not a FHIR date")))
        };
        match k.as_str() {
            "start" => start = Some(date("start")?),
            "end" => end = Some(date("end")?),
            "_since" => since = Some(date("_since")?),
            "_type" => {
                let list: Vec<String> = v.split(',').map(|t| t.trim().to_owned()).collect();
                if let Some(bad) = list.iter().find(|t| def(t).is_none()) {
                    return Err(Fail::invalid(
                        "_type",
                        format!("_type: {bad:?} is not served here"),
                    ));
                }
                types = Some(list);
            }
            "_count" => {
                req.count = v
                    .parse::<usize>()
                    .map_err(|_| Fail::invalid("_count", "_count: not a number"))?
                    .min(search::MAX_COUNT);
            }
            "_offset" => {
                req.offset = v
                    .parse()
                    .map_err(|_| Fail::invalid("_offset", "_offset: not a number"))?;
                continue;
            }
            other => {
                return Err(Fail::invalid(
                    other,
                    format!(
                        "unknown $everything parameter {other:?} (start, end, _since, _type, _count)"
                    ),
                ));
            }
        }
        req.params.push((k.clone(), v.clone()));
    }
    let patient_def = def("Patient").unwrap_or_else(|| unreachable!("Patient is in the table"));
    let (mut persons, mut stored_ids) = linked(ctx, id).await?;
    let mut only_consultations = None;
    if let Some(view) = ctx.expert().await? {
        let assigned = persons.iter().any(|p| view.persons.contains(p))
            || stored_ids.iter().any(|s| view.stored_patients.contains(s));
        if !assigned {
            ctx.audit(&ctx.event(
                "fhir.everything",
                "Patient",
                id,
                "denied",
                "the expert owns no consultation of this patient".into(),
            ))
            .await?;
            return Err(Fail::forbidden(
                "an expert sees only patients of consultations they own or owned (FHIR-22)",
            ));
        }
        persons.retain(|p| view.persons.contains(p));
        stored_ids.retain(|s| view.stored_patients.contains(s));
        only_consultations = Some(view.consultations.clone());
    } else if context::read(ctx, patient_def, id, None).await?.is_none() {
        return Err(Fail::not_found("Patient", id));
    }
    let wanted = |t: &str| types.as_ref().is_none_or(|l| l.iter().any(|x| x == t));
    let mut all: Vec<Served> = Vec::new();
    if wanted("Patient") {
        for p in &persons {
            if let Some(s) = context::read(ctx, patient_def, &format!("person-{p}"), None).await? {
                all.push(s);
            }
        }
    }
    for d in TABLE
        .iter()
        .filter(|d| d.sources.contains(&Source::Stored) && wanted(d.name))
    {
        all.extend(stored::about_patients(ctx, d, &stored_ids, &[], PER_TYPE).await?);
    }
    for s in consult::about_persons(ctx, &persons, only_consultations.as_deref()).await? {
        if wanted(s.json["resourceType"].as_str().unwrap_or_default()) {
            all.push(s);
        }
    }
    // Filters: _since on the last change, start/end on the clinical dates.
    all.retain(|s| since.is_none_or(|(lo, _)| s.last_updated >= lo));
    if start.is_some() || end.is_some() {
        all.retain(|s| {
            let Some(d) = s.json["resourceType"].as_str().and_then(def) else {
                return true;
            };
            let ix = index(d, &s.json);
            let dates: Vec<(i64, i64)> = ix
                .dates
                .iter()
                .filter(|(p, ..)| p != "birthdate" && p != "modified")
                .map(|(_, lo, hi)| (*lo, *hi))
                .collect();
            dates.is_empty()
                || dates.iter().any(|(lo, hi)| {
                    start.is_none_or(|(s, _)| *hi > s) && end.is_none_or(|(_, e)| *lo < e)
                })
        });
    }
    let mut seen = Vec::new();
    all.retain(|s| {
        let k = format!(
            "{}/{}",
            s.json["resourceType"].as_str().unwrap_or(""),
            s.json["id"].as_str().unwrap_or("")
        );
        if seen.contains(&k) {
            false
        } else {
            seen.push(k);
            true
        }
    });
    all.sort_by_key(|s| std::cmp::Reverse(s.last_updated));
    let total = all.len();
    ctx.audit(&ctx.event(
        "fhir.everything",
        "Patient",
        id,
        "success",
        format!("{total} resources"),
    ))
    .await?;
    let page: Vec<Entry> = all
        .into_iter()
        .skip(req.offset)
        .take(req.count)
        .map(|s| Entry {
            resource: s.json,
            mode: "match",
        })
        .collect();
    Ok(search::bundle(
        &ctx.base,
        &format!("Patient/{id}/$everything"),
        &req,
        total,
        page,
    ))
}

/// `GET Encounter/{id}/$everything` (FHIR-22): the Encounter the caller may read, its Patient,
/// the stored resources that name it as their `encounter`, and for a consultation's session
/// (`cs-{c}`) the consultation's Task, ServiceRequest and opinion — each only if the caller may
/// read it (an expert: their own consultations' patients). An Encounter the caller may not read
/// is 404, as a read. Parameters: `_since`, `_type`, `_count` (and `_offset`, the links').
pub async fn encounter(ctx: &Ctx, id: &str, pairs: &[(String, String)]) -> Result<Value, Fail> {
    let mut since = None;
    let mut types: Option<Vec<String>> = None;
    let mut req = SearchRequest {
        count: search::DEFAULT_COUNT,
        ..SearchRequest::default()
    };
    for (k, v) in pairs {
        match k.as_str() {
            "_since" => {
                since = Some(date_range(v).ok_or_else(|| {
                    Fail::invalid("_since", format!("_since: {v:?} is not a FHIR date"))
                })?);
            }
            "_type" => {
                let list: Vec<String> = v.split(',').map(|t| t.trim().to_owned()).collect();
                if let Some(bad) = list.iter().find(|t| def(t).is_none()) {
                    return Err(Fail::invalid(
                        "_type",
                        format!("_type: {bad:?} is not served here"),
                    ));
                }
                types = Some(list);
            }
            "_count" => {
                req.count = v
                    .parse::<usize>()
                    .map_err(|_| Fail::invalid("_count", "_count: not a number"))?
                    .min(search::MAX_COUNT);
            }
            "_offset" => {
                req.offset = v
                    .parse()
                    .map_err(|_| Fail::invalid("_offset", "_offset: not a number"))?;
                continue;
            }
            other => {
                return Err(Fail::invalid(
                    other,
                    format!("unknown $everything parameter {other:?} (_since, _type, _count)"),
                ));
            }
        }
        req.params.push((k.clone(), v.clone()));
    }
    let def_of = |t: &str| def(t).unwrap_or_else(|| unreachable!("{t} is in the table"));
    let Some(enc) = context::read(ctx, def_of("Encounter"), id, None).await? else {
        return Err(Fail::not_found("Encounter", id));
    };
    let mut all = Vec::new();
    if let Some(p) = enc.json["subject"]["reference"]
        .as_str()
        .and_then(|r| r.strip_prefix("Patient/"))
        && let Some(s) = context::read(ctx, def_of("Patient"), p, None).await?
    {
        all.push(s);
    }
    if let Some(c) = id.strip_prefix("cs-") {
        for (t, rid) in [
            ("Task", c.to_owned()),
            ("ServiceRequest", format!("cr-{c}")),
            ("DiagnosticReport", format!("co-{c}")),
        ] {
            if let Some(s) = context::read(ctx, def_of(t), &rid, None).await? {
                all.push(s);
            }
        }
    }
    let reference = format!("Encounter/{id}");
    for d in TABLE.iter().filter(|d| {
        d.name != "Encounter"
            && d.sources.contains(&Source::Stored)
            && d.param("encounter").is_some()
    }) {
        let sub = SearchRequest {
            criteria: vec![huizhen_core::store::fhir::Criterion::Terms {
                param: "encounter".into(),
                any_of: vec![reference.clone()],
            }],
            count: PER_TYPE,
            ..SearchRequest::default()
        };
        all.extend(context::search(ctx, d, &sub).await?.0);
    }
    all.insert(0, enc);
    let wanted = |s: &Served| {
        types.as_ref().is_none_or(|l| {
            l.iter()
                .any(|x| Some(x.as_str()) == s.json["resourceType"].as_str())
        })
    };
    all.retain(|s| wanted(s) && since.is_none_or(|(lo, _)| s.last_updated >= lo));
    let mut seen = Vec::new();
    all.retain(|s| {
        let k = format!(
            "{}/{}",
            s.json["resourceType"].as_str().unwrap_or(""),
            s.json["id"].as_str().unwrap_or("")
        );
        !seen.contains(&k) && {
            seen.push(k);
            true
        }
    });
    all.sort_by_key(|s| std::cmp::Reverse(s.last_updated));
    let total = all.len();
    ctx.audit(&ctx.event(
        "fhir.everything",
        "Encounter",
        id,
        "success",
        format!("{total} resources"),
    ))
    .await?;
    let page: Vec<Entry> = all
        .into_iter()
        .skip(req.offset)
        .take(req.count)
        .map(|s| Entry {
            resource: s.json,
            mode: "match",
        })
        .collect();
    Ok(search::bundle(
        &ctx.base,
        &format!("Encounter/{id}/$everything"),
        &req,
        total,
        page,
    ))
}
