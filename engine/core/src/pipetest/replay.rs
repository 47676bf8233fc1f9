//! `huizhen replay`: stored messages of a pipeline re-run through the configuration as it is
//! (the baseline) and through a changed one (the candidate: another pipeline file, root file
//! or plugin folder), each in an isolated engine (`isolated.rs`: a temporary store, sinks not
//! called), and what would change: the outcome, the pipelines routed to, and what each sink
//! would get (headers and body).
//!
//! The messages are read from the store as journaled (their bodies and the headers their
//! source gave them) and replayed oldest first into both engines. Steps that keep state
//! (`match_patient`, `consultation_create`) start from an empty store in both, so a replay
//! compares the pipelines' logic, not the state the running engine has built up.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::check::{diff, outcome};
use super::{Isolated, Trace};
use crate::config::Loaded;
use crate::message::{Message, NewMessage};
use crate::runner::tap::{Outcome, Place};
use crate::store::{ListFilter, Store};

/// Which messages to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub pipeline: String,
    /// Received at or after (ms since the epoch).
    pub since_ms: i64,
    /// Received before (ms since the epoch); `None`: up to now.
    pub until_ms: Option<i64>,
    /// At most this many messages (the oldest of the window first).
    pub limit: usize,
    /// How long one message may take in one engine.
    pub timeout: Duration,
}

/// One replayed message.
#[derive(Debug)]
pub struct Replayed {
    pub id: String,
    pub received_at: i64,
    /// What would change, each a readable line or block; empty: nothing.
    pub differences: Vec<String>,
}

/// What a replay found.
#[derive(Debug)]
pub struct ReplayReport {
    pub pipeline: String,
    pub messages: Vec<Replayed>,
}

impl ReplayReport {
    pub fn changed(&self) -> usize {
        self.messages
            .iter()
            .filter(|m| !m.differences.is_empty())
            .count()
    }
}

/// The stored messages of the window, oldest first.
pub async fn select(store: &Store, opts: &ReplayOptions) -> Result<Vec<Message>, String> {
    let mut found: Vec<Message> = Vec::new();
    let mut cursor = None;
    'pages: loop {
        let page = store
            .list(&ListFilter {
                pipeline: Some(opts.pipeline.clone()),
                limit: Some(500),
                cursor: cursor.take(),
                ..ListFilter::default()
            })
            .await
            .map_err(|e| format!("the store: {e}"))?;
        for m in page.messages {
            if m.received_at < opts.since_ms {
                break 'pages;
            }
            if opts.until_ms.is_some_and(|u| m.received_at >= u) {
                continue;
            }
            found.push(m);
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    // The oldest of the window first, as they arrived.
    found.reverse();
    found.truncate(opts.limit);
    Ok(found)
}

/// Replays `messages` (as [`select`] gives them, with their bodies read here) through both
/// configurations.
pub async fn replay(
    store: &Store,
    messages: &[Message],
    baseline: Loaded,
    candidate: Loaded,
    opts: &ReplayOptions,
) -> Result<ReplayReport, String> {
    let now = chrono::Utc::now();
    let mut before = Isolated::start(baseline, now)
        .await
        .map_err(|e| format!("the baseline: {e}"))?;
    let mut after = match Isolated::start(candidate, now).await {
        Ok(a) => a,
        Err(e) => {
            before.stop().await;
            return Err(format!("the candidate: {e}"));
        }
    };
    let mut report = ReplayReport {
        pipeline: opts.pipeline.clone(),
        messages: Vec::new(),
    };
    let missing = [("baseline", &before), ("candidate", &after)]
        .into_iter()
        .find(|(_, iso)| !iso.has_pipeline(&opts.pipeline))
        .map(|(side, _)| format!("the {side} has no pipeline {:?}", opts.pipeline));
    if let Some(why) = missing {
        before.stop().await;
        after.stop().await;
        return Err(why);
    }
    for m in messages {
        let full = match store.get(&m.id).await {
            Ok(Some(full)) => full,
            Ok(None) => continue, // purged meanwhile
            Err(e) => {
                report.messages.push(Replayed {
                    id: m.id.clone(),
                    received_at: m.received_at,
                    differences: vec![format!("not read from the store: {e}")],
                });
                continue;
            }
        };
        let a = run_one(&mut before, &full, opts.timeout).await;
        let b = run_one(&mut after, &full, opts.timeout).await;
        let differences = match (a, b) {
            (Ok(a), Ok(b)) => compare(&opts.pipeline, &a, &b),
            (Err(e), _) => vec![format!("the baseline could not run it: {e}")],
            (_, Err(e)) => vec![format!("the candidate could not run it: {e}")],
        };
        report.messages.push(Replayed {
            id: m.id.clone(),
            received_at: m.received_at,
            differences,
        });
    }
    before.stop().await;
    after.stop().await;
    Ok(report)
}

async fn run_one(iso: &mut Isolated, m: &Message, timeout: Duration) -> Result<Trace, String> {
    let mut n = NewMessage::new(&m.pipeline, &m.facility, &m.kind, m.body.clone());
    n.headers = m.headers.clone();
    n.source = format!("replay of {}", m.id);
    let a = iso.submit(n).await?;
    iso.wait(&a.id, timeout).await.map_err(|(why, _)| why)
}

/// What a trace shows of a message: how it ended, where it was routed, what each sink got.
struct Summary {
    outcome: String,
    routed: BTreeSet<String>,
    sinks: BTreeMap<String, (BTreeMap<String, String>, Vec<u8>)>,
}

fn summary(pipeline: &str, t: &Trace) -> Summary {
    let (o, reason) = outcome(pipeline, &t.root, &t.passages);
    let outcome = match reason {
        Some(r) => format!("{o} ({r})"),
        None => o.to_string(),
    };
    let routed = t
        .messages
        .iter()
        .filter(|m| m.parent_id.as_deref() == Some(t.root.id.as_str()))
        .map(|m| m.pipeline.clone())
        .collect();
    let mut sinks = BTreeMap::new();
    for p in &t.passages {
        if matches!(p.place, Place::Sink(_)) && !matches!(p.outcome, Outcome::Failed(_)) {
            sinks
                .entry(format!("{}/{}", p.pipeline, p.point))
                .or_insert_with(|| (p.headers.clone(), p.body.clone()));
        }
    }
    Summary {
        outcome,
        routed,
        sinks,
    }
}

/// Every difference between the baseline's trace `a` and the candidate's `b`.
fn compare(pipeline: &str, a: &Trace, b: &Trace) -> Vec<String> {
    let (a, b) = (summary(pipeline, a), summary(pipeline, b));
    let mut out = Vec::new();
    if a.outcome != b.outcome {
        out.push(format!("outcome: {} → {}", a.outcome, b.outcome));
    }
    if a.routed != b.routed {
        let list = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(", ");
        out.push(format!(
            "routed to: [{}] → [{}]",
            list(&a.routed),
            list(&b.routed)
        ));
    }
    let points: BTreeSet<&String> = a.sinks.keys().chain(b.sinks.keys()).collect();
    for point in points {
        match (a.sinks.get(point), b.sinks.get(point)) {
            (Some(_), None) => out.push(format!("{point}: reached → not reached")),
            (None, Some(_)) => out.push(format!("{point}: not reached → reached")),
            (Some((ha, ba)), Some((hb, bb))) => {
                let names: BTreeSet<&String> = ha.keys().chain(hb.keys()).collect();
                for n in names {
                    // The routed copy's id differs from engine to engine, never its target.
                    if n == "huizhen-routed-to" {
                        continue;
                    }
                    let (x, y) = (ha.get(n), hb.get(n));
                    if x != y {
                        let shown = |v: Option<&String>| {
                            v.map_or("absent".to_owned(), |v| format!("{v:?}"))
                        };
                        out.push(format!(
                            "{point}: header {n:?}: {} → {}",
                            shown(x),
                            shown(y)
                        ));
                    }
                }
                if ba != bb {
                    out.push(format!(
                        "{point}: body (- baseline, + candidate):\n{}",
                        diff(&readable(ba), &readable(bb))
                    ));
                }
            }
            (None, None) => {}
        }
    }
    out
}

/// A body for a line diff: pretty JSON, or its text with segment ends as lines.
fn readable(body: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(body)
            .replace("\r\n", "\n")
            .replace('\r', "\n"),
    }
}
