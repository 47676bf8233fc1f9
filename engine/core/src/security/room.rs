//! Room tokens (STANDARDS RTC-04): short-lived HS256 JWTs whose claims are the domain's
//! [`RoomClaims`], signed with a key derived from the engine's secret
//! (HMAC-SHA256(secret, "huizhen room tokens v1")). The derived key keeps the two kinds apart:
//! a room token is never accepted as an API bearer token, nor an API token as a room token.

use std::time::Duration;

use hmac::{Hmac, Mac};
use huizhen_domain::consultation::room::RoomClaims;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The audience of every room token.
pub const ROOM_AUDIENCE: &str = "huizhen-room";

/// The longest a room token may live.
pub const MAX_ROOM_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);

#[derive(Serialize, Deserialize)]
struct Wire {
    aud: String,
    #[serde(flatten)]
    claims: RoomClaims,
}

/// Signs and verifies room tokens.
#[derive(Clone)]
pub struct RoomTokens {
    enc: EncodingKey,
    dec: DecodingKey,
}

impl std::fmt::Debug for RoomTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoomTokens")
    }
}

impl RoomTokens {
    /// The room-token keys of an engine secret.
    pub fn from_secret(secret: &[u8]) -> RoomTokens {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key");
        mac.update(b"huizhen room tokens v1");
        let key = mac.finalize().into_bytes();
        RoomTokens {
            enc: EncodingKey::from_secret(&key),
            dec: DecodingKey::from_secret(&key),
        }
    }

    /// Signs `claims`; refuses a window longer than [`MAX_ROOM_TOKEN_TTL`] or an empty one.
    pub fn sign(&self, claims: &RoomClaims) -> Result<String, String> {
        if claims.exp <= claims.nbf {
            return Err("a room token's exp must come after its nbf".into());
        }
        if claims.exp - claims.nbf > MAX_ROOM_TOKEN_TTL.as_secs() {
            return Err(format!(
                "a room token may live at most {}s",
                MAX_ROOM_TOKEN_TTL.as_secs()
            ));
        }
        let wire = Wire {
            aud: ROOM_AUDIENCE.into(),
            claims: claims.clone(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &wire, &self.enc)
            .map_err(|e| e.to_string())
    }

    /// The claims of a valid token: signature, audience, `nbf` and `exp` checked (no leeway:
    /// the tokens are short-lived and the engine is their only issuer).
    pub fn verify(&self, token: &str) -> Result<RoomClaims, String> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        v.validate_nbf = true;
        v.set_audience(&[ROOM_AUDIENCE]);
        v.set_required_spec_claims(&["exp", "nbf", "aud", "sub"]);
        jsonwebtoken::decode::<Wire>(token.trim(), &self.dec, &v)
            .map(|d| d.claims.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    "the room token has expired".into()
                }
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => {
                    "the room token is not valid yet".into()
                }
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    "the room token's signature does not verify".into()
                }
                _ => format!("not a room token: {e}"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use huizhen_domain::consultation::room::{RoomRole, room_id};

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn claims(nbf: u64, exp: u64) -> RoomClaims {
        RoomClaims {
            sub: "E1".into(),
            consultation: "C1".into(),
            room: room_id("C1"),
            role: RoomRole::Expert,
            perms: RoomRole::Expert.default_permissions(),
            nbf,
            exp,
            iat: nbf,
            jti: "j1".into(),
        }
    }

    #[test]
    fn tokens_verify_until_they_expire_and_only_with_their_key() {
        let t = RoomTokens::from_secret(&[7u8; 32]);
        let n = now();
        let c = claims(n - 5, n + 60);
        let token = t.sign(&c).unwrap();
        assert_eq!(t.verify(&token).unwrap(), c);
        let expired = t.sign(&claims(n - 120, n - 60)).unwrap();
        assert_eq!(
            t.verify(&expired).unwrap_err(),
            "the room token has expired"
        );
        let early = t.sign(&claims(n + 60, n + 120)).unwrap();
        assert_eq!(
            t.verify(&early).unwrap_err(),
            "the room token is not valid yet"
        );
        let other = RoomTokens::from_secret(&[8u8; 32]);
        assert!(other.verify(&token).is_err());
        // An API token signed with the engine secret itself is not a room token.
        let api = super::super::issue_with(
            &EncodingKey::from_secret(&[7u8; 32]),
            "E1",
            super::super::Role::Expert,
            "hosp-a",
            Duration::from_secs(60),
            None,
        )
        .unwrap();
        assert!(t.verify(&api.token).is_err());
        assert!(t.sign(&claims(n, n + 13 * 3600)).is_err());
    }
}
