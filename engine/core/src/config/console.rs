//! `console:` in the root config: the web console at `/ui` (issue 21) and how people log in to
//! it: local users (argon2id passwords, a TOTP second factor, lockout, session timeouts: CN-31)
//! and, optionally, a hospital's identity provider (OIDC authorization code + PKCE).

use std::time::Duration;

use serde::Deserialize;

use super::duration;

/// Whether local users need a second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SecondFactor {
    /// A user who enrolled a TOTP authenticator must give a code; others log in with their
    /// password alone (the engine warns at start: CN-31 wants two factors).
    #[default]
    Optional,
    /// Every local user must give a TOTP code; one without an authenticator enrols one at the
    /// first login, before anything else.
    Required,
}

/// `console:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve the console at `/ui` (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A session unused this long ends (default 30m).
    #[serde(default = "default_idle", with = "duration")]
    pub session_idle: Duration,
    /// A session ends this long after the login, used or not (default 12h).
    #[serde(default = "default_max", with = "duration")]
    pub session_max: Duration,
    /// Failed logins of one account in a row before it is locked (default 5).
    #[serde(default = "default_failures")]
    pub max_failures: u32,
    /// How long a locked account stays locked (default 15m).
    #[serde(default = "default_lockout", with = "duration")]
    pub lockout: Duration,
    /// `optional` (default) or `required`: the TOTP second factor of local users.
    #[serde(default)]
    pub second_factor: SecondFactor,
    /// Create the user `admin` (role admin, every facility) with a random password on the first
    /// start with no users, and write the password to `initial_admin_file` (default true).
    #[serde(default = "yes")]
    pub create_admin: bool,
    /// Where the first start writes the initial admin password (mode 0600), relative to the
    /// working directory like the SQLite file (default `data/console-admin.password`).
    #[serde(default = "default_admin_file")]
    pub initial_admin_file: std::path::PathBuf,
    /// Log in through a hospital's identity provider.
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
}

/// `console.oidc:` an OpenID Connect provider (authorization code flow with PKCE S256).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer URL; its `/.well-known/openid-configuration` names the endpoints and keys
    /// unless they are given below. ID tokens must carry exactly this `iss`.
    pub issuer: String,
    /// The client id registered at the provider (the ID token's audience).
    pub client_id: String,
    /// The client secret, for a confidential client (`${OIDC_CLIENT_SECRET}`); none for a
    /// public client, which PKCE protects.
    #[serde(default)]
    pub client_secret: Option<crate::security::Secret>,
    /// Where the provider sends the browser back: this engine's `/ui/oidc/callback` as the
    /// browser reaches it (`https://huizhen.example.org/ui/oidc/callback`).
    pub redirect_uri: String,
    /// Overrides of the discovered endpoints.
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint: Option<String>,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Scopes asked for (default `openid profile`).
    #[serde(default = "default_scopes")]
    pub scopes: String,
    /// The claim naming the Huizhen role (default `huizhen_role`).
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// The claim naming the facility (default `facility`; `*` for platform staff).
    #[serde(default = "default_facility_claim")]
    pub facility_claim: String,
    /// The claim shown as the user's name (default `preferred_username`, else `sub`).
    #[serde(default = "default_name_claim")]
    pub name_claim: String,
    /// The label of the login button (default the issuer's host).
    #[serde(default)]
    pub label: Option<String>,
}

fn yes() -> bool {
    true
}
fn default_idle() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_max() -> Duration {
    Duration::from_secs(12 * 3600)
}
fn default_failures() -> u32 {
    5
}
fn default_lockout() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_admin_file() -> std::path::PathBuf {
    "data/console-admin.password".into()
}
fn default_scopes() -> String {
    "openid profile".into()
}
fn default_role_claim() -> String {
    "huizhen_role".into()
}
fn default_facility_claim() -> String {
    "facility".into()
}
fn default_name_claim() -> String {
    "preferred_username".into()
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: true,
            session_idle: default_idle(),
            session_max: default_max(),
            max_failures: default_failures(),
            lockout: default_lockout(),
            second_factor: SecondFactor::default(),
            create_admin: true,
            initial_admin_file: default_admin_file(),
            oidc: None,
        }
    }
}
