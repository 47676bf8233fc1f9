//! What a consultation is created with (STANDARDS CN-01, CN-02, CN-03): the patient (a person
//! id from identity matching), who asks, how urgently, what is asked for (department, minimum
//! title, reason, purpose, time, case summary), what comes with it (observations, reports,
//! DICOM studies), the triage plugin's output, the service type and the cooperation agreement.
//!
//! [`ConsultationRequest::validate`] reports every problem at once, each with its field path
//! (`attachments.studies[1]`), so an HTTP 422 or a pipeline dead letter can say exactly what is
//! wrong. Values are never echoed (the request is patient data), except identifiers that are
//! not (a DICOM UID, an agreement id).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::expert::{CaseRequest, IcdCode, TimeWindow, Title};
use crate::identity::PersonId;

use super::event::PluginRef;
use super::outbound::HisOrder;

/// How soon the consultation is needed: the domain's one [`Urgency`](crate::Urgency)
/// (routine, urgent, critical; parsed from HL7 priority codes and the Chinese words too).
pub use crate::urgency::Urgency;

/// The service type decides which rules apply (CN-01).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceType {
    /// 远程医疗服务 / 远程会诊: institution to institution; the patient is at the inviting
    /// facility with a local physician. Needs a cooperation agreement (CN-02).
    InstitutionToInstitution,
    /// 互联网诊疗: direct to a patient outside a facility, follow-up visits (复诊) only, with
    /// evidence of a prior diagnosis (CN-10).
    DirectToPatient,
    /// 互联网医院 consultation: the treating doctor invites another doctor through the
    /// internet hospital.
    InternetHospital,
}

impl ServiceType {
    /// Every service type.
    pub const ALL: [ServiceType; 3] = [
        ServiceType::InstitutionToInstitution,
        ServiceType::DirectToPatient,
        ServiceType::InternetHospital,
    ];

    /// The code as written in YAML and JSON.
    pub fn code(self) -> &'static str {
        match self {
            ServiceType::InstitutionToInstitution => "institution-to-institution",
            ServiceType::DirectToPatient => "direct-to-patient",
            ServiceType::InternetHospital => "internet-hospital",
        }
    }
}

/// When the consultation should take place (CN-03 时间安排).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RequestedTime {
    /// As soon as an expert accepts (urgent and critical consultations).
    AsSoonAsPossible,
    /// Inside this window.
    Window {
        /// Start.
        from: DateTime<Utc>,
        /// End (exclusive), after `from`.
        to: DateTime<Utc>,
    },
}

/// What the requesting side attaches (ServiceRequest.supportingInfo; DCM-07 (a)). References
/// are resource ids or URLs the FHIR layer resolves; studies are DICOM Study Instance UIDs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachments {
    /// Observation references (lab results, vital signs).
    #[serde(default)]
    pub observations: Vec<String>,
    /// DiagnosticReport or DocumentReference references.
    #[serde(default)]
    pub reports: Vec<String>,
    /// DICOM Study Instance UIDs (`1.2.840.…`).
    #[serde(default)]
    pub studies: Vec<String>,
}

/// The `triage` plugin's output, kept as the plugin gave it with the plugin's identity (which
/// plugin version decided is part of every audit: FHIR-10).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriageOutput {
    /// The plugin and its version.
    pub plugin: PluginRef,
    /// The urgency it suggested.
    #[serde(default)]
    pub urgency: Option<Urgency>,
    /// The department it suggested.
    #[serde(default)]
    pub department: Option<String>,
    /// Its summary or label, as returned.
    pub result: String,
}

/// A request for a consultation, as the local doctor's app or an HIS order (ORM/OML) gives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsultationRequest {
    /// The patient's master person id (identity matching, MATCH-05).
    pub patient: PersonId,
    /// The inviting facility (邀请方).
    pub requesting_facility: String,
    /// The requesting (treating) doctor's practitioner id.
    pub requesting_doctor: String,
    /// The requesting facility's province (GB/T 2260 code, e.g. `44`), for per-province SLAs.
    #[serde(default)]
    pub province: Option<String>,
    /// Routine, urgent or critical.
    pub urgency: Urgency,
    /// The requested department (诊疗科目 code or local code).
    pub department: String,
    /// The lowest acceptable professional title (CN-03 拟邀请医师的技术职务).
    pub min_title: Title,
    /// The diagnosis code the consultation is about, when known (ServiceRequest.reasonCode).
    #[serde(default)]
    pub icd10: Option<IcdCode>,
    /// 邀请事由: why the consultation is requested.
    pub reason: String,
    /// 目的: what the requesting side wants from it.
    pub purpose: String,
    /// 患者相关病历摘要: the case summary.
    pub case_summary: String,
    /// 时间安排.
    pub requested_time: RequestedTime,
    /// Attached observations, reports and studies.
    #[serde(default)]
    pub attachments: Attachments,
    /// The triage plugin's output, when triage ran.
    #[serde(default)]
    pub triage: Option<TriageOutput>,
    /// CN-01 service type.
    pub service_type: ServiceType,
    /// The 远程医疗合作协议 id (CN-02); required for institution-to-institution.
    #[serde(default)]
    pub agreement: Option<String>,
    /// The HIS order the consultation answers (its order numbers and the HIS's patient ids),
    /// for the signed opinion going back to the HIS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub his_order: Option<Box<HisOrder>>,
}

/// One problem in a request, at a field path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldProblem {
    /// The field path (`attachments.studies[1]`).
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

/// Every problem found in a request (never empty).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid consultation request: {}", list(.0))]
pub struct RequestError(pub Vec<FieldProblem>);

fn list(problems: &[FieldProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {}", p.path, p.problem))
        .collect::<Vec<_>>()
        .join("; ")
}

impl RequestError {
    /// The paths, in order (for tests and OperationOutcome.issue.expression).
    pub fn paths(&self) -> Vec<&str> {
        self.0.iter().map(|p| p.path.as_str()).collect()
    }
}

impl ConsultationRequest {
    /// Checks what serde cannot: required texts not blank, the time window in order, study
    /// UIDs well formed, references not blank, the agreement present for
    /// institution-to-institution (CN-02), triage identity complete, the HIS order's ids one line
    /// each. Reports all problems.
    pub fn validate(&self) -> Result<(), RequestError> {
        let mut problems = Vec::new();
        let mut blank = |path: &str, value: &str| {
            if value.trim().is_empty() {
                problems.push(FieldProblem {
                    path: path.to_owned(),
                    problem: "is blank".to_owned(),
                });
            }
        };
        blank("requesting_facility", &self.requesting_facility);
        blank("requesting_doctor", &self.requesting_doctor);
        blank("department", &self.department);
        blank("reason", &self.reason);
        blank("purpose", &self.purpose);
        blank("case_summary", &self.case_summary);
        if let Some(province) = &self.province {
            blank("province", province);
        }
        for (i, r) in self.attachments.observations.iter().enumerate() {
            blank(&format!("attachments.observations[{i}]"), r);
        }
        for (i, r) in self.attachments.reports.iter().enumerate() {
            blank(&format!("attachments.reports[{i}]"), r);
        }
        if let Some(t) = &self.triage {
            blank("triage.plugin.name", &t.plugin.name);
            blank("triage.plugin.version", &t.plugin.version);
            if let Some(d) = &t.department {
                blank("triage.department", d);
            }
        }
        if let RequestedTime::Window { from, to } = self.requested_time
            && to <= from
        {
            problems.push(FieldProblem {
                path: "requested_time.to".into(),
                problem: format!("{to} is not after requested_time.from {from}"),
            });
        }
        for (i, uid) in self.attachments.studies.iter().enumerate() {
            if let Err(problem) = check_dicom_uid(uid) {
                problems.push(FieldProblem {
                    path: format!("attachments.studies[{i}]"),
                    problem,
                });
            }
        }
        match (&self.service_type, &self.agreement) {
            (ServiceType::InstitutionToInstitution, None) => problems.push(FieldProblem {
                path: "agreement".into(),
                problem: "is required for institution-to-institution consultations (CN-02)".into(),
            }),
            (_, Some(a)) if a.trim().is_empty() => problems.push(FieldProblem {
                path: "agreement".into(),
                problem: "is blank".into(),
            }),
            _ => {}
        }
        if let Some(order) = &self.his_order {
            problems.extend(order.problems());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(RequestError(problems))
        }
    }

    /// The case as expert matching sees it (no patient attribute: MATCH-30), for the
    /// consultation `id`.
    pub fn case_request(&self, id: &str) -> CaseRequest {
        CaseRequest {
            id: id.to_owned(),
            department: self.department.clone(),
            icd10: self.icd10.clone(),
            min_title: Some(self.min_title),
            urgency: self.urgency,
            requesting_facility: self.requesting_facility.clone(),
            window: match self.requested_time {
                RequestedTime::AsSoonAsPossible => None,
                RequestedTime::Window { from, to } => Some(TimeWindow { from, to }),
            },
            require_external: self.service_type == ServiceType::InstitutionToInstitution,
            exclude_experts: vec![self.requesting_doctor.clone()],
            follow_up_of: None,
            preferred_expert: None,
            language: None,
        }
    }
}

/// A DICOM UID (PS3.5 §9.1): digits and dots, at most 64 characters, components without a
/// leading zero (unless the component is `0`), neither starting nor ending with a dot.
pub fn check_dicom_uid(uid: &str) -> Result<(), String> {
    if uid.is_empty() {
        return Err("is blank".into());
    }
    if uid.len() > 64 {
        return Err(format!("is {} characters, a UID has at most 64", uid.len()));
    }
    for (i, component) in uid.split('.').enumerate() {
        if component.is_empty() {
            return Err(format!("`{uid}` has an empty component {}", i + 1));
        }
        if !component.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("`{uid}` is not digits and dots"));
        }
        if component.len() > 1 && component.starts_with('0') {
            return Err(format!("`{uid}` component {} has a leading zero", i + 1));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dicom_uids() {
        assert!(check_dicom_uid("1.2.840.10008.5.1.4.1.1.2").is_ok());
        assert!(check_dicom_uid("0.1").is_ok());
        for bad in ["", "1..2", ".1", "1.", "1.02", "1.2a", &"1".repeat(65)] {
            assert!(check_dicom_uid(bad).is_err(), "{bad}");
        }
    }
}
