//! The consultation facts the statistics read (the domain's `ConsultationFacts`): one row per
//! consultation, replaced whole by the workflow whenever a fact changes. See the contract in
//! the module docs of [`super`].

use chrono::{DateTime, Utc};
use huizhen_domain::stats::ConsultationFacts;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::exec;
use crate::store::sql::Sql;
use crate::store::{Result, Store, StoreError, q};

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn time(id: &str, field: &str, ms: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| {
        StoreError::Inconsistent(format!(
            "consultation facts {id}: {field} {ms} is not a time"
        ))
    })
}

/// Writes `facts` (the consultation's current facts, replacing any stored ones) on `conn`, in
/// the caller's transaction: the consultation workflow calls it in the transaction of the
/// event that changed a fact.
pub async fn upsert_consultation_facts(
    conn: &mut AnyConnection,
    facts: &ConsultationFacts,
) -> Result<()> {
    let mut s = Sql::new(
        "INSERT INTO consultation_facts (consultation_id, facility, department, created_at, accepted_at, completed_at, cancelled, failed, sla_breached, updated_at) VALUES ("
            .into(),
    );
    s.bind(facts.consultation_id.trim());
    s.push(", ");
    s.bind(facts.facility.trim());
    s.push(", ");
    s.bind(facts.department.trim());
    s.push(", ");
    s.bind(ms(facts.created_at));
    s.push(", ");
    s.bind(facts.accepted_at.map(ms));
    s.push(", ");
    s.bind(facts.completed_at.map(ms));
    for flag in [facts.cancelled, facts.failed, facts.sla_breached] {
        s.push(", ");
        s.bind(i64::from(flag));
    }
    s.push(", ");
    s.bind(crate::message::now_ms());
    s.push(
        ") ON CONFLICT (consultation_id) DO UPDATE SET facility = excluded.facility, \
         department = excluded.department, created_at = excluded.created_at, \
         accepted_at = excluded.accepted_at, completed_at = excluded.completed_at, \
         cancelled = excluded.cancelled, failed = excluded.failed, \
         sla_breached = excluded.sla_breached, updated_at = excluded.updated_at",
    );
    exec(conn, s, "write consultation facts").await?;
    Ok(())
}

fn facts_from_row(r: &AnyRow) -> Result<ConsultationFacts> {
    let d = || q("decode consultation facts");
    let id: String = r.try_get("consultation_id").map_err(d())?;
    let opt = |field: &str| -> Result<Option<DateTime<Utc>>> {
        let v: Option<i64> = r.try_get(field).map_err(d())?;
        v.map(|m| time(&id, field, m)).transpose()
    };
    let flag = |field: &str| -> Result<bool> {
        let v: i64 = r.try_get(field).map_err(d())?;
        Ok(v != 0)
    };
    Ok(ConsultationFacts {
        facility: r.try_get("facility").map_err(d())?,
        department: r.try_get("department").map_err(d())?,
        created_at: time(&id, "created_at", r.try_get("created_at").map_err(d())?)?,
        accepted_at: opt("accepted_at")?,
        completed_at: opt("completed_at")?,
        cancelled: flag("cancelled")?,
        failed: flag("failed")?,
        sla_breached: flag("sla_breached")?,
        consultation_id: id,
    })
}

impl Store {
    /// [`upsert_consultation_facts`] in a transaction of its own (seeding, repairs, tests).
    pub async fn record_consultation_facts(&self, facts: &ConsultationFacts) -> Result<()> {
        let mut conn = self
            .write
            .acquire()
            .await
            .map_err(q("acquire writer connection"))?;
        upsert_consultation_facts(&mut conn, facts).await
    }

    /// The facts of the consultations created in `[from, to)`, by creation time.
    pub async fn consultation_facts(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ConsultationFacts>> {
        self.consultation_facts_of(from, to, None).await
    }

    /// [`Store::consultation_facts`] of the requesting facilities in `facilities` only (the
    /// caller's scope); `None` for all.
    pub async fn consultation_facts_of(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        facilities: Option<&[String]>,
    ) -> Result<Vec<ConsultationFacts>> {
        let mut s = Sql::new(format!("{FACTS_SELECT}created_at >= "));
        s.bind(ms(from));
        s.push(" AND created_at < ");
        s.bind(ms(to));
        if let Some(list) = facilities {
            if list.is_empty() {
                return Ok(Vec::new());
            }
            s.push(" AND facility IN (");
            for (i, f) in list.iter().enumerate() {
                if i > 0 {
                    s.push(", ");
                }
                s.bind(f.as_str());
            }
            s.push(")");
        }
        self.facts_by_creation(s).await
    }

    /// Runs a [`FACTS_SELECT`] query, ordered by creation time.
    async fn facts_by_creation(&self, mut s: Sql) -> Result<Vec<ConsultationFacts>> {
        s.push(" ORDER BY created_at, consultation_id");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read consultation facts"))?;
        rows.iter().map(facts_from_row).collect()
    }
}

/// The facts' columns, up to the `WHERE` the caller completes.
const FACTS_SELECT: &str = "SELECT consultation_id, facility, department, created_at, accepted_at, completed_at, cancelled, failed, sla_breached FROM consultation_facts WHERE ";
