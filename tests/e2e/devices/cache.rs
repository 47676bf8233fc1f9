//! The store's in-memory copy of device bindings (`device_lookup` / `device_person`, migration
//! 0026), on SQLite and PostgreSQL: a binding changed through another `Store` on the same
//! database (the CLI, another node) applies to the next lookup of this one. No broker needed.

use chrono::{DateTime, Utc};
use huizhen_core::store::Store;
use huizhen_domain::identity::{Demographics, PersonName};
use huizhen_domain::vitals::binding::{DeviceBinding, binding_at};

use crate::support::{Backend, both_backends, fresh_db, store};

both_backends!(a_binding_changed_elsewhere_applies_to_the_next_reading);

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

async fn person(s: &Store, local_id: &str) -> i64 {
    let first = local_id.ends_with('1');
    let d = Demographics {
        facility: "clinic-7".into(),
        local_id: local_id.into(),
        names: vec![PersonName::text(if first { "王芳" } else { "赵建国" })],
        birth_date: Some(if first { "1950-01-01" } else { "1977-07-07" }.into()),
        ..Demographics::default()
    };
    huizhen_core::patients::link(
        s,
        &huizhen_core::patients::default_matcher(),
        &d,
        "test",
        |_| unreachable!("no auto-link"),
    )
    .await
    .unwrap();
    s.identity("clinic-7", local_id)
        .await
        .unwrap()
        .unwrap()
        .person_id
}

fn binding(local_id: &str, from: &str) -> DeviceBinding {
    DeviceBinding {
        device: "BP-7001".into(),
        facility: "clinic-7".into(),
        local_id: local_id.into(),
        valid_from: at(from),
        valid_to: None,
    }
}

async fn a_binding_changed_elsewhere_applies_to_the_next_reading(b: Backend) {
    let Some(db) = fresh_db(b).await else {
        return;
    };
    // `engine` reads as the step does; `cli` changes the bindings as another process would.
    let engine = store(&db).await;
    let cli = store(&db).await;
    let p1 = person(&cli, "MR-7001").await;
    let p2 = person(&cli, "MR-7002").await;
    assert_ne!(p1, p2);

    let none = engine.device_lookup("clinic-7", "BP-7001").await.unwrap();
    assert!(none.bindings.is_empty());
    cli.device_bind(&binding("MR-7001", "2026-01-01T00:00:00Z"), "test", None)
        .await
        .unwrap()
        .unwrap();
    // The empty list read before is not served again.
    let l = engine.device_lookup("clinic-7", "BP-7001").await.unwrap();
    let reading = at("2026-02-01T08:00:00Z");
    let b1 = binding_at(&l.bindings, reading).unwrap();
    assert_eq!(b1.local_id, "MR-7001");
    assert_eq!(
        engine
            .device_person(&l, "clinic-7", "MR-7001")
            .await
            .unwrap(),
        Some(p1)
    );
    // Served from memory while nothing changed: same stamp, same list.
    let again = engine.device_lookup("clinic-7", "BP-7001").await.unwrap();
    assert_eq!(again.stamp, l.stamp);
    assert!(std::sync::Arc::ptr_eq(&again.bindings, &l.bindings));

    // The cuff is handed back and lent to another patient from 1 February.
    assert!(
        cli.device_unbind("clinic-7", "BP-7001", at("2026-02-01T00:00:00Z"), None)
            .await
            .unwrap()
    );
    cli.device_bind(&binding("MR-7002", "2026-02-01T00:00:00Z"), "test", None)
        .await
        .unwrap()
        .unwrap();
    let l = engine.device_lookup("clinic-7", "BP-7001").await.unwrap();
    assert_ne!(l.stamp, again.stamp);
    assert_eq!(l.bindings.len(), 2);
    let b2 = binding_at(&l.bindings, reading).unwrap();
    assert_eq!(
        b2.local_id, "MR-7002",
        "the reading goes to the new patient"
    );
    assert_eq!(
        engine
            .device_person(&l, "clinic-7", "MR-7002")
            .await
            .unwrap(),
        Some(p2)
    );
    // A January reading still goes to the first patient.
    let jan = binding_at(&l.bindings, at("2026-01-15T08:00:00Z")).unwrap();
    assert_eq!(jan.local_id, "MR-7001");
    // A record the index does not hold: none (and not remembered as such).
    assert_eq!(
        engine
            .device_person(&l, "clinic-7", "MR-7999")
            .await
            .unwrap(),
        None
    );
}
