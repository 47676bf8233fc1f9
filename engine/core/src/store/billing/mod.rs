//! Billing's state (issue 19; STANDARDS CN-60 … CN-63, CN-70; migration 0018,
//! `0018_billing.sql`): settlement sagas, every request to the insurance platform, the msgid
//! sequence, e-invoices and the inter-institution ledger.
//!
//! The rules are the domain's (`huizhen_domain::billing`): this module persists what the saga
//! decided, and decides nothing itself.
//!
//! * [`settlements`](Store::open_settlement): one row per saga, the domain's `Settlement` as
//!   its body (sealed when encryption is on), written only against the version it was decided
//!   on. A consultation gets a new saga only when its last one was aborted, so a duplicate
//!   settle request finds the live one ([`Opened::Existing`]) and nothing is charged twice.
//!   The runner's lease ([`Store::lease_settlement`]) keeps two runners (two requests, two
//!   nodes) from driving one saga at the same time; a lease that ran out means its runner died.
//! * [`settlement_calls`](Store::settlement_calls): every request with its msgid, written with
//!   the saga in the same transaction BEFORE the call ([`CallWrite::Begin`]), and its answer
//!   after it ([`CallWrite::Answer`]). A call without an answer after a restart is uncertain.
//! * [`msgid_cursors`](Store::allocate_msgid): the last msgid per institution, advanced in one
//!   transaction per id (CN-61).
//! * [`invoices`](Store::record_invoice) (CN-70) and [`billing_ledger`](Store::ledger)
//!   (CN-63): append-only (triggers refuse updates and deletes); one invoice and one 冲红 per
//!   settlement, one share and one share reversal.
//! * [`coverage_usage`](Store::year_to_date) (migration 0019): the patient's usage of each
//!   insurance year (covered, deductible met), one entry per settlement and kind written with
//!   the saga change that settles or refunds it.

mod books;
mod msgids;
mod settlements;
mod usage;

pub use books::{InvoiceKind, NewInvoice, StoredInvoice};
pub use settlements::{
    CallWrite, Opened, SettledRow, SettlementChange, StoredCall, StoredSettlement,
};

use super::{Store, StoreError};

impl Store {
    /// `plain` as stored: sealed and bound to (`id`, `field`) when encryption is on.
    fn seal_billing(&self, id: &str, field: &str, plain: &str) -> String {
        match &self.keyring {
            Some(k) => k.seal_text(plain, &crate::crypto::Binding::new(id, field)),
            None => plain.to_owned(),
        }
    }
}

/// A stored JSON value that does not decode: the store and the domain disagree.
fn json_err(what: &str, id: &str, e: &serde_json::Error) -> StoreError {
    StoreError::Inconsistent(format!("{what} {id}: stored JSON does not decode: {e}"))
}

fn ms(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_millis()
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
