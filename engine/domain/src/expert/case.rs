//! The consultation case as matching sees it: what is asked for (department, diagnosis code,
//! title, urgency, time window) and the conflict rules, never who the patient is.
//!
//! **No protected attributes, by construction (STANDARDS MATCH-30, CN-42).** [`CaseRequest`]
//! has no field for the patient's ethnicity, insurance type, payment ability, region of
//! origin, sex, age, name or id, and `deny_unknown_fields` refuses such keys in JSON or YAML,
//! so neither the hard filters nor a scorer plugin can read them: the case features handed to
//! a scorer are built from this struct only ([`case_features`](super::case_features)). The
//! `language` is the language the consultation is held in, not an ethnicity; the requesting
//! facility is the 邀请方 institution (needed for the CN-02 agreement), not where the patient
//! comes from. Adding a field here needs the same review.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::icd::IcdCode;
use super::model::Title;

/// How soon the consultation is needed (MATCH-20): the domain's one
/// [`Urgency`](crate::Urgency). Urgent and critical cases are 急会诊 alike for matching
/// ([`Urgency::is_urgent`]): only experts on call, or online inside a schedule window.
pub use crate::urgency::Urgency;

/// A requested time window for the consultation (UTC; `to` exclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    /// Start.
    pub from: DateTime<Utc>,
    /// End (exclusive); after `from`.
    pub to: DateTime<Utc>,
}

/// What a consultation asks of an expert. Built by the HTTP layer from the ServiceRequest
/// (performerType → department, reasonCode → icd10, the requested-title extension →
/// min_title, priority → urgency, requester → requesting_facility).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseRequest {
    /// The consultation (Task) id: names the decision and seeds the tie-break. Not a patient
    /// id.
    pub id: String,
    /// Requested department: a 诊疗科目 code or a local code (`03` also accepts experts in
    /// `03.02`).
    pub department: String,
    /// The case's diagnosis code (ICD-10 国家临床版 2.0), if known: experts must declare
    /// expertise in its category.
    #[serde(default)]
    pub icd10: Option<IcdCode>,
    /// The lowest acceptable title (CN-03 拟邀请医师的技术职务); none: any.
    #[serde(default)]
    pub min_title: Option<Title>,
    /// Routine or urgent.
    #[serde(default)]
    pub urgency: Urgency,
    /// The inviting facility (邀请方).
    pub requesting_facility: String,
    /// When the consultation should take place, if a time is asked for.
    #[serde(default)]
    pub window: Option<TimeWindow>,
    /// Exclude experts of the requesting facility (an external opinion is required).
    #[serde(default)]
    pub require_external: bool,
    /// Experts who must not be offered the case (e.g. the patient's prior treating doctor; the
    /// workflow adds the experts it offered the consultation before when it matches again).
    #[serde(default)]
    pub exclude_experts: Vec<String>,
    /// For a follow-up: the expert of the earlier consultation (continuity is scored).
    #[serde(default)]
    pub follow_up_of: Option<String>,
    /// An expert the patient or the requesting doctor prefers (scored, never forced).
    #[serde(default)]
    pub preferred_expert: Option<String>,
    /// The language or dialect the consultation needs, if not the default.
    #[serde(default)]
    pub language: Option<String>,
}

/// Why a case cannot be matched at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CaseError {
    /// A required text is blank.
    #[error("case `{case}`: {field} is blank")]
    Blank {
        /// The case id.
        case: String,
        /// The blank field.
        field: &'static str,
    },
    /// The window ends before (or when) it starts.
    #[error("case `{case}`: window.to {to} is not after window.from {from}")]
    Window {
        /// The case id.
        case: String,
        /// The window start.
        from: DateTime<Utc>,
        /// The window end.
        to: DateTime<Utc>,
    },
}

impl CaseRequest {
    /// Checks what serde cannot: required texts not blank, the window in order.
    pub fn validate(&self) -> Result<(), CaseError> {
        for (field, v) in [
            ("id", &self.id),
            ("department", &self.department),
            ("requesting_facility", &self.requesting_facility),
        ] {
            if v.trim().is_empty() {
                return Err(CaseError::Blank {
                    case: self.id.clone(),
                    field,
                });
            }
        }
        if let Some(w) = self.window
            && w.to <= w.from
        {
            return Err(CaseError::Window {
                case: self.id.clone(),
                from: w.from,
                to: w.to,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protected_attributes_are_refused() {
        let base = serde_json::json!({
            "id": "task-1", "department": "03.02", "requesting_facility": "H-COUNTY-1"
        });
        let ok: CaseRequest = serde_json::from_value(base.clone()).unwrap();
        assert_eq!(ok.urgency, Urgency::Routine);
        for field in [
            "ethnicity",
            "insurance_type",
            "payment_ability",
            "region_of_origin",
        ] {
            let mut v = base.clone();
            v[field] = serde_json::json!("x");
            let err = serde_json::from_value::<CaseRequest>(v)
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{err}");
        }
    }

    #[test]
    fn validation() {
        let mut c: CaseRequest = serde_json::from_value(serde_json::json!({
            "id": "task-1", "department": " ", "requesting_facility": "H-1",
            "urgency": "urgent", "icd10": "i25.1", "min_title": "副主任医师"
        }))
        .unwrap();
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "case `task-1`: department is blank"
        );
        c.department = "03".into();
        assert_eq!(c.validate(), Ok(()));
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        c.window = Some(TimeWindow { from: t, to: t });
        assert!(matches!(c.validate(), Err(CaseError::Window { .. })));
    }
}
