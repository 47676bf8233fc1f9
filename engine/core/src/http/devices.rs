//! `/api/devices`: which patient record a device measures for (issue 25; docs/devices.md),
//! the same bindings as `huizhen devices`, within the caller's facility scope, every access
//! audited (the binding and its audit row in one transaction).
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | /api/devices/bindings?facility=&device= | the bindings the caller may read, by facility, device, time |
//! | POST | /api/devices/bindings | `{"device", "facility", "local_id", "valid_from"?, "valid_to"?}` → 201 `{"id", …}`; 409 when it overlaps another binding of the device |
//! | POST | /api/devices/{device}/unbind | `{"facility", "at"?}`: ends the device's open binding (handed back); 404 when none is open |
//!
//! Times are RFC 3339 (`valid_from` and `at` default to now). The record must be in the
//! identity index (422 otherwise). Changes need the facility in the caller's write scope.

use chrono::{DateTime, Utc};
use huizhen_domain::vitals::binding::DeviceBinding;

use super::patients::{bad, check_write, parse_body};
use super::*;

#[derive(Debug, Deserialize)]
pub(super) struct BindingsQuery {
    facility: Option<String>,
    device: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BindBody {
    device: String,
    facility: String,
    local_id: String,
    #[serde(default)]
    valid_from: Option<String>,
    #[serde(default)]
    valid_to: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnbindBody {
    facility: String,
    #[serde(default)]
    at: Option<String>,
}

fn time(v: Option<&str>, what: &str) -> Result<DateTime<Utc>, ApiError> {
    match v {
        None => Ok(Utc::now()),
        Some(t) => DateTime::parse_from_rfc3339(t)
            .map(|t| t.to_utc())
            .map_err(|_| bad(format!("{what}: {t:?} is not an RFC 3339 time"))),
    }
}

fn required(v: &str, what: &str) -> Result<(), ApiError> {
    if v.trim().is_empty() {
        Err(bad(format!("{what}: is blank")))
    } else {
        Ok(())
    }
}

/// GET /api/devices/bindings.
pub(super) async fn list_bindings(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(q): Query<BindingsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if let Some(f) = &q.facility
        && !caller.scope.allows(f)
    {
        audit(
            &s.store,
            &caller
                .event(
                    "device.read",
                    "Device",
                    "",
                    "denied",
                    format!("facility {f} is outside the caller's scope"),
                )
                .about(f),
        )
        .await?;
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("facility {f} is outside the caller's scope"),
        ));
    }
    let rows: Vec<_> = s
        .store
        .device_bindings_all(q.facility.as_deref())
        .await?
        .into_iter()
        .filter(|r| caller.scope.allows(&r.binding.facility))
        .filter(|r| q.device.as_ref().is_none_or(|d| &r.binding.device == d))
        .collect();
    audit(
        &s.store,
        &caller.event(
            "device.read",
            "Device",
            q.device.as_deref().unwrap_or(""),
            "success",
            format!(
                "{} bindings{}",
                rows.len(),
                q.facility
                    .as_deref()
                    .map(|f| format!(" of facility {f}"))
                    .unwrap_or_default()
            ),
        ),
    )
    .await?;
    Ok(Json(json!({ "bindings": rows })))
}

/// POST /api/devices/bindings.
pub(super) async fn bind(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: BindBody = parse_body(&body, "body")?;
    required(&b.device, "device")?;
    required(&b.facility, "facility")?;
    required(&b.local_id, "local_id")?;
    let binding = DeviceBinding {
        device: b.device.clone(),
        facility: b.facility.clone(),
        local_id: b.local_id.clone(),
        valid_from: time(b.valid_from.as_deref(), "valid_from")?,
        valid_to: b
            .valid_to
            .as_deref()
            .map(|t| time(Some(t), "valid_to"))
            .transpose()?,
    };
    check_write(
        &s,
        &caller,
        "device.bind",
        "Device",
        &b.device,
        &b.facility,
        ApiError(StatusCode::NOT_FOUND, "no such facility".into()),
    )
    .await?;
    if s.store.identity(&b.facility, &b.local_id).await?.is_none() {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "local_id: the identity index holds no such record of facility {} (import or receive the patient first)",
                b.facility
            ),
        ));
    }
    let event = caller
        .event(
            "device.bind",
            "Device",
            &b.device,
            "success",
            format!("device {} bound in facility {}", b.device, b.facility),
        )
        .about(&b.facility);
    match s
        .store
        .device_bind(&binding, &caller.principal.sub, Some(&event))
        .await?
    {
        Ok(id) => Ok((
            StatusCode::CREATED,
            Json(json!({ "id": id, "binding": binding })),
        )
            .into_response()),
        Err(why) => Err(ApiError(
            StatusCode::CONFLICT,
            format!("device {}: {why}", b.device),
        )),
    }
}

/// POST /api/devices/{device}/unbind.
pub(super) async fn unbind(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(device): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let b: UnbindBody = parse_body(&body, "body")?;
    required(&b.facility, "facility")?;
    let at = time(b.at.as_deref(), "at")?;
    check_write(
        &s,
        &caller,
        "device.unbind",
        "Device",
        &device,
        &b.facility,
        ApiError(StatusCode::NOT_FOUND, "no such facility".into()),
    )
    .await?;
    let event = caller
        .event(
            "device.unbind",
            "Device",
            &device,
            "success",
            format!(
                "device {device} handed back in facility {} at {}",
                b.facility,
                at.to_rfc3339()
            ),
        )
        .about(&b.facility);
    if s.store
        .device_unbind(&b.facility, &device, at, Some(&event))
        .await?
    {
        Ok(Json(
            json!({ "device": device, "facility": b.facility, "valid_to": at.to_rfc3339() }),
        ))
    } else {
        Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "device {device} has no open binding in facility {} before that time",
                b.facility
            ),
        ))
    }
}
