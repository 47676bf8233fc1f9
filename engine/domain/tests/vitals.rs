//! LOINC/UCUM golden tests of device readings: each `vitals/NAME.in.json` (a gateway payload,
//! with an optional `"_mapping"` holding the field map) becomes `vitals/NAME.out.json` (the
//! transaction Bundle of its Observations). `UPDATE_GOLDEN=1` writes the outputs; review the
//! diff. Refused readings are a table below: where and what, never the value.

use std::path::Path;

use huizhen_domain::vitals::fhir::bundle;
use huizhen_domain::vitals::mapping::FieldMap;
use serde_json::Value;

fn now() -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339("2026-12-06T12:00:00+08:00").unwrap()
}

fn map_of(input: &mut Value) -> FieldMap {
    match input.as_object_mut().and_then(|o| o.remove("_mapping")) {
        None => FieldMap::default(),
        Some(m) => {
            let yaml = serde_json::to_string(&m).unwrap();
            let map: FieldMap = serde_saphyr::from_str(&yaml).unwrap();
            map.check().unwrap();
            map
        }
    }
}

#[test]
fn readings_become_the_golden_observations() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vitals");
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            n.strip_suffix(".in.json").map(str::to_owned)
        })
        .collect();
    names.sort();
    assert!(names.len() >= 6, "cases: {names:?}");
    let mut failed = Vec::new();
    for name in &names {
        let mut input: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{name}.in.json"))).unwrap(),
        )
        .unwrap();
        let map = map_of(&mut input);
        let reading = map
            .read(&input, now())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = bundle(&reading, "Patient/person-1");
        let out = dir.join(format!("{name}.out.json"));
        let text = serde_json::to_string_pretty(&got).unwrap() + "\n";
        if update {
            std::fs::write(&out, &text).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&out).unwrap_or_default();
        if want != text {
            failed.push(format!("{name}:\n{text}"));
        }
    }
    assert!(
        failed.is_empty(),
        "differs from the golden file (UPDATE_GOLDEN=1 to accept):\n{}",
        failed.join("\n")
    );
}

#[test]
fn codes_and_units_of_each_kind() {
    let r = FieldMap::default()
        .read(
            &serde_json::json!({
                "device_id": "D", "measured_at": "2026-12-06T08:00:00+08:00",
                "systolic": 20, "systolic_unit": "kPa", "diastolic": 12, "diastolic_unit": "kPa",
                "heart_rate": 72, "spo2": 97, "body_weight": 130, "body_weight_unit": "斤",
                "glucose": 6.1,
            }),
            now(),
        )
        .unwrap();
    let b = bundle(&r, "Patient/person-1");
    let obs: Vec<&Value> = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .collect();
    let code = |o: &Value| o["code"]["coding"][0]["code"].as_str().unwrap().to_owned();
    let codes: Vec<String> = obs.iter().map(|o| code(o)).collect();
    assert_eq!(codes, ["85354-9", "8867-4", "2708-6", "29463-7", "14743-9"]);
    let bp = obs[0];
    assert!(
        bp.get("valueQuantity").is_none(),
        "the panel has no value of its own"
    );
    assert_eq!(bp["component"][0]["code"]["coding"][0]["code"], "8480-6");
    assert_eq!(bp["component"][0]["valueQuantity"]["value"], 150.0);
    assert_eq!(bp["component"][0]["valueQuantity"]["code"], "mm[Hg]");
    assert_eq!(bp["component"][1]["code"]["coding"][0]["code"], "8462-4");
    assert_eq!(bp["component"][1]["valueQuantity"]["value"], 90.0);
    assert_eq!(obs[2]["code"]["coding"][1]["code"], "59408-5");
    assert_eq!(obs[3]["valueQuantity"]["value"], 65.0);
    assert_eq!(obs[3]["valueQuantity"]["code"], "kg");
    for o in &obs[..4] {
        assert_eq!(o["category"][0]["coding"][0]["code"], "vital-signs");
        assert_eq!(
            o["meta"]["profile"][0],
            "http://hl7.org/fhir/StructureDefinition/vitalsigns"
        );
        assert_eq!(o["effectiveDateTime"], "2026-12-06T08:00:00+08:00");
        assert_eq!(o["subject"]["reference"], "Patient/person-1");
    }
    assert_eq!(
        obs[4]["category"][0]["coding"][0]["code"], "laboratory",
        "glucose is a lab result"
    );
    assert_eq!(obs[4]["valueQuantity"]["code"], "mmol/L");
}

#[test]
fn refused_readings_say_where_and_what_without_the_value() {
    let check = |input: Value, path: &str, what: &str| {
        let e = FieldMap::default().read(&input, now()).unwrap_err();
        assert_eq!(e.path, path, "{e}");
        assert!(e.what.contains(what), "{e}");
        for v in ["987", "4321"] {
            assert!(!e.to_string().contains(v), "the value leaked: {e}");
        }
    };
    let base = |extra: Value| {
        let mut v =
            serde_json::json!({"device_id": "D", "measured_at": "2026-12-06T08:00:00+08:00"});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    };
    check(serde_json::json!([1]), "$", "not a JSON object");
    check(
        serde_json::json!({"measured_at": "2026-12-06T08:00:00Z", "heart_rate": 70}),
        "device_id",
        "missing",
    );
    check(
        serde_json::json!({"device_id": "D", "heart_rate": 70}),
        "measured_at",
        "missing",
    );
    check(
        base(serde_json::json!({"measured_at": "yesterday", "heart_rate": 70})),
        "measured_at",
        "not a time",
    );
    check(
        base(serde_json::json!({"measured_at": "2027-01-01T00:00:00Z", "heart_rate": 70})),
        "measured_at",
        "future",
    );
    check(
        base(serde_json::json!({"heart_rate": "fast"})),
        "heart_rate",
        "not a number",
    );
    check(
        base(serde_json::json!({"heart_rate": 987})),
        "heart_rate",
        "plausible",
    );
    check(
        base(serde_json::json!({"systolic": 4321, "diastolic": 80})),
        "systolic",
        "plausible",
    );
    check(
        base(serde_json::json!({"systolic": 120})),
        "diastolic",
        "missing",
    );
    check(
        base(serde_json::json!({"systolic": 80, "diastolic": 120})),
        "diastolic",
        "not below",
    );
    check(
        base(serde_json::json!({"body_weight": 70, "body_weight_unit": "stone"})),
        "body_weight",
        "unit",
    );
    check(base(serde_json::json!({})), "$", "no measurement");
    check(
        base(serde_json::json!({"ecg": {"leads": {"I": [1]}}})),
        "ecg.period_ms",
        "missing",
    );
}

#[test]
fn mapping_errors_name_the_key() {
    let bad = |yaml: &str, what: &str| {
        let m: FieldMap = serde_saphyr::from_str(yaml).unwrap();
        let e = m.check().unwrap_err();
        assert!(e.to_string().contains(what), "{e}");
    };
    bad(
        "values: { sistolic: { path: s } }",
        "mapping.values.sistolic",
    );
    bad("values: { systolic: { path: s } }", "go together");
    bad(
        "values: { heart_rate: { path: p, unit: furlongs } }",
        "mapping.values.heart_rate.unit",
    );
    bad("time_zone: Beijing", "mapping.time_zone");
}
