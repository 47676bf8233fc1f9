//! The write side: creation, one command's transaction, the timers it re-points, and the
//! re-pointing of a merged patient's consultations inside the identity merge's transaction.

use huizhen_domain::consultation::{
    Actor, Command, ConsultError, Consultation, Context, Event, EventKind, Role, State, apply,
    decide, load_changes,
};
use huizhen_domain::identity::PersonId;
use huizhen_domain::stats::ConsultationFacts;
use sqlx::{AnyConnection, Connection, Row};

use super::read::{self, load_in};
use super::{CommandBy, Committed, ConsultationError, Result, StoredConsultation, role_code};
use crate::clock::ceil_ms;
use crate::store::audit::{self, AuditEvent};
use crate::store::care::upsert_consultation_facts;
use crate::store::experts::bump_open;
use crate::store::sql::Sql;
use crate::store::{Store, StoreError, q};

/// One try of a command.
pub(super) enum Attempted {
    Done(Box<Committed>),
    /// A concurrent writer changed the consultation first: decide again.
    Conflict,
}

/// The text of a serde enum value (`institution-to-institution`, `urgent`).
fn code<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

fn json_err(id: &str, what: &str, e: &serde_json::Error) -> StoreError {
    StoreError::Inconsistent(format!("consultation {id}: cannot encode {what}: {e}"))
}

/// True for a duplicate key: a concurrent writer appended the same version first.
fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// The accepted expert's facility, from the attempt they accepted.
fn expert_facility(c: &Consultation) -> Option<String> {
    let by = c.accepted_by()?;
    c.attempts()
        .iter()
        .flat_map(|a| a.offerees.iter())
        .find(|o| o.expert == by)
        .map(|o| o.facility.clone())
}

/// The timer a consultation needs in its state: `assign` once approved (until an expert is
/// offered or the case escalated), the current offer's deadline while it is open (offered,
/// reviewing), `next-offer` at once after a decline; none once escalated or otherwise.
pub(crate) fn timer_for(c: &Consultation) -> Option<(&'static str, u32, i64)> {
    let changed = c.last_modified().timestamp_millis();
    if c.state() == State::PendingMatch {
        return c.awaits_assignment().then_some(("assign", 0, changed));
    }
    let a = c.current_attempt()?;
    if a.escalated_to.is_some() {
        return None;
    }
    match c.state() {
        State::Offered | State::Reviewing => {
            Some(("offer-deadline", a.number, ceil_ms(a.deadline)))
        }
        State::Declined => Some(("next-offer", a.number, changed)),
        _ => None,
    }
}

/// Retires the consultation's open timers and files the one its state needs.
async fn refresh_timers(conn: &mut AnyConnection, c: &Consultation) -> Result<(), StoreError> {
    let mut s = Sql::new("UPDATE consultation_timers SET done = 1 WHERE consultation_id = ".into());
    s.bind(c.id().to_owned());
    s.push(" AND done = 0");
    s.query()
        .execute(&mut *conn)
        .await
        .map_err(q("retire consultation timers"))?;
    let Some((kind, attempt, due)) = timer_for(c) else {
        return Ok(());
    };
    let mut s = Sql::new(
        "INSERT INTO consultation_timers (consultation_id, kind, attempt, due_at, done) VALUES ("
            .into(),
    );
    s.bind(c.id().to_owned());
    s.push(", ");
    s.bind(kind);
    s.push(", ");
    s.bind(i64::from(attempt));
    s.push(", ");
    s.bind(due);
    s.push(", 0) ON CONFLICT (consultation_id, kind, attempt) DO UPDATE SET due_at = excluded.due_at, done = 0");
    s.query()
        .execute(&mut *conn)
        .await
        .map_err(q("file a consultation timer"))?;
    Ok(())
}

/// On SQLite, takes the write lock before the transaction's first read (`BEGIN IMMEDIATE` in
/// effect): a read-then-write transaction would otherwise fail with `SQLITE_BUSY_SNAPSHOT`
/// when the journal writer's connection commits between its read and its first write.
/// PostgreSQL needs nothing: its row lock and the `WHERE version = old` guard decide.
async fn lock_for_write(store: &Store, conn: &mut AnyConnection) -> Result<(), StoreError> {
    if store.backend() == crate::store::Backend::Sqlite {
        sqlx::query("UPDATE consultations SET version = version WHERE 1 = 0")
            .execute(&mut *conn)
            .await
            .map_err(q("take the write lock"))?;
    }
    Ok(())
}

/// Adds a facility to those that may read the consultation.
async fn grant(conn: &mut AnyConnection, id: &str, facility: &str) -> Result<(), StoreError> {
    let mut s =
        Sql::new("INSERT INTO consultation_facilities (facility, consultation_id) VALUES (".into());
    s.bind(facility.to_owned());
    s.push(", ");
    s.bind(id.to_owned());
    s.push(") ON CONFLICT DO NOTHING");
    s.query()
        .execute(&mut *conn)
        .await
        .map_err(q("grant a facility a consultation"))?;
    Ok(())
}

/// The audit row of one event.
fn audit_of(c: &Consultation, e: &Event, from: State, to: State, by: &CommandBy<'_>) -> AuditEvent {
    let plugin = e
        .plugin
        .as_ref()
        .map(|p| format!("; decided by plugin {}@{}", p.name, p.version))
        .unwrap_or_default();
    AuditEvent {
        actor: e.actor.id.clone(),
        role: role_code(e.actor.role).into(),
        facility: by.facility.to_owned(),
        action: format!("consultation.{}", e.kind.name()),
        resource_type: "Consultation".into(),
        resource_id: c.id().to_owned(),
        outcome: "success".into(),
        source: by.source.to_owned(),
        purpose: by.purpose.to_owned(),
        detail: format!("version {}: {from} → {to}{plugin}", e.version),
        subject_facility: c.request().requesting_facility.clone(),
    }
}

impl Store {
    /// Appends `events` to `before` on `conn` (in a transaction): the experts' load changes,
    /// the match decision the command came with, audit rows (holding the chain's head orders
    /// `seq` by commit), then the events, the snapshot (`WHERE version = old`), the facilities
    /// of new offers, the timers, the care side and the outbox. `None`: a concurrent writer won
    /// (and the caller rolls everything back).
    pub(super) async fn append_in(
        &self,
        conn: &mut AnyConnection,
        before: &StoredConsultation,
        events: &[Event],
        by: &CommandBy<'_>,
    ) -> Result<Option<StoredConsultation>, StoreError> {
        let id = before.consultation.id().to_owned();
        let mut c = before.consultation.clone();
        let mut steps = Vec::with_capacity(events.len());
        for e in events {
            let from = c.state();
            c = apply(c, e);
            steps.push((e, from, c.state()));
        }
        // The experts' open-case load follows the change (MATCH-30), before the audit rows:
        // every writer takes the registry's change counter before the audit chain's head.
        for (expert, delta) in load_changes(&before.consultation, &c) {
            bump_open(conn, &expert, delta).await?;
        }
        if let Some(d) = by.decision {
            self.save_decision_in(conn, d.id, d.decision, Some(d.audit), false)
                .await?;
        }
        for (e, from, to) in &steps {
            audit::append(
                conn,
                &audit_of(&c, e, *from, *to, by),
                self.anchor.as_deref(),
            )
            .await?;
        }
        for (e, _, to) in &steps {
            if !self.insert_event(conn, &id, e, *to).await? {
                return Ok(None);
            }
            if let EventKind::Offered { offerees, .. } = &e.kind {
                for o in offerees {
                    grant(conn, &id, &o.facility).await?;
                }
            }
        }
        let now = self.clock.now().timestamp_millis();
        let mut stored = before.clone();
        if let Some((list, decision)) = by.candidates {
            stored.candidates = list.to_vec();
            stored.match_decision = decision.map(str::to_owned);
        }
        let snapshot = serde_json::to_string(&c).map_err(|e| json_err(&id, "snapshot", &e))?;
        let candidates = serde_json::to_string(&stored.candidates)
            .map_err(|e| json_err(&id, "candidates", &e))?;
        let mut s = Sql::new("UPDATE consultations SET version = ".into());
        s.bind(c.version() as i64);
        s.push(", state = ");
        s.bind(c.state().code());
        s.push(", expert_facility = ");
        s.bind(expert_facility(&c));
        s.push(", expert_id = ");
        s.bind(c.accepted_by().map(str::to_owned));
        s.push(", patient_id = ");
        s.bind(c.patient() as i64);
        s.push(", snapshot = ");
        s.bind(self.seal_text(&id, "consultation/snapshot", snapshot));
        s.push(", candidates = ");
        s.bind(candidates);
        s.push(", match_decision = ");
        s.bind(stored.match_decision.clone());
        s.push(", updated_at = ");
        s.bind(now);
        s.push(" WHERE id = ");
        s.bind(id.clone());
        s.push(" AND version = ");
        s.bind(before.consultation.version() as i64);
        let updated = s
            .query()
            .execute(&mut *conn)
            .await
            .map_err(q("update a consultation"))?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        refresh_timers(conn, &c).await?;
        let completed = steps
            .iter()
            .any(|(e, _, _)| matches!(e.kind, EventKind::Completed));
        self.wire_in(conn, &c, completed, by).await?;
        self.announce_in(conn, &c, events).await?;
        for (e, _, _) in &steps {
            if let EventKind::Offered { offerees, .. } = &e.kind {
                for o in offerees {
                    if !stored.facilities.contains(&o.facility) {
                        stored.facilities.push(o.facility.clone());
                    }
                }
            }
        }
        stored.consultation = c;
        stored.updated_at = now;
        Ok(Some(stored))
    }

    /// Inserts one event row; false when its version is already there (a concurrent writer).
    async fn insert_event(
        &self,
        conn: &mut AnyConnection,
        id: &str,
        e: &Event,
        state: State,
    ) -> Result<bool, StoreError> {
        let json = serde_json::to_string(e).map_err(|err| json_err(id, "event", &err))?;
        let field = format!("consultation/event/{}", e.version);
        let mut s = Sql::new("INSERT INTO consultation_events (consultation_id, version, kind, state, event, actor, role, at, plugin_name, plugin_version) VALUES (".into());
        s.bind(id.to_owned());
        s.push(", ");
        s.bind(e.version as i64);
        s.push(", ");
        s.bind(e.kind.name());
        s.push(", ");
        s.bind(state.code());
        s.push(", ");
        s.bind(self.seal_text(id, &field, json));
        s.push(", ");
        s.bind(e.actor.id.clone());
        s.push(", ");
        s.bind(role_code(e.actor.role));
        s.push(", ");
        s.bind(e.at.timestamp_millis());
        s.push(", ");
        s.bind(e.plugin.as_ref().map(|p| p.name.clone()));
        s.push(", ");
        s.bind(e.plugin.as_ref().map(|p| p.version.clone()));
        s.push(")");
        match s.query().execute(&mut *conn).await {
            Ok(_) => Ok(true),
            Err(err) if is_unique_violation(&err) => Ok(false),
            Err(err) => Err(q("append a consultation event")(err)),
        }
    }

    /// Inserts a new consultation (its `created` event); `None` when `source_key` is taken.
    pub(super) async fn insert_consultation(
        &self,
        created: &Event,
        by: &CommandBy<'_>,
        source_key: Option<&str>,
    ) -> Result<Option<String>> {
        let c = Consultation::from_created(created).ok_or_else(|| {
            StoreError::Inconsistent("a consultation starts with its `created` event".into())
        })?;
        let id = c.id().to_owned();
        let r = c.request();
        let now = self.clock.now().timestamp_millis();
        let snapshot = serde_json::to_string(&c).map_err(|e| json_err(&id, "snapshot", &e))?;
        let mut conn = self
            .write
            .acquire()
            .await
            .map_err(q("acquire writer connection"))?;
        let mut tx = conn.begin().await.map_err(q("begin consultation create"))?;
        lock_for_write(self, &mut tx).await?;
        if let Some(key) = source_key
            && read::source_in(&mut tx, key).await?.is_some()
        {
            return Ok(None);
        }
        let event = audit_of(&c, created, State::Drafting, State::Drafting, by);
        audit::append(&mut tx, &event, self.anchor.as_deref()).await?;
        let mut s = Sql::new("INSERT INTO consultations (id, version, state, requesting_facility, patient_id, department, urgency, service_type, snapshot, source_key, created_at, updated_at) VALUES (".into());
        s.bind(id.clone());
        s.push(", ");
        s.bind(c.version() as i64);
        s.push(", ");
        s.bind(c.state().code());
        s.push(", ");
        s.bind(r.requesting_facility.trim().to_owned());
        s.push(", ");
        s.bind(c.patient() as i64);
        s.push(", ");
        s.bind(r.department.trim().to_owned());
        s.push(", ");
        s.bind(r.urgency.code());
        s.push(", ");
        s.bind(code(&r.service_type));
        s.push(", ");
        s.bind(self.seal_text(&id, "consultation/snapshot", snapshot));
        s.push(", ");
        s.bind(source_key.map(str::to_owned));
        s.push(", ");
        s.bind(now);
        s.push(", ");
        s.bind(now);
        s.push(")");
        match s.query().execute(&mut *tx).await {
            Ok(_) => {}
            // The same order number, created by a concurrent writer.
            Err(e) if source_key.is_some() && is_unique_violation(&e) => return Ok(None),
            Err(e) => return Err(q("insert a consultation")(e).into()),
        }
        if !self
            .insert_event(&mut tx, &id, created, State::Drafting)
            .await?
        {
            return Err(
                StoreError::Inconsistent(format!("consultation {id} exists already")).into(),
            );
        }
        grant(&mut tx, &id, r.requesting_facility.trim()).await?;
        upsert_consultation_facts(&mut tx, &ConsultationFacts::of(&c)).await?;
        tx.commit().await.map_err(q("commit consultation create"))?;
        Ok(Some(id))
    }

    /// One try of [`Store::consultation_command`].
    pub(super) async fn try_command<F>(
        &self,
        id: &str,
        expected: Option<u64>,
        by: &CommandBy<'_>,
        decide: &F,
    ) -> Result<Attempted>
    where
        F: Fn(&StoredConsultation, &Context<'_>) -> Result<Vec<Event>, ConsultError>,
    {
        let mut conn = self
            .write
            .acquire()
            .await
            .map_err(q("acquire writer connection"))?;
        let mut tx = conn
            .begin()
            .await
            .map_err(q("begin consultation command"))?;
        lock_for_write(self, &mut tx).await?;
        let before = load_in(&mut tx, self, id)
            .await?
            .ok_or_else(|| ConsultationError::NotFound(id.to_owned()))?;
        let actual = before.consultation.version();
        if let Some(expected) = expected
            && expected != actual
        {
            return Err(ConsultError::VersionConflict { expected, actual }.into());
        }
        let ctx = by.context(self.clock.now());
        let events = decide(&before, &ctx)?;
        if events.is_empty() {
            // Nothing was due: only the timers follow the state (a sweep that found the
            // deadline moved, or the case escalated).
            refresh_timers(&mut tx, &before.consultation).await?;
            tx.commit().await.map_err(q("commit consultation timers"))?;
            return Ok(Attempted::Done(Box::new(Committed {
                stored: before,
                events,
            })));
        }
        let Some(stored) = self.append_in(&mut tx, &before, &events, by).await? else {
            tx.rollback().await.map_err(q("roll back a lost race"))?;
            return Ok(Attempted::Conflict);
        };
        tx.commit()
            .await
            .map_err(q("commit consultation command"))?;
        Ok(Attempted::Done(Box::new(Committed { stored, events })))
    }
}

/// Re-points every open consultation of the retired person `from` to `to` (an ADT^A40 merge,
/// MATCH-05), as the `system` actor `actor`, inside the caller's transaction: each is a
/// `patient_repointed` event with its audit row. Returns how many were re-pointed. A
/// concurrent change of one of them fails the whole transaction (the merge is retried).
pub(crate) async fn repoint_in(
    conn: &mut AnyConnection,
    store: &Store,
    from: PersonId,
    to: PersonId,
    actor: &str,
    reason: &str,
) -> Result<usize, StoreError> {
    let mut s = Sql::new("SELECT id, state FROM consultations WHERE patient_id = ".into());
    s.bind(from as i64);
    s.push(" ORDER BY id");
    let rows = s
        .query()
        .fetch_all(&mut *conn)
        .await
        .map_err(q("find the consultations of a merged patient"))?;
    let mut ids = Vec::new();
    for r in &rows {
        let id: String = r.try_get("id").map_err(q("decode consultation"))?;
        let state: String = r.try_get("state").map_err(q("decode consultation"))?;
        if State::from_code(&state).is_some_and(super::is_open) {
            ids.push(id);
        }
    }
    let system = Actor::new(actor, Role::System);
    let mut by = CommandBy::new(&system);
    by.reason = Some(reason);
    by.source = actor;
    let mut moved = 0;
    for id in ids {
        let Some(before) = load_in(conn, store, &id).await.map_err(StoreError::from)? else {
            continue;
        };
        let command = Command::RepointPatient { from, to };
        let events = decide(
            &before.consultation,
            &command,
            &by.context(store.clock.now()),
        )
        .map_err(|e| StoreError::Inconsistent(format!("consultation {id}: re-point: {e}")))?;
        if store
            .append_in(conn, &before, &events, &by)
            .await?
            .is_none()
        {
            return Err(StoreError::Inconsistent(format!(
                "consultation {id} changed while its patient was merged; the merge is retried"
            )));
        }
        moved += 1;
    }
    Ok(moved)
}

impl Store {
    /// Moves an open timer to `due_at` (ms): a timer whose step failed is tried again later
    /// instead of at every sweep.
    pub async fn postpone_consultation_timer(
        &self,
        id: &str,
        kind: &str,
        attempt: i64,
        due_at: i64,
    ) -> Result<(), StoreError> {
        let mut s = Sql::new("UPDATE consultation_timers SET due_at = ".into());
        s.bind(due_at);
        s.push(" WHERE consultation_id = ");
        s.bind(id.to_owned());
        s.push(" AND kind = ");
        s.bind(kind.to_owned());
        s.push(" AND attempt = ");
        s.bind(attempt);
        s.push(" AND done = 0");
        s.query()
            .execute(&self.write)
            .await
            .map_err(q("postpone a consultation timer"))?;
        Ok(())
    }
}
