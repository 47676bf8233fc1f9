//! Slots from schedules, booking conflicts (expert, patient, consultation), cancellation
//! freeing the slot, the waiting queue's order, and no-shows with their counts.

use chrono::{DateTime, Duration, NaiveDate, Utc};

use super::*;
use crate::expert::model::{Schedule, WeeklyWindow};

/// Local (+08:00) time on a date.
fn at(local: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&format!("{local}+08:00"))
        .unwrap()
        .with_timezone(&Utc)
}

fn date(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn window(days: &str, from: &str, to: &str) -> WeeklyWindow {
    WeeklyWindow {
        days: days.parse().unwrap(),
        from: from.parse().unwrap(),
        to: to.parse().unwrap(),
    }
}

fn schedule() -> Schedule {
    Schedule {
        windows: vec![
            window("mon-fri", "08:00", "12:00"),
            window("mon-fri", "12:00", "13:00"),
            window("sat", "20:00", "08:00"),
        ],
        on_call: false,
    }
}

/// Monday 2026-01-12, 07:00 local.
fn now() -> DateTime<Utc> {
    at("2026-01-12T07:00:00")
}

fn calendar() -> Calendar {
    let mut c = Calendar::new(AppointmentConfig::default()).unwrap();
    c.set_schedule("exp-1", schedule());
    c.set_schedule("exp-2", schedule());
    c
}

fn request(id: &str, expert: &str, patient: &str, from: &str, to: &str) -> BookingRequest {
    BookingRequest {
        booking_id: id.into(),
        consultation_id: format!("c-{id}"),
        expert_id: expert.into(),
        patient_id: patient.into(),
        start: at(&format!("2026-01-12T{from}:00")),
        end: at(&format!("2026-01-12T{to}:00")),
        urgency: Urgency::Routine,
    }
}

#[test]
fn slots_follow_the_windows_merging_adjacent_ones() {
    let config = AppointmentConfig::default();
    let monday = slots("exp-1", &schedule(), date("2026-01-12"), 1, &config);
    // 08:00–13:00 merged: ten 30-minute slots.
    assert_eq!(monday.len(), 10);
    assert_eq!(monday[0].start, at("2026-01-12T08:00:00"));
    assert_eq!(monday[9].end, at("2026-01-12T13:00:00"));
    // The overnight Saturday window ends Sunday 08:00.
    let saturday = slots("exp-1", &schedule(), date("2026-01-17"), 1, &config);
    assert_eq!(saturday.len(), 24);
    assert_eq!(saturday[23].end, at("2026-01-18T08:00:00"));
    // A week: five weekdays and one Saturday night.
    assert_eq!(
        slots("exp-1", &schedule(), date("2026-01-12"), 7, &config).len(),
        74
    );
    // 45-minute slots over 5 hours: six, the 30-minute remainder is not offered.
    let long = AppointmentConfig {
        slot_minutes: 45,
        ..config
    };
    let s = slots("exp-1", &schedule(), date("2026-01-12"), 1, &long);
    assert_eq!(s.len(), 6);
    assert_eq!(s[5].end, at("2026-01-12T12:30:00"));
    assert!(slots("exp-1", &schedule(), date("2026-01-12"), 0, &config).is_empty());
}

#[test]
fn booking_takes_the_slot_and_cancel_frees_it() {
    let mut c = calendar();
    let free = c.open_slots("exp-1", date("2026-01-12"), 1).len();
    let b = c
        .book(request("b1", "exp-1", "p-1", "09:00", "10:00"), now())
        .unwrap();
    assert_eq!(b.status, BookingStatus::Booked);
    assert_eq!(c.open_slots("exp-1", date("2026-01-12"), 1).len(), free - 2);
    assert_eq!(c.open_slots("exp-2", date("2026-01-12"), 1).len(), free);
    // Spanning the two adjacent windows is fine.
    c.book(request("b2", "exp-1", "p-2", "11:30", "12:30"), now())
        .unwrap();
    // Cancel needs a reason, then frees the time for another booking.
    assert_eq!(
        c.cancel("b1", "co-1", " ", now()).unwrap_err(),
        AppointmentError::MissingReason {
            booking: "b1".into()
        }
    );
    let cancelled = c
        .cancel("b1", "co-1", "patient transferred", now())
        .unwrap();
    assert_eq!(cancelled.status, BookingStatus::Cancelled);
    assert_eq!(c.open_slots("exp-1", date("2026-01-12"), 1).len(), free - 2);
    c.book(request("b3", "exp-1", "p-3", "09:00", "10:00"), now())
        .unwrap();
    assert_eq!(
        c.cancel("b1", "co-1", "again", now()).unwrap_err(),
        AppointmentError::NotBooked {
            booking: "b1".into(),
            status: BookingStatus::Cancelled,
            action: "cancel"
        }
    );
}

#[test]
fn conflicts_name_the_conflicting_booking() {
    let mut c = calendar();
    c.book(request("b1", "exp-1", "p-1", "09:00", "10:00"), now())
        .unwrap();
    // Same expert, overlapping.
    let err = c
        .book(request("b2", "exp-1", "p-2", "09:30", "10:30"), now())
        .unwrap_err();
    assert_eq!(
        err,
        AppointmentError::ExpertConflict {
            booking: "b2".into(),
            expert: "exp-1".into(),
            conflicting: "b1".into(),
            start: at("2026-01-12T09:00:00"),
            end: at("2026-01-12T10:00:00"),
        }
    );
    // Same patient with another expert, overlapping.
    let err = c
        .book(request("b3", "exp-2", "p-1", "08:30", "09:30"), now())
        .unwrap_err();
    assert!(
        matches!(&err, AppointmentError::PatientConflict { conflicting, .. } if conflicting == "b1"),
        "{err:?}"
    );
    assert!(
        !err.to_string().contains("p-1"),
        "no patient id in errors: {err}"
    );
    // The same consultation twice.
    let mut again = request("b4", "exp-2", "p-9", "11:00", "11:30");
    again.consultation_id = "c-b1".into();
    assert!(matches!(
        c.book(again, now()).unwrap_err(),
        AppointmentError::ConsultationBooked { existing, .. } if existing == "b1"
    ));
    // Touching intervals do not conflict.
    c.book(request("b5", "exp-1", "p-1", "10:00", "10:30"), now())
        .unwrap();
    c.book(request("b6", "exp-1", "p-6", "08:30", "09:00"), now())
        .unwrap();
}

#[test]
fn bad_requests_are_refused_by_field() {
    let mut c = calendar();
    let err = |c: &mut Calendar, r: BookingRequest| c.book(r, now()).unwrap_err();
    assert!(matches!(
        err(&mut c, request("b1", "exp-1", "p-1", "07:30", "08:30")),
        AppointmentError::OutsideSchedule { .. }
    ));
    assert!(matches!(
        err(&mut c, request("b1", "exp-1", "p-1", "12:30", "13:30")),
        AppointmentError::OutsideSchedule { .. }
    ));
    assert!(matches!(
        err(&mut c, request("b1", "exp-9", "p-1", "09:00", "09:30")),
        AppointmentError::UnknownExpert { expert, .. } if expert == "exp-9"
    ));
    assert!(matches!(
        err(&mut c, request("b1", "exp-1", "p-1", "09:30", "09:00")),
        AppointmentError::Invalid { field: "end", .. }
    ));
    assert!(matches!(
        err(&mut c, request("b1", "exp-1", " ", "09:00", "09:30")),
        AppointmentError::Invalid {
            field: "patient_id",
            ..
        }
    ));
    let late = now() + Duration::hours(3);
    assert!(matches!(
        c.book(request("b1", "exp-1", "p-1", "09:00", "09:30"), late)
            .unwrap_err(),
        AppointmentError::InPast { .. }
    ));
    c.book(request("b1", "exp-1", "p-1", "09:00", "09:30"), now())
        .unwrap();
    assert!(matches!(
        err(&mut c, request("b1", "exp-2", "p-2", "09:00", "09:30")),
        AppointmentError::DuplicateBooking { .. }
    ));
    // Saturday night into Sunday morning is inside the overnight window.
    let mut night = request("b7", "exp-1", "p-7", "09:00", "09:30");
    night.start = at("2026-01-18T02:00:00");
    night.end = at("2026-01-18T03:00:00");
    c.book(night, now()).unwrap();
}

#[test]
fn the_daily_queue_orders_by_start_then_urgency() {
    let mut c = calendar();
    let mut r = request("b-late", "exp-1", "p-1", "11:00", "11:30");
    r.urgency = Urgency::Critical;
    c.book(r, now()).unwrap();
    c.book(request("b-early", "exp-1", "p-2", "08:00", "08:30"), now())
        .unwrap();
    c.book(request("b-gone", "exp-1", "p-3", "09:00", "09:30"), now())
        .unwrap();
    c.cancel("b-gone", "co-1", "duplicate", now()).unwrap();
    c.book(request("b-other", "exp-2", "p-4", "09:00", "09:30"), now())
        .unwrap();
    // Two bookings at 10:00 held by the store (an overbooked clinic day), loaded as they are.
    for (id, urgency) in [("b-r", Urgency::Routine), ("b-u", Urgency::Urgent)] {
        c.load(Booking {
            id: id.into(),
            consultation_id: format!("c-{id}"),
            expert_id: "exp-1".into(),
            patient_id: format!("p-{id}"),
            start: at("2026-01-12T10:00:00"),
            end: at("2026-01-12T10:30:00"),
            urgency,
            status: BookingStatus::Booked,
            booked_at: now(),
            joins: Vec::new(),
            cancellation: None,
            absent: Vec::new(),
        })
        .unwrap();
    }
    let queue = c.daily_queue("exp-1", date("2026-01-12"));
    let order: Vec<_> = queue
        .iter()
        .map(|q| (q.position, q.booking_id.as_str()))
        .collect();
    assert_eq!(
        order,
        [(1, "b-early"), (2, "b-u"), (3, "b-r"), (4, "b-late")]
    );
    assert!(c.daily_queue("exp-1", date("2026-01-13")).is_empty());
}

#[test]
fn queue_days_are_local_dates() {
    let mut c = calendar();
    c.set_schedule(
        "exp-1",
        Schedule {
            windows: vec![window("daily", "00:00", "24:00")],
            on_call: false,
        },
    );
    let mut r = request("b1", "exp-1", "p-1", "23:30", "23:59");
    r.start = at("2026-01-12T23:30:00"); // 15:30 UTC the same day
    c.book(r, now()).unwrap();
    let mut r = request("b2", "exp-1", "p-2", "00:30", "01:00");
    r.start = at("2026-01-13T00:30:00"); // 16:30 UTC on the 12th
    r.end = at("2026-01-13T01:00:00");
    c.book(r, now()).unwrap();
    let ids = |d| -> Vec<String> {
        c.daily_queue("exp-1", date(d))
            .into_iter()
            .map(|q| q.booking_id)
            .collect()
    };
    assert_eq!(ids("2026-01-12"), ["b1"]);
    assert_eq!(ids("2026-01-13"), ["b2"]);
}

#[test]
fn no_shows_after_the_grace_period_with_counts() {
    let mut c = calendar();
    c.book(request("nobody", "exp-1", "p-1", "09:00", "09:30"), now())
        .unwrap();
    c.book(
        request("no-patient", "exp-1", "p-2", "10:00", "10:30"),
        now(),
    )
    .unwrap();
    c.book(
        request("no-expert", "exp-2", "p-1", "10:00", "10:30"),
        now(),
    )
    .unwrap();
    c.book(request("held", "exp-2", "p-3", "11:00", "11:30"), now())
        .unwrap();
    c.book(request("later", "exp-2", "p-4", "12:00", "12:30"), now())
        .unwrap();
    c.record_join("no-patient", Participant::Expert, at("2026-01-12T09:58:00"))
        .unwrap();
    c.record_join(
        "no-expert",
        Participant::LocalDoctor,
        at("2026-01-12T10:01:00"),
    )
    .unwrap();
    c.record_join("held", Participant::Patient, at("2026-01-12T10:59:00"))
        .unwrap();
    let held = c
        .record_join("held", Participant::Expert, at("2026-01-12T11:02:00"))
        .unwrap();
    assert_eq!(held.status, BookingStatus::Attended);
    // 09:14: inside the grace period of the 09:00 booking.
    assert!(c.sweep_no_shows(at("2026-01-12T09:14:59")).is_empty());
    assert_eq!(
        c.sweep_no_shows(at("2026-01-12T09:15:00")),
        [NoShow {
            booking_id: "nobody".into(),
            consultation_id: "c-nobody".into(),
            absent: vec![Side::Expert, Side::Patient],
        }]
    );
    let swept = c.sweep_no_shows(at("2026-01-12T11:30:00"));
    let got: Vec<_> = swept
        .iter()
        .map(|n| (n.booking_id.as_str(), n.absent.clone()))
        .collect();
    assert_eq!(
        got,
        [
            ("no-expert", vec![Side::Expert]),
            ("no-patient", vec![Side::Patient]),
        ]
    );
    assert_eq!(c.booking("later").unwrap().status, BookingStatus::Booked);
    assert_eq!(c.booking("held").unwrap().status, BookingStatus::Attended);
    let counts = c.no_show_counts();
    assert_eq!(
        counts.by_patient.into_iter().collect::<Vec<_>>(),
        [("p-1".to_owned(), 1), ("p-2".to_owned(), 1)]
    );
    assert_eq!(
        counts.by_expert.into_iter().collect::<Vec<_>>(),
        [("exp-1".to_owned(), 1), ("exp-2".to_owned(), 1)]
    );
    // A no-show cannot be joined or cancelled any more.
    assert!(matches!(
        c.record_join("nobody", Participant::Expert, at("2026-01-12T09:20:00")),
        Err(AppointmentError::NotBooked {
            status: BookingStatus::NoShow,
            action: "join",
            ..
        })
    ));
}

#[test]
fn config_is_checked_and_read_from_yaml() {
    for (config, field) in [
        (
            AppointmentConfig {
                slot_minutes: 0,
                ..AppointmentConfig::default()
            },
            "slot_minutes",
        ),
        (
            AppointmentConfig {
                grace_minutes: 600,
                ..AppointmentConfig::default()
            },
            "grace_minutes",
        ),
        (
            AppointmentConfig {
                utc_offset_minutes: 1440,
                ..AppointmentConfig::default()
            },
            "utc_offset_minutes",
        ),
    ] {
        match Calendar::new(config).unwrap_err() {
            AppointmentError::Config(e) => assert_eq!(e.field, field),
            other => panic!("{other:?}"),
        }
    }
    let c: AppointmentConfig = serde_saphyr::from_str("slot_minutes: 20\n").unwrap();
    assert_eq!(
        (c.slot_minutes, c.grace_minutes, c.utc_offset_minutes),
        (20, 15, 480)
    );
    assert!(serde_saphyr::from_str::<AppointmentConfig>("slot: 20\n").is_err());
}

/// Back-to-back windows across midnight (an all-day schedule, or an evening window followed by
/// an early-morning one) hold a booking that crosses midnight; a gap at midnight does not.
#[test]
fn a_booking_across_midnight_fits_back_to_back_windows() {
    let mut c = Calendar::new(AppointmentConfig::default()).unwrap();
    c.set_schedule(
        "all-day",
        Schedule {
            windows: vec![window("mon-sun", "00:00", "00:00")],
            on_call: false,
        },
    );
    c.set_schedule(
        "split",
        Schedule {
            windows: vec![
                window("mon", "20:00", "23:59"),
                window("tue", "00:00", "06:00"),
            ],
            on_call: false,
        },
    );
    let across = |id: &str, expert: &str| BookingRequest {
        booking_id: id.into(),
        consultation_id: format!("c-{id}"),
        expert_id: expert.into(),
        patient_id: format!("p-{id}"),
        start: at("2026-01-12T23:45:00"),
        end: at("2026-01-13T00:15:00"),
        urgency: Urgency::Routine,
    };
    c.book(across("b1", "all-day"), now()).unwrap();
    assert!(matches!(
        c.book(across("b2", "split"), now()).unwrap_err(),
        AppointmentError::OutsideSchedule { .. }
    ));
}
