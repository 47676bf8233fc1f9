//! The billing store on both backends: one live saga per consultation however many open it at
//! once; every save guarded by the version it was decided on, the call persisted with its
//! request before it is sent and answered once; msgids unique under concurrency and across a
//! reopened store; one invoice and one 冲红 per settlement, never changed or deleted; ledger
//! entries written once; leases.

use std::collections::HashSet;

use chrono::FixedOffset;
use futures::future::join_all;
use huizhen_core::store::billing::{CallWrite, InvoiceKind, NewInvoice, Opened, SettlementChange};
use huizhen_domain::billing::{Fen, LedgerEntry, LedgerKind, Next, Outcome, Phase, Txn};

use super::{INSTITUTION, audit, settlement, t0};
use crate::support::{Backend, both_backends, fresh_db, store};

both_backends!(
    one_live_settlement_per_consultation,
    saves_are_version_guarded_and_calls_persisted_first,
    msgids_are_unique_under_concurrency_and_restarts,
    invoices_are_recorded_once_and_never_changed,
);

fn beijing() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).unwrap()
}

async fn one_live_settlement_per_consultation(backend: Backend) {
    let Some(db) = fresh_db(backend).await else {
        return;
    };
    let store = store(&db).await;
    // Eight concurrent settle requests for one consultation: one saga.
    let opens = join_all((0..8).map(|i| {
        let store = store.clone();
        async move {
            let s = settlement(&format!("S-{i}"), "C-1");
            store
                .open_settlement(&s, &audit("settlement.open", &s.id))
                .await
                .unwrap()
        }
    }))
    .await;
    let new: Vec<_> = opens
        .iter()
        .filter(|o| matches!(o, Opened::New(_)))
        .collect();
    assert_eq!(new.len(), 1, "exactly one saga is opened");
    let winner = new[0].stored().settlement.id.clone();
    assert!(opens.iter().all(|o| o.stored().settlement.id == winner));
    assert_eq!(new[0].stored().attempt, 1);

    // Aborted: the next request opens attempt 2.
    let mut s = store.settlement(&winner).await.unwrap().unwrap().settlement;
    let v = s.version;
    s.cancel("patient left", t0()).unwrap();
    assert_eq!(s.phase(), Phase::Aborted);
    assert!(
        store
            .save_settlement(SettlementChange {
                settlement: &s,
                expected_version: v,
                call: None,
                ledger: &[],
                usage: None,
                audit: Some(&audit("settlement.cancel", &s.id)),
                outbox: None,
            })
            .await
            .unwrap()
    );
    let again = store
        .open_settlement(
            &settlement("S-next", "C-1"),
            &audit("settlement.open", "S-next"),
        )
        .await
        .unwrap();
    assert!(matches!(&again, Opened::New(x) if x.attempt == 2));
    assert_eq!(
        store
            .settlement_of_consultation("C-1")
            .await
            .unwrap()
            .unwrap()
            .settlement
            .id,
        "S-next"
    );
}

async fn saves_are_version_guarded_and_calls_persisted_first(backend: Backend) {
    let Some(db) = fresh_db(backend).await else {
        return;
    };
    let store = store(&db).await;
    let s = settlement("S-1", "C-1");
    store
        .open_settlement(&s, &audit("settlement.open", "S-1"))
        .await
        .unwrap();
    let mut s = store.settlement("S-1").await.unwrap().unwrap().settlement;
    assert_eq!(
        store.settlements_to_resume(0, 10).await.unwrap(),
        vec!["S-1".to_owned()]
    );

    // Begin 1101: the saga and the call with its request, before anything is sent.
    let msgid = store
        .allocate_msgid(INSTITUTION, t0(), beijing())
        .await
        .unwrap();
    let v = s.version;
    let call = s.begin(msgid.clone(), t0()).unwrap();
    assert_eq!(call.txn, Txn::PersonInfo);
    let request = r#"{"infno":"1101","input":{"data":{"psn_cert_type":"02"}}}"#;
    let begin = |s| SettlementChange {
        settlement: s,
        expected_version: v,
        call: Some(CallWrite::Begin {
            call: &call,
            request,
        }),
        ledger: &[],
        usage: None,
        audit: None,
        outbox: None,
    };
    assert!(store.save_settlement(begin(&s)).await.unwrap());
    // A second writer with the same expected version loses and writes nothing.
    assert!(!store.save_settlement(begin(&s)).await.unwrap());
    let calls = store.settlement_calls("S-1").await.unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].request, request);
    assert_eq!(calls[0].outcome, None);
    // Reloaded (a restart), the saga knows the call is in flight.
    let mut reloaded = store.settlement("S-1").await.unwrap().unwrap().settlement;
    assert_eq!(reloaded.next(), Next::AwaitOutcome(call.clone()));

    let v = reloaded.version;
    reloaded
        .complete(
            &msgid,
            Outcome::Uncertain {
                why: "restart".into(),
            },
            t0(),
        )
        .unwrap();
    let answer = SettlementChange {
        settlement: &reloaded,
        expected_version: v,
        call: Some(CallWrite::Answer {
            msgid: msgid.as_str(),
            outcome: "uncertain",
            response: None,
        }),
        ledger: &[],
        usage: None,
        audit: None,
        outbox: None,
    };
    assert!(store.save_settlement(answer).await.unwrap());
    let calls = store.settlement_calls("S-1").await.unwrap();
    assert_eq!(calls[0].outcome.as_deref(), Some("uncertain"));
    // An answer is recorded once.
    let mut twice = reloaded.clone();
    twice.version += 1;
    let again = SettlementChange {
        settlement: &twice,
        expected_version: reloaded.version,
        call: Some(CallWrite::Answer {
            msgid: msgid.as_str(),
            outcome: "ok",
            response: Some("{}"),
        }),
        ledger: &[],
        usage: None,
        audit: None,
        outbox: None,
    };
    assert!(store.save_settlement(again).await.is_err());
    assert_eq!(
        store
            .settlement("S-1")
            .await
            .unwrap()
            .unwrap()
            .settlement
            .version,
        reloaded.version,
        "the failed save wrote nothing"
    );

    // Ledger entries are written once, whatever saves repeat them.
    let entry = LedgerEntry {
        settlement_id: "S-1".into(),
        kind: LedgerKind::Share,
        agreement: "AGR-1".into(),
        payer: INSTITUTION.into(),
        payee: "H11010100001".into(),
        amount: Fen(15_000),
    };
    let mut s = reloaded;
    for _ in 0..2 {
        let v = s.version;
        s.version += 1;
        assert!(
            store
                .save_settlement(SettlementChange {
                    settlement: &s,
                    expected_version: v,
                    call: None,
                    ledger: std::slice::from_ref(&entry),
                    usage: None,
                    audit: None,
                    outbox: None,
                })
                .await
                .unwrap()
        );
    }
    assert_eq!(store.ledger(Some("S-1")).await.unwrap(), vec![entry]);

    // Leases: one runner at a time, until it runs out.
    assert!(
        store
            .lease_settlement("S-1", "a", 1_000, 2_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .lease_settlement("S-1", "b", 1_500, 2_500)
            .await
            .unwrap()
    );
    assert!(
        store
            .settlements_to_resume(1_500, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .lease_settlement("S-1", "a", 1_500, 3_000)
            .await
            .unwrap()
    );
    assert!(
        store
            .lease_settlement("S-1", "b", 3_001, 4_000)
            .await
            .unwrap()
    );
    store.release_settlement("S-1", "b").await.unwrap();
    assert_eq!(store.settlements_to_resume(0, 10).await.unwrap().len(), 1);
}

async fn msgids_are_unique_under_concurrency_and_restarts(backend: Backend) {
    let Some(db) = fresh_db(backend).await else {
        return;
    };
    let first = store(&db).await;
    let ids = join_all((0..200).map(|_| {
        let store = first.clone();
        async move {
            store
                .allocate_msgid(INSTITUTION, t0(), beijing())
                .await
                .unwrap()
        }
    }))
    .await;
    let mut seen: HashSet<String> = HashSet::new();
    for id in &ids {
        assert_eq!(id.as_str().len(), 30);
        assert!(id.as_str().starts_with("H44010600001202601151030"));
        assert!(seen.insert(id.to_string()), "{id} handed out twice");
    }
    drop(first);
    // A restarted engine (a new store on the same database), its clock an hour behind.
    let second = store(&db).await;
    let later = second
        .allocate_msgid(INSTITUTION, t0() - chrono::TimeDelta::hours(1), beijing())
        .await
        .unwrap();
    assert!(!seen.contains(later.as_str()));
    assert!(
        ids.iter().all(|id| id < &later),
        "the sequence goes on after a restart"
    );
    // Another institution has its own sequence.
    let other = second
        .allocate_msgid("H44010600002", t0(), beijing())
        .await
        .unwrap();
    assert_eq!(other.sequence(), 0);
}

async fn invoices_are_recorded_once_and_never_changed(backend: Backend) {
    let Some(db) = fresh_db(backend).await else {
        return;
    };
    let store = store(&db).await;
    let invoice = |i: usize, kind: InvoiceKind| NewInvoice {
        id: format!("INV-{i}"),
        settlement_id: "S-1".into(),
        kind,
        bill_code: "44010126".into(),
        bill_number: format!("{:010}", 100 + i),
        check_code: "a1b2c3".into(),
        amount: if kind == InvoiceKind::Red {
            Fen(-25_000)
        } else {
            Fen(25_000)
        },
        issued_at: 1_000 + i as i64,
        body: "{}".into(),
    };
    // A 冲红 needs the invoice it reverses.
    assert!(
        store
            .record_invoice(&invoice(0, InvoiceKind::Red))
            .await
            .is_err()
    );
    // Concurrent recordings of a settlement's invoice (two workers, a retried request): one.
    let stored = join_all((1..=6).map(|i| {
        let store = store.clone();
        let inv = invoice(i, InvoiceKind::Invoice);
        async move { store.record_invoice(&inv).await.unwrap() }
    }))
    .await;
    assert!(stored.iter().all(|s| s == &stored[0]));
    let red = store
        .record_invoice(&invoice(9, InvoiceKind::Red))
        .await
        .unwrap();
    assert_eq!(red.original_id.as_deref(), Some(stored[0].id.as_str()));
    let red_again = store
        .record_invoice(&invoice(10, InvoiceKind::Red))
        .await
        .unwrap();
    assert_eq!(red_again, red);
    let all = store.invoices("S-1").await.unwrap();
    assert_eq!(all.len(), 2);
    // The same 票据号码 for another settlement is refused.
    let mut stolen = invoice(11, InvoiceKind::Invoice);
    stolen.settlement_id = "S-2".into();
    stolen.bill_number = stored[0].bill_number.clone();
    assert!(store.record_invoice(&stolen).await.is_err());
    // Never changed, never deleted (the tables' triggers).
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut raw = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    for sql in ["UPDATE invoices SET amount_fen = 1", "DELETE FROM invoices"] {
        let r = sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut raw)
            .await;
        assert!(r.is_err(), "{sql} was allowed");
    }
    assert_eq!(store.invoices("S-1").await.unwrap(), all);
}
