//! Admission (RTC-04, CN-05, CN-06): an expert who comes before the local physician waits in
//! the lobby and cannot publish until the physician is there; a token for another room, an
//! expired token, a token after the session and a token before consent are refused; an API
//! bearer token is not a room token; the issuing API narrows an expert to their own token.

use huizhen_core::security::RoomTokens;
use huizhen_domain::consultation::room::{RoomClaims, RoomRole, room_id};
use serde_json::json;

use super::peer::Signal;
use super::{call_view_when, consultation, signal_url, start, tokens};
use crate::consultations::{SECRET, doctor, expert};
use crate::support::Backend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_expert_waits_in_the_lobby_until_the_local_physician_is_present() {
    let Some(wf) = start(Backend::Sqlite).await else {
        return;
    };
    let (id, e, _) = consultation(&wf, true, true).await;
    let (room, tokens) = tokens(&wf, &id).await;
    let url = signal_url(&wf);
    let (mut ex, joined) = Signal::join(&url, &room, &tokens["expert"]).await;
    assert_eq!(joined["admission"], "lobby", "{joined}");
    assert_eq!(joined["waiting_for"], "local-physician", "{joined}");
    assert_eq!(joined["participant"], e.as_str());
    // Nothing is published from the lobby.
    ex.send(json!({"type": "offer", "pc": "cam", "sdp": "v=0\r\n"}))
        .await;
    let refused = ex.next_of("error").await;
    assert_eq!(refused["code"], "in-lobby", "{refused}");
    // The patient does not release the expert; the local physician does.
    let (_pt, joined) = Signal::join(&url, &room, &tokens["patient"]).await;
    assert_eq!(joined["admission"], "admitted", "{joined}");
    let p = ex.next_of("presence").await;
    assert_eq!(
        (p["event"].as_str(), p["peer"]["role"].as_str()),
        (Some("joined"), Some("patient")),
        "{p}"
    );
    let (_lp, joined) = Signal::join(&url, &room, &tokens["local-physician"]).await;
    assert_eq!(joined["admission"], "admitted", "{joined}");
    let admitted = ex.next_of("admitted").await;
    assert_eq!(admitted["type"], "admitted");
    // The call view: the expert joined first and was admitted when the local physician came.
    let view = call_view_when(&wf, &id, "the expert's admission stored", |v| {
        v["participation"]
            .as_array()
            .is_some_and(|r| r.len() == 3 && r[0]["admitted_at"].is_i64())
    })
    .await;
    let rows = view["participation"].as_array().unwrap();
    let roles: Vec<&str> = rows.iter().map(|r| r["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["expert", "patient", "local-physician"], "{view}");
    assert!(
        rows[0]["admitted_at"].as_i64() >= rows[2]["joined_at"].as_i64(),
        "{view}"
    );
    assert_eq!(rows[1]["admitted_at"], rows[1]["joined_at"], "{view}");
    // The expert's own token only, from the API.
    let (s, v) = wf
        .post(
            &format!("/api/consultations/{id}/room/tokens"),
            &expert(&e),
            json!({"roles": ["expert"]}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = wf
        .post(
            &format!("/api/consultations/{id}/room/tokens"),
            &expert(&e),
            json!({"roles": ["patient"]}),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    // Join and lobby are in the audit trail.
    let rows = wf
        .engine
        .store
        .audit_events(&huizhen_core::store::audit::AuditFilter {
            resource_id: Some(id.clone()),
            action: Some("room.join".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        rows.iter()
            .any(|r| r.event.detail.contains("held in the lobby")),
        "{rows:?}"
    );
    wf.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_room_expired_and_replayed_tokens_are_refused() {
    let Some(wf) = start(Backend::Sqlite).await else {
        return;
    };
    let (a, _, _) = consultation(&wf, true, true).await;
    let (b, _, _) = consultation(&wf, true, true).await;
    let (room_a, tokens_a) = tokens(&wf, &a).await;
    let (room_b, _) = tokens(&wf, &b).await;
    assert_ne!(room_a, room_b);
    let url = signal_url(&wf);
    // Room A's token never opens room B.
    let (mut s, m) = Signal::join(&url, &room_b, &tokens_a["patient"]).await;
    assert_eq!(
        (m["type"].as_str(), m["code"].as_str(), m["fatal"].as_bool()),
        (Some("error"), Some("wrong-room"), Some(true)),
        "{m}"
    );
    assert!(
        s.rx.recv().await.is_none(),
        "the connection closes after a fatal error"
    );
    // An expired token (signed with the engine's key, so only the time is wrong).
    let signer = RoomTokens::from_secret(SECRET.as_bytes());
    let now = chrono::Utc::now().timestamp() as u64;
    let expired = signer
        .sign(&RoomClaims {
            sub: "D1".into(),
            consultation: a.clone(),
            room: room_id(&a),
            role: RoomRole::LocalPhysician,
            perms: RoomRole::LocalPhysician.default_permissions(),
            nbf: now - 600,
            exp: now - 60,
            iat: now - 600,
            jti: "expired-1".into(),
        })
        .unwrap();
    let (_, m) = Signal::join(&url, &room_a, &expired).await;
    assert_eq!(m["code"], "token-expired", "{m}");
    // A bearer token of the API is not a room token.
    let (_, m) = Signal::join(&url, &room_a, &doctor()).await;
    assert_eq!(m["code"], "invalid-token", "{m}");
    // The first message must be join.
    let mut s = Signal::connect(&url).await;
    s.send(json!({"type": "ping"})).await;
    let m = s.next().await.unwrap();
    assert_eq!(m["code"], "join-first", "{m}");
    // A valid token works until the session ends; replayed after, refused (RTC-04).
    let (mut ok, m) = Signal::join(&url, &room_a, &tokens_a["local-physician"]).await;
    assert_eq!(m["admission"], "admitted", "{m}");
    ok.send(json!({"type": "leave"})).await;
    wf.ok(&a, "request-report", &doctor(), json!({})).await;
    let (_, m) = Signal::join(&url, &room_a, &tokens_a["local-physician"]).await;
    assert_eq!(m["code"], "room-closed", "{m}");
    // Refusals are audited.
    let rows = wf
        .engine
        .store
        .audit_events(&huizhen_core::store::audit::AuditFilter {
            action: Some("room.join".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let denied = rows.iter().filter(|r| r.event.outcome == "denied").count();
    assert!(denied >= 4, "{rows:?}");
    wf.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_tokens_and_no_join_before_consent() {
    let Some(wf) = start(Backend::Sqlite).await else {
        return;
    };
    let (id, _, _) = consultation(&wf, false, false).await;
    let (s, v) = wf
        .post(
            &format!("/api/consultations/{id}/room/tokens"),
            &doctor(),
            json!({}),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (409, Some("no-consent")), "{v}");
    // A token minted anyway (by the engine's key) is refused at the door (CN-05).
    let signer = RoomTokens::from_secret(SECRET.as_bytes());
    let now = chrono::Utc::now().timestamp() as u64;
    let token = signer
        .sign(&RoomClaims {
            sub: "D1".into(),
            consultation: id.clone(),
            room: room_id(&id),
            role: RoomRole::LocalPhysician,
            perms: RoomRole::LocalPhysician.default_permissions(),
            nbf: now - 5,
            exp: now + 600,
            iat: now - 5,
            jti: "early-1".into(),
        })
        .unwrap();
    let (_, m) = Signal::join(&signal_url(&wf), &room_id(&id), &token).await;
    assert_eq!(m["code"], "no-consent", "{m}");
    wf.stop().await;
}
