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

use base64::Engine as _;
use huizhen_core::store::fhir::ConsultationSelect;
use huizhen_domain::consultation::{Consultation, Event, State, Urgency};
use serde_json::{Value, json};

use super::context::{Ctx, ExpertView, Served, with_meta};
use super::index::{index, instant};
use super::outcome::Fail;
use super::search::SearchRequest;
use super::table::ResourceDef;

/// The local code system of `Task.businessStatus` (FHIR-10).
pub const BUSINESS_STATUS: &str = "urn:huizhen:fhir:consultation-state";
/// The identifier system of consultation ids.
pub const CONSULTATION: &str = "urn:huizhen:consultation";
/// The code system of consultation events (Provenance.activity).
pub const EVENT: &str = "urn:huizhen:fhir:consultation-event";
/// Departments (诊疗科目 or local codes).
pub const DEPARTMENT: &str = "urn:huizhen:department";
/// The practitioner ids of the platform (doctors, experts, users).
pub const USER: &str = "urn:huizhen:user";

/// Most consultations a search projects before it asks for a narrower one.
const MAX_CANDIDATES: i64 = 2_000;

fn ts(t: chrono::DateTime<chrono::Utc>) -> String {
    instant(t.timestamp_millis())
}

fn priority(u: Urgency) -> &'static str {
    match u {
        Urgency::Routine => "routine",
        Urgency::Urgent => "urgent",
        Urgency::Critical => "stat",
    }
}

fn identifier(id: &str) -> Value {
    json!([{ "system": CONSULTATION, "value": id }])
}

fn patient_ref(c: &Consultation) -> Value {
    json!({ "reference": format!("Patient/person-{}", c.patient()) })
}

/// The expert who owns the Task: the accepted one, else the one the open offer is for.
fn owner(c: &Consultation) -> Option<String> {
    if let Some(e) = c.accepted_by() {
        return Some(e.to_owned());
    }
    let a = c.current_attempt()?;
    if a.outcome.is_some() {
        return None;
    }
    match a.remaining().as_slice() {
        [one] if matches!(c.state(), State::Offered | State::Reviewing) => Some(one.expert.clone()),
        _ => None,
    }
}

/// The expert as the directory serves them (PractitionerRole `{expert id}`).
pub fn expert_ref(expert: &str) -> Value {
    json!({ "reference": format!("PractitionerRole/{expert}") })
}

/// A facility as the directory serves it (Organization `{facility}`).
pub fn organization_ref(facility: &str) -> Value {
    json!({ "reference": format!("Organization/{facility}") })
}

/// The Task of a consultation.
pub fn task(c: &Consultation, created: i64) -> Value {
    let id = c.id();
    let state = c.state();
    let mut t = json!({
        "resourceType": "Task",
        "id": id,
        "identifier": identifier(id),
        "groupIdentifier": { "system": CONSULTATION, "value": id },
        "status": state.task_status().code(),
        "businessStatus": {
            "coding": [{ "system": BUSINESS_STATUS, "code": state.code() }],
            "text": state.code(),
        },
        "intent": "order",
        "priority": priority(c.request().urgency),
        "code": { "coding": [{ "system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill" }] },
        "focus": { "reference": format!("ServiceRequest/cr-{id}") },
        "for": patient_ref(c),
        "authoredOn": instant(created),
        "lastModified": ts(c.last_modified()),
        "executionPeriod": { "start": instant(created) },
        "requester": organization_ref(&c.request().requesting_facility),
    });
    if state.is_terminal() {
        t["executionPeriod"]["end"] = json!(ts(c.last_modified()));
    }
    if let Some(r) = c.status_reason() {
        t["statusReason"] = json!({ "text": r });
    }
    if let Some(e) = owner(c) {
        t["owner"] = expert_ref(&e);
    }
    if let Some(a) = c.current_attempt()
        && a.outcome.is_none()
        && matches!(state, State::Offered | State::Reviewing)
    {
        t["restriction"] = json!({ "period": { "end": ts(a.deadline) } });
    }
    if c.opinion().is_some() {
        t["output"] = json!([{
            "type": { "text": "signed opinion" },
            "valueReference": { "reference": format!("DiagnosticReport/co-{id}") },
        }]);
    }
    t
}

/// The ServiceRequest of a consultation.
pub fn service_request(c: &Consultation, created: i64) -> Value {
    let id = c.id();
    let r = c.request();
    let status = match c.state() {
        State::Drafting => "draft",
        State::Paused => "on-hold",
        State::ReportSigned => "completed",
        State::Cancelled | State::Failed(_) => "revoked",
        State::EnteredInError => "entered-in-error",
        _ => "active",
    };
    let mut sr = json!({
        "resourceType": "ServiceRequest",
        "id": format!("cr-{id}"),
        "identifier": identifier(id),
        "status": status,
        "intent": "order",
        "category": [{
            "coding": [
                { "system": "http://snomed.info/sct", "code": "11429006", "display": "Consultation" },
                { "system": "urn:huizhen:fhir:category", "code": "consult" },
            ],
        }],
        "priority": priority(r.urgency),
        "code": { "coding": [{ "system": "http://snomed.info/sct", "code": "11429006", "display": "Consultation" }] },
        "subject": patient_ref(c),
        "authoredOn": instant(created),
        "requester": organization_ref(&r.requesting_facility),
        "performerType": { "coding": [{ "system": DEPARTMENT, "code": r.department }] },
        "reasonCode": [{ "text": r.reason }],
        "note": [{ "text": format!("目的: {}\n病历摘要: {}", r.purpose, r.case_summary) }],
    });
    if let Some(icd) = &r.icd10 {
        sr["reasonCode"][0]["coding"] =
            json!([{ "system": "http://hl7.org/fhir/sid/icd-10", "code": icd.to_string() }]);
    }
    if let Some(e) = owner(c) {
        sr["performer"] = json!([expert_ref(&e)]);
    }
    let studies: Vec<Value> = r
        .attachments
        .studies
        .iter()
        .map(|uid| {
            json!({
                "type": "ImagingStudy",
                "identifier": { "system": "urn:dicom:uid", "value": format!("urn:oid:{uid}") },
            })
        })
        .collect();
    if !studies.is_empty() {
        sr["supportingInfo"] = Value::Array(studies);
    }
    sr
}

/// When the session started and ended (from the timeline).
fn session(c: &Consultation) -> (Option<String>, Option<String>) {
    let tl = c.timeline();
    let start = tl.iter().find(|e| e.event == "started").map(|e| e.at);
    let end = start.and_then(|s| {
        tl.iter()
            .filter(|e| e.at >= s)
            .find(|e| {
                matches!(
                    e.event.as_str(),
                    "report_requested" | "completed" | "cancelled" | "failed" | "entered_in_error"
                )
            })
            .map(|e| e.at)
    });
    (start.map(ts), end.map(ts))
}

/// The session's Encounter (class VR, FHIR-02), once an expert accepted.
pub fn encounter(c: &Consultation) -> Option<Value> {
    let expert = c.accepted_by()?;
    let id = c.id();
    let status = match c.state() {
        State::Scheduled => "planned",
        State::InSession | State::Paused => "in-progress",
        State::ReportPending | State::ReportSigned => "finished",
        State::EnteredInError => "entered-in-error",
        _ => "cancelled",
    };
    let mut e = json!({
        "resourceType": "Encounter",
        "id": format!("cs-{id}"),
        "identifier": identifier(id),
        "status": status,
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "VR",
            "display": "virtual",
        },
        "serviceType": { "coding": [{ "system": DEPARTMENT, "code": c.request().department }] },
        "subject": patient_ref(c),
        "basedOn": [{ "reference": format!("ServiceRequest/cr-{id}") }],
        "participant": [{
            "type": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "CON", "display": "consultant" }] }],
            "individual": expert_ref(expert),
        }],
        "serviceProvider": organization_ref(&c.request().requesting_facility),
    });
    if let Some(p) = &c.gates().physician {
        e["participant"].as_array_mut().map(|ps| {
            ps.push(json!({
                "type": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "ATND", "display": "attender" }] }],
                "individual": { "identifier": { "system": USER, "value": p.practitioner } },
            }))
        });
    }
    let (start, end) = session(c);
    if start.is_some() || end.is_some() {
        e["period"] = json!({});
        if let Some(s) = start {
            e["period"]["start"] = json!(s);
        }
        if let Some(x) = end {
            e["period"]["end"] = json!(x);
        }
    } else if let Some(a) = c.appointment() {
        e["period"] = json!({ "start": ts(a.start), "end": ts(a.end) });
    }
    if let Some(icd) = &c.request().icd10 {
        e["reasonCode"] = json!([{ "coding": [{ "system": "http://hl7.org/fhir/sid/icd-10", "code": icd.to_string() }] }]);
    }
    Some(e)
}

/// The signed opinion as a DiagnosticReport, once recorded.
pub fn opinion_report(c: &Consultation) -> Option<Value> {
    let rec = c.opinion()?;
    let o = &rec.signed.opinion;
    let id = c.id();
    let status = if c.state() == State::EnteredInError {
        "entered-in-error"
    } else {
        "final"
    };
    let mut r = json!({
        "resourceType": "DiagnosticReport",
        "id": format!("co-{id}"),
        "identifier": identifier(id),
        "basedOn": [{ "reference": format!("ServiceRequest/cr-{id}") }],
        "status": status,
        "category": [{ "coding": [{ "system": "http://loinc.org", "code": "LP173418-7", "display": "Note" }] }],
        "code": { "coding": [{ "system": "http://loinc.org", "code": "11488-4", "display": "Consult note" }] },
        "subject": patient_ref(c),
        "effectiveDateTime": ts(rec.signed.signature.signed_at),
        "issued": ts(rec.at),
        "performer": [expert_ref(&o.expert)],
        "conclusion": format!("{}\n{}", o.treatment_plan, o.advice),
    });
    if c.accepted_by().is_some() {
        r["encounter"] = json!({ "reference": format!("Encounter/cs-{id}") });
    }
    let codes: Vec<Value> = o
        .diagnoses
        .iter()
        .map(|d| {
            json!({
                "coding": [{ "system": "http://hl7.org/fhir/sid/icd-10", "code": d.code.to_string() }],
                "text": d.text,
            })
        })
        .collect();
    if !codes.is_empty() {
        r["conclusionCode"] = Value::Array(codes);
    }
    Some(r)
}

/// The Provenance of one event (FHIR-10: who, when, which plugin version decided).
pub fn provenance(c: &Consultation, e: &Event) -> Value {
    let id = c.id();
    let mut agents = vec![json!({
        "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "author" }] },
        "role": [{ "text": huizhen_core::store::consultations::role_code(e.actor.role) }],
        "who": { "identifier": { "system": USER, "value": e.actor.id } },
    })];
    if let Some(p) = &e.plugin {
        agents.push(json!({
            "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "assembler" }] },
            "who": { "display": format!("plugin {}@{}", p.name, p.version) },
        }));
    }
    let mut p = json!({
        "resourceType": "Provenance",
        "id": format!("ev-{id}-{}", e.version),
        "target": [{ "reference": format!("Task/{id}/_history/{}", e.version) }],
        "recorded": ts(e.at),
        "activity": { "coding": [{ "system": EVENT, "code": e.kind.name() }] },
        "agent": agents,
    });
    if let Some(r) = &e.reason {
        p["reason"] = json!([{ "text": r }]);
    }
    if let huizhen_domain::consultation::EventKind::OpinionSigned { signed, .. } = &e.kind {
        let sig = &signed.signature;
        p["signature"] = json!([{
            "type": [{ "system": "urn:iso-astm:E1762-95:2013", "code": "1.2.840.10065.1.12.1.1", "display": "Author's Signature" }],
            "when": ts(sig.signed_at),
            "who": { "display": sig.signer },
            "sigFormat": format!("application/x-huizhen-{}", sig.algorithm),
            "data": base64::engine::general_purpose::STANDARD.encode(&sig.value),
        }]);
    }
    p
}

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
        "Task" | "ServiceRequest" | "Encounter" | "DiagnosticReport" => Some("patient"),
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
    matched.sort_by(|a, b| b.last_updated.cmp(&a.last_updated));
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
        patients: Some(persons.iter().map(|p| *p as i64).collect()),
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
        for ty in ["Task", "ServiceRequest", "Encounter", "DiagnosticReport"] {
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
