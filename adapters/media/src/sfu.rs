//! The selective forwarding unit (STANDARDS RTC-01): every participant publishes to the engine
//! on a peer connection of its own, and each other admitted participant gets one subscription
//! peer connection per publication, offered by the engine, carrying the publisher's tracks.
//! RTP is forwarded as received — no decoding, no transcoding: only the SSRC and the payload
//! type are rewritten to what the subscriber's leg negotiated, and header extensions (not
//! negotiated on that leg) are dropped.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use huizhen_core::media::MediaConfig;
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::transport::RTCIceCandidateType;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::{Notify, broadcast};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState,
};
use webrtc::rtp_transceiver::RtpSender;

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
        media.register_default_codecs().map_err(|e| e.to_string())?;
        let registry = register_default_interceptors(Registry::new(), &mut media)
            .map_err(|e| e.to_string())?;
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
        })
    }
}

/// One forwarded track of a publication.
pub struct Forwarded {
    pub id: String,
    pub kind: RtpCodecKind,
    pub codec: RTCRtpCodec,
    pub tx: broadcast::Sender<rtp::Packet>,
    pub remote: Arc<dyn TrackRemote>,
    pub media_ssrc: u32,
    /// RTP packets received from the publisher.
    pub received: AtomicU64,
}

/// What a participant publishes on one peer connection (camera and microphone, or a screen).
pub struct Publication {
    pub pc_id: String,
    pub owner: String,
    pub participant: String,
    pub source: String,
    /// The tracks the offer announced (sendonly/sendrecv audio and video sections).
    pub expected: usize,
    pub tracks: tokio::sync::Mutex<Vec<Arc<Forwarded>>>,
    /// Wakes the room when every expected track arrived.
    pub complete: Notify,
}

impl Publication {
    async fn add_track(&self, track: Arc<dyn TrackRemote>) {
        let Some(ssrc) = track.ssrcs().await.first().copied() else {
            return;
        };
        let Some(codec) = track.codec(ssrc).await else {
            return;
        };
        let kind = track.kind().await;
        let (tx, _) = broadcast::channel(512);
        let f = Arc::new(Forwarded {
            id: track.track_id().await,
            kind,
            codec,
            tx: tx.clone(),
            remote: track.clone(),
            media_ssrc: ssrc,
            received: AtomicU64::new(0),
        });
        let fwd = f.clone();
        tokio::spawn(async move {
            while let Some(evt) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(packet) = evt {
                    fwd.received.fetch_add(1, Ordering::Relaxed);
                    let _ = fwd.tx.send(packet);
                }
            }
        });
        let mut tracks = self.tracks.lock().await;
        tracks.push(f);
        if tracks.len() >= self.expected {
            self.complete.notify_waiters();
            self.complete.notify_one();
        }
    }

    /// Asks the publisher for a key frame of each video track (a new subscriber).
    pub async fn request_key_frames(&self) {
        for t in self.tracks.lock().await.iter() {
            if t.kind == RtpCodecKind::Video {
                let _ = t
                    .remote
                    .write_rtcp(vec![Box::new(PictureLossIndication {
                        sender_ssrc: 0,
                        media_ssrc: t.media_ssrc,
                    })])
                    .await;
            }
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

/// Adds `tracks` to the subscription `pc` (one sender each) and starts forwarding once the
/// subscriber answered; returns the forwarding tasks.
pub async fn attach(
    pc: &Pc,
    stream: &str,
    tracks: &[Arc<Forwarded>],
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let mut tasks = Vec::new();
    for f in tracks {
        let ssrc: u32 = rand::random();
        let local = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            stream.to_owned(),
            f.id.clone(),
            f.id.clone(),
            f.kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: f.codec.clone(),
                ..Default::default()
            }],
        )));
        let sender = pc
            .add_track(local.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(|e| e.to_string())?;
        let mut rx = f.tx.subscribe();
        let codec = f.codec.clone();
        tasks.push(tokio::spawn(async move {
            let mut pt: Option<u8> = None;
            loop {
                let mut packet = match rx.recv().await {
                    Ok(p) => p,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                if pt.is_none() {
                    pt = negotiated_pt(&sender, &codec).await;
                }
                let Some(pt) = pt else { continue };
                packet.header.ssrc = ssrc;
                packet.header.payload_type = pt;
                packet.header.extension = false;
                packet.header.extensions.clear();
                if local.write_rtp(packet).await.is_err() {
                    // Not bound yet (the answer is not in): drop, the next packet may pass.
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    Ok(tasks)
}

/// The payload type `sender`'s leg negotiated for `codec` (same MIME type; for H.264 the same
/// format parameters first).
async fn negotiated_pt(sender: &Arc<dyn RtpSender>, codec: &RTCRtpCodec) -> Option<u8> {
    let params = sender.get_parameters().await.ok()?;
    let same = |c: &&rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters| {
        c.rtp_codec.mime_type.eq_ignore_ascii_case(&codec.mime_type)
    };
    let codecs = &params.rtp_parameters.codecs;
    codecs
        .iter()
        .filter(same)
        .find(|c| c.rtp_codec.sdp_fmtp_line == codec.sdp_fmtp_line)
        .or_else(|| codecs.iter().find(same))
        .map(|c| c.payload_type)
}
