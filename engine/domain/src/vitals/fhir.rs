//! A [`Reading`] as FHIR R4 Observations (the vital-signs profiles of R4 4.0.1 §8.3.6) and
//! as the transaction Bundle the `fhir_store` sink applies.
//!
//! Each measurement is one Observation: status `final`, the category, the LOINC code, the
//! patient as subject, `effectiveDateTime` = the measurement time with the offset the device
//! sent, the device as a logical reference (identifier `urn:huizhen:device`), and the value
//! (a `valueQuantity` with its UCUM code; the blood pressure panel has no value of its own and
//! carries systolic and diastolic as components; the ECG carries one `valueSampledData`
//! component per lead, in µV). Its identifier (`urn:huizhen:device-reading`,
//! `device/time/code`) makes the entry a conditional create, so the same reading sent twice is
//! stored once (FHIR-20).

use serde_json::{Value, json};

use super::{Code, LOINC, Measurement, Quantity, Reading, SPO2_PULSE_OX, UCUM};

/// The identifier system of readings.
pub const READING_SYSTEM: &str = "urn:huizhen:device-reading";
/// The identifier system of devices (their serial number or gateway id).
pub const DEVICE_SYSTEM: &str = "urn:huizhen:device";
const CATEGORY_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/observation-category";

fn coding(c: Code) -> Value {
    json!({ "system": LOINC, "code": c.code, "display": c.display })
}

fn quantity(q: &Quantity) -> Value {
    json!({ "value": q.value, "unit": q.unit, "system": UCUM, "code": q.code })
}

fn profile(m: &Measurement) -> Option<&'static str> {
    Some(match m {
        Measurement::BloodPressure { .. } => "http://hl7.org/fhir/StructureDefinition/bp",
        Measurement::HeartRate { .. } => "http://hl7.org/fhir/StructureDefinition/heartrate",
        Measurement::Spo2 { .. } => "http://hl7.org/fhir/StructureDefinition/oxygensat",
        Measurement::BodyWeight { .. } => "http://hl7.org/fhir/StructureDefinition/bodyweight",
        _ => return None,
    })
}

/// The reading identifier of one measurement: `device/time (UTC, RFC 3339)/LOINC`.
pub fn reading_id(r: &Reading, m: &Measurement) -> String {
    format!(
        "{}/{}/{}",
        r.device,
        r.measured_at
            .to_utc()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        m.code().code
    )
}

/// The Observation of one measurement, about `patient` (a reference such as
/// `Patient/person-12`).
pub fn observation(r: &Reading, m: &Measurement, patient: &str) -> Value {
    let kind = m.kind();
    let mut code = vec![coding(m.code())];
    if let Measurement::Spo2 { .. } = m {
        code.push(coding(SPO2_PULSE_OX));
    }
    let mut o = json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{ "coding": [{
            "system": CATEGORY_SYSTEM,
            "code": kind.category(),
            "display": match kind.category() {
                "vital-signs" => "Vital Signs",
                "laboratory" => "Laboratory",
                _ => "Procedure",
            },
        }]}],
        "code": { "coding": code, "text": m.code().display },
        "subject": { "reference": patient },
        "effectiveDateTime": r.measured_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        "identifier": [{ "system": READING_SYSTEM, "value": reading_id(r, m) }],
        "device": {
            "identifier": { "system": DEVICE_SYSTEM, "value": r.device },
            "display": format!("device {}", r.device),
        },
    });
    if let Some(p) = profile(m) {
        o["meta"] = json!({ "profile": [
            "http://hl7.org/fhir/StructureDefinition/vitalsigns", p,
        ]});
    }
    match m {
        Measurement::BloodPressure {
            systolic,
            diastolic,
        } => {
            o["component"] = json!([
                { "code": { "coding": [coding(super::SYSTOLIC)] }, "valueQuantity": quantity(systolic) },
                { "code": { "coding": [coding(super::DIASTOLIC)] }, "valueQuantity": quantity(diastolic) },
            ]);
        }
        Measurement::HeartRate { rate: q }
        | Measurement::Spo2 { saturation: q }
        | Measurement::BodyWeight { weight: q }
        | Measurement::Glucose { concentration: q } => {
            o["valueQuantity"] = quantity(q);
        }
        Measurement::Ecg { period_ms, leads } => {
            o["component"] = Value::Array(
                leads
                    .iter()
                    .map(|l| {
                        json!({
                            "code": { "text": format!("lead {}", l.name) },
                            "valueSampledData": {
                                "origin": { "value": 0, "unit": "µV", "system": UCUM, "code": "uV" },
                                "period": period_ms,
                                "dimensions": 1,
                                "data": l.samples_uv.iter().map(|s| format_sample(*s)).collect::<Vec<_>>().join(" "),
                            }
                        })
                    })
                    .collect(),
            );
        }
    }
    o
}

fn format_sample(s: f64) -> String {
    if s.fract() == 0.0 && s.abs() < 1e15 {
        format!("{}", s as i64)
    } else {
        format!("{s}")
    }
}

/// The transaction Bundle of a reading: one conditional create per measurement
/// (`ifNoneExist: identifier=…`).
pub fn bundle(r: &Reading, patient: &str) -> Value {
    let entries: Vec<Value> = r
        .measurements
        .iter()
        .map(|m| {
            json!({
                "resource": observation(r, m, patient),
                "request": {
                    "method": "POST",
                    "url": "Observation",
                    "ifNoneExist": format!("identifier={READING_SYSTEM}|{}", reading_id(r, m)),
                }
            })
        })
        .collect();
    json!({ "resourceType": "Bundle", "type": "transaction", "entry": entries })
}
