//! What a completed consultation bills (huizhen_domain::billing::fee): the minutes in session
//! (pauses excluded) read off the real event history, and only a completed consultation.

use chrono::TimeDelta;
use huizhen_domain::billing::{Billable, FeeError, FeeSchedule, Fen, compute_fees};
use huizhen_domain::consultation::*;
use huizhen_domain::expert::Title;

use crate::support::*;

const SCHEDULE: &str = r#"version: 1
facility: F-REQ
province: "44"
mapping_version: "2026.01"
services:
  - service_type: institution-to-institution
    name: 远程会诊
    local_code: HZ-YCHZ-01
    national_code: "003101000010000"
    province_code: "310100001-1"
    by_title: { chief-physician: 300.00 }
    included_minutes: 30
    extra:
      block_minutes: 15
      max_blocks: 4
      name: 远程会诊加时
      local_code: HZ-YCHZ-02
      national_code: "003101000020000"
      province_code: "310100002-1"
      price: 50.00
"#;

#[test]
fn session_minutes_exclude_pauses_and_price_the_extra_time() {
    let mut k = reach(State::InSession);
    let started = k.now;
    let at = |m: i64| started + TimeDelta::minutes(m);
    k.try_run_at(at(20), &local_doctor(), Command::Pause)
        .unwrap();
    k.try_run_at(at(50), &local_doctor(), Command::Resume)
        .unwrap();
    // 20 + 16 = 36 minutes in session, 30 minutes paused.
    k.try_run_at(at(66), &local_doctor(), Command::RequestReport)
        .unwrap();
    assert!(matches!(
        Billable::from_consultation(&k.c, Title::Chief, None),
        Err(FeeError::NotCompleted { .. })
    ));
    let signed = signed_opinion(ID, "E1", at(70));
    k.try_run_at(at(70), &expert("E1"), Command::SignOpinion { signed })
        .unwrap();
    k.try_run_at(
        at(71),
        &local_doctor(),
        Command::RecordLocalDecision {
            decision: decision(),
        },
    )
    .unwrap();
    k.try_run_at(at(72), &local_doctor(), Command::Complete)
        .unwrap();
    assert_eq!(k.c.state(), State::ReportSigned);

    let b = Billable::from_consultation(&k.c, Title::Chief, Some("EXP-FAC".into())).unwrap();
    assert_eq!(b.minutes, 36);
    assert_eq!(b.expert, "E1");
    assert_eq!(b.patient, PATIENT);
    assert_eq!(b.completed_at, at(72));
    assert_eq!(b.department, k.c.request().department);
    assert!(
        !b.diagnoses.is_empty(),
        "the signed opinion's diagnoses are billed"
    );
    let schedule = FeeSchedule::parse("fees.yaml", SCHEDULE).unwrap();
    let bill = compute_fees(&schedule, &b).unwrap();
    // 300 yuan + one started 15-minute block of 50.
    assert_eq!(bill.total, Fen(35_000));
}
