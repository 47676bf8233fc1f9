//! Config errors: `file:line:column: message`, the source line and a caret.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_saphyr::Location;

/// One problem in one config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem is the whole file.
    pub line: u64,
    pub column: u64,
    pub message: String,
    /// The offending source line, shown under the message.
    pub snippet: Option<String>,
}

impl ConfigError {
    pub fn file(file: &Path, message: String) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message,
            snippet: None,
        }
    }

    pub fn at(file: &Path, loc: &Location, message: String) -> ConfigError {
        let snippet = std::fs::read_to_string(file).ok().and_then(|t| {
            t.lines()
                .nth(loc.line().saturating_sub(1) as usize)
                .map(str::to_owned)
        });
        ConfigError {
            file: file.to_path_buf(),
            line: loc.line(),
            column: loc.column(),
            message,
            snippet,
        }
    }

    pub fn at_line(
        file: &Path,
        text: &str,
        line: u64,
        column: u64,
        message: String,
    ) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            line,
            column,
            message,
            snippet: text
                .lines()
                .nth(line.saturating_sub(1) as usize)
                .map(str::to_owned),
        }
    }

    /// Turns a serde-saphyr error into our form, with "did you mean" for unknown keys/types.
    pub fn from_yaml(file: &Path, text: &str, e: &serde_saphyr::Error) -> ConfigError {
        use serde_saphyr::Error as E;
        let inner = e.without_snippet();
        let message = match inner {
            E::SerdeUnknownField {
                field, expected, ..
            } => {
                let mut m = format!("unknown key `{field}`");
                m.push_str(&expected_list(expected));
                if let Some(s) = did_you_mean(field, expected.iter().copied()) {
                    m.push_str(&format!("; did you mean `{s}`?"));
                }
                m
            }
            E::SerdeUnknownVariant {
                variant, expected, ..
            } => {
                let mut m = format!("unknown type `{variant}`");
                m.push_str(&expected_list(expected));
                if let Some(s) = did_you_mean(variant, expected.iter().copied()) {
                    m.push_str(&format!("; did you mean `{s}`?"));
                }
                m
            }
            E::SerdeMissingField { field, .. } => format!("missing required key `{field}`"),
            other => {
                let mut opts = serde_saphyr::RenderOptions::default();
                opts.snippets = serde_saphyr::SnippetMode::Off;
                strip_location(&other.render_with_options(opts))
            }
        };
        let message = improve_typetag_message(&message);
        match inner.location() {
            Some(loc) if loc.line() > 0 => {
                ConfigError::at_line(file, text, loc.line(), loc.column(), message)
            }
            _ => ConfigError::file(file, message),
        }
    }
}

/// typetag reports an unknown component as a custom message; give it the same hint.
fn improve_typetag_message(m: &str) -> String {
    // "unknown variant `filtr`, expected one of `filter`, `log`"
    if let Some(rest) = m.strip_prefix("unknown variant `")
        && let Some((name, tail)) = rest.split_once('`')
    {
        let expected: Vec<&str> = tail
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, s)| s)
            .collect();
        let mut out = format!("unknown type `{name}`{}", expected_list(&expected));
        if let Some(s) = did_you_mean(name, expected.iter().copied()) {
            out.push_str(&format!("; did you mean `{s}`?"));
        }
        return out;
    }
    m.to_owned()
}

fn expected_list(expected: &[&str]) -> String {
    if expected.is_empty() {
        return String::new();
    }
    let list: Vec<String> = expected.iter().map(|e| format!("`{e}`")).collect();
    format!(", expected one of {}", list.join(", "))
}

fn strip_location(s: &str) -> String {
    let s = s.trim();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s.to_owned(),
    }
}

/// The closest candidate to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            return write!(f, "{}: error: {}", self.file.display(), self.message);
        }
        writeln!(
            f,
            "{}:{}:{}: error: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )?;
        if let Some(s) = &self.snippet {
            let caret = " ".repeat(self.column.saturating_sub(1) as usize);
            writeln!(f, "{:>5} | {s}", self.line)?;
            write!(f, "      | {caret}^")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.0 {
            writeln!(f, "{e}")?;
        }
        let n = self.0.len();
        write!(f, "{n} error{}", if n == 1 { "" } else { "s" })
    }
}

impl std::error::Error for ConfigErrors {}
