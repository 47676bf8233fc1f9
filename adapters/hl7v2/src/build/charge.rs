//! `DFT^P03` (post detailed financial transaction, v2.5.1 chapter 6) built from the domain's
//! [`OutboundCharge`], the body of billing's `settlement.settled` and `settlement.cancelled`:
//!
//! `MSH`, `EVN` (`P03`, the posting time), `PID`, `PV1` (class `N`, `PV1-19` the consultation as
//! the visit number), one `FT1` per fee item, and `IN1` when the settlement went through the
//! insurance platform.
//!
//! `FT1`: `FT1-2` the settlement id (the HIS keys a charge and its credit on it), `FT1-3` the
//! platform's `setl_id` (insured) or empty, `FT1-4` the service time (the consultation's
//! completion), `FT1-5` the posting time, `FT1-6` `CG` (charge) or `CD` (credit), `FT1-7` the
//! NHSA 医疗服务项目 code as issued (`99NHSA`) with the local code as the alternate (`L`) and the
//! mapping version as the coding system version (`CWE.7`), `FT1-8` the item's name, `FT1-10`
//! the quantity, `FT1-11` the extended amount and `FT1-12` the unit amount as `CP` (`MO` yuan
//! with two decimals from integer fen `&CNY`), `FT1-13` the department, `FT1-16` the billing
//! facility (`PL.4`), `FT1-20` the expert, `FT1-23` the consultation under `MSH-3` (the filler
//! order number). A credit negates the quantity and the extended amount (the unit amount stays
//! positive: quantity × unit = extended).
//!
//! `IN1`: `IN1-2` the plan (as 1101 described it, else `NHSA`), `IN1-3` the insured region
//! (`insuplc_admdvs`, assigning authority `NHSA`), `IN1-4` the insurer's name, `IN1-36` the
//! platform's person number (`psn_no`).

use chrono::{DateTime, FixedOffset};
pub use huizhen_domain::billing::outbound::{
    ChargeInsurance, ChargeItem, ChargePayers, ChargeTransaction, OutboundCharge,
};
use huizhen_domain::billing::{Fen, MoneyError};

use super::messages::dtm;
use super::opinion::{clinician, line, optional_line, order_number, patient};
use super::writer::{Seg, components, esc, subcomponents};
use super::{BuildError, BuildOptions, Built, header};

/// The coding system of NHSA 医疗服务项目 codes (a locally defined table, `99zzz`).
pub const NHSA_ITEMS: &str = "99NHSA";

/// A charge whose values have passed the checks, with its times read.
struct Checked<'a> {
    charge: &'a OutboundCharge,
    posted_at: DateTime<FixedOffset>,
    service_at: DateTime<FixedOffset>,
}

fn time(path: &str, v: &str) -> Result<DateTime<FixedOffset>, BuildError> {
    DateTime::parse_from_rfc3339(v.trim()).map_err(|e| {
        BuildError::new(
            path,
            format!("not an RFC 3339 date-time such as 2026-01-15T10:30:00+08:00 ({e})"),
        )
    })
}

/// Checks every value of `c`, naming the JSON path at fault (never the value).
fn check(c: &OutboundCharge) -> Result<Checked<'_>, BuildError> {
    line("settlement_id", &c.settlement_id)?;
    line("consultation_id", &c.consultation_id)?;
    line("facility", &c.facility)?;
    optional_line("department", &c.department)?;
    if let Some(n) = &c.placer_order_number {
        order_number("placer_order_number", n)?;
    }
    patient(&c.patient)?;
    if let Some(e) = &c.expert {
        clinician("expert", e)?;
    }
    if c.items.is_empty() {
        return Err(BuildError::new(
            "items",
            "at least one fee item is needed (FT1)",
        ));
    }
    let mut sum = Fen::ZERO;
    for (i, it) in c.items.iter().enumerate() {
        let at = |k: &str| format!("items[{i}].{k}");
        line(&at("name"), &it.name)?;
        line(&at("national_code"), &it.national_code)?;
        if it.national_code.trim() != it.national_code {
            return Err(BuildError::new(
                at("national_code"),
                "has surrounding whitespace; codes are sent exactly as issued",
            ));
        }
        line(&at("local_code"), &it.local_code)?;
        line(&at("mapping_version"), &it.mapping_version)?;
        if it.quantity == 0 {
            return Err(BuildError::new(at("quantity"), "is 0"));
        }
        if it.unit_price_fen.0 < 0 || it.amount_fen.0 < 0 {
            return Err(BuildError::new(
                at("amount_fen"),
                "is negative (a credit is `transaction: credit` with positive amounts)",
            ));
        }
        let extended = Fen(it.unit_price_fen.0)
            .times(it.quantity)
            .map_err(|e: MoneyError| BuildError::new(at("unit_price_fen"), e.to_string()))?;
        if extended != it.amount_fen {
            return Err(BuildError::new(
                at("amount_fen"),
                "is not quantity × unit_price_fen",
            ));
        }
        sum = sum
            .add(it.amount_fen)
            .map_err(|e| BuildError::new(at("amount_fen"), e.to_string()))?;
    }
    let p = c.payers;
    if sum != p.total_fen {
        return Err(BuildError::new(
            "payers.total_fen",
            "is not the sum of the items' amount_fen",
        ));
    }
    let paid = Fen::sum([p.fund_fen, p.account_fen, p.cash_fen])
        .map_err(|e| BuildError::new("payers", e.to_string()))?;
    if paid != p.total_fen
        || [p.fund_fen, p.account_fen, p.cash_fen]
            .iter()
            .any(|f| f.0 < 0)
    {
        return Err(BuildError::new(
            "payers",
            "fund_fen + account_fen + cash_fen is not total_fen (or one is negative)",
        ));
    }
    if let Some(ins) = &c.insurance {
        line("insurance.psn_no", &ins.psn_no)?;
        line("insurance.insuplc_admdvs", &ins.insuplc_admdvs)?;
        optional_line("insurance.mdtrt_id", &ins.mdtrt_id)?;
        optional_line("insurance.setl_id", &ins.setl_id)?;
        for (k, v) in [
            ("insurance.plan", &ins.plan),
            ("insurance.insurer", &ins.insurer),
        ] {
            if !v.trim().is_empty() {
                line(k, v)?;
            }
        }
    }
    Ok(Checked {
        charge: c,
        posted_at: time("posted_at", &c.posted_at)?,
        service_at: time("service_at", &c.service_at)?,
    })
}

/// `CP` of an amount: `MO` (quantity & denomination) as yuan with two decimals, `CNY`.
fn cp(amount: Fen) -> String {
    components(&[subcomponents(&[amount.to_yuan_string(), "CNY".to_owned()])])
}

fn segments(
    k: &Checked<'_>,
    options: &BuildOptions,
    control_id: &str,
    message_time: &DateTime<FixedOffset>,
) -> Vec<Seg> {
    let c = k.charge;
    let credit = c.transaction == ChargeTransaction::Credit;
    let posted = dtm(&k.posted_at);
    let service = dtm(&k.service_at);
    let visit = components(&[
        esc(c.consultation_id.trim()),
        String::new(),
        String::new(),
        esc(&options.sending_application),
        "VN".to_owned(),
    ]);
    let filler = components(&[
        esc(c.consultation_id.trim()),
        esc(&options.sending_application),
    ]);
    let expert = c
        .expert
        .as_ref()
        .map(|e| components(&[esc(e.id.trim()), esc(e.name.trim())]))
        .unwrap_or_default();
    let department = c
        .department
        .as_deref()
        .map(|d| esc(d.trim()))
        .unwrap_or_default();
    let location = components(&[
        String::new(),
        String::new(),
        String::new(),
        esc(c.facility.trim()),
    ]);
    let setl_id = c
        .insurance
        .as_ref()
        .and_then(|i| i.setl_id.as_deref())
        .map(|s| esc(s.trim()))
        .unwrap_or_default();
    let mut segs = vec![
        header::msh(options, "DFT^P03^DFT_P03", control_id, message_time),
        Seg::new("EVN").set(1, "P03").set(2, posted.clone()),
        header::pid(&c.patient),
        Seg::new("PV1").set(1, "1").set(2, "N").set(19, visit),
    ];
    for (i, it) in c.items.iter().enumerate() {
        let code = components(&[
            esc(&it.national_code),
            esc(it.name.trim()),
            NHSA_ITEMS.to_owned(),
            esc(it.local_code.trim()),
            esc(it.name.trim()),
            "L".to_owned(),
            esc(it.mapping_version.trim()),
        ]);
        let (quantity, extended) = if credit {
            (
                format!("-{}", it.quantity),
                it.amount_fen.negate().unwrap_or(it.amount_fen),
            )
        } else {
            (it.quantity.to_string(), it.amount_fen)
        };
        let ft1 = Seg::new("FT1")
            .set(1, (i + 1).to_string())
            .set(2, esc(c.settlement_id.trim()))
            .set(3, setl_id.clone())
            .set(4, service.clone())
            .set(5, posted.clone())
            .set(6, if credit { "CD" } else { "CG" })
            .set(7, code)
            .set(8, esc(it.name.trim()))
            .set(10, quantity)
            .set(11, cp(extended))
            .set(12, cp(it.unit_price_fen))
            .set(13, department.clone())
            .set(16, location.clone())
            .set(20, expert.clone())
            .set(23, filler.clone());
        segs.push(ft1);
    }
    if let Some(ins) = &c.insurance {
        let plan = if ins.plan.trim().is_empty() {
            "NHSA"
        } else {
            ins.plan.trim()
        };
        segs.push(
            Seg::new("IN1")
                .set(1, "1")
                .set(2, esc(plan))
                .set(
                    3,
                    components(&[
                        esc(ins.insuplc_admdvs.trim()),
                        String::new(),
                        String::new(),
                        "NHSA".to_owned(),
                    ]),
                )
                .set(4, esc(ins.insurer.trim()))
                .set(36, esc(ins.psn_no.trim())),
        );
    }
    segs
}

/// Builds the `DFT^P03` of `charge` (see the module documentation). `message_time` is `MSH-7`;
/// `None` uses the posting time.
pub fn build_charge(
    charge: &OutboundCharge,
    options: &BuildOptions,
    control_id: &str,
    message_time: Option<DateTime<FixedOffset>>,
) -> Result<Built, BuildError> {
    options.check()?;
    line("control_id", control_id)?;
    let checked = check(charge)?;
    let message_time = message_time.unwrap_or(checked.posted_at);
    Ok(super::built(
        segments(&checked, options, control_id, &message_time),
        "DFT^P03",
    ))
}
