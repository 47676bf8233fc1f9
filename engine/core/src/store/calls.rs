//! The consultation's call (issue 18, migration 0021): the participation (who joined the room
//! when, was admitted, left and why) and the per-session quality summaries (RTC-20). The media
//! adapter writes them; `GET /api/consultations/{id}/call` reads them.

use huizhen_domain::consultation::call_quality::Summary;
use sqlx::Row;

use crate::store::sql::Sql;
use crate::store::{Result, Store, StoreError, q};

/// One signaling session of a participant in a consultation's room.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CallSession {
    pub session: String,
    pub consultation: String,
    pub room: String,
    pub participant: String,
    pub role: String,
    /// Milliseconds since the epoch (UTC).
    pub joined_at: i64,
    /// When admitted (at join, or out of the lobby); `None` while held or if never admitted.
    pub admitted_at: Option<i64>,
    pub left_at: Option<i64>,
    pub left_reason: Option<String>,
    /// Signaling reconnects without leaving (RTC-12).
    pub reconnects: i64,
}

/// The quality summary of one track in one session as one reporter saw it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TrackSummary {
    pub session: String,
    pub pc: String,
    pub track: String,
    pub kind: String,
    pub direction: String,
    /// `client` (getStats() samples) or `sfu` (RTCP receiver reports at the engine).
    pub source: String,
    pub summary: Summary,
    pub updated_at: i64,
}

/// What [`Store::call_quality_put`] writes.
pub struct QualityKey<'a> {
    pub consultation: &'a str,
    pub session: &'a str,
    pub pc: &'a str,
    pub track: &'a str,
    pub kind: &'a str,
    pub direction: &'a str,
    pub source: &'a str,
}

impl Store {
    /// Records a join (a new session).
    pub async fn call_joined(&self, s: &CallSession) -> Result<()> {
        let mut sql = Sql::new(
            "INSERT INTO call_sessions (session, consultation, room, participant, role, joined_at, admitted_at, reconnects) VALUES ("
                .into(),
        );
        sql.bind(s.session.as_str());
        sql.push(", ");
        sql.bind(s.consultation.as_str());
        sql.push(", ");
        sql.bind(s.room.as_str());
        sql.push(", ");
        sql.bind(s.participant.as_str());
        sql.push(", ");
        sql.bind(s.role.as_str());
        sql.push(", ");
        sql.bind(s.joined_at);
        sql.push(", ");
        sql.bind(s.admitted_at);
        sql.push(", 0)");
        sql.query()
            .execute(self.write_pool())
            .await
            .map_err(q("record call join"))?;
        Ok(())
    }

    /// Records that a held session was admitted (out of the lobby).
    pub async fn call_admitted(&self, session: &str, at: i64) -> Result<()> {
        let mut sql = Sql::new("UPDATE call_sessions SET admitted_at = ".into());
        sql.bind(at);
        sql.push(" WHERE admitted_at IS NULL AND session = ");
        sql.bind(session);
        sql.query()
            .execute(self.write_pool())
            .await
            .map_err(q("record call admission"))?;
        Ok(())
    }

    /// Counts a reconnect of a session (RTC-12).
    pub async fn call_reconnected(&self, session: &str) -> Result<()> {
        let mut sql = Sql::new(
            "UPDATE call_sessions SET reconnects = reconnects + 1 WHERE session = ".into(),
        );
        sql.bind(session);
        sql.query()
            .execute(self.write_pool())
            .await
            .map_err(q("record call reconnect"))?;
        Ok(())
    }

    /// Records a leave.
    pub async fn call_left(&self, session: &str, at: i64, reason: &str) -> Result<()> {
        let mut sql = Sql::new("UPDATE call_sessions SET left_at = ".into());
        sql.bind(at);
        sql.push(", left_reason = ");
        sql.bind(reason);
        sql.push(" WHERE left_at IS NULL AND session = ");
        sql.bind(session);
        sql.query()
            .execute(self.write_pool())
            .await
            .map_err(q("record call leave"))?;
        Ok(())
    }

    /// The sessions of a consultation's call, in the order they joined.
    pub async fn call_sessions(&self, consultation: &str) -> Result<Vec<CallSession>> {
        let mut sql = Sql::new(
            "SELECT session, consultation, room, participant, role, joined_at, admitted_at, left_at, left_reason, reconnects FROM call_sessions WHERE consultation = "
                .into(),
        );
        sql.bind(consultation);
        sql.push(" ORDER BY joined_at, session");
        let rows = sql
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read call sessions"))?;
        rows.iter()
            .map(|r| {
                let e = "decode call session";
                Ok(CallSession {
                    session: r.try_get("session").map_err(q(e))?,
                    consultation: r.try_get("consultation").map_err(q(e))?,
                    room: r.try_get("room").map_err(q(e))?,
                    participant: r.try_get("participant").map_err(q(e))?,
                    role: r.try_get("role").map_err(q(e))?,
                    joined_at: r.try_get("joined_at").map_err(q(e))?,
                    admitted_at: r.try_get("admitted_at").map_err(q(e))?,
                    left_at: r.try_get("left_at").map_err(q(e))?,
                    left_reason: r.try_get("left_reason").map_err(q(e))?,
                    reconnects: r.try_get("reconnects").map_err(q(e))?,
                })
            })
            .collect()
    }

    /// Writes (or replaces) the quality summary of one track of one session.
    pub async fn call_quality_put(&self, k: &QualityKey<'_>, s: &Summary, at: i64) -> Result<()> {
        let json = serde_json::to_string(s)
            .map_err(|e| StoreError::Inconsistent(format!("call quality summary: {e}")))?;
        let mut sql = Sql::new(
            "INSERT INTO call_quality (session, pc, track, direction, source, consultation, kind, summary, updated_at) VALUES ("
                .into(),
        );
        for (i, v) in [
            k.session,
            k.pc,
            k.track,
            k.direction,
            k.source,
            k.consultation,
            k.kind,
            json.as_str(),
        ]
        .into_iter()
        .enumerate()
        {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind(v);
        }
        sql.push(", ");
        sql.bind(at);
        sql.push(
            ") ON CONFLICT (session, pc, track, direction, source) DO UPDATE SET summary = excluded.summary, updated_at = excluded.updated_at",
        );
        sql.query()
            .execute(self.write_pool())
            .await
            .map_err(q("write call quality"))?;
        Ok(())
    }

    /// Every track summary of a consultation's call.
    pub async fn call_quality(&self, consultation: &str) -> Result<Vec<TrackSummary>> {
        let mut sql = Sql::new(
            "SELECT session, pc, track, kind, direction, source, summary, updated_at FROM call_quality WHERE consultation = "
                .into(),
        );
        sql.bind(consultation);
        sql.push(" ORDER BY session, pc, track, direction, source");
        let rows = sql
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read call quality"))?;
        rows.iter()
            .map(|r| {
                let e = "decode call quality";
                let json: String = r.try_get("summary").map_err(q(e))?;
                Ok(TrackSummary {
                    session: r.try_get("session").map_err(q(e))?,
                    pc: r.try_get("pc").map_err(q(e))?,
                    track: r.try_get("track").map_err(q(e))?,
                    kind: r.try_get("kind").map_err(q(e))?,
                    direction: r.try_get("direction").map_err(q(e))?,
                    source: r.try_get("source").map_err(q(e))?,
                    summary: serde_json::from_str(&json).map_err(|err| {
                        StoreError::Inconsistent(format!("call quality summary: {err}"))
                    })?,
                    updated_at: r.try_get("updated_at").map_err(q(e))?,
                })
            })
            .collect()
    }
}
