//! `amqp`: consume a RabbitMQ queue into a pipeline.
//!
//! ```yaml
//! source:
//!   amqp:
//!     url: ${AMQP_URL}                  # amqp://user:pass@host:5672/vhost, amqps:// for TLS
//!     queue: his-adt
//!     exchange: his                     # optional: declared and bound to the queue
//!     exchange_kind: direct             # direct, fanout, topic or headers
//!     routing_key: adt
//!     quorum: true                      # a quorum queue (replicated); default classic durable
//!     delivery_limit: 5                 # quorum: dead-letter after this many redeliveries
//!     dead_letter: true                 # <queue>.dlx exchange and <queue>.dead queue
//!     prefetch: 64                      # unacknowledged deliveries at once
//!     ordered: false                    # true: journal one delivery at a time, in queue order
//!     kind: json                        # message kind (default: json for application/json, else text)
//!     tls: { ca: hospital-ca.pem }      # amqps:// with a private CA (default: the public roots)
//! ```

use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use huizhen_core::message::NewMessage;
use huizhen_core::runner::{BuildContext, PipelineHandle};
use huizhen_core::sources::{Source, SourceConfig, SourceContext};
use lapin::ExchangeKind;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    ExchangeDeclareOptions, QueueBindOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSourceConfig {
    pub url: String,
    pub queue: String,
    #[serde(default)]
    pub exchange: Option<String>,
    #[serde(default = "default_kind")]
    pub exchange_kind: String,
    #[serde(default)]
    pub routing_key: String,
    #[serde(default)]
    pub quorum: bool,
    #[serde(default)]
    pub delivery_limit: Option<u32>,
    #[serde(default = "yes")]
    pub dead_letter: bool,
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    #[serde(default)]
    pub ordered: bool,
    #[serde(default)]
    pub kind: Option<String>,
    /// A private CA for an `amqps://` broker.
    #[serde(default)]
    pub tls: Option<crate::AmqpTls>,
}

fn default_kind() -> String {
    "direct".into()
}
fn yes() -> bool {
    true
}
fn default_prefetch() -> u16 {
    64
}

pub(crate) fn exchange_kind(s: &str) -> Result<ExchangeKind, String> {
    Ok(match s {
        "direct" => ExchangeKind::Direct,
        "fanout" => ExchangeKind::Fanout,
        "topic" => ExchangeKind::Topic,
        "headers" => ExchangeKind::Headers,
        other => {
            return Err(format!(
                "exchange_kind: {other:?} is not one of direct, fanout, topic, headers"
            ));
        }
    })
}

pub(crate) fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
        return Err(format!(
            "url: {:?} is not an AMQP URL (amqp://user:pass@host:5672/vhost or amqps://…)",
            crate::redact(url)
        ));
    }
    url.parse::<lapin::uri::AMQPUri>()
        .map(|_| ())
        .map_err(|e| format!("url: {}: {e}", crate::redact(url)))
}

#[typetag::deserialize(name = "amqp")]
impl SourceConfig for AmqpSourceConfig {
    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn Source>, String> {
        check_url(&self.url)?;
        if self.queue.trim().is_empty() {
            return Err("queue: must not be empty".into());
        }
        exchange_kind(&self.exchange_kind)?;
        if let Some(t) = &self.tls {
            t.load()?;
        }
        if self.prefetch == 0 {
            return Err("prefetch: must be at least 1".into());
        }
        if self.delivery_limit.is_some() && !self.quorum {
            return Err(
                "delivery_limit: needs quorum: true (classic queues do not count redeliveries)"
                    .into(),
            );
        }
        Ok(Box::new(AmqpSource {
            config: Arc::new(self.clone()),
        }))
    }
}

struct AmqpSource {
    config: Arc<AmqpSourceConfig>,
}

impl Source for AmqpSource {
    fn describe(&self) -> String {
        format!(
            "amqp {} queue {}",
            crate::redact(&self.config.url),
            self.config.queue
        )
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async move {
            let mut attempt = 0u32;
            loop {
                let started = std::time::Instant::now();
                let r = tokio::select! {
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                    r = consume(&self.config, &ctx.pipeline, &ctx.shutdown) => r,
                };
                match r {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        if started.elapsed() > std::time::Duration::from_secs(30) {
                            attempt = 0;
                        }
                        let wait = crate::backoff(attempt);
                        attempt += 1;
                        tracing::warn!(pipeline = ctx.pipeline.name(), queue = %self.config.queue, error = %e, retry_in = ?wait, "AMQP consumer disconnected; reconnecting");
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

/// One connection's life: declare, consume until the connection fails (Err) or shutdown (Ok).
async fn consume(
    cfg: &AmqpSourceConfig,
    pipeline: &PipelineHandle,
    shutdown: &tokio_util_token::Token,
) -> Result<(), String> {
    let conn = crate::connect(&cfg.url, cfg.tls.as_ref()).await?;
    let ch = conn
        .create_channel()
        .await
        .map_err(|e| format!("cannot open a channel: {e}"))?;
    ch.basic_qos(cfg.prefetch, BasicQosOptions::default())
        .await
        .map_err(|e| format!("basic.qos: {e}"))?;
    crate::declare_queue(
        &ch,
        &cfg.queue,
        cfg.quorum,
        cfg.dead_letter,
        cfg.delivery_limit,
    )
    .await
    .map_err(|e| format!("declaring queue {}: {e}", cfg.queue))?;
    if let Some(x) = cfg.exchange.as_deref().filter(|x| !x.is_empty()) {
        ch.exchange_declare(
            x.into(),
            exchange_kind(&cfg.exchange_kind)?,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("declaring exchange {x}: {e}"))?;
        ch.queue_bind(
            cfg.queue.as_str().into(),
            x.into(),
            cfg.routing_key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("binding {} to {x}: {e}", cfg.queue))?;
    }
    let mut consumer = ch
        .basic_consume(
            cfg.queue.as_str().into(),
            format!("huizhen-{}", pipeline.name()).into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("basic.consume on {}: {e}", cfg.queue))?;
    tracing::info!(pipeline = pipeline.name(), queue = %cfg.queue, "AMQP consumer started");
    let in_flight = Arc::new(tokio::sync::Semaphore::new(usize::from(cfg.prefetch)));
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => {
                // Unacknowledged deliveries go back to the queue when the connection closes.
                let _ = conn.close(200, "engine shutting down".into()).await;
                return Ok(());
            }
            d = consumer.next() => d,
        };
        let delivery = match next {
            Some(Ok(d)) => d,
            Some(Err(e)) => return Err(format!("consumer: {e}")),
            None => return Err("the broker cancelled the consumer".into()),
        };
        let m = to_message(cfg, pipeline, &delivery);
        if cfg.ordered {
            journal_and_ack(pipeline.clone(), m, delivery).await;
        } else {
            let permit = in_flight
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| e.to_string())?;
            let p = pipeline.clone();
            tokio::spawn(async move {
                journal_and_ack(p, m, delivery).await;
                drop(permit);
            });
        }
    }
}

fn to_message(
    cfg: &AmqpSourceConfig,
    pipeline: &PipelineHandle,
    d: &lapin::message::Delivery,
) -> NewMessage {
    let ct = d
        .properties
        .content_type()
        .as_ref()
        .map(|c| c.as_str().to_owned())
        .unwrap_or_default();
    let kind = cfg.kind.clone().unwrap_or_else(|| {
        if ct.starts_with("application/json") || ct.ends_with("+json") {
            "json".into()
        } else {
            "text".into()
        }
    });
    let mut m = NewMessage::new(pipeline.name(), pipeline.facility(), &kind, d.data.clone());
    m.source = format!("amqp queue {}", cfg.queue);
    if !ct.is_empty() {
        m.headers.insert("content-type".into(), ct);
    }
    m.headers
        .insert("amqp-exchange".into(), d.exchange.as_str().to_owned());
    m.headers
        .insert("amqp-routing-key".into(), d.routing_key.as_str().to_owned());
    if let Some(id) = d.properties.message_id() {
        m.headers
            .insert("amqp-message-id".into(), id.as_str().to_owned());
        // A redelivery (the ack was lost) is recognised and not processed twice.
        m.dedup_key = Some(format!("amqp:{}", id.as_str()));
    }
    if let Some(h) = d.properties.headers() {
        for (k, v) in h.inner() {
            let text = match v {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::ShortString(s) => s.as_str().to_owned(),
                AMQPValue::LongLongInt(n) => n.to_string(),
                AMQPValue::LongInt(n) => n.to_string(),
                AMQPValue::Boolean(b) => b.to_string(),
                _ => continue,
            };
            if k.as_str() == "traceparent" {
                m.set_traceparent(&text);
            }
            m.headers.insert(format!("amqp-h-{}", k.as_str()), text);
        }
    }
    m
}

/// Journals a delivery, then acks it; if the journal cannot take it, it goes back to the queue.
async fn journal_and_ack(p: PipelineHandle, m: NewMessage, d: lapin::message::Delivery) {
    match p.submit(m).await {
        Ok(_) => {
            if let Err(e) = d.acker.ack(BasicAckOptions::default()).await {
                // Journaled: the broker redelivers it and the dedup key catches the copy.
                tracing::warn!(pipeline = p.name(), error = %e, "AMQP ack not sent after the journal commit");
            }
        }
        Err(e) => {
            let wait = if e.is_backlog() {
                tracing::warn!(pipeline = p.name(), error = %e, "backlog limit reached; AMQP delivery returned to the queue");
                std::time::Duration::from_secs(1)
            } else {
                tracing::error!(pipeline = p.name(), error = %e, "AMQP delivery not journaled; returned to the queue");
                std::time::Duration::from_millis(200)
            };
            tokio::time::sleep(wait).await;
            let _ = d
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await;
        }
    }
}

mod tokio_util_token {
    pub type Token = tokio_util::sync::CancellationToken;
}
