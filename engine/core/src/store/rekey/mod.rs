//! Re-encryption of stored sealed values with the active data key (`huizhen keys rotate`).
//!
//! A pass over `messages` re-seals, for every row not already current (sealed bound, with the
//! active key): the body, the sealed header values, `last_error` and the error history of the
//! message and the sealed dedup key, each bound to its message and field (see
//! [`crate::crypto::Binding`]); a dedup key still in clear is replaced by its blind index and
//! kept sealed beside it (journal v2 keeps the body in `bodies`, by the message's id). A pass
//! over `effects` re-seals their bodies (an effect that refers to its message's body has none
//! of its own).
//! Values in clear (written before encryption was turned on) and values sealed before bindings
//! existed (`\0HZE1`) are sealed bound by the same pass.
//!
//! Bodies and headers are immutable once journaled; the error fields and the dedup key may
//! change under a running engine. Every value is therefore rewritten with `UPDATE … WHERE
//! <column> = <what was read>`: a value that changed in between is left for the next pass,
//! never overwritten.
//!
//! The consultation workflow's sealed rows get the same passes ([`workflow`]): consultation
//! snapshots and events, prescriptions and their events, bookings (and a booking's patient
//! key, a blind index), the workflow outbox, and the FHIR store's versions (`fhir_versions`,
//! bound to `Type/id` and `fhir/v<n>`), and billing's (settlements, the requests and responses
//! of their calls to the insurance platform, e-invoices). [`REKEY_TABLES`] lists every table a
//! rotation walks.

mod workflow;

use std::collections::BTreeMap;

use sqlx::Row;

use super::sql::Sql;
use super::{CLEAR_HEADERS, Result, Store, StoreError, q};
use crate::crypto::{Cipher, INDEX_PREFIX, TEXT_PREFIX};

/// What one batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RekeyBatch {
    /// Rows looked at.
    pub scanned: u64,
    /// Rows with at least one value rewritten with the active key.
    pub rewritten: u64,
    /// The cursor for the next batch (`None` at the end).
    pub next: Option<String>,
}

/// Every table with sealed values, in the order `huizhen keys rotate` walks them.
pub const REKEY_TABLES: &[&str] = &[
    "messages",
    "effects",
    "consultations",
    "consultation_events",
    "prescriptions",
    "prescription_events",
    "appointments",
    "workflow_outbox",
    "fhir_versions",
    "settlements",
    "settlement_calls",
    "invoices",
    "users",
];

impl Store {
    /// Rows in `table` (one of [`REKEY_TABLES`]).
    pub async fn count_rows(&self, table: &str) -> Result<i64> {
        let Some(table) = REKEY_TABLES.iter().find(|t| **t == table) else {
            return Err(StoreError::Inconsistent(format!(
                "no sealed values in table {table:?}"
            )));
        };
        let r = Sql::new(format!("SELECT COUNT(*) AS n FROM {table}"))
            .query()
            .fetch_one(&self.read)
            .await
            .map_err(q("count rows"))?;
        r.try_get::<i64, _>("n").map_err(q("count rows"))
    }

    /// Re-encrypts the sealed values of up to `limit` rows of `table` (one of
    /// [`REKEY_TABLES`]) after the cursor `after` that are in clear, unbound, or sealed with
    /// another key than the active one.
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
        let limit = limit.max(1);
        let mut out = match (table, workflow::target(table)) {
            ("messages", _) => self.rekey_messages(&cipher, after, limit).await?,
            ("effects", _) => self.rekey_effects(&cipher, after, limit).await?,
            (_, Some(target)) => self.rekey_workflow(&cipher, target, after, limit).await?,
            (other, None) => {
                return Err(StoreError::Inconsistent(format!(
                    "no sealed values in table {other:?}"
                )));
            }
        };
        if (out.scanned as i64) < limit {
            out.next = None;
        }
        Ok(out)
    }

    /// `raw` as written: opened when sealed (bound or not), as it is when in clear.
    fn plain_bytes(&self, id: &str, field: &str, raw: &[u8]) -> Result<Vec<u8>> {
        if Cipher::key_of(raw).is_none() {
            return Ok(raw.to_vec());
        }
        self.open_bytes(id, field, raw.to_vec())
    }

    /// `raw` re-sealed for `field` of `id`, or `None` when it is already current.
    fn reseal_text(&self, c: &Cipher, id: &str, field: &str, raw: &str) -> Result<Option<String>> {
        if c.is_current_text(raw) {
            return Ok(None);
        }
        let plain = if raw.starts_with(TEXT_PREFIX) {
            self.open_text(id, field, raw.to_owned())?
        } else {
            raw.to_owned()
        };
        Ok(Some(c.seal_text(
            &plain,
            &crate::crypto::Binding::new(id, field),
        )))
    }

    async fn update_guarded(
        &self,
        table: &str,
        column: &str,
        new: Value,
        key: &[(&str, Value)],
        old: Value,
    ) -> Result<u64> {
        let mut u = Sql::new(format!("UPDATE {table} SET {column} = "));
        new.bind(&mut u);
        for (i, (col, v)) in key.iter().enumerate() {
            u.push(&format!(
                "{} {col} = ",
                if i == 0 { " WHERE" } else { " AND" }
            ));
            v.clone().bind(&mut u);
        }
        u.push(&format!(" AND {column} = "));
        old.bind(&mut u);
        let done = u
            .query()
            .execute(self.write_pool())
            .await
            .map_err(q("re-encrypt a value"))?;
        Ok(done.rows_affected())
    }

    async fn rekey_messages(
        &self,
        c: &Cipher,
        after: Option<&str>,
        limit: i64,
    ) -> Result<RekeyBatch> {
        let mut s = Sql::new(
            "SELECT id, (SELECT bodies.body FROM bodies WHERE bodies.id = messages.id) AS body, headers, last_error, dedup_key, dedup_key_sealed FROM messages WHERE id > "
                .into(),
        );
        s.bind(after.unwrap_or("").to_owned());
        s.push(" ORDER BY id LIMIT ");
        s.bind(limit);
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read messages to re-encrypt"))?;
        let mut out = RekeyBatch {
            scanned: rows.len() as u64,
            ..RekeyBatch::default()
        };
        let d = || q("read messages to re-encrypt");
        let mut ids = Vec::with_capacity(rows.len());
        let mut touched = std::collections::HashSet::new();
        for r in &rows {
            let id: String = r.try_get("id").map_err(d())?;
            let body: Vec<u8> = r.try_get("body").map_err(d())?;
            let headers: String = r.try_get("headers").map_err(d())?;
            let last_error: Option<String> = r.try_get("last_error").map_err(d())?;
            let dedup_key: Option<String> = r.try_get("dedup_key").map_err(d())?;
            let dedup_key_sealed: Option<String> = r.try_get("dedup_key_sealed").map_err(d())?;
            out.next = Some(id.clone());
            ids.push(id.clone());
            let key = [("id", Value::Text(id.clone()))];
            let mut n = 0;
            if !c.is_current(&body) {
                let plain = self.plain_bytes(&id, "body", &body)?;
                let sealed = c.seal(&plain, &crate::crypto::Binding::new(&id, "body"));
                // Journal v2 keeps the body in `bodies`, by the message's id.
                n += self
                    .update_guarded(
                        "bodies",
                        "body",
                        Value::Blob(sealed),
                        &key,
                        Value::Blob(body),
                    )
                    .await?;
            }
            let mut map: BTreeMap<String, String> =
                serde_json::from_str(&headers).unwrap_or_default();
            let mut changed = false;
            for (name, v) in map.iter_mut() {
                if CLEAR_HEADERS.contains(&name.as_str()) && !v.starts_with(TEXT_PREFIX) {
                    continue;
                }
                if let Some(new) = self.reseal_text(c, &id, &format!("header/{name}"), v)? {
                    *v = new;
                    changed = true;
                }
            }
            if changed {
                let new = serde_json::to_string(&map).unwrap_or_else(|_| "{}".into());
                n += self
                    .update_guarded(
                        "messages",
                        "headers",
                        Value::Text(new),
                        &key,
                        Value::Text(headers),
                    )
                    .await?;
            }
            if let Some(e) = last_error
                && let Some(new) = self.reseal_text(c, &id, "last_error", &e)?
            {
                n += self
                    .update_guarded(
                        "messages",
                        "last_error",
                        Value::Text(new),
                        &key,
                        Value::Text(e),
                    )
                    .await?;
            }
            match (dedup_key, dedup_key_sealed) {
                (Some(k), _) if !k.starts_with(INDEX_PREFIX) => {
                    // Written in clear: the blind index for lookups, the key sealed for people.
                    let mut u = Sql::new("UPDATE messages SET dedup_key = ".into());
                    u.bind(c.dedup_index(&k));
                    u.push(", dedup_key_sealed = ");
                    u.bind(c.seal_text(&k, &crate::crypto::Binding::new(&id, "dedup_key")));
                    u.push(" WHERE id = ");
                    u.bind(id.clone());
                    u.push(" AND dedup_key = ");
                    u.bind(k);
                    // A row journaled since encryption was turned on may hold the same key,
                    // hashed, and the same body hash: the unique dedup index then refuses, and
                    // this key stays in clear until it expires (it matches no resend either way).
                    match u.query().execute(self.write_pool()).await {
                        Ok(done) => n += done.rows_affected(),
                        Err(e) => {
                            tracing::warn!(message = %id, error = %e, "dedup key left in clear")
                        }
                    }
                }
                (_, Some(sealed)) => {
                    if let Some(new) = self.reseal_text(c, &id, "dedup_key", &sealed)? {
                        n += self
                            .update_guarded(
                                "messages",
                                "dedup_key_sealed",
                                Value::Text(new),
                                &key,
                                Value::Text(sealed),
                            )
                            .await?;
                    }
                }
                _ => {}
            }
            if n > 0 {
                touched.insert(id);
            }
        }
        // The error history of the same messages.
        for chunk in ids.chunks(500) {
            let mut s = Sql::new(
                "SELECT message_id, attempt, at, error FROM message_errors WHERE message_id IN ("
                    .into(),
            );
            for (i, id) in chunk.iter().enumerate() {
                if i > 0 {
                    s.push(", ");
                }
                s.bind(id.as_str());
            }
            s.push(")");
            let rows = s
                .query()
                .fetch_all(&self.read)
                .await
                .map_err(q("read errors to re-encrypt"))?;
            for r in &rows {
                let d = || q("read errors to re-encrypt");
                let id: String = r.try_get("message_id").map_err(d())?;
                let attempt: i64 = r.try_get("attempt").map_err(d())?;
                let at: i64 = r.try_get("at").map_err(d())?;
                let error: String = r.try_get("error").map_err(d())?;
                if let Some(new) = self.reseal_text(c, &id, "error", &error)? {
                    let key = [
                        ("message_id", Value::Text(id.clone())),
                        ("attempt", Value::Int(attempt)),
                        ("at", Value::Int(at)),
                    ];
                    if self
                        .update_guarded(
                            "message_errors",
                            "error",
                            Value::Text(new),
                            &key,
                            Value::Text(error),
                        )
                        .await?
                        > 0
                    {
                        touched.insert(id);
                    }
                }
            }
        }
        out.rewritten = touched.len() as u64;
        Ok(out)
    }

    async fn rekey_effects(
        &self,
        c: &Cipher,
        after: Option<&str>,
        limit: i64,
    ) -> Result<RekeyBatch> {
        let mut s = Sql::new(
            "SELECT message_id, sink, message_id || '/' || sink AS k, body FROM effects WHERE message_id || '/' || sink > "
                .into(),
        );
        s.bind(after.unwrap_or("").to_owned());
        s.push(" ORDER BY message_id || '/' || sink LIMIT ");
        s.bind(limit);
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read effects to re-encrypt"))?;
        let mut out = RekeyBatch {
            scanned: rows.len() as u64,
            ..RekeyBatch::default()
        };
        for r in &rows {
            let d = || q("read effects to re-encrypt");
            let id: String = r.try_get("message_id").map_err(d())?;
            let sink: String = r.try_get("sink").map_err(d())?;
            let k: String = r.try_get("k").map_err(d())?;
            // NULL: a reference to the message's body (journal v2), re-sealed with it.
            let body: Option<Vec<u8>> = r.try_get("body").map_err(d())?;
            out.next = Some(k);
            let Some(body) = body.filter(|b| !c.is_current(b)) else {
                continue;
            };
            let field = format!("effect/{sink}");
            let plain = self.plain_bytes(&id, &field, &body)?;
            let sealed = c.seal(&plain, &crate::crypto::Binding::new(&id, &field));
            let key = [("message_id", Value::Text(id)), ("sink", Value::Text(sink))];
            out.rewritten += self
                .update_guarded(
                    "effects",
                    "body",
                    Value::Blob(sealed),
                    &key,
                    Value::Blob(body),
                )
                .await?;
        }
        Ok(out)
    }
}

/// A value bound to a guarded update.
#[derive(Clone)]
enum Value {
    Text(String),
    Blob(Vec<u8>),
    Int(i64),
}

impl Value {
    fn bind(self, s: &mut Sql) {
        match self {
            Value::Text(v) => s.bind(v),
            Value::Blob(v) => s.bind(v),
            Value::Int(v) => s.bind(v),
        }
    }
}
