//! The consultation call (issue 18; STANDARDS §5 RTC-01…RTC-31, CN-05, CN-06): WebSocket
//! signaling at `/ws/signal` authenticated by room tokens, and a selective forwarding unit on
//! the `webrtc` crate that forwards every participant's RTP to the others without transcoding.
//!
//! - [`protocol`]: the signaling messages (docs/media.md specifies them for client authors);
//! - [`signal`]: the WebSocket endpoint (join first, size and rate limits, reconnect);
//! - [`control`]: the consultation API's hold on the rooms (recording start/stop, the live call);
//! - [`hub`]: rooms, the lobby (CN-06), publications and subscriptions, join/leave audit;
//! - [`sfu`]: peer connections, publications and their layers, publisher bitrate hints;
//! - [`forward`]: a subscription's forwarding: one layer per video, chosen per receiver;
//! - [`simulcast`]: rids and rejected sections in the SDP (pure);
//! - [`rewrite`]: SSRC, sequence numbers and timestamps continuous across switches (pure);
//! - [`feedback`]: the REMB, receiver reports and PLIs a peer connection's remote sends;
//! - [`layers`]: simulcast layer choice per receiver, audio first, key-frame switching (pure);
//! - [`record`]: recording with everyone's consent, per-track files into the object store;
//! - [`qos`]: the call's quality: client `stats`, the SFU's RTCP receiver reports, summaries,
//!   /metrics and the RTC-21 alerts (RTC-20, RTC-21);
//! - [`turn`]: STUN/TURN servers and TURN REST credentials (RTC-02, RTC-03);
//! - [`page`]: the call page `/call/{room}` (HTML + JS in the binary).
//!
//! The room tokens are issued by the engine (`POST /api/consultations/{id}/room/tokens`,
//! `huizhen_core::security::RoomTokens`) and the admission rules are the domain's
//! (`huizhen_domain::consultation::room`).

// Signaling errors are whole `ServerMsg`s, sent as they are; their size does not matter.
#![allow(clippy::result_large_err)]

pub mod control;
pub mod feedback;
pub mod forward;
pub mod hub;
pub mod layers;
pub mod page;
pub mod protocol;
pub mod qos;
pub mod record;
pub mod rewrite;
pub mod session;
pub mod sfu;
pub mod signal;
pub mod simulcast;
pub mod turn;

use axum::routing::get;

/// The routes of the call: `/ws/signal` and the call page `/call/{room}`.
pub fn routes() -> axum::Router<huizhen_core::http::AppState> {
    axum::Router::new()
        .route("/ws/signal", get(signal::ws_signal))
        .route("/call/{room}", get(page::call_page))
}

inventory::submit! {
    huizhen_core::extensions::HttpRoutes {
        name: "media signaling",
        routes,
    }
}
