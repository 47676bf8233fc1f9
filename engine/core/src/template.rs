//! Templates in sink settings (the `http` sink's URL, headers and body, the `file` sink's file
//! name): text with `{{…}}` placeholders filled from the message being delivered.
//!
//! | placeholder | value |
//! |---|---|
//! | `{{id}}` | the message id |
//! | `{{pipeline}}`, `{{facility}}`, `{{kind}}`, `{{source}}` | the message's |
//! | `{{received_at}}` | when it was received, milliseconds since the epoch |
//! | `{{date}}` | the day it was received, UTC, `YYYY-MM-DD` |
//! | `{{header.NAME}}` | the header `NAME` (a message without it is an error, not an empty value) |
//! | `{{= EXPR}}` | a CEL expression (see [`crate::expr`]), e.g. `{{= hl7('PID-3[1].1') }}` |
//!
//! Spaces inside the braces are ignored. A template is parsed (and its expressions compiled)
//! when the pipeline is loaded: an unknown placeholder or a bad expression is a config error
//! at the template's line and column. Each use renders the values through an escape chosen by
//! the sink (percent-encoding in a URL, a file-name check for a file), never the literal text.

use std::fmt;

use crate::expr::Expr;
use crate::work::{StepError, Work};

/// A parsed template.
#[derive(Clone)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Clone)]
enum Part {
    Text(String),
    Id,
    Pipeline,
    Facility,
    Kind,
    Source,
    ReceivedAt,
    Date,
    Header(String),
    Expr(Expr),
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Template({:?})", self.source)
    }
}

const KNOWN: &str =
    "id, pipeline, facility, kind, source, received_at, date, header.NAME or = EXPR";

impl Template {
    /// Parses `source`; the error quotes the template and names the placeholder at fault.
    pub fn parse(source: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                return Err(format!(
                    "template {source:?}: `{{{{` without its closing `}}}}`"
                ));
            };
            let inner = after[..close].trim();
            parts.push(Self::placeholder(source, inner)?);
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template {
            source: source.to_owned(),
            parts,
        })
    }

    fn placeholder(source: &str, inner: &str) -> Result<Part, String> {
        if let Some(expr) = inner.strip_prefix('=') {
            let expr = expr.trim();
            if expr.is_empty() {
                return Err(format!(
                    "template {source:?}: `{{{{=}}}}` needs an expression"
                ));
            }
            return Expr::compile(expr)
                .map(Part::Expr)
                .map_err(|e| format!("template {source:?}: {e}"));
        }
        if let Some(name) = inner.strip_prefix("header.") {
            let name = name.trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(format!(
                    "template {source:?}: `{{{{header.{name}}}}}` needs a header name"
                ));
            }
            return Ok(Part::Header(name.to_owned()));
        }
        Ok(match inner {
            "id" => Part::Id,
            "pipeline" => Part::Pipeline,
            "facility" => Part::Facility,
            "kind" => Part::Kind,
            "source" => Part::Source,
            "received_at" => Part::ReceivedAt,
            "date" => Part::Date,
            other => {
                let hint = crate::config::did_you_mean(
                    other,
                    [
                        "id",
                        "pipeline",
                        "facility",
                        "kind",
                        "source",
                        "received_at",
                        "date",
                    ],
                )
                .map(|s| format!("did you mean {{{{{s}}}}}? "))
                .unwrap_or_default();
                return Err(format!(
                    "template {source:?}: unknown placeholder {{{{{other}}}}}; {hint}use {KNOWN}"
                ));
            }
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether it has no placeholder (renders to its text for every message).
    pub fn is_constant(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// Whether it holds `{{id}}` (so it differs for each message).
    pub fn has_id(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Id))
    }

    /// The literal text between the placeholders.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Text(t) => Some(t.as_str()),
            _ => None,
        })
    }

    /// Renders the template for `work`. Every value passes through `escape`, which may refuse it
    /// (its error becomes a permanent error naming the template); the literal text does not.
    pub fn render(
        &self,
        work: &mut Work,
        escape: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<String, StepError> {
        let mut out = String::with_capacity(self.source.len() + 32);
        for p in &self.parts {
            let value = match p {
                Part::Text(t) => {
                    out.push_str(t);
                    continue;
                }
                Part::Id => work.id.clone(),
                Part::Pipeline => work.pipeline.clone(),
                Part::Facility => work.facility.clone(),
                Part::Kind => work.kind.clone(),
                Part::Source => work.source.clone(),
                Part::ReceivedAt => work.received_at.to_string(),
                Part::Date => {
                    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(work.received_at)
                        .map(|t| t.format("%Y-%m-%d").to_string())
                        .unwrap_or_default()
                }
                Part::Header(h) => work.headers.get(h).cloned().ok_or_else(|| {
                    StepError::permanent(format!(
                        "template {:?}: the message has no header {h:?}",
                        self.source
                    ))
                })?,
                Part::Expr(e) => e.eval_string(work)?,
            };
            let escaped = escape(&value).map_err(|why| {
                StepError::permanent(format!("template {:?}: {why}", self.source))
            })?;
            out.push_str(&escaped);
        }
        Ok(out)
    }
}

/// Values as they are (a body template).
pub fn verbatim(v: &str) -> Result<String, String> {
    Ok(v.to_owned())
}

/// Percent-encodes everything but RFC 3986's unreserved characters (a URL template's values:
/// a value never adds a path segment, a query parameter or a fragment).
pub fn url_component(v: &str) -> Result<String, String> {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

/// A header value: no line breaks or other control characters.
pub fn header_value(v: &str) -> Result<String, String> {
    if v.chars().any(|c| c.is_control() && c != '\t') {
        return Err("a header value cannot hold a line break or control character".into());
    }
    Ok(v.to_owned())
}

/// One part of a file name: not empty, no `/`, `\`, NUL or control character, not `.` or `..`.
pub fn file_name_part(v: &str) -> Result<String, String> {
    if v.is_empty() {
        return Err("a value in a file name is empty".into());
    }
    if v == "." || v == ".." {
        return Err(format!("{v:?} cannot be part of a file name"));
    }
    if v.chars().any(|c| c == '/' || c == '\\' || c.is_control()) {
        return Err(format!(
            "{v:?} cannot be part of a file name (a `/`, `\\` or control character)"
        ));
    }
    Ok(v.to_owned())
}

impl<'de> serde::Deserialize<'de> for Template {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Template::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::message::Message;

    fn work() -> Work {
        let m = Message {
            id: "0190-abc".into(),
            facility: "county-1".into(),
            pipeline: "lab-out".into(),
            kind: "json".into(),
            body: br#"{"patient":{"id":"P 7/1"},"n":3}"#.to_vec(),
            headers: BTreeMap::from([("order".to_owned(), "A/1 2".to_owned())]),
            source: "http".into(),
            received_at: 1_764_979_200_000, // 2025-12-06T00:00:00Z
            trace_id: String::new(),
            dedup_key: None,
            parent_id: None,
            state: crate::message::State::Received,
            attempts: 0,
            next_attempt_at: None,
            last_error: None,
            updated_at: 0,
        };
        Work::from_message(&m)
    }

    fn check(template: &str, escape: fn(&str) -> Result<String, String>, expected: &str) {
        let t = Template::parse(template).unwrap();
        assert_eq!(
            t.render(&mut work(), &escape).unwrap(),
            expected,
            "{template}"
        );
    }

    #[test]
    fn placeholders_render() {
        check("{{id}}", verbatim, "0190-abc");
        check(
            "{{ pipeline }}/{{facility}}/{{kind}}/{{source}}",
            verbatim,
            "lab-out/county-1/json/http",
        );
        check(
            "{{received_at}} {{date}}",
            verbatim,
            "1764979200000 2025-12-06",
        );
        check("o={{header.order}}", verbatim, "o=A/1 2");
        check("{{= body.patient.id }}-{{=body.n}}", verbatim, "P 7/1-3");
        check("no placeholder", verbatim, "no placeholder");
        // JSON's closing braces are text.
        check(
            r#"{"a":{"id":"{{id}}"}}"#,
            verbatim,
            r#"{"a":{"id":"0190-abc"}}"#,
        );
    }

    #[test]
    fn escapes_apply_to_values_only() {
        check(
            "http://h/p/{{header.order}}?x={{= body.patient.id}}",
            url_component,
            "http://h/p/A%2F1%202?x=P%207%2F1",
        );
        let t = Template::parse("{{header.order}}.hl7").unwrap();
        let e = t.render(&mut work(), &file_name_part).unwrap_err();
        assert!(!e.retryable);
        assert!(e.message.contains("cannot be part of a file name"), "{e}");
        check("out/{{id}}.json", file_name_part, "out/0190-abc.json");
    }

    #[test]
    fn a_missing_header_is_an_error_not_an_empty_value() {
        let t = Template::parse("{{header.nope}}").unwrap();
        let e = t.render(&mut work(), &verbatim).unwrap_err();
        assert_eq!(
            e.message,
            "template \"{{header.nope}}\": the message has no header \"nope\""
        );
        assert!(!e.retryable);
    }

    #[test]
    fn bad_templates_are_named() {
        let cases = [
            (
                "{{ids}}",
                "template \"{{ids}}\": unknown placeholder {{ids}}; did you mean {{id}}? use id, pipeline, facility, kind, source, received_at, date, header.NAME or = EXPR",
            ),
            ("a{{id", "template \"a{{id\": `{{` without its closing `}}`"),
            ("{{=}}", "template \"{{=}}\": `{{=}}` needs an expression"),
            (
                "{{header.}}",
                "template \"{{header.}}\": `{{header.}}` needs a header name",
            ),
        ];
        for (t, expected) in cases {
            assert_eq!(Template::parse(t).unwrap_err(), expected, "{t}");
        }
        assert!(
            Template::parse("{{= 1 +}}")
                .unwrap_err()
                .starts_with("template \"{{= 1 +}}\": invalid CEL expression")
        );
    }

    #[test]
    fn header_values_refuse_line_breaks() {
        assert!(header_value("a\r\nInjected: 1").is_err());
        assert_eq!(header_value("a\tb").unwrap(), "a\tb");
        assert!(Template::parse("{{id}}").unwrap().has_id());
        assert!(Template::parse("x").unwrap().is_constant());
    }
}
