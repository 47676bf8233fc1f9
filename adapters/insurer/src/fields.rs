//! Province variants as YAML field maps (CN-62: the wire details vary by province). A map renames
//! the national interface's field names (inside `input`, and where answers are read) and says
//! how amounts are written; everything else is the national form.
//!
//! ```yaml
//! version: 1
//! province: "44"              # GB/T 2260, for people
//! infver: V1.0                # the interface version this province expects (header `infver`)
//! amounts: number             # number (250.00) or string ("250.00")
//! rename:                     # national name → this province's
//!   mdtrt_cert_no: mdtrt_cert_no
//!   psn_setlway: psn_setlway
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::json::AmountStyle;

/// A province's field map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldMap {
    /// The province.
    pub province: Option<String>,
    /// `infver` for the header.
    pub infver: Option<String>,
    /// How amounts are written.
    pub amounts: AmountStyle,
    /// National name → the province's.
    pub rename: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    version: serde_saphyr::Spanned<u32>,
    #[serde(default)]
    province: Option<String>,
    #[serde(default)]
    infver: Option<String>,
    #[serde(default)]
    amounts: AmountStyle,
    #[serde(default)]
    rename: BTreeMap<String, serde_saphyr::Spanned<String>>,
}

impl FieldMap {
    /// The province's name for a national field.
    pub fn name<'a>(&'a self, national: &'a str) -> &'a str {
        self.rename.get(national).map_or(national, String::as_str)
    }

    /// Reads a field map; problems as `file:line:column: message`, all at once.
    pub fn parse(file: &str, text: &str) -> Result<FieldMap, Vec<String>> {
        let raw: Raw = serde_saphyr::from_str(text).map_err(|e| {
            let inner = e.without_snippet();
            let (l, c) = inner.location().map_or((0, 0), |l| (l.line(), l.column()));
            let msg = inner.to_string();
            let msg = msg
                .rsplit_once(" at line ")
                .map_or(msg.clone(), |(m, _)| m.to_owned());
            vec![format!("{file}:{l}:{c}: error: {msg}")]
        })?;
        let mut problems = Vec::new();
        if raw.version.value != 1 {
            let l = raw.version.referenced;
            problems.push(format!(
                "{file}:{}:{}: error: version {} is not supported (1)",
                l.line(),
                l.column(),
                raw.version.value
            ));
        }
        let mut rename = BTreeMap::new();
        let mut targets: BTreeMap<String, String> = BTreeMap::new();
        for (national, to) in raw.rename {
            let l = to.referenced;
            let name = to.value;
            if name.trim().is_empty() || name.trim() != name {
                problems.push(format!(
                    "{file}:{}:{}: error: rename.{national}: `{name}` is not a field name",
                    l.line(),
                    l.column()
                ));
            } else if let Some(other) = targets.insert(name.clone(), national.clone()) {
                problems.push(format!(
                    "{file}:{}:{}: error: rename.{national}: `{name}` is already the name of {other}",
                    l.line(),
                    l.column()
                ));
            }
            rename.insert(national, name);
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(FieldMap {
            province: raw.province,
            infver: raw.infver,
            amounts: raw.amounts,
            rename,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_and_its_problems() {
        let m = FieldMap::parse(
            "gd.yaml",
            "version: 1\namounts: string\nrename:\n  psn_no: personNo\n",
        )
        .unwrap();
        assert_eq!(m.name("psn_no"), "personNo");
        assert_eq!(m.name("mdtrt_id"), "mdtrt_id");
        assert_eq!(m.amounts, AmountStyle::String);
        let e = FieldMap::parse(
            "gd.yaml",
            "version: 2\nrename:\n  psn_no: x\n  mdtrt_id: x\n",
        )
        .unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with("gd.yaml:1:10: error: version 2"),
            "{}",
            e[0]
        );
        assert!(e[1].contains("already the name of"), "{}", e[1]);
        let e = FieldMap::parse("gd.yaml", "version: 1\namount: number\n").unwrap_err();
        assert!(
            e[0].starts_with("gd.yaml:2:1: error: unknown field `amount`"),
            "{}",
            e[0]
        );
    }
}
