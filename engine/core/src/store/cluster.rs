//! What the store does for scale-out (`crate::cluster`): nodes and their heartbeats, claiming a
//! message for a ticket, adopting the work of dead nodes, and the backlog per pipeline.

use sqlx::Row;

use super::{MESSAGE_COLUMNS, Result, Store, message_from_row, q};
use crate::message::{Message, State, now_ms};
use crate::store::sql::Sql;

/// A message's state and the node that answers for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub state: State,
    pub owner: Option<String>,
}

/// A running (or recently running) engine process.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeInfo {
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub queue: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
}

/// Unfinished work of one pipeline.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Backlog {
    pub pipeline: String,
    /// `received` + `processing` + `failed` (waiting for a retry).
    pub messages: i64,
    /// When the oldest of them was received (ms since the epoch), if any.
    pub oldest_received_at: Option<i64>,
}

impl Store {
    /// Registers this node, or refreshes its heartbeat. Returns `false` when the row was missing
    /// although the node had registered before (another node reaped it as dead).
    pub async fn heartbeat(&self, node: &NodeInfo, first: bool) -> Result<bool> {
        let now = now_ms();
        let mut u = Sql::new("UPDATE nodes SET heartbeat_at = ".into());
        u.bind(now);
        u.push(" WHERE id = ");
        u.bind(node.id.as_str());
        let r = u
            .query()
            .execute(&self.write)
            .await
            .map_err(q("node heartbeat"))?;
        if r.rows_affected() > 0 {
            return Ok(true);
        }
        let mut s = Sql::new(
            "INSERT INTO nodes (id, host, pid, queue, started_at, heartbeat_at) VALUES (".into(),
        );
        s.bind(node.id.as_str());
        s.push(", ");
        s.bind(node.host.as_str());
        s.push(", ");
        s.bind(node.pid);
        s.push(", ");
        s.bind(node.queue.as_str());
        s.push(", ");
        s.bind(node.started_at);
        s.push(", ");
        s.bind(now);
        s.push(")");
        s.query()
            .execute(&self.write)
            .await
            .map_err(q("register node"))?;
        Ok(first)
    }

    /// Marks this node as gone (a clean shutdown): the next reaper adopts at once whatever it
    /// still held, instead of waiting for `dead_after`.
    pub async fn leave(&self, node: &str) -> Result<()> {
        let mut s = Sql::new("UPDATE nodes SET heartbeat_at = 0 WHERE id = ".into());
        s.bind(node);
        s.query()
            .execute(&self.write)
            .await
            .map_err(q("remove node"))?;
        Ok(())
    }

    /// The nodes whose heartbeat is at or after `since` (ms), by id.
    pub async fn live_nodes(&self, since: i64) -> Result<Vec<NodeInfo>> {
        let mut s = Sql::new(
            "SELECT id, host, pid, queue, started_at, heartbeat_at FROM nodes WHERE heartbeat_at >= "
                .into(),
        );
        s.bind(since);
        s.push(" ORDER BY id");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("list nodes"))?;
        rows.iter()
            .map(|r| {
                let d = q("decode node");
                Ok(NodeInfo {
                    id: r.try_get("id").map_err(d)?,
                    host: r.try_get("host").map_err(q("decode node"))?,
                    pid: r.try_get("pid").map_err(q("decode node"))?,
                    queue: r.try_get("queue").map_err(q("decode node"))?,
                    started_at: r.try_get("started_at").map_err(q("decode node"))?,
                    heartbeat_at: r.try_get("heartbeat_at").map_err(q("decode node"))?,
                })
            })
            .collect()
    }

    /// Reaps one dead node (no heartbeat since `since`), if there is one: its row is deleted
    /// (so exactly one live node does this) and its `received`/`processing` messages become
    /// `received` and owned by `me`. Returns the dead node's id and the adopted messages.
    pub async fn reap_dead_node(
        &self,
        me: &str,
        since: i64,
    ) -> Result<Option<(String, Vec<Message>)>> {
        let mut s = Sql::new("SELECT id FROM nodes WHERE heartbeat_at < ".into());
        s.bind(since);
        s.push(" AND id <> ");
        s.bind(me);
        s.push(" ORDER BY heartbeat_at LIMIT 1");
        let Some(row) = s
            .query()
            .fetch_optional(&self.read)
            .await
            .map_err(q("find dead nodes"))?
        else {
            return Ok(None);
        };
        let dead: String = row.try_get("id").map_err(q("decode node"))?;
        // Deleting the row and adopting its messages in one transaction: a reaper that dies in
        // between leaves both as they were, for the next one.
        let mut tx = self.write.begin().await.map_err(q("begin reap"))?;
        let mut d = Sql::new("DELETE FROM nodes WHERE id = ".into());
        d.bind(dead.as_str());
        d.push(" AND heartbeat_at < ");
        d.bind(since);
        let gone = d.query().execute(&mut *tx).await.map_err(q("reap node"))?;
        if gone.rows_affected() == 0 {
            // Another node reaped it first, or it came back.
            return Ok(None);
        }
        let rows = adopt_query(me, Owner::Node(&dead))
            .query()
            .fetch_all(&mut *tx)
            .await
            .map_err(q("adopt messages"))?;
        tx.commit().await.map_err(q("commit reap"))?;
        let adopted = self.adopted(&rows)?;
        Ok(Some((dead, adopted)))
    }

    /// Adopts the in-flight messages no running node answers for (left by a single-process run,
    /// or by a node whose row is gone), making them `received` and owned by `me`.
    pub async fn adopt_orphans(&self, me: &str) -> Result<Vec<Message>> {
        let rows = adopt_query(me, Owner::Orphaned)
            .query()
            .fetch_all(&self.write)
            .await
            .map_err(q("adopt messages"))?;
        self.adopted(&rows)
    }

    fn adopted(&self, rows: &[sqlx::any::AnyRow]) -> Result<Vec<Message>> {
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let mut m = message_from_row(r, true)?;
            self.open_message(&mut m, true)?;
            out.push(m);
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Claims the messages of a ticket: each that is `received` (whoever accepted it), or
    /// `processing` by a node that is not alive (no heartbeat since `since`), becomes
    /// `processing` by `me`. Returns those claimed; the others are in another state or held
    /// by another live node. With `mine_too`, a message `processing` by `me` is claimed as
    /// well (this node holds it but is not working on it: an outcome it could not record).
    pub async fn claim_tickets(
        &self,
        ids: &[String],
        me: &str,
        since: i64,
        mine_too: bool,
    ) -> Result<Vec<Message>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut u = Sql::new(
            "UPDATE messages SET state = 'processing', next_attempt_at = NULL, owner = ".into(),
        );
        u.bind(me);
        u.push(", updated_at = ");
        u.bind(now_ms());
        u.push(" WHERE id IN (");
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                u.push(", ");
            }
            u.bind(id.as_str());
        }
        u.push(") AND (state = 'received' OR (state = 'processing' AND (owner IS NULL OR ");
        if mine_too {
            u.push("owner = ");
            u.bind(me);
            u.push(" OR ");
        }
        u.push("owner NOT IN (SELECT n.id FROM nodes n WHERE n.heartbeat_at >= ");
        u.bind(since);
        u.push(&format!(")))) RETURNING {MESSAGE_COLUMNS}"));
        let rows = u
            .query()
            .fetch_all(&self.write)
            .await
            .map_err(q("claim messages"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut m = message_from_row(r, true)?;
            self.open_message(&mut m, true)?;
            out.push(m);
        }
        Ok(out)
    }

    /// A message's state and owner (`None`: no such message).
    pub async fn holder(&self, id: &str) -> Result<Option<Holder>> {
        let mut s = Sql::new("SELECT state, owner FROM messages WHERE id = ".into());
        s.bind(id);
        let Some(r) = s
            .query()
            .fetch_optional(&self.read)
            .await
            .map_err(q("read message state"))?
        else {
            return Ok(None);
        };
        let state: String = r.try_get("state").map_err(q("decode message"))?;
        Ok(Some(Holder {
            state: State::parse(&state).unwrap_or(State::Failed),
            owner: r.try_get("owner").map_err(q("decode message"))?,
        }))
    }

    /// Unfinished messages per pipeline, with the oldest one's arrival, for pipelines the
    /// caller does not know (`huizhen backlog`). One query, but SQLite sorts every waiting row
    /// for it: the engine counts with [`Store::backlog_of`].
    pub async fn backlog(&self) -> Result<Vec<Backlog>> {
        let rows = sqlx::query(
            "SELECT pipeline, COUNT(*) AS n, MIN(received_at) AS oldest FROM messages \
             WHERE state IN ('received', 'processing', 'failed') AND state <> 'done' GROUP BY pipeline ORDER BY pipeline",
        )
        .fetch_all(&self.read)
        .await
        .map_err(q("backlog"))?;
        rows.iter()
            .map(|r| {
                Ok(Backlog {
                    pipeline: r.try_get("pipeline").map_err(q("decode backlog"))?,
                    messages: r.try_get("n").map_err(q("decode backlog"))?,
                    oldest_received_at: r.try_get("oldest").map_err(q("decode backlog"))?,
                })
            })
            .collect()
    }
}

enum Owner<'a> {
    Node(&'a str),
    Orphaned,
}

/// `received`/`processing` messages of `from` become `received`, owned by `me`.
fn adopt_query(me: &str, from: Owner<'_>) -> Sql {
    let mut u =
        Sql::new("UPDATE messages SET state = 'received', next_attempt_at = NULL, owner = ".into());
    u.bind(me);
    u.push(", updated_at = ");
    u.bind(now_ms());
    u.push(" WHERE state IN ('received', 'processing') AND state <> 'done' AND next_attempt_at IS NULL AND ");
    match from {
        Owner::Node(n) => {
            u.push("owner = ");
            u.bind(n);
        }
        Owner::Orphaned => {
            u.push("(owner IS NULL OR owner NOT IN (SELECT n.id FROM nodes n))");
        }
    }
    u.push(&format!(" RETURNING {MESSAGE_COLUMNS}"));
    u
}
