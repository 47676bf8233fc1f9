//! What the pipelines' feeders take from the journal: due messages (waiting behind a full
//! in-memory queue, retries whose backoff passed, reprocessed and recovered ones), claimed in
//! journal order — for a pipeline, or for one partition of an ordered pipeline.

use sqlx::Row;

use super::cluster::Backlog;
use super::sql::Sql;
use super::{MESSAGE_COLUMNS, Result, Store, message_from_row, q};
use crate::message::{Message, State, now_ms};

/// Which due messages a claim takes.
enum Due<'a> {
    /// Of these pipelines.
    Pipelines(&'a [String]),
    /// Of one partition of an ordered pipeline.
    Partition(&'a str, i64),
    /// Of an ordered pipeline, journaled before partitions were (no `part`).
    Unpartitioned(&'a str),
}

impl Store {
    /// Claims up to `limit` due messages of the given pipelines (failed ones whose backoff has
    /// passed, reprocessed and recovered ones), oldest first, and marks them `processing`.
    pub async fn claim_due(&self, pipelines: &[String], limit: i64) -> Result<Vec<Message>> {
        self.claim_due_by(pipelines, limit, None).await
    }

    /// [`Store::claim_due`] for a cluster node: the claimed messages are owned by `owner`, so
    /// that they are taken over if this node dies.
    pub async fn claim_due_by(
        &self,
        pipelines: &[String],
        limit: i64,
        owner: Option<&str>,
    ) -> Result<Vec<Message>> {
        if pipelines.is_empty() {
            return Ok(Vec::new());
        }
        self.claim(Due::Pipelines(pipelines), limit, owner).await
    }

    async fn claim(&self, due: Due<'_>, limit: i64, owner: Option<&str>) -> Result<Vec<Message>> {
        let now = now_ms();
        let mut s = Sql::new(format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= "
        ));
        s.bind(now);
        match due {
            Due::Pipelines(pipelines) => {
                // `|| ''` keeps the planner on the partial index `messages_due` (few rows):
                // SQLite would otherwise pick `messages_open` (journal v2: partial, what is not done) and read every
                // `received` message, the whole backlog under load, twice a second.
                s.push(" AND state || '' IN ('received', 'failed') AND pipeline || '' IN (");
                for (i, p) in pipelines.iter().enumerate() {
                    if i > 0 {
                        s.push(", ");
                    }
                    s.bind(p.as_str());
                }
                s.push(")");
            }
            Due::Partition(pipeline, part) => {
                // The partial index `messages_due_part` (pipeline, part, next_attempt_at, id):
                // the partition's oldest due messages, however long other partitions' backlogs.
                s.push(" AND state || '' IN ('received', 'failed') AND part IS NOT NULL AND pipeline = ");
                s.bind(pipeline);
                s.push(" AND part = ");
                s.bind(part);
            }
            Due::Unpartitioned(pipeline) => {
                s.push(" AND state || '' IN ('received', 'failed') AND part IS NULL AND pipeline || '' = ");
                s.bind(pipeline);
            }
        }
        s.push(" ORDER BY next_attempt_at, id LIMIT ");
        s.bind(limit);
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("find due messages"))?;
        let mut found = rows
            .iter()
            .map(|r| message_from_row(r, true))
            .collect::<Result<Vec<_>>>()?;
        for m in &mut found {
            // A field that cannot be opened: its steps fail on the sealed bytes and the error
            // says why.
            self.open_message_or_mark(m, true);
        }
        if found.is_empty() {
            return Ok(found);
        }
        let mut u = Sql::new(
            "UPDATE messages SET state = 'processing', next_attempt_at = NULL, owner = ".into(),
        );
        u.bind(owner);
        u.push(", updated_at = ");
        u.bind(now);
        u.push(
            " WHERE next_attempt_at IS NOT NULL AND state IN ('received', 'failed') AND id IN (",
        );
        for (i, m) in found.iter().enumerate() {
            if i > 0 {
                u.push(", ");
            }
            u.bind(m.id.as_str());
        }
        u.push(") RETURNING id");
        let claimed_rows = u
            .query()
            .fetch_all(&self.write)
            .await
            .map_err(q("claim due messages"))?;
        let claimed_ids: std::collections::HashSet<String> = claimed_rows
            .iter()
            .filter_map(|r| r.try_get::<String, _>("id").ok())
            .collect();
        found.retain(|m| claimed_ids.contains(&m.id));
        for m in &mut found {
            m.state = State::Processing;
            m.next_attempt_at = None;
        }
        let claimed = found;
        Ok(claimed)
    }

    /// Claims up to `limit` due messages of partition `part` of the ordered pipeline
    /// `pipeline`, oldest first (the index `messages_due_part`), and marks them `processing`.
    pub async fn claim_due_partition(
        &self,
        pipeline: &str,
        part: i64,
        limit: i64,
        owner: Option<&str>,
    ) -> Result<Vec<Message>> {
        self.claim(Due::Partition(pipeline, part), limit, owner)
            .await
    }

    /// Claims up to `limit` due messages of the ordered pipeline `pipeline` that were journaled
    /// before messages carried their partition (an upgraded journal), oldest first.
    pub async fn claim_due_unpartitioned(
        &self,
        pipeline: &str,
        limit: i64,
    ) -> Result<Vec<Message>> {
        self.claim(Due::Unpartitioned(pipeline), limit, None).await
    }

    /// Maps the unfinished messages of an ordered pipeline to the partitions of `partitions`
    /// (its concurrency), when that changed since they were journaled; the number moved.
    pub async fn repartition(&self, pipeline: &str, partitions: i64) -> Result<u64> {
        let mut s = Sql::new("UPDATE messages SET part = ordering_hash % ".into());
        s.bind(partitions);
        s.push(", updated_at = ");
        s.bind(now_ms());
        s.push(" WHERE pipeline = ");
        s.bind(pipeline);
        s.push(" AND state IN ('received', 'processing', 'failed') AND state <> 'done' AND ordering_hash IS NOT NULL AND part <> ordering_hash % ");
        s.bind(partitions);
        let r = s
            .query()
            .execute(&self.write)
            .await
            .map_err(q("map waiting messages to the pipeline's partitions"))?;
        Ok(r.rows_affected())
    }

    /// Unfinished messages (received, processing, failed) of each of `pipelines`, with the
    /// oldest one's arrival; pipelines with none are left out. Each count walks the index
    /// `messages_open` (journal v2: partial, what is not done) and the oldest is the first id there (ids are time-ordered):
    /// no sort, so neither time nor memory grows with the backlog beyond the count itself (the
    /// one-query `GROUP BY` of [`Store::backlog`] sorted every waiting row, in memory, every
    /// 2 s).
    pub async fn backlog_of(&self, pipelines: &[String]) -> Result<Vec<Backlog>> {
        let mut out = Vec::new();
        for p in pipelines {
            let mut s = Sql::new("SELECT (SELECT COUNT(*) FROM messages WHERE pipeline = ".into());
            s.bind(p.as_str());
            s.push(
                " AND state IN ('received', 'processing', 'failed') AND state <> 'done') AS n, (SELECT MIN(t) FROM (",
            );
            for (i, state) in ["received", "processing", "failed"].iter().enumerate() {
                if i > 0 {
                    s.push(" UNION ALL ");
                }
                s.push("SELECT (SELECT received_at FROM messages WHERE pipeline = ");
                s.bind(p.as_str());
                s.push(" AND state = ");
                s.bind(*state);
                s.push(" AND state <> 'done' ORDER BY id LIMIT 1) AS t");
            }
            s.push(") AS oldest_per_state) AS oldest");
            let r = s
                .query()
                .fetch_one(&self.read)
                .await
                .map_err(q("backlog"))?;
            let n: i64 = r.try_get("n").map_err(q("decode backlog"))?;
            if n > 0 {
                out.push(Backlog {
                    pipeline: p.clone(),
                    messages: n,
                    oldest_received_at: r.try_get("oldest").map_err(q("decode backlog"))?,
                });
            }
        }
        Ok(out)
    }
}
