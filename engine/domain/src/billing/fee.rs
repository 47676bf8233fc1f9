//! The fee of a completed consultation: what is billed ([`Billable`], read off the
//! consultation: its service type, the accepting expert's title, the minutes in session) priced
//! by the facility's [`FeeSchedule`] into [`FeeLine`]s with every code they carry (CN-51).

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::money::{Fen, MoneyError};
use super::schedule::{FeeSchedule, ItemCodes, service_code};
use crate::consultation::{Consultation, Diagnosis, ServiceType, State};
use crate::expert::Title;
use crate::identity::PersonId;

/// What a completed consultation bills.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Billable {
    /// The consultation.
    pub consultation_id: String,
    /// The patient (master person id).
    pub patient: PersonId,
    /// The inviting facility (邀请方), which charges the patient (CN-63).
    pub facility: String,
    /// The province of the inviting facility, when known.
    pub province: Option<String>,
    /// CN-01 service type.
    pub service_type: ServiceType,
    /// The requested department (诊疗科目 or local code), for registration (2201).
    #[serde(default)]
    pub department: String,
    /// The expert's diagnoses, primary first (ICD-10 国家临床版 as signed; visit upload,
    /// 2203).
    #[serde(default)]
    pub diagnoses: Vec<Diagnosis>,
    /// The expert who gave the opinion.
    pub expert: String,
    /// Their title when the consultation completed.
    pub expert_title: Title,
    /// Their facility (受邀方), for the revenue share (CN-63).
    #[serde(default)]
    pub expert_facility: Option<String>,
    /// Minutes in session (started to report requested, pauses excluded), rounded up.
    pub minutes: u32,
    /// The cooperation agreement (CN-02), for the revenue share.
    pub agreement: Option<String>,
    /// When the consultation completed.
    pub completed_at: DateTime<Utc>,
}

/// Why a consultation cannot be billed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FeeError {
    /// Only a completed consultation is billed.
    #[error("consultation {id} is {state}, not completed")]
    NotCompleted {
        /// The consultation.
        id: String,
        /// Its state.
        state: String,
    },
    /// A completed consultation without its expert (a data error).
    #[error("consultation {0} has no accepting expert")]
    NoExpert(String),
    /// The schedule is another facility's.
    #[error("the fee schedule is facility {schedule}'s, the consultation is billed by {facility}")]
    WrongFacility {
        /// The schedule's facility.
        schedule: String,
        /// The billing facility.
        facility: String,
    },
    /// The service type is not priced (blocks billing, not the clinical flow: CN-51).
    #[error("facility {facility} prices no `{service}` service")]
    NotPriced {
        /// The facility.
        facility: String,
        /// The service type.
        service: &'static str,
    },
    /// The title is not priced for the service.
    #[error("facility {facility} has no `{service}` fee for a {title}")]
    TitleNotPriced {
        /// The facility.
        facility: String,
        /// The service type.
        service: &'static str,
        /// The title.
        title: &'static str,
    },
    /// An amount overflowed.
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// One billed item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeLine {
    /// Its name.
    pub name: String,
    /// Local, national and province codes with the mapping version.
    pub codes: ItemCodes,
    /// How many.
    pub quantity: u32,
    /// Price of one.
    pub unit_price: Fen,
    /// `quantity × unit_price`.
    pub amount: Fen,
    /// False for 自费 items, which insurance never pays.
    pub covered: bool,
}

/// The priced consultation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeBill {
    /// What was billed.
    pub billable: Billable,
    /// The lines, the consultation item first.
    pub lines: Vec<FeeLine>,
    /// Their sum.
    pub total: Fen,
}

impl Billable {
    /// What a completed consultation bills, with its expert's title and facility as the
    /// registry gives them (the consultation stores the expert's id only).
    pub fn from_consultation(
        c: &Consultation,
        expert_title: Title,
        expert_facility: Option<String>,
    ) -> Result<Billable, FeeError> {
        if c.state() != State::ReportSigned {
            return Err(FeeError::NotCompleted {
                id: c.id().to_owned(),
                state: c.state().code().to_owned(),
            });
        }
        let expert = c
            .accepted_by()
            .ok_or_else(|| FeeError::NoExpert(c.id().to_owned()))?;
        let r = c.request();
        Ok(Billable {
            consultation_id: c.id().to_owned(),
            patient: c.patient(),
            facility: r.requesting_facility.clone(),
            province: r.province.clone(),
            service_type: r.service_type,
            department: r.department.clone(),
            diagnoses: c
                .opinion()
                .map(|o| o.signed.opinion.diagnoses.clone())
                .unwrap_or_default(),
            expert: expert.to_owned(),
            expert_title,
            expert_facility,
            minutes: session_minutes(c),
            agreement: r.agreement.clone(),
            completed_at: c.last_modified(),
        })
    }
}

/// Minutes the consultation was in session (each interval entering `in-session` to leaving
/// it), rounded up to the minute.
pub fn session_minutes(c: &Consultation) -> u32 {
    let mut total = TimeDelta::zero();
    let mut since: Option<DateTime<Utc>> = None;
    for e in c.timeline() {
        if e.to == State::InSession && e.from != State::InSession {
            since = Some(e.at);
        } else if e.from == State::InSession
            && e.to != State::InSession
            && let Some(s) = since.take()
        {
            total += e.at - s;
        }
    }
    let secs = u64::try_from(total.num_seconds()).unwrap_or(0);
    u32::try_from(secs.div_ceil(60)).unwrap_or(u32::MAX)
}

/// Prices a billable consultation under a facility's schedule.
pub fn compute_fees(schedule: &FeeSchedule, b: &Billable) -> Result<FeeBill, FeeError> {
    if schedule.facility != b.facility {
        return Err(FeeError::WrongFacility {
            schedule: schedule.facility.clone(),
            facility: b.facility.clone(),
        });
    }
    let service = service_code(b.service_type);
    let fee = schedule
        .service(b.service_type)
        .ok_or_else(|| FeeError::NotPriced {
            facility: b.facility.clone(),
            service,
        })?;
    let price = *fee
        .by_title
        .get(&b.expert_title)
        .ok_or_else(|| FeeError::TitleNotPriced {
            facility: b.facility.clone(),
            service,
            title: b.expert_title.code(),
        })?;
    let mut lines = vec![FeeLine {
        name: fee.item.name.clone(),
        codes: fee.item.codes.clone(),
        quantity: 1,
        unit_price: price,
        amount: price,
        covered: fee.covered,
    }];
    if let Some(extra) = &fee.extra {
        let over = b.minutes.saturating_sub(fee.included_minutes);
        let blocks = over
            .div_ceil(extra.block_minutes.max(1))
            .min(extra.max_blocks);
        if blocks > 0 {
            lines.push(FeeLine {
                name: extra.item.name.clone(),
                codes: extra.item.codes.clone(),
                quantity: blocks,
                unit_price: extra.price,
                amount: extra.price.times(blocks)?,
                covered: fee.covered,
            });
        }
    }
    let total = Fen::sum(lines.iter().map(|l| l.amount))?;
    Ok(FeeBill {
        billable: b.clone(),
        lines,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::schedule::tests::YAML;

    fn billable(title: Title, minutes: u32) -> Billable {
        Billable {
            consultation_id: "C1".into(),
            patient: 7,
            facility: "H44010600001".into(),
            province: Some("44".into()),
            service_type: ServiceType::InstitutionToInstitution,
            department: "cardiology".into(),
            diagnoses: Vec::new(),
            expert: "E1".into(),
            expert_title: title,
            expert_facility: Some("H11010100001".into()),
            minutes,
            agreement: Some("AGR-2026-001".into()),
            completed_at: DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn fee_by_title_and_duration() {
        let s = FeeSchedule::parse("fees.yaml", YAML).unwrap();
        let bill = compute_fees(&s, &billable(Title::Chief, 30)).unwrap();
        assert_eq!(bill.lines.len(), 1);
        assert_eq!(bill.total, Fen(30_000));
        // 31 minutes: one started block of 15 beyond the 30 included.
        let bill = compute_fees(&s, &billable(Title::AssociateChief, 31)).unwrap();
        assert_eq!(bill.lines[1].quantity, 1);
        assert_eq!(bill.lines[1].codes.national, "003101000020000");
        assert_eq!(bill.total, Fen(25_000));
        // Capped at 4 blocks.
        let bill = compute_fees(&s, &billable(Title::Chief, 600)).unwrap();
        assert_eq!(bill.lines[1].amount, Fen(20_000));
        assert_eq!(bill.total, Fen(50_000));
    }

    #[test]
    fn what_cannot_be_billed_says_why() {
        let s = FeeSchedule::parse("fees.yaml", YAML).unwrap();
        let e = compute_fees(&s, &billable(Title::Resident, 10)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "facility H44010600001 has no `institution-to-institution` fee for a resident-physician"
        );
        let mut b = billable(Title::Chief, 10);
        b.service_type = ServiceType::InternetHospital;
        assert!(matches!(
            compute_fees(&s, &b),
            Err(FeeError::NotPriced { .. })
        ));
        b.facility = "OTHER".into();
        assert!(matches!(
            compute_fees(&s, &b),
            Err(FeeError::WrongFacility { .. })
        ));
    }
}
