//! Writing segments with the standard delimiters (`|^~\&`): every value goes through
//! [`crate::escape::escape`], so a delimiter in data is sent as `\F\`, `\S\`, `\R\`, `\E\` or
//! `\T\`, and trailing empty fields and components are left out.

use crate::escape::escape;
use crate::parse::Delimiters;

/// One data value, escaped for the standard delimiters. A value that is exactly `""` would
/// read as the HL7 null ("delete what is stored"), so its first quote is sent as `\X22\`.
pub(super) fn esc(value: &str) -> String {
    if value == "\"\"" {
        return "\\X22\\\"".to_owned();
    }
    escape(value, &Delimiters::default())
}

/// Components (each already encoded) joined with `^`, trailing empty ones left out.
pub(super) fn components<S: AsRef<str>>(parts: &[S]) -> String {
    join_trimmed(parts, '^')
}

/// Subcomponents (each already encoded) joined with `&`, trailing empty ones left out.
pub(super) fn subcomponents<S: AsRef<str>>(parts: &[S]) -> String {
    join_trimmed(parts, '&')
}

fn join_trimmed<S: AsRef<str>>(parts: &[S], sep: char) -> String {
    let used = parts
        .iter()
        .rposition(|p| !p.as_ref().is_empty())
        .map_or(0, |i| i + 1);
    let mut out = String::new();
    for (i, p) in parts.iter().take(used).enumerate() {
        if i > 0 {
            out.push(sep);
        }
        out.push_str(p.as_ref());
    }
    out
}

/// Lines of text: CRLF and CR read as LF, then split on LF (a trailing line break gives a
/// last empty line, so the text comes back as it was, line breaks normalised).
pub(super) fn lines(text: &str) -> Vec<String> {
    text.replace("\r\n", "\n")
        .replace('\r', "\n")
        .split('\n')
        .map(str::to_owned)
        .collect()
}

/// A `TX` value: one repetition per line, each line escaped.
pub(super) fn tx(text: &str) -> String {
    lines(text)
        .iter()
        .map(|l| esc(l))
        .collect::<Vec<_>>()
        .join("~")
}

/// An `FT` value: the lines escaped and joined with the `\.br\` formatting command.
pub(super) fn ft(text: &str) -> String {
    lines(text)
        .iter()
        .map(|l| esc(l))
        .collect::<Vec<_>>()
        .join("\\.br\\")
}

/// A segment being written: field `n` (1-based) holds encoded text.
pub(super) struct Seg {
    name: &'static str,
    fields: Vec<String>,
}

impl Seg {
    pub(super) fn new(name: &'static str) -> Seg {
        Seg {
            name,
            fields: Vec::new(),
        }
    }

    /// Sets field `n` (already encoded). For `MSH`, `n` counts as the standard does (`MSH-3`
    /// is the first field after the encoding characters).
    pub(super) fn set(mut self, n: usize, encoded: impl Into<String>) -> Seg {
        let i = n.saturating_sub(1);
        if self.fields.len() <= i {
            self.fields.resize(i + 1, String::new());
        }
        if let Some(f) = self.fields.get_mut(i) {
            *f = encoded.into();
        }
        self
    }

    /// The segment text, without terminator; trailing empty fields left out.
    pub(super) fn render(&self) -> String {
        let used = self
            .fields
            .iter()
            .rposition(|f| !f.is_empty())
            .map_or(0, |i| i + 1);
        let mut out = String::from(self.name);
        if self.name == "MSH" {
            // MSH-1 is the field separator itself and MSH-2 the encoding characters.
            out.push_str("|^~\\&");
            for f in self.fields.iter().take(used).skip(2) {
                out.push('|');
                out.push_str(f);
            }
            return out;
        }
        for f in self.fields.iter().take(used) {
            out.push('|');
            out.push_str(f);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_and_values() {
        let s = Seg::new("OBX")
            .set(1, "1")
            .set(3, components(&["a", "", ""]))
            .set(6, "");
        assert_eq!(s.render(), "OBX|1||a");
        let msh = Seg::new("MSH")
            .set(3, "HZ")
            .set(7, "2026")
            .set(9, "ORU^R01");
        assert_eq!(msh.render(), "MSH|^~\\&|HZ||||2026||ORU^R01");
        assert_eq!(components(&["", "b"]), "^b");
        assert_eq!(subcomponents(&["1", "张", ""]), "1&张");
        assert_eq!(esc("a|b^c~d\\e&f"), r"a\F\b\S\c\R\d\E\e\T\f");
        assert_eq!(tx("一\r\n二\r三\n"), "一~二~三~");
        assert_eq!(ft("a|b\nc"), r"a\F\b\.br\c");
        assert_eq!(esc("\"\""), r#"\X22\""#, "not the null");
        assert_eq!(esc("\"\"\""), r#"""""#);
    }
}
