//! `POST /api/consultations/{id}/room/tokens`: the room tokens of a consultation's call
//! (STANDARDS RTC-04). One short-lived signed token per participant, bound to the
//! consultation, its room, the participant, the role, the permissions and a validity window;
//! `huizhen-media`'s signaling (`/ws/signal`) admits with them.
//!
//! Body (optional): `{"roles": ["expert", "local-physician", "patient"], "ttl_seconds": 3600}`.
//! A local doctor or a coordinator (admin, integrator) of the requesting facility gets any of
//! the three; the accepted expert gets only their own. The room is open only while the
//! consultation is scheduled, in session or paused (409 otherwise), and only once the informed
//! consent is recorded (409, CN-05). Each token issued is audited (`room.token.issue`, with its
//! `jti`).

use huizhen_domain::consultation::room::{self, RoomClaims, RoomRole};

use super::*;
use crate::media::MediaConfig;
use crate::security::RoomTokens;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    #[serde(default)]
    roles: Option<Vec<String>>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

fn conflict(code: &str, message: String) -> WfError {
    WfError::Body(
        StatusCode::CONFLICT,
        json!({ "error": message, "code": code }),
    )
}

/// A 403, audited as denied.
async fn refuse(
    s: &AppState,
    caller: &Caller,
    id: &str,
    facility: &str,
    why: String,
) -> Result<Response, WfError> {
    audit(
        &s.store,
        &caller
            .event(
                "room.token.issue",
                "Consultation",
                id,
                "denied",
                why.clone(),
            )
            .about(facility),
    )
    .await?;
    Err(ApiError(StatusCode::FORBIDDEN, why).into())
}

pub(in crate::http) async fn issue_tokens(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, WfError> {
    let wf = workflow(&s)?;
    let stored = readable(&s, &wf, &caller, &id, "room.token.issue").await?;
    let request: TokenRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TokenRequest::default()
    } else {
        from_json(serde_json::Value::Object(body_object(&body)?))?
    };
    let c = &stored.consultation;
    let facility = c.request().requesting_facility.clone();
    if !may_write(&caller, &stored) {
        return refuse(
            &s,
            &caller,
            &id,
            &facility,
            "the caller's facility does not run this consultation".into(),
        )
        .await;
    }
    if !room::room_open(c.state()) {
        return Err(conflict(
            "room-closed",
            format!(
                "the consultation is {}: its room is open only while it is scheduled, in session or paused (RTC-04)",
                c.state().code()
            ),
        ));
    }
    if c.gates().consent.is_none() {
        return Err(conflict(
            "no-consent",
            "no informed consent recorded: no room tokens before it (CN-05)".into(),
        ));
    }
    let roles: Vec<RoomRole> = match &request.roles {
        None => vec![
            RoomRole::Expert,
            RoomRole::LocalPhysician,
            RoomRole::Patient,
        ],
        Some(list) => {
            let mut out = Vec::new();
            for (i, r) in list.iter().enumerate() {
                match RoomRole::parse(r) {
                    Some(RoomRole::Observer) | None => {
                        return Err(unprocessable(
                            &format!("roles[{i}]"),
                            format!("{r:?} is not expert, local-physician or patient"),
                        ));
                    }
                    Some(role) => out.push(role),
                }
            }
            out
        }
    };
    if caller.principal.role == Role::Expert
        && (roles != [RoomRole::Expert] || c.accepted_by() != Some(caller.principal.sub.as_str()))
    {
        return refuse(
            &s,
            &caller,
            &id,
            &facility,
            "an expert gets only their own token, for a consultation they accepted (roles: [\"expert\"])".into(),
        )
        .await;
    }
    let config = s
        .extensions
        .get::<MediaConfig>()
        .map(|m| (*m).clone())
        .unwrap_or_default();
    let ttl = request
        .ttl_seconds
        .unwrap_or(config.token_ttl.as_secs())
        .clamp(1, crate::security::MAX_ROOM_TOKEN_TTL.as_secs());
    let Some(signer) = s.extensions.get::<RoomTokens>() else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "room tokens are not available in this engine".into(),
        )
        .into());
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let room_id = room::room_id(&id);
    let mut tokens = Vec::new();
    for role in roles {
        let Some(sub) = room::participant(c, role) else {
            return Err(conflict(
                "no-participant",
                format!("the consultation has no {role} yet"),
            ));
        };
        let claims = RoomClaims {
            sub,
            consultation: id.clone(),
            room: room_id.clone(),
            role,
            perms: role.default_permissions(),
            nbf: now,
            exp: now + ttl,
            iat: now,
            jti: crate::message::new_id(),
        };
        let token = signer.sign(&claims).map_err(|e| {
            ApiError::internal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot sign a room token",
                &e,
            )
        })?;
        audit(
            &s.store,
            &caller
                .event(
                    "room.token.issue",
                    "Consultation",
                    &id,
                    "success",
                    format!(
                        "room {room_id}, role {role}, participant {}, jti {}, exp {}",
                        claims.sub, claims.jti, claims.exp
                    ),
                )
                .about(&facility),
        )
        .await?;
        tokens.push(json!({
            "role": role,
            "participant": claims.sub,
            "token": token,
            "jti": claims.jti,
            "nbf": claims.nbf,
            "exp": claims.exp,
            "permissions": claims.perms,
            "call_url": format!("/call/{room_id}?token={token}"),
        }));
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "consultation": id,
            "room": room_id,
            "signal": "/ws/signal",
            "tokens": tokens,
        })),
    )
        .into_response())
}
