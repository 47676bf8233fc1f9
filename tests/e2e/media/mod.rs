//! The consultation call (issue 18): room tokens from the API, `/ws/signal` and the SFU, on
//! the real router, store and workflow. A consultation is walked to `in-session` (consent,
//! local physician, verifications), its tokens issued, then webrtc-crate peers join.
//!
//! - `call.rs`: three peers publish and each receives the other two's RTP through the SFU;
//! - `codecs.rs`: a subscriber that cannot decode the video is told (`codec-unsupported`);
//! - `browser.rs`: the call page in headless Chromium exchanges media with a Rust peer;
//! - `demo.rs`: issue 18's "done when" on the demo configuration: two Chromiums and a Rust
//!   peer, the recording started and stopped through the API, the call view afterwards;
//! - `quality.rs`: stats samples, alerts at the RTC-21 thresholds, the call view;
//! - `admission.rs`: the lobby (expert before the local physician), a wrong-room token, an
//!   expired token, a token after the session, join/leave in the audit trail.

mod admission;
mod browser;
mod call;
mod codecs;
mod demo;
pub(crate) mod peer;
mod quality;
mod recording;

use std::sync::Arc;

use chrono::TimeDelta;
use huizhen_core::Engine;
use huizhen_core::clock::{Clock, FakeClock};
use huizhen_core::security::SecurityConfig;
use huizhen_domain::identity::{Demographics, PersonName, normalize};
use serde_json::{Value, json};

use crate::consultations::{REQ, SECRET, Wf, doctor, expert, offerees, request, seed_registry, t0};
use crate::support::{Backend, JsonApi, fresh_db, loaded, serve};

/// An engine whose SFU binds loopback, served with the real router.
pub(crate) async fn start(b: Backend) -> Option<Wf> {
    let db = fresh_db(b).await?;
    let ca = Arc::new(huizhen_signing::testca::TestCa::generate("Huizhen media CA").unwrap());
    let clock = Arc::new(FakeClock::new(t0()));
    let mut cfg = loaded(&db, &[]);
    cfg.root.media.bind = [127, 0, 0, 1].into();
    cfg.root.media.reconnect_grace = std::time::Duration::from_secs(2);
    let engine = Engine::start_with_clock(cfg, clock.clone()).await.unwrap();
    let base = serve(
        &engine,
        &SecurityConfig {
            jwt_secret: Some(SECRET.into()),
            ..SecurityConfig::default()
        },
    )
    .await;
    Some(Wf {
        engine,
        api: JsonApi::new(base),
        clock,
        ca,
        db,
    })
}

/// A consultation accepted by an expert, with `gates` (consent, the local physician D1, both
/// verifications) recorded; when `start`, in session. (id, expert, patient).
pub(crate) async fn consultation(wf: &Wf, gates: bool, start: bool) -> (String, String, u64) {
    seed_registry(wf, 2).await;
    let patient = normalize(&Demographics {
        facility: REQ.into(),
        local_id: format!("MRN-{}", huizhen_core::message::new_id()),
        identifiers: vec![],
        names: vec![PersonName::text("王芳")],
        birth_date: Some("1970-03-02".into()),
        sex: None,
        phones: vec![],
        addresses: vec![],
    });
    let (_, person) = wf
        .engine
        .store
        .identity_upsert(&patient, None)
        .await
        .unwrap();
    let (id, v) = wf.approved(request(person as u64)).await;
    let e = offerees(&v)[0].clone();
    wf.ok(&id, "open", &expert(&e), json!({})).await;
    let (_, cur, _) = wf
        .call(
            "GET",
            &format!("/api/consultations/{id}"),
            &expert(&e),
            None,
            None,
        )
        .await;
    let version = cur["version"].as_u64().unwrap();
    let (s, v, _) = wf
        .call(
            "POST",
            &format!("/api/consultations/{id}/accept"),
            &expert(&e),
            None,
            Some(version),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    if gates {
        let before = wf.clock.now() - TimeDelta::minutes(1);
        wf.ok(&id, "record_consent", &doctor(), json!({"consent": {"signer": "patient", "document": "DocumentReference/consent-1", "signed_at": before}})).await;
        wf.attach_physician(&id).await;
        for who in [e.as_str(), "D1"] {
            wf.ok(&id, "record_verification", &doctor(), json!({"verification": {"subject": {"kind": "physician", "practitioner": who}, "method": "ca-certificate", "verified_at": before, "result": "passed", "provider_reference": format!("ca-{who}")}})).await;
        }
    }
    if start {
        wf.ok(&id, "start", &expert(&e), json!({})).await;
    }
    (id, e, person as u64)
}

/// The room tokens of `id` as the local doctor gets them: role → token.
pub(crate) async fn tokens(
    wf: &Wf,
    id: &str,
) -> (String, std::collections::HashMap<String, String>) {
    let (s, v) = wf
        .post(
            &format!("/api/consultations/{id}/room/tokens"),
            &doctor(),
            json!({}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let room = v["room"].as_str().unwrap().to_owned();
    let map = v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t: &Value| {
            (
                t["role"].as_str().unwrap().to_owned(),
                t["token"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (room, map)
}

/// `ws://…/ws/signal` of the engine.
pub(crate) fn signal_url(wf: &Wf) -> String {
    format!("{}/ws/signal", wf.api.base.replacen("http://", "ws://", 1))
}

/// Waits (10 s at most) until the audit trail of consultation `id` satisfies `check`.
pub(crate) async fn wait_audit<T>(
    wf: &Wf,
    id: &str,
    what: &str,
    check: impl Fn(&[huizhen_core::store::audit::AuditRow]) -> Option<T>,
) -> T {
    let check = &check;
    crate::support::wait_for(what, std::time::Duration::from_secs(10), || {
        let store = wf.engine.store.clone();
        let id = id.to_owned();
        async move {
            let rows = store
                .audit_events(&huizhen_core::store::audit::AuditFilter {
                    resource_id: Some(id),
                    ..Default::default()
                })
                .await
                .ok()?;
            check(&rows)
        }
    })
    .await
}

/// The consultation's call view (`GET /api/consultations/{id}/call` as the local doctor) once
/// `ready` holds for it, within 20 s.
pub(crate) async fn call_view_when(
    wf: &Wf,
    id: &str,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    call_view_as(wf, id, &crate::consultations::doctor(), what, ready).await
}

/// [`call_view_when`] as `bearer`.
pub(crate) async fn call_view_as(
    wf: &Wf,
    id: &str,
    bearer: &str,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let path = format!("/api/consultations/{id}/call");
    crate::support::wait_for(what, std::time::Duration::from_secs(20), || {
        let api = wf.api.clone();
        let path = path.clone();
        let ready = &ready;
        async move {
            let (s, v) = api.get(&path, bearer).await;
            assert_eq!(s, 200, "{v}");
            ready(&v).then_some(v)
        }
    })
    .await
}
