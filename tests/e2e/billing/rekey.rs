//! Key rotation covers billing: `Store::rekey_batch` over billing's tables (what
//! `huizhen keys rotate` walks, `REKEY_TABLES`) re-seals every settlement, every call's request
//! and response and every e-invoice with the new data key, so the old key can be retired:
//! afterwards a key ring without it reads them all. Invoices stay never changed otherwise.

use chrono::FixedOffset;
use huizhen_core::crypto::{EncryptionConfig, Keyring};
use huizhen_core::store::Store;
use huizhen_core::store::billing::{CallWrite, InvoiceKind, NewInvoice, SettlementChange};
use huizhen_core::store::rekey::REKEY_TABLES;
use huizhen_domain::billing::{
    Eligibility, Fen, Outcome, PatientCoverage, Person, Reply, YearToDate,
};
use sqlx::Row;

use super::{INSTITUTION, audit, settlement, t0};
use crate::support::{Backend, TestDb, both_backends, fresh_db, rekey_pass, sealed_keys, store};

both_backends!(key_rotation_re_seals_the_billing_rows);

/// Billing's sealed (table, column)s.
const SEALED: [(&str, &str); 4] = [
    ("settlements", "body"),
    ("settlement_calls", "request"),
    ("settlement_calls", "response"),
    ("invoices", "body"),
];

fn ring(keys_file: std::path::PathBuf) -> std::sync::Arc<Keyring> {
    Keyring::from_config(&EncryptionConfig {
        keys_file,
        ..Default::default()
    })
    .unwrap()
    .unwrap()
}

/// One pass over billing's tables in batches of 2; rows rewritten.
async fn rotate(s: &Store) -> u64 {
    let tables = ["settlements", "settlement_calls", "invoices"];
    for t in tables {
        assert!(REKEY_TABLES.contains(&t), "{t} is walked by keys rotate");
    }
    rekey_pass(s, &tables, 2).await
}

async fn key_rotation_re_seals_the_billing_rows(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let keys = db.dir.path().join("keys");
    let s = store(&db).await.with_keyring(Some(ring(keys.clone())));
    let beijing = FixedOffset::east_opt(8 * 3600).unwrap();
    // Three sagas, each with its 1101 sent and answered, and an invoice for the first.
    for i in 0..3 {
        let id = format!("S-RK-{i}");
        let opened = settlement(&id, &format!("C-RK-{i}"));
        s.open_settlement(&opened, &audit("settlement.open", &id))
            .await
            .unwrap();
        let mut st = s.settlement(&id).await.unwrap().unwrap().settlement;
        let msgid = s.allocate_msgid(INSTITUTION, t0(), beijing).await.unwrap();
        let v = st.version;
        let call = st.begin(msgid.clone(), t0()).unwrap();
        let request = format!(r#"{{"infno":"1101","input":{{"data":{{"certno":"4501{i}"}}}}}}"#);
        assert!(
            s.save_settlement(SettlementChange {
                settlement: &st,
                expected_version: v,
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
        let v = st.version;
        let person = Person {
            psn_no: "P0001".into(),
            insuplc_admdvs: "450100".into(),
            coverage: PatientCoverage {
                insurer: "城镇职工医保".into(),
                plan: "310".into(),
                active: true,
                eligibility: Eligibility::Eligible,
                deductible: Fen::ZERO,
                annual_limit: None,
                year_to_date: YearToDate::default(),
            },
        };
        st.complete(
            &msgid,
            Outcome::Ok {
                reply: Reply::Person(person),
            },
            t0(),
        )
        .unwrap();
        assert!(
            s.save_settlement(SettlementChange {
                settlement: &st,
                expected_version: v,
                call: Some(CallWrite::Answer {
                    msgid: msgid.as_str(),
                    outcome: "ok",
                    response: Some(r#"{"infcode":0,"output":{"baseinfo":{"psn_name":"张三"}}}"#),
                }),
                ledger: &[],
                usage: None,
                audit: None,
                outbox: None,
            })
            .await
            .unwrap()
        );
    }
    s.record_invoice(&NewInvoice {
        id: "INV-RK".into(),
        settlement_id: "S-RK-0".into(),
        kind: InvoiceKind::Invoice,
        bill_code: "45010126".into(),
        bill_number: "0000000101".into(),
        check_code: "c0ffee".into(),
        amount: Fen(25_000),
        issued_at: 1_000,
        body: r#"{"payer":"张三"}"#.into(),
    })
    .await
    .unwrap();
    let before = sealed_keys(&db.url, &SEALED).await;
    let old_key = before[0].1[0].clone().unwrap();
    for (what, ks) in &before {
        assert!(!ks.is_empty(), "{what}");
        assert!(
            ks.iter().all(|k| k.as_ref() == Some(&old_key)),
            "{what}: {ks:?}"
        );
    }

    // Rotate: a new key, everything of billing re-sealed with it; a second pass finds nothing.
    let new_key = huizhen_core::crypto::add_key(&keys).unwrap();
    let s = store(&db).await.with_keyring(Some(ring(keys.clone())));
    // 3 settlements, 3 calls (request and response in one row), 1 invoice.
    assert_eq!(rotate(&s).await, 7);
    assert_eq!(rotate(&s).await, 0, "nothing left on the old key");
    for (what, ks) in sealed_keys(&db.url, &SEALED).await {
        assert!(
            ks.iter().all(|k| k.as_deref() == Some(new_key.as_str())),
            "{what}: {ks:?}"
        );
    }

    // The old key can go: a ring with only the index key and the new one reads everything.
    let text = std::fs::read_to_string(&keys).unwrap();
    let only_new: String = text
        .lines()
        .filter(|l| l.starts_with("index ") || l.starts_with(&format!("{new_key} ")))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(only_new.lines().count(), text.lines().count());
    let retired = db.dir.path().join("keys-new-only");
    std::fs::write(&retired, only_new).unwrap();
    let new_only = ring(retired);
    let fresh = store(&db).await.with_keyring(Some(new_only.clone()));
    for i in 0..3 {
        let id = format!("S-RK-{i}");
        let st = fresh.settlement(&id).await.unwrap().unwrap().settlement;
        assert_eq!(st.person.as_ref().unwrap().psn_no, "P0001");
        let calls = fresh.settlement_calls(&id).await.unwrap();
        assert!(calls[0].request.contains(&format!("4501{i}")));
        assert!(calls[0].response.as_deref().unwrap().contains("张三"));
    }
    let invoices = fresh.invoices("S-RK-0").await.unwrap();
    assert_eq!(invoices[0].bill_number, "0000000101");
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    let body: String = sqlx::query("SELECT body FROM invoices WHERE id = 'INV-RK'")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("body");
    pool.close().await;
    let opened = new_only
        .open_text(
            &body,
            &huizhen_core::crypto::Binding::new("INV-RK", "invoice"),
        )
        .unwrap();
    assert!(opened.contains("张三"), "{opened}");

    // Re-sealing is the only change an invoice lets through.
    refused_changes(&db).await;
}

async fn refused_changes(db: &TestDb) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    for sql in [
        "UPDATE invoices SET amount_fen = 1",
        "UPDATE invoices SET body = 'clear text'",
        "DELETE FROM invoices",
    ] {
        let r = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
        assert!(r.is_err(), "{sql} was allowed");
    }
    pool.close().await;
}
