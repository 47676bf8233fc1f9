//! Who bills and who pays for a remote consultation (STANDARDS CN-63), kept as three separate
//! records:
//!
//! * the **price items** billed under the province's pricing authority ([`PriceItem`]: the
//!   province's price item code beside the national 医疗服务项目 code and the local code);
//! * the **payer split** of the settlement ([`PayerSplit`]: fund, personal account, cash),
//!   which is what insurance settled;
//! * the **inter-institution ledger** ([`LedgerEntry`]): the invited side's (受邀方) share of
//!   the fee under the cooperation agreement, settled between the institutions outside 医保.
//!   A cancelled settlement adds a reversing entry; entries are never changed or deleted.

use serde::{Deserialize, Serialize};

use super::money::{Fen, MoneyError, Rate};
use super::saga::{Amounts, Phase, Settlement};

/// A billed item under the province's pricing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceItem {
    /// The province (GB/T 2260) whose price item it is.
    pub province: String,
    /// The province's price item code.
    pub province_code: String,
    /// The national 医疗服务项目 code, as issued.
    pub national_code: String,
    /// The facility's code.
    pub local_code: String,
    /// The mapping version.
    pub mapping_version: String,
    /// How many.
    pub quantity: u32,
    /// The amount.
    pub amount: Fen,
}

/// Who paid the settlement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayerSplit {
    /// The insurance fund (统筹).
    pub fund: Fen,
    /// The personal account (个人账户).
    pub account: Fen,
    /// The patient in cash.
    pub cash: Fen,
    /// The whole.
    pub total: Fen,
}

impl From<Amounts> for PayerSplit {
    fn from(a: Amounts) -> PayerSplit {
        PayerSplit {
            fund: a.fund,
            account: a.account,
            cash: a.cash,
            total: a.total,
        }
    }
}

/// What a ledger entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LedgerKind {
    /// The invited side's share of a settled fee.
    Share,
    /// The reversal of a share (the settlement was cancelled).
    ShareReversal,
}

impl LedgerKind {
    /// The code, as stored.
    pub fn code(self) -> &'static str {
        match self {
            LedgerKind::Share => "share",
            LedgerKind::ShareReversal => "share-reversal",
        }
    }
}

/// One entry of the inter-institution ledger: `payer` owes `payee` `amount` (negative: the
/// reverse).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The settlement it comes from.
    pub settlement_id: String,
    /// Share or reversal.
    pub kind: LedgerKind,
    /// The cooperation agreement (CN-02).
    pub agreement: String,
    /// The inviting facility, which charged the patient.
    pub payer: String,
    /// The invited facility.
    pub payee: String,
    /// The amount.
    pub amount: Fen,
}

/// The three records of a settlement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// The price items.
    pub price_items: Vec<PriceItem>,
    /// Who paid; none until settled.
    pub payers: Option<PayerSplit>,
    /// The ledger entries due so far.
    pub ledger: Vec<LedgerEntry>,
}

/// The invited side of a bill and its share, when the consultation ran under an agreement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevenueShare<'a> {
    /// The agreement id.
    pub agreement: &'a str,
    /// The invited facility.
    pub invited: &'a str,
    /// Its share of the fee.
    pub share: Rate,
}

/// The records of a settlement as it stands: the price items always; the payer split once
/// settled; a share entry once settled and a reversing entry once cancelled after that.
pub fn split(
    s: &Settlement,
    province: &str,
    share: Option<RevenueShare<'_>>,
) -> Result<Split, MoneyError> {
    let price_items = s
        .bill
        .lines
        .iter()
        .map(|l| PriceItem {
            province: province.to_owned(),
            province_code: l.codes.province.clone(),
            national_code: l.codes.national.clone(),
            local_code: l.codes.local.clone(),
            mapping_version: l.codes.mapping_version.clone(),
            quantity: l.quantity,
            amount: l.amount,
        })
        .collect();
    let phase = s.phase();
    let settled = s.settled.as_ref().filter(|_| {
        matches!(
            phase,
            Phase::Settled | Phase::Cancelling | Phase::Cancelled | Phase::Attention
        )
    });
    let mut ledger = Vec::new();
    if let (Some(settled), Some(sh)) = (settled, share) {
        let amount = sh.share.of(settled.amounts.total);
        let entry = |kind, amount| LedgerEntry {
            settlement_id: s.id.clone(),
            kind,
            agreement: sh.agreement.to_owned(),
            payer: s.bill.billable.facility.clone(),
            payee: sh.invited.to_owned(),
            amount,
        };
        ledger.push(entry(LedgerKind::Share, amount));
        if phase == Phase::Cancelled {
            ledger.push(entry(LedgerKind::ShareReversal, amount.negate()?));
        }
    }
    Ok(Split {
        price_items,
        payers: settled.map(|x| PayerSplit::from(x.amounts)),
        ledger,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::saga::tests::{Ids, insured, ok};
    use crate::billing::saga::{Next, Txn};

    fn settle(s: &mut Settlement, ids: &mut Ids) {
        loop {
            match s.next() {
                Next::Send { .. } => {
                    let c = s.begin(ids.next(), s.opened_at).unwrap();
                    let txn = c.txn;
                    s.complete(&c.msgid, ok(txn), s.opened_at).unwrap();
                }
                Next::WaitForPatient => {
                    let a = s.pre_settlement.unwrap();
                    s.confirm("patient", a, s.opened_at).unwrap();
                }
                _ => return,
            }
        }
    }

    #[test]
    fn price_items_payers_and_ledger_are_kept_apart() {
        let mut s = insured();
        let share = || RevenueShare {
            agreement: "AGR-1",
            invited: "H11010100001",
            share: Rate::percent(60).unwrap(),
        };
        let before = split(&s, "44", Some(share())).unwrap();
        assert_eq!(before.price_items[0].province_code, "310100001-1");
        assert_eq!(before.price_items[0].national_code, "003101000010000");
        assert!(before.payers.is_none() && before.ledger.is_empty());

        let mut ids = Ids::default();
        settle(&mut s, &mut ids);
        let after = split(&s, "44", Some(share())).unwrap();
        let payers = after.payers.unwrap();
        assert_eq!(
            Fen::sum([payers.fund, payers.account, payers.cash]).unwrap(),
            payers.total
        );
        assert_eq!(after.ledger.len(), 1);
        assert_eq!(after.ledger[0].amount, Fen(15_000));
        assert_eq!(after.ledger[0].payer, "H44010600001");

        s.cancel("refund", s.opened_at).unwrap();
        settle(&mut s, &mut ids);
        assert!(s.is_done(Txn::SettleRevoke));
        let cancelled = split(&s, "44", Some(share())).unwrap();
        assert_eq!(cancelled.ledger.len(), 2);
        assert_eq!(
            Fen::sum(cancelled.ledger.iter().map(|e| e.amount)).unwrap(),
            Fen::ZERO
        );
        assert_eq!(cancelled.ledger[1].kind, LedgerKind::ShareReversal);
        // Without an agreement nothing is shared.
        assert!(split(&s, "44", None).unwrap().ledger.is_empty());
    }
}
