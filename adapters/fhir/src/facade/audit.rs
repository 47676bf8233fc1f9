//! The audit trail as AuditEvents (`{seq}`; IHE-05's FHIR form, BALP-like): the action as
//! `subtype`, R/C/U/E, the outcome, the actor as the requesting agent (role, address, purpose of
//! use), the facility as the source site, and what it was about as the entity (`Patient/person-
//! {n}` for the identity index, `Task/{id}` for a consultation, `Type/id` for a FHIR read). The
//! scope is `/api/audit`'s: events by the caller's facilities' actors or about their
//! resources. `agent` searches the actor's id (`agent=D1` or `agent=urn:huizhen:user|D1`).

use huizhen_core::store::audit::AuditRow;
use serde_json::{Value, json};

use super::consult::USER;
use super::context::{Ctx, Served, with_meta};
use super::index::{index, instant, reference_text};
use super::outcome::{Fail, too_costly};
use super::search::SearchRequest;
use super::table::{ResourceDef, def};

const MAX_CANDIDATES: i64 = 2_000;

fn action_code(action: &str) -> &'static str {
    let a = action.to_ascii_lowercase();
    if [
        "read",
        "list",
        "search",
        "everything",
        "match",
        "pix",
        "export",
        "verify",
    ]
    .iter()
    .any(|k| a.contains(k))
    {
        "R"
    } else if a.contains("create") || a.contains("ingest") || a.contains("draft") {
        "C"
    } else if a.contains("delete") {
        "D"
    } else if a.starts_with("consultation.")
        || a.starts_with("prescription.")
        || a.contains("update")
        || a.contains("link")
    {
        "U"
    } else {
        "E"
    }
}

/// What an audit row was about, as an entity's `what`.
fn what(resource_type: &str, id: &str) -> Option<Value> {
    if id.is_empty() {
        return None;
    }
    Some(match resource_type {
        "Patient" if id.bytes().all(|b| b.is_ascii_digit()) => {
            json!({ "reference": format!("Patient/person-{id}") })
        }
        "Consultation" => json!({ "reference": format!("Task/{id}") }),
        t if def(t).is_some() && reference_text(&format!("{t}/{id}")).is_some() => {
            json!({ "reference": format!("{t}/{id}") })
        }
        t => json!({ "identifier": { "system": format!("urn:huizhen:audit:{t}"), "value": id } }),
    })
}

pub fn audit_event(r: &AuditRow) -> Value {
    let e = &r.event;
    let outcome = match e.outcome.as_str() {
        "success" => "0",
        "denied" => "4",
        _ => "8",
    };
    let mut agent = json!({
        "role": [{ "text": e.role }],
        "who": { "identifier": { "system": USER, "value": e.actor } },
        "requestor": true,
    });
    if !e.source.is_empty() {
        agent["network"] = json!({ "address": e.source });
    }
    let mut a = json!({
        "resourceType": "AuditEvent",
        "id": r.seq.to_string(),
        "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "Restful Operation" },
        "subtype": [{ "system": "urn:huizhen:audit-action", "code": e.action }],
        "action": action_code(&e.action),
        "recorded": instant(r.at),
        "outcome": outcome,
        "agent": [agent],
        "source": {
            "observer": { "display": "huizhen" },
            "type": [{ "system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server" }],
        },
    });
    if !e.facility.is_empty() {
        a["source"]["site"] = json!(e.facility);
    }
    if !e.detail.is_empty() {
        a["outcomeDesc"] = json!(e.detail);
    }
    if !e.purpose.is_empty() {
        a["purposeOfEvent"] = json!([{ "text": e.purpose }]);
    }
    if let Some(w) = what(&e.resource_type, &e.resource_id) {
        a["entity"] = json!([{ "what": w }]);
    }
    a
}

fn served(r: &AuditRow) -> Served {
    Served {
        json: with_meta(audit_event(r), 1, r.at),
        last_updated: r.at,
        facility: None,
    }
}

pub async fn read(ctx: &Ctx, id: &str) -> Result<Option<Served>, Fail> {
    let Ok(seq) = id.parse::<i64>() else {
        return Ok(None);
    };
    let rows = ctx
        .s
        .store
        .audit_events(&huizhen_core::store::audit::AuditFilter {
            after: Some(seq - 1),
            limit: Some(1),
            facilities: ctx.caller.scope.facilities(),
            ..Default::default()
        })
        .await?;
    Ok(rows.iter().find(|r| r.seq == seq).map(served))
}

/// The bare value of a token (`system|value` → `value`).
fn bare(v: &str) -> &str {
    v.rsplit('|').next().unwrap_or(v)
}

pub async fn search(
    ctx: &Ctx,
    d: &ResourceDef,
    req: &SearchRequest,
    need: usize,
) -> Result<(Vec<Served>, usize), Fail> {
    let scope = ctx.caller.scope.facilities();
    let actor = req.terms("agent").first().map(|v| bare(v).to_owned());
    // A person's events carry their number (`/api/patients`) or `person-{n}` (the facade).
    let about: Option<Vec<String>> = req
        .terms("patient")
        .iter()
        .chain(req.terms("entity").iter())
        .find_map(|v| {
            let (t, id) = reference_text(v)?;
            Some(match (t.as_str(), id.strip_prefix("person-")) {
                ("Patient", Some(n)) => vec![n.to_owned(), id.clone()],
                _ => vec![id],
            })
        });
    if req.criteria.is_empty() {
        let (rows, total) = ctx
            .s
            .store
            .fhir_audit_page(
                None,
                None,
                scope.as_deref(),
                i64::try_from(need).unwrap_or(i64::MAX),
                0,
            )
            .await?;
        return Ok((
            rows.iter().map(served).collect(),
            usize::try_from(total).unwrap_or(0),
        ));
    }
    let (rows, _) = ctx
        .s
        .store
        .fhir_audit_page(
            actor.as_deref(),
            about.as_deref(),
            scope.as_deref(),
            MAX_CANDIDATES + 1,
            0,
        )
        .await?;
    if rows.len() as i64 > MAX_CANDIDATES {
        return Err(too_costly("audit events", "agent, patient or entity"));
    }
    let mut out = Vec::new();
    for r in &rows {
        let s = served(r);
        let ix = index(d, &s.json);
        let id = r.seq.to_string();
        if req.criteria.iter().all(|c| c.matches(&id, r.at, &ix)) {
            out.push(s);
        }
    }
    let total = out.len();
    out.truncate(need);
    Ok((out, total))
}
