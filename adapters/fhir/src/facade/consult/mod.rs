//! The consultation as FHIR (issue 16 item 5; STANDARDS FHIR-02, FHIR-10):
//!
//! | resource | id | from |
//! |---|---|---|
//! | Task | `{id}` | status and businessStatus per FHIR-10, owner (the accepted expert, or the one the open offer is for), the SLA deadline in `restriction.period.end`, `output` → the opinion |
//! | ServiceRequest | `cr-{id}` | the request: `intent=order`, category consult, priority, reasonCode ICD-10, performerType the department |
//! | Encounter | `cs-{id}` | the session once an expert accepted: class `v3-ActCode#VR`, planned → in-progress → finished/cancelled |
//! | DiagnosticReport | `co-{id}` | the expert's signed opinion (LOINC 11488-4 Consult note): diagnoses, plan, advice |
//! | Provenance | `ev-{id}-{version}` | each event: who (and which plugin version), when, why; the opinion's signature |
//!
//! All but Provenance carry the consultation's version as `meta.versionId`; a vread replays
//! the events up to that version. A consultation is visible to the facilities of its access
//! list, as in `/api/consultations`. Searches pre-select consultations by their clear columns
//! (ids, patient, state, scope), project them, and match the rest in memory.

mod project;

pub use project::{
    BUSINESS_STATUS, DEPARTMENT, USER, consent, encounter, opinion_report, provenance,
    service_request, task,
};

use huizhen_core::store::fhir::ConsultationSelect;
use huizhen_domain::consultation::{Consultation, Event, State};
use serde_json::Value;

use super::context::{Ctx, ExpertView, Served, with_meta};
use super::index::index;
use super::outcome::Fail;
use super::search::SearchRequest;
use super::table::ResourceDef;

/// Most consultations a search projects before it asks for a narrower one.
const MAX_CANDIDATES: i64 = 2_000;

/// The resources of type `ty` a consultation projects (at its version), with their last
/// change; Provenance needs the events.
fn project(ty: &str, c: &Consultation, created: i64, events: &[Event]) -> Vec<(Value, i64)> {
    let changed = c.last_modified().timestamp_millis();
    let version = i64::try_from(c.version()).unwrap_or(i64::MAX);
    let one = |v: Option<Value>| {
        v.map(|j| vec![(with_meta(j, version, changed), changed)])
            .unwrap_or_default()
    };
    match ty {
        "Task" => one(Some(task(c, created))),
        "ServiceRequest" => one(Some(service_request(c, created))),
        "Encounter" => one(encounter(c)),
        "DiagnosticReport" => one(opinion_report(c)),
        "Consent" => one(consent(c)),
        "Provenance" => events
            .iter()
            .map(|e| {
                let at = e.at.timestamp_millis();
                (with_meta(provenance(c, e), 1, at), at)
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn visible(ctx: &Ctx, facilities: &[String]) -> bool {
    facilities.iter().any(|f| ctx.caller.scope.allows(f))
}

/// The consultation id and the version of a projected id.
fn parse_id(ty: &str, id: &str) -> Option<(String, Option<i64>)> {
    match ty {
        "Task" => Some((id.to_owned(), None)),
        "ServiceRequest" => id.strip_prefix("cr-").map(|c| (c.to_owned(), None)),
        "Encounter" => id.strip_prefix("cs-").map(|c| (c.to_owned(), None)),
        "DiagnosticReport" => id.strip_prefix("co-").map(|c| (c.to_owned(), None)),
        "Consent" => id.strip_prefix("cn-").map(|c| (c.to_owned(), None)),
        "Provenance" => {
            let rest = id.strip_prefix("ev-")?;
            let (c, v) = rest.rsplit_once('-')?;
            Some((c.to_owned(), Some(v.parse().ok()?)))
        }
        _ => None,
    }
}

pub async fn read(
    ctx: &Ctx,
    def: &ResourceDef,
    id: &str,
    version: Option<i64>,
) -> Result<Option<Served>, Fail> {
    let Some((cid, event)) = parse_id(def.name, id) else {
        return Ok(None);
    };
    let Some(stored) = ctx
        .s
        .store
        .consultation(&cid)
        .await
        .map_err(|e| Fail::store(&e))?
    else {
        return Ok(None);
    };
    let facility = stored.consultation.request().requesting_facility.clone();
    if !visible(ctx, &stored.facilities) {
        ctx.audit(
            &ctx.event(
                "fhir.read",
                def.name,
                id,
                "denied",
                "outside the caller's scope".into(),
            )
            .about(&facility),
        )
        .await?;
        return Ok(None);
    }
    let history = if event.is_some() || version.is_some() {
        ctx.s
            .store
            .consultation_history(&cid)
            .await
            .map_err(|e| Fail::store(&e))?
    } else {
        Vec::new()
    };
    let c = match version {
        Some(v) if def.name != "Provenance" => {
            let upto: Vec<Event> = history
                .iter()
                .filter(|e| i64::try_from(e.version).is_ok_and(|x| x <= v))
                .cloned()
                .collect();
            if upto.len() as i64 != v {
                return Ok(None);
            }
            match Consultation::replay(&upto) {
                Ok(c) => c,
                Err(_) => return Ok(None),
            }
        }
        Some(v) if v != 1 => return Ok(None),
        _ => stored.consultation.clone(),
    };
    let events: Vec<Event> = match event {
        Some(v) => history
            .into_iter()
            .filter(|e| i64::try_from(e.version).is_ok_and(|x| x == v))
            .collect(),
        None => Vec::new(),
    };
    Ok(project(def.name, &c, stored.created_at, &events)
        .into_iter()
        .next()
        .map(|(json, last_updated)| Served {
            json,
            last_updated,
            facility: Some(facility),
        }))
}

/// What the clear columns can pre-select for a search (a superset of the matches).
fn select(ctx: &Ctx, def: &ResourceDef, req: &SearchRequest) -> ConsultationSelect {
    let mut sel = ConsultationSelect {
        scope: ctx.caller.scope.facilities(),
        limit: MAX_CANDIDATES + 1,
        ..ConsultationSelect::default()
    };
    if let Some(ids) = req.ids() {
        sel.ids = Some(
            ids.iter()
                .filter_map(|i| parse_id(def.name, i).map(|(c, _)| c))
                .collect(),
        );
    }
    let patient_param = match def.name {
        "Task" | "ServiceRequest" | "Encounter" | "DiagnosticReport" | "Consent" => Some("patient"),
        _ => None,
    };
    if let Some(pp) = patient_param {
        let values = req.terms(pp);
        if !values.is_empty() {
            // Only persons of the identity index are consultation patients.
            sel.patients = Some(
                values
                    .iter()
                    .filter_map(|v| v.strip_prefix("Patient/person-")?.parse().ok())
                    .collect(),
            );
        }
    }
    if def.name == "Task" {
        let codes = req.terms("business-status");
        let mut states: Option<Vec<String>> = None;
        if !codes.is_empty() {
            states = Some(
                codes
                    .iter()
                    .map(|c| c.rsplit('|').next().unwrap_or(c).to_owned())
                    .collect(),
            );
        }
        let statuses = req.terms("status");
        if !statuses.is_empty() {
            let from_status: Vec<String> = State::ALL
                .iter()
                .filter(|s| statuses.contains(&s.task_status().code()))
                .map(|s| s.code().to_owned())
                .collect();
            states = Some(match states {
                Some(a) => a.into_iter().filter(|s| from_status.contains(s)).collect(),
                None => from_status,
            });
        }
        sel.states = states;
        let groups = req.terms("group-identifier");
        if !groups.is_empty() {
            let ids: Vec<String> = groups
                .iter()
                .map(|g| g.rsplit('|').next().unwrap_or(g).to_owned())
                .collect();
            sel.ids = Some(match sel.ids {
                Some(a) => a.into_iter().filter(|x| ids.contains(x)).collect(),
                None => ids,
            });
        }
    }
    sel
}

pub async fn search(
    ctx: &Ctx,
    def: &ResourceDef,
    req: &SearchRequest,
    need: usize,
) -> Result<(Vec<Served>, usize), Fail> {
    let sel = select(ctx, def, req);
    let ids = ctx.s.store.fhir_consultation_ids(&sel).await?;
    if ids.len() as i64 > MAX_CANDIDATES {
        return Err(Fail::new(
            axum::http::StatusCode::BAD_REQUEST,
            "too-costly",
            format!(
                "more than {MAX_CANDIDATES} consultations to look at; narrow the search (patient, status, business-status, _id)"
            ),
        ));
    }
    let mut matched = Vec::new();
    for cid in ids {
        let Some(stored) = ctx
            .s
            .store
            .consultation(&cid)
            .await
            .map_err(|e| Fail::store(&e))?
        else {
            continue;
        };
        if !visible(ctx, &stored.facilities) {
            continue;
        }
        let events = if def.name == "Provenance" {
            ctx.s
                .store
                .consultation_history(&cid)
                .await
                .map_err(|e| Fail::store(&e))?
        } else {
            Vec::new()
        };
        let facility = stored.consultation.request().requesting_facility.clone();
        for (json, last_updated) in
            project(def.name, &stored.consultation, stored.created_at, &events)
        {
            let ix = index(def, &json);
            let id = json["id"].as_str().unwrap_or_default().to_owned();
            if req
                .criteria
                .iter()
                .all(|c| c.matches(&id, last_updated, &ix))
            {
                matched.push(Served {
                    json,
                    last_updated,
                    facility: Some(facility.clone()),
                });
            }
        }
    }
    let total = matched.len();
    matched.sort_by_key(|s| std::cmp::Reverse(s.last_updated));
    matched.truncate(need);
    Ok((matched, total))
}

/// The consultation resources of persons `persons` the caller may see (for `$everything`).
pub async fn about_persons(
    ctx: &Ctx,
    persons: &[i64],
    only: Option<&[String]>,
) -> Result<Vec<Served>, Fail> {
    if persons.is_empty() {
        return Ok(Vec::new());
    }
    let sel = ConsultationSelect {
        patients: Some(persons.to_vec()),
        ids: only.map(<[String]>::to_vec),
        scope: if ctx.is_expert() {
            None
        } else {
            ctx.caller.scope.facilities()
        },
        limit: MAX_CANDIDATES,
        ..ConsultationSelect::default()
    };
    let mut out = Vec::new();
    for cid in ctx.s.store.fhir_consultation_ids(&sel).await? {
        let Some(stored) = ctx
            .s
            .store
            .consultation(&cid)
            .await
            .map_err(|e| Fail::store(&e))?
        else {
            continue;
        };
        let facility = stored.consultation.request().requesting_facility.clone();
        for ty in [
            "Task",
            "ServiceRequest",
            "Encounter",
            "DiagnosticReport",
            "Consent",
        ] {
            for (json, last_updated) in project(ty, &stored.consultation, stored.created_at, &[]) {
                out.push(Served {
                    json,
                    last_updated,
                    facility: Some(facility.clone()),
                });
            }
        }
    }
    Ok(out)
}

/// What an expert may see (FHIR-22): the consultations they accepted or have an open offer
/// of, their patients, and the stored Patients of those persons (found by the identity
/// index's facility and local id among the stored Patients' identifiers).
pub async fn expert_view(ctx: &Ctx) -> Result<ExpertView, Fail> {
    let me = ctx.caller.principal.sub.clone();
    let scope = ctx.caller.scope.facilities();
    let ids = ctx
        .s
        .store
        .fhir_expert_consultation_ids(&me, scope.as_deref())
        .await?;
    let mut view = ExpertView::default();
    for cid in ids {
        let Some(stored) = ctx
            .s
            .store
            .consultation(&cid)
            .await
            .map_err(|e| Fail::store(&e))?
        else {
            continue;
        };
        let c = &stored.consultation;
        let open_to_me = c.current_attempt().is_some_and(|a| a.is_open_to(&me));
        if c.accepted_by() == Some(me.as_str()) || open_to_me {
            view.consultations.push(cid);
            let p = c.patient() as i64;
            if !view.persons.contains(&p) {
                view.persons.push(p);
            }
        }
    }
    view.stored_patients = stored_patients_of(ctx, &view.persons).await?;
    Ok(view)
}

/// The stored Patients whose identifier is the local id of one of the persons' records in
/// that record's facility.
pub async fn stored_patients_of(ctx: &Ctx, persons: &[i64]) -> Result<Vec<String>, Fail> {
    let mut out = Vec::new();
    for p in persons {
        for rec in ctx.s.store.identities_of_person(*p, None).await? {
            for id in ctx
                .s
                .store
                .fhir_ids_with_term("Patient", "identifier", &rec.local_id, &rec.facility)
                .await?
            {
                if !out.contains(&id) {
                    out.push(id);
                }
            }
        }
    }
    Ok(out)
}
