//! Re-sealing the consultation workflow's rows (and billing's: settlements, their calls'
//! requests and responses, e-invoices) with the active data key: one sealed text column per
//! table (and for a call, a second, nullable one), bound to its row as it was written (see
//! each table's writer). Event logs
//! are walked by (id, version), the others by id. A booking also has its patient kept as a
//! blind index (`patient_key`); a booking written before encryption was turned on has it in
//! clear, and the pass replaces it with the blind index of the booking's patient (the
//! blind-index key never rotates, so a current one is left as it is).
//!
//! Every write is guarded like the journal's (`WHERE <column> = <what was read>`): a row a
//! command changed in between keeps the command's value (sealed with the active key anyway)
//! and is looked at again by the next pass. The event logs are append-only; migration 0013
//! lets exactly this re-sealing through their triggers, as migration 0019 does for invoices.

use sqlx::Row;

use super::{RekeyBatch, Value};
use crate::crypto::{Cipher, TEXT_PREFIX};
use crate::store::sql::Sql;
use crate::store::{Result, Store, StoreError, q};

/// A workflow table's sealed column and what its values are bound to.
pub(super) struct Target {
    /// The table.
    pub table: &'static str,
    /// The text id a value is bound to, and the walk's first key.
    id: &'static str,
    /// The version of an event log: the walk's second key, part of the binding.
    version: Option<&'static str>,
    /// The sealed column.
    column: &'static str,
    /// The binding's field for a row of this version (0 without one).
    field: fn(i64) -> String,
    /// A second sealed column that may be NULL, bound to the same id, with its field.
    also: Option<(&'static str, &'static str)>,
}

/// The workflow's sealed columns.
pub(super) const TARGETS: &[Target] = &[
    Target {
        table: "consultations",
        id: "id",
        version: None,
        column: "snapshot",
        field: |_| "consultation/snapshot".into(),
        also: None,
    },
    Target {
        table: "consultation_events",
        id: "consultation_id",
        version: Some("version"),
        column: "event",
        field: |v| format!("consultation/event/{v}"),
        also: None,
    },
    Target {
        table: "prescriptions",
        id: "id",
        version: None,
        column: "body",
        field: |_| "prescription".into(),
        also: None,
    },
    Target {
        table: "prescription_events",
        id: "prescription_id",
        version: Some("version"),
        column: "body",
        field: |v| format!("event/{v}"),
        also: None,
    },
    Target {
        table: "appointments",
        id: "id",
        version: None,
        column: "body",
        field: |_| "booking".into(),
        also: None,
    },
    Target {
        table: "workflow_outbox",
        id: "id",
        version: None,
        column: "body",
        field: |_| "outbox".into(),
        also: None,
    },
    // The FHIR store's versions: bound to `Type/id` and `fhir/v<n>` (store/fhir/); the id is
    // the expression, which the walk orders and guards by like a column.
    Target {
        table: "fhir_versions",
        id: "res_type || '/' || id",
        version: Some("version"),
        column: "body",
        field: |v| format!("fhir/v{v}"),
        also: None,
    },
    // Billing (store/billing/): the saga bound to its id, a call's request and response to its
    // msgid, an e-invoice to its id.
    Target {
        table: "settlements",
        id: "id",
        version: None,
        column: "body",
        field: |_| "settlement".into(),
        also: None,
    },
    Target {
        table: "settlement_calls",
        id: "msgid",
        version: None,
        column: "request",
        field: |_| "request".into(),
        also: Some(("response", "response")),
    },
    Target {
        table: "invoices",
        id: "id",
        version: None,
        column: "body",
        field: |_| "invoice".into(),
        also: None,
    },
    Target {
        table: "users",
        id: "username",
        version: None,
        column: "totp_secret",
        field: |_| crate::store::users::TOTP_FIELD.into(),
        also: None,
    },
];

/// The target of `table`, if it is a workflow table.
pub(super) fn target(table: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.table == table)
}

/// Between the id and the version in an event log's cursor.
const SEP: char = '\u{1f}';

impl Store {
    /// One batch of [`Store::rekey_batch`] over a workflow table.
    pub(super) async fn rekey_workflow(
        &self,
        c: &Cipher,
        t: &Target,
        after: Option<&str>,
        limit: i64,
    ) -> Result<RekeyBatch> {
        let booking = t.table == "appointments";
        let mut s = Sql::new(format!(
            "SELECT {} AS k, {} AS sealed{}{}{} FROM {} WHERE ",
            t.id,
            t.column,
            t.version.map(|v| format!(", {v} AS v")).unwrap_or_default(),
            if booking { ", patient_key" } else { "" },
            t.also
                .map(|(c, _)| format!(", {c} AS also"))
                .unwrap_or_default(),
            t.table
        ));
        match (t.version, after) {
            (_, None) => s.push("1 = 1"),
            (None, Some(a)) => {
                s.push(&format!("{} > ", t.id));
                s.bind(a.to_owned());
            }
            (Some(v), Some(a)) => {
                let (id, version) = a
                    .rsplit_once(SEP)
                    .and_then(|(id, n)| Some((id, n.parse::<i64>().ok()?)))
                    .ok_or_else(|| {
                        StoreError::Inconsistent(format!("{}: bad cursor {a:?}", t.table))
                    })?;
                s.push(&format!("({} > ", t.id));
                s.bind(id.to_owned());
                s.push(&format!(" OR ({} = ", t.id));
                s.bind(id.to_owned());
                s.push(&format!(" AND {v} > "));
                s.bind(version);
                s.push("))");
            }
        }
        let order = match t.version {
            Some(v) => format!(" ORDER BY {}, {v} LIMIT ", t.id),
            None => format!(" ORDER BY {} LIMIT ", t.id),
        };
        s.push(&order);
        s.bind(limit);
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read workflow rows to re-encrypt"))?;
        let mut out = RekeyBatch {
            scanned: rows.len() as u64,
            ..RekeyBatch::default()
        };
        for r in &rows {
            let d = || q("read workflow rows to re-encrypt");
            let id: String = r.try_get("k").map_err(d())?;
            let raw: String = r.try_get("sealed").map_err(d())?;
            let version: i64 = match t.version {
                Some(_) => r.try_get("v").map_err(d())?,
                None => 0,
            };
            out.next = Some(match t.version {
                Some(_) => format!("{id}{SEP}{version}"),
                None => id.clone(),
            });
            let field = (t.field)(version);
            let mut key = vec![(t.id, Value::Text(id.clone()))];
            if let Some(v) = t.version {
                key.push((v, Value::Int(version)));
            }
            let mut n = 0;
            if let Some(new) = self.reseal_text(c, &id, &field, &raw)? {
                n += self
                    .update_guarded(
                        t.table,
                        t.column,
                        Value::Text(new),
                        &key,
                        Value::Text(raw.clone()),
                    )
                    .await?;
            }
            if let Some((column, field)) = t.also {
                let raw: Option<String> = r.try_get("also").map_err(d())?;
                if let Some(raw) = raw
                    && let Some(new) = self.reseal_text(c, &id, field, &raw)?
                {
                    n += self
                        .update_guarded(t.table, column, Value::Text(new), &key, Value::Text(raw))
                        .await?;
                }
            }
            if booking {
                let patient_key: String = r.try_get("patient_key").map_err(d())?;
                let plain = if raw.starts_with(TEXT_PREFIX) {
                    self.open_text(&id, &field, raw)?
                } else {
                    raw
                };
                let b: huizhen_domain::appointment::Booking = serde_json::from_str(&plain)
                    .map_err(|e| {
                        StoreError::Inconsistent(format!(
                            "appointment {id}: stored JSON does not decode: {e}"
                        ))
                    })?;
                let expected = c.blind_index(b.patient_id.as_bytes());
                if patient_key != expected {
                    n += self
                        .update_guarded(
                            t.table,
                            "patient_key",
                            Value::Text(expected),
                            &key,
                            Value::Text(patient_key),
                        )
                        .await?;
                }
            }
            if n > 0 {
                out.rewritten += 1;
            }
        }
        Ok(out)
    }
}
