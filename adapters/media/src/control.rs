//! The consultation API's hold on the rooms (`huizhen_core::media::CallControl`): start or
//! stop a room's recording through `POST /api/consultations/{id}/recording` under the same
//! rules as the `record` message (the starter's role may record, the informed consent and
//! every present participant's recording consent on file; audited, everyone in the room told),
//! and what a room is doing now — the recording running and the quality alerts not cleared —
//! for `GET /api/consultations/{id}/call`.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use huizhen_core::media::{
    ActiveAlert, CallControl, CallControlFactory, LiveCall, LiveRecording, RecordError,
    RecordRequest,
};

use crate::hub::{Hub, Room};
use crate::record::Starter;

impl Hub {
    /// The room of `consultation`, if someone is in it.
    fn room_of(&self, consultation: &str) -> Option<Arc<Room>> {
        self.rooms_now()
            .into_iter()
            .find(|r| r.consultation == consultation)
    }
}

impl CallControl for Hub {
    fn record(&self, req: RecordRequest) -> BoxFuture<'_, Result<String, RecordError>> {
        async move {
            let Some(room) = self.room_of(&req.consultation) else {
                return Err(RecordError {
                    code: "not-in-call",
                    message: "nobody is in the consultation's call: a recording starts and stops while the call is held".into(),
                });
            };
            let by = Starter {
                sub: req.by,
                role: req.role,
                perms: req.role.default_permissions(),
                source: req.source,
                via: " through the API",
            };
            self.set_recording(&room, &by, req.active).await
        }
        .boxed()
    }

    fn live<'a>(&'a self, consultation: &'a str) -> BoxFuture<'a, LiveCall> {
        async move {
            let Some(room) = self.room_of(consultation) else {
                return LiveCall::default();
            };
            let st = room.state.lock().await;
            let recording = st.recording.as_ref().map(|a| LiveRecording {
                id: a.id.clone(),
                started_by: a.started_by.clone(),
                started_at: a.started_at.timestamp_millis(),
                tracks: a.tracks.len(),
            });
            let alerts = room
                .quality
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .active_alerts()
                .into_iter()
                .map(|a| {
                    let who = st.members.get(&a.session);
                    ActiveAlert {
                        participant: who.map(|m| m.claims.sub.clone()).unwrap_or_default(),
                        role: who
                            .map(|m| m.claims.role.code().to_owned())
                            .unwrap_or_default(),
                        session: a.session,
                        pc: a.pc,
                        track: a.track,
                        kind: a.kind,
                        direction: a.direction,
                        source: a.source.to_owned(),
                        metric: a.metric.code(),
                        threshold: a.metric.threshold(),
                        value: a.value,
                        at: a.at,
                    }
                })
                .collect();
            LiveCall { recording, alerts }
        }
        .boxed()
    }
}

/// The engine's hub as the API's [`CallControl`].
fn control(s: &huizhen_core::http::AppState) -> Result<Arc<dyn CallControl>, String> {
    crate::signal::hub(s).map(|h| h as Arc<dyn CallControl>)
}

inventory::submit! {
    CallControlFactory { make: control }
}
