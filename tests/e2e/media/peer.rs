//! A test participant: a WebSocket signaling client and webrtc-crate peer connections that
//! publish a VP8 track of synthetic RTP and count what each subscription receives.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use serde_json::{Value, json};
use tokio::sync::{Mutex, Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
};

type Ws = futures::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Message,
>;

/// A signaling connection: send JSON, receive JSON in order.
pub struct Signal {
    tx: Ws,
    pub rx: mpsc::UnboundedReceiver<Value>,
    /// Messages received while waiting for another kind, in order.
    pending: std::collections::VecDeque<Value>,
}

impl Signal {
    pub async fn connect(url: &str) -> Signal {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let (tx, mut stream) = ws.split();
        let (in_tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                if let Message::Text(t) = m {
                    let _ = in_tx.send(serde_json::from_str::<Value>(&t).unwrap());
                }
            }
        });
        Signal {
            tx,
            rx,
            pending: Default::default(),
        }
    }

    pub async fn send(&mut self, v: Value) {
        self.tx
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    /// The next message of `kind` (others are kept for later), within 30 s (a loaded machine
    /// starting a browser page takes long).
    pub async fn next_of(&mut self, kind: &str) -> Value {
        if let Some(i) = self.pending.iter().position(|m| m["type"] == kind) {
            return self.pending.remove(i).unwrap();
        }
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let m = self
                    .rx
                    .recv()
                    .await
                    .expect("the signaling connection closed");
                if m["type"] == kind {
                    return m;
                }
                self.pending.push_back(m);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {kind} within 30 s"))
    }

    /// Puts a message back, to be the next one read.
    pub fn pending_push_front(&mut self, m: Value) {
        self.pending.push_front(m);
    }

    /// The next message, whatever it is, within 10 s (`None`: the connection closed).
    pub async fn next(&mut self) -> Option<Value> {
        if let Some(m) = self.pending.pop_front() {
            return Some(m);
        }
        tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
            .await
            .expect("no message within 10 s")
    }

    /// Joins `room` with `token`; the `joined` message.
    pub async fn join(url: &str, room: &str, token: &str) -> (Signal, Value) {
        let mut s = Signal::connect(url).await;
        s.send(json!({"type": "join", "room": room, "token": token}))
            .await;
        let m = s.next().await.expect("an answer to join");
        (s, m)
    }
}

struct Handler {
    gathered: Arc<Notify>,
    received: Arc<Mutex<HashMap<String, Arc<AtomicU64>>>>,
    label: String,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.notify_one();
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let count = Arc::new(AtomicU64::new(0));
        self.received
            .lock()
            .await
            .insert(self.label.clone(), count.clone());
        tokio::spawn(async move {
            while let Some(evt) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(_) = evt {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
}

/// A participant's peer connections: one publication, the subscriptions the SFU offers.
pub struct Participant {
    pub signal: Signal,
    publish: Option<Arc<dyn PeerConnection>>,
    subs: HashMap<String, Arc<dyn PeerConnection>>,
    /// RTP packets received per subscription (`sub:<publisher session>/<pc>`).
    pub received: Arc<Mutex<HashMap<String, Arc<AtomicU64>>>>,
    stop: Arc<Notify>,
}

async fn pc(
    label: &str,
    received: Arc<Mutex<HashMap<String, Arc<AtomicU64>>>>,
) -> (Arc<dyn PeerConnection>, Arc<Notify>) {
    let mut media = MediaEngine::default();
    media.register_default_codecs().unwrap();
    pc_with_engine(label, received, media).await
}

/// A peer connection with `media`'s codecs; the RTP it receives counted under `label`.
pub(crate) async fn pc_with_engine(
    label: &str,
    received: Arc<Mutex<HashMap<String, Arc<AtomicU64>>>>,
    media: MediaEngine,
) -> (Arc<dyn PeerConnection>, Arc<Notify>) {
    let gathered = Arc::new(Notify::new());
    let pc = PeerConnectionBuilder::new()
        .with_media_engine(media)
        .with_handler(Arc::new(Handler {
            gathered: gathered.clone(),
            received,
            label: label.to_owned(),
        }) as Arc<dyn PeerConnectionEventHandler>)
        .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
        .build()
        .await
        .unwrap();
    (Arc::new(pc), gathered)
}

pub(crate) async fn gathered_sdp(pc: &Arc<dyn PeerConnection>, gathered: &Notify) -> String {
    let _ = tokio::time::timeout(Duration::from_secs(5), gathered.notified()).await;
    pc.local_description().await.unwrap().sdp
}

impl Participant {
    pub fn new(signal: Signal) -> Participant {
        Participant {
            signal,
            publish: None,
            subs: HashMap::new(),
            received: Arc::new(Mutex::new(HashMap::new())),
            stop: Arc::new(Notify::new()),
        }
    }

    /// Publishes one VP8 track (`cam`) and sends ~50 packets/s of synthetic RTP until dropped.
    pub async fn publish(&mut self) {
        self.publish_inner(false).await
    }

    /// [`Participant::publish`] with an Opus track too (synthetic 20 ms frames).
    pub async fn publish_with_audio(&mut self) {
        self.publish_inner(true).await
    }

    async fn publish_inner(&mut self, audio: bool) {
        let (pc, gathered) = pc("publish", self.received.clone()).await;
        let mic = if audio {
            let ssrc = rand_ssrc().wrapping_add(1);
            let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                "stream".into(),
                "mic-audio".into(),
                "mic-audio".into(),
                RtpCodecKind::Audio,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
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
            pc.add_track(track.clone() as Arc<dyn TrackLocal>)
                .await
                .unwrap();
            Some((track, ssrc))
        } else {
            None
        };
        let ssrc: u32 = rand_ssrc();
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "stream".into(),
            "cam-video".into(),
            "cam-video".into(),
            RtpCodecKind::Video,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: RTCRtpCodec {
                    mime_type: "video/VP8".into(),
                    clock_rate: 90_000,
                    ..Default::default()
                },
                ..Default::default()
            }],
        )));
        pc.add_track(track.clone() as Arc<dyn TrackLocal>)
            .await
            .unwrap();
        let offer = pc.create_offer(None).await.unwrap();
        pc.set_local_description(offer).await.unwrap();
        let sdp = gathered_sdp(&pc, &gathered).await;
        self.signal
            .send(json!({"type": "offer", "pc": "cam", "sdp": sdp}))
            .await;
        let answer = self.signal.next_of("answer").await;
        assert_eq!(answer["pc"], "cam", "{answer}");
        pc.set_remote_description(
            RTCSessionDescription::answer(answer["sdp"].as_str().unwrap().into()).unwrap(),
        )
        .await
        .unwrap();
        // The negotiated VP8 payload type of the sender leg.
        let pt = negotiated_pt(&pc, "video/VP8", 96).await;
        if let Some((track, ssrc)) = mic {
            let pt = negotiated_pt(&pc, "audio/opus", 111).await;
            // A TOC byte (config 31: CELT FB 20 ms, mono, one frame) and a body.
            send_synthetic(track, ssrc, pt, 960, self.stop.clone(), |seq| {
                let mut payload = vec![0u8; 80];
                payload[0] = 0xf8;
                payload[1] = seq as u8;
                (payload, seq == 0)
            });
        }
        // A VP8 payload descriptor (S bit) and a key-frame header byte.
        send_synthetic(track, ssrc, pt, 1800, self.stop.clone(), |_| {
            let mut payload = vec![0u8; 300];
            payload[0] = 0x10;
            payload[1] = 0x00;
            (payload, true)
        });
        self.publish = Some(pc);
    }

    /// Answers the next subscription offer of the SFU; its pc id and publisher session.
    pub async fn accept_subscription(&mut self) -> (String, String) {
        let offer = self.signal.next_of("offer").await;
        let id = offer["pc"].as_str().unwrap().to_owned();
        let (pc, gathered) = pc(&id, self.received.clone()).await;
        pc.set_remote_description(
            RTCSessionDescription::offer(offer["sdp"].as_str().unwrap().into()).unwrap(),
        )
        .await
        .unwrap();
        let answer = pc.create_answer(None).await.unwrap();
        pc.set_local_description(answer).await.unwrap();
        let sdp = gathered_sdp(&pc, &gathered).await;
        self.signal
            .send(json!({"type": "answer", "pc": id, "sdp": sdp}))
            .await;
        self.subs.insert(id.clone(), pc);
        (id, offer["publisher"].as_str().unwrap().to_owned())
    }

    /// Packets received on each subscription so far.
    pub async fn counts(&self) -> HashMap<String, u64> {
        self.received
            .lock()
            .await
            .iter()
            .map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed)))
            .collect()
    }

    pub async fn close(self) {
        self.stop.notify_waiters();
        if let Some(p) = &self.publish {
            let _ = p.close().await;
        }
        for p in self.subs.values() {
            let _ = p.close().await;
        }
    }
}

/// The payload type `pc`'s senders negotiated for `mime` (`default` if none).
async fn negotiated_pt(pc: &Arc<dyn PeerConnection>, mime: &str, default: u8) -> u8 {
    for sender in pc.get_senders().await {
        if let Ok(params) = sender.get_parameters().await
            && let Some(c) = params
                .rtp_parameters
                .codecs
                .iter()
                .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(mime))
        {
            return c.payload_type;
        }
    }
    default
}

/// Sends a synthetic packet every 20 ms on `track` (payload and marker from `frame(seq)`,
/// timestamps `step` apart) until `stop`.
fn send_synthetic(
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    pt: u8,
    step: u32,
    stop: Arc<Notify>,
    frame: impl Fn(u16) -> (Vec<u8>, bool) + Send + 'static,
) {
    tokio::spawn(async move {
        let mut seq: u16 = 0;
        let mut ts: u32 = 0;
        loop {
            let (payload, marker) = frame(seq);
            let packet = rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    marker,
                    payload_type: pt,
                    sequence_number: seq,
                    timestamp: ts,
                    ssrc,
                    ..Default::default()
                },
                payload: payload.into(),
            };
            let _ = track.write_rtp(packet).await;
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(step);
            tokio::select! {
                _ = stop.notified() => break,
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    });
}

fn rand_ssrc() -> u32 {
    let id = huizhen_core::message::new_id();
    u32::from_str_radix(&id[id.len() - 8..], 16).unwrap_or(0x1234_5678)
}
