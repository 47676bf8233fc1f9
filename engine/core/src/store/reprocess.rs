//! Reprocessing: a finished message (failed, dead or done) put back to run again, without
//! erasing its past (issue 24).
//!
//! - **What the sender was told stays true.** A message its source refused at intake (HL7
//!   AR/AE/CR, a refused C-STORE: never accepted) is journaled `dead` with an intake row in
//!   `message_errors` (attempt 0, step `intake`, the reason). It is reprocessed only when the
//!   request says so ([`ReprocessRequest::include_refused`]); otherwise [`StoreError::Refused`]
//!   (a bulk reprocess skips it and counts it). A message refused before migration 0027 has no
//!   intake row; it is known by its state (`dead` after 0 attempts, which only a refusal
//!   leaves), and its intake row is written from `last_error` when it is reprocessed.
//! - **History is kept.** Errors of earlier attempts stay in `message_errors` (a reprocess
//!   resets the attempt count, not the rows), and every reprocess is a row of
//!   `message_reprocesses` (migration 0027): when, from which state after how many attempts,
//!   whether it had been refused at intake, and who asked. The change, these rows and the audit
//!   event commit in one transaction.

use sqlx::Row;

use super::audit::{self, AuditEvent};
use super::sql::Sql;
use super::{Result, Store, StoreError, q};
use crate::message::{Message, State, now_ms};

/// The step name of a refused message's intake row in `message_errors` (attempt 0).
pub const INTAKE_STEP: &str = "intake";

/// What a reprocess asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReprocessRequest<'a> {
    /// Also messages their source refused at intake (the sender was told they were not
    /// accepted). Off by default: the CLI's `--include-refused`, the API's `include_refused`.
    pub include_refused: bool,
    /// Recorded in the same transaction as the change; its actor is kept with the reprocess.
    pub audit: Option<&'a AuditEvent>,
}

/// One reprocess of a message, as `message_reprocesses` keeps it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReprocessRow {
    pub at: i64,
    /// The state it was in (failed, dead or done).
    pub from_state: String,
    /// The attempts its previous run had used.
    pub attempts: i64,
    /// It had been refused at intake and was reprocessed on explicit request.
    pub refused: bool,
    /// Who asked (the audit event's actor; `engine` when nobody did).
    pub actor: String,
}

/// How a message came in: accepted, or refused at intake with the reason.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Intake {
    /// `accepted` or `refused`.
    pub verdict: &'static str,
    /// Why it was refused (the source's words: `mllp: AR 203 …`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a bulk reprocess did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BulkReprocess {
    pub reprocessed: u64,
    /// Refused at intake and left as they are (no `include_refused`).
    pub refused_skipped: u64,
}

/// The SQL condition "refused at intake" over `messages`: an intake row, or (refused before
/// migration 0027) dead after 0 attempts.
const REFUSED: &str = "((messages.state = 'dead' AND messages.attempts = 0) OR EXISTS (SELECT 1 FROM message_errors e WHERE e.message_id = messages.id AND e.attempt = 0 AND e.step = 'intake'))";

impl Store {
    /// Puts a failed, dead or done message back to be processed again: attempts reset to 0,
    /// due now. A running engine picks it up within its scheduler interval. A message refused
    /// at intake is refused here ([`StoreError::Refused`]); see [`Store::reprocess_with`].
    pub async fn reprocess(&self, id: &str) -> Result<Message> {
        self.reprocess_with(id, ReprocessRequest::default()).await
    }

    /// [`Store::reprocess`], recording `audit` in the same transaction as the change.
    pub async fn reprocess_audited(&self, id: &str, audit: Option<&AuditEvent>) -> Result<Message> {
        self.reprocess_with(
            id,
            ReprocessRequest {
                include_refused: false,
                audit,
            },
        )
        .await
    }

    /// Reprocesses one message as `req` says, keeping its history (see the module docs).
    pub async fn reprocess_with(&self, id: &str, req: ReprocessRequest<'_>) -> Result<Message> {
        let msg = self
            .get(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        if !matches!(msg.state, State::Failed | State::Dead | State::Done) {
            return Err(StoreError::NotReprocessable {
                id: id.to_owned(),
                state: msg.state,
            });
        }
        let intake_row = self.intake_row(id).await?;
        let legacy_refusal = intake_row.is_none() && msg.state == State::Dead && msg.attempts == 0;
        let refused = intake_row.is_some() || legacy_refusal;
        if refused && !req.include_refused {
            let reason = intake_row
                .or_else(|| msg.last_error.clone())
                .unwrap_or_else(|| "no reason recorded".into());
            return Err(StoreError::Refused {
                id: id.to_owned(),
                reason,
            });
        }
        let now = now_ms();
        let mut conn = self
            .write
            .acquire()
            .await
            .map_err(q("acquire writer connection"))?;
        let mut tx = sqlx::Connection::begin(&mut *conn)
            .await
            .map_err(q("begin reprocess"))?;
        if legacy_refusal {
            let reason = msg
                .last_error
                .clone()
                .unwrap_or_else(|| "refused at intake".into());
            self.insert_intake_row(&mut tx, id, msg.received_at, &reason)
                .await?;
        }
        let mut s = Sql::new(
            "INSERT INTO message_reprocesses (message_id, at, from_state, attempts, refused, actor) VALUES (".into(),
        );
        s.bind(id);
        s.push(", ");
        s.bind(now);
        s.push(", ");
        s.bind(msg.state.as_str());
        s.push(", ");
        s.bind(msg.attempts);
        s.push(", ");
        s.bind(i64::from(refused));
        s.push(", ");
        s.bind(actor(req.audit));
        s.push(")");
        s.query()
            .execute(&mut *tx)
            .await
            .map_err(q("record reprocess"))?;
        let mut s = back_to_work(now);
        s.push(" WHERE id = ");
        s.bind(id);
        s.push(" AND state = ");
        s.bind(msg.state.as_str());
        let changed = s
            .query()
            .execute(&mut *tx)
            .await
            .map_err(q("reprocess message"))?
            .rows_affected();
        if changed != 1 {
            // Taken up meanwhile (another reprocess, a claim): nothing is written.
            drop(tx);
            let now_state = self.get(id).await?.map_or(msg.state, |m| m.state);
            return Err(StoreError::NotReprocessable {
                id: id.to_owned(),
                state: now_state,
            });
        }
        if let Some(e) = req.audit {
            let mut e = e.clone();
            if refused {
                e.detail = join_detail(
                    &e.detail,
                    "refused at intake; reprocessed on explicit request (include_refused)",
                );
            }
            audit::append(&mut tx, &e, self.anchor.as_deref()).await?;
        }
        tx.commit().await.map_err(q("commit reprocess"))?;
        drop(conn);
        self.get(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(id.to_owned()))
    }

    /// Reprocesses every message of a pipeline in a state (e.g. all dead letters), except those
    /// refused at intake. Returns how many.
    pub async fn reprocess_all(&self, pipeline: &str, state: State) -> Result<u64> {
        self.reprocess_all_audited(pipeline, state, None).await
    }

    /// [`Store::reprocess_all`], recording `audit` in the same transaction as the change.
    pub async fn reprocess_all_audited(
        &self,
        pipeline: &str,
        state: State,
        audit: Option<&AuditEvent>,
    ) -> Result<u64> {
        let r = self
            .reprocess_all_with(
                pipeline,
                state,
                ReprocessRequest {
                    include_refused: false,
                    audit,
                },
            )
            .await?;
        Ok(r.reprocessed)
    }

    /// Reprocesses every message of a pipeline in a state as `req` says: refused ones only with
    /// `include_refused` (else counted in [`BulkReprocess::refused_skipped`]).
    pub async fn reprocess_all_with(
        &self,
        pipeline: &str,
        state: State,
        req: ReprocessRequest<'_>,
    ) -> Result<BulkReprocess> {
        if !matches!(state, State::Failed | State::Dead | State::Done) {
            return Err(StoreError::NotReprocessable {
                id: format!("(all {state} in {pipeline})"),
                state,
            });
        }
        let filter = |s: &mut Sql, refused: Option<bool>| {
            s.push(" WHERE messages.pipeline = ");
            s.bind(pipeline);
            s.push(" AND messages.state = ");
            s.bind(state.as_str());
            if state != State::Done {
                // Lets SQLite use the one state index (`messages_open`, partial).
                s.push(" AND messages.state <> 'done'");
            }
            match refused {
                Some(true) => s.push(&format!(" AND {REFUSED}")),
                Some(false) => s.push(&format!(" AND NOT {REFUSED}")),
                None => {}
            }
        };
        let now = now_ms();
        let mut conn = self
            .write
            .acquire()
            .await
            .map_err(q("acquire writer connection"))?;
        let mut tx = sqlx::Connection::begin(&mut *conn)
            .await
            .map_err(q("begin reprocess"))?;
        let mut refused_skipped = 0;
        if req.include_refused {
            // Refused before migration 0027: their reason becomes their intake row now.
            let mut s = Sql::new("SELECT id, received_at, last_error FROM messages".into());
            filter(&mut s, None);
            s.push(" AND messages.state = 'dead' AND messages.attempts = 0 AND NOT EXISTS (SELECT 1 FROM message_errors e WHERE e.message_id = messages.id AND e.attempt = 0 AND e.step = 'intake')");
            let rows = s
                .query()
                .fetch_all(&mut *tx)
                .await
                .map_err(q("find refused messages"))?;
            for r in rows {
                let id: String = r.try_get("id").map_err(q("decode refused message"))?;
                let at: i64 = r
                    .try_get("received_at")
                    .map_err(q("decode refused message"))?;
                let raw: Option<String> = r
                    .try_get("last_error")
                    .map_err(q("decode refused message"))?;
                let reason = match raw {
                    Some(raw) => self.open_text(&id, "last_error", raw)?,
                    None => "refused at intake".into(),
                };
                self.insert_intake_row(&mut tx, &id, at, &reason).await?;
            }
        } else {
            let mut s = Sql::new("SELECT COUNT(*) AS n FROM messages".into());
            filter(&mut s, Some(true));
            let n: i64 = s
                .query()
                .fetch_one(&mut *tx)
                .await
                .map_err(q("count refused messages"))?
                .try_get("n")
                .map_err(q("count refused messages"))?;
            refused_skipped = u64::try_from(n).unwrap_or(0);
        }
        let only = (!req.include_refused).then_some(false);
        let mut s = Sql::new(
            "INSERT INTO message_reprocesses (message_id, at, from_state, attempts, refused, actor) SELECT messages.id, CAST(".into(),
        );
        s.bind(now);
        s.push(" AS BIGINT), messages.state, messages.attempts, CASE WHEN ");
        s.push(REFUSED);
        s.push(" THEN 1 ELSE 0 END, ");
        s.bind(actor(req.audit));
        s.push(" FROM messages");
        filter(&mut s, only);
        s.query()
            .execute(&mut *tx)
            .await
            .map_err(q("record reprocesses"))?;
        let mut s = back_to_work(now);
        filter(&mut s, only);
        let reprocessed = s
            .query()
            .execute(&mut *tx)
            .await
            .map_err(q("reprocess messages"))?
            .rows_affected();
        if let Some(e) = req.audit {
            let mut e = e.clone();
            let mut detail = format!("{reprocessed} messages");
            if req.include_refused {
                detail
                    .push_str(", refused at intake included on explicit request (include_refused)");
            } else if refused_skipped > 0 {
                detail.push_str(&format!(", {refused_skipped} refused at intake skipped"));
            }
            e.detail = join_detail(&e.detail, &detail);
            audit::append(&mut tx, &e, self.anchor.as_deref()).await?;
        }
        tx.commit().await.map_err(q("commit reprocess"))?;
        Ok(BulkReprocess {
            reprocessed,
            refused_skipped,
        })
    }

    /// How a message came in: refused (with the reason of its intake row, or for a message
    /// refused before migration 0027 its `last_error`) or accepted.
    pub async fn intake(&self, m: &Message) -> Result<Intake> {
        let row = self.intake_row(&m.id).await?;
        Ok(match row {
            Some(reason) => Intake {
                verdict: "refused",
                reason: Some(reason),
            },
            None if m.state == State::Dead && m.attempts == 0 => Intake {
                verdict: "refused",
                reason: m.last_error.clone(),
            },
            None => Intake {
                verdict: "accepted",
                reason: None,
            },
        })
    }

    /// The reprocesses of a message, oldest first.
    pub async fn reprocesses(&self, id: &str) -> Result<Vec<ReprocessRow>> {
        let mut s = Sql::new(
            "SELECT at, from_state, attempts, refused, actor FROM message_reprocesses WHERE message_id = ".into(),
        );
        s.bind(id);
        s.push(" ORDER BY at");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("get reprocesses"))?;
        rows.iter()
            .map(|r| {
                let d = || q("decode reprocess");
                Ok(ReprocessRow {
                    at: r.try_get("at").map_err(d())?,
                    from_state: r.try_get("from_state").map_err(d())?,
                    attempts: r.try_get("attempts").map_err(d())?,
                    refused: r.try_get::<i64, _>("refused").map_err(d())? != 0,
                    actor: r.try_get("actor").map_err(d())?,
                })
            })
            .collect()
    }

    /// Reprocesses recorded per pipeline (for `/metrics`).
    pub async fn reprocess_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT m.pipeline AS pipeline, COUNT(*) AS n FROM message_reprocesses r JOIN messages m ON m.id = r.message_id GROUP BY m.pipeline",
        )
        .fetch_all(&self.read)
        .await
        .map_err(q("count reprocesses"))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("pipeline").map_err(q("decode reprocess count"))?,
                    r.try_get("n").map_err(q("decode reprocess count"))?,
                ))
            })
            .collect()
    }

    /// The reason of a message's intake row (refused at intake), opened.
    async fn intake_row(&self, id: &str) -> Result<Option<String>> {
        let mut s = Sql::new("SELECT error FROM message_errors WHERE message_id = ".into());
        s.bind(id);
        s.push(" AND attempt = 0 AND step = ");
        s.bind(INTAKE_STEP);
        let row = s
            .query()
            .fetch_optional(&self.read)
            .await
            .map_err(q("get intake row"))?;
        row.map(|r| {
            let raw: String = r.try_get("error").map_err(q("decode intake row"))?;
            self.open_text(id, "error", raw)
        })
        .transpose()
    }

    async fn insert_intake_row(
        &self,
        conn: &mut sqlx::AnyConnection,
        id: &str,
        at: i64,
        reason: &str,
    ) -> Result<()> {
        let error = match &self.keyring {
            Some(k) => k.seal_text(reason, &crate::crypto::Binding::new(id, "error")),
            None => reason.to_owned(),
        };
        let mut s = Sql::new(
            "INSERT INTO message_errors (message_id, attempt, at, step, error) VALUES (".into(),
        );
        s.bind(id);
        s.push(", 0, ");
        s.bind(at);
        s.push(", ");
        s.bind(INTAKE_STEP);
        s.push(", ");
        s.bind(error);
        s.push(")");
        s.query()
            .execute(&mut *conn)
            .await
            .map_err(q("record intake row"))?;
        Ok(())
    }
}

/// `UPDATE messages SET …` putting messages back to work, due `now`: attempts start again at
/// 0 (the errors of the earlier ones stay in `message_errors`). The caller adds the `WHERE`.
fn back_to_work(now: i64) -> Sql {
    let mut s = Sql::new(
        "UPDATE messages SET state = 'received', attempts = 0, part = COALESCE(part, 0), next_attempt_at = ".into(),
    );
    s.bind(now);
    s.push(", updated_at = ");
    s.bind(now);
    s
}

fn actor(audit: Option<&AuditEvent>) -> String {
    audit.map_or_else(|| "engine".to_owned(), |e| e.actor.clone())
}

fn join_detail(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_owned()
    } else {
        format!("{a}; {b}")
    }
}
