//! A no-show survives a crash between its two steps (issue 15 item 4): the sweep marked the
//! booking `no-show` and the engine stopped before the consultation was failed. After the
//! restart the engine's own sweep (it runs one at start) fails the consultation, once: a later
//! sweep finds nothing more to do.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, TimeZone, Utc};
use huizhen_core::care::Care;
use huizhen_core::care::jobs::{NO_SHOW_ACTOR, sweep_no_shows};
use huizhen_core::clock::{Clock, FakeClock};
use huizhen_core::store::audit::{AuditEvent, AuditFilter};
use huizhen_domain::appointment::{BookingRequest, BookingStatus, Urgency};
use huizhen_domain::expert::Title;
use serde_json::json;

use super::{REQ, cardiologist, doctor, expert, offerees, request, seed_registry, start, start_on};
use crate::support::{Backend, both_backends, wait_for};

both_backends!(a_no_show_marked_before_a_crash_fails_its_consultation_after_the_restart);

async fn a_no_show_marked_before_a_crash_fails_its_consultation_after_the_restart(b: Backend) {
    let Some(wf) = start(b).await else { return };
    // E1, bookable all day.
    seed_registry(&wf, 0).await;
    let mut e1 = cardiologist("E1", Title::Chief);
    e1.schedule.windows = vec![
        serde_json::from_value(json!({"days": "daily", "from": "00:00", "to": "00:00"})).unwrap(),
    ];
    wf.engine
        .store
        .upsert_experts(&[e1], &[], None)
        .await
        .unwrap();
    let (id, v) = wf.approved(request(2101)).await;
    assert_eq!(offerees(&v), ["E1"], "{v}");
    let (s, v, _) = wf
        .call(
            "POST",
            &format!("/api/consultations/{id}/accept"),
            &expert("E1"),
            None,
            v["version"].as_u64(),
        )
        .await;
    assert_eq!((s, v["state"].as_str()), (200, Some("scheduled")), "{v}");

    // Booked tomorrow; nobody joins.
    let store = wf.engine.store.clone();
    let care = Care::of(&wf.engine.extensions);
    let now0 = wf.clock.now();
    let begin = Utc
        .timestamp_opt((now0 + TimeDelta::days(1)).timestamp() / 60 * 60, 0)
        .unwrap();
    let booking = BookingRequest {
        booking_id: "nb2".into(),
        consultation_id: id.clone(),
        expert_id: "E1".into(),
        patient_id: "2101".into(),
        start: begin,
        end: begin + TimeDelta::minutes(30),
        urgency: Urgency::Urgent,
    };
    let audit = AuditEvent {
        action: "appointment.book".into(),
        actor: "test".into(),
        ..AuditEvent::default()
    };
    store
        .book_appointment(&booking, REQ, &care.appointments, now0, &audit)
        .await
        .unwrap()
        .unwrap();

    // The sweep's first step commits (the booking is a no-show) and the engine stops before
    // the second: the consultation is still scheduled.
    let marked = store
        .sweep_no_shows(begin + TimeDelta::minutes(46), &care.appointments)
        .await
        .unwrap();
    assert_eq!(marked.len(), 1, "{marked:?}");
    assert_eq!(
        store
            .appointment("nb2")
            .await
            .unwrap()
            .unwrap()
            .booking
            .status,
        BookingStatus::NoShow
    );
    let unfinished = store.unfinished_no_shows().await.unwrap();
    assert_eq!(
        unfinished
            .iter()
            .map(|n| n.booking_id.as_str())
            .collect::<Vec<_>>(),
        ["nb2"]
    );
    let (db, ca) = wf.stop().await;

    // The restart: the engine sweeps at start and fails the consultation with `no-show`.
    let clock = Arc::new(FakeClock::new(begin + TimeDelta::minutes(50)));
    let wf = start_on(db, ca, clock, &[]).await;
    let path = format!("/api/consultations/{id}");
    let v = wait_for(
        "the no-show to fail the consultation",
        Duration::from_secs(20),
        || {
            let wf = &wf;
            let path = path.clone();
            async move {
                let (_, v) = wf.get(&path, &doctor()).await;
                (v["status"] == "failed").then_some(v)
            }
        },
    )
    .await;
    assert_eq!(v["businessStatus"], "no-show", "{v}");
    let last = v["timeline"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["actor"]["id"], NO_SHOW_ACTOR, "{last}");
    assert!(last["reason"].as_str().unwrap().contains("nb2"), "{last}");

    // Idempotent: another sweep, now or later, finds nothing; one failure, audited once.
    let store = wf.engine.store.clone();
    let care = Care::of(&wf.engine.extensions);
    assert!(store.unfinished_no_shows().await.unwrap().is_empty());
    for later in [60, 120] {
        let marked = sweep_no_shows(&store, &care, begin + TimeDelta::minutes(later))
            .await
            .unwrap();
        assert!(marked.is_empty(), "{marked:?}");
    }
    let history = store.consultation_history(&id).await.unwrap();
    assert_eq!(
        history.iter().filter(|e| e.kind.name() == "failed").count(),
        1
    );
    let failed = store
        .audit_events(&AuditFilter {
            resource_id: Some(id.clone()),
            action: Some("consultation.failed".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    // The expert's load was given back with the failure.
    assert_eq!(
        store
            .expert("E1")
            .await
            .unwrap()
            .unwrap()
            .load
            .open_consultations,
        0
    );
    wf.stop().await;
}
