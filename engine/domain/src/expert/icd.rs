//! ICD-10 codes as expertise and case diagnoses (STANDARDS MATCH-01, CN-51): normalised so that
//! `i25.1`, `I25.1` and `I251` are one code, and ordered by the code-prefix hierarchy: the
//! category `I25` covers the subcategory `I25.1` and its extension `I25.10` (and the 国家临床版
//! 2.0 extensions such as `I25.103`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An ICD-10 code or category, normalised: upper case, no dot, no spaces, full-width forms
/// folded (`I2510` for `i25.10` or `Ｉ２５．１０`). Displayed and serialised with the dot after the category (`I25.10`).
///
/// Valid: a letter, two digits (the category, e.g. `I25`), then any number of letters or digits
/// (subcategory and extensions; the clinical edition's `x` extensions are letters).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IcdCode(String);

/// Why a text is not an ICD-10 code. Names the text (codes are not patient data on their own).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an ICD-10 code (a letter, two digits, then letters or digits, e.g. I25.10)")]
pub struct IcdError(pub String);

/// How closely an expert's declared expertise fits the case's code, best first in the enum's
/// reverse order: used as the scoring feature `specificity` and to explain a match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Specificity {
    /// No diagnosis code in the case: the department alone decided.
    DepartmentOnly,
    /// The expertise shares the case's category (`I25.9` declared, `I25.1` asked; or `I25`
    /// declared).
    Category,
    /// A declared code below the category covers the case's code (`I25.1` declared, `I25.10`
    /// asked).
    Subcategory,
    /// The expert declared exactly the case's code.
    Exact,
}

impl Specificity {
    /// The feature value: 0 (department only) … 3 (exact).
    pub fn value(self) -> f64 {
        match self {
            Specificity::DepartmentOnly => 0.0,
            Specificity::Category => 1.0,
            Specificity::Subcategory => 2.0,
            Specificity::Exact => 3.0,
        }
    }

    /// The kebab-case name (as serialised).
    pub fn as_str(self) -> &'static str {
        match self {
            Specificity::DepartmentOnly => "department-only",
            Specificity::Category => "category",
            Specificity::Subcategory => "subcategory",
            Specificity::Exact => "exact",
        }
    }
}

impl IcdCode {
    /// Parses and normalises a code: case, dots and inner spaces do not matter.
    pub fn parse(text: &str) -> Result<IcdCode, IcdError> {
        let norm: String = text
            .trim()
            .chars()
            // Full-width forms (Ｉ２５．１, typed with a Chinese input method) fold to ASCII.
            .map(|c| match c {
                '\u{ff01}'..='\u{ff5e}' => char::from_u32(c as u32 - 0xfee0).unwrap_or(c),
                _ => c,
            })
            .filter(|c| !matches!(c, '.' | ' ' | '\u{3000}'))
            .map(|c| c.to_ascii_uppercase())
            .collect();
        let b = norm.as_bytes();
        let ok = b.len() >= 3
            && b[0].is_ascii_uppercase()
            && b[1].is_ascii_digit()
            && b[2].is_ascii_digit()
            && b[3..].iter().all(u8::is_ascii_alphanumeric);
        if ok {
            Ok(IcdCode(norm))
        } else {
            Err(IcdError(text.trim().to_owned()))
        }
    }

    /// The normalised form (`I2510`).
    pub fn normalized(&self) -> &str {
        &self.0
    }

    /// The three-character category (`I25`): the key of the category index.
    pub fn category(&self) -> &str {
        // Valid codes start with three ASCII characters (checked in `parse`).
        category_of(&self.0)
    }

    /// True when this code is the category itself (three characters).
    pub fn is_category(&self) -> bool {
        self.0.len() == 3
    }

    /// True when this code covers `other` in the prefix hierarchy: equal, or an ancestor
    /// (`I25` covers `I25.1` and `I25.10`; `I25.1` covers `I25.10` but not `I25.2`).
    pub fn covers(&self, other: &IcdCode) -> bool {
        other.0.starts_with(&self.0)
    }

    /// How well this declared expertise fits a case's `code`, or `None` when it does not fit
    /// (a different category).
    pub fn specificity_for(&self, code: &IcdCode) -> Option<Specificity> {
        specificity_of(self.0.as_bytes(), code.0.as_bytes())
    }
}

/// The category of a normalised code: its first three characters.
fn category_of(normalized: &str) -> &str {
    normalized.get(..3).unwrap_or(normalized)
}

/// [`category_of`] on the bytes of a normalised code (ASCII, so bytes are characters).
pub(crate) fn category_bytes(normalized: &[u8]) -> &[u8] {
    normalized.get(..3).unwrap_or(normalized)
}

/// [`IcdCode::specificity_for`] on normalised codes (`declared` expertise, the case's
/// `code`), as bytes: also what matching runs on the codes an expert card keeps inline.
/// Normalised codes are ASCII, so comparing bytes is comparing characters.
pub(crate) fn specificity_of(declared: &[u8], code: &[u8]) -> Option<Specificity> {
    if category_bytes(declared) != category_bytes(code) {
        None
    } else if declared == code {
        Some(Specificity::Exact)
    } else if code.starts_with(declared) && declared.len() != 3 {
        Some(Specificity::Subcategory)
    } else {
        Some(Specificity::Category)
    }
}

/// The best fit among an expert's declared codes for a case's code; `None` when none shares
/// the category.
pub fn best_specificity(expertise: &[IcdCode], code: &IcdCode) -> Option<Specificity> {
    expertise
        .iter()
        .filter_map(|e| e.specificity_for(code))
        .max()
}

impl fmt::Display for IcdCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0.get(..3), self.0.get(3..)) {
            (Some(cat), Some(rest)) if !rest.is_empty() => write!(f, "{cat}.{rest}"),
            _ => f.write_str(&self.0),
        }
    }
}

impl FromStr for IcdCode {
    type Err = IcdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IcdCode::parse(s)
    }
}

impl Serialize for IcdCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IcdCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        IcdCode::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(s: &str) -> IcdCode {
        IcdCode::parse(s).unwrap()
    }

    #[test]
    fn normalises_case_dot_and_spaces() {
        for (input, norm, shown) in [
            ("I25.10", "I2510", "I25.10"),
            ("i25.10", "I2510", "I25.10"),
            ("I2510", "I2510", "I25.10"),
            (" i25 ", "I25", "I25"),
            ("I25.103", "I25103", "I25.103"),
            ("c34.900x001", "C34900X001", "C34.900X001"),
            ("Ｉ２５．１", "I251", "I25.1"),
        ] {
            let c = code(input);
            assert_eq!(c.normalized(), norm, "{input}");
            assert_eq!(c.to_string(), shown, "{input}");
        }
        assert_eq!(code("i25.1"), code("I251"));
    }

    #[test]
    fn rejects_what_is_not_a_code() {
        for bad in ["", "I2", "125.1", "II5", "I25-1", "心绞痛", "I25.1/"] {
            let e = IcdCode::parse(bad).unwrap_err();
            assert_eq!(e.0, bad.trim(), "{bad}");
        }
    }

    #[test]
    fn prefix_hierarchy() {
        let (cat, sub, ext, other) = (code("I25"), code("I25.1"), code("I25.10"), code("I25.2"));
        assert!(cat.covers(&sub) && cat.covers(&ext) && cat.covers(&cat));
        assert!(sub.covers(&ext) && !sub.covers(&other) && !sub.covers(&cat));
        assert!(!ext.covers(&sub));
        assert_eq!(ext.category(), "I25");
        assert!(!code("I21").covers(&ext));
    }

    #[test]
    fn specificity_levels() {
        let case = code("I25.10");
        let check = |declared: &str, expected: Option<Specificity>| {
            assert_eq!(
                code(declared).specificity_for(&case),
                expected,
                "{declared}"
            );
        };
        check("I25.10", Some(Specificity::Exact));
        check("i2510", Some(Specificity::Exact));
        check("I25.1", Some(Specificity::Subcategory));
        check("I25", Some(Specificity::Category));
        check("I25.9", Some(Specificity::Category));
        check("I25.101", Some(Specificity::Category));
        check("I21", None);
        check("J25.10", None);
        let all = [code("I25"), code("I25.1"), code("E11")];
        assert_eq!(
            best_specificity(&all, &case),
            Some(Specificity::Subcategory)
        );
        assert_eq!(best_specificity(&all[2..], &case), None);
        assert!(Specificity::Exact > Specificity::Subcategory);
        assert!(Specificity::Category > Specificity::DepartmentOnly);
    }

    #[test]
    fn serde_round_trip() {
        let c: IcdCode = serde_json::from_str("\"i25.10\"").unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"I25.10\"");
        assert!(serde_json::from_str::<IcdCode>("\"25\"").is_err());
    }
}
