//! The daily reconciliation (CN-62: 3201/3202): the settlements of one local day against the
//! platform's statement file, as a report of what does not agree (the domain's
//! `billing::reconcile`), kept per day and shown by the API.
//!
//! On `billing.reconciliation.schedule` (cron, the engine's clock) the job reads the statement
//! of the day before the tick from `statements/<yyyymmdd>.csv` (how the file gets there is the
//! site's: the platform's download, an SFTP drop); `POST /api/billing/reconciliation/{day}`
//! runs it with a statement in the request.
//!
//! ```yaml
//! billing:
//!   reconciliation:
//!     schedule: "0 30 1 * * *"       # 01:30 UTC every day
//!     statements: billing/statements/
//! ```

use std::path::PathBuf;

use chrono::{DateTime, Days, NaiveDate, Utc};
use huizhen_domain::billing::reconcile::{LocalRow, Report, parse_statement, reconcile};
use huizhen_domain::billing::{Fen, Phase};
use serde::Deserialize;

use super::{Billing, BillingError};

/// `billing.reconciliation`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconciliationConfig {
    /// When (cron, seconds first, UTC).
    pub schedule: String,
    /// Where the statement files are (`<yyyymmdd>.csv`, relative to the root file).
    pub statements: PathBuf,
}

/// The schedule and folder, checked.
#[derive(Debug, Clone)]
pub struct Reconciliation {
    /// When.
    pub schedule: cron::Schedule,
    /// Where the statements are.
    pub statements: PathBuf,
}

impl Billing {
    /// The `[start, end)` of a local day in ms.
    fn day_range(&self, day: NaiveDate) -> (i64, i64) {
        let offset = self.settings().offset;
        let start = |d: NaiveDate| {
            d.and_hms_opt(0, 0, 0)
                .and_then(|t| t.and_local_timezone(offset).single())
                .map_or(0, |t| t.timestamp_millis())
        };
        let next = day.checked_add_days(Days::new(1)).unwrap_or(day);
        (start(day), start(next))
    }

    /// Reconciles the local day `day` against `statement` (CSV; `file` names it in problems
    /// and in the report's record) and keeps the report.
    pub async fn reconcile_day(
        &self,
        day: NaiveDate,
        file: &str,
        statement: &str,
    ) -> Result<Report, BillingError> {
        let rows = parse_statement(file, statement).map_err(BillingError::Statement)?;
        let (from, to) = self.day_range(day);
        let local: Vec<LocalRow> = self
            .store()
            .settled_between(from, to)
            .await?
            .into_iter()
            .map(|r| LocalRow {
                revoked: matches!(
                    Phase::code_parse(&r.phase),
                    Some(Phase::Cancelled | Phase::Cancelling)
                ),
                settlement_id: r.id,
                setl_id: r.setl_id,
                amounts: [
                    Fen(r.total_fen),
                    Fen(r.fund_fen),
                    Fen(r.account_fen),
                    Fen(r.cash_fen),
                ],
            })
            .collect();
        let report = reconcile(&local, &rows);
        let body = serde_json::to_string(&report).map_err(|e| {
            BillingError::Store(crate::store::StoreError::Inconsistent(format!(
                "reconciliation report: {e}"
            )))
        })?;
        self.store()
            .save_reconciliation(&day.to_string(), file, &body)
            .await?;
        if report.discrepancies.is_empty() {
            tracing::info!(%day, matched = report.matched, "reconciliation: the day balances");
        } else {
            tracing::warn!(%day, discrepancies = report.discrepancies.len(), "reconciliation: the day does not balance");
        }
        Ok(report)
    }

    /// The scheduled run at `tick`: the day before the tick (local), from its statement file.
    pub(super) async fn reconcile_tick(&self, r: &Reconciliation, tick: DateTime<Utc>) {
        let local = tick.with_timezone(&self.settings().offset).date_naive();
        let Some(day) = local.checked_sub_days(Days::new(1)) else {
            return;
        };
        let file = r.statements.join(format!("{}.csv", day.format("%Y%m%d")));
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(%day, file = %file.display(), error = %e, "reconciliation: no statement for the day");
                return;
            }
        };
        if let Err(e) = self
            .reconcile_day(day, &file.display().to_string(), &text)
            .await
        {
            tracing::warn!(%day, error = %e, "reconciliation failed");
        }
    }
}
