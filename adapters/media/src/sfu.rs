//! The selective forwarding unit (STANDARDS RTC-01, RTC-11): every participant publishes to
//! the engine on a peer connection of its own, and each other admitted participant gets one
//! subscription peer connection per publication, offered by the engine, carrying the
//! publisher's tracks. RTP is forwarded without decoding or transcoding.
//!
//! A simulcast publication (`a=simulcast:send q;h;f`, one SSRC per rid) arrives on one remote
//! track; its packets are told apart by SSRC (each layer's SSRC learnt from its rid header
//! extension when the layer opens) and broadcast with their layer index. Each subscription
//! forwards one layer per video track ([`crate::forward`]), chosen from the subscriber's
//! bandwidth estimate ([`crate::layers`]), on one SSRC with continuous sequence numbers and
//! timestamps ([`crate::rewrite`]). Every second each video track's publisher gets a REMB
//! bitrate hint covering the layers its receivers take.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use huizhen_core::media::MediaConfig;
use rtc::interceptor::Registry;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_nack, configure_rtcp_reports, register_default_interceptors,
};
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_AV1, MIME_TYPE_G722, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_PCMA, MIME_TYPE_PCMU,
    MIME_TYPE_RTX, MIME_TYPE_VP8, MIME_TYPE_VP9, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::transport::RTCIceCandidateType;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind,
};
use tokio::sync::{Notify, broadcast};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState,
};

use crate::feedback::{Feedback, Tap};
use crate::layers::{self, Layer};
use crate::simulcast;

pub use crate::forward::attach;

/// A peer connection as the rooms keep it.
pub type Pc = Arc<dyn PeerConnection>;

/// Makes the engine's peer connections: codecs, UDP ports, the announced address.
pub struct PcFactory {
    cfg: MediaConfig,
    next_port: AtomicU16,
}

/// What a peer connection's events tell its owner.
struct Events {
    gathered: Arc<Notify>,
    on_track: Option<Arc<Publication>>,
    state: tokio::sync::watch::Sender<RTCPeerConnectionState>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Events {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.notify_one();
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state.send(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        if let Some(p) = &self.on_track {
            p.add_track(track).await;
        }
    }
}

/// A peer connection with what its owner waits on.
pub struct Peer {
    pub pc: Pc,
    gathered: Arc<Notify>,
    pub state: tokio::sync::watch::Receiver<RTCPeerConnectionState>,
    /// What the remote reports over RTCP (REMB, receiver reports, key-frame requests).
    pub feedback: Arc<Feedback>,
}

impl Peer {
    /// The local description once ICE gathering completed (non-trickle: the SDP carries the
    /// engine's candidates), within 5 s.
    pub async fn local_sdp(&self) -> Result<String, String> {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.gathered.notified()).await;
        self.pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or_else(|| "no local description".to_string())
    }
}

impl PcFactory {
    pub fn new(cfg: MediaConfig) -> PcFactory {
        let first = cfg.udp_ports.map(|(a, _)| a).unwrap_or(0);
        PcFactory {
            cfg,
            next_port: AtomicU16::new(first),
        }
    }

    /// A UDP port of the configured range that is free now (0: any).
    fn port(&self) -> u16 {
        let Some((a, b)) = self.cfg.udp_ports else {
            return 0;
        };
        let span = u32::from(b - a) + 1;
        for _ in 0..span {
            let p = self.next_port.fetch_add(1, Ordering::Relaxed);
            let p = if p < a || p > b {
                self.next_port.store(a + 1, Ordering::Relaxed);
                a
            } else {
                p
            };
            if UdpSocket::bind((self.cfg.bind, p)).is_ok() {
                return p;
            }
        }
        0
    }

    /// A new peer connection; `publication` receives its remote tracks.
    pub async fn build(&self, publication: Option<Arc<Publication>>) -> Result<Peer, String> {
        let mut media = MediaEngine::default();
        register_codecs(&mut media).map_err(|e| e.to_string())?;
        let feedback = Arc::new(Feedback::default());
        let registry = if publication.is_some() {
            // A publication: the crate's defaults (NACK, reports, the simulcast header
            // extensions, TWCC feedback to the publisher).
            register_default_interceptors(Registry::new(), &mut media).map_err(|e| e.to_string())?
        } else {
            // A subscription: no transport-cc offered, so the subscriber reports its estimate
            // as REMB (goog-remb), which the tap reads.
            configure_rtcp_reports(configure_nack(Registry::new(), &mut media))
        };
        let registry = Tap::install(registry, feedback.clone());
        let servers = self
            .cfg
            .ice_servers
            .iter()
            .filter(|s| s.secret.is_none())
            .map(|s| rtc::peer_connection::transport::RTCIceServer {
                urls: s.urls.clone(),
                username: s.username.clone().unwrap_or_default(),
                credential: s
                    .credential
                    .as_ref()
                    .map(|c| c.expose().to_owned())
                    .unwrap_or_default(),
            })
            .collect::<Vec<_>>();
        let config = RTCConfigurationBuilder::new()
            .with_ice_servers(servers)
            .build();
        let mut setting = SettingEngineBuilder::new();
        if let Some(ip) = self.cfg.public_ip {
            setting = setting.with_nat_1to1_ips(vec![ip.to_string()], RTCIceCandidateType::Host);
        }
        // The engine's sockets on loopback serve tests and single-machine demos.
        if self.cfg.bind.is_loopback() {
            setting = setting.with_include_loopback_candidate(true);
        }
        let setting = setting.build();
        let gathered = Arc::new(Notify::new());
        let (tx, rx) = tokio::sync::watch::channel(RTCPeerConnectionState::New);
        let events = Arc::new(Events {
            gathered: gathered.clone(),
            on_track: publication,
            state: tx,
        });
        let addr = format!("{}:{}", self.cfg.bind, self.port());
        let pc = PeerConnectionBuilder::new()
            .with_configuration(config)
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_setting_engine(setting)
            .with_handler(events as Arc<dyn PeerConnectionEventHandler>)
            .with_udp_addrs(vec![addr])
            .build()
            .await
            .map_err(|e| e.to_string())?;
        Ok(Peer {
            pc: Arc::new(pc),
            gathered,
            state: rx,
            feedback,
        })
    }
}

/// The codecs of every engine peer connection, in order of preference (RTC-11): H.264
/// constrained baseline with packetization-mode=1 (profile 42e01f) first, for hardware
/// decoders and Safari/iOS, then VP8 as the fallback, then the rest; Opus first for audio.
pub fn register_codecs(media: &mut MediaEngine) -> rtc::shared::error::Result<()> {
    let audio = |mime: &str, clock_rate, channels, fmtp: &str, pt| RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.to_owned(),
            clock_rate,
            channels,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: pt,
    };
    for c in [
        audio(MIME_TYPE_OPUS, 48_000, 2, "minptime=10;useinbandfec=1", 111),
        audio(MIME_TYPE_G722, 8000, 0, "", 9),
        audio(MIME_TYPE_PCMU, 8000, 0, "", 0),
        audio(MIME_TYPE_PCMA, 8000, 0, "", 8),
    ] {
        media.register_codec(c, RtpCodecKind::Audio)?;
    }
    let feedback = ["goog-remb:", "ccm:fir", "nack:", "nack:pli"]
        .iter()
        .map(|f| {
            let (typ, parameter) = f.split_once(':').unwrap_or((f, ""));
            RTCPFeedback {
                typ: typ.to_owned(),
                parameter: parameter.to_owned(),
            }
        })
        .collect::<Vec<_>>();
    let video = |mime: &str, fmtp: &str, pt| RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback: feedback.clone(),
        },
        payload_type: pt,
    };
    let rtx = |pt, apt: u8| RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_RTX.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: format!("apt={apt}"),
            rtcp_feedback: vec![],
        },
        payload_type: pt,
    };
    for (codec, rtx_pt) in [
        (
            video(
                MIME_TYPE_H264,
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
                102,
            ),
            103,
        ),
        (video(MIME_TYPE_VP8, "", 96), 97),
        (
            video(
                MIME_TYPE_H264,
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
                125,
            ),
            105,
        ),
        (
            video(
                MIME_TYPE_H264,
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640032",
                123,
            ),
            124,
        ),
        (video(MIME_TYPE_VP9, "profile-id=0", 98), 99),
        (video(MIME_TYPE_AV1, "profile-id=0", 41), 106),
    ] {
        let apt = codec.payload_type;
        media.register_codec(codec, RtpCodecKind::Video)?;
        media.register_codec(rtx(rtx_pt, apt), RtpCodecKind::Video)?;
    }
    Ok(())
}

/// The engine's answer to an offer on `pc`, created and set as the local description.
pub async fn answer(pc: &Pc) -> Result<(), String> {
    let a = pc.create_answer(None).await.map_err(|e| e.to_string())?;
    pc.set_local_description(a).await.map_err(|e| e.to_string())
}

/// The answer as sent to the client: the engine's codec preference first
/// ([`simulcast::prefer_h264`]). The `rtc` crate answers in the offer's order and will not set a
/// changed local description; the order only tells the publisher what to send, and the engine
/// receives every format it answered in any case.
pub fn answer_for_client(local: &str) -> String {
    simulcast::prefer_h264(local)
}

/// A packet of a forwarded track with its layer (0 without simulcast).
pub struct LayerPacket {
    pub layer: usize,
    pub packet: rtp::Packet,
}

/// What one subscription wants of a video track: the layer it aims at (`None`: paused) and
/// its bandwidth estimate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Demand {
    pub layer: Option<usize>,
    pub estimate_bps: u64,
}

/// One forwarded track of a publication.
pub struct Forwarded {
    pub id: String,
    pub kind: RtpCodecKind,
    pub codec: RTCRtpCodec,
    /// The packets of one stream — the highest layer of a simulcast track — for the recorder.
    pub tx: broadcast::Sender<rtp::Packet>,
    /// Every packet with its layer, for the subscriptions.
    pub layered: broadcast::Sender<Arc<LayerPacket>>,
    pub remote: Arc<dyn TrackRemote>,
    /// The SSRC of the first packet (of the first layer to arrive).
    pub media_ssrc: u32,
    /// The simulcast rids, lowest first (empty: one stream).
    pub rids: Vec<String>,
    /// Each layer's SSRC once it arrived.
    pub ssrcs: StdMutex<Vec<Option<u32>>>,
    /// Bytes received per layer since the last rate measurement.
    bytes: Vec<AtomicU64>,
    /// Each layer's rate, measured on arrival (the default until measured).
    rates: StdMutex<Vec<u64>>,
    /// What each subscription wants of this track (video), by subscription.
    pub demand: StdMutex<HashMap<u64, Demand>>,
    /// RTP packets received from the publisher.
    pub received: AtomicU64,
}

impl Forwarded {
    /// The number of layers (1 without simulcast).
    pub fn layer_count(&self) -> usize {
        self.rids.len().max(1)
    }

    /// The layers as [`layers::allocate`] takes them, lowest first, at their measured rates.
    pub fn layers(&self) -> Vec<Layer> {
        let rates = self.rates.lock().unwrap_or_else(|p| p.into_inner());
        (0..self.layer_count())
            .map(|i| Layer {
                rid: self.rids.get(i).cloned().unwrap_or_default(),
                bps: rates
                    .get(i)
                    .copied()
                    .unwrap_or(simulcast::DEFAULT_SINGLE_BPS),
            })
            .collect()
    }

    /// The layer of a packet of `ssrc`, if known.
    fn layer_of(&self, ssrc: u32) -> Option<usize> {
        let ssrcs = self.ssrcs.lock().unwrap_or_else(|p| p.into_inner());
        ssrcs.iter().position(|s| *s == Some(ssrc))
    }

    /// Notes that `ssrc` carries `rid` (a layer opened).
    fn learn(&self, ssrc: u32, rid: Option<&str>) -> Option<usize> {
        let layer = if self.rids.is_empty() {
            0
        } else {
            self.rids.iter().position(|r| Some(r.as_str()) == rid)?
        };
        let mut ssrcs = self.ssrcs.lock().unwrap_or_else(|p| p.into_inner());
        ssrcs[layer] = Some(ssrc);
        Some(layer)
    }

    /// Measures each layer's rate over `elapsed` (a layer that sent nothing keeps its last
    /// rate: it may be paused by the publisher until a receiver wants it).
    fn measure(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64().max(0.001);
        let mut rates = self.rates.lock().unwrap_or_else(|p| p.into_inner());
        for (i, b) in self.bytes.iter().enumerate() {
            let bytes = b.swap(0, Ordering::Relaxed);
            if bytes > 0 {
                let now = (bytes as f64 * 8.0 / secs) as u64;
                // Smoothed: half the last measurement, half the previous figure.
                rates[i] = (rates[i] + now) / 2;
            }
        }
    }

    /// Asks the publisher for a key frame of `layer` (PLI).
    pub async fn request_key_frame(&self, layer: usize) {
        let ssrc = {
            let ssrcs = self.ssrcs.lock().unwrap_or_else(|p| p.into_inner());
            ssrcs.get(layer).copied().flatten()
        };
        if let Some(media_ssrc) = ssrc {
            let _ = self
                .remote
                .write_rtcp(vec![Box::new(PictureLossIndication {
                    sender_ssrc: 0,
                    media_ssrc,
                })])
                .await;
        }
    }

    /// The bitrate hint for the publisher of this (video) track: a simulcast track's layers up
    /// to the highest any subscription wants; a single stream the lowest estimate of its
    /// subscriptions. `None`: nobody subscribes.
    pub fn publisher_hint(&self) -> Option<u64> {
        let demand: Vec<Demand> = {
            let d = self.demand.lock().unwrap_or_else(|p| p.into_inner());
            d.values().copied().collect()
        };
        if demand.is_empty() {
            return None;
        }
        if self.rids.is_empty() {
            return demand.iter().map(|d| d.estimate_bps).min();
        }
        let taken: Vec<Option<usize>> = demand.iter().map(|d| d.layer).collect();
        layers::publisher_budget(&self.layers(), &taken)
    }
}

/// What a participant publishes on one peer connection (camera and microphone, or a screen).
pub struct Publication {
    pub pc_id: String,
    pub owner: String,
    pub participant: String,
    pub source: String,
    /// The tracks the offer announced (sendonly/sendrecv audio and video sections).
    pub expected: usize,
    /// The simulcast rids of the offer's video, lowest first (empty: no simulcast).
    pub rids: Vec<String>,
    pub tracks: tokio::sync::Mutex<Vec<Arc<Forwarded>>>,
    /// Wakes the room when every expected track arrived.
    pub complete: Notify,
}

/// How often a video publisher gets its bitrate hint (and its layers' rates are measured).
pub const HINT_ROUND: Duration = Duration::from_secs(1);

impl Publication {
    /// A publication of `sdp`, the publisher's offer.
    pub fn new(
        pc_id: &str,
        owner: &str,
        participant: &str,
        source: &str,
        sdp: &str,
    ) -> Publication {
        Publication {
            pc_id: pc_id.to_owned(),
            owner: owner.to_owned(),
            participant: participant.to_owned(),
            source: source.to_owned(),
            expected: sending_sections(sdp),
            rids: simulcast::send_rids(sdp),
            tracks: tokio::sync::Mutex::new(Vec::new()),
            complete: Notify::new(),
        }
    }

    async fn add_track(&self, track: Arc<dyn TrackRemote>) {
        let Some(ssrc) = track.ssrcs().await.first().copied() else {
            return;
        };
        let Some(codec) = track.codec(ssrc).await else {
            return;
        };
        let kind = track.kind().await;
        let rids = if kind == RtpCodecKind::Video {
            self.rids.clone()
        } else {
            Vec::new()
        };
        let n = rids.len().max(1);
        let rates = if kind == RtpCodecKind::Audio {
            vec![simulcast::DEFAULT_AUDIO_BPS]
        } else {
            simulcast::default_rates(rids.len())
        };
        let (tx, _) = broadcast::channel(512);
        let (layered, _) = broadcast::channel(1024);
        let f = Arc::new(Forwarded {
            id: track.track_id().await,
            kind,
            codec,
            tx: tx.clone(),
            layered,
            remote: track.clone(),
            media_ssrc: ssrc,
            rids,
            ssrcs: StdMutex::new(vec![None; n]),
            bytes: (0..n).map(|_| AtomicU64::new(0)).collect(),
            rates: StdMutex::new(rates),
            demand: StdMutex::new(HashMap::new()),
            received: AtomicU64::new(0),
        });
        // The first layer's SSRC is known now (its rid with it).
        let rid = track.rid(ssrc).await;
        f.learn(ssrc, rid.as_deref());
        let fwd = f.clone();
        tokio::spawn(async move {
            let top = fwd.layer_count() - 1;
            while let Some(evt) = track.poll().await {
                match evt {
                    TrackRemoteEvent::OnOpen(init) => {
                        fwd.learn(init.ssrc, init.rid.as_deref());
                    }
                    TrackRemoteEvent::OnRtpPacket(packet) => {
                        fwd.received.fetch_add(1, Ordering::Relaxed);
                        let ssrc = packet.header.ssrc;
                        let layer = match fwd.layer_of(ssrc) {
                            Some(l) => l,
                            None => {
                                let rid = track.rid(ssrc).await;
                                match fwd.learn(ssrc, rid.as_deref()) {
                                    Some(l) => l,
                                    // A stream of no announced rid: not forwarded.
                                    None => continue,
                                }
                            }
                        };
                        fwd.bytes[layer]
                            .fetch_add(packet.payload.len() as u64 + 12, Ordering::Relaxed);
                        if layer == top {
                            let _ = fwd.tx.send(packet.clone());
                        }
                        let _ = fwd.layered.send(Arc::new(LayerPacket { layer, packet }));
                    }
                    _ => {}
                }
            }
        });
        if kind == RtpCodecKind::Video {
            tokio::spawn(hints(Arc::downgrade(&f)));
        }
        let mut tracks = self.tracks.lock().await;
        tracks.push(f);
        if tracks.len() >= self.expected {
            self.complete.notify_waiters();
            self.complete.notify_one();
        }
    }

    /// Asks the publisher for a key frame of each video track and layer (a new subscriber).
    pub async fn request_key_frames(&self) {
        for t in self.tracks.lock().await.iter() {
            if t.kind == RtpCodecKind::Video {
                for layer in 0..t.layer_count() {
                    t.request_key_frame(layer).await;
                }
            }
        }
    }
}

/// Every [`HINT_ROUND`] while the track lives: measures its layers' rates and sends the
/// publisher a REMB with [`Forwarded::publisher_hint`] (RTC-10, RTC-11).
async fn hints(track: std::sync::Weak<Forwarded>) {
    let mut last = Instant::now();
    loop {
        tokio::time::sleep(HINT_ROUND).await;
        let Some(f) = track.upgrade() else { return };
        f.measure(last.elapsed());
        last = Instant::now();
        let Some(bps) = f.publisher_hint() else {
            continue;
        };
        let ssrcs: Vec<u32> = {
            let s = f.ssrcs.lock().unwrap_or_else(|p| p.into_inner());
            s.iter().flatten().copied().collect()
        };
        let remb = ReceiverEstimatedMaximumBitrate {
            sender_ssrc: 0,
            bitrate: bps as f32,
            ssrcs,
        };
        if f.remote.write_rtcp(vec![Box::new(remb)]).await.is_err() {
            return;
        }
    }
}

/// The audio/video sections of an offer that send media: how many tracks to wait for.
pub fn sending_sections(sdp: &str) -> usize {
    let mut count = 0;
    let mut media = false;
    let mut sends = true;
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            if media && sends {
                count += 1;
            }
            media = m.starts_with("audio") || m.starts_with("video");
            sends = true;
        } else if line == "a=recvonly" || line == "a=inactive" {
            sends = false;
        }
    }
    if media && sends {
        count += 1;
    }
    count
}
