//! The call page in real browsers (issue 18's "done when"): two headless Chromiums with fake
//! camera and microphone open `/call/{room}?token=…` as the patient and the expert, a
//! webrtc-crate peer joins as the local physician, and each of the three receives the other
//! two's RTP through the SFU (packets counted on each side). The pages post their getStats()
//! samples: the consultation's call view shows them with the participation.

use std::time::Duration;

use serde_json::Value;

use super::peer::{Participant, Signal};
use super::{call_view_when, consultation, signal_url, start, tokens};
use crate::support::Backend;
use crate::support::webdriver::Browser;

/// RTP packets each track of each subscription of the page received so far (getStats
/// inbound-rtp packetsReceived): `{pc: {"kind:track": packets}}`.
const RECEIVED: &str = "const out = {}; \
    for (const [id, s] of Object.entries(window.huizhen.quality)) if (id.startsWith('sub:')) { \
    out[id] = {}; for (const x of s) if (x.direction === 'inbound') out[id][x.kind + ':' + x.track] = x.packets || 0; } \
    return out;";

pub(super) const STATE: &str = "return JSON.stringify({m: window.huizhen.messages, pcs: Object.keys(window.huizhen.pcs), \
    q: window.huizhen.quality, status: document.getElementById('status').textContent})";

/// Waits until the page received at least 25 packets on each track of `n` subscriptions with
/// at least `tracks` tracks each; the packets per track of every subscription.
pub(super) async fn receives(b: &Browser, n: usize, tracks: usize, what: &str) -> Value {
    crate::support::wait_for_or(
        what,
        Duration::from_secs(40),
        || async move {
            let v = b.eval(RECEIVED).await;
            let ok = v
                .as_object()?
                .values()
                .filter_map(Value::as_object)
                .filter(|t| t.len() >= tracks && t.values().all(|c| c.as_u64() >= Some(25)))
                .count()
                >= n;
            ok.then_some(v)
        },
        async || format!("{}", b.eval(STATE).await),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_call_pages_and_a_rust_peer_hold_a_call() {
    let Some(patient) = Browser::launch().await else {
        return;
    };
    let Some(expert) = Browser::launch().await else {
        return;
    };
    let Some(wf) = start(Backend::Sqlite).await else {
        return;
    };
    let (id, _, _) = consultation(&wf, true, true).await;
    let (room, tokens) = tokens(&wf, &id).await;
    // The page is served, public, with its policy.
    let page = reqwest::get(format!("{}/call/{room}", wf.api.base))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");

    let (s, joined) = Signal::join(&signal_url(&wf), &room, &tokens["local-physician"]).await;
    assert_eq!(joined["admission"], "admitted", "{joined}");
    let mut rust = Participant::new(s);
    rust.publish().await;

    for (b, role) in [(&patient, "patient"), (&expert, "expert")] {
        b.goto(&format!(
            "{}/call/{room}?token={}",
            wf.api.base, tokens[role]
        ))
        .await;
    }
    // Both pages' publications reach the Rust peer through the SFU.
    let mut subs = Vec::new();
    let mut publishers = Vec::new();
    for _ in 0..2 {
        let (sub, publisher) = rust.accept_subscription().await;
        subs.push(sub);
        publishers.push(publisher);
    }
    let mut pages = Vec::new();
    for b in [&patient, &expert] {
        let s = b
            .eval("return window.huizhen && window.huizhen.session")
            .await;
        pages.push(s.as_str().unwrap_or_default().to_owned());
    }
    publishers.sort();
    pages.sort();
    assert_eq!(publishers, pages);
    let from_pages = crate::support::wait_for_or(
        "RTP from both pages",
        Duration::from_secs(30),
        || {
            let counts = rust.counts();
            let subs = subs.clone();
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
    .await;
    // Each page receives the Rust peer and the other page.
    let to_patient = receives(&patient, 2, 1, "RTP in the patient's page").await;
    let to_expert = receives(&expert, 2, 1, "RTP in the expert's page").await;
    eprintln!(
        "RTP packets: pages → Rust {from_pages:?}, → patient {to_patient}, → expert {to_expert}"
    );
    for b in [&patient, &expert] {
        // The two others' videos, and the live quality.
        let tiles = b
            .eval("return document.querySelectorAll('figure.tile[data-pc]').length")
            .await;
        assert_eq!(tiles.as_u64(), Some(2));
        let status = b
            .eval("return document.getElementById('status').textContent")
            .await;
        assert_eq!(status.as_str(), Some("In call"));
    }

    // The pages' stats reached the engine: the call view has them, with who joined.
    let view = call_view_when(&wf, &id, "the pages' stats stored", |v| {
        let from = |role: &str| {
            v["quality"].as_array().is_some_and(|q| {
                q.iter().any(|q: &Value| {
                    q["source"] == "client"
                        && q["role"] == role
                        && q["summary"]["samples"].as_u64() > Some(0)
                })
            })
        };
        from("patient") && from("expert")
    })
    .await;
    let people = view["participation"].as_array().unwrap();
    let mut roles: Vec<&str> = people.iter().map(|p| p["role"].as_str().unwrap()).collect();
    roles.sort();
    assert_eq!(roles, ["expert", "local-physician", "patient"], "{view}");
    assert!(
        people
            .iter()
            .all(|p| p["left_at"].is_null() && p["admitted_at"].is_i64())
    );
    assert_eq!(view["room"], room.as_str());

    // Mute on the patient's page: the Rust peer gets the state, the expert's page shows it.
    patient
        .eval("document.getElementById('btn-mic').click(); return true")
        .await;
    // (The page's first state, sent when it published, may come first.)
    loop {
        let p = rust.signal.next_of("presence").await;
        if p["event"] == "state" && p["peer"]["role"] == "patient" && p["peer"]["audio"] == false {
            assert_eq!(p["peer"]["video"], true, "{p}");
            break;
        }
    }
    let label = patient
        .eval("return document.getElementById('btn-mic').textContent")
        .await;
    assert_eq!(label.as_str(), Some("Unmute"));
    let shown = crate::support::wait_for("the mute shown to the expert", Duration::from_secs(10), || async {
        let flags = expert
            .eval("return Array.from(document.querySelectorAll('figure.tile[data-pc] .flags')).map(f => f.textContent).join('|')")
            .await;
        flags.as_str().filter(|f| f.contains("muted")).map(str::to_owned)
    })
    .await;
    assert!(!shown.contains("camera off"), "{shown}");

    // The expert shares a screen: a second publication (`source: screen`) the others receive.
    expert.click("#btn-share").await;
    let offer = rust.signal.next_of("offer").await;
    assert_eq!(offer["source"], "screen", "{offer}");
    rust.signal.pending_push_front(offer);
    let (screen, _) = rust.accept_subscription().await;
    crate::support::wait_for_or(
        "the screen share's RTP",
        Duration::from_secs(30),
        || {
            let counts = rust.counts();
            let screen = screen.clone();
            async move { counts.await.get(&screen).copied().filter(|n| *n >= 10) }
        },
        async || format!("{:?}", rust.counts().await),
    )
    .await;

    // Leaving from the page is recorded.
    patient
        .eval("document.getElementById('btn-leave').click(); return true")
        .await;
    call_view_when(&wf, &id, "the page's leave stored", |v| {
        v["participation"].as_array().is_some_and(|p| {
            p.iter()
                .any(|p| p["role"] == "patient" && p["left_reason"] == "left")
        })
    })
    .await;
    rust.signal.send(serde_json::json!({"type": "leave"})).await;
    rust.close().await;
    patient.close().await;
    expert.close().await;
    wf.stop().await;
}
