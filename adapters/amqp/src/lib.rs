//! AMQP 0-9-1 (RabbitMQ) for Huizhen, through lapin (rustls with ring only).
//!
//! - The `amqp` source consumes a durable queue (classic or quorum) with manual
//!   acknowledgements: a delivery is acked only after the journal has committed it, so a crash
//!   in between makes the broker redeliver it, and the journal's dedup on the AMQP `message-id`
//!   keeps the redelivery from being processed twice. It reconnects with backoff and declares its
//!   topology again (exchange, binding, dead-letter exchange and queue).
//! - The `amqp` sink publishes with publisher confirms (persistent, mandatory): the step succeeds
//!   only when the broker has confirmed; a nack, an unroutable message or a timeout is a
//!   retryable error, so the message is retried through the journal with backoff. The AMQP
//!   `message-id` is the journal's message id, for the receiver's deduplication.

pub mod dispatch;
pub mod sink;
pub mod source;

use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Connection, ConnectionProperties};

/// TLS toward the broker for `amqps://` URLs whose certificate a private CA issued (a hospital
/// network's own PKI). Without it the broker is verified against the public (Mozilla) roots.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpTls {
    /// PEM file of the CA certificate(s) that issued the broker's certificate.
    pub ca: std::path::PathBuf,
}

impl AmqpTls {
    /// Reads the CA file; an error names the file and what is wrong with it.
    pub fn load(&self) -> Result<String, String> {
        let pem = std::fs::read_to_string(&self.ca)
            .map_err(|e| format!("tls.ca: cannot read {}: {e}", self.ca.display()))?;
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(format!(
                "tls.ca: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                self.ca.display()
            ));
        }
        Ok(pem)
    }
}

/// Opens a connection, with the private CA of `tls` when given.
pub(crate) async fn connect(url: &str, tls: Option<&AmqpTls>) -> Result<Connection, String> {
    let r = match tls {
        None => Connection::connect(url, ConnectionProperties::default()).await,
        Some(t) => {
            let config = lapin::tcp::OwnedTLSConfig {
                identity: None,
                cert_chain: Some(t.load()?),
            };
            let runtime = lapin::runtime::default_runtime().map_err(|e| e.to_string())?;
            Connection::connect_with_config(url, ConnectionProperties::default(), config, runtime)
                .await
        }
    };
    r.map_err(|e| format!("cannot connect to {}: {e}", redact(url)))
}

/// Declares the queue (durable; quorum if asked) and, when `dead_letter`, an exchange
/// `<queue>.dlx` with a queue `<queue>.dead` bound to it, set as the queue's dead-letter exchange.
pub(crate) async fn declare_queue(
    ch: &lapin::Channel,
    queue: &str,
    quorum: bool,
    dead_letter: bool,
    delivery_limit: Option<u32>,
) -> lapin::Result<()> {
    use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
    let mut args = FieldTable::default();
    if quorum {
        args.insert(
            ShortString::from("x-queue-type"),
            AMQPValue::LongString("quorum".into()),
        );
        if let Some(n) = delivery_limit {
            args.insert(
                ShortString::from("x-delivery-limit"),
                AMQPValue::LongLongInt(i64::from(n)),
            );
        }
    }
    if dead_letter {
        let dlx = format!("{queue}.dlx");
        let dead = format!("{queue}.dead");
        ch.exchange_declare(
            dlx.as_str().into(),
            lapin::ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
        ch.queue_declare(
            dead.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
        ch.queue_bind(
            dead.as_str().into(),
            dlx.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        args.insert(
            ShortString::from("x-dead-letter-exchange"),
            AMQPValue::LongString(dlx.as_str().into()),
        );
    }
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        args,
    )
    .await?;
    Ok(())
}

/// Hides the password of an AMQP URL for logs and errors.
pub(crate) fn redact(url: &str) -> String {
    huizhen_core::store::redact_url(url)
}

/// Backoff between reconnection attempts: 0.5 s doubling to 30 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(super::backoff(0).as_millis(), 500);
        assert_eq!(super::backoff(1).as_millis(), 1000);
        assert_eq!(super::backoff(20).as_secs(), 30);
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            super::redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
    }
}
