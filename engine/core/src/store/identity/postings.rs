//! The blocking index in memory: which records carry each blocking key.
//!
//! Each record stores its blocking keys in its own row (`identities.keys`: the 64-bit FNV-1a
//! hashes of the keys as stored — blind indexes with encryption on — as hex) with the value of
//! a change counter (`keys_seq`, from `identity_keys_seq`) taken in the transaction that wrote
//! them. Every [`Store`] keeps the postings (key hash → record ids) in memory, loaded on first
//! use and brought up to date before each lookup by reading the rows whose `keys_seq` moved
//! past what it has seen — so records linked by another engine process are found as well.
//!
//! Why not a table of keys: a record has about ten keys, each a random place in a key index,
//! so every linked record dirtied about ten random B-tree pages, and a bulk import wrote
//! tens of kilobytes of pages per record (BENCHMARKS.md, "Patient identity matching"). The
//! record row is appended in id order, so its keys cost next to nothing to write. The price
//! is memory: about 40 bytes per key and 100 per record (≈ 0.5 GB for 1,000,000 records).
//!
//! Writers of keys take the next counter value under the counter row's lock (SQLite: the one
//! writer; PostgreSQL: the row lock, held to commit), so rows become visible in counter order
//! and a reader that has seen value *n* never misses a row with a smaller one.

use std::collections::HashMap;
use std::sync::Arc;

use huizhen_domain::identity::NormalizedPerson;
use sqlx::{AnyConnection, Row};

use super::super::sql::Sql;
use super::super::{Result, Store, StoreError, q};

/// A record just written: its row id, blocking keys, person and demographics.
pub(crate) type WrittenRecord = (i64, Box<[u64]>, i64, Arc<NormalizedPerson>);

/// Record ids of one key: most keys belong to one record.
#[derive(Debug, Clone)]
enum Ids {
    One(i64),
    Many(Vec<i64>),
}

impl Ids {
    fn as_slice(&self) -> &[i64] {
        match self {
            Ids::One(id) => std::slice::from_ref(id),
            Ids::Many(ids) => ids,
        }
    }

    fn insert(&mut self, id: i64) {
        match self {
            Ids::One(one) if *one == id => {}
            Ids::One(one) => *self = Ids::Many(vec![(*one).min(id), (*one).max(id)]),
            Ids::Many(ids) => {
                if let Err(at) = ids.binary_search(&id) {
                    ids.insert(at, id);
                }
            }
        }
    }

    /// Removes `id`; `true` when nothing is left.
    fn remove(&mut self, id: i64) -> bool {
        match self {
            Ids::One(one) => *one == id,
            Ids::Many(ids) => {
                if let Ok(at) = ids.binary_search(&id) {
                    ids.remove(at);
                }
                match ids.as_slice() {
                    [] => true,
                    [only] => {
                        *self = Ids::One(*only);
                        false
                    }
                    _ => false,
                }
            }
        }
    }
}

/// What the index holds of one record.
#[derive(Debug, Clone)]
pub(crate) struct Rec {
    keys: Box<[u64]>,
    /// The person it is linked to.
    pub(crate) person_id: i64,
    /// False once retired by a merge.
    pub(crate) active: bool,
    /// The decoded demographics, once read (dropped when the row changes).
    pub(crate) person: Option<Arc<NormalizedPerson>>,
}

/// The in-memory postings of one store, and how far it has read the counter.
#[derive(Debug, Default)]
pub(crate) struct Postings {
    /// The counter value read up to; `None` before the first load.
    seen: Option<i64>,
    by_key: HashMap<u64, Ids>,
    records: HashMap<i64, Rec>,
}

impl Postings {
    /// The record ids filed under `key`.
    pub(crate) fn get(&self, key: u64) -> &[i64] {
        self.by_key.get(&key).map_or(&[], Ids::as_slice)
    }

    /// The record `id`, when filed.
    pub(crate) fn record(&self, id: i64) -> Option<&Rec> {
        self.records.get(&id)
    }

    /// Keeps the decoded demographics of record `id`.
    pub(crate) fn keep_person(&mut self, id: i64, person: Arc<NormalizedPerson>) {
        if let Some(r) = self.records.get_mut(&id) {
            r.person = Some(person);
        }
    }

    /// Files record `id` under `keys` with its link, replacing what it was filed under.
    pub(crate) fn set(
        &mut self,
        id: i64,
        keys: Box<[u64]>,
        person_id: i64,
        active: bool,
        person: Option<Arc<NormalizedPerson>>,
    ) {
        if let Some(old) = self.records.remove(&id) {
            for k in old.keys.iter() {
                if let Some(ids) = self.by_key.get_mut(k)
                    && ids.remove(id)
                {
                    self.by_key.remove(k);
                }
            }
        }
        for k in keys.iter() {
            match self.by_key.get_mut(k) {
                Some(ids) => ids.insert(id),
                None => {
                    self.by_key.insert(*k, Ids::One(id));
                }
            }
        }
        self.records.insert(
            id,
            Rec {
                keys,
                person_id,
                active,
                person,
            },
        );
    }

    /// How many records are filed.
    #[cfg(test)]
    pub(crate) fn records(&self) -> usize {
        self.records.len()
    }
}

/// The 64-bit FNV-1a hash of a key as stored.
pub(crate) fn key_hash(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The `keys` column text of `hashes`: 16 hex digits each.
pub(crate) fn encode_keys(hashes: &[u64]) -> String {
    let mut out = String::with_capacity(hashes.len() * 16);
    for h in hashes {
        out.push_str(&format!("{h:016x}"));
    }
    out
}

/// The hashes of a `keys` column; an error names the record.
pub(crate) fn decode_keys(id: i64, text: &str) -> Result<Box<[u64]>> {
    if !text.len().is_multiple_of(16) {
        return Err(StoreError::Inconsistent(format!(
            "identity record {id}: blocking keys of length {} (not a multiple of 16)",
            text.len()
        )));
    }
    (0..text.len() / 16)
        .map(|i| {
            u64::from_str_radix(&text[i * 16..i * 16 + 16], 16).map_err(|e| {
                StoreError::Inconsistent(format!("identity record {id}: blocking key {i}: {e}"))
            })
        })
        .collect()
}

/// Takes the next value of the keys counter (locking its row until the transaction ends).
pub(crate) async fn next_seq(conn: &mut AnyConnection) -> Result<i64> {
    let row = sqlx::query("UPDATE identity_keys_seq SET value = value + 1 RETURNING value")
        .fetch_one(&mut *conn)
        .await
        .map_err(q("advance the identity keys counter"))?;
    row.try_get(0)
        .map_err(q("advance the identity keys counter"))
}

/// Rows read per refresh query.
const REFRESH_ROWS: i64 = 20_000;

impl Store {
    /// The in-memory index, brought up to date on `conn` (inside the caller's transaction when
    /// it writes, so what it then decides is consistent with what it read). Hold the guard
    /// for as long as the index is used.
    pub(crate) async fn postings_current(
        &self,
        conn: &mut AnyConnection,
    ) -> Result<tokio::sync::MutexGuard<'_, Postings>> {
        let mut postings = self.identity_postings.lock().await;
        let current: i64 = sqlx::query("SELECT value FROM identity_keys_seq")
            .fetch_one(&mut *conn)
            .await
            .map_err(q("read the identity keys counter"))?
            .try_get(0)
            .map_err(q("read the identity keys counter"))?;
        let mut seen = postings.seen.unwrap_or(i64::MIN);
        while seen < current {
            let mut s = Sql::for_backend(
                "SELECT id, keys, keys_seq, person_id, active FROM identities WHERE keys_seq > "
                    .into(),
                self.backend,
            );
            s.bind(seen);
            s.push(" AND keys_seq <= ");
            s.bind(current);
            s.push(" ORDER BY keys_seq LIMIT ");
            s.bind(REFRESH_ROWS);
            let rows = s
                .query()
                .fetch_all(&mut *conn)
                .await
                .map_err(q("read identity blocking keys"))?;
            let Some(last) = rows.last() else { break };
            seen = last.try_get(2).map_err(q("read identity blocking keys"))?;
            for r in &rows {
                let d = || q("read identity blocking keys");
                let id: i64 = r.try_get(0).map_err(d())?;
                let keys: String = r.try_get(1).map_err(d())?;
                let person_id: i64 = r.try_get(3).map_err(d())?;
                let active: i64 = r.try_get(4).map_err(d())?;
                postings.set(id, decode_keys(id, &keys)?, person_id, active != 0, None);
            }
        }
        postings.seen = Some(current);
        Ok(postings)
    }

    /// Files records just written and committed with counter value `seq` (their keys, person
    /// and demographics) in the index the caller holds.
    pub(crate) fn postings_written(postings: &mut Postings, seq: i64, records: Vec<WrittenRecord>) {
        // Only when this store has seen everything before `seq`: otherwise the next refresh
        // reads these rows with the rest.
        if postings.seen == Some(seq - 1) {
            for (id, keys, person_id, person) in records {
                postings.set(id, keys, person_id, true, Some(person));
            }
            postings.seen = Some(seq);
        }
    }

    /// The records still without stored keys (written before the keys moved into the row):
    /// their keys are computed from their demographics and stored. Runs once per store.
    pub(crate) async fn backfill_identity_keys(&self) -> Result<u64> {
        let mut done = 0;
        loop {
            let rows = sqlx::query(
                "SELECT id, facility, local_id, person FROM identities WHERE keys_seq = 0 ORDER BY id LIMIT 500",
            )
            .fetch_all(&self.read)
            .await
            .map_err(q("read identities without keys"))?;
            if rows.is_empty() {
                return Ok(done);
            }
            let mut conn = self.write.acquire().await.map_err(q("acquire writer"))?;
            let mut tx = sqlx::Connection::begin(&mut *conn)
                .await
                .map_err(q("begin identity keys backfill"))?;
            let seq = next_seq(&mut tx).await?;
            for r in &rows {
                let d = || q("read identities without keys");
                let id: i64 = r.try_get("id").map_err(d())?;
                let facility: String = r.try_get("facility").map_err(d())?;
                let local_id: String = r.try_get("local_id").map_err(d())?;
                let raw: String = r.try_get("person").map_err(d())?;
                let person = self.open_person(id, &facility, &local_id, raw)?;
                let keys = self.identity_key_hashes(&person);
                let mut u = Sql::for_backend("UPDATE identities SET keys = ".into(), self.backend);
                u.bind(encode_keys(&keys));
                u.push(", keys_seq = ");
                u.bind(seq);
                u.push(" WHERE id = ");
                u.bind(id);
                u.query()
                    .execute(&mut *tx)
                    .await
                    .map_err(q("store identity keys"))?;
                done += 1;
            }
            tx.commit()
                .await
                .map_err(q("commit identity keys backfill"))?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postings_follow_a_records_keys() {
        let mut p = Postings::default();
        p.set(1, vec![10, 20].into(), 1, true, None);
        p.set(2, vec![20, 30].into(), 2, true, None);
        assert_eq!(p.get(20), &[1, 2]);
        p.set(1, vec![30].into(), 1, true, None);
        assert_eq!(p.get(10), &[] as &[i64]);
        assert_eq!(p.get(20), &[2]);
        assert_eq!(p.get(30), &[1, 2]);
        assert_eq!(p.records(), 2);
    }

    #[test]
    fn keys_round_trip_and_bad_text_names_the_record() {
        let hashes = [key_hash("rid:11010519491231002X"), 0, u64::MAX];
        let text = encode_keys(&hashes);
        assert_eq!(text.len(), 48);
        assert_eq!(&*decode_keys(7, &text).unwrap(), &hashes);
        let e = decode_keys(7, "abc").unwrap_err().to_string();
        assert!(e.contains("identity record 7"), "{e}");
    }
}
