//! The writer's batch loop over the sqlx pool (PostgreSQL, or SQLite when its file cannot be
//! opened directly), and what both writers share: one transaction per batch, its operations
//! retried one by one when it fails.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use sqlx::Connection;
use tokio::sync::{Mutex, mpsc};

use super::batch::{append_all, transition_all};
use super::exec::{Exec, SqlxExec};
use super::{Counters, Op, Sealed, Staged};
use crate::message::{Accepted, now_ms};
use crate::store::{Result, Store, q};

pub(super) async fn writer_loop(
    store: Store,
    rx: Arc<Mutex<mpsc::Receiver<Op>>>,
    counters: Arc<Counters>,
    max_batch: usize,
) {
    loop {
        let mut batch = Vec::with_capacity(64);
        {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            batch.push(first);
            drain(&mut rx, &mut batch, max_batch);
            // Producers that are runnable right now (typically those whose previous operation
            // was just committed) are about to send their next one: let them run and take what
            // they send into this batch too, while each round still brings something. At idle
            // this costs one yield.
            for _ in 0..MAX_GATHER_ROUNDS {
                if batch.len() >= max_batch {
                    break;
                }
                let before = batch.len();
                tokio::task::yield_now().await;
                drain(&mut rx, &mut batch, max_batch);
                if batch.len() == before {
                    break;
                }
            }
        }
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters
            .ops
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        commit_batch(&mut PoolApplier(&store), batch).await;
    }
}

/// Most times the writer yields to let more operations arrive before it commits a batch.
const MAX_GATHER_ROUNDS: usize = 8;

pub(super) fn drain(rx: &mut mpsc::Receiver<Op>, batch: &mut Vec<Op>, max_batch: usize) {
    while batch.len() < max_batch {
        match rx.try_recv() {
            Ok(op) => batch.push(op),
            Err(_) => break,
        }
    }
}

pub(super) type Applied = (Vec<Accepted>, Vec<bool>);

/// Applies appends and transitions in one transaction.
pub(super) trait Applier {
    async fn apply(
        &mut self,
        appends: &[&Sealed],
        transitions: &[&Staged],
        now: i64,
    ) -> Result<Applied>;
}

pub(super) async fn apply_on<E: Exec>(
    e: &mut E,
    appends: &[&Sealed],
    transitions: &[&Staged],
    now: i64,
) -> Result<Applied> {
    let accepted = append_all(e, appends, now).await?;
    let applied = transition_all(e, transitions, now).await?;
    Ok((accepted, applied))
}

/// Through sqlx's pool (PostgreSQL, and SQLite when the file cannot be opened directly).
struct PoolApplier<'s>(&'s Store);

impl Applier for PoolApplier<'_> {
    async fn apply(
        &mut self,
        appends: &[&Sealed],
        transitions: &[&Staged],
        now: i64,
    ) -> Result<Applied> {
        let backend = self.0.backend();
        let mut conn = self
            .0
            .write_pool()
            .acquire()
            .await
            .map_err(q("acquire writer connection"))?;
        // Every batch is a transaction: an append writes its state row and its body (journal
        // v2), so no batch is a single statement any more.
        let mut tx = conn.begin().await.map_err(q("begin journal batch"))?;
        let r = apply_on(&mut SqlxExec(&mut tx, backend), appends, transitions, now).await?;
        tx.commit().await.map_err(q("commit journal batch"))?;
        Ok(r)
    }
}

pub(super) async fn commit_batch<A: Applier>(a: &mut A, batch: Vec<Op>) {
    let mut appends = Vec::new();
    let mut transitions = Vec::new();
    for op in batch {
        match op {
            Op::Append { msg, reply } => appends.push((msg, reply)),
            Op::Transition { t, reply } => transitions.push((t, reply)),
        }
    }
    let now = now_ms();
    let result = {
        let msgs: Vec<&Sealed> = appends.iter().map(|(m, _)| &**m).collect();
        let ts: Vec<&Staged> = transitions.iter().map(|(t, _)| t).collect();
        a.apply(&msgs, &ts, now).await
    };
    match result {
        Ok((accepted, applied)) => {
            for ((_, reply), a) in appends.into_iter().zip(accepted) {
                let _ = reply.send(Ok(a));
            }
            for ((_, reply), ok) in transitions.into_iter().zip(applied) {
                reply.send(Ok(ok));
            }
        }
        Err(err) if appends.len() + transitions.len() == 1 => {
            tracing::error!(error = %err, "journal write failed");
            if let Some((_, reply)) = appends.into_iter().next() {
                let _ = reply.send(Err(err));
            } else if let Some((_, reply)) = transitions.into_iter().next() {
                reply.send(Err(err));
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, ops = appends.len() + transitions.len(), "journal batch failed; retrying its operations one by one");
            for (msg, reply) in appends {
                let r = a
                    .apply(&[&msg], &[], now)
                    .await
                    .map(|(mut a, _)| a.remove(0));
                let _ = reply.send(r);
            }
            for (t, reply) in transitions {
                let r = a.apply(&[], &[&t], now).await.map(|(_, mut a)| a.remove(0));
                if let Err(e) = &r {
                    tracing::error!(error = %e, message = t.t.id(), "journal transition failed");
                }
                reply.send(r);
            }
        }
    }
}
