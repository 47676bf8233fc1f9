//! Device bindings over the HTTP API (`/api/devices/…`), on SQLite and PostgreSQL: bind,
//! overlap refused, list within the facility scope, unbind; every change audited in the
//! binding's transaction; a record the identity index does not hold and another facility's
//! device are refused. No broker needed.

use std::time::Duration;

use huizhen_core::Engine;
use huizhen_core::security::Role;
use huizhen_domain::identity::{Demographics, PersonName};
use huizhen_domain::patient::Sex;
use serde_json::json;

use crate::security::{security_config, token};
use crate::support::{Backend, JsonApi, both_backends, fresh_db, loaded, serve};

both_backends!(device_bindings_over_the_api);

async fn device_bindings_over_the_api(b: Backend) {
    let Some(db) = fresh_db(b).await else {
        return;
    };
    let engine = Engine::start(loaded(&db, &[])).await.unwrap();
    let store = engine.store.clone();
    let d = Demographics {
        facility: "clinic-7".into(),
        local_id: "MR-3001".into(),
        names: vec![PersonName::text("李娜")],
        birth_date: Some("1960-05-01".into()),
        sex: Some(Sex::Female),
        ..Demographics::default()
    };
    huizhen_core::patients::link(
        &store,
        &huizhen_core::patients::default_matcher(),
        &d,
        "test",
        |_| unreachable!("no auto-link"),
    )
    .await
    .unwrap();
    let api = JsonApi::new(serve(&engine, &security_config()).await);
    let doctor = token(Role::LocalDoctor, "clinic-7");
    let other = token(Role::LocalDoctor, "clinic-9");
    let auditor = token(Role::Auditor, "*");

    let bind = json!({"device": "BP-3001", "facility": "clinic-7", "local_id": "MR-3001",
        "valid_from": "2026-01-01T00:00:00+08:00"});
    let (s, v) = api
        .post("/api/devices/bindings", &doctor, bind.clone())
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(v["binding"]["valid_from"], "2025-12-31T16:00:00Z");
    // The same device again from a later time overlaps the open binding: 409.
    let mut again = bind.clone();
    again["valid_from"] = json!("2026-02-01T00:00:00+08:00");
    let (s, v) = api.post("/api/devices/bindings", &doctor, again).await;
    assert_eq!(s, 409, "{v}");
    // A record the identity index does not hold: 422, nothing stored.
    let mut unknown = bind.clone();
    unknown["device"] = json!("BP-3002");
    unknown["local_id"] = json!("MR-NOBODY");
    let (s, v) = api.post("/api/devices/bindings", &doctor, unknown).await;
    assert_eq!(s, 422, "{v}");
    // Another facility's staff may neither bind into clinic-7 nor see its bindings.
    let mut foreign = bind.clone();
    foreign["device"] = json!("BP-3003");
    let (s, v) = api.post("/api/devices/bindings", &other, foreign).await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = api.get("/api/devices/bindings", &other).await;
    assert_eq!(
        (s, v["bindings"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{v}"
    );
    let (s, v) = api
        .get("/api/devices/bindings?facility=clinic-7", &other)
        .await;
    assert_eq!(s, 403, "{v}");
    // A bad time names the field.
    let mut bad = bind.clone();
    bad["valid_from"] = json!("yesterday");
    let (s, v) = api.post("/api/devices/bindings", &doctor, bad).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("valid_from"), "{v}");

    let (s, v) = api
        .get("/api/devices/bindings?device=BP-3001", &doctor)
        .await;
    assert_eq!(s, 200, "{v}");
    let list = v["bindings"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{v}");
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["local_id"], "MR-3001");
    assert_eq!(list[0]["created_by"], "local-doctor@clinic-7");
    assert!(list[0]["valid_to"].is_null(), "{v}");

    // Unbind: ends the open binding; a second unbind finds none open.
    let (s, v) = api
        .post(
            "/api/devices/BP-3001/unbind",
            &doctor,
            json!({"facility": "clinic-7", "at": "2026-03-01T00:00:00+08:00"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = api
        .post(
            "/api/devices/BP-3001/unbind",
            &doctor,
            json!({"facility": "clinic-7", "at": "2026-04-01T00:00:00+08:00"}),
        )
        .await;
    assert_eq!(s, 404, "{v}");
    let rows = store.device_bindings("clinic-7", "BP-3001").await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].binding.valid_to.map(|t| t.to_rfc3339()),
        Some("2026-02-28T16:00:00+00:00".into())
    );
    // A new binding after the hand-back is accepted.
    let mut next = bind.clone();
    next["valid_from"] = json!("2026-03-01T00:00:00+08:00");
    let (s, v) = api.post("/api/devices/bindings", &doctor, next).await;
    assert_eq!(s, 201, "{v}");

    // Audited: the two binds, the unbind, the denied foreign bind.
    let (s, v) = api.get("/api/audit?limit=500", &auditor).await;
    assert_eq!(s, 200, "{v}");
    let events = v["events"].as_array().unwrap();
    let count = |action: &str, outcome: &str| {
        events
            .iter()
            .filter(|e| e["action"] == action && e["outcome"] == outcome)
            .count()
    };
    assert_eq!(count("device.bind", "success"), 2, "{v}");
    assert_eq!(count("device.unbind", "success"), 1, "{v}");
    assert_eq!(count("device.bind", "denied"), 1, "{v}");
    assert!(count("device.read", "success") >= 2, "{v}");
    let unbind = events
        .iter()
        .find(|e| e["action"] == "device.unbind")
        .unwrap();
    assert_eq!(unbind["resource_id"], "BP-3001");
    assert_eq!(unbind["subject_facility"], "clinic-7");
    assert_eq!(unbind["actor"], "local-doctor@clinic-7");
    engine.shutdown(Duration::from_secs(5)).await;
}
