//! `GET /api/pipelines/history`: what the console's dashboard charts. Every
//! [`SAMPLE_EVERY`] this node samples, per pipeline, its counters (received, done, failed,
//! dead: this process's, as `/metrics` has them) and its queue depth (the journal's unfinished
//! messages, every node's; and this node's in-memory queue), and keeps the last
//! [`KEPT`] samples (an hour) in memory. The answer gives per pipeline of the caller's facility
//! scope a series of rates per second and depths.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use super::*;

/// How often the dashboard's series are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How many samples are kept (an hour).
pub const KEPT: usize = 720;

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    received: u64,
    done: u64,
    failed: u64,
    dead: u64,
    backlog: i64,
    in_memory: usize,
}

#[derive(Debug, Clone)]
struct Sample {
    at: i64,
    pipelines: BTreeMap<String, Counts>,
}

/// The samples of this engine.
#[derive(Debug, Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    fn push(&self, s: Sample) {
        let mut q = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= KEPT {
            q.pop_front();
        }
        q.push_back(s);
    }

    /// The series of `pipeline` over the last `minutes`: one point per sample after the first,
    /// each with the rates per second since the sample before and the depths at it.
    fn series(&self, pipeline: &str, since: i64) -> Vec<serde_json::Value> {
        let q = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        let mut prev: Option<(i64, Counts)> = None;
        for s in q.iter() {
            let Some(c) = s.pipelines.get(pipeline).copied() else {
                prev = None;
                continue;
            };
            if let Some((at, p)) = prev
                && s.at >= since
            {
                let secs = ((s.at - at) as f64 / 1000.0).max(0.001);
                let rate =
                    |a: u64, b: u64| (a.saturating_sub(b) as f64 / secs * 100.0).round() / 100.0;
                out.push(json!({
                    "at": s.at,
                    "received_per_s": rate(c.received, p.received),
                    "done_per_s": rate(c.done, p.done),
                    "failed_per_s": rate(c.failed, p.failed),
                    "dead_per_s": rate(c.dead, p.dead),
                    "backlog": c.backlog,
                    "in_memory": c.in_memory,
                }));
            }
            prev = Some((s.at, c));
        }
        out
    }
}

/// Samples every [`SAMPLE_EVERY`] until the engine shuts down.
pub(super) async fn sample(state: AppState, history: Arc<History>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let pipelines = state.pipelines.snapshot();
        let names: Vec<String> = pipelines.keys().cloned().collect();
        let backlog = match state.store.backlog_of(&names).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::debug!(error = %e, "dashboard sample: backlog not available");
                Vec::new()
            }
        };
        let mut sample = Sample {
            at: crate::message::now_ms(),
            pipelines: BTreeMap::new(),
        };
        for (name, handle) in pipelines.iter() {
            let [received, done, failed, dead] = state.metrics.totals(name);
            sample.pipelines.insert(
                name.clone(),
                Counts {
                    received,
                    done,
                    failed,
                    dead,
                    backlog: backlog
                        .iter()
                        .find(|r| &r.pipeline == name)
                        .map_or(0, |r| r.messages),
                    in_memory: handle.queue_depth(),
                },
            );
        }
        history.push(sample);
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct HistoryQuery {
    minutes: Option<u32>,
}

/// `GET /api/pipelines/history?minutes=15`: the series of the caller's pipelines.
pub(super) async fn pipeline_history(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let minutes = q.minutes.unwrap_or(15);
    if !(1..=60).contains(&minutes) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("minutes {minutes} is out of range 1..=60 (an hour is kept)"),
        ));
    }
    let Some(history) = s.extensions.get::<History>() else {
        return Ok(Json(
            json!({ "interval_seconds": SAMPLE_EVERY.as_secs(), "pipelines": [] }),
        ));
    };
    let since = crate::message::now_ms() - i64::from(minutes) * 60_000;
    let list: Vec<serde_json::Value> = s
        .pipelines
        .snapshot()
        .values()
        .filter(|p| caller.scope.allows(p.facility()))
        .map(|p| json!({ "pipeline": p.name(), "facility": p.facility(), "points": history.series(p.name(), since) }))
        .collect();
    Ok(Json(json!({
        "interval_seconds": SAMPLE_EVERY.as_secs(),
        "pipelines": list,
    })))
}
