//! The experts' availability through the facade: Schedule and Slot, cut as the appointment API
//! cuts them (30-minute slots at +08:00 by default).

use chrono::{Duration, FixedOffset, TimeZone};
use huizhen_core::clock::Clock;
use huizhen_domain::expert::Title;
use serde_json::json;

use super::{admin, fhir, ok, start};
use crate::consultations::cardiologist;
use crate::support::{Backend, both_backends};

both_backends!(schedules_and_slots_follow_the_experts_windows);

async fn schedules_and_slots_follow_the_experts_windows(b: Backend) {
    let Some(wf) = start(b).await else { return };
    let mut e7 = cardiologist("E7", Title::Attending);
    e7.schedule.windows = vec![
        serde_json::from_value(json!({"days": "daily", "from": "09:00", "to": "11:00"})).unwrap(),
    ];
    wf.engine
        .store
        .upsert_experts(&[e7], &[], None)
        .await
        .unwrap();
    let a = admin();
    let s = ok(&wf, "/fhir/r4/Schedule/E7", &a).await;
    assert_eq!(s["actor"][0]["reference"], "PractitionerRole/E7");
    assert_eq!(
        ok(
            &wf,
            "/fhir/r4/Schedule?actor=PractitionerRole/E7&active=true",
            &a
        )
        .await["total"],
        1
    );
    // Tomorrow, local time: 09:00–11:00 is four free 30-minute slots.
    let cst = FixedOffset::east_opt(8 * 3600).unwrap();
    let tomorrow = wf.clock.now().with_timezone(&cst).date_naive() + Duration::days(1);
    let day = cst
        .from_local_datetime(&tomorrow.and_hms_opt(0, 0, 0).unwrap())
        .unwrap();
    let q = |d: chrono::DateTime<FixedOffset>| {
        d.format("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
            .replace('+', "%2B")
    };
    let slots = ok(
        &wf,
        &format!(
            "/fhir/r4/Slot?schedule=Schedule/E7&start=ge{}&start=lt{}&status=free",
            q(day),
            q(day + Duration::days(1))
        ),
        &a,
    )
    .await;
    assert_eq!(slots["total"], 4, "{slots}");
    let first = slots["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
        .min()
        .unwrap();
    let one = ok(&wf, &format!("/fhir/r4/Slot/{first}"), &a).await;
    assert_eq!(one["status"], "free");
    assert_eq!(
        ok(
            &wf,
            &format!(
                "/fhir/r4/Slot?schedule=E7&start=ge{}&start=lt{}&status=busy",
                q(day),
                q(day + Duration::days(1))
            ),
            &a
        )
        .await["total"],
        0
    );
    // More than 31 days in one search is refused, naming `start`.
    let g = fhir(
        &wf,
        "GET",
        &format!(
            "/fhir/r4/Slot?schedule=E7&start=ge{}&start=lt{}",
            q(day),
            q(day + Duration::days(60))
        ),
        Some(&a),
        None,
        None,
    )
    .await;
    assert_eq!(
        (g.status, g.body["issue"][0]["expression"][0].as_str()),
        (400, Some("start")),
        "{}",
        g.body
    );
}
