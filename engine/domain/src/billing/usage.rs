//! The patient's year-to-date coverage usage (issue 19 item 2): what insurance has paid and
//! what of the deductible the patient has met, per insurance year. The store keeps one entry
//! per settlement and kind, written in the same transaction as the saga change that makes it
//! due ([`usage_change`]): a settlement adds what the fund paid and the deductible its estimate
//! met; its refund (a cancellation after settlement) takes the same back. A settlement that
//! never settled (aborted, or a 2207 reversed by 2601) adds nothing. The year's usage is the
//! sum of its entries, so a coverage policy sees the annual limit and the deductible left.

use chrono::{Datelike, FixedOffset};
use serde::{Deserialize, Serialize};

use super::coverage::YearToDate;
use super::money::Fen;
use super::saga::{Kind, Phase, Settlement};
use crate::identity::PersonId;

/// Whether an entry adds (a settlement) or takes back (its refund).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UsageKind {
    /// The settlement's use of the year.
    Settled,
    /// Its refund: the same, taken back.
    Refunded,
}

impl UsageKind {
    /// As stored.
    pub fn code(self) -> &'static str {
        match self {
            UsageKind::Settled => "settled",
            UsageKind::Refunded => "refunded",
        }
    }
}

/// One change of a patient's usage of an insurance year.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEntry {
    /// The settlement.
    pub settlement_id: String,
    /// Adds or takes back.
    pub kind: UsageKind,
    /// The patient (master person id).
    pub patient: PersonId,
    /// The insurance year (the calendar year of the settlement, institution's local time).
    pub year: i32,
    /// What insurance paid (negative for a refund).
    pub covered: Fen,
    /// What of the deductible was met (negative for a refund).
    pub deductible_met: Fen,
}

/// The insurance year of a moment, in the institution's local time.
pub fn insurance_year(at: chrono::DateTime<chrono::Utc>, offset: FixedOffset) -> i32 {
    at.with_timezone(&offset).year()
}

/// The usage entry a saga change from `before` to `after` makes due: on settling an insured
/// settlement, the fund's payment and the deductible met; on its cancellation after
/// settlement, the same taken back. None for self-pay and for every other change.
pub fn usage_change(before: Phase, after: &Settlement, offset: FixedOffset) -> Option<UsageEntry> {
    if !matches!(after.kind, Kind::Insured { .. }) {
        return None;
    }
    let settled = after.settled.as_ref()?;
    let now = after.phase();
    let (kind, sign) = match (before, now) {
        (b, Phase::Settled) if b != Phase::Settled => (UsageKind::Settled, 1),
        (b, Phase::Cancelled) if b != Phase::Cancelled => (UsageKind::Refunded, -1),
        _ => return None,
    };
    Some(UsageEntry {
        settlement_id: after.id.clone(),
        kind,
        patient: after.bill.billable.patient,
        year: insurance_year(settled.at, offset),
        covered: Fen(sign * settled.amounts.fund.0),
        deductible_met: Fen(sign * after.estimate.deductible_met.0),
    })
}

/// The year's usage from its entries.
pub fn year_to_date<'a>(entries: impl IntoIterator<Item = &'a UsageEntry>) -> YearToDate {
    entries
        .into_iter()
        .fold(YearToDate::default(), |acc, e| YearToDate {
            covered: Fen(acc.covered.0.saturating_add(e.covered.0)),
            deductible_met: Fen(acc.deductible_met.0.saturating_add(e.deductible_met.0)),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::saga::tests::{Ids, drive, insured, ok, open, t0};

    fn beijing() -> FixedOffset {
        FixedOffset::east_opt(8 * 3600).unwrap()
    }

    #[test]
    fn a_settlement_adds_to_the_year_and_its_refund_takes_it_back() {
        let mut s = insured();
        s.estimate.deductible_met = Fen(2_000);
        let mut ids = Ids::default();
        let mut before = s.phase();
        let mut entries = Vec::new();
        // Step by step, as the runner saves: each change's entry.
        drive(&mut s, &mut ids, |c| ok(c.txn));
        if let Some(e) = usage_change(before, &s, beijing()) {
            entries.push(e);
        }
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].kind, UsageKind::Settled);
        assert_eq!(entries[0].year, 2026);
        assert_eq!(entries[0].patient, 7);
        assert_eq!(
            year_to_date(&entries),
            YearToDate {
                covered: Fen(15_000),
                deductible_met: Fen(2_000)
            }
        );
        // Saving again without a phase change adds nothing.
        before = s.phase();
        assert_eq!(usage_change(before, &s, beijing()), None);
        s.cancel("patient left", t0()).unwrap();
        drive(&mut s, &mut ids, |c| ok(c.txn));
        assert_eq!(s.phase(), Phase::Cancelled);
        entries.extend(usage_change(before, &s, beijing()));
        assert_eq!(entries[1].kind, UsageKind::Refunded);
        assert_eq!(year_to_date(&entries), YearToDate::default());
    }

    #[test]
    fn self_pay_and_unsettled_sagas_use_nothing() {
        let mut s = open(Kind::SelfPay);
        let before = s.phase();
        drive(&mut s, &mut Ids::default(), |c| ok(c.txn));
        assert_eq!(s.phase(), Phase::Settled);
        assert_eq!(usage_change(before, &s, beijing()), None);
        let mut s = insured();
        let before = s.phase();
        drive(&mut s, &mut Ids::default(), |c| match c.txn {
            crate::billing::saga::Txn::PreSettle => crate::billing::saga::Outcome::Refused {
                code: "-1".into(),
                message: "no".into(),
            },
            t => ok(t),
        });
        assert_eq!(s.phase(), Phase::Aborted);
        assert_eq!(usage_change(before, &s, beijing()), None);
    }

    #[test]
    fn the_year_is_the_institutions() {
        // 2025-12-31 17:00 UTC is 2026-01-01 01:00 in Beijing.
        let at = chrono::DateTime::parse_from_rfc3339("2025-12-31T17:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(insurance_year(at, beijing()), 2026);
        assert_eq!(insurance_year(at, FixedOffset::east_opt(0).unwrap()), 2025);
    }
}
