//! Re-encryption of stored bodies with the active data key (`huizhen keys rotate`).
//!
//! Bodies are immutable once journaled, so a row is rewritten with `UPDATE … WHERE body = <what
//! was read>`: a row that changed in between is left for the next pass, never overwritten.

use sqlx::Row;

use super::sql::Sql;
use super::{Result, Store, StoreError, q};
use crate::crypto::Cipher;

/// What one batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RekeyBatch {
    /// Rows looked at.
    pub scanned: u64,
    /// Rows rewritten with the active key.
    pub rewritten: u64,
    /// The cursor for the next batch (`None` at the end).
    pub next: Option<String>,
}

impl Store {
    /// Rows in `table` (`messages` or `effects`).
    pub async fn count_rows(&self, table: &str) -> Result<i64> {
        let sql = match table {
            "messages" => "SELECT COUNT(*) AS n FROM messages",
            _ => "SELECT COUNT(*) AS n FROM effects",
        };
        let r = sqlx::query(sql)
            .fetch_one(&self.read)
            .await
            .map_err(q("count rows"))?;
        r.try_get::<i64, _>("n").map_err(q("count rows"))
    }

    /// Re-encrypts up to `limit` bodies of `table` (`messages` or `effects`) after the cursor
    /// `after` that are plaintext or sealed with another key than the active one.
    pub async fn rekey_batch(
        &self,
        table: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<RekeyBatch> {
        let Some(ring) = self.keyring() else {
            return Err(StoreError::Inconsistent(
                "encryption is off (security.encryption.enabled: false)".into(),
            ));
        };
        let cipher = ring.cipher();
        let (key_col, select) = match table {
            "messages" => ("id", "SELECT id AS k, body FROM messages WHERE id > "),
            "effects" => (
                "message_id || '/' || sink",
                "SELECT message_id || '/' || sink AS k, body FROM effects WHERE message_id || '/' || sink > ",
            ),
            other => {
                return Err(StoreError::Inconsistent(format!(
                    "no bodies in table {other:?}"
                )));
            }
        };
        let mut s = Sql::new(select.into());
        s.bind(after.unwrap_or("").to_owned());
        s.push(&format!(" ORDER BY {key_col} LIMIT "));
        s.bind(limit.max(1));
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read bodies to re-encrypt"))?;
        let mut out = RekeyBatch {
            scanned: rows.len() as u64,
            ..RekeyBatch::default()
        };
        for r in &rows {
            let k: String = r.try_get("k").map_err(q("read bodies to re-encrypt"))?;
            let body: Vec<u8> = r.try_get("body").map_err(q("read bodies to re-encrypt"))?;
            out.next = Some(k.clone());
            if Cipher::key_of(&body).as_deref() == Some(cipher.active()) {
                continue;
            }
            let plain = self.open_body(&k, body.clone())?;
            let sealed = cipher.seal(&plain);
            let mut u = Sql::new(format!("UPDATE {table} SET body = "));
            u.bind(sealed);
            u.push(&format!(" WHERE {key_col} = "));
            u.bind(k.clone());
            u.push(" AND body = ");
            u.bind(body);
            let done = u
                .query()
                .execute(self.write_pool())
                .await
                .map_err(q("re-encrypt a body"))?;
            out.rewritten += done.rows_affected();
        }
        if (rows.len() as i64) < limit.max(1) {
            out.next = None;
        }
        Ok(out)
    }
}
