//! Settlements and their calls: open (one live saga per consultation), read, the version-guarded
//! save that persists the saga with the call it begins or answers and the ledger entries due, and
//! the runner's lease. See the module docs of [`super`].

use huizhen_domain::billing::{CallRef, LedgerEntry, Phase, Settlement, UsageEntry};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Connection, Row};

use super::{json_err, ms, to_i64};
use crate::store::audit::{self, AuditEvent};
use crate::store::care::{NewOutboxEvent, insert_outbox};
use crate::store::sql::Sql;
use crate::store::{Result, Store, StoreError, q};

/// A settlement as stored.
#[derive(Debug, Clone)]
pub struct StoredSettlement {
    /// The saga.
    pub settlement: Settlement,
    /// The consultation it bills.
    pub consultation_id: String,
    /// 1 for the consultation's first saga, then one more after each abort.
    pub attempt: i64,
    /// When opened (ms).
    pub created_at: i64,
    /// When last written (ms).
    pub updated_at: i64,
}

/// What [`Store::open_settlement`] did.
#[derive(Debug, Clone)]
pub enum Opened {
    /// A new saga.
    New(StoredSettlement),
    /// The consultation already has a live saga (in progress, settled, cancelled or waiting
    /// for a person): this one; nothing was written.
    Existing(StoredSettlement),
}

impl Opened {
    /// The saga, new or existing.
    pub fn stored(&self) -> &StoredSettlement {
        match self {
            Opened::New(s) | Opened::Existing(s) => s,
        }
    }
}

/// The call a save begins or answers.
#[derive(Debug, Clone, Copy)]
pub enum CallWrite<'a> {
    /// The saga begins `call` (persisted before it is sent) with this request body.
    Begin {
        /// The call.
        call: &'a CallRef,
        /// The request as it will be sent (JSON).
        request: &'a str,
    },
    /// The answer of the call `msgid`.
    Answer {
        /// The call's msgid.
        msgid: &'a str,
        /// `ok`, `refused` or `uncertain`.
        outcome: &'a str,
        /// The response as received, if one was.
        response: Option<&'a str>,
    },
}

/// One save of a saga.
#[derive(Debug, Clone, Copy)]
pub struct SettlementChange<'a> {
    /// The saga after the change.
    pub settlement: &'a Settlement,
    /// The version it was decided on.
    pub expected_version: u64,
    /// The call it begins or answers.
    pub call: Option<CallWrite<'a>>,
    /// Ledger entries due now (written once each: an entry already there is kept).
    pub ledger: &'a [LedgerEntry],
    /// The audit event, if the change is audited (opening, confirmation, cancellation).
    pub audit: Option<&'a AuditEvent>,
    /// The change of the patient's year-to-date coverage usage it makes due (a settlement adds,
    /// its refund takes back), written once in the same transaction.
    pub usage: Option<&'a UsageEntry>,
    /// The charge the change announces (`settlement.settled`, `.cancelled`), written to the
    /// outbox in the same transaction: a committed change never loses it, a lost race never
    /// writes it.
    pub outbox: Option<&'a NewOutboxEvent>,
}

/// A stored call.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredCall {
    /// The msgid.
    pub msgid: String,
    /// The transaction.
    pub infno: String,
    /// For 2601: the reversed call.
    pub omsgid: Option<String>,
    /// For 2601: the reversed transaction.
    pub oinfno: Option<String>,
    /// The request as sent.
    pub request: String,
    /// The response as received.
    pub response: Option<String>,
    /// `ok`, `refused`, `uncertain`; none while in flight.
    pub outcome: Option<String>,
    /// When persisted before sending (ms).
    pub sent_at: i64,
    /// When the answer was recorded (ms).
    pub answered_at: Option<i64>,
}

/// A settled saga as the daily reconciliation reads it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SettledRow {
    /// The settlement.
    pub id: String,
    /// The platform's settlement id.
    pub setl_id: Option<String>,
    /// Its phase now.
    pub phase: String,
    /// The total.
    pub total_fen: i64,
    /// What the fund paid.
    pub fund_fen: i64,
    /// What the personal account paid.
    pub account_fen: i64,
    /// What the patient paid in cash.
    pub cash_fen: i64,
    /// When settled (ms).
    pub settled_at: i64,
}

const COLUMNS: &str = "id, consultation_id, attempt, body, created_at, updated_at";

impl Store {
    fn settlement_from_row(&self, r: &AnyRow) -> Result<StoredSettlement> {
        let d = || q("decode settlement");
        let id: String = r.try_get("id").map_err(d())?;
        let body = self.open_text(&id, "settlement", r.try_get("body").map_err(d())?)?;
        let settlement: Settlement =
            serde_json::from_str(&body).map_err(|e| json_err("settlement", &id, &e))?;
        Ok(StoredSettlement {
            settlement,
            consultation_id: r.try_get("consultation_id").map_err(d())?,
            attempt: r.try_get("attempt").map_err(d())?,
            created_at: r.try_get("created_at").map_err(d())?,
            updated_at: r.try_get("updated_at").map_err(d())?,
        })
    }

    /// One settlement.
    pub async fn settlement(&self, id: &str) -> Result<Option<StoredSettlement>> {
        let mut s = Sql::new(format!("SELECT {COLUMNS} FROM settlements WHERE id = "));
        s.bind(id);
        let row = s
            .query()
            .fetch_optional(&self.read)
            .await
            .map_err(q("read settlement"))?;
        row.map(|r| self.settlement_from_row(&r)).transpose()
    }

    /// The consultation's latest settlement.
    pub async fn settlement_of_consultation(
        &self,
        consultation_id: &str,
    ) -> Result<Option<StoredSettlement>> {
        let mut s = Sql::new(format!(
            "SELECT {COLUMNS} FROM settlements WHERE consultation_id = "
        ));
        s.bind(consultation_id);
        s.push(" ORDER BY attempt DESC LIMIT 1");
        let row = s
            .query()
            .fetch_optional(&self.read)
            .await
            .map_err(q("read settlement of consultation"))?;
        row.map(|r| self.settlement_from_row(&r)).transpose()
    }

    /// The ids of sagas with something to send or a call in flight (not at rest), whose lease
    /// is free or ran out at `now_ms`: what a runner resumes after a restart.
    pub async fn settlements_to_resume(&self, now_ms: i64, limit: i64) -> Result<Vec<String>> {
        let mut s = Sql::new(
            "SELECT id FROM settlements WHERE phase IN ('in-progress', 'reversing', 'aborting', 'cancelling') AND (lease_until IS NULL OR lease_until < ".into(),
        );
        s.bind(now_ms);
        s.push(") ORDER BY updated_at LIMIT ");
        s.bind(limit.clamp(1, 10_000));
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("list settlements to resume"))?;
        rows.iter()
            .map(|r| {
                r.try_get::<String, _>("id")
                    .map_err(q("decode settlement id"))
            })
            .collect()
    }

    /// Settlements in `phase`, oldest change first.
    pub async fn settlements_in(&self, phase: Phase, limit: i64) -> Result<Vec<StoredSettlement>> {
        let mut s = Sql::new(format!("SELECT {COLUMNS} FROM settlements WHERE phase = "));
        s.bind(phase.code());
        s.push(" ORDER BY updated_at, id LIMIT ");
        s.bind(limit.clamp(1, 1000));
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("list settlements"))?;
        rows.iter().map(|r| self.settlement_from_row(r)).collect()
    }

    /// Settlements settled in `[from_ms, to_ms)` (also those cancelled since), for the daily
    /// reconciliation.
    pub async fn settled_between(&self, from_ms: i64, to_ms: i64) -> Result<Vec<SettledRow>> {
        let mut s = Sql::new(
            "SELECT id, setl_id, phase, total_fen, fund_fen, account_fen, cash_fen, settled_at FROM settlements WHERE settled_at >= ".into(),
        );
        s.bind(from_ms);
        s.push(" AND settled_at < ");
        s.bind(to_ms);
        s.push(" ORDER BY settled_at, id");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("list settled"))?;
        rows.iter()
            .map(|r| {
                let d = || q("decode settled row");
                Ok(SettledRow {
                    id: r.try_get("id").map_err(d())?,
                    setl_id: r.try_get("setl_id").map_err(d())?,
                    phase: r.try_get("phase").map_err(d())?,
                    total_fen: r.try_get("total_fen").map_err(d())?,
                    fund_fen: r.try_get("fund_fen").map_err(d())?,
                    account_fen: r.try_get("account_fen").map_err(d())?,
                    cash_fen: r.try_get("cash_fen").map_err(d())?,
                    settled_at: r.try_get("settled_at").map_err(d())?,
                })
            })
            .collect()
    }

    /// Opens `settlement` (version 1) for its consultation unless the consultation has a live
    /// saga (any not aborted), which is returned instead. Two concurrent opens make one saga:
    /// the attempt number is unique per consultation, and the loser reads the winner's.
    pub async fn open_settlement(
        &self,
        settlement: &Settlement,
        audit: &AuditEvent,
    ) -> Result<Opened> {
        let cid = settlement.bill.billable.consultation_id.as_str();
        for _ in 0..3 {
            let latest = self.settlement_of_consultation(cid).await?;
            let attempt = match &latest {
                Some(l) if l.settlement.phase() != Phase::Aborted => {
                    return Ok(Opened::Existing(l.clone()));
                }
                Some(l) => l.attempt + 1,
                None => 1,
            };
            let now = crate::message::now_ms();
            let body = serde_json::to_string(settlement)
                .map_err(|e| json_err("encode settlement", &settlement.id, &e))?;
            let body = self.seal_billing(&settlement.id, "settlement", &body);
            let mut conn = self
                .write
                .acquire()
                .await
                .map_err(q("acquire writer connection"))?;
            let mut tx = conn.begin().await.map_err(q("begin open settlement"))?;
            let mut s = Sql::new(
                "INSERT INTO settlements (id, consultation_id, attempt, facility, phase, version, total_fen, body, created_at, updated_at) VALUES (".into(),
            );
            s.bind(settlement.id.as_str());
            s.push(", ");
            s.bind(cid);
            s.push(", ");
            s.bind(attempt);
            s.push(", ");
            s.bind(settlement.facility.as_str());
            s.push(", ");
            s.bind(settlement.phase().code());
            s.push(", ");
            s.bind(to_i64(settlement.version));
            s.push(", ");
            s.bind(settlement.bill.total.0);
            s.push(", ");
            s.bind(body);
            s.push(", ");
            s.bind(now);
            s.push(", ");
            s.bind(now);
            s.push(") ON CONFLICT DO NOTHING");
            let written = exec(&mut tx, s, "insert settlement").await?;
            if written == 0 {
                tx.rollback()
                    .await
                    .map_err(q("roll back open settlement"))?;
                continue;
            }
            audit::append(&mut tx, audit, self.anchor.as_deref()).await?;
            tx.commit().await.map_err(q("commit open settlement"))?;
            let stored = self.settlement(&settlement.id).await?.ok_or_else(|| {
                StoreError::Inconsistent(format!("settlement {} vanished", settlement.id))
            })?;
            return Ok(Opened::New(stored));
        }
        Err(StoreError::Inconsistent(format!(
            "consultation {cid}: three concurrent settlement opens in a row"
        )))
    }

    /// Persists one change of a saga: the row (only if still at `expected_version`), the call
    /// it begins (with its request) or answers, the ledger entries due and the audit event, in
    /// one transaction. `false` when another writer changed the saga meanwhile (nothing is
    /// written): load it again.
    pub async fn save_settlement(&self, change: SettlementChange<'_>) -> Result<bool> {
        let st = change.settlement;
        if st.version <= change.expected_version {
            return Err(StoreError::Inconsistent(format!(
                "settlement {}: version {} after {}",
                st.id, st.version, change.expected_version
            )));
        }
        let now = crate::message::now_ms();
        let body =
            serde_json::to_string(st).map_err(|e| json_err("encode settlement", &st.id, &e))?;
        let body = self.seal_billing(&st.id, "settlement", &body);
        let phase = st.phase();
        let mut conn = self
            .write
            .acquire()
            .await
            .map_err(q("acquire writer connection"))?;
        let mut tx = conn.begin().await.map_err(q("begin settlement change"))?;
        let mut s = Sql::new("UPDATE settlements SET phase = ".into());
        s.bind(phase.code());
        s.push(", version = ");
        s.bind(to_i64(st.version));
        s.push(", body = ");
        s.bind(body);
        s.push(", updated_at = ");
        s.bind(now);
        if let Some(settled) = &st.settled {
            s.push(", setl_id = ");
            s.bind(settled.setl_id.clone());
            s.push(", fund_fen = ");
            s.bind(settled.amounts.fund.0);
            s.push(", account_fen = ");
            s.bind(settled.amounts.account.0);
            s.push(", cash_fen = ");
            s.bind(settled.amounts.cash.0);
            s.push(", settled_at = ");
            s.bind(ms(settled.at));
        }
        s.push(" WHERE id = ");
        s.bind(st.id.as_str());
        s.push(" AND version = ");
        s.bind(to_i64(change.expected_version));
        if exec(&mut tx, s, "update settlement").await? == 0 {
            tx.rollback()
                .await
                .map_err(q("roll back settlement change"))?;
            return Ok(false);
        }
        match change.call {
            Some(CallWrite::Begin { call, request }) => {
                let msgid = call.msgid.as_str();
                let mut s = Sql::new(
                    "INSERT INTO settlement_calls (msgid, settlement_id, infno, omsgid, oinfno, request, sent_at) VALUES (".into(),
                );
                s.bind(msgid);
                s.push(", ");
                s.bind(st.id.as_str());
                s.push(", ");
                s.bind(call.txn.code());
                s.push(", ");
                s.bind(call.reverses.as_ref().map(|r| r.msgid.to_string()));
                s.push(", ");
                s.bind(call.reverses.as_ref().map(|r| r.txn.code().to_owned()));
                s.push(", ");
                s.bind(self.seal_billing(msgid, "request", request));
                s.push(", ");
                s.bind(now);
                s.push(")");
                exec(&mut tx, s, "insert settlement call").await?;
            }
            Some(CallWrite::Answer {
                msgid,
                outcome,
                response,
            }) => {
                let mut s = Sql::new("UPDATE settlement_calls SET outcome = ".into());
                s.bind(outcome);
                s.push(", response = ");
                s.bind(response.map(|r| self.seal_billing(msgid, "response", r)));
                s.push(", answered_at = ");
                s.bind(now);
                s.push(" WHERE msgid = ");
                s.bind(msgid);
                s.push(" AND settlement_id = ");
                s.bind(st.id.as_str());
                s.push(" AND outcome IS NULL");
                if exec(&mut tx, s, "answer settlement call").await? != 1 {
                    tx.rollback()
                        .await
                        .map_err(q("roll back settlement change"))?;
                    return Err(StoreError::Inconsistent(format!(
                        "settlement {}: call {msgid} is not in flight",
                        st.id
                    )));
                }
            }
            None => {}
        }
        for e in change.ledger {
            let mut s = Sql::new(
                "INSERT INTO billing_ledger (settlement_id, kind, agreement, payer, payee, amount_fen, recorded_at) VALUES (".into(),
            );
            s.bind(e.settlement_id.as_str());
            for v in [e.kind.code(), &e.agreement, &e.payer, &e.payee] {
                s.push(", ");
                s.bind(v);
            }
            s.push(", ");
            s.bind(e.amount.0);
            s.push(", ");
            s.bind(now);
            s.push(") ON CONFLICT (settlement_id, kind) DO NOTHING");
            exec(&mut tx, s, "append ledger entry").await?;
        }
        if let Some(e) = change.usage {
            super::usage::insert_usage(&mut tx, e, now).await?;
        }
        if let Some(e) = change.outbox {
            insert_outbox(&mut tx, self, e).await?;
        }
        if let Some(a) = change.audit {
            audit::append(&mut tx, a, self.anchor.as_deref()).await?;
        }
        tx.commit().await.map_err(q("commit settlement change"))?;
        Ok(true)
    }

    /// Every call of a settlement, in the order sent.
    pub async fn settlement_calls(&self, settlement_id: &str) -> Result<Vec<StoredCall>> {
        let mut s = Sql::new(
            "SELECT msgid, infno, omsgid, oinfno, request, response, outcome, sent_at, answered_at FROM settlement_calls WHERE settlement_id = ".into(),
        );
        s.bind(settlement_id);
        s.push(" ORDER BY sent_at, msgid");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read settlement calls"))?;
        rows.iter()
            .map(|r| {
                let d = || q("decode settlement call");
                let msgid: String = r.try_get("msgid").map_err(d())?;
                let request =
                    self.open_text(&msgid, "request", r.try_get("request").map_err(d())?)?;
                let response = r
                    .try_get::<Option<String>, _>("response")
                    .map_err(d())?
                    .map(|x| self.open_text(&msgid, "response", x))
                    .transpose()?;
                Ok(StoredCall {
                    infno: r.try_get("infno").map_err(d())?,
                    omsgid: r.try_get("omsgid").map_err(d())?,
                    oinfno: r.try_get("oinfno").map_err(d())?,
                    request,
                    response,
                    outcome: r.try_get("outcome").map_err(d())?,
                    sent_at: r.try_get("sent_at").map_err(d())?,
                    answered_at: r.try_get("answered_at").map_err(d())?,
                    msgid,
                })
            })
            .collect()
    }

    /// Takes (or renews) the runner's lease on a saga until `until_ms`: `false` when another
    /// runner holds a lease that has not run out at `now_ms`.
    pub async fn lease_settlement(
        &self,
        id: &str,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool> {
        let mut s = Sql::new("UPDATE settlements SET lease_owner = ".into());
        s.bind(owner);
        s.push(", lease_until = ");
        s.bind(until_ms);
        s.push(" WHERE id = ");
        s.bind(id);
        s.push(" AND (lease_until IS NULL OR lease_until < ");
        s.bind(now_ms);
        s.push(" OR lease_owner = ");
        s.bind(owner);
        s.push(")");
        let n = s
            .query()
            .execute(&self.write)
            .await
            .map_err(q("lease settlement"))?
            .rows_affected();
        Ok(n == 1)
    }

    /// Gives the lease back (only the holder's).
    pub async fn release_settlement(&self, id: &str, owner: &str) -> Result<()> {
        let mut s = Sql::new(
            "UPDATE settlements SET lease_owner = NULL, lease_until = NULL WHERE id = ".into(),
        );
        s.bind(id);
        s.push(" AND lease_owner = ");
        s.bind(owner);
        s.query()
            .execute(&self.write)
            .await
            .map_err(q("release settlement"))?;
        Ok(())
    }
}

pub(super) async fn exec(conn: &mut AnyConnection, s: Sql, op: &'static str) -> Result<u64> {
    Ok(s.query()
        .execute(&mut *conn)
        .await
        .map_err(q(op))?
        .rows_affected())
}
