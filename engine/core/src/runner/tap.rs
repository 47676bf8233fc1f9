//! Taps: who watches messages pass a pipeline's steps and reach its sinks. `huizhen test`
//! checks what it sees, `huizhen tap` (and `GET /api/tap`) streams it live.
//!
//! A worker reports a [`Passage`] after each step and at each sink, only while a tap is open
//! (one atomic load otherwise). A live tap has a bounded queue: when its reader falls behind,
//! passages are dropped and counted, never waited for, so a slow terminal never slows the
//! pipeline.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::work::Work;

/// A message at one point of a pipeline: after a step, or as a sink gets it.
#[derive(Debug, Clone, Serialize)]
pub struct Passage {
    pub pipeline: String,
    pub message_id: String,
    /// The message's trace: the id of the message a route started from (its own id otherwise).
    pub trace_id: String,
    /// The step's label (`filter#0`) or the sink's name (`journal#0`).
    pub point: String,
    pub place: Place,
    pub outcome: Outcome,
    pub kind: String,
    pub headers: BTreeMap<String, String>,
    #[serde(skip)]
    pub body: Vec<u8>,
    /// When (ms since the epoch).
    pub at: i64,
}

/// Where in the pipeline a passage was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "index")]
pub enum Place {
    /// After `steps[i]`.
    Step(usize),
    /// As `sinks[i]` got it.
    Sink(usize),
}

/// What the step or sink made of the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result", content = "detail")]
pub enum Outcome {
    /// The next step follows.
    Continue,
    /// The step ended the message here (a filter, a route without `continue`): the reason.
    Stop(String),
    /// The step or sink failed: the error (retried or dead-lettered as the pipeline says).
    Failed(String),
    /// The sink delivered it.
    Delivered,
    /// A dry run: the sink was not called.
    NotDelivered,
}

/// One open tap.
struct Entry {
    id: u64,
    pipeline: Option<String>,
    point: Option<String>,
    tx: mpsc::Sender<Passage>,
    dropped: Arc<AtomicU64>,
}

/// The engine's taps. Cheap to clone.
#[derive(Clone, Default)]
pub struct Taps {
    entries: Arc<RwLock<Vec<Entry>>>,
    open: Arc<AtomicUsize>,
    next: Arc<AtomicU64>,
}

impl std::fmt::Debug for Taps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Taps({} open)", self.open.load(Ordering::Relaxed))
    }
}

/// An open tap: passages arrive on `rx`; dropping it closes the tap.
pub struct Tap {
    pub rx: mpsc::Receiver<Passage>,
    dropped: Arc<AtomicU64>,
    id: u64,
    taps: Taps,
}

impl Tap {
    /// Passages dropped because the reader was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let mut e = self.taps.entries.write().unwrap_or_else(|p| p.into_inner());
        e.retain(|t| t.id != self.id);
        self.taps.open.store(e.len(), Ordering::Release);
    }
}

impl Taps {
    /// Opens a tap on `pipeline` (every pipeline when `None`) at `point` (a step label or
    /// sink name such as `filter#0`; every point when `None`), keeping up to `capacity`
    /// passages the reader has not taken.
    pub fn open(&self, pipeline: Option<&str>, point: Option<&str>, capacity: usize) -> Tap {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let dropped = Arc::new(AtomicU64::new(0));
        let mut e = self.entries.write().unwrap_or_else(|p| p.into_inner());
        e.push(Entry {
            id,
            pipeline: pipeline.map(str::to_owned),
            point: point.map(str::to_owned),
            tx,
            dropped: dropped.clone(),
        });
        self.open.store(e.len(), Ordering::Release);
        Tap {
            rx,
            dropped,
            id,
            taps: self.clone(),
        }
    }

    /// Whether any tap is open (the workers' one check when none is).
    pub fn any(&self) -> bool {
        self.open.load(Ordering::Acquire) > 0
    }

    /// Reports a passage to the taps that watch it; builds it only if one does.
    pub(crate) fn report(
        &self,
        pipeline: &str,
        point: &str,
        place: Place,
        outcome: impl FnOnce() -> Outcome,
        work: &mut Work,
    ) {
        if !self.any() {
            return;
        }
        let e = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let watching: Vec<&Entry> = e
            .iter()
            .filter(|t| t.pipeline.as_deref().is_none_or(|p| p == pipeline))
            .filter(|t| t.point.as_deref().is_none_or(|p| p == point))
            .collect();
        if watching.is_empty() {
            return;
        }
        let passage = Passage {
            pipeline: pipeline.to_owned(),
            message_id: work.id.to_string(),
            trace_id: work.trace_id.clone(),
            point: point.to_owned(),
            place,
            outcome: outcome(),
            kind: work.kind.clone(),
            headers: work.headers.clone(),
            body: work.body().to_vec(),
            at: crate::message::now_ms(),
        };
        for t in watching {
            if t.tx.try_send(passage.clone()).is_err() {
                t.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::NewMessage;

    fn work() -> Work {
        let m = NewMessage::new("p", "f", "json", b"{\"a\":1}".to_vec());
        Work::from_message(&m.preview())
    }

    #[tokio::test]
    async fn a_tap_sees_only_its_pipeline_and_point_and_closes_on_drop() {
        let taps = Taps::default();
        assert!(!taps.any());
        let mut all = taps.open(None, None, 8);
        let mut one = taps.open(Some("p"), Some("filter#0"), 8);
        let mut w = work();
        taps.report(
            "p",
            "filter#0",
            Place::Step(0),
            || Outcome::Continue,
            &mut w,
        );
        taps.report("p", "set#1", Place::Step(1), || Outcome::Continue, &mut w);
        taps.report(
            "q",
            "filter#0",
            Place::Step(0),
            || Outcome::Continue,
            &mut w,
        );
        assert_eq!(all.rx.try_recv().unwrap().point, "filter#0");
        assert_eq!(all.rx.try_recv().unwrap().point, "set#1");
        assert_eq!(all.rx.try_recv().unwrap().pipeline, "q");
        let p = one.rx.try_recv().unwrap();
        assert_eq!((p.pipeline.as_str(), p.point.as_str()), ("p", "filter#0"));
        assert_eq!(p.body, b"{\"a\":1}");
        assert!(one.rx.try_recv().is_err());
        drop(all);
        drop(one);
        assert!(!taps.any());
    }

    #[tokio::test]
    async fn a_slow_reader_loses_passages_and_they_are_counted() {
        let taps = Taps::default();
        let tap = taps.open(None, None, 2);
        let mut w = work();
        for _ in 0..5 {
            taps.report("p", "log#0", Place::Step(0), || Outcome::Continue, &mut w);
        }
        assert_eq!(tap.dropped(), 3);
    }
}
