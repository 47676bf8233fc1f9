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
//! platform staff). Failed attempts are counted per client address: after
//! `security.max_failures` within `security.failure_window`, that address gets 429 until the
//! window passes. Every failure is audited.
//!
//! **Authorisation.** [`Action::roles`] is the role × action matrix and [`ROUTES`] maps every
//! endpoint to its action; an endpoint missing from the table is refused (deny by default).
//! Data is scoped by facility: [`Security::scope`] gives the facilities a principal may see (its
//! own, plus those that share with it under `security.sharing`), and repository queries filter
//! by it. The next wave's rule ("an expert sees only the patients of consultations assigned to
//! them", STANDARDS FHIR-22) becomes another [`Scope`] variant computed here.

mod config;
mod keys;
mod policy;

pub use config::{RateLimit, Secret, SecurityConfig, Sharing};
pub(crate) use keys::create_file_once;
pub use keys::{issue_from_config, issue_with, load_secret, new_api_key};
use keys::{load_jwks, same};
pub use policy::{Action, PUBLIC, Principal, ROUTES, Role, Scope};

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::Store;

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
}

/// The authenticator and the policy.
pub struct Security {
    hs256: (EncodingKey, DecodingKey),
    jwks: Vec<(Option<String>, Algorithm, DecodingKey)>,
    issuer: Option<String>,
    audience: Option<String>,
    sharing: Vec<Sharing>,
    public_metrics: bool,
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    rate: RateLimit,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
    store: Store,
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
            failures: Mutex::new(HashMap::new()),
            rate: cfg.rate_limit,
            buckets: Mutex::new(HashMap::new()),
            store,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether a route needs no token.
    pub fn is_public(&self, path_pattern: &str) -> bool {
        PUBLIC.contains(&path_pattern) || (self.public_metrics && path_pattern == "/metrics")
    }

    /// Issues an HS256 token (what `huizhen token issue` prints).
    pub fn issue(
        &self,
        sub: &str,
        role: Role,
        facility: &str,
        ttl: Duration,
    ) -> Result<String, String> {
        issue_with(
            &self.hs256.0,
            sub,
            role,
            facility,
            ttl,
            self.issuer.as_deref(),
        )
    }

    /// Refuses an address that failed too often recently.
    pub fn check_throttle(&self, ip: IpAddr) -> Result<(), AuthError> {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((n, since)) = f.get(&ip) {
            if since.elapsed() > self.window {
                f.remove(&ip);
            } else if *n >= self.max_failures {
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

    /// Counts a failed attempt from an address.
    pub fn record_failure(&self, ip: IpAddr) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if f.len() > 100_000 {
            let window = self.window;
            f.retain(|_, (_, since)| since.elapsed() <= window);
        }
        let e = f.entry(ip).or_insert((0, Instant::now()));
        if e.1.elapsed() > self.window {
            *e = (0, Instant::now());
        }
        e.0 += 1;
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
        v.set_required_spec_claims(&["exp", "sub"]);
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
        }
        match &self.audience {
            Some(aud) => v.set_audience(&[aud]),
            None => v.validate_aud = false,
        }
        let data = jsonwebtoken::decode::<Claims>(token, key, &v)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
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
