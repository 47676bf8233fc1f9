//! Every re-offer is a fresh match (issue 15 item 3, MATCH-20) and the experts' open-case load
//! follows the consultation (MATCH-30): an unanswered offer goes to the best expert of a match
//! made at the deadline (an expert registered since is found; experts now at their load cap
//! and those offered before are left out, with their reasons in the stored decision), a
//! decline to the on-call pool first, and each offer, decline, acceptance and cancellation
//! moves the load in the same transaction.

use chrono::TimeDelta;
use huizhen_core::store::audit::AuditFilter;
use huizhen_domain::expert::{Load, Title};
use serde_json::{Value, json};

use super::{Wf, cardiologist, doctor, expert, offerees, request, seed_registry, start};
use crate::support::{Backend, both_backends};

both_backends!(each_re_offer_matches_again_and_the_load_follows);

/// An expert's open consultations as the store has them (what the next match reads).
async fn load(wf: &Wf, id: &str) -> u32 {
    wf.engine
        .store
        .expert(id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("expert {id}"))
        .load
        .open_consultations
}

/// Advances the fake clock and runs the sweep once.
async fn tick(wf: &Wf, minutes: i64) {
    wf.clock.advance(TimeDelta::minutes(minutes));
    wf.engine.workflow().sweep().await.unwrap();
}

fn candidates(v: &Value) -> Vec<String> {
    v["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["expert"].as_str().unwrap().to_owned())
        .collect()
}

/// The exclusion reason codes of `expert` in stored decision `id`.
async fn excluded(wf: &Wf, decision: &str, expert: &str) -> Vec<String> {
    let d = wf
        .engine
        .store
        .match_decision(decision)
        .await
        .unwrap()
        .unwrap();
    d.decision
        .exclusions
        .iter()
        .filter(|x| x.expert_id == expert)
        .flat_map(|x| x.reasons.iter())
        .map(|r| {
            serde_json::to_value(r.code)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

async fn each_re_offer_matches_again_and_the_load_follows(b: Backend) {
    let Some(wf) = start(b).await else { return };
    // E1…E3 chiefs off call; E4 an attending on call (ranked last, first in a fan-out).
    seed_registry(&wf, 0).await;
    let mut experts: Vec<_> = ["E1", "E2", "E3"]
        .map(|id| {
            let mut e = cardiologist(id, Title::Chief);
            e.schedule.on_call = false;
            e
        })
        .to_vec();
    experts.push(cardiologist("E4", Title::Attending));
    wf.engine
        .store
        .upsert_experts(&experts, &[], None)
        .await
        .unwrap();
    let mut req = request(5005);
    req["urgency"] = json!("routine");
    let (id, v) = wf.approved(req).await;
    let first = candidates(&v);
    assert_eq!(first.len(), 4, "{v}");
    assert_eq!(first[3], "E4", "{v}");
    let c0 = first[0].clone();
    let first_decision = v["match_decision"].as_str().unwrap().to_owned();
    assert_eq!(offerees(&v), std::slice::from_ref(&c0));
    // The offer took one open consultation, and only the offer did.
    assert_eq!(load(&wf, &c0).await, 1);
    for e in &first[1..] {
        assert_eq!(load(&wf, e).await, 0, "{e}");
    }

    // Meanwhile the next two are at their load cap elsewhere, and two experts join.
    for e in &first[1..3] {
        let busy = Load {
            open_consultations: 5,
            sessions_today: 0,
        };
        assert!(wf.engine.store.set_expert_load(e, busy).await.unwrap());
    }
    let mut e9 = cardiologist("E9", Title::Chief);
    e9.schedule.on_call = false;
    let mut e10 = cardiologist("E10", Title::AssociateChief);
    e10.schedule.on_call = false;
    wf.engine
        .store
        .upsert_experts(&[e9, e10], &[], None)
        .await
        .unwrap();

    // 24 hours, no answer: the next candidate comes from a match made now.
    tick(&wf, 24 * 60).await;
    let v = wf
        .get(&format!("/api/consultations/{id}"), &doctor())
        .await
        .1;
    assert_eq!(offerees(&v), ["E9"], "{v}");
    assert_eq!(v["attempts"][0]["outcome"]["outcome"], "expired");
    assert_eq!(candidates(&v), ["E9", "E10", "E4"], "{v}");
    let second = v["match_decision"].as_str().unwrap().to_owned();
    assert_ne!(second, first_decision);
    assert_eq!(excluded(&wf, &second, &c0).await, ["excluded-doctor"]);
    for e in &first[1..3] {
        assert_eq!(excluded(&wf, &second, e).await, ["at-load-cap"], "{e}");
    }
    let reason = v["timeline"].as_array().unwrap().last().unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains("offered to the next candidate E9") && reason.contains(&second),
        "{reason}"
    );
    // The expired offer gave its load back in the transaction that made the new one.
    assert_eq!((load(&wf, &c0).await, load(&wf, "E9").await), (0, 1));

    // E9 declines: matched again at once; two failed offers, so a fan-out, on-call first.
    wf.ok(&id, "reject", &expert("E9"), json!({"reason": "手术中"}))
        .await;
    tick(&wf, 0).await;
    let v = wf
        .get(&format!("/api/consultations/{id}"), &doctor())
        .await
        .1;
    assert_eq!(v["attempts"][2]["fan_out"], true, "{v}");
    assert_eq!(offerees(&v), ["E4", "E10"], "{v}");
    assert_ne!(v["match_decision"].as_str(), Some(second.as_str()));
    assert_eq!(
        (
            load(&wf, "E9").await,
            load(&wf, "E4").await,
            load(&wf, "E10").await
        ),
        (0, 1, 1)
    );

    // E4 accepts: the rest of the pool is released; a cancellation releases E4.
    let version = v["version"].as_u64().unwrap();
    let (s, v, _) = wf
        .call(
            "POST",
            &format!("/api/consultations/{id}/accept"),
            &expert("E4"),
            None,
            Some(version),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!((load(&wf, "E4").await, load(&wf, "E10").await), (1, 0));
    wf.ok(&id, "cancel", &doctor(), json!({"reason": "患者转院"}))
        .await;
    for e in [&c0, "E4", "E9", "E10"] {
        assert_eq!(load(&wf, e).await, 0, "{e}");
    }

    // Three matches, each stored and audited as the engine's, for this consultation.
    let matches = wf
        .engine
        .store
        .audit_events(&AuditFilter {
            action: Some("expert.match".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let ours: Vec<_> = matches
        .iter()
        .filter(|r| r.event.source == format!("consultation {id}"))
        .collect();
    assert_eq!(ours.len(), 3, "{matches:?}");
    assert!(ours.iter().all(|r| r.event.actor == "workflow"));
    assert!(
        ours[1].event.detail.contains(&format!("without {c0}")),
        "{}",
        ours[1].event.detail
    );
    assert_eq!(
        wf.engine
            .store
            .match_decisions_of_case(&id)
            .await
            .unwrap()
            .len(),
        3
    );
    wf.stop().await;
}
