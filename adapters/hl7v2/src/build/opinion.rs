//! [`OutboundOpinion`], the typed body `hl7_build` reads: the expert's signed consultation
//! opinion (CN-07) with the identifiers the HIS needs to file it, and its checks. The type is
//! the domain's (`huizhen_domain::consultation::outbound`): the body of the workflow's
//! `consultation.completed` event, so what the engine announces is what this step builds
//! from. Every check names the JSON path at fault (`patient.identifiers[0].id`,
//! `diagnoses[1].code`), never the value (it may be patient data).

use chrono::{DateTime, FixedOffset};
pub use huizhen_domain::consultation::outbound::{
    Clinician, OpinionDiagnosis, OrderNumber, OutboundOpinion, OutboundPatient, PatientIdentifier,
    PersonName, ServiceCode,
};

use super::BuildError;
use crate::mapping::is_icd10_code;

/// An opinion whose values have passed the checks, with its signing time read.
pub(super) struct Checked<'a> {
    pub opinion: &'a OutboundOpinion,
    pub signed_at: DateTime<FixedOffset>,
}

/// Checks every value of `o` (see the module documentation) and reads `signed_at`.
pub(super) fn check(o: &OutboundOpinion) -> Result<Checked<'_>, BuildError> {
    line("consultation_id", &o.consultation_id)?;
    if let Some(n) = &o.placer_order_number {
        order_number("placer_order_number", n)?;
    }
    if let Some(n) = &o.filler_order_number {
        order_number("filler_order_number", n)?;
    }
    patient(&o.patient)?;
    clinician("expert", &o.expert)?;
    clinician("signer", &o.signer)?;
    if let Some(d) = &o.local_doctor {
        clinician("local_doctor", d)?;
    }
    for (i, d) in o.diagnoses.iter().enumerate() {
        line(&format!("diagnoses[{i}].code"), &d.code)?;
        if !is_icd10_code(d.code.trim()) {
            return Err(BuildError::new(
                format!("diagnoses[{i}].code"),
                "not an ICD-10 code (a letter, two digits, then optionally a dot and up to 8 letters or digits: J18.9, I20.000)",
            ));
        }
        line(&format!("diagnoses[{i}].text"), &d.text)?;
    }
    text("treatment_plan", o.treatment_plan.as_deref())?;
    text("advice", o.advice.as_deref())?;
    let has_text = |t: &Option<String>| t.as_deref().is_some_and(|t| !t.trim().is_empty());
    if o.diagnoses.is_empty() && !has_text(&o.treatment_plan) && !has_text(&o.advice) {
        return Err(BuildError::new(
            "diagnoses",
            "the opinion is empty: no diagnosis, no treatment_plan and no advice",
        ));
    }
    line("signature_ref", &o.signature_ref)?;
    if let Some(s) = &o.service {
        line("service.code", &s.code)?;
        optional_line("service.text", &s.text)?;
        optional_line("service.system", &s.system)?;
    }
    let signed_at = DateTime::parse_from_rfc3339(o.signed_at.trim()).map_err(|e| {
        BuildError::new(
            "signed_at",
            format!("not an RFC 3339 date-time such as 2026-01-15T10:30:00+08:00 ({e})"),
        )
    })?;
    Ok(Checked {
        opinion: o,
        signed_at,
    })
}

/// A one-line value: not blank, no control character (a line break has no place in an id or
/// a name, and MLLP framing bytes must never reach the wire).
pub(super) fn line(path: &str, value: &str) -> Result<(), BuildError> {
    if value.trim().is_empty() {
        return Err(BuildError::new(path, "empty"));
    }
    if value.chars().any(char::is_control) {
        return Err(BuildError::new(
            path,
            "holds a control character (a line break, a tab, …); a one-line value cannot",
        ));
    }
    Ok(())
}

pub(super) fn optional_line(path: &str, value: &Option<String>) -> Result<(), BuildError> {
    match value {
        Some(v) => line(path, v),
        None => Ok(()),
    }
}

pub(super) fn order_number(path: &str, n: &OrderNumber) -> Result<(), BuildError> {
    line(&format!("{path}.id"), &n.id)?;
    optional_line(&format!("{path}.namespace"), &n.namespace)
}

/// The patient as the HIS knows them (PID-3, PID-5): at least one identifier, one-line values.
pub(super) fn patient(p: &OutboundPatient) -> Result<(), BuildError> {
    if p.identifiers.is_empty() {
        return Err(BuildError::new(
            "patient.identifiers",
            "at least one identifier is needed (PID-3)",
        ));
    }
    for (i, id) in p.identifiers.iter().enumerate() {
        let at = format!("patient.identifiers[{i}]");
        line(&format!("{at}.id"), &id.id)?;
        optional_line(
            &format!("{at}.assigning_authority"),
            &id.assigning_authority,
        )?;
        optional_line(&format!("{at}.type_code"), &id.type_code)?;
    }
    line("patient.name.family", &p.name.family)?;
    optional_line("patient.name.given", &p.name.given)
}

pub(super) fn clinician(path: &str, c: &Clinician) -> Result<(), BuildError> {
    line(&format!("{path}.id"), &c.id)?;
    line(&format!("{path}.name"), &c.name)
}

/// Multi-line text: line breaks and tabs are fine, other control characters are not.
fn text(path: &str, value: Option<&str>) -> Result<(), BuildError> {
    if value.is_some_and(|v| {
        v.chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    }) {
        return Err(BuildError::new(
            path,
            "holds a control character other than a line break or a tab",
        ));
    }
    Ok(())
}
