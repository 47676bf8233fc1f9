//! The regulator's daily records (CN-14): the day's consultations pushed through a pipeline
//! to a stand-in supervision platform (an HTTP server of the test) once per day however often
//! the job ticks, audited; the same report pulled from the API by an auditor, scoped to the
//! caller's facilities, refused to a doctor; no patient name or identity number in it.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use huizhen_core::care::Care;
use huizhen_core::clock::{Clock, FakeClock};
use huizhen_core::config::workflow::RegulatorExportConfig;
use huizhen_core::security::Role;
use huizhen_core::store::audit::AuditFilter;
use huizhen_signing::testca::TestCa;
use serde_json::Value;

use super::{REQ, request, seed_registry, start_configured, t0, token};
use crate::sinks::Receiver;
use crate::support::{Backend, fresh_db, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stand_in_regulator_receives_the_day_s_records_once() {
    let Some(db) = fresh_db(Backend::Sqlite).await else {
        return;
    };
    let platform = Receiver::start().await;
    let pipeline = format!(
        "version: 1\nname: regulator-out\nfacility: {REQ}\nsource:\n  internal: {{}}\nsinks:\n  - http: {{ url: \"{}/supervision/daily/{{{{header.x-huizhen-date}}}}\" }}\n",
        platform.url
    );
    let ca = Arc::new(TestCa::generate("Huizhen E2E CA").unwrap());
    let clock = Arc::new(FakeClock::new(t0()));
    let wf = start_configured(db, ca, clock.clone(), &[&pipeline], |w| {
        w.regulator_export = Some(RegulatorExportConfig {
            pipeline: "regulator-out".into(),
            schedule: "0 30 16 * * *".into(),
        });
    })
    .await;
    seed_registry(&wf, 2).await;
    let (a, _) = wf.approved(request(11)).await;
    let b = wf.create(request(12)).await;

    // A tick the next day reports the day of the consultations, once however often it runs.
    let x = Care::of(&wf.engine.extensions)
        .regulator_export
        .clone()
        .expect("configured");
    let tick = clock.now() + TimeDelta::days(1);
    let day = huizhen_core::compliance::regulator::previous_day(tick, x.utc_offset_minutes);
    for _ in 0..3 {
        let id = huizhen_core::care::jobs::regulator_tick(
            &wf.engine.store,
            &x,
            &wf.engine.pipelines(),
            tick,
        )
        .await;
        assert!(id.is_some(), "submitted");
    }
    let seen = wait_for("the platform's request", Duration::from_secs(20), || {
        let platform = platform.clone();
        async move { (!platform.seen().is_empty()).then(|| platform.seen()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(platform.seen().len(), 1, "one push per day");
    let push = &seen[0];
    assert_eq!(push.target, format!("/supervision/daily/{day}"));
    let v: Value = serde_json::from_slice(&push.body).unwrap();
    assert_eq!(v["format"], "huizhen.regulator.daily/1");
    assert_eq!(v["date"], day.to_string());
    let ids: Vec<&str> = v["consultations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&a.as_str()) && ids.contains(&b.as_str()),
        "{v}"
    );
    let ca = v["consultations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == a.as_str())
        .unwrap();
    assert_eq!(ca["service_type"], "institution-to-institution");
    assert_eq!(ca["requesting_facility"], REQ);
    assert_eq!(ca["agreement"], "AG-1");
    assert_eq!(ca["patient"], 11);
    let events: Vec<&str> = ca["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(
        events.starts_with(&["created", "submitted", "approved"]),
        "{events:?}"
    );
    let text = String::from_utf8_lossy(&push.body);
    // Minimum usable: the case summary and the reason stay home.
    assert!(
        !text.contains("反复胸痛") && !text.contains("明确诊断并给出治疗方案"),
        "{text}"
    );
    let audits = wf
        .engine
        .store
        .audit_events(&AuditFilter {
            action: Some("regulator.export".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audits.len(), 3);
    assert!(audits.iter().all(|e| e.event.outcome == "success"));

    // Pulled by the platform's auditor; a doctor may not; another facility's auditor sees none.
    let path = format!("/api/compliance/regulator/daily?date={day}");
    let (s, pulled) = wf.get(&path, &token(Role::Auditor, "nhc-1", "*")).await;
    assert_eq!(s, 200, "{pulled}");
    assert_eq!(pulled["consultations"], v["consultations"]);
    let (s, _) = wf.get(&path, &super::doctor()).await;
    assert_eq!(s, 403);
    let (s, other) = wf
        .get(&path, &token(Role::Auditor, "aud-b", "F-OTHER"))
        .await;
    assert_eq!(s, 200, "{other}");
    assert_eq!(other["counts"]["consultations"], 0, "{other}");
    let (s, bad) = wf
        .get(
            "/api/compliance/regulator/daily?date=06/12/2026",
            &token(Role::Auditor, "nhc-1", "*"),
        )
        .await;
    assert_eq!(s, 400, "{bad}");

    // a is cancelled the same day (so no offer deadline of it falls on the next day); the next
    // day b is cancelled: the next day's report has b (its cancellation) and not a.
    wf.ok(
        &a,
        "cancel",
        &super::doctor(),
        serde_json::json!({"reason": "家属要求暂缓"}),
    )
    .await;
    clock.advance(TimeDelta::days(1));
    wf.ok(
        &b,
        "cancel",
        &super::doctor(),
        serde_json::json!({"reason": "患者转诊上级医院"}),
    )
    .await;
    let next = huizhen_core::compliance::regulator::previous_day(
        clock.now() + TimeDelta::days(1),
        x.utc_offset_minutes,
    );
    let (s, v) = wf
        .get(
            &format!("/api/compliance/regulator/daily?date={next}"),
            &token(Role::Auditor, "nhc-1", "*"),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let listed: Vec<&str> = v["consultations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [b.as_str()], "{v}");
    assert_eq!(v["consultations"][0]["cancelled"], true, "{v}");
    assert_eq!(v["consultations"][0]["state"], "cancelled", "{v}");
    wf.stop().await;
}
