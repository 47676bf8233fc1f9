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
//! ```
//!
//! The message goes out persistent and mandatory, with `message-id` = the journal's message id,
//! `content-type` from the message kind, and the headers `huizhen-pipeline` and `traceparent`.
//! The step succeeds only on the broker's ack; a nack, an unroutable message (no queue bound)
//! or no confirm within `confirm_timeout` is a retryable error: the journal retries it with
//! backoff, with the same `message-id`, so a receiver can drop a copy.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use huizhen_core::config::duration;
use huizhen_core::runner::BuildContext;
use huizhen_core::sinks::{Sink, SinkConfig};
use huizhen_core::store::Effect;
use huizhen_core::work::{StepError, Work};
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
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
}

fn default_confirm() -> Duration {
    Duration::from_secs(10)
}

#[typetag::deserialize(name = "amqp")]
impl SinkConfig for AmqpSinkConfig {
    fn build(&self, ctx: &BuildContext, index: usize) -> Result<Arc<dyn Sink>, String> {
        crate::source::check_url(&self.url)?;
        if self.exchange.is_empty() && self.routing_key.is_empty() {
            return Err(
                "routing_key: needed with the default exchange (it names the queue)".into(),
            );
        }
        Ok(Arc::new(AmqpSink {
            name: format!("amqp#{index}"),
            pipeline: ctx.pipeline.clone(),
            config: self.clone(),
            channel: Mutex::new(None),
        }))
    }
}

struct AmqpSink {
    name: String,
    pipeline: String,
    config: AmqpSinkConfig,
    /// The connection and its confirming channel, opened on first use and again after an error.
    channel: Mutex<Option<(Connection, Channel)>>,
}

impl AmqpSink {
    async fn open(&self) -> Result<(Connection, Channel), String> {
        let c = &self.config;
        let conn = Connection::connect(&c.url, ConnectionProperties::default())
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", crate::redact(&c.url)))?;
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
        Ok((conn, ch))
    }

    async fn publish(&self, work: &mut Work) -> Result<(), String> {
        let mut guard = self.channel.lock().await;
        let healthy = guard
            .as_ref()
            .is_some_and(|(conn, ch)| conn.status().connected() && ch.status().connected());
        if !healthy {
            *guard = Some(self.open().await?);
        }
        let Some((_, ch)) = guard.as_ref() else {
            return Err("no channel".into());
        };
        let mut headers = FieldTable::default();
        headers.insert(
            ShortString::from("huizhen-pipeline"),
            AMQPValue::LongString(self.pipeline.as_str().into()),
        );
        headers.insert(
            ShortString::from("traceparent"),
            AMQPValue::LongString(
                format!("00-{}-0000000000000001-01", trace32(&work.trace_id))
                    .as_str()
                    .into(),
            ),
        );
        let content_type = match work.kind.as_str() {
            "json" => "application/json",
            "hl7v2" => "x-application/hl7-v2+er7",
            _ => "text/plain",
        };
        let props = BasicProperties::default()
            .with_message_id(work.id.as_str().into())
            .with_content_type(content_type.into())
            .with_delivery_mode(2)
            .with_headers(headers);
        let body = work.body().to_vec();
        let confirm = ch
            .basic_publish(
                self.config.exchange.as_str().into(),
                self.config.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &body,
                props,
            )
            .await;
        let confirm = match confirm {
            Ok(c) => c,
            Err(e) => {
                *guard = None;
                return Err(format!("publish: {e}"));
            }
        };
        drop(guard);
        match tokio::time::timeout(self.config.confirm_timeout, confirm).await {
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
        }
    }
}

/// A W3C trace id (32 hex) from the message's trace id (a UUID or anything else).
fn trace32(t: &str) -> String {
    let hex: String = t.chars().filter(char::is_ascii_hexdigit).collect();
    format!("{hex:0>32}")
        .chars()
        .rev()
        .take(32)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect()
}

impl Sink for AmqpSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Vec<Effect>, StepError>> {
        Box::pin(async move {
            self.publish(work)
                .await
                .map(|()| Vec::new())
                .map_err(|e| StepError::new(format!("{}: {e}", self.name)))
        })
    }
}
