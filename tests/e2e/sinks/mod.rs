//! The `http`, `file` and `sql` sinks against real counterparts the tests start: an HTTP server
//! in this process (`Receiver`), temporary folders, SQLite, PostgreSQL and MariaDB/MySQL
//! (`MYSQL_URL`, default `mysql://root@127.0.0.1:3306`; skipped when absent, except under CI).
//! `http`: delivery with templates, auth and the idempotency key; 4xx dead with the answer;
//! timeouts, 503 and 429 retried after their `Retry-After`. `file`: atomic, written once, HL7
//! batch files, never over another file. `sql`: one transaction per message, redelivery writes
//! nothing twice, a failing statement rolls the message back. `crash`: the real binary killed
//! (`kill -9`) in the middle of a delivery through all three, restarted: one effect each.

mod crash;
mod file;
mod http;
mod sql;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use huizhen_core::Engine;
use huizhen_core::message::{Message, NewMessage, State};

/// A request the receiver saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query as sent.
    pub target: String,
    /// Lowercase names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
}

/// How the receiver answers the next request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Status, headers, body.
    Answer(u16, Vec<(&'static str, String)>, String),
    /// Answers 200 after this long (longer than the sink's timeout: a timeout).
    Slow(Duration),
    /// Never answers (until the process that sent it is gone).
    Hang,
}

#[derive(Default)]
struct Inner {
    seen: Vec<Seen>,
    script: VecDeque<Reply>,
}

/// An HTTP server on loopback that records every request and answers from a script (then 200).
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let inner: Arc<Mutex<Inner>> = Arc::default();
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, inner }
    }

    /// The answers to the next requests, in order.
    pub fn script(&self, replies: Vec<Reply>) {
        self.inner.lock().unwrap().script.extend(replies);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.inner.lock().unwrap().seen.clone()
    }
}

async fn receive(
    AxumState(inner): AxumState<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let mut g = inner.lock().unwrap();
        g.seen.push(Seen {
            method: method.to_string(),
            target: uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        v.to_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect(),
            body: body.to_vec(),
            at: Instant::now(),
        });
        g.script.pop_front()
    };
    match reply {
        None => (StatusCode::OK, "ok").into_response(),
        Some(Reply::Answer(status, headers, body)) => {
            let mut r = (StatusCode::from_u16(status).unwrap(), body).into_response();
            for (k, v) in headers {
                r.headers_mut().insert(k, v.parse().unwrap());
            }
            r
        }
        Some(Reply::Slow(d)) => {
            tokio::time::sleep(d).await;
            (StatusCode::OK, "late").into_response()
        }
        Some(Reply::Hang) => std::future::pending().await,
    }
}

/// A JSON message with headers, for `submit`.
pub fn json(body: &str, headers: &[(&str, &str)]) -> NewMessage {
    let mut m = NewMessage::new("", "", "json", body.as_bytes().to_vec());
    m.headers = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    m
}

/// Waits until message `id` is in `state`.
pub async fn settled(engine: &Engine, id: &str, state: State) -> Message {
    crate::support::wait_for(
        &format!("message {id} {}", state.as_str()),
        Duration::from_secs(60),
        || async {
            let m = engine.store.get(id).await.unwrap()?;
            (m.state == state).then_some(m)
        },
    )
    .await
}

/// Reprocesses a done message and waits until it is done again: a redelivery. (The reprocess
/// has made it `received` when it returns, so the next `done` seen is the new one.)
pub async fn redeliver(engine: &Engine, id: &str) -> Message {
    let again = engine.store.reprocess(id).await.unwrap();
    assert_eq!(again.state, State::Received);
    engine.wake_scheduler();
    settled(engine, id, State::Done).await
}
