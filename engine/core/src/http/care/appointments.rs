//! `/api/appointments` and `/api/experts/{id}/queue` (issue 15 item 4): booking with conflict
//! detection (the domain's `Calendar` over the stored bookings, in one transaction), cancelling,
//! joining, and an expert's daily waiting queue. No-shows are marked by the engine's sweep.
//!
//! **Scope.** A booking belongs to the facility that made it (the requesting facility): it is
//! read by callers whose read scope holds it, and by the booked expert; cancelled by callers
//! whose write scope holds it and by the booked expert. An expert reads its own queue; admins
//! and integrators read the queue of an expert registered in their read scope.

use chrono::{DateTime, Utc};
use huizhen_domain::appointment::{AppointmentError, BookingRequest, Participant, Urgency};

use super::*;
use crate::store::care::StoredBooking;

/// The status and JSON of a calendar refusal.
fn refusal(e: &AppointmentError) -> Refusal {
    use AppointmentError as E;
    let (status, code, mut body) = match e {
        E::Config(_) => (StatusCode::INTERNAL_SERVER_ERROR, "config", json!({})),
        E::UnknownExpert { .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_expert",
            json!({ "field": "expert_id" }),
        ),
        E::UnknownBooking { .. } => (StatusCode::NOT_FOUND, "unknown_booking", json!({})),
        E::DuplicateBooking { .. } => (
            StatusCode::CONFLICT,
            "duplicate_booking",
            json!({ "field": "id" }),
        ),
        E::Invalid { field, .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            json!({ "field": field }),
        ),
        E::InPast { .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "in_past",
            json!({ "field": "start" }),
        ),
        E::OutsideSchedule { .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "outside_schedule",
            json!({ "field": "start" }),
        ),
        E::ExpertConflict {
            conflicting,
            start,
            end,
            ..
        } => (
            StatusCode::CONFLICT,
            "expert_conflict",
            json!({ "conflicting": conflicting, "start": start, "end": end }),
        ),
        E::PatientConflict {
            conflicting,
            start,
            end,
            ..
        } => (
            StatusCode::CONFLICT,
            "patient_conflict",
            json!({ "conflicting": conflicting, "start": start, "end": end }),
        ),
        E::ConsultationBooked { existing, .. } => (
            StatusCode::CONFLICT,
            "consultation_booked",
            json!({ "conflicting": existing }),
        ),
        E::NotBooked { status, .. } => (
            StatusCode::CONFLICT,
            "not_booked",
            json!({ "status": status }),
        ),
        E::MissingReason { .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_reason",
            json!({ "field": "reason" }),
        ),
    };
    body["error"] = json!(e.to_string());
    body["code"] = json!(code);
    Refusal(status, body)
}

fn event(
    caller: &Caller,
    action: &str,
    id: &str,
    facility: &str,
    outcome: &str,
    detail: String,
) -> AuditEvent {
    caller
        .event(action, "Appointment", id, outcome, detail)
        .about(facility)
}

async fn refused(
    s: &AppState,
    caller: &Caller,
    action: &str,
    id: &str,
    facility: &str,
    r: Refusal,
) -> Refusal {
    let outcome = if r.0 == StatusCode::FORBIDDEN {
        "denied"
    } else {
        "failed"
    };
    match audited(
        &s.store,
        &event(caller, action, id, facility, outcome, r.message()),
    )
    .await
    {
        Ok(()) => r,
        Err(e) => e,
    }
}

/// A booking request. The booking id is generated when absent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BookBody {
    #[serde(default)]
    id: Option<String>,
    consultation_id: String,
    expert_id: String,
    patient_id: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    #[serde(default)]
    urgency: Urgency,
    /// The requesting facility; default: the token's.
    #[serde(default)]
    facility: Option<String>,
}

pub(super) async fn book(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Bytes,
) -> Reply {
    let b: BookBody = parse(&body, "appointment")?;
    let facility = requesting_facility(&caller, b.facility.as_deref(), "the requesting facility")?;
    let id = id_or_new(b.id.as_deref());
    let action = "appointment.book";
    if !caller.write_scope.allows(&facility) {
        let r = Refusal::new(
            StatusCode::FORBIDDEN,
            format!(
                "facility: {} may not book for {facility}",
                caller.principal.facility
            ),
        );
        return Err(refused(&s, &caller, action, &id, &facility, r).await);
    }
    let request = BookingRequest {
        booking_id: id.clone(),
        consultation_id: b.consultation_id,
        expert_id: b.expert_id,
        patient_id: b.patient_id,
        start: b.start,
        end: b.end,
        urgency: b.urgency,
    };
    let detail = format!(
        "consultation {}; expert {}; {} to {}",
        request.consultation_id.trim(),
        request.expert_id.trim(),
        request.start,
        request.end
    );
    let audit = event(&caller, action, &id, &facility, "success", detail);
    let care = care(&s);
    match s
        .store
        .book_appointment(
            &request,
            &facility,
            &care.appointments,
            s.store.clock().now(),
            &audit,
        )
        .await?
    {
        Ok(booking) => {
            let stored = StoredBooking { booking, facility };
            Ok((StatusCode::CREATED, Json(json!(stored))).into_response())
        }
        Err(e) => Err(refused(&s, &caller, action, &id, &facility, refusal(&e)).await),
    }
}

/// The booking if the caller may read it (its facility is in the read scope, or the caller is
/// the booked expert): 404 otherwise (audited as denied).
async fn readable(
    s: &AppState,
    caller: &Caller,
    id: &str,
    action: &str,
) -> Result<StoredBooking, Refusal> {
    let not_found = || Refusal::new(StatusCode::NOT_FOUND, format!("no appointment `{id}`"));
    let Some(b) = s.store.appointment(id).await? else {
        return Err(not_found());
    };
    if caller.scope.allows(&b.facility) || is_booked_expert(caller, &b) {
        return Ok(b);
    }
    let why = Refusal::new(
        StatusCode::FORBIDDEN,
        format!("facility {} is outside the caller's scope", b.facility),
    );
    let r = refused(s, caller, action, id, &b.facility, why).await;
    Err(if r.0 == StatusCode::FORBIDDEN {
        not_found()
    } else {
        r
    })
}

fn is_booked_expert(caller: &Caller, b: &StoredBooking) -> bool {
    caller.principal.role == Role::Expert && caller.principal.sub == b.booking.expert_id
}

pub(super) async fn detail(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Reply {
    let b = readable(&s, &caller, &id, "appointment.read").await?;
    audited(
        &s.store,
        &event(
            &caller,
            "appointment.read",
            &id,
            &b.facility,
            "success",
            String::new(),
        ),
    )
    .await?;
    Ok(Json(json!(b)).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CancelBody {
    #[serde(default)]
    reason: String,
}

pub(super) async fn cancel(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Reply {
    let b: CancelBody = parse(&body, "cancel")?;
    let action = "appointment.cancel";
    let current = readable(&s, &caller, &id, action).await?;
    if !caller.write_scope.allows(&current.facility) && !is_booked_expert(&caller, &current) {
        let r = Refusal::new(
            StatusCode::FORBIDDEN,
            format!(
                "appointment `{id}` was booked by {}; {} may read it but not cancel it",
                current.facility, caller.principal.facility
            ),
        );
        return Err(refused(&s, &caller, action, &id, &current.facility, r).await);
    }
    let audit = event(
        &caller,
        action,
        &id,
        &current.facility,
        "success",
        format!("reason: {}", b.reason.trim()),
    );
    let care = care(&s);
    match s
        .store
        .cancel_appointment(
            &id,
            &caller.principal.sub,
            &b.reason,
            &care.appointments,
            s.store.clock().now(),
            &audit,
        )
        .await?
    {
        Ok(stored) => Ok(Json(json!(stored)).into_response()),
        Err(e) => Err(refused(&s, &caller, action, &id, &current.facility, refusal(&e)).await),
    }
}

pub(super) async fn join(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Reply {
    let action = "appointment.join";
    let not_found = || Refusal::new(StatusCode::NOT_FOUND, format!("no appointment `{id}`"));
    let Some(current) = s.store.appointment(&id).await? else {
        return Err(not_found());
    };
    let p = &caller.principal;
    // Who joins is the token: the booked expert, a doctor of the booking facility, the patient.
    let participant = match p.role {
        Role::Expert if p.sub == current.booking.expert_id => Some(Participant::Expert),
        Role::LocalDoctor if caller.write_scope.allows(&current.facility) => {
            Some(Participant::LocalDoctor)
        }
        Role::Patient if p.sub == current.booking.patient_id => Some(Participant::Patient),
        _ => None,
    };
    let Some(participant) = participant else {
        let why = Refusal::new(
            StatusCode::FORBIDDEN,
            format!(
                "{} {} is not a participant of appointment `{id}`",
                p.role, p.sub
            ),
        );
        let r = refused(&s, &caller, action, &id, &current.facility, why).await;
        return Err(if r.0 == StatusCode::FORBIDDEN {
            not_found()
        } else {
            r
        });
    };
    let audit = event(
        &caller,
        action,
        &id,
        &current.facility,
        "success",
        format!("{participant:?} joined"),
    );
    let care = care(&s);
    match s
        .store
        .record_appointment_join(
            &id,
            participant,
            s.store.clock().now(),
            &care.appointments,
            &audit,
        )
        .await?
    {
        Ok(stored) => Ok(Json(json!(stored)).into_response()),
        Err(e) => Err(refused(&s, &caller, action, &id, &current.facility, refusal(&e)).await),
    }
}

pub(super) async fn queue(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(expert_id): Path<String>,
    Query(pairs): Pairs,
) -> Reply {
    let pairs = params(pairs, &["date"])?;
    let care = care(&s);
    let date = match param(&pairs, "date") {
        Some(d) => chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("date: {d:?} is not YYYY-MM-DD"),
            )
        })?,
        None => care.appointments.local_date(s.store.clock().now()),
    };
    let p = &caller.principal;
    let allowed = if p.role == Role::Expert {
        p.sub == expert_id
    } else {
        match s.store.expert(&expert_id).await? {
            Some(e) => caller.scope.allows(&e.facility),
            None => caller.scope == crate::security::Scope::All,
        }
    };
    if !allowed {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!(
                "{} {} may not read the queue of expert {expert_id}",
                p.role, p.sub
            ),
        ));
    }
    let entries = s
        .store
        .expert_queue(&expert_id, date, &care.appointments)
        .await?;
    Ok(Json(json!({ "expert_id": expert_id, "date": date, "queue": entries })).into_response())
}
