//! MQTT 3.1.1 and 5 for Huizhen (issue 25: device readings), through rumqttc with the core's
//! rustls/ring client configuration.
//!
//! - The `mqtt` source subscribes to topic filters (`+` and `#` wildcards) with a persistent
//!   session (3.1.1: `clean_session = false`; 5: `clean_start = false` and a session expiry) and
//!   manual acknowledgements: a QoS 1 PUBLISH is answered with PUBACK, a QoS 2 one with PUBREC,
//!   only after the journal has committed it, and in the order the broker sent them. A crash
//!   before the ack makes the broker deliver the reading again on the next connection, and the
//!   source's dedup key (the MQTT 5 correlation data, else a hash of topic and payload) keeps
//!   the journal from taking it twice.
//! - The `mqtt` sink publishes with QoS 1 (or 2) and succeeds only once the broker has acked;
//!   no ack within `ack_timeout` is a retryable error (the journal retries with backoff).
//!
//! This file holds what both share: the broker settings ([`BrokerConfig`]) and a small
//! protocol-neutral client over rumqttc's two clients (3.1.1 = rumqttc's `v4`, and `v5`).

pub mod sink;
pub mod source;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use huizhen_core::tls::ClientTlsConfig;
use rumqttc::v5::mqttbytes::v5 as p5;
use serde::Deserialize;

/// MQTT protocol version spoken to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Protocol {
    /// MQTT 3.1.1 (protocol level 4).
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5.0.
    #[serde(rename = "5")]
    V5,
}

/// Quality of service of a subscription or a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    AtMostOnce,
    AtLeastOnce,
    ExactlyOnce,
}

impl Qos {
    pub fn from_level(n: u8) -> Result<Qos, String> {
        match n {
            0 => Ok(Qos::AtMostOnce),
            1 => Ok(Qos::AtLeastOnce),
            2 => Ok(Qos::ExactlyOnce),
            _ => Err(format!("qos: {n} is not 0, 1 or 2")),
        }
    }
    fn v4(self) -> rumqttc::QoS {
        match self {
            Qos::AtMostOnce => rumqttc::QoS::AtMostOnce,
            Qos::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
            Qos::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
        }
    }
    fn v5(self) -> rumqttc::v5::mqttbytes::QoS {
        use rumqttc::v5::mqttbytes::QoS;
        match self {
            Qos::AtMostOnce => QoS::AtMostOnce,
            Qos::AtLeastOnce => QoS::AtLeastOnce,
            Qos::ExactlyOnce => QoS::ExactlyOnce,
        }
    }
    fn level(self) -> u8 {
        match self {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
            Qos::ExactlyOnce => 2,
        }
    }
}

/// Where the broker is and who the engine is to it: the settings the source and the sink share.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `mqtt://host:port` (default port 1883) or `mqtts://host:port` (TLS, default 8883).
    pub url: String,
    pub protocol: Protocol,
    /// The client id. A persistent session is bound to it: keep it stable across restarts and
    /// unique per engine (two clients with one id take the session from each other).
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// TLS for `mqtts://`: `ca` (default: the public roots), `cert` + `key` for a client
    /// certificate. The broker's certificate is checked against the URL's host.
    pub tls: Option<ClientTlsConfig>,
    pub keep_alive: Duration,
}

/// A parsed broker address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

/// Parses `mqtt://host[:port]` / `mqtts://host[:port]` (also `tcp://`, `ssl://`). Credentials
/// belong in `username`/`password`, not in the URL.
pub fn parse_url(url: &str) -> Result<Address, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtt://").or(url.strip_prefix("tcp://")) {
        (false, r)
    } else if let Some(r) = url.strip_prefix("mqtts://").or(url.strip_prefix("ssl://")) {
        (true, r)
    } else {
        return Err(format!(
            "url: {url:?} is not an MQTT URL (mqtt://host:1883 or mqtts://host:8883)"
        ));
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('@') {
        return Err("url: put the credentials in `username` and `password`, not in the URL".into());
    }
    if rest.contains('/') || rest.contains('?') {
        return Err(format!(
            "url: {url:?} has a path; an MQTT URL is scheme://host:port"
        ));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            let port = p
                .parse::<u16>()
                .map_err(|_| format!("url: {p:?} is not a port number"))?;
            (h, port)
        }
        _ => (rest, if tls { 8883 } else { 1883 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("url: {url:?} names no host"));
    }
    Ok(Address {
        host: host.to_owned(),
        port,
        tls,
    })
}

impl BrokerConfig {
    /// Checks everything that can be checked without connecting (`validate` calls it).
    pub fn check(&self) -> Result<Address, String> {
        let a = parse_url(&self.url)?;
        if self.client_id.trim().is_empty() {
            return Err(
                "client_id: must not be empty (a persistent session is bound to it)".into(),
            );
        }
        if self.client_id.len() > 23 && self.protocol == Protocol::V311 {
            // 3.1.1 §3.1.3.1: brokers MUST accept 1–23 characters; longer ones MAY be refused.
            tracing::debug!(client_id = %self.client_id, "MQTT 3.1.1 client id longer than 23 characters");
        }
        if self.password.is_some() && self.username.is_none() {
            return Err("password: needs username beside it".into());
        }
        match (&self.tls, a.tls) {
            (Some(t), true) => {
                if t.server_name.is_some() {
                    return Err("tls.server_name: not supported by the mqtt adapter; the broker's certificate is checked against the URL's host".into());
                }
                t.client_config()?;
            }
            (Some(_), false) => {
                return Err("tls: given for a plain mqtt:// URL; use mqtts://".into());
            }
            _ => {}
        }
        Ok(a)
    }

    fn tls_config(&self) -> Result<Arc<rustls_config::ClientConfig>, String> {
        self.tls.clone().unwrap_or_default().client_config()
    }
}

mod rustls_config {
    pub use rumqttc::tokio_rustls::rustls::ClientConfig;
}

/// One received PUBLISH, whatever the protocol version, with what is needed to ack it.
pub struct Incoming {
    pub topic: String,
    pub payload: Bytes,
    pub qos: Qos,
    pub retain: bool,
    pub dup: bool,
    /// MQTT 5: the correlation data, the content type and the user properties.
    pub correlation: Option<Bytes>,
    pub content_type: Option<String>,
    pub user_properties: Vec<(String, String)>,
    ack: AckToken,
}

enum AckToken {
    V4(rumqttc::Publish),
    V5(p5::Publish),
}

/// What the event loop reports to its owner.
pub enum Event {
    /// The broker accepted the connection; `session_present` says whether it kept our session.
    Connected {
        session_present: bool,
    },
    Publish(Box<Incoming>),
    /// The broker acked one of our publishes (PUBACK for QoS 1, PUBCOMP for QoS 2).
    Acked(u16),
    /// The broker refused one of our publishes (MQTT 5 PUBACK reason code ≥ 0x80).
    Refused(u16, String),
    /// One of our publishes went out with this packet id.
    Sent(u16),
    /// The broker granted every filter of a SUBSCRIBE (a refusal is an error of `poll`).
    Subscribed,
    Other,
}

/// The sending side of a connection (cheap to clone).
#[derive(Clone)]
pub enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// The connection's event loop; must be polled for anything to happen.
pub enum EventLoop {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

/// Builds a client and its event loop. `persistent` asks for a session kept across
/// connections (`session_expiry` for MQTT 5); `manual_acks` leaves the acks to [`Client::ack`].
pub fn connect(
    cfg: &BrokerConfig,
    persistent: bool,
    session_expiry: Duration,
    manual_acks: bool,
    inflight: u16,
) -> Result<(Client, EventLoop), String> {
    let a = cfg.check()?;
    let transport = if a.tls {
        Some(rumqttc::TlsConfiguration::Rustls(cfg.tls_config()?))
    } else {
        None
    };
    Ok(match cfg.protocol {
        Protocol::V311 => {
            let mut o = rumqttc::MqttOptions::new(cfg.client_id.clone(), a.host, a.port);
            o.set_keep_alive(cfg.keep_alive)
                .set_clean_session(!persistent)
                .set_manual_acks(manual_acks)
                .set_inflight(inflight.max(1))
                .set_max_packet_size(16 << 20, 16 << 20);
            if let Some(u) = &cfg.username {
                o.set_credentials(u.clone(), cfg.password.clone().unwrap_or_default());
            }
            if let Some(t) = transport {
                o.set_transport(rumqttc::Transport::tls_with_config(t));
            }
            let (c, l) = rumqttc::AsyncClient::new(o, usize::from(inflight.max(1)) * 2 + 16);
            (Client::V4(c), EventLoop::V4(Box::new(l)))
        }
        Protocol::V5 => {
            let mut o = rumqttc::v5::MqttOptions::new(cfg.client_id.clone(), a.host, a.port);
            o.set_keep_alive(cfg.keep_alive)
                .set_clean_start(!persistent)
                .set_manual_acks(manual_acks)
                .set_receive_maximum(Some(inflight.max(1)))
                .set_max_packet_size(Some(16 << 20));
            if persistent {
                let secs = u32::try_from(session_expiry.as_secs()).unwrap_or(u32::MAX);
                o.set_session_expiry_interval(Some(secs));
            }
            if let Some(u) = &cfg.username {
                o.set_credentials(u.clone(), cfg.password.clone().unwrap_or_default());
            }
            if let Some(t) = transport {
                o.set_transport(rumqttc::Transport::tls_with_config(t));
            }
            let (c, l) = rumqttc::v5::AsyncClient::new(o, usize::from(inflight.max(1)) * 2 + 16);
            (Client::V5(c), EventLoop::V5(Box::new(l)))
        }
    })
}

impl Client {
    /// Subscribes to each filter with `qos`.
    pub async fn subscribe(&self, filters: &[String], qos: Qos) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .subscribe_many(
                    filters
                        .iter()
                        .map(|f| rumqttc::SubscribeFilter::new(f.clone(), qos.v4())),
                )
                .await
                .map_err(|e| format!("subscribe: {e}")),
            Client::V5(c) => c
                .subscribe_many(filters.iter().map(|f| p5::Filter::new(f.clone(), qos.v5())))
                .await
                .map_err(|e| format!("subscribe: {e}")),
        }
    }

    /// Sends the PUBACK (QoS 1) or PUBREC (QoS 2) of a received PUBLISH.
    pub async fn ack(&self, m: &Incoming) -> Result<(), String> {
        match (self, &m.ack) {
            (Client::V4(c), AckToken::V4(p)) => c.ack(p).await.map_err(|e| e.to_string()),
            (Client::V5(c), AckToken::V5(p)) => c.ack(p).await.map_err(|e| e.to_string()),
            _ => Err("ack: a PUBLISH of the other protocol version".into()),
        }
    }

    /// Queues a PUBLISH; MQTT 5 carries `correlation` and the user properties.
    // One argument per PUBLISH field the sink sets; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub async fn publish(
        &self,
        topic: &str,
        qos: Qos,
        retain: bool,
        payload: Vec<u8>,
        correlation: Option<Bytes>,
        user_properties: Vec<(String, String)>,
        content_type: Option<String>,
    ) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .publish(topic, qos.v4(), retain, payload)
                .await
                .map_err(|e| e.to_string()),
            Client::V5(c) => {
                let props = p5::PublishProperties {
                    correlation_data: correlation,
                    user_properties,
                    content_type,
                    ..Default::default()
                };
                c.publish_with_properties(topic, qos.v5(), retain, payload, props)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Sends DISCONNECT (the session stays on the broker when it is persistent).
    pub async fn disconnect(&self) {
        let _ = match self {
            Client::V4(c) => c.disconnect().await.map_err(|e| e.to_string()),
            Client::V5(c) => c.disconnect().await.map_err(|e| e.to_string()),
        };
    }
}

impl EventLoop {
    /// The next event; an error means the connection is gone (polling again reconnects).
    pub async fn poll(&mut self) -> Result<Event, String> {
        match self {
            EventLoop::V4(l) => {
                use rumqttc::{Event as E, Outgoing, Packet};
                match l.poll().await.map_err(|e| e.to_string())? {
                    E::Incoming(Packet::ConnAck(c)) => {
                        if c.code != rumqttc::ConnectReturnCode::Success {
                            return Err(format!("the broker refused the connection: {:?}", c.code));
                        }
                        Ok(Event::Connected {
                            session_present: c.session_present,
                        })
                    }
                    E::Incoming(Packet::Publish(p)) => Ok(Event::Publish(Box::new(Incoming {
                        topic: String::from_utf8_lossy(p.topic.as_bytes()).into_owned(),
                        payload: p.payload.clone(),
                        qos: match p.qos {
                            rumqttc::QoS::AtMostOnce => Qos::AtMostOnce,
                            rumqttc::QoS::AtLeastOnce => Qos::AtLeastOnce,
                            rumqttc::QoS::ExactlyOnce => Qos::ExactlyOnce,
                        },
                        retain: p.retain,
                        dup: p.dup,
                        correlation: None,
                        content_type: None,
                        user_properties: Vec::new(),
                        ack: AckToken::V4(p),
                    }))),
                    E::Incoming(Packet::PubAck(a)) => Ok(Event::Acked(a.pkid)),
                    E::Incoming(Packet::PubComp(a)) => Ok(Event::Acked(a.pkid)),
                    E::Incoming(Packet::SubAck(s)) => {
                        if s.return_codes
                            .iter()
                            .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                        {
                            return Err("the broker refused a subscription (SUBACK failure)".into());
                        }
                        Ok(Event::Subscribed)
                    }
                    E::Outgoing(Outgoing::Publish(pkid)) => Ok(Event::Sent(pkid)),
                    _ => Ok(Event::Other),
                }
            }
            EventLoop::V5(l) => {
                use rumqttc::v5::Event as E;
                use rumqttc::v5::mqttbytes::v5::Packet;
                match l.poll().await.map_err(|e| e.to_string())? {
                    E::Incoming(Packet::ConnAck(c)) => {
                        if c.code != p5::ConnectReturnCode::Success {
                            return Err(format!("the broker refused the connection: {:?}", c.code));
                        }
                        Ok(Event::Connected {
                            session_present: c.session_present,
                        })
                    }
                    E::Incoming(Packet::Publish(p)) => {
                        let props = p.properties.clone().unwrap_or_default();
                        Ok(Event::Publish(Box::new(Incoming {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: p.payload.clone(),
                            qos: match p.qos {
                                rumqttc::v5::mqttbytes::QoS::AtMostOnce => Qos::AtMostOnce,
                                rumqttc::v5::mqttbytes::QoS::AtLeastOnce => Qos::AtLeastOnce,
                                rumqttc::v5::mqttbytes::QoS::ExactlyOnce => Qos::ExactlyOnce,
                            },
                            retain: p.retain,
                            dup: p.dup,
                            correlation: props.correlation_data,
                            content_type: props.content_type,
                            user_properties: props.user_properties,
                            ack: AckToken::V5(p),
                        })))
                    }
                    E::Incoming(Packet::PubAck(a)) => {
                        use p5::PubAckReason as R;
                        if matches!(a.reason, R::Success | R::NoMatchingSubscribers) {
                            Ok(Event::Acked(a.pkid))
                        } else {
                            Ok(Event::Refused(a.pkid, format!("{:?}", a.reason)))
                        }
                    }
                    E::Incoming(Packet::PubComp(a)) => Ok(Event::Acked(a.pkid)),
                    E::Incoming(Packet::SubAck(s)) => {
                        if s.return_codes
                            .iter()
                            .any(|c| !matches!(c, p5::SubscribeReasonCode::Success(_)))
                        {
                            return Err(format!(
                                "the broker refused a subscription: {:?}",
                                s.return_codes
                            ));
                        }
                        Ok(Event::Subscribed)
                    }
                    E::Outgoing(rumqttc::Outgoing::Publish(pkid)) => Ok(Event::Sent(pkid)),
                    _ => Ok(Event::Other),
                }
            }
        }
    }
}

/// Checks a subscription topic filter (MQTT 3.1.1 §4.7 / 5 §4.7): `#` only last and alone in
/// its level, `+` alone in its level, not empty, no NUL.
pub fn check_filter(f: &str) -> Result<(), String> {
    if f.is_empty() {
        return Err("a topic filter must not be empty".into());
    }
    if f.contains('\0') {
        return Err(format!("topic filter {f:?} contains NUL"));
    }
    let levels: Vec<&str> = f.split('/').collect();
    for (i, l) in levels.iter().enumerate() {
        if l.contains('#') && (*l != "#" || i + 1 != levels.len()) {
            return Err(format!(
                "topic filter {f:?}: `#` must be a whole level and the last one"
            ));
        }
        if l.contains('+') && *l != "+" {
            return Err(format!("topic filter {f:?}: `+` must be a whole level"));
        }
    }
    Ok(())
}

/// Checks a topic name to publish to: no wildcards, not empty.
pub fn check_topic(t: &str) -> Result<(), String> {
    if t.is_empty() || t.contains('+') || t.contains('#') || t.contains('\0') {
        return Err(format!(
            "topic {t:?}: a topic to publish to is not empty and has no `+`, `#` or NUL"
        ));
    }
    Ok(())
}

/// Backoff between reconnection attempts: 0.5 s doubling to 30 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(30))
}

/// `qos` as a level, for headers.
pub(crate) fn qos_level(q: Qos) -> u8 {
    q.level()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("mqtt://127.0.0.1:1883").unwrap(),
            Address {
                host: "127.0.0.1".into(),
                port: 1883,
                tls: false
            }
        );
        assert_eq!(parse_url("mqtts://broker.example").unwrap().port, 8883);
        assert_eq!(parse_url("mqtt://h").unwrap().port, 1883);
        assert_eq!(parse_url("mqtt://[::1]:1884").unwrap().host, "::1");
        assert!(
            parse_url("http://h")
                .unwrap_err()
                .contains("not an MQTT URL")
        );
        assert!(parse_url("mqtt://u:p@h").unwrap_err().contains("username"));
        assert!(parse_url("mqtt://h:x").unwrap_err().contains("port"));
        assert!(parse_url("mqtt://h/a").unwrap_err().contains("path"));
    }

    #[test]
    fn filters() {
        for ok in ["a/b", "clinic/+/bp", "home/#", "#", "+", "+/+/x"] {
            check_filter(ok).unwrap();
        }
        for bad in ["", "a/#/b", "a#", "a/b+", "x\0"] {
            assert!(check_filter(bad).is_err(), "{bad:?}");
        }
        check_topic("alerts/clinic-1").unwrap();
        assert!(check_topic("alerts/#").is_err());
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(0).as_millis(), 500);
        assert_eq!(backoff(20).as_secs(), 30);
    }
}
