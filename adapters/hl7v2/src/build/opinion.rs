//! [`OutboundOpinion`], the typed body `hl7_build` reads: the expert's signed consultation
//! opinion (CN-07) with the identifiers the HIS needs to file it, and its checks. Every check
//! names the JSON path at fault (`patient.identifiers[0].id`, `diagnoses[1].code`), never the
//! value (it may be patient data).

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use super::BuildError;
use crate::mapping::is_icd10_code;

/// The signed consultation opinion, as JSON (unknown fields are refused).
///
/// ```json
/// {
///   "consultation_id": "HZ-2026-000123",
///   "placer_order_number": { "id": "P-778", "namespace": "HIS" },
///   "patient": {
///     "identifiers": [{ "id": "0001234567", "assigning_authority": "HXXRMYY", "type_code": "MR" }],
///     "name": { "family": "张", "given": "三丰" }
///   },
///   "expert": { "id": "E1001", "name": "李四" },
///   "local_doctor": { "id": "D0456", "name": "王建国" },
///   "diagnoses": [{ "code": "I20.000", "text": "不稳定型心绞痛" }],
///   "treatment_plan": "阿司匹林 100mg qd\n复查心电图",
///   "advice": "建议转上级医院行冠脉造影",
///   "signed_at": "2026-01-15T10:30:00+08:00",
///   "signer": { "id": "E1001", "name": "李四" },
///   "signature_ref": "sig-7f3a"
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundOpinion {
    /// The consultation's id: `OBR-3`/`ORC-3` (filler order number) unless
    /// `filler_order_number` is given, always `OBR-20`, and `TXA-12` (unique document number).
    pub consultation_id: String,
    /// The HIS's order number (`ORC-2` of its `ORM`/`OML`): `ORC-2`, `OBR-2`, `TXA-14`.
    #[serde(default)]
    pub placer_order_number: Option<OrderNumber>,
    /// The filler order number the HIS knows, when it is not the consultation id under the
    /// sending application: `ORC-3`, `OBR-3`, `TXA-15`.
    #[serde(default)]
    pub filler_order_number: Option<OrderNumber>,
    /// `PID`.
    pub patient: OutboundPatient,
    /// The consulting expert (受邀方医师): `OBR-32`, `OBX-16`, `TXA-5`, `TXA-9`.
    pub expert: Clinician,
    /// The local doctor who asked (邀请方医师): `ORC-12`, `OBR-16`.
    #[serde(default)]
    pub local_doctor: Option<Clinician>,
    /// The diagnoses, ICD-10: one `OBX` each (`CWE`, coding system `I10`).
    #[serde(default)]
    pub diagnoses: Vec<OpinionDiagnosis>,
    /// The treatment plan (治疗方案), multi-line text.
    #[serde(default)]
    pub treatment_plan: Option<String>,
    /// The advice (会诊建议), multi-line text.
    #[serde(default)]
    pub advice: Option<String>,
    /// When the opinion was signed, RFC 3339 (`2026-01-15T10:30:00+08:00`): `OBR-7`,
    /// `OBR-22`, `OBX-14`, `TXA-4`, `TXA-22`, and `MSH-7` by default.
    pub signed_at: String,
    /// Who signed (usually the expert): `OBX-16` of the signature `OBX`, `TXA-22`, `EVN-5`.
    pub signer: Clinician,
    /// The id of the stored signature (the signature itself is not sent in HL7).
    pub signature_ref: String,
    /// `OBR-4`, what the HIS ordered; default `11488-4^Consult note^LN`.
    #[serde(default)]
    pub service: Option<ServiceCode>,
}

/// An entity identifier (EI): `id^namespace`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderNumber {
    /// EI.1.
    pub id: String,
    /// EI.2, the application that assigned it.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// The patient as the HIS knows them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundPatient {
    /// `PID-3`, at least one.
    pub identifiers: Vec<PatientIdentifier>,
    /// `PID-5`.
    pub name: PersonName,
}

/// A patient identifier (CX): `id^^^assigning_authority^type_code`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientIdentifier {
    /// CX.1.
    pub id: String,
    /// CX.4 (HD.1), e.g. `HXXRMYY`.
    #[serde(default)]
    pub assigning_authority: Option<String>,
    /// CX.5 (table 0203: `MR`, `NI`, …); `type` is accepted too.
    #[serde(default, alias = "type")]
    pub type_code: Option<String>,
}

/// A person's name (XPN): `family^given`. A name that is not split goes whole in `family`,
/// as most Chinese HIS send it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonName {
    /// XPN.1.
    pub family: String,
    /// XPN.2.
    #[serde(default)]
    pub given: Option<String>,
}

/// A doctor (XCN): `id^name` (the whole name in the family-name component).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clinician {
    /// XCN.1.
    pub id: String,
    /// XCN.2.
    pub name: String,
}

/// A diagnosis: an ICD-10 code and its text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpinionDiagnosis {
    /// ICD-10 (`I20.000`, `J18.9`; the national clinical version's `K35.800x002` too).
    pub code: String,
    /// Its text (`不稳定型心绞痛`).
    pub text: String,
}

/// A coded value (CE/CWE): `code^text^system`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceCode {
    /// Component 1.
    pub code: String,
    /// Component 2.
    #[serde(default)]
    pub text: Option<String>,
    /// Component 3, the coding system (`LN`, `L`, …).
    #[serde(default)]
    pub system: Option<String>,
}

/// An opinion whose values have passed the checks, with its signing time read.
pub(super) struct Checked<'a> {
    pub opinion: &'a OutboundOpinion,
    pub signed_at: DateTime<FixedOffset>,
}

impl OutboundOpinion {
    /// Checks every value (see the module documentation) and reads `signed_at`.
    pub(super) fn check(&self) -> Result<Checked<'_>, BuildError> {
        line("consultation_id", &self.consultation_id)?;
        if let Some(n) = &self.placer_order_number {
            order_number("placer_order_number", n)?;
        }
        if let Some(n) = &self.filler_order_number {
            order_number("filler_order_number", n)?;
        }
        if self.patient.identifiers.is_empty() {
            return Err(BuildError::new(
                "patient.identifiers",
                "at least one identifier is needed (PID-3)",
            ));
        }
        for (i, id) in self.patient.identifiers.iter().enumerate() {
            let at = format!("patient.identifiers[{i}]");
            line(&format!("{at}.id"), &id.id)?;
            optional_line(
                &format!("{at}.assigning_authority"),
                &id.assigning_authority,
            )?;
            optional_line(&format!("{at}.type_code"), &id.type_code)?;
        }
        line("patient.name.family", &self.patient.name.family)?;
        optional_line("patient.name.given", &self.patient.name.given)?;
        clinician("expert", &self.expert)?;
        clinician("signer", &self.signer)?;
        if let Some(d) = &self.local_doctor {
            clinician("local_doctor", d)?;
        }
        for (i, d) in self.diagnoses.iter().enumerate() {
            line(&format!("diagnoses[{i}].code"), &d.code)?;
            if !is_icd10_code(d.code.trim()) {
                return Err(BuildError::new(
                    format!("diagnoses[{i}].code"),
                    "not an ICD-10 code (a letter, two digits, then optionally a dot and up to 8 letters or digits: J18.9, I20.000)",
                ));
            }
            line(&format!("diagnoses[{i}].text"), &d.text)?;
        }
        text("treatment_plan", self.treatment_plan.as_deref())?;
        text("advice", self.advice.as_deref())?;
        let has_text = |t: &Option<String>| t.as_deref().is_some_and(|t| !t.trim().is_empty());
        if self.diagnoses.is_empty() && !has_text(&self.treatment_plan) && !has_text(&self.advice) {
            return Err(BuildError::new(
                "diagnoses",
                "the opinion is empty: no diagnosis, no treatment_plan and no advice",
            ));
        }
        line("signature_ref", &self.signature_ref)?;
        if let Some(s) = &self.service {
            line("service.code", &s.code)?;
            optional_line("service.text", &s.text)?;
            optional_line("service.system", &s.system)?;
        }
        let signed_at = DateTime::parse_from_rfc3339(self.signed_at.trim()).map_err(|e| {
            BuildError::new(
                "signed_at",
                format!("not an RFC 3339 date-time such as 2026-01-15T10:30:00+08:00 ({e})"),
            )
        })?;
        Ok(Checked {
            opinion: self,
            signed_at,
        })
    }
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

fn optional_line(path: &str, value: &Option<String>) -> Result<(), BuildError> {
    match value {
        Some(v) => line(path, v),
        None => Ok(()),
    }
}

fn order_number(path: &str, n: &OrderNumber) -> Result<(), BuildError> {
    line(&format!("{path}.id"), &n.id)?;
    optional_line(&format!("{path}.namespace"), &n.namespace)
}

fn clinician(path: &str, c: &Clinician) -> Result<(), BuildError> {
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
