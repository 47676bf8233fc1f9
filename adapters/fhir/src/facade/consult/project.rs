//! The consultation's FHIR resources, one function each (see [`super`] for the table).

use base64::Engine as _;
use huizhen_domain::consultation::{Consultation, Event, State, Urgency};
use serde_json::{Value, json};

use crate::facade::index::instant;

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
    if let Some(p) = &c.gates().physician
        && let Some(ps) = e["participant"].as_array_mut()
    {
        ps.push(json!({
                "type": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "ATND", "display": "attender" }] }],
                "individual": { "identifier": { "system": USER, "value": p.practitioner } },
            }));
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

/// The informed consent on record (CN-05), once recorded: `Consent/cn-{id}`.
pub fn consent(c: &Consultation) -> Option<Value> {
    let k = c.gates().consent.as_ref()?;
    let id = c.id();
    let signer = serde_json::to_value(k.signer)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let status = if c.state() == State::EnteredInError {
        "entered-in-error"
    } else {
        "active"
    };
    let mut r = json!({
        "resourceType": "Consent",
        "id": format!("cn-{id}"),
        "identifier": identifier(id),
        "status": status,
        "scope": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "treatment" }] },
        "category": [{ "coding": [{ "system": "http://loinc.org", "code": "59284-0", "display": "Patient Consent" }] }],
        "patient": patient_ref(c),
        "dateTime": ts(k.signed_at),
        "performer": [{ "display": signer }],
        "policyRule": { "text": "远程医疗服务知情同意 (CN-05)" },
        "provision": { "type": "permit", "data": [{ "meaning": "related", "reference": { "reference": format!("ServiceRequest/cr-{id}") } }] },
    });
    if super::super::index::reference_text(&k.document).is_some() {
        r["sourceReference"] = json!({ "reference": k.document });
    } else {
        r["sourceAttachment"] = json!({ "title": k.document });
    }
    if k.not_suitable_to_inform_patient {
        r["extension"] = json!([{ "url": "urn:huizhen:fhir:not-suitable-to-inform-patient", "valueBoolean": true }]);
    }
    Some(r)
}
