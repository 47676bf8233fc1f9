//! `amqp`: publish each message to RabbitMQ with publisher confirms.
//!
//! ```yaml
//! sinks:
//!   - amqp:
//!       url: ${AMQP_URL}
//!       exchange: ""               # the default exchange: routing_key is the queue
//!       routing_key: his-adt
//!       declare_queue: his-adt     # optional: declare it first, as the amqp source does by default
//!       confirm_timeout: 10s
//!       reply:                     # optional: request/reply (a legacy HIS behind a queue)
//!         timeout: 30s             # no reply by then: a retryable failure
//!         route: his-replies       # optional: the reply becomes a message of this pipeline
//!       tls: { ca: hospital-ca.pem }  # amqps:// with a private CA (default: the public roots)
//! ```
//!
//! The message goes out persistent and mandatory, with `message-id` = the journal's message id,
//! `content-type` from the message kind, and the headers `huizhen-pipeline` and `traceparent`.
//! The step succeeds only on the broker's ack; a nack, an unroutable message (no queue bound)
//! or no confirm within `confirm_timeout` is a retryable error: the journal retries it with
//! backoff, with the same `message-id`, so a receiver can drop a copy.
//!
//! With `reply`, each message is a request: it goes out with `reply-to` set to RabbitMQ's direct
//! reply-to (`amq.rabbitmq.reply-to`) and `correlation-id` = the message id, and the sink waits for
//! the answer with that correlation id. The answer's body is recorded as the sink's effect (shown
//! with the message) and, with `route`, journaled as a message of that pipeline (`parent_id` = the
//! request, header `correlation-id`, dedup key `reply:ID`). No answer within `timeout` fails the
//! attempt, which the journal retries (with `deliver_limit` the HIS sees at most `max_in_flight`
//! requests at once and no more than `per_second`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use huizhen_core::message::NewMessage;
use lapin::options::BasicConsumeOptions;
use tokio::sync::oneshot;

use futures::future::BoxFuture;
use huizhen_core::config::duration;
use huizhen_core::runner::BuildContext;
use huizhen_core::sinks::{Sink, SinkConfig};
use huizhen_core::store::Effect;
use huizhen_core::work::{StepError, Work};
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use serde::Deserialize;
use tokio::sync::Mutex;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSinkConfig {
    pub url: String,
    #[serde(default)]
    pub exchange: String,
    #[serde(default)]
    pub routing_key: String,
    #[serde(default)]
    pub declare_queue: Option<String>,
    #[serde(default = "default_confirm", with = "duration")]
    pub confirm_timeout: Duration,
    #[serde(default)]
    pub reply: Option<ReplyConfig>,
    /// A private CA for an `amqps://` broker.
    #[serde(default)]
    pub tls: Option<crate::AmqpTls>,
}

/// Request/reply: wait for the receiver's answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyConfig {
    #[serde(default = "default_reply_timeout", with = "duration")]
    pub timeout: Duration,
    /// A pipeline that receives each reply as a new message.
    #[serde(default)]
    pub route: Option<String>,
}

fn default_reply_timeout() -> Duration {
    Duration::from_secs(30)
}

/// RabbitMQ's pseudo-queue for replies to this channel.
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// An answer to a request.
struct Reply {
    body: Vec<u8>,
    content_type: Option<String>,
}

type Waiters = Arc<std::sync::Mutex<HashMap<String, oneshot::Sender<Reply>>>>;

fn default_confirm() -> Duration {
    Duration::from_secs(10)
}

#[typetag::deserialize(name = "amqp")]
impl SinkConfig for AmqpSinkConfig {
    fn build(&self, ctx: &BuildContext, index: usize) -> Result<Arc<dyn Sink>, String> {
        crate::source::check_url(&self.url)?;
        if let Some(t) = &self.tls {
            t.load()?;
        }
        if self.exchange.is_empty() && self.routing_key.is_empty() {
            return Err(
                "routing_key: needed with the default exchange (it names the queue)".into(),
            );
        }
        if let Some(r) = &self.reply {
            if r.timeout.is_zero() {
                return Err("reply.timeout: must be more than 0".into());
            }
            if r.route.as_deref() == Some(ctx.pipeline.as_str()) {
                return Err(format!(
                    "reply.route: {:?} would loop back into the same pipeline",
                    ctx.pipeline
                ));
            }
        }
        Ok(Arc::new(AmqpSink {
            name: format!("amqp#{index}"),
            pipeline: ctx.pipeline.clone(),
            config: self.clone(),
            channel: Mutex::new(None),
            router: ctx.router.clone(),
        }))
    }
}

struct AmqpSink {
    name: String,
    pipeline: String,
    config: AmqpSinkConfig,
    /// The connection and its confirming channel, opened on first use and again after an error.
    channel: Mutex<Option<Open>>,
    router: huizhen_core::runner::Router,
}

struct Open {
    conn: Connection,
    ch: Channel,
    /// Requests waiting for their reply, by correlation id (with `reply`).
    waiters: Waiters,
}

impl AmqpSink {
    async fn open(&self) -> Result<Open, String> {
        let c = &self.config;
        let conn = crate::connect(&c.url, c.tls.as_ref()).await?;
        let ch = conn
            .create_channel()
            .await
            .map_err(|e| format!("cannot open a channel: {e}"))?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| format!("confirm.select: {e}"))?;
        if let Some(q) = &c.declare_queue {
            // As the `amqp` source declares it by default (durable, dead-letter exchange), so
            // that either may come first: a queue's arguments must match at every declaration.
            crate::declare_queue(&ch, q, false, true, None)
                .await
                .map_err(|e| format!("declaring queue {q}: {e}"))?;
        }
        let waiters: Waiters = Arc::default();
        if self.config.reply.is_some() {
            // Direct reply-to: consume the pseudo-queue (no-ack) on the publishing channel
            // before the first request; answers are matched by correlation id.
            let mut replies = ch
                .basic_consume(
                    DIRECT_REPLY_TO.into(),
                    "".into(),
                    BasicConsumeOptions {
                        no_ack: true,
                        ..BasicConsumeOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| format!("consuming replies ({DIRECT_REPLY_TO}): {e}"))?;
            let w = waiters.clone();
            let name = self.name.clone();
            tokio::spawn(async move {
                while let Some(Ok(d)) = replies.next().await {
                    let Some(id) = d
                        .properties
                        .correlation_id()
                        .as_ref()
                        .map(|c| c.to_string())
                    else {
                        tracing::warn!(sink = %name, "reply without a correlation-id; dropped");
                        continue;
                    };
                    let waiter = w.lock().ok().and_then(|mut m| m.remove(&id));
                    match waiter {
                        Some(tx) => {
                            let _ = tx.send(Reply {
                                body: d.data,
                                content_type: d
                                    .properties
                                    .content_type()
                                    .as_ref()
                                    .map(|c| c.to_string()),
                            });
                        }
                        None => {
                            tracing::info!(sink = %name, correlation_id = %id, "late reply (the request timed out); dropped")
                        }
                    }
                }
            });
        }
        Ok(Open { conn, ch, waiters })
    }

    async fn publish(&self, work: &mut Work) -> Result<Option<Reply>, String> {
        let mut guard = self.channel.lock().await;
        let healthy = guard
            .as_ref()
            .is_some_and(|o| o.conn.status().connected() && o.ch.status().connected());
        if !healthy {
            // Bounded: a broker that accepts the TCP connection while it is still starting (or
            // is blocked) must not hold every worker of the pipeline on this lock; the attempt
            // fails as retryable and the journal retries it.
            let limit = self.config.confirm_timeout.max(Duration::from_secs(5));
            *guard = Some(
                tokio::time::timeout(limit, self.open())
                    .await
                    .map_err(|_| format!("no connection to the broker within {limit:?}"))??,
            );
        }
        let Some(Open { ch, waiters, .. }) = guard.as_ref() else {
            return Err("no channel".into());
        };
        let waiters = waiters.clone();
        let mut headers = FieldTable::default();
        headers.insert(
            ShortString::from("huizhen-pipeline"),
            AMQPValue::LongString(self.pipeline.as_str().into()),
        );
        headers.insert(
            ShortString::from("traceparent"),
            AMQPValue::LongString(work.traceparent().as_str().into()),
        );
        let content_type = match work.kind.as_str() {
            "json" => "application/json",
            "hl7v2" => "x-application/hl7-v2+er7",
            _ => "text/plain",
        };
        let mut props = BasicProperties::default()
            .with_message_id(work.id.as_str().into())
            .with_content_type(content_type.into())
            .with_delivery_mode(2)
            .with_headers(headers);
        let reply = match &self.config.reply {
            Some(_) => {
                props = props
                    .with_reply_to(DIRECT_REPLY_TO.into())
                    .with_correlation_id(work.id.as_str().into());
                let (tx, rx) = oneshot::channel();
                if let Ok(mut w) = waiters.lock() {
                    w.insert(work.id.clone(), tx);
                }
                Some(rx)
            }
            None => None,
        };
        let request_id = work.id.clone();
        let forget = || {
            if let Ok(mut w) = waiters.lock() {
                w.remove(&request_id);
            }
        };
        let body = work.body().to_vec();
        let publish = ch.basic_publish(
            self.config.exchange.as_str().into(),
            self.config.routing_key.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            &body,
            props,
        );
        // Bounded too: a blocked connection (the broker's resource alarm) holds the publish.
        let confirm = match tokio::time::timeout(self.config.confirm_timeout, publish).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                *guard = None;
                forget();
                return Err(format!("publish: {e}"));
            }
            Err(_) => {
                *guard = None;
                forget();
                return Err(format!(
                    "publish not accepted by the broker within {:?}",
                    self.config.confirm_timeout
                ));
            }
        };
        drop(guard);
        let confirmed = match tokio::time::timeout(self.config.confirm_timeout, confirm).await {
            Err(_) => {
                *self.channel.lock().await = None;
                Err(format!(
                    "no publisher confirm within {:?}",
                    self.config.confirm_timeout
                ))
            }
            Ok(Err(e)) => {
                *self.channel.lock().await = None;
                Err(format!("publisher confirm: {e}"))
            }
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)))) => Err(format!(
                "unroutable: no queue is bound to exchange {:?} with routing key {:?}",
                self.config.exchange, self.config.routing_key
            )),
            Ok(Ok(Confirmation::Nack(_))) => Err("the broker refused the message (nack)".into()),
            Ok(Ok(Confirmation::NotRequested)) => Err("publisher confirms are off".into()),
        };
        if let Err(e) = confirmed {
            forget();
            return Err(e);
        }
        let (Some(rx), Some(r)) = (reply, &self.config.reply) else {
            return Ok(None);
        };
        match tokio::time::timeout(r.timeout, rx).await {
            Ok(Ok(reply)) => Ok(Some(reply)),
            Ok(Err(_)) => {
                forget();
                Err("the reply channel closed before the reply came (connection lost)".into())
            }
            Err(_) => {
                forget();
                Err(format!(
                    "no reply within {:?} to the request sent to {:?} (correlation-id {})",
                    r.timeout,
                    if self.config.routing_key.is_empty() {
                        &self.config.exchange
                    } else {
                        &self.config.routing_key
                    },
                    work.id
                ))
            }
        }
    }

    /// Records a reply: as the sink's effect, and as a message of `reply.route`.
    async fn take_reply(&self, work: &Work, reply: Reply) -> Result<Vec<Effect>, String> {
        if let Some(route) = self.config.reply.as_ref().and_then(|r| r.route.as_deref()) {
            let target = self
                .router
                .get(route)
                .ok_or_else(|| format!("reply.route: pipeline {route:?} is not running"))?;
            let kind = match reply.content_type.as_deref() {
                Some(ct) if ct.starts_with("application/json") || ct.ends_with("+json") => "json",
                Some(ct) if ct.contains("hl7") => "hl7v2",
                _ => "text",
            };
            let mut m = NewMessage::new(route, &work.facility, kind, reply.body.clone());
            m.source = format!("reply to {} ({})", work.pipeline, self.name);
            m.headers.insert("correlation-id".into(), work.id.clone());
            if let Some(ct) = &reply.content_type {
                m.headers.insert("content-type".into(), ct.clone());
            }
            m.dedup_key = Some(format!("reply:{}", work.id));
            m.trace_id = Some(work.trace_id.clone());
            m.parent_id = Some(work.id.clone());
            target
                .submit(m)
                .await
                .map_err(|e| format!("reply.route to {route:?}: {e}"))?;
        }
        Ok(vec![Effect {
            sink: self.name.clone(),
            pipeline: self.pipeline.clone(),
            body: reply.body,
            as_received: false,
        }])
    }
}

/// A W3C trace id (32 hex) from the message's trace id (a UUID or anything else).
impl Sink for AmqpSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Vec<Effect>, StepError>> {
        Box::pin(async move {
            let reply = self.publish(work).await.map_err(StepError::new)?;
            match reply {
                None => Ok(Vec::new()),
                Some(r) => self.take_reply(work, r).await.map_err(StepError::new),
            }
        })
    }
}
