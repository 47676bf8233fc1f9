//! Test and bench clients of the SFU: webrtc-crate peers on loopback that publish synthetic
//! RTP (simulcast layers or one stream, VP8 with key frames marked, and Opus) and record what
//! their subscriptions receive. Each video payload carries the VP8 descriptor and key-frame
//! byte, the layer index and the send time (ns since [`epoch`]), so a receiver knows which
//! layer it got, whether a switch came on a key frame and how long the packet took.

#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use huizhen_core::media::MediaConfig;
use huizhen_media::feedback::{Feedback, Tap};
use huizhen_media::sfu::{Forwarded, PcFactory, Peer};
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::Notify;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
};

/// The instant send times are counted from.
pub fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// The SFU's configuration for loopback.
pub fn loopback() -> MediaConfig {
    MediaConfig {
        bind: [127, 0, 0, 1].into(),
        ..MediaConfig::default()
    }
}

/// One received video packet.
#[derive(Clone, Copy, Debug)]
pub struct Pkt {
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub layer: u8,
    pub key: bool,
}

/// What a client's subscriptions received.
#[derive(Default)]
pub struct Received {
    pub video: Mutex<Vec<Pkt>>,
    pub audio: AtomicU64,
    /// Video packets received (also when `keep` is off).
    pub video_packets: AtomicU64,
    /// Each video packet's send time (ns since [`epoch`]) and publisher-to-subscriber delay (µs).
    pub samples: Mutex<Vec<(u64, u32)>>,
    /// Keep every video packet (tests) or only count them (benches).
    pub keep: bool,
    pub remotes: Mutex<Vec<Arc<dyn TrackRemote>>>,
}

impl Received {
    /// The layer of the last `n` video packets, if they all have the same.
    pub fn last_layers(&self, n: usize) -> Option<u8> {
        let v = self.video.lock().unwrap();
        if v.len() < n {
            return None;
        }
        let l = v[v.len() - 1].layer;
        v[v.len() - n..].iter().all(|p| p.layer == l).then_some(l)
    }

    pub fn video_count(&self) -> u64 {
        self.video_packets.load(Ordering::Relaxed)
    }
}

struct Handler {
    gathered: Arc<Notify>,
    received: Arc<Received>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.notify_one();
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let r = self.received.clone();
        let video = track.kind().await == RtpCodecKind::Video;
        if video {
            r.remotes.lock().unwrap().push(track.clone());
        }
        tokio::spawn(async move {
            while let Some(evt) = track.poll().await {
                let TrackRemoteEvent::OnRtpPacket(p) = evt else {
                    continue;
                };
                if !video {
                    r.audio.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let b = &p.payload;
                if b.len() < 11 {
                    continue;
                }
                r.video_packets.fetch_add(1, Ordering::Relaxed);
                let sent = u64::from_be_bytes(b[3..11].try_into().unwrap());
                let delay = now_ns().saturating_sub(sent) / 1000;
                r.samples.lock().unwrap().push((sent, delay as u32));
                if r.keep {
                    r.video.lock().unwrap().push(Pkt {
                        seq: p.header.sequence_number,
                        ts: p.header.timestamp,
                        ssrc: p.header.ssrc,
                        layer: b[2],
                        key: b[1] & 0x01 == 0,
                    });
                }
            }
        });
    }
}

/// A client peer connection.
pub struct Client {
    pub pc: Arc<dyn PeerConnection>,
    gathered: Arc<Notify>,
    pub received: Arc<Received>,
}

impl Client {
    /// A client; `feedback` taps the RTCP its remote sends (the publisher's REMB).
    pub async fn new(feedback: Option<Arc<Feedback>>) -> Client {
        Client::with(feedback, true).await
    }

    pub async fn with(feedback: Option<Arc<Feedback>>, keep: bool) -> Client {
        let mut media = MediaEngine::default();
        media.register_default_codecs().unwrap();
        Client::with_engine(feedback, keep, media).await
    }

    /// A client whose codecs are `media`'s.
    pub async fn with_engine(
        feedback: Option<Arc<Feedback>>,
        keep: bool,
        mut media: MediaEngine,
    ) -> Client {
        let mut registry = register_default_interceptors(Registry::new(), &mut media).unwrap();
        if let Some(f) = feedback {
            registry = Tap::install(registry, f);
        }
        let gathered = Arc::new(Notify::new());
        let received = Arc::new(Received {
            keep,
            ..Received::default()
        });
        let pc = PeerConnectionBuilder::new()
            .with_media_engine(media)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Handler {
                gathered: gathered.clone(),
                received: received.clone(),
            }) as Arc<dyn PeerConnectionEventHandler>)
            .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
            .build()
            .await
            .unwrap();
        Client {
            pc: Arc::new(pc),
            gathered,
            received,
        }
    }

    async fn gathered_sdp(&self) -> String {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.gathered.notified()).await;
        self.pc.local_description().await.unwrap().sdp
    }

    pub async fn offer(&self) -> String {
        let offer = self.pc.create_offer(None).await.unwrap();
        self.pc.set_local_description(offer).await.unwrap();
        self.gathered_sdp().await
    }

    pub async fn accept(&self, answer: &str) {
        self.pc
            .set_remote_description(RTCSessionDescription::answer(answer.into()).unwrap())
            .await
            .unwrap();
    }

    /// Answers the SFU's `offer`.
    pub async fn answer(&self, offer: &str) -> String {
        self.pc
            .set_remote_description(RTCSessionDescription::offer(offer.into()).unwrap())
            .await
            .unwrap();
        let a = self.pc.create_answer(None).await.unwrap();
        self.pc.set_local_description(a).await.unwrap();
        self.gathered_sdp().await
    }

    /// Adds a VP8 video track with one encoding per rid (none: one stream) and an Opus track.
    pub async fn add_simulcast(&self, rids: &[&str]) -> Sending {
        let audio_ssrc: u32 = rand::random();
        let audio = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "s".into(),
            "mic".into(),
            "mic".into(),
            RtpCodecKind::Audio,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(audio_ssrc),
                    ..Default::default()
                },
                codec: RTCRtpCodec {
                    mime_type: "audio/opus".into(),
                    clock_rate: 48_000,
                    channels: 2,
                    ..Default::default()
                },
                ..Default::default()
            }],
        )));
        self.pc
            .add_track(audio.clone() as Arc<dyn TrackLocal>)
            .await
            .unwrap();
        let names: Vec<String> = if rids.is_empty() {
            vec![String::new()]
        } else {
            rids.iter().map(|r| r.to_string()).collect()
        };
        let layers: Vec<(String, u32)> = names.into_iter().map(|r| (r, rand::random())).collect();
        let video = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "s".into(),
            "cam".into(),
            "cam".into(),
            RtpCodecKind::Video,
            layers
                .iter()
                .map(|(rid, ssrc)| RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        rid: rid.clone(),
                        ssrc: Some(*ssrc),
                        ..Default::default()
                    },
                    codec: RTCRtpCodec {
                        mime_type: "video/VP8".into(),
                        clock_rate: 90_000,
                        ..Default::default()
                    },
                    ..Default::default()
                })
                .collect(),
        )));
        self.pc
            .add_track(video.clone() as Arc<dyn TrackLocal>)
            .await
            .unwrap();
        Sending {
            audio,
            audio_ssrc,
            video,
            layers,
        }
    }

    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}

/// A publisher's tracks, before sending starts.
pub struct Sending {
    audio: Arc<TrackLocalStaticRTP>,
    audio_ssrc: u32,
    video: Arc<TrackLocalStaticRTP>,
    /// (rid, SSRC), lowest first.
    layers: Vec<(String, u32)>,
}

/// Each layer's payload size and packets per 10 ms tick divisor: layer 0 250 B every 20 ms
/// (~105 kbit/s), layer 1 800 B every 20 ms (~325 kbit/s), layer 2 1000 B every 10 ms
/// (~810 kbit/s); a single stream 1200 B every 10 ms (~970 kbit/s).
fn shape(layers: usize, layer: usize) -> (usize, u64) {
    match (layers, layer) {
        (1, _) => (1200, 1),
        (_, 0) => (250, 2),
        (_, 1) => (800, 2),
        _ => (1000, 1),
    }
}

impl Sending {
    /// Starts sending (after the answer): every 10 ms a packet of the layers due, a key frame
    /// every 25th packet of each layer, audio every 20 ms; until the returned notify fires.
    pub async fn start(self, client: &Client, offer: &str) -> Arc<Notify> {
        self.start_counted(client, offer).await.0
    }

    /// [`Sending::start`], with the count of video packets sent.
    pub async fn start_counted(
        self,
        client: &Client,
        offer: &str,
    ) -> (Arc<Notify>, Arc<AtomicU64>) {
        let stop = Arc::new(Notify::new());
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let (mut vp8, mut opus, mut mid_id, mut rid_id) = (96, 111, None, None);
        for sender in client.pc.get_senders().await {
            let Ok(params) = sender.get_parameters().await else {
                continue;
            };
            for c in &params.rtp_parameters.codecs {
                if c.rtp_codec.mime_type.eq_ignore_ascii_case("video/vp8") {
                    vp8 = c.payload_type;
                } else if c.rtp_codec.mime_type.eq_ignore_ascii_case("audio/opus") {
                    opus = c.payload_type;
                }
            }
            for e in &params.rtp_parameters.header_extensions {
                if e.uri == "urn:ietf:params:rtp-hdrext:sdes:mid" {
                    mid_id = Some(e.id as u8);
                } else if e.uri == "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id" {
                    rid_id = Some(e.id as u8);
                }
            }
        }
        let video_mid = video_mid(offer);
        let s = stop.clone();
        tokio::spawn(async move {
            let n = self.layers.len();
            let mut seq = vec![0u16; n];
            let mut ts: Vec<u32> = (0..n).map(|_| rand::random()).collect();
            let mut count = vec![0u64; n];
            let (mut aseq, mut ats) = (0u16, 0u32);
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut t = 0u64;
            loop {
                tokio::select! {
                    _ = s.notified() => break,
                    _ = tick.tick() => {}
                }
                for (l, (rid, ssrc)) in self.layers.iter().enumerate() {
                    let (size, every) = shape(n, l);
                    if !t.is_multiple_of(every) {
                        continue;
                    }
                    let key = count[l].is_multiple_of(25);
                    count[l] += 1;
                    let mut payload = vec![0u8; size];
                    payload[0] = 0x10;
                    payload[1] = if key { 0x00 } else { 0x01 };
                    payload[2] = l as u8;
                    payload[3..11].copy_from_slice(&now_ns().to_be_bytes());
                    let mut header = rtp::header::Header {
                        version: 2,
                        marker: true,
                        payload_type: vp8,
                        sequence_number: seq[l],
                        timestamp: ts[l],
                        ssrc: *ssrc,
                        ..Default::default()
                    };
                    if let (Some(id), Some(mid)) = (mid_id, &video_mid) {
                        let _ =
                            header.set_extension(id, bytes::Bytes::from(mid.clone().into_bytes()));
                    }
                    if let Some(id) = rid_id
                        && !rid.is_empty()
                    {
                        let _ =
                            header.set_extension(id, bytes::Bytes::from(rid.clone().into_bytes()));
                    }
                    let _ = self
                        .video
                        .write_rtp(rtp::Packet {
                            header,
                            payload: payload.into(),
                        })
                        .await;
                    counter.fetch_add(1, Ordering::Relaxed);
                    seq[l] = seq[l].wrapping_add(1);
                    ts[l] = ts[l].wrapping_add(900 * every as u32);
                }
                if t.is_multiple_of(2) {
                    let mut payload = vec![0u8; 80];
                    payload[0] = 0xf8;
                    let _ = self
                        .audio
                        .write_rtp(rtp::Packet {
                            header: rtp::header::Header {
                                version: 2,
                                payload_type: opus,
                                sequence_number: aseq,
                                timestamp: ats,
                                ssrc: self.audio_ssrc,
                                ..Default::default()
                            },
                            payload: payload.into(),
                        })
                        .await;
                    aseq = aseq.wrapping_add(1);
                    ats = ats.wrapping_add(960);
                }
                t += 1;
            }
        });
        (stop, sent)
    }
}

/// The mid of the offer's video section.
fn video_mid(sdp: &str) -> Option<String> {
    let mut video = false;
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            video = m.starts_with("video");
        } else if video && let Some(mid) = line.strip_prefix("a=mid:") {
            return Some(mid.to_owned());
        }
    }
    None
}

/// The SFU's answer to a publisher's `offer` on `peer` (as the engine answers one).
pub async fn answer(peer: &Peer, offer: &str) -> String {
    peer.pc
        .set_remote_description(RTCSessionDescription::offer(offer.into()).unwrap())
        .await
        .unwrap();
    huizhen_media::sfu::answer(&peer.pc).await.unwrap();
    huizhen_media::sfu::answer_for_client(&peer.local_sdp().await.unwrap())
}

/// A subscriber of `tracks` through the SFU.
pub struct Sub {
    pub client: Client,
    pub sfu: Peer,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    pub received: Arc<Received>,
}

impl Sub {
    pub async fn close(&self) {
        for t in &self.tasks {
            t.abort();
        }
        self.client.close().await;
        let _ = self.sfu.pc.close().await;
    }
}

/// Subscribes a new client to `tracks` (the SFU offers, the client answers).
pub async fn subscribe(factory: &PcFactory, tracks: &[Arc<Forwarded>]) -> Sub {
    subscribe_with(factory, tracks, true).await
}

pub async fn subscribe_with(factory: &PcFactory, tracks: &[Arc<Forwarded>], keep: bool) -> Sub {
    let sfu = factory.build(None).await.unwrap();
    subscribe_peer(None, sfu, tracks, keep).await
}

/// Runs `f` on the runtime `rt` (the rooms bench keeps the SFU's peers on a runtime of their
/// own, to measure their CPU apart from the clients'), or here.
pub async fn on<T: Send + 'static>(
    rt: Option<&tokio::runtime::Handle>,
    f: impl Future<Output = T> + Send + 'static,
) -> T {
    match rt {
        Some(h) => h.spawn(f).await.unwrap(),
        None => f.await,
    }
}

/// Subscribes a new client to `tracks` through the SFU peer `sfu`, whose side runs on `rt`.
pub async fn subscribe_peer(
    rt: Option<&tokio::runtime::Handle>,
    sfu: Peer,
    tracks: &[Arc<Forwarded>],
    keep: bool,
) -> Sub {
    let tracks = tracks.to_vec();
    let (sfu, tasks, offer) = on(rt, async move {
        let tasks = huizhen_media::sfu::attach(&sfu, "P", false, &tracks)
            .await
            .unwrap();
        let offer = sfu.pc.create_offer(None).await.unwrap();
        sfu.pc.set_local_description(offer).await.unwrap();
        let offer = sfu.local_sdp().await.unwrap();
        (sfu, tasks, offer)
    })
    .await;
    let client = Client::with(None, keep).await;
    let answer = client.answer(&offer).await;
    let sfu = on(rt, async move {
        sfu.pc
            .set_remote_description(RTCSessionDescription::answer(answer).unwrap())
            .await
            .unwrap();
        sfu
    })
    .await;
    let received = client.received.clone();
    Sub {
        client,
        sfu,
        tasks,
        received,
    }
}

/// Sends a REMB of the returned rate (changeable) every 200 ms on each video track `r`
/// receives, while the returned handle lives.
pub fn remb_loop(r: &Arc<Received>, bps: u64) -> Arc<AtomicU64> {
    let rate = Arc::new(AtomicU64::new(bps));
    let weak = Arc::downgrade(&rate);
    let r = r.clone();
    tokio::spawn(async move {
        loop {
            let Some(rate) = weak.upgrade() else { return };
            let bps = rate.load(Ordering::Relaxed);
            drop(rate);
            let remotes = r.remotes.lock().unwrap().clone();
            for t in remotes {
                let ssrcs = t.ssrcs().await;
                let _ = t
                    .write_rtcp(vec![Box::new(ReceiverEstimatedMaximumBitrate {
                        sender_ssrc: 1,
                        bitrate: bps as f32,
                        ssrcs,
                    })])
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    rate
}

/// Waits (20 s at most) until `check` holds.
pub async fn wait<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "not within 20 s: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
