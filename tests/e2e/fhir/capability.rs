//! The CapabilityStatement is truthful: every type, interaction, search parameter, include and
//! operation it lists answers (a FHIR answer: a Bundle, a resource or an OperationOutcome from
//! the facade, never the engine's "no such endpoint"), and what it does not list does not.

use serde_json::{Value, json};

use super::{admin, fhir, ok, start};
use crate::support::{Backend, both_backends};

both_backends!(the_capability_statement_lists_what_answers_and_nothing_else);

/// A value a parameter of `kind` takes.
fn sample(kind: &str) -> &'static str {
    match kind {
        "date" => "ge2024-01-01",
        "reference" => "Patient/probe",
        _ => "probe",
    }
}

async fn the_capability_statement_lists_what_answers_and_nothing_else(b: Backend) {
    let Some(wf) = start(b).await else { return };
    // Public, like SMART clients expect.
    let g = fhir(&wf, "GET", "/fhir/r4/metadata", None, None, None).await;
    assert_eq!(g.status, 200);
    huizhen_fhir::facade::model::round_trip(&g.body).unwrap();
    let cs = g.body;
    assert_eq!(cs["fhirVersion"], "4.0.1");
    assert_eq!(cs["rest"][0]["mode"], "server");
    let a = admin();
    let mut listed_types = Vec::new();
    for r in cs["rest"][0]["resource"].as_array().unwrap() {
        let ty = r["type"].as_str().unwrap();
        listed_types.push(ty.to_owned());
        let base = format!("/fhir/r4/{ty}");
        let codes: Vec<&str> = r["interaction"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["code"].as_str().unwrap())
            .collect();
        for code in &codes {
            let g = match *code {
                "search-type" => fhir(&wf, "GET", &base, Some(&a), None, None).await,
                "read" => fhir(&wf, "GET", &format!("{base}/probe"), Some(&a), None, None).await,
                "vread" => fhir(&wf, "GET", &format!("{base}/probe/_history/1"), Some(&a), None, None).await,
                "update" => fhir(&wf, "PUT", &format!("{base}/probe"), Some(&a), Some(json!({"resourceType": ty, "id": "probe", "status": "cancelled", "intent": "order"})), Some("W/\"1\"")).await,
                other => panic!("{ty}: interaction {other} is listed but has no probe here"),
            };
            let expected = if *code == "search-type" { 200 } else { 404 };
            assert_eq!(g.status, expected, "{ty} {code}: {}", g.body);
            let rt = g.body["resourceType"].as_str().unwrap_or_default();
            assert!(
                rt == "Bundle" || rt == "OperationOutcome",
                "{ty} {code}: not a FHIR answer: {}",
                g.body
            );
        }
        // Interactions it does not list do not answer.
        let unlisted: Vec<(&str, String, Option<Value>)> = vec![
            ("POST", base.clone(), Some(json!({"resourceType": ty}))),
            ("DELETE", format!("{base}/probe"), None),
            ("PATCH", format!("{base}/probe"), Some(json!([]))),
        ];
        let mut unlisted = unlisted;
        if !codes.contains(&"update") {
            unlisted.push((
                "PUT",
                format!("{base}/probe"),
                Some(json!({"resourceType": ty, "id": "probe"})),
            ));
        }
        if !codes.contains(&"vread") {
            unlisted.push(("GET", format!("{base}/probe/_history/1"), None));
        }
        for (m, path, body) in unlisted {
            let g = fhir(&wf, m, &path, Some(&a), body, None).await;
            assert!(
                !(200..300).contains(&g.status),
                "{m} {path} answers {} but is not listed",
                g.status
            );
        }
        // Every listed search parameter is accepted, and one that is not listed is refused.
        for p in r["searchParam"].as_array().unwrap() {
            let name = p["name"].as_str().unwrap();
            let q = format!("{base}?{name}={}", sample(p["type"].as_str().unwrap()));
            ok(&wf, &q, &a).await;
        }
        let g = fhir(
            &wf,
            "GET",
            &format!("{base}?not-a-parameter=1"),
            Some(&a),
            None,
            None,
        )
        .await;
        assert_eq!(g.status, 400, "{ty}");
        for inc in r["searchInclude"].as_array().into_iter().flatten() {
            ok(
                &wf,
                &format!("{base}?_include={}", inc.as_str().unwrap()),
                &a,
            )
            .await;
        }
        for inc in r["searchRevInclude"].as_array().into_iter().flatten() {
            ok(
                &wf,
                &format!("{base}?_revinclude={}", inc.as_str().unwrap()),
                &a,
            )
            .await;
        }
        for op in r["operation"].as_array().into_iter().flatten() {
            let g = match op["name"].as_str().unwrap() {
                "match" => fhir(&wf, "POST", &format!("{base}/$match"), Some(&a), Some(json!({"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": {"resourceType": "Patient", "name": [{"text": "王五"}]}}]})), None).await,
                "ihe-pix" => fhir(&wf, "GET", &format!("{base}/$ihe-pix?sourceIdentifier=urn:x|probe"), Some(&a), None, None).await,
                "everything" => fhir(&wf, "GET", &format!("{base}/probe/$everything"), Some(&a), None, None).await,
                other => panic!("{ty}: operation {other} is listed but has no probe here"),
            };
            assert!(
                matches!(g.status, 200 | 404),
                "{ty} ${}: {} {}",
                op["name"],
                g.status,
                g.body
            );
            let rt = g.body["resourceType"].as_str().unwrap_or_default();
            assert!(
                ["Bundle", "Parameters", "OperationOutcome"].contains(&rt),
                "{ty} ${}: {}",
                op["name"],
                g.body
            );
        }
    }
    // Types it does not list do not answer (those later issues bring, and others).
    for ty in [
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "Slot",
        "Schedule",
        "MedicationRequest",
        "Consent",
        "AuditEvent",
        "ImagingStudy",
        "Coverage",
        "Claim",
        "ClaimResponse",
        "Location",
        "Binary",
    ] {
        if listed_types.iter().any(|t| t == ty) {
            continue;
        }
        let g = fhir(&wf, "GET", &format!("/fhir/r4/{ty}"), Some(&a), None, None).await;
        assert_eq!(g.status, 404, "{ty} is not listed but answers {}", g.status);
        let g = fhir(
            &wf,
            "GET",
            &format!("/fhir/r4/{ty}/x"),
            Some(&a),
            None,
            None,
        )
        .await;
        assert_eq!(g.status, 404, "{ty}/x");
    }
    assert!(
        listed_types.iter().any(|t| t == "Task")
            && listed_types.iter().any(|t| t == "DiagnosticReport")
    );
}
