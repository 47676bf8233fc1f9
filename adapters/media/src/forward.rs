//! A subscription's forwarding (RTC-10, RTC-11): one local track per forwarded track, fed from
//! the publication's layered broadcast. For each simulcast video exactly one layer flows, chosen
//! every [`ROUND`] from the subscriber's bandwidth estimate ([`layers::estimate`] over the REMB
//! and receiver reports its leg sends, [`layers::allocate`] audio first) and switched only on a
//! key frame of the new layer ([`layers::Switcher`]), the publisher being asked for one (PLI)
//! while the switch waits. Every packet leaves on the subscription's own SSRC with sequence
//! numbers and timestamps that continue across switches ([`Rewriter`]). Audio always flows, and
//! so does a video without simulcast (only its publisher's bitrate hint follows the estimates).

use std::sync::Arc;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::rtp_transceiver::RtpSender;

use crate::layers::{self, Switcher, Video, VideoCodec};
use crate::rewrite::Rewriter;
use crate::sfu::{Demand, Forwarded, Peer};

/// How often a subscription's layers are chosen again.
pub const ROUND: Duration = Duration::from_millis(500);

/// A subscription's estimate before its subscriber reported anything: enough for the middle
/// layer and audio, not for the top one.
pub const INITIAL_ESTIMATE_BPS: u64 = 800_000;

/// The codec of a video track for key-frame detection (`None`: not detected, every packet of
/// the target layer is taken as a switch point).
fn video_codec(codec: &RTCRtpCodec) -> Option<VideoCodec> {
    let m = codec.mime_type.to_ascii_lowercase();
    match m.as_str() {
        "video/vp8" => Some(VideoCodec::Vp8),
        "video/h264" => Some(VideoCodec::H264),
        _ => None,
    }
}

/// Adds `tracks` of `publication` to the subscription `peer` (one sender each) and starts
/// forwarding once the subscriber answered; returns the forwarding tasks (the layer choice
/// among them).
pub async fn attach(
    peer: &Peer,
    stream: &str,
    screen: bool,
    tracks: &[Arc<Forwarded>],
) -> Result<Vec<JoinHandle<()>>, String> {
    let id: u64 = rand::random();
    let mut tasks = Vec::new();
    let mut videos = Vec::new();
    let mut audio = Vec::new();
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
        let sender = peer
            .pc
            .add_track(local.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(|e| e.to_string())?;
        let switcher = (f.kind == RtpCodecKind::Video).then(|| {
            let s = Arc::new(StdMutex::new(Switcher::default()));
            videos.push((f.clone(), s.clone()));
            s
        });
        if f.kind == RtpCodecKind::Audio {
            audio.push(f.clone());
        }
        tasks.push(tokio::spawn(forward(
            f.clone(),
            local,
            sender,
            Rewriter::new(ssrc),
            switcher,
        )));
    }
    if !videos.is_empty() {
        tasks.push(tokio::spawn(choose(
            id,
            peer.feedback.clone(),
            screen,
            audio,
            videos,
        )));
    }
    Ok(tasks)
}

/// Forwards one track to one subscriber: for video the layer its switcher lets through.
async fn forward(
    f: Arc<Forwarded>,
    local: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn RtpSender>,
    mut rewriter: Rewriter,
    switcher: Option<Arc<StdMutex<Switcher>>>,
) {
    let mut rx = f.layered.subscribe();
    let codec = video_codec(&f.codec);
    let clock = u64::from(f.codec.clock_rate.max(1));
    let mut pt: Option<u8> = None;
    let mut current: Option<usize> = None;
    let mut last_sent: Option<Instant> = None;
    loop {
        let item = match rx.recv().await {
            Ok(p) => p,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => break,
        };
        if let Some(s) = &switcher {
            let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
            let waits = s.target == Some(item.layer) && s.current != Some(item.layer);
            let key = waits && codec.is_none_or(|c| layers::is_keyframe(c, &item.packet.payload));
            let pass = s.forward(item.layer, key);
            if s.current != current {
                current = s.current;
                rewriter.switch();
            }
            if !pass {
                continue;
            }
        }
        if pt.is_none() {
            pt = negotiated_pt(&sender, &f.codec).await;
        }
        let Some(pt) = pt else { continue };
        let elapsed = last_sent
            .map(|t| (t.elapsed().as_micros() as u64 * clock / 1_000_000) as u32)
            .unwrap_or(0);
        let mut packet = item.packet.clone();
        let out = rewriter.rewrite(
            packet.header.ssrc,
            packet.header.sequence_number,
            packet.header.timestamp,
            elapsed,
        );
        packet.header.ssrc = out.ssrc;
        packet.header.sequence_number = out.sequence_number;
        packet.header.timestamp = out.timestamp;
        packet.header.payload_type = pt;
        packet.header.extension = false;
        packet.header.extensions.clear();
        if local.write_rtp(packet).await.is_err() {
            // Not bound yet (the answer is not in): dropped, and the next packet of the
            // stream re-bases so the receiver sees no gap.
            rewriter.switch();
            tokio::task::yield_now().await;
        } else {
            last_sent = Some(Instant::now());
        }
    }
}

/// Every [`ROUND`]: the subscriber's estimate, the allocation over this subscription's tracks,
/// each video switcher aimed, PLIs for the layers awaited, the demand noted for the
/// publisher's hint.
async fn choose(
    id: u64,
    feedback: Arc<crate::feedback::Feedback>,
    screen: bool,
    audio: Vec<Arc<Forwarded>>,
    videos: Vec<(Arc<Forwarded>, Arc<StdMutex<Switcher>>)>,
) {
    struct Forget<'a>(u64, &'a [(Arc<Forwarded>, Arc<StdMutex<Switcher>>)]);
    impl Drop for Forget<'_> {
        fn drop(&mut self) {
            for (f, _) in self.1 {
                f.demand
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&self.0);
            }
        }
    }
    let _forget = Forget(id, &videos);
    let mut estimate = INITIAL_ESTIMATE_BPS;
    let mut requests = 0;
    loop {
        let round = feedback.take_round();
        if round.remb_bps.is_some() || round.reports > 0 {
            estimate = layers::estimate(estimate, round.loss_fraction, round.remb_bps);
        }
        let audio_bps: Vec<u64> = audio
            .iter()
            .map(|a| a.layers().first().map(|l| l.bps).unwrap_or(0))
            .collect();
        let offered: Vec<Video> = videos
            .iter()
            .map(|(f, s)| Video {
                layers: f.layers(),
                screen,
                current: s.lock().unwrap_or_else(|p| p.into_inner()).current,
            })
            .collect();
        let alloc = layers::allocate(estimate, &audio_bps, &offered);
        let asked = feedback.keyframe_requests.load(Ordering::Relaxed);
        let subscriber_asks = asked != requests;
        requests = asked;
        for ((f, s), layer) in videos.iter().zip(alloc.video) {
            // A video without simulcast has nothing to step down to: it is not paused here
            // (its publisher is asked, by REMB, for the lowest estimate of its subscribers).
            let layer = if f.rids.is_empty() { Some(0) } else { layer };
            let (wanted, current) = {
                let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
                if s.target != layer {
                    s.aim(layer);
                }
                (s.wants_keyframe().then_some(s.target).flatten(), s.current)
            };
            f.demand.lock().unwrap_or_else(|p| p.into_inner()).insert(
                id,
                Demand {
                    layer,
                    estimate_bps: estimate,
                },
            );
            if let Some(l) = wanted {
                f.request_key_frame(l).await;
            } else if subscriber_asks && let Some(l) = current {
                // The subscriber's decoder asked (PLI/FIR): passed up for the layer it gets.
                f.request_key_frame(l).await;
            }
        }
        tokio::time::sleep(ROUND).await;
    }
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
