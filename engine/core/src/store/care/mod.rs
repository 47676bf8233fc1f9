//! The care workflow's state (issue 15 items 4, 7, 8, 9; STANDARDS CN-20, CN-21): prescriptions,
//! appointments, the de-identified case library, the consultation facts the statistics read,
//! the outbox of workflow events for pipelines, and the runs of scheduled workflow jobs
//! (migration 0012, `0012_care.sql`).
//!
//! The rules are the domain's (`huizhen_domain::{prescription, appointment, case_library,
//! stats}`): this module loads what one decision needs, and persists what the domain decided
//! together with its audit event in one transaction. It decides nothing itself, except which
//! rows to load (a superset of what the domain's rule can select, never a subset).
//!
//! * [`prescriptions`](Store::prescription): a snapshot row per prescription (its state and
//!   version) and the append-only `prescription_events`; a change is written only when the
//!   snapshot still has the version it was decided against (optimistic concurrency: the loser
//!   gets `false` and decides again on the new state). An approval puts its outbound event into
//!   `workflow_outbox` in the same transaction.
//! * [`workflow_outbox`](Store::claim_outbox): workflow events for a pipeline. The engine's relay
//!   (`crate::care::relay_outbox`) submits each to its pipeline's journal (a `json` message,
//!   dedup key `workflow-outbox:<id>`) and marks it sent; a row is leased while a relay works
//!   on it, so a crash between the submit and the mark only resubmits (and the dedup key
//!   absorbs it).
//! * [`appointments`](Store::book_appointment): bookings. A booking locks its expert, patient
//!   and consultation (rows of `care_locks`, so PostgreSQL decides two bookings that could
//!   conflict one after the other), loads the expert's schedule from the registry and the
//!   bookings of that expert and patient around the day, and lets the domain's `Calendar`
//!   decide.
//! * [`case_library`](Store::case_library_add): de-identified records (never the identified
//!   case), pre-selected by department, flags and code columns, then searched and ranked by
//!   the domain.
//! * [`consultation_facts`](Store::consultation_facts): the statistics' input.
//!
//! Patient data (a prescription, a booking, an outbox event body) is sealed with the store's
//! keyring when encryption is on, bound to its row; a booking's patient is kept as a blind
//! index. Case records are de-identified and stay in clear, as do the facts (no patient).
//!
//! ## Contract for the consultation workflow
//!
//! **`consultation_facts`** holds one row per consultation, the domain's
//! [`ConsultationFacts`](huizhen_domain::stats::ConsultationFacts): `consultation_id`, `facility`
//! (the requesting facility), `department` (the requested department), `created_at` (the
//! request), `accepted_at` (the expert's acceptance), `completed_at` (the signed report),
//! `cancelled`, `failed` (SLA exhausted, technical failure, no-show) and `sla_breached` (any
//! offer timed out on the way). The workflow writes it with [`upsert_consultation_facts`] on
//! its own transaction's connection whenever one of these changes (creation, acceptance,
//! completion, cancellation, failure, an SLA breach), so the facts commit with the event that
//! changed them. The row is replaced whole: pass the consultation's current facts. Times are
//! stored as milliseconds since the epoch. The statistics validate the facts (times in order,
//! one outcome, completed only when accepted) and refuse a report over a contradictory row,
//! naming it.
//!
//! **The case library** takes a completed consultation through [`Store::case_library_add`]
//! (its own transaction) or [`case_library_insert`] (inside the caller's transaction, with a
//! record the caller de-identified with the domain's `deidentify`). The identified case never
//! reaches the database: only the `CaseRecord` is stored. Adding a case twice is not an error
//! (the first record stays).

mod appointments;
mod cases;
mod facts;
mod jobs;
mod outbox;
mod prescriptions;

pub use appointments::StoredBooking;
pub use cases::{MAX_RECOMMEND_CANDIDATES, case_library_insert};
pub use facts::upsert_consultation_facts;
pub(crate) use outbox::insert_outbox;
pub use outbox::{NewOutboxEvent, OutboxEntry};
pub use prescriptions::{
    PrescriptionChange, PrescriptionEventRow, PrescriptionFilter, StoredPrescription,
};

use sqlx::AnyConnection;

use super::sql::Sql;
use super::{Result, Store, StoreError, q};

impl Store {
    /// `plain` as stored: sealed and bound to (`id`, `field`) when encryption is on.
    fn seal_care(&self, id: &str, field: &str, plain: &str) -> String {
        match &self.keyring {
            Some(k) => k.seal_text(plain, &crate::crypto::Binding::new(id, field)),
            None => plain.to_owned(),
        }
    }

    /// A value written by [`Store::seal_care`], as written.
    fn open_care(&self, id: &str, field: &str, raw: String) -> Result<String> {
        self.open_text(id, field, raw)
    }

    /// The key a patient id is looked up by: its blind index when encryption is on.
    fn index_care(&self, value: &str) -> String {
        match &self.keyring {
            Some(k) => k.blind_index(value.as_bytes()),
            None => value.to_owned(),
        }
    }
}

/// A stored JSON value that does not decode: the store and the domain disagree.
fn json_err(what: &str, id: &str, e: &serde_json::Error) -> StoreError {
    StoreError::Inconsistent(format!("{what} {id}: stored JSON does not decode: {e}"))
}

async fn exec(conn: &mut AnyConnection, s: Sql, op: &'static str) -> Result<u64> {
    Ok(s.query()
        .execute(&mut *conn)
        .await
        .map_err(q(op))?
        .rows_affected())
}

/// Locks the `care_locks` rows of `keys` (sorted, so two transactions never wait on each
/// other in opposite orders) until the caller's transaction ends.
async fn lock_keys(conn: &mut AnyConnection, keys: &mut [String]) -> Result<()> {
    keys.sort_unstable();
    for key in keys.iter() {
        let mut s = Sql::new("INSERT INTO care_locks (key, n) VALUES (".into());
        s.bind(key.as_str());
        s.push(", 1) ON CONFLICT (key) DO UPDATE SET n = care_locks.n + 1");
        exec(conn, s, "lock a care row").await?;
    }
    Ok(())
}
