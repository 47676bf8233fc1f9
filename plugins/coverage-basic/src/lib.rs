//! `coverage-basic`: the covered and self-pay amounts of a consultation's fee items (a
//! `coverage` plugin) from two config values: `rate` (percent covered) and `cap_fen` (the most
//! the insurer pays per visit). An inactive insurance covers nothing. Integer fen throughout.
//!
//! ```yaml
//! config: { rate: "80", cap_fen: "15000" }    # 80 %, at most 150 yuan per visit
//! ```

pub mod policy;

use huizhen_sdk::coverage::{FeeItem, Guest, PatientCoverage, ResultLine};
use huizhen_sdk::host;

pub struct CoverageBasic;

impl Guest for CoverageBasic {
    fn cover(items: Vec<FeeItem>, patient: PatientCoverage) -> Result<Vec<ResultLine>, String> {
        let p = policy::Policy::from_config(
            host::config("rate").as_deref(),
            host::config("cap_fen").as_deref(),
        )?;
        let items: Vec<(String, i64)> = items.into_iter().map(|i| (i.code, i.amount_fen)).collect();
        Ok(policy::cover(&items, patient.active, p)?
            .into_iter()
            .map(|l| ResultLine {
                code: l.code,
                covered_fen: l.covered_fen,
                self_pay_fen: l.self_pay_fen,
                reason: l.reason,
            })
            .collect())
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
                PatientCoverage {
                    insurer: "城乡居民医保".into(),
                    active: true,
                    plan: "县级".into(),
                },
            )
        })
        .unwrap();
        assert_eq!(
            (lines[0].covered_fen, lines[0].self_pay_fen),
            (15_000, 5_000)
        );
    }
}
