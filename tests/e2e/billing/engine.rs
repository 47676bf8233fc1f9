//! Billing end to end through the engine, the API and the stand-in platform, on both backends:
//! a consultation walked to its signed report is settled once however many settle requests
//! arrive together; a 2207 that times out after the platform committed it is reversed (2601
//! with its msgid and infno) and settled again, and the platform's books hold one settlement;
//! a refund revokes it and reverses the ledger share; a crash between the platform's answer and
//! the local commit is reconciled when the engine starts again.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use futures::future::join_all;
use huizhen_core::Engine;
use huizhen_core::billing::{
    Billing, BillingConfig, CoverageConfig, InsurerConfig, InvoicePlatformConfig,
    ReconciliationConfig,
};
use huizhen_core::clock::{Clock, FakeClock};
use huizhen_core::security::{Role, SecurityConfig};
use huizhen_core::store::billing::InvoiceKind;
use huizhen_core::store::billing::{CallWrite, SettlementChange};
use huizhen_domain::billing::{Amounts, Fen, Phase};
use huizhen_domain::consultation::{Opinion, sign_opinion};
use huizhen_insurer::testing::finance::{FinanceFault, FinanceStandIn};
use huizhen_insurer::testing::{Fault, StandIn};
use huizhen_signing::testca::TestCa;
use serde_json::{Value, json};

use crate::consultations::{
    SECRET, Wf, doctor, expert, offerees, request, seed_registry, t0, token,
};
use crate::support::{Backend, JsonApi, TestDb, both_backends, fresh_db, loaded, serve, wait_for};

both_backends!(
    settled_once_a_timeout_after_commit_reversed_and_refunded,
    a_crash_between_answer_and_commit_is_reconciled_on_restart,
    the_completed_event_opens_the_settlement,
);

/// The demo's outbound pipeline, reduced to billing: `consultation.completed` opens the
/// settlement.
const EVENTS: &str = "version: 1\nname: consultation-events\nfacility: F-REQ\nsource:\n  http: { path: /in/consultation-events, kind: json }\nsteps:\n  - settle: { voucher_identifier: NI }\nsinks:\n  - journal: {}\n";

const SCHEDULE: &str = r#"version: 1
facility: F-REQ
province: "45"
mapping_version: "2026.01"
services:
  - service_type: institution-to-institution
    name: 远程会诊
    local_code: HZ-YCHZ-01
    national_code: "003101000010000"
    province_code: "310100001-1"
    by_title: { chief-physician: 250.00 }
agreements:
  - id: AG-1
    invited_share_percent: 60
"#;

fn billing_config(db: &TestDb, platform: &str, finance: Option<&str>) -> BillingConfig {
    let file = db.dir.path().join("fees.yaml");
    std::fs::write(&file, SCHEDULE).unwrap();
    let insurer: Box<dyn InsurerConfig> = huizhen_core::config::parse_yaml(
        std::path::Path::new("insurer.yaml"),
        &format!(
            "nhsa:\n  url: {platform}\n  timeout: 500ms\n  mdtrtarea_admvs: \"450100\"\n  opter: HZ-BILLING\n  opter_name: 会诊计费\n"
        ),
    )
    .unwrap();
    let invoices = finance.map(|url| {
        let cfg: Box<dyn InvoicePlatformConfig> = huizhen_core::config::parse_yaml(
            std::path::Path::new("invoices.yaml"),
            &format!("finance-einvoice:\n  url: {url}\n  timeout: 2s\n  agency_code: \"450103\"\n"),
        )
        .unwrap();
        cfg
    });
    BillingConfig {
        institution: "H45010300001".into(),
        institution_name: "某某人民医院".into(),
        schedules: vec![file],
        utc_offset_minutes: 480,
        coverage: CoverageConfig::default(),
        lease: Duration::from_secs(60),
        resume_interval: Duration::from_secs(3600),
        insurer: Some(insurer),
        reconciliation: Some(ReconciliationConfig {
            // 16:00 UTC: local midnight (+08:00), reconciling the day that ended.
            schedule: "0 0 16 * * *".into(),
            statements: db.dir.path().join("statements"),
        }),
        invoices,
    }
}

/// The workflow engine with billing through the stand-in at `platform`.
async fn start(db: TestDb, ca: Arc<TestCa>, clock: Arc<FakeClock>, platform: &str) -> Wf {
    start_with(db, ca, clock, platform, None, None).await
}

/// [`start`] with an outbound pipeline for the consultation's events.
async fn start_with(
    db: TestDb,
    ca: Arc<TestCa>,
    clock: Arc<FakeClock>,
    platform: &str,
    outbound: Option<&str>,
    finance: Option<&str>,
) -> Wf {
    let roots = db.dir.path().join("ca-roots.pem");
    ca.write_root_pem(&roots).unwrap();
    let mut cfg = loaded(&db, outbound.as_slice());
    if outbound.is_some() {
        cfg.root.workflow.consultations.outbound_pipeline = Some("consultation-events".into());
    }
    cfg.root.workflow.signing_roots = Some(roots);
    cfg.root.billing = Some(billing_config(&db, platform, finance));
    let engine = Engine::start_with_clock(cfg, clock.clone()).await.unwrap();
    let base = serve(
        &engine,
        &SecurityConfig {
            jwt_secret: Some(SECRET.into()),
            ..SecurityConfig::default()
        },
    )
    .await;
    Wf {
        engine,
        api: JsonApi::new(base),
        clock,
        ca,
        db,
    }
}

/// A consultation walked from the request to the completed report; its id.
async fn completed(wf: &Wf) -> String {
    completed_from(wf, request(4711)).await
}

async fn completed_from(wf: &Wf, request: Value) -> String {
    seed_registry(wf, 1).await;
    let (id, v) = wf.approved(request).await;
    let e = offerees(&v)[0].clone();
    let (_, v, _) = wf
        .call(
            "GET",
            &format!("/api/consultations/{id}"),
            &expert(&e),
            None,
            None,
        )
        .await;
    let version = v["version"].as_u64().unwrap();
    let (s, v, _) = wf
        .call(
            "POST",
            &format!("/api/consultations/{id}/accept"),
            &expert(&e),
            None,
            Some(version),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let before = wf.clock.now() - TimeDelta::minutes(1);
    wf.ok(&id, "record_consent", &doctor(), json!({"consent": {"signer": "patient", "document": "DocumentReference/consent-1", "signed_at": before}})).await;
    wf.ok(
        &id,
        "attach_physician",
        &doctor(),
        json!({"physician": {"practitioner": "D001", "licence": "110330000001"}}),
    )
    .await;
    for who in [e.as_str(), "D001"] {
        wf.ok(&id, "record_verification", &doctor(), json!({"verification": {"subject": {"kind": "physician", "practitioner": who}, "method": "ca-certificate", "verified_at": before, "result": "passed", "provider_reference": format!("ca-{who}")}})).await;
    }
    wf.ok(&id, "start", &expert(&e), json!({})).await;
    let now = wf.clock.now();
    let opinion: Opinion = serde_json::from_value(json!({
        "consultation": id, "expert": e,
        "diagnoses": [{"code": "I20.0", "text": "不稳定型心绞痛"}],
        "treatment_plan": "阿司匹林 100mg qd", "advice": "复查心电图"
    }))
    .unwrap();
    let physician = wf
        .ca
        .issue_physician(
            "李振华",
            now - TimeDelta::days(1),
            now + TimeDelta::days(365),
        )
        .unwrap();
    let signed = sign_opinion(opinion, &physician.signer().unwrap(), now).unwrap();
    wf.ok(
        &id,
        "sign_opinion",
        &expert(&e),
        json!({ "signed": signed }),
    )
    .await;
    wf.ok(
        &id,
        "record_local_decision",
        &doctor(),
        json!({"decision": {"outcome": "adopted", "final_diagnoses": ["I20.0"], "note": ""}}),
    )
    .await;
    let v = wf.ok(&id, "complete", &expert(&e), json!({})).await;
    assert_eq!(v["state"], "report-signed", "{v}");
    id
}

fn voucher() -> Value {
    json!({"voucher": {"cert_type": "02", "cert_no": "450103199001011234"}})
}

/// The amounts of the pre-settlement the settlement view shows.
fn pre(v: &Value) -> Value {
    v["pre_settlement"].clone()
}

async fn settled_once_a_timeout_after_commit_reversed_and_refunded(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let platform = StandIn::start().await.unwrap();
    let finance = FinanceStandIn::start().await.unwrap();
    let ca = Arc::new(TestCa::generate("Huizhen E2E CA").unwrap());
    let wf = start_with(
        db,
        ca,
        Arc::new(FakeClock::new(t0())),
        &platform.url,
        None,
        Some(&finance.url),
    )
    .await;
    let id = completed(&wf).await;
    let path = format!("/api/consultations/{id}/settlement");

    // Eight settle requests at once: one saga, one pass through the platform.
    let bearer = doctor();
    let answers = join_all((0..8).map(|_| wf.post(&path, &bearer, voucher()))).await;
    let created: Vec<_> = answers.iter().filter(|(s, _)| *s == 201).collect();
    assert_eq!(created.len(), 1, "{answers:?}");
    assert!(
        answers.iter().all(|(s, _)| *s == 201 || *s == 200),
        "{answers:?}"
    );
    let sid = created[0].1["id"].as_str().unwrap().to_owned();
    assert!(answers.iter().all(|(_, v)| v["id"] == sid.as_str()));
    let (_, v) = wf.get(&path, &doctor()).await;
    assert_eq!(v["phase"], "awaiting-confirmation", "{v}");
    assert_eq!(v["kind"]["voucher"]["cert_no"], "4501**********1234");
    assert_eq!(
        platform.infnos(),
        ["1101", "2201", "2203", "2204", "2206"],
        "each step once"
    );

    // The patient confirms; the 2207 times out after the platform committed it; the finance
    // platform issues the invoice but its answer is lost.
    platform.fault_next("2207", Fault::TimeoutAfterCommit(Duration::from_secs(3)));
    finance.fault_next(FinanceFault::LoseAnswer);
    let (s, v) = wf
        .post(
            &format!("/api/settlements/{sid}/confirm"),
            &doctor(),
            json!({"by": "patient", "amounts": pre(&v)}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["phase"], "settled", "{v}");
    assert_eq!(v["patient_pays_fen"], 10_000);
    let got = platform.received();
    let infnos: Vec<&str> = got.iter().map(|r| r.infno.as_str()).collect();
    assert_eq!(
        infnos,
        [
            "1101", "2201", "2203", "2204", "2206", "2207", "2601", "2207"
        ]
    );
    assert_eq!(got[6].omsgid.as_deref(), Some(got[5].msgid.as_str()));
    assert_eq!(got[6].oinfno.as_deref(), Some("2207"));
    assert_eq!(
        platform.settlements_in_force(),
        1,
        "the books hold one settlement"
    );
    assert_eq!(platform.problems(), Vec::<String>::new());

    // The invoice: nothing recorded while its answer was lost; asked again (five times at once,
    // as the resume loop and requests may), the platform's one invoice is recorded once.
    let store = wf.engine.store.clone();
    assert!(store.invoices(&sid).await.unwrap().is_empty());
    let billing = wf.engine.extensions.get::<Billing>().unwrap();
    let settled = store.settlement(&sid).await.unwrap().unwrap().settlement;
    join_all((0..5).map(|_| billing.invoice(&settled))).await;
    let invoices = store.invoices(&sid).await.unwrap();
    assert_eq!(invoices.len(), 1, "{invoices:?}");
    assert_eq!(finance.issued().len(), 1);
    assert_eq!(invoices[0].bill_number, finance.issued()[0].bill_number);
    assert_eq!(invoices[0].amount_fen, 25_000);
    assert_eq!(finance.issued()[0].total, "250.00");

    // What the engine recorded: every call with its outcome, the ledger share (60 % of 250).
    let (s, d) = wf.get(&format!("/api/settlements/{sid}"), &doctor()).await;
    assert_eq!(s, 200, "{d}");
    let outcomes: Vec<(String, String)> = d["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["infno"].as_str().unwrap().to_owned(),
                c["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(outcomes[5], ("2207".into(), "uncertain".into()));
    assert_eq!(outcomes[6], ("2601".into(), "ok".into()));
    assert_eq!(outcomes[7], ("2207".into(), "ok".into()));
    assert_eq!(d["ledger"][0]["amount"], 15_000, "{d}");
    assert_eq!(d["ledger"][0]["payee"], "F-EXP");
    let msgids: Vec<&str> = d["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["msgid"].as_str().unwrap())
        .collect();
    assert!(
        msgids
            .iter()
            .all(|m| m.len() == 30 && m.starts_with("H45010300001"))
    );
    let unique: std::collections::HashSet<_> = msgids.iter().collect();
    assert_eq!(unique.len(), msgids.len());

    // Settling again changes nothing; another facility cannot see it.
    let (s, again) = wf.post(&path, &doctor(), voucher()).await;
    assert_eq!((s, again["id"].as_str()), (200, Some(sid.as_str())));
    assert_eq!(platform.received().len(), 8);
    let outsider = token(Role::LocalDoctor, "D9", "F-OTHER");
    assert_eq!(
        wf.get(&format!("/api/settlements/{sid}"), &outsider)
            .await
            .0,
        404
    );
    assert_eq!(wf.post(&path, &outsider, voucher()).await.0, 403);

    // The day's reconciliation against the platform's statement, with planted differences:
    // a settlement the engine never made, and the amount of ours changed.
    let day = (wf.clock.now() + TimeDelta::hours(8)).date_naive();
    let ours = platform
        .settlements()
        .into_iter()
        .find(|s| s.active)
        .unwrap()
        .setl_id;
    let planted = platform
        .statement()
        .replace(&format!("{ours},MD"), &format!("{ours}-X,MD"))
        + "SETL999999,MD999999,100.00,80.00,0.00,20.00,0\n";
    let ops = token(Role::Admin, "ops", "*");
    let recon = format!("/api/billing/reconciliation/{day}");
    let r = JsonApi::send(wf.api.request("POST", &recon, &ops, None).body(planted)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let kinds: Vec<&str> = r.body["report"]["discrepancies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["missing-at-platform", "missing-locally", "missing-locally"],
        "{}",
        r.body
    );
    let (s, stored) = wf.get(&recon, &ops).await;
    assert_eq!(s, 200);
    assert_eq!(stored["report"], r.body["report"]);
    assert_eq!(
        wf.get(&recon, &doctor()).await.0,
        403,
        "platform staff only"
    );
    let r = JsonApi::send(
        wf.api
            .request("POST", &recon, &ops, None)
            .body("setl_id,medfee_sumamt\nX,1\n"),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.body);

    // A refund: 2208, then fee details and registration revoked; the share reversed.
    let (s, v) = wf
        .post(
            &format!("/api/settlements/{sid}/cancel"),
            &doctor(),
            json!({"reason": "患者申请退费"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["phase"], "cancelled", "{v}");
    assert_eq!(&platform.infnos()[8..], ["2208", "2205", "2202"]);
    assert_eq!(platform.settlements_in_force(), 0);
    assert_eq!(platform.registrations_in_force(), 0);
    let ledger = wf.engine.store.ledger(Some(&sid)).await.unwrap();
    assert_eq!(ledger.len(), 2);
    // Exactly one 冲红, linked to the invoice; asking again issues nothing more.
    let invoices = store.invoices(&sid).await.unwrap();
    assert_eq!(invoices.len(), 2, "{invoices:?}");
    let red = invoices
        .iter()
        .find(|i| i.kind == InvoiceKind::Red)
        .unwrap();
    assert_eq!(red.original_id.as_deref(), Some(invoices[0].id.as_str()));
    assert_eq!(red.amount_fen, -25_000);
    let cancelled = store.settlement(&sid).await.unwrap().unwrap().settlement;
    join_all((0..3).map(|_| billing.invoice(&cancelled))).await;
    assert_eq!(store.invoices(&sid).await.unwrap().len(), 2);
    assert_eq!(finance.issued().len(), 2);
    assert_eq!(
        finance.issued()[1].original.as_deref(),
        Some(invoices[0].bill_number.as_str())
    );
    assert_eq!(finance.problems(), Vec::<String>::new());
    assert_eq!(
        Fen::sum(ledger.iter().map(|e| e.amount)).unwrap(),
        Fen::ZERO
    );
    let (s, _) = wf
        .post(
            &format!("/api/settlements/{sid}/cancel"),
            &doctor(),
            json!({"reason": "again"}),
        )
        .await;
    assert_eq!(s, 409);

    // The scheduled run at the next local midnight reads the day's statement file; the
    // refunded settlement is revoked on both sides, the reversed one only ever at the
    // platform: the day balances.
    let dir = wf.db.dir.path().join("statements");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{}.csv", day.format("%Y%m%d"))),
        platform.statement(),
    )
    .unwrap();
    let next_local_midnight = day
        .succ_opt()
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        - TimeDelta::hours(8);
    wf.clock.set(next_local_midnight + TimeDelta::minutes(1));
    let store = wf.engine.store.clone();
    let report = wait_for(
        "the scheduled reconciliation",
        Duration::from_secs(20),
        || {
            let store = store.clone();
            let day = day.to_string();
            async move {
                let (file, body) = store.reconciliation(&day).await.unwrap()?;
                file.ends_with(".csv").then_some(body)
            }
        },
    )
    .await;
    let report: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["discrepancies"], json!([]), "{report}");
    assert_eq!(report["matched"], 1);
}

async fn a_crash_between_answer_and_commit_is_reconciled_on_restart(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let platform = StandIn::start().await.unwrap();
    let ca = Arc::new(TestCa::generate("Huizhen E2E CA").unwrap());
    let clock = Arc::new(FakeClock::new(t0()));
    let wf = start(db, ca, clock.clone(), &platform.url).await;
    let id = completed(&wf).await;
    let (s, v) = wf
        .post(
            &format!("/api/consultations/{id}/settlement"),
            &doctor(),
            voucher(),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let sid = v["id"].as_str().unwrap().to_owned();

    // What the runner does for the 2207, up to the crash: confirm, allocate, begin, persist the
    // saga with the request, send; the platform commits and answers; the process dies before
    // the answer is recorded.
    let store = wf.engine.store.clone();
    let billing = wf.engine.extensions.get::<Billing>().unwrap();
    let insurer = billing.settings().insurer.clone().unwrap();
    let mut s = store.settlement(&sid).await.unwrap().unwrap().settlement;
    let amounts: Amounts = s.pre_settlement.unwrap();
    let v0 = s.version;
    s.confirm("patient", amounts, clock.now()).unwrap();
    let msgid = store
        .allocate_msgid("H45010300001", clock.now(), billing.settings().offset)
        .await
        .unwrap();
    let call = s.begin(msgid, clock.now()).unwrap();
    let request = insurer.request(&s, &call, clock.now()).unwrap();
    assert!(
        store
            .save_settlement(SettlementChange {
                settlement: &s,
                expected_version: v0,
                call: Some(CallWrite::Begin {
                    call: &call,
                    request: &request,
                }),
                ledger: &[],
                audit: None,
            })
            .await
            .unwrap()
    );
    let answer = insurer.send(&call, &request).await;
    assert!(matches!(
        answer.outcome,
        huizhen_domain::billing::Outcome::Ok { .. }
    ));
    assert_eq!(platform.settlements_in_force(), 1);
    drop(billing);
    let (db, ca) = wf.stop().await;

    // The engine starts again: the saga has a call in flight and no runner; its outcome is
    // uncertain, so it is reversed and settled again, never sent blind.
    let wf = start(db, ca, clock.clone(), &platform.url).await;
    let store = wf.engine.store.clone();
    let settled = wait_for("the saga reconciled", Duration::from_secs(20), || {
        let store = store.clone();
        let sid = sid.clone();
        async move {
            let s = store.settlement(&sid).await.unwrap()?.settlement;
            (s.phase() == Phase::Settled).then_some(s)
        }
    })
    .await;
    assert_eq!(
        &platform.infnos()[5..],
        ["2207", "2601", "2207"],
        "reversed, then settled under a new msgid"
    );
    let got = platform.received();
    assert_eq!(got[6].omsgid.as_deref(), Some(call.msgid.as_str()));
    assert_eq!(platform.settlements_in_force(), 1, "charged once");
    assert_eq!(
        settled.settled.unwrap().setl_id.as_deref(),
        platform
            .settlements()
            .iter()
            .find(|s| s.active)
            .map(|s| s.setl_id.as_str())
    );
    assert_eq!(platform.problems(), Vec::<String>::new());
    wf.stop().await;
}

async fn the_completed_event_opens_the_settlement(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
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
    let s = wait_for(
        "the settlement opened and pre-settled",
        Duration::from_secs(20),
        || {
            let store = store.clone();
            let id = id.clone();
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
    .await;
    assert!(
        matches!(&s.kind, huizhen_domain::billing::Kind::Insured { voucher } if voucher.cert_no == "450103199001011234")
    );
    assert_eq!(platform.infnos(), ["1101", "2201", "2203", "2204", "2206"]);
    assert_eq!(platform.problems(), Vec::<String>::new());
    // The event delivered again (a reprocess) opens nothing new.
    let msgs = store
        .list(&huizhen_core::store::ListFilter {
            pipeline: Some("consultation-events".into()),
            limit: Some(10),
            ..Default::default()
        })
        .await
        .unwrap();
    let completed = msgs
        .messages
        .iter()
        .find(|m| {
            m.headers.get("x-huizhen-event").map(String::as_str) == Some("consultation.completed")
        })
        .expect("the completed event was journaled");
    // Reprocessing puts it back to `received`: done again means processed again.
    let back = store.reprocess(&completed.id).await.unwrap();
    assert_eq!(back.state, huizhen_core::message::State::Received);
    wf.engine.wake_scheduler();
    wait_for("the event processed again", Duration::from_secs(20), || {
        let store = store.clone();
        let mid = completed.id.clone();
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
