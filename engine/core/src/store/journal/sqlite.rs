//! The SQLite journal writer: a thread with its own rusqlite connection, and the WAL
//! checkpointer beside it.

use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::exec::{Exec, Rows, Stmt, Value};
use super::writer::{Applied, Applier, apply_on, commit_batch, drain};
use super::{Counters, Op, Sealed, Staged};
use crate::store::{Backend, Result, Store, StoreError};

/// The SQLite writer's own connection, when the store is a SQLite file.
///
/// sqlx runs each SQLite connection on a worker thread of its own and sends it every statement
/// (and BEGIN and COMMIT) as a message, so a batch of a dedup lookup, an insert and a few
/// updates costs half a dozen thread hand-offs. Under many small concurrent requests (MLLP
/// senders waiting for their ACK) those hand-offs, not SQLite, were the cost of the journal. The
/// writer therefore runs on a thread that owns a rusqlite connection to the same file (rusqlite
/// links the same `libsqlite3-sys` as sqlx) and takes whole batches from its queue: one
/// hand-off per batch. Everything else (reads, migrations, the scheduler) stays on sqlx.
pub(super) fn sqlite_writer(store: &Store) -> Result<Option<rusqlite::Connection>> {
    let Some(path) = store.sqlite_file() else {
        return Ok(None);
    };
    let sq = |op| move |source| StoreError::Sqlite { op, source };
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
            | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sq("open the journal writer connection"))?;
    let sync = match store.durability() {
        crate::store::Durability::ProcessCrash => "NORMAL",
        crate::store::Durability::PowerLoss => "FULL",
    };
    // A negative cache_size is KiB.
    let cache_kib = (store.sqlite_cache() / 1024).max(64);
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA cache_size=-{cache_kib}; PRAGMA temp_store=MEMORY;"
    ))
    .map_err(sq("configure the journal writer connection"))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sq("configure the journal writer connection"))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(Some(conn))
}

/// How often the checkpointer copies the WAL back into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Runs WAL checkpoints on a thread of their own, so that the writer's commits do not.
///
/// SQLite checkpoints by default inside the commit that takes the WAL past 1,000 pages, which
/// put copying pages back into the database file (and its fsync) on the journal writer's path:
/// 15% of its time under load, and the writer is what limits throughput. The writer connection
/// therefore has `wal_autocheckpoint=0`, and this thread, with a connection of its own, runs a
/// PASSIVE checkpoint (which never blocks the writer or readers) every [`CHECKPOINT_EVERY`],
/// and a last one when the writer stops. Returns the sender whose drop
/// tells it to stop.
fn start_checkpointer(path: &std::path::Path) -> Option<std::sync::mpsc::Sender<()>> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .and_then(|c| {
        c.busy_timeout(std::time::Duration::from_secs(10))
            .map(|()| c)
    });
    let conn = match conn {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "journal: no checkpoint thread; the writer checkpoints itself");
            return None;
        }
    };
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("huizhen-checkpoint".into())
        .spawn(move || {
            let checkpoint = |conn: &rusqlite::Connection| {
                // (busy, WAL frames, frames checkpointed)
                conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                })
            };
            let mut last = (0, -1, -1);
            loop {
                let done = matches!(
                    stopped.recv_timeout(CHECKPOINT_EVERY),
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) | Ok(())
                );
                match checkpoint(&conn) {
                    Ok(now) => last = now,
                    Err(e) => tracing::warn!(error = %e, last_frames = last.1, "journal: WAL checkpoint failed; retrying"),
                }
                if done {
                    return;
                }
            }
        });
    match spawned {
        Ok(_) => Some(stop),
        Err(e) => {
            tracing::warn!(error = %e, "journal: no checkpoint thread; the writer checkpoints itself");
            None
        }
    }
}

pub(super) fn sqlite_writer_loop(
    mut conn: rusqlite::Connection,
    mut rx: mpsc::Receiver<Op>,
    counters: &Counters,
    max_batch: usize,
) {
    // Group commit without waiting: while one batch commits, the requests that arrive queue up
    // and are all taken as the next batch.
    let path = conn.path().map(std::path::PathBuf::from);
    let _checkpointer = match path.as_deref().and_then(start_checkpointer) {
        Some(stop) => match conn.pragma_update(None, "wal_autocheckpoint", 0) {
            Ok(()) => Some(stop),
            Err(e) => {
                tracing::warn!(error = %e, "journal: the writer keeps checkpointing itself");
                None
            }
        },
        None => None,
    };
    while let Some(first) = rx.blocking_recv() {
        let mut batch = Vec::with_capacity(64);
        batch.push(first);
        drain(&mut rx, &mut batch, max_batch);
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters
            .ops
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        // The rusqlite executor never waits, so polling the batch once runs it to the end.
        futures::executor::block_on(commit_batch(&mut LiteApplier(&mut conn), batch));
    }
}

/// On the SQLite writer thread's own connection.
struct LiteApplier<'c>(&'c mut rusqlite::Connection);

impl Applier for LiteApplier<'_> {
    async fn apply(
        &mut self,
        appends: &[&Sealed],
        transitions: &[&Staged],
        now: i64,
    ) -> Result<Applied> {
        let sq = |op| move |source| StoreError::Sqlite { op, source };
        // IMMEDIATE: take the write lock now, so that the dedup lookup and the writes see the
        // same database even if another connection (the scheduler's) writes in between.
        let tx = self
            .0
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sq("begin journal batch"))?;
        let r = apply_on(&mut LiteExec(&tx), appends, transitions, now).await?;
        tx.commit().map_err(sq("commit journal batch"))?;
        Ok(r)
    }
}

struct LiteExec<'c>(&'c rusqlite::Connection);

impl Exec for LiteExec<'_> {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn execute(&mut self, s: Stmt<'_>, op: &'static str) -> Result<u64> {
        let sq = |source| StoreError::Sqlite { op, source };
        // Every statement of the writer is one of a few fixed texts (`exec::fixed_chunks`):
        // all of them stay prepared.
        let n = self
            .0
            .prepare_cached(&s.text)
            .map_err(sq)?
            .execute(rusqlite::params_from_iter(s.args.iter()))
            .map_err(sq)?;
        Ok(n as u64)
    }

    async fn fetch(&mut self, s: Stmt<'_>, op: &'static str) -> Result<Rows> {
        let sq = |source| StoreError::Sqlite { op, source };
        let mut st = self.0.prepare_cached(&s.text).map_err(sq)?;
        rows_of(&mut st, &s.args).map_err(sq)
    }
}

fn rows_of(st: &mut rusqlite::Statement<'_>, args: &[Value<'_>]) -> rusqlite::Result<Rows> {
    let n = st.column_count();
    let mut rows = st.query(rusqlite::params_from_iter(args.iter()))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(
            (0..n)
                .map(|i| r.get::<_, Option<String>>(i))
                .collect::<rusqlite::Result<Vec<_>>>()?,
        );
    }
    Ok(out)
}
