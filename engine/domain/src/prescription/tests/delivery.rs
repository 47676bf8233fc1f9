//! Delivery callbacks (duplicate, late, impossible, re-dispatch) and cancellation.

use super::*;

#[test]
fn duplicate_callbacks_are_no_ops() {
    let policy = PrescriptionPolicy::default();
    let mut rx = active(&policy);
    run(
        &policy,
        &mut rx,
        callback("e1", DeliveryStatus::Dispatched, 60),
        t(61),
    );
    let before = rx.clone();
    // The same event id again (a webhook retry) and the same status under a new id.
    for cmd in [
        callback("e1", DeliveryStatus::Dispatched, 60),
        callback("e1b", DeliveryStatus::Dispatched, 62),
        callback("e1", DeliveryStatus::Delivered, 60),
    ] {
        assert_eq!(policy.decide(&rx, &cmd, t(70)).unwrap(), vec![]);
    }
    assert_eq!(rx, before);
}

#[test]
fn late_callbacks_are_noted_and_change_nothing() {
    let policy = PrescriptionPolicy::default();
    let mut rx = active(&policy);
    // `delivered` arrives first (the dispatch call was delayed).
    run(
        &policy,
        &mut rx,
        callback("e2", DeliveryStatus::Delivered, 300),
        t(301),
    );
    assert_eq!(rx.state, PrescriptionState::Delivered);
    let events = run(
        &policy,
        &mut rx,
        callback("e1", DeliveryStatus::Dispatched, 60),
        t(302),
    );
    assert!(
        matches!(
            &events[..],
            [PrescriptionEvent::CallbackNoted {
                state: PrescriptionState::Delivered,
                ..
            }]
        ),
        "{events:?}"
    );
    assert_eq!(rx.state, PrescriptionState::Delivered);
    assert_eq!(rx.notes.len(), 1);
    assert!(
        rx.notes[0].text.contains("late `dispatched` callback e1"),
        "{}",
        rx.notes[0].text
    );
    // The late call retried: now a duplicate.
    assert!(
        policy
            .decide(&rx, &callback("e1", DeliveryStatus::Dispatched, 60), t(303))
            .unwrap()
            .is_empty()
    );
    // Out of order while dispatched: a failure reported before the dispatch time is late.
    let mut rx = active(&policy);
    run(
        &policy,
        &mut rx,
        callback("d1", DeliveryStatus::Dispatched, 60),
        t(61),
    );
    let events = run(
        &policy,
        &mut rx,
        callback("f0", DeliveryStatus::Failed, 30),
        t(62),
    );
    assert!(matches!(
        &events[..],
        [PrescriptionEvent::CallbackNoted { .. }]
    ));
    assert_eq!(rx.state, PrescriptionState::Dispatched);
}

#[test]
fn a_failed_delivery_can_be_dispatched_again_or_returned() {
    let policy = PrescriptionPolicy::default();
    let mut rx = active(&policy);
    run(
        &policy,
        &mut rx,
        callback("d1", DeliveryStatus::Dispatched, 60),
        t(61),
    );
    run(
        &policy,
        &mut rx,
        callback("f1", DeliveryStatus::Failed, 120),
        t(121),
    );
    assert_eq!(rx.state, PrescriptionState::DeliveryFailed);
    run(
        &policy,
        &mut rx,
        callback("d2", DeliveryStatus::Dispatched, 180),
        t(181),
    );
    run(
        &policy,
        &mut rx,
        callback("r1", DeliveryStatus::Returned, 240),
        t(241),
    );
    assert_eq!(rx.state, PrescriptionState::Returned);
    let statuses: Vec<_> = rx.delivery.iter().map(|s| s.status).collect();
    use DeliveryStatus::*;
    assert_eq!(statuses, [Dispatched, Failed, Dispatched, Returned]);
}

#[test]
fn impossible_callbacks_name_the_state() {
    let policy = PrescriptionPolicy::default();
    let draft = drafted(&policy);
    let err = policy
        .decide(&draft, &callback("e1", DeliveryStatus::Delivered, 1), t(1))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "prescription `rx-001` is draft: a `delivered` delivery callback is impossible, no drug \
         may be supplied unless a pharmacist approved it"
    );
    let mut cancelled = active(&policy);
    let cancel = PrescriptionCommand::Cancel {
        by: expert(),
        reason: "patient allergic".into(),
    };
    run(&policy, &mut cancelled, cancel, t(6));
    let err = policy
        .decide(
            &cancelled,
            &callback("e1", DeliveryStatus::Delivered, 7),
            t(7),
        )
        .unwrap_err();
    assert!(err.to_string().contains("is cancelled"), "{err}");
    let blank_id = callback(" ", DeliveryStatus::Delivered, 7);
    let err = policy
        .decide(&active(&policy), &blank_id, t(7))
        .unwrap_err();
    assert!(err.to_string().contains("callback.event_id"), "{err}");
}

#[test]
fn cancellation_rules() {
    let policy = PrescriptionPolicy::default();
    let rx = active(&policy);
    let cancel = |by: Actor, reason: &str| PrescriptionCommand::Cancel {
        by,
        reason: reason.into(),
    };
    for by in [
        Actor::new("dr-chen", Role::Expert),
        Actor::new("triage@1", Role::Plugin),
        Actor::new("p-42", Role::Patient),
    ] {
        assert!(
            matches!(
                policy
                    .decide(&rx, &cancel(by.clone(), "x"), t(6))
                    .unwrap_err(),
                PrescriptionError::RoleNotAllowed { .. }
            ),
            "{by}"
        );
    }
    assert!(matches!(
        policy.decide(&rx, &cancel(expert(), ""), t(6)).unwrap_err(),
        PrescriptionError::MissingReason {
            action: "cancel",
            ..
        }
    ));
    for by in [
        expert(),
        pharmacist(),
        Actor::new("co-1", Role::Coordinator),
        Actor::new("engine", Role::System),
    ] {
        assert!(
            policy
                .decide(&rx, &cancel(by, "consultation cancelled"), t(6))
                .is_ok()
        );
    }
    let mut sent = rx.clone();
    run(
        &policy,
        &mut sent,
        callback("d1", DeliveryStatus::Dispatched, 60),
        t(61),
    );
    let err = policy
        .decide(&sent, &cancel(expert(), "too late"), t(62))
        .unwrap_err();
    assert!(matches!(
        err,
        PrescriptionError::InvalidTransition {
            state: PrescriptionState::Dispatched,
            ..
        }
    ));
}
