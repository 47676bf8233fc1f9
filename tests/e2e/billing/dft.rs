//! A settled consultation's charge at the HIS (issue 19 item 4), on both backends: the saga
//! comes to rest settled and `settlement.settled` is in the outbox of that same change; the
//! relay hands it to the `his-charges` pipeline, whose `hl7_build` (`as: dft_p03`) makes the
//! `DFT^P03` the `mllp` sink sends to a fake HIS that answers AA. A refund (2208) sends the
//! credit (`FT1-6` `CD`). Each leaves once.

use std::sync::Arc;
use std::time::Duration;

use huizhen_core::Engine;
use huizhen_core::clock::FakeClock;
use huizhen_core::security::SecurityConfig;
use huizhen_domain::identity::{Demographics, PersonName, normalize};
use huizhen_insurer::testing::StandIn;
use huizhen_signing::testca::TestCa;
use serde_json::json;

use super::harness::{billing_config, completed_from, pre, voucher};
use crate::consultations::{REQ, SECRET, Wf, doctor, request, t0};
use crate::hl7_consultation::{His, free_port};
use crate::support::{Backend, JsonApi, both_backends, fresh_db, loaded, serve, wait_for};

both_backends!(a_settled_consultation_sends_a_dft_p03_and_a_refund_its_credit);

fn his_charges(his: u16) -> String {
    format!(
        "version: 1\nname: his-charges\nfacility: F-REQ\nsource:\n  http: {{ path: /in/his-charges, kind: json }}\nretry: {{ max_attempts: 5, backoff: 200ms }}\nsteps:\n  - hl7_build:\n      as: dft_p03\n      sending_application: HUIZHEN\n      sending_facility: GXYCHZ\n      receiving_application: HIS\n      receiving_facility: HXXRMYY\nsinks:\n  - mllp: {{ to: \"127.0.0.1:{his}\", charset: GB18030, ack_timeout: 5s, connect_timeout: 2s }}\n"
    )
}

/// The segments of a message whose name is `name`, each split into fields.
fn segments<'a>(msg: &'a str, name: &str) -> Vec<Vec<&'a str>> {
    msg.split('\r')
        .filter(|s| s.starts_with(name))
        .map(|s| s.split('|').collect())
        .collect()
}

async fn a_settled_consultation_sends_a_dft_p03_and_a_refund_its_credit(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let platform = StandIn::start().await.unwrap();
    let port = free_port();
    let his = His::listen(port).await;
    let ca = Arc::new(TestCa::generate("Huizhen E2E CA").unwrap());
    let roots = db.dir.path().join("ca-roots.pem");
    ca.write_root_pem(&roots).unwrap();
    let pipeline = his_charges(port);
    let mut cfg = loaded(&db, &[pipeline.as_str()]);
    cfg.root.workflow.signing_roots = Some(roots);
    let mut billing = billing_config(&db, &platform.url, None);
    billing.outbound_pipeline = Some("his-charges".into());
    cfg.root.billing = Some(billing);
    let clock = Arc::new(FakeClock::new(t0()));
    let engine = Engine::start_with_clock(cfg, clock.clone()).await.unwrap();
    let base = serve(
        &engine,
        &SecurityConfig {
            jwt_secret: Some(SECRET.into()),
            ..SecurityConfig::default()
        },
    )
    .await;
    let wf = Wf {
        engine,
        api: JsonApi::new(base),
        clock,
        ca,
        db,
    };
    // The patient as the requesting facility knows them (PID-5 comes from here).
    let patient = normalize(&Demographics {
        facility: REQ.into(),
        local_id: "0001234567".into(),
        identifiers: vec![],
        names: vec![PersonName::text("张三丰")],
        birth_date: Some("1990-01-01".into()),
        sex: None,
        phones: vec![],
        addresses: vec![],
    });
    let (_, person) = wf
        .engine
        .store
        .identity_upsert(&patient, None)
        .await
        .unwrap();
    let mut req = request(person as u64);
    req["his_order"] = json!({
        "placer": {"id": "P-778", "namespace": "HIS"},
        "patient_identifiers": [{"id": "0001234567", "assigning_authority": "HXXRMYY", "type_code": "MR"}]
    });
    let id = completed_from(&wf, req).await;

    // Settle: pre-settled, nothing announced while the patient has not confirmed.
    let (s, v) = wf
        .post(
            &format!("/api/consultations/{id}/settlement"),
            &doctor(),
            voucher(),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let sid = v["id"].as_str().unwrap().to_owned();
    let store = wf.engine.store.clone();
    assert!(store.outbox_of(&sid).await.unwrap().is_empty());
    let (s, v) = wf
        .post(
            &format!("/api/settlements/{sid}/confirm"),
            &doctor(),
            json!({"by": "patient", "amounts": pre(&v)}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["phase"], "settled", "{v}");

    // The charge is in the outbox with the change, and reaches the HIS as a DFT^P03.
    let events = store.outbox_of(&sid).await.unwrap();
    let topics: Vec<&str> = events.iter().map(|e| e.topic.as_str()).collect();
    assert_eq!(topics, ["settlement.settled"]);
    let got = his.clone();
    let dft = wait_for("the DFT^P03 at the HIS", Duration::from_secs(30), || {
        let got = got.clone();
        async move { got.messages().first().cloned() }
    })
    .await;
    let msh = &segments(&dft, "MSH")[0];
    assert_eq!(msh[8], "DFT^P03^DFT_P03", "{dft}");
    assert_eq!(
        msh[17], "GB 18030-2000",
        "the sink rewrote MSH-18 for the HIS"
    );
    let pid = &segments(&dft, "PID")[0];
    assert_eq!(
        pid[3], "0001234567^^^HXXRMYY^MR",
        "the HIS order's patient id"
    );
    assert_eq!(pid[5], "张三丰", "the name the identity index holds");
    let ft1 = segments(&dft, "FT1");
    assert_eq!(ft1.len(), 1, "{dft}");
    let setl_id = store
        .settlement(&sid)
        .await
        .unwrap()
        .unwrap()
        .settlement
        .settled
        .unwrap()
        .setl_id
        .unwrap();
    assert_eq!(ft1[0][2], sid);
    assert_eq!(ft1[0][3], setl_id);
    assert_eq!(ft1[0][6], "CG");
    assert!(
        ft1[0][7].starts_with("003101000010000^远程会诊^99NHSA^HZ-YCHZ-01^"),
        "{}",
        ft1[0][7]
    );
    assert_eq!(ft1[0][10], "1");
    assert_eq!(ft1[0][11], "250.00&CNY");
    assert_eq!(ft1[0][23], format!("{id}^HUIZHEN"));
    let in1 = segments(&dft, "IN1");
    assert_eq!(in1.len(), 1, "insured: {dft}");
    // Delivered: the HIS answered AA, the message is done, the event marked sent.
    let delivered = wait_for("the charge marked sent", Duration::from_secs(20), || {
        let store = store.clone();
        let sid = sid.clone();
        async move {
            let e = store.outbox_of(&sid).await.unwrap().pop()?;
            let mid = e.message_id.clone()?;
            let m = store.get(&mid).await.unwrap()?;
            (m.state == huizhen_core::message::State::Done).then_some(m)
        }
    })
    .await;
    assert_eq!(delivered.pipeline, "his-charges");

    // A refund: 2208, then the credit, once.
    let (s, v) = wf
        .post(
            &format!("/api/settlements/{sid}/cancel"),
            &doctor(),
            json!({"reason": "patient asked for a refund"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["phase"], "cancelled", "{v}");
    let got = his.clone();
    let credit = wait_for("the credit at the HIS", Duration::from_secs(30), || {
        let got = got.clone();
        async move { got.messages().get(1).cloned() }
    })
    .await;
    let ft1 = segments(&credit, "FT1");
    assert_eq!(ft1[0][2], sid);
    assert_eq!(ft1[0][6], "CD");
    assert_eq!(ft1[0][10], "-1");
    assert_eq!(ft1[0][11], "-250.00&CNY");
    let topics: Vec<String> = store
        .outbox_of(&sid)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.topic)
        .collect();
    assert_eq!(topics, ["settlement.settled", "settlement.cancelled"]);
    // Nothing more leaves however often the relay runs.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(his.messages().len(), 2);
}
