//! `dicom` (sink): forwards received instances by C-STORE to a remote AE — the expert side's
//! PACS or a regional archive (DCM-01, SCU side).
//!
//! ```yaml
//! sinks:
//!   - dicom:
//!       to: { title: ARCHIVE, host: 10.20.0.9, port: 104, facility: province }
//!       calling: HUIZHEN       # our AE title toward it (default: to.calling, else HUIZHEN)
//!       timeout: 30s           # connect, handshake and each answer
//! ```
//!
//! It takes the `dicom` source's `instance` messages (others, like `study_complete`, pass as
//! delivered: there is nothing to send), finds the instance in the study index and sends its
//! file as received — never transcoded (DCM-02) — on a fresh association, using the instance
//! as stored (SOP class, transfer syntax). Outcomes, through the journal's retry machinery:
//!
//! | what happened | outcome |
//! |---|---|
//! | success or a warning status (0001, Bxxx) | delivered |
//! | no association (refused, unreachable, timed out, aborted), A7xx (out of resources) | retryable: retried with the pipeline's backoff, dead after the last attempt with the reason |
//! | any other failure status (A9xx, Cxxx, 0122 …), the peer does not accept the SOP class in that transfer syntax | permanent: dead letter with the status and the peer's comment |
//! | the message names no instance, or it is not in the index / its file is gone | permanent |
//!
//! A resend after a crash sends the same SOP Instance UID again; a PACS stores it once.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use huizhen_core::config::duration;
use huizhen_core::runner::BuildContext;
use huizhen_core::sinks::{Sink, SinkConfig};
use huizhen_core::store::{Effect, Store};
use huizhen_core::work::{StepError, Work};
use serde::Deserialize;

use crate::dimse::status;
use crate::qr::remote::RemoteAe;
use crate::qr::retrieve::{SendError, store_one};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DicomSinkConfig {
    /// The destination AE.
    pub to: RemoteAe,
    /// Our AE title toward it.
    #[serde(default)]
    pub calling: Option<String>,
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

#[typetag::deserialize(name = "dicom")]
impl SinkConfig for DicomSinkConfig {
    fn build(&self, ctx: &BuildContext, index: usize) -> Result<Arc<dyn Sink>, String> {
        crate::qr::remote::Registry::new(vec![self.to.clone()])
            .map_err(|e| e.replace("remote_aes[0]", "to"))?;
        if let Some(c) = &self.calling {
            crate::source::check_ae_title("calling", c)?;
        }
        let calling = self
            .calling
            .clone()
            .or_else(|| self.to.calling.clone())
            .unwrap_or_else(|| "HUIZHEN".into());
        // Reads the TLS files now, so `validate` reports a missing one.
        self.to.peer(&calling, self.timeout)?;
        Ok(Arc::new(DicomSink {
            name: format!("dicom#{index}"),
            to: self.to.clone(),
            calling,
            timeout: self.timeout,
            store: ctx.extensions.get::<Store>(),
        }))
    }
}

struct DicomSink {
    name: String,
    to: RemoteAe,
    calling: String,
    timeout: Duration,
    store: Option<Arc<Store>>,
}

/// The UIDs an `instance` message names.
fn uids_of(body: &serde_json::Value) -> Result<Option<[String; 3]>, StepError> {
    if body.get("event").and_then(|e| e.as_str()) != Some("instance") {
        return Ok(None);
    }
    let i = &body["instance"];
    let get = |k: &str| {
        i.get(k)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| {
                StepError::permanent(format!("the instance message has no instance.{k}"))
            })
    };
    Ok(Some([
        get("study_uid")?,
        get("series_uid")?,
        get("sop_instance_uid")?,
    ]))
}

impl DicomSink {
    async fn forward(&self, work: &mut Work) -> Result<(), StepError> {
        let Some([study, series, sop]) = uids_of(work.json()?)? else {
            return Ok(());
        };
        let store = self
            .store
            .as_ref()
            .ok_or_else(|| StepError::permanent("the dicom sink needs the engine's store"))?;
        let inst = store
            .dicom_instances(&study, Some(&series))
            .await
            .map_err(|e| StepError::new(format!("the study index could not be read: {e}")))?
            .into_iter()
            .find(|i| i.sop_instance_uid == sop)
            .ok_or_else(|| {
                StepError::permanent(format!("instance {sop} is not in the study index"))
            })?;
        let peer = self
            .to
            .peer(&self.calling, self.timeout)
            .map_err(StepError::permanent)?;
        let proposed = vec![(
            inst.sop_class_uid.clone(),
            vec![inst.transfer_syntax.clone()],
        )];
        let (mut link, accepted) = peer.associate(&proposed, &[]).await.map_err(|e| {
            StepError::new(format!(
                "cannot associate with {} at {}: {e}",
                self.to.title, peer.addr
            ))
        })?;
        let Some(pc) = accepted.first().map(|a| a.id) else {
            let _ = link.release().await;
            return Err(StepError::permanent(format!(
                "{} does not accept {} in {} (instances are never transcoded)",
                self.to.title,
                crate::uids::name(&inst.sop_class_uid),
                crate::uids::name(&inst.transfer_syntax)
            )));
        };
        let mut ignored = false;
        let sent = store_one(&mut link, pc, 1, &inst, None, None, &mut ignored).await;
        let (st, comment) = match sent {
            Ok(x) => x,
            Err(SendError::Local(e)) => {
                link.close().await;
                return Err(StepError::permanent(e));
            }
            Err(SendError::Link(e)) => {
                link.close().await;
                return Err(StepError::new(format!(
                    "the association with {} failed: {e}",
                    self.to.title
                )));
            }
        };
        let _ = link.release().await;
        if status::is_ok(st) {
            tracing::debug!(sink = %self.name, destination = %self.to.title, instance = %sop, "DICOM instance forwarded");
            return Ok(());
        }
        let why = format!(
            "{} refused instance {sop}: status {st:#06x}{}",
            self.to.title,
            comment.map(|c| format!(" ({c})")).unwrap_or_default()
        );
        if st & 0xFF00 == 0xA700 {
            Err(StepError::new(why))
        } else {
            Err(StepError::permanent(why))
        }
    }
}

impl Sink for DicomSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Vec<Effect>, StepError>> {
        Box::pin(async move {
            self.forward(work).await?;
            Ok(Vec::new())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_instance_messages_are_forwarded_and_their_uids_are_required() {
        let none = uids_of(&serde_json::json!({"event": "study_complete"})).unwrap();
        assert!(none.is_none());
        let ok = uids_of(&serde_json::json!({"event": "instance", "instance": {
            "study_uid": "1.2", "series_uid": "1.2.1", "sop_instance_uid": "1.2.1.1"}}))
        .unwrap()
        .unwrap();
        assert_eq!(ok[2], "1.2.1.1");
        let e =
            uids_of(&serde_json::json!({"event": "instance", "instance": {"study_uid": "1.2"}}))
                .unwrap_err();
        assert!(!e.retryable);
        assert!(e.message.contains("instance.series_uid"), "{}", e.message);
    }
}
