//! Cursors of polling sources: a text value per source key (`fhir_poll` keeps the
//! `_lastUpdated` of the newest resource it has journaled), written after the messages it
//! covers were journaled. Migration 0015.

use sqlx::Row;

use crate::store::sql::Sql;
use crate::store::{Result, Store, q};

impl Store {
    /// The stored cursor of `source`, if it has one.
    pub async fn source_cursor(&self, source: &str) -> Result<Option<String>> {
        let mut s = Sql::new("SELECT cursor FROM source_cursors WHERE source = ".into());
        s.bind(source);
        let row = s
            .query()
            .fetch_optional(&self.read)
            .await
            .map_err(q("read source cursor"))?;
        row.map(|r| r.try_get("cursor"))
            .transpose()
            .map_err(q("decode source cursor"))
    }

    /// Stores the cursor of `source` (replacing the one before).
    pub async fn set_source_cursor(&self, source: &str, cursor: &str) -> Result<()> {
        let mut s =
            Sql::new("INSERT INTO source_cursors (source, cursor, updated_at) VALUES (".into());
        s.bind(source);
        s.push(", ");
        s.bind(cursor);
        s.push(", ");
        s.bind(crate::message::now_ms());
        s.push(
            ") ON CONFLICT (source) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
        );
        s.query()
            .execute(&self.write)
            .await
            .map_err(q("write source cursor"))?;
        Ok(())
    }
}
