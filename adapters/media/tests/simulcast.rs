//! Simulcast through the SFU (RTC-10, RTC-11), webrtc-crate peers on loopback: a publisher
//! sends three layers (rids q/h/f, synthetic VP8 RTP with key frames marked, each layer on its
//! own SSRC, sequence numbers and timestamp base) and Opus; two subscribers report different
//! bandwidth estimates (REMB). The weak one gets the low layer, the strong one the high layer;
//! when the weak one's estimate rises it switches up on a key frame of the high layer, with one
//! SSRC and continuous sequence numbers and timestamps; when its estimate falls below any video
//! layer its video pauses and its audio keeps flowing. The publisher gets a REMB covering the
//! layers taken.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use huizhen_media::feedback::Feedback;
use huizhen_media::sfu::{PcFactory, Publication};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use support::{Client, remb_loop};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_get_the_layer_their_estimate_allows_and_switch_on_key_frames() {
    let factory = PcFactory::new(support::loopback());
    // The publisher: three layers and audio.
    let publisher_feedback = Arc::new(Feedback::default());
    let publisher = Client::new(Some(publisher_feedback.clone())).await;
    let sending = publisher.add_simulcast(&["q", "h", "f"]).await;
    let offer = publisher.offer().await;
    assert!(offer.contains("a=simulcast:send"), "{offer}");
    let publication = Arc::new(Publication::new("cam", "P", "publisher", "camera", &offer));
    assert_eq!(publication.rids, vec!["q", "h", "f"]);
    assert_eq!(publication.expected, 2);
    let sfu_pub = factory.build(Some(publication.clone())).await.unwrap();
    let answer = support::answer(&sfu_pub, &offer).await;
    publisher.accept(&answer).await;
    let stop = sending.start(&publisher, &offer).await;
    // Both tracks arrive at the SFU.
    support::wait("both tracks at the SFU", || async {
        publication.tracks.lock().await.len() == 2
    })
    .await;
    let tracks = publication.tracks.lock().await.clone();
    // Two subscribers: weak (250 kbit/s) and strong (5 Mbit/s).
    let weak = support::subscribe(&factory, &tracks).await;
    let strong = support::subscribe(&factory, &tracks).await;
    let weak_remb = remb_loop(&weak.received, 250_000);
    let strong_remb = remb_loop(&strong.received, 5_000_000);

    // The weak one settles on the low layer, the strong one on the high layer.
    support::wait("weak on q, strong on f", || async {
        weak.received.last_layers(20) == Some(0) && strong.received.last_layers(20) == Some(2)
    })
    .await;
    // The publisher is told to send every layer up to the high one (q + h + f, measured).
    support::wait("the publisher's REMB covers the high layer", || async {
        publisher_feedback
            .take_round()
            .remb_bps
            .is_some_and(|b| b > 1_000_000)
    })
    .await;

    // The weak link improves: up to the high layer, at one of its key frames.
    weak_remb.store(5_000_000, Ordering::Relaxed);
    support::wait("weak switched up to f", || async {
        weak.received.last_layers(20) == Some(2)
    })
    .await;

    // The link collapses below any video layer: video pauses, audio goes on.
    weak_remb.store(30_000, Ordering::Relaxed);
    support::wait("weak's video paused", || async {
        let before = weak.received.video_count();
        tokio::time::sleep(Duration::from_millis(700)).await;
        weak.received.video_count() == before
    })
    .await;
    let audio = weak.received.audio.load(Ordering::Relaxed);
    let video = weak.received.video_count();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let audio_after = weak.received.audio.load(Ordering::Relaxed);
    assert!(
        audio_after >= audio + 25,
        "audio keeps flowing while the video is paused: {audio} then {audio_after} in 1 s"
    );
    assert_eq!(weak.received.video_count(), video, "no video while paused");

    // What the weak receiver saw, as one stream.
    for (who, r) in [("weak", &weak.received), ("strong", &strong.received)] {
        let packets = r.video.lock().unwrap().clone();
        assert!(packets.len() > 50, "{who}: {} video packets", packets.len());
        let ssrcs: std::collections::HashSet<u32> = packets.iter().map(|p| p.ssrc).collect();
        assert_eq!(ssrcs.len(), 1, "{who}: one SSRC across layers: {ssrcs:?}");
        let mut steps = 0;
        let mut ones = 0;
        let mut switches = 0;
        for w in packets.windows(2) {
            steps += 1;
            if w[1].seq == w[0].seq.wrapping_add(1) {
                ones += 1;
            }
            if w[1].layer != w[0].layer {
                switches += 1;
                assert!(
                    w[1].key,
                    "{who}: switch to {} not on a key frame",
                    w[1].layer
                );
                assert_eq!(
                    w[1].seq,
                    w[0].seq.wrapping_add(1),
                    "{who}: sequence continuous across the switch {} -> {}",
                    w[0].layer,
                    w[1].layer
                );
                let dt = w[1].ts.wrapping_sub(w[0].ts);
                assert!(
                    dt > 0 && dt < 90_000,
                    "{who}: timestamps move on across the switch by {dt}"
                );
            }
        }
        assert!(
            ones * 100 >= steps * 99,
            "{who}: {ones} of {steps} steps are +1 (loss above 1 % on loopback?)"
        );
        if who == "weak" {
            assert!(switches >= 1, "weak: switched at least once (q to f)");
        }
    }
    stop.notify_waiters();
    drop(strong_remb);
    weak.close().await;
    strong.close().await;
    publisher.close().await;
    let _ = sfu_pub.pc.close().await;
}

/// The first video payload type of `sdp`'s m=video line and its rtpmap / fmtp lines.
fn first_video_codec(sdp: &str) -> (String, String) {
    let m = sdp
        .lines()
        .find(|l| l.starts_with("m=video"))
        .expect("a video section");
    let pt = m
        .split_whitespace()
        .nth(3)
        .expect("a payload type")
        .to_owned();
    let find = |prefix: &str| {
        sdp.lines()
            .find_map(|l| l.strip_prefix(&format!("{prefix}:{pt} ")))
            .unwrap_or("")
            .trim()
            .to_owned()
    };
    (find("a=rtpmap"), find("a=fmtp"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_answers_h264_first_and_vp8_to_a_vp8_only_publisher() {
    let factory = PcFactory::new(support::loopback());
    // A publisher offering the crate's default set (VP8 listed first, H.264 further down) on
    // a video transceiver without a track yet.
    let publisher = Client::new(None).await;
    publisher
        .pc
        .add_transceiver_from_kind(RtpCodecKind::Video, None)
        .await
        .unwrap();
    let offer = publisher.offer().await;
    assert!(offer.contains("H264/90000"), "{offer}");
    assert!(first_video_codec(&offer).0.starts_with("VP8"), "{offer}");
    let publication = Arc::new(Publication::new("cam", "P", "publisher", "camera", &offer));
    let sfu = factory.build(Some(publication)).await.unwrap();
    let answer = support::answer(&sfu, &offer).await;
    let (rtpmap, fmtp) = first_video_codec(&answer);
    assert!(rtpmap.starts_with("H264/90000"), "{answer}");
    assert!(
        fmtp.contains("profile-level-id=42e01f") && fmtp.contains("packetization-mode=1"),
        "{answer}"
    );
    // The publisher takes the reordered answer.
    publisher.accept(&answer).await;
    publisher.close().await;
    let _ = sfu.pc.close().await;

    // A publisher that sends VP8 only (the fallback) is answered VP8.
    let mut media = MediaEngine::default();
    media
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: "video/VP8".into(),
                    clock_rate: 90_000,
                    ..Default::default()
                },
                payload_type: 96,
            },
            RtpCodecKind::Video,
        )
        .unwrap();
    media
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: "audio/opus".into(),
                    clock_rate: 48_000,
                    channels: 2,
                    ..Default::default()
                },
                payload_type: 111,
            },
            RtpCodecKind::Audio,
        )
        .unwrap();
    let publisher = Client::with_engine(None, true, media).await;
    publisher.add_simulcast(&[]).await;
    let offer = publisher.offer().await;
    let publication = Arc::new(Publication::new("cam", "P", "publisher", "camera", &offer));
    let sfu = factory.build(Some(publication)).await.unwrap();
    let answer = support::answer(&sfu, &offer).await;
    assert!(
        first_video_codec(&answer).0.starts_with("VP8/90000"),
        "{answer}"
    );
    publisher.close().await;
    let _ = sfu.pc.close().await;
}
