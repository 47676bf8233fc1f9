//! The outbox relay: workflow events (an approved prescription, a completed consultation's
//! signed opinion, a consultation's escalation …) go from `workflow_outbox` into their
//! pipeline's journal as `json` messages, source `workflow:<topic's first word>`
//! (`workflow:prescription`, `workflow:consultation`), dedup key `workflow-outbox:<id>`, header
//! `x-huizhen-event: <topic>`. The pipeline then delivers them like any message (a `journal`
//! sink, an HTTP webhook, MLLP, AMQP …), with its retries and dead letters. A change relays at
//! once after its commit (the prescription's request, the consultation workflow's command);
//! the jobs loop relays what a crash or a full pipeline left behind every few seconds.

use std::collections::BTreeMap;

use crate::message::{NewMessage, now_ms};
use crate::runner::PipelineHandle;
use crate::store::Store;

/// How long a relay holds an event before another may try it.
pub const OUTBOX_LEASE_MS: i64 = 30_000;

/// Submits the pending events (up to 64) to their pipelines; returns how many reached a
/// journal. Failures are recorded on the event and retried after its lease.
pub async fn relay_outbox(store: &Store, pipelines: &BTreeMap<String, PipelineHandle>) -> usize {
    let claimed = match store.claim_outbox(now_ms(), OUTBOX_LEASE_MS, 64).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "outbox events not claimed");
            return 0;
        }
    };
    let mut sent = 0;
    for e in claimed {
        let name = e.pipeline.clone().unwrap_or_default();
        let Some(pipeline) = pipelines.get(&name) else {
            let why = format!("no pipeline named {name:?} is running");
            tracing::warn!(event = %e.id, topic = %e.topic, "{why}");
            let _ = store.outbox_failed(&e.id, &why).await;
            continue;
        };
        let mut m = NewMessage::new(&name, &e.facility, "json", e.body.clone());
        let kind = e.topic.split('.').next().unwrap_or("event");
        m.source = format!("workflow:{kind}");
        m.dedup_key = Some(format!("workflow-outbox:{}", e.id));
        m.headers.insert("x-huizhen-event".into(), e.topic.clone());
        match pipeline.submit(m).await {
            Ok(accepted) => match store.outbox_sent(&e.id, &accepted.id).await {
                Ok(()) => sent += 1,
                // Submitted but not marked: the next relay submits again and the dedup key
                // makes that a no-op.
                Err(err) => {
                    tracing::warn!(event = %e.id, error = %err, "outbox event not marked sent")
                }
            },
            Err(err) => {
                tracing::warn!(event = %e.id, pipeline = %name, error = %err, "outbox event not journaled");
                let _ = store.outbox_failed(&e.id, &err.to_string()).await;
            }
        }
    }
    sent
}
