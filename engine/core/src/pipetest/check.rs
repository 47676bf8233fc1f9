//! A case's expectations against what the engine did with its input.

use super::file::{Case, ExpectedOutcome};
use crate::message::{Message, State};
use crate::runner::tap::{Outcome, Passage, Place};
use crate::work::Work;

/// What a case's input became.
pub(super) struct Observed<'a> {
    /// The tested pipeline.
    pub pipeline: &'a str,
    /// The input as submitted.
    pub input: &'a Message,
    /// The input's message as journaled, finished.
    pub root: &'a Message,
    /// It and every message routed from it, finished.
    pub messages: &'a [Message],
    /// Every step and sink they passed, in order.
    pub passages: &'a [Passage],
}

/// How the message `root` ended in `pipeline`, with the reason.
pub(super) fn outcome(
    pipeline: &str,
    root: &Message,
    passages: &[Passage],
) -> (ExpectedOutcome, Option<String>) {
    if root.state == State::Dead {
        return (ExpectedOutcome::Dead, root.last_error.clone());
    }
    let last = passages
        .iter()
        .rfind(|p| p.pipeline == pipeline && p.message_id == root.id);
    match last.map(|p| (&p.outcome, &p.point)) {
        Some((Outcome::Stop(reason), point)) if point.starts_with("route#") => {
            (ExpectedOutcome::Route, Some(reason.clone()))
        }
        Some((Outcome::Stop(reason), point)) => {
            (ExpectedOutcome::Drop, Some(format!("{point}: {reason}")))
        }
        _ => (ExpectedOutcome::Pass, None),
    }
}

/// The steps and sinks the messages passed: `hl7-intake/route#1: stop (routed to hl7-adt)`.
pub(super) fn trail(passages: &[Passage]) -> Vec<String> {
    passages
        .iter()
        .map(|p| {
            let what = match &p.outcome {
                Outcome::Continue => "continue".to_owned(),
                Outcome::Stop(r) => format!("stop ({r})"),
                Outcome::Failed(e) => format!("failed ({e})"),
                Outcome::Delivered => "delivered".to_owned(),
                Outcome::NotDelivered => "reached (dry run: not delivered)".to_owned(),
            };
            format!("{}/{}: {what}", p.pipeline, p.point)
        })
        .collect()
}

/// The passage `observe` names, or the default one: what the tested pipeline's first sink
/// got, else the last step it passed. `Err` says why there is none.
fn observed_passage<'a>(
    o: &'a Observed<'_>,
    observe: Option<&str>,
) -> Result<Option<&'a Passage>, String> {
    let Some(spec) = observe else {
        let own: Vec<&Passage> = o
            .passages
            .iter()
            .filter(|p| p.pipeline == o.pipeline && p.message_id == o.root.id)
            .collect();
        let sink = own.iter().find(|p| matches!(p.place, Place::Sink(_)));
        return Ok(sink.or(own.last()).copied());
    };
    let (pipeline, point) = match spec.split_once('/') {
        Some((p, s)) => (p, s),
        None => (o.pipeline, spec),
    };
    let place = indexed(point, "steps")
        .map(Place::Step)
        .or_else(|| indexed(point, "sinks").map(Place::Sink));
    let found = o.passages.iter().find(|p| {
        p.pipeline == pipeline
            && match place {
                Some(pl) => p.place == pl,
                None => p.point == point,
            }
    });
    match found {
        Some(p) => Ok(Some(p)),
        None => {
            let seen: Vec<String> = o
                .passages
                .iter()
                .map(|p| format!("{}/{}", p.pipeline, p.point))
                .collect();
            Err(format!(
                "observe: the message never reached {spec:?}; it passed {}",
                if seen.is_empty() {
                    "no step or sink".to_owned()
                } else {
                    seen.join(", ")
                }
            ))
        }
    }
}

/// `steps[2]` → 2.
fn indexed(point: &str, list: &str) -> Option<usize> {
    point
        .strip_prefix(list)?
        .strip_prefix('[')?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Every expectation of `case` that does not hold, each a readable block.
pub(super) fn check_case(o: &Observed<'_>, case: &Case) -> Vec<String> {
    let e = &case.expect;
    let mut failures = Vec::new();
    let (got, reason) = outcome(o.pipeline, o.root, o.passages);
    if let Some(want) = e.outcome
        && want != got
    {
        failures.push(format!(
            "outcome: expected {want}, got {got}{}",
            reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ));
    }
    if let Some(want) = &e.reason {
        match &reason {
            Some(r) if r.contains(want.as_str()) => {}
            Some(r) => failures.push(format!(
                "reason: expected it to contain {want:?}, got {r:?}"
            )),
            None => failures.push(format!(
                "reason: expected one containing {want:?}, but the message {} without a reason",
                match got {
                    ExpectedOutcome::Pass => "passed",
                    _ => "ended",
                }
            )),
        }
    }
    if let Some(want) = &e.routed_to {
        let mut got: Vec<&str> = o
            .messages
            .iter()
            .filter(|m| m.parent_id.as_deref() == Some(o.root.id.as_str()))
            .map(|m| m.pipeline.as_str())
            .collect();
        got.sort_unstable();
        let mut want: Vec<&str> = want.iter().map(String::as_str).collect();
        want.sort_unstable();
        if got != want {
            failures.push(format!(
                "routed_to: expected [{}], got [{}]",
                want.join(", "),
                got.join(", ")
            ));
        }
    }
    let needs_message = !e.headers.is_empty()
        || e.body.is_some()
        || !e.body_contains.is_empty()
        || !e.fields.is_empty()
        || !e.holds.is_empty();
    if !needs_message {
        return failures;
    }
    let passage = match observed_passage(o, case.observe.as_deref()) {
        Ok(p) => p,
        Err(msg) => {
            failures.push(msg);
            return failures;
        }
    };
    // No step or sink at all: the message as it entered.
    let (kind, headers, body) = match passage {
        Some(p) => (p.kind.clone(), p.headers.clone(), p.body.clone()),
        None => (
            o.input.kind.clone(),
            o.input.headers.clone(),
            o.input.body.clone(),
        ),
    };
    let at = passage.map_or_else(
        || "the input".to_owned(),
        |p| format!("{}/{}", p.pipeline, p.point),
    );
    for (name, want) in &e.headers {
        let got = headers.get(name);
        if got != want.as_ref() {
            failures.push(format!(
                "header {name:?} at {at}: expected {}, got {}",
                shown(want.as_deref()),
                shown(got.map(String::as_str))
            ));
        }
    }
    let text = String::from_utf8_lossy(&body)
        .replace("\r\n", "\n")
        .replace('\r', "\n");
    let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    if let Some(want) = &e.body {
        // A string is the body's text (an HL7 message, CSV), unless the body is a JSON string.
        let as_text = matches!(want, serde_json::Value::String(_))
            && !matches!(json, Some(serde_json::Value::String(_)));
        match (want, &json) {
            (serde_json::Value::String(s), _) if as_text => {
                let want_text = s.replace("\r\n", "\n").replace('\r', "\n");
                if want_text.trim_end() != text.trim_end() {
                    failures.push(format!(
                        "body at {at} differs (- expected, + actual):\n{}",
                        diff(want_text.trim_end(), text.trim_end())
                    ));
                }
            }
            (want, Some(got)) => {
                if want != got {
                    failures.push(format!(
                        "body at {at} differs (- expected, + actual):\n{}",
                        diff(&pretty(want), &pretty(got))
                    ));
                }
            }
            (want, None) => failures.push(format!(
                "body at {at}: expected the JSON {}, got a body that is not JSON:\n{}",
                compact(want),
                indent(&text)
            )),
        }
    }
    for want in &e.body_contains {
        if !text.contains(want.as_str()) {
            failures.push(format!(
                "body at {at}: expected it to contain {want:?}; the body is:\n{}",
                indent(&text)
            ));
        }
    }
    for (path, want) in &e.fields {
        let got = json.as_ref().and_then(|j| at_path(j, path));
        if got != Some(want) {
            failures.push(format!(
                "field {path:?} at {at}: expected {}, got {}",
                compact(want),
                got.map_or_else(|| "nothing (no such field)".to_owned(), compact)
            ));
        }
    }
    if !e.holds.is_empty() {
        let mut m = o.input.clone();
        m.id.clone_from(&o.root.id);
        m.kind = kind;
        m.headers = headers;
        m.body = body;
        for expr in &e.holds {
            let mut w = Work::from_message(&m);
            match expr.eval_bool(&mut w) {
                Ok(true) => {}
                Ok(false) => failures.push(format!("true: `{}` is false at {at}", expr.source())),
                Err(err) => failures.push(format!("true: `{}` at {at}: {err}", expr.source())),
            }
        }
    }
    failures
}

fn shown(v: Option<&str>) -> String {
    v.map_or_else(|| "absent".to_owned(), |s| format!("{s:?}"))
}

fn compact(v: &serde_json::Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value at a dotted path: object keys, and array indexes as numbers (`items.0.code`).
fn at_path<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.').try_fold(v, |cur, seg| match cur {
        serde_json::Value::Object(o) => o.get(seg),
        serde_json::Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// A line diff (longest common subsequence), each line indented: `    ` in both, `  - `
/// expected only, `  + ` actual only.
pub fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    if a.len() * b.len() > 4_000_000 {
        return format!(
            "  expected ({} lines) and actual ({} lines) are too long to compare line by line",
            a.len(),
            b.len()
        );
    }
    // lcs[i][j]: the common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(format!("    {}", a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(format!("  - {}", a[i]));
            i += 1;
        } else {
            out.push(format!("  + {}", b[j]));
            j += 1;
        }
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_marks_what_changed() {
        assert_eq!(diff("a\nb\nc", "a\nx\nc"), "    a\n  - b\n  + x\n    c");
        assert_eq!(diff("a", "a\nb"), "    a\n  + b");
    }

    #[test]
    fn paths_reach_into_objects_and_arrays() {
        let v = serde_json::json!({"patient": {"id": "P1"}, "items": [{"code": "K"}]});
        assert_eq!(at_path(&v, "patient.id"), Some(&serde_json::json!("P1")));
        assert_eq!(at_path(&v, "items.0.code"), Some(&serde_json::json!("K")));
        assert_eq!(at_path(&v, "items.1.code"), None);
        assert_eq!(indexed("steps[2]", "steps"), Some(2));
        assert_eq!(indexed("sinks[0]", "steps"), None);
    }
}
