//! De-identification of a completed consultation into a library record.
//!
//! Removed: the patient's name, identity numbers, phone numbers and address; the exact birth
//! date becomes a five-year [`AgeBand`] at completion; the completion time becomes a date. Free
//! text (the case summary and the opinion) goes through [`redact_text`]: the patient's known
//! name, numbers and address are replaced where they occur, and every run of 7 or more digits
//! (spaces and hyphens between digits allowed, full-width digits included) is replaced by a
//! label — `[身份证号]` for 18 characters shaped like a resident id, `[手机号]` for 11 digits
//! starting with 1, `[号码]` otherwise (landlines, record numbers, and also long dates such
//! as `2024-03-05`, which identify too). Shorter numbers (doses, blood pressure, ages) stay.
//!
//! The record keeps the consultation id, so the library is pseudonymous: someone allowed to
//! read the consultation can follow the link, and nobody else learns who the patient is.

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::expert::icd::IcdCode;

/// Flags a case library is browsed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFlags {
    /// The consultation corrected an earlier diagnosis (误诊).
    #[serde(default)]
    pub misdiagnosis: bool,
    /// A rare disease (罕见病).
    #[serde(default)]
    pub rare_disease: bool,
    /// An emergency consultation (急会诊).
    #[serde(default)]
    pub emergency: bool,
}

impl CaseFlags {
    /// True when every flag set in `required` is set here.
    pub fn includes(self, required: CaseFlags) -> bool {
        (!required.misdiagnosis || self.misdiagnosis)
            && (!required.rare_disease || self.rare_disease)
            && (!required.emergency || self.emergency)
    }
}

/// Who the patient is: what de-identification removes, and looks for in free text.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientFacts {
    /// The name as recorded.
    pub name: String,
    /// Identity numbers (resident id, 医保 number, medical record numbers).
    #[serde(default)]
    pub id_numbers: Vec<String>,
    /// Phone numbers.
    #[serde(default)]
    pub phones: Vec<String>,
    /// The address, when known.
    #[serde(default)]
    pub address: Option<String>,
    /// The birth date, when known.
    #[serde(default)]
    pub birth_date: Option<NaiveDate>,
}

/// A completed consultation as the workflow knows it (identified).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompletedCase {
    /// The consultation id (kept as the record's id).
    pub consultation_id: String,
    /// When it was completed.
    pub completed_at: DateTime<Utc>,
    /// The department (诊疗科目 code or local code).
    pub department: String,
    /// The expert's diagnoses.
    pub diagnoses: Vec<IcdCode>,
    /// Library flags.
    #[serde(default)]
    pub flags: CaseFlags,
    /// The patient.
    pub patient: PatientFacts,
    /// The case summary (CN-03 病历摘要).
    pub summary: String,
    /// The expert's opinion (treatment plan and advice).
    pub opinion: String,
    /// The expert who signed the opinion.
    pub expert_id: String,
}

/// A five-year age band (`40-44`), `90+` at the top.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AgeBand {
    /// The band's lowest age (a multiple of 5, at most 90).
    pub from: u8,
}

impl AgeBand {
    /// The band of someone born on `birth` at `on`; none when `birth` is after `on`.
    pub fn at(birth: NaiveDate, on: NaiveDate) -> Option<AgeBand> {
        let years = on.years_since(birth)?;
        let from = (years.min(90) / 5 * 5) as u8;
        Some(AgeBand { from })
    }
}

impl fmt::Display for AgeBand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.from >= 90 {
            write!(f, "90+")
        } else {
            write!(f, "{}-{}", self.from, self.from + 4)
        }
    }
}

/// A de-identified case in the library.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseRecord {
    /// The consultation id.
    pub case_id: String,
    /// The completion date (UTC).
    pub completed_on: NaiveDate,
    /// The department.
    pub department: String,
    /// The diagnoses.
    pub diagnoses: Vec<IcdCode>,
    /// Library flags.
    pub flags: CaseFlags,
    /// The patient's age band at completion, when the birth date was known.
    pub age_band: Option<AgeBand>,
    /// The redacted case summary.
    pub summary: String,
    /// The redacted opinion.
    pub opinion: String,
    /// The expert who signed the opinion.
    pub expert_id: String,
}

/// Why a case cannot enter the library.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeidError {
    /// A required field is blank.
    #[error("case `{case}`: {field} is blank")]
    Blank {
        /// The consultation id.
        case: String,
        /// The field.
        field: &'static str,
    },
    /// No diagnosis: the library is searched by ICD-10 code.
    #[error("case `{case}`: diagnoses is empty (a library case needs an ICD-10 diagnosis)")]
    NoDiagnosis {
        /// The consultation id.
        case: String,
    },
    /// The birth date is after the completion.
    #[error("case `{case}`: patient.birth_date is after completed_at")]
    BirthAfterCompletion {
        /// The consultation id.
        case: String,
    },
}

/// The de-identified record of `case`.
pub fn deidentify(case: &CompletedCase) -> Result<CaseRecord, DeidError> {
    let id = case.consultation_id.trim();
    for (field, value) in [
        ("consultation_id", id),
        ("department", case.department.as_str()),
        ("expert_id", case.expert_id.as_str()),
    ] {
        if value.trim().is_empty() {
            return Err(DeidError::Blank {
                case: id.to_owned(),
                field,
            });
        }
    }
    if case.diagnoses.is_empty() {
        return Err(DeidError::NoDiagnosis {
            case: id.to_owned(),
        });
    }
    let completed_on = case.completed_at.date_naive();
    let age_band = match case.patient.birth_date {
        Some(birth) => Some(AgeBand::at(birth, completed_on).ok_or_else(|| {
            DeidError::BirthAfterCompletion {
                case: id.to_owned(),
            }
        })?),
        None => None,
    };
    let mut diagnoses: Vec<IcdCode> = Vec::with_capacity(case.diagnoses.len());
    for code in &case.diagnoses {
        if !diagnoses.contains(code) {
            diagnoses.push(code.clone());
        }
    }
    Ok(CaseRecord {
        case_id: id.to_owned(),
        completed_on,
        department: case.department.trim().to_owned(),
        diagnoses,
        flags: case.flags,
        age_band,
        summary: redact_text(&case.summary, &case.patient),
        opinion: redact_text(&case.opinion, &case.patient),
        expert_id: case.expert_id.trim().to_owned(),
    })
}

/// `text` with the patient's known identifiers and every long digit run replaced (see the
/// module docs).
pub fn redact_text(text: &str, patient: &PatientFacts) -> String {
    let mut out = text.to_owned();
    let known = [
        (Some(patient.name.as_str()), "[姓名]"),
        (patient.address.as_deref(), "[地址]"),
    ];
    for (value, label) in known {
        // A one-character value (a bare surname) would blank out ordinary words.
        if let Some(v) = value.map(str::trim).filter(|v| v.chars().count() >= 2) {
            out = out.replace(v, label);
        }
    }
    for number in patient.id_numbers.iter().chain(&patient.phones) {
        let n = number.trim();
        if n.chars().count() >= 2 {
            out = out.replace(n, "[号码]");
        }
    }
    redact_digit_runs(&out)
}

/// The value of an ASCII or full-width digit.
fn digit(c: char) -> Option<u32> {
    match c {
        '0'..='9' => c.to_digit(10),
        '０'..='９' => Some(c as u32 - '０' as u32),
        _ => None,
    }
}

/// Replaces each run of ≥ 7 digits (single spaces or hyphens between digits allowed; a
/// trailing `X` after 17 digits, as in resident ids) with a label.
pub fn redact_digit_runs(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if digit(chars[i]).is_none() {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        // Extend the run: digits, and a single separator only when a digit follows it.
        let mut end = i;
        let mut digits = String::new();
        while end < chars.len() {
            if let Some(d) = digit(chars[end]) {
                digits.push(char::from_digit(d, 10).unwrap_or('0'));
                end += 1;
            } else if matches!(chars[end], ' ' | '-')
                && chars.get(end + 1).and_then(|c| digit(*c)).is_some()
            {
                end += 1;
            } else {
                break;
            }
        }
        let id_check = digits.len() == 17 && matches!(chars.get(end), Some('X' | 'x' | 'Ｘ'));
        if id_check {
            end += 1;
        }
        if digits.len() < 7 {
            out.extend(&chars[i..end]);
        } else if id_check || digits.len() == 18 {
            out.push_str("[身份证号]");
        } else if digits.len() == 11 && digits.starts_with('1') {
            out.push_str("[手机号]");
        } else {
            out.push_str("[号码]");
        }
        i = end;
    }
    out
}
