//! The `guard` middleware: authentication, throttling, the API rate limit and the role check
//! of [`crate::security::ROUTES`] for every non-public route.

use super::*;

/// Authentication and the role check for every non-public route (see [`crate::security`]).
pub async fn guard(State(sec): State<Arc<Security>>, mut req: Request, next: Next) -> Response {
    let Some(pattern) = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_owned())
    else {
        return next.run(req).await;
    };
    if sec.is_public(&pattern) {
        return next.run(req).await;
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let ip = peer.map_or(std::net::IpAddr::from([127, 0, 0, 1]), |p| p.ip());
    let source = peer.map(|p| p.to_string()).unwrap_or_default();
    let purpose = req
        .headers()
        .get("x-purpose-of-use")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(200)
        .collect::<String>();
    let method = req.method().as_str().to_owned();
    let Some(action) = ROUTES
        .iter()
        .find(|(m, p, _)| *m == method && *p == pattern)
        .map(|r| r.2)
    else {
        return ApiError(
            StatusCode::FORBIDDEN,
            format!("{method} {pattern} is not in the access policy"),
        )
        .into_response();
    };
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::to_owned);
    // The console's session cookie, when no bearer token is given.
    let session_token = match bearer {
        None => crate::security::cookie(req.headers(), crate::security::SESSION_COOKIE),
        Some(_) => None,
    };
    let claimed = match &session_token {
        Some(_) => "session".to_owned(),
        None => crate::security::claimed_subject(bearer.as_deref()),
    };
    if let Err(e) = sec.check_throttle(ip, &claimed) {
        return ApiError(StatusCode::TOO_MANY_REQUESTS, e.to_string()).into_response();
    }
    // Ingestion is not rate limited: a hospital system's burst goes into the journal and is
    // bounded by the pipeline's backlog_limit, not refused here.
    if action != crate::security::Action::Ingest
        && let Err(wait) = sec.take_request(ip)
    {
        let mut r = ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "more than security.rate_limit requests per second from {ip}; retry in {wait}s"
            ),
        )
        .into_response();
        if let Ok(v) = axum::http::HeaderValue::from_str(&wait.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    // A change made with a console session must carry the session's CSRF token; a missing or
    // wrong one is refused (403) and audited as denied, with who the session is.
    let mut csrf_refused: Option<Principal> = None;
    let authenticated = match &session_token {
        Some(token) => {
            let used = !req
                .headers()
                .contains_key(crate::security::BACKGROUND_HEADER);
            match sec.session_used(token, used).await {
                // A login that still has a step to go (enrol a second factor) reaches only the
                // console's own routes.
                Ok(live) if live.method.starts_with("pending") => Err(AuthError::Invalid(
                    "the login is not finished: enrol a second factor in the console first".into(),
                )),
                Ok(live) => {
                    let safe = matches!(method.as_str(), "GET" | "HEAD");
                    let given = req
                        .headers()
                        .get(crate::security::CSRF_HEADER)
                        .and_then(|v| v.to_str().ok());
                    if safe || sec.csrf_matches(&live, given) {
                        Ok(live.principal)
                    } else {
                        csrf_refused = Some(live.principal);
                        Err(AuthError::Invalid(
                            "a change made with a console session must carry the session's X-CSRF-Token header"
                                .into(),
                        ))
                    }
                }
                Err(e) => Err(e),
            }
        }
        None => sec.authenticate(bearer.as_deref()).await,
    };
    if let (Some(p), Err(e)) = (&csrf_refused, &authenticated) {
        let caller = Caller {
            scope: sec.scope(p),
            write_scope: sec.write_scope(p),
            principal: p.clone(),
            source: source.clone(),
            purpose: purpose.clone(),
        };
        return denied(&sec, &caller, action, &format!("{method} {pattern}"), e).await;
    }
    let principal = match authenticated {
        Ok(p) => p,
        Err(AuthError::Unavailable(m)) => {
            return ApiError::internal(
                StatusCode::SERVICE_UNAVAILABLE,
                "the credentials cannot be checked now; try again later",
                &m,
            )
            .into_response();
        }
        Err(e) if session_token.is_some() => {
            // An ended or timed-out console session is not a login attempt (its token is 256
            // random bits: nothing to guess): answered 401 so the page shows the login, not
            // counted against the address (a hospital behind one NAT address whose users'
            // sessions time out is not throttled) and not a `login.failed` on the trail.
            tracing::debug!(%source, endpoint = %format!("{method} {pattern}"), error = %e, "console session refused");
            return ApiError(StatusCode::UNAUTHORIZED, e.to_string()).into_response();
        }
        Err(e) => {
            sec.record_failure(ip, &claimed);
            tracing::warn!(%source, endpoint = %format!("{method} {pattern}"), error = %e, "authentication failed");
            let ev = AuditEvent {
                actor: "anonymous".into(),
                action: "login.failed".into(),
                resource_type: "Endpoint".into(),
                resource_id: format!("{method} {pattern}"),
                outcome: "failed".into(),
                source,
                purpose,
                detail: format!("{e} (claimed subject {claimed})"),
                ..AuditEvent::default()
            };
            if let Err(err) = sec.store().audit(&ev).await {
                tracing::error!(error = %err, "failed login not audited");
            }
            let mut r = ApiError(StatusCode::UNAUTHORIZED, e.to_string()).into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    };
    let caller = Caller {
        scope: sec.scope(&principal),
        write_scope: sec.write_scope(&principal),
        principal,
        source,
        purpose,
    };
    if let Err(e) = sec.authorize(&caller.principal, action) {
        return denied(&sec, &caller, action, &format!("{method} {pattern}"), &e).await;
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// A request of a known caller refused (its role, a missing CSRF token): audited as denied,
/// answered 403 with the reason.
async fn denied(
    sec: &Security,
    caller: &Caller,
    action: crate::security::Action,
    endpoint: &str,
    why: &AuthError,
) -> Response {
    let ev = caller.event(
        action.name(),
        "Endpoint",
        endpoint,
        "denied",
        why.to_string(),
    );
    if let Err(err) = sec.store().audit(&ev).await {
        tracing::error!(error = %err, "denied request not audited");
    }
    ApiError(StatusCode::FORBIDDEN, why.to_string()).into_response()
}
