//! The expert registry, presence, load, match decisions, overrides and assignments (issue 14;
//! STANDARDS MATCH-01, MATCH-30, MATCH-31). The matching itself is pure
//! ([`huizhen_domain::expert`]); the store *prefetches* what one case needs with SQL and hands
//! it to the domain as a small in-memory [`PrefetchedExperts`] implementing
//! [`ExpertIndex`].
//!
//! **No scan.** Every expert is filed under each of its departments and their dotted ancestors
//! (`03.02` is also filed under `03`: `expert_departments`) and under the ICD-10 category of
//! each declared code (`expert_expertise`); a candidate lookup takes the experts under the
//! case's department (and category, when it has a code). This returns at least every expert
//! the hard filters could accept (the [`ExpertIndex`] contract): the filters check the
//! department and the expertise with the same rules the keys are built from.
//!
//! **Registry facts and runtime state.** `experts.body` holds the domain's `Expert` JSON with
//! presence and load left at their defaults; the last heartbeat and the load live in columns so
//! a heartbeat or a load change is one `UPDATE`, and an import does not wipe them unless the
//! file gives them. Expert data is not patient data and is stored in clear; a case carries no
//! patient attribute (the domain's `CaseRequest` refuses them).
//!
//! **The registry copy.** Each `Store` keeps the registry in memory (experts with their state,
//! the department and category keys, the agreements by requesting facility) and answers
//! lookups from it. Every write to an expert or an agreement (import, heartbeat, load,
//! assignment) takes the next value of the `expert_sync` counter in its transaction and stamps
//! its rows with it (`seq`). Before each lookup the store reads the counter — one row — and,
//! when it moved, the rows stamped since, decoding bodies only for a new `version`. Writers
//! hold the counter row until they commit, so stamps become visible in order and no change is
//! skipped; another process's import or heartbeat is seen at the next lookup.
//!
//! **Assignments.** Each decision assigns its case to its first selected expert (or, after an
//! override, to the coordinator's choice): one `expert_assignments` row per decision, which is
//! what the fairness report counts, and the assigned expert's open consultations go up by one
//! (an offered consultation counts as load, see the domain's `Load`). The consultation
//! workflow keeps the load itself instead: its decisions take none and are stored in the
//! transaction of the offer they lead to; each consultation change adds or gives back what
//! the domain's `load_changes` says, in the change's transaction
//! (`store/consultations/write.rs`).

//!
//! **Layout.** The in-memory copy and its sync (`registry.rs`); the
//! import, state updates and plain reads (`directory.rs`); decisions, overrides, assignments
//! and the fairness counts (`decisions.rs`); the shared types and SQL helpers here.

mod decisions;
mod directory;
mod registry;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use huizhen_domain::expert::{
    AcceptTime, Agreement, AssignmentCount, Candidates, CaseRequest, Expert, ExpertCard,
    ExpertIndex, MatchDecision, Override,
};
use sqlx::{AnyConnection, Row};

use super::sql::Sql;
use super::{Result, StoreError, q};

pub(crate) use decisions::bump_open;
pub use huizhen_domain::expert::{department_keys, expertise_keys};
pub use registry::ExpertCache;

/// What one import changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportSummary {
    /// Experts that were not in the store.
    pub experts_added: usize,
    /// Experts replaced (registry facts; runtime state kept unless the file gave it).
    pub experts_updated: usize,
    /// Agreements added or replaced.
    pub agreements: usize,
}

/// The experts and agreements one case needs, read from the store: an [`ExpertIndex`] for
/// exactly that case (built by [`Store::prefetch_experts`]; its `candidates` ignore the case
/// argument and return what was prefetched).
#[derive(Debug, Clone, Default)]
pub struct PrefetchedExperts {
    /// The candidates, by id, as cards (each dereferences to its `Expert`): shared with the
    /// store's registry copy, not copied.
    pub experts: Arc<Vec<ExpertCard>>,
    /// The requesting facility's agreements.
    pub agreements: Vec<Agreement>,
}

impl ExpertIndex for PrefetchedExperts {
    fn candidates(&self, _case: &CaseRequest) -> Vec<Expert> {
        self.experts.iter().map(|e| Expert::clone(e)).collect()
    }

    fn agreements(&self, _requesting_facility: &str) -> Vec<Agreement> {
        self.agreements.clone()
    }

    fn candidate_refs(&self, _case: &CaseRequest) -> Candidates<'_> {
        Candidates::Cards(self.experts.clone())
    }
}

/// A stored decision with its overrides, as the API shows it (MATCH-31).
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredDecision {
    /// The decision id.
    pub id: String,
    /// The case (Task) id.
    pub case_id: String,
    /// The inviting facility: the decision's facility scope.
    pub requesting_facility: String,
    /// When it was decided (ms since the epoch).
    pub decided_at: i64,
    /// The full decision: inputs, ranking with contributions, exclusions with reasons,
    /// selection, scorer.
    pub decision: MatchDecision,
    /// Coordinators' overrides, oldest first.
    pub overrides: Vec<StoredOverride>,
}

/// One override as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredOverride {
    /// The override id.
    pub id: String,
    /// When (ms since the epoch).
    pub at: i64,
    /// Who, which expert, why, and where that expert stood.
    #[serde(flatten)]
    pub record: Override,
}

/// The counts behind a fairness report for a period.
#[derive(Debug, Clone, Default)]
pub struct FairnessInputs {
    /// Assignments per expert and department, with zero rows for the department's idle experts.
    pub assignments: Vec<AssignmentCount>,
    /// Accepted assignments: requesting facility and seconds to accept.
    pub accepts: Vec<AcceptTime>,
}

/// Takes the next value of the registry's change sequence in the caller's transaction (the
/// counter row stays locked until it commits, so stamps become visible in order).
async fn next_seq(conn: &mut AnyConnection) -> Result<i64> {
    let row = sqlx::query("UPDATE expert_sync SET seq = seq + 1 WHERE id = 1 RETURNING seq")
        .fetch_one(&mut *conn)
        .await
        .map_err(q("advance expert change sequence"))?;
    row.try_get("seq")
        .map_err(q("decode expert change sequence"))
}

fn json_err(op: &'static str, id: &str, e: &serde_json::Error) -> StoreError {
    StoreError::Inconsistent(format!("{op} {id}: stored JSON does not decode: {e}"))
}

fn ms_to_time(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

fn count(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

async fn exec(conn: &mut AnyConnection, s: Sql, op: &'static str) -> Result<u64> {
    Ok(s.query()
        .execute(&mut *conn)
        .await
        .map_err(q(op))?
        .rows_affected())
}
