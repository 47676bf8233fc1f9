//! Linking many records in one transaction, each decided against everything before it (issue
//! 14's bulk target: `huizhen patients import`, and the `match_patient` step as a batch of one).
//!
//! A batch reads, in a handful of statements on the writer connection inside its transaction:
//! the postings of every blocking key of the batch (`identity_keys`), the records already filed
//! under the batch's facility identifiers, and the candidate records themselves. The matcher
//! then decides the records **one at a time, in order**: each sees the stored index plus the
//! records decided before it in the same batch (an in-memory overlay), so a batch links exactly
//! as the same records linked one by one would. Then everything is written with multi-row
//! statements: new persons, the records, their keys, the history and the review queue.
//!
//! Deciding inside the write transaction also serialises decisions: two records of the same
//! new person arriving at once cannot both allocate a person. On PostgreSQL (many writers) a
//! transaction-scoped advisory lock does the same.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use huizhen_domain::identity::{Grade, IndexedIdentity, MatchDecision, NormalizedPerson, PersonId};
use sqlx::{AnyConnection, Row};

use super::super::audit::{self, AuditEvent};
use super::super::sql::Sql;
use super::super::{Backend, Result, Store, StoreError, q};
use super::{
    IDENTITY_COLUMNS, MAX_POSTINGS, Postings, Prefetched, Recorded, grade_name, identity_row,
};
use crate::message::{new_id, now_ms};

/// The advisory lock that serialises identity decisions on PostgreSQL (an arbitrary constant
/// of this engine: "hz-ident" in ASCII, truncated).
const PG_IDENTITY_LOCK: i64 = 0x687a_6964_656e;

/// Rows per multi-row statement: well under SQLite's 32,766 and PostgreSQL's 65,535 bound
/// parameters for the widest row written here (14 columns).
const ROWS_PER_STATEMENT: usize = 1_000;

/// Keys or ids per `IN (…)` list.
const IN_LIST: usize = 900;

/// New persons of a batch get a provisional id in this range until their rows are inserted;
/// decisions are rewritten with the real ids before anything is stored or returned.
const PROVISIONAL: u64 = 1 << 62;

/// What the decision callbacks of [`Store::identity_link_batch`] return for a record besides
/// the decision: the audit event to write with it (a link on a facility's score threshold)
/// and the reason recorded in the history.
#[derive(Debug, Default)]
pub struct Audited {
    /// Written in the batch's transaction.
    pub event: Option<AuditEvent>,
    /// The history's reason for this decision.
    pub reason: &'static str,
}

/// One linked record of a batch.
#[derive(Debug, Clone)]
pub struct BatchLinked {
    /// The matcher's decision (person ids final).
    pub decision: MatchDecision,
    /// What was stored.
    pub recorded: Recorded,
}

/// A record decided earlier in the same batch.
struct Overlay {
    entry: IndexedIdentity,
}

impl Store {
    /// Decides and records `persons` in order, each against the index and the records before
    /// it (see the module docs), in one transaction. `decide` is the matcher (it gets the
    /// candidates, most shared blocking keys first, at most `limit`); `audited` says what to
    /// audit for a decision. A facility identifier that repeats in `persons` starts a new
    /// transaction at its second occurrence (a record is written once per statement).
    pub async fn identity_link_batch<D, A>(
        &self,
        persons: &[NormalizedPerson],
        limit: usize,
        actor: &str,
        mut decide: D,
        mut audited: A,
    ) -> Result<Vec<BatchLinked>>
    where
        D: FnMut(&NormalizedPerson, &Prefetched) -> MatchDecision,
        A: FnMut(&MatchDecision) -> Audited,
    {
        let mut out = Vec::with_capacity(persons.len());
        let mut start = 0;
        while start < persons.len() {
            let mut seen = HashSet::new();
            let end = start
                + persons[start..]
                    .iter()
                    .take_while(|p| seen.insert((p.facility.as_str(), p.local_id.as_str())))
                    .count();
            let segment = &persons[start..end];
            out.extend(
                self.link_segment(segment, limit, actor, &mut decide, &mut audited)
                    .await?,
            );
            start = end;
        }
        Ok(out)
    }

    async fn link_segment<D, A>(
        &self,
        persons: &[NormalizedPerson],
        limit: usize,
        actor: &str,
        decide: &mut D,
        audited: &mut A,
    ) -> Result<Vec<BatchLinked>>
    where
        D: FnMut(&NormalizedPerson, &Prefetched) -> MatchDecision,
        A: FnMut(&MatchDecision) -> Audited,
    {
        self.ensure_identity_keys().await?;
        let mut conn = self.write.acquire().await.map_err(q("acquire writer"))?;
        let mut tx = super::begin_write(self.backend, &mut conn, "begin identity batch").await?;
        let backend = self.backend;
        if backend == Backend::Postgres {
            let mut s = Sql::for_backend("SELECT pg_advisory_xact_lock(".into(), backend);
            s.bind(PG_IDENTITY_LOCK);
            s.push(")");
            s.query()
                .execute(&mut *tx)
                .await
                .map_err(q("lock the identity index"))?;
        }

        // Read: keys, the postings (brought up to date), known records.
        let keys: Vec<Vec<u64>> = persons
            .iter()
            .map(|p| self.identity_key_hashes(p))
            .collect();
        let mut pg = self.postings_current(&mut tx).await?;
        let all_ranked: Vec<Vec<(i64, u32)>> = keys.iter().map(|k| rank(&pg, k)).collect();
        // Keys already shared by the most records the index looks at.
        let crowded: HashSet<u64> = keys
            .iter()
            .flatten()
            .filter(|k| pg.get(**k).len() >= MAX_POSTINGS_USIZE)
            .copied()
            .collect();
        let existing = existing_records(&mut tx, backend, persons).await?;
        // The candidates' demographics not yet in memory, for the whole batch in a few
        // statements (a record needing more, because some of its first candidates are retired,
        // reads them itself).
        let mut wanted: Vec<i64> = all_ranked
            .iter()
            .flat_map(|r| r.iter().take(limit + 8).map(|(id, _)| *id))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        self.load_people(&mut tx, &mut pg, &wanted).await?;

        // Decide, one record at a time.
        let mut overlay: Vec<Overlay> = Vec::with_capacity(persons.len());
        let mut overlay_keys: HashMap<u64, Vec<usize>> = HashMap::new();
        let mut superseded: HashSet<i64> = HashSet::new();
        let mut decided: Vec<(MatchDecision, u64, Audited)> = Vec::with_capacity(persons.len());
        let mut next_provisional = PROVISIONAL;
        for (j, person) in persons.iter().enumerate() {
            // Stored candidates: most shared keys first, then the oldest record.
            let ranked: Vec<(i64, u32)> = all_ranked[j]
                .iter()
                .filter(|(id, _)| !superseded.contains(id))
                .copied()
                .collect();
            let stored = self
                .take_active(&mut tx, &mut pg, &ranked, limit, None)
                .await?;
            // Earlier records of this batch sharing keys.
            let mut near: HashMap<usize, u32> = HashMap::new();
            for k in &keys[j] {
                if !crowded.contains(k)
                    && let Some(list) = overlay_keys.get(k)
                {
                    for i in list {
                        *near.entry(*i).or_default() += 1;
                    }
                }
            }
            let mut near: Vec<(usize, u32)> = near.into_iter().collect();
            near.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            // Merge: more shared keys first; on a tie, stored records before this batch's.
            let mut entries = Vec::with_capacity(limit.min(stored.len() + near.len()));
            let (mut a, mut b) = (stored.iter().peekable(), near.iter().peekable());
            while entries.len() < limit {
                let take_stored = match (a.peek(), b.peek()) {
                    (Some((_, ha)), Some((_, hb))) => ha >= hb,
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (None, None) => break,
                };
                if take_stored {
                    let (entry, _) = a.next().expect("peeked");
                    entries.push(entry.clone());
                } else {
                    let (i, _) = b.next().expect("peeked");
                    entries.push(overlay[*i].entry.clone());
                }
            }
            let decision = decide(person, &Prefetched { entries });
            let known = existing.get(&(person.facility.clone(), person.local_id.clone()));
            let target = match (decision.auto_link(), known) {
                (Some(p), _) => p,
                (None, Some(row)) => row.person_id as u64,
                (None, None) => {
                    next_provisional += 1;
                    next_provisional
                }
            };
            if let Some(row) = known {
                superseded.insert(row.id);
            }
            for k in &keys[j] {
                overlay_keys.entry(*k).or_default().push(j);
            }
            overlay.push(Overlay {
                entry: IndexedIdentity {
                    person_id: target,
                    person: Arc::new(person.clone()),
                },
            });
            let audit = audited(&decision);
            decided.push((decision, target, audit));
        }

        // Write.
        let provisional_count = next_provisional - PROVISIONAL;
        let real = allocate_persons(&mut tx, backend, provisional_count).await?;
        let resolve = |p: PersonId| -> Result<i64> {
            if p > PROVISIONAL {
                let i = usize::try_from(p - PROVISIONAL - 1).unwrap_or(usize::MAX);
                real.get(i).copied().ok_or_else(|| {
                    StoreError::Inconsistent(format!("identity batch: provisional person {p}"))
                })
            } else {
                i64::try_from(p).map_err(|_| {
                    StoreError::Inconsistent(format!("identity: person id {p} out of range"))
                })
            }
        };
        let mut targets = Vec::with_capacity(decided.len());
        for (decision, target, _) in &mut decided {
            if let Some(p) = decision.person.as_mut() {
                *p = resolve(*p)? as u64;
            }
            for c in &mut decision.candidates {
                c.person_id = resolve(c.person_id)? as u64;
            }
            targets.push(resolve(*target)?);
        }
        let seq = super::postings::next_seq(&mut tx).await?;
        let ids = self
            .upsert_records(&mut tx, persons, &targets, &keys, seq)
            .await?;
        let batches: Vec<String> = persons.iter().map(|_| new_id()).collect();
        let mut history = Vec::with_capacity(persons.len());
        for (j, (decision, _, audit)) in decided.iter().enumerate() {
            let known = existing.get(&(persons[j].facility.clone(), persons[j].local_id.clone()));
            history.push(HistoryInsert {
                batch: &batches[j],
                identity_id: ids[j],
                from_person: known.map(|r| r.person_id),
                from_active: known.map(|r| r.active),
                to_person: targets[j],
                grade: grade_name(decision.grade),
                score: decision.candidates.first().map(|c| c.score),
                decision: serde_json::to_string(decision).map_err(|e| {
                    StoreError::Inconsistent(format!("identity: encode decision: {e}"))
                })?,
                reason: audit.reason,
            });
        }
        insert_history(&mut tx, backend, &history, actor).await?;
        let reviews = queue_reviews(&mut tx, backend, &decided, &ids, &targets).await?;
        for (_, _, audit) in &decided {
            if let Some(e) = &audit.event {
                audit::append(&mut tx, e, self.anchor.as_deref()).await?;
            }
        }
        tx.commit().await.map_err(q("commit identity batch"))?;
        Self::postings_written(
            &mut pg,
            seq,
            ids.iter()
                .zip(&keys)
                .zip(&targets)
                .zip(&overlay)
                .map(|(((id, k), target), o)| {
                    (
                        *id,
                        k.clone().into_boxed_slice(),
                        *target,
                        o.entry.person.clone(),
                    )
                })
                .collect(),
        );
        drop(pg);

        let mut out = Vec::with_capacity(persons.len());
        let mut reviews = reviews;
        for (j, ((decision, _, _), batch)) in decided.into_iter().zip(batches).enumerate() {
            let known = existing.get(&(persons[j].facility.clone(), persons[j].local_id.clone()));
            out.push(BatchLinked {
                recorded: Recorded {
                    identity_id: ids[j],
                    person_id: targets[j],
                    previous_person: known.map(|r| r.person_id),
                    new_person: known.is_none() && decision.auto_link().is_none(),
                    reviews: reviews.remove(&ids[j]).unwrap_or_default(),
                    batch,
                },
                decision,
            });
        }
        Ok(out)
    }

    /// The first `limit` active records of `ranked` (of `facilities` when given), reading the
    /// demographics not yet in memory.
    pub(super) async fn take_active(
        &self,
        conn: &mut AnyConnection,
        pg: &mut Postings,
        ranked: &[(i64, u32)],
        limit: usize,
        facilities: Option<&[String]>,
    ) -> Result<Vec<(IndexedIdentity, u32)>> {
        let mut out = Vec::with_capacity(limit.min(ranked.len()));
        let mut at = 0;
        while out.len() < limit && at < ranked.len() {
            // Read ahead what this record may need: a few more than the shortfall.
            let want = (limit - out.len()) + 8;
            let window: Vec<i64> = ranked[at..].iter().take(want).map(|(id, _)| *id).collect();
            self.load_people(conn, pg, &window).await?;
            for (id, hits) in ranked[at..].iter().take(want) {
                at += 1;
                if let Some(r) = pg.record(*id)
                    && r.active
                    && let Some(person) = &r.person
                    && facilities.is_none_or(|f| f.contains(&person.facility))
                {
                    out.push((
                        IndexedIdentity {
                            person_id: super::to_person(r.person_id),
                            person: person.clone(),
                        },
                        *hits,
                    ));
                    if out.len() == limit {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Reads the demographics of the active records of `ids` that the index has not decoded
    /// yet, and keeps them there.
    async fn load_people(
        &self,
        conn: &mut AnyConnection,
        pg: &mut Postings,
        ids: &[i64],
    ) -> Result<()> {
        let missing: Vec<i64> = ids
            .iter()
            .filter(|id| {
                pg.record(**id)
                    .is_some_and(|r| r.active && r.person.is_none())
            })
            .copied()
            .collect();
        for chunk in missing.chunks(IN_LIST) {
            let mut s = Sql::for_backend(
                "SELECT id, facility, local_id, person FROM identities WHERE id IN (".into(),
                self.backend,
            );
            for (i, id) in chunk.iter().enumerate() {
                if i > 0 {
                    s.push(", ");
                }
                s.bind(*id);
            }
            s.push(")");
            let rows = s
                .query()
                .fetch_all(&mut *conn)
                .await
                .map_err(q("read identity candidates"))?;
            for r in rows {
                let d = || q("decode identity candidate");
                let id: i64 = r.try_get("id").map_err(d())?;
                let facility: String = r.try_get("facility").map_err(d())?;
                let local_id: String = r.try_get("local_id").map_err(d())?;
                let raw: String = r.try_get("person").map_err(d())?;
                let person = self.open_person(id, &facility, &local_id, raw)?;
                pg.keep_person(id, Arc::new(person));
            }
        }
        Ok(())
    }

    /// Inserts or replaces the records, returning their ids in the order of `persons`.
    async fn upsert_records(
        &self,
        conn: &mut AnyConnection,
        persons: &[NormalizedPerson],
        targets: &[i64],
        keys: &[Vec<u64>],
        seq: i64,
    ) -> Result<Vec<i64>> {
        let now = now_ms();
        let backend = self.backend;
        let mut by_key: HashMap<(String, String), i64> = HashMap::with_capacity(persons.len());
        for ((chunk, chunk_targets), chunk_keys) in persons
            .chunks(ROWS_PER_STATEMENT)
            .zip(targets.chunks(ROWS_PER_STATEMENT))
            .zip(keys.chunks(ROWS_PER_STATEMENT))
        {
            let mut s = Sql::for_backend("INSERT INTO identities (facility, local_id, person_id, person, keys, keys_seq, active, created_at, updated_at) VALUES ".into(), backend);
            for (i, ((p, target), k)) in chunk.iter().zip(chunk_targets).zip(chunk_keys).enumerate()
            {
                s.push(if i == 0 { "(" } else { ", (" });
                s.bind(p.facility.clone());
                s.push(", ");
                s.bind(p.local_id.clone());
                s.push(", ");
                s.bind(*target);
                s.push(", ");
                s.bind(self.seal_person(p)?);
                s.push(", ");
                s.bind(super::postings::encode_keys(k));
                s.push(", ");
                s.bind(seq);
                s.push(", 1, ");
                s.bind(now);
                s.push(", ");
                s.bind(now);
                s.push(")");
            }
            s.push(" ON CONFLICT (facility, local_id) DO UPDATE SET person_id = excluded.person_id, person = excluded.person, keys = excluded.keys, keys_seq = excluded.keys_seq, active = 1, updated_at = excluded.updated_at RETURNING id, facility, local_id");
            let rows = s
                .query()
                .fetch_all(&mut *conn)
                .await
                .map_err(q("upsert identities"))?;
            for r in rows {
                let d = || q("upsert identities");
                let id: i64 = r.try_get("id").map_err(d())?;
                let facility: String = r.try_get("facility").map_err(d())?;
                let local_id: String = r.try_get("local_id").map_err(d())?;
                by_key.insert((facility, local_id), id);
            }
        }
        persons
            .iter()
            .map(|p| {
                by_key
                    .get(&(p.facility.clone(), p.local_id.clone()))
                    .copied()
                    .ok_or_else(|| {
                        StoreError::Inconsistent(format!(
                            "identity batch: no id returned for a record of facility {}",
                            p.facility
                        ))
                    })
            })
            .collect()
    }
}

/// The records sharing `keys` (hashes), most shared keys first, then the oldest; keys shared by
/// more than [`MAX_POSTINGS`] records are skipped (as the matcher's own index does).
pub(super) fn rank(postings: &Postings, keys: &[u64]) -> Vec<(i64, u32)> {
    let mut hits: HashMap<i64, u32> = HashMap::new();
    for k in keys {
        let ids = postings.get(*k);
        if ids.len() > MAX_POSTINGS_USIZE {
            continue;
        }
        for id in ids {
            *hits.entry(*id).or_default() += 1;
        }
    }
    let mut ranked: Vec<(i64, u32)> = hits.into_iter().collect();
    ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked
}

/// [`MAX_POSTINGS`] as a length.
const MAX_POSTINGS_USIZE: usize = MAX_POSTINGS as usize;

/// The stored records with the facility identifiers of `persons`.
async fn existing_records(
    conn: &mut AnyConnection,
    backend: Backend,
    persons: &[NormalizedPerson],
) -> Result<HashMap<(String, String), super::IdentityRow>> {
    let mut by_facility: HashMap<&str, Vec<&str>> = HashMap::new();
    for p in persons {
        by_facility
            .entry(p.facility.as_str())
            .or_default()
            .push(p.local_id.as_str());
    }
    let mut out = HashMap::new();
    for (facility, local_ids) in by_facility {
        for chunk in local_ids.chunks(IN_LIST) {
            let mut s = Sql::for_backend(
                format!("SELECT {IDENTITY_COLUMNS} FROM identities WHERE facility = "),
                backend,
            );
            s.bind(facility.to_owned());
            s.push(" AND local_id IN (");
            for (i, id) in chunk.iter().enumerate() {
                if i > 0 {
                    s.push(", ");
                }
                s.bind((*id).to_owned());
            }
            s.push(")");
            let rows = s
                .query()
                .fetch_all(&mut *conn)
                .await
                .map_err(q("read known identities"))?;
            for r in rows {
                let row = identity_row(&r)?;
                out.insert((row.facility.clone(), row.local_id.clone()), row);
            }
        }
    }
    Ok(out)
}

/// `n` new person ids. Which new row gets which id does not matter (a person row is only an
/// id and a time), so the ids are taken in whatever order `RETURNING` gives them.
async fn allocate_persons(conn: &mut AnyConnection, backend: Backend, n: u64) -> Result<Vec<i64>> {
    let mut ids = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    let now = now_ms();
    let mut left = n;
    while left > 0 {
        let take = left.min(ROWS_PER_STATEMENT as u64);
        let mut s = Sql::for_backend("INSERT INTO persons (created_at) VALUES ".into(), backend);
        for i in 0..take {
            s.push(if i == 0 { "(" } else { ", (" });
            s.bind(now);
            s.push(")");
        }
        s.push(" RETURNING id");
        let rows = s
            .query()
            .fetch_all(&mut *conn)
            .await
            .map_err(q("allocate person ids"))?;
        for r in rows {
            ids.push(r.try_get::<i64, _>(0).map_err(q("allocate person ids"))?);
        }
        left -= take;
    }
    if ids.len() as u64 != n {
        return Err(StoreError::Inconsistent(format!(
            "identity batch: asked for {n} person ids, got {}",
            ids.len()
        )));
    }
    Ok(ids)
}

/// A `match` row of the history.
struct HistoryInsert<'a> {
    batch: &'a str,
    identity_id: i64,
    from_person: Option<i64>,
    from_active: Option<bool>,
    to_person: i64,
    grade: &'static str,
    score: Option<f64>,
    decision: String,
    reason: &'static str,
}

async fn insert_history(
    conn: &mut AnyConnection,
    backend: Backend,
    rows: &[HistoryInsert<'_>],
    actor: &str,
) -> Result<()> {
    let now = now_ms();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut s = Sql::for_backend("INSERT INTO identity_history (batch, identity_id, action, from_person, to_person, from_active, to_active, grade, score, decision, actor, reason, undone, at) VALUES ".into(), backend);
        for (i, h) in chunk.iter().enumerate() {
            s.push(if i == 0 { "(" } else { ", (" });
            s.bind(h.batch.to_owned());
            s.push(", ");
            s.bind(h.identity_id);
            s.push(", 'match', ");
            s.bind(h.from_person);
            s.push(", ");
            s.bind(h.to_person);
            s.push(", ");
            s.bind(h.from_active.map(i64::from));
            s.push(", 1, ");
            s.bind(h.grade.to_owned());
            s.push(", ");
            // A NULL bound as f64 reaches PostgreSQL through the Any driver in a format it
            // refuses.
            match h.score {
                Some(v) => s.bind(v),
                None => s.push("NULL"),
            }
            s.push(", ");
            s.bind(h.decision.clone());
            s.push(", ");
            s.bind(actor.to_owned());
            s.push(", ");
            s.bind(h.reason.to_owned());
            s.push(", 0, ");
            s.bind(now);
            s.push(")");
        }
        s.query()
            .execute(&mut *conn)
            .await
            .map_err(q("append identity history"))?;
    }
    Ok(())
}

/// Queues the probable and possible candidates of other persons for review (refreshing a
/// pending entry for the same pair); returns the entry ids per record id.
async fn queue_reviews(
    conn: &mut AnyConnection,
    backend: Backend,
    decided: &[(MatchDecision, u64, Audited)],
    ids: &[i64],
    targets: &[i64],
) -> Result<HashMap<i64, Vec<i64>>> {
    let now = now_ms();
    let mut rows = Vec::new();
    for (j, (decision, _, _)) in decided.iter().enumerate() {
        let mut persons = HashSet::new();
        for c in &decision.candidates {
            let person = c.person_id as i64;
            if !matches!(c.grade, Grade::Probable | Grade::Possible)
                || person == targets[j]
                || !persons.insert(person)
            {
                continue;
            }
            let json = serde_json::to_string(c).map_err(|e| {
                StoreError::Inconsistent(format!("identity: encode candidate: {e}"))
            })?;
            rows.push((ids[j], person, grade_name(c.grade), c.score, json));
        }
    }
    let mut out: HashMap<i64, Vec<i64>> = HashMap::new();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut s = Sql::for_backend("INSERT INTO identity_reviews (identity_id, candidate_person, grade, score, decision, state, created_at) VALUES ".into(), backend);
        for (i, (identity, person, grade, score, json)) in chunk.iter().enumerate() {
            s.push(if i == 0 { "(" } else { ", (" });
            s.bind(*identity);
            s.push(", ");
            s.bind(*person);
            s.push(", ");
            s.bind((*grade).to_owned());
            s.push(", ");
            s.bind(*score);
            s.push(", ");
            s.bind(json.clone());
            s.push(", 'pending', ");
            s.bind(now);
            s.push(")");
        }
        s.push(" ON CONFLICT (identity_id, candidate_person) DO UPDATE SET grade = excluded.grade, score = excluded.score, decision = excluded.decision WHERE identity_reviews.state = 'pending' RETURNING id, identity_id");
        let returned = s
            .query()
            .fetch_all(&mut *conn)
            .await
            .map_err(q("queue reviews"))?;
        for r in returned {
            let id: i64 = r.try_get(0).map_err(q("queue reviews"))?;
            let identity: i64 = r.try_get(1).map_err(q("queue reviews"))?;
            out.entry(identity).or_default().push(id);
        }
    }
    for list in out.values_mut() {
        list.sort_unstable();
    }
    Ok(out)
}
