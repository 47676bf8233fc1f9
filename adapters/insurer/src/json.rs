//! JSON without floats: requests are built as a small tree ([`J`]) whose numbers are written as
//! the exact digits (`250.00`), and answers are read through `serde_json::value::RawValue`, so
//! an amount is taken from the digits the platform wrote ([`amount`]), never through an `f64`.

use std::collections::BTreeMap;

use huizhen_domain::billing::Fen;
use serde_json::value::RawValue;

/// A JSON value to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum J {
    /// A string.
    Str(String),
    /// A number, as its exact text (`250.00`, `1`).
    Num(String),
    /// An object, keys in order.
    Obj(Vec<(String, J)>),
    /// An array.
    Arr(Vec<J>),
}

impl J {
    /// A string value.
    pub fn s(v: impl Into<String>) -> J {
        J::Str(v.into())
    }

    /// An object from pairs.
    pub fn obj<const N: usize>(pairs: [(&str, J); N]) -> J {
        J::Obj(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    /// An integer.
    pub fn int(v: impl std::fmt::Display) -> J {
        J::Num(v.to_string())
    }

    /// Renames keys at every depth through `rename` (canonical → the province's names).
    pub fn renamed(self, rename: &BTreeMap<String, String>) -> J {
        match self {
            J::Obj(pairs) => J::Obj(
                pairs
                    .into_iter()
                    .map(|(k, v)| {
                        let k = rename.get(&k).cloned().unwrap_or(k);
                        (k, v.renamed(rename))
                    })
                    .collect(),
            ),
            J::Arr(items) => J::Arr(items.into_iter().map(|v| v.renamed(rename)).collect()),
            other => other,
        }
    }

    /// The JSON text.
    pub fn write(&self, out: &mut String) {
        match self {
            J::Str(s) => out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())),
            J::Num(n) => out.push_str(n),
            J::Obj(pairs) => {
                out.push('{');
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    J::Str(k.clone()).write(out);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
            J::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
        }
    }

    /// The JSON text.
    pub fn text(&self) -> String {
        let mut s = String::new();
        self.write(&mut s);
        s
    }
}

/// How amounts are written: JSON numbers (`250.00`, the national interface) or strings
/// (`"250.00"`, some provincial gateways).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AmountStyle {
    /// `250.00`.
    #[default]
    Number,
    /// `"250.00"`.
    String,
}

impl AmountStyle {
    /// An amount in yuan with two decimals.
    pub fn amount(self, fen: Fen) -> J {
        let text = fen.to_yuan_string();
        match self {
            AmountStyle::Number => J::Num(text),
            AmountStyle::String => J::Str(text),
        }
    }
}

/// The member `key` of the JSON object `obj`, raw.
pub fn member<'a>(obj: &'a RawValue, key: &str) -> Option<&'a RawValue> {
    let map: BTreeMap<String, &RawValue> = serde_json::from_str(obj.get()).ok()?;
    map.get(key).copied()
}

/// The value at `path` (object members; a number selects an array element).
pub fn at<'a>(root: &'a RawValue, path: &[&str]) -> Option<&'a RawValue> {
    let mut cur = root;
    for p in path {
        cur = match p.parse::<usize>() {
            Ok(i) => {
                let items: Vec<&RawValue> = serde_json::from_str(cur.get()).ok()?;
                items.get(i).copied()?
            }
            Err(_) => member(cur, p)?,
        };
    }
    Some(cur)
}

/// A string or number as text (`"0"` and `0` both give `0`); none for anything else.
pub fn text(v: &RawValue) -> Option<String> {
    let raw = v.get().trim();
    if raw.starts_with('"') {
        serde_json::from_str::<String>(raw).ok()
    } else if raw
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'e' | b'E' | b'+'))
        && !raw.is_empty()
    {
        Some(raw.to_owned())
    } else {
        None
    }
}

/// An amount in yuan, from a JSON number or string, exactly (`250`, `250.5`, `"250.00"`).
pub fn amount(v: &RawValue) -> Result<Fen, String> {
    let t = text(v).ok_or_else(|| format!("{} is not an amount", v.get()))?;
    t.parse::<Fen>().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_exactly_and_read_exactly() {
        let j = J::obj([
            ("a", AmountStyle::Number.amount(Fen(25_000))),
            ("b", AmountStyle::String.amount(Fen(5))),
            ("c", J::Arr(vec![J::s("x\"y"), J::int(3)])),
        ]);
        assert_eq!(j.text(), r#"{"a":250.00,"b":"0.05","c":["x\"y",3]}"#);
        let raw: Box<RawValue> = serde_json::from_str(&j.text()).unwrap();
        assert_eq!(amount(at(&raw, &["a"]).unwrap()), Ok(Fen(25_000)));
        assert_eq!(amount(at(&raw, &["b"]).unwrap()), Ok(Fen(5)));
        assert_eq!(text(at(&raw, &["c", "1"]).unwrap()).as_deref(), Some("3"));
        assert!(at(&raw, &["c", "2"]).is_none());
        let big: Box<RawValue> = serde_json::from_str(r#"{"v": 12345678901234.57}"#).unwrap();
        assert_eq!(
            amount(at(&big, &["v"]).unwrap()),
            Ok(Fen(1_234_567_890_123_457))
        );
        let e: Box<RawValue> = serde_json::from_str(r#"{"v": 2.5e2}"#).unwrap();
        assert!(amount(at(&e, &["v"]).unwrap()).is_err());
    }

    #[test]
    fn keys_are_renamed_at_every_depth() {
        let rename = BTreeMap::from([("psn_no".to_owned(), "personNo".to_owned())]);
        let j = J::obj([("data", J::obj([("psn_no", J::s("P1"))]))]).renamed(&rename);
        assert_eq!(j.text(), r#"{"data":{"personNo":"P1"}}"#);
    }
}
