//! The call page in a real browser (issue 18): a headless Chromium with fake camera and
//! microphone opens `/call/{room}?token=…` as the patient, a webrtc-crate peer joins as the
//! local physician, and media flows both ways through the SFU (RTP packets counted on each
//! side). The page posts its getStats() samples: the consultation's call view shows them with
//! the participation.

use std::time::Duration;

use serde_json::Value;

use super::peer::{Participant, Signal};
use super::{consultation, signal_url, start, tokens};
use crate::consultations::doctor;
use crate::support::Backend;
use crate::support::webdriver::Browser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_page_exchanges_media_with_a_rust_peer() {
    let Some(browser) = Browser::launch().await else {
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

    browser
        .goto(&format!(
            "{}/call/{room}?token={}",
            wf.api.base, tokens["patient"]
        ))
        .await;
    // The browser's publication reaches the Rust peer through the SFU.
    let (sub, publisher) = rust.accept_subscription().await;
    let page_session = browser
        .eval("return window.huizhen && window.huizhen.session")
        .await;
    assert_eq!(page_session.as_str(), Some(publisher.as_str()));
    let from_browser = crate::support::wait_for_or(
        "RTP from the browser",
        Duration::from_secs(20),
        || {
            let counts = rust.counts();
            let sub = sub.clone();
            async move { counts.await.get(&sub).copied().filter(|n| *n >= 25) }
        },
        async || format!("{:?}", rust.counts().await),
    )
    .await;
    // The Rust peer's publication reaches the browser (inbound-rtp packetsReceived).
    let script = "const q = window.huizhen.quality; let n = 0; \
        for (const [id, s] of Object.entries(q)) if (id.startsWith('sub:')) \
        for (const x of s) if (x.direction === 'inbound') n += x.packets || 0; return n;";
    let to_browser = crate::support::wait_for_or(
        "RTP in the browser",
        Duration::from_secs(30),
        || {
            let b = &browser;
            async move { b.eval(script).await.as_u64().filter(|n| *n >= 25) }
        },
        async || {
            let state = browser
                .eval("return JSON.stringify({m: window.huizhen.messages, pcs: Object.keys(window.huizhen.pcs), q: window.huizhen.quality, status: document.getElementById('status').textContent})")
                .await;
            format!("{state}")
        },
    )
    .await;
    eprintln!("RTP packets: browser → Rust {from_browser}, Rust → browser {to_browser}");
    // The page shows the others' video and its live quality.
    let tiles = browser
        .eval("return document.querySelectorAll('figure.tile[data-pc]').length")
        .await;
    assert_eq!(tiles.as_u64(), Some(1));
    let status = browser
        .eval("return document.getElementById('status').textContent")
        .await;
    assert_eq!(status.as_str(), Some("In call"));

    // The page's stats reached the engine: the call view has them, with who joined.
    let view = crate::support::wait_for("the page's stats stored", Duration::from_secs(20), || {
        let api = wf.api.clone();
        let id = id.clone();
        async move {
            let (s, v) = api
                .get(&format!("/api/consultations/{id}/call"), &doctor())
                .await;
            assert_eq!(s, 200, "{v}");
            let client = v["quality"].as_array()?.iter().any(|q: &Value| {
                q["source"] == "client"
                    && q["role"] == "patient"
                    && q["summary"]["samples"].as_u64() > Some(0)
            });
            client.then_some(v)
        }
    })
    .await;
    let people = view["participation"].as_array().unwrap();
    let roles: Vec<&str> = people.iter().map(|p| p["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["local-physician", "patient"], "{view}");
    assert!(
        people
            .iter()
            .all(|p| p["left_at"].is_null() && p["admitted_at"].is_i64())
    );
    assert_eq!(view["room"], room.as_str());

    // Leaving from the page is recorded.
    browser
        .eval("document.getElementById('btn-leave').click(); return true")
        .await;
    crate::support::wait_for("the page's leave stored", Duration::from_secs(10), || {
        let api = wf.api.clone();
        let id = id.clone();
        async move {
            let (_, v) = api
                .get(&format!("/api/consultations/{id}/call"), &doctor())
                .await;
            v["participation"]
                .as_array()?
                .iter()
                .any(|p: &Value| p["role"] == "patient" && p["left_reason"] == "left")
                .then_some(())
        }
    })
    .await;
    rust.signal.send(serde_json::json!({"type": "leave"})).await;
    rust.close().await;
    browser.close().await;
    wf.stop().await;
}
