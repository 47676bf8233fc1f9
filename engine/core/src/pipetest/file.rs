//! The test file: `pipelines/NAME.test.yaml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::config::Version;

/// A test file: one pipeline's cases.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    pub version: Version,
    /// The pipeline the inputs enter.
    pub pipeline: Spanned<String>,
    /// The consultation workflow's clock while the cases run (RFC 3339; default
    /// 2026-01-05T09:00:00+08:00, a Monday morning in China).
    #[serde(default)]
    pub now: Option<Spanned<String>>,
    /// How long a case may take before it fails (default 10s).
    #[serde(default = "default_timeout", with = "crate::config::duration")]
    pub timeout: std::time::Duration,
    pub cases: Vec<Spanned<Case>>,
}

fn default_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}

/// One input and what is expected of it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    /// The pipeline this case's input enters, when it is not the file's.
    #[serde(default)]
    pub pipeline: Option<String>,
    pub input: Input,
    /// Where to look: a step or sink of the pipeline (`set#1`, `steps[1]`, `journal#0`,
    /// `sinks[0]`), or of a pipeline it routes to (`referrals-out/http#0`). Default: what the
    /// pipeline's sinks got or, when the message stopped earlier, the last step it passed.
    #[serde(default)]
    pub observe: Option<String>,
    pub expect: Expect,
}

/// The message as its source would journal it. Exactly one of `json`, `text`, `hl7`, `file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// A JSON body (kind `json`), written as YAML.
    #[serde(default)]
    pub json: Option<serde_json::Value>,
    /// A text body (kind `text`).
    #[serde(default)]
    pub text: Option<String>,
    /// An HL7 v2 message (kind `hl7v2`), one segment per line; lines are joined with CR.
    #[serde(default)]
    pub hl7: Option<String>,
    /// A fixture file, relative to the test file. Its kind is `kind`, or follows its
    /// extension: `.hl7` hl7v2, `.json` json, `.txt` text, anything else bytes.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// The message kind, when it is not the input's own.
    #[serde(default)]
    pub kind: Option<String>,
    /// Headers as the source would set them (an HL7 input gets the MLLP source's `hl7-*`
    /// headers and dedup key from the message itself).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// What the case expects. Every field is optional; each given one is checked.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// How the message ended in the tested pipeline: `pass` (it reached the sinks, or the
    /// end of a pipeline without sinks), `drop` (a step stopped it: a filter), `route` (a
    /// route step handed it on and stopped), `dead` (a step or sink failed; the test runs one
    /// attempt).
    #[serde(default)]
    pub outcome: Option<ExpectedOutcome>,
    /// Text the stop or failure reason contains.
    #[serde(default)]
    pub reason: Option<String>,
    /// The pipelines the message was routed to (all of them, in any order).
    #[serde(default)]
    pub routed_to: Option<Vec<String>>,
    /// Headers at the observed point: each given one must be equal; `~` (null) means absent.
    #[serde(default)]
    pub headers: BTreeMap<String, Option<String>>,
    /// The body at the observed point equals this: compared as JSON when it is JSON, as text
    /// otherwise (an HL7 body with its CR segment ends written as new lines).
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// Text the body contains.
    #[serde(default)]
    pub body_contains: Vec<String>,
    /// Values at JSON paths of the body (`patient.id`, `items.0.code`).
    #[serde(default)]
    pub fields: BTreeMap<String, serde_json::Value>,
    /// CEL expressions that must be true of the observed message (`hl7('PID-3.1') == '42'`).
    #[serde(default, rename = "true")]
    pub holds: Vec<crate::expr::Expr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedOutcome {
    Pass,
    Drop,
    Route,
    Dead,
}

impl std::fmt::Display for ExpectedOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ExpectedOutcome::Pass => "pass",
            ExpectedOutcome::Drop => "drop",
            ExpectedOutcome::Route => "route",
            ExpectedOutcome::Dead => "dead",
        })
    }
}

/// Whether `path` is a test file (`*.test.yaml`, `*.test.yml`): pipeline globs and
/// `validate`'s folder scan leave them to `huizhen test`.
pub fn is_test_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".test.yaml") || n.ends_with(".test.yml"))
}

impl Input {
    /// The message: kind, body and headers (before the kind's intake headers). `base` is the
    /// test file's folder.
    pub fn message(&self, base: &Path) -> Result<(String, Vec<u8>), String> {
        let given = [
            self.json.is_some(),
            self.text.is_some(),
            self.hl7.is_some(),
            self.file.is_some(),
        ]
        .iter()
        .filter(|g| **g)
        .count();
        if given != 1 {
            return Err(format!(
                "input: give exactly one of `json`, `text`, `hl7` or `file` (found {given})"
            ));
        }
        let (kind, body) = if let Some(v) = &self.json {
            (
                "json".to_owned(),
                serde_json::to_vec(v).map_err(|e| e.to_string())?,
            )
        } else if let Some(t) = &self.text {
            ("text".to_owned(), t.as_bytes().to_vec())
        } else if let Some(h) = &self.hl7 {
            ("hl7v2".to_owned(), hl7_segments(h).into_bytes())
        } else {
            let rel = self.file.as_ref().expect("counted above");
            let path = base.join(rel);
            let bytes =
                std::fs::read(&path).map_err(|e| format!("input.file {}: {e}", path.display()))?;
            let kind = match path.extension().and_then(|x| x.to_str()) {
                Some("hl7") => "hl7v2",
                Some("json") => "json",
                Some("txt") => "text",
                _ => "bytes",
            };
            let bytes = if kind == "hl7v2" {
                normalise_hl7_bytes(bytes)
            } else {
                bytes
            };
            (kind.to_owned(), bytes)
        };
        Ok((self.kind.clone().unwrap_or(kind), body))
    }
}

/// An HL7 message written one segment per line: segments joined with CR, trailing blank
/// lines dropped, indentation kept out.
fn hl7_segments(text: &str) -> String {
    let segments: Vec<&str> = text
        .lines()
        .map(|l| l.trim_start().trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
        .collect();
    let mut s = segments.join("\r");
    s.push('\r');
    s
}

/// A fixture file's segment ends as a sender would send them: LF and CRLF become CR.
fn normalise_hl7_bytes(bytes: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                out.push(b'\r');
                i += 1;
            }
            b'\n' => out.push(b'\r'),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hl7_inputs_are_joined_with_cr() {
        assert_eq!(
            hl7_segments("  MSH|^~\\&|A\n  PID|1\n\n"),
            "MSH|^~\\&|A\rPID|1\r"
        );
        assert_eq!(normalise_hl7_bytes(b"A\r\nB\nC\r".to_vec()), b"A\rB\rC\r");
    }

    #[test]
    fn test_files_are_told_apart() {
        assert!(is_test_file(Path::new("pipelines/demo.test.yaml")));
        assert!(!is_test_file(Path::new("pipelines/demo.yaml")));
    }
}
