//! What billing announces to the HIS (issue 19 item 4): a charge when a settlement comes to rest
//! settled, and a credit when a settled one is cancelled (refunded). The body
//! ([`OutboundCharge`]) is what the HL7 adapter's `hl7_build` step (`as: dft_p03`) turns into a
//! `DFT^P03` (post detailed financial transaction): one `FT1` per fee item with its national
//! 医疗服务项目 code, local code and mapping version, the quantity and the amounts, and the
//! insurance (`IN1`) when the settlement went through the platform.
//!
//! Pure: the engine gives the saga before and after a change, the consultation and what it knows
//! of the patient; [`charge_announcement`] says whether the change is announced and with what.
//! The engine writes it into the outbox in the same transaction as the change, so a crash never
//! loses the charge and a change that is not committed never announces one.
//!
//! Credits repeat the charge's items with `transaction: credit`: the HL7 message marks them
//! `CD` (table 0017) with negative quantities and amounts, so the HIS can post them against the
//! original charge (same `settlement_id`).

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::money::Fen;
use super::saga::{Kind, Phase, Settlement};
use crate::consultation::Consultation;
use crate::consultation::outbound::{
    Clinician, KnownPatient, OrderNumber, OutboundPatient, PatientIdentifier, PersonName,
};

/// The topic of a settlement that came to rest settled.
pub const SETTLED: &str = "settlement.settled";
/// The topic of a settled settlement cancelled and refunded.
pub const CANCELLED: &str = "settlement.cancelled";

/// A charge or its credit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChargeTransaction {
    /// The settled charge (`FT1-6` `CG`).
    Charge,
    /// Its reversal after a cancellation (`FT1-6` `CD`).
    Credit,
}

/// One billed item as the HIS posts it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargeItem {
    /// Its name (`远程会诊`).
    pub name: String,
    /// The NHSA 医疗服务项目 code, exactly as issued.
    pub national_code: String,
    /// The facility's own (HIS) code.
    pub local_code: String,
    /// The province's price item code.
    pub province_code: String,
    /// The local ↔ national mapping version the code was read under.
    pub mapping_version: String,
    /// How many (always positive; a credit negates it in the message).
    pub quantity: u32,
    /// Price of one, fen.
    pub unit_price_fen: Fen,
    /// `quantity × unit_price`, fen.
    pub amount_fen: Fen,
    /// False for 自费 items, which insurance never pays.
    pub covered: bool,
}

/// How the settled total was paid (CN-63's payer split): `fund + account + cash = total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargePayers {
    /// The total, fen.
    pub total_fen: Fen,
    /// Paid by the fund (统筹基金), fen.
    pub fund_fen: Fen,
    /// Paid from the personal account (个人账户), fen.
    pub account_fen: Fen,
    /// Paid in cash by the patient, fen.
    pub cash_fen: Fen,
}

/// The insurance the settlement went through (absent for self-pay).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargeInsurance {
    /// `psn_no`, the platform's person number (`IN1-36`).
    pub psn_no: String,
    /// `insuplc_admdvs`, the insured region (`IN1-3`, the plan's administrative area).
    pub insuplc_admdvs: String,
    /// The plan as 1101 described it (`IN1-2`).
    #[serde(default)]
    pub plan: String,
    /// The insurer's name (`IN1-4`).
    #[serde(default)]
    pub insurer: String,
    /// `mdtrt_id`, the platform's visit id.
    #[serde(default)]
    pub mdtrt_id: Option<String>,
    /// `setl_id`, the platform's settlement id.
    #[serde(default)]
    pub setl_id: Option<String>,
}

/// The body of `settlement.settled` and `settlement.cancelled` (unknown fields are refused).
///
/// ```json
/// {
///   "settlement_id": "0190…", "consultation_id": "HZ-2026-000123", "transaction": "charge",
///   "facility": "H45010300001", "department": "心内科",
///   "placer_order_number": { "id": "HZSQ-20260115-0007", "namespace": "HIS" },
///   "patient": { "identifiers": [{ "id": "0001234567", "type_code": "MR" }],
///                "name": { "family": "张", "given": "三丰" } },
///   "expert": { "id": "E1001", "name": "李四" },
///   "posted_at": "2026-01-15T11:00:00+08:00", "service_at": "2026-01-15T10:30:00+08:00",
///   "items": [{ "name": "远程会诊", "national_code": "003101000010000", "local_code": "HZ-YCHZ-01",
///               "province_code": "310100001-1", "mapping_version": "2026.01", "quantity": 1,
///               "unit_price_fen": 30000, "amount_fen": 30000, "covered": true }],
///   "payers": { "total_fen": 30000, "fund_fen": 15000, "account_fen": 0, "cash_fen": 15000 },
///   "insurance": { "psn_no": "45000000000000000001", "insuplc_admdvs": "450100", … }
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundCharge {
    /// The settlement (`FT1-2`, the transaction id the HIS keys the charge and its credit on).
    pub settlement_id: String,
    /// The consultation billed (the visit number, `PV1-19`).
    pub consultation_id: String,
    /// Charge or credit.
    pub transaction: ChargeTransaction,
    /// The billing facility (`FT1-16`'s facility).
    pub facility: String,
    /// The requested department (`FT1-13`).
    #[serde(default)]
    pub department: Option<String>,
    /// The HIS's order the consultation answers (`FT1-23`).
    #[serde(default)]
    pub placer_order_number: Option<OrderNumber>,
    /// The patient as the HIS knows them.
    pub patient: OutboundPatient,
    /// The expert who performed the consultation (`FT1-20`).
    #[serde(default)]
    pub expert: Option<Clinician>,
    /// When the charge (or credit) was posted: the settlement's (or cancellation's) time.
    pub posted_at: String,
    /// When the service was given: the consultation's completion.
    pub service_at: String,
    /// The fee items, at least one.
    pub items: Vec<ChargeItem>,
    /// How the total was paid.
    pub payers: ChargePayers,
    /// The insurance; none for self-pay.
    #[serde(default)]
    pub insurance: Option<ChargeInsurance>,
}

/// What the engine gives beside the saga.
#[derive(Clone, Copy, Debug)]
pub struct ChargeContext<'a> {
    /// The consultation billed (for the HIS's order and patient identifiers).
    pub consultation: Option<&'a Consultation>,
    /// The patient as the identity index knows them.
    pub patient: &'a KnownPatient,
    /// The expert's name from the registry.
    pub expert_name: Option<&'a str>,
    /// The offset times are written in (the HIS's local time).
    pub offset: FixedOffset,
}

/// The announcement of a saga change from phase `before` to `after`: a charge when it came to
/// rest settled, a credit when a settled saga came to rest cancelled; `None` otherwise. The
/// topic and the body.
pub fn charge_announcement(
    before: Phase,
    after: &Settlement,
    ctx: &ChargeContext<'_>,
) -> Option<(&'static str, OutboundCharge)> {
    let now = after.phase();
    let settled = after.settled.as_ref()?;
    let (topic, transaction, posted) = match (before, now) {
        (b, Phase::Settled) if b != Phase::Settled => {
            (SETTLED, ChargeTransaction::Charge, settled.at)
        }
        (b, Phase::Cancelled) if b != Phase::Cancelled => {
            (CANCELLED, ChargeTransaction::Credit, after.updated_at)
        }
        _ => return None,
    };
    let billable = &after.bill.billable;
    let order = ctx
        .consultation
        .and_then(|c| c.request().his_order.as_deref());
    let identifiers: Vec<PatientIdentifier> = match order {
        Some(o) if !o.patient_identifiers.is_empty() => o.patient_identifiers.clone(),
        _ => ctx.patient.identifiers.clone(),
    };
    let name = ctx.patient.name.clone().unwrap_or(PersonName {
        family: String::new(),
        given: None,
    });
    let items = after
        .bill
        .lines
        .iter()
        .map(|l| ChargeItem {
            name: l.name.clone(),
            national_code: l.codes.national.clone(),
            local_code: l.codes.local.clone(),
            province_code: l.codes.province.clone(),
            mapping_version: l.codes.mapping_version.clone(),
            quantity: l.quantity,
            unit_price_fen: l.unit_price,
            amount_fen: l.amount,
            covered: l.covered,
        })
        .collect();
    let a = settled.amounts;
    let insurance = match (&after.kind, &after.person) {
        (Kind::Insured { .. }, Some(p)) => Some(ChargeInsurance {
            psn_no: p.psn_no.clone(),
            insuplc_admdvs: p.insuplc_admdvs.clone(),
            plan: p.coverage.plan.clone(),
            insurer: p.coverage.insurer.clone(),
            mdtrt_id: after.mdtrt_id.clone(),
            setl_id: settled.setl_id.clone(),
        }),
        _ => None,
    };
    let department = Some(billable.department.trim().to_owned()).filter(|d| !d.is_empty());
    let expert = Some(billable.expert.trim())
        .filter(|e| !e.is_empty())
        .map(|id| Clinician {
            id: id.to_owned(),
            name: ctx
                .expert_name
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .unwrap_or(id)
                .to_owned(),
        });
    Some((
        topic,
        OutboundCharge {
            settlement_id: after.id.clone(),
            consultation_id: billable.consultation_id.clone(),
            transaction,
            facility: after.facility.clone(),
            department,
            placer_order_number: order.map(|o| o.placer.clone()),
            patient: OutboundPatient { identifiers, name },
            expert,
            posted_at: local(posted, ctx.offset),
            service_at: local(billable.completed_at, ctx.offset),
            items,
            payers: ChargePayers {
                total_fen: a.total,
                fund_fen: a.fund,
                account_fen: a.account,
                cash_fen: a.cash,
            },
            insurance,
        },
    ))
}

fn local(at: DateTime<Utc>, offset: FixedOffset) -> String {
    at.with_timezone(&offset)
        .to_rfc3339_opts(SecondsFormat::Secs, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::saga::tests as saga_tests;

    fn offset() -> FixedOffset {
        FixedOffset::east_opt(8 * 3600).unwrap()
    }

    fn ctx(known: &KnownPatient) -> ChargeContext<'_> {
        ChargeContext {
            consultation: None,
            patient: known,
            expert_name: Some("李四"),
            offset: offset(),
        }
    }

    #[test]
    fn a_charge_once_settled_and_a_credit_once_cancelled() {
        let known = KnownPatient {
            identifiers: vec![PatientIdentifier {
                id: "0001234567".into(),
                assigning_authority: Some("F-REQ".into()),
                type_code: None,
            }],
            name: Some(PersonName {
                family: "张三丰".into(),
                given: None,
            }),
        };
        let mut s = saga_tests::open(Kind::SelfPay);
        let before = s.phase();
        assert!(charge_announcement(before, &s, &ctx(&known)).is_none());
        let total = s.bill.total;
        s.confirm(
            "patient",
            crate::billing::Amounts {
                total,
                fund: Fen::ZERO,
                account: Fen::ZERO,
                cash: total,
            },
            s.updated_at,
        )
        .unwrap();
        let (topic, charge) = charge_announcement(before, &s, &ctx(&known)).unwrap();
        assert_eq!(topic, SETTLED);
        assert_eq!(charge.transaction, ChargeTransaction::Charge);
        assert_eq!(charge.items.len(), s.bill.lines.len());
        assert_eq!(charge.payers.cash_fen, total);
        assert!(charge.insurance.is_none());
        assert_eq!(charge.patient.identifiers[0].id, "0001234567");
        assert!(charge.posted_at.ends_with("+08:00"), "{}", charge.posted_at);
        // Settled again (a save that changes nothing of the phase): no second charge.
        assert!(charge_announcement(Phase::Settled, &s, &ctx(&known)).is_none());
        let before = s.phase();
        s.cancel("refund", s.updated_at).unwrap();
        let (topic, credit) = charge_announcement(before, &s, &ctx(&known)).unwrap();
        assert_eq!(topic, CANCELLED);
        assert_eq!(credit.transaction, ChargeTransaction::Credit);
        assert_eq!(credit.items, charge.items);
        assert!(charge_announcement(Phase::Cancelled, &s, &ctx(&known)).is_none());
        // The body reads back as itself (what hl7_build reads).
        let json = serde_json::to_string(&credit).unwrap();
        assert_eq!(
            serde_json::from_str::<OutboundCharge>(&json).unwrap(),
            credit
        );
    }

    #[test]
    fn an_insured_charge_carries_the_insurance_and_the_payer_split() {
        let known = KnownPatient::default();
        let mut s = saga_tests::insured();
        let mut ids = saga_tests::Ids::default();
        let mut phases = vec![s.phase()];
        let mut charges = Vec::new();
        // Step by step: announce each change as the runner does.
        saga_tests::drive(&mut s, &mut ids, |c| saga_tests::ok(c.txn));
        phases.push(s.phase());
        if let Some(c) = charge_announcement(phases[0], &s, &ctx(&known)) {
            charges.push(c);
        }
        assert_eq!(charges.len(), 1);
        let (_, c) = &charges[0];
        let ins = c.insurance.as_ref().expect("insured");
        assert_eq!(ins.setl_id.as_deref(), Some("SETL1"));
        let p = c.payers;
        assert_eq!(
            Fen::sum([p.fund_fen, p.account_fen, p.cash_fen]).unwrap(),
            p.total_fen
        );
        assert_eq!(p.total_fen, s.bill.total);
        // Aborted or waiting: nothing.
        let mut waiting = saga_tests::insured();
        assert!(charge_announcement(Phase::InProgress, &waiting, &ctx(&known)).is_none());
        waiting.cancel("no", waiting.updated_at).unwrap();
        assert!(charge_announcement(Phase::InProgress, &waiting, &ctx(&known)).is_none());
    }
}
