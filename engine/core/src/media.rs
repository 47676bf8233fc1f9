//! The `media:` block of the root configuration: the consultation call's room tokens, the
//! SFU's UDP ports and announced address, the STUN/TURN servers handed to clients, and the
//! signaling limits (STANDARDS RTC-02, RTC-03, RTC-04). The SFU itself is `huizhen-media`; the
//! engine keeps this block in its [`crate::extensions::Extensions`] for it.

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::security::Secret;

/// `media:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// How long a room token lives (at most 12 h).
    #[serde(default = "default_token_ttl", with = "crate::config::duration")]
    pub token_ttl: Duration,
    /// The address the SFU's UDP sockets bind (default: every interface).
    #[serde(default = "default_bind")]
    pub bind: IpAddr,
    /// The UDP port range of the SFU, `[first, last]` (default: ephemeral ports). Open it in
    /// the firewall.
    #[serde(default)]
    pub udp_ports: Option<(u16, u16)>,
    /// The address announced in the SFU's ICE candidates when the engine sits behind a 1:1 NAT
    /// (a cloud VM's public address).
    #[serde(default)]
    pub public_ip: Option<IpAddr>,
    /// STUN and TURN servers handed to clients (and used by the SFU).
    #[serde(default)]
    pub ice_servers: Vec<IceServerConfig>,
    /// The largest signaling message accepted, in bytes.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Signaling messages per second per connection (a burst of twice as many is let through).
    #[serde(default = "default_messages_per_second")]
    pub messages_per_second: u32,
    /// How long a participant whose signaling connection dropped stays in the room, its media
    /// still flowing, waiting for it to reconnect (RTC-12).
    #[serde(default = "default_reconnect_grace", with = "crate::config::duration")]
    pub reconnect_grace: Duration,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            token_ttl: default_token_ttl(),
            bind: default_bind(),
            udp_ports: None,
            public_ip: None,
            ice_servers: Vec::new(),
            max_message_bytes: default_max_message_bytes(),
            messages_per_second: default_messages_per_second(),
            reconnect_grace: default_reconnect_grace(),
        }
    }
}

/// One STUN or TURN server. A TURN server with a `secret` gets per-participant credentials of
/// the TURN REST API scheme (RTC-03, coturn `use-auth-secret`); one with `username`/`credential`
/// gets those as they are.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServerConfig {
    /// `stun:host:3478`, `turn:host:3478?transport=udp`, `turn:host:3478?transport=tcp`,
    /// `turns:host:443?transport=tcp` (RTC-02).
    pub urls: Vec<String>,
    /// The shared secret of coturn's `static-auth-secret`.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// How long minted credentials stay valid (at most a day, the draft's default).
    #[serde(default = "default_turn_ttl", with = "crate::config::duration")]
    pub ttl: Duration,
    /// Static credentials (no secret).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub credential: Option<Secret>,
}

impl MediaConfig {
    /// What is wrong with the block, naming the field.
    pub fn check(&self) -> Result<(), String> {
        if self.token_ttl.is_zero() || self.token_ttl > crate::security::MAX_ROOM_TOKEN_TTL {
            return Err("media.token_ttl: between 1s and 12h".into());
        }
        if let Some((a, b)) = self.udp_ports
            && (a == 0 || b < a)
        {
            return Err(format!(
                "media.udp_ports: [{a}, {b}] is not a range of ports (first ≥ 1, last ≥ first)"
            ));
        }
        for (i, s) in self.ice_servers.iter().enumerate() {
            if s.urls.is_empty() {
                return Err(format!("media.ice_servers[{i}].urls: at least one URL"));
            }
            for u in &s.urls {
                if !["stun:", "stuns:", "turn:", "turns:"]
                    .iter()
                    .any(|p| u.starts_with(p))
                {
                    return Err(format!(
                        "media.ice_servers[{i}].urls: {u:?} is not a stun:, stuns:, turn: or turns: URL"
                    ));
                }
            }
            if s.ttl.is_zero() || s.ttl > Duration::from_secs(86_400) {
                return Err(format!(
                    "media.ice_servers[{i}].ttl: between 1s and 24h (RTC-03)"
                ));
            }
            if s.secret.is_some() && (s.username.is_some() || s.credential.is_some()) {
                return Err(format!(
                    "media.ice_servers[{i}]: either a secret (TURN REST credentials) or a username and credential, not both"
                ));
            }
        }
        if self.max_message_bytes < 1024 {
            return Err("media.max_message_bytes: at least 1024".into());
        }
        if self.messages_per_second == 0 {
            return Err("media.messages_per_second: at least 1".into());
        }
        Ok(())
    }
}

fn default_token_ttl() -> Duration {
    Duration::from_secs(2 * 3600)
}
fn default_bind() -> IpAddr {
    IpAddr::from([0, 0, 0, 0])
}
fn default_max_message_bytes() -> usize {
    64 * 1024
}
fn default_messages_per_second() -> u32 {
    50
}
fn default_reconnect_grace() -> Duration {
    Duration::from_secs(30)
}
fn default_turn_ttl() -> Duration {
    Duration::from_secs(3600)
}

/// Who asks for a recording to start or stop through the API (`POST
/// /api/consultations/{id}/recording`), in the room role their user role stands for.
#[derive(Debug, Clone)]
pub struct RecordRequest {
    pub consultation: String,
    /// The API user (`sub`).
    pub by: String,
    /// The room role the user acts in: the accepted expert, or a local doctor of the
    /// requesting facility as the local physician.
    pub role: huizhen_domain::consultation::room::RoomRole,
    /// Start (`true`) or stop.
    pub active: bool,
    /// The client's address (audit).
    pub source: String,
}

/// Why a recording did not start or stop: the signaling error code (`no-recording-consent`,
/// `not-permitted`, `already-recording`, `not-recording`, `not-in-call`,
/// `recording-unavailable`, `unavailable`) and a message naming what is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    pub code: &'static str,
    pub message: String,
}

/// The recording a room is making now.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LiveRecording {
    pub id: String,
    pub started_by: String,
    /// Milliseconds since the epoch.
    pub started_at: i64,
    /// Tracks being recorded.
    pub tracks: usize,
}

/// A quality alert raised at an RTC-21 threshold and not cleared yet.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ActiveAlert {
    pub session: String,
    pub participant: String,
    pub role: String,
    pub pc: String,
    pub track: String,
    pub kind: String,
    pub direction: String,
    pub source: String,
    pub metric: &'static str,
    pub threshold: f64,
    /// The figure of the last sample.
    pub value: Option<f64>,
    /// When the last sample came (milliseconds since the epoch).
    pub at: i64,
}

/// What a consultation's room is doing now (empty when nobody is in it).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LiveCall {
    pub recording: Option<LiveRecording>,
    pub alerts: Vec<ActiveAlert>,
}

/// The engine's rooms as the consultation API sees them (`huizhen-media` provides it through a
/// [`CallControlFactory`]): start or stop a room's recording under the same consent rules as the
/// `record` signaling message, and what a room is doing now for the call view.
pub trait CallControl: Send + Sync {
    /// Starts or stops the recording of the consultation's room; the id of the recording.
    fn record(
        &self,
        req: RecordRequest,
    ) -> futures::future::BoxFuture<'_, Result<String, RecordError>>;
    /// The consultation's room now.
    fn live<'a>(&'a self, consultation: &'a str) -> futures::future::BoxFuture<'a, LiveCall>;
}

/// Makes (or finds) the engine's [`CallControl`]; `huizhen-media` submits one through
/// `inventory`.
pub struct CallControlFactory {
    pub make: fn(&crate::http::AppState) -> Result<std::sync::Arc<dyn CallControl>, String>,
}

inventory::collect!(CallControlFactory);

/// The engine's [`CallControl`], if the media adapter is linked in.
pub fn call_control(
    s: &crate::http::AppState,
) -> Option<Result<std::sync::Arc<dyn CallControl>, String>> {
    inventory::iter::<CallControlFactory>
        .into_iter()
        .next()
        .map(|f| (f.make)(s))
}
