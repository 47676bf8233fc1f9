//! Key rotation covers the workflow (issue 15 with STANDARDS CN-31): `huizhen keys rotate`
//! re-seals consultation snapshots and events, prescriptions and their events, bookings and
//! the workflow outbox with the new data key, so the old key can be retired: afterwards a key
//! ring without the old key reads every one of them. The append-only event logs let only that
//! re-sealing through.

use chrono::{TimeDelta, TimeZone, Utc};
use huizhen_core::care::Care;
use huizhen_core::clock::Clock;
use huizhen_core::crypto::{EncryptionConfig, Keyring};
use huizhen_core::store::audit::AuditEvent;
use huizhen_core::store::care::{NewOutboxEvent, PrescriptionChange};
use huizhen_domain::appointment::{BookingRequest, Urgency};
use huizhen_domain::expert::Title;
use huizhen_domain::prescription::{
    Actor as RxActor, Prescription, PrescriptionCommand, PrescriptionPolicy, Role as RxRole,
};
use serde_json::json;

use super::{REQ, SECRET, cardiologist, expert, offerees, request, seed_registry, start};
use crate::support::{Backend, both_backends, sealed_keys};

both_backends!(key_rotation_re_seals_the_workflow_rows);

/// Every (table, sealed column) of the workflow.
const SEALED: [(&str, &str); 6] = [
    ("consultations", "snapshot"),
    ("consultation_events", "event"),
    ("prescriptions", "body"),
    ("prescription_events", "body"),
    ("appointments", "body"),
    ("workflow_outbox", "body"),
];

/// The data key each sealed value of the workflow is sealed with, per table.
async fn keys_in(url: &str) -> Vec<(String, Vec<Option<String>>)> {
    sealed_keys(url, &SEALED).await
}

async fn key_rotation_re_seals_the_workflow_rows(b: Backend) {
    let Some(wf) = start(b).await else { return };
    // A consultation accepted by E1, a booking, a prescription with an outbox row.
    seed_registry(&wf, 0).await;
    let mut e1 = cardiologist("E1", Title::Chief);
    e1.schedule.windows = vec![
        serde_json::from_value(json!({"days": "daily", "from": "00:00", "to": "00:00"})).unwrap(),
    ];
    let store = wf.engine.store.clone();
    store.upsert_experts(&[e1], &[], None).await.unwrap();
    let (id, v) = wf.approved(request(2201)).await;
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
    assert_eq!(s, 200, "{v}");
    let care = Care::of(&wf.engine.extensions);
    let now = wf.clock.now();
    let begin = Utc
        .timestamp_opt((now + TimeDelta::days(1)).timestamp() / 60 * 60, 0)
        .unwrap();
    let audit = AuditEvent {
        action: "test".into(),
        actor: "test".into(),
        ..AuditEvent::default()
    };
    let booking = BookingRequest {
        booking_id: "rk1".into(),
        consultation_id: id.clone(),
        expert_id: "E1".into(),
        patient_id: "2201".into(),
        start: begin,
        end: begin + TimeDelta::minutes(30),
        urgency: Urgency::Urgent,
    };
    store
        .book_appointment(&booking, REQ, &care.appointments, now, &audit)
        .await
        .unwrap()
        .unwrap();
    let draft = PrescriptionCommand::Draft {
        prescription_id: "rx-rk".into(),
        consultation_id: id.clone(),
        patient_id: "2201".into(),
        lines: serde_json::from_value(json!([{
            "drug_code": "A1", "drug_name": "阿托伐他汀钙片", "dose": "20", "dose_unit": "mg",
            "route": "oral", "frequency": "qd", "days": 14, "quantity": 2, "quantity_unit": "盒"
        }]))
        .unwrap(),
        by: RxActor::new("E1", RxRole::Expert),
    };
    let events = PrescriptionPolicy::default()
        .decide(&Prescription::default(), &draft, now)
        .unwrap();
    let rx = Prescription::replay(&events);
    // An outbox row as an approval writes one (its content is patient data too).
    let outbound = NewOutboxEvent {
        topic: "prescription.approved".into(),
        resource_id: "rx-rk".into(),
        facility: "F-EXP".into(),
        pipeline: None,
        body: json!({"prescription": "rx-rk", "patient": "2201"}),
    };
    assert!(
        store
            .save_prescription(PrescriptionChange {
                prescription: &rx,
                facility: "F-EXP",
                expected_version: 0,
                events: &events,
                audit: &audit,
                outbox: Some(&outbound),
            })
            .await
            .unwrap()
    );
    let (db, _ca) = wf.stop().await;

    // Everything is sealed with the first key.
    let before = keys_in(&db.url).await;
    for (table, keys) in &before {
        assert!(!keys.is_empty(), "{table} has rows");
        assert!(
            keys.iter().all(|k| k.as_deref() == Some("k1")),
            "{table}: {keys:?}"
        );
    }
    // The event logs refuse any other change than a re-sealing.
    {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
        for sql in [
            "UPDATE consultation_events SET actor = 'someone'",
            "UPDATE consultation_events SET event = '{}'",
            "DELETE FROM consultation_events",
            "UPDATE prescription_events SET kind = 'approved'",
            "UPDATE prescription_events SET body = '{}'",
            "DELETE FROM prescription_events",
        ] {
            let refused = sqlx::query(sql).execute(&pool).await;
            assert!(refused.is_err(), "{sql} was allowed");
            assert!(
                refused.unwrap_err().to_string().contains("append-only"),
                "{sql}"
            );
        }
        pool.close().await;
    }

    // `huizhen keys rotate`: a new key, everything re-sealed with it (batches of 2: the
    // cursors of every table are walked).
    let dir = db.dir.path();
    let config = dir.join("rotate.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1\nstore: {{ url: \"{}\" }}\nsecurity:\n  jwt_secret: \"{SECRET}\"\n  encryption: {{ keys_file: \"{}\" }}\n  audit: {{ key_file: \"{}\", checkpoint_file: \"{}\" }}\npipelines: []\n",
            db.url,
            dir.join("keys").display(),
            dir.join("audit.key").display(),
            dir.join("audit.checkpoints").display(),
        ),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_huizhen"))
        .arg("-c")
        .arg(&config)
        .args(["keys", "rotate", "--batch", "2"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for table in [
        "consultation_events",
        "prescription_events",
        "appointments",
        "workflow_outbox",
    ] {
        assert!(
            stderr.contains(&format!("pass 1, {table}:")),
            "{table}: {stderr}"
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let active = stdout
        .split("active data key: ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .unwrap_or_else(|| panic!("no active key in {stdout}"))
        .to_owned();
    assert_ne!(active, "k1");
    let after = keys_in(&db.url).await;
    for ((table, was), (_, now)) in before.iter().zip(&after) {
        assert_eq!(was.len(), now.len(), "{table}");
        assert!(
            now.iter().all(|k| k.as_deref() == Some(active.as_str())),
            "{table}: {now:?}"
        );
    }

    // The old key can go: a ring with only the index key and the new one reads every record.
    let keys = std::fs::read_to_string(dir.join("keys")).unwrap();
    let only_new: String = keys
        .lines()
        .filter(|l| l.starts_with("index ") || l.starts_with(&format!("{active} ")))
        .map(|l| format!("{l}\n"))
        .collect();
    let retired = dir.join("keys-new-only");
    std::fs::write(&retired, only_new).unwrap();
    let ring = Keyring::from_config(&EncryptionConfig {
        keys_file: retired,
        ..Default::default()
    })
    .unwrap()
    .unwrap();
    let fresh = crate::support::store(&db).await.with_keyring(Some(ring));
    let c = fresh.consultation(&id).await.unwrap().unwrap();
    assert_eq!(c.consultation.state().code(), "scheduled");
    let history = fresh.consultation_history(&id).await.unwrap();
    assert_eq!(history.len() as u64, c.consultation.version());
    let stored = fresh.prescription("rx-rk").await.unwrap().unwrap();
    assert_eq!(stored.prescription.lines[0].drug_name, "阿托伐他汀钙片");
    assert_eq!(fresh.prescription_history("rx-rk").await.unwrap().len(), 1);
    let booking = fresh.appointment("rk1").await.unwrap().unwrap();
    assert_eq!(booking.booking.patient_id, "2201");
    let outbox = fresh.outbox_of("rx-rk").await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert!(
        String::from_utf8_lossy(&outbox[0].body).contains("2201"),
        "opened with the new key"
    );
}
