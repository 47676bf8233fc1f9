//! `ORU^R01` of a device reading (issue 25), built from the domain's [`OutboundReading`] (the
//! body `device_reading` leaves with `output: hl7`):
//!
//! `MSH`, `PID` (the binding's record and its name from the identity index), `OBR` (`OBR-3`
//! the reading's journal message id under `MSH-3`, `OBR-4` `85353-1^Vital signs panel^LN`,
//! `OBR-7` the measurement time, `OBR-25` `F`), then one `OBX` per value: `OBX-2` `NM`,
//! `OBX-3` the LOINC code (`8480-6^Systolic blood pressure^LN`), `OBX-4` the panel
//! (`85354-9` for the two blood pressures), `OBX-5` the value, `OBX-6` the UCUM unit
//! (`mm[Hg]^^UCUM`), `OBX-11` `F`, `OBX-14` the measurement time, `OBX-18` the device id.

use chrono::{DateTime, FixedOffset};
pub use huizhen_domain::vitals::outbound::{OutboundReading, OutboundValue};

use super::header::{msh, pid};
use super::messages::dtm;
use super::opinion::{line, optional_line, patient};
use super::writer::{Seg, components, esc};
use super::{BuildError, BuildOptions, Built};

/// `OBR-4` of a reading.
const VITALS_PANEL: [&str; 3] = ["85353-1", "Vital signs panel", "LN"];

/// A number as HL7 `NM`: no exponent, no trailing zeros (`128`, `36.6`).
fn nm(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_owned() }
}

fn check(r: &OutboundReading) -> Result<DateTime<FixedOffset>, BuildError> {
    line("reading_id", &r.reading_id)?;
    line("device", &r.device)?;
    line("facility", &r.facility)?;
    patient(&r.patient)?;
    let at = DateTime::parse_from_rfc3339(r.measured_at.trim()).map_err(|e| {
        BuildError::new(
            "measured_at",
            format!("not an RFC 3339 date-time such as 2026-01-15T10:30:00+08:00 ({e})"),
        )
    })?;
    if r.values.is_empty() {
        return Err(BuildError::new(
            "values",
            "at least one value is needed (OBX); an ECG alone goes to the HIS as a document",
        ));
    }
    for (i, v) in r.values.iter().enumerate() {
        let at = |k: &str| format!("values[{i}].{k}");
        line(&at("code"), &v.code)?;
        line(&at("display"), &v.display)?;
        line(&at("unit"), &v.unit)?;
        optional_line(&at("panel"), &v.panel)?;
        if !v.value.is_finite() {
            return Err(BuildError::new(at("value"), "is not a finite number"));
        }
    }
    Ok(at)
}

/// Builds the `ORU^R01` of `reading` (see the module documentation). `message_time` is
/// `MSH-7`; `None` uses the measurement time.
pub fn build_vitals(
    reading: &OutboundReading,
    options: &BuildOptions,
    control_id: &str,
    message_time: Option<DateTime<FixedOffset>>,
) -> Result<Built, BuildError> {
    options.check()?;
    line("control_id", control_id)?;
    let measured = check(reading)?;
    let message_time = message_time.unwrap_or(measured);
    let at = dtm(&measured);
    let filler = components(&[
        esc(reading.reading_id.trim()),
        esc(&options.sending_application),
    ]);
    let mut segs = vec![
        msh(options, "ORU^R01^ORU_R01", control_id, &message_time),
        pid(&reading.patient),
        Seg::new("OBR")
            .set(1, "1")
            .set(3, filler)
            .set(4, components(&VITALS_PANEL.map(esc)))
            .set(7, at.clone())
            .set(25, "F"),
    ];
    for (i, v) in reading.values.iter().enumerate() {
        segs.push(
            Seg::new("OBX")
                .set(1, (i + 1).to_string())
                .set(2, "NM")
                .set(
                    3,
                    components(&[esc(v.code.trim()), esc(v.display.trim()), "LN".into()]),
                )
                .set(4, v.panel.as_deref().map(esc).unwrap_or_default())
                .set(5, nm(v.value))
                .set(
                    6,
                    components(&[esc(v.unit.trim()), String::new(), "UCUM".into()]),
                )
                .set(11, "F")
                .set(14, at.clone())
                .set(18, esc(reading.device.trim())),
        );
    }
    Ok(super::built(segs, "ORU^R01"))
}

#[cfg(test)]
mod tests {
    use super::nm;

    #[test]
    fn numbers_are_plain_decimals() {
        assert_eq!(nm(128.0), "128");
        assert_eq!(nm(36.6), "36.6");
        assert_eq!(nm(7.25), "7.25");
        assert_eq!(nm(0.0), "0");
        assert_eq!(nm(-0.0), "0");
    }
}
