//! Local logins and sessions: `POST /ui/login`, `POST /ui/logout`, `GET /ui/session`,
//! `POST /ui/password`, `POST /ui/totp`, `POST /ui/totp/confirm`.
//!
//! A login checks the password (argon2id), then the TOTP code when the user enrolled one. Each
//! failure counts against the account: after `console.max_failures` in a row it is locked for
//! `console.lockout`, and every failure is also counted per client address by the engine's
//! throttle (a password spray from one address is stopped, a hospital behind one NAT address is
//! not locked out by one user's typos). Unknown users take as long as known ones and get the same
//! answer. Every login, failure, logout, password change and enrolment is audited.
//!
//! With `console.second_factor: required`, a user without an authenticator gets a *pending*
//! session that reaches only the enrolment routes here (the API's guard refuses it) until a
//! first code confirms the new secret.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use huizhen_core::config::SecondFactor;
use huizhen_core::http::AppState;
use huizhen_core::message::now_ms;
use huizhen_core::security::{Action, Role, SESSION_COOKIE, Security, session_token_hash};
use huizhen_core::store::audit::AuditEvent;
use huizhen_core::store::users::{SessionRow, UserRow};
use serde::Deserialize;
use serde_json::json;

use crate::{ConsoleError, password, security, totp};

/// The method of a session that must enrol a second factor before anything else.
pub const PENDING_TOTP: &str = "pending-totp";

/// The pages of the console and the action of the API each needs (the script hides a page the
/// role may not use; the API refuses it anyway).
pub const PAGES: &[(&str, Action)] = &[
    ("dashboard", Action::ReadPipelines),
    ("messages", Action::ReadMessages),
    ("tap", Action::TapPipelines),
    ("reprocess", Action::ReprocessMessages),
    ("consultations", Action::ReadConsultations),
    ("plugins", Action::ReadPlugins),
    ("plugins_manage", Action::ManagePlugins),
    ("media", Action::ReadConsultations),
    ("audit", Action::ReadAudit),
];

/// Who is asking and how (the client's address, TLS or not).
pub(crate) struct Client {
    pub ip: std::net::IpAddr,
    pub source: String,
    pub secure: bool,
    pub session_token: Option<String>,
    pub csrf: Option<String>,
}

impl Client {
    pub(crate) fn of(parts: &Parts) -> Client {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        Client {
            ip: peer.map_or(std::net::IpAddr::from([127, 0, 0, 1]), |p| p.ip()),
            source: peer.map(|p| p.to_string()).unwrap_or_default(),
            secure: parts
                .extensions
                .get::<huizhen_core::http::Scheme>()
                .is_some_and(|s| s.0 == "https"),
            session_token: huizhen_core::security::cookie(&parts.headers, SESSION_COOKIE),
            csrf: parts
                .headers
                .get(huizhen_core::security::CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }
    }

    pub(crate) fn event(
        &self,
        actor: &str,
        action: &str,
        outcome: &str,
        detail: String,
    ) -> AuditEvent {
        AuditEvent {
            actor: actor.to_owned(),
            action: action.to_owned(),
            resource_type: "Console".into(),
            resource_id: actor.to_owned(),
            outcome: outcome.to_owned(),
            source: self.source.clone(),
            detail,
            ..AuditEvent::default()
        }
    }

    /// [`Client::event`] of a known local user, with their role and facility.
    pub(crate) fn user_event(
        &self,
        user: &UserRow,
        action: &str,
        outcome: &str,
        detail: String,
    ) -> AuditEvent {
        AuditEvent {
            role: user.role.clone(),
            facility: user.facility.clone(),
            ..self.event(&user.username, action, outcome, detail)
        }
    }
}

/// Writes an audit event; a change whose audit cannot be written fails.
pub(crate) async fn audit(s: &AppState, e: &AuditEvent) -> Result<(), ConsoleError> {
    s.store.audit(e).await.map(|_| ()).map_err(|err| {
        ConsoleError::unavailable("the audit trail cannot be written; try again later", &err)
    })
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ConsoleError> {
    serde_json::from_slice(body).map_err(|e| {
        ConsoleError(
            StatusCode::BAD_REQUEST,
            format!(
                "the request body is not the JSON expected: {e} (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })
}

fn random_token() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// The `Set-Cookie` of a session (`max_age` 0 clears it).
pub(crate) fn session_cookie(token: &str, max_age: u64, secure: bool) -> HeaderValue {
    let v = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("hz_session=; Max-Age=0"))
}

/// Opens a session for a user and answers with its cookie and what `/ui/session` says.
pub(crate) async fn open_session(
    s: &AppState,
    sec: &Security,
    client: &Client,
    (username, role, facility, method): (&str, &str, &str, &str),
) -> Result<Response, ConsoleError> {
    let token = random_token();
    let now = now_ms();
    let max = sec.console().session_max;
    let row = SessionRow {
        token_hash: session_token_hash(&token),
        username: username.to_owned(),
        role: role.to_owned(),
        facility: facility.to_owned(),
        method: method.to_owned(),
        csrf: random_token(),
        created_at: now,
        last_seen: now,
        expires_at: now + max.as_millis() as i64,
    };
    s.store.create_session(&row).await.map_err(|e| {
        ConsoleError::unavailable("the session cannot be stored; try again later", &e)
    })?;
    let info = describe(s, sec, &row).await?;
    let mut r = Json(info).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&token, max.as_secs(), client.secure),
    );
    Ok(r)
}

/// What the script knows of a session: who, the role's pages, the CSRF token, the timeouts.
async fn describe(
    s: &AppState,
    sec: &Security,
    row: &SessionRow,
) -> Result<serde_json::Value, ConsoleError> {
    let role = Role::parse(&row.role);
    let pages: serde_json::Map<String, serde_json::Value> = PAGES
        .iter()
        .map(|(page, action)| {
            let ok = !row.method.starts_with("pending")
                && role.is_some_and(|r| action.roles().contains(&r));
            ((*page).to_owned(), ok.into())
        })
        .collect();
    let user = if row.method == "oidc" {
        None
    } else {
        s.store.user(&row.username).await.map_err(|e| {
            ConsoleError::unavailable("the user cannot be read; try again later", &e)
        })?
    };
    let idle = sec.console().session_idle.as_millis() as i64;
    Ok(json!({
        "authenticated": true,
        "user": row.username,
        "display_name": user.as_ref().map(|u| u.display_name.clone()).filter(|n| !n.is_empty()).unwrap_or_else(|| row.username.clone()),
        "role": row.role,
        "facility": row.facility,
        "method": row.method,
        "pending": row.method.starts_with("pending").then_some("enrol-totp"),
        "csrf": row.csrf,
        "idle_until": (row.last_seen + idle).min(row.expires_at),
        "expires_at": row.expires_at,
        "session_idle_seconds": idle / 1000,
        "pages": pages,
        "local": user.is_some(),
        "totp": {
            "enrolled": user.as_ref().is_some_and(|u| u.totp_enabled),
            "required": sec.console().second_factor == SecondFactor::Required,
        },
        "initial_password": user.as_ref().is_some_and(|u| u.must_change),
    }))
}

fn logged_out(sec: &Security) -> serde_json::Value {
    json!({
        "authenticated": false,
        "oidc": sec.console().oidc.as_ref().map(|o| json!({
            "label": o.label.clone().unwrap_or_else(|| o.issuer.clone()),
        })),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    username: String,
    password: String,
    #[serde(default)]
    totp: Option<String>,
}

fn refused(status: StatusCode, error: &str, extra: serde_json::Value) -> Response {
    let mut body = json!({ "error": error });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    (status, Json(body)).into_response()
}

/// `POST /ui/login` `{"username", "password", "totp"?}`.
pub async fn login(
    State(s): State<AppState>,
    parts: Parts,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let sec = security(&s)?;
    let client = Client::of(&parts);
    let req: LoginRequest = parse(&body)?;
    let username = req.username.trim().to_owned();
    let claimed = format!("console:{username}");
    if sec.check_throttle(client.ip, &claimed).is_err() {
        return Ok(refused(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed logins from this address; try again later",
            json!({}),
        ));
    }
    let cfg = sec.console().clone();
    let user =
        s.store.user(&username).await.map_err(|e| {
            ConsoleError::unavailable("the user cannot be read; try again later", &e)
        })?;
    let now = now_ms();
    let generic = "wrong user name or password";
    // The password check runs for unknown users too (against a decoy), off the async threads.
    let stored = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_default();
    let given = req.password.clone();
    let password_ok = tokio::task::spawn_blocking(move || {
        if stored.is_empty() {
            let _ = password::verify(&given, password::decoy());
            false
        } else {
            password::verify(&given, &stored)
        }
    })
    .await
    .unwrap_or(false);
    let fail = |reason: String| {
        let ev = client.event(&username, "login.failed", "failed", reason);
        let (s, sec, ip, claimed) = (s.clone(), sec.clone(), client.ip, claimed.clone());
        async move {
            sec.record_failure(ip, &claimed);
            audit(&s, &ev).await
        }
    };
    let Some(user) = user else {
        fail("console login: unknown user".into()).await?;
        return Ok(refused(StatusCode::UNAUTHORIZED, generic, json!({})));
    };
    if user.disabled {
        fail("console login: the account is disabled".into()).await?;
        return Ok(refused(StatusCode::UNAUTHORIZED, generic, json!({})));
    }
    if user.locked_until > now {
        fail("console login: the account is locked".into()).await?;
        let minutes = ((user.locked_until - now) as f64 / 60_000.0).ceil() as i64;
        return Ok(refused(
            StatusCode::FORBIDDEN,
            &format!(
                "this account is locked after too many failed logins; try again in {minutes} min or ask an administrator (huizhen users unlock {username})"
            ),
            json!({ "locked_until": user.locked_until }),
        ));
    }
    let lock_until = now + cfg.lockout.as_millis() as i64;
    let max = i64::from(cfg.max_failures.max(1));
    if !password_ok {
        let n = s
            .store
            .login_failed(&username, max, lock_until)
            .await
            .map_err(|e| {
                ConsoleError::unavailable("the login cannot be recorded; try again later", &e)
            })?;
        fail(format!(
            "console login: wrong password ({n} of {max} before lockout)"
        ))
        .await?;
        if n >= max {
            return Ok(refused(
                StatusCode::FORBIDDEN,
                &format!(
                    "this account is now locked for {} min after {max} failed logins",
                    cfg.lockout.as_secs().div_ceil(60)
                ),
                json!({ "locked_until": lock_until }),
            ));
        }
        return Ok(refused(StatusCode::UNAUTHORIZED, generic, json!({})));
    }
    let mut method = "password";
    if user.totp_enabled {
        let Some(code) = req.totp.as_deref().map(str::trim).filter(|c| !c.is_empty()) else {
            // The password was right: ask for the code, without counting a failure.
            return Ok(refused(
                StatusCode::UNAUTHORIZED,
                "enter the 6-digit code of your authenticator app",
                json!({ "need_totp": true }),
            ));
        };
        let now_secs = (now / 1000) as u64;
        let step = totp::matching_step(&user.totp_secret, code, now_secs);
        let fresh = match step {
            Some(st) => s
                .store
                .take_totp_step(&username, st as i64)
                .await
                .map_err(|e| {
                    ConsoleError::unavailable("the login cannot be recorded; try again later", &e)
                })?,
            None => false,
        };
        if !fresh {
            let n = s
                .store
                .login_failed(&username, max, lock_until)
                .await
                .map_err(|e| {
                    ConsoleError::unavailable("the login cannot be recorded; try again later", &e)
                })?;
            fail(format!(
                "console login: {} TOTP code ({n} of {max} before lockout)",
                if step.is_some() { "reused" } else { "wrong" }
            ))
            .await?;
            return Ok(refused(
                StatusCode::UNAUTHORIZED,
                "the authenticator code is wrong or was used already",
                json!({ "need_totp": true }),
            ));
        }
        method = "password+totp";
    } else if cfg.second_factor == SecondFactor::Required {
        method = PENDING_TOTP;
    }
    s.store.login_succeeded(&username).await.map_err(|e| {
        ConsoleError::unavailable("the login cannot be recorded; try again later", &e)
    })?;
    audit(
        &s,
        &client.user_event(
            &user,
            "login.success",
            "success",
            format!("console login ({method})"),
        ),
    )
    .await?;
    open_session(
        &s,
        &sec,
        &client,
        (&username, &user.role, &user.facility, method),
    )
    .await
}

/// The live session of the request (pending ones too), or 401.
async fn current(
    sec: &Security,
    client: &Client,
) -> Result<(huizhen_core::security::LiveSession, String), ConsoleError> {
    let token = client
        .session_token
        .clone()
        .ok_or_else(|| ConsoleError(StatusCode::UNAUTHORIZED, "not logged in".into()))?;
    match sec.session(&token).await {
        Ok(live) => Ok((live, session_token_hash(&token))),
        Err(huizhen_core::security::AuthError::Unavailable(e)) => Err(ConsoleError::unavailable(
            "the session cannot be checked; try again later",
            &e,
        )),
        Err(e) => Err(ConsoleError(StatusCode::UNAUTHORIZED, e.to_string())),
    }
}

/// A change through the console's own routes carries the session's CSRF token.
fn check_csrf(
    sec: &Security,
    live: &huizhen_core::security::LiveSession,
    client: &Client,
) -> Result<(), ConsoleError> {
    if sec.csrf_matches(live, client.csrf.as_deref()) {
        Ok(())
    } else {
        Err(ConsoleError(
            StatusCode::FORBIDDEN,
            "this change must carry the session's X-CSRF-Token header".into(),
        ))
    }
}

/// `GET /ui/session`: who is logged in (200 with `authenticated: false` when nobody is).
pub async fn session_info(
    State(s): State<AppState>,
    parts: Parts,
) -> Result<Response, ConsoleError> {
    let sec = security(&s)?;
    let client = Client::of(&parts);
    let Some(token) = &client.session_token else {
        return Ok(Json(logged_out(&sec)).into_response());
    };
    match sec.session(token).await {
        Ok(_) => {
            let row = s
                .store
                .session(&session_token_hash(token))
                .await
                .map_err(|e| {
                    ConsoleError::unavailable("the session cannot be read; try again later", &e)
                })?;
            match row {
                Some(row) => Ok(Json(describe(&s, &sec, &row).await?).into_response()),
                None => Ok(Json(logged_out(&sec)).into_response()),
            }
        }
        Err(huizhen_core::security::AuthError::Unavailable(e)) => Err(ConsoleError::unavailable(
            "the session cannot be checked; try again later",
            &e,
        )),
        Err(e) => {
            // The cookie is left as it is: a request racing a renewal (a password change, an
            // enrolment) must not clear the new session's cookie.
            let mut v = logged_out(&sec);
            v["ended"] = e.to_string().into();
            Ok(Json(v).into_response())
        }
    }
}

/// `POST /ui/logout`: ends the session.
pub async fn logout(State(s): State<AppState>, parts: Parts) -> Result<Response, ConsoleError> {
    let sec = security(&s)?;
    let client = Client::of(&parts);
    if let Ok((live, hash)) = current(&sec, &client).await {
        check_csrf(&sec, &live, &client)?;
        s.store.end_session(&hash).await.map_err(|e| {
            ConsoleError::unavailable("the session cannot be ended; try again later", &e)
        })?;
        audit(
            &s,
            &AuditEvent {
                role: live.principal.role.as_str().into(),
                facility: live.principal.facility.clone(),
                ..client.event(
                    &live.principal.sub,
                    "logout",
                    "success",
                    "console logout".into(),
                )
            },
        )
        .await?;
    }
    let mut r = Json(logged_out(&sec)).into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, session_cookie("", 0, client.secure));
    Ok(r)
}

/// The local user of a session.
async fn local_user(s: &AppState, name: &str) -> Result<UserRow, ConsoleError> {
    s.store
        .user(name)
        .await
        .map_err(|e| ConsoleError::unavailable("the user cannot be read; try again later", &e))?
        .ok_or_else(|| {
            ConsoleError(
                StatusCode::CONFLICT,
                "this session is not a local user's (the identity provider keeps its passwords and factors)".into(),
            )
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordRequest {
    current: String,
    new: String,
}

/// `POST /ui/password` `{"current", "new"}`: changes the user's own password; every other
/// session of the user ends, this one goes on under a new token.
pub async fn change_password(
    State(s): State<AppState>,
    parts: Parts,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let sec = security(&s)?;
    let client = Client::of(&parts);
    let (live, _) = current(&sec, &client).await?;
    check_csrf(&sec, &live, &client)?;
    let req: PasswordRequest = parse(&body)?;
    let user = local_user(&s, &live.principal.sub).await?;
    let stored = user.password_hash.clone();
    let current_pw = req.current.clone();
    let ok = tokio::task::spawn_blocking(move || password::verify(&current_pw, &stored))
        .await
        .unwrap_or(false);
    if !ok {
        audit(
            &s,
            &client.event(
                &user.username,
                "password.change",
                "failed",
                "the current password was wrong".into(),
            ),
        )
        .await?;
        return Err(ConsoleError(
            StatusCode::FORBIDDEN,
            "the current password is wrong".into(),
        ));
    }
    password::check_rule(&user.username, &req.new)
        .map_err(|e| ConsoleError(StatusCode::BAD_REQUEST, format!("new: {e}")))?;
    if req.new == req.current {
        return Err(ConsoleError(
            StatusCode::BAD_REQUEST,
            "new: the new password is the current one".into(),
        ));
    }
    let new = req.new.clone();
    let hashed = tokio::task::spawn_blocking(move || password::hash(&new))
        .await
        .map_err(|e| ConsoleError::unavailable("the password cannot be hashed", &e))?
        .map_err(|e| ConsoleError::unavailable("the password cannot be hashed", &e))?;
    s.store
        .set_password(&user.username, &hashed, false)
        .await
        .map_err(|e| {
            ConsoleError::unavailable("the password cannot be stored; try again later", &e)
        })?;
    s.store.end_sessions_of(&user.username).await.map_err(|e| {
        ConsoleError::unavailable("the sessions cannot be ended; try again later", &e)
    })?;
    audit(
        &s,
        &client.user_event(
            &user,
            "password.change",
            "success",
            "changed in the console; the user's other sessions ended".into(),
        ),
    )
    .await?;
    open_session(
        &s,
        &sec,
        &client,
        (&user.username, &user.role, &user.facility, &live.method),
    )
    .await
}

/// `POST /ui/totp`: a new TOTP secret for the user's authenticator (not yet required: a first
/// code confirms it).
pub async fn totp_begin(State(s): State<AppState>, parts: Parts) -> Result<Response, ConsoleError> {
    let sec = security(&s)?;
    let client = Client::of(&parts);
    let (live, _) = current(&sec, &client).await?;
    check_csrf(&sec, &live, &client)?;
    let user = local_user(&s, &live.principal.sub).await?;
    if user.totp_enabled {
        return Err(ConsoleError(
            StatusCode::CONFLICT,
            format!(
                "an authenticator is enrolled already; an administrator can reset it (huizhen users totp-reset {})",
                user.username
            ),
        ));
    }
    let secret = totp::new_secret();
    s.store
        .set_totp(&user.username, &secret, false)
        .await
        .map_err(|e| {
            ConsoleError::unavailable("the secret cannot be stored; try again later", &e)
        })?;
    let uri = totp::otpauth_uri(&user.username, &secret);
    Ok(Json(json!({
        "secret": secret,
        "qr_svg": totp::qr_svg(&uri),
        "uri": uri,
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmRequest {
    code: String,
}

/// `POST /ui/totp/confirm` `{"code"}`: the first code of the new secret; from now on the user
/// logs in with a code. A pending session becomes a full one (new token).
pub async fn totp_confirm(
    State(s): State<AppState>,
    parts: Parts,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let sec = security(&s)?;
    let client = Client::of(&parts);
    let (live, hash) = current(&sec, &client).await?;
    check_csrf(&sec, &live, &client)?;
    let req: ConfirmRequest = parse(&body)?;
    let user = local_user(&s, &live.principal.sub).await?;
    if user.totp_enabled || user.totp_secret.is_empty() {
        return Err(ConsoleError(
            StatusCode::CONFLICT,
            "no enrolment is under way: start one first (POST /ui/totp)".into(),
        ));
    }
    let now_secs = (now_ms() / 1000) as u64;
    let Some(step) = totp::matching_step(&user.totp_secret, &req.code, now_secs) else {
        audit(
            &s,
            &client.event(
                &user.username,
                "totp.enrol",
                "failed",
                "the first code was wrong".into(),
            ),
        )
        .await?;
        return Err(ConsoleError(
            StatusCode::BAD_REQUEST,
            "code: not the authenticator's current code (check the phone's clock)".into(),
        ));
    };
    s.store
        .enable_totp(&user.username, step as i64)
        .await
        .map_err(|e| {
            ConsoleError::unavailable("the enrolment cannot be stored; try again later", &e)
        })?;
    audit(
        &s,
        &client.user_event(
            &user,
            "totp.enrol",
            "success",
            "an authenticator was enrolled".into(),
        ),
    )
    .await?;
    s.store.end_session(&hash).await.map_err(|e| {
        ConsoleError::unavailable("the session cannot be renewed; try again later", &e)
    })?;
    open_session(
        &s,
        &sec,
        &client,
        (&user.username, &user.role, &user.facility, "password+totp"),
    )
    .await
}
