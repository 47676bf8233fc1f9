//! A `coverage` plugin: covered and self-pay amounts of fee items, in integer fen.

use huizhen_sdk::coverage::{FeeItem, Guest, PatientCoverage, ResultLine};
use huizhen_sdk::host;

pub struct Plugin;

impl Guest for Plugin {
    fn cover(items: Vec<FeeItem>, patient: PatientCoverage) -> Result<Vec<ResultLine>, String> {
        let percent: i64 = host::config("rate")
            .unwrap_or_else(|| "100".into())
            .parse()
            .map_err(|_| "config rate: a whole percentage, e.g. 80".to_owned())?;
        Ok(items
            .into_iter()
            .map(|i| {
                let covered = if patient.active { i.amount_fen * percent / 100 } else { 0 };
                ResultLine {
                    code: i.code,
                    covered_fen: covered,
                    self_pay_fen: i.amount_fen - covered,
                    reason: if patient.active { format!("{percent}% covered") } else { "inactive".into() },
                }
            })
            .collect())
    }
}

huizhen_sdk::coverage_plugin!(Plugin);
