//! The NHSA msgid sequence (CN-61): the last id handed out per institution, advanced by the
//! domain's `next_msgid` inside one transaction that holds the institution's row (PostgreSQL:
//! `FOR UPDATE`; SQLite: its one writer), so concurrent callers and restarted processes never
//! get the same id.

use chrono::{DateTime, FixedOffset, Utc};
use huizhen_domain::billing::{MsgId, MsgIdCursor, next_msgid};
use sqlx::{Connection, Row};

use super::settlements::exec;
use crate::store::sql::Sql;
use crate::store::{Backend, Result, Store, StoreError, q};

impl Store {
    /// The next msgid of `institution` at `now`, written in local time `offset`.
    pub async fn allocate_msgid(
        &self,
        institution: &str,
        now: DateTime<Utc>,
        offset: FixedOffset,
    ) -> Result<MsgId> {
        let mut conn = self
            .write
            .acquire()
            .await
            .map_err(q("acquire writer connection"))?;
        let mut tx = conn.begin().await.map_err(q("begin msgid"))?;
        let mut s =
            Sql::new("INSERT INTO msgid_cursors (institution, second, seq) VALUES (".into());
        s.bind(institution);
        s.push(", -1, -1) ON CONFLICT (institution) DO NOTHING");
        exec(&mut tx, s, "create msgid cursor").await?;
        let mut s = Sql::new("SELECT second, seq FROM msgid_cursors WHERE institution = ".into());
        s.bind(institution);
        if self.backend == Backend::Postgres {
            s.push(" FOR UPDATE");
        }
        let row = s
            .query()
            .fetch_one(&mut *tx)
            .await
            .map_err(q("read msgid cursor"))?;
        let second: i64 = row.try_get("second").map_err(q("decode msgid cursor"))?;
        let seq: i64 = row.try_get("seq").map_err(q("decode msgid cursor"))?;
        let last = (second >= 0).then(|| MsgIdCursor {
            second,
            seq: u16::try_from(seq).unwrap_or(0),
        });
        let (id, next) = next_msgid(institution, last, now, offset)
            .map_err(|e| StoreError::Inconsistent(format!("msgid: {e}")))?;
        let mut s = Sql::new("UPDATE msgid_cursors SET second = ".into());
        s.bind(next.second);
        s.push(", seq = ");
        s.bind(i64::from(next.seq));
        s.push(" WHERE institution = ");
        s.bind(institution);
        exec(&mut tx, s, "advance msgid cursor").await?;
        tx.commit().await.map_err(q("commit msgid"))?;
        Ok(id)
    }
}
