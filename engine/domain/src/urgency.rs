//! How soon care is needed: the one urgency of consultations, expert matching, appointments
//! and HIS orders (STANDARDS MATCH-20, CN-80 set the acceptance windows; FHIR
//! `ServiceRequest.priority`; HL7 v2 table 0027).
//!
//! In JSON and YAML it is `routine`, `urgent` or `critical`, as every API and stored record
//! has always written it. [`Urgency::parse`] also reads what HIS send: HL7 priority codes
//! (`S` stat, `A` ASAP, `R` routine, …), FHIR priorities (`stat`, `asap`) and the Chinese words
//! (急会诊, 危急, 常规, …).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How soon a consultation (or its session) is needed. Ordered: routine < urgent < critical.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Urgency {
    /// 普通会诊, 常规: accept within the routine window (default 24 h). HL7 `R`, `C`, `PRN`.
    #[default]
    Routine,
    /// 急会诊, 急, 加急: accept within minutes (default 10). HL7 `A` (ASAP), `P` (preop), `T`
    /// (timing critical).
    Urgent,
    /// 危急, 危重, 抢救: life-threatening; the same 10-minute default unless configured
    /// tighter. HL7 `S` (stat).
    Critical,
}

impl Urgency {
    /// Every urgency, least urgent first.
    pub const ALL: [Urgency; 3] = [Urgency::Routine, Urgency::Urgent, Urgency::Critical];

    /// The code (`routine`, `urgent`, `critical`): the JSON value and the stored column.
    pub fn code(self) -> &'static str {
        match self {
            Urgency::Routine => "routine",
            Urgency::Urgent => "urgent",
            Urgency::Critical => "critical",
        }
    }

    /// Urgent or critical: a 急会诊 for matching (only experts on call, or online inside a
    /// schedule window) and an emergency for the case library.
    pub fn is_urgent(self) -> bool {
        self != Urgency::Routine
    }

    /// The urgency a code or word names, case-insensitive and trimmed: the codes above, HL7
    /// table 0027 (`S` stat, `A` ASAP, `P` preop, `T` timing critical, `R` routine, `C`
    /// callback, `PRN`), FHIR priorities (`stat`, `asap`) and the Chinese words HIS send.
    /// `None` for anything else.
    pub fn parse(text: &str) -> Option<Urgency> {
        match text.trim().to_ascii_uppercase().as_str() {
            "CRITICAL" | "S" | "STAT" | "危急" | "危重" | "特急" | "抢救" | "急救" => {
                Some(Urgency::Critical)
            }
            "URGENT" | "A" | "ASAP" | "P" | "T" | "急" | "加急" | "紧急" | "急诊" | "急会诊" => {
                Some(Urgency::Urgent)
            }
            "ROUTINE" | "R" | "C" | "PRN" | "常规" | "普通" | "一般" | "普通会诊" => {
                Some(Urgency::Routine)
            }
            _ => None,
        }
    }
}

impl fmt::Display for Urgency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A text [`Urgency::parse`] does not know.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not an urgency (routine, urgent, critical; HL7 S, A, P, T, R, C, PRN; 急会诊, 危急, 常规, …)"
)]
pub struct UnknownUrgency(pub String);

impl FromStr for Urgency {
    type Err = UnknownUrgency;

    fn from_str(s: &str) -> Result<Urgency, UnknownUrgency> {
        Urgency::parse(s).ok_or_else(|| UnknownUrgency(s.trim().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_format_is_the_code() {
        for u in Urgency::ALL {
            let json = serde_json::to_string(&u).unwrap();
            assert_eq!(json, format!("\"{}\"", u.code()));
            assert_eq!(serde_json::from_str::<Urgency>(&json).unwrap(), u);
            assert_eq!(u.to_string(), u.code());
            assert_eq!(Urgency::parse(u.code()), Some(u));
        }
        // JSON stays strict: a priority code is parsed, not deserialized.
        assert!(serde_json::from_str::<Urgency>("\"S\"").is_err());
        assert!(serde_json::from_str::<Urgency>("\"Urgent\"").is_err());
    }

    #[test]
    fn hl7_fhir_and_chinese_codes() {
        for (text, u) in [
            ("S", Urgency::Critical),
            (" stat ", Urgency::Critical),
            ("危急", Urgency::Critical),
            ("危重", Urgency::Critical),
            ("抢救", Urgency::Critical),
            ("A", Urgency::Urgent),
            ("asap", Urgency::Urgent),
            ("P", Urgency::Urgent),
            ("T", Urgency::Urgent),
            ("急", Urgency::Urgent),
            ("急会诊", Urgency::Urgent),
            ("加急", Urgency::Urgent),
            ("R", Urgency::Routine),
            ("C", Urgency::Routine),
            ("prn", Urgency::Routine),
            ("常规", Urgency::Routine),
            ("普通", Urgency::Routine),
        ] {
            assert_eq!(Urgency::parse(text), Some(u), "{text:?}");
            assert_eq!(text.parse::<Urgency>(), Ok(u), "{text:?}");
        }
        for text in ["", "X", "soon", "急急"] {
            assert_eq!(Urgency::parse(text), None, "{text:?}");
        }
        let e = "soon".parse::<Urgency>().unwrap_err();
        assert!(
            e.to_string().starts_with("\"soon\" is not an urgency"),
            "{e}"
        );
    }

    #[test]
    fn ordered_least_urgent_first() {
        assert!(Urgency::Routine < Urgency::Urgent && Urgency::Urgent < Urgency::Critical);
        assert!(!Urgency::Routine.is_urgent());
        assert!(Urgency::Urgent.is_urgent() && Urgency::Critical.is_urgent());
        assert_eq!(Urgency::default(), Urgency::Routine);
    }
}
