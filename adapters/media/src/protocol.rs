//! The signaling messages of `/ws/signal` (docs/media.md has every one with a JSON example).
//! Each WebSocket text frame is one JSON object with a `type`.

use huizhen_domain::consultation::room::{Permissions, RoomRole};
use serde::{Deserialize, Serialize};

use crate::turn::IceServer;
pub use huizhen_domain::consultation::call_quality::Sample;

/// A message from a client.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMsg {
    /// Enter the room (first message), or come back to it with `resume` after a dropped
    /// connection (RTC-12).
    Join {
        room: String,
        token: String,
        #[serde(default)]
        resume: Option<String>,
    },
    /// An SDP offer: a new publication (`pc` not known yet: the client's camera/microphone or a
    /// screen share) or a renegotiation / ICE restart of a known publication.
    Offer {
        pc: String,
        sdp: String,
        /// `camera` (default) or `screen`.
        #[serde(default)]
        source: Option<String>,
    },
    /// The answer to a subscription offer of the SFU.
    Answer { pc: String, sdp: String },
    /// A trickled ICE candidate for `pc` (`candidate: null` ends the candidates).
    Candidate {
        pc: String,
        candidate: Option<CandidateInit>,
    },
    /// Ask the SFU for an ICE-restart offer on the subscription `pc` (network change).
    Restart { pc: String },
    /// Microphone / camera / screen-share state, shown to the others.
    State {
        #[serde(default)]
        audio: Option<bool>,
        #[serde(default)]
        video: Option<bool>,
        #[serde(default)]
        screen: Option<bool>,
    },
    /// Stop publishing `pc`.
    Unpublish { pc: String },
    /// Start (`true`) or stop (`false`) recording the call: a token with the `record`
    /// permission, and every participant's recording consent on file (RTC-30).
    Record { active: bool },
    /// Quality samples of the tracks of `pc` from the client's `getStats()` (RTC-20), every
    /// few seconds.
    Stats { pc: String, samples: Vec<Sample> },
    /// Leave the room.
    Leave,
    /// Keep-alive; answered by `pong`.
    Ping,
}

/// `RTCIceCandidateInit` as the browser gives it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CandidateInit {
    pub candidate: String,
    #[serde(default)]
    pub sdp_mid: Option<String>,
    #[serde(default, rename = "sdpMLineIndex")]
    pub sdp_mline_index: Option<u16>,
    #[serde(default)]
    pub username_fragment: Option<String>,
}

/// Someone in the room, as the others see them.
#[derive(Debug, Clone, Serialize)]
pub struct PeerInfo {
    pub session: String,
    pub participant: String,
    pub role: RoomRole,
    /// `false` while held in the lobby (CN-06).
    pub admitted: bool,
    /// `false` while the signaling connection is down (the media may still flow).
    pub connected: bool,
    pub audio: bool,
    pub video: bool,
    pub screen: bool,
}

/// A message from the engine.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// The answer to `join`.
    Joined {
        session: String,
        room: String,
        consultation: String,
        participant: String,
        role: RoomRole,
        permissions: Permissions,
        /// `admitted`, or `lobby` (held until `waiting_for` is present).
        admission: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        waiting_for: Option<RoomRole>,
        resumed: bool,
        ice_servers: Vec<IceServer>,
        peers: Vec<PeerInfo>,
        limits: Limits,
        /// Seconds since the epoch when the room token expires.
        expires_at: u64,
    },
    /// Released from the lobby.
    Admitted,
    /// Someone joined, was held, was admitted, changed state, lost or regained the signaling
    /// connection, or left.
    Presence {
        event: &'static str,
        peer: PeerInfo,
    },
    /// The SFU's SDP offer of a subscription: the tracks `publisher` publishes on `source`.
    Offer {
        pc: String,
        sdp: String,
        publisher: String,
        source: String,
    },
    /// The SFU's SDP answer to a client's offer.
    Answer {
        pc: String,
        sdp: String,
    },
    /// A subscription or publication ended (its publisher left or unpublished).
    Closed {
        pc: String,
    },
    /// Something was refused; `fatal` ones close the connection.
    Error {
        code: &'static str,
        message: String,
        fatal: bool,
    },
    Pong,
    /// The call is being recorded (`true`) or no longer (`false`): sent to everyone in the room
    /// when a recording starts or stops, and to whoever joins while one runs (the recording
    /// indicator, RTC-30).
    Recording {
        active: bool,
    },
    /// A quality alert raised (`active`) or cleared at the RTC-21 thresholds, on a track of
    /// `session` as `source` (`client` or `sfu`) measured it; sent to everyone in the room.
    QualityAlert {
        session: String,
        role: RoomRole,
        pc: String,
        track: String,
        kind: String,
        direction: String,
        source: &'static str,
        metric: &'static str,
        value: f64,
        threshold: f64,
        active: bool,
    },
}

/// The signaling limits, told to the client at join.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub messages_per_second: u32,
    pub reconnect_grace_seconds: u64,
}

impl ServerMsg {
    pub fn error(code: &'static str, message: impl Into<String>) -> ServerMsg {
        ServerMsg::Error {
            code,
            message: message.into(),
            fatal: false,
        }
    }

    pub fn fatal(code: &'static str, message: impl Into<String>) -> ServerMsg {
        ServerMsg::Error {
            code,
            message: message.into(),
            fatal: true,
        }
    }
}
