//! A small HL7 v2 reader for use inside plugins (no dependencies): segments by name and fields
//! by their usual path, honouring the encoding characters of `MSH`.
//!
//! ```
//! use huizhen_sdk::hl7::Hl7;
//! let m = Hl7::parse("MSH|^~\\&|HIS|县人民医院^123^L|HZ|P|20261124||ADT^A01|1|P|2.5\rPID|1||9^^^H^MR~77^^^Y^PN||王^五\r").unwrap();
//! assert_eq!(m.get("MSH-4.1"), Some("县人民医院"));
//! assert_eq!(m.get("MSH-9.2"), Some("A01"));
//! assert_eq!(m.get("PID-3[2].1"), Some("77"));
//! assert_eq!(m.get("PID-5"), Some("王^五"));
//! assert_eq!(m.get("MSH-1"), Some("|"));
//! assert_eq!(m.get("OBX-5"), None);
//! ```

/// A parsed message: its segments and encoding characters.
#[derive(Debug, Clone)]
pub struct Hl7<'a> {
    segments: Vec<&'a str>,
    field: char,
    component: char,
    repetition: char,
    subcomponent: char,
}

impl<'a> Hl7<'a> {
    /// Reads a message whose first segment is `MSH` (segments end with `\r`; `\n` is accepted).
    /// `None` when there is no `MSH` segment.
    pub fn parse(text: &'a str) -> Option<Hl7<'a>> {
        let segments: Vec<&str> = text
            .split(['\r', '\n'])
            .map(|s| s.trim_start_matches('\u{feff}'))
            .filter(|s| !s.trim().is_empty())
            .collect();
        let msh = segments.iter().find(|s| s.starts_with("MSH"))?;
        let mut chars = msh[3..].chars();
        let field = chars.next()?;
        let enc: Vec<char> = chars.take_while(|c| *c != field).collect();
        Some(Hl7 {
            segments,
            field,
            component: enc.first().copied().unwrap_or('^'),
            repetition: enc.get(1).copied().unwrap_or('~'),
            subcomponent: enc.get(3).copied().unwrap_or('&'),
        })
    }

    /// Every segment named `name` (`OBX`…), as text.
    pub fn segments(&self, name: &str) -> impl Iterator<Item = &'a str> + '_ {
        let name = name.to_owned();
        self.segments.iter().copied().filter(move |s| {
            s.len() >= name.len() && s.starts_with(name.as_str()) && {
                let rest = &s[name.len()..];
                rest.is_empty() || rest.starts_with(self.field)
            }
        })
    }

    /// A value by path: `SEG-F`, `SEG-F.C`, `SEG-F.C.S`, with `[R]` after the field for the
    /// R-th repetition (1-based; the first otherwise) and `SEG[N]` for the N-th such segment.
    /// `None` when the segment, field or component is absent or empty.
    pub fn get(&self, path: &str) -> Option<&'a str> {
        let (seg, rest) = path.split_once('-')?;
        let (seg, nth) = index(seg)?;
        let segment = self.segments(seg).nth(nth - 1)?;
        let mut parts = rest.split('.');
        let (f, rep) = index(parts.next()?)?;
        let f: usize = f.parse().ok()?;
        let c: Option<usize> = parts
            .next()
            .map(|c| c.parse().ok())
            .unwrap_or(Some(0))?
            .into();
        let s: Option<usize> = parts
            .next()
            .map(|s| s.parse().ok())
            .unwrap_or(Some(0))?
            .into();
        let is_msh = seg == "MSH";
        if is_msh && f == 1 {
            let start = 3;
            return segment.get(start..start + self.field.len_utf8());
        }
        // In MSH the separator itself is field 1: the text's n-th piece is field n+1.
        let idx = if is_msh { f - 1 } else { f };
        let field = segment.split(self.field).nth(idx)?;
        if is_msh && f == 2 {
            return non_empty(field);
        }
        let value = field.split(self.repetition).nth(rep - 1)?;
        let value = match c {
            Some(c) if c > 0 => value.split(self.component).nth(c - 1)?,
            _ => value,
        };
        let value = match s {
            Some(s) if s > 0 => value.split(self.subcomponent).nth(s - 1)?,
            _ => value,
        };
        non_empty(value)
    }
}

fn non_empty(s: &str) -> Option<&str> {
    if s.is_empty() { None } else { Some(s) }
}

/// `NAME[3]` → (NAME, 3); `NAME` → (NAME, 1).
fn index(s: &str) -> Option<(&str, usize)> {
    match s.split_once('[') {
        Some((n, i)) => {
            let i: usize = i.strip_suffix(']')?.parse().ok()?;
            (i >= 1).then_some((n, i))
        }
        None => Some((s, 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORU: &str = "MSH|^~\\&|LIS|县医院|HZ|P|20261124||ORU^R01|7|P|2.5\rPID|1||123^^^H^MR\rOBX|1|NM|GLU^葡萄糖||5.6|mmol/L\rOBX|2|NM|K^钾||4.1|mmol/L\r";

    #[test]
    fn fields_components_and_repeated_segments() {
        let m = Hl7::parse(ORU).unwrap();
        assert_eq!(m.get("MSH-3"), Some("LIS"));
        assert_eq!(m.get("MSH-2"), Some("^~\\&"));
        assert_eq!(m.get("MSH-12"), Some("2.5"));
        assert_eq!(m.get("OBX-3.2"), Some("葡萄糖"));
        assert_eq!(m.get("OBX[2]-3.2"), Some("钾"));
        assert_eq!(m.get("OBX[3]-3"), None);
        assert_eq!(m.get("PID-3.4"), Some("H"));
        assert_eq!(m.get("PID-99"), None);
        assert_eq!(m.segments("OBX").count(), 2);
    }

    #[test]
    fn other_encoding_characters() {
        let m = Hl7::parse("MSH#*~\\&#A#B\nPID#1##x*y").unwrap();
        assert_eq!(m.get("MSH-1"), Some("#"));
        assert_eq!(m.get("MSH-4"), Some("B"));
        assert_eq!(m.get("PID-3.2"), Some("y"));
    }

    #[test]
    fn not_hl7() {
        assert!(Hl7::parse("{\"a\":1}").is_none());
        assert!(Hl7::parse("PID|1").is_none());
    }
}
