//! `GET /ws/signal`: the WebSocket signaling endpoint (docs/media.md). The first message must
//! be `join` with the room token (within 10 s); then offers, answers, candidates, restarts,
//! state and leave. Frames larger than `media.max_message_bytes` close the connection;
//! messages beyond `media.messages_per_second` (burst: twice that) are refused with
//! `rate-limited`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use huizhen_core::http::AppState;
use tokio::sync::mpsc;

use crate::hub::Hub;
use crate::protocol::{ClientMsg, ServerMsg};

/// The engine's hub, made on first use from the engine's `media:` block and room-token keys.
pub fn hub(s: &AppState) -> Result<Arc<Hub>, String> {
    if let Some(h) = s.extensions.get::<Hub>() {
        h.start_quality();
        return Ok(h);
    }
    // Read outside `get_or_try_init`, which holds the extensions' lock while it makes the hub.
    let cfg = s
        .extensions
        .get::<huizhen_core::media::MediaConfig>()
        .map(|c| (*c).clone())
        .unwrap_or_default();
    let tokens = s
        .extensions
        .get::<huizhen_core::security::RoomTokens>()
        .ok_or("room tokens are not available in this engine")?;
    let objects = s.extensions.get::<huizhen_core::objects::ObjectStore>();
    let h = s.extensions.get_or_try_init(|| {
        let hub = Hub::new(cfg, s.store.clone(), (*tokens).clone());
        Ok::<_, String>(match objects {
            Some(o) => hub.with_objects(o),
            None => hub,
        })
    })?;
    h.start_quality();
    Ok(h)
}

pub async fn ws_signal(
    State(s): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    let hub = match hub(&s) {
        Ok(h) => h,
        Err(e) => {
            return (axum::http::StatusCode::SERVICE_UNAVAILABLE, e).into_response();
        }
    };
    let max = hub.config().max_message_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| run(hub, socket, addr.ip().to_string()))
}

/// A token bucket: `rate` per second, `2 × rate` burst.
struct Bucket {
    tokens: f64,
    rate: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate)
            .min(self.rate * 2.0);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn text(msg: &ServerMsg) -> Message {
    Message::Text(serde_json::to_string(msg).unwrap_or_default().into())
}

fn parse(t: &str) -> Result<ClientMsg, ServerMsg> {
    serde_json::from_str(t).map_err(|e| {
        ServerMsg::error(
            "bad-message",
            format!("line {} column {}: {e}", e.line(), e.column()),
        )
    })
}

async fn run(hub: Arc<Hub>, socket: WebSocket, source: String) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<ServerMsg>();
    // The writer: everything for this connection, in order; a fatal error closes it.
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let fatal = matches!(m, ServerMsg::Error { fatal: true, .. });
            if sink.send(text(&m)).await.is_err() || fatal {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut bucket = Bucket {
        tokens: f64::from(hub.config().messages_per_second) * 2.0,
        rate: f64::from(hub.config().messages_per_second),
        at: Instant::now(),
    };
    // The first message: join.
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
    let joined = match first {
        Ok(Some(Ok(Message::Text(t)))) => match parse(&t) {
            Ok(ClientMsg::Join {
                room,
                token,
                resume,
            }) => {
                hub.join(&room, &token, resume.as_deref(), &source, tx.clone())
                    .await
            }
            Ok(_) => Err(ServerMsg::fatal(
                "join-first",
                "the first message must be join",
            )),
            Err(e) => Err(match e {
                ServerMsg::Error { message, .. } => ServerMsg::fatal("bad-message", message),
                other => other,
            }),
        },
        Ok(_) => Err(ServerMsg::fatal(
            "join-first",
            "the first message must be a join text frame",
        )),
        Err(_) => Err(ServerMsg::fatal("join-timeout", "no join within 10 s")),
    };
    let (room, session, link) = match joined {
        Ok(j) => j,
        Err(fatal) => {
            let _ = tx.send(fatal);
            drop(tx);
            let _ = writer.await;
            return;
        }
    };
    let mut left = false;
    while let Some(frame) = stream.next().await {
        let t = match frame {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(Message::Binary(_)) => {
                let _ = tx.send(ServerMsg::error(
                    "bad-message",
                    "binary frames are not used",
                ));
                continue;
            }
            Ok(_) => continue,
        };
        if !bucket.take() {
            let _ = tx.send(ServerMsg::error(
                "rate-limited",
                format!(
                    "more than {} messages per second; this one was dropped",
                    hub.config().messages_per_second
                ),
            ));
            continue;
        }
        let msg = match parse(&t) {
            Ok(m) => m,
            Err(e) => {
                let _ = tx.send(e);
                continue;
            }
        };
        let leaving = matches!(msg, ClientMsg::Leave);
        if let Some(reply) = hub.handle(&room, &session, msg).await {
            let _ = tx.send(reply);
        }
        if leaving {
            left = true;
            break;
        }
    }
    if !left {
        hub.disconnected(&room, &session, link).await;
    }
    drop(tx);
    writer.abort();
}
