//! The expert registry as FHIR: each expert a Practitioner and a PractitionerRole (`{expert
//! id}`: specialties the departments, organization the facility, code the title), and each
//! facility of the registry (experts' facilities, both sides of every agreement) an
//! Organization (`{facility}`). No patient data; not versioned (no `meta`). The registry is
//! read whole and matched in memory (it is the engine's in-memory matching copy's size).

use huizhen_domain::expert::{Agreement, Expert};
use serde_json::{Value, json};

use super::consult::{DEPARTMENT, USER};
use super::context::{Ctx, Served};
use super::index::index;
use super::outcome::Fail;
use super::search::SearchRequest;
use super::table::ResourceDef;

/// The code system of professional titles (the registry's codes).
pub const TITLE: &str = "urn:huizhen:title";
/// The identifier system of facility codes.
pub const FACILITY: &str = "urn:huizhen:facility";

fn served(json: Value) -> Served {
    Served {
        json,
        last_updated: 0,
        facility: None,
    }
}

pub fn practitioner(e: &Expert) -> Value {
    let mut p = json!({
        "resourceType": "Practitioner",
        "id": e.id,
        "identifier": [{ "system": USER, "value": e.id }],
        "active": e.registration_active,
        "name": [{ "text": e.name }],
        "qualification": [{
            "code": { "coding": [{ "system": TITLE, "code": e.title.code(), "display": e.title.chinese() }] },
        }],
    });
    if !e.languages.is_empty() {
        p["communication"] = Value::Array(
            e.languages
                .iter()
                .map(|l| json!({ "coding": [{ "system": "urn:ietf:bcp:47", "code": l }] }))
                .collect(),
        );
    }
    p
}

pub fn practitioner_role(e: &Expert) -> Value {
    let mut r = json!({
        "resourceType": "PractitionerRole",
        "id": e.id,
        "identifier": [{ "system": USER, "value": e.id }],
        "active": e.registration_active && e.licence_verified,
        "practitioner": { "reference": format!("Practitioner/{}", e.id) },
        "organization": { "reference": format!("Organization/{}", e.facility) },
        "code": [{ "coding": [{ "system": TITLE, "code": e.title.code(), "display": e.title.chinese() }] }],
    });
    if !e.departments.is_empty() {
        r["specialty"] = Value::Array(
            e.departments
                .iter()
                .map(|d| json!({ "coding": [{ "system": DEPARTMENT, "code": d }] }))
                .collect(),
        );
    }
    r
}

pub fn organization(facility: &str) -> Value {
    json!({
        "resourceType": "Organization",
        "id": facility,
        "identifier": [{ "system": FACILITY, "value": facility }],
        "active": true,
        "name": facility,
    })
}

/// Every facility the registry names, sorted, once.
fn facilities(experts: &[Expert], agreements: &[Agreement]) -> Vec<String> {
    let mut out: Vec<String> = experts
        .iter()
        .map(|e| e.facility.clone())
        .chain(
            agreements
                .iter()
                .flat_map(|a| [a.requesting_facility.clone(), a.expert_facility.clone()]),
        )
        .collect();
    out.sort();
    out.dedup();
    out
}

async fn all(ctx: &Ctx, ty: &str) -> Result<Vec<Value>, Fail> {
    let experts = ctx.s.store.list_experts().await?;
    Ok(match ty {
        "Practitioner" => experts.iter().map(practitioner).collect(),
        "PractitionerRole" => experts.iter().map(practitioner_role).collect(),
        "Organization" => {
            let agreements = ctx.s.store.list_agreements().await?;
            facilities(&experts, &agreements)
                .iter()
                .map(|f| organization(f))
                .collect()
        }
        _ => Vec::new(),
    })
}

pub async fn read(ctx: &Ctx, def: &ResourceDef, id: &str) -> Result<Option<Served>, Fail> {
    if def.name == "Organization" {
        return Ok(all(ctx, "Organization")
            .await?
            .into_iter()
            .find(|o| o["id"] == id)
            .map(served));
    }
    let Some(e) = ctx.s.store.expert(id).await? else {
        return Ok(None);
    };
    Ok(match def.name {
        "Practitioner" => Some(served(practitioner(&e))),
        "PractitionerRole" => Some(served(practitioner_role(&e))),
        _ => None,
    })
}

pub async fn search(
    ctx: &Ctx,
    def: &ResourceDef,
    req: &SearchRequest,
    need: usize,
) -> Result<(Vec<Served>, usize), Fail> {
    let mut matched: Vec<Served> = all(ctx, def.name)
        .await?
        .into_iter()
        .filter(|r| {
            let ix = index(def, r);
            let id = r["id"].as_str().unwrap_or_default();
            req.criteria.iter().all(|c| c.matches(id, 0, &ix))
        })
        .map(served)
        .collect();
    let total = matched.len();
    matched.truncate(need);
    Ok((matched, total))
}
