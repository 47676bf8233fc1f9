//! The in-memory copy of what `device_reading` reads for every reading: a device's bindings
//! and the person of each bound record (migration 0026).
//!
//! Bindings change rarely and readings arrive by the thousand, so the store keeps them in
//! memory. Per reading it needs two counters, read in one one-row query (shared by the readings
//! that wait for it at the same time: [`Store::device_stamp`]): `device_sync.seq`, which
//! every binding and unbinding advances in its own transaction (this process's, the CLI's, or
//! another node's), and the identity index's `identity_keys_seq`, which every change of a
//! record's link to a person advances. When either moved, the copy is dropped and the rows
//! are read again. A copy is only filled with rows read after its counters, so a change
//! committed in between moves them and the next reading reads afresh.
//!
//! Only records the index holds are kept: a reading for a record not yet imported reads the
//! index again each time (the import adds the record without touching the link counter).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use huizhen_domain::vitals::binding::DeviceBinding;
use sqlx::Row;

use crate::store::{Result, Store, q};

/// The counters a copy is valid for: (`device_sync.seq`, `identity_keys_seq.value`).
pub type Stamp = (i64, i64);

/// See the module docs.
#[derive(Debug, Default)]
pub struct DeviceCache {
    copy: Mutex<Copy>,
    /// One counter read at a time, shared by the readings that wait for it: the last read's
    /// generation and counters. See [`Store::device_stamp`].
    stamp: tokio::sync::Mutex<(u64, Stamp)>,
    /// Generations of counter reads started so far.
    started: AtomicU64,
}

#[derive(Debug, Default)]
struct Copy {
    stamp: Option<Stamp>,
    /// By (facility, device), oldest first (as [`Store::device_bindings`]).
    bindings: HashMap<(String, String), Arc<Vec<DeviceBinding>>>,
    /// By (facility, local id): the record's person.
    persons: HashMap<(String, String), i64>,
}

impl Copy {
    /// Drops everything when the counters moved. Returns whether the copy is now `stamp`'s.
    fn align(&mut self, stamp: Stamp) -> bool {
        match self.stamp {
            Some(s) if s == stamp => true,
            // Older than what a concurrent reader already saw: do not go back.
            Some(s) if s.0 > stamp.0 || s.1 > stamp.1 => false,
            _ => {
                self.stamp = Some(stamp);
                self.bindings.clear();
                self.persons.clear();
                true
            }
        }
    }
}

/// A device's bindings as of `stamp`, from [`Store::device_lookup`].
#[derive(Debug, Clone)]
pub struct DeviceLookup {
    pub stamp: Stamp,
    pub bindings: Arc<Vec<DeviceBinding>>,
}

impl Store {
    /// The counters as of a read that started after this call: a change committed before the
    /// reading's step began is seen. Concurrent callers share reads (single flight): a caller
    /// that arrives while a read runs waits for it, and takes the next one's result when that
    /// read started after it arrived — at most one read in flight, however many readings.
    async fn device_stamp(&self) -> Result<Stamp> {
        let c = &self.devices_cache;
        let arrived = c.started.load(Ordering::SeqCst);
        let mut last = c.stamp.lock().await;
        if last.0 > arrived {
            // Its generation was counted (then read) after this caller arrived.
            return Ok(last.1);
        }
        let generation = c.started.fetch_add(1, Ordering::SeqCst) + 1;
        let stamp = self.read_device_stamp().await?;
        *last = (generation, stamp);
        Ok(stamp)
    }

    async fn read_device_stamp(&self) -> Result<Stamp> {
        let row = sqlx::query(
            "SELECT (SELECT seq FROM device_sync WHERE id = 1) AS d, (SELECT value FROM identity_keys_seq WHERE id = 1) AS i",
        )
        .fetch_one(&self.read)
        .await
        .map_err(q("read device and identity change counters"))?;
        let d: i64 = row
            .try_get("d")
            .map_err(q("decode device change counter"))?;
        let i: i64 = row
            .try_get("i")
            .map_err(q("decode identity change counter"))?;
        Ok((d, i))
    }

    /// The bindings of `device` in `facility`, oldest first, from the in-memory copy brought up
    /// to date (one counter read; the rows only when the copy lacks them).
    pub async fn device_lookup(&self, facility: &str, device: &str) -> Result<DeviceLookup> {
        let stamp = self.device_stamp().await?;
        let key = (facility.to_owned(), device.to_owned());
        {
            let mut c = self.devices_cache.copy.lock().expect("device cache");
            if c.align(stamp)
                && let Some(b) = c.bindings.get(&key)
            {
                return Ok(DeviceLookup {
                    stamp,
                    bindings: b.clone(),
                });
            }
        }
        let rows = self.device_bindings(facility, device).await?;
        let bindings = Arc::new(rows.into_iter().map(|r| r.binding).collect::<Vec<_>>());
        let mut c = self.devices_cache.copy.lock().expect("device cache");
        if c.stamp == Some(stamp) {
            c.bindings.insert(key, bindings.clone());
        }
        Ok(DeviceLookup { stamp, bindings })
    }

    /// The person of the record `local_id` of `facility` (`None`: the identity index does not
    /// hold it), from the copy of `lookup`'s time when it has it.
    pub async fn device_person(
        &self,
        lookup: &DeviceLookup,
        facility: &str,
        local_id: &str,
    ) -> Result<Option<i64>> {
        let key = (facility.to_owned(), local_id.to_owned());
        {
            let c = self.devices_cache.copy.lock().expect("device cache");
            if c.stamp == Some(lookup.stamp)
                && let Some(p) = c.persons.get(&key)
            {
                return Ok(Some(*p));
            }
        }
        let Some(row) = self.identity(facility, local_id).await? else {
            return Ok(None);
        };
        let mut c = self.devices_cache.copy.lock().expect("device cache");
        if c.stamp == Some(lookup.stamp) {
            c.persons.insert(key, row.person_id);
        }
        Ok(Some(row.person_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moved_counter_drops_the_copy_and_an_older_one_does_not_refill_it() {
        let mut c = Copy::default();
        assert!(c.align((1, 0)));
        c.persons.insert(("f".into(), "MR-1".into()), 7);
        assert!(c.align((1, 0)));
        assert_eq!(c.persons.len(), 1);
        assert!(c.align((1, 1)), "an identity link changed");
        assert!(c.persons.is_empty());
        c.persons.insert(("f".into(), "MR-1".into()), 8);
        assert!(!c.align((1, 0)), "a reader that saw the older counters");
        assert_eq!(c.stamp, Some((1, 1)));
        assert_eq!(c.persons.len(), 1);
        assert!(c.align((2, 1)), "a binding changed");
        assert!(c.persons.is_empty());
    }
}
