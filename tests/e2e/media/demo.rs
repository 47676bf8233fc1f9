//! Issue 18's "done when" through the demo configuration (docs/media.md, "Done when: a call
//! through the demo"): the engine of demo/huizhen.yaml (its `media:` settings: the defaults, the
//! SFU on every interface) and pipelines/demo.yaml, the demo's HL7 order walked to `in-session`
//! as the demo's expert and local doctor do it, the three `call_url`s taken from the API: the
//! patient's and the expert's opened in two headless Chromiums (fake camera and microphone),
//! the local physician's as a webrtc-crate peer. Each receives the other two's RTP (per
//! track in the pages' getStats). The recording is refused through the API until everyone's
//! recording consent is on file, then started by the local doctor (the expert, joining late,
//! sees the indicator at once), a screen share recorded under the same consent, stopped by the
//! expert; the call view lists the three joins with their times, the recording's tracks (each
//! file downloaded, hashed and decoded), the quality figures and the active alerts, and
//! /metrics the per-role alert gauge.

use std::collections::HashMap;
use std::time::Duration;

use chrono::TimeDelta;
use huizhen_core::clock::Clock;
use huizhen_core::security::Role;
use serde_json::{Value, json};

use super::browser::receives;
use super::call_view_as;
use super::peer::{Participant, Signal};
use super::recording::check_track;
use crate::consultations::token;
use crate::hl7_consultation::{His, doctor, expert, free_port, order, start_demo, to_session};
use crate::support::Backend;
use crate::support::webdriver::Browser;

/// Whether the page shows the recording indicator.
const RECORDING_SHOWN: &str = "return !document.getElementById('recording').hidden";

async fn indicator(b: &Browser, on: bool, what: &str) {
    crate::support::wait_for(what, Duration::from_secs(15), || async move {
        (b.eval(RECORDING_SHOWN).await.as_bool() == Some(on)).then_some(())
    })
    .await
}

/// Waits (60 s: a page starting on a loaded machine) until the page has its camera
/// publication answered by the engine; the page's state if it never has.
async fn publishing(b: &Browser, what: &str) {
    crate::support::wait_for_or(
        what,
        Duration::from_secs(60),
        || async move {
            let v = b
                .eval("const p = window.huizhen && Object.values(window.huizhen.pcs).find(p => p.role === 'publish'); return !!(p && p.pc.remoteDescription)")
                .await;
            (v.as_bool() == Some(true)).then_some(())
        },
        async || format!("{}", b.eval(super::browser::STATE).await),
    )
    .await
}

/// Waits until the Rust peer received at least 25 packets on each of `subs`.
async fn rust_receives(rust: &Participant, subs: &[String], what: &str) -> Vec<u64> {
    crate::support::wait_for_or(
        what,
        Duration::from_secs(40),
        || {
            let counts = rust.counts();
            async move {
                let c = counts.await;
                let n: Vec<u64> = subs
                    .iter()
                    .map(|s| c.get(s).copied().unwrap_or(0))
                    .collect();
                n.iter().all(|n| *n >= 25).then_some(n)
            }
        },
        async || format!("{:?}", rust.counts().await),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_and_a_rust_peer_hold_a_recorded_call_through_the_demo() {
    let Some(patient_page) = Browser::launch().await else {
        return;
    };
    let Some(expert_page) = Browser::launch().await else {
        return;
    };
    let (intake, his_port) = (free_port(), free_port());
    let _his = His::listen(his_port).await;
    let Some(wf) = start_demo(Backend::Sqlite, intake, his_port).await else {
        return;
    };
    let id = order(&wf, intake).await;
    to_session(&wf, &id).await;

    // The three call links, as the demo's local doctor gets them.
    let (s, v) = wf
        .post(
            &format!("/api/consultations/{id}/room/tokens"),
            &doctor(),
            json!({}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let room = v["room"].as_str().unwrap().to_owned();
    let mut urls = HashMap::new();
    let mut tokens = HashMap::new();
    let mut participants = HashMap::new();
    for t in v["tokens"].as_array().unwrap() {
        let role = t["role"].as_str().unwrap().to_owned();
        urls.insert(role.clone(), t["call_url"].as_str().unwrap().to_owned());
        tokens.insert(role.clone(), t["token"].as_str().unwrap().to_owned());
        participants.insert(role, t["participant"].as_str().unwrap().to_owned());
    }
    assert_eq!(participants["expert"], "E1001");
    assert_eq!(participants["local-physician"], "D001");

    // The local physician (a webrtc-crate peer) and the patient (a browser) hold the call.
    let url = format!("{}/ws/signal", wf.api.base.replacen("http://", "ws://", 1));
    let (s, joined) = Signal::join(&url, &room, &tokens["local-physician"]).await;
    assert_eq!(joined["admission"], "admitted", "{joined}");
    let mut rust = Participant::new(s);
    rust.publish_with_audio().await;
    patient_page
        .goto(&format!("{}{}", wf.api.base, urls["patient"]))
        .await;
    publishing(&patient_page, "the patient's page publishing").await;
    let (from_patient, _) = rust.accept_subscription().await;

    // Recording through the API: refused until everyone present has consented (RTC-30).
    let record = |action: &'static str, bearer: String| {
        let wf = &wf;
        let id = id.clone();
        async move {
            wf.post(
                &format!("/api/consultations/{id}/recording"),
                &bearer,
                json!({ "action": action }),
            )
            .await
        }
    };
    let (s, v) = record("start", doctor()).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (409, Some("no-recording-consent")),
        "{v}"
    );
    let at = wf.clock.now() - TimeDelta::minutes(1);
    for role in ["expert", "local-physician", "patient"] {
        let who = &participants[role];
        wf.ok(
            &id,
            "record_recording_consent",
            &doctor(),
            json!({"consent": {"role": role, "participant": who, "document": format!("DocumentReference/rec-{who}"), "signed_at": at}}),
        )
        .await;
    }
    // A bad body names what is wrong.
    let (s, v) = record("pause", doctor()).await;
    assert_eq!(s, 422, "{v}");
    assert!(v["error"].as_str().unwrap().contains("action"), "{v}");
    let (s, v) = record("start", doctor()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["active"], true);
    let recording = v["recording"].as_str().unwrap().to_owned();
    assert_eq!(rust.signal.next_of("recording").await["active"], true);
    indicator(&patient_page, true, "the indicator on the patient's page").await;
    let (s, v) = record("start", doctor()).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (409, Some("already-recording")),
        "{v}"
    );

    // The expert joins late: the indicator shows at once; everyone gets everyone's media.
    expert_page
        .goto(&format!("{}{}", wf.api.base, urls["expert"]))
        .await;
    indicator(
        &expert_page,
        true,
        "the indicator on the late expert's page",
    )
    .await;
    publishing(&expert_page, "the expert's page publishing").await;
    let (from_expert, _) = rust.accept_subscription().await;
    let to_rust = rust_receives(
        &rust,
        &[from_patient.clone(), from_expert.clone()],
        "RTP from both pages",
    )
    .await;
    let to_patient = receives(&patient_page, 2, 2, "RTP in the patient's page").await;
    let to_expert = receives(&expert_page, 2, 2, "RTP in the expert's page").await;
    eprintln!("RTP packets: → Rust {to_rust:?}, → patient {to_patient}, → expert {to_expert}");
    for got in [&to_patient, &to_expert] {
        let subs = got.as_object().unwrap();
        assert_eq!(subs.len(), 2, "{got}");
        for tracks in subs.values() {
            let kinds: Vec<&str> = tracks
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.split(':').next().unwrap())
                .collect();
            assert!(
                kinds.contains(&"audio") && kinds.contains(&"video"),
                "{got}"
            );
        }
    }

    // The expert shows a screen: recorded under the same consent.
    expert_page.click("#btn-share").await;
    let offer = rust.signal.next_of("offer").await;
    assert_eq!(offer["source"], "screen", "{offer}");
    rust.signal.pending_push_front(offer);
    let (screen, _) = rust.accept_subscription().await;
    rust_receives(&rust, &[screen], "the screen share's RTP").await;

    // A bad link reported by the Rust peer: an active alert on the call view and in /metrics
    // (on this loaded machine the SFU's own figures may raise more).
    let reported = |a: &Value| {
        a["role"] == "local-physician"
            && a["metric"] == "rtt"
            && a["source"] == "client"
            && a["track"] == "cam-video"
    };
    rust.signal
        .send(json!({"type": "stats", "pc": "cam", "samples": [
            {"track": "cam-video", "kind": "video", "direction": "outbound", "rtt_ms": 450.0}]}))
        .await;
    let live = call_view_as(
        &wf,
        &id,
        &doctor(),
        "the alert and the recording live",
        |v| {
            v["recording"]["id"] == recording.as_str()
                && v["active_alerts"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(reported))
        },
    )
    .await;
    let alert = live["active_alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| reported(a))
        .unwrap();
    assert_eq!(alert["participant"], "D001", "{alert}");
    assert_eq!(alert["value"], 450.0, "{alert}");
    assert_eq!(live["recording"]["started_by"], "D001", "{live}");
    let admin = token(Role::Admin, "ops", "demo-clinic");
    let gauge = |role: &str, text: &str| -> Option<u64> {
        let series =
            format!("huizhen_call_participant_alerts_active{{room=\"{room}\",role=\"{role}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|n| n.trim().parse().ok())
    };
    let scrape = || {
        let api = wf.api.clone();
        let admin = admin.clone();
        async move { api.get_text("/metrics", &admin).await }
    };
    let metrics = crate::support::wait_for_or(
        "the per-role alert gauge",
        Duration::from_secs(15),
        || {
            let (scrape, gauge) = (&scrape, &gauge);
            async move {
                let (s, _, text) = scrape().await;
                (s == 200 && gauge("local-physician", &text) >= Some(1)).then_some(text)
            }
        },
        async || {
            let (s, _, text) = scrape().await;
            let calls: Vec<&str> = text.lines().filter(|l| l.contains("call_")).collect();
            format!("{s}: {calls:?}")
        },
    )
    .await;
    for role in ["patient", "expert"] {
        assert!(
            gauge(role, &metrics).is_some(),
            "every role present has a series: {role}"
        );
    }

    // Recorded for a few seconds, then stopped by the expert through the API.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let expert_bearer = expert();
    let (s, v) = record("stop", expert_bearer.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["recording"], recording.as_str());
    assert_eq!(rust.signal.next_of("recording").await["active"], false);
    indicator(&patient_page, false, "the indicator gone").await;
    let (s, v) = record("stop", expert_bearer.clone()).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("not-recording")), "{v}");

    // The consultation shows who joined when, the recording and the call's quality.
    let view = call_view_as(
        &wf,
        &id,
        &doctor(),
        "the pages' stats and the recording",
        |v| {
            let from = |role: &str| {
                v["quality"].as_array().is_some_and(|q| {
                    q.iter().any(|q: &Value| {
                        q["source"] == "client"
                            && q["role"] == role
                            && q["summary"]["samples"].as_u64() > Some(0)
                    })
                })
            };
            from("patient") && from("expert") && v["recording"].is_null()
        },
    )
    .await;
    let people = view["participation"].as_array().unwrap();
    let mut roles: Vec<&str> = people.iter().map(|p| p["role"].as_str().unwrap()).collect();
    roles.sort();
    assert_eq!(roles, ["expert", "local-physician", "patient"], "{view}");
    for p in people {
        assert!(p["joined_at"].is_i64() && p["admitted_at"].is_i64(), "{p}");
    }
    let joined = |role: &str| {
        people.iter().find(|p| p["role"] == role).unwrap()["joined_at"]
            .as_i64()
            .unwrap()
    };
    assert!(joined("local-physician") <= joined("patient"));
    assert!(
        joined("patient") <= joined("expert"),
        "the expert came late"
    );
    assert!(
        view["quality"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["source"] == "sfu"),
        "the SFU's own figures: {view}"
    );
    let tracks = view["recordings"].as_array().unwrap();
    let of = |role: &str, source: &str, kind: &str| {
        tracks
            .iter()
            .filter(|t| t["role"] == role && t["source"] == source && t["kind"] == kind)
            .count()
    };
    for role in ["local-physician", "patient", "expert"] {
        assert_eq!(
            (of(role, "camera", "audio"), of(role, "camera", "video")),
            (1, 1),
            "{role}: {tracks:?}"
        );
    }
    assert_eq!(
        of("expert", "screen", "video"),
        1,
        "the screen share: {tracks:?}"
    );
    for t in tracks {
        assert_eq!(t["recording"], recording.as_str());
        assert_eq!(t["retention_class"], "process-record-audio-video");
        assert_eq!(t["started_by"], "D001");
        assert_eq!(t["stopped_by"], "E1001", "{t}");
        assert!(
            t["stop_reason"]
                .as_str()
                .unwrap()
                .contains("through the API"),
            "{t}"
        );
        assert_eq!(t["sha256"].as_str().unwrap().len(), 64);
        let file = check_track(&wf, t, &doctor()).await;
        assert!(file.units > 0, "{t}");
    }
    // Start and stop through the API are audited with who did it.
    let rows = super::wait_audit(&wf, &id, "the API's start and stop", |rows| {
        let by = |action: &str, who: &str| {
            rows.iter().any(|r| {
                r.event.action == action
                    && r.event.outcome == "success"
                    && r.event.actor == who
                    && r.event.detail.contains("through the API")
            })
        };
        (by("recording.start", "D001") && by("recording.stop", "E1001")).then(|| rows.to_vec())
    })
    .await;
    assert!(
        rows.iter()
            .any(|r| r.event.action == "recording.start" && r.event.outcome == "denied"),
        "the refusal before the consents"
    );

    rust.signal.send(json!({"type": "leave"})).await;
    rust.close().await;
    patient_page.close().await;
    expert_page.close().await;
    wf.stop().await;
}
