//! The workflow's `consultation.completed` event opens the settlement (the `settle` step), on
//! both backends: the person from the HIS order's identifier, the saga run in the background to
//! the patient's confirmation, a redelivery opening nothing; an HL7 order's national number
//! (kept apart from the ids the result goes back with) makes it an insured settlement.

use std::sync::Arc;
use std::time::Duration;

use huizhen_core::clock::FakeClock;
use huizhen_core::store::Store;
use huizhen_domain::billing::{Phase, Settlement};
use huizhen_insurer::testing::StandIn;
use huizhen_signing::testca::TestCa;
use serde_json::json;

use super::harness::{completed_from, start_with};
use crate::consultations::{request, t0};
use crate::support::{Backend, both_backends, fresh_db, wait_for};

both_backends!(
    the_completed_event_opens_the_settlement,
    an_hl7_orders_national_number_settles_with_insurance,
);

/// The demo's outbound pipeline, reduced to billing: `consultation.completed` opens the
/// settlement.
const EVENTS: &str = "version: 1\nname: consultation-events\nfacility: F-REQ\nsource:\n  http: { path: /in/consultation-events, kind: json }\nsteps:\n  - settle: { voucher_identifier: NI }\nsinks:\n  - journal: {}\n";

/// The stand-in insurer and an engine running [`EVENTS`] against it.
async fn engine(db: crate::support::TestDb) -> (StandIn, crate::consultations::Wf) {
    let platform = StandIn::start().await.unwrap();
    let ca = Arc::new(TestCa::generate("Huizhen E2E CA").unwrap());
    let wf = start_with(
        db,
        ca,
        Arc::new(FakeClock::new(t0())),
        &platform.url,
        Some(EVENTS),
        None,
    )
    .await;
    (platform, wf)
}

/// The consultation's settlement once it waits for the patient's confirmation.
async fn pre_settled(store: &Store, id: &str) -> Settlement {
    wait_for(
        "the settlement opened and pre-settled",
        Duration::from_secs(20),
        || {
            let store = store.clone();
            let id = id.to_owned();
            async move {
                let s = store
                    .settlement_of_consultation(&id)
                    .await
                    .unwrap()?
                    .settlement;
                (s.phase() == Phase::AwaitingConfirmation).then_some(s)
            }
        },
    )
    .await
}

/// The id of the journaled `consultation.completed` event.
async fn completed_event(store: &Store) -> String {
    let msgs = store
        .list(&huizhen_core::store::ListFilter {
            pipeline: Some("consultation-events".into()),
            limit: Some(10),
            ..Default::default()
        })
        .await
        .unwrap();
    msgs.messages
        .iter()
        .find(|m| {
            m.headers.get("x-huizhen-event").map(String::as_str) == Some("consultation.completed")
        })
        .expect("the completed event was journaled")
        .id
        .to_string()
}

async fn the_completed_event_opens_the_settlement(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let (platform, wf) = engine(db).await;
    let mut req = request(4711);
    req["his_order"] = json!({
        "placer": {"id": "P-778", "namespace": "HIS"},
        "patient_identifiers": [
            {"id": "0001234567", "assigning_authority": "HXXRMYY", "type_code": "MR"},
            {"id": "450103199001011234", "type_code": "NI"}
        ]
    });
    let id = completed_from(&wf, req).await;
    // The relay hands `consultation.completed` to the pipeline; `settle` opens the saga and it
    // runs to the patient's confirmation in the background.
    let store = wf.engine.store.clone();
    let s = pre_settled(&store, &id).await;
    assert!(
        matches!(&s.kind, huizhen_domain::billing::Kind::Insured { voucher } if voucher.cert_no == "450103199001011234")
    );
    assert_eq!(platform.infnos(), ["1101", "2201", "2203", "2204", "2206"]);
    assert_eq!(platform.problems(), Vec::<String>::new());
    // The event delivered again (a reprocess) opens nothing new.
    let completed = completed_event(&store).await;
    // Reprocessing puts it back to `received`: done again means processed again.
    let back = store.reprocess(&completed).await.unwrap();
    assert_eq!(back.state, huizhen_core::message::State::Received);
    wf.engine.wake_scheduler();
    wait_for("the event processed again", Duration::from_secs(20), || {
        let store = store.clone();
        let mid = completed.clone();
        async move {
            let m = store.get(&mid).await.unwrap()?;
            (m.state == huizhen_core::message::State::Done).then_some(())
        }
    })
    .await;
    let again = store
        .settlement_of_consultation(&id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.settlement.id, s.id);
    assert_eq!(again.attempt, 1);
    assert_eq!(platform.infnos().len(), 5);
}

/// An HL7 order's `PID-3` as `consultation_create` keeps it: the HIS's own id for the result
/// going back, the resident identity number apart (`national_identifiers`). The settlement is
/// insured by that number, not self-pay; the ids the result goes back with stay the HIS's own.
async fn an_hl7_orders_national_number_settles_with_insurance(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let (platform, wf) = engine(db).await;
    let mut req = request(4712);
    req["his_order"] = json!({
        "placer": {"id": "P-779", "namespace": "HIS"},
        "patient_identifiers": [
            {"id": "0001234568", "assigning_authority": "HXXRMYY", "type_code": "MR"}
        ],
        "national_identifiers": [
            {"id": "450103199001011234", "assigning_authority": "CHN", "type_code": "NI"}
        ]
    });
    let id = completed_from(&wf, req).await;
    let store = wf.engine.store.clone();
    let s = pre_settled(&store, &id).await;
    assert!(
        matches!(&s.kind, huizhen_domain::billing::Kind::Insured { voucher } if voucher.cert_no == "450103199001011234"),
        "{:?}",
        s.kind
    );
    assert_eq!(platform.infnos(), ["1101", "2201", "2203", "2204", "2206"]);
    // The completed event (the ORU's body) carries the HIS's own id only.
    let completed = completed_event(&store).await;
    let full = store.get(&completed).await.unwrap().unwrap();
    let body = String::from_utf8_lossy(&full.body);
    assert!(body.contains("0001234568"), "{body}");
    assert!(!body.contains("450103199001011234"), "{body}");
}
