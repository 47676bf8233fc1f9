//! The call's quality (STANDARDS RTC-20, RTC-21): the clients' `stats` messages (their
//! `getStats()` samples) and, every [`ROUND`], the SFU's own view of every leg — the RTCP
//! receiver reports the subscribers send about what the engine forwards them (RTT, fraction
//! lost, jitter: `remote-inbound-rtp`) and the receiver side of each publication (loss and
//! jitter of what the engine receives: `inbound-rtp`). Each track's samples become a
//! per-session summary (`huizhen_domain::consultation::call_quality`), stored with the
//! consultation (`call_quality`), the worst figures per room and kind go to /metrics, and the
//! RTC-21 alerts go to everyone in the room as `quality_alert` messages, to /metrics and to the
//! log.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use huizhen_core::runner::call_metrics;
use huizhen_core::store::calls::QualityKey;
use huizhen_domain::consultation::call_quality::{AlertChange, MAX_SAMPLES, Sample, TrackQuality};
use huizhen_domain::consultation::room::RoomRole;
use rtc::statistics::report::RTCStatsReportEntry;
use webrtc::peer_connection::StatsSelector;

use crate::hub::{Hub, Room};
use crate::protocol::ServerMsg;
use crate::sfu::Pc;

/// How often the SFU samples its legs, stores dirty summaries and sets the metrics.
pub const ROUND: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    session: String,
    pc: String,
    track: String,
    direction: String,
    source: &'static str,
}

struct Entry {
    kind: String,
    quality: TrackQuality,
    /// Changed since last stored.
    dirty: bool,
    /// The last sample (for the metrics of this round).
    last: Sample,
    last_at: i64,
    /// Counters of the previous SFU round (packets received, packets lost).
    prev: Option<(u64, i64)>,
}

/// A room's track summaries.
#[derive(Default)]
pub(crate) struct RoomQuality {
    tracks: HashMap<Key, Entry>,
}

impl RoomQuality {
    /// The alerts raised and not cleared, per track: (session, pc, track, direction, source,
    /// kind, metric, the metric's last figure, when it came).
    pub(crate) fn active_alerts(&self) -> Vec<ActiveTrackAlert> {
        let mut out: Vec<ActiveTrackAlert> = self
            .tracks
            .iter()
            .flat_map(|(k, e)| {
                e.quality
                    .active()
                    .into_iter()
                    .map(move |m| ActiveTrackAlert {
                        session: k.session.clone(),
                        pc: k.pc.clone(),
                        track: k.track.clone(),
                        direction: k.direction.clone(),
                        source: k.source,
                        kind: e.kind.clone(),
                        metric: m,
                        value: m.value(&e.last),
                        at: e.last_at,
                    })
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.session, &a.pc, &a.track, a.metric.code()).cmp(&(
                &b.session,
                &b.pc,
                &b.track,
                b.metric.code(),
            ))
        });
        out
    }
}

/// One alert of [`RoomQuality::active_alerts`].
pub(crate) struct ActiveTrackAlert {
    pub(crate) session: String,
    pub(crate) pc: String,
    pub(crate) track: String,
    pub(crate) direction: String,
    pub(crate) source: &'static str,
    pub(crate) kind: String,
    pub(crate) metric: huizhen_domain::consultation::call_quality::Metric,
    pub(crate) value: Option<f64>,
    pub(crate) at: i64,
}

fn now_ms() -> i64 {
    huizhen_core::message::now_ms()
}

impl RoomQuality {
    fn add(
        &mut self,
        session: &str,
        pc: &str,
        source: &'static str,
        s: &Sample,
        at: i64,
    ) -> Vec<(Key, String, AlertChange)> {
        let key = Key {
            session: session.to_owned(),
            pc: pc.to_owned(),
            track: s.track.clone(),
            direction: s.direction.clone(),
            source,
        };
        let e = self.tracks.entry(key.clone()).or_insert_with(|| Entry {
            kind: s.kind.clone(),
            quality: TrackQuality::default(),
            dirty: false,
            last: Sample::default(),
            last_at: 0,
            prev: None,
        });
        e.dirty = true;
        e.last = s.clone();
        e.last_at = at;
        e.quality
            .add(s, at)
            .into_iter()
            .map(|c| (key.clone(), s.kind.clone(), c))
            .collect()
    }
}

fn alert_msg(role: RoomRole, key: &Key, kind: String, c: &AlertChange) -> ServerMsg {
    ServerMsg::QualityAlert {
        session: key.session.clone(),
        role,
        pc: key.pc.clone(),
        track: key.track.clone(),
        kind,
        direction: key.direction.clone(),
        source: key.source,
        metric: c.metric.code(),
        value: (c.value * 10.0).round() / 10.0,
        threshold: c.threshold,
        active: c.active,
    }
}

impl Hub {
    /// A client's `stats` message: its samples of the tracks of `pc`.
    pub(crate) async fn stats(
        &self,
        room: &Arc<Room>,
        session: &str,
        pc: String,
        samples: Vec<Sample>,
    ) -> Option<ServerMsg> {
        if samples.len() > MAX_SAMPLES {
            return Some(ServerMsg::error(
                "bad-message",
                format!(
                    "stats for {pc}: at most {MAX_SAMPLES} samples, got {}",
                    samples.len()
                ),
            ));
        }
        for (i, s) in samples.iter().enumerate() {
            if let Err(e) = s.check() {
                return Some(ServerMsg::error(
                    "bad-message",
                    format!("stats for {pc}: samples[{i}].{e}"),
                ));
            }
        }
        let st = room.state.lock().await;
        let m = st.members.get(session)?;
        if !m.publications.contains_key(&pc) && !m.subscriptions.contains_key(&pc) {
            return Some(ServerMsg::error(
                "unknown-pc",
                format!("stats for {pc}: no such publication or subscription"),
            ));
        }
        let role = m.claims.role;
        let at = now_ms();
        let changes: Vec<_> = {
            let mut q = room.quality.lock().unwrap_or_else(|p| p.into_inner());
            samples
                .iter()
                .flat_map(|s| q.add(session, &pc, "client", s, at))
                .collect()
        };
        for (key, kind, c) in changes {
            alerted(&room.id, &kind, &c);
            Room::send_all(&st, "", &alert_msg(role, &key, kind, &c));
        }
        None
    }

    /// Starts the sampling rounds of this hub (once).
    pub(crate) fn start_quality(self: &Arc<Hub>) {
        if self
            .quality_started
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let hub: Weak<Hub> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ROUND);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(hub) = hub.upgrade() else { return };
                hub.round().await;
            }
        });
    }

    /// One round: the SFU's samples of every leg, the store, the metrics.
    async fn round(&self) {
        let rooms = self.rooms_now();
        call_metrics::set_call_rooms(rooms.len());
        for room in rooms {
            self.sample_sfu(&room).await;
            self.store_quality(&room).await;
            self.role_alert_metrics(&room).await;
        }
    }

    /// The active alerts of `room` per participant role in /metrics (every role present, 0
    /// when none; the series go with the room).
    async fn role_alert_metrics(&self, room: &Arc<Room>) {
        let roles: HashMap<String, RoomRole> = {
            let st = room.state.lock().await;
            st.members
                .iter()
                .map(|(s, m)| (s.clone(), m.claims.role))
                .collect()
        };
        let mut counts: HashMap<RoomRole, i64> = roles.values().map(|r| (*r, 0)).collect();
        let alerts = room
            .quality
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .active_alerts();
        for a in alerts {
            if let Some(r) = roles.get(&a.session) {
                *counts.entry(*r).or_default() += 1;
            }
        }
        for role in RoomRole::ALL {
            match counts.get(&role) {
                Some(n) => call_metrics::set_call_role_alerts(&room.id, role.code(), *n),
                None => call_metrics::forget_call_role_alerts(&room.id, role.code()),
            }
        }
    }

    async fn sample_sfu(&self, room: &Arc<Room>) {
        // (session, role, pc id, peer connection, publication?)
        let legs: Vec<(String, RoomRole, String, Pc, bool)> = {
            let st = room.state.lock().await;
            st.members
                .iter()
                .flat_map(|(s, m)| {
                    let role = m.claims.role;
                    m.publications
                        .iter()
                        .map(move |(id, (p, _))| (s.clone(), role, id.clone(), p.pc.clone(), true))
                        .chain(m.subscriptions.iter().map(move |(id, sub)| {
                            (s.clone(), role, id.clone(), sub.peer.pc.clone(), false)
                        }))
                })
                .collect()
        };
        let at = now_ms();
        let mut alerts = Vec::new();
        for (session, role, pc_id, pc, publication) in legs {
            let report = pc.get_stats(Instant::now(), StatsSelector::None).await;
            let mut q = room.quality.lock().unwrap_or_else(|p| p.into_inner());
            for entry in report.iter() {
                let sample = match entry {
                    // What the engine receives from a publisher.
                    RTCStatsReportEntry::InboundRtp(s) if publication => {
                        let r = &s.received_rtp_stream_stats;
                        let kind = kind_code(&r.rtp_stream_stats.kind);
                        let track = if s.track_identifier.is_empty() {
                            format!("ssrc-{}", r.rtp_stream_stats.ssrc)
                        } else {
                            s.track_identifier.clone()
                        };
                        let key = Key {
                            session: session.clone(),
                            pc: pc_id.clone(),
                            track: track.clone(),
                            direction: "inbound".into(),
                            source: "sfu",
                        };
                        let counters = (r.packets_received, r.packets_lost.max(0));
                        let prev = q.tracks.get(&key).and_then(|e| e.prev);
                        let loss_pct = prev.and_then(|(rx, lost)| {
                            let drx = counters.0.saturating_sub(rx) as f64;
                            let dl = (counters.1 - lost).max(0) as f64;
                            (drx + dl > 0.0).then(|| 100.0 * dl / (drx + dl))
                        });
                        let sample = Sample {
                            track,
                            kind,
                            direction: "inbound".into(),
                            loss_pct,
                            jitter_ms: Some(r.jitter * 1000.0),
                            ..Sample::default()
                        };
                        Some((sample, Some(counters)))
                    }
                    // What a subscriber reports (RTCP RR) about what the engine forwards it.
                    RTCStatsReportEntry::RemoteInboundRtp(s) if !publication => {
                        let r = &s.received_rtp_stream_stats;
                        let sample = Sample {
                            track: format!("ssrc-{}", r.rtp_stream_stats.ssrc),
                            kind: kind_code(&r.rtp_stream_stats.kind),
                            direction: "outbound".into(),
                            rtt_ms: (s.round_trip_time_measurements > 0)
                                .then_some(s.round_trip_time * 1000.0),
                            loss_pct: Some(s.fraction_lost * 100.0),
                            jitter_ms: Some(r.jitter * 1000.0),
                            ..Sample::default()
                        };
                        Some((sample, None))
                    }
                    _ => None,
                };
                let Some((sample, counters)) = sample else {
                    continue;
                };
                if sample.check().is_err() {
                    continue;
                }
                for (key, kind, c) in q.add(&session, &pc_id, "sfu", &sample, at) {
                    alerts.push((role, key, kind, c));
                }
                if let Some(c) = counters {
                    let key = Key {
                        session: session.clone(),
                        pc: pc_id.clone(),
                        track: sample.track.clone(),
                        direction: sample.direction.clone(),
                        source: "sfu",
                    };
                    if let Some(e) = q.tracks.get_mut(&key) {
                        e.prev = Some(c);
                    }
                }
            }
        }
        if !alerts.is_empty() {
            let st = room.state.lock().await;
            for (role, key, kind, c) in alerts {
                alerted(&room.id, &kind, &c);
                Room::send_all(&st, "", &alert_msg(role, &key, kind, &c));
            }
        }
    }

    /// Stores the summaries that changed and sets the room's metrics (the worst figure per
    /// kind over the samples of the last two rounds).
    async fn store_quality(&self, room: &Arc<Room>) {
        let at = now_ms();
        let fresh = at - 2 * ROUND.as_millis() as i64;
        let (dirty, worst) = {
            let mut q = room.quality.lock().unwrap_or_else(|p| p.into_inner());
            let mut worst: HashMap<String, [Option<f64>; 3]> = HashMap::new();
            for e in q.tracks.values().filter(|e| e.last_at >= fresh) {
                let w = worst.entry(e.kind.clone()).or_default();
                for (i, v) in [e.last.rtt_ms, e.last.loss_pct, e.last.jitter_ms]
                    .into_iter()
                    .enumerate()
                {
                    if let Some(v) = v {
                        w[i] = Some(w[i].map_or(v, |x: f64| x.max(v)));
                    }
                }
            }
            let dirty: Vec<(Key, String, _)> = q
                .tracks
                .iter_mut()
                .filter(|(_, e)| e.dirty)
                .map(|(k, e)| {
                    e.dirty = false;
                    (k.clone(), e.kind.clone(), e.quality.summary.clone())
                })
                .collect();
            (dirty, worst)
        };
        for (kind, w) in worst {
            call_metrics::set_call_quality(&room.id, &kind, w[0], w[1], w[2]);
        }
        for (k, kind, summary) in dirty {
            let key = QualityKey {
                consultation: &room.consultation,
                session: &k.session,
                pc: &k.pc,
                track: &k.track,
                kind: &kind,
                direction: &k.direction,
                source: k.source,
            };
            if let Err(e) = self.store().call_quality_put(&key, &summary, at).await {
                tracing::error!(error = %e, room = %room.id, "call quality not stored");
                // Kept dirty: the next round tries again.
                let mut q = room.quality.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(entry) = q.tracks.get_mut(&k) {
                    entry.dirty = true;
                }
            }
        }
    }

    /// Stores what a room's quality has left to store and removes its metrics (it emptied).
    pub(crate) async fn close_quality(&self, room: &Arc<Room>) {
        self.store_quality(room).await;
        call_metrics::forget_call_room(&room.id);
        let active: Vec<(String, &'static str)> = {
            let q = room.quality.lock().unwrap_or_else(|p| p.into_inner());
            q.tracks
                .values()
                .flat_map(|e| {
                    e.quality
                        .active()
                        .into_iter()
                        .map(move |m| (e.kind.clone(), m.code()))
                })
                .collect()
        };
        for (kind, metric) in active {
            call_metrics::call_alert(&kind, metric, false);
        }
    }
}

fn kind_code(k: &rtc::rtp_transceiver::rtp_sender::RtpCodecKind) -> String {
    match k {
        rtc::rtp_transceiver::rtp_sender::RtpCodecKind::Audio => "audio".into(),
        _ => "video".into(),
    }
}

/// The metric and the log of an alert raised or cleared (no patient data: room and figures).
fn alerted(room: &str, kind: &str, c: &AlertChange) {
    call_metrics::call_alert(kind, c.metric.code(), c.active);
    if c.active {
        tracing::warn!(
            room,
            kind,
            metric = c.metric.code(),
            value = c.value,
            threshold = c.threshold,
            "call quality alert (RTC-21)"
        );
    } else {
        tracing::info!(
            room,
            kind,
            metric = c.metric.code(),
            value = c.value,
            "call quality alert cleared"
        );
    }
}
