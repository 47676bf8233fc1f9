//! Imaging studies attached to a consultation (DCM-07, issue 17): a study that completed at
//! the engine (the DICOM SCP's "study complete") or a prior pulled from the requesting
//! facility's PACS (DCM-05 prefetch) becomes part of the consultation packet. The event is
//! `study_attached` ([`EventKind::StudyAttached`]); the consultation keeps the list
//! ([`Consultation::studies`]), which is also what an expert's token reaches over DICOMweb.
//!
//! [`attach_study`] is not one of the FHIR-10 actions (it changes no state and is allowed in
//! every live state): it is decided here, next to the state machine, not in its table.
//! Attaching a study that is already attached with the same instance count decides nothing (a
//! retry of the study-complete sweep, or the completion of a study attached as a prior on
//! approval, adds no event); a study that grew since (a late series) is attached again with
//! its new counts, keeping how it first joined.

use serde::{Deserialize, Serialize};

use super::aggregate::Consultation;
use super::command::Context;
use super::decide::{check_context, stamp};
use super::error::ConsultError;
use super::event::{Event, EventKind, Role};

/// How a study was matched to the consultation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StudyMatch {
    /// The study's accession number is the HIS order the consultation answers.
    Accession,
    /// The study's patient is the consultation's patient (through the patient index).
    Patient,
    /// A prior study of the patient, pulled from the requesting facility's PACS (DCM-05).
    Prefetch,
    /// Attached by a person (a coordinator or the local doctor).
    Manual,
}

/// A study as the consultation records it: enough to list it and to find it in the index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachedStudy {
    /// The Study Instance UID.
    pub study_uid: String,
    /// The facility whose modality or PACS sent it.
    pub facility: String,
    /// The accession number, if the study carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accession: Option<String>,
    /// The modalities of its series (`CT`, `MR`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modalities: Vec<String>,
    /// Study Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Study Date (`YYYYMMDD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub study_date: Option<String>,
    /// Series and instances at the time of attaching.
    #[serde(default)]
    pub series_count: u64,
    #[serde(default)]
    pub instance_count: u64,
    /// How it was matched.
    pub matched_by: StudyMatch,
    /// True for an earlier study of the patient (a prior), false for the study of this
    /// consultation.
    #[serde(default)]
    pub prior: bool,
}

/// The `study_attached` event for `study`, or none when it is attached already with the same
/// instance count (however it is matched this time). Refused: an actor other than the engine, a coordinator or a local doctor;
/// an ended consultation; a study without a UID or facility.
pub fn attach_study(
    c: &Consultation,
    study: &AttachedStudy,
    ctx: &Context<'_>,
) -> Result<Vec<Event>, ConsultError> {
    check_context(None, ctx)?;
    if !matches!(
        ctx.actor.role,
        Role::System | Role::Coordinator | Role::LocalDoctor
    ) {
        return Err(ConsultError::RoleNotAllowed {
            action: "attach_study",
            role: ctx.actor.role,
        });
    }
    if c.state().is_terminal() {
        return Err(ConsultError::invalid(
            None,
            "state",
            format!(
                "the consultation is {}: no study is attached to it any more",
                c.state()
            ),
        ));
    }
    if !is_uid(&study.study_uid) {
        return Err(ConsultError::invalid(
            None,
            "study.study_uid",
            format!("{:?} is not a DICOM UID", study.study_uid),
        ));
    }
    if study.facility.trim().is_empty() {
        return Err(ConsultError::invalid(None, "study.facility", "is blank"));
    }
    let mut study = study.clone();
    if let Some(known) = c.studies().iter().find(|s| s.study_uid == study.study_uid) {
        if known.instance_count == study.instance_count {
            return Ok(Vec::new());
        }
        // A study that grew keeps how it first joined (a prior stays a prior).
        study.matched_by = known.matched_by;
        study.prior = known.prior;
    }
    Ok(stamp(
        c.version(),
        ctx,
        None,
        vec![EventKind::StudyAttached { study }],
    ))
}

/// Folds an attachment into the list: a study attached again replaces its entry.
pub(crate) fn fold(studies: &mut Vec<AttachedStudy>, study: &AttachedStudy) {
    match studies.iter_mut().find(|s| s.study_uid == study.study_uid) {
        Some(s) => *s = study.clone(),
        None => studies.push(study.clone()),
    }
}

/// A DICOM UID (PS3.5 9.1): 1–64 characters, digits and dots, components without leading
/// zeros. The DICOM adapter's check too.
pub fn is_uid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_digit())
                && (c == "0" || !c.starts_with('0'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids() {
        assert!(is_uid("1.2.840.10008.1.1"));
        assert!(is_uid("2.25.0"));
        assert!(!is_uid(""));
        assert!(!is_uid("1..2"));
        assert!(!is_uid("1.02"));
        assert!(!is_uid("1.2a"));
        assert!(!is_uid(&"1.".repeat(40)));
    }
}
