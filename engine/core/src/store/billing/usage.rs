//! The patient's year-to-date coverage usage (migration 0019, `coverage_usage`): one entry per
//! settlement and kind, written by [`Store::save_settlement`] in the saga change's own
//! transaction; the year's usage is the sum of its entries (the domain's
//! `billing::usage::year_to_date`).

use huizhen_domain::billing::{Fen, UsageEntry, UsageKind, YearToDate, year_to_date};
use huizhen_domain::identity::PersonId;
use sqlx::{AnyConnection, Row};

use crate::store::sql::Sql;
use crate::store::{Result, Store, StoreError, q};

/// Writes `e` once (an entry already there for its settlement and kind is kept).
pub(super) async fn insert_usage(tx: &mut AnyConnection, e: &UsageEntry, now: i64) -> Result<()> {
    let mut s = Sql::new(
        "INSERT INTO coverage_usage (settlement_id, kind, patient, insurance_year, covered_fen, deductible_fen, recorded_at) VALUES (".into(),
    );
    s.bind(e.settlement_id.as_str());
    s.push(", ");
    s.bind(e.kind.code());
    s.push(", ");
    s.bind(e.patient.to_string());
    s.push(", ");
    s.bind(e.year);
    s.push(", ");
    s.bind(e.covered.0);
    s.push(", ");
    s.bind(e.deductible_met.0);
    s.push(", ");
    s.bind(now);
    s.push(") ON CONFLICT (settlement_id, kind) DO NOTHING");
    s.query()
        .execute(&mut *tx)
        .await
        .map_err(q("append coverage usage"))?;
    Ok(())
}

impl Store {
    /// The usage entries of a patient's insurance year, in the order recorded.
    pub async fn coverage_usage(&self, patient: PersonId, year: i32) -> Result<Vec<UsageEntry>> {
        let mut s = Sql::new(
            "SELECT settlement_id, kind, insurance_year, covered_fen, deductible_fen FROM coverage_usage WHERE patient = ".into(),
        );
        s.bind(patient.to_string());
        s.push(" AND insurance_year = ");
        s.bind(year);
        s.push(" ORDER BY recorded_at, settlement_id, kind DESC");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read coverage usage"))?;
        rows.iter()
            .map(|r| {
                let d = || q("decode coverage usage");
                let kind: String = r.try_get("kind").map_err(d())?;
                let year: i32 = r.try_get("insurance_year").map_err(d())?;
                Ok(UsageEntry {
                    settlement_id: r.try_get("settlement_id").map_err(d())?,
                    kind: match kind.as_str() {
                        "settled" => UsageKind::Settled,
                        "refunded" => UsageKind::Refunded,
                        other => {
                            return Err(StoreError::Inconsistent(format!(
                                "coverage usage kind {other:?}"
                            )));
                        }
                    },
                    patient,
                    year,
                    covered: Fen(r.try_get("covered_fen").map_err(d())?),
                    deductible_met: Fen(r.try_get("deductible_fen").map_err(d())?),
                })
            })
            .collect()
    }

    /// What a patient has used of an insurance year: covered so far, deductible met so far.
    pub async fn year_to_date(&self, patient: PersonId, year: i32) -> Result<YearToDate> {
        Ok(year_to_date(&self.coverage_usage(patient, year).await?))
    }
}
