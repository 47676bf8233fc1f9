//! A reading as the HIS gets it (issue 25): the body the `device_reading` step leaves with
//! `output: hl7` and the HL7 adapter's `hl7_build` (`as: oru_r01_vitals`) turns into an
//! `ORU^R01`, one `OBX` per value (LOINC code, value, UCUM unit, the measurement time). The
//! patient is the one of the device's binding as the identity index knows them (PID-3 the
//! binding's record, PID-5 its name). The type is the domain's, so the step and the builder
//! cannot drift.

use serde::{Deserialize, Serialize};

use super::{Measurement, Quantity, Reading};
use crate::consultation::outbound::OutboundPatient;

/// One value of the reading (an `OBX`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundValue {
    /// The LOINC code (`8480-6`).
    pub code: String,
    /// Its display name.
    pub display: String,
    /// The value in `unit`.
    pub value: f64,
    /// The UCUM code (`mm[Hg]`).
    pub unit: String,
    /// The panel it belongs to (`85354-9` for the two blood pressures), if any.
    #[serde(default)]
    pub panel: Option<String>,
}

/// The reading for the HIS.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundReading {
    /// The journal message of the reading (the filler order number, so a resend is known).
    pub reading_id: String,
    /// The device id.
    pub device: String,
    /// The facility of the binding.
    pub facility: String,
    /// The measurement time, RFC 3339 with the device's offset.
    pub measured_at: String,
    /// PID-3 and PID-5.
    pub patient: OutboundPatient,
    /// The numeric values, in the reading's order (an ECG is not among them: it stays an
    /// attachment of the patient's record).
    pub values: Vec<OutboundValue>,
}

fn value(c: super::Code, q: &Quantity, panel: Option<&str>) -> OutboundValue {
    OutboundValue {
        code: c.code.to_owned(),
        display: c.display.to_owned(),
        value: q.value,
        unit: q.code.to_owned(),
        panel: panel.map(str::to_owned),
    }
}

/// The values of `r` for the HIS: blood pressure as its systolic and diastolic components
/// (in the panel 85354-9), SpO2 by pulse oximetry (59408-5), the others under their
/// Observation's code; ECG left out.
pub fn values(r: &Reading) -> Vec<OutboundValue> {
    let mut out = Vec::new();
    for m in &r.measurements {
        match m {
            Measurement::BloodPressure {
                systolic,
                diastolic,
            } => {
                let panel = Some(super::BP_PANEL.code);
                out.push(value(super::SYSTOLIC, systolic, panel));
                out.push(value(super::DIASTOLIC, diastolic, panel));
            }
            Measurement::HeartRate { rate } => out.push(value(m.code(), rate, None)),
            Measurement::Spo2 { saturation } => {
                out.push(value(super::SPO2_PULSE_OX, saturation, None))
            }
            Measurement::BodyWeight { weight } => out.push(value(m.code(), weight, None)),
            Measurement::Glucose { concentration } => {
                out.push(value(m.code(), concentration, None))
            }
            Measurement::Ecg { .. } => {}
        }
    }
    out
}

/// The reading `r` (journal message `reading_id`) of `patient` at `facility`, for the HIS.
pub fn outbound_reading(
    r: &Reading,
    reading_id: &str,
    facility: &str,
    patient: OutboundPatient,
) -> OutboundReading {
    OutboundReading {
        reading_id: reading_id.to_owned(),
        device: r.device.clone(),
        facility: facility.to_owned(),
        measured_at: r.measured_at.to_rfc3339(),
        patient,
        values: values(r),
    }
}
