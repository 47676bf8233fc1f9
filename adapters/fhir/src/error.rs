//! [`FhirError`]: what is wrong with a FHIR resource, and where, without its values.

use std::fmt;

/// A FHIR resource that cannot be read or used: the element path (`name[0].given`,
/// `birthDate`, `resourceType`; empty for the whole document), what is wrong, and the
/// column of the JSON text where the parser stopped (when it was the parser).
///
/// Never holds a value from the resource (those may be patient data): serde's quoted parts
/// are cut out and the model's "Unknown value: …" messages are replaced.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct FhirError {
    /// The element path, as serde_path_to_error prints it; empty for the document itself.
    pub path: String,
    /// What is wrong, without values.
    pub what: String,
    /// The 1-based column of the JSON text where reading stopped, for parse errors.
    pub column: Option<usize>,
}

impl FhirError {
    /// An error at `path` found after parsing (no column).
    pub fn at(path: impl Into<String>, what: impl Into<String>) -> FhirError {
        FhirError {
            path: path.into(),
            what: what.into(),
            column: None,
        }
    }

    /// A serde_json error met at `path` (as serde_path_to_error prints it), made safe to
    /// show: values cut out, the model's messages explained.
    pub(crate) fn from_json(path: String, err: &serde_json::Error) -> FhirError {
        let path = if path == "." { String::new() } else { path };
        let message = err.to_string();
        // serde_json appends " at line L column C"; the value, if any, comes before it.
        let message = match (err.line(), message.rfind(" at line ")) {
            (1.., Some(i)) => &message[..i],
            _ => message.as_str(),
        };
        let last = path.rsplit('.').next().unwrap_or_default();
        let what = if message.starts_with("Unknown value: ") {
            // fhir-model's code enums: "Unknown value: {the value}".
            match last {
                "gender" => "not one of male, female, other, unknown".to_owned(),
                _ => "not a code of its FHIR value set".to_owned(),
            }
        } else if ["Couldn't ", "Invalid date", "Invalid month"]
            .iter()
            .any(|p| message.starts_with(p))
        {
            // fhir-model's date errors (they name components, not values).
            format!(
                "not a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD): {}",
                without_values(message)
            )
        } else {
            without_values(message)
        };
        FhirError {
            path,
            what,
            column: (err.line() > 0).then(|| err.column()),
        }
    }
}

impl fmt::Display for FhirError {
    /// `path: what (column C)`, or `what …` for the document itself.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.what)?;
        if let Some(c) = self.column {
            write!(f, " (column {c})")?;
        }
        Ok(())
    }
}

/// serde's message without its quoted parts (`…` and "…" hold values from the input).
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quote: Option<char> = None;
    for c in message.chars() {
        match quote {
            Some(q) if c == q => {
                out.push('…');
                out.push(c);
                quote = None;
            }
            Some(_) => {}
            None if c == '`' || c == '"' => {
                out.push(c);
                quote = Some(c);
            }
            None => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_are_cut_out() {
        assert_eq!(
            without_values("invalid type: string \"王五\", expected a sequence"),
            "invalid type: string \"…\", expected a sequence"
        );
        assert_eq!(
            without_values("unknown variant `x`, expected `a`"),
            "unknown variant `…`, expected `…`"
        );
    }

    #[test]
    fn display_has_path_and_column() {
        let e = FhirError {
            path: "birthDate".into(),
            what: "bad".into(),
            column: Some(7),
        };
        assert_eq!(e.to_string(), "birthDate: bad (column 7)");
        assert_eq!(FhirError::at("", "x").to_string(), "x");
    }
}
