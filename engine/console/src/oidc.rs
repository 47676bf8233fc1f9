//! Logging in through a hospital's identity provider: OpenID Connect, authorization code flow
//! with PKCE (RFC 7636, S256), `GET /ui/oidc/start` and `GET /ui/oidc/callback`.
//!
//! The start stores a login under way (state, code verifier, nonce: in the store, so the
//! provider's redirect may come back to any node) and sends the browser to the provider. The
//! callback takes that login once, exchanges the code (with the verifier, and the client secret
//! for a confidential client) at the token endpoint, and checks the ID token: signed (RS256,
//! RS384, RS512, PS256, ES256, ES384; never HS* or none) by a key of the provider's JWKS, from
//! the configured issuer, for this client, not expired, with the nonce of this login. The role
//! and facility come from the claims `console.oidc.role_claim` and `facility_claim`; a token
//! without a known role or a facility opens nothing. Endpoints come from the issuer's discovery
//! document unless configured; both it and the keys are cached, the keys fetched again once
//! when a token names a key id not in them (the provider rotated its keys).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine as _;
use huizhen_core::config::OidcConfig;
use huizhen_core::http::AppState;
use huizhen_core::message::now_ms;
use huizhen_core::security::Role;
use huizhen_core::store::audit::AuditEvent;
use huizhen_core::store::users::OidcLogin;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::login::{Client, audit, open_session};
use crate::{ConsoleError, security};

/// How long a login may stay at the provider.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(600);
/// How long discovery and keys are kept.
const CACHE_FOR: Duration = Duration::from_secs(3600);

/// The provider as discovered.
#[derive(Clone)]
struct Provider {
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    keys: Vec<(Option<String>, DecodingKey)>,
    at: Instant,
}

/// The cache of one engine (in its extensions).
#[derive(Default)]
struct Cache {
    provider: Mutex<Option<Provider>>,
}

fn http() -> Result<reqwest::Client, ConsoleError> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ConsoleError::unavailable("no HTTP client for the identity provider", &e))
}

async fn get_json(url: &str) -> Result<serde_json::Value, String> {
    let r = http()
        .map_err(|e| e.1)?
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = r.status();
    if !status.is_success() {
        return Err(format!("GET {url}: HTTP {status}"));
    }
    r.json()
        .await
        .map_err(|e| format!("GET {url}: not JSON: {e}"))
}

async fn fetch_keys(jwks_uri: &str) -> Result<Vec<(Option<String>, DecodingKey)>, String> {
    let v = get_json(jwks_uri).await?;
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(v).map_err(|e| format!("{jwks_uri}: not a JWK set: {e}"))?;
    let keys: Vec<_> = set
        .keys
        .iter()
        .filter_map(|k| {
            DecodingKey::from_jwk(k)
                .ok()
                .map(|d| (k.common.key_id.clone(), d))
        })
        .collect();
    if keys.is_empty() {
        return Err(format!("{jwks_uri}: no usable signing key"));
    }
    Ok(keys)
}

async fn provider(s: &AppState, cfg: &OidcConfig, refresh_keys: bool) -> Result<Provider, String> {
    let cache = s
        .extensions
        .get_or_try_init(|| Ok::<_, std::convert::Infallible>(Cache::default()))
        .map_err(|e: std::convert::Infallible| e.to_string())?;
    let cached = cache
        .provider
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let Some(p) = &cached
        && p.at.elapsed() < CACHE_FOR
        && !refresh_keys
    {
        return Ok(p.clone());
    }
    let (mut auth, mut token, mut jwks) = (
        cfg.authorization_endpoint.clone(),
        cfg.token_endpoint.clone(),
        cfg.jwks_uri.clone(),
    );
    if auth.is_none() || token.is_none() || jwks.is_none() {
        let url = format!(
            "{}/.well-known/openid-configuration",
            cfg.issuer.trim_end_matches('/')
        );
        let d = get_json(&url).await?;
        let field = |k: &str| d[k].as_str().map(str::to_owned);
        auth = auth.or_else(|| field("authorization_endpoint"));
        token = token.or_else(|| field("token_endpoint"));
        jwks = jwks.or_else(|| field("jwks_uri"));
        if d["issuer"].as_str() != Some(cfg.issuer.as_str()) {
            return Err(format!(
                "{url} names issuer {:?}, not console.oidc.issuer {:?}",
                d["issuer"], cfg.issuer
            ));
        }
    }
    let missing = |what: &str| format!("the provider names no {what} (set console.oidc.{what})");
    let jwks_uri = jwks.ok_or_else(|| missing("jwks_uri"))?;
    let p = Provider {
        authorization_endpoint: auth.ok_or_else(|| missing("authorization_endpoint"))?,
        token_endpoint: token.ok_or_else(|| missing("token_endpoint"))?,
        keys: fetch_keys(&jwks_uri).await?,
        jwks_uri,
        at: Instant::now(),
    };
    *cache.provider.lock().unwrap_or_else(|p| p.into_inner()) = Some(p.clone());
    Ok(p)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `S256` code challenge of a verifier.
pub fn challenge(verifier: &str) -> String {
    b64(&Sha256::digest(verifier.as_bytes()))
}

fn oidc_config(sec: &huizhen_core::security::Security) -> Result<OidcConfig, ConsoleError> {
    sec.console().oidc.clone().ok_or_else(|| {
        ConsoleError(
            StatusCode::NOT_FOUND,
            "no identity provider is configured (console.oidc)".into(),
        )
    })
}

#[derive(Deserialize)]
pub struct StartQuery {
    #[serde(default, rename = "return")]
    return_to: Option<String>,
}

/// `GET /ui/oidc/start?return=/ui/#/messages`: to the provider's login.
pub async fn start(
    State(s): State<AppState>,
    Query(q): Query<StartQuery>,
) -> Result<Response, ConsoleError> {
    let sec = security(&s)?;
    let cfg = oidc_config(&sec)?;
    let p = provider(&s, &cfg, false)
        .await
        .map_err(|e| ConsoleError::unavailable("the identity provider cannot be reached", &e))?;
    let login = OidcLogin {
        state: b64(&rand::random::<[u8; 24]>()),
        verifier: b64(&rand::random::<[u8; 32]>()),
        nonce: b64(&rand::random::<[u8; 24]>()),
        return_to: q
            .return_to
            .filter(|r| r.starts_with("/ui") && !r.contains("//") && !r.contains('\\'))
            .unwrap_or_else(|| "/ui/".into()),
        created_at: now_ms(),
    };
    s.store.begin_oidc_login(&login).await.map_err(|e| {
        ConsoleError::unavailable("the login cannot be stored; try again later", &e)
    })?;
    let sep = if p.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!(
        "{}{sep}response_type=code&client_id={}&redirect_uri={}&scope={}&state={}&nonce={}&code_challenge={}&code_challenge_method=S256",
        p.authorization_endpoint,
        crate::percent_encode(&cfg.client_id),
        crate::percent_encode(&cfg.redirect_uri),
        crate::percent_encode(&cfg.scopes),
        login.state,
        login.nonce,
        challenge(&login.verifier),
    );
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&url).map_err(|e| {
            ConsoleError::unavailable("the provider's authorization endpoint is not a URL", &e)
        })?,
    );
    Ok(r)
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A failed OIDC login: audited, and a page that says why with a way back.
async fn failed(s: &AppState, client: &Client, reason: String) -> Response {
    let ev = client.event(
        "anonymous",
        "login.failed",
        "failed",
        format!("OIDC login: {reason}"),
    );
    if let Err(e) = audit(s, &ev).await {
        return e.into_response();
    }
    (
        StatusCode::UNAUTHORIZED,
        Html(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Huizhen</title></head><body><h1>Login failed · 登录失败</h1><p id=\"reason\">{}</p><p><a href=\"/ui/\">Back to the console · 返回控制台</a></p></body></html>",
            escape_html(&reason)
        )),
    )
        .into_response()
}

/// The ID token's claims, checked (see the module docs).
async fn verify_id_token(
    s: &AppState,
    cfg: &OidcConfig,
    token: &str,
    nonce: &str,
) -> Result<serde_json::Value, String> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| format!("the ID token is not a JWT: {e}"))?;
    if !matches!(
        header.alg,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::ES256
            | Algorithm::ES384
    ) {
        return Err(format!(
            "the ID token is signed with {:?}, which is not accepted",
            header.alg
        ));
    }
    let mut p = provider(s, cfg, false).await?;
    let find = |p: &Provider| {
        p.keys
            .iter()
            .find(|(kid, _)| header.kid.is_none() || kid.as_ref() == header.kid.as_ref())
            .map(|(_, k)| k.clone())
    };
    let key = match find(&p) {
        Some(k) => k,
        None => {
            p = provider(s, cfg, true).await?;
            find(&p).ok_or_else(|| {
                format!(
                    "no key {:?} in the provider's keys ({})",
                    header.kid, p.jwks_uri
                )
            })?
        }
    };
    let mut v = Validation::new(header.alg);
    v.leeway = 60;
    v.set_issuer(&[cfg.issuer.as_str()]);
    v.set_audience(&[cfg.client_id.as_str()]);
    v.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
        .map_err(|e| format!("the ID token was refused: {e}"))?;
    let claims = data.claims;
    let given = claims["nonce"].as_str().unwrap_or("");
    if !huizhen_core::security::constant_time_eq(given, nonce) {
        return Err("the ID token's nonce is not this login's".into());
    }
    Ok(claims)
}

/// The role a claim names: a string, or the first known one of a list.
fn role_of(v: &serde_json::Value) -> Option<Role> {
    match v {
        serde_json::Value::String(s) => Role::parse(s),
        serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_str()).find_map(Role::parse),
        _ => None,
    }
}

/// `GET /ui/oidc/callback?code=…&state=…`: back from the provider.
pub async fn callback(
    State(s): State<AppState>,
    parts: Parts,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let client = Client::of(&parts);
    let sec = match security(&s) {
        Ok(sec) => sec,
        Err(e) => return e.into_response(),
    };
    let cfg = match oidc_config(&sec) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if let Some(err) = q.error {
        return failed(
            &s,
            &client,
            format!(
                "the identity provider answered {err}{}",
                q.error_description
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ),
        )
        .await;
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return failed(&s, &client, "the callback carries no code or state".into()).await;
    };
    let login = match s.store.take_oidc_login(&state).await {
        Ok(Some(l)) => l,
        Ok(None) => {
            return failed(
                &s,
                &client,
                "unknown or used state: start the login again".into(),
            )
            .await;
        }
        Err(e) => {
            return ConsoleError::unavailable("the login cannot be read; try again later", &e)
                .into_response();
        }
    };
    if now_ms() - login.created_at > LOGIN_WINDOW.as_millis() as i64 {
        return failed(
            &s,
            &client,
            "the login took longer than 10 minutes: start it again".into(),
        )
        .await;
    }
    let p = match provider(&s, &cfg, false).await {
        Ok(p) => p,
        Err(e) => return failed(&s, &client, e).await,
    };
    let mut form = vec![
        ("grant_type", "authorization_code".to_owned()),
        ("code", code),
        ("redirect_uri", cfg.redirect_uri.clone()),
        ("client_id", cfg.client_id.clone()),
        ("code_verifier", login.verifier.clone()),
    ];
    if let Some(secret) = &cfg.client_secret {
        form.push(("client_secret", secret.expose().to_owned()));
    }
    let http = match http() {
        Ok(h) => h,
        Err(e) => return e.into_response(),
    };
    let answer = match http.post(&p.token_endpoint).form(&form).send().await {
        Ok(r) => r,
        Err(e) => {
            return failed(
                &s,
                &client,
                format!("the token endpoint cannot be reached: {e}"),
            )
            .await;
        }
    };
    let status = answer.status();
    let body: serde_json::Value = answer.json().await.unwrap_or_default();
    if !status.is_success() {
        return failed(
            &s,
            &client,
            format!(
                "the token endpoint answered HTTP {status}: {} {}",
                body["error"].as_str().unwrap_or(""),
                body["error_description"].as_str().unwrap_or("")
            ),
        )
        .await;
    }
    let Some(id_token) = body["id_token"].as_str() else {
        return failed(&s, &client, "the token endpoint gave no id_token".into()).await;
    };
    let claims = match verify_id_token(&s, &cfg, id_token, &login.nonce).await {
        Ok(c) => c,
        Err(e) => return failed(&s, &client, e).await,
    };
    let sub = claims["sub"].as_str().unwrap_or_default().to_owned();
    let name = claims[cfg.name_claim.as_str()]
        .as_str()
        .filter(|n| !n.is_empty())
        .unwrap_or(&sub)
        .to_owned();
    let Some(role) = role_of(&claims[cfg.role_claim.as_str()]) else {
        return failed(
            &s,
            &client,
            format!(
                "the ID token of {name} names no Huizhen role in claim {:?}",
                cfg.role_claim
            ),
        )
        .await;
    };
    let Some(facility) = claims[cfg.facility_claim.as_str()]
        .as_str()
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
    else {
        return failed(
            &s,
            &client,
            format!(
                "the ID token of {name} names no facility in claim {:?}",
                cfg.facility_claim
            ),
        )
        .await;
    };
    let ev = AuditEvent {
        role: role.as_str().into(),
        facility: facility.clone(),
        ..client.event(
            &name,
            "login.success",
            "success",
            format!("console login (oidc, issuer {}, sub {sub})", cfg.issuer),
        )
    };
    if let Err(e) = audit(&s, &ev).await {
        return e.into_response();
    }
    match open_session(&s, &sec, &client, (&name, role.as_str(), &facility, "oidc")).await {
        Ok(mut r) => {
            // Back to the console page the login began on.
            *r.status_mut() = StatusCode::SEE_OTHER;
            if let Ok(v) = HeaderValue::from_str(&login.return_to) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// S256 = BASE64URL(SHA-256(verifier)), against values computed independently (Python's
    /// hashlib and base64).
    #[test]
    fn pkce_s256() {
        assert_eq!(
            challenge("dBjftJeZ4CPV-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "irIVBCJ6EoyqsFce9cK7bjYU6q0Olo36EGg7w3b9l7Q"
        );
    }

    #[test]
    fn roles_from_claims() {
        assert_eq!(role_of(&"integrator".into()), Some(Role::Integrator));
        assert_eq!(
            role_of(&serde_json::json!(["offline_access", "auditor"])),
            Some(Role::Auditor)
        );
        assert_eq!(role_of(&serde_json::json!(42)), None);
    }
}
