//! `mqtt`: subscribe to topic filters on an MQTT broker (3.1.1 or 5) into a pipeline.
//!
//! ```yaml
//! source:
//!   mqtt:
//!     url: mqtt://127.0.0.1:1883        # mqtts://host:8883 for TLS
//!     protocol: "5"                     # "3.1.1" (default) or "5"
//!     client_id: huizhen-devices        # the persistent session is bound to it: keep it stable
//!     topics: ["clinic/+/vitals", "home/#"]
//!     qos: 1                            # 1 (default) or 2; 0 has no ack and no redelivery
//!     session_expiry: 7d                # MQTT 5: how long the broker keeps the session
//!     username: ${MQTT_USER}
//!     password: ${MQTT_PASSWORD}
//!     tls: { ca: hospital-ca.pem, cert: engine.pem, key: engine.key }
//!     inflight: 64                      # MQTT 5 receive maximum
//!     dedup: auto                       # auto | correlation | none
//!     kind: json                        # message kind (default json)
//! ```
//!
//! **Acks after the commit.** The session is persistent (3.1.1 `clean_session = false`, 5
//! `clean_start = false` with `session_expiry`), so what the gateways publish while the engine
//! is down waits on the broker and arrives when it connects again. Acks are manual: each PUBLISH
//! is journaled, and only then answered — PUBACK for QoS 1, PUBREC for QoS 2 (the broker's
//! PUBREL is then answered with PUBCOMP) — in the order the broker sent them (3.1.1 §4.6). A
//! journal that cannot take a reading (backlog limit, database down) is asked again with
//! backoff; the reading stays unacknowledged on the broker meanwhile. A crash or a lost
//! connection before the ack makes the broker send it again.
//!
//! **Dedup.** A redelivered reading must not be processed twice, so each message carries a
//! dedup key: with `dedup: auto` (default) the MQTT 5 correlation data when the publisher set
//! it (`mqtt-corr:<hex>`), otherwise a SHA-256 of topic and payload (`mqtt:<hex>`: a reading
//! carries its device and measurement time, so the same bytes on the same topic are the same
//! reading). `correlation` uses only the correlation data (the pipeline's `dedup.key`
//! expression then applies to the others, e.g. a reading id in the payload); `none` sets no key.
//!
//! Headers: `mqtt-topic`, `mqtt-qos`, `mqtt-retain`, `mqtt-dup`, and for MQTT 5
//! `content-type`, `mqtt-correlation` (hex) and `mqtt-up-<name>` per user property.

use std::time::Duration;

use futures::future::BoxFuture;
use huizhen_core::config::duration;
use huizhen_core::message::NewMessage;
use huizhen_core::runner::{BuildContext, PipelineHandle};
use huizhen_core::sources::{Source, SourceConfig, SourceContext};
use huizhen_core::tls::ClientTlsConfig;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{BrokerConfig, Client, Event, Incoming, Protocol, Qos};

/// `source: { mqtt: {…} }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSourceConfig {
    /// `mqtt://host:port` or `mqtts://host:port`.
    pub url: String,
    /// `"3.1.1"` (default) or `"5"`.
    #[serde(default)]
    pub protocol: Protocol,
    /// The client id the persistent session is bound to.
    pub client_id: String,
    /// Topic filters (`+` one level, `#` the rest), at least one.
    pub topics: Vec<String>,
    /// Subscription QoS: 1 (default) or 2.
    #[serde(default = "one")]
    pub qos: u8,
    /// MQTT 5 session expiry interval (default 7d); 3.1.1 sessions last until the broker drops
    /// them.
    #[serde(default = "week", with = "duration")]
    pub session_expiry: Duration,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// TLS for `mqtts://` (`ca`, `cert` + `key`).
    #[serde(default)]
    pub tls: Option<ClientTlsConfig>,
    /// Keep-alive interval (default 30s).
    #[serde(default = "thirty", with = "duration")]
    pub keep_alive: Duration,
    /// Unacknowledged readings at once (MQTT 5 receive maximum; 3.1.1 brokers set their own).
    #[serde(default = "sixty_four")]
    pub inflight: u16,
    /// `auto` (default), `correlation` or `none`: see the module docs.
    #[serde(default)]
    pub dedup: Dedup,
    /// The message kind (default `json`).
    #[serde(default = "json")]
    pub kind: String,
}

/// Where a message's dedup key comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dedup {
    #[default]
    Auto,
    Correlation,
    None,
}

fn one() -> u8 {
    1
}
fn week() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn thirty() -> Duration {
    Duration::from_secs(30)
}
fn sixty_four() -> u16 {
    64
}
fn json() -> String {
    "json".into()
}

impl MqttSourceConfig {
    pub fn broker(&self) -> BrokerConfig {
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
impl SourceConfig for MqttSourceConfig {
    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn Source>, String> {
        self.broker().check()?;
        if self.topics.is_empty() {
            return Err("topics: at least one topic filter is needed".into());
        }
        for (i, t) in self.topics.iter().enumerate() {
            crate::check_filter(t).map_err(|e| format!("topics[{i}]: {e}"))?;
        }
        let qos = Qos::from_level(self.qos)?;
        if qos == Qos::AtMostOnce {
            return Err("qos: 0 has no acknowledgement and no redelivery; readings sent while the engine is down would be lost (use 1 or 2)".into());
        }
        if self.inflight == 0 {
            return Err("inflight: must be at least 1".into());
        }
        if self.keep_alive < Duration::from_secs(5) {
            return Err("keep_alive: at least 5s".into());
        }
        if self.kind.trim().is_empty() {
            return Err("kind: must not be empty".into());
        }
        Ok(Box::new(MqttSource {
            config: self.clone(),
            qos,
        }))
    }
}

struct MqttSource {
    config: MqttSourceConfig,
    qos: Qos,
}

impl Source for MqttSource {
    fn describe(&self) -> String {
        format!("mqtt {} {}", self.config.url, self.config.topics.join(" "))
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async move {
            let mut attempt = 0u32;
            loop {
                let started = std::time::Instant::now();
                let r = session(&self.config, self.qos, &ctx.pipeline, &ctx.shutdown).await;
                match r {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        if started.elapsed() > Duration::from_secs(30) {
                            attempt = 0;
                        }
                        let wait = crate::backoff(attempt);
                        attempt += 1;
                        tracing::warn!(pipeline = ctx.pipeline.name(), url = %self.config.url, error = %e, retry_in = ?wait, "MQTT connection lost; reconnecting");
                        tokio::select! {
                            _ = ctx.shutdown.cancelled() => return Ok(()),
                            _ = tokio::time::sleep(wait) => {}
                        }
                    }
                }
            }
        })
    }
}

/// A reading on its way: its journal task, and the PUBLISH to ack once that task committed.
type Pending = (tokio::task::JoinHandle<bool>, Incoming);

/// One connection: subscribe, journal and ack, until the connection fails (Err) or shutdown.
async fn session(
    cfg: &MqttSourceConfig,
    qos: Qos,
    pipeline: &PipelineHandle,
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let (client, mut events) =
        crate::connect(&cfg.broker(), true, cfg.session_expiry, true, cfg.inflight)?;
    // The acker: acks in the order the broker sent, each once its reading is committed. It
    // ends when this connection does; what it had not acked the broker sends again.
    let (tx, rx) = mpsc::unbounded_channel::<Pending>();
    let gone = CancellationToken::new();
    let acker = tokio::spawn(ack_in_order(client.clone(), rx, gone.clone()));
    let _stop_acker = gone.clone().drop_guard();
    loop {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => {
                // Let the readings already taken be committed and acked, briefly.
                drop(tx);
                let _ = tokio::time::timeout(Duration::from_secs(3), acker).await;
                client.disconnect().await;
                let _ = tokio::time::timeout(Duration::from_millis(500), async {
                    while events.poll().await.is_ok() {}
                }).await;
                return Ok(());
            }
            ev = events.poll() => ev?,
        };
        match ev {
            Event::Connected { session_present } => {
                tracing::info!(pipeline = pipeline.name(), url = %cfg.url, session_present, "MQTT connected");
                let c = client.clone();
                let topics = cfg.topics.clone();
                tokio::spawn(async move {
                    if let Err(e) = c.subscribe(&topics, qos).await {
                        tracing::warn!(error = %e, "MQTT subscribe not sent");
                    }
                });
            }
            Event::Publish(m) => {
                let msg = to_message(cfg, pipeline, &m);
                let p = pipeline.clone();
                let stop = gone.clone();
                let task = tokio::spawn(journal(p, msg, stop));
                if m.qos == Qos::AtMostOnce {
                    continue;
                }
                if tx.send((task, *m)).is_err() {
                    return Err("the acker stopped".into());
                }
            }
            _ => {}
        }
    }
}

/// Journals one reading, asking again with backoff while the journal cannot take it. Returns
/// whether it was committed (false: the connection ended first; the broker sends it again).
async fn journal(p: PipelineHandle, m: NewMessage, stop: CancellationToken) -> bool {
    let mut wait = Duration::from_millis(200);
    loop {
        match p.submit(m.clone()).await {
            Ok(_) => return true,
            Err(e) => {
                if e.is_backlog() {
                    tracing::warn!(pipeline = p.name(), error = %e, "backlog limit reached; MQTT reading left unacknowledged");
                } else {
                    tracing::error!(pipeline = p.name(), error = %e, "MQTT reading not journaled; trying again");
                }
                tokio::select! {
                    _ = stop.cancelled() => return false,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn ack_in_order(
    client: Client,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    gone: CancellationToken,
) {
    while let Some((task, m)) = rx.recv().await {
        let committed = tokio::select! {
            _ = gone.cancelled() => return,
            r = task => r.unwrap_or(false),
        };
        if !committed {
            return;
        }
        if let Err(e) = client.ack(&m).await {
            // Journaled: the broker sends it again and the dedup key catches the copy.
            tracing::warn!(error = %e, "MQTT ack not sent after the journal commit");
            return;
        }
    }
}

/// The dedup key of a reading (see the module docs).
pub fn dedup_key(mode: Dedup, topic: &str, payload: &[u8], corr: Option<&[u8]>) -> Option<String> {
    match (mode, corr) {
        (Dedup::None, _) => None,
        (_, Some(c)) if !c.is_empty() => Some(format!("mqtt-corr:{}", hex::encode(c))),
        (Dedup::Correlation, _) => None,
        (Dedup::Auto, _) => {
            let mut h = Sha256::new();
            h.update(topic.as_bytes());
            h.update([0u8]);
            h.update(payload);
            Some(format!("mqtt:{}", hex::encode(h.finalize())))
        }
    }
}

fn to_message(cfg: &MqttSourceConfig, pipeline: &PipelineHandle, m: &Incoming) -> NewMessage {
    let mut n = NewMessage::new(
        pipeline.name(),
        pipeline.facility(),
        &cfg.kind,
        m.payload.to_vec(),
    );
    n.source = format!("mqtt {}", cfg.url);
    n.headers.insert("mqtt-topic".into(), m.topic.clone());
    n.headers
        .insert("mqtt-qos".into(), crate::qos_level(m.qos).to_string());
    n.headers.insert("mqtt-retain".into(), m.retain.to_string());
    n.headers.insert("mqtt-dup".into(), m.dup.to_string());
    if let Some(ct) = &m.content_type {
        n.headers.insert("content-type".into(), ct.clone());
    }
    if let Some(c) = &m.correlation {
        n.headers.insert("mqtt-correlation".into(), hex::encode(c));
    }
    for (k, v) in &m.user_properties {
        let name: String = k
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        if k == "traceparent" {
            n.set_traceparent(v);
        }
        n.headers.insert(format!("mqtt-up-{name}"), v.clone());
    }
    n.dedup_key = dedup_key(cfg.dedup, &m.topic, &m.payload, m.correlation.as_deref());
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_keys() {
        let a = dedup_key(Dedup::Auto, "t/1", b"{}", None).unwrap();
        assert!(a.starts_with("mqtt:"));
        assert_eq!(Some(a.clone()), dedup_key(Dedup::Auto, "t/1", b"{}", None));
        assert_ne!(Some(a), dedup_key(Dedup::Auto, "t/2", b"{}", None));
        assert_eq!(
            dedup_key(Dedup::Auto, "t", b"x", Some(b"\x01\xff")).as_deref(),
            Some("mqtt-corr:01ff")
        );
        assert_eq!(dedup_key(Dedup::Correlation, "t", b"x", None), None);
        assert_eq!(dedup_key(Dedup::None, "t", b"x", Some(b"c")), None);
    }
}
