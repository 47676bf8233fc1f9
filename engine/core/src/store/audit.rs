//! The audit trail (STANDARDS IHE-05, CN-31): an append-only table where every row carries the
//! hash of the one before it, and the API keys of system-to-system senders (stored hashed).
//!
//! A row's hash is SHA-256 over the previous row's hash and the row's own fields (as a JSON
//! array, which is unambiguous). [`Store::verify_audit`] recomputes the chain and names the first
//! row that was changed, removed or moved. Appending updates the one-row `audit_head` first,
//! which takes the database's write lock (SQLite) or the row lock (PostgreSQL), so concurrent
//! appenders are serialised and the chain has no forks. [`append`] runs on a connection the
//! caller may have in a transaction, so an audited change and its audit row commit together.

use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Connection, Row};

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
}

/// The hash of a row: over the previous hash and the row's fields.
pub fn chain_hash(prev_hash: &str, seq: i64, at: i64, e: &AuditEvent) -> String {
    let fields = serde_json::json!([
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
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(fields.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// Appends an event on `conn` (which may be in a transaction). Returns its sequence number.
pub async fn append(conn: &mut AnyConnection, e: &AuditEvent) -> Result<i64> {
    let row = sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash")
        .fetch_one(&mut *conn)
        .await
        .map_err(q("advance the audit chain"))?;
    let seq: i64 = row.try_get("seq").map_err(q("advance the audit chain"))?;
    let prev: String = row.try_get("hash").map_err(q("advance the audit chain"))?;
    let at = now_ms();
    let hash = chain_hash(&prev, seq, at, e);
    let mut s = Sql::new("INSERT INTO audit_events (seq, at, actor, role, facility, action, resource_type, resource_id, outcome, source, purpose, detail, prev_hash, hash) VALUES (".into());
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
    Ok(seq)
}

/// What `verify_audit` found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditReport {
    pub rows: u64,
    pub last_seq: i64,
    /// Every problem, the first one first; empty when the chain is intact.
    pub problems: Vec<String>,
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
}

const AUDIT_COLUMNS: &str = "seq, at, actor, role, facility, action, resource_type, resource_id, outcome, source, purpose, detail, prev_hash, hash";

fn audit_row(r: &sqlx::any::AnyRow) -> Result<AuditRow> {
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
        },
        prev_hash: t("prev_hash").map_err(q("decode audit event"))?,
        hash: t("hash").map_err(q("decode audit event"))?,
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
        let seq = append(&mut tx, e).await?;
        tx.commit().await.map_err(q("commit audit"))?;
        Ok(seq)
    }

    /// Audit events in order, oldest first.
    pub async fn audit_events(&self, f: &AuditFilter) -> Result<Vec<AuditRow>> {
        let mut s = Sql::new(format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_events WHERE seq > "
        ));
        s.bind(f.after.unwrap_or(0));
        for (col, v) in [
            ("actor", &f.actor),
            ("action", &f.action),
            ("resource_id", &f.resource_id),
        ] {
            if let Some(v) = v {
                s.push(&format!(" AND {col} = "));
                s.bind(v.clone());
            }
        }
        s.push(" ORDER BY seq LIMIT ");
        s.bind(f.limit.unwrap_or(100).clamp(1, 10_000));
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("list audit events"))?;
        rows.iter().map(audit_row).collect()
    }

    /// Recomputes the audit chain: every row's hash from its content and the previous hash, the
    /// sequence without gaps, and the head matching the last row. Names each row at fault.
    pub async fn verify_audit(&self) -> Result<AuditReport> {
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(&self.read)
            .await
            .map_err(q("read the audit head"))?;
        let head_seq: i64 = head.try_get("seq").map_err(q("read the audit head"))?;
        let head_hash: String = head.try_get("hash").map_err(q("read the audit head"))?;
        let mut report = AuditReport {
            rows: 0,
            last_seq: 0,
            problems: Vec::new(),
        };
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
