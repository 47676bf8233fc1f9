//! E-invoices (CN-70) and the inter-institution ledger (CN-63): append-only. An invoice is
//! stored as the finance platform issued it (票据代码, 票据号码, 校验码), never invented here;
//! a refund's 冲红 is a second row linked to the original. Recording the same invoice twice
//! keeps the first: one invoice and one 冲红 per settlement, whatever the concurrency.

use huizhen_domain::billing::{Fen, LedgerEntry, LedgerKind};
use sqlx::any::AnyRow;
use sqlx::{Connection, Row};

use super::settlements::exec;
use crate::store::sql::Sql;
use crate::store::{Result, Store, StoreError, q};

/// An invoice or its red-letter reversal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InvoiceKind {
    /// The invoice of a settlement.
    Invoice,
    /// 冲红: the red-letter reversal of the settlement's invoice.
    Red,
}

impl InvoiceKind {
    /// The code, as stored.
    pub fn code(self) -> &'static str {
        match self {
            InvoiceKind::Invoice => "invoice",
            InvoiceKind::Red => "red",
        }
    }

    fn parse(s: &str) -> Option<InvoiceKind> {
        match s {
            "invoice" => Some(InvoiceKind::Invoice),
            "red" => Some(InvoiceKind::Red),
            _ => None,
        }
    }
}

/// An invoice as issued, to record.
#[derive(Debug, Clone)]
pub struct NewInvoice {
    /// The engine's id for it.
    pub id: String,
    /// The settlement.
    pub settlement_id: String,
    /// Invoice or 冲红.
    pub kind: InvoiceKind,
    /// 票据代码.
    pub bill_code: String,
    /// 票据号码.
    pub bill_number: String,
    /// 校验码.
    pub check_code: String,
    /// The amount (negative for a 冲红).
    pub amount: Fen,
    /// When issued (ms).
    pub issued_at: i64,
    /// The platform's answer as received (JSON).
    pub body: String,
}

/// A stored invoice.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredInvoice {
    /// The engine's id.
    pub id: String,
    /// The settlement.
    pub settlement_id: String,
    /// Invoice or 冲红.
    pub kind: InvoiceKind,
    /// For a 冲红: the invoice it reverses.
    pub original_id: Option<String>,
    /// 票据代码.
    pub bill_code: String,
    /// 票据号码.
    pub bill_number: String,
    /// 校验码.
    pub check_code: String,
    /// Amount in fen.
    pub amount_fen: i64,
    /// When issued (ms).
    pub issued_at: i64,
}

const INVOICE_COLUMNS: &str = "id, settlement_id, kind, original_id, bill_code, bill_number, check_code, amount_fen, issued_at";

fn invoice_from_row(r: &AnyRow) -> Result<StoredInvoice> {
    let d = || q("decode invoice");
    let kind: String = r.try_get("kind").map_err(d())?;
    Ok(StoredInvoice {
        id: r.try_get("id").map_err(d())?,
        settlement_id: r.try_get("settlement_id").map_err(d())?,
        kind: InvoiceKind::parse(&kind)
            .ok_or_else(|| StoreError::Inconsistent(format!("invoice kind {kind:?}")))?,
        original_id: r.try_get("original_id").map_err(d())?,
        bill_code: r.try_get("bill_code").map_err(d())?,
        bill_number: r.try_get("bill_number").map_err(d())?,
        check_code: r.try_get("check_code").map_err(d())?,
        amount_fen: r.try_get("amount_fen").map_err(d())?,
        issued_at: r.try_get("issued_at").map_err(d())?,
    })
}

impl Store {
    /// Records an issued invoice (or 冲红, linked to the settlement's invoice, which must be
    /// there). When the settlement already has one of this kind, that one is returned and
    /// nothing is written. The same 票据代码 + 票据号码 for another settlement is an error.
    pub async fn record_invoice(&self, inv: &NewInvoice) -> Result<StoredInvoice> {
        let mut conn = self
            .write
            .acquire()
            .await
            .map_err(q("acquire writer connection"))?;
        let mut tx = conn.begin().await.map_err(q("begin invoice"))?;
        let original = if inv.kind == InvoiceKind::Red {
            let mut s = Sql::new("SELECT id FROM invoices WHERE settlement_id = ".into());
            s.bind(inv.settlement_id.as_str());
            s.push(" AND kind = 'invoice'");
            let row = s
                .query()
                .fetch_optional(&mut *tx)
                .await
                .map_err(q("read original invoice"))?;
            let Some(row) = row else {
                return Err(StoreError::Inconsistent(format!(
                    "settlement {}: a 冲红 without an invoice to reverse",
                    inv.settlement_id
                )));
            };
            Some(
                row.try_get::<String, _>("id")
                    .map_err(q("decode invoice id"))?,
            )
        } else {
            None
        };
        let mut s = Sql::new(format!(
            "INSERT INTO invoices ({INVOICE_COLUMNS}, body) VALUES ("
        ));
        s.bind(inv.id.as_str());
        s.push(", ");
        s.bind(inv.settlement_id.as_str());
        s.push(", ");
        s.bind(inv.kind.code());
        s.push(", ");
        s.bind(original);
        for v in [&inv.bill_code, &inv.bill_number, &inv.check_code] {
            s.push(", ");
            s.bind(v.as_str());
        }
        s.push(", ");
        s.bind(inv.amount.0);
        s.push(", ");
        s.bind(inv.issued_at);
        s.push(", ");
        s.bind(self.seal_billing(&inv.id, "invoice", &inv.body));
        s.push(") ON CONFLICT DO NOTHING");
        exec(&mut tx, s, "insert invoice").await?;
        let mut s = Sql::new(format!(
            "SELECT {INVOICE_COLUMNS} FROM invoices WHERE settlement_id = "
        ));
        s.bind(inv.settlement_id.as_str());
        s.push(" AND kind = ");
        s.bind(inv.kind.code());
        let row = s
            .query()
            .fetch_optional(&mut *tx)
            .await
            .map_err(q("read invoice"))?;
        let Some(row) = row else {
            return Err(StoreError::Inconsistent(format!(
                "invoice {} {} is already another settlement's",
                inv.bill_code, inv.bill_number
            )));
        };
        let stored = invoice_from_row(&row)?;
        tx.commit().await.map_err(q("commit invoice"))?;
        Ok(stored)
    }

    /// Settlements owed an e-invoice: settled without an invoice, or cancelled with an invoice
    /// and no 冲红; oldest change first.
    pub async fn settlements_owed_invoices(&self, limit: i64) -> Result<Vec<String>> {
        let mut s = Sql::new(
            "SELECT s.id FROM settlements s WHERE (s.phase = 'settled' AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.settlement_id = s.id AND i.kind = 'invoice')) OR (s.phase = 'cancelled' AND EXISTS (SELECT 1 FROM invoices i WHERE i.settlement_id = s.id AND i.kind = 'invoice') AND NOT EXISTS (SELECT 1 FROM invoices r WHERE r.settlement_id = s.id AND r.kind = 'red')) ORDER BY s.updated_at LIMIT ".into(),
        );
        s.bind(limit.clamp(1, 1000));
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("list settlements owed invoices"))?;
        rows.iter()
            .map(|r| {
                r.try_get::<String, _>("id")
                    .map_err(q("decode settlement id"))
            })
            .collect()
    }

    /// A settlement's invoices: the invoice, then its 冲红.
    pub async fn invoices(&self, settlement_id: &str) -> Result<Vec<StoredInvoice>> {
        let mut s = Sql::new(format!(
            "SELECT {INVOICE_COLUMNS} FROM invoices WHERE settlement_id = "
        ));
        s.bind(settlement_id);
        s.push(" ORDER BY kind, issued_at");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read invoices"))?;
        rows.iter().map(invoice_from_row).collect()
    }

    /// Ledger entries, of one settlement or all, in the order recorded.
    pub async fn ledger(&self, settlement_id: Option<&str>) -> Result<Vec<LedgerEntry>> {
        let mut s = Sql::new(
            "SELECT settlement_id, kind, agreement, payer, payee, amount_fen FROM billing_ledger"
                .into(),
        );
        if let Some(id) = settlement_id {
            s.push(" WHERE settlement_id = ");
            s.bind(id);
        }
        s.push(" ORDER BY recorded_at, settlement_id, kind DESC");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read ledger"))?;
        rows.iter()
            .map(|r| {
                let d = || q("decode ledger entry");
                let kind: String = r.try_get("kind").map_err(d())?;
                Ok(LedgerEntry {
                    settlement_id: r.try_get("settlement_id").map_err(d())?,
                    kind: match kind.as_str() {
                        "share" => LedgerKind::Share,
                        "share-reversal" => LedgerKind::ShareReversal,
                        other => {
                            return Err(StoreError::Inconsistent(format!("ledger kind {other:?}")));
                        }
                    },
                    agreement: r.try_get("agreement").map_err(d())?,
                    payer: r.try_get("payer").map_err(d())?,
                    payee: r.try_get("payee").map_err(d())?,
                    amount: Fen(r.try_get("amount_fen").map_err(d())?),
                })
            })
            .collect()
    }
}

impl Store {
    /// Keeps the reconciliation report of `day` (`yyyy-mm-dd`), replacing an earlier run's.
    /// `statement` names the statement file it read.
    pub async fn save_reconciliation(&self, day: &str, statement: &str, body: &str) -> Result<()> {
        let mut s = Sql::new(
            "INSERT INTO reconciliation_reports (day, statement, body, created_at) VALUES (".into(),
        );
        s.bind(day);
        s.push(", ");
        s.bind(statement);
        s.push(", ");
        s.bind(body);
        s.push(", ");
        s.bind(crate::message::now_ms());
        s.push(
            ") ON CONFLICT (day) DO UPDATE SET statement = excluded.statement, body = excluded.body, created_at = excluded.created_at",
        );
        s.query()
            .execute(&self.write)
            .await
            .map_err(q("save reconciliation"))?;
        Ok(())
    }

    /// The reconciliation report of `day`: the statement file's name and the report JSON.
    pub async fn reconciliation(&self, day: &str) -> Result<Option<(String, String)>> {
        let mut s =
            Sql::new("SELECT statement, body FROM reconciliation_reports WHERE day = ".into());
        s.bind(day);
        let row = s
            .query()
            .fetch_optional(&self.read)
            .await
            .map_err(q("read reconciliation"))?;
        row.map(|r| {
            Ok((
                r.try_get("statement").map_err(q("decode reconciliation"))?,
                r.try_get("body").map_err(q("decode reconciliation"))?,
            ))
        })
        .transpose()
    }
}
