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
//! (an offered consultation counts as load, see the domain's `Load`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use huizhen_domain::expert::{
    AcceptTime, Agreement, AssignmentCount, Candidates, CaseRequest, Expert, ExpertIndex, Load,
    MatchDecision, Override, Presence,
};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Connection, Row};

use super::audit::{self, AuditEvent};
use super::sql::Sql;
use super::{Result, Store, StoreError, q};
use crate::message::{new_id, now_ms};

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
    /// The candidates, by id: shared with the store's registry cache, not copied.
    pub experts: Vec<Arc<Expert>>,
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
        Candidates::Borrowed(self.experts.iter().map(|e| &**e).collect())
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

/// Every department key an expert is filed under: each department and its dotted ancestors.
pub fn department_keys(expert: &Expert) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for d in &expert.departments {
        let d = d.trim();
        if d.is_empty() {
            continue;
        }
        keys.push(d.to_owned());
        let mut rest = d;
        while let Some((head, _)) = rest.rsplit_once('.') {
            if !head.is_empty() {
                keys.push(head.to_owned());
            }
            rest = head;
        }
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Every ICD-10 category an expert declares expertise in.
pub fn expertise_keys(expert: &Expert) -> Vec<String> {
    let mut cats: Vec<String> = expert
        .expertise
        .iter()
        .map(|c| c.category().to_owned())
        .collect();
    cats.sort_unstable();
    cats.dedup();
    cats
}

/// The registry as one `Store` last saw it, kept in step with the database by the change
/// sequence (`expert_sync`, migration 0009): see [`Store::prefetch_experts`].
#[derive(Debug, Default)]
pub struct ExpertCache {
    registry: tokio::sync::Mutex<Registry>,
}

/// The in-memory copy of the registry: experts with their runtime state, the department and
/// ICD-category index (the same keys as `expert_departments` / `expert_expertise`), and the
/// agreements by requesting facility.
#[derive(Debug, Default)]
struct Registry {
    /// The change sequence this copy includes (0: nothing read yet).
    seq: i64,
    /// Experts by id, with the version their facts were decoded from.
    experts: HashMap<String, (i64, Arc<Expert>)>,
    by_department: HashMap<String, BTreeSet<String>>,
    by_category: HashMap<String, BTreeSet<String>>,
    /// Agreements by requesting facility, then by id.
    agreements: HashMap<String, BTreeMap<String, Agreement>>,
    /// The requesting facility each agreement id is filed under.
    agreement_facility: HashMap<String, String>,
}

impl Registry {
    /// Files `expert` (facts and state) under `version`, moving its index keys.
    fn put_expert(&mut self, version: i64, expert: Expert) {
        let id = expert.id.clone();
        if let Some((_, old)) = self.experts.get(&id) {
            let old = old.clone();
            for k in department_keys(&old) {
                if let Some(set) = self.by_department.get_mut(&k) {
                    set.remove(&id);
                }
            }
            for k in expertise_keys(&old) {
                if let Some(set) = self.by_category.get_mut(&k) {
                    set.remove(&id);
                }
            }
        }
        for k in department_keys(&expert) {
            self.by_department.entry(k).or_default().insert(id.clone());
        }
        for k in expertise_keys(&expert) {
            self.by_category.entry(k).or_default().insert(id.clone());
        }
        self.experts.insert(id, (version, Arc::new(expert)));
    }

    fn put_agreement(&mut self, a: Agreement) {
        let id = a.id.trim().to_owned();
        let facility = a.requesting_facility.trim().to_owned();
        if let Some(old) = self.agreement_facility.insert(id.clone(), facility.clone())
            && let Some(m) = self.agreements.get_mut(&old)
        {
            m.remove(&id);
        }
        self.agreements.entry(facility).or_default().insert(id, a);
    }

    /// The candidates of `case`, by id: the experts filed under its department and, when it
    /// has an ICD-10 code, under the code's category (what the SQL index lookup returned).
    fn candidates(&self, case: &CaseRequest) -> Vec<Arc<Expert>> {
        let Some(dept) = self.by_department.get(case.department.trim()) else {
            return Vec::new();
        };
        let get = |id: &String| self.experts.get(id).map(|(_, e)| e.clone());
        match &case.icd10 {
            None => dept.iter().filter_map(get).collect(),
            Some(code) => {
                let Some(cat) = self.by_category.get(code.category()) else {
                    return Vec::new();
                };
                let (small, large) = if cat.len() < dept.len() {
                    (cat, dept)
                } else {
                    (dept, cat)
                };
                small
                    .iter()
                    .filter(|id| large.contains(*id))
                    .filter_map(get)
                    .collect()
            }
        }
    }
}

/// The runtime state of one changed expert row.
struct StateRow {
    id: String,
    version: i64,
    heartbeat: Option<i64>,
    open: i64,
    sessions: i64,
}

fn with_state(facts: &Expert, row: &StateRow) -> Expert {
    let mut e = facts.clone();
    e.presence = Presence {
        last_heartbeat: row.heartbeat.and_then(ms_to_time),
    };
    e.load = Load {
        open_consultations: count(row.open),
        sessions_today: count(row.sessions),
    };
    e
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

const EXPERT_COLUMNS: &str =
    "e.id, e.body, e.last_heartbeat, e.open_consultations, e.sessions_today";

fn expert_from_row(r: &AnyRow) -> Result<Expert> {
    let d = q("decode expert");
    let id: String = r.try_get("id").map_err(d)?;
    let body: String = r.try_get("body").map_err(q("decode expert"))?;
    let heartbeat: Option<i64> = r.try_get("last_heartbeat").map_err(q("decode expert"))?;
    let open: i64 = r
        .try_get("open_consultations")
        .map_err(q("decode expert"))?;
    let sessions: i64 = r.try_get("sessions_today").map_err(q("decode expert"))?;
    let mut e: Expert = serde_json::from_str(&body).map_err(|err| json_err("expert", &id, &err))?;
    e.presence = Presence {
        last_heartbeat: heartbeat.and_then(ms_to_time),
    };
    e.load = Load {
        open_consultations: count(open),
        sessions_today: count(sessions),
    };
    Ok(e)
}

async fn exec(conn: &mut AnyConnection, s: Sql, op: &'static str) -> Result<u64> {
    Ok(s.query()
        .execute(&mut *conn)
        .await
        .map_err(q(op))?
        .rows_affected())
}

/// Inserts or replaces one expert and its index rows on `conn` (in the caller's transaction).
/// Returns true when the expert was new.
async fn upsert_expert(conn: &mut AnyConnection, e: &Expert, now: i64, seq: i64) -> Result<bool> {
    let id = e.id.trim();
    let mut facts = e.clone();
    facts.presence = Presence::default();
    facts.load = Load::default();
    let body = serde_json::to_string(&facts).map_err(|err| json_err("encode expert", id, &err))?;
    let mut s = Sql::new("SELECT id FROM experts WHERE id = ".into());
    s.bind(id);
    let existed = s
        .query()
        .fetch_optional(&mut *conn)
        .await
        .map_err(q("look up expert"))?
        .is_some();
    let mut s = Sql::new(
        "INSERT INTO experts (id, facility, body, open_consultations, sessions_today, seq, updated_at) VALUES ("
            .into(),
    );
    s.bind(id);
    s.push(", ");
    s.bind(e.facility.trim());
    s.push(", ");
    s.bind(body);
    s.push(", 0, 0, ");
    s.bind(seq);
    s.push(", ");
    s.bind(now);
    s.push(") ON CONFLICT (id) DO UPDATE SET facility = excluded.facility, body = excluded.body, seq = excluded.seq, updated_at = excluded.updated_at, version = experts.version + 1");
    exec(conn, s, "upsert expert").await?;
    // Runtime state only when the file gives it.
    if let Some(t) = e.presence.last_heartbeat {
        let mut s = Sql::new("UPDATE experts SET last_heartbeat = ".into());
        s.bind(t.timestamp_millis());
        s.push(" WHERE id = ");
        s.bind(id);
        exec(conn, s, "set expert presence").await?;
    }
    if e.load != Load::default() {
        let mut s = Sql::new("UPDATE experts SET open_consultations = ".into());
        s.bind(i64::from(e.load.open_consultations));
        s.push(", sessions_today = ");
        s.bind(i64::from(e.load.sessions_today));
        s.push(" WHERE id = ");
        s.bind(id);
        exec(conn, s, "set expert load").await?;
    }
    for (table, column, keys) in [
        ("expert_departments", "department", department_keys(e)),
        ("expert_expertise", "category", expertise_keys(e)),
    ] {
        let mut s = Sql::new(format!("DELETE FROM {table} WHERE expert_id = "));
        s.bind(id);
        exec(conn, s, "clear expert index").await?;
        if keys.is_empty() {
            continue;
        }
        let mut s = Sql::new(format!("INSERT INTO {table} ({column}, expert_id) VALUES "));
        for (i, k) in keys.into_iter().enumerate() {
            if i > 0 {
                s.push(", ");
            }
            s.push("(");
            s.bind(k);
            s.push(", ");
            s.bind(id);
            s.push(")");
        }
        exec(conn, s, "index expert").await?;
    }
    Ok(!existed)
}

async fn upsert_agreement(
    conn: &mut AnyConnection,
    a: &Agreement,
    now: i64,
    seq: i64,
) -> Result<()> {
    let id = a.id.trim();
    let body = serde_json::to_string(a).map_err(|err| json_err("encode agreement", id, &err))?;
    let mut s = Sql::new(
        "INSERT INTO expert_agreements (id, requesting_facility, expert_facility, body, seq, updated_at) VALUES ("
            .into(),
    );
    s.bind(id);
    s.push(", ");
    s.bind(a.requesting_facility.trim());
    s.push(", ");
    s.bind(a.expert_facility.trim());
    s.push(", ");
    s.bind(body);
    s.push(", ");
    s.bind(seq);
    s.push(", ");
    s.bind(now);
    s.push(") ON CONFLICT (id) DO UPDATE SET requesting_facility = excluded.requesting_facility, expert_facility = excluded.expert_facility, body = excluded.body, seq = excluded.seq, updated_at = excluded.updated_at");
    exec(conn, s, "upsert agreement").await?;
    Ok(())
}

impl Store {
    /// Imports experts and agreements in one transaction: an id already stored is replaced
    /// (upsert), its index rows rebuilt; its presence and load are kept unless the expert in
    /// `experts` gives them. `audit` is recorded in the same transaction.
    pub async fn upsert_experts(
        &self,
        experts: &[Expert],
        agreements: &[Agreement],
        audit: Option<&AuditEvent>,
    ) -> Result<ImportSummary> {
        let now = now_ms();
        let mut conn = self
            .write_pool()
            .acquire()
            .await
            .map_err(q("acquire writer connection"))?;
        let mut tx = conn.begin().await.map_err(q("begin expert import"))?;
        let mut summary = ImportSummary::default();
        let seq = next_seq(&mut tx).await?;
        for e in experts {
            if upsert_expert(&mut tx, e, now, seq).await? {
                summary.experts_added += 1;
            } else {
                summary.experts_updated += 1;
            }
        }
        for a in agreements {
            upsert_agreement(&mut tx, a, now, seq).await?;
            summary.agreements += 1;
        }
        if let Some(e) = audit {
            audit::append(&mut tx, e, self.anchor.as_deref()).await?;
        }
        tx.commit().await.map_err(q("commit expert import"))?;
        Ok(summary)
    }

    /// One expert with its current presence and load.
    pub async fn expert(&self, id: &str) -> Result<Option<Expert>> {
        let mut s = Sql::new(format!(
            "SELECT {EXPERT_COLUMNS} FROM experts e WHERE e.id = "
        ));
        s.bind(id.trim());
        let row = s
            .query()
            .fetch_optional(&self.read)
            .await
            .map_err(q("read expert"))?;
        row.map(|r| expert_from_row(&r)).transpose()
    }

    /// Every expert, by id (for `huizhen experts list`; a full read on purpose).
    pub async fn list_experts(&self) -> Result<Vec<Expert>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EXPERT_COLUMNS} FROM experts e ORDER BY e.id"
        )))
        .fetch_all(&self.read)
        .await
        .map_err(q("list experts"))?;
        rows.iter().map(expert_from_row).collect()
    }

    /// Every agreement, by id.
    pub async fn list_agreements(&self) -> Result<Vec<Agreement>> {
        let rows = sqlx::query("SELECT id, body FROM expert_agreements ORDER BY id")
            .fetch_all(&self.read)
            .await
            .map_err(q("list agreements"))?;
        rows.iter().map(agreement_from_row).collect()
    }

    /// Records an expert's heartbeat at `at` (presence). False when the expert is unknown.
    pub async fn expert_heartbeat(&self, id: &str, at: DateTime<Utc>) -> Result<bool> {
        let mut s = Sql::new("UPDATE experts SET last_heartbeat = ".into());
        s.bind(at.timestamp_millis());
        self.update_expert_state(id, s, "expert heartbeat").await
    }

    /// Runs `UPDATE experts SET …` (given up to its last assignment) for expert `id`, stamped
    /// with the next change sequence value, in one transaction. False when `id` is unknown.
    async fn update_expert_state(&self, id: &str, mut s: Sql, op: &'static str) -> Result<bool> {
        let mut conn = self
            .write_pool()
            .acquire()
            .await
            .map_err(q("acquire writer connection"))?;
        let mut tx = conn.begin().await.map_err(q(op))?;
        let seq = next_seq(&mut tx).await?;
        s.push(", seq = ");
        s.bind(seq);
        s.push(" WHERE id = ");
        s.bind(id.trim());
        let n = exec(&mut tx, s, op).await?;
        if n == 0 {
            // Nothing changed: do not advance the sequence for nothing.
            tx.rollback().await.map_err(q(op))?;
            return Ok(false);
        }
        tx.commit().await.map_err(q(op))?;
        Ok(true)
    }

    /// Replaces an expert's load (the consultation workflow keeps it). False when unknown.
    pub async fn set_expert_load(&self, id: &str, load: Load) -> Result<bool> {
        let mut s = Sql::new("UPDATE experts SET open_consultations = ".into());
        s.bind(i64::from(load.open_consultations));
        s.push(", sessions_today = ");
        s.bind(i64::from(load.sessions_today));
        self.update_expert_state(id, s, "set expert load").await
    }

    /// Reads what matching `case` needs: the candidate experts (by the department, and the
    /// ICD-10 category when the case has a code) with their current presence and load, and
    /// the agreements of the requesting facility.
    ///
    /// From the store's in-memory copy of the registry, brought up to date first: one
    /// one-row read of the change sequence, and only when it moved, the expert and agreement
    /// rows stamped after the copy (their JSON bodies only for a new version). No scan, and
    /// in the steady state no candidate row is read at all.
    pub async fn prefetch_experts(&self, case: &CaseRequest) -> Result<PrefetchedExperts> {
        let mut registry = self.experts_cache.registry.lock().await;
        self.sync_experts(&mut registry).await?;
        let experts = registry.candidates(case);
        let agreements = registry
            .agreements
            .get(case.requesting_facility.trim())
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        Ok(PrefetchedExperts {
            experts,
            agreements,
        })
    }

    /// Brings `registry` up to the database's change sequence.
    async fn sync_experts(&self, registry: &mut Registry) -> Result<()> {
        let row = sqlx::query("SELECT seq FROM expert_sync WHERE id = 1")
            .fetch_one(&self.read)
            .await
            .map_err(q("read expert change sequence"))?;
        let seq: i64 = row
            .try_get("seq")
            .map_err(q("decode expert change sequence"))?;
        if seq == registry.seq {
            return Ok(());
        }
        // Rows stamped after the copy. One committed later than the counter read is applied
        // now and again next time (applying is idempotent); none stamped ≤ `seq` can still be
        // uncommitted, as writers hold the counter row until they commit.
        let mut s = Sql::new(
            "SELECT id, version, last_heartbeat, open_consultations, sessions_today FROM experts WHERE seq > "
                .into(),
        );
        s.bind(registry.seq);
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read changed experts"))?;
        let mut changed = Vec::with_capacity(rows.len());
        for r in &rows {
            let d = || q("decode changed expert");
            changed.push(StateRow {
                id: r.try_get("id").map_err(d())?,
                version: r.try_get("version").map_err(d())?,
                heartbeat: r.try_get("last_heartbeat").map_err(d())?,
                open: r.try_get("open_consultations").map_err(d())?,
                sessions: r.try_get("sessions_today").map_err(d())?,
            });
        }
        let mut facts: HashMap<String, (i64, Expert)> = HashMap::new();
        let missing: Vec<&str> = changed
            .iter()
            .filter(|r| {
                registry
                    .experts
                    .get(&r.id)
                    .is_none_or(|(v, _)| *v != r.version)
            })
            .map(|r| r.id.as_str())
            .collect();
        for chunk in missing.chunks(500) {
            let mut s = Sql::new("SELECT id, version, body FROM experts WHERE id IN (".into());
            for (i, id) in chunk.iter().enumerate() {
                if i > 0 {
                    s.push(", ");
                }
                s.bind(*id);
            }
            s.push(")");
            let rows = s
                .query()
                .fetch_all(&self.read)
                .await
                .map_err(q("read expert bodies"))?;
            for r in &rows {
                let d = || q("decode expert body");
                let id: String = r.try_get("id").map_err(d())?;
                let version: i64 = r.try_get("version").map_err(d())?;
                let body: String = r.try_get("body").map_err(d())?;
                let e: Expert =
                    serde_json::from_str(&body).map_err(|err| json_err("expert", &id, &err))?;
                facts.insert(id, (version, e));
            }
        }
        for row in &changed {
            // The body read may be of a newer version than the state row (an import between
            // the two reads): file it under the body's version, so the next sync (which sees
            // that import's stamp) does not take it for current when it is not.
            let (version, e) = match facts.get(&row.id) {
                Some((v, e)) => (*v, with_state(e, row)),
                None => match registry.experts.get(&row.id) {
                    Some((v, e)) => (*v, with_state(e, row)),
                    None => continue,
                },
            };
            registry.put_expert(version, e);
        }
        let mut s = Sql::new("SELECT id, body FROM expert_agreements WHERE seq > ".into());
        s.bind(registry.seq);
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read changed agreements"))?;
        for r in &rows {
            registry.put_agreement(agreement_from_row(r)?);
        }
        registry.seq = seq;
        Ok(())
    }

    /// The agreements whose requesting facility is `facility`, by id.
    pub async fn agreements_of(&self, facility: &str) -> Result<Vec<Agreement>> {
        let (open_agg, close_agg) = match self.backend {
            super::Backend::Sqlite => (
                "SELECT json_group_array(json(body)) AS j FROM (SELECT body FROM expert_agreements WHERE requesting_facility = ",
                " ORDER BY id) AS a",
            ),
            super::Backend::Postgres => (
                "SELECT COALESCE(json_agg(body::json ORDER BY id)::text, '[]') AS j FROM expert_agreements WHERE requesting_facility = ",
                "",
            ),
        };
        let mut s = Sql::new(open_agg.into());
        s.bind(facility);
        s.push(close_agg);
        let row = s
            .query()
            .fetch_one(&self.read)
            .await
            .map_err(q("read agreements"))?;
        let text: String = row.try_get("j").map_err(q("decode agreements"))?;
        serde_json::from_str(&text).map_err(|err| json_err("agreements of", facility, &err))
    }

    /// Stores a decision (MATCH-31) and assigns its case to the first selected expert (whose
    /// open consultations go up by one), with `audit` in the same transaction. Returns the new
    /// decision id.
    pub async fn save_match_decision(
        &self,
        decision: &MatchDecision,
        audit: Option<&AuditEvent>,
    ) -> Result<String> {
        let id = new_id();
        self.save_match_decision_as(&id, decision, audit).await?;
        Ok(id)
    }

    /// [`Store::save_match_decision`] under a given id (so that the audit event can name it).
    pub async fn save_match_decision_as(
        &self,
        id: &str,
        decision: &MatchDecision,
        audit: Option<&AuditEvent>,
    ) -> Result<()> {
        let now = now_ms();
        let body =
            serde_json::to_string(decision).map_err(|err| json_err("encode decision", id, &err))?;
        let case = &decision.case;
        let mut conn = self
            .write_pool()
            .acquire()
            .await
            .map_err(q("acquire writer connection"))?;
        let mut tx = conn.begin().await.map_err(q("begin match decision"))?;
        let mut s = Sql::new(
            "INSERT INTO match_decisions (id, case_id, requesting_facility, department, decided_at, body) VALUES ("
                .into(),
        );
        s.bind(id);
        s.push(", ");
        s.bind(case.id.as_str());
        s.push(", ");
        s.bind(case.requesting_facility.trim());
        s.push(", ");
        s.bind(case.department.trim());
        s.push(", ");
        s.bind(decision.now.timestamp_millis());
        s.push(", ");
        s.bind(body);
        s.push(")");
        exec(&mut tx, s, "store match decision").await?;
        if let Some(first) = decision.selected.first() {
            let mut s = Sql::new(
                "INSERT INTO expert_assignments (decision_id, expert_id, department, requesting_facility, assigned_at) VALUES ("
                    .into(),
            );
            s.bind(id);
            s.push(", ");
            s.bind(first.as_str());
            s.push(", ");
            s.bind(case.department.trim());
            s.push(", ");
            s.bind(case.requesting_facility.trim());
            s.push(", ");
            s.bind(now);
            s.push(")");
            exec(&mut tx, s, "assign case").await?;
            bump_open(&mut tx, first, 1).await?;
        }
        if let Some(e) = audit {
            audit::append(&mut tx, e, self.anchor.as_deref()).await?;
        }
        tx.commit().await.map_err(q("commit match decision"))?;
        Ok(())
    }

    /// A stored decision with its overrides.
    pub async fn match_decision(&self, id: &str) -> Result<Option<StoredDecision>> {
        let mut s = Sql::new(
            "SELECT id, case_id, requesting_facility, decided_at, body FROM match_decisions WHERE id = "
                .into(),
        );
        s.bind(id);
        let Some(r) = s
            .query()
            .fetch_optional(&self.read)
            .await
            .map_err(q("read match decision"))?
        else {
            return Ok(None);
        };
        let d = || q("decode match decision");
        let body: String = r.try_get("body").map_err(d())?;
        let decision: MatchDecision =
            serde_json::from_str(&body).map_err(|err| json_err("match decision", id, &err))?;
        let mut s =
            Sql::new("SELECT id, at, body FROM match_overrides WHERE decision_id = ".into());
        s.bind(id);
        s.push(" ORDER BY at, id");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read overrides"))?;
        let mut overrides = Vec::with_capacity(rows.len());
        for o in &rows {
            let oid: String = o.try_get("id").map_err(q("decode override"))?;
            let body: String = o.try_get("body").map_err(q("decode override"))?;
            overrides.push(StoredOverride {
                at: o.try_get("at").map_err(q("decode override"))?,
                record: serde_json::from_str(&body)
                    .map_err(|err| json_err("override", &oid, &err))?,
                id: oid,
            });
        }
        Ok(Some(StoredDecision {
            id: r.try_get("id").map_err(d())?,
            case_id: r.try_get("case_id").map_err(d())?,
            requesting_facility: r.try_get("requesting_facility").map_err(d())?,
            decided_at: r.try_get("decided_at").map_err(d())?,
            decision,
            overrides,
        }))
    }

    /// The decision ids of a case, oldest first.
    pub async fn match_decisions_of_case(&self, case_id: &str) -> Result<Vec<String>> {
        let mut s = Sql::new("SELECT id FROM match_decisions WHERE case_id = ".into());
        s.bind(case_id);
        s.push(" ORDER BY decided_at, id");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("find match decisions"))?;
        rows.iter()
            .map(|r| r.try_get("id").map_err(q("decode match decision id")))
            .collect()
    }

    /// Records a coordinator's override of decision `decision_id`, moves the assignment (and
    /// one open consultation) to the chosen expert, and writes `audit`, in one transaction.
    /// Returns the override id.
    pub async fn save_override(
        &self,
        decision_id: &str,
        record: &Override,
        audit: &AuditEvent,
    ) -> Result<String> {
        let id = new_id();
        let now = now_ms();
        let body =
            serde_json::to_string(record).map_err(|err| json_err("encode override", &id, &err))?;
        let mut conn = self
            .write_pool()
            .acquire()
            .await
            .map_err(q("acquire writer connection"))?;
        let mut tx = conn.begin().await.map_err(q("begin override"))?;
        let mut s = Sql::new(
            "INSERT INTO match_overrides (id, decision_id, expert_id, reason, actor, at, body) VALUES ("
                .into(),
        );
        s.bind(id.as_str());
        for v in [decision_id, &record.expert_id, &record.reason, &record.by] {
            s.push(", ");
            s.bind(v.to_owned());
        }
        s.push(", ");
        s.bind(now);
        s.push(", ");
        s.bind(body);
        s.push(")");
        exec(&mut tx, s, "store override").await?;
        let mut s =
            Sql::new("SELECT expert_id FROM expert_assignments WHERE decision_id = ".into());
        s.bind(decision_id);
        let previous: Option<String> = s
            .query()
            .fetch_optional(&mut *tx)
            .await
            .map_err(q("read assignment"))?
            .map(|r| r.try_get("expert_id"))
            .transpose()
            .map_err(q("decode assignment"))?;
        match previous {
            Some(prev) if prev == record.expert_id => {}
            Some(prev) => {
                let mut s = Sql::new("UPDATE expert_assignments SET expert_id = ".into());
                s.bind(record.expert_id.as_str());
                s.push(", accepted_at = NULL WHERE decision_id = ");
                s.bind(decision_id);
                exec(&mut tx, s, "move assignment").await?;
                bump_open(&mut tx, &prev, -1).await?;
                bump_open(&mut tx, &record.expert_id, 1).await?;
            }
            None => {
                let mut s = Sql::new(
                    "INSERT INTO expert_assignments (decision_id, expert_id, department, requesting_facility, assigned_at) \
                     SELECT id, "
                        .into(),
                );
                s.bind(record.expert_id.as_str());
                s.push(", department, requesting_facility, ");
                s.bind(now);
                s.push(" FROM match_decisions WHERE id = ");
                s.bind(decision_id);
                exec(&mut tx, s, "assign case").await?;
                bump_open(&mut tx, &record.expert_id, 1).await?;
            }
        }
        audit::append(&mut tx, audit, self.anchor.as_deref()).await?;
        tx.commit().await.map_err(q("commit override"))?;
        Ok(id)
    }

    /// Records that the assigned expert accepted decision `decision_id`'s case at `at` (the
    /// time-to-accept of the fairness report). False when there is no such open assignment.
    pub async fn record_acceptance(
        &self,
        decision_id: &str,
        expert_id: &str,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let mut s = Sql::new("UPDATE expert_assignments SET accepted_at = ".into());
        s.bind(at.timestamp_millis());
        s.push(" WHERE decision_id = ");
        s.bind(decision_id);
        s.push(" AND expert_id = ");
        s.bind(expert_id);
        s.push(" AND accepted_at IS NULL");
        let r = s
            .query()
            .execute(&self.write)
            .await
            .map_err(q("record acceptance"))?;
        Ok(r.rows_affected() > 0)
    }

    /// The counts behind the fairness report for assignments made in `[from, to)` (ms), for
    /// one department or all: assignments per expert (and a zero row for every other expert
    /// filed under the department), and the accept times, only of the requesting facilities
    /// in `facilities` when given.
    pub async fn fairness_inputs(
        &self,
        department: Option<&str>,
        from: i64,
        to: i64,
        facilities: Option<&[String]>,
    ) -> Result<FairnessInputs> {
        let mut s = Sql::new(
            "SELECT department, expert_id, COUNT(*) AS n FROM expert_assignments WHERE assigned_at >= "
                .into(),
        );
        s.bind(from);
        s.push(" AND assigned_at < ");
        s.bind(to);
        if let Some(d) = department {
            s.push(" AND department = ");
            s.bind(d.trim());
        }
        s.push(" GROUP BY department, expert_id ORDER BY department, expert_id");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("count assignments"))?;
        let mut out = FairnessInputs::default();
        let mut departments: Vec<String> = department
            .map(|d| vec![d.trim().to_owned()])
            .unwrap_or_default();
        for r in &rows {
            let d = q("decode assignment count");
            let dept: String = r.try_get("department").map_err(d)?;
            let n: i64 = r.try_get("n").map_err(q("decode assignment count"))?;
            if !departments.contains(&dept) {
                departments.push(dept.clone());
            }
            out.assignments.push(AssignmentCount {
                expert_id: r
                    .try_get("expert_id")
                    .map_err(q("decode assignment count"))?,
                department: dept,
                count: u64::try_from(n).unwrap_or(0),
            });
        }
        // The idle experts of each department count too (zero assignments).
        for dept in departments {
            let mut s =
                Sql::new("SELECT expert_id FROM expert_departments WHERE department = ".into());
            s.bind(dept.as_str());
            let rows = s
                .query()
                .fetch_all(&self.read)
                .await
                .map_err(q("list department experts"))?;
            for r in &rows {
                let expert_id: String = r.try_get("expert_id").map_err(q("decode expert id"))?;
                if !out
                    .assignments
                    .iter()
                    .any(|a| a.department == dept && a.expert_id == expert_id)
                {
                    out.assignments.push(AssignmentCount {
                        expert_id,
                        department: dept.clone(),
                        count: 0,
                    });
                }
            }
        }
        let mut s = Sql::new(
            "SELECT requesting_facility, accepted_at - assigned_at AS ms FROM expert_assignments \
             WHERE accepted_at IS NOT NULL AND assigned_at >= "
                .into(),
        );
        s.bind(from);
        s.push(" AND assigned_at < ");
        s.bind(to);
        if let Some(d) = department {
            s.push(" AND department = ");
            s.bind(d.trim());
        }
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read accept times"))?;
        for r in &rows {
            let facility: String = r
                .try_get("requesting_facility")
                .map_err(q("decode accept time"))?;
            if facilities.is_some_and(|f| !f.contains(&facility)) {
                continue;
            }
            let ms: i64 = r.try_get("ms").map_err(q("decode accept time"))?;
            out.accepts.push(AcceptTime {
                requesting_facility: facility,
                seconds: u64::try_from(ms.max(0) / 1000).unwrap_or(0),
            });
        }
        Ok(out)
    }
}

fn agreement_from_row(r: &AnyRow) -> Result<Agreement> {
    let id: String = r.try_get("id").map_err(q("decode agreement"))?;
    let body: String = r.try_get("body").map_err(q("decode agreement"))?;
    serde_json::from_str(&body).map_err(|err| json_err("agreement", &id, &err))
}

/// Adds `delta` to an expert's open consultations (never below zero).
async fn bump_open(conn: &mut AnyConnection, expert_id: &str, delta: i64) -> Result<()> {
    let mut s =
        Sql::new("UPDATE experts SET open_consultations = CASE WHEN open_consultations + ".into());
    s.bind(delta);
    s.push(" < 0 THEN 0 ELSE open_consultations + ");
    s.bind(delta);
    s.push(" END, seq = ");
    let seq = next_seq(conn).await?;
    s.bind(seq);
    s.push(" WHERE id = ");
    s.bind(expert_id);
    exec(conn, s, "update expert load").await?;
    Ok(())
}
