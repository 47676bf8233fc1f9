//! The web console at `/ui` (issue 21): the pages integrators, coordinators, operators and
//! auditors use, and the logins that open them.
//!
//! - **Pages** are one HTML shell, a script and a style sheet ([`assets`]), served from the
//!   binary. The script renders every page from the engine's own API (`/api/…`), which it calls
//!   with the session cookie: the API's roles, facility scope and audit apply to the console as
//!   they apply to any client, so the console can never show what the role may not see.
//! - **Logins** ([`login`]): local users (argon2id password hashes, a TOTP second factor,
//!   lockout after `console.max_failures`, session timeouts: CN-31) and a hospital's identity
//!   provider ([`oidc`]: authorization code + PKCE). A login makes a session: an `HttpOnly`,
//!   `SameSite=Strict` cookie (`Secure` under TLS) whose token the store keeps only as a hash,
//!   and a CSRF token the script sends back on every change.
//! - **The first start** ([`admin`]) creates the user `admin` with a random password, written to
//!   `console.initial_admin_file`, when the store has no users.
//!
//! The routes are added to the engine's router through [`huizhen_core::extensions::HttpRoutes`]
//! and are public at the guard ([`huizhen_core::security::PUBLIC`]): each checks its session
//! or credentials itself.

pub mod admin;
pub mod assets;
pub mod login;
pub mod oidc;
pub mod password;
pub mod totp;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use huizhen_core::http::AppState;
use huizhen_core::security::Security;
use serde_json::json;

inventory::submit! {
    huizhen_core::extensions::HttpRoutes { name: "console", routes }
}

fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(assets::index))
        .route("/ui/", get(assets::index))
        .route("/ui/assets/{file}", get(assets::asset))
        .route("/ui/login", post(login::login))
        .route("/ui/logout", post(login::logout))
        .route("/ui/session", get(login::session_info))
        .route("/ui/password", post(login::change_password))
        .route("/ui/totp", post(login::totp_begin))
        .route("/ui/totp/confirm", post(login::totp_confirm))
        .route("/ui/oidc/start", get(oidc::start))
        .route("/ui/oidc/callback", get(oidc::callback))
}

/// An error of the console's own routes: JSON `{"error": "…"}` like the API's.
#[derive(Debug)]
pub struct ConsoleError(pub StatusCode, pub String);

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl ConsoleError {
    fn unavailable(what: &str, e: &dyn std::fmt::Display) -> ConsoleError {
        let reference = huizhen_core::message::new_id();
        tracing::error!(%reference, error = %e, "console: {what}");
        ConsoleError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{what} (reference {reference}; the details are in the engine log)"),
        )
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters (query values, the
/// `otpauth://` label).
pub(crate) fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The engine's security (the router puts it into the extensions), when the console is on.
fn security(s: &AppState) -> Result<Arc<Security>, ConsoleError> {
    let sec = s
        .extensions
        .get::<Arc<Security>>()
        .map(|a| (*a).clone())
        .ok_or_else(|| {
            ConsoleError(
                StatusCode::SERVICE_UNAVAILABLE,
                "the console is not set up in this process".into(),
            )
        })?;
    if !sec.console().enabled {
        return Err(ConsoleError(
            StatusCode::NOT_FOUND,
            "the console is switched off (console.enabled: false)".into(),
        ));
    }
    Ok(sec)
}
