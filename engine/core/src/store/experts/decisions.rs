//! Match decisions, coordinators' overrides, assignments and acceptances, and the counts
//! behind the fairness report (MATCH-30, MATCH-31).

use chrono::{DateTime, Utc};
use huizhen_domain::expert::{AcceptTime, AssignmentCount, MatchDecision, Override};
use sqlx::{AnyConnection, Connection, Row};

use super::{FairnessInputs, StoredDecision, StoredOverride, exec, json_err, next_seq};
use crate::message::{new_id, now_ms};
use crate::store::audit::{self, AuditEvent};
use crate::store::sql::Sql;
use crate::store::{Result, Store, q};

impl Store {
    /// Stores a decision (MATCH-31) and assigns its case to the first selected expert (whose
    /// open consultations go up by one), with `audit` in the same transaction. Returns the new
    /// decision id.
    pub async fn save_match_decision(
        &self,
        decision: &MatchDecision,
        audit: Option<&AuditEvent>,
    ) -> Result<String> {
        let id = new_id();
        self.save_match_decision_as(&id, decision, audit).await?;
        Ok(id)
    }

    /// [`Store::save_match_decision`] under a given id (so that the audit event can name it).
    pub async fn save_match_decision_as(
        &self,
        id: &str,
        decision: &MatchDecision,
        audit: Option<&AuditEvent>,
    ) -> Result<()> {
        let mut conn = self
            .write_pool()
            .acquire()
            .await
            .map_err(q("acquire writer connection"))?;
        let mut tx = conn.begin().await.map_err(q("begin match decision"))?;
        self.save_decision_in(&mut tx, id, decision, audit, true)
            .await?;
        tx.commit().await.map_err(q("commit match decision"))?;
        Ok(())
    }

    /// Stores decision `id` and its assignment (the first selected expert, what the fairness
    /// report counts) with `audit`, on the caller's transaction. With `take_load` the assigned
    /// expert's open consultations go up by one. The consultation workflow passes `false` and
    /// writes its decisions in the transaction of the offer they lead to: that offer takes
    /// the load, and its end gives it back (`huizhen_domain::consultation::load_changes`).
    pub(crate) async fn save_decision_in(
        &self,
        conn: &mut AnyConnection,
        id: &str,
        decision: &MatchDecision,
        audit: Option<&AuditEvent>,
        take_load: bool,
    ) -> Result<()> {
        let now = now_ms();
        let body =
            serde_json::to_string(decision).map_err(|err| json_err("encode decision", id, &err))?;
        let case = &decision.case;
        let mut s = Sql::new(
            "INSERT INTO match_decisions (id, case_id, requesting_facility, department, decided_at, body) VALUES ("
                .into(),
        );
        s.bind(id);
        s.push(", ");
        s.bind(case.id.as_str());
        s.push(", ");
        s.bind(case.requesting_facility.trim());
        s.push(", ");
        s.bind(case.department.trim());
        s.push(", ");
        s.bind(decision.now.timestamp_millis());
        s.push(", ");
        s.bind(body);
        s.push(")");
        exec(conn, s, "store match decision").await?;
        if let Some(first) = decision.selected.first() {
            let mut s = Sql::new(
                "INSERT INTO expert_assignments (decision_id, expert_id, department, requesting_facility, assigned_at) VALUES ("
                    .into(),
            );
            s.bind(id);
            s.push(", ");
            s.bind(first.as_str());
            s.push(", ");
            s.bind(case.department.trim());
            s.push(", ");
            s.bind(case.requesting_facility.trim());
            s.push(", ");
            s.bind(now);
            s.push(")");
            exec(conn, s, "assign case").await?;
            if take_load {
                bump_open(conn, first, 1).await?;
            }
        }
        if let Some(e) = audit {
            audit::append(conn, e, self.anchor.as_deref()).await?;
        }
        Ok(())
    }

    /// A stored decision with its overrides.
    pub async fn match_decision(&self, id: &str) -> Result<Option<StoredDecision>> {
        let mut s = Sql::new(
            "SELECT id, case_id, requesting_facility, decided_at, body FROM match_decisions WHERE id = "
                .into(),
        );
        s.bind(id);
        let Some(r) = s
            .query()
            .fetch_optional(&self.read)
            .await
            .map_err(q("read match decision"))?
        else {
            return Ok(None);
        };
        let d = || q("decode match decision");
        let body: String = r.try_get("body").map_err(d())?;
        let decision: MatchDecision =
            serde_json::from_str(&body).map_err(|err| json_err("match decision", id, &err))?;
        let mut s =
            Sql::new("SELECT id, at, body FROM match_overrides WHERE decision_id = ".into());
        s.bind(id);
        s.push(" ORDER BY at, id");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read overrides"))?;
        let mut overrides = Vec::with_capacity(rows.len());
        for o in &rows {
            let oid: String = o.try_get("id").map_err(q("decode override"))?;
            let body: String = o.try_get("body").map_err(q("decode override"))?;
            overrides.push(StoredOverride {
                at: o.try_get("at").map_err(q("decode override"))?,
                record: serde_json::from_str(&body)
                    .map_err(|err| json_err("override", &oid, &err))?,
                id: oid,
            });
        }
        Ok(Some(StoredDecision {
            id: r.try_get("id").map_err(d())?,
            case_id: r.try_get("case_id").map_err(d())?,
            requesting_facility: r.try_get("requesting_facility").map_err(d())?,
            decided_at: r.try_get("decided_at").map_err(d())?,
            decision,
            overrides,
        }))
    }

    /// The decision ids of a case, oldest first.
    pub async fn match_decisions_of_case(&self, case_id: &str) -> Result<Vec<String>> {
        let mut s = Sql::new("SELECT id FROM match_decisions WHERE case_id = ".into());
        s.bind(case_id);
        s.push(" ORDER BY decided_at, id");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("find match decisions"))?;
        rows.iter()
            .map(|r| r.try_get("id").map_err(q("decode match decision id")))
            .collect()
    }

    /// Records a coordinator's override of decision `decision_id`, moves the assignment (and
    /// one open consultation) to the chosen expert, and writes `audit`, in one transaction.
    /// Returns the override id.
    pub async fn save_override(
        &self,
        decision_id: &str,
        record: &Override,
        audit: &AuditEvent,
    ) -> Result<String> {
        let id = new_id();
        let now = now_ms();
        let body =
            serde_json::to_string(record).map_err(|err| json_err("encode override", &id, &err))?;
        let mut conn = self
            .write_pool()
            .acquire()
            .await
            .map_err(q("acquire writer connection"))?;
        let mut tx = conn.begin().await.map_err(q("begin override"))?;
        let mut s = Sql::new(
            "INSERT INTO match_overrides (id, decision_id, expert_id, reason, actor, at, body) VALUES ("
                .into(),
        );
        s.bind(id.as_str());
        for v in [decision_id, &record.expert_id, &record.reason, &record.by] {
            s.push(", ");
            s.bind(v.to_owned());
        }
        s.push(", ");
        s.bind(now);
        s.push(", ");
        s.bind(body);
        s.push(")");
        exec(&mut tx, s, "store override").await?;
        let mut s =
            Sql::new("SELECT expert_id FROM expert_assignments WHERE decision_id = ".into());
        s.bind(decision_id);
        let previous: Option<String> = s
            .query()
            .fetch_optional(&mut *tx)
            .await
            .map_err(q("read assignment"))?
            .map(|r| r.try_get("expert_id"))
            .transpose()
            .map_err(q("decode assignment"))?;
        match previous {
            Some(prev) if prev == record.expert_id => {}
            Some(prev) => {
                let mut s = Sql::new("UPDATE expert_assignments SET expert_id = ".into());
                s.bind(record.expert_id.as_str());
                s.push(", accepted_at = NULL WHERE decision_id = ");
                s.bind(decision_id);
                exec(&mut tx, s, "move assignment").await?;
                bump_open(&mut tx, &prev, -1).await?;
                bump_open(&mut tx, &record.expert_id, 1).await?;
            }
            None => {
                let mut s = Sql::new(
                    "INSERT INTO expert_assignments (decision_id, expert_id, department, requesting_facility, assigned_at) \
                     SELECT id, "
                        .into(),
                );
                s.bind(record.expert_id.as_str());
                s.push(", department, requesting_facility, ");
                s.bind(now);
                s.push(" FROM match_decisions WHERE id = ");
                s.bind(decision_id);
                exec(&mut tx, s, "assign case").await?;
                bump_open(&mut tx, &record.expert_id, 1).await?;
            }
        }
        audit::append(&mut tx, audit, self.anchor.as_deref()).await?;
        tx.commit().await.map_err(q("commit override"))?;
        Ok(id)
    }

    /// Records that the assigned expert accepted decision `decision_id`'s case at `at` (the
    /// time-to-accept of the fairness report). False when there is no such open assignment.
    pub async fn record_acceptance(
        &self,
        decision_id: &str,
        expert_id: &str,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let mut s = Sql::new("UPDATE expert_assignments SET accepted_at = ".into());
        s.bind(at.timestamp_millis());
        s.push(" WHERE decision_id = ");
        s.bind(decision_id);
        s.push(" AND expert_id = ");
        s.bind(expert_id);
        s.push(" AND accepted_at IS NULL");
        let r = s
            .query()
            .execute(&self.write)
            .await
            .map_err(q("record acceptance"))?;
        Ok(r.rows_affected() > 0)
    }

    /// The counts behind the fairness report for assignments made in `[from, to)` (ms), for
    /// one department or all: assignments per expert (and a zero row for every other expert
    /// filed under the department), and the accept times, only of the requesting facilities
    /// in `facilities` when given.
    pub async fn fairness_inputs(
        &self,
        department: Option<&str>,
        from: i64,
        to: i64,
        facilities: Option<&[String]>,
    ) -> Result<FairnessInputs> {
        let mut s = Sql::new(
            "SELECT department, expert_id, COUNT(*) AS n FROM expert_assignments WHERE assigned_at >= "
                .into(),
        );
        s.bind(from);
        s.push(" AND assigned_at < ");
        s.bind(to);
        if let Some(d) = department {
            s.push(" AND department = ");
            s.bind(d.trim());
        }
        s.push(" GROUP BY department, expert_id ORDER BY department, expert_id");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("count assignments"))?;
        let mut out = FairnessInputs::default();
        let mut departments: Vec<String> = department
            .map(|d| vec![d.trim().to_owned()])
            .unwrap_or_default();
        for r in &rows {
            let d = q("decode assignment count");
            let dept: String = r.try_get("department").map_err(d)?;
            let n: i64 = r.try_get("n").map_err(q("decode assignment count"))?;
            if !departments.contains(&dept) {
                departments.push(dept.clone());
            }
            out.assignments.push(AssignmentCount {
                expert_id: r
                    .try_get("expert_id")
                    .map_err(q("decode assignment count"))?,
                department: dept,
                count: u64::try_from(n).unwrap_or(0),
            });
        }
        // The idle experts of each department count too (zero assignments).
        for dept in departments {
            let mut s =
                Sql::new("SELECT expert_id FROM expert_departments WHERE department = ".into());
            s.bind(dept.as_str());
            let rows = s
                .query()
                .fetch_all(&self.read)
                .await
                .map_err(q("list department experts"))?;
            for r in &rows {
                let expert_id: String = r.try_get("expert_id").map_err(q("decode expert id"))?;
                if !out
                    .assignments
                    .iter()
                    .any(|a| a.department == dept && a.expert_id == expert_id)
                {
                    out.assignments.push(AssignmentCount {
                        expert_id,
                        department: dept.clone(),
                        count: 0,
                    });
                }
            }
        }
        let mut s = Sql::new(
            "SELECT requesting_facility, accepted_at - assigned_at AS ms FROM expert_assignments \
             WHERE accepted_at IS NOT NULL AND assigned_at >= "
                .into(),
        );
        s.bind(from);
        s.push(" AND assigned_at < ");
        s.bind(to);
        if let Some(d) = department {
            s.push(" AND department = ");
            s.bind(d.trim());
        }
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read accept times"))?;
        for r in &rows {
            let facility: String = r
                .try_get("requesting_facility")
                .map_err(q("decode accept time"))?;
            if facilities.is_some_and(|f| !f.contains(&facility)) {
                continue;
            }
            let ms: i64 = r.try_get("ms").map_err(q("decode accept time"))?;
            out.accepts.push(AcceptTime {
                requesting_facility: facility,
                seconds: u64::try_from(ms.max(0) / 1000).unwrap_or(0),
            });
        }
        Ok(out)
    }
}

/// Adds `delta` to an expert's open consultations (never below zero), stamped with the next
/// registry change so every store's copy sees it. No row for an expert not in the registry.
pub(crate) async fn bump_open(conn: &mut AnyConnection, expert_id: &str, delta: i64) -> Result<()> {
    let mut s =
        Sql::new("UPDATE experts SET open_consultations = CASE WHEN open_consultations + ".into());
    s.bind(delta);
    s.push(" < 0 THEN 0 ELSE open_consultations + ");
    s.bind(delta);
    s.push(" END, seq = ");
    let seq = next_seq(conn).await?;
    s.bind(seq);
    s.push(" WHERE id = ");
    s.bind(expert_id);
    exec(conn, s, "update expert load").await?;
    Ok(())
}
