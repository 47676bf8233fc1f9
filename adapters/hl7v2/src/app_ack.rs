//! `hl7_app_ack`: the application acknowledgement of enhanced mode (STANDARDS HL7-10, HL7-11).
//!
//! ```yaml
//! sinks:
//!   - journal: {}
//!   - hl7_app_ack: { to: 10.0.0.5:6662 }   # the sender's own listener
//!   # or over TLS, as for the `mllp` sink (huizhen_core::tls::connect is shared):
//!   - hl7_app_ack: { to: his.example:6662, tls: { ca: hospital-ca.pem } }
//! ```
//! A sender that set `MSH-16` got a CA when its message was journaled; this sink sends the
//! later application ACK as a message of its own, over MLLP to `to`: `AA` once the pipeline
//! has processed the message (when `MSH-16` is `AL` or `SU`), or `AE` with an ERR segment
//! (code 207) when the message goes to the dead-letter state (when `MSH-16` is `AL` or `ER`).
//! Messages in original mode, or with `MSH-16` = `NE`, get nothing. Put it last: it runs after
//! the sinks before it have delivered. The ACK is in the original's charset and delimiters,
//! with `MSA-2` = the original `MSH-10`; a reply from the receiver is read and ignored.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use huizhen_core::config::duration;
use huizhen_core::runner::BuildContext;
use huizhen_core::sinks::{Sink, SinkConfig};
use huizhen_core::store::Effect;
use huizhen_core::work::{StepError, Work};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::ack::{self, AckCode, ErrorCode, ErrorDetail};
use crate::mllp::frame;
use huizhen_core::tls::{ClientTls, ClientTlsConfig};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppAckSinkConfig {
    /// Where the sender listens for application ACKs: HOST:PORT.
    pub to: String,
    /// Connect, handshake and send within this long.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// TLS to the sender's listener, as for the `mllp` sink: `ca`, `cert`/`key` (mutual TLS),
    /// `server_name` (default the host of `to`). Without it, plain TCP.
    #[serde(default)]
    pub tls: Option<ClientTlsConfig>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

#[typetag::deserialize(name = "hl7_app_ack")]
impl SinkConfig for AppAckSinkConfig {
    fn build(&self, _ctx: &BuildContext, index: usize) -> Result<Arc<dyn Sink>, String> {
        if !self.to.contains(':') {
            return Err(format!("to: {:?} should be HOST:PORT", self.to));
        }
        let tls = self
            .tls
            .as_ref()
            .map(|t| t.client(self.to.trim()))
            .transpose()?;
        Ok(Arc::new(AppAckSink {
            name: format!("hl7_app_ack#{index}"),
            config: self.clone(),
            tls,
        }))
    }
}

struct AppAckSink {
    name: String,
    config: AppAckSinkConfig,
    tls: Option<ClientTls>,
}

impl AppAckSink {
    async fn send(
        &self,
        work: &mut Work,
        code: AckCode,
        reason: Option<&str>,
    ) -> Result<(), StepError> {
        let msg = crate::expr::parsed(work)?;
        let h = msg.header();
        let detail = reason.map(|r| ErrorDetail {
            code: ErrorCode::InternalError,
            segment: "MSH".into(),
            sequence: 1,
            field: 0,
            text: r.chars().take(200).collect(),
        });
        let now = chrono::Utc::now().format("%Y%m%d%H%M%S").to_string();
        let text = ack::build(
            &h,
            code,
            detail.as_ref(),
            &huizhen_core::message::new_id(),
            &now,
        );
        let bytes =
            crate::charset::encode(&text, msg.charset()).unwrap_or_else(|_| text.into_bytes());
        let t = self.config.timeout;
        let fail = |what: String| {
            StepError::new(format!(
                "{}: application ACK {} for MSH-10 {} not delivered to {}: {what}",
                self.name,
                code.as_str(),
                h.control_id,
                self.config.to
            ))
        };
        let mut stream = huizhen_core::tls::connect(self.config.to.trim(), self.tls.as_ref(), t)
            .await
            .map_err(fail)?;
        stream
            .write_all(&frame(&bytes))
            .await
            .map_err(|e| fail(e.to_string()))?;
        // Receivers may answer an ACK with an ACK of their own; read it (or the close) briefly.
        let mut buf = [0u8; 1024];
        let _ =
            tokio::time::timeout(Duration::from_millis(500).min(t), stream.read(&mut buf)).await;
        tracing::info!(sink = %self.name, to = %self.config.to, control_id = %h.control_id, code = code.as_str(), "application ACK sent");
        Ok(())
    }
}

impl Sink for AppAckSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Vec<Effect>, StepError>> {
        Box::pin(async move {
            if matches!(
                work.headers.get("hl7-app-ack").map(String::as_str),
                Some("Always" | "SuccessOnly")
            ) {
                self.send(work, AckCode::AA, None).await?;
            }
            Ok(Vec::new())
        })
    }

    fn on_dead<'a>(
        &'a self,
        work: &'a mut Work,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<(), StepError>> {
        Box::pin(async move {
            if matches!(
                work.headers.get("hl7-app-ack").map(String::as_str),
                Some("Always" | "ErrorOnly")
            ) {
                self.send(work, AckCode::AE, Some(reason)).await?;
            }
            Ok(())
        })
    }
}
