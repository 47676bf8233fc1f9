//! Moving a failed message to the dead-letter state by hand (the console's "move to dead
//! letter", `POST /api/messages/{id}/dead`): its retries stop, and it stays in the journal,
//! visible and reprocessable like any dead letter. The reason and who gave it become an error
//! row of the message (step `operator`), and the change and its audit event commit together.

use super::audit::{self, AuditEvent};
use super::sql::Sql;
use super::{Result, Store, StoreError, q};
use crate::crypto::Binding;
use crate::message::{Message, State, now_ms};

/// The step name of the error row a manual move to dead letter writes.
pub const OPERATOR_STEP: &str = "operator";

impl Store {
    /// Moves a `failed` message (waiting for its next retry) to `dead`, with `reason`.
    /// [`StoreError::NotReprocessable`] names the state when the message is not failed (a
    /// message in flight is left to finish its attempt; a done or dead one has nothing to stop).
    pub async fn move_to_dead(
        &self,
        id: &str,
        reason: &str,
        audit_event: Option<&AuditEvent>,
    ) -> Result<Message> {
        let msg = self
            .get(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        if msg.state != State::Failed {
            return Err(StoreError::Inconsistent(format!(
                "message {id} is {}; only a failed message (waiting for its next retry) can be moved to dead letter",
                msg.state
            )));
        }
        let actor = audit_event.map_or("engine", |e| e.actor.as_str());
        let text = format!("moved to dead letter by {actor}: {reason}");
        let (last_error, error) = match self.keyring() {
            Some(k) => {
                let c = k.cipher();
                (
                    c.seal_text(
                        &format!("{OPERATOR_STEP}: {text}"),
                        &Binding::new(id, "last_error"),
                    ),
                    c.seal_text(&text, &Binding::new(id, "error")),
                )
            }
            None => (format!("{OPERATOR_STEP}: {text}"), text.clone()),
        };
        let now = now_ms();
        let mut conn = self
            .write
            .acquire()
            .await
            .map_err(q("acquire writer connection"))?;
        let mut tx = sqlx::Connection::begin(&mut *conn)
            .await
            .map_err(q("begin move to dead letter"))?;
        let mut s = Sql::new("UPDATE messages SET state = 'dead', last_error = ".into());
        s.bind(last_error);
        s.push(", updated_at = ");
        s.bind(now);
        s.push(" WHERE id = ");
        s.bind(id);
        s.push(" AND state = 'failed'");
        let changed = s
            .query()
            .execute(&mut *tx)
            .await
            .map_err(q("move a message to dead letter"))?
            .rows_affected();
        if changed != 1 {
            drop(tx);
            let state = self.get(id).await?.map_or(msg.state, |m| m.state);
            return Err(StoreError::Inconsistent(format!(
                "message {id} is {state} now (it was taken up meanwhile); it was not moved"
            )));
        }
        let mut s = Sql::new(
            "INSERT INTO message_errors (message_id, attempt, at, step, error) VALUES (".into(),
        );
        s.bind(id);
        s.push(", ");
        s.bind(msg.attempts);
        s.push(", ");
        s.bind(now);
        s.push(", ");
        s.bind(OPERATOR_STEP);
        s.push(", ");
        s.bind(error);
        s.push(")");
        s.query()
            .execute(&mut *tx)
            .await
            .map_err(q("record the move to dead letter"))?;
        if let Some(e) = audit_event {
            audit::append(&mut tx, e, self.anchor.as_deref()).await?;
        }
        tx.commit().await.map_err(q("commit move to dead letter"))?;
        drop(conn);
        self.get(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(id.to_owned()))
    }
}
