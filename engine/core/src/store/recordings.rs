//! The call's recordings (issue 18, RTC-30, migration 0023): one row per recorded track, naming
//! its object in the object store (`crate::objects`), the SHA-256 of its plaintext and the
//! CN-30 retention class with the time before which it may not be deleted. Rows are written
//! once, when a track's recording is finished; only the retention purge deletes them
//! ([`Store::recording_purge`], after `huizhen_domain::compliance::retention` says the record
//! is due), with its audit event in the same transaction.

use sqlx::Row;

use crate::store::audit::{self, AuditEvent};
use crate::store::sql::Sql;
use crate::store::{Result, Store, q};

/// One recorded track.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordingRow {
    pub id: String,
    pub consultation: String,
    pub facility: String,
    pub room: String,
    /// The recording (one start … stop) the track belongs to.
    pub recording: String,
    /// Whose track: the participant and their room role.
    pub participant: String,
    pub role: String,
    /// `camera` or `screen`.
    pub source: String,
    /// `audio` or `video`.
    pub kind: String,
    /// The codec forwarded (`audio/opus`, `video/VP8`, `video/H264`).
    pub codec: String,
    /// `ogg`, `ivf` or `h264` (Annex B).
    pub container: String,
    pub object_id: String,
    /// SHA-256 of the file (the plaintext), lower-case hex.
    pub sha256: String,
    pub bytes: i64,
    /// RTP packets recorded.
    pub packets: i64,
    /// Milliseconds since the epoch.
    pub started_at: i64,
    pub ended_at: i64,
    /// Who started the recording.
    pub started_by: String,
    /// CN-30's class (`process-record-audio-video`).
    pub retention_class: String,
    /// Not deleted before this (milliseconds since the epoch).
    pub retain_until: i64,
    /// Who stopped the recording (a participant or API user; empty when the engine did, or
    /// the track ended first).
    pub stopped_by: String,
    /// Why it stopped (`stopped by E1 (expert)`, `everyone left the room`, `the track ended`, …).
    pub stop_reason: String,
}

const COLUMNS: &str = "id, consultation, facility, room, recording, participant, role, source, kind, codec, container, object_id, sha256, bytes, packets, started_at, ended_at, started_by, retention_class, retain_until, stopped_by, stop_reason";

fn row(r: &sqlx::any::AnyRow) -> Result<RecordingRow> {
    let s = |c: &str| -> Result<String> { r.try_get(c).map_err(q("decode recording")) };
    let n = |c: &str| -> Result<i64> { r.try_get(c).map_err(q("decode recording")) };
    Ok(RecordingRow {
        id: s("id")?,
        consultation: s("consultation")?,
        facility: s("facility")?,
        room: s("room")?,
        recording: s("recording")?,
        participant: s("participant")?,
        role: s("role")?,
        source: s("source")?,
        kind: s("kind")?,
        codec: s("codec")?,
        container: s("container")?,
        object_id: s("object_id")?,
        sha256: s("sha256")?,
        bytes: n("bytes")?,
        packets: n("packets")?,
        started_at: n("started_at")?,
        ended_at: n("ended_at")?,
        started_by: s("started_by")?,
        retention_class: s("retention_class")?,
        retain_until: n("retain_until")?,
        stopped_by: s("stopped_by")?,
        stop_reason: s("stop_reason")?,
    })
}

impl Store {
    /// Adds a finished track's recording.
    pub async fn recording_insert(&self, r: &RecordingRow) -> Result<()> {
        let mut s = Sql::new(format!("INSERT INTO recordings ({COLUMNS}) VALUES ("));
        let texts = [
            &r.id,
            &r.consultation,
            &r.facility,
            &r.room,
            &r.recording,
            &r.participant,
            &r.role,
            &r.source,
            &r.kind,
            &r.codec,
            &r.container,
            &r.object_id,
            &r.sha256,
        ];
        for (i, v) in texts.iter().enumerate() {
            if i > 0 {
                s.push(", ");
            }
            s.bind(v.as_str());
        }
        for v in [r.bytes, r.packets, r.started_at, r.ended_at] {
            s.push(", ");
            s.bind(v);
        }
        for v in [&r.started_by, &r.retention_class] {
            s.push(", ");
            s.bind(v.as_str());
        }
        s.push(", ");
        s.bind(r.retain_until);
        for v in [&r.stopped_by, &r.stop_reason] {
            s.push(", ");
            s.bind(v.as_str());
        }
        s.push(")");
        s.query()
            .execute(&self.write)
            .await
            .map_err(q("insert recording"))?;
        Ok(())
    }

    /// The recorded tracks of a consultation, oldest first.
    pub async fn recordings(&self, consultation: &str) -> Result<Vec<RecordingRow>> {
        let mut s = Sql::new(format!(
            "SELECT {COLUMNS} FROM recordings WHERE consultation = "
        ));
        s.bind(consultation);
        s.push(" ORDER BY started_at, id");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read recordings"))?;
        rows.iter().map(row).collect()
    }

    /// Recorded tracks whose stored keep-until time has passed at `now_ms` (candidates of the
    /// retention purge, which still checks the configured period), oldest first, at most
    /// `limit`.
    pub async fn recordings_past_retention(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<RecordingRow>> {
        let mut s = Sql::new(format!(
            "SELECT {COLUMNS} FROM recordings WHERE retain_until <= "
        ));
        s.bind(now_ms);
        s.push(" ORDER BY retain_until, id LIMIT ");
        s.bind(limit);
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read recordings past retention"))?;
        rows.iter().map(row).collect()
    }

    /// Deletes a recorded track's row with its audit event `audit` in one transaction, only if
    /// its keep-until time is still before `now_ms` (a row changed since the plan stays).
    /// `true` when it was deleted. The object file is the caller's to remove afterwards (a
    /// failure there leaves a file nothing names: kept longer, never the reverse).
    pub async fn recording_purge(&self, id: &str, now_ms: i64, audit: &AuditEvent) -> Result<bool> {
        let mut conn = self.write.acquire().await.map_err(q("acquire writer"))?;
        let mut tx = sqlx::Connection::begin(&mut *conn)
            .await
            .map_err(q("begin recording purge"))?;
        let mut s = Sql::new("DELETE FROM recordings WHERE id = ".into());
        s.bind(id);
        s.push(" AND retain_until <= ");
        s.bind(now_ms);
        let n = s
            .query()
            .execute(&mut *tx)
            .await
            .map_err(q("delete recording"))?
            .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        audit::append(&mut tx, audit, self.anchor.as_deref()).await?;
        tx.commit().await.map_err(q("commit recording purge"))?;
        Ok(true)
    }

    /// One recorded track of a consultation.
    pub async fn recording(&self, consultation: &str, id: &str) -> Result<Option<RecordingRow>> {
        let mut s = Sql::new(format!(
            "SELECT {COLUMNS} FROM recordings WHERE consultation = "
        ));
        s.bind(consultation);
        s.push(" AND id = ");
        s.bind(id);
        let r = s
            .query()
            .fetch_optional(&self.read)
            .await
            .map_err(q("read recording"))?;
        r.as_ref().map(row).transpose()
    }
}
