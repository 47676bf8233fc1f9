//! Billing (issue 19) on both backends: the store's settlements, calls, msgids, invoices and
//! ledger (store.rs); the engine, the API and the stand-in platforms (engine.rs, with
//! harness.rs); the `settle` step on the workflow's completed event (events.rs).

mod demo;
mod dft;
mod engine;
mod events;
mod harness;
mod rekey;
mod store;

use chrono::{DateTime, Utc};
use huizhen_core::store::audit::AuditEvent;
use huizhen_domain::billing::{
    Billable, CoverageItem, CoveragePolicy, Eligibility, FeeBill, FeeLine, Fen, ItemCodes, Kind,
    PatientCoverage, Settlement, SimplePolicy, Voucher,
};
use huizhen_domain::consultation::ServiceType;
use huizhen_domain::expert::Title;

pub const INSTITUTION: &str = "H44010600001";

pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-15T02:30:05Z")
        .unwrap()
        .to_utc()
}

/// A bill of `total` fen for consultation `consultation`.
pub fn bill(consultation: &str, total: i64) -> FeeBill {
    FeeBill {
        billable: Billable {
            consultation_id: consultation.into(),
            patient: 7,
            facility: INSTITUTION.into(),
            province: Some("44".into()),
            service_type: ServiceType::InstitutionToInstitution,
            department: "cardiology".into(),
            diagnoses: Vec::new(),
            expert: "E1".into(),
            expert_title: Title::Chief,
            expert_facility: Some("H11010100001".into()),
            minutes: 20,
            agreement: Some("AGR-1".into()),
            completed_at: t0(),
        },
        lines: vec![FeeLine {
            name: "远程会诊".into(),
            codes: ItemCodes {
                local: "HZ-YCHZ-01".into(),
                national: "003101000010000".into(),
                province: "310100001-1".into(),
                mapping_version: "2026.01".into(),
            },
            quantity: 1,
            unit_price: Fen(total),
            amount: Fen(total),
            covered: true,
        }],
        total: Fen(total),
    }
}

/// A new insured saga for `consultation`.
pub fn settlement(id: &str, consultation: &str) -> Settlement {
    let bill = bill(consultation, 25_000);
    let coverage = PatientCoverage {
        insurer: "城镇职工医保".into(),
        plan: "门诊统筹".into(),
        active: true,
        eligibility: Eligibility::Eligible,
        deductible: Fen::ZERO,
        annual_limit: None,
        year_to_date: Default::default(),
    };
    let estimate = SimplePolicy::default()
        .cover(&CoverageItem::of_bill(&bill), &coverage)
        .unwrap();
    Settlement::open(
        id,
        INSTITUTION,
        Kind::Insured {
            voucher: Voucher {
                cert_type: "02".into(),
                cert_no: "440106199001011234".into(),
                insuplc_admdvs: None,
                qr: None,
            },
        },
        bill,
        estimate,
        t0(),
    )
}

pub fn audit(action: &str, id: &str) -> AuditEvent {
    AuditEvent {
        actor: "tester".into(),
        role: "system".into(),
        facility: INSTITUTION.into(),
        action: action.into(),
        resource_type: "Settlement".into(),
        resource_id: id.into(),
        outcome: "success".into(),
        source: "test".into(),
        purpose: String::new(),
        detail: String::new(),
        subject_facility: INSTITUTION.into(),
    }
}
