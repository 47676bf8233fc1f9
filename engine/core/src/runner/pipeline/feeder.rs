//! The feeder: one task per pipeline that claims its due messages from the journal (those the
//! in-memory queue had no room for, retries whose backoff passed, reprocessed and recovered
//! ones) in journal order and queues them for the workers as room frees up.

use std::time::Duration;

use super::PipelineHandle;
use crate::message::Message;
use crate::work::Work;

impl PipelineHandle {
    /// Queues a journaled message for a worker, waiting for room. During shutdown it is left in
    /// the journal instead (the next start recovers it).
    pub async fn enqueue(&self, m: Message) {
        let i = &self.inner;
        let part = self.partition(&m, i.room.len());
        let permit = tokio::select! {
            _ = i.stop.cancelled() => return,
            p = i.room[part].clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        self.send(part, m, permit);
    }

    /// A worker took a message of partition `part` from memory: its room is free again.
    pub(super) fn taken(&self, part: usize) {
        self.inner.room[part].add_permits(1);
        // An ordered pipeline's feeder waits for room in a partition, not on it.
        if self.inner.room.len() > 1 && self.spill().spilled {
            self.inner.feed.notify_one();
        }
    }

    /// Wakes the feeder (a reprocess, a retry that fell due).
    pub fn wake_feeder(&self) {
        self.inner.feed.notify_one();
    }

    /// Feeds the workers from the journal: claims this pipeline's due messages (those the
    /// in-memory queue had no room for, retries whose backoff passed, reprocessed and
    /// recovered ones) in journal order, a batch at a time, and queues them as room frees up.
    /// Memory holds at most the queue and one batch, however long the backlog.
    pub(in crate::runner) async fn feeder(self, poll: Duration) {
        const BATCH: i64 = 256;
        let i = &self.inner;
        if i.room.len() > 1 && i.remote.is_none() {
            return self.partition_feeder(poll).await;
        }
        let names = [i.name.clone()];
        let node = i.remote.as_ref().map(|r| r.node.clone());
        loop {
            if i.stop.is_cancelled() {
                return;
            }
            let seen = self.spill().appended;
            let mut full = false;
            match i
                .journal
                .store()
                .claim_due_by(&names, BATCH, node.as_deref())
                .await
            {
                Ok(claimed) => {
                    full = claimed.len() as i64 == BATCH;
                    for m in claimed {
                        self.enqueue(m).await;
                    }
                    if !full {
                        let mut s = self.spill();
                        if s.spilled && s.pending == 0 && s.appended == seen {
                            s.spilled = false;
                            if std::mem::take(&mut s.announced) {
                                tracing::info!(pipeline = %i.name, "journal backlog taken up: new messages go to memory again");
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(pipeline = %i.name, error = %e, "feeder could not claim due messages")
                }
            }
            if !full {
                tokio::select! {
                    _ = i.stop.cancelled() => return,
                    _ = i.feed.notified() => {}
                    _ = tokio::time::sleep(poll) => {}
                }
            }
        }
    }

    /// The feeder of an ordered pipeline: takes each partition's due messages in journal order
    /// as that partition has room, never waiting on one partition, so a partition whose head of
    /// line is retrying in place holds back only its own keys. Claims a partition once a quarter
    /// of its room is free (or it is idle), a batch per claim.
    pub(super) async fn partition_feeder(self, poll: Duration) {
        const BATCH: usize = 256;
        let i = &self.inner;
        let n = i.room.len();
        let store = i.journal.store();
        match store.repartition(&i.name, n as i64).await {
            Ok(0) => {}
            Ok(moved) => {
                tracing::info!(pipeline = %i.name, moved, partitions = n, "waiting messages mapped to the pipeline's partitions (its concurrency changed)")
            }
            Err(e) => {
                tracing::warn!(pipeline = %i.name, error = %e, "waiting messages not mapped to the new partitions")
            }
        }
        // Messages journaled before they carried their partition (an upgraded journal) go
        // first, in journal order, waiting for room as the feeder of an unordered pipeline does
        // (the pipeline starts spilled: nothing new overtakes them).
        loop {
            if i.stop.is_cancelled() {
                return;
            }
            match store.claim_due_unpartitioned(&i.name, BATCH as i64).await {
                Ok(claimed) if claimed.is_empty() => break,
                Ok(claimed) => {
                    for m in claimed {
                        self.enqueue(m).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(pipeline = %i.name, error = %e, "feeder could not claim due messages");
                    tokio::select! {
                        _ = i.stop.cancelled() => return,
                        _ = tokio::time::sleep(poll) => {}
                    }
                }
            }
        }
        let per = i.queue_capacity.div_ceil(n).max(1);
        let threshold = (per / 4).clamp(1, BATCH);
        loop {
            if i.stop.is_cancelled() {
                return;
            }
            let seen = self.spill().appended;
            // Every partition was asked and none has more due now: the spill may end.
            let mut drained = true;
            let mut more = false;
            for part in 0..n {
                let free = i.room[part].available_permits();
                let idle = free >= per;
                if free < threshold && !idle {
                    drained = false;
                    continue;
                }
                let mut permits = Vec::new();
                while permits.len() < free.min(BATCH) {
                    match i.room[part].clone().try_acquire_owned() {
                        Ok(p) => permits.push(p),
                        Err(_) => break,
                    }
                }
                if permits.is_empty() {
                    drained = false;
                    continue;
                }
                let asked = permits.len();
                match store
                    .claim_due_partition(&i.name, part as i64, asked as i64, None)
                    .await
                {
                    Ok(claimed) => {
                        if claimed.len() == asked {
                            more = true;
                            drained = false;
                        }
                        for (m, permit) in claimed.into_iter().zip(permits.drain(..)) {
                            self.send(part, m, permit);
                        }
                    }
                    Err(e) => {
                        drained = false;
                        tracing::warn!(pipeline = %i.name, part, error = %e, "feeder could not claim due messages")
                    }
                }
                // Unused permits go back with `permits`.
            }
            if drained {
                let mut s = self.spill();
                if s.spilled && s.pending == 0 && s.appended == seen {
                    s.spilled = false;
                    if std::mem::take(&mut s.announced) {
                        tracing::info!(pipeline = %i.name, "journal backlog taken up: new messages go to memory again");
                    }
                }
            }
            if !more {
                tokio::select! {
                    _ = i.stop.cancelled() => return,
                    _ = i.feed.notified() => {}
                    _ = tokio::time::sleep(poll) => {}
                }
            }
        }
    }

    /// The stable hash of a message's ordering key (`None` without an `ordering_key`). Stable
    /// across processes and versions (FNV-1a, 63 bits): it is journaled, and every node of a
    /// cluster must map a key to the same partition.
    pub(super) fn ordering_hash(&self, m: &Message) -> Option<i64> {
        let expr = self.inner.ordering_key.as_ref()?;
        let mut w = Work::from_message(m);
        let key = match expr.eval_string(&mut w) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(pipeline = %self.inner.name, id = %m.id, error = %e, "ordering key not computed; using partition 0");
                return Some(0);
            }
        };
        Some(stable_hash(key.as_bytes()))
    }

    pub(super) fn partition(&self, m: &Message, n: usize) -> usize {
        match self.ordering_hash(m) {
            Some(h) => (h as u64 % n.max(1) as u64) as usize,
            None => 0,
        }
    }
}

/// FNV-1a over `bytes`, as a non-negative `i64` (the journal's `ordering_hash`).
pub(super) fn stable_hash(bytes: &[u8]) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 1) as i64
}
