//! Billing end to end through the engine, the API and the stand-in platform, on both backends:
//! a consultation walked to its signed report is settled once however many settle requests
//! arrive together; a 2207 that times out after the platform committed it is reversed (2601
//! with its msgid and infno) and settled again, and the platform's books hold one settlement;
//! a refund revokes it and reverses the ledger share; a crash between the platform's answer and
//! the local commit is reconciled when the engine starts again; the day's reconciliation finds
//! planted discrepancies; e-invoices and 冲红 are issued once; the patient's year-to-date
//! coverage usage is added by the settlement and taken back by its refund.

use std::sync::Arc;
use std::time::Duration;

use chrono::FixedOffset;
use chrono::TimeDelta;
use futures::future::join_all;
use huizhen_core::billing::Billing;
use huizhen_core::clock::{Clock, FakeClock};
use huizhen_core::security::Role;
use huizhen_core::store::billing::{CallWrite, InvoiceKind, SettlementChange};
use huizhen_domain::billing::{Amounts, Fen, Phase, UsageKind, YearToDate, insurance_year};
use huizhen_insurer::testing::finance::{FinanceFault, FinanceStandIn};
use huizhen_insurer::testing::{Fault, StandIn};
use huizhen_signing::testca::TestCa;
use serde_json::{Value, json};

use super::harness::{completed, pre, start, start_with, voucher};
use crate::consultations::{doctor, t0, token};
use crate::support::{Backend, JsonApi, both_backends, fresh_db, wait_for};

both_backends!(
    settled_once_a_timeout_after_commit_reversed_and_refunded,
    a_crash_between_answer_and_commit_is_reconciled_on_restart,
);

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

    // The patient's year: what the fund paid and the deductible the estimate met (20 yuan of
    // the plan's), written once with the settling change however many answers came.
    let ytd_store = wf.engine.store.clone();
    let settled_now = ytd_store
        .settlement(&sid)
        .await
        .unwrap()
        .unwrap()
        .settlement;
    let patient = settled_now.bill.billable.patient;
    let year = insurance_year(
        settled_now.settled.as_ref().unwrap().at,
        FixedOffset::east_opt(8 * 3600).unwrap(),
    );
    assert_eq!(settled_now.estimate.deductible_met, Fen(2_000));
    assert_eq!(
        ytd_store.year_to_date(patient, year).await.unwrap(),
        YearToDate {
            covered: Fen(15_000),
            deductible_met: Fen(2_000)
        }
    );

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
    // The refund takes the year's usage back: an entry of its own, never a deletion.
    assert_eq!(
        ytd_store.year_to_date(patient, year).await.unwrap(),
        YearToDate::default()
    );
    let kinds: Vec<_> = ytd_store
        .coverage_usage(patient, year)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, [UsageKind::Settled, UsageKind::Refunded]);
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
                usage: None,
                audit: None,
                outbox: None,
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
