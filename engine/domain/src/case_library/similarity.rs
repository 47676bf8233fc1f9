//! How close two ICD-10 codes are, for recommendations: the same code, the same category
//! (`I25.1` and `I25.9`), the same chapter (`I25.1` and `I50.0`, both chapter IX, circulatory
//! system), or unrelated. Built on [`IcdCode`]'s normalised form and category.
//!
//! Chapters are the 22 of ICD-10 (WHO 2019, which the 国家临床版 2.0 keeps), by category
//! range: I `A00–B99`, II `C00–D48`, III `D50–D89`, IV `E00–E90`, V `F00–F99`, VI `G00–G99`,
//! VII `H00–H59`, VIII `H60–H95`, IX `I00–I99`, X `J00–J99`, XI `K00–K93`, XII `L00–L99`,
//! XIII `M00–M99`, XIV `N00–N99`, XV `O00–O99`, XVI `P00–P96`, XVII `Q00–Q99`, XVIII
//! `R00–R99`, XIX `S00–T98`, XX `V01–Y98`, XXI `Z00–Z99`, XXII `U00–U85`. A category outside
//! every range (`D49`) has no chapter and only matches itself.

use serde::{Deserialize, Serialize};

use crate::expert::icd::IcdCode;

const CHAPTERS: [(&str, &str, u8); 22] = [
    ("A00", "B99", 1),
    ("C00", "D48", 2),
    ("D50", "D89", 3),
    ("E00", "E90", 4),
    ("F00", "F99", 5),
    ("G00", "G99", 6),
    ("H00", "H59", 7),
    ("H60", "H95", 8),
    ("I00", "I99", 9),
    ("J00", "J99", 10),
    ("K00", "K93", 11),
    ("L00", "L99", 12),
    ("M00", "M99", 13),
    ("N00", "N99", 14),
    ("O00", "O99", 15),
    ("P00", "P96", 16),
    ("Q00", "Q99", 17),
    ("R00", "R99", 18),
    ("S00", "T98", 19),
    ("V01", "Y98", 20),
    ("Z00", "Z99", 21),
    ("U00", "U85", 22),
];

/// The ICD-10 chapter (1–22) of `code`, or none outside every chapter's range.
pub fn chapter(code: &IcdCode) -> Option<u8> {
    let category = code.category();
    CHAPTERS
        .iter()
        .find(|(from, to, _)| *from <= category && category <= *to)
        .map(|(_, _, n)| *n)
}

/// How closely two codes match, best last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CodeMatch {
    /// The same chapter.
    Chapter,
    /// The same three-character category.
    Category,
    /// The same code.
    Exact,
}

impl CodeMatch {
    /// How `a` and `b` match, or none when unrelated.
    pub fn of(a: &IcdCode, b: &IcdCode) -> Option<CodeMatch> {
        if a == b {
            Some(CodeMatch::Exact)
        } else if a.category() == b.category() {
            Some(CodeMatch::Category)
        } else if chapter(a).is_some() && chapter(a) == chapter(b) {
            Some(CodeMatch::Chapter)
        } else {
            None
        }
    }

    /// The component value: 1 (exact), 0.6 (category), 0.3 (chapter).
    pub fn value(self) -> f64 {
        match self {
            CodeMatch::Exact => 1.0,
            CodeMatch::Category => 0.6,
            CodeMatch::Chapter => 0.3,
        }
    }

    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            CodeMatch::Exact => "same code",
            CodeMatch::Category => "same category",
            CodeMatch::Chapter => "same chapter",
        }
    }
}

/// The best match between any of `wanted` and any of `have`, with the pair (first best pair in
/// order, so the result is deterministic).
pub fn best_match<'a>(
    wanted: &'a [IcdCode],
    have: &'a [IcdCode],
) -> Option<(CodeMatch, &'a IcdCode, &'a IcdCode)> {
    let mut best: Option<(CodeMatch, &IcdCode, &IcdCode)> = None;
    for w in wanted {
        for h in have {
            if let Some(m) = CodeMatch::of(w, h)
                && best.is_none_or(|(b, _, _)| m > b)
            {
                best = Some((m, w, h));
            }
        }
    }
    best
}
