//! The CapabilityStatement (`GET /fhir/r4/metadata`, FHIR-01: `fhirVersion` 4.0.1), made from
//! [`super::table::TABLE`], the table the router is built from: it lists exactly the types,
//! interactions, search parameters, includes and operations that answer.

use serde_json::{Value, json};

use super::table::{COMMON, TABLE};

/// The software version stated.
const VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn statement(base: &str) -> Value {
    let resources: Vec<Value> = TABLE
        .iter()
        .map(|d| {
            let mut interactions = vec![json!({"code": "read"}), json!({"code": "search-type"})];
            if d.vread {
                interactions.push(json!({"code": "vread"}));
            }
            if d.update.is_some() {
                interactions.push(json!({"code": "update"}));
            }
            let params: Vec<Value> = d
                .params
                .iter()
                .chain(COMMON.iter())
                .map(|p| {
                    json!({
                        "name": p.name,
                        "definition": format!("http://hl7.org/fhir/SearchParameter/{}-{}", if p.name.starts_with('_') { "Resource" } else { d.name }, p.name.trim_start_matches('_')),
                        "type": p.kind.code(),
                        "documentation": p.doc,
                    })
                })
                .collect();
            let mut r = json!({
                "type": d.name,
                "profile": format!("http://hl7.org/fhir/StructureDefinition/{}", d.name),
                "documentation": d.doc,
                "interaction": interactions,
                "versioning": if d.vread { "versioned" } else { "no-version" },
                "readHistory": d.vread,
                "updateCreate": false,
                "conditionalCreate": false,
                "conditionalUpdate": false,
                "conditionalDelete": "not-supported",
                "searchParam": params,
            });
            if !d.includes.is_empty() {
                r["searchInclude"] = json!(d.includes.iter().map(|i| format!("{}:{}", d.name, i.param)).collect::<Vec<_>>());
            }
            if !d.revincludes.is_empty() {
                r["searchRevInclude"] = json!(d.revincludes.iter().map(|i| format!("{}:{}", i.source, i.param)).collect::<Vec<_>>());
            }
            if !d.operations.is_empty() {
                r["operation"] = json!(d
                    .operations
                    .iter()
                    .map(|o| json!({"name": o.name, "definition": o.definition, "documentation": o.doc}))
                    .collect::<Vec<_>>());
            }
            r
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-01-01",
        "publisher": "Huizhen",
        "kind": "instance",
        "software": { "name": "Huizhen", "version": VERSION },
        "implementation": {
            "description": "Huizhen FHIR facade: the engine's own data (consultations, identity index, stored resources)",
            "url": base,
        },
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{
            "mode": "server",
            "documentation": "Bearer token (JWT or API key) on every interaction but metadata; the engine's roles and facility scopes apply (docs/security.md).",
            "security": {
                "service": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "OAuth" }] }],
                "description": "Authorization: Bearer <token>",
            },
            "resource": resources,
        }],
    })
}
