//! A `coverage` plugin: covered and self-pay amounts of fee items, in integer fen (contract
//! 0.1.2: the patient's eligibility, yearly deductible, annual limit and the year's usage come
//! with each call).

use huizhen_sdk::coverage::{CoverageAnswer, FeeItem, Guest, PatientCoverage, ResultLine};
use huizhen_sdk::host;

pub struct Plugin;

impl Guest for Plugin {
    fn cover(items: Vec<FeeItem>, patient: PatientCoverage) -> Result<CoverageAnswer, String> {
        let percent: i64 = host::config("rate")
            .unwrap_or_else(|| "100".into())
            .parse()
            .map_err(|_| "config rate: a whole percentage, e.g. 80".to_owned())?;
        let pays = patient.active && patient.not_eligible.is_none();
        let mut annual_left = patient
            .annual_limit_fen
            .map(|l| (l - patient.year_to_date.covered_fen).max(0));
        let lines = items
            .into_iter()
            .map(|i| {
                let mut covered = if pays { i.amount_fen * percent / 100 } else { 0 };
                if let Some(left) = annual_left.as_mut() {
                    covered = covered.min(*left);
                    *left -= covered;
                }
                ResultLine {
                    code: i.code,
                    covered_fen: covered,
                    self_pay_fen: i.amount_fen - covered,
                    reason: if pays { format!("{percent}% covered") } else { "not covered".into() },
                }
            })
            .collect();
        Ok(CoverageAnswer { lines, deductible_met_fen: 0 })
    }
}

huizhen_sdk::coverage_plugin!(Plugin);
