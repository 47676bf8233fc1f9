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

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::Store;

/// A secret from the config: its `Debug` and `Display` never show it, so a logged config or
/// error cannot leak it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_owned())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

/// `security:` in the root config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// The HS256 secret (at least 32 bytes), typically `${HUIZHEN_JWT_SECRET}`. When unset, the
    /// secret is read from `jwt_secret_file`.
    #[serde(default)]
    pub jwt_secret: Option<Secret>,
    /// Where the HS256 secret is kept when `jwt_secret` is unset; created (mode 0600) with a
    /// random secret if missing. Relative to the working directory, like the SQLite file.
    #[serde(default = "default_secret_file")]
    pub jwt_secret_file: PathBuf,
    /// A JWKS file with the public keys (RS256, ES256) of an identity provider.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Required `iss` of JWTs, when set.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required `aud` of JWTs, when set.
    #[serde(default)]
    pub audience: Option<String>,
    /// `/metrics` without a token (Prometheus scrapers). Default true.
    #[serde(default = "yes")]
    pub public_metrics: bool,
    /// Failed authentications from one address before it is refused for the rest of the window.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    #[serde(default = "default_failure_window", with = "crate::config::duration")]
    pub failure_window: Duration,
    /// Data-sharing agreements: `reader` facility's users may read `owner`'s data.
    #[serde(default)]
    pub sharing: Vec<Sharing>,
    /// Encryption at rest of message and effect bodies (see `crate::crypto`).
    #[serde(default)]
    pub encryption: crate::crypto::EncryptionConfig,
    /// Requests per second each client address may make to the authenticated API (a token
    /// bucket of `burst`); more get 429. Ingestion (`POST /in/…`) is not counted: senders are
    /// slowed down by back-pressure instead. `per_second: 0` turns it off.
    #[serde(default)]
    pub rate_limit: RateLimit,
}

/// `security.rate_limit`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    #[serde(default = "default_rate")]
    pub per_second: f64,
    #[serde(default = "default_burst")]
    pub burst: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_second: default_rate(),
            burst: default_burst(),
        }
    }
}

fn default_rate() -> f64 {
    200.0
}
fn default_burst() -> f64 {
    400.0
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            jwt_secret: None,
            jwt_secret_file: default_secret_file(),
            jwks_file: None,
            issuer: None,
            audience: None,
            public_metrics: true,
            max_failures: default_max_failures(),
            failure_window: default_failure_window(),
            sharing: Vec::new(),
            encryption: crate::crypto::EncryptionConfig::default(),
            rate_limit: RateLimit::default(),
        }
    }
}

fn default_secret_file() -> PathBuf {
    "data/jwt.secret".into()
}
fn yes() -> bool {
    true
}
fn default_max_failures() -> u32 {
    10
}
fn default_failure_window() -> Duration {
    Duration::from_secs(60)
}

/// A data-sharing agreement between two facilities.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Sharing {
    pub owner: String,
    pub reader: String,
}

/// The roles of the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Admin,
    Integrator,
    Auditor,
    Expert,
    LocalDoctor,
    Pharmacist,
    Patient,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Admin,
        Role::Integrator,
        Role::Auditor,
        Role::Expert,
        Role::LocalDoctor,
        Role::Pharmacist,
        Role::Patient,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Integrator => "integrator",
            Role::Auditor => "auditor",
            Role::Expert => "expert",
            Role::LocalDoctor => "local-doctor",
            Role::Pharmacist => "pharmacist",
            Role::Patient => "patient",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub sub: String,
    pub role: Role,
    /// The caller's facility; `*` for platform staff who act for every facility.
    pub facility: String,
    /// `jwt` or `api-key`.
    pub method: &'static str,
}

/// Facilities whose data a principal may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Facilities(BTreeSet<String>),
}

impl Scope {
    pub fn allows(&self, facility: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Facilities(f) => f.contains(facility),
        }
    }

    /// `None` for every facility, else the list (for repository filters).
    pub fn facilities(&self) -> Option<Vec<String>> {
        match self {
            Scope::All => None,
            Scope::Facilities(f) => Some(f.iter().cloned().collect()),
        }
    }
}

/// What an endpoint does, for the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// List pipelines and their state.
    ReadPipelines,
    /// List and read messages (patient data).
    ReadMessages,
    /// Put messages back to work.
    ReprocessMessages,
    /// Send messages into an `http` source.
    Ingest,
    /// Read the audit trail.
    ReadAudit,
    /// See loaded plugins.
    ReadPlugins,
    /// Reload plugins.
    ManagePlugins,
    /// Read `/metrics` when it is not public.
    ReadMetrics,
}

impl Action {
    /// The role × action matrix (documented in docs/security.md; the authorisation test fails
    /// if a cell changes).
    pub fn roles(self) -> &'static [Role] {
        use Role::*;
        match self {
            Action::ReadPipelines => &[Admin, Integrator, Auditor],
            Action::ReadMessages => &[Admin, Integrator, Auditor],
            Action::ReprocessMessages => &[Admin, Integrator],
            Action::Ingest => &[Admin, Integrator],
            Action::ReadAudit => &[Admin, Auditor],
            Action::ReadPlugins => &[Admin, Integrator, Auditor],
            Action::ManagePlugins => &[Admin],
            Action::ReadMetrics => &[Admin, Integrator, Auditor],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Action::ReadPipelines => "pipeline.read",
            Action::ReadMessages => "message.read",
            Action::ReprocessMessages => "message.reprocess",
            Action::Ingest => "message.ingest",
            Action::ReadAudit => "audit.read",
            Action::ReadPlugins => "plugin.read",
            Action::ManagePlugins => "plugin.reload",
            Action::ReadMetrics => "metrics.read",
        }
    }
}

/// Every endpoint that needs a token: (method, axum route pattern, action). Endpoints not listed
/// here and not public are refused.
pub const ROUTES: &[(&str, &str, Action)] = &[
    ("GET", "/api/pipelines", Action::ReadPipelines),
    ("GET", "/api/backlog", Action::ReadPipelines),
    ("GET", "/api/cluster", Action::ReadPipelines),
    ("GET", "/api/messages", Action::ReadMessages),
    ("GET", "/api/messages/{id}", Action::ReadMessages),
    (
        "POST",
        "/api/messages/{id}/reprocess",
        Action::ReprocessMessages,
    ),
    ("POST", "/in/{*path}", Action::Ingest),
    ("GET", "/api/audit", Action::ReadAudit),
    ("GET", "/api/audit/verify", Action::ReadAudit),
    ("GET", "/api/plugins", Action::ReadPlugins),
    ("POST", "/api/plugins/{name}/reload", Action::ManagePlugins),
    ("GET", "/metrics", Action::ReadMetrics),
];

/// Endpoints open to anyone.
pub const PUBLIC: &[&str] = &["/health", "/ready"];

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

/// Reads (or creates) the HS256 secret.
pub fn load_secret(cfg: &SecurityConfig) -> Result<Vec<u8>, String> {
    if let Some(s) = &cfg.jwt_secret {
        let s = s.expose();
        if s.len() < 32 {
            return Err("security.jwt_secret: must be at least 32 bytes".into());
        }
        return Ok(s.as_bytes().to_vec());
    }
    let path = &cfg.jwt_secret_file;
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let s = s.trim();
            if s.len() < 32 {
                return Err(format!(
                    "{}: the JWT secret must be at least 32 bytes",
                    path.display()
                ));
            }
            Ok(s.as_bytes().to_vec())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_secret(path),
        Err(e) => Err(format!(
            "{}: cannot read the JWT secret: {e}",
            path.display()
        )),
    }
}

fn create_secret(path: &Path) -> Result<Vec<u8>, String> {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = hex::encode(bytes);
    let created = create_file_once(path, secret.as_bytes())
        .map_err(|e| format!("{}: cannot create the JWT secret: {e}", path.display()))?;
    if created {
        tracing::info!(file = %path.display(), "created a new JWT signing secret");
        return Ok(secret.into_bytes());
    }
    // Another process (a second node starting at the same moment) created it first.
    std::fs::read_to_string(path)
        .map(|s| s.trim().as_bytes().to_vec())
        .map_err(|e| format!("{}: cannot read the JWT secret: {e}", path.display()))
}

/// Creates `path` (mode 0600) with `content`, atomically: the content is written to a temporary
/// file that is then hard-linked into place, so a process starting at the same moment sees
/// either no file or the whole file. `Ok(false)` when the file already exists (the caller
/// reads it).
pub(crate) fn create_file_once(path: &Path, content: &[u8]) -> std::io::Result<bool> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!(
        "tmp-{}-{}",
        std::process::id(),
        &crate::message::new_id()[28..]
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let written = opts.open(&tmp).and_then(|mut f| {
        f.write_all(content)?;
        f.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

fn load_jwks(path: &Path) -> Result<Vec<(Option<String>, Algorithm, DecodingKey)>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read the JWKS: {e}", path.display()))?;
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}:{}:{}: not a JWKS: {e}",
            path.display(),
            e.line(),
            e.column()
        )
    })?;
    let mut out = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let alg = match &jwk.algorithm {
            jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
            jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
            _ => {
                return Err(format!(
                    "{}: key {i}: only RSA (RS256) and EC P-256 (ES256) keys are supported",
                    path.display()
                ));
            }
        };
        let key =
            DecodingKey::from_jwk(jwk).map_err(|e| format!("{}: key {i}: {e}", path.display()))?;
        out.push((jwk.common.key_id.clone(), alg, key));
    }
    if out.is_empty() {
        return Err(format!("{}: the JWKS has no keys", path.display()));
    }
    Ok(out)
}

/// A new API key: the token to give to the sender once, and the row to store.
pub fn new_api_key(
    sub: &str,
    role: Role,
    facility: &str,
) -> (String, crate::store::audit::ApiKeyRow) {
    use rand::RngCore;
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    let id = hex::encode(id);
    let secret = hex::encode(secret);
    let token = format!("hzk_{id}_{secret}");
    let row = crate::store::audit::ApiKeyRow {
        id,
        hash: hex::encode(Sha256::digest(secret.as_bytes())),
        sub: sub.to_owned(),
        role: role.as_str().to_owned(),
        facility: facility.to_owned(),
        created_at: crate::message::now_ms(),
        revoked_at: None,
    };
    (token, row)
}

/// Compares two byte strings in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

    /// The facilities whose data `p` may see: its own and those that share with it.
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
}

/// Signs an HS256 token.
pub fn issue_with(
    key: &EncodingKey,
    sub: &str,
    role: Role,
    facility: &str,
    ttl: Duration,
    issuer: Option<&str>,
) -> Result<String, String> {
    if sub.trim().is_empty() {
        return Err("the subject (--sub) must not be empty".into());
    }
    if facility.trim().is_empty() {
        return Err("the facility (--facility) must not be empty; `*` means every facility".into());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = Claims {
        sub: sub.to_owned(),
        role: role.as_str().to_owned(),
        facility: facility.to_owned(),
        exp: now + ttl.as_secs().max(1),
        iat: now,
        iss: issuer.map(str::to_owned),
    };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key).map_err(|e| e.to_string())
}

/// Issues a token from the config alone (the CLI, without a store).
pub fn issue_from_config(
    cfg: &SecurityConfig,
    sub: &str,
    role: Role,
    facility: &str,
    ttl: Duration,
) -> Result<String, String> {
    let secret = load_secret(cfg)?;
    issue_with(
        &EncodingKey::from_secret(&secret),
        sub,
        role,
        facility,
        ttl,
        cfg.issuer.as_deref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
