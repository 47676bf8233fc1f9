//! Console sessions (issue 21): the `hz_session` cookie the console's login sets resolves to
//! the same [`Principal`] a bearer token would, so the console calls the same API under the same
//! roles, facility scope and audit. A session ends when unused for `console.session_idle` or
//! `console.session_max` after the login, whichever comes first (CN-31). A change (any method
//! but GET and HEAD) made with a session must carry its CSRF token in `X-CSRF-Token`; the
//! cookie is also `SameSite=Strict` and `HttpOnly`.

use sha2::{Digest, Sha256};

use super::{AuthError, Principal, Role, Security, keys::same};
use crate::message::now_ms;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "hz_session";

/// The header carrying a session's CSRF token on changes.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A session's last use is written at most this often.
const TOUCH_EVERY_MS: i64 = 15_000;

/// The header the console's pages send on their automatic refreshes: such a request does not
/// count as use, so a dashboard left open still times out (CN-31: session timeout).
pub const BACKGROUND_HEADER: &str = "x-huizhen-background";

/// The stored form of a session token: its SHA-256, hex. The token is 256 random bits, so the
/// hash cannot be reversed by enumeration.
pub fn session_token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// A session that is live.
#[derive(Debug, Clone)]
pub struct LiveSession {
    pub principal: Principal,
    /// What changes must carry in `X-CSRF-Token`.
    pub csrf: String,
    /// How the user logged in (`password`, `password+totp`, `oidc`).
    pub method: String,
    /// Unix ms of the end by inactivity and of the absolute end.
    pub idle_until: i64,
    pub expires_at: i64,
}

impl Security {
    /// The console's settings (`console:`: session timeouts, lockout, second factor, OIDC).
    pub fn with_console(mut self, console: &crate::config::ConsoleConfig) -> Security {
        self.console = std::sync::Arc::new(console.clone());
        self
    }

    /// `console:` as this engine runs it.
    pub fn console(&self) -> &crate::config::ConsoleConfig {
        &self.console
    }

    /// Resolves a session cookie's token and counts the request as use; an ended, idle or
    /// expired session is an [`AuthError::Invalid`] (and an idle or expired one is deleted).
    pub async fn session(&self, token: &str) -> Result<LiveSession, AuthError> {
        self.session_used(token, true).await
    }

    /// [`Security::session`]; `used: false` for a page's automatic refresh, which does not
    /// keep the session alive.
    pub async fn session_used(&self, token: &str, used: bool) -> Result<LiveSession, AuthError> {
        let hash = session_token_hash(token);
        let row = self
            .store
            .session(&hash)
            .await
            .map_err(|e| AuthError::Unavailable(format!("cannot check the session: {e}")))?
            .ok_or_else(|| AuthError::Invalid("the console session ended; log in again".into()))?;
        if !same(row.token_hash.as_bytes(), hash.as_bytes()) {
            return Err(AuthError::Invalid(
                "the console session ended; log in again".into(),
            ));
        }
        let now = now_ms();
        let idle_ms = self.console.session_idle.as_millis() as i64;
        if now >= row.expires_at || now - row.last_seen > idle_ms {
            let _ = self.store.end_session(&hash).await;
            return Err(AuthError::Invalid(
                "the console session timed out; log in again".into(),
            ));
        }
        let role = Role::parse(&row.role)
            .ok_or_else(|| AuthError::Invalid(format!("unknown role {:?}", row.role)))?;
        let mut last_seen = row.last_seen;
        if used && now - row.last_seen >= TOUCH_EVERY_MS.min(idle_ms / 4) {
            self.store
                .touch_session(&hash, now)
                .await
                .map_err(|e| AuthError::Unavailable(format!("cannot record the session: {e}")))?;
            last_seen = now;
        }
        Ok(LiveSession {
            principal: Principal {
                sub: row.username,
                role,
                facility: row.facility,
                method: "session",
            },
            csrf: row.csrf,
            method: row.method,
            idle_until: (last_seen + idle_ms).min(row.expires_at),
            expires_at: row.expires_at,
        })
    }

    /// Whether `given` is the session's CSRF token (constant time).
    pub fn csrf_matches(&self, s: &LiveSession, given: Option<&str>) -> bool {
        given.is_some_and(|g| same(g.as_bytes(), s.csrf.as_bytes()))
    }
}
