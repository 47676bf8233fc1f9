//! Prescriptions: the snapshot row (state, version, the domain's `Prescription`) and the
//! append-only event log, written together with the audit event and, on approval, the outbound
//! event. See the module docs of [`super`].

use huizhen_domain::prescription::{Prescription, PrescriptionEvent, PrescriptionState};
use huizhen_domain::signature::Signature;
use sqlx::any::AnyRow;
use sqlx::{Connection, Row};

use super::outbox::{NewOutboxEvent, insert_outbox};
use super::{exec, json_err};
use crate::store::audit::{self, AuditEvent};
use crate::store::sql::Sql;
use crate::store::{Result, Store, StoreError, q};

/// A prescription as stored: the domain's aggregate and what the engine keeps beside it.
#[derive(Debug, Clone)]
pub struct StoredPrescription {
    /// The aggregate (the fold of its events).
    pub prescription: Prescription,
    /// The facility it belongs to (the prescriber's): its read and write scope.
    pub facility: String,
    /// A signature the prescriber attached (`sign`) for the current version, used by `submit`.
    pub pending_signature: Option<Signature>,
    /// When drafted (ms since the epoch).
    pub created_at: i64,
    /// When last changed (ms).
    pub updated_at: i64,
}

/// One event of a prescription's history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PrescriptionEventRow {
    /// The prescription's version after the event (1 for the draft).
    pub version: u64,
    /// When the store recorded it (ms).
    pub recorded_at: i64,
    /// The event.
    pub event: PrescriptionEvent,
}

/// Which prescriptions to list.
#[derive(Debug, Clone, Default)]
pub struct PrescriptionFilter {
    /// Only in this state (the pharmacist's queue is `pending-review`).
    pub state: Option<PrescriptionState>,
    /// Only of this consultation.
    pub consultation_id: Option<String>,
    /// Only of these facilities (the caller's scope); `None` for all.
    pub facilities: Option<Vec<String>>,
    /// At most this many (oldest change first).
    pub limit: i64,
}

/// What one decision persists: the events `decide` returned, the state after them, the audit
/// event, and the outbound event when the change is announced to a pipeline.
#[derive(Debug, Clone, Copy)]
pub struct PrescriptionChange<'a> {
    /// The aggregate after the events (its `version` is `expected_version` + the events).
    pub prescription: &'a Prescription,
    /// The prescription's facility (set on the draft; later changes keep the stored one).
    pub facility: &'a str,
    /// The version the decision was made against (0 for a draft).
    pub expected_version: u64,
    /// The events, in order.
    pub events: &'a [PrescriptionEvent],
    /// The audit event of the change.
    pub audit: &'a AuditEvent,
    /// The outbound event, if the change is announced (an approval).
    pub outbox: Option<&'a NewOutboxEvent>,
}

const COLUMNS: &str = "id, facility, version, body, pending_signature, created_at, updated_at";

fn event_kind(e: &PrescriptionEvent) -> &'static str {
    match e {
        PrescriptionEvent::Drafted { .. } => "drafted",
        PrescriptionEvent::Revised { .. } => "revised",
        PrescriptionEvent::Submitted { .. } => "submitted",
        PrescriptionEvent::Approved { .. } => "approved",
        PrescriptionEvent::Rejected { .. } => "rejected",
        PrescriptionEvent::Cancelled { .. } => "cancelled",
        PrescriptionEvent::DeliveryRecorded { .. } => "delivery-recorded",
        PrescriptionEvent::CallbackNoted { .. } => "callback-noted",
    }
}

/// Who caused the event (the logistics partner for delivery callbacks).
fn event_actor(e: &PrescriptionEvent) -> String {
    match e {
        PrescriptionEvent::Drafted { prescriber, .. } => prescriber.id.clone(),
        PrescriptionEvent::Revised { by, .. }
        | PrescriptionEvent::Submitted { by, .. }
        | PrescriptionEvent::Approved { by, .. }
        | PrescriptionEvent::Rejected { by, .. }
        | PrescriptionEvent::Cancelled { by, .. } => by.id.clone(),
        PrescriptionEvent::DeliveryRecorded { .. } | PrescriptionEvent::CallbackNoted { .. } => {
            "logistics".into()
        }
    }
}

fn event_field(version: u64) -> String {
    format!("event/{version}")
}

impl Store {
    fn prescription_from_row(&self, r: &AnyRow) -> Result<StoredPrescription> {
        let d = || q("decode prescription");
        let id: String = r.try_get("id").map_err(d())?;
        let body = self.open_care(&id, "prescription", r.try_get("body").map_err(d())?)?;
        let prescription: Prescription =
            serde_json::from_str(&body).map_err(|e| json_err("prescription", &id, &e))?;
        let version: i64 = r.try_get("version").map_err(d())?;
        if u64::try_from(version).ok() != Some(prescription.version) {
            return Err(StoreError::Inconsistent(format!(
                "prescription {id}: the row's version {version} is not its body's {}",
                prescription.version
            )));
        }
        let pending: Option<String> = r.try_get("pending_signature").map_err(d())?;
        let pending_signature = pending
            .map(|p| serde_json::from_str(&p).map_err(|e| json_err("signature of", &id, &e)))
            .transpose()?;
        Ok(StoredPrescription {
            prescription,
            facility: r.try_get("facility").map_err(d())?,
            pending_signature,
            created_at: r.try_get("created_at").map_err(d())?,
            updated_at: r.try_get("updated_at").map_err(d())?,
        })
    }

    /// One prescription with its current state.
    pub async fn prescription(&self, id: &str) -> Result<Option<StoredPrescription>> {
        let mut s = Sql::new(format!("SELECT {COLUMNS} FROM prescriptions WHERE id = "));
        s.bind(id);
        let row = s
            .query()
            .fetch_optional(&self.read)
            .await
            .map_err(q("read prescription"))?;
        row.map(|r| self.prescription_from_row(&r)).transpose()
    }

    /// A prescription's events, oldest first.
    pub async fn prescription_history(&self, id: &str) -> Result<Vec<PrescriptionEventRow>> {
        let mut s = Sql::new(
            "SELECT version, at, body FROM prescription_events WHERE prescription_id = ".into(),
        );
        s.bind(id);
        s.push(" ORDER BY version");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read prescription events"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let d = || q("decode prescription event");
            let version: i64 = r.try_get("version").map_err(d())?;
            let version = u64::try_from(version).unwrap_or(0);
            let body =
                self.open_care(id, &event_field(version), r.try_get("body").map_err(d())?)?;
            out.push(PrescriptionEventRow {
                version,
                recorded_at: r.try_get("at").map_err(d())?,
                event: serde_json::from_str(&body)
                    .map_err(|e| json_err("prescription event of", id, &e))?,
            });
        }
        Ok(out)
    }

    /// Prescriptions matching `filter`, the longest unchanged first (a review queue is worked
    /// oldest first).
    pub async fn list_prescriptions(
        &self,
        filter: &PrescriptionFilter,
    ) -> Result<Vec<StoredPrescription>> {
        let mut s = Sql::new(format!("SELECT {COLUMNS} FROM prescriptions WHERE 1=1"));
        if let Some(state) = filter.state {
            s.push(" AND state = ");
            s.bind(state.as_str());
        }
        if let Some(c) = &filter.consultation_id {
            s.push(" AND consultation_id = ");
            s.bind(c.as_str());
        }
        if let Some(facilities) = &filter.facilities {
            if facilities.is_empty() {
                return Ok(Vec::new());
            }
            s.push(" AND facility IN (");
            for (i, f) in facilities.iter().enumerate() {
                if i > 0 {
                    s.push(", ");
                }
                s.bind(f.as_str());
            }
            s.push(")");
        }
        s.push(" ORDER BY updated_at, id LIMIT ");
        s.bind(filter.limit.clamp(1, 1000));
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("list prescriptions"))?;
        rows.iter().map(|r| self.prescription_from_row(r)).collect()
    }

    /// Persists one decision: the snapshot (inserted for a draft, else updated only if it is
    /// still at `expected_version`), the events, the outbound event and the audit event, in one
    /// transaction. `false` when another change won the race (nothing is written); decide
    /// again on the new state. A stored signature waiting for submission is dropped: it was
    /// made over the content before this change.
    pub async fn save_prescription(&self, change: PrescriptionChange<'_>) -> Result<bool> {
        let rx = change.prescription;
        let new_version = change.expected_version + change.events.len() as u64;
        if change.events.is_empty() || rx.version != new_version {
            return Err(StoreError::Inconsistent(format!(
                "prescription {}: {} events after version {} do not make version {}",
                rx.id,
                change.events.len(),
                change.expected_version,
                rx.version
            )));
        }
        let now = crate::message::now_ms();
        let body =
            serde_json::to_string(rx).map_err(|e| json_err("encode prescription", &rx.id, &e))?;
        let body = self.seal_care(&rx.id, "prescription", &body);
        let version = i64::try_from(new_version).unwrap_or(i64::MAX);
        let expected = i64::try_from(change.expected_version).unwrap_or(i64::MAX);
        let mut conn = self
            .write
            .acquire()
            .await
            .map_err(q("acquire writer connection"))?;
        let mut tx = conn.begin().await.map_err(q("begin prescription change"))?;
        let written = if change.expected_version == 0 {
            let prescriber = rx.prescriber.as_ref().map_or("", |p| p.id.as_str());
            let mut s = Sql::new(
                "INSERT INTO prescriptions (id, consultation_id, facility, prescriber, state, version, body, created_at, updated_at) VALUES ("
                    .into(),
            );
            s.bind(rx.id.as_str());
            for v in [
                rx.consultation_id.as_str(),
                change.facility,
                prescriber,
                rx.state.as_str(),
            ] {
                s.push(", ");
                s.bind(v);
            }
            s.push(", ");
            s.bind(version);
            s.push(", ");
            s.bind(body);
            s.push(", ");
            s.bind(now);
            s.push(", ");
            s.bind(now);
            s.push(") ON CONFLICT (id) DO NOTHING");
            exec(&mut tx, s, "insert prescription").await?
        } else {
            let mut s = Sql::new("UPDATE prescriptions SET state = ".into());
            s.bind(rx.state.as_str());
            s.push(", version = ");
            s.bind(version);
            s.push(", body = ");
            s.bind(body);
            s.push(", pending_signature = NULL, updated_at = ");
            s.bind(now);
            s.push(" WHERE id = ");
            s.bind(rx.id.as_str());
            s.push(" AND version = ");
            s.bind(expected);
            exec(&mut tx, s, "update prescription").await?
        };
        if written == 0 {
            tx.rollback()
                .await
                .map_err(q("roll back prescription change"))?;
            return Ok(false);
        }
        for (i, event) in change.events.iter().enumerate() {
            let v = change.expected_version + 1 + i as u64;
            let json = serde_json::to_string(event)
                .map_err(|e| json_err("encode prescription event of", &rx.id, &e))?;
            let mut s = Sql::new(
                "INSERT INTO prescription_events (prescription_id, version, kind, actor, at, body) VALUES ("
                    .into(),
            );
            s.bind(rx.id.as_str());
            s.push(", ");
            s.bind(i64::try_from(v).unwrap_or(i64::MAX));
            s.push(", ");
            s.bind(event_kind(event));
            s.push(", ");
            s.bind(event_actor(event));
            s.push(", ");
            s.bind(now);
            s.push(", ");
            s.bind(self.seal_care(&rx.id, &event_field(v), &json));
            s.push(")");
            exec(&mut tx, s, "append prescription event").await?;
        }
        if let Some(e) = change.outbox {
            insert_outbox(&mut tx, self, e).await?;
        }
        audit::append(&mut tx, change.audit, self.anchor.as_deref()).await?;
        tx.commit().await.map_err(q("commit prescription change"))?;
        Ok(true)
    }

    /// Keeps the prescriber's `signature` for a draft still at `expected_version`, for a later
    /// `submit` (the domain checks it then), with `audit` in the same transaction. `false` when
    /// the draft changed or left the draft state meanwhile.
    pub async fn set_prescription_signature(
        &self,
        id: &str,
        expected_version: u64,
        signature: &Signature,
        audit: &AuditEvent,
    ) -> Result<bool> {
        let json = serde_json::to_string(signature)
            .map_err(|e| json_err("encode signature of", id, &e))?;
        let mut conn = self
            .write
            .acquire()
            .await
            .map_err(q("acquire writer connection"))?;
        let mut tx = conn
            .begin()
            .await
            .map_err(q("begin prescription signature"))?;
        let mut s = Sql::new("UPDATE prescriptions SET pending_signature = ".into());
        s.bind(json);
        s.push(" WHERE id = ");
        s.bind(id);
        s.push(" AND state = 'draft' AND version = ");
        s.bind(i64::try_from(expected_version).unwrap_or(i64::MAX));
        if exec(&mut tx, s, "keep prescription signature").await? == 0 {
            tx.rollback()
                .await
                .map_err(q("roll back prescription signature"))?;
            return Ok(false);
        }
        audit::append(&mut tx, audit, self.anchor.as_deref()).await?;
        tx.commit()
            .await
            .map_err(q("commit prescription signature"))?;
        Ok(true)
    }
}
