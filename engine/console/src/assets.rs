//! The console's files, built into the binary: one HTML shell (`/ui`), its script, translations
//! and style sheet (`/ui/assets/…`). No build step, no CDN: what the README's `cargo run` builds
//! is what the browser gets. `HUIZHEN_CONSOLE_ASSETS=<folder>` serves the files of a folder
//! instead (the same names), for working on the console without rebuilding the engine.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use huizhen_core::http::AppState;

/// (name, content type, contents)
const FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../assets/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/app.js"),
    ),
    (
        "i18n.js",
        "text/javascript; charset=utf-8",
        include_str!("../assets/i18n.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../assets/app.css"),
    ),
];

/// The content security policy of every console response: only the console's own files run,
/// and the page talks only to its own origin.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn file(name: &str) -> Option<(&'static str, String)> {
    let (_, ctype, built_in) = FILES.iter().find(|(n, _, _)| *n == name)?;
    if let Some(dir) = std::env::var_os("HUIZHEN_CONSOLE_ASSETS")
        && let Ok(text) = std::fs::read_to_string(std::path::Path::new(&dir).join(name))
    {
        return Some((ctype, text));
    }
    Some((ctype, (*built_in).to_owned()))
}

fn serve(name: &str) -> Response {
    match file(name) {
        Some((ctype, body)) => {
            let mut r = body.into_response();
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            );
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            h.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
        None => (StatusCode::NOT_FOUND, "no such console file").into_response(),
    }
}

/// `GET /ui`: the shell; the script shows the login or the page the address names.
pub async fn index(State(s): State<AppState>) -> Response {
    if let Err(e) = crate::security(&s) {
        return e.into_response();
    }
    serve("index.html")
}

/// `GET /ui/assets/{file}`.
pub async fn asset(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    if let Err(e) = crate::security(&s) {
        return e.into_response();
    }
    if name == "index.html" {
        return (StatusCode::NOT_FOUND, "no such console file").into_response();
    }
    serve(&name)
}
