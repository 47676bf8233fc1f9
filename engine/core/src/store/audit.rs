//! The audit trail (STANDARDS IHE-05, CN-31): an append-only table where every row carries the
//! hash of the one before it, and the API keys of system-to-system senders (stored hashed).
//!
//! A row's hash is SHA-256 over the previous row's hash and the row's own fields (as a JSON
//! array, which is unambiguous). [`Store::verify_audit`] recomputes the chain and names the first
//! row that was changed, removed or moved. Appending updates the one-row `audit_head` first,
//! which takes the database's write lock (SQLite) or the row lock (PostgreSQL), so concurrent
//! appenders are serialised and the chain has no forks. [`append`] runs on a connection the
//! caller may have in a transaction, so an audited change and its audit row commit together.
//!
//! The chain alone has no key; [`super::anchor`] anchors it outside the database (row MACs
//! with the audit key, signed checkpoints in a file), and [`Store::verify_audit`] checks both.

use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Connection, Row};

use std::path::PathBuf;

use super::anchor::{AnchorReport, AuditAnchor, RowMac, read_checkpoints};
use super::sql::Sql;
use super::{Result, Store, StoreError, q};
use crate::message::now_ms;

/// One audited action.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditEvent {
    /// Who: the token's subject or the API key's owner; `anonymous` for failed logins.
    pub actor: String,
    pub role: String,
    pub facility: String,
    /// What, e.g. `message.read`, `message.reprocess`, `login.failed`.
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    /// `success`, `denied` or `failed`.
    pub outcome: String,
    /// Where from: the client's address, or `cli`.
    pub source: String,
    /// Why (the `X-Purpose-Of-Use` header), empty if not given.
    pub purpose: String,
    /// Anything else worth keeping (the query of a list, the reason of a denial).
    pub detail: String,
    /// The facility the resource belongs to (a message's facility), empty when it has none.
    /// Auditors of that facility see the event even when the actor is of another facility.
    #[serde(default)]
    pub subject_facility: String,
}

impl AuditEvent {
    /// The same event, about a resource of `facility`.
    pub fn about(mut self, facility: &str) -> AuditEvent {
        facility.clone_into(&mut self.subject_facility);
        self
    }
}

/// An audit row as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditRow {
    pub seq: i64,
    pub at: i64,
    #[serde(flatten)]
    pub event: AuditEvent,
    pub prev_hash: String,
    pub hash: String,
    /// `KID:HMAC` of the hash with the audit key; empty for rows written without the key.
    pub mac: String,
}

/// The hash of a row: over the previous hash and the row's fields. The subject facility (added
/// later) is hashed only when set, so rows written before it keep their hashes.
pub fn chain_hash(prev_hash: &str, seq: i64, at: i64, e: &AuditEvent) -> String {
    let mut fields = serde_json::json!([
        seq,
        at,
        e.actor,
        e.role,
        e.facility,
        e.action,
        e.resource_type,
        e.resource_id,
        e.outcome,
        e.source,
        e.purpose,
        e.detail
    ]);
    if !e.subject_facility.is_empty()
        && let Some(a) = fields.as_array_mut()
    {
        a.push(e.subject_facility.clone().into());
    }
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(fields.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// Appends an event on `conn` (which may be in a transaction), signed with the anchor's key if
/// there is one. Returns its sequence number.
pub async fn append(
    conn: &mut AnyConnection,
    e: &AuditEvent,
    anchor: Option<&AuditAnchor>,
) -> Result<i64> {
    let row = sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash")
        .fetch_one(&mut *conn)
        .await
        .map_err(q("advance the audit chain"))?;
    let seq: i64 = row.try_get("seq").map_err(q("advance the audit chain"))?;
    let prev: String = row.try_get("hash").map_err(q("advance the audit chain"))?;
    let at = now_ms();
    let hash = chain_hash(&prev, seq, at, e);
    let mac = anchor
        .and_then(AuditAnchor::key)
        .map(|k| k.row_mac(&hash))
        .unwrap_or_default();
    let mut s = Sql::new("INSERT INTO audit_events (seq, at, actor, role, facility, action, resource_type, resource_id, outcome, source, purpose, detail, prev_hash, hash, subject_facility, mac) VALUES (".into());
    s.bind(seq);
    s.push(", ");
    s.bind(at);
    for v in [
        &e.actor,
        &e.role,
        &e.facility,
        &e.action,
        &e.resource_type,
        &e.resource_id,
        &e.outcome,
        &e.source,
        &e.purpose,
        &e.detail,
        &prev,
        &hash,
        &e.subject_facility,
        &mac,
    ] {
        s.push(", ");
        s.bind(v.clone());
    }
    s.push(")");
    s.query()
        .execute(&mut *conn)
        .await
        .map_err(q("append an audit event"))?;
    let mut u = Sql::new("UPDATE audit_head SET hash = ".into());
    u.bind(hash);
    u.push(" WHERE id = 1");
    u.query()
        .execute(&mut *conn)
        .await
        .map_err(q("advance the audit chain"))?;
    if let Some(a) = anchor {
        a.appended();
    }
    Ok(seq)
}

/// What `verify_audit` found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditReport {
    pub rows: u64,
    pub last_seq: i64,
    /// Every problem, the first one first; empty when the chain is intact.
    pub problems: Vec<String>,
    /// How the chain is anchored outside the database: checkpoints and row MACs.
    pub anchor: AnchorReport,
    /// What could not be checked, and why (no key, no checkpoints yet); not problems.
    pub notes: Vec<String>,
}

/// Filters for listing audit events.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub resource_id: Option<String>,
    /// Continue after this sequence number (ascending order).
    pub after: Option<i64>,
    pub limit: Option<i64>,
    /// Only events by an actor of, or about a resource of, these facilities (the caller's
    /// scope); `None` for all.
    pub facilities: Option<Vec<String>>,
    /// Only events before this sequence number (paging back from the newest).
    pub before: Option<i64>,
    /// Only events at or after / before these times (unix ms).
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Only events with this outcome (`success`, `denied`, `failed`).
    pub outcome: Option<String>,
    /// Newest first (the console's viewer) instead of in sequence order.
    pub newest_first: bool,
}

pub(crate) const AUDIT_COLUMNS: &str = "seq, at, actor, role, facility, action, resource_type, resource_id, outcome, source, purpose, detail, prev_hash, hash, subject_facility, mac";

pub(crate) fn audit_row(r: &sqlx::any::AnyRow) -> Result<AuditRow> {
    let d = q("decode audit event");
    let t = |c: &str| r.try_get::<String, _>(c);
    Ok(AuditRow {
        seq: r.try_get("seq").map_err(d)?,
        at: r.try_get("at").map_err(q("decode audit event"))?,
        event: AuditEvent {
            actor: t("actor").map_err(q("decode audit event"))?,
            role: t("role").map_err(q("decode audit event"))?,
            facility: t("facility").map_err(q("decode audit event"))?,
            action: t("action").map_err(q("decode audit event"))?,
            resource_type: t("resource_type").map_err(q("decode audit event"))?,
            resource_id: t("resource_id").map_err(q("decode audit event"))?,
            outcome: t("outcome").map_err(q("decode audit event"))?,
            source: t("source").map_err(q("decode audit event"))?,
            purpose: t("purpose").map_err(q("decode audit event"))?,
            detail: t("detail").map_err(q("decode audit event"))?,
            subject_facility: t("subject_facility").map_err(q("decode audit event"))?,
        },
        prev_hash: t("prev_hash").map_err(q("decode audit event"))?,
        hash: t("hash").map_err(q("decode audit event"))?,
        mac: t("mac").map_err(q("decode audit event"))?,
    })
}

/// An API key as stored (the secret itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiKeyRow {
    pub id: String,
    #[serde(skip)]
    pub hash: String,
    pub sub: String,
    pub role: String,
    pub facility: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

impl Store {
    /// Records one event in its own transaction.
    pub async fn audit(&self, e: &AuditEvent) -> Result<i64> {
        let mut conn = self
            .write_pool()
            .acquire()
            .await
            .map_err(q("acquire a connection for the audit trail"))?;
        let mut tx = conn.begin().await.map_err(q("begin audit"))?;
        let seq = append(&mut tx, e, self.anchor.as_deref()).await?;
        tx.commit().await.map_err(q("commit audit"))?;
        Ok(seq)
    }

    /// Audit events in order, oldest first.
    pub async fn audit_events(&self, f: &AuditFilter) -> Result<Vec<AuditRow>> {
        let mut s = Sql::new(format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE seq > "
        ));
        s.bind(f.after.unwrap_or(0));
        if let Some(b) = f.before {
            s.push(" AND seq < ");
            s.bind(b);
        }
        if let Some(t) = f.since {
            s.push(" AND at >= ");
            s.bind(t);
        }
        if let Some(t) = f.until {
            s.push(" AND at < ");
            s.bind(t);
        }
        for (col, v) in [
            ("actor", &f.actor),
            ("action", &f.action),
            ("resource_id", &f.resource_id),
            ("outcome", &f.outcome),
        ] {
            if let Some(v) = v {
                s.push(&format!(" AND {col} = "));
                s.bind(v.clone());
            }
        }
        if let Some(fs) = &f.facilities {
            if fs.is_empty() {
                s.push(" AND 1=0");
            } else {
                for (n, col) in ["facility", "subject_facility"].iter().enumerate() {
                    s.push(if n == 0 { " AND (" } else { " OR " });
                    s.push(&format!("{col} IN ("));
                    for (i, fac) in fs.iter().enumerate() {
                        if i > 0 {
                            s.push(", ");
                        }
                        s.bind(fac.clone());
                    }
                    s.push(")");
                }
                s.push(")");
            }
        }
        s.push(if f.newest_first {
            " ORDER BY seq DESC LIMIT "
        } else {
            " ORDER BY seq LIMIT "
        });
        s.bind(f.limit.unwrap_or(100).clamp(1, 10_000));
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("list audit events"))?;
        rows.iter().map(audit_row).collect()
    }

    /// [`Store::verify_audit_with`] with this store's own checkpoint file only.
    pub async fn verify_audit(&self) -> Result<AuditReport> {
        self.verify_audit_with(&[]).await
    }

    /// Recomputes the audit chain: every row's hash from its content and the previous hash, the
    /// sequence without gaps, and the head matching the last row. Then the anchor: every row
    /// after the first signed one carries a valid MAC of the audit key, and every checkpoint (of
    /// this store's checkpoint file and of `more_checkpoints`, e.g. other nodes' files) is signed
    /// and names a row that exists with that hash. Names each row and checkpoint at fault.
    pub async fn verify_audit_with(&self, more_checkpoints: &[PathBuf]) -> Result<AuditReport> {
        let (head_seq, head_hash) = self.audit_head().await?;
        let mut report = AuditReport {
            rows: 0,
            last_seq: 0,
            problems: Vec::new(),
            anchor: AnchorReport::default(),
            notes: Vec::new(),
        };
        let anchor = self.anchor.as_deref();
        let key = anchor.and_then(AuditAnchor::key);
        report.anchor.key = key.map(|k| k.kid().to_owned());
        let mut files: Vec<PathBuf> = anchor
            .map(|a| a.config().checkpoint_file.clone())
            .into_iter()
            .collect();
        files.extend(more_checkpoints.iter().cloned());
        files.dedup();
        // Every signed checkpoint, by the row it vouches for.
        let mut checkpoints = Vec::new();
        for f in &files {
            report.anchor.files.push(f.display().to_string());
            let (found, bad) = read_checkpoints(f).map_err(|e| {
                StoreError::Inconsistent(format!("{}: cannot read checkpoints: {e}", f.display()))
            })?;
            report.problems.extend(bad);
            if found.is_empty() {
                report.notes.push(format!(
                    "{}: no checkpoints (the engine writes them; see security.audit)",
                    f.display()
                ));
            }
            for c in found {
                match key {
                    Some(k) if !k.check_checkpoint(&c.checkpoint) => report.problems.push(format!(
                        "{}:{}: the checkpoint's MAC does not match the audit key (forged, or written with another key {})",
                        c.file.display(),
                        c.line,
                        c.checkpoint.kid
                    )),
                    _ => checkpoints.push(c),
                }
            }
        }
        if key.is_none() {
            report.notes.push(match anchor {
                Some(a) => format!(
                    "no audit key at {}: row MACs and checkpoint signatures not checked",
                    a.config().key_file.display()
                ),
                None => "no audit key: row MACs and checkpoint signatures not checked".into(),
            });
        }
        checkpoints.sort_by_key(|c| c.checkpoint.seq);
        report.anchor.checkpoints = checkpoints.len() as u64;
        if let Some(c) = checkpoints.last() {
            report.anchor.latest_seq = c.checkpoint.seq;
            report.anchor.latest_at = Some(c.checkpoint.at);
            report.anchor.latest_node = Some(c.checkpoint.node.clone());
        }
        let mut next_cp = 0usize;
        let mut disagree: Vec<String> = Vec::new();
        // Rows need a MAC after the first one that has one, and after the first checkpoint the
        // key signed (the engine signs every row once it has the key, and it has the key before
        // its first checkpoint): so stripping every MAC does not turn rows into "legacy" ones.
        let mut first_keyed: Option<i64> = None;
        let keyed_from = checkpoints.first().map(|c| c.checkpoint.seq);

        let mut prev_hash = "genesis".to_owned();
        let mut expected_seq = 1i64;
        let mut after = 0i64;
        loop {
            let page = self
                .audit_events(&AuditFilter {
                    after: Some(after),
                    limit: Some(5000),
                    ..AuditFilter::default()
                })
                .await?;
            if page.is_empty() {
                break;
            }
            for row in &page {
                report.rows += 1;
                if row.seq != expected_seq {
                    report.problems.push(if row.seq > expected_seq {
                        format!(
                            "audit rows {expected_seq}..{} are missing (deleted)",
                            row.seq - 1
                        )
                    } else {
                        format!("audit row {} is out of order", row.seq)
                    });
                }
                if row.prev_hash != prev_hash {
                    report.problems.push(format!(
                        "audit row {}: it does not follow the row before it (a row was removed, inserted or moved before it)",
                        row.seq
                    ));
                }
                let recomputed = chain_hash(&row.prev_hash, row.seq, row.at, &row.event);
                if recomputed != row.hash {
                    report.problems.push(format!(
                        "audit row {}: its content does not match its hash (changed after it was written)",
                        row.seq
                    ));
                }
                if let Some(k) = key {
                    match k.check_row(&row.hash, &row.mac) {
                        RowMac::Valid => {
                            report.anchor.keyed_rows += 1;
                            first_keyed.get_or_insert(row.seq);
                        }
                        RowMac::Missing
                            if first_keyed.is_none()
                                && keyed_from.is_none_or(|k| row.seq <= k) =>
                        {
                            report.anchor.unkeyed_rows += 1
                        }
                        RowMac::Missing => report.problems.push(format!(
                            "audit row {}: it has no MAC, written after the audit key was in use (added outside the engine, or its MAC removed)",
                            row.seq
                        )),
                        RowMac::OtherKey(kid) => report.problems.push(format!(
                            "audit row {}: signed with audit key {kid}, not {} (forged, or written by a process with another key file)",
                            row.seq,
                            k.kid()
                        )),
                        RowMac::Invalid => report.problems.push(format!(
                            "audit row {}: its MAC does not match (forged: added or rewritten without the audit key)",
                            row.seq
                        )),
                    }
                }
                // Checkpoints at or before this row: theirs must be this row (or a row that
                // was there).
                while let Some(c) = checkpoints
                    .get(next_cp)
                    .filter(|c| c.checkpoint.seq <= row.seq)
                {
                    let c = &c.checkpoint;
                    let at = &checkpoints[next_cp];
                    if c.seq < row.seq {
                        disagree.push(format!(
                            "audit row {} is missing but the checkpoint of {} ({}:{}) vouches for it",
                            c.seq,
                            crate::message::format_ms(c.at),
                            at.file.display(),
                            at.line
                        ));
                    } else if c.hash != row.hash {
                        disagree.push(format!(
                            "audit row {} is not the row the checkpoint of {} ({}:{}) vouches for: the trail was rewritten up to there",
                            c.seq,
                            crate::message::format_ms(c.at),
                            at.file.display(),
                            at.line
                        ));
                    }
                    next_cp += 1;
                }
                prev_hash.clone_from(&row.hash);
                expected_seq = row.seq + 1;
                report.last_seq = row.seq;
            }
            after = report.last_seq;
        }
        if head_seq != report.last_seq {
            report.problems.push(if head_seq > report.last_seq {
                format!(
                    "audit rows {}..{head_seq} are missing at the end (deleted)",
                    report.last_seq + 1
                )
            } else {
                format!(
                    "the audit head is at row {head_seq} but rows go to {} (rows added outside the engine)",
                    report.last_seq
                )
            });
        } else if head_hash != prev_hash {
            report.problems.push(format!(
                "audit row {}: the last row is not the one the engine wrote",
                report.last_seq
            ));
        }
        // Checkpoints beyond the last row: the tail was cut (or the table emptied).
        if let Some(c) = checkpoints
            .last()
            .filter(|c| c.checkpoint.seq > report.last_seq)
        {
            report.problems.push(format!(
                "the audit trail ends at row {} but the checkpoint of {} ({}:{}) vouches for row {}: rows {}..{} were cut (or the table emptied)",
                report.last_seq,
                crate::message::format_ms(c.checkpoint.at),
                c.file.display(),
                c.line,
                c.checkpoint.seq,
                report.last_seq + 1,
                c.checkpoint.seq
            ));
        }
        disagree.dedup();
        let more = disagree.len().saturating_sub(3);
        report.problems.extend(disagree.into_iter().take(3));
        if more > 0 {
            report.problems.push(format!(
                "… and {more} more checkpoints disagree with the trail"
            ));
        }
        if report.anchor.unkeyed_rows > 0 {
            report.notes.push(format!(
                "audit rows 1..{} have no MAC (written before the audit key existed or without it)",
                report.anchor.unkeyed_rows
            ));
        }
        if checkpoints.is_empty() && report.rows > 0 {
            report
                .notes
                .push("no checkpoint anchors the trail: a cut of its tail would go unseen".into());
        }
        Ok(report)
    }

    /// Stores a new API key (its hash) for `sub`.
    pub async fn create_api_key(&self, k: &ApiKeyRow) -> Result<()> {
        let mut s = Sql::new(
            "INSERT INTO api_keys (id, hash, sub, role, facility, created_at) VALUES (".into(),
        );
        s.bind(k.id.clone());
        for v in [&k.hash, &k.sub, &k.role, &k.facility] {
            s.push(", ");
            s.bind(v.clone());
        }
        s.push(", ");
        s.bind(k.created_at);
        s.push(")");
        s.query()
            .execute(self.write_pool())
            .await
            .map_err(q("store an API key"))?;
        Ok(())
    }

    /// An API key by id (revoked ones too: the caller checks).
    pub async fn api_key(&self, id: &str) -> Result<Option<ApiKeyRow>> {
        let mut s = Sql::new(
            "SELECT id, hash, sub, role, facility, created_at, revoked_at FROM api_keys WHERE id = "
                .into(),
        );
        s.bind(id.to_owned());
        let row = s
            .query()
            .fetch_optional(&self.read)
            .await
            .map_err(q("look up an API key"))?;
        let Some(r) = row else {
            return Ok(None);
        };
        let d = || q("decode an API key");
        Ok(Some(ApiKeyRow {
            id: r.try_get("id").map_err(d())?,
            hash: r.try_get("hash").map_err(d())?,
            sub: r.try_get("sub").map_err(d())?,
            role: r.try_get("role").map_err(d())?,
            facility: r.try_get("facility").map_err(d())?,
            created_at: r.try_get("created_at").map_err(d())?,
            revoked_at: r.try_get("revoked_at").map_err(d())?,
        }))
    }

    /// Revokes an API key; `NotFound` if there is none with that id.
    pub async fn revoke_api_key(&self, id: &str) -> Result<()> {
        let mut s = Sql::new("UPDATE api_keys SET revoked_at = ".into());
        s.bind(now_ms());
        s.push(" WHERE revoked_at IS NULL AND id = ");
        s.bind(id.to_owned());
        let r = s
            .query()
            .execute(self.write_pool())
            .await
            .map_err(q("revoke an API key"))?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(id.to_owned()));
        }
        Ok(())
    }
}
