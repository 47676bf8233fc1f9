//! A gateway's JSON → a typed [`Reading`], with a field map written in YAML.
//!
//! ```yaml
//! mapping:
//!   device: meta.sn                 # where the device id is (dotted path; numbers index arrays)
//!   time: data.ts                   # RFC 3339, "YYYY-MM-DD HH:MM:SS" (in `time_zone`), or epoch s/ms
//!   time_zone: "+08:00"             # for times sent without an offset (X-03; default +08:00)
//!   values:                         # value name → where it is, and its unit
//!     systolic: { path: data.sys, unit: mmHg }
//!     diastolic: { path: data.dia, unit: mmHg }
//!     heart_rate: { path: data.pulse }
//!     body_weight: { path: data.w, unit_path: data.unit }   # the unit sent beside the value
//!   ecg: { path: data.ecg }         # { period_ms, leads: { "I": [µV…], … } }
//! ```
//!
//! Without a mapping the default reads the flat form
//! `{"device_id", "measured_at", "systolic", "diastolic", "heart_rate", "spo2", "body_weight",
//! "glucose", "glucose_unit", "ecg"}` (each value's unit, when sent, in `<name>_unit`).
//! Value names: `systolic`, `diastolic`, `heart_rate`, `spo2`, `body_weight`, `glucose`.
//! A value that is absent is not measured; one that is present must be a number (or a numeric
//! string) in an accepted unit and plausible. Systolic and diastolic go together.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone};
use serde::Deserialize;
use serde_json::Value;

use super::{EcgLead, Measurement, Reading, ReadingError, convert, plausible};

/// The value names a mapping may use.
pub const VALUE_NAMES: &[&str] = &[
    "systolic",
    "diastolic",
    "heart_rate",
    "spo2",
    "body_weight",
    "glucose",
];

/// `mapping:` of the `device_reading` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMap {
    /// Path of the device id (default `device_id`).
    #[serde(default = "default_device")]
    pub device: String,
    /// Path of the measurement time (default `measured_at`).
    #[serde(default = "default_time")]
    pub time: String,
    /// The offset of times sent without one (default `+08:00`).
    #[serde(default = "default_zone")]
    pub time_zone: String,
    /// Value name → where it is. Default: each name at the top level, its unit in `<name>_unit`.
    #[serde(default)]
    pub values: Option<BTreeMap<String, ValueField>>,
    /// Where the ECG is, if the device records one.
    #[serde(default)]
    pub ecg: Option<EcgField>,
}

/// Where one value is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueField {
    pub path: String,
    /// The unit the gateway always uses for it (UCUM or the usual text, e.g. `mmHg`, `kPa`,
    /// `lb`, `mg/dL`).
    #[serde(default)]
    pub unit: Option<String>,
    /// Or where the unit is sent beside the value.
    #[serde(default)]
    pub unit_path: Option<String>,
}

/// Where the ECG is: an object `{ "period_ms": n, "leads": { name: [samples in µV] } }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EcgField {
    pub path: String,
}

fn default_device() -> String {
    "device_id".into()
}
fn default_time() -> String {
    "measured_at".into()
}
fn default_zone() -> String {
    "+08:00".into()
}

impl Default for FieldMap {
    fn default() -> FieldMap {
        FieldMap {
            device: default_device(),
            time: default_time(),
            time_zone: default_zone(),
            values: None,
            ecg: Some(EcgField { path: "ecg".into() }),
        }
    }
}

impl FieldMap {
    /// Checks the map itself (at load time): known value names, a valid zone, not both `unit`
    /// and `unit_path`. Errors name the key.
    pub fn check(&self) -> Result<(), ReadingError> {
        self.zone()?;
        for (k, path) in [("device", &self.device), ("time", &self.time)] {
            if path.trim().is_empty() {
                return Err(ReadingError::new(
                    format!("mapping.{k}"),
                    "must not be empty",
                ));
            }
        }
        if let Some(values) = &self.values {
            if values.is_empty() && self.ecg.is_none() {
                return Err(ReadingError::new("mapping.values", "maps no value"));
            }
            for (name, f) in values {
                if !VALUE_NAMES.contains(&name.as_str()) {
                    return Err(ReadingError::new(
                        format!("mapping.values.{name}"),
                        format!("not a value name; one of {}", VALUE_NAMES.join(", ")),
                    ));
                }
                if f.unit.is_some() && f.unit_path.is_some() {
                    return Err(ReadingError::new(
                        format!("mapping.values.{name}"),
                        "give `unit` or `unit_path`, not both",
                    ));
                }
                if let Some(u) = &f.unit {
                    convert(name, 1.0, u).map_err(|e| {
                        ReadingError::new(format!("mapping.values.{name}.unit"), e.what)
                    })?;
                }
            }
            if values.contains_key("systolic") != values.contains_key("diastolic") {
                return Err(ReadingError::new(
                    "mapping.values",
                    "systolic and diastolic go together (the blood pressure panel)",
                ));
            }
        }
        Ok(())
    }

    fn zone(&self) -> Result<FixedOffset, ReadingError> {
        self.time_zone
            .parse::<FixedOffset>()
            .map_err(|_| ReadingError::new("mapping.time_zone", "not an offset like +08:00"))
    }

    fn value_fields(&self) -> BTreeMap<String, ValueField> {
        match &self.values {
            Some(v) => v.clone(),
            None => VALUE_NAMES
                .iter()
                .map(|n| {
                    (
                        (*n).to_owned(),
                        ValueField {
                            path: (*n).to_owned(),
                            unit: None,
                            unit_path: Some(format!("{n}_unit")),
                        },
                    )
                })
                .collect(),
        }
    }

    /// Reads one reading. `now` bounds the measurement time: more than 10 minutes ahead is a
    /// device clock fault and refused.
    pub fn read(&self, json: &Value, now: DateTime<FixedOffset>) -> Result<Reading, ReadingError> {
        if !json.is_object() {
            return Err(ReadingError::new("$", "the reading is not a JSON object"));
        }
        let device = match get(json, &self.device) {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => {
                return Err(ReadingError::new(
                    &self.device,
                    "the device id is not a string",
                ));
            }
            None => return Err(ReadingError::new(&self.device, "the device id is missing")),
        };
        let measured_at = match get(json, &self.time) {
            Some(v) => parse_time(v, self.zone()?).map_err(|w| ReadingError::new(&self.time, w))?,
            None => {
                return Err(ReadingError::new(
                    &self.time,
                    "the measurement time is missing (the arrival time is not the measurement time)",
                ));
            }
        };
        if measured_at > now + chrono::Duration::minutes(10) {
            return Err(ReadingError::new(
                &self.time,
                "more than 10 minutes in the future (the device's clock?)",
            ));
        }
        let mut values = BTreeMap::new();
        for (name, f) in self.value_fields() {
            let Some(raw) = get(json, &f.path).filter(|v| !v.is_null()) else {
                continue;
            };
            let number = match raw {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            }
            .filter(|v| v.is_finite())
            .ok_or_else(|| ReadingError::new(&f.path, format!("{name} is not a number")))?;
            let unit = match (&f.unit, &f.unit_path) {
                (Some(u), _) => u.clone(),
                (None, Some(p)) => match get(json, p) {
                    Some(Value::String(s)) => s.trim().to_owned(),
                    None | Some(Value::Null) => String::new(),
                    Some(_) => return Err(ReadingError::new(p, "the unit is not a string")),
                },
                (None, None) => String::new(),
            };
            let q =
                convert(&name, number, &unit).map_err(|e| ReadingError::new(&f.path, e.what))?;
            plausible(&name, &q).map_err(|e| ReadingError::new(&f.path, e.what))?;
            values.insert(name, q);
        }
        let mut measurements = Vec::new();
        match (values.remove("systolic"), values.remove("diastolic")) {
            (Some(s), Some(d)) => {
                if d.value >= s.value {
                    return Err(ReadingError::new(
                        "diastolic",
                        "not below the systolic pressure",
                    ));
                }
                measurements.push(Measurement::BloodPressure {
                    systolic: s,
                    diastolic: d,
                });
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(ReadingError::new(
                    "diastolic",
                    "missing beside the systolic",
                ));
            }
            (None, Some(_)) => {
                return Err(ReadingError::new(
                    "systolic",
                    "missing beside the diastolic",
                ));
            }
        }
        if let Some(rate) = values.remove("heart_rate") {
            measurements.push(Measurement::HeartRate { rate });
        }
        if let Some(saturation) = values.remove("spo2") {
            measurements.push(Measurement::Spo2 { saturation });
        }
        if let Some(weight) = values.remove("body_weight") {
            measurements.push(Measurement::BodyWeight { weight });
        }
        if let Some(concentration) = values.remove("glucose") {
            measurements.push(Measurement::Glucose { concentration });
        }
        if let Some(e) = &self.ecg
            && let Some(v) = get(json, &e.path).filter(|v| !v.is_null())
        {
            measurements.push(read_ecg(v, &e.path)?);
        }
        if measurements.is_empty() {
            return Err(ReadingError::new(
                "$",
                "no measurement: none of the mapped values is present",
            ));
        }
        Ok(Reading {
            device,
            measured_at,
            measurements,
        })
    }
}

fn read_ecg(v: &Value, path: &str) -> Result<Measurement, ReadingError> {
    let period_ms = v
        .get("period_ms")
        .and_then(Value::as_f64)
        .filter(|p| p.is_finite() && *p > 0.0)
        .ok_or_else(|| {
            ReadingError::new(
                format!("{path}.period_ms"),
                "missing or not a positive number",
            )
        })?;
    let leads_v = v
        .get("leads")
        .and_then(Value::as_object)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| {
            ReadingError::new(
                format!("{path}.leads"),
                "missing or empty (an object of lead → samples)",
            )
        })?;
    let mut leads = Vec::new();
    for (name, samples) in leads_v {
        let arr = samples
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| {
                ReadingError::new(
                    format!("{path}.leads.{name}"),
                    "not a non-empty array of samples",
                )
            })?;
        let samples_uv = arr
            .iter()
            .map(|s| s.as_f64().filter(|x| x.is_finite()))
            .collect::<Option<Vec<f64>>>()
            .ok_or_else(|| {
                ReadingError::new(format!("{path}.leads.{name}"), "a sample is not a number")
            })?;
        leads.push(EcgLead {
            name: name.clone(),
            samples_uv,
        });
    }
    Ok(Measurement::Ecg { period_ms, leads })
}

/// A dotted path into JSON; numeric segments index arrays.
pub fn get<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path.split('.') {
        cur = match cur {
            Value::Object(o) => o.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// RFC 3339 (offset kept), a local time without offset (in `zone`), or epoch seconds or
/// milliseconds (UTC).
fn parse_time(v: &Value, zone: FixedOffset) -> Result<DateTime<FixedOffset>, &'static str> {
    match v {
        Value::String(s) => {
            let s = s.trim();
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                return Ok(t);
            }
            for f in [
                "%Y-%m-%d %H:%M:%S",
                "%Y-%m-%dT%H:%M:%S",
                "%Y-%m-%d %H:%M:%S%.f",
                "%Y%m%d%H%M%S",
            ] {
                if let Ok(n) = NaiveDateTime::parse_from_str(s, f) {
                    return zone
                        .from_local_datetime(&n)
                        .single()
                        .ok_or("not a valid local time");
                }
            }
            Err("not a time (RFC 3339, YYYY-MM-DD HH:MM:SS, or epoch seconds/milliseconds)")
        }
        Value::Number(n) => {
            let x = n.as_i64().ok_or("an epoch time must be a whole number")?;
            // Epoch seconds until the year 5138; larger numbers are milliseconds.
            let ms = if x.abs() < 100_000_000_000 {
                x.checked_mul(1000)
            } else {
                Some(x)
            }
            .ok_or("out of range")?;
            let utc = DateTime::from_timestamp_millis(ms).ok_or("out of range")?;
            Ok(utc.fixed_offset())
        }
        _ => Err("not a time (a string or an epoch number)"),
    }
}
