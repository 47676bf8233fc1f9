//! Patients of the identity index (`Patient/person-{n}`: one per master person, with the
//! identifier of every record the caller may see), and the patient operations: `$match`
//! (PDQm ITI-119, IHE-02), `$ihe-pix` (PIXm ITI-83, IHE-01) and `$everything` (FHIR-22).
//!
//! A person is visible when one of their records is in the caller's read scope (as in
//! `/api/patients`); an expert sees only the persons of consultations they own or owned.
//! A record's identifier system is its facility (the assigning authority): the facility
//! itself when it is a URI or OID (`urn:…`, `http…`), else `urn:huizhen:facility:{code}`.

use axum::http::StatusCode;
use huizhen_core::store::identity::IdentityRow;
use huizhen_domain::identity::{
    Demographics, Grade, NormalizedPerson, PersonName, blocking_keys, normalize,
};
use huizhen_domain::patient::Sex;
use serde_json::{Value, json};

use super::context::{Ctx, Served, with_meta};
use super::index::index;
use super::outcome::Fail;
use super::search::SearchRequest;
use super::table::def;

/// Most persons a search looks at before it asks for a narrower one.
const MAX_CANDIDATES: usize = 2_000;

/// The identifier system of a facility's records.
pub fn facility_system(facility: &str) -> String {
    if facility.starts_with("urn:")
        || facility.starts_with("http://")
        || facility.starts_with("https://")
    {
        facility.to_owned()
    } else {
        format!("urn:huizhen:facility:{facility}")
    }
}

/// The facility of an identifier system (the inverse of [`facility_system`]).
pub fn system_facility(system: &str) -> String {
    system
        .strip_prefix("urn:huizhen:facility:")
        .unwrap_or(system)
        .to_owned()
}

fn person_id(id: &str) -> Option<i64> {
    id.strip_prefix("person-")?.parse().ok().filter(|p| *p > 0)
}

/// The records of a person the caller may see (all of them for an expert who may see the
/// person); empty when none.
async fn records(ctx: &Ctx, person: i64) -> Result<Vec<IdentityRow>, Fail> {
    if let Some(view) = ctx.expert().await? {
        if !view.persons.contains(&person) {
            return Ok(Vec::new());
        }
        return Ok(ctx.s.store.identities_of_person(person, None).await?);
    }
    let scope = ctx.caller.scope.facilities();
    Ok(ctx
        .s
        .store
        .identities_of_person(person, scope.as_deref())
        .await?)
}

/// The Patient of a person from their records (names, birth date, sex and phones of the
/// records, each once).
async fn project(ctx: &Ctx, person: i64, rows: &[IdentityRow]) -> Result<Option<Served>, Fail> {
    if rows.is_empty() {
        return Ok(None);
    }
    let mut identifiers = Vec::new();
    let mut names: Vec<Value> = Vec::new();
    let mut birth = None;
    let mut sex = None;
    let mut phones: Vec<String> = Vec::new();
    for r in rows {
        identifiers.push(json!({
            "use": if r.active { "usual" } else { "old" },
            "system": facility_system(&r.facility),
            "value": r.local_id,
        }));
        let Some(p) = ctx
            .s
            .store
            .identity_person(&r.facility, &r.local_id)
            .await?
        else {
            continue;
        };
        for n in &p.names {
            let mut name = json!({});
            if let Some(h) = &n.hanzi {
                name["text"] = json!(h);
            }
            if let Some(f) = &n.family {
                name["family"] = json!(f);
            }
            if let Some(g) = &n.given {
                name["given"] = json!([g]);
            }
            if name.as_object().is_some_and(|o| !o.is_empty()) && !names.contains(&name) {
                names.push(name);
            }
        }
        if birth.is_none() {
            birth = p
                .birth_date
                .as_ref()
                .map(|b| b.date.format("%Y-%m-%d").to_string());
        }
        if sex.is_none() {
            sex = p.sex;
        }
        for ph in &p.phones {
            if !phones.contains(ph) {
                phones.push(ph.clone());
            }
        }
    }
    let last = rows.iter().map(|r| r.updated_at).max().unwrap_or(0);
    let mut j = json!({
        "resourceType": "Patient",
        "id": format!("person-{person}"),
        "identifier": identifiers,
        "active": rows.iter().any(|r| r.active),
    });
    if !names.is_empty() {
        j["name"] = Value::Array(names);
    }
    if !phones.is_empty() {
        j["telecom"] = Value::Array(
            phones
                .iter()
                .map(|p| json!({"system": "phone", "value": p}))
                .collect(),
        );
    }
    if let Some(s) = sex {
        j["gender"] = json!(match s {
            Sex::Male => "male",
            Sex::Female => "female",
            Sex::Other => "other",
            Sex::Unknown => "unknown",
        });
    }
    if let Some(b) = birth {
        j["birthDate"] = json!(b);
    }
    Ok(Some(Served {
        json: with_meta(j, last, last),
        last_updated: last,
        facility: rows.first().map(|r| r.facility.clone()),
    }))
}

/// `Patient/person-{n}` (vread: only the current version, whose id is its last change).
pub async fn read(ctx: &Ctx, id: &str, version: Option<i64>) -> Result<Option<Served>, Fail> {
    let Some(person) = person_id(id) else {
        return Ok(None);
    };
    let rows = records(ctx, person).await?;
    if rows.is_empty() {
        let all = ctx.s.store.identities_of_person(person, None).await?;
        if let Some(first) = all.first() {
            ctx.audit(
                &ctx.event(
                    "fhir.read",
                    "Patient",
                    id,
                    "denied",
                    "no record of the person is visible to the caller".into(),
                )
                .about(&first.facility),
            )
            .await?;
        }
        return Ok(None);
    }
    let served = project(ctx, person, &rows).await?;
    Ok(served.filter(|s| version.is_none_or(|v| v == s.last_updated)))
}

/// A query record from the search's demographics (for the matcher's blocking keys).
fn query_person(req: &SearchRequest) -> Option<NormalizedPerson> {
    let names: Vec<PersonName> = ["name", "family", "given"]
        .iter()
        .flat_map(|p| req.terms(p))
        .map(PersonName::text)
        .collect();
    let phones: Vec<String> = req
        .terms("telecom")
        .iter()
        .map(|t| t.rsplit('|').next().unwrap_or(t).to_owned())
        .collect();
    let birth = req.criteria.iter().find_map(|c| match c {
        huizhen_core::store::fhir::Criterion::Date { param, any_of } if param == "birthdate" => {
            any_of.first().map(|(_, lo, _)| {
                chrono::DateTime::from_timestamp_millis(*lo)
                    .map(|d| d.format("%Y-%m-%d").to_string())
                    .unwrap_or_default()
            })
        }
        _ => None,
    });
    if names.is_empty() && phones.is_empty() && birth.is_none() {
        return None;
    }
    Some(normalize(&Demographics {
        facility: String::new(),
        local_id: String::new(),
        identifiers: vec![],
        names,
        birth_date: birth,
        sex: None,
        phones,
        addresses: vec![],
    }))
}

pub async fn search(
    ctx: &Ctx,
    req: &SearchRequest,
    need: usize,
) -> Result<(Vec<Served>, usize), Fail> {
    let scope = if ctx.is_expert() {
        None
    } else {
        ctx.caller.scope.facilities()
    };
    let candidates: Vec<i64> = if let Some(ids) = req.ids() {
        ids.iter().filter_map(|i| person_id(i)).collect()
    } else if !req.terms("identifier").is_empty() {
        let mut out = Vec::new();
        for v in req.terms("identifier") {
            let (facility, value) = match v.split_once('|') {
                Some((s, val)) if !s.is_empty() => (Some(system_facility(s)), val),
                Some((_, val)) => (None, val),
                None => (None, v),
            };
            if value.is_empty() {
                continue;
            }
            out.extend(
                ctx.s
                    .store
                    .fhir_persons_by_local_id(value, facility.as_deref(), scope.as_deref())
                    .await?,
            );
        }
        out
    } else if let Some(q) = query_person(req) {
        let keys = blocking_keys(&q);
        let found = ctx
            .s
            .store
            .identity_prefetch(&keys, MAX_CANDIDATES, scope.as_deref())
            .await?;
        found.entries.iter().map(|e| e.person_id as i64).collect()
    } else if let Some(view) = ctx.expert().await? {
        view.persons.clone()
    } else {
        let (ids, total) = ctx
            .s
            .store
            .fhir_person_page(
                scope.as_deref(),
                i64::try_from(MAX_CANDIDATES).unwrap_or(i64::MAX) + 1,
                0,
            )
            .await?;
        if req.criteria.is_empty() {
            // Nothing to match: the page is the answer, the count is exact.
            let mut out = Vec::new();
            for p in ids.into_iter().take(need) {
                if let Some(s) = project(ctx, p, &records(ctx, p).await?).await? {
                    out.push(s);
                }
            }
            return Ok((out, usize::try_from(total).unwrap_or(0)));
        }
        if ids.len() > MAX_CANDIDATES {
            return Err(Fail::new(
                StatusCode::BAD_REQUEST,
                "too-costly",
                "more than 2000 persons to look at; search the identity index by identifier, name, birthdate, telecom or _id",
            ));
        }
        ids
    };
    let mut seen = Vec::new();
    let mut matched = Vec::new();
    let patient_def = def("Patient").unwrap_or_else(|| unreachable!("Patient is in the table"));
    for p in candidates {
        if seen.contains(&p) {
            continue;
        }
        seen.push(p);
        let rows = records(ctx, p).await?;
        let Some(s) = project(ctx, p, &rows).await? else {
            continue;
        };
        let ix = index(patient_def, &s.json);
        let id = format!("person-{p}");
        if req
            .criteria
            .iter()
            .all(|c| c.matches(&id, s.last_updated, &ix))
        {
            matched.push(s);
        }
    }
    let total = matched.len();
    matched.sort_by_key(|s| std::cmp::Reverse(s.last_updated));
    matched.truncate(need);
    Ok((matched, total))
}

/// `POST Patient/$match`: a Parameters with `resource` (a Patient), `onlyCertainMatches`,
/// `count`; the answer is a searchset of person Patients, each with its match-grade and
/// score.
pub async fn match_op(ctx: &Ctx, body: &[u8]) -> Result<Value, Fail> {
    let params: Value = serde_json::from_slice(body)
        .map_err(|e| Fail::invalid("(body)", format!("the body is not JSON: {e}")))?;
    if params["resourceType"] != "Parameters" {
        return Err(Fail::invalid(
            "resourceType",
            "$match takes a Parameters resource",
        ));
    }
    let mut patient = None;
    let mut only_certain = false;
    let mut count = 10usize;
    for (i, p) in params["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        match p["name"].as_str() {
            Some("resource") => patient = Some(p["resource"].clone()),
            Some("onlyCertainMatches") => {
                only_certain = p["valueBoolean"].as_bool().unwrap_or(false)
            }
            Some("count") => {
                count = p["valueInteger"]
                    .as_u64()
                    .and_then(|c| usize::try_from(c).ok())
                    .filter(|c| (1..=100).contains(c))
                    .ok_or_else(|| {
                        Fail::invalid(
                            &format!("parameter[{i}].valueInteger"),
                            "count: an integer 1..=100",
                        )
                    })?;
            }
            Some(other) => {
                return Err(Fail::invalid(
                    &format!("parameter[{i}].name"),
                    format!("unknown $match parameter {other:?}"),
                ));
            }
            None => return Err(Fail::invalid(&format!("parameter[{i}].name"), "missing")),
        }
    }
    let mut patient = patient.ok_or_else(|| {
        Fail::invalid(
            "parameter",
            "$match needs a `resource` parameter (a Patient)",
        )
    })?;
    if patient.get("id").is_none() && patient.get("identifier").is_none() {
        // The matcher reads a record; a query has no local id of its own.
        patient["id"] = json!("query");
    }
    let text = serde_json::to_string(&patient).unwrap_or_default();
    let demographics = crate::patient_demographics(&text, "")
        .map_err(|e| Fail::invalid("parameter.resource", format!("resource: {e}")))?;
    let person = normalize(&demographics);
    let scope = ctx.caller.scope.facilities();
    let matcher = huizhen_core::patients::default_matcher();
    let decision =
        huizhen_core::patients::decide(&ctx.s.store, &matcher, &person, scope.as_deref()).await?;
    let mut entries = Vec::new();
    for c in decision.candidates.iter() {
        if only_certain && c.grade != Grade::Certain {
            continue;
        }
        if entries.len() >= count {
            break;
        }
        let p = c.person_id as i64;
        let Some(s) = project(ctx, p, &records(ctx, p).await?).await? else {
            continue;
        };
        let grade = huizhen_core::store::identity::grade_name(c.grade);
        let score = (1.0 / (1.0 + (-c.score / 10.0).exp()) * 1000.0).round() / 1000.0;
        entries.push(json!({
            "fullUrl": format!("{}/Patient/{}", ctx.base, s.json["id"].as_str().unwrap_or_default()),
            "resource": s.json,
            "search": {
                "extension": [{ "url": "http://hl7.org/fhir/StructureDefinition/match-grade", "valueCode": grade }],
                "mode": "match",
                "score": score,
            },
        }));
    }
    ctx.audit(&ctx.event(
        "fhir.patient.match",
        "Patient",
        "",
        "success",
        format!("{} candidates", entries.len()),
    ))
    .await?;
    let mut b = json!({
        "resourceType": "Bundle",
        "id": huizhen_core::message::new_id(),
        "type": "searchset",
        "total": entries.len(),
    });
    if !entries.is_empty() {
        b["entry"] = Value::Array(entries);
    }
    Ok(b)
}

/// `GET Patient/$ihe-pix?sourceIdentifier=system|value[&targetSystem=…]`: the person's other
/// identifiers as Parameters (`targetIdentifier`, `targetId`); 404 for an unknown identifier.
pub async fn pix(ctx: &Ctx, pairs: &[(String, String)]) -> Result<Value, Fail> {
    let mut source = None;
    let mut targets = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            "sourceIdentifier" => source = Some(v.clone()),
            "targetSystem" => targets.extend(v.split(',').map(str::to_owned)),
            "_format" => {}
            other => {
                return Err(Fail::invalid(
                    other,
                    format!(
                        "unknown $ihe-pix parameter {other:?} (sourceIdentifier, targetSystem)"
                    ),
                ));
            }
        }
    }
    let source = source.ok_or_else(|| {
        Fail::invalid(
            "sourceIdentifier",
            "sourceIdentifier=system|value is required",
        )
    })?;
    let Some((system, value)) = source
        .split_once('|')
        .filter(|(s, v)| !s.is_empty() && !v.is_empty())
    else {
        return Err(Fail::invalid("sourceIdentifier", "expected system|value"));
    };
    let facility = system_facility(system);
    let scope = ctx.caller.scope.facilities();
    let not_found = || {
        Fail::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "sourceIdentifier is not known to the identity index",
        )
    };
    let row = ctx
        .s
        .store
        .identity(&facility, value)
        .await?
        .ok_or_else(not_found)?;
    if !ctx.caller.scope.allows(&row.facility) {
        ctx.audit(
            &ctx.event(
                "fhir.patient.pix",
                "Patient",
                &format!("person-{}", row.person_id),
                "denied",
                "outside the caller's scope".into(),
            )
            .about(&row.facility),
        )
        .await?;
        return Err(not_found());
    }
    let rows = ctx
        .s
        .store
        .identities_of_person(row.person_id, scope.as_deref())
        .await?;
    let mut parameter = Vec::new();
    for r in rows
        .iter()
        .filter(|r| !(r.facility == facility && r.local_id == value))
    {
        let sys = facility_system(&r.facility);
        if !targets.is_empty() && !targets.contains(&sys) {
            continue;
        }
        parameter.push(json!({
            "name": "targetIdentifier",
            "valueIdentifier": { "use": if r.active { "usual" } else { "old" }, "system": sys, "value": r.local_id },
        }));
    }
    parameter.push(json!({ "name": "targetId", "valueReference": { "reference": format!("Patient/person-{}", row.person_id) } }));
    ctx.audit(
        &ctx.event(
            "fhir.patient.pix",
            "Patient",
            &format!("person-{}", row.person_id),
            "success",
            format!("{} identifiers", parameter.len() - 1),
        )
        .about(&row.facility),
    )
    .await?;
    Ok(json!({ "resourceType": "Parameters", "parameter": parameter }))
}

/// The persons and stored Patients that are this patient: a person's stored Patients (by
/// identifier), or a stored Patient's persons (by its identifiers in its facility).
pub async fn linked(ctx: &Ctx, id: &str) -> Result<(Vec<i64>, Vec<String>), Fail> {
    if let Some(p) = person_id(id) {
        let stored = super::consult::stored_patients_of(ctx, &[p]).await?;
        return Ok((vec![p], stored));
    }
    let Some(row) = ctx.s.store.fhir_read("Patient", id).await? else {
        return Ok((Vec::new(), vec![id.to_owned()]));
    };
    let body: Value = serde_json::from_str(&row.body).unwrap_or(Value::Null);
    let mut persons = Vec::new();
    for ident in body["identifier"].as_array().into_iter().flatten() {
        if let Some(v) = ident["value"].as_str()
            && let Some(r) = ctx.s.store.identity(&row.facility, v).await?
            && !persons.contains(&r.person_id)
        {
            persons.push(r.person_id);
        }
    }
    let mut stored = super::consult::stored_patients_of(ctx, &persons).await?;
    if !stored.contains(&row.id) {
        stored.push(row.id);
    }
    Ok((persons, stored))
}
