//! The controlled-drug deny list: drugs a remote prescription must never carry.
//!
//! Internet diagnosis may not prescribe 麻醉药品, 精神药品 and the other 特殊管理药品
//! (《互联网诊疗管理办法(试行)》 第十九条). Formularies differ by province and hospital, so the
//! list is configuration: exact drug codes, substrings of the generic name (`吗啡` also catches
//! `盐酸吗啡缓释片`), and management categories matched against a line's `category`. Matching
//! folds case and full-width forms (NFKC), so `ＭＯＲＰＨＩＮＥ` is `morphine`.
//!
//! ```yaml
//! codes: [XN02AAM001A001010100000]
//! name_contains: [吗啡, 芬太尼, 哌替啶, 氯胺酮]
//! categories: [麻醉药品, 第一类精神药品, 第二类精神药品, 医疗用毒性药品, 放射性药品]
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use super::model::PrescriptionLine;

/// The configurable deny list (see the module docs for the YAML form).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyList {
    /// Exact drug codes (case and surrounding spaces do not matter).
    #[serde(default)]
    pub codes: Vec<String>,
    /// Substrings of the drug's name.
    #[serde(default)]
    pub name_contains: Vec<String>,
    /// Management categories, matched whole against a line's `category`.
    #[serde(default)]
    pub categories: Vec<String>,
}

/// Which entry of the deny list a line hit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "by", content = "entry")]
pub enum DenyMatch {
    /// The drug code is listed.
    Code(String),
    /// The drug name contains a listed substring.
    Name(String),
    /// The drug's category is listed.
    Category(String),
}

impl fmt::Display for DenyMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyMatch::Code(c) => write!(f, "code `{c}` is on the deny list"),
            DenyMatch::Name(n) => write!(f, "the name contains `{n}`, on the deny list"),
            DenyMatch::Category(c) => write!(f, "category `{c}` is on the deny list"),
        }
    }
}

/// A deny-list entry that cannot work (blank), named by its path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("deny list: {path} is blank")]
pub struct DenyListError {
    /// The entry's path, e.g. `name_contains[2]`.
    pub path: String,
}

/// Case- and width-folded form used for every comparison.
fn fold(text: &str) -> String {
    text.trim().nfkc().collect::<String>().to_lowercase()
}

impl DenyList {
    /// The management categories Chinese regulation keeps out of remote prescriptions
    /// (特殊管理药品): a starting point for the `categories` entry, not a complete list of
    /// drugs (lines need their formulary category for it to match).
    pub fn special_management_categories() -> Vec<String> {
        [
            "麻醉药品",
            "第一类精神药品",
            "第二类精神药品",
            "医疗用毒性药品",
            "放射性药品",
            "药品类易制毒化学品",
        ]
        .map(String::from)
        .to_vec()
    }

    /// Refuses blank entries (a blank substring would match every drug).
    pub fn validate(&self) -> Result<(), DenyListError> {
        let lists = [
            ("codes", &self.codes),
            ("name_contains", &self.name_contains),
            ("categories", &self.categories),
        ];
        for (name, list) in lists {
            if let Some(i) = list.iter().position(|e| fold(e).is_empty()) {
                return Err(DenyListError {
                    path: format!("{name}[{i}]"),
                });
            }
        }
        Ok(())
    }

    /// The first entry `line` hits, checked in the order codes, names, categories; none when
    /// the drug may be prescribed.
    pub fn check_line(&self, line: &PrescriptionLine) -> Option<DenyMatch> {
        let code = fold(&line.drug_code);
        if let Some(c) = self.codes.iter().find(|c| fold(c) == code) {
            return Some(DenyMatch::Code(c.trim().to_owned()));
        }
        let name = fold(&line.drug_name);
        if let Some(n) = self
            .name_contains
            .iter()
            .find(|n| !fold(n).is_empty() && name.contains(&fold(n)))
        {
            return Some(DenyMatch::Name(n.trim().to_owned()));
        }
        let category = line.category.as_deref().map(fold)?;
        self.categories
            .iter()
            .find(|c| fold(c) == category)
            .map(|c| DenyMatch::Category(c.trim().to_owned()))
    }

    /// The first line (index, from 0) that hits the list, with the entry it hit.
    pub fn check(&self, lines: &[PrescriptionLine]) -> Option<(usize, DenyMatch)> {
        lines
            .iter()
            .enumerate()
            .find_map(|(i, line)| self.check_line(line).map(|m| (i, m)))
    }
}
