//! Recording the call (RTC-30, CN-05, CN-30): per-track files in the codec forwarded — Ogg/Opus,
//! IVF/VP8 (VP9, AV1), H.264 Annex B — written by the `rtc` crate's media writers straight into
//! the engine's object store (sealed with the data keys as it goes, SHA-256 of the file), one
//! `recordings` row per track with CN-30's retention class.
//!
//! A recording starts only when the domain says so ([`room::may_record`]: the starter's token
//! allows it, the informed consent and every present participant's recording consent are on
//! file), and goes on only while that holds: someone joining without a recording consent stops
//! it. Start and stop are audited and told to everyone in the room
//! (`{"type":"recording","active":…}`).
//!
//! Each recorded track is an async task that takes the publisher's RTP from the forwarding
//! broadcast and hands it to a blocking thread, which runs the media writer over the object
//! writer (file I/O and sealing never run on the async workers). The task ends when the
//! recording stops or the track ends, and then writes the track's row.

use std::cell::RefCell;
use std::io::{Seek, SeekFrom, Write};
use std::rc::Rc;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use huizhen_core::media::RecordError;
use huizhen_core::objects::{ObjectInfo, ObjectStore, ObjectWriter};
use huizhen_core::store::Store;
use huizhen_core::store::recordings::RecordingRow;
use huizhen_domain::consultation::room::{self, Permissions, RoomRole};
use rtc::media::io::Writer;
use rtc::media::io::h26x_writer::H26xWriter;
use rtc::media::io::ivf_reader::IVFFileHeader;
use rtc::media::io::ivf_writer::IVFWriter;
use rtc::media::io::ogg_writer::OggWriter;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::hub::{Hub, Room, RoomState};
use crate::protocol::ServerMsg;
use crate::sfu::{Forwarded, Publication};

/// The container a codec is recorded in, if the engine records it.
pub fn container(mime: &str) -> Option<&'static str> {
    let m = mime.to_ascii_lowercase();
    match m.as_str() {
        "audio/opus" => Some("ogg"),
        "video/vp8" | "video/vp9" | "video/av1" => Some("ivf"),
        "video/h264" => Some("h264"),
        _ => None,
    }
}

/// A recording in progress in one room.
pub(crate) struct Active {
    pub(crate) id: String,
    pub(crate) started_by: String,
    pub(crate) started_at: DateTime<Utc>,
    /// The recorded tracks, by `publication key/track id`.
    pub(crate) tracks: std::collections::HashMap<String, TrackJob>,
    /// Set to who stopped it and why to stop every track.
    pub(crate) stop: tokio::sync::watch::Sender<Option<Stopped>>,
}

/// Who stopped a recording (empty: the engine) and why.
#[derive(Clone, Debug, Default)]
pub(crate) struct Stopped {
    pub(crate) by: String,
    pub(crate) role: Option<RoomRole>,
    pub(crate) reason: String,
}

/// Who starts or stops a recording: a participant with their room token, or an API user in
/// the room role their user role stands for (`POST /api/consultations/{id}/recording`).
#[derive(Clone, Debug)]
pub(crate) struct Starter {
    pub(crate) sub: String,
    pub(crate) role: RoomRole,
    pub(crate) perms: Permissions,
    /// The client's address (audit).
    pub(crate) source: String,
    /// How the request came: `` (signaling) or ` through the API`.
    pub(crate) via: &'static str,
}

fn refused(code: &'static str, message: impl Into<String>) -> RecordError {
    RecordError {
        code,
        message: message.into(),
    }
}

pub(crate) struct TrackJob {
    pub(crate) done: JoinHandle<Option<RecordingRow>>,
}

/// What a track's row needs to know about the room and the recording.
#[derive(Clone)]
pub(crate) struct Context {
    pub(crate) store: Store,
    pub(crate) objects: Arc<ObjectStore>,
    pub(crate) consultation: String,
    pub(crate) facility: String,
    pub(crate) room: String,
    pub(crate) recording: String,
    pub(crate) started_by: String,
}

/// A writer the media writer owns and the thread takes back to finish the object.
#[derive(Clone)]
struct Shared(Rc<RefCell<Option<ObjectWriter>>>);

impl Shared {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut ObjectWriter) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        match self.0.borrow_mut().as_mut() {
            Some(w) => f(w),
            None => Err(std::io::Error::other("the object is finished")),
        }
    }
}

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.with(|w| w.write(buf))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.with(|w| w.flush())
    }
}

impl Seek for Shared {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.with(|w| w.seek(pos))
    }
}

/// Writes the packets of `rx` into a new object in `container`; the object and the packets
/// written. Runs on a blocking thread.
fn write_track(
    objects: &ObjectStore,
    container: &str,
    mime: &str,
    channels: u16,
    rx: std::sync::mpsc::Receiver<rtp::Packet>,
) -> Result<(ObjectInfo, u64), String> {
    let object = objects.create().map_err(|e| e.to_string())?;
    let shared = Shared(Rc::new(RefCell::new(Some(object))));
    let mut writer: Box<dyn Writer> = match container {
        "ogg" => Box::new(
            OggWriter::new(shared.clone(), 48_000, channels.clamp(1, 2) as u8)
                .map_err(|e| e.to_string())?,
        ),
        "ivf" => {
            let four_cc = match mime.to_ascii_lowercase().as_str() {
                "video/vp9" => *b"VP90",
                "video/av1" => *b"AV01",
                _ => *b"VP80",
            };
            let header = IVFFileHeader {
                signature: *b"DKIF",
                version: 0,
                header_size: 32,
                four_cc,
                // The decoder reads the real size from the key frames.
                width: 640,
                height: 480,
                timebase_denominator: 30,
                timebase_numerator: 1,
                num_frames: 0,
                unused: 0,
            };
            Box::new(IVFWriter::new(shared.clone(), &header).map_err(|e| e.to_string())?)
        }
        _ => Box::new(H26xWriter::new(shared.clone(), false)),
    };
    let mut packets = 0u64;
    let mut last_ts: Option<u32> = None;
    let audio = container == "ogg";
    while let Ok(p) = rx.recv() {
        // The Ogg writer counts granules from timestamp differences: a late (reordered) audio
        // packet is left out rather than read as a jump of a day.
        if audio {
            if let Some(prev) = last_ts
                && (p.header.timestamp.wrapping_sub(prev) as i32) < 0
            {
                continue;
            }
            last_ts = Some(p.header.timestamp);
        }
        match writer.write_rtp(&p) {
            Ok(()) => packets += 1,
            Err(e) => tracing::debug!(error = %e, "a packet not recorded"),
        }
    }
    writer.close().map_err(|e| e.to_string())?;
    drop(writer);
    let object = shared
        .0
        .borrow_mut()
        .take()
        .ok_or("the object was taken twice")?;
    let info = object.finish().map_err(|e| e.to_string())?;
    Ok((info, packets))
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Starts recording track `f` of `publication`: the task ends at `stop` or when the track
/// ends, and writes the row.
pub(crate) fn start_track(
    ctx: Context,
    publication: &Publication,
    role: RoomRole,
    f: &Arc<Forwarded>,
    mut stop: tokio::sync::watch::Receiver<Option<Stopped>>,
) -> Option<TrackJob> {
    let Some(container) = container(&f.codec.mime_type) else {
        tracing::warn!(codec = %f.codec.mime_type, "a track in this codec is not recorded");
        return None;
    };
    let mut rx = f.tx.subscribe();
    let (tx, sync_rx) = std::sync::mpsc::channel::<rtp::Packet>();
    let objects = ctx.objects.clone();
    let mime = f.codec.mime_type.clone();
    let channels = f.codec.channels;
    let writer = tokio::task::spawn_blocking(move || {
        write_track(&objects, container, &mime, channels, sync_rx)
    });
    let participant = publication.participant.clone();
    let source = publication.source.clone();
    let kind = if f.kind == RtpCodecKind::Audio {
        "audio"
    } else {
        "video"
    };
    let codec = f.codec.mime_type.to_ascii_lowercase();
    let codec = match codec.as_str() {
        "video/vp8" => "video/VP8".to_owned(),
        "video/vp9" => "video/VP9".to_owned(),
        "video/h264" => "video/H264".to_owned(),
        "video/av1" => "video/AV1".to_owned(),
        _ => codec,
    };
    let done = tokio::spawn(async move {
        let started = Utc::now();
        loop {
            if stop.borrow_and_update().is_some() {
                break;
            }
            tokio::select! {
                r = stop.changed() => if r.is_err() { break },
                p = rx.recv() => match p {
                    Ok(p) => {
                        if tx.send(p).is_err() {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(lost = n, "recording fell behind; packets not recorded");
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        drop(tx);
        let ended = Utc::now();
        let stopped = stop.borrow().clone().unwrap_or_else(|| Stopped {
            by: String::new(),
            role: None,
            reason: "the track ended".into(),
        });
        let (info, packets) = match writer.await {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                tracing::error!(error = %e, consultation = %ctx.consultation, "a track's recording failed");
                return None;
            }
            Err(e) => {
                tracing::error!(error = %e, "a track's recording thread failed");
                return None;
            }
        };
        let row = RecordingRow {
            id: huizhen_core::message::new_id(),
            consultation: ctx.consultation.clone(),
            facility: ctx.facility.clone(),
            room: ctx.room.clone(),
            recording: ctx.recording.clone(),
            participant,
            role: role.code().to_owned(),
            source,
            kind: kind.to_owned(),
            codec,
            container: container.to_owned(),
            object_id: info.id.clone(),
            sha256: info.sha256.clone(),
            bytes: info.bytes as i64,
            packets: packets as i64,
            started_at: ms(started),
            ended_at: ms(ended),
            started_by: ctx.started_by.clone(),
            retention_class: room::RECORDING_RETENTION_CLASS.to_owned(),
            retain_until: ms(room::recording_retained_until(started)),
            stopped_by: stopped.by,
            stop_reason: stopped.reason,
        };
        // The object is kept whatever happens to the row: it is found by its id in the log.
        if let Err(e) = ctx.store.recording_insert(&row).await {
            tracing::error!(error = %e, object = %info.id, "a recording's row not written; the object stays");
            return None;
        }
        Some(row)
    });
    Some(TrackJob { done })
}

/// Starts every track of `publication` that `active` does not record yet.
pub(crate) async fn start_publication(
    ctx: &Context,
    active: &mut Active,
    key: &str,
    publication: &Arc<Publication>,
    role: RoomRole,
) {
    for f in publication.tracks.lock().await.iter() {
        let track = format!("{key}/{}", f.id);
        if active.tracks.contains_key(&track) {
            continue;
        }
        if let Some(job) = start_track(ctx.clone(), publication, role, f, active.stop.subscribe()) {
            active.tracks.insert(track, job);
        }
    }
}

impl Hub {
    /// `{"type":"record","active":…}` from `session`: start or stop the room's recording.
    pub(crate) async fn record(
        self: &Arc<Hub>,
        room: &Arc<Room>,
        session: &str,
        active: bool,
    ) -> Option<ServerMsg> {
        let starter = {
            let st = room.state.lock().await;
            let m = st.members.get(session)?;
            Starter {
                sub: m.claims.sub.clone(),
                role: m.claims.role,
                perms: m.claims.perms,
                source: m.source.clone(),
                via: "",
            }
        };
        self.set_recording(room, &starter, active)
            .await
            .err()
            .map(|e| ServerMsg::error(e.code, e.message))
    }

    /// Starts (`active`) or stops the room's recording for `by`: the same rules whether it
    /// comes from signaling or the API. The recording's id.
    pub(crate) async fn set_recording(
        &self,
        room: &Arc<Room>,
        by: &Starter,
        active: bool,
    ) -> Result<String, RecordError> {
        if !active {
            if !by.perms.record {
                return Err(refused(
                    "not-permitted",
                    format!("a {} may not stop a recording", by.role),
                ));
            }
            return self
                .stop_recording(
                    room,
                    Stopped {
                        by: by.sub.clone(),
                        role: Some(by.role),
                        reason: format!("stopped by {} ({}){}", by.sub, by.role, by.via),
                    },
                )
                .await
                .ok_or_else(|| refused("not-recording", "nothing is being recorded"));
        }
        let Some(objects) = self.objects.clone() else {
            return Err(refused(
                "recording-unavailable",
                "this engine has no object store to record into",
            ));
        };
        let stored = match self.store.consultation(&room.consultation).await {
            Ok(Some(s)) => s,
            _ => {
                return Err(refused(
                    "unavailable",
                    "the consultation cannot be read; try again",
                ));
            }
        };
        let mut st = room.state.lock().await;
        if st.recording.is_some() {
            return Err(refused("already-recording", "the call is being recorded"));
        }
        let present: Vec<(RoomRole, String)> = st
            .members
            .values()
            .map(|m| (m.claims.role, m.claims.sub.clone()))
            .collect();
        if let Err(refusal) = room::may_record(&stored.consultation, by.role, by.perms, &present) {
            drop(st);
            self.audit_as(
                &by.sub,
                by.role.code(),
                "recording.start",
                &room.consultation,
                &room.facility,
                "denied",
                &by.source,
                format!("room {}{}: {refusal}", room.id, by.via),
            )
            .await;
            let code = match refusal {
                room::RecordingRefusal::NotPermitted { .. } => "not-permitted",
                _ => "no-recording-consent",
            };
            return Err(refused(code, refusal.to_string()));
        }
        let id = huizhen_core::message::new_id();
        let mut active = Active {
            id: id.clone(),
            started_by: by.sub.clone(),
            started_at: Utc::now(),
            tracks: Default::default(),
            stop: tokio::sync::watch::channel(None).0,
        };
        let ctx = self.recording_context(room, &active, objects);
        let ready: Vec<(String, Arc<Publication>)> = st
            .ready
            .iter()
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect();
        for (key, p) in &ready {
            let role = st
                .members
                .get(&p.owner)
                .map(|m| m.claims.role)
                .unwrap_or(RoomRole::Observer);
            start_publication(&ctx, &mut active, key, p, role).await;
        }
        st.recording = Some(active);
        Room::send_all(&st, "", &ServerMsg::Recording { active: true });
        drop(st);
        // Key frames now, so the video files start with one.
        for (_, p) in &ready {
            p.request_key_frames().await;
        }
        self.audit_as(
            &by.sub,
            by.role.code(),
            "recording.start",
            &room.consultation,
            &room.facility,
            "success",
            &by.source,
            format!(
                "room {}, recording {id}{}: every participant's recording consent on file ({})",
                room.id,
                by.via,
                present
                    .iter()
                    .map(|(r, p)| format!("{r} {p}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .await;
        Ok(id)
    }

    pub(crate) fn recording_context(
        &self,
        room: &Room,
        active: &Active,
        objects: Arc<ObjectStore>,
    ) -> Context {
        Context {
            store: self.store.clone(),
            objects,
            consultation: room.consultation.clone(),
            facility: room.facility.clone(),
            room: room.id.clone(),
            recording: active.id.clone(),
            started_by: active.started_by.clone(),
        }
    }

    /// A publication became ready: recorded too if the room records.
    pub(crate) async fn record_publication(
        &self,
        room: &Room,
        st: &mut RoomState,
        key: &str,
        p: &Arc<Publication>,
    ) {
        let Some(objects) = self.objects.clone() else {
            return;
        };
        let role = st
            .members
            .get(&p.owner)
            .map(|m| m.claims.role)
            .unwrap_or(RoomRole::Observer);
        if let Some(mut active) = st.recording.take() {
            let ctx = self.recording_context(room, &active, objects);
            start_publication(&ctx, &mut active, key, p, role).await;
            st.recording = Some(active);
        }
    }

    /// Someone joined a room that records: the recording goes on only with their consent too.
    pub(crate) async fn recheck_recording(
        &self,
        room: &Arc<Room>,
        consultation: &huizhen_domain::consultation::Consultation,
    ) {
        let refusal = {
            let st = room.state.lock().await;
            if st.recording.is_none() {
                return;
            }
            let present: Vec<(RoomRole, String)> = st
                .members
                .values()
                .map(|m| (m.claims.role, m.claims.sub.clone()))
                .collect();
            match room::recording_allowed(consultation, &present) {
                Ok(()) => return,
                Err(r) => r,
            }
        };
        self.stop_recording(
            room,
            Stopped {
                by: String::new(),
                role: None,
                reason: refusal.to_string(),
            },
        )
        .await;
    }

    /// Stops the room's recording, if any: every track's file finished and its row written,
    /// then everyone told and the stop audited. The id of the recording stopped.
    pub(crate) async fn stop_recording(&self, room: &Room, stopped: Stopped) -> Option<String> {
        let active = {
            let mut st = room.state.lock().await;
            st.recording.take()?
        };
        let reason = stopped.reason.clone();
        let (actor, role) = (stopped.by.clone(), stopped.role);
        let _ = active.stop.send(Some(stopped));
        let mut rows = Vec::new();
        for (_, job) in active.tracks {
            if let Ok(Some(row)) = job.done.await {
                rows.push(row);
            }
        }
        {
            let st = room.state.lock().await;
            Room::send_all(&st, "", &ServerMsg::Recording { active: false });
        }
        self.audit_as(
            if actor.is_empty() {
                "anonymous"
            } else {
                &actor
            },
            role.map(RoomRole::code).unwrap_or_default(),
            "recording.stop",
            &room.consultation,
            &room.facility,
            "success",
            "",
            format!(
                "room {}, recording {} (started by {} at {}): {reason}; {} tracks: {}",
                room.id,
                active.id,
                active.started_by,
                active.started_at.to_rfc3339(),
                rows.len(),
                rows.iter()
                    .map(|r| format!("{} {} sha256 {}", r.id, r.container, r.sha256))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .await;
        Some(active.id)
    }
}
