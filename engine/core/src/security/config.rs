//! `security:` in the root config, and [`Secret`], a string that never prints.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

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
    /// Accept HS256 tokens signed with the engine's secret (what `huizhen token issue` makes).
    /// Default true; set false when every user comes through the identity provider's JWKS, so
    /// that a leaked engine secret cannot mint tokens.
    #[serde(default = "yes")]
    pub hs256: bool,
    /// The longest lifetime of an HS256 token: `huizhen token issue --ttl` refuses more, and
    /// the engine refuses a token whose `exp - iat` is longer. Default 24h.
    #[serde(default = "default_max_token_ttl", with = "crate::config::duration")]
    pub max_token_ttl: Duration,
    /// `/metrics` without a token (Prometheus scrapers). Default true.
    #[serde(default = "yes")]
    pub public_metrics: bool,
    /// Failed authentications of one subject from one address before that subject is refused
    /// from that address for the rest of the window.
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    /// Failed authentications from one address, whatever subject they claim, before the
    /// address is refused for the rest of the window (password sprays). Default 200.
    #[serde(default = "default_max_failures_per_address")]
    pub max_failures_per_address: u32,
    #[serde(default = "default_failure_window", with = "crate::config::duration")]
    pub failure_window: Duration,
    /// Data-sharing agreements: `reader` facility's users may read `owner`'s data.
    #[serde(default)]
    pub sharing: Vec<Sharing>,
    /// Encryption at rest of message and effect bodies (see `crate::crypto`).
    #[serde(default)]
    pub encryption: crate::crypto::EncryptionConfig,
    /// Requests per second each client address may make to the authenticated API (a token
    /// bucket of `burst`); more get 429. Ingestion (`POST /in/…`) is not counted: it is
    /// bounded by the pipeline's `backlog_limit` instead. `per_second: 0` turns it off.
    #[serde(default)]
    pub rate_limit: RateLimit,
    /// The audit key and the checkpoints that anchor the audit trail outside the database
    /// (see `crate::store::anchor`).
    #[serde(default)]
    pub audit: crate::store::anchor::AuditConfig,
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
            hs256: true,
            max_token_ttl: default_max_token_ttl(),
            public_metrics: true,
            max_failures: default_max_failures(),
            max_failures_per_address: default_max_failures_per_address(),
            failure_window: default_failure_window(),
            sharing: Vec::new(),
            encryption: crate::crypto::EncryptionConfig::default(),
            rate_limit: RateLimit::default(),
            audit: crate::store::anchor::AuditConfig::default(),
        }
    }
}

fn default_secret_file() -> PathBuf {
    "data/jwt.secret".into()
}
fn default_max_token_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn yes() -> bool {
    true
}
fn default_max_failures_per_address() -> u32 {
    200
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
