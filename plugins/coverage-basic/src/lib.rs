//! `coverage-basic`: the covered and self-pay amounts of a consultation's fee items (a
//! `coverage` plugin, contract 0.1.2) from two config values: `rate` (percent covered) and
//! `cap_fen` (the most the insurer pays per visit), and from the patient's coverage as the
//! engine passes it: an inactive or ineligible insurance covers nothing; what is left of the
//! year's deductible is the patient's; the year's covered total stays within the annual limit.
//! Integer fen throughout. Its 0.1.1 build (no deductible, no annual limit:
//! `engine/plugin/tests/fixtures/contract-0.1.1/coverage_basic.wasm`) is kept as the host's
//! fixture for older `coverage` plugins.
//!
//! ```yaml
//! config: { rate: "80", cap_fen: "15000" }    # 80 %, at most 150 yuan per visit
//! ```

pub mod policy;

use huizhen_sdk::coverage::{CoverageAnswer, FeeItem, Guest, PatientCoverage, ResultLine};
use huizhen_sdk::host;

pub struct CoverageBasic;

impl Guest for CoverageBasic {
    fn cover(items: Vec<FeeItem>, patient: PatientCoverage) -> Result<CoverageAnswer, String> {
        let p = policy::Policy::from_config(
            host::config("rate").as_deref(),
            host::config("cap_fen").as_deref(),
        )?;
        let items: Vec<(String, i64)> = items.into_iter().map(|i| (i.code, i.amount_fen)).collect();
        let patient = policy::Patient {
            active: patient.active,
            not_eligible: patient.not_eligible,
            deductible_fen: patient.deductible_fen,
            annual_limit_fen: patient.annual_limit_fen,
            covered_ytd_fen: patient.year_to_date.covered_fen,
            deductible_met_ytd_fen: patient.year_to_date.deductible_met_fen,
        };
        let answer = policy::cover(&items, &patient, p)?;
        Ok(CoverageAnswer {
            lines: answer
                .lines
                .into_iter()
                .map(|l| ResultLine {
                    code: l.code,
                    covered_fen: l.covered_fen,
                    self_pay_fen: l.self_pay_fen,
                    reason: l.reason,
                })
                .collect(),
            deductible_met_fen: answer.deductible_met_fen,
        })
    }
}

huizhen_sdk::coverage_plugin!(CoverageBasic);

#[cfg(test)]
mod tests {
    use super::*;
    use huizhen_sdk::testing;

    #[test]
    fn eighty_percent_capped() {
        let lines = testing::with_config([("rate", "80"), ("cap_fen", "15000")], || {
            CoverageBasic::cover(
                vec![FeeItem {
                    code: "CONSULT".into(),
                    amount_fen: 20_000,
                }],
                testing::insured("城乡居民医保", "县级"),
            )
        })
        .unwrap();
        assert_eq!(
            (lines.lines[0].covered_fen, lines.lines[0].self_pay_fen),
            (15_000, 5_000)
        );
        let items = vec![FeeItem {
            code: "CONSULT".into(),
            amount_fen: 20_000,
        }];
        let mut patient = testing::insured("城乡居民医保", "县级");
        patient.deductible_fen = 5_000;
        patient.annual_limit_fen = Some(10_000);
        let answer = testing::with_config([("rate", "80"), ("cap_fen", "15000")], || {
            CoverageBasic::cover(items.clone(), patient.clone())
        })
        .unwrap();
        // The engine's own checks: lines add up, the limit and the deductible hold.
        testing::check_coverage(&items, &patient, &answer).unwrap();
        assert_eq!(answer.deductible_met_fen, 5_000);
        assert_eq!(answer.lines[0].covered_fen, 10_000);
    }
}
