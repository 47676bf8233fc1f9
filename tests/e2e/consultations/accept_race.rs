//! 50 experts accept one fan-out at once: exactly one 200, 49 × 412 "the case is taken"
//! (FHIR-11), one `accepted` event.

use huizhen_core::security::Role;
use serde_json::{Value, json};

use super::{EXP, REQ, doctor, expert, request, start, token};
use crate::support::{Backend, both_backends};

both_backends!(fifty_concurrent_accepts_have_one_winner);

async fn fifty_concurrent_accepts_have_one_winner(b: Backend) {
    let Some(wf) = start(b).await else { return };
    // No registry: the assignment finds nobody and escalates; the coordinator fans out.
    let (id, v) = wf.approved(request(2002)).await;
    assert_eq!(v["state"], "pending-match", "{v}");
    assert_eq!(wf.events(&id).await.last().unwrap(), "escalated");
    let pool: Vec<Value> = (0..50)
        .map(|i| json!({"expert": format!("X{i}"), "facility": EXP}))
        .collect();
    let coordinator = token(Role::Integrator, "dispatch", REQ);
    let v = wf
        .ok(&id, "fan-out", &coordinator, json!({ "pool": pool }))
        .await;
    assert_eq!(v["state"], "offered");
    let version = v["version"].as_u64().unwrap();
    let accepts = (0..50).map(|i| {
        let wf = &wf;
        let id = id.clone();
        async move {
            wf.call(
                "POST",
                &format!("/api/consultations/{id}/accept"),
                &expert(&format!("X{i}")),
                None,
                Some(version),
            )
            .await
        }
    });
    let results = futures::future::join_all(accepts).await;
    let winners: Vec<&Value> = results
        .iter()
        .filter(|r| r.0 == 200)
        .map(|r| &r.1)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "{:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    let winner = winners[0]["accepted_by"].as_str().unwrap().to_owned();
    let losers: Vec<&Value> = results
        .iter()
        .filter(|r| r.0 == 412)
        .map(|r| &r.1)
        .collect();
    assert_eq!(losers.len(), 49);
    for l in losers {
        assert_eq!(l["code"], "taken", "{l}");
        assert_eq!(l["taken_by"], winner.as_str());
        assert!(
            l["error"].as_str().unwrap().contains("the case is taken"),
            "{l}"
        );
    }
    let history = wf.engine.store.consultation_history(&id).await.unwrap();
    assert_eq!(
        history
            .iter()
            .filter(|e| e.kind.name() == "accepted")
            .count(),
        1
    );
    let (_, v) = wf.get(&format!("/api/consultations/{id}"), &doctor()).await;
    assert_eq!(
        (v["state"].as_str(), v["accepted_by"].as_str()),
        (Some("scheduled"), Some(winner.as_str()))
    );
    wf.stop().await;
}
