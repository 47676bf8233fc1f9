//! STUN/TURN servers as handed to clients, with short-lived TURN credentials of the TURN REST
//! API scheme (STANDARDS RTC-03; coturn `use-auth-secret` + `static-auth-secret`):
//! `username = "<expiry unix seconds>:<participant>"`,
//! `credential = base64(HMAC-SHA1(secret, username))`.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use huizhen_core::media::MediaConfig;
use serde::Serialize;
use sha1::Sha1;

/// One entry of `RTCConfiguration.iceServers`, as a browser takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// The TURN REST credentials for `participant` with `secret`, valid until `expires` (seconds
/// since the epoch).
pub fn turn_credentials(secret: &str, participant: &str, expires: u64) -> (String, String) {
    let username = format!("{expires}:{participant}");
    let mut mac =
        <Hmac<Sha1> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, credential)
}

/// The ICE servers of `cfg` for `participant` at `now`: minted credentials for servers with a
/// secret, static ones as configured, none for STUN. A minted credential never outlives the
/// room token (`not_after`).
pub fn ice_servers(
    cfg: &MediaConfig,
    participant: &str,
    now: u64,
    not_after: u64,
) -> Vec<IceServer> {
    cfg.ice_servers
        .iter()
        .map(|s| {
            let (username, credential) = match (&s.secret, &s.username, &s.credential) {
                (Some(secret), _, _) => {
                    let expires = (now + s.ttl.as_secs()).min(not_after.max(now + 60));
                    let (u, c) = turn_credentials(secret.expose(), participant, expires);
                    (Some(u), Some(c))
                }
                (None, u, c) => (u.clone(), c.as_ref().map(|c| c.expose().to_owned())),
            };
            IceServer {
                urls: s.urls.clone(),
                username,
                credential,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The coturn documentation's scheme, checked against an independent computation:
    /// HMAC-SHA1("secret", "1700000000:alice"), base64.
    #[test]
    fn credentials_follow_the_turn_rest_scheme() {
        let (u, c) = turn_credentials("north-secret", "alice", 1_700_000_000);
        assert_eq!(u, "1700000000:alice");
        // python3 -c 'import hmac,hashlib,base64;print(base64.b64encode(hmac.new(b"north-secret",b"1700000000:alice",hashlib.sha1).digest()).decode())'
        assert_eq!(c, "g+jb180fcj+xlpA/2mP60OdIgU0=");
    }
}
