//! The expert's opinion report and the local doctor's decision (STANDARDS CN-07, CN-21).
//!
//! The opinion is signed over its **canonical bytes**, not over JSON (whose key order, spacing
//! and escapes are not fixed), so that a verifier years later rebuilds exactly the bytes that
//! were signed from the stored fields. The form, version 1:
//!
//! ```text
//! huizhen-opinion/1\n
//! consultation <n>:<consultation id>\n
//! expert <n>:<expert id>\n
//! diagnoses <count>\n
//! code <n>:<ICD-10 code, dotted: I25.10>\n      ┐ once per diagnosis,
//! text <n>:<diagnosis text>\n                   ┘ in the order given (primary first)
//! treatment_plan <n>:<text>\n
//! advice <n>:<text>\n
//! ```
//!
//! `<n>` is the byte length (decimal) of the UTF-8 value that follows the colon, so a value
//! may contain newlines or colons without ambiguity. Texts are Unicode NFC-normalised first,
//! so the same visible text always gives the same bytes. A change to this form is a new
//! version line (`huizhen-opinion/2`); verifiers keep every version they have signed.

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use crate::expert::IcdCode;
use crate::signature::{Signature, SignatureError, SignatureVerifier, Signer};

use super::request::FieldProblem;

/// The first line of the canonical form.
pub const CANONICAL_VERSION: &str = "huizhen-opinion/1";

/// One diagnosis of the opinion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Diagnosis {
    /// ICD-10 (国家临床版 2.0) code.
    pub code: IcdCode,
    /// The diagnosis as written (may be empty: the code speaks).
    #[serde(default)]
    pub text: String,
}

/// The expert's diagnostic and treatment opinion (会诊意见).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Opinion {
    /// The consultation it belongs to (signed, so a signature cannot move to another case).
    pub consultation: String,
    /// The expert who gives it (signed, likewise).
    pub expert: String,
    /// The diagnoses, primary first; at least one.
    pub diagnoses: Vec<Diagnosis>,
    /// The treatment plan.
    pub treatment_plan: String,
    /// Advice to the local doctor and the patient.
    pub advice: String,
}

/// An opinion with the signature over its canonical bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedOpinion {
    /// The opinion.
    pub opinion: Opinion,
    /// The signature (value, certificate chain, signing time).
    pub signature: Signature,
}

fn field(out: &mut Vec<u8>, name: &str, value: &str) {
    let value: String = value.nfc().collect();
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    out.extend_from_slice(value.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
}

impl Opinion {
    /// The canonical bytes that are signed (module docs: the form, version 1). Deterministic:
    /// equal opinions give equal bytes, any change to a field changes them.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(CANONICAL_VERSION.as_bytes());
        out.push(b'\n');
        field(&mut out, "consultation", &self.consultation);
        field(&mut out, "expert", &self.expert);
        out.extend_from_slice(format!("diagnoses {}\n", self.diagnoses.len()).as_bytes());
        for d in &self.diagnoses {
            field(&mut out, "code", &d.code.to_string());
            field(&mut out, "text", &d.text);
        }
        field(&mut out, "treatment_plan", &self.treatment_plan);
        field(&mut out, "advice", &self.advice);
        out
    }

    /// What a complete opinion needs: the ids, at least one diagnosis, a treatment plan and
    /// advice. Field paths are relative to the opinion.
    pub fn problems(&self) -> Vec<FieldProblem> {
        let mut problems = Vec::new();
        for (path, value) in [
            ("consultation", &self.consultation),
            ("expert", &self.expert),
            ("treatment_plan", &self.treatment_plan),
            ("advice", &self.advice),
        ] {
            if value.trim().is_empty() {
                problems.push(FieldProblem {
                    path: path.into(),
                    problem: "is blank".into(),
                });
            }
        }
        if self.diagnoses.is_empty() {
            problems.push(FieldProblem {
                path: "diagnoses".into(),
                problem: "needs at least one ICD-10 diagnosis".into(),
            });
        }
        problems
    }
}

/// Signs `opinion` with `signer` at `at` (the engine passes its clock's time).
pub fn sign_opinion(
    opinion: Opinion,
    signer: &dyn Signer,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<SignedOpinion, SignatureError> {
    let signature = signer.sign(&opinion.canonical_bytes(), at)?;
    Ok(SignedOpinion { opinion, signature })
}

/// Re-checks a signed opinion: rebuilds the canonical bytes from the stored fields and asks the
/// verifier (value, chain, validity at the signing time). `Ok` with the signer's name.
pub fn verify_opinion(
    signed: &SignedOpinion,
    verifier: &dyn SignatureVerifier,
) -> Result<String, SignatureError> {
    verifier.verify(&signed.opinion.canonical_bytes(), &signed.signature)
}

/// What the local doctor decided after reading the opinion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecisionOutcome {
    /// The opinion is followed.
    Adopted,
    /// Followed in part or with changes (the note says which).
    AdoptedWithChanges,
    /// Not followed (the note says why).
    NotAdopted,
}

/// The local doctor's decision: a separate act by the inviting side, which keeps the decision
/// authority and the responsibility for the patient (CN-07).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalDecision {
    /// Adopted, adopted with changes, not adopted.
    pub outcome: DecisionOutcome,
    /// The final diagnoses the local side records.
    #[serde(default)]
    pub final_diagnoses: Vec<IcdCode>,
    /// The decision in words; required unless the opinion is adopted as is.
    #[serde(default)]
    pub note: String,
}

impl LocalDecision {
    /// A note is required when the opinion is not adopted as is.
    pub fn problems(&self) -> Vec<FieldProblem> {
        if self.outcome != DecisionOutcome::Adopted && self.note.trim().is_empty() {
            vec![FieldProblem {
                path: "note".into(),
                problem: "is required when the opinion is not adopted as is".into(),
            }]
        } else {
            Vec::new()
        }
    }
}
