//! What must be on record before the session starts (STANDARDS CN-05, CN-06, CN-10, CN-11,
//! CN-12), and what must be on record before completion (CN-07, CN-21). The media layer reads
//! the same records to admit participants.
//!
//! | Requirement | Service types | Standard |
//! |---|---|---|
//! | informed consent (patient, or guardian/relative when informing the patient is not suitable) | all | CN-05 |
//! | the accepted expert's real-name verification, passed | all | CN-11 |
//! | a local physician attached, and their real-name verification passed | institution-to-institution | CN-06 |
//! | the patient's real-name verification, passed | direct-to-patient, internet hospital | CN-12 |
//! | prior-diagnosis evidence (ICD-10 + a qualifying document) | direct-to-patient | CN-10 |
//!
//! **No biometric data.** A [`Verification`] keeps the method, time, result and the
//! provider's reference only; `deny_unknown_fields` refuses a face image or template.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::compliance::{Rules, StartFacts};
use crate::expert::IcdCode;

use super::request::ServiceType;

/// Who signed the informed consent (CN-05).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConsentSigner {
    /// The patient.
    Patient,
    /// A legal guardian (minors, incapacity).
    Guardian,
    /// A close relative (近亲属).
    Relative,
}

/// A signed informed consent (签署远程医疗服务知情同意书).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consent {
    /// Who signed.
    pub signer: ConsentSigner,
    /// The signed document or e-signature (a Consent/DocumentReference id).
    pub document: String,
    /// When it was signed.
    pub signed_at: DateTime<Utc>,
    /// Set when informing the patient is not suitable; required when a guardian or a relative
    /// signs (CN-05).
    #[serde(default)]
    pub not_suitable_to_inform_patient: bool,
}

/// The accompanying local physician (CN-06).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalPhysician {
    /// The practitioner id.
    pub practitioner: String,
    /// The practice licence number (执业证书编码).
    pub licence: String,
}

/// Whose identity was verified.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Subject {
    /// The patient.
    Patient,
    /// A physician (the expert or the local physician).
    Physician {
        /// The practitioner id.
        practitioner: String,
    },
    /// The guardian present with a child patient (CN-13).
    Guardian {
        /// How they are related (`mother`, `father`, `legal-guardian`, …).
        #[serde(default)]
        relationship: Option<String>,
    },
}

impl Subject {
    /// Who, in a refusal's words.
    fn describe(&self) -> String {
        match self {
            Subject::Patient => "the patient".into(),
            Subject::Physician { practitioner } => format!("physician `{practitioner}`"),
            Subject::Guardian { .. } => "the guardian".into(),
        }
    }

    /// True when a verification of `self` counts for `wanted` (any guardian for a guardian).
    fn counts_for(&self, wanted: &Subject) -> bool {
        match (self, wanted) {
            (Subject::Guardian { .. }, Subject::Guardian { .. }) => true,
            _ => self == wanted,
        }
    }
}

/// How an identity was verified (CN-11, CN-12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerificationMethod {
    /// Resident ID card plus face comparison by the provider.
    IdCardFace,
    /// 医保电子凭证 实人认证.
    MedicalInsuranceCredential,
    /// 电子健康卡.
    HealthCard,
    /// A CA certificate login (physicians).
    CaCertificate,
    /// Face verification against the registration photo, by the provider (physicians).
    FaceVerification,
}

/// The result of a verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerificationResult {
    /// Verified.
    Passed,
    /// Not verified.
    Failed,
}

/// A real-name verification record: method, time, result and the provider's reference. No
/// biometric data (CN-12, PIPL).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verification {
    /// Whose identity.
    pub subject: Subject,
    /// How.
    pub method: VerificationMethod,
    /// When the provider verified.
    pub verified_at: DateTime<Utc>,
    /// The outcome.
    pub result: VerificationResult,
    /// The provider's transaction reference, for audit.
    #[serde(default)]
    pub provider_reference: Option<String>,
}

/// The kind of document that proves a definite earlier diagnosis (CN-10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvidenceKind {
    /// 门诊病历.
    OutpatientRecord,
    /// 住院病历.
    InpatientRecord,
    /// 出院小结.
    DischargeSummary,
    /// 诊断证明.
    DiagnosisCertificate,
}

/// Evidence of a prior diagnosis for a follow-up visit (CN-10).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorDiagnosis {
    /// The diagnosis.
    pub code: IcdCode,
    /// The document kind.
    pub kind: EvidenceKind,
    /// The document (DocumentReference id).
    pub document: String,
}

/// One participant's consent to the call being recorded (CN-05, RTC-30), or its withdrawal.
/// Each participant of the room gives their own: the patient (or who signed the informed
/// consent for them), the local physician, the expert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingConsent {
    /// The participant's role in the room.
    pub role: super::room::RoomRole,
    /// The participant: a practitioner id, the patient's person id, an observer's user id.
    pub participant: String,
    /// The signed document or e-signature (a Consent/DocumentReference id).
    pub document: String,
    /// When it was given (or withdrawn).
    pub signed_at: DateTime<Utc>,
    /// `true` records a withdrawal: recordings stop needing this participant's consent again.
    #[serde(default)]
    pub withdrawn: bool,
}

/// The gate records of one consultation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateRecords {
    /// The latest consent.
    pub consent: Option<Consent>,
    /// Every recording consent and withdrawal, in order (the latest per participant counts).
    #[serde(default)]
    pub recording_consents: Vec<RecordingConsent>,
    /// The attached local physician (the latest).
    pub physician: Option<LocalPhysician>,
    /// Every verification, in order.
    pub verifications: Vec<Verification>,
    /// Every prior-diagnosis evidence, in order.
    pub prior_diagnoses: Vec<PriorDiagnosis>,
}

/// Something that must be on record before an action; the `Display` says what and why.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "requirement", rename_all = "snake_case")]
pub enum Requirement {
    /// CN-05.
    Consent,
    /// CN-06.
    LocalPhysician,
    /// CN-06 with CN-11.
    LocalPhysicianVerified {
        /// The attached physician.
        practitioner: String,
    },
    /// CN-11.
    ExpertVerified {
        /// The accepted expert.
        expert: String,
    },
    /// CN-12.
    PatientVerified,
    /// CN-10.
    PriorDiagnosis,
    /// CN-11, CN-12: a passed verification, but older than the rules allow.
    FreshVerification {
        /// Whose (`physician \`E1\``, `the patient`, `the guardian`).
        who: String,
        /// The longest age the rules allow, minutes.
        max_age_minutes: u32,
    },
    /// CN-13: the patient is a child: a guardian's passed verification.
    Guardian {
        /// The age limit of the rule.
        under_years: u32,
    },
    /// CN-07, CN-21.
    SignedOpinion,
    /// CN-07.
    LocalDecision,
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requirement::Consent => f.write_str("no informed consent recorded (CN-05)"),
            Requirement::LocalPhysician => {
                f.write_str("no local physician attached to accompany the patient (CN-06)")
            }
            Requirement::LocalPhysicianVerified { practitioner } => write!(
                f,
                "local physician `{practitioner}` has no passed real-name verification (CN-06, CN-11)"
            ),
            Requirement::ExpertVerified { expert } => write!(
                f,
                "expert `{expert}` has no passed real-name verification (CN-11)"
            ),
            Requirement::PatientVerified => {
                f.write_str("the patient has no passed real-name verification (CN-12)")
            }
            Requirement::PriorDiagnosis => f.write_str(
                "no prior-diagnosis evidence for this follow-up (CN-10: no first visits online)",
            ),
            Requirement::FreshVerification {
                who,
                max_age_minutes,
            } => write!(
                f,
                "{who}'s real-name verification is older than {max_age_minutes} minutes: verify again before the session (CN-11, CN-12)"
            ),
            Requirement::Guardian { under_years } => write!(
                f,
                "the patient is under {under_years}: a guardian present with a passed real-name verification is needed (CN-13)"
            ),
            Requirement::SignedOpinion => {
                f.write_str("no signed expert opinion recorded (CN-07, CN-21)")
            }
            Requirement::LocalDecision => {
                f.write_str("no local doctor's decision recorded (CN-07)")
            }
        }
    }
}

impl Requirement {
    /// The rule of STANDARDS.md §4 it comes from.
    pub fn rule(&self) -> &'static str {
        match self {
            Requirement::Consent => "CN-05",
            Requirement::LocalPhysician | Requirement::LocalPhysicianVerified { .. } => "CN-06",
            Requirement::ExpertVerified { .. } | Requirement::FreshVerification { .. } => "CN-11",
            Requirement::PatientVerified => "CN-12",
            Requirement::PriorDiagnosis => "CN-10",
            Requirement::Guardian { .. } => "CN-13",
            Requirement::SignedOpinion | Requirement::LocalDecision => "CN-07",
        }
    }
}

/// How a subject's verification stands.
enum Verified {
    Yes,
    No,
    /// Passed, but before the rules' window.
    Stale,
}

impl GateRecords {
    /// True when `subject` has a passed verification.
    pub fn verified(&self, subject: &Subject) -> bool {
        self.verifications
            .iter()
            .any(|v| v.subject.counts_for(subject) && v.result == VerificationResult::Passed)
    }

    fn verified_since(&self, subject: &Subject, since: Option<DateTime<Utc>>) -> Verified {
        let latest = self
            .verifications
            .iter()
            .filter(|v| v.subject.counts_for(subject) && v.result == VerificationResult::Passed)
            .map(|v| v.verified_at)
            .max();
        match (latest, since) {
            (None, _) => Verified::No,
            (Some(at), Some(since)) if at < since => Verified::Stale,
            _ => Verified::Yes,
        }
    }

    /// What is missing before the session can start under the statutory rules of `service`
    /// (see [`GateRecords::missing_under`]).
    pub fn missing_for_start(
        &self,
        service: ServiceType,
        expert: Option<&str>,
    ) -> Vec<Requirement> {
        self.missing_under(&Rules::statutory(service), expert, None)
    }

    /// What is missing before the session can start under `rules` (the service type's at the
    /// requesting facility), for the consultation accepted by `expert`; `facts` add the
    /// verifications' age and the patient's age (none: any passed verification counts, the
    /// age is unknown). Empty when nothing is.
    pub fn missing_under(
        &self,
        rules: &Rules,
        expert: Option<&str>,
        facts: Option<&StartFacts>,
    ) -> Vec<Requirement> {
        let since = facts.and_then(|f| f.verified_since(rules));
        let minor = facts.is_some_and(|f| f.is_minor(rules));
        let mut missing = Vec::new();
        let check = |subject: Subject, none: Requirement, missing: &mut Vec<Requirement>| match self
            .verified_since(&subject, since)
        {
            Verified::Yes => {}
            Verified::No => missing.push(none),
            Verified::Stale => missing.push(Requirement::FreshVerification {
                who: subject.describe(),
                max_age_minutes: rules.verification_max_age_minutes.unwrap_or_default(),
            }),
        };
        if rules.consent && self.consent.is_none() {
            missing.push(Requirement::Consent);
        }
        if let Some(expert) = expert {
            let subject = Subject::Physician {
                practitioner: expert.to_owned(),
            };
            let none = Requirement::ExpertVerified {
                expert: expert.to_owned(),
            };
            check(subject, none, &mut missing);
        }
        // CN-13: a child needs a physician present as well as the guardian.
        if rules.local_physician || minor {
            match &self.physician {
                None => missing.push(Requirement::LocalPhysician),
                Some(p) => {
                    let subject = Subject::Physician {
                        practitioner: p.practitioner.clone(),
                    };
                    let none = Requirement::LocalPhysicianVerified {
                        practitioner: p.practitioner.clone(),
                    };
                    check(subject, none, &mut missing);
                }
            }
        }
        if rules.patient_verification {
            check(Subject::Patient, Requirement::PatientVerified, &mut missing);
        }
        if rules.prior_diagnosis && self.prior_diagnoses.is_empty() {
            missing.push(Requirement::PriorDiagnosis);
        }
        if minor {
            let none = Requirement::Guardian {
                under_years: rules.guardian_under_years,
            };
            check(Subject::Guardian { relationship: None }, none, &mut missing);
        }
        missing
    }
}
