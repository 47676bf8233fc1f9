//! Vital signs and device readings (issue 25): what a home or clinic device measured, typed,
//! with its LOINC codes and UCUM units, and the FHIR R4 Observation it becomes (STANDARDS
//! FHIR-01; the R4 vital-signs profiles).
//!
//! | measurement | LOINC | UCUM | FHIR |
//! |---|---|---|---|
//! | blood pressure | 85354-9 panel, components systolic 8480-6 and diastolic 8462-4 | `mm[Hg]` | vital-signs, profile `bp` |
//! | heart rate | 8867-4 | `/min` | vital-signs, profile `heartrate` |
//! | oxygen saturation | 2708-6 and 59408-5 (pulse oximetry) | `%` | vital-signs, profile `oxygensat` |
//! | body weight | 29463-7 | `kg` | vital-signs, profile `bodyweight` |
//! | capillary glucose (glucometer) | 41653-7 in mg/dL, 14743-9 in mmol/L | `mg/dL`, `mmol/L` | **laboratory**, not a vital sign |
//! | ECG | 11524-6 (EKG study) | samples in `uV` | Observation with `valueSampledData` per lead |
//!
//! Values arrive in the units gateways use and are converted to the units above where the
//! profile fixes one (kPa → mm[Hg], lb and g → kg); glucose keeps the unit it was measured in
//! and takes the LOINC code of that unit, since converting a laboratory value would change it.
//! A value outside what a body can have (a systolic of 900, SpO2 of 140 %, a diastolic above
//! the systolic) is refused, not stored: such a reading is a device or mapping fault.
//!
//! `mapping.rs` reads a gateway's JSON with a field map; `fhir.rs` renders the Observations and
//! the transaction Bundle; `binding.rs` says which patient a device was lent to at a time.
//! Everything here is pure: the store finds the bindings, the step calls these functions.

pub mod binding;
pub mod fhir;
pub mod mapping;
pub mod outbound;

use chrono::{DateTime, FixedOffset};
use serde::Serialize;

/// LOINC's code system URI.
pub const LOINC: &str = "http://loinc.org";
/// UCUM's code system URI.
pub const UCUM: &str = "http://unitsofmeasure.org";

/// One kind of measurement a device makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum VitalKind {
    BloodPressure,
    HeartRate,
    Spo2,
    BodyWeight,
    Glucose,
    Ecg,
}

impl VitalKind {
    pub const ALL: [VitalKind; 6] = [
        VitalKind::BloodPressure,
        VitalKind::HeartRate,
        VitalKind::Spo2,
        VitalKind::BodyWeight,
        VitalKind::Glucose,
        VitalKind::Ecg,
    ];

    /// The name in config and JSON (`blood_pressure`, `heart_rate`, `spo2`, …).
    pub fn name(self) -> &'static str {
        match self {
            VitalKind::BloodPressure => "blood_pressure",
            VitalKind::HeartRate => "heart_rate",
            VitalKind::Spo2 => "spo2",
            VitalKind::BodyWeight => "body_weight",
            VitalKind::Glucose => "glucose",
            VitalKind::Ecg => "ecg",
        }
    }

    pub fn parse(s: &str) -> Option<VitalKind> {
        VitalKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// The FHIR observation category: `vital-signs`, except glucose (`laboratory`) and the ECG
    /// (`procedure`).
    pub fn category(self) -> &'static str {
        match self {
            VitalKind::Glucose => "laboratory",
            VitalKind::Ecg => "procedure",
            _ => "vital-signs",
        }
    }
}

/// A LOINC code with its display name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Code {
    pub code: &'static str,
    pub display: &'static str,
}

pub const BP_PANEL: Code = Code {
    code: "85354-9",
    display: "Blood pressure panel with all children optional",
};
pub const SYSTOLIC: Code = Code {
    code: "8480-6",
    display: "Systolic blood pressure",
};
pub const DIASTOLIC: Code = Code {
    code: "8462-4",
    display: "Diastolic blood pressure",
};
pub const HEART_RATE: Code = Code {
    code: "8867-4",
    display: "Heart rate",
};
pub const SPO2: Code = Code {
    code: "2708-6",
    display: "Oxygen saturation in Arterial blood",
};
pub const SPO2_PULSE_OX: Code = Code {
    code: "59408-5",
    display: "Oxygen saturation in Arterial blood by Pulse oximetry",
};
pub const BODY_WEIGHT: Code = Code {
    code: "29463-7",
    display: "Body weight",
};
pub const GLUCOSE_MASS: Code = Code {
    code: "41653-7",
    display: "Glucose [Mass/volume] in Capillary blood by Glucometer",
};
pub const GLUCOSE_MOLES: Code = Code {
    code: "14743-9",
    display: "Glucose [Moles/volume] in Capillary blood by Glucometer",
};
pub const ECG: Code = Code {
    code: "11524-6",
    display: "EKG study",
};

/// A value with its UCUM unit (`unit` the human text, `code` the UCUM code).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quantity {
    pub value: f64,
    pub unit: &'static str,
    pub code: &'static str,
}

/// One typed measurement of a reading.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Measurement {
    BloodPressure {
        systolic: Quantity,
        diastolic: Quantity,
    },
    HeartRate {
        rate: Quantity,
    },
    Spo2 {
        saturation: Quantity,
    },
    BodyWeight {
        weight: Quantity,
    },
    Glucose {
        concentration: Quantity,
    },
    /// Sampled ECG: one series per lead, in µV, `period_ms` between samples.
    Ecg {
        period_ms: f64,
        leads: Vec<EcgLead>,
    },
}

/// One ECG lead's samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EcgLead {
    /// The lead's name as the device gives it (`I`, `II`, `V1`, …).
    pub name: String,
    pub samples_uv: Vec<f64>,
}

impl Measurement {
    pub fn kind(&self) -> VitalKind {
        match self {
            Measurement::BloodPressure { .. } => VitalKind::BloodPressure,
            Measurement::HeartRate { .. } => VitalKind::HeartRate,
            Measurement::Spo2 { .. } => VitalKind::Spo2,
            Measurement::BodyWeight { .. } => VitalKind::BodyWeight,
            Measurement::Glucose { .. } => VitalKind::Glucose,
            Measurement::Ecg { .. } => VitalKind::Ecg,
        }
    }

    /// The Observation's code.
    pub fn code(&self) -> Code {
        match self {
            Measurement::BloodPressure { .. } => BP_PANEL,
            Measurement::HeartRate { .. } => HEART_RATE,
            Measurement::Spo2 { .. } => SPO2,
            Measurement::BodyWeight { .. } => BODY_WEIGHT,
            Measurement::Glucose { concentration } if concentration.code == "mmol/L" => {
                GLUCOSE_MOLES
            }
            Measurement::Glucose { .. } => GLUCOSE_MASS,
            Measurement::Ecg { .. } => ECG,
        }
    }
}

/// A reading from one device at one time: one or more measurements (a cuff gives the blood
/// pressure and the pulse together).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reading {
    pub device: String,
    /// When the device measured (not when the engine heard of it), with the offset sent.
    pub measured_at: DateTime<FixedOffset>,
    pub measurements: Vec<Measurement>,
}

impl Reading {
    /// The values by name, for threshold expressions: `systolic`, `diastolic`, `heart_rate`,
    /// `spo2`, `body_weight` (kg), `glucose_mg_dl` / `glucose_mmol_l`.
    pub fn values(&self) -> std::collections::BTreeMap<&'static str, f64> {
        let mut out = std::collections::BTreeMap::new();
        for m in &self.measurements {
            match m {
                Measurement::BloodPressure {
                    systolic,
                    diastolic,
                } => {
                    out.insert("systolic", systolic.value);
                    out.insert("diastolic", diastolic.value);
                }
                Measurement::HeartRate { rate } => {
                    out.insert("heart_rate", rate.value);
                }
                Measurement::Spo2 { saturation } => {
                    out.insert("spo2", saturation.value);
                }
                Measurement::BodyWeight { weight } => {
                    out.insert("body_weight", weight.value);
                }
                Measurement::Glucose { concentration } => {
                    let k = if concentration.code == "mmol/L" {
                        "glucose_mmol_l"
                    } else {
                        "glucose_mg_dl"
                    };
                    out.insert(k, concentration.value);
                }
                Measurement::Ecg { .. } => {}
            }
        }
        out
    }
}

/// What is wrong with a reading: where (a field path of the gateway's JSON or a value name)
/// and what, never the value itself (it is patient data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {what}")]
pub struct ReadingError {
    pub path: String,
    pub what: String,
}

impl ReadingError {
    pub fn new(path: impl Into<String>, what: impl Into<String>) -> ReadingError {
        ReadingError {
            path: path.into(),
            what: what.into(),
        }
    }
}

/// Units a gateway may send, per value, with the factor to the canonical unit.
pub(crate) fn convert(value_name: &str, value: f64, unit: &str) -> Result<Quantity, ReadingError> {
    let bad_unit = |accepted: &str| {
        ReadingError::new(
            value_name,
            format!("unit {unit:?} is not one of {accepted}"),
        )
    };
    let q = |value: f64, unit: &'static str, code: &'static str| Quantity { value, unit, code };
    let round = |v: f64, places: i32| {
        let f = 10f64.powi(places);
        (v * f).round() / f
    };
    Ok(match value_name {
        "systolic" | "diastolic" => match unit {
            "mm[Hg]" | "mmHg" | "mmhg" | "" => q(value, "mmHg", "mm[Hg]"),
            "kPa" | "kpa" => q(round(value * 7.500_615_75, 0), "mmHg", "mm[Hg]"),
            _ => return Err(bad_unit("mm[Hg] (mmHg), kPa")),
        },
        "heart_rate" => match unit {
            "/min" | "bpm" | "beats/min" | "{beats}/min" | "" => q(value, "beats/minute", "/min"),
            _ => return Err(bad_unit("/min (bpm)")),
        },
        "spo2" => match unit {
            "%" | "" => q(value, "%", "%"),
            _ => return Err(bad_unit("%")),
        },
        "body_weight" => match unit {
            "kg" | "" => q(value, "kg", "kg"),
            "g" => q(round(value / 1000.0, 3), "kg", "kg"),
            "[lb_av]" | "lb" | "lbs" => q(round(value * 0.453_592_37, 2), "kg", "kg"),
            "jin" | "斤" => q(round(value * 0.5, 2), "kg", "kg"),
            _ => return Err(bad_unit("kg, g, [lb_av] (lb), 斤")),
        },
        "glucose" => match unit {
            "mg/dL" | "mg/dl" => q(value, "mg/dL", "mg/dL"),
            "mmol/L" | "mmol/l" | "" => q(value, "mmol/L", "mmol/L"),
            _ => return Err(bad_unit("mmol/L, mg/dL")),
        },
        other => return Err(ReadingError::new(other, "not a value this engine knows")),
    })
}

/// Refuses a value no body has (a device or mapping fault), naming the value, not quoting it.
pub(crate) fn plausible(name: &str, q: &Quantity) -> Result<(), ReadingError> {
    let (lo, hi) = match (name, q.code) {
        ("systolic", _) => (20.0, 300.0),
        ("diastolic", _) => (10.0, 250.0),
        ("heart_rate", _) => (10.0, 350.0),
        ("spo2", _) => (0.0, 100.0),
        ("body_weight", _) => (0.2, 500.0),
        ("glucose", "mg/dL") => (5.0, 1500.0),
        ("glucose", _) => (0.3, 85.0),
        _ => return Ok(()),
    };
    if !q.value.is_finite() || q.value < lo || q.value > hi {
        return Err(ReadingError::new(
            name,
            format!("outside the plausible range {lo}–{hi} {}", q.code),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_to_ucum() {
        let c = |n, v, u| convert(n, v, u).unwrap();
        assert_eq!(c("systolic", 20.0, "kPa").value, 150.0);
        assert_eq!(c("systolic", 20.0, "kPa").code, "mm[Hg]");
        assert_eq!(c("body_weight", 154.0, "lb").value, 69.85);
        assert_eq!(c("body_weight", 130.0, "斤").value, 65.0);
        assert_eq!(c("heart_rate", 72.0, "bpm").code, "/min");
        assert_eq!(c("glucose", 126.0, "mg/dL").code, "mg/dL");
        assert!(convert("spo2", 0.97, "ratio").is_err());
    }

    #[test]
    fn implausible_values_are_refused_without_the_value() {
        let e = plausible("systolic", &convert("systolic", 900.0, "mmHg").unwrap()).unwrap_err();
        assert_eq!(e.path, "systolic");
        assert!(!e.to_string().contains("900"), "{e}");
    }
}
