//! `SIU^S12`–`S15`, `S17`, `S26` → Appointment (conditional update on the filler appointment
//! id `SCH-2`, else the placer's `SCH-1`), and the Patient (conditional create).
//!
//! Status by trigger (HL7-40): `S12` new, `S13` rescheduled, `S14` modified → `booked` (or
//! what `SCH-25`, the filler status, says: table 0278), `S15` → `cancelled` (reason
//! `SCH-6`), `S17` (deleted) → `entered-in-error`, `S26` → `noshow`. Start and end from
//! `TQ1-7`/`TQ1-8` (v2.5+), else `SCH-11.4`/`SCH-11.5`, else `AIS-4`; minutes from `SCH-9`;
//! participants: the patient, each `AIP` (personnel) and `AIL` (location), each `AIG`
//! (resource).

use std::num::NonZeroU32;

use fhir_sdk::r4b::codes::{AppointmentStatus, ParticipationStatus};
use fhir_sdk::r4b::resources::{Appointment, AppointmentParticipant, Resource};
use fhir_sdk::r4b::types::{Identifier, Reference};
use huizhen_hl7::mapping::readers::{
    clean, coded_of, comp, doctor_of, entity_of, location_of, note_of, one, summary_of, text_of,
    timestamp_of,
};
use huizhen_hl7::mapping::{Coded, EntityId, Timestamp};
use huizhen_hl7::{Message, Segment};

use super::bundle::{Tx, Write};
use super::model::{built, coded, doctor, identifier, instant, logical_reference, reference};
use super::patient::referenced_patient;
use super::{ConvertError, Ctx};

pub(super) fn siu(
    message: &Message,
    ctx: &Ctx<'_>,
    trigger: &str,
    tx: &mut Tx,
    warnings: &mut Vec<String>,
) -> Result<(), ConvertError> {
    let sch = message.segment("SCH", 1).ok_or_else(|| {
        ConvertError::at("SCH", "missing: an SIU message needs the schedule segment")
    })?;
    let id = appointment_identifier(ctx, sch)?;
    let status = status(ctx, trigger, sch);
    let mut a = built(
        Appointment::builder()
            .status(status)
            .participant(Vec::new())
            .build(),
        "Appointment",
    )?;
    a.identifier.push(Some(id.clone()));
    if status == AppointmentStatus::Cancelled
        && let Some(c) = one(sch, 6, coded_of)
    {
        a.cancelation_reason = coded(ctx.maps, "SCH-6", &c)?;
    }
    if let Some(c) = one(sch, 7, coded_of) {
        a.description = c.text.clone().or_else(|| c.code.clone());
        if let Some(cc) = coded(ctx.maps, "SCH-7", &c)? {
            a.reason_code.push(Some(cc));
        }
    }
    if let Some(c) = one(sch, 8, coded_of) {
        a.appointment_type = coded(ctx.maps, "SCH-8", &c)?;
    }
    let (start, end) = times(message, sch);
    a.start = start.as_ref().and_then(|t| instant(ctx, t));
    a.end = end.as_ref().and_then(|t| instant(ctx, t));
    if start.is_some() && a.start.is_none() {
        warnings.push("SCH-11.4: the start is not a date and time to the minute; left out".into());
    }
    a.minutes_duration = minutes(sch);
    if a.start.is_none()
        && !matches!(
            status,
            AppointmentStatus::Proposed
                | AppointmentStatus::Cancelled
                | AppointmentStatus::Waitlist
                | AppointmentStatus::EnteredInError
                | AppointmentStatus::Noshow
        )
    {
        return Err(ConvertError::at(
            "TQ1-7",
            "no start time (TQ1-7, SCH-11.4 or AIS-4); FHIR allows that only for proposed, cancelled or waitlisted appointments",
        ));
    }
    let notes: Vec<String> = message.segments_named("NTE").filter_map(note_of).collect();
    if !notes.is_empty() {
        a.comment = Some(notes.join("\n"));
    }
    let taken = !matches!(
        status,
        AppointmentStatus::Cancelled | AppointmentStatus::EnteredInError
    );
    let part_status = if taken {
        ParticipationStatus::Accepted
    } else {
        ParticipationStatus::Declined
    };
    if let Some(pid) = message.segment("PID", 1) {
        let mut w = Vec::new();
        let summary = summary_of(pid, &mut w);
        warnings.extend(w);
        if let Some(p) = referenced_patient(tx, ctx, &summary)? {
            a.participant
                .push(Some(participant(Some(reference(&p, None)?), part_status)?));
        }
    }
    for ais in message.segments_named("AIS") {
        if let Some(c) = one(ais, 3, coded_of)
            && let Some(cc) = coded(ctx.maps, "AIS-3", &c)?
        {
            a.service_type.push(Some(cc));
        }
    }
    for aip in message.segments_named("AIP") {
        if let Some(d) = one(aip, 3, doctor_of)
            && let Some(r) = doctor(ctx, &d)?
        {
            let mut p = participant(Some(r), part_status)?;
            if let Some(role) = one(aip, 4, coded_of)
                && let Some(cc) = coded(ctx.maps, "AIP-4", &role)?
            {
                p.r#type.push(Some(cc));
            }
            a.participant.push(Some(p));
        }
    }
    for ail in message.segments_named("AIL") {
        if let Some(l) = one(ail, 3, location_of) {
            let text: Vec<&str> = [
                &l.point_of_care,
                &l.room,
                &l.bed,
                &l.facility,
                &l.description,
            ]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
            if !text.is_empty() {
                let r = logical_reference("Location", None, Some(text.join(" ")))?;
                a.participant.push(Some(participant(Some(r), part_status)?));
            }
        }
    }
    for aig in message.segments_named("AIG") {
        if let Some(c) = one(aig, 3, coded_of) {
            let r = resource_reference(&c)?;
            a.participant.push(Some(participant(Some(r), part_status)?));
        }
    }
    if a.participant.is_empty() {
        return Err(ConvertError::at(
            "PID",
            "no participant: an Appointment needs the patient (PID-3) or an AIP/AIL/AIG resource",
        ));
    }
    tx.add("Appointment", &id, Write::Update, Resource::Appointment(a))?;
    Ok(())
}

fn participant(
    actor: Option<Reference>,
    status: ParticipationStatus,
) -> Result<AppointmentParticipant, ConvertError> {
    let mut p = built(
        AppointmentParticipant::builder().status(status).build(),
        "Appointment.participant",
    )?;
    p.actor = actor;
    Ok(p)
}

/// An `AIG-3` resource (a room, a device, a service) by its name.
fn resource_reference(c: &Coded) -> Result<Reference, ConvertError> {
    let display = c.text.clone().or_else(|| c.code.clone());
    let mut r = logical_reference("HealthcareService", None, display)?;
    r.r#type = None;
    Ok(r)
}

fn appointment_identifier(ctx: &Ctx<'_>, sch: Segment<'_>) -> Result<Identifier, ConvertError> {
    let e = |n: usize| one(sch, n, entity_of);
    let (id, type_code): (EntityId, &str) = match (e(2), e(1)) {
        (Some(f), _) => (f, "FILL"),
        (None, Some(p)) => (p, "PLAC"),
        (None, None) => {
            return Err(ConvertError::at(
                "SCH-2",
                "no appointment id (SCH-2 filler, SCH-1 placer): nothing would make a replay the same appointment",
            ));
        }
    };
    identifier(ctx, &id.id, id.namespace.as_deref(), Some(type_code))
}

fn status(ctx: &Ctx<'_>, trigger: &str, sch: Segment<'_>) -> AppointmentStatus {
    match trigger {
        "S15" => return AppointmentStatus::Cancelled,
        "S17" => return AppointmentStatus::EnteredInError,
        "S26" => return AppointmentStatus::Noshow,
        _ => {}
    }
    let filler = sch.field(25).and_then(|f| comp(f, 1));
    filler
        .as_deref()
        .and_then(|s| {
            ctx.maps
                .value("SCH-25", s)
                .and_then(|c| c.parse().ok())
                .or_else(|| filler_status(s))
        })
        .unwrap_or(AppointmentStatus::Booked)
}

/// HL7 table 0278 (SCH-25) → Appointment.status.
fn filler_status(code: &str) -> Option<AppointmentStatus> {
    Some(match code.trim().to_ascii_uppercase().as_str() {
        "BOOKED" | "OVERBOOK" => AppointmentStatus::Booked,
        "PENDING" => AppointmentStatus::Pending,
        "WAITLIST" => AppointmentStatus::Waitlist,
        "COMPLETE" => AppointmentStatus::Fulfilled,
        "STARTED" => AppointmentStatus::Arrived,
        "NOSHOW" => AppointmentStatus::Noshow,
        "CANCELLED" | "DC" => AppointmentStatus::Cancelled,
        "DELETED" => AppointmentStatus::EnteredInError,
        _ => return None,
    })
}

/// Start and end: `TQ1-7`/`TQ1-8`, else `SCH-11.4`/`SCH-11.5`, else the first `AIS-4`.
fn times(message: &Message, sch: Segment<'_>) -> (Option<Timestamp>, Option<Timestamp>) {
    if let Some(tq1) = message.segment("TQ1", 1) {
        let start = one(tq1, 7, timestamp_of);
        if start.is_some() {
            return (start, one(tq1, 8, timestamp_of));
        }
    }
    let part = |c: usize| {
        sch.field(11)
            .and_then(|f| f.component(c))
            .and_then(|c| clean(Some(c)))
            .map(|s| Timestamp::parse(&s))
    };
    if let Some(start) = part(4) {
        return (Some(start), part(5));
    }
    let ais = message.segment("AIS", 1);
    (ais.and_then(|a| one(a, 4, timestamp_of)), None)
}

/// `SCH-9` in minutes (`SCH-10` empty or minutes).
fn minutes(sch: Segment<'_>) -> Option<NonZeroU32> {
    let units = sch
        .field(10)
        .and_then(|f| comp(f, 1))
        .map(|u| u.to_ascii_uppercase());
    if !matches!(units.as_deref(), None | Some("MIN" | "M" | "MINUTES")) {
        return None;
    }
    one(sch, 9, text_of)
        .and_then(|d| d.trim().parse::<u32>().ok())
        .and_then(NonZeroU32::new)
}
