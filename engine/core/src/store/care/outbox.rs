//! The workflow outbox: events a change announces to a pipeline, written in the change's own
//! transaction and relayed to the pipeline's journal afterwards (at least once; the journal's
//! dedup key `workflow-outbox:<id>` makes a second submission a no-op).

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::{exec, json_err};
use crate::store::sql::Sql;
use crate::store::{Result, Store, q};

/// An event to announce.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOutboxEvent {
    /// What happened, e.g. `prescription.approved`.
    pub topic: String,
    /// The resource it is about (the prescription id).
    pub resource_id: String,
    /// The facility the resource belongs to: the journaled message's facility.
    pub facility: String,
    /// The pipeline to submit it to; `None`: kept as a record, never relayed.
    pub pipeline: Option<String>,
    /// The message body (JSON).
    pub body: serde_json::Value,
}

/// An outbox row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutboxEntry {
    /// The row id (UUID v7).
    pub id: String,
    /// What happened.
    pub topic: String,
    /// The resource.
    pub resource_id: String,
    /// Its facility.
    pub facility: String,
    /// The pipeline it goes to.
    pub pipeline: Option<String>,
    /// The message body.
    #[serde(skip)]
    pub body: Vec<u8>,
    /// When written (ms).
    pub created_at: i64,
    /// Relay attempts so far.
    pub attempts: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it reached the journal (ms).
    pub sent_at: Option<i64>,
    /// The journaled message's id.
    pub message_id: Option<String>,
}

const COLUMNS: &str = "id, topic, resource_id, facility, pipeline, body, created_at, attempts, last_error, sent_at, message_id";

/// Writes `e` on `conn` (in the caller's transaction). Returns the row id.
pub(crate) async fn insert_outbox(
    conn: &mut AnyConnection,
    store: &Store,
    e: &NewOutboxEvent,
) -> Result<String> {
    let id = crate::message::new_id();
    let body =
        serde_json::to_string(&e.body).map_err(|err| json_err("encode outbox event", &id, &err))?;
    let mut s = Sql::new(
        "INSERT INTO workflow_outbox (id, topic, resource_id, facility, pipeline, body, created_at) VALUES ("
            .into(),
    );
    s.bind(id.as_str());
    for v in [&e.topic, &e.resource_id, &e.facility] {
        s.push(", ");
        s.bind(v.as_str());
    }
    s.push(", ");
    s.bind(e.pipeline.clone());
    s.push(", ");
    s.bind(store.seal_care(&id, "outbox", &body));
    s.push(", ");
    s.bind(crate::message::now_ms());
    s.push(")");
    exec(conn, s, "write outbox event").await?;
    Ok(id)
}

impl Store {
    fn outbox_from_row(&self, r: &AnyRow) -> Result<OutboxEntry> {
        let d = || q("decode outbox event");
        let id: String = r.try_get("id").map_err(d())?;
        let body = self.open_care(&id, "outbox", r.try_get("body").map_err(d())?)?;
        Ok(OutboxEntry {
            topic: r.try_get("topic").map_err(d())?,
            resource_id: r.try_get("resource_id").map_err(d())?,
            facility: r.try_get("facility").map_err(d())?,
            pipeline: r.try_get("pipeline").map_err(d())?,
            body: body.into_bytes(),
            created_at: r.try_get("created_at").map_err(d())?,
            attempts: r.try_get("attempts").map_err(d())?,
            last_error: r.try_get("last_error").map_err(d())?,
            sent_at: r.try_get("sent_at").map_err(d())?,
            message_id: r.try_get("message_id").map_err(d())?,
            id,
        })
    }

    /// Leases up to `limit` unsent events that have a pipeline and no live lease, oldest first,
    /// until `now + lease_ms`: a relay that dies leaves them to the next after the lease.
    pub async fn claim_outbox(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<OutboxEntry>> {
        let mut s = Sql::new("UPDATE workflow_outbox SET lease_until = ".into());
        s.bind(now + lease_ms);
        s.push(", attempts = attempts + 1 WHERE sent_at IS NULL AND pipeline IS NOT NULL AND (lease_until IS NULL OR lease_until < ");
        s.bind(now);
        s.push(") AND id IN (SELECT id FROM workflow_outbox WHERE sent_at IS NULL AND pipeline IS NOT NULL AND (lease_until IS NULL OR lease_until < ");
        s.bind(now);
        s.push(") ORDER BY created_at, id LIMIT ");
        s.bind(limit.max(1));
        s.push(&format!(") RETURNING {COLUMNS}"));
        let rows = s
            .query()
            .fetch_all(&self.write)
            .await
            .map_err(q("claim outbox events"))?;
        let mut out = rows
            .iter()
            .map(|r| self.outbox_from_row(r))
            .collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    /// Marks an event as in the journal as message `message_id`.
    pub async fn outbox_sent(&self, id: &str, message_id: &str) -> Result<()> {
        let mut s = Sql::new("UPDATE workflow_outbox SET sent_at = ".into());
        s.bind(crate::message::now_ms());
        s.push(", message_id = ");
        s.bind(message_id);
        s.push(", last_error = NULL, lease_until = NULL WHERE id = ");
        s.bind(id);
        s.query()
            .execute(&self.write)
            .await
            .map_err(q("mark outbox event sent"))?;
        Ok(())
    }

    /// Records why an event could not be relayed; it is retried once its lease runs out.
    pub async fn outbox_failed(&self, id: &str, error: &str) -> Result<()> {
        let mut s = Sql::new("UPDATE workflow_outbox SET last_error = ".into());
        s.bind(error.chars().take(500).collect::<String>());
        s.push(" WHERE id = ");
        s.bind(id);
        s.query()
            .execute(&self.write)
            .await
            .map_err(q("record outbox failure"))?;
        Ok(())
    }

    /// The events about a resource, oldest first.
    pub async fn outbox_of(&self, resource_id: &str) -> Result<Vec<OutboxEntry>> {
        let mut s = Sql::new(format!(
            "SELECT {COLUMNS} FROM workflow_outbox WHERE resource_id = "
        ));
        s.bind(resource_id);
        s.push(" ORDER BY created_at, id");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read outbox events"))?;
        rows.iter().map(|r| self.outbox_from_row(r)).collect()
    }
}
