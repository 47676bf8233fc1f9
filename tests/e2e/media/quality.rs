//! The call's quality (RTC-20, RTC-21): a participant's `stats` samples are checked, summarised
//! per session and track, and an RTT over 300 ms raises a `quality_alert` for everyone in the
//! room (and the alert metric); the SFU adds its own samples of every leg; the consultation's
//! call view shows the participation, the summaries and the alerts.

use serde_json::json;

use super::peer::{Participant, Signal};
use super::{call_view_when, consultation, signal_url, start, tokens};
use crate::support::Backend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_are_summarised_alerted_and_shown_on_the_consultation_sqlite() {
    stats_are_summarised_alerted_and_shown(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_are_summarised_alerted_and_shown_on_the_consultation_postgres() {
    stats_are_summarised_alerted_and_shown(Backend::Postgres).await;
}

async fn stats_are_summarised_alerted_and_shown(b: Backend) {
    let Some(wf) = start(b).await else {
        return;
    };
    let (id, _, _) = consultation(&wf, true, true).await;
    let (room, tokens) = tokens(&wf, &id).await;
    let url = signal_url(&wf);
    let mut people = Vec::new();
    for role in ["local-physician", "patient"] {
        let (s, joined) = Signal::join(&url, &room, &tokens[role]).await;
        assert_eq!(joined["admission"], "admitted", "{joined}");
        people.push(Participant::new(s));
    }
    for p in people.iter_mut() {
        p.publish().await;
    }
    for p in people.iter_mut() {
        p.accept_subscription().await;
    }
    let before = huizhen_core::runner::call_metrics::call_alerts_raised("video", "rtt");
    let doctor_peer = &mut people[0];
    // Refused samples name what is wrong; nothing is stored for them.
    doctor_peer
        .signal
        .send(json!({"type": "stats", "pc": "cam", "samples": [{"track": "v", "kind": "video", "direction": "outbound", "loss_pct": 140.0}]}))
        .await;
    let e = doctor_peer.signal.next_of("error").await;
    assert_eq!(e["code"], "bad-message", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("samples[0].loss_pct"),
        "{e}"
    );
    doctor_peer
        .signal
        .send(json!({"type": "stats", "pc": "nope", "samples": []}))
        .await;
    let e = doctor_peer.signal.next_of("error").await;
    assert_eq!(e["code"], "unknown-pc", "{e}");
    // Under, then over the RTT threshold: one alert, to everyone in the room.
    for rtt in [120.0, 350.0] {
        doctor_peer
            .signal
            .send(json!({"type": "stats", "pc": "cam", "samples": [{"track": "cam-video", "kind": "video", "direction": "outbound", "rtt_ms": rtt, "loss_pct": 0.5, "jitter_ms": 4.0, "bitrate_kbps": 900.0, "fps": 30.0}]}))
            .await;
    }
    for p in people.iter_mut() {
        let a = p.signal.next_of("quality_alert").await;
        assert_eq!(a["metric"], "rtt", "{a}");
        assert_eq!(a["active"], true);
        assert_eq!(a["value"], 350.0);
        assert_eq!(a["threshold"], 300.0);
        assert_eq!(a["role"], "local-physician");
        assert_eq!(a["source"], "client");
    }
    // Process-wide (other tests raise alerts too): at least this one.
    assert!(huizhen_core::runner::call_metrics::call_alerts_raised("video", "rtt") > before);
    // Back under: cleared.
    people[0]
        .signal
        .send(json!({"type": "stats", "pc": "cam", "samples": [{"track": "cam-video", "kind": "video", "direction": "outbound", "rtt_ms": 80.0}]}))
        .await;
    let a = people[1].signal.next_of("quality_alert").await;
    assert_eq!(
        (a["metric"].as_str(), a["active"].as_bool()),
        (Some("rtt"), Some(false))
    );

    // The view: the client's summary and the SFU's own samples of the legs.
    let view = call_view_when(&wf, &id, "the summaries stored", |v| {
        v["quality"].as_array().is_some_and(|q| {
            q.iter()
                .any(|q| q["source"] == "client" && q["summary"]["samples"] == 3)
                && q.iter().any(|q| q["source"] == "sfu")
        })
    })
    .await;
    let client = view["quality"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["source"] == "client")
        .unwrap();
    assert_eq!(client["summary"]["rtt_ms"]["max"], 350.0, "{view}");
    assert_eq!(client["summary"]["rtt_ms"]["n"], 3);
    assert_eq!(client["summary"]["alerts"]["rtt"], 1);
    assert_eq!(client["role"], "local-physician");
    assert_eq!(view["alerts"]["rtt"]["raised"], 1, "{view}");
    assert_eq!(view["participation"].as_array().unwrap().len(), 2);
    assert_eq!(view["present"], 2);
    for mut p in people {
        p.signal.send(json!({"type": "leave"})).await;
        p.close().await;
    }
    wf.stop().await;
}
