//! The write side: one batch (a message's transaction Bundle) in one transaction.

use sqlx::{AnyConnection, Row};

use super::{FhirApplied, FhirBatch, FhirWrite};
use crate::store::sql::Sql;
use crate::store::{Backend, Result, Store, StoreError, q};

async fn exec(conn: &mut AnyConnection, s: Sql, op: &'static str) -> Result<u64> {
    Ok(s.query()
        .execute(&mut *conn)
        .await
        .map_err(q(op))?
        .rows_affected())
}

impl Store {
    /// Applies a batch once per (message, sink): re-runs every check inside the transaction
    /// (anything different: [`FhirApplied::Changed`], nothing written), then writes every
    /// resource (a create only if absent, an update only from the version seen) with its
    /// index rows, and records the outcome for replays.
    pub async fn fhir_apply(&self, b: &FhirBatch<'_>) -> Result<FhirApplied> {
        let mut conn = self
            .write
            .acquire()
            .await
            .map_err(q("acquire writer connection"))?;
        let mut tx = sqlx::Connection::begin(&mut *conn)
            .await
            .map_err(q("begin a FHIR batch"))?;
        if self.backend == Backend::Sqlite {
            // The write lock before the first read (BEGIN IMMEDIATE in effect), so the checks
            // below see what the writes will be decided against.
            sqlx::query("UPDATE fhir_resources SET version = version WHERE 1 = 0")
                .execute(&mut *tx)
                .await
                .map_err(q("take the write lock"))?;
        }
        if let Some(outcome) = applied_in(&mut tx, b.message_id, b.sink).await? {
            tx.rollback().await.map_err(q("roll back a FHIR batch"))?;
            return Ok(FhirApplied::Replayed(outcome));
        }
        for check in b.checks {
            let limit = i64::try_from(check.seen.len()).unwrap_or(i64::MAX - 1) + 1;
            let mut now = self
                .fhir_match_in(
                    &mut tx,
                    &check.resource_type,
                    &check.criteria,
                    check.facility.as_deref(),
                    limit,
                )
                .await?;
            let mut seen = check.seen.clone();
            now.sort();
            seen.sort();
            if now != seen {
                tx.rollback().await.map_err(q("roll back a FHIR batch"))?;
                return Ok(FhirApplied::Changed);
            }
        }
        for w in b.writes {
            if !self.fhir_write_in(&mut tx, b, w).await? {
                tx.rollback().await.map_err(q("roll back a FHIR batch"))?;
                return Ok(FhirApplied::Changed);
            }
        }
        let mut s =
            Sql::new("INSERT INTO fhir_applied (message_id, sink, at, outcome) VALUES (".into());
        s.bind(b.message_id.to_owned());
        s.push(", ");
        s.bind(b.sink.to_owned());
        s.push(", ");
        s.bind(b.at_ms);
        s.push(", ");
        s.bind(b.outcome.to_owned());
        s.push(")");
        exec(&mut tx, s, "record a FHIR batch").await?;
        tx.commit().await.map_err(q("commit a FHIR batch"))?;
        Ok(FhirApplied::Applied)
    }

    /// Writes one resource version with its index; `false` when the resource is not where
    /// the writer saw it (exists for a create, another version for an update).
    async fn fhir_write_in(
        &self,
        conn: &mut AnyConnection,
        b: &FhirBatch<'_>,
        w: &FhirWrite,
    ) -> Result<bool> {
        if w.resource_type.is_empty() || w.id.is_empty() {
            return Err(StoreError::Inconsistent(
                "fhir store: a resource to write has no type or id".into(),
            ));
        }
        let version = w.expected.unwrap_or(0) + 1;
        let written = match w.expected {
            None => {
                let mut s = Sql::new(
                    "INSERT INTO fhir_resources (res_type, id, version, facility, patient, last_updated) VALUES ("
                        .into(),
                );
                s.bind(w.resource_type.clone());
                s.push(", ");
                s.bind(w.id.clone());
                s.push(", 1, ");
                s.bind(b.facility.to_owned());
                s.push(", ");
                s.bind(w.index.patient.clone());
                s.push(", ");
                s.bind(b.at_ms);
                s.push(") ON CONFLICT (res_type, id) DO NOTHING");
                exec(conn, s, "insert a FHIR resource").await?
            }
            Some(expected) => {
                let mut s = Sql::new("UPDATE fhir_resources SET version = ".into());
                s.bind(version);
                s.push(", patient = ");
                s.bind(w.index.patient.clone());
                s.push(", last_updated = ");
                s.bind(b.at_ms);
                s.push(" WHERE res_type = ");
                s.bind(w.resource_type.clone());
                s.push(" AND id = ");
                s.bind(w.id.clone());
                s.push(" AND version = ");
                s.bind(expected);
                exec(conn, s, "update a FHIR resource").await?
            }
        };
        if written == 0 {
            return Ok(false);
        }
        let mut s = Sql::new(
            "INSERT INTO fhir_versions (res_type, id, version, last_updated, message_id, body) VALUES ("
                .into(),
        );
        s.bind(w.resource_type.clone());
        s.push(", ");
        s.bind(w.id.clone());
        s.push(", ");
        s.bind(version);
        s.push(", ");
        s.bind(b.at_ms);
        s.push(", ");
        s.bind(b.message_id.to_owned());
        s.push(", ");
        s.bind(self.seal_fhir(&w.resource_type, &w.id, version, &w.body));
        s.push(")");
        exec(conn, s, "insert a FHIR resource version").await?;
        for table in ["fhir_terms", "fhir_dates"] {
            let mut s = Sql::new(format!("DELETE FROM {table} WHERE res_type = "));
            s.bind(w.resource_type.clone());
            s.push(" AND id = ");
            s.bind(w.id.clone());
            exec(conn, s, "drop a FHIR resource's index").await?;
        }
        let mut terms: Vec<(String, String)> = w
            .index
            .terms
            .iter()
            .map(|(p, v)| (p.clone(), self.fhir_term(&w.resource_type, p, v)))
            .collect();
        terms.sort();
        terms.dedup();
        for chunk in terms.chunks(200) {
            let mut s = Sql::for_backend(
                "INSERT INTO fhir_terms (res_type, param, value, id) VALUES ".into(),
                self.backend,
            );
            for (i, (param, value)) in chunk.iter().enumerate() {
                s.push(if i == 0 { "(" } else { ", (" });
                s.bind(w.resource_type.clone());
                s.push(", ");
                s.bind(param.clone());
                s.push(", ");
                s.bind(value.clone());
                s.push(", ");
                s.bind(w.id.clone());
                s.push(")");
            }
            s.push(" ON CONFLICT DO NOTHING");
            exec(conn, s, "index a FHIR resource").await?;
        }
        for chunk in w.index.dates.chunks(200) {
            let mut s = Sql::for_backend(
                "INSERT INTO fhir_dates (res_type, id, param, lo, hi) VALUES ".into(),
                self.backend,
            );
            for (i, (param, lo, hi)) in chunk.iter().enumerate() {
                s.push(if i == 0 { "(" } else { ", (" });
                s.bind(w.resource_type.clone());
                s.push(", ");
                s.bind(w.id.clone());
                s.push(", ");
                s.bind(param.clone());
                s.push(", ");
                s.bind(*lo);
                s.push(", ");
                s.bind(*hi);
                s.push(")");
            }
            exec(conn, s, "index a FHIR resource's dates").await?;
        }
        Ok(true)
    }
}

async fn applied_in(
    conn: &mut AnyConnection,
    message_id: &str,
    sink: &str,
) -> Result<Option<String>> {
    let mut s = Sql::new("SELECT outcome FROM fhir_applied WHERE message_id = ".into());
    s.bind(message_id.to_owned());
    s.push(" AND sink = ");
    s.bind(sink.to_owned());
    let row = s
        .query()
        .fetch_optional(&mut *conn)
        .await
        .map_err(q("read a FHIR outcome"))?;
    row.map(|r| r.try_get("outcome"))
        .transpose()
        .map_err(q("decode a FHIR outcome"))
}
