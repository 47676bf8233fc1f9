//! The patient identity index (issue 14; STANDARDS MATCH-05, IHE-01 PIX, IHE-02 PDQ): the SQL
//! side of [`huizhen_domain::identity`].
//!
//! * `persons`: master person ids, allocated by the database (`AUTOINCREMENT`/`BIGSERIAL`).
//! * `identities`: one row per facility identifier (facility + local id, unique together),
//!   linked to a person, with the normalised demographics as JSON and an `active` flag (a
//!   record retired by an ADT^A40 merge stays, inactive, pointing at the surviving person).
//! * `identities.keys`: the blocking keys of each record (hashed), which every engine process
//!   keeps as postings in memory (`postings.rs`), so a lookup never scans the index.
//! * `identity_history`: every decision and every change of a link (match, unlink, relink,
//!   merge, accept, reject, undo) with the person before and after, the matcher's JSON (grades,
//!   scores, per-field contributions) and who did it and why. Rows of one operation share a
//!   `batch`, which [`Store::identity_undo`] reverses (an unmerge is the undo of a merge).
//! * `identity_reviews`: the review queue of probable and possible candidates.
//!
//! **Encryption at rest.** The demographics are patient data: with a keyring they are sealed
//! like message bodies (bound to `identity/<facility>/<local id>`, field `person`), and the
//! blocking keys (which contain resident ids, phones, names with birth dates) are stored as
//! their blind index (`hmac:…`, the same HMAC key as the dedup index), which equality lookups
//! need and which reveals nothing. Facility and local id stay in clear: they are the
//! index's key (unique together, PIX lookups, `huizhen patients links`) and carry no
//! demographics; decisions hold identifiers, grades and weights, no demographics.
//! `huizhen patients reseal` ([`Store::identity_reseal_batch`]) re-seals them with the active key
//! and rebuilds the keys, after a rotation or after turning encryption on (`huizhen keys rotate
//! --reencrypt` covers messages and effects only).
//!
//! The domain's matcher is synchronous, so the store *prefetches*: [`Store::identity_prefetch`]
//! ranks the records sharing a record's keys from the postings and reads them by id, and hands
//! back a [`Prefetched`] index that implements [`CandidateIndex`] in memory.

use std::collections::BTreeMap;

use huizhen_domain::identity::{
    BlockingKey, CandidateIndex, Grade, IndexedIdentity, MatchDecision, NormalizedPerson, PersonId,
};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::audit::{self, AuditEvent};
use super::sql::Sql;
use super::{Result, Store, StoreError, q};
use crate::message::{new_id, now_ms};

mod batch;
mod postings;

pub use batch::{Audited, BatchLinked};
pub(crate) use postings::Postings;

/// A key shared by more records than this is skipped at lookup (a clinic's switchboard number,
/// a very common name in one year), as [`huizhen_domain::identity::MemoryIndex`] does.
pub const MAX_POSTINGS: i64 = 2_000;

/// The candidates of one record, read ahead from the store: a [`CandidateIndex`] for
/// [`huizhen_domain::identity::Matcher::decide`]. It answers with what it was prefetched for
/// (whatever keys it is asked with), those sharing the most keys first.
#[derive(Debug, Clone, Default)]
pub struct Prefetched {
    /// The candidate records, most shared keys first.
    pub entries: Vec<IndexedIdentity>,
}

impl CandidateIndex for Prefetched {
    fn candidates(&self, _keys: &[BlockingKey], limit: usize) -> Vec<IndexedIdentity> {
        self.entries.iter().take(limit).cloned().collect()
    }
}

/// One facility record of the index (without its demographics).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct IdentityRow {
    pub id: i64,
    pub facility: String,
    pub local_id: String,
    pub person_id: i64,
    /// False for a record retired by a merge (ADT^A40).
    pub active: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One row of the link history.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HistoryRow {
    pub id: i64,
    /// Rows of one operation share it; [`Store::identity_undo`] takes it.
    pub batch: String,
    pub identity_id: i64,
    /// `match`, `unlink`, `relink`, `merge`, `accept`, `reject` or `undo`.
    pub action: String,
    pub from_person: Option<i64>,
    pub to_person: Option<i64>,
    pub grade: Option<String>,
    pub score: Option<f64>,
    /// The matcher's decision (a `match`) or the accepted/rejected candidate, as JSON.
    pub decision: Option<serde_json::Value>,
    pub actor: String,
    pub reason: String,
    /// True once [`Store::identity_undo`] reversed it.
    pub undone: bool,
    pub at: i64,
}

/// One entry of the review queue.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ReviewRow {
    pub id: i64,
    /// The record under review.
    pub identity_id: i64,
    pub facility: String,
    pub local_id: String,
    /// The person it is linked to now.
    pub person_id: i64,
    /// The person it may belong to.
    pub candidate_person: i64,
    /// `probable` or `possible`.
    pub grade: String,
    pub score: f64,
    /// The candidate as the matcher explained it (per-field contributions, findings, records).
    pub decision: serde_json::Value,
    /// `pending`, `accepted` or `rejected`.
    pub state: String,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    pub decided_at: Option<i64>,
    pub created_at: i64,
}

/// What [`Store::identity_link_batch`] did with a decision.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Recorded {
    pub identity_id: i64,
    /// The person the record is linked to now.
    pub person_id: i64,
    /// The person it was linked to before (an update of a known record).
    pub previous_person: Option<i64>,
    /// True when a new person was allocated for it.
    pub new_person: bool,
    /// Review-queue entries added or refreshed.
    pub reviews: Vec<i64>,
    /// The history batch of this decision.
    pub batch: String,
}

/// One candidate pair the matcher found (for `huizhen patients pairs`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PairRow {
    pub facility_a: String,
    pub local_id_a: String,
    pub facility_b: String,
    pub local_id_b: String,
    pub grade: Grade,
    pub score: f64,
}

/// Who changes a link and why, with the audit event written in the same transaction.
#[derive(Debug, Clone, Copy)]
pub struct ChangeBy<'a> {
    pub actor: &'a str,
    pub reason: &'a str,
    pub audit: Option<&'a AuditEvent>,
}

/// The snake-case name of a grade (`certain`, `probable`, `possible`, `new`).
pub fn grade_name(g: Grade) -> &'static str {
    match g {
        Grade::Certain => "certain",
        Grade::Probable => "probable",
        Grade::Possible => "possible",
        Grade::New => "new",
    }
}

/// A grade from its snake-case name.
pub fn parse_grade(s: &str) -> Option<Grade> {
    match s {
        "certain" => Some(Grade::Certain),
        "probable" => Some(Grade::Probable),
        "possible" => Some(Grade::Possible),
        "new" => Some(Grade::New),
        _ => None,
    }
}

fn to_i64(p: PersonId) -> Result<i64> {
    i64::try_from(p).map_err(|_| StoreError::Inconsistent(format!("person id {p} out of range")))
}

fn to_person(p: i64) -> PersonId {
    PersonId::try_from(p).unwrap_or_default()
}

const IDENTITY_COLUMNS: &str = "id, facility, local_id, person_id, active, created_at, updated_at";

fn identity_row(r: &AnyRow) -> Result<IdentityRow> {
    let d = || q("decode identity");
    Ok(IdentityRow {
        id: r.try_get("id").map_err(d())?,
        facility: r.try_get("facility").map_err(d())?,
        local_id: r.try_get("local_id").map_err(d())?,
        person_id: r.try_get("person_id").map_err(d())?,
        active: r.try_get::<i64, _>("active").map_err(d())? != 0,
        created_at: r.try_get("created_at").map_err(d())?,
        updated_at: r.try_get("updated_at").map_err(d())?,
    })
}

const HISTORY_COLUMNS: &str = "id, batch, identity_id, action, from_person, to_person, grade, score, decision, actor, reason, undone, at";

fn history_row(r: &AnyRow) -> Result<HistoryRow> {
    let d = || q("decode identity history");
    let decision: Option<String> = r.try_get("decision").map_err(d())?;
    Ok(HistoryRow {
        id: r.try_get("id").map_err(d())?,
        batch: r.try_get("batch").map_err(d())?,
        identity_id: r.try_get("identity_id").map_err(d())?,
        action: r.try_get("action").map_err(d())?,
        from_person: r.try_get("from_person").map_err(d())?,
        to_person: r.try_get("to_person").map_err(d())?,
        grade: r.try_get("grade").map_err(d())?,
        score: r.try_get("score").map_err(d())?,
        decision: decision.and_then(|t| serde_json::from_str(&t).ok()),
        actor: r.try_get("actor").map_err(d())?,
        reason: r.try_get("reason").map_err(d())?,
        undone: r.try_get::<i64, _>("undone").map_err(d())? != 0,
        at: r.try_get("at").map_err(d())?,
    })
}

const REVIEW_COLUMNS: &str = "r.id, r.identity_id, i.facility, i.local_id, i.person_id, r.candidate_person, r.grade, r.score, r.decision, r.state, r.decided_by, r.reason, r.decided_at, r.created_at";

fn review_row(r: &AnyRow) -> Result<ReviewRow> {
    let d = || q("decode review");
    let decision: String = r.try_get("decision").map_err(d())?;
    Ok(ReviewRow {
        id: r.try_get("id").map_err(d())?,
        identity_id: r.try_get("identity_id").map_err(d())?,
        facility: r.try_get("facility").map_err(d())?,
        local_id: r.try_get("local_id").map_err(d())?,
        person_id: r.try_get("person_id").map_err(d())?,
        candidate_person: r.try_get("candidate_person").map_err(d())?,
        grade: r.try_get("grade").map_err(d())?,
        score: r.try_get("score").map_err(d())?,
        decision: serde_json::from_str(&decision).unwrap_or(serde_json::Value::Null),
        state: r.try_get("state").map_err(d())?,
        decided_by: r.try_get("decided_by").map_err(d())?,
        reason: r.try_get("reason").map_err(d())?,
        decided_at: r.try_get("decided_at").map_err(d())?,
        created_at: r.try_get("created_at").map_err(d())?,
    })
}

/// Appends ` IN ($a, $b, …)` for `values` (at least one).
fn push_in(s: &mut Sql, values: &[String]) {
    s.push(" IN (");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            s.push(", ");
        }
        s.bind(v.clone());
    }
    s.push(")");
}

/// A history row to append.
struct Change<'a> {
    batch: &'a str,
    identity_id: i64,
    action: &'a str,
    from: (Option<i64>, Option<bool>),
    to: (Option<i64>, Option<bool>),
    grade: Option<&'a str>,
    score: Option<f64>,
    decision: Option<String>,
    actor: &'a str,
    reason: &'a str,
}

impl<'a> Change<'a> {
    /// A change of a record's link made by a person or a message (relink, unlink, merge, undo):
    /// no grade, score or decision of its own.
    fn link(
        batch: &'a str,
        identity_id: i64,
        action: &'a str,
        from: (Option<i64>, Option<bool>),
        to: (Option<i64>, Option<bool>),
        by: &ChangeBy<'a>,
    ) -> Change<'a> {
        Change {
            batch,
            identity_id,
            action,
            from,
            to,
            grade: None,
            score: None,
            decision: None,
            actor: by.actor,
            reason: by.reason,
        }
    }
}

async fn append_history(conn: &mut AnyConnection, c: Change<'_>) -> Result<()> {
    let mut s = Sql::new("INSERT INTO identity_history (batch, identity_id, action, from_person, to_person, from_active, to_active, grade, score, decision, actor, reason, undone, at) VALUES (".into());
    s.bind(c.batch.to_owned());
    s.push(", ");
    s.bind(c.identity_id);
    s.push(", ");
    s.bind(c.action.to_owned());
    s.push(", ");
    s.bind(c.from.0);
    s.push(", ");
    s.bind(c.to.0);
    s.push(", ");
    s.bind(c.from.1.map(i64::from));
    s.push(", ");
    s.bind(c.to.1.map(i64::from));
    s.push(", ");
    s.bind(c.grade.map(str::to_owned));
    s.push(", ");
    // A NULL bound as f64 reaches PostgreSQL through the Any driver in a format it refuses.
    match c.score {
        Some(v) => s.bind(v),
        None => s.push("NULL"),
    }
    s.push(", ");
    s.bind(c.decision);
    s.push(", ");
    s.bind(c.actor.to_owned());
    s.push(", ");
    s.bind(c.reason.to_owned());
    s.push(", 0, ");
    s.bind(now_ms());
    s.push(")");
    s.query()
        .execute(&mut *conn)
        .await
        .map_err(q("append identity history"))?;
    Ok(())
}

async fn new_person(conn: &mut AnyConnection) -> Result<i64> {
    let mut s = Sql::new("INSERT INTO persons (created_at) VALUES (".into());
    s.bind(now_ms());
    s.push(") RETURNING id");
    let row = s
        .query()
        .fetch_one(&mut *conn)
        .await
        .map_err(q("allocate a person id"))?;
    row.try_get("id").map_err(q("allocate a person id"))
}

async fn identity_in(
    conn: &mut AnyConnection,
    facility: &str,
    local_id: &str,
) -> Result<Option<IdentityRow>> {
    let mut s = Sql::new(format!(
        "SELECT {IDENTITY_COLUMNS} FROM identities WHERE facility = "
    ));
    s.bind(facility.to_owned());
    s.push(" AND local_id = ");
    s.bind(local_id.to_owned());
    let row = s
        .query()
        .fetch_optional(&mut *conn)
        .await
        .map_err(q("read identity"))?;
    row.map(|r| identity_row(&r)).transpose()
}

async fn set_link(
    conn: &mut AnyConnection,
    identity_id: i64,
    person: i64,
    active: bool,
) -> Result<()> {
    // Stamped like a change of keys, so every store's index picks up the new link.
    let seq = postings::next_seq(conn).await?;
    let mut s = Sql::new("UPDATE identities SET person_id = ".into());
    s.bind(person);
    s.push(", active = ");
    s.bind(i64::from(active));
    s.push(", keys_seq = ");
    s.bind(seq);
    s.push(", updated_at = ");
    s.bind(now_ms());
    s.push(" WHERE id = ");
    s.bind(identity_id);
    s.query()
        .execute(&mut *conn)
        .await
        .map_err(q("change identity link"))?;
    Ok(())
}

/// Begins a transaction that writes the identity index. On SQLite it takes the write lock
/// before its first read (`BEGIN IMMEDIATE` in effect): a read-then-write transaction would
/// otherwise fail with `SQLITE_BUSY_SNAPSHOT` when the journal writer's connection commits
/// between its read and its first write. PostgreSQL needs nothing here.
pub(crate) async fn begin_write<'c>(
    backend: super::Backend,
    conn: &'c mut AnyConnection,
    what: &'static str,
) -> Result<sqlx::Transaction<'c, sqlx::Any>> {
    let mut tx = sqlx::Connection::begin(conn).await.map_err(q(what))?;
    if backend == super::Backend::Sqlite {
        sqlx::query("UPDATE identity_keys_seq SET value = value WHERE 1 = 0")
            .execute(&mut *tx)
            .await
            .map_err(q("take the write lock"))?;
    }
    Ok(tx)
}

impl Store {
    /// The text a blocking key is stored and looked up as: its blind index with encryption on.
    fn identity_key_text(&self, key: &BlockingKey) -> String {
        match &self.keyring {
            Some(k) => {
                let mut data = b"identity-key\0".to_vec();
                data.extend_from_slice(key.as_str().as_bytes());
                format!("{}{}", crate::crypto::INDEX_PREFIX, k.blind_index(&data))
            }
            None => key.as_str().to_owned(),
        }
    }

    /// The hashes of a record's blocking keys as stored (sorted, no repeats).
    pub(crate) fn identity_key_hashes(&self, person: &NormalizedPerson) -> Vec<u64> {
        let mut hashes: Vec<u64> = huizhen_domain::identity::blocking_keys(person)
            .iter()
            .map(|k| postings::key_hash(&self.identity_key_text(k)))
            .collect();
        hashes.sort_unstable();
        hashes.dedup();
        hashes
    }

    /// Computes the keys of records of an older version once per store (see `postings`).
    pub(crate) async fn ensure_identity_keys(&self) -> Result<()> {
        self.identity_backfill
            .get_or_try_init(|| async { self.backfill_identity_keys().await.map(|_| ()) })
            .await
            .map(|_| ())
    }

    fn identity_binding(facility: &str, local_id: &str) -> String {
        format!("identity/{}/{facility}/{local_id}", facility.len())
    }

    fn seal_person(&self, p: &NormalizedPerson) -> Result<String> {
        let json = serde_json::to_string(p)
            .map_err(|e| StoreError::Inconsistent(format!("identity: encode person: {e}")))?;
        Ok(match &self.keyring {
            Some(k) => {
                let id = Self::identity_binding(&p.facility, &p.local_id);
                k.seal_text(&json, &crate::crypto::Binding::new(&id, "person"))
            }
            None => json,
        })
    }

    fn open_person(
        &self,
        row: i64,
        facility: &str,
        local_id: &str,
        raw: String,
    ) -> Result<NormalizedPerson> {
        let id = Self::identity_binding(facility, local_id);
        // Errors name the row, not the binding (which holds the local id).
        let text = self.open_text(&id, "person", raw).map_err(|e| match e {
            StoreError::Crypto { reason, .. } => StoreError::Inconsistent(format!(
                "identity record {row}: the demographics cannot be opened ({reason}); after turning encryption on or off, run `huizhen patients reseal`"
            )),
            other => other,
        })?;
        serde_json::from_str(&text).map_err(|e| {
            StoreError::Inconsistent(format!(
                "identity record {row}: stored demographics do not decode: {e}"
            ))
        })
    }

    /// The active records sharing at least one of `keys`, those sharing the most first, at most
    /// `limit`; only records of `facilities` when given (a caller's scope). Keys shared by more
    /// than [`MAX_POSTINGS`] records are skipped.
    pub async fn identity_prefetch(
        &self,
        keys: &[BlockingKey],
        limit: usize,
        facilities: Option<&[String]>,
    ) -> Result<Prefetched> {
        if keys.is_empty() || limit == 0 || facilities.is_some_and(<[String]>::is_empty) {
            return Ok(Prefetched::default());
        }
        self.ensure_identity_keys().await?;
        let mut hashes: Vec<u64> = keys
            .iter()
            .map(|k| postings::key_hash(&self.identity_key_text(k)))
            .collect();
        hashes.sort_unstable();
        hashes.dedup();
        let mut conn = self.read.acquire().await.map_err(q("acquire a reader"))?;
        let mut pg = self.postings_current(&mut conn).await?;
        let ranked = batch::rank(&pg, &hashes);
        let entries = self
            .take_active(&mut conn, &mut pg, &ranked, limit, facilities)
            .await?
            .into_iter()
            .map(|(entry, _)| entry)
            .collect();
        Ok(Prefetched { entries })
    }

    /// The record with this facility and local id.
    pub async fn identity(&self, facility: &str, local_id: &str) -> Result<Option<IdentityRow>> {
        let mut conn = self.read.acquire().await.map_err(q("acquire a reader"))?;
        identity_in(&mut conn, facility, local_id).await
    }

    /// The record with this facility and local id, with its normalised demographics.
    pub async fn identity_person(
        &self,
        facility: &str,
        local_id: &str,
    ) -> Result<Option<NormalizedPerson>> {
        let mut s = Sql::new("SELECT id, person FROM identities WHERE facility = ".into());
        s.bind(facility.to_owned());
        s.push(" AND local_id = ");
        s.bind(local_id.to_owned());
        let row = s
            .query()
            .fetch_optional(&self.read)
            .await
            .map_err(q("read identity"))?;
        match row {
            None => Ok(None),
            Some(r) => {
                let row: i64 = r.try_get("id").map_err(q("read identity"))?;
                let raw: String = r.try_get("person").map_err(q("read identity"))?;
                self.open_person(row, facility, local_id, raw).map(Some)
            }
        }
    }

    /// The birth date of a master person for CN-13's age check: the latest any of their active
    /// records gives (records that disagree make the patient the youngest they could be: the
    /// guardian rule errs on the side of the child); none when no record has one.
    pub async fn patient_birth_date(
        &self,
        person: huizhen_domain::identity::blocking::PersonId,
    ) -> Result<Option<chrono::NaiveDate>> {
        let Ok(person) = i64::try_from(person) else {
            return Ok(None);
        };
        let mut dates = std::collections::BTreeSet::new();
        for row in self.identities_of_person(person, None).await? {
            if !row.active {
                continue;
            }
            if let Some(p) = self.identity_person(&row.facility, &row.local_id).await?
                && let Some(b) = &p.birth_date
            {
                dates.insert(b.date);
            }
        }
        Ok(dates.pop_last())
    }

    /// Every record linked to a person (PIX cross-references), active ones first; only those
    /// of `facilities` when given.
    pub async fn identities_of_person(
        &self,
        person_id: i64,
        facilities: Option<&[String]>,
    ) -> Result<Vec<IdentityRow>> {
        if facilities.is_some_and(<[String]>::is_empty) {
            return Ok(Vec::new());
        }
        let mut s = Sql::new(format!(
            "SELECT {IDENTITY_COLUMNS} FROM identities WHERE person_id = "
        ));
        s.bind(person_id);
        if let Some(f) = facilities {
            s.push(" AND facility");
            push_in(&mut s, f);
        }
        s.push(" ORDER BY active DESC, facility, local_id");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read identities of a person"))?;
        rows.iter().map(identity_row).collect()
    }

    /// Files a record under a person (a new one when `person` is `None`) with its blocking
    /// keys, replacing the record with the same facility and local id. Returns the record's id
    /// and person.
    pub async fn identity_upsert(
        &self,
        person: &NormalizedPerson,
        person_id: Option<PersonId>,
    ) -> Result<(i64, i64)> {
        let mut conn = self.write.acquire().await.map_err(q("acquire writer"))?;
        let mut tx = sqlx::Connection::begin(&mut *conn)
            .await
            .map_err(q("begin identity upsert"))?;
        let pid = match person_id {
            Some(p) => to_i64(p)?,
            None => new_person(&mut tx).await?,
        };
        let id = self.upsert_in(&mut tx, person, pid).await?;
        tx.commit().await.map_err(q("commit identity upsert"))?;
        Ok((id, pid))
    }

    async fn upsert_in(
        &self,
        conn: &mut AnyConnection,
        person: &NormalizedPerson,
        person_id: i64,
    ) -> Result<i64> {
        let now = now_ms();
        let mut s = Sql::new("INSERT INTO identities (facility, local_id, person_id, person, active, created_at, updated_at) VALUES (".into());
        s.bind(person.facility.clone());
        s.push(", ");
        s.bind(person.local_id.clone());
        s.push(", ");
        s.bind(person_id);
        s.push(", ");
        s.bind(self.seal_person(person)?);
        s.push(", 1, ");
        s.bind(now);
        s.push(", ");
        s.bind(now);
        s.push(") ON CONFLICT (facility, local_id) DO UPDATE SET person_id = excluded.person_id, person = excluded.person, active = 1, updated_at = excluded.updated_at RETURNING id");
        let row = s
            .query()
            .fetch_one(&mut *conn)
            .await
            .map_err(q("upsert identity"))?;
        let id: i64 = row.try_get("id").map_err(q("upsert identity"))?;
        self.write_keys(conn, id, person).await?;
        Ok(id)
    }

    /// Replaces the blocking keys of record `id` with those of `person`, stamped with the
    /// next value of the keys counter (the postings of every store pick them up).
    async fn write_keys(
        &self,
        conn: &mut AnyConnection,
        id: i64,
        person: &NormalizedPerson,
    ) -> Result<()> {
        let seq = postings::next_seq(conn).await?;
        let mut u = Sql::new("UPDATE identities SET keys = ".into());
        u.bind(postings::encode_keys(&self.identity_key_hashes(person)));
        u.push(", keys_seq = ");
        u.bind(seq);
        u.push(" WHERE id = ");
        u.bind(id);
        u.query()
            .execute(&mut *conn)
            .await
            .map_err(q("store identity keys"))?;
        Ok(())
    }

    /// Re-seals the demographics of up to `limit` records after id `after` that are in clear
    /// (encryption turned on since) or sealed with another key than the active one, and
    /// rebuilds their blocking keys (blind indexes with encryption on). With encryption off,
    /// a sealed record is an error. Returns (records looked at, records rewritten, the cursor
    /// for the next batch or `None` at the end).
    pub async fn identity_reseal_batch(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<(u64, u64, Option<i64>)> {
        let mut s =
            Sql::new("SELECT id, facility, local_id, person FROM identities WHERE id > ".into());
        s.bind(after);
        s.push(" ORDER BY id LIMIT ");
        s.bind(limit);
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read identities to reseal"))?;
        let (mut scanned, mut rewritten, mut last) = (0u64, 0u64, None);
        for r in &rows {
            let d = || q("decode identity");
            let id: i64 = r.try_get("id").map_err(d())?;
            let facility: String = r.try_get("facility").map_err(d())?;
            let local_id: String = r.try_get("local_id").map_err(d())?;
            let raw: String = r.try_get("person").map_err(d())?;
            scanned += 1;
            last = Some(id);
            let sealed = raw.starts_with(crate::crypto::TEXT_PREFIX);
            let current = match &self.keyring {
                Some(k) => sealed && k.cipher().is_current_text(&raw),
                None => !sealed,
            };
            if current {
                continue;
            }
            let person = if sealed {
                self.open_person(id, &facility, &local_id, raw.clone())?
            } else {
                serde_json::from_str(&raw).map_err(|e| {
                    StoreError::Inconsistent(format!(
                        "identity record {id}: stored demographics do not decode: {e}"
                    ))
                })?
            };
            let mut conn = self.write.acquire().await.map_err(q("acquire writer"))?;
            let mut tx = sqlx::Connection::begin(&mut *conn)
                .await
                .map_err(q("begin identity reseal"))?;
            let mut u = Sql::new("UPDATE identities SET person = ".into());
            u.bind(self.seal_person(&person)?);
            u.push(" WHERE id = ");
            u.bind(id);
            u.push(" AND person = ");
            u.bind(raw);
            let done = u
                .query()
                .execute(&mut *tx)
                .await
                .map_err(q("reseal identity"))?
                .rows_affected();
            // Changed meanwhile (a newer decision sealed it afresh): nothing to do.
            if done == 1 {
                self.write_keys(&mut tx, id, &person).await?;
                rewritten += 1;
            }
            tx.commit().await.map_err(q("commit identity reseal"))?;
        }
        let next = if rows.len() as i64 == limit {
            last
        } else {
            None
        };
        Ok((scanned, rewritten, next))
    }

    /// Moves a record to another person (`Some`), or to a new person of its own (`None`: an
    /// unlink). `action` names it in the history (`relink`, `unlink`). Returns the history
    /// batch and the person it is linked to now; `None` when the record is unknown.
    pub async fn identity_relink(
        &self,
        facility: &str,
        local_id: &str,
        to: Option<i64>,
        action: &str,
        by: ChangeBy<'_>,
    ) -> Result<Option<(String, i64)>> {
        let mut conn = self.write.acquire().await.map_err(q("acquire writer"))?;
        let mut tx = begin_write(self.backend, &mut conn, "begin identity relink").await?;
        let Some(row) = identity_in(&mut tx, facility, local_id).await? else {
            return Ok(None);
        };
        let target = match to {
            Some(p) => p,
            None => new_person(&mut tx).await?,
        };
        set_link(&mut tx, row.id, target, row.active).await?;
        let batch = new_id();
        append_history(
            &mut tx,
            Change::link(
                &batch,
                row.id,
                action,
                (Some(row.person_id), Some(row.active)),
                (Some(target), Some(row.active)),
                &by,
            ),
        )
        .await?;
        if let Some(e) = by.audit {
            audit::append(&mut tx, e, self.anchor.as_deref()).await?;
        }
        tx.commit().await.map_err(q("commit identity relink"))?;
        Ok(Some((batch, target)))
    }

    /// An ADT^A40 merge: the record `facility`/`retired_local_id` is retired (inactive) and it
    /// and every record of its person are re-pointed to `survivor`, and so are the person's
    /// open consultations (a `patient_repointed` event each, audited, in the same transaction). Returns the history batch
    /// (for [`Store::identity_undo`]) and how many records moved; `None` when the retired
    /// record is unknown or already merged into `survivor`.
    pub async fn identity_merge(
        &self,
        facility: &str,
        retired_local_id: &str,
        survivor: i64,
        by: ChangeBy<'_>,
    ) -> Result<Option<(String, usize)>> {
        let mut conn = self.write.acquire().await.map_err(q("acquire writer"))?;
        let mut tx = begin_write(self.backend, &mut conn, "begin identity merge").await?;
        let Some(retired) = identity_in(&mut tx, facility, retired_local_id).await? else {
            return Ok(None);
        };
        if retired.person_id == survivor && !retired.active {
            return Ok(None);
        }
        let mut s = Sql::new(format!(
            "SELECT {IDENTITY_COLUMNS} FROM identities WHERE person_id = "
        ));
        s.bind(retired.person_id);
        let rows = s
            .query()
            .fetch_all(&mut *tx)
            .await
            .map_err(q("read identities to merge"))?;
        let batch = new_id();
        let mut moved = 0;
        for r in rows {
            let row = identity_row(&r)?;
            let active = row.active && row.id != retired.id;
            set_link(&mut tx, row.id, survivor, active).await?;
            append_history(
                &mut tx,
                Change::link(
                    &batch,
                    row.id,
                    "merge",
                    (Some(row.person_id), Some(row.active)),
                    (Some(survivor), Some(active)),
                    &by,
                ),
            )
            .await?;
            moved += 1;
        }
        // The retired person's open consultations follow the records (MATCH-05), audited, in
        // this transaction.
        let repointed = if retired.person_id == survivor {
            0
        } else {
            super::consultations::repoint_in(
                &mut tx,
                self,
                retired.person_id as u64,
                survivor as u64,
                by.actor,
                by.reason,
            )
            .await?
        };
        if let Some(e) = by.audit {
            audit::append(&mut tx, e, self.anchor.as_deref()).await?;
        }
        tx.commit().await.map_err(q("commit identity merge"))?;
        if repointed > 0 {
            self.notify_consultations();
        }
        Ok(Some((batch, moved)))
    }

    /// Reverses the changes of a history batch (an unmerge, an unlink undone): each record goes
    /// back to the person and active flag it had, newest change first, and each reversal is a
    /// history row (`undo`) of a new batch, which is returned with how many records moved.
    /// `None` when the batch has nothing left to undo.
    pub async fn identity_undo(
        &self,
        batch: &str,
        by: ChangeBy<'_>,
    ) -> Result<Option<(String, usize)>> {
        let mut conn = self.write.acquire().await.map_err(q("acquire writer"))?;
        let mut tx = begin_write(self.backend, &mut conn, "begin identity undo").await?;
        let mut s = Sql::new(
            "SELECT id, identity_id, from_person, to_person, from_active, to_active FROM identity_history WHERE undone = 0 AND action <> 'reject' AND batch = "
                .into(),
        );
        s.bind(batch.to_owned());
        s.push(" ORDER BY id DESC");
        let rows = s
            .query()
            .fetch_all(&mut *tx)
            .await
            .map_err(q("read history batch"))?;
        let new_batch = new_id();
        let mut moved = 0;
        for r in rows {
            let d = || q("decode history batch");
            let hid: i64 = r.try_get("id").map_err(d())?;
            let identity_id: i64 = r.try_get("identity_id").map_err(d())?;
            let from: Option<i64> = r.try_get("from_person").map_err(d())?;
            let to: Option<i64> = r.try_get("to_person").map_err(d())?;
            let from_active: Option<i64> = r.try_get("from_active").map_err(d())?;
            let to_active: Option<i64> = r.try_get("to_active").map_err(d())?;
            // A first match has no person before it: nothing to go back to.
            let Some(from) = from else { continue };
            let active = from_active.unwrap_or(1) != 0;
            set_link(&mut tx, identity_id, from, active).await?;
            let mut u = Sql::new("UPDATE identity_history SET undone = 1 WHERE id = ".into());
            u.bind(hid);
            u.query()
                .execute(&mut *tx)
                .await
                .map_err(q("mark history undone"))?;
            append_history(
                &mut tx,
                Change::link(
                    &new_batch,
                    identity_id,
                    "undo",
                    (to, to_active.map(|a| a != 0)),
                    (Some(from), Some(active)),
                    &by,
                ),
            )
            .await?;
            moved += 1;
        }
        if moved == 0 {
            return Ok(None);
        }
        if let Some(e) = by.audit {
            audit::append(&mut tx, e, self.anchor.as_deref()).await?;
        }
        tx.commit().await.map_err(q("commit identity undo"))?;
        Ok(Some((new_batch, moved)))
    }

    /// The history of one record, oldest first.
    pub async fn identity_history(&self, identity_id: i64) -> Result<Vec<HistoryRow>> {
        let mut s = Sql::new(format!(
            "SELECT {HISTORY_COLUMNS} FROM identity_history WHERE identity_id = "
        ));
        s.bind(identity_id);
        s.push(" ORDER BY id");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read identity history"))?;
        rows.iter().map(history_row).collect()
    }

    /// The review queue: entries in `state` (all when `None`) of records of `facilities`
    /// (all when `None`), oldest first, at most `limit`.
    pub async fn identity_reviews(
        &self,
        state: Option<&str>,
        facilities: Option<&[String]>,
        limit: i64,
    ) -> Result<Vec<ReviewRow>> {
        if facilities.is_some_and(<[String]>::is_empty) {
            return Ok(Vec::new());
        }
        let mut s = Sql::new(format!(
            "SELECT {REVIEW_COLUMNS} FROM identity_reviews r JOIN identities i ON i.id = r.identity_id WHERE 1 = 1"
        ));
        if let Some(st) = state {
            s.push(" AND r.state = ");
            s.bind(st.to_owned());
        }
        if let Some(f) = facilities {
            s.push(" AND i.facility");
            push_in(&mut s, f);
        }
        s.push(" ORDER BY r.id LIMIT ");
        s.bind(limit);
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("list reviews"))?;
        rows.iter().map(review_row).collect()
    }

    /// One review-queue entry.
    pub async fn identity_review(&self, id: i64) -> Result<Option<ReviewRow>> {
        let mut s = Sql::new(format!(
            "SELECT {REVIEW_COLUMNS} FROM identity_reviews r JOIN identities i ON i.id = r.identity_id WHERE r.id = "
        ));
        s.bind(id);
        let row = s
            .query()
            .fetch_optional(&self.read)
            .await
            .map_err(q("read review"))?;
        row.map(|r| review_row(&r)).transpose()
    }

    /// Decides a pending review: `accept` links its record to the candidate person (history
    /// `accept`, undoable), reject only records the decision (history `reject`). Returns the
    /// entry as decided; `None` when it is unknown or no longer pending.
    pub async fn identity_review_decide(
        &self,
        id: i64,
        accept: bool,
        by: ChangeBy<'_>,
    ) -> Result<Option<ReviewRow>> {
        let mut conn = self.write.acquire().await.map_err(q("acquire writer"))?;
        let mut tx = begin_write(self.backend, &mut conn, "begin review decision").await?;
        let mut s = Sql::new(format!(
            "SELECT {REVIEW_COLUMNS}, i.active FROM identity_reviews r JOIN identities i ON i.id = r.identity_id WHERE r.state = 'pending' AND r.id = "
        ));
        s.bind(id);
        let Some(row) = s
            .query()
            .fetch_optional(&mut *tx)
            .await
            .map_err(q("read review"))?
        else {
            return Ok(None);
        };
        let review = review_row(&row)?;
        let active = row.try_get::<i64, _>("active").map_err(q("read review"))? != 0;
        let state = if accept { "accepted" } else { "rejected" };
        let mut u = Sql::new("UPDATE identity_reviews SET state = ".into());
        u.bind(state.to_owned());
        u.push(", decided_by = ");
        u.bind(by.actor.to_owned());
        u.push(", reason = ");
        u.bind(by.reason.to_owned());
        u.push(", decided_at = ");
        u.bind(now_ms());
        u.push(" WHERE id = ");
        u.bind(id);
        u.query()
            .execute(&mut *tx)
            .await
            .map_err(q("decide review"))?;
        let to = if accept {
            set_link(&mut tx, review.identity_id, review.candidate_person, active).await?;
            review.candidate_person
        } else {
            review.person_id
        };
        append_history(
            &mut tx,
            Change {
                batch: &new_id(),
                identity_id: review.identity_id,
                action: if accept { "accept" } else { "reject" },
                from: (Some(review.person_id), Some(active)),
                to: (Some(to), Some(active)),
                grade: Some(&review.grade),
                score: Some(review.score),
                decision: Some(review.decision.to_string()),
                actor: by.actor,
                reason: by.reason,
            },
        )
        .await?;
        if let Some(e) = by.audit {
            audit::append(&mut tx, e, self.anchor.as_deref()).await?;
        }
        tx.commit().await.map_err(q("commit review decision"))?;
        drop(conn);
        self.identity_review(id).await
    }

    /// Every record and its person, by person then facility and local id (the cross-reference
    /// of `huizhen patients links`); only records of `facilities` when given.
    pub async fn identity_links(&self, facilities: Option<&[String]>) -> Result<Vec<IdentityRow>> {
        if facilities.is_some_and(<[String]>::is_empty) {
            return Ok(Vec::new());
        }
        let mut s = Sql::new(format!("SELECT {IDENTITY_COLUMNS} FROM identities"));
        if let Some(f) = facilities {
            s.push(" WHERE facility");
            push_in(&mut s, f);
        }
        s.push(" ORDER BY person_id, facility, local_id");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("list identity links"))?;
        rows.iter().map(identity_row).collect()
    }

    /// Every record pair the matcher graded `min_grade` or better in a recorded decision (each
    /// unordered pair once, with its best grade and score), for measuring accuracy.
    pub async fn identity_pairs(&self, min_grade: Grade) -> Result<Vec<PairRow>> {
        let rows = sqlx::query("SELECT i.facility, i.local_id, h.decision FROM identity_history h JOIN identities i ON i.id = h.identity_id WHERE h.action = 'match' AND h.decision IS NOT NULL ORDER BY h.id")
            .fetch_all(&self.read)
            .await
            .map_err(q("read match decisions"))?;
        type Key = (String, String, String, String);
        let mut best: BTreeMap<Key, (Grade, f64)> = BTreeMap::new();
        for r in rows {
            let d = || q("decode match decision");
            let facility: String = r.try_get("facility").map_err(d())?;
            let local_id: String = r.try_get("local_id").map_err(d())?;
            let text: String = r.try_get("decision").map_err(d())?;
            let Ok(decision) = serde_json::from_str::<MatchDecision>(&text) else {
                continue;
            };
            for c in &decision.candidates {
                for rec in &c.records {
                    if rec.grade > min_grade
                        || (rec.facility == facility && rec.local_id == local_id)
                    {
                        continue;
                    }
                    let a = (facility.clone(), local_id.clone());
                    let b = (rec.facility.clone(), rec.local_id.clone());
                    let (a, b) = if a <= b { (a, b) } else { (b, a) };
                    let key = (a.0, a.1, b.0, b.1);
                    let e = best.entry(key).or_insert((rec.grade, rec.score));
                    if (rec.grade, -rec.score) < (e.0, -e.1) {
                        *e = (rec.grade, rec.score);
                    }
                }
            }
        }
        Ok(best
            .into_iter()
            .map(|((fa, la, fb, lb), (grade, score))| PairRow {
                facility_a: fa,
                local_id_a: la,
                facility_b: fb,
                local_id_b: lb,
                grade,
                score,
            })
            .collect())
    }

    /// How many records and persons the index holds.
    pub async fn identity_counts(&self) -> Result<(i64, i64)> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS records, COUNT(DISTINCT person_id) AS persons FROM identities",
        )
        .fetch_one(&self.read)
        .await
        .map_err(q("count identities"))?;
        Ok((
            row.try_get("records").map_err(q("count identities"))?,
            row.try_get("persons").map_err(q("count identities"))?,
        ))
    }
}
