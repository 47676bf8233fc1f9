//! `device_reading`: a device's reading (a gateway's JSON, e.g. from the `mqtt` source) → the
//! typed vital signs of the patient the device was lent to, as FHIR Observations (issue 25).
//!
//! ```yaml
//! steps:
//!   - device_reading:
//!       mapping:                        # the gateway's fields (huizhen_domain::vitals::mapping)
//!         device: sn
//!         time: ts
//!         values: { systolic: { path: sys }, diastolic: { path: dia }, heart_rate: { path: pulse } }
//!       facility: clinic-7              # bindings and local ids of this facility (default: the message's)
//!       thresholds:                     # CEL over the typed record (`body`, see below)
//!         - { name: bp-high, when: "body.values.systolic >= 160.0 || body.values.diastolic >= 100.0" }
//!         - { name: spo2-low, when: "body.values.spo2 < 90.0" }
//!       alert_to: device-alerts         # pipeline that gets an alert message per alerting reading
//!       output: bundle                  # bundle (default: a transaction Bundle for fhir_store), record, or hl7 (for hl7_build as: oru_r01_vitals)
//! sinks:
//!   - fhir_store: {}
//! ```
//!
//! **What it does.** Reads the reading with the mapping (values converted to UCUM, implausible
//! ones refused), finds the device's binding (store, migration 0022) whose validity holds the
//! **measurement** time, and the person of that binding's record in the identity index: the
//! Observations are about `Patient/person-<n>`, which the FHIR facade serves at
//! `/fhir/r4/Observation?patient=person-<n>&category=vital-signs`. A payload that does not read,
//! an unknown unit, an implausible value, a device bound to nobody at that time or a record the
//! identity index does not know is a permanent error: the message goes to the dead letters with
//! the reason (field path, no value), and can be reprocessed once the binding is added.
//!
//! **Thresholds.** Each `when` is evaluated with `body` = the typed record:
//! `{record: "vital_signs", device, measured_at, patient: {facility, local_id, person},
//! values: {systolic, diastolic, heart_rate, spo2, body_weight, glucose_mg_dl |
//! glucose_mmol_l}, measurements: [...]}` (a value the reading lacks is absent: guard with
//! `has(body.values.spo2)` where a rule reads a value another device kind does not send, or
//! write the comparison so an absent field is false). Rules per patient read
//! `body.patient.local_id`. The names of the rules that fire go into the header `vital-alerts`
//! (comma-separated) and, with `alert_to`, an alert message (the record plus `alerts`) is
//! journaled in that pipeline with the dedup key `alert:<message id>` (a retry never raises
//! it twice).
//!
//! **Consultations.** When rules fire, every open consultation of the patient gets a
//! `vital_alert_raised` event (the rules, the device, the measurement time, the message id;
//! audited, in its timeline), once per reading ([`consult`]); the alert message lists them in
//! `consultations`.
//!
//! Headers set: `device-id`, `person-id`, `measured-at`, `vital-alerts` (when any),
//! `vital-alert-consultations` (the consultations that took the alert).

use std::sync::Arc;

use futures::future::BoxFuture;
use huizhen_domain::consultation::outbound::{OutboundPatient, PatientIdentifier};
use huizhen_domain::consultation::{FiredRule, VitalAlert};
use huizhen_domain::vitals::binding::binding_at;
use huizhen_domain::vitals::mapping::FieldMap;
use huizhen_domain::vitals::outbound::outbound_reading;
use huizhen_domain::vitals::{Reading, fhir};
use serde::Deserialize;
use serde_json::json;

use super::{Step, StepConfig};

mod consult;
use crate::expr::Expr;
use crate::extensions::Extensions;
use crate::message::NewMessage;
use crate::runner::{BuildContext, Router};
use crate::store::Store;
use crate::work::{Flow, StepError, Work};

/// `- device_reading: {…}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceReadingConfig {
    /// The gateway's field map (default: the flat form, see the domain's `mapping`).
    #[serde(default)]
    pub mapping: Option<FieldMap>,
    /// The facility whose bindings and local ids apply (default: the message's).
    #[serde(default)]
    pub facility: Option<String>,
    /// Alert rules, in order.
    #[serde(default)]
    pub thresholds: Vec<Threshold>,
    /// The pipeline alert messages go to.
    #[serde(default)]
    pub alert_to: Option<String>,
    /// `bundle` (default) or `record`.
    #[serde(default)]
    pub output: Output,
}

/// One alert rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// The rule's name, reported in `vital-alerts` and the alert message.
    pub name: String,
    /// CEL over the typed record (`body`); true raises the alert.
    pub when: Expr,
    /// Free text for the receiver, e.g. `high`, `critical` (default `high`).
    #[serde(default = "high")]
    pub severity: String,
}

fn high() -> String {
    "high".into()
}

/// What the step leaves as the body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Output {
    /// A FHIR transaction Bundle of the Observations (for the `fhir_store` sink).
    #[default]
    Bundle,
    /// The typed record (JSON).
    Record,
    /// The reading for the HIS (the domain's `OutboundReading`: the binding's record as PID-3,
    /// its name from the identity index as PID-5, one value per OBX) for `hl7_build`
    /// (`as: oru_r01_vitals`).
    Hl7,
}

#[typetag::deserialize(name = "device_reading")]
impl StepConfig for DeviceReadingConfig {
    fn type_name(&self) -> &'static str {
        "device_reading"
    }

    fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Step>, String> {
        let mapping = self.mapping.clone().unwrap_or_default();
        mapping
            .check()
            .map_err(|e| format!("device_reading: {e}"))?;
        let mut names = std::collections::BTreeSet::new();
        for (i, t) in self.thresholds.iter().enumerate() {
            if t.name.trim().is_empty() || t.name.contains(',') {
                return Err(format!(
                    "device_reading: thresholds[{i}].name: must not be empty or contain a comma"
                ));
            }
            if !names.insert(t.name.clone()) {
                return Err(format!(
                    "device_reading: thresholds[{i}].name: {:?} is used twice",
                    t.name
                ));
            }
        }
        if let Some(to) = &self.alert_to {
            if to == &ctx.pipeline {
                return Err(
                    "device_reading: alert_to would loop back into the same pipeline".into(),
                );
            }
            if self.thresholds.is_empty() {
                return Err("device_reading: alert_to without thresholds raises nothing".into());
            }
        }
        if self
            .facility
            .as_deref()
            .is_some_and(|f| f.trim().is_empty())
        {
            return Err(
                "device_reading: facility must not be empty (leave it out to use the pipeline's)"
                    .into(),
            );
        }
        Ok(Arc::new(DeviceReading {
            mapping,
            config: self.clone(),
            router: ctx.router.clone(),
            extensions: ctx.extensions.clone(),
        }))
    }

    fn routes_to(&self) -> Vec<String> {
        self.alert_to.iter().cloned().collect()
    }
}

struct DeviceReading {
    mapping: FieldMap,
    config: DeviceReadingConfig,
    router: Router,
    extensions: Extensions,
}

fn record(r: &Reading, facility: &str, local_id: &str, person: i64) -> serde_json::Value {
    json!({
        "record": "vital_signs",
        "device": r.device,
        "measured_at": r.measured_at.to_rfc3339(),
        "patient": { "facility": facility, "local_id": local_id, "person": format!("person-{person}") },
        "values": r.values(),
        "measurements": r.measurements,
    })
}

impl Step for DeviceReading {
    fn apply<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Flow, StepError>> {
        Box::pin(async move {
            let id = work.id.clone();
            let json: serde_json::Value = serde_json::from_slice(work.body()).map_err(|e| {
                StepError::permanent(format!(
                    "message {id}: device_reading: the payload is not JSON: line {} column {} ({:?} error)",
                    e.line(),
                    e.column(),
                    e.classify()
                ))
            })?;
            let now = chrono::Utc::now().fixed_offset();
            let reading = self
                .mapping
                .read(&json, now)
                .map_err(|e| StepError::permanent(format!("message {id}: device_reading: {e}")))?;
            let store = self.extensions.get::<Store>().ok_or_else(|| {
                StepError::permanent("device_reading: no store (the step runs inside an engine)")
            })?;
            let facility = self
                .config
                .facility
                .clone()
                .unwrap_or_else(|| work.facility.clone());
            // From the store's in-memory copy (one counter read per reading; the rows only
            // after a binding or an identity link changed).
            let lookup = store
                .device_lookup(&facility, &reading.device)
                .await
                .map_err(|e| StepError::new(format!("message {id}: device_reading: {e}")))?;
            let binding = binding_at(&lookup.bindings, reading.measured_at.to_utc()).map_err(|e| {
                StepError::permanent(format!(
                    "message {id}: device_reading: {e} (facility {facility}; add the binding, then reprocess)"
                ))
            })?;
            let person = store
                .device_person(&lookup, &binding.facility, &binding.local_id)
                .await
                .map_err(|e| StepError::new(format!("message {id}: device_reading: {e}")))?
                .ok_or_else(|| {
                    StepError::permanent(format!(
                        "message {id}: device_reading: the device's binding names a patient record the identity index of facility {} does not hold",
                        binding.facility
                    ))
                })?;
            let rec = record(&reading, &binding.facility, &binding.local_id, person);
            work.headers
                .insert("device-id".into(), reading.device.clone());
            work.headers.insert("person-id".into(), person.to_string());
            work.headers
                .insert("measured-at".into(), reading.measured_at.to_rfc3339());

            // Thresholds see the typed record as `body`.
            let kind = std::mem::replace(&mut work.kind, "json".into());
            work.set_json(rec.clone());
            let mut fired = Vec::new();
            for t in &self.config.thresholds {
                match t.when.eval(work) {
                    Ok(cel::Value::Bool(true)) => fired.push(t),
                    Ok(_) => {}
                    // A rule that reads a value this reading lacks (no such key) is not met.
                    Err(e)
                        if e.message.contains("No such key")
                            || e.message.contains("no such key") => {}
                    Err(e) => {
                        work.kind = kind;
                        return Err(StepError::permanent(format!(
                            "message {id}: device_reading: thresholds {:?}: {}",
                            t.name, e.message
                        )));
                    }
                }
            }
            work.kind = kind;
            if !fired.is_empty() {
                let names: Vec<&str> = fired.iter().map(|t| t.name.as_str()).collect();
                work.headers.insert("vital-alerts".into(), names.join(","));
                // The patient's open consultations get the alert in their timeline.
                let on = VitalAlert {
                    message: work.id.to_string(),
                    device: reading.device.clone(),
                    measured_at: reading.measured_at,
                    rules: fired
                        .iter()
                        .map(|t| FiredRule {
                            name: t.name.clone(),
                            severity: t.severity.clone(),
                        })
                        .collect(),
                };
                let consultations = consult::raise(&store, work, person, &on).await?;
                if !consultations.is_empty() {
                    work.headers
                        .insert("vital-alert-consultations".into(), consultations.join(","));
                }
                if let Some(to) = &self.config.alert_to {
                    let target = self.router.get(to).ok_or_else(|| {
                        StepError::new(format!(
                            "device_reading: alert pipeline {to:?} is not running"
                        ))
                    })?;
                    let mut alert = rec.clone();
                    alert["record"] = json!("vital_alert");
                    alert["alerts"] = json!(
                        fired
                            .iter()
                            .map(|t| json!({ "name": t.name, "severity": t.severity }))
                            .collect::<Vec<_>>()
                    );
                    alert["message"] = json!(work.id);
                    alert["consultations"] = json!(consultations);
                    let mut m = NewMessage::new(
                        to,
                        &work.facility,
                        "json",
                        serde_json::to_vec(&alert).unwrap_or_default(),
                    );
                    m.headers = work.headers.clone();
                    m.source = format!("device_reading alert from {}", work.pipeline);
                    m.dedup_key = Some(format!("alert:{}", work.id));
                    m.trace_id = Some(work.trace_id.clone());
                    m.parent_id = Some(work.id.clone());
                    let accepted = target.submit(m).await.map_err(|e| {
                        StepError::new(format!("device_reading: alert to {to:?}: {e}"))
                    })?;
                    work.headers.insert(
                        "vital-alert-message".into(),
                        format!("{to}:{}", accepted.id),
                    );
                }
            }
            match self.config.output {
                Output::Record => {
                    work.kind = "json".into();
                    work.set_json(rec);
                }
                Output::Hl7 => {
                    let name = store
                        .record_name(&binding.facility, &binding.local_id)
                        .await
                        .map_err(|e| StepError::new(format!("message {id}: device_reading: {e}")))?
                        .ok_or_else(|| {
                            StepError::permanent(format!(
                                "message {id}: device_reading: output hl7: the identity index has no name for the binding's record (PID-5)"
                            ))
                        })?;
                    let patient = OutboundPatient {
                        identifiers: vec![PatientIdentifier {
                            id: binding.local_id.clone(),
                            assigning_authority: Some(binding.facility.clone()),
                            type_code: Some("MR".into()),
                        }],
                        name,
                    };
                    let out =
                        outbound_reading(&reading, &id.to_string(), &binding.facility, patient);
                    work.kind = "json".into();
                    work.set_json(serde_json::to_value(&out).unwrap_or_default());
                }
                Output::Bundle => {
                    work.kind = "json".into();
                    work.set_json(fhir::bundle(&reading, &format!("Patient/person-{person}")));
                }
            }
            Ok(Flow::Continue)
        })
    }
}
