//! Statistics (issue 15 item 9, 数据分析) on seeded consultation facts: `GET /api/stats` as JSON
//! and CSV within the caller's facilities, and the scheduled CSV export run at a fixed time
//! (once per tick, audited).

use chrono::{DateTime, Duration, TimeZone, Utc};
use huizhen_core::care::Care;
use huizhen_core::care::jobs::{STATS_EXPORT_JOB, export_tick, run_stats_export};
use huizhen_core::config::workflow::{StatsExportConfig, WorkflowConfig};
use huizhen_core::security::Role;
use huizhen_domain::stats::{ConsultationFacts, StatsPeriod, compute_stats, to_csv};

use super::{Api, audited, token};
use crate::support::{Backend, both_backends, fresh_db, loaded};

both_backends!(stats_json_csv_and_scheduled_export);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
}

#[allow(clippy::too_many_arguments)]
fn fact(
    id: &str,
    facility: &str,
    department: &str,
    hours: i64,
    accept: Option<i64>,
    completed: bool,
    cancelled: bool,
    failed: bool,
    sla: bool,
) -> ConsultationFacts {
    let created_at = t0() + Duration::hours(hours);
    ConsultationFacts {
        consultation_id: id.into(),
        facility: facility.into(),
        department: department.into(),
        created_at,
        accepted_at: accept.map(|s| created_at + Duration::seconds(s)),
        completed_at: completed.then(|| created_at + Duration::hours(1)),
        cancelled,
        failed,
        sla_breached: sla,
    }
}

fn facts() -> Vec<ConsultationFacts> {
    vec![
        fact(
            "c1",
            "H-COUNTY-1",
            "03.02",
            0,
            Some(120),
            true,
            false,
            false,
            false,
        ),
        fact(
            "c2",
            "H-COUNTY-1",
            "03.02",
            1,
            Some(300),
            false,
            true,
            false,
            false,
        ),
        fact(
            "c3",
            "H-COUNTY-1",
            "04",
            2,
            Some(1200),
            true,
            false,
            false,
            true,
        ),
        fact(
            "c4",
            "H-COUNTY-2",
            "03.02",
            3,
            None,
            false,
            false,
            true,
            true,
        ),
        fact(
            "c5",
            "H-COUNTY-2",
            "03.02",
            4,
            Some(60),
            false,
            false,
            false,
            false,
        ),
        // The day before: outside the period.
        fact(
            "c0",
            "H-COUNTY-1",
            "03.02",
            -5,
            Some(30),
            true,
            false,
            false,
            false,
        ),
    ]
}

fn export_config(dir: &std::path::Path) -> WorkflowConfig {
    WorkflowConfig {
        stats_export: Some(StatsExportConfig {
            schedule: "0 0 0 * * *".into(),
            dir: dir.join("exports"),
            period: std::time::Duration::from_secs(24 * 3600),
        }),
        ..WorkflowConfig::default()
    }
}

async fn stats_json_csv_and_scheduled_export(backend: Backend) {
    let out = tempfile::tempdir().unwrap();
    let Some(api) = Api::start(backend, export_config(out.path()), &[]).await else {
        return;
    };
    let store = api.engine.store.clone();
    for f in facts() {
        store.record_consultation_facts(&f).await.unwrap();
    }
    // Replacing a consultation's facts (it completed later) keeps one row.
    let mut c5 = facts().remove(4);
    store.record_consultation_facts(&c5).await.unwrap();
    let period = StatsPeriod {
        from: t0(),
        to: t0() + Duration::days(1),
    };
    let stored = store
        .consultation_facts(period.from, period.to)
        .await
        .unwrap();
    assert_eq!(
        stored
            .iter()
            .map(|f| f.consultation_id.as_str())
            .collect::<Vec<_>>(),
        ["c1", "c2", "c3", "c4", "c5"]
    );
    assert_eq!(stored[3], facts()[3]);
    let expected = compute_stats(&facts(), period).unwrap();

    let admin = token("admin", Role::Admin, "*");
    let q = "/api/stats?from=2026-03-01&to=2026-03-02T00:00:00Z";
    let (st, v) = api.get(q, &admin).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["rows"], serde_json::to_value(&expected).unwrap());
    assert_eq!(v["target_accept_seconds"], 900);
    let all = &v["rows"][0];
    // Accept times 60, 120, 300, 1200 s: nearest-rank median 120, p90 1200.
    assert_eq!(
        (
            all["volume"].as_u64(),
            all["accepted"].as_u64(),
            all["median_accept_seconds"].as_u64(),
            all["p90_accept_seconds"].as_u64()
        ),
        (Some(5), Some(4), Some(120), Some(1200))
    );
    assert_eq!(
        (
            all["completion_rate"].as_f64(),
            all["sla_breaches"].as_u64(),
            all["open"].as_u64()
        ),
        (Some(0.5), Some(2), Some(1))
    );
    let (st, kind, text) = api.get_text(&format!("{q}&format=csv"), &admin).await;
    assert_eq!((st, kind.as_str()), (200, "text/csv; charset=utf-8"));
    assert_eq!(text, to_csv(&expected));
    assert!(text.starts_with("scope,facility,department,volume,accepted,median_accept_seconds"));
    assert!(
        text.contains("\r\nall,,,5,4,120,1200,2,1,1,1,0.5000,2\r\n"),
        "{text}"
    );

    // A facility's staff see their facility only; another's is refused; clinicians have none.
    let county1 = token("coord", Role::Integrator, "H-COUNTY-1");
    let (_, v) = api.get(q, &county1).await;
    assert_eq!(v["rows"][0]["volume"], 3);
    assert!(
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["facility"].is_null() || r["facility"] == "H-COUNTY-1"),
        "{v}"
    );
    assert_eq!(
        api.get(&format!("{q}&facility=H-COUNTY-2"), &county1)
            .await
            .0,
        403
    );
    let (_, v) = api.get(&format!("{q}&facility=H-COUNTY-2"), &admin).await;
    assert_eq!(v["rows"][0]["volume"], 2);
    assert_eq!(
        api.get(q, &token("dr", Role::LocalDoctor, "H-COUNTY-1"))
            .await
            .0,
        403
    );
    assert_eq!(api.get(q, &token("aud", Role::Auditor, "*")).await.0, 200);
    assert_eq!(
        api.get("/api/stats?from=2026-03-02&to=2026-03-01", &admin)
            .await
            .0,
        400
    );
    assert_eq!(api.get(&format!("{q}&format=xml"), &admin).await.0, 400);

    // The export at a fixed time: the same CSV in the configured folder, audited.
    let care = Care::of(&api.engine.extensions);
    let export = care.stats_export.clone().unwrap();
    let at = t0() + Duration::days(1);
    let written = run_stats_export(&store, &export, at).await.unwrap();
    let name = "consultation-stats-20260301T000000Z-20260302T000000Z.csv";
    assert_eq!(written.path, out.path().join("exports").join(name));
    assert_eq!((written.rows, written.volume), (expected.len(), 5));
    assert_eq!(
        std::fs::read_to_string(&written.path).unwrap(),
        to_csv(&expected)
    );
    let events = audited(&store, "stats.export").await;
    assert!(
        events
            .iter()
            .any(|(o, id, d)| o == "success" && id == name && d.contains("5 consultations")),
        "{events:?}"
    );
    // A scheduled tick runs once, however often (or on however many engines) it is fired.
    std::fs::remove_file(&written.path).unwrap();
    export_tick(&store, &export, at).await;
    assert!(written.path.exists());
    std::fs::remove_file(&written.path).unwrap();
    export_tick(&store, &export, at).await;
    assert!(!written.path.exists(), "the tick was claimed already");
    let outcome = store
        .job_tick_outcome(STATS_EXPORT_JOB, "2026-03-02T00:00:00Z")
        .await
        .unwrap();
    assert!(outcome.flatten().is_some_and(|o| o.starts_with("ok: ")));

    // A contradictory fact fails the report naming nothing of the store's internals.
    c5.consultation_id = "c-bad".into();
    c5.created_at = t0() + Duration::days(40);
    c5.accepted_at = None;
    c5.completed_at = Some(c5.created_at + Duration::hours(1));
    store.record_consultation_facts(&c5).await.unwrap();
    let (st, v) = api
        .get("/api/stats?from=2026-04-01&to=2026-04-30", &admin)
        .await;
    assert_eq!(st, 500, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("cannot be computed"),
        "{v}"
    );
    let failed = run_stats_export(&store, &export, t0() + Duration::days(41))
        .await
        .unwrap_err();
    assert!(failed.to_string().contains("c-bad"), "{failed}");
    api.stop().await;

    // An outbound pipeline that does not exist stops the engine from starting.
    if let Some(db) = fresh_db(backend).await {
        let mut config = loaded(&db, &[]);
        config.root.workflow.prescriptions.outbound_pipeline = Some("nope".into());
        let err = huizhen_core::Engine::start(config)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("outbound_pipeline") && err.contains("nope"),
            "{err}"
        );
    }
}
