//! `mqtt`: publish each message to an MQTT broker (alerts back to a clinic dashboard).
//!
//! ```yaml
//! sinks:
//!   - mqtt:
//!       url: mqtt://127.0.0.1:1883
//!       protocol: "5"
//!       client_id: huizhen-alerts        # unique per engine and sink
//!       topic: clinic/alerts             # or topic_header: alert-topic (a header of the message)
//!       qos: 1                           # 1 (default) or 2
//!       retain: false
//!       ack_timeout: 10s
//!       username: ${MQTT_USER}
//!       password: ${MQTT_PASSWORD}
//!       tls: { ca: hospital-ca.pem }
//! ```
//!
//! One publish at a time per sink: the step succeeds only when the broker has acked it (PUBACK
//! for QoS 1, PUBCOMP for QoS 2); a refused publish (MQTT 5 reason code), a lost connection or
//! no ack within `ack_timeout` is a retryable error, so the journal tries again with backoff.
//! MQTT has no idempotency key a broker checks, so a retry after a lost ack can deliver twice:
//! with MQTT 5 each publish carries the journal's message id as correlation data and as the
//! user property `message-id`, for the receiver to drop the copy. The payload is the body as is;
//! MQTT 5 adds `content-type` from the message kind.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use huizhen_core::config::duration;
use huizhen_core::runner::BuildContext;
use huizhen_core::sinks::{Sink, SinkConfig};
use huizhen_core::store::Effect;
use huizhen_core::tls::ClientTlsConfig;
use huizhen_core::work::{StepError, Work};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use crate::{BrokerConfig, Client, Event, EventLoop, Protocol, Qos};

/// `- mqtt: {…}` in `sinks:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSinkConfig {
    pub url: String,
    #[serde(default)]
    pub protocol: Protocol,
    pub client_id: String,
    /// The topic to publish to; or `topic_header`.
    #[serde(default)]
    pub topic: Option<String>,
    /// A header of the message whose value is the topic (e.g. set by a `set` step).
    #[serde(default)]
    pub topic_header: Option<String>,
    /// 1 (default) or 2.
    #[serde(default = "one")]
    pub qos: u8,
    #[serde(default)]
    pub retain: bool,
    /// No ack by then: a retryable failure (default 10s).
    #[serde(default = "ten", with = "duration")]
    pub ack_timeout: Duration,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub tls: Option<ClientTlsConfig>,
    #[serde(default = "thirty", with = "duration")]
    pub keep_alive: Duration,
    /// The sink's name in effects and errors (default `mqtt#<index>`).
    #[serde(default)]
    pub name: Option<String>,
}

fn one() -> u8 {
    1
}
fn ten() -> Duration {
    Duration::from_secs(10)
}
fn thirty() -> Duration {
    Duration::from_secs(30)
}

impl MqttSinkConfig {
    fn broker(&self) -> BrokerConfig {
        BrokerConfig {
            url: self.url.clone(),
            protocol: self.protocol,
            client_id: self.client_id.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
            tls: self.tls.clone(),
            keep_alive: self.keep_alive,
        }
    }
}

#[typetag::deserialize(name = "mqtt")]
impl SinkConfig for MqttSinkConfig {
    fn build(&self, _ctx: &BuildContext, index: usize) -> Result<Arc<dyn Sink>, String> {
        self.broker().check()?;
        match (&self.topic, &self.topic_header) {
            (Some(t), None) => crate::check_topic(t)?,
            (None, Some(h)) if !h.trim().is_empty() => {}
            (None, None) => return Err("topic: give `topic` or `topic_header`".into()),
            _ => return Err("topic: give either `topic` or `topic_header`, not both".into()),
        }
        let qos = Qos::from_level(self.qos)?;
        if qos == Qos::AtMostOnce {
            return Err("qos: 0 is never acknowledged; use 1 or 2".into());
        }
        if self.ack_timeout.is_zero() {
            return Err("ack_timeout: must be more than 0".into());
        }
        Ok(Arc::new(MqttSink {
            name: self.name.clone().unwrap_or_else(|| format!("mqtt#{index}")),
            config: self.clone(),
            qos,
            conn: tokio::sync::Mutex::new(None),
        }))
    }
}

struct Request {
    topic: String,
    payload: Vec<u8>,
    message_id: String,
    content_type: Option<String>,
    done: oneshot::Sender<Result<(), String>>,
}

struct MqttSink {
    name: String,
    config: MqttSinkConfig,
    qos: Qos,
    /// The publisher task, started on the first message (building does no I/O).
    conn: tokio::sync::Mutex<Option<mpsc::Sender<Request>>>,
}

impl MqttSink {
    async fn sender(&self) -> mpsc::Sender<Request> {
        let mut g = self.conn.lock().await;
        if let Some(s) = g.as_ref().filter(|s| !s.is_closed()) {
            return s.clone();
        }
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(publisher(self.config.clone(), self.qos, rx));
        *g = Some(tx.clone());
        tx
    }
}

impl Sink for MqttSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Vec<Effect>, StepError>> {
        Box::pin(async move {
            let topic = match (&self.config.topic, &self.config.topic_header) {
                (Some(t), _) => t.clone(),
                (None, Some(h)) => {
                    let t = work.headers.get(h).cloned().unwrap_or_default();
                    crate::check_topic(&t).map_err(|e| {
                        StepError::permanent(format!("{}: header {h:?}: {e}", self.name))
                    })?;
                    t
                }
                (None, None) => unreachable!("checked at build"),
            };
            let content_type = match work.kind.as_str() {
                "json" => Some("application/json".to_owned()),
                "text" => Some("text/plain".to_owned()),
                _ => None,
            };
            let (done, answer) = oneshot::channel();
            let req = Request {
                topic: topic.clone(),
                payload: work.body().to_vec(),
                message_id: work.id.clone(),
                content_type,
                done,
            };
            let tx = self.sender().await;
            tx.send(req)
                .await
                .map_err(|_| StepError::new(format!("{}: the publisher stopped", self.name)))?;
            let wait = self.config.ack_timeout + Duration::from_secs(10);
            match tokio::time::timeout(wait, answer).await {
                Ok(Ok(Ok(()))) => Ok(vec![Effect {
                    sink: self.name.clone(),
                    pipeline: work.pipeline.clone(),
                    body: serde_json::to_vec(&serde_json::json!({
                        "topic": topic, "qos": crate::qos_level(self.qos), "acked": true,
                    }))
                    .unwrap_or_default(),
                    as_received: false,
                }]),
                Ok(Ok(Err(e))) => Err(StepError::new(format!("{}: {e}", self.name))),
                _ => Err(StepError::new(format!(
                    "{}: no answer from the publisher within {wait:?}",
                    self.name
                ))),
            }
        })
    }
}

/// Owns the connection: publishes one request at a time and waits for its ack, and keeps the
/// connection alive in between. A failed connection is opened again at the next request.
async fn publisher(cfg: MqttSinkConfig, qos: Qos, mut rx: mpsc::Receiver<Request>) {
    let mut conn: Option<(Client, EventLoop)> = None;
    loop {
        let req = match conn.as_mut() {
            None => match rx.recv().await {
                Some(r) => r,
                None => return,
            },
            Some((_, events)) => {
                tokio::select! {
                    r = rx.recv() => match r { Some(r) => r, None => return },
                    ev = events.poll() => {
                        if let Err(e) = ev {
                            tracing::debug!(error = %e, "MQTT sink connection closed");
                            conn = None;
                        }
                        continue;
                    }
                }
            }
        };
        if conn.is_none() {
            match open(&cfg).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    let _ = req.done.send(Err(e));
                    continue;
                }
            }
        }
        let Some((client, events)) = conn.as_mut() else {
            continue;
        };
        let r = tokio::time::timeout(
            cfg.ack_timeout,
            publish_one(client, events, qos, &cfg, &req),
        )
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no ack from the broker within {:?}",
                cfg.ack_timeout
            ))
        });
        if r.is_err() {
            // A fresh connection for the retry: the lost ack's state goes with the old one.
            conn = None;
        }
        let _ = req.done.send(r);
    }
}

async fn open(cfg: &MqttSinkConfig) -> Result<(Client, EventLoop), String> {
    let (client, mut events) = crate::connect(&cfg.broker(), false, Duration::ZERO, false, 16)?;
    let connected = tokio::time::timeout(cfg.ack_timeout, async {
        loop {
            if let Event::Connected { .. } = events.poll().await? {
                return Ok::<_, String>(());
            }
        }
    })
    .await;
    match connected {
        Ok(Ok(())) => Ok((client, events)),
        Ok(Err(e)) => Err(format!("cannot connect to {}: {e}", cfg.url)),
        Err(_) => Err(format!(
            "cannot connect to {} within {:?}",
            cfg.url, cfg.ack_timeout
        )),
    }
}

async fn publish_one(
    client: &Client,
    events: &mut EventLoop,
    qos: Qos,
    cfg: &MqttSinkConfig,
    req: &Request,
) -> Result<(), String> {
    client
        .publish(
            &req.topic,
            qos,
            cfg.retain,
            req.payload.clone(),
            Some(Bytes::from(req.message_id.clone().into_bytes())),
            vec![("message-id".into(), req.message_id.clone())],
            req.content_type.clone(),
        )
        .await?;
    let mut pkid = None;
    loop {
        match events.poll().await? {
            Event::Sent(p) if pkid.is_none() => pkid = Some(p),
            Event::Acked(p) if Some(p) == pkid => return Ok(()),
            Event::Refused(p, why) if Some(p) == pkid => {
                return Err(format!("the broker refused the publish: {why}"));
            }
            _ => {}
        }
    }
}
