//! `GET /api/consultations/events`: the live stream of consultation changes (Server-Sent
//! Events), one event per stored consultation event the caller may see:
//!
//! ```text
//! id: 42
//! event: consultation
//! data: {"seq":42,"consultation":"0196…","version":5,"type":"accepted","state":"scheduled","at":1772438460000,"actor":"E1","role":"expert"}
//! ```
//!
//! No patient data travels on the stream: a client reads the consultation itself
//! (`GET /api/consultations/{id}`, audited) when a change concerns it.
//!
//! **Once each, in order, resumable.** The stream reads the changes from the store after its
//! cursor (`seq`), oldest first, filtered by the caller's facility scope; a commit wakes it
//! (the store's broadcast, subscribed before the first read so no wake-up is lost), and it also
//! looks every few seconds for changes committed by other engine processes. `id:` is the
//! `seq`, so a client that reconnects with `Last-Event-ID: 42` gets exactly what it missed;
//! without the header the stream starts at the current end.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::super::*;
use super::{WfError, workflow};
use crate::store::consultations::StreamChange;

/// How often a stream looks for changes committed by another engine process.
const POLL: Duration = Duration::from_secs(3);

/// Most changes read from the store at once.
const PAGE: i64 = 200;

/// One subscriber's position.
struct Feed {
    store: Store,
    scope: Option<Vec<String>>,
    cursor: i64,
    wake: broadcast::Receiver<i64>,
    buffer: VecDeque<StreamChange>,
    stop: CancellationToken,
}

fn sse_event(c: &StreamChange) -> Event {
    let data = serde_json::to_string(c).unwrap_or_else(|_| "{}".into());
    Event::default()
        .id(c.seq.to_string())
        .event("consultation")
        .data(data)
}

impl Feed {
    /// The next change, waiting for one; `None` once the engine stops.
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Feed)> {
        loop {
            if let Some(c) = self.buffer.pop_front() {
                self.cursor = c.seq;
                return Some((Ok(sse_event(&c)), self));
            }
            match self
                .store
                .consultation_changes(self.cursor, self.scope.as_deref(), PAGE)
                .await
            {
                Ok(changes) if !changes.is_empty() => {
                    self.buffer.extend(changes);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "consultation stream: changes not read; trying again")
                }
            }
            tokio::select! {
                _ = self.stop.cancelled() => return None,
                r = self.wake.recv() => {
                    if let Err(broadcast::error::RecvError::Closed) = r {
                        return None;
                    }
                }
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

/// The position a client resumes from: `Last-Event-ID`, else the current end.
async fn start(store: &Store, headers: &HeaderMap) -> Result<i64, WfError> {
    match headers.get("last-event-id") {
        Some(v) => {
            let text = v.to_str().unwrap_or("").trim();
            text.parse::<i64>().map_err(|_| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("Last-Event-ID: {text:?} is not a stream position"),
                )
                .into()
            })
        }
        None => Ok(store.consultation_last_seq().await?),
    }
}

pub(in crate::http) async fn events(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, WfError> {
    let wf = workflow(&s)?;
    let store = wf.store().clone();
    // Subscribed before the first read: a commit between the two still wakes the stream.
    let wake = store.subscribe_consultations();
    let cursor = start(&store, &headers).await?;
    audit(
        &s.store,
        &caller.event(
            "consultation.stream",
            "Consultation",
            "",
            "success",
            format!("from position {cursor}"),
        ),
    )
    .await?;
    let feed = Feed {
        store,
        scope: caller.scope.facilities(),
        cursor,
        wake,
        buffer: VecDeque::new(),
        stop: wf.stopping(),
    };
    let stream = futures::stream::unfold(feed, Feed::next);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
