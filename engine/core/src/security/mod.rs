//! Who may do what, decided in one place.
//!
//! **Authentication.** A request carries `Authorization: Bearer <token>`, where the token is
//! either a JWT or an API key:
//! - JWT, HS256 with the engine's secret (`security.jwt_secret`, or the file
//!   `security.jwt_secret_file`, created with a random secret on first start): what
//!   `huizhen token issue` makes, for people and scripts of an embedded install;
//! - JWT, RS256/ES256, verified against the keys of `security.jwks_file` (an OIDC identity
//!   provider's JWKS), with `issuer`/`audience` checked when configured;
//! - an API key `hzk_<id>_<secret>` for system-to-system senders (`huizhen apikey create`),
//!   stored as the SHA-256 of the secret (the secret is 256 random bits, so the hash cannot be
//!   reversed by enumeration), revocable.
//!
//! A token names a subject (`sub`), a [`Role`] and a facility (`*` = every facility, for
//! platform staff). Failed attempts are counted per client address and claimed subject: after
//! `security.max_failures` within `security.failure_window` that pair gets 429 until the
//! window passes, and after `security.max_failures_per_address` the whole address does.
//! Every failure is audited.
//!
//! **Authorisation.** [`Action::roles`] is the role × action matrix and [`ROUTES`] maps every
//! endpoint to its action; an endpoint missing from the table is refused (deny by default).
//! Data is scoped by facility: [`Security::scope`] gives the facilities a principal may see (its
//! own, plus those that share with it under `security.sharing`), and repository queries filter
//! by it. The next wave's rule ("an expert sees only the patients of consultations assigned to
//! them", STANDARDS FHIR-22) becomes another [`Scope`] variant computed here.

mod config;
mod keys;
mod layout;
mod policy;
mod room;
mod sessions;

pub use config::{RateLimit, Secret, SecurityConfig, Sharing};
pub(crate) use keys::create_file_once;
use keys::load_jwks;
pub(crate) use keys::same;
pub use keys::{Issued, issue_from_config, issue_with, load_secret, new_api_key};
pub use layout::{check_layout, check_private};
pub use policy::{Action, PUBLIC, Principal, ROUTES, Role, Scope};
pub use room::{MAX_ROOM_TOKEN_TTL, ROOM_AUDIENCE, RoomTokens};
pub use sessions::{
    BACKGROUND_HEADER, CSRF_HEADER, LiveSession, SESSION_COOKIE, cookie, session_token_hash,
};

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::Store;

/// Failed authentications in the current window.
#[derive(Default)]
struct Failures {
    by_subject: HashMap<(IpAddr, String), (u32, Instant)>,
    by_address: HashMap<IpAddr, (u32, Instant)>,
}

fn bump(e: &mut (u32, Instant), window: Duration) {
    if e.1.elapsed() > window {
        *e = (0, Instant::now());
    }
    e.0 += 1;
}

/// The subject a bearer token claims, before it is verified: the API key's id or the JWT's
/// `sub` (at most 128 characters); `-` when there is none. Used only to count failed attempts.
pub fn claimed_subject(bearer: Option<&str>) -> String {
    use base64::Engine as _;
    let Some(t) = bearer.map(str::trim) else {
        return "-".into();
    };
    let sub = if let Some(rest) = t.strip_prefix("hzk_") {
        rest.split('_').next().map(|id| format!("apikey:{id}"))
    } else {
        t.split('.')
            .nth(1)
            .and_then(|p| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p)
                    .ok()
            })
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["sub"].as_str().map(str::to_owned))
    };
    sub.filter(|s| !s.is_empty())
        .map(|s| s.chars().take(128).collect())
        .unwrap_or_else(|| "-".into())
}

/// Whether two secrets are equal, in time that does not depend on where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    same(a.as_bytes(), b.as_bytes())
}

/// Why a request was not let in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required: send Authorization: Bearer <token>")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("too many failed attempts from this address; try again later")]
    Throttled,
    #[error("role {role} may not {action}")]
    Forbidden { role: Role, action: &'static str },
    #[error("{0}")]
    Unavailable(String),
}

/// The claims of our JWTs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: String,
    #[serde(default)]
    pub facility: String,
    pub exp: u64,
    #[serde(default)]
    pub iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Not valid before (checked when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// The token's id: `huizhen token issue` records it in the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// The authenticator and the policy.
pub struct Security {
    hs256: (EncodingKey, DecodingKey),
    /// `security.hs256`: whether HS256 tokens are accepted at all.
    hs256_on: bool,
    max_token_ttl: Duration,
    jwks: Vec<(Option<String>, Algorithm, DecodingKey)>,
    issuer: Option<String>,
    audience: Option<String>,
    sharing: Vec<Sharing>,
    public_metrics: bool,
    max_failures: u32,
    window: Duration,
    max_failures_per_address: u32,
    /// Failed attempts per (address, claimed subject), and per address alone.
    failures: Mutex<Failures>,
    rate: RateLimit,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
    store: Store,
    /// Room tokens (RTC-04), keyed from the same secret.
    room: RoomTokens,
    /// `console:`: the console's logins and session limits.
    console: std::sync::Arc<crate::config::ConsoleConfig>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("jwks_keys", &self.jwks.len())
            .finish_non_exhaustive()
    }
}

impl Security {
    pub fn new(cfg: &SecurityConfig, store: Store) -> Result<Security, String> {
        let secret = load_secret(cfg)?;
        let jwks = match &cfg.jwks_file {
            Some(p) => load_jwks(p)?,
            None => Vec::new(),
        };
        for s in &cfg.sharing {
            if s.owner.is_empty() || s.reader.is_empty() {
                return Err("security.sharing: owner and reader must both be set".into());
            }
        }
        Ok(Security {
            hs256_on: cfg.hs256,
            max_token_ttl: cfg.max_token_ttl,
            hs256: (
                EncodingKey::from_secret(&secret),
                DecodingKey::from_secret(&secret),
            ),
            jwks,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            sharing: cfg.sharing.clone(),
            public_metrics: cfg.public_metrics,
            max_failures: cfg.max_failures.max(1),
            window: cfg.failure_window,
            max_failures_per_address: cfg.max_failures_per_address.max(1),
            failures: Mutex::new(Failures::default()),
            rate: cfg.rate_limit,
            buckets: Mutex::new(HashMap::new()),
            store,
            room: RoomTokens::from_secret(&secret),
            console: Default::default(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The signer and verifier of room tokens (RTC-04).
    pub fn room_tokens(&self) -> &RoomTokens {
        &self.room
    }

    /// Whether a route needs no token.
    pub fn is_public(&self, path_pattern: &str) -> bool {
        PUBLIC.contains(&path_pattern) || (self.public_metrics && path_pattern == "/metrics")
    }

    /// Refuses a caller that failed too often recently: the same subject from the same address
    /// after `security.max_failures`, or any subject from the address after
    /// `security.max_failures_per_address` (a hospital behind one NAT address is not locked out
    /// by one user's typos, a password spray from one address still is).
    pub fn check_throttle(&self, ip: IpAddr, subject: &str) -> Result<(), AuthError> {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let window = self.window;
        let key = (ip, subject.to_owned());
        if let Some((n, since)) = f.by_subject.get(&key) {
            if since.elapsed() > window {
                f.by_subject.remove(&key);
            } else if *n >= self.max_failures {
                return Err(AuthError::Throttled);
            }
        }
        if let Some((n, since)) = f.by_address.get(&ip) {
            if since.elapsed() > window {
                f.by_address.remove(&ip);
            } else if *n >= self.max_failures_per_address {
                return Err(AuthError::Throttled);
            }
        }
        Ok(())
    }

    /// Takes one request from the address's token bucket; `Err` with the seconds to wait when
    /// it is empty.
    pub fn take_request(&self, ip: IpAddr) -> Result<(), u64> {
        let RateLimit { per_second, burst } = self.rate;
        if per_second <= 0.0 {
            return Ok(());
        }
        let burst = burst.max(1.0);
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if b.len() > 100_000 {
            b.retain(|_, (_, at)| at.elapsed() < Duration::from_secs(60));
        }
        let now = Instant::now();
        let e = b.entry(ip).or_insert((burst, now));
        e.0 = (e.0 + now.duration_since(e.1).as_secs_f64() * per_second).min(burst);
        e.1 = now;
        if e.0 >= 1.0 {
            e.0 -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - e.0) / per_second).ceil().max(1.0) as u64)
        }
    }

    /// Counts a failed attempt of `subject` (as the token claims it) from an address.
    pub fn record_failure(&self, ip: IpAddr, subject: &str) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let window = self.window;
        if f.by_subject.len() > 100_000 {
            f.by_subject
                .retain(|_, (_, since)| since.elapsed() <= window);
        }
        if f.by_address.len() > 100_000 {
            f.by_address
                .retain(|_, (_, since)| since.elapsed() <= window);
        }
        bump(
            f.by_subject
                .entry((ip, subject.to_owned()))
                .or_insert((0, Instant::now())),
            window,
        );
        bump(
            f.by_address.entry(ip).or_insert((0, Instant::now())),
            window,
        );
    }

    /// Checks a bearer token (JWT or API key) and returns who it is.
    pub async fn authenticate(&self, bearer: Option<&str>) -> Result<Principal, AuthError> {
        let token = bearer.ok_or(AuthError::Missing)?.trim();
        if let Some(rest) = token.strip_prefix("hzk_") {
            return self.api_key(rest).await;
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("not a JWT: {e}")))?;
        let key = match header.alg {
            Algorithm::HS256 if !self.hs256_on => {
                return Err(AuthError::Invalid(
                    "HS256 tokens are switched off (security.hs256: false); use a token of the identity provider".into(),
                ));
            }
            Algorithm::HS256 => &self.hs256.1,
            Algorithm::RS256 | Algorithm::ES256 => {
                let found = self.jwks.iter().find(|(kid, alg, _)| {
                    *alg == header.alg
                        && (header.kid.is_none() || kid.as_ref() == header.kid.as_ref())
                });
                match found {
                    Some((_, _, k)) => k,
                    None => {
                        return Err(AuthError::Invalid(format!(
                            "no configured key for {:?}{} (security.jwks_file)",
                            header.alg,
                            header
                                .kid
                                .as_deref()
                                .map(|k| format!(" with kid {k:?}"))
                                .unwrap_or_default()
                        )));
                    }
                }
            }
            other => {
                return Err(AuthError::Invalid(format!(
                    "algorithm {other:?} is not accepted (HS256, RS256, ES256)"
                )));
            }
        };
        let mut v = Validation::new(header.alg);
        v.leeway = 30;
        v.validate_nbf = true;
        // A configured issuer or audience is required, not only checked when present.
        let mut required = vec!["exp", "sub"];
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        if header.alg == Algorithm::HS256 {
            // Our own tokens carry `iat`; their lifetime is capped like `token issue`'s.
            required.push("iat");
        }
        v.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<Claims>(token, key, &v)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        if header.alg == Algorithm::HS256
            && data.claims.exp.saturating_sub(data.claims.iat) > self.max_token_ttl.as_secs() + 30
        {
            return Err(AuthError::Invalid(format!(
                "the token lives {}s, longer than security.max_token_ttl ({}s)",
                data.claims.exp.saturating_sub(data.claims.iat),
                self.max_token_ttl.as_secs()
            )));
        }
        let c = data.claims;
        let role = Role::parse(&c.role)
            .ok_or_else(|| AuthError::Invalid(format!("unknown role {:?}", c.role)))?;
        if c.facility.is_empty() {
            return Err(AuthError::Invalid(
                "the token names no facility (claim `facility`; `*` for every facility)".into(),
            ));
        }
        Ok(Principal {
            sub: c.sub,
            role,
            facility: c.facility,
            method: "jwt",
        })
    }

    async fn api_key(&self, rest: &str) -> Result<Principal, AuthError> {
        let (id, secret) = rest
            .split_once('_')
            .ok_or_else(|| AuthError::Invalid("malformed API key".into()))?;
        let row = self
            .store
            .api_key(id)
            .await
            .map_err(|e| AuthError::Unavailable(format!("cannot check the API key: {e}")))?
            .ok_or_else(|| AuthError::Invalid("unknown API key".into()))?;
        let hash = hex::encode(Sha256::digest(secret.as_bytes()));
        if !same(hash.as_bytes(), row.hash.as_bytes()) {
            return Err(AuthError::Invalid("unknown API key".into()));
        }
        if row.revoked_at.is_some() {
            return Err(AuthError::Invalid("this API key was revoked".into()));
        }
        let role = Role::parse(&row.role)
            .ok_or_else(|| AuthError::Invalid(format!("unknown role {:?}", row.role)))?;
        Ok(Principal {
            sub: row.sub,
            role,
            facility: row.facility,
            method: "api-key",
        })
    }

    /// The role check of the matrix.
    pub fn authorize(&self, p: &Principal, action: Action) -> Result<(), AuthError> {
        if action.roles().contains(&p.role) {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                role: p.role,
                action: action.name(),
            })
        }
    }

    /// The facilities whose data `p` may read: its own and those that share with it under
    /// `security.sharing`.
    pub fn scope(&self, p: &Principal) -> Scope {
        if p.facility == "*" {
            return Scope::All;
        }
        let mut set = BTreeSet::from([p.facility.clone()]);
        for s in &self.sharing {
            if s.reader == p.facility {
                set.insert(s.owner.clone());
            }
        }
        Scope::Facilities(set)
    }

    /// The facilities into whose pipelines `p` may write (send, reprocess): its own only. A
    /// sharing agreement grants reads, never writes.
    pub fn write_scope(&self, p: &Principal) -> Scope {
        if p.facility == "*" {
            Scope::All
        } else {
            Scope::Facilities(BTreeSet::from([p.facility.clone()]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn roles_round_trip() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn constant_time_compare() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }

    #[test]
    fn short_secrets_are_refused() {
        let cfg = SecurityConfig {
            jwt_secret: Some("short".into()),
            ..SecurityConfig::default()
        };
        assert!(load_secret(&cfg).unwrap_err().contains("32 bytes"));
    }

    #[test]
    fn secrets_do_not_print() {
        let cfg = SecurityConfig {
            jwt_secret: Some("super-secret-value-0123456789abcdef".into()),
            ..SecurityConfig::default()
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("super-secret"), "{shown}");
        assert!(shown.contains("Secret(***)"));
    }

    #[test]
    fn a_missing_secret_file_is_created_private() {
        let dir = tempfile_dir();
        let path = dir.join("sub/jwt.secret");
        let cfg = SecurityConfig {
            jwt_secret_file: path.clone(),
            ..SecurityConfig::default()
        };
        let a = load_secret(&cfg).unwrap();
        assert_eq!(a.len(), 64);
        assert_eq!(load_secret(&cfg).unwrap(), a, "read back, not recreated");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("huizhen-sec-{}", crate::message::new_id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

#[cfg(test)]
mod jwks_tests {
    use super::*;
    use jsonwebtoken::Header;

    /// An identity provider's ES256 token, verified against its JWKS file: accepted with the
    /// right issuer and audience, refused when the audience, the key or the signature differ.
    #[tokio::test]
    async fn es256_tokens_are_verified_against_the_jwks_file() {
        use p256::pkcs8::{EncodePrivateKey, LineEnding};
        let dir = std::env::temp_dir().join(format!("huizhen-jwks-{}", crate::message::new_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let mut jwk: serde_json::Value =
            serde_json::from_str(&key.public_key().to_jwk_string()).unwrap();
        jwk["kid"] = "idp-1".into();
        jwk["alg"] = "ES256".into();
        std::fs::write(
            dir.join("jwks.json"),
            serde_json::json!({ "keys": [jwk] }).to_string(),
        )
        .unwrap();
        let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let enc = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
        let sign = |aud: &str, kid: &str| {
            let mut h = Header::new(Algorithm::ES256);
            h.kid = Some(kid.into());
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            jsonwebtoken::encode(
                &h,
                &serde_json::json!({"sub": "dr.li", "role": "expert", "facility": "prov-1",
                    "exp": now + 60, "iss": "https://idp.test", "aud": aud}),
                &enc,
            )
            .unwrap()
        };
        let cfg = SecurityConfig {
            jwt_secret: Some("hs-secret-0123456789abcdef0123456789".into()),
            jwks_file: Some(dir.join("jwks.json")),
            issuer: Some("https://idp.test".into()),
            audience: Some("huizhen".into()),
            ..SecurityConfig::default()
        };
        let store = crate::store::Store::open(&crate::store::StoreOptions::new(format!(
            "sqlite://{}/s.db",
            dir.display()
        )))
        .await
        .unwrap();
        let sec = Security::new(&cfg, store).unwrap();
        let p = sec
            .authenticate(Some(&sign("huizhen", "idp-1")))
            .await
            .unwrap();
        assert_eq!(
            (p.sub.as_str(), p.role, p.facility.as_str()),
            ("dr.li", Role::Expert, "prov-1")
        );
        assert!(matches!(
            sec.authenticate(Some(&sign("other", "idp-1"))).await,
            Err(AuthError::Invalid(e)) if e.contains("Audience")
        ));
        assert!(matches!(
            sec.authenticate(Some(&sign("huizhen", "idp-2"))).await,
            Err(AuthError::Invalid(e)) if e.contains("idp-2")
        ));
        // Change one character in the middle of the signature.
        let good = sign("huizhen", "idp-1");
        let at = good.rfind('.').unwrap() + 10;
        let flipped = if &good[at..=at] == "A" { "B" } else { "A" };
        let forged = format!("{}{flipped}{}", &good[..at], &good[at + 1..]);
        assert!(sec.authenticate(Some(&forged)).await.is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[cfg(test)]
mod claim_tests {
    use super::*;
    use jsonwebtoken::Header;

    const SECRET: &str = "claims-test-secret-0123456789abcdef0123";

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn hs256(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    async fn security(cfg: SecurityConfig) -> Security {
        let dir = std::env::temp_dir().join(format!("huizhen-claims-{}", crate::message::new_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = crate::store::Store::open(&crate::store::StoreOptions::new(format!(
            "sqlite://{}/s.db",
            dir.display()
        )))
        .await
        .unwrap();
        Security::new(
            &SecurityConfig {
                jwt_secret: Some(SECRET.into()),
                ..cfg
            },
            store,
        )
        .unwrap()
    }

    fn base() -> serde_json::Value {
        serde_json::json!({"sub": "li", "role": "admin", "facility": "*",
            "iat": now(), "exp": now() + 600})
    }

    fn with(mut v: serde_json::Value, k: &str, x: serde_json::Value) -> serde_json::Value {
        v[k] = x;
        v
    }

    /// A configured issuer or audience must be present, not only right when present; `nbf`
    /// is checked; HS256 can be switched off; an HS256 token may not outlive max_token_ttl.
    #[tokio::test]
    async fn required_claims_nbf_hs256_switch_and_lifetime_cap() {
        let sec = security(SecurityConfig {
            issuer: Some("https://idp.test".into()),
            audience: Some("huizhen".into()),
            ..SecurityConfig::default()
        })
        .await;
        let full = with(
            with(base(), "iss", "https://idp.test".into()),
            "aud",
            "huizhen".into(),
        );
        assert!(sec.authenticate(Some(&hs256(full.clone()))).await.is_ok());
        let mut no_iss = full.clone();
        no_iss.as_object_mut().unwrap().remove("iss");
        let e = sec.authenticate(Some(&hs256(no_iss))).await.unwrap_err();
        assert!(e.to_string().contains("iss"), "{e}");
        let mut no_aud = full.clone();
        no_aud.as_object_mut().unwrap().remove("aud");
        let e = sec.authenticate(Some(&hs256(no_aud))).await.unwrap_err();
        assert!(e.to_string().contains("aud"), "{e}");
        let early = with(full.clone(), "nbf", (now() + 3600).into());
        let e = sec.authenticate(Some(&hs256(early))).await.unwrap_err();
        assert!(e.to_string().contains("Immature"), "{e}");
        let long = with(full.clone(), "exp", (now() + 30 * 24 * 3600).into());
        let e = sec.authenticate(Some(&hs256(long))).await.unwrap_err();
        assert!(e.to_string().contains("max_token_ttl"), "{e}");

        let off = security(SecurityConfig {
            hs256: false,
            ..SecurityConfig::default()
        })
        .await;
        let e = off.authenticate(Some(&hs256(base()))).await.unwrap_err();
        assert!(e.to_string().contains("security.hs256"), "{e}");
    }

    #[test]
    fn issue_caps_the_lifetime_and_respects_the_switch() {
        let cfg = SecurityConfig {
            jwt_secret: Some(SECRET.into()),
            ..SecurityConfig::default()
        };
        let ok = issue_from_config(&cfg, "li", Role::Admin, "*", Duration::from_secs(3600));
        assert!(!ok.unwrap().id.is_empty());
        let e = issue_from_config(
            &cfg,
            "li",
            Role::Admin,
            "*",
            Duration::from_secs(30 * 24 * 3600),
        )
        .unwrap_err();
        assert!(e.contains("security.max_token_ttl"), "{e}");
        let off = SecurityConfig {
            hs256: false,
            ..cfg
        };
        let e =
            issue_from_config(&off, "li", Role::Admin, "*", Duration::from_secs(60)).unwrap_err();
        assert!(e.contains("switched off"), "{e}");
    }

    #[test]
    fn claimed_subjects() {
        let t = hs256(base());
        assert_eq!(claimed_subject(Some(&t)), "li");
        assert_eq!(claimed_subject(Some("hzk_abcd_ffff")), "apikey:abcd");
        assert_eq!(claimed_subject(Some("not.a.jwt")), "-");
        assert_eq!(claimed_subject(None), "-");
    }
}
