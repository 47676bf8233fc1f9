//! RTC-11 through signaling: a subscriber that cannot decode the publisher's video codec (here
//! a client of Opus only) rejects that section of the subscription (port 0 in its answer, as
//! the `rtc` crate and browsers write it) and is told so with a
//! `codec-unsupported` error naming the subscription; the publication's audio still reaches it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use serde_json::json;
use tokio::sync::Mutex;

use super::peer::{Participant, Signal, gathered_sdp, pc_with_engine};
use super::{consultation, signal_url, start, tokens};
use crate::support::Backend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_rejecting_the_video_codec_is_told_and_still_gets_the_audio() {
    let Some(wf) = start(Backend::Sqlite).await else {
        return;
    };
    let (id, _, _) = consultation(&wf, true, true).await;
    let (room, tokens) = tokens(&wf, &id).await;
    let url = signal_url(&wf);
    let (s, joined) = Signal::join(&url, &room, &tokens["local-physician"]).await;
    assert_eq!(joined["admission"], "admitted", "{joined}");
    let mut publisher = Participant::new(s);
    let (mut patient, joined) = Signal::join(&url, &room, &tokens["patient"]).await;
    assert_eq!(joined["admission"], "admitted", "{joined}");
    publisher.publish_with_audio().await;

    // The patient's client decodes Opus only: its answer rejects the subscription's video
    // section (port 0).
    let offer = patient.next_of("offer").await;
    let pc_id = offer["pc"].as_str().unwrap().to_owned();
    let mut media = MediaEngine::default();
    media
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: "audio/opus".into(),
                    clock_rate: 48_000,
                    channels: 2,
                    sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                    rtcp_feedback: vec![],
                },
                payload_type: 111,
            },
            RtpCodecKind::Audio,
        )
        .unwrap();
    let received = Arc::new(Mutex::new(HashMap::new()));
    let (pc, gathered) = pc_with_engine("patient", received.clone(), media).await;
    pc.set_remote_description(
        RTCSessionDescription::offer(offer["sdp"].as_str().unwrap().into()).unwrap(),
    )
    .await
    .unwrap();
    let answer = pc.create_answer(None).await.unwrap();
    pc.set_local_description(answer).await.unwrap();
    let sdp = gathered_sdp(&pc, &gathered).await;
    assert!(sdp.contains("m=video 0 "), "{sdp}");
    patient
        .send(json!({"type": "answer", "pc": pc_id, "sdp": sdp}))
        .await;
    let error = patient.next_of("error").await;
    assert_eq!(error["code"], "codec-unsupported", "{error}");
    assert_eq!(error["fatal"], false, "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(&pc_id) && message.contains("video"),
        "{message}"
    );
    // The audio of the publication still arrives.
    crate::support::wait_for("the audio arrives", Duration::from_secs(15), || {
        let received = received.clone();
        async move {
            let n = received
                .lock()
                .await
                .get("patient")?
                .load(Ordering::Relaxed);
            (n >= 25).then_some(())
        }
    })
    .await;
    let _ = pc.close().await;
    publisher.close().await;
    wf.stop().await;
}
