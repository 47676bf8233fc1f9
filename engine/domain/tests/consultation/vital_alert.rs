//! A device reading's threshold alert on an open consultation (issue 25): recorded once per
//! reading by the engine, no state change, shown in the timeline with the rules and the
//! reading; nothing on a closed consultation.

use chrono::{DateTime, TimeDelta};
use huizhen_domain::consultation::{
    Command, ConsultError, Context, EventKind, FiredRule, State, VitalAlert, apply,
    record_vital_alert,
};

use crate::support::*;

fn alert(message: &str) -> VitalAlert {
    VitalAlert {
        message: message.into(),
        device: "BP-0001".into(),
        measured_at: DateTime::parse_from_rfc3339("2026-03-01T20:00:00+08:00").unwrap(),
        rules: vec![FiredRule {
            name: "bp-high".into(),
            severity: "high".into(),
        }],
    }
}

fn raise(k: &mut Case, a: &VitalAlert) -> Result<usize, ConsultError> {
    k.now += TimeDelta::seconds(1);
    let actor = system();
    let events = record_vital_alert(&k.c, a, &Context::new(k.now, &actor))?;
    for e in &events {
        k.c = apply(k.c.clone(), e);
        k.events.push(e.clone());
    }
    Ok(events.len())
}

#[test]
fn an_alert_is_recorded_once_per_reading_without_changing_the_state() {
    let mut k = Case::new();
    k.run(&local_doctor(), Command::Submit);
    let before = k.c.state();
    let version = k.c.version();
    assert_eq!(raise(&mut k, &alert("m-1")).unwrap(), 1);
    assert_eq!(k.c.state(), before);
    assert_eq!(k.c.version(), version + 1);
    let last = k.c.timeline().last().cloned().unwrap();
    assert_eq!(last.event, "vital_alert_raised");
    assert_eq!((last.from, last.to), (before, before));
    assert_eq!(
        last.reason.as_deref(),
        Some("bp-high (high) on device BP-0001 at 2026-03-01T20:00:00+08:00; reading m-1")
    );
    let EventKind::VitalAlertRaised { alert: stored } = &k.events.last().unwrap().kind else {
        panic!("not a vital alert");
    };
    assert_eq!(stored, &alert("m-1"));
    // The same reading again (a retried step): nothing; another reading: a second event.
    assert_eq!(raise(&mut k, &alert("m-1")).unwrap(), 0);
    assert_eq!(raise(&mut k, &alert("m-2")).unwrap(), 1);
    // The stored events replay to the same consultation, and read back from JSON.
    let json = serde_json::to_string(&k.events).unwrap();
    let back: Vec<huizhen_domain::consultation::Event> = serde_json::from_str(&json).unwrap();
    assert_eq!(
        huizhen_domain::consultation::Consultation::replay(&back).unwrap(),
        k.c
    );
    assert!(json.contains(r#""type":"vital_alert_raised""#), "{json}");
}

#[test]
fn a_closed_consultation_gets_nothing_and_only_the_engine_raises() {
    let mut k = Case::new();
    let by_doctor = record_vital_alert(&k.c, &alert("m-1"), &Context::new(k.now, &local_doctor()));
    assert!(
        matches!(by_doctor, Err(ConsultError::RoleNotAllowed { .. })),
        "{by_doctor:?}"
    );
    let mut empty = alert("m-1");
    empty.rules.clear();
    assert!(matches!(
        raise(&mut k, &empty),
        Err(ConsultError::Invalid { .. })
    ));
    k.run(
        &local_doctor(),
        Command::Cancel {
            reason: "patient withdrew".into(),
        },
    );
    assert_eq!(k.c.state(), State::Cancelled);
    assert_eq!(raise(&mut k, &alert("m-3")).unwrap(), 0);
}
