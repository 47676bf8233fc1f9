//! `GET /call/{room}?token=…`: the call page (plain HTML, CSS and JS embedded in the binary).
//! It joins the room with the room token of its link over `/ws/signal`, publishes the camera
//! and microphone, a screen share on demand, shows the others' videos, the recording indicator
//! and the live quality, and posts `getStats()` samples as `stats` messages (docs/media.md).
//!
//! The page itself holds nothing secret: the room token in its link is what admits. It is
//! served with a strict Content-Security-Policy (its one script and style by hash, connections
//! only to this origin) and `Referrer-Policy: no-referrer` so the token never leaves in a
//! Referer header.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};

const HTML: &str = include_str!("page/call.html");
const SCRIPT: &str = include_str!("page/call.js");
const STYLE: &str = include_str!("page/call.css");

struct Page {
    html: String,
    csp: String,
}

fn hash(s: &str) -> String {
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s.as_bytes()))
    )
}

fn page() -> &'static Page {
    static P: OnceLock<Page> = OnceLock::new();
    P.get_or_init(|| Page {
        html: HTML
            .replacen("/*STYLE*/", STYLE, 1)
            .replacen("/*SCRIPT*/", SCRIPT, 1),
        csp: format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; \
             media-src 'self' blob: mediastream:; img-src 'self' data:; base-uri 'none'; \
             form-action 'none'; frame-ancestors 'none'",
            hash(SCRIPT),
            hash(STYLE)
        ),
    })
}

/// The call page, whatever the room: the script reads the room from the path and the token
/// from the query (an unknown room or a bad token is refused at `join`, shown on the page).
pub async fn call_page() -> Response {
    let p = page();
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, p.csp.as_str()),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::HeaderName::from_static("permissions-policy"),
                "camera=(self), microphone=(self), display-capture=(self)",
            ),
        ],
        p.html.clone(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_embeds_its_script_and_style_and_pins_them_by_hash() {
        let p = page();
        assert!(p.html.contains("new RTCPeerConnection"));
        assert!(p.html.contains("getDisplayMedia"));
        assert!(!p.html.contains("/*SCRIPT*/") && !p.html.contains("/*STYLE*/"));
        assert!(p.csp.contains(&hash(SCRIPT)) && p.csp.contains(&hash(STYLE)));
        assert!(p.csp.contains("connect-src 'self'"));
    }
}
