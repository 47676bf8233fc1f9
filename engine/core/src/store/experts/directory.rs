//! Writing and reading the registry: import (upsert) of experts and agreements with their
//! index rows, the runtime state (heartbeat, load), and plain reads (one expert, the lists,
//! the agreements of a facility).

use chrono::{DateTime, Utc};
use huizhen_domain::expert::{Agreement, Expert, Load, Presence};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Connection, Row};

use super::{
    ImportSummary, count, department_keys, exec, expertise_keys, json_err, ms_to_time, next_seq,
};
use crate::message::now_ms;
use crate::store::audit::{self, AuditEvent};
use crate::store::sql::Sql;
use crate::store::{Result, Store, q};

const EXPERT_COLUMNS: &str =
    "e.id, e.body, e.last_heartbeat, e.open_consultations, e.sessions_today";

fn expert_from_row(r: &AnyRow) -> Result<Expert> {
    let d = q("decode expert");
    let id: String = r.try_get("id").map_err(d)?;
    let body: String = r.try_get("body").map_err(q("decode expert"))?;
    let heartbeat: Option<i64> = r.try_get("last_heartbeat").map_err(q("decode expert"))?;
    let open: i64 = r
        .try_get("open_consultations")
        .map_err(q("decode expert"))?;
    let sessions: i64 = r.try_get("sessions_today").map_err(q("decode expert"))?;
    let mut e: Expert = serde_json::from_str(&body).map_err(|err| json_err("expert", &id, &err))?;
    e.presence = Presence {
        last_heartbeat: heartbeat.and_then(ms_to_time),
    };
    e.load = Load {
        open_consultations: count(open),
        sessions_today: count(sessions),
    };
    Ok(e)
}

/// Inserts or replaces one expert and its index rows on `conn` (in the caller's transaction).
/// Returns true when the expert was new.
async fn upsert_expert(conn: &mut AnyConnection, e: &Expert, now: i64, seq: i64) -> Result<bool> {
    let id = e.id.trim();
    let mut facts = e.clone();
    facts.presence = Presence::default();
    facts.load = Load::default();
    let body = serde_json::to_string(&facts).map_err(|err| json_err("encode expert", id, &err))?;
    let mut s = Sql::new("SELECT id FROM experts WHERE id = ".into());
    s.bind(id);
    let existed = s
        .query()
        .fetch_optional(&mut *conn)
        .await
        .map_err(q("look up expert"))?
        .is_some();
    let mut s = Sql::new(
        "INSERT INTO experts (id, facility, body, open_consultations, sessions_today, seq, updated_at) VALUES ("
            .into(),
    );
    s.bind(id);
    s.push(", ");
    s.bind(e.facility.trim());
    s.push(", ");
    s.bind(body);
    s.push(", 0, 0, ");
    s.bind(seq);
    s.push(", ");
    s.bind(now);
    s.push(") ON CONFLICT (id) DO UPDATE SET facility = excluded.facility, body = excluded.body, seq = excluded.seq, updated_at = excluded.updated_at, version = experts.version + 1");
    exec(conn, s, "upsert expert").await?;
    // Runtime state only when the file gives it.
    if let Some(t) = e.presence.last_heartbeat {
        let mut s = Sql::new("UPDATE experts SET last_heartbeat = ".into());
        s.bind(t.timestamp_millis());
        s.push(" WHERE id = ");
        s.bind(id);
        exec(conn, s, "set expert presence").await?;
    }
    if e.load != Load::default() {
        let mut s = Sql::new("UPDATE experts SET open_consultations = ".into());
        s.bind(i64::from(e.load.open_consultations));
        s.push(", sessions_today = ");
        s.bind(i64::from(e.load.sessions_today));
        s.push(" WHERE id = ");
        s.bind(id);
        exec(conn, s, "set expert load").await?;
    }
    for (table, column, keys) in [
        ("expert_departments", "department", department_keys(e)),
        ("expert_expertise", "category", expertise_keys(e)),
    ] {
        let mut s = Sql::new(format!("DELETE FROM {table} WHERE expert_id = "));
        s.bind(id);
        exec(conn, s, "clear expert index").await?;
        if keys.is_empty() {
            continue;
        }
        let mut s = Sql::new(format!("INSERT INTO {table} ({column}, expert_id) VALUES "));
        for (i, k) in keys.into_iter().enumerate() {
            if i > 0 {
                s.push(", ");
            }
            s.push("(");
            s.bind(k);
            s.push(", ");
            s.bind(id);
            s.push(")");
        }
        exec(conn, s, "index expert").await?;
    }
    Ok(!existed)
}

async fn upsert_agreement(
    conn: &mut AnyConnection,
    a: &Agreement,
    now: i64,
    seq: i64,
) -> Result<()> {
    let id = a.id.trim();
    let body = serde_json::to_string(a).map_err(|err| json_err("encode agreement", id, &err))?;
    let mut s = Sql::new(
        "INSERT INTO expert_agreements (id, requesting_facility, expert_facility, body, seq, updated_at) VALUES ("
            .into(),
    );
    s.bind(id);
    s.push(", ");
    s.bind(a.requesting_facility.trim());
    s.push(", ");
    s.bind(a.expert_facility.trim());
    s.push(", ");
    s.bind(body);
    s.push(", ");
    s.bind(seq);
    s.push(", ");
    s.bind(now);
    s.push(") ON CONFLICT (id) DO UPDATE SET requesting_facility = excluded.requesting_facility, expert_facility = excluded.expert_facility, body = excluded.body, seq = excluded.seq, updated_at = excluded.updated_at");
    exec(conn, s, "upsert agreement").await?;
    Ok(())
}

impl Store {
    /// Imports experts and agreements in one transaction: an id already stored is replaced
    /// (upsert), its index rows rebuilt; its presence and load are kept unless the expert in
    /// `experts` gives them. `audit` is recorded in the same transaction.
    pub async fn upsert_experts(
        &self,
        experts: &[Expert],
        agreements: &[Agreement],
        audit: Option<&AuditEvent>,
    ) -> Result<ImportSummary> {
        let now = now_ms();
        let mut conn = self
            .write_pool()
            .acquire()
            .await
            .map_err(q("acquire writer connection"))?;
        let mut tx = conn.begin().await.map_err(q("begin expert import"))?;
        let mut summary = ImportSummary::default();
        let seq = next_seq(&mut tx).await?;
        for e in experts {
            if upsert_expert(&mut tx, e, now, seq).await? {
                summary.experts_added += 1;
            } else {
                summary.experts_updated += 1;
            }
        }
        for a in agreements {
            upsert_agreement(&mut tx, a, now, seq).await?;
            summary.agreements += 1;
        }
        if let Some(e) = audit {
            audit::append(&mut tx, e, self.anchor.as_deref()).await?;
        }
        tx.commit().await.map_err(q("commit expert import"))?;
        Ok(summary)
    }

    /// One expert with its current presence and load.
    pub async fn expert(&self, id: &str) -> Result<Option<Expert>> {
        let mut s = Sql::new(format!(
            "SELECT {EXPERT_COLUMNS} FROM experts e WHERE e.id = "
        ));
        s.bind(id.trim());
        let row = s
            .query()
            .fetch_optional(&self.read)
            .await
            .map_err(q("read expert"))?;
        row.map(|r| expert_from_row(&r)).transpose()
    }

    /// Every expert, by id (for `huizhen experts list`; a full read on purpose).
    pub async fn list_experts(&self) -> Result<Vec<Expert>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EXPERT_COLUMNS} FROM experts e ORDER BY e.id"
        )))
        .fetch_all(&self.read)
        .await
        .map_err(q("list experts"))?;
        rows.iter().map(expert_from_row).collect()
    }

    /// Every agreement, by id.
    pub async fn list_agreements(&self) -> Result<Vec<Agreement>> {
        let rows = sqlx::query("SELECT id, body FROM expert_agreements ORDER BY id")
            .fetch_all(&self.read)
            .await
            .map_err(q("list agreements"))?;
        rows.iter().map(agreement_from_row).collect()
    }

    /// Records an expert's heartbeat at `at` (presence). False when the expert is unknown.
    pub async fn expert_heartbeat(&self, id: &str, at: DateTime<Utc>) -> Result<bool> {
        let mut s = Sql::new("UPDATE experts SET last_heartbeat = ".into());
        s.bind(at.timestamp_millis());
        self.update_expert_state(id, s, "expert heartbeat").await
    }

    /// Runs `UPDATE experts SET …` (given up to its last assignment) for expert `id`, stamped
    /// with the next change sequence value, in one transaction. False when `id` is unknown.
    async fn update_expert_state(&self, id: &str, mut s: Sql, op: &'static str) -> Result<bool> {
        let mut conn = self
            .write_pool()
            .acquire()
            .await
            .map_err(q("acquire writer connection"))?;
        let mut tx = conn.begin().await.map_err(q(op))?;
        let seq = next_seq(&mut tx).await?;
        s.push(", seq = ");
        s.bind(seq);
        s.push(" WHERE id = ");
        s.bind(id.trim());
        let n = exec(&mut tx, s, op).await?;
        if n == 0 {
            // Nothing changed: do not advance the sequence for nothing.
            tx.rollback().await.map_err(q(op))?;
            return Ok(false);
        }
        tx.commit().await.map_err(q(op))?;
        Ok(true)
    }

    /// Replaces an expert's load (the consultation workflow keeps it). False when unknown.
    pub async fn set_expert_load(&self, id: &str, load: Load) -> Result<bool> {
        let mut s = Sql::new("UPDATE experts SET open_consultations = ".into());
        s.bind(i64::from(load.open_consultations));
        s.push(", sessions_today = ");
        s.bind(i64::from(load.sessions_today));
        self.update_expert_state(id, s, "set expert load").await
    }

    /// The agreements whose requesting facility is `facility`, by id.
    pub async fn agreements_of(&self, facility: &str) -> Result<Vec<Agreement>> {
        let (open_agg, close_agg) = match self.backend {
            crate::store::Backend::Sqlite => (
                "SELECT json_group_array(json(body)) AS j FROM (SELECT body FROM expert_agreements WHERE requesting_facility = ",
                " ORDER BY id) AS a",
            ),
            crate::store::Backend::Postgres => (
                "SELECT COALESCE(json_agg(body::json ORDER BY id)::text, '[]') AS j FROM expert_agreements WHERE requesting_facility = ",
                "",
            ),
        };
        let mut s = Sql::new(open_agg.into());
        s.bind(facility);
        s.push(close_agg);
        let row = s
            .query()
            .fetch_one(&self.read)
            .await
            .map_err(q("read agreements"))?;
        let text: String = row.try_get("j").map_err(q("decode agreements"))?;
        serde_json::from_str(&text).map_err(|err| json_err("agreements of", facility, &err))
    }
}

pub(super) fn agreement_from_row(r: &AnyRow) -> Result<Agreement> {
    let id: String = r.try_get("id").map_err(q("decode agreement"))?;
    let body: String = r.try_get("body").map_err(q("decode agreement"))?;
    serde_json::from_str(&body).map_err(|err| json_err("agreement", &id, &err))
}
