//! Appointments (issue 15 item 4): conflicts through the API (expert, patient, consultation,
//! schedule, past, half-open back-to-back slots, concurrent bookings of one slot), the daily
//! waiting queue, cancellation freeing the slot; no-shows swept at a fixed time.

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use huizhen_core::care::Care;
use huizhen_core::config::workflow::WorkflowConfig;
use huizhen_core::security::Role;
use huizhen_core::store::audit::AuditEvent;
use huizhen_domain::appointment::{BookingRequest, BookingStatus, Participant, Side, Urgency};
use serde_json::{Value, json};

use super::{Api, audited, expert, token};
use crate::support::{Backend, both_backends};

both_backends!(appointment_conflicts_queue_and_no_shows);

/// `hh:mm` local time (+08:00) on the local date three days from now, in UTC.
fn local(hhmm: &str) -> DateTime<Utc> {
    let offset = chrono::FixedOffset::east_opt(8 * 3600).unwrap();
    let day = (Utc::now() + Duration::days(3))
        .with_timezone(&offset)
        .date_naive();
    let t = NaiveTime::parse_from_str(hhmm, "%H:%M").unwrap();
    offset
        .from_local_datetime(&day.and_time(t))
        .unwrap()
        .with_timezone(&Utc)
}

fn booking(
    id: &str,
    consultation: &str,
    expert: &str,
    patient: &str,
    from: &str,
    to: &str,
) -> Value {
    json!({
        "id": id, "consultation_id": consultation, "expert_id": expert, "patient_id": patient,
        "start": local(from), "end": local(to)
    })
}

fn request(id: &str, consultation: &str, patient: &str, start: DateTime<Utc>) -> BookingRequest {
    BookingRequest {
        booking_id: id.into(),
        consultation_id: consultation.into(),
        expert_id: "E1".into(),
        patient_id: patient.into(),
        start,
        end: start + Duration::minutes(30),
        urgency: Urgency::Routine,
    }
}

async fn appointment_conflicts_queue_and_no_shows(backend: Backend) {
    let Some(api) = Api::start(backend, WorkflowConfig::default(), &[]).await else {
        return;
    };
    let store = api.engine.store.clone();
    store
        .upsert_experts(
            &[
                expert(
                    "E1",
                    "H-CITY-1",
                    &["03.02"],
                    &["I25"],
                    &[["daily", "00:00", "00:00"]],
                ),
                expert(
                    "E2",
                    "H-CITY-1",
                    &["03.02"],
                    &["I25"],
                    &[["daily", "08:00", "12:00"]],
                ),
            ],
            &[],
            None,
        )
        .await
        .unwrap();
    let doctor = token("dr-1", Role::LocalDoctor, "H-COUNTY-1");

    let (st, v) = api
        .post(
            "/api/appointments",
            &doctor,
            booking("b1", "c-1", "E1", "P-1", "10:00", "10:30"),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(
        (v["status"].as_str(), v["facility"].as_str()),
        (Some("booked"), Some("H-COUNTY-1"))
    );
    // The expert is taken: the conflicting booking is named.
    let (st, v) = api
        .post(
            "/api/appointments",
            &doctor,
            booking("b2", "c-2", "E1", "P-2", "10:15", "10:45"),
        )
        .await;
    assert_eq!(
        (st, v["code"].as_str(), v["conflicting"].as_str()),
        (409, Some("expert_conflict"), Some("b1")),
        "{v}"
    );
    // The patient is taken (with another expert); the patient is not named in the error.
    let (st, v) = api
        .post(
            "/api/appointments",
            &doctor,
            booking("b3", "c-3", "E2", "P-1", "10:00", "10:30"),
        )
        .await;
    assert_eq!(
        (st, v["code"].as_str(), v["conflicting"].as_str()),
        (409, Some("patient_conflict"), Some("b1")),
        "{v}"
    );
    assert!(!v["error"].as_str().unwrap().contains("P-1"), "{v}");
    // The consultation already holds a booking.
    let (st, v) = api
        .post(
            "/api/appointments",
            &doctor,
            booking("b4", "c-1", "E2", "P-3", "09:00", "09:30"),
        )
        .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (409, Some("consultation_booked")),
        "{v}"
    );
    // Outside the expert's schedule; in the past; an unknown expert.
    let (st, v) = api
        .post(
            "/api/appointments",
            &doctor,
            booking("b5", "c-5", "E2", "P-5", "13:00", "13:30"),
        )
        .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (422, Some("outside_schedule")),
        "{v}"
    );
    let past = json!({ "id": "b5", "consultation_id": "c-5", "expert_id": "E1", "patient_id": "P-5",
        "start": Utc::now() - Duration::hours(2), "end": Utc::now() - Duration::hours(1) });
    let (st, v) = api.post("/api/appointments", &doctor, past).await;
    assert_eq!((st, v["code"].as_str()), (422, Some("in_past")), "{v}");
    let (st, v) = api
        .post(
            "/api/appointments",
            &doctor,
            booking("b5", "c-5", "E9", "P-5", "10:00", "10:30"),
        )
        .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (422, Some("unknown_expert")),
        "{v}"
    );
    let (st, v) = api
        .post(
            "/api/appointments",
            &doctor,
            booking("b5", "c-5", "E1", "P-5", "10:30", "10:00"),
        )
        .await;
    assert_eq!((st, v["field"].as_str()), (422, Some("end")), "{v}");
    // Back to back is not a conflict (half-open intervals); a critical case earlier in the day.
    let (st, v) = api
        .post(
            "/api/appointments",
            &doctor,
            booking("b6", "c-6", "E1", "P-6", "10:30", "11:00"),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let mut b7 = booking("b7", "c-7", "E1", "P-7", "09:00", "09:30");
    b7["urgency"] = json!("critical");
    assert_eq!(api.post("/api/appointments", &doctor, b7).await.0, 201);
    let (st, _) = api
        .post(
            "/api/appointments",
            &doctor,
            booking("b1", "c-8", "E1", "P-8", "15:00", "15:30"),
        )
        .await;
    assert_eq!(st, 409, "the id is taken");

    // The daily queue: by start time; the expert reads its own, its hospital's desk too.
    let date = local("10:00")
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .date_naive();
    let path = format!("/api/experts/E1/queue?date={date}");
    let (st, v) = api.get(&path, &token("E1", Role::Expert, "H-CITY-1")).await;
    assert_eq!(st, 200, "{v}");
    let queue: Vec<(u64, &str)> = v["queue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["position"].as_u64().unwrap(),
                e["booking_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(queue, [(1, "b7"), (2, "b1"), (3, "b6")]);
    assert_eq!(
        api.get(&path, &token("coord", Role::Integrator, "H-CITY-1"))
            .await
            .0,
        200
    );
    assert_eq!(
        api.get(&path, &token("E2", Role::Expert, "H-CITY-1"))
            .await
            .0,
        403
    );
    assert_eq!(
        api.get(&path, &token("coord", Role::Integrator, "H-COUNTY-9"))
            .await
            .0,
        403
    );

    // Cancelling needs a reason, only the booking facility (or the expert) may, and frees the slot.
    let other = token("dr-9", Role::LocalDoctor, "H-COUNTY-9");
    assert_eq!(
        api.post(
            "/api/appointments/b1/cancel",
            &other,
            json!({ "reason": "x" })
        )
        .await
        .0,
        404
    );
    let (st, v) = api
        .post("/api/appointments/b1/cancel", &doctor, json!({}))
        .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (422, Some("missing_reason")),
        "{v}"
    );
    let (st, v) = api
        .post(
            "/api/appointments/b1/cancel",
            &doctor,
            json!({ "reason": "患者改期" }),
        )
        .await;
    assert_eq!((st, v["status"].as_str()), (200, Some("cancelled")), "{v}");
    let (st, v) = api
        .post(
            "/api/appointments/b1/cancel",
            &doctor,
            json!({ "reason": "again" }),
        )
        .await;
    assert_eq!((st, v["code"].as_str()), (409, Some("not_booked")), "{v}");
    let (st, v) = api
        .post(
            "/api/appointments",
            &doctor,
            booking("b2", "c-2", "E1", "P-2", "10:00", "10:30"),
        )
        .await;
    assert_eq!(st, 201, "the slot is free again: {v}");

    // Eight bookings of one slot at once: exactly one wins.
    let attempts = (0..8).map(|i| {
        let body = booking(
            &format!("r{i}"),
            &format!("c-r{i}"),
            "E1",
            &format!("P-r{i}"),
            "14:00",
            "14:30",
        );
        let (api, doctor) = (&api, &doctor);
        async move { api.post("/api/appointments", doctor, body).await.0 }
    });
    let mut statuses = futures::future::join_all(attempts).await;
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409]);

    // No-shows, swept at given times: nobody came to n1, only the expert to n2, both sides to
    // n3. They start tomorrow (the engine's own sweep, at the real time, leaves them alone), and
    // before the bookings above (which the sweeps here must not reach).
    let care = Care::of(&api.engine.extensions);
    let cfg = care.appointments;
    let now0 = Utc::now();
    let start = Utc
        .timestamp_opt((now0 + Duration::days(1)).timestamp() / 60 * 60, 0)
        .unwrap();
    let audit = AuditEvent {
        action: "appointment.book".into(),
        actor: "test".into(),
        ..AuditEvent::default()
    };
    for (id, patient, offset) in [("n1", "P-n1", 0), ("n2", "P-n2", 30), ("n3", "P-n3", 60)] {
        let r = request(
            id,
            &format!("c-{id}"),
            patient,
            start + Duration::minutes(offset),
        );
        store
            .book_appointment(&r, "H-COUNTY-1", &cfg, now0, &audit)
            .await
            .unwrap()
            .unwrap();
    }
    let join = |id: &'static str, who: Participant, at: DateTime<Utc>| {
        let store = store.clone();
        let audit = audit.clone();
        async move {
            store
                .record_appointment_join(id, who, at, &cfg, &audit)
                .await
                .unwrap()
                .unwrap()
        }
    };
    join("n2", Participant::Expert, start + Duration::minutes(31)).await;
    join("n3", Participant::Expert, start + Duration::minutes(59)).await;
    let b = join(
        "n3",
        Participant::LocalDoctor,
        start + Duration::minutes(61),
    )
    .await;
    assert_eq!(b.booking.status, BookingStatus::Attended);
    let sweep = |at| {
        let (store, care) = (store.clone(), care.clone());
        async move {
            huizhen_core::care::jobs::sweep_no_shows(&store, &care, at)
                .await
                .unwrap()
        }
    };
    assert!(
        sweep(start + Duration::minutes(14)).await.is_empty(),
        "within the grace period"
    );
    let marked = sweep(start + Duration::minutes(46)).await;
    let got: Vec<(&str, &[Side])> = marked
        .iter()
        .map(|n| (n.booking_id.as_str(), n.absent.as_slice()))
        .collect();
    assert_eq!(
        got,
        [
            ("n1", &[Side::Expert, Side::Patient][..]),
            ("n2", &[Side::Patient][..])
        ]
    );
    assert!(
        sweep(start + Duration::minutes(200)).await.is_empty(),
        "n3 attended; n1 and n2 are done"
    );
    let (st, v) = api.get("/api/appointments/n1", &doctor).await;
    assert_eq!((st, v["status"].as_str()), (200, Some("no-show")), "{v}");
    assert_eq!(v["absent"], json!(["expert", "patient"]));
    assert_eq!(
        api.get(
            "/api/appointments/b6",
            &token("E1", Role::Expert, "H-CITY-1")
        )
        .await
        .0,
        200,
        "the booked expert reads it"
    );
    assert_eq!(api.get("/api/appointments/b6", &other).await.0, 404);
    let events = audited(&store, "appointment.no-show").await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events
            .iter()
            .any(|(_, id, d)| id == "n2" && d.contains("absent: patient"))
    );
    assert!(
        audited(&store, "appointment.cancel")
            .await
            .iter()
            .any(|(o, id, _)| o == "success" && id == "b1")
    );
    api.stop().await;
}
