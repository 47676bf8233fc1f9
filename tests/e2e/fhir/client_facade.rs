//! The FHIR client against the engine's own facade (issue 16's Tests), on SQLite and
//! PostgreSQL: a second engine's `fhir_poll` source reads the Observations and
//! DiagnosticReports a first engine stored through `fhir_store`, from `/fhir/r4` with a bearer
//! token, paging through `next` links (`count: 2`), and on a later change only what
//! `_lastUpdated` says is new; the `fhir` sink's transaction Bundle to the read-mostly facade
//! is a permanent 405 carrying the facade's OperationOutcome text.

use std::time::Duration;

use chrono::TimeDelta;
use huizhen_core::Engine;
use huizhen_core::clock::Clock;
use huizhen_core::message::{Message, NewMessage, State};
use huizhen_core::store::ListFilter;
use serde_json::{Value, json};

use super::{fhir, integrator, lab_bundle, ok, send, start};
use crate::support::{Backend, both_backends, fresh_db, loaded, wait_for};

both_backends!(fhir_poll_pages_through_the_engines_own_facade);

async fn messages(engine: &Engine, pipeline: &str) -> Vec<Message> {
    engine
        .store
        .list(&ListFilter {
            pipeline: Some(pipeline.into()),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap()
        .messages
}

/// The dedup keys the poller gives the resources of a facade search (`fhir:Type/id/_history/v`).
fn keys_of(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| {
            let r = &e["resource"];
            format!(
                "fhir:{}/{}/_history/{}",
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap(),
                r["meta"]["versionId"].as_str().unwrap()
            )
        })
        .collect()
}

async fn done_keys(engine: &Engine, n: usize) -> Vec<String> {
    let mut keys = wait_for(
        &format!("{n} resources journaled from the facade"),
        Duration::from_secs(30),
        || async {
            let m = messages(engine, "from-facade").await;
            (m.len() >= n && m.iter().all(|m| m.state == State::Done)).then_some(m)
        },
    )
    .await
    .iter()
    .map(|m| m.dedup_key.clone().unwrap())
    .collect::<Vec<_>>();
    keys.sort();
    keys
}

async fn fhir_poll_pages_through_the_engines_own_facade(b: Backend) {
    let Some(wf) = start(b).await else { return };
    let first = lab_bundle(
        "MRN-7001",
        "ACC-71",
        "2024-03-05T08:30:00+08:00",
        &[
            ("718-7", "Hemoglobin", 135.0),
            ("6690-2", "WBC", 6.1),
            ("777-3", "Platelets", 210.0),
        ],
    );
    let second = lab_bundle(
        "MRN-7002",
        "ACC-72",
        "2024-03-06T09:00:00+08:00",
        &[("718-7", "Hemoglobin", 118.0), ("6690-2", "WBC", 9.4)],
    );
    for bundle in [&first, &second] {
        assert_eq!(send(&wf, bundle).await.1, State::Done);
    }
    let bearer = integrator();
    let mut expected = Vec::new();
    for t in ["Observation", "DiagnosticReport"] {
        expected.extend(keys_of(
            &ok(&wf, &format!("/fhir/r4/{t}?_count=100"), &bearer).await,
        ));
    }
    expected.sort();
    assert_eq!(expected.len(), 7, "{expected:?}");

    // The poller: another engine, its own database, the facade as its FHIR server.
    let Some(db) = fresh_db(b).await else { return };
    let base = format!("{}/fhir/r4", wf.base);
    let yaml = [
        format!(
            "version: 1\nname: from-facade\nfacility: hub\nsource:\n  fhir_poll: {{ base: \"{base}\", token: \"{bearer}\", types: [Observation, DiagnosticReport], every: 100ms, count: 2 }}\nsinks:\n  - journal: {{}}\n"
        ),
        format!(
            "version: 1\nname: to-facade\nfacility: hub\nsource:\n  http: {{ path: /in/to-facade, kind: json }}\nsinks:\n  - fhir: {{ base: \"{base}\", token: \"{bearer}\", retries: 0 }}\n"
        ),
    ];
    let engine = Engine::start(loaded(&db, &[&yaml[0], &yaml[1]]))
        .await
        .unwrap();
    // Five Observations at two a page: all of them only through the `next` links (the first
    // page alone would be the same two every poll).
    assert_eq!(done_keys(&engine, 7).await, expected);
    let all = messages(&engine, "from-facade").await;
    assert!(all.iter().all(|m| m.kind == "fhir+json"));
    for m in &all {
        let m = engine.store.get(&m.id).await.unwrap().unwrap();
        let body: Value = serde_json::from_slice(&m.body).unwrap();
        huizhen_fhir::facade::model::round_trip(&body).unwrap();
    }
    let t0 = wf.clock.now();
    let at = |t: chrono::DateTime<chrono::Utc>| {
        huizhen_fhir::facade::index::instant(t.timestamp_millis())
    };
    assert_eq!(
        engine
            .store
            .source_cursor("fhir_poll:from-facade:Observation")
            .await
            .unwrap()
            .as_deref(),
        Some(at(t0).as_str())
    );

    // Ten minutes later one result changes: a second version, the only thing newer than the
    // cursor; the poller journals it and nothing else.
    wf.clock.advance(TimeDelta::minutes(10));
    let mut changed = first.clone();
    changed["entry"][2]["resource"]["valueQuantity"]["value"] = json!(7.2);
    changed["entry"][2]["request"] = json!({
        "method": "PUT",
        "url": "Observation?identifier=urn:huizhen:test:obx|ACC-71-6690-2"
    });
    assert_eq!(send(&wf, &changed).await.1, State::Done);
    let since = format!("gt{}", at(t0 + TimeDelta::minutes(5)));
    let newer = ok(
        &wf,
        &format!("/fhir/r4/Observation?_lastUpdated={since}"),
        &bearer,
    )
    .await;
    let new_keys = keys_of(&newer);
    assert_eq!(new_keys.len(), 1, "{newer}");
    assert!(new_keys[0].ends_with("/_history/2"), "{new_keys:?}");
    let mut want = expected.clone();
    want.extend(new_keys);
    want.sort();
    assert_eq!(done_keys(&engine, 8).await, want);
    let later = at(t0 + TimeDelta::minutes(10));
    wait_for("the cursor moved", Duration::from_secs(10), || async {
        let c = engine
            .store
            .source_cursor("fhir_poll:from-facade:Observation")
            .await
            .unwrap();
        (c.as_deref() == Some(later.as_str())).then_some(())
    })
    .await;
    // A poll sorts by `_lastUpdated` ascending; the facade answers newest first and says so in
    // a warning entry, which the poller skips.
    let sorted = ok(
        &wf,
        "/fhir/r4/DiagnosticReport?_sort=_lastUpdated&_count=1",
        &bearer,
    )
    .await;
    let outcome = sorted["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .unwrap();
    assert_eq!(outcome["resource"]["issue"][0]["severity"], "warning");
    assert!(
        sorted["link"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["relation"] == "next")
    );

    // The `fhir` sink's transaction Bundle: the facade takes none; the sink fails permanently
    // with the facade's OperationOutcome text.
    let p = engine.pipeline("to-facade").unwrap().clone();
    let accepted = p
        .submit(NewMessage::new(
            "to-facade",
            "hub",
            "json",
            second.to_string().into_bytes(),
        ))
        .await
        .unwrap();
    let dead = wait_for("the Bundle refused", Duration::from_secs(20), || async {
        let m = messages(&engine, "to-facade").await;
        m.into_iter()
            .find(|m| m.id == accepted.id && m.state == State::Dead)
    })
    .await;
    let error = dead.last_error.unwrap_or_default();
    assert!(error.contains("405"), "{error}");
    assert!(error.contains("no transaction or batch Bundles"), "{error}");
    engine.shutdown(Duration::from_secs(5)).await;

    // Unknown paths under the base are FHIR too.
    let g = fhir(&wf, "GET", "/fhir/r4/Medication", Some(&bearer), None, None).await;
    assert_eq!(g.status, 404);
    assert!(
        g.content_type.starts_with("application/fhir+json"),
        "{}",
        g.content_type
    );
    assert_eq!(g.body["resourceType"], "OperationOutcome", "{}", g.body);
    assert_eq!(g.body["issue"][0]["code"], "not-found");
}
