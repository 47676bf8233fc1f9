//! The care workflow as FHIR: bookings as Appointments (`bk-{booking id}`: the expert and the
//! patient as participants, start and end, booked → booked/fulfilled/cancelled/noshow) and
//! each line of a prescription as a MedicationRequest (`{prescription id}-{line}`, the
//! prescription id as `groupIdentifier`, CN-20). Visible as in `/api/appointments` (the
//! booking's facility in the read scope, or the booked expert) and `/api/prescriptions` (the
//! prescription's facility in the read scope). Projected, then matched in memory; versioned
//! by the booking's or prescription's version (current version only).

use huizhen_core::store::care::{PrescriptionFilter, StoredBooking, StoredPrescription};
use huizhen_domain::appointment::BookingStatus;
use huizhen_domain::prescription::PrescriptionState;
use serde_json::{Value, json};

use super::consult::USER;
use super::context::{Ctx, Served, with_meta};
use super::index::{index, instant};
use super::outcome::{Fail, too_costly};
use super::search::SearchRequest;
use super::table::ResourceDef;

/// Most bookings or prescriptions a search looks at before it asks for a narrower one.
const MAX_CANDIDATES: i64 = 2_000;
/// The code system of drug codes (the prescription's own).
pub const DRUG: &str = "urn:huizhen:drug";

fn patient_ref(patient: &str) -> Value {
    if patient.bytes().all(|b| b.is_ascii_digit()) && !patient.is_empty() {
        json!({ "reference": format!("Patient/person-{patient}") })
    } else {
        json!({ "identifier": { "system": "urn:huizhen:patient", "value": patient } })
    }
}

pub fn appointment(b: &StoredBooking) -> Value {
    let bk = &b.booking;
    let status = match bk.status {
        BookingStatus::Booked => "booked",
        BookingStatus::Attended => "fulfilled",
        BookingStatus::Cancelled => "cancelled",
        BookingStatus::NoShow => "noshow",
    };
    let mut a = json!({
        "resourceType": "Appointment",
        "id": format!("bk-{}", bk.id),
        "identifier": [{ "system": "urn:huizhen:booking", "value": bk.id }],
        "status": status,
        "serviceCategory": [{ "coding": [{ "system": "http://snomed.info/sct", "code": "11429006", "display": "Consultation" }] }],
        "start": instant(bk.start.timestamp_millis()),
        "end": instant(bk.end.timestamp_millis()),
        "created": instant(bk.booked_at.timestamp_millis()),
        "basedOn": [{ "reference": format!("ServiceRequest/cr-{}", bk.consultation_id) }],
        "participant": [
            { "actor": { "reference": format!("Practitioner/{}", bk.expert_id) }, "status": "accepted" },
            { "actor": patient_ref(&bk.patient_id), "status": "accepted" },
        ],
    });
    if let Some(c) = &bk.cancellation {
        a["cancelationReason"] = json!({ "text": c.reason });
    }
    a
}

fn rx_status(s: PrescriptionState) -> &'static str {
    match s {
        PrescriptionState::New | PrescriptionState::Draft | PrescriptionState::PendingReview => {
            "draft"
        }
        PrescriptionState::Active | PrescriptionState::Dispatched => "active",
        PrescriptionState::Delivered => "completed",
        PrescriptionState::DeliveryFailed | PrescriptionState::Returned => "stopped",
        PrescriptionState::Rejected | PrescriptionState::Cancelled => "cancelled",
    }
}

/// One MedicationRequest per line of the prescription.
pub fn medication_requests(p: &StoredPrescription) -> Vec<Value> {
    let rx = &p.prescription;
    rx.lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let route = serde_json::to_value(l.route)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let mut m = json!({
                "resourceType": "MedicationRequest",
                "id": format!("{}-{}", rx.id, i + 1),
                "identifier": [{ "system": "urn:huizhen:prescription-line", "value": format!("{}-{}", rx.id, i + 1) }],
                "groupIdentifier": { "system": "urn:huizhen:prescription", "value": rx.id },
                "status": rx_status(rx.state),
                "intent": "order",
                "medicationCodeableConcept": { "coding": [{ "system": DRUG, "code": l.drug_code, "display": l.drug_name }] },
                "subject": patient_ref(&rx.patient_id),
                "basedOn": [{ "reference": format!("ServiceRequest/cr-{}", rx.consultation_id) }],
                "dosageInstruction": [{
                    "text": format!("{} {} {} {} × {} d", l.dose, l.dose_unit, route, l.frequency, l.days),
                    "route": { "text": route },
                    "timing": { "code": { "text": l.frequency } },
                }],
                "dispenseRequest": {
                    "quantity": { "value": l.quantity, "unit": l.quantity_unit },
                    "expectedSupplyDuration": { "value": l.days, "unit": "d", "system": "http://unitsofmeasure.org", "code": "d" },
                },
            });
            if let Some(t) = rx.drafted_at {
                m["authoredOn"] = json!(instant(t.timestamp_millis()));
            }
            if let Some(a) = &rx.prescriber {
                m["requester"] = json!({ "identifier": { "system": USER, "value": a.id } });
            }
            m
        })
        .collect()
}

fn booking_served(b: &StoredBooking, version: i64, updated: i64) -> Served {
    Served {
        json: with_meta(appointment(b), version, updated),
        last_updated: updated,
        facility: Some(b.facility.clone()),
    }
}

fn may_see_booking(ctx: &Ctx, b: &StoredBooking) -> bool {
    ctx.caller.scope.allows(&b.facility)
        || (ctx.is_expert() && b.booking.expert_id == ctx.caller.principal.sub)
}

pub async fn read_booking(ctx: &Ctx, id: &str) -> Result<Option<Served>, Fail> {
    let Some(bid) = id.strip_prefix("bk-") else {
        return Ok(None);
    };
    let Some((b, version, updated)) = ctx.s.store.appointment_row(bid).await? else {
        return Ok(None);
    };
    if !may_see_booking(ctx, &b) {
        ctx.audit(
            &ctx.event(
                "fhir.read",
                "Appointment",
                id,
                "denied",
                "outside the caller's scope".into(),
            )
            .about(&b.facility),
        )
        .await?;
        return Ok(None);
    }
    Ok(Some(booking_served(&b, version, updated)))
}

pub async fn search_bookings(
    ctx: &Ctx,
    def: &ResourceDef,
    req: &SearchRequest,
    need: usize,
) -> Result<(Vec<Served>, usize), Fail> {
    let experts: Vec<String> = ["practitioner", "actor"]
        .iter()
        .flat_map(|p| req.terms(p))
        .filter_map(|v| {
            v.strip_prefix("PractitionerRole/")
                .or_else(|| v.strip_prefix("Practitioner/"))
        })
        .map(str::to_owned)
        .collect();
    let scope = if ctx.is_expert() {
        None
    } else {
        ctx.caller.scope.facilities()
    };
    let ids = ctx
        .s
        .store
        .fhir_booking_ids(
            (!experts.is_empty()).then_some(&experts[..]),
            None,
            scope.as_deref(),
            MAX_CANDIDATES + 1,
        )
        .await?;
    if ids.len() as i64 > MAX_CANDIDATES {
        return Err(too_costly(
            "appointments",
            "practitioner, actor, patient or _id",
        ));
    }
    let mut out = Vec::new();
    for id in ids {
        let Some((b, version, updated)) = ctx.s.store.appointment_row(&id).await? else {
            continue;
        };
        if !may_see_booking(ctx, &b) {
            continue;
        }
        let s = booking_served(&b, version, updated);
        let ix = index(def, &s.json);
        let rid = s.json["id"].as_str().unwrap_or_default().to_owned();
        if req.criteria.iter().all(|c| c.matches(&rid, updated, &ix)) {
            out.push(s);
        }
    }
    let total = out.len();
    out.sort_by_key(|s| std::cmp::Reverse(s.last_updated));
    out.truncate(need);
    Ok((out, total))
}

fn rx_served(p: &StoredPrescription) -> Vec<Served> {
    let version = i64::try_from(p.prescription.version).unwrap_or(i64::MAX);
    medication_requests(p)
        .into_iter()
        .map(|m| Served {
            json: with_meta(m, version, p.updated_at),
            last_updated: p.updated_at,
            facility: Some(p.facility.clone()),
        })
        .collect()
}

pub async fn read_medication(ctx: &Ctx, id: &str) -> Result<Option<Served>, Fail> {
    let Some((rx, _)) = id.rsplit_once('-') else {
        return Ok(None);
    };
    let Some(p) = ctx.s.store.prescription(rx).await? else {
        return Ok(None);
    };
    if !ctx.caller.scope.allows(&p.facility) {
        ctx.audit(
            &ctx.event(
                "fhir.read",
                "MedicationRequest",
                id,
                "denied",
                "outside the caller's scope".into(),
            )
            .about(&p.facility),
        )
        .await?;
        return Ok(None);
    }
    Ok(rx_served(&p).into_iter().find(|s| s.json["id"] == id))
}

pub async fn search_medications(
    ctx: &Ctx,
    def: &ResourceDef,
    req: &SearchRequest,
    need: usize,
) -> Result<(Vec<Served>, usize), Fail> {
    let all = ctx
        .s
        .store
        .list_prescriptions(&PrescriptionFilter {
            state: None,
            consultation_id: None,
            facilities: ctx.caller.scope.facilities(),
            limit: MAX_CANDIDATES + 1,
        })
        .await?;
    if all.len() as i64 > MAX_CANDIDATES {
        return Err(too_costly("prescriptions", "patient, status or _id"));
    }
    let mut out = Vec::new();
    for p in &all {
        for s in rx_served(p) {
            let ix = index(def, &s.json);
            let rid = s.json["id"].as_str().unwrap_or_default().to_owned();
            if req
                .criteria
                .iter()
                .all(|c| c.matches(&rid, s.last_updated, &ix))
            {
                out.push(s);
            }
        }
    }
    let total = out.len();
    out.sort_by_key(|s| std::cmp::Reverse(s.last_updated));
    out.truncate(need);
    Ok((out, total))
}
