//! The library record of a completed consultation (issue 15 item 8): the expert's signed
//! diagnoses, the requested department, the flags the request carries, and the case summary
//! and opinion redacted against every record the patient has (a person may be known under
//! several names and numbers across facilities).

use crate::consultation::{Consultation, State};

use super::deid::{CaseFlags, CaseRecord, CompletedCase, DeidError, PatientFacts, deidentify};
use super::redact_text;

/// The de-identified record of `c`; `None` while `c` is not completed with a signed opinion.
///
/// `patients` are the patient's records (the first is the primary one; the others' names,
/// numbers and addresses are redacted too). Flags: `emergency` for an urgent or critical
/// request (急会诊); the consultation records no misdiagnosis or rare-disease finding, so those
/// stay unset.
pub fn library_record(
    c: &Consultation,
    patients: &[PatientFacts],
) -> Option<Result<CaseRecord, DeidError>> {
    if c.state() != State::ReportSigned {
        return None;
    }
    let opinion = &c.opinion()?.signed.opinion;
    let completed_at = c
        .timeline()
        .iter()
        .rev()
        .find(|e| e.event == "completed")
        .map_or_else(|| c.last_modified(), |e| e.at);
    let r = c.request();
    let mut primary = patients.first().cloned().unwrap_or_default();
    for other in patients.iter().skip(1) {
        primary.id_numbers.extend(other.id_numbers.iter().cloned());
        primary.phones.extend(other.phones.iter().cloned());
        if primary.birth_date.is_none() {
            primary.birth_date = other.birth_date;
        }
    }
    let case = CompletedCase {
        consultation_id: c.id().to_owned(),
        completed_at,
        department: r.department.clone(),
        diagnoses: opinion.diagnoses.iter().map(|d| d.code.clone()).collect(),
        flags: CaseFlags {
            emergency: r.urgency.is_urgent(),
            ..CaseFlags::default()
        },
        patient: primary,
        summary: r.case_summary.clone(),
        opinion: format!("{}\n{}", opinion.treatment_plan, opinion.advice),
        expert_id: opinion.expert.clone(),
    };
    Some(deidentify(&case).map(|mut record| {
        for other in patients.iter().skip(1) {
            record.summary = redact_text(&record.summary, other);
            record.opinion = redact_text(&record.opinion, other);
        }
        record
    }))
}
