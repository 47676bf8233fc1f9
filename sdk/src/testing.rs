//! Native unit tests of a plugin: the config and clock its host calls see, and what it logged.
//!
//! ```
//! use huizhen_sdk::{host, testing};
//! testing::with_config([("rate", "80")], || {
//!     assert_eq!(host::config("rate").as_deref(), Some("80"));
//!     host::info("hello");
//! });
//! assert_eq!(testing::logs(), vec!["INFO hello".to_owned()]);
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::host::Level;

#[derive(Debug, Default)]
pub(crate) struct Context {
    pub(crate) config: BTreeMap<String, String>,
    pub(crate) now_ms: i64,
    pub(crate) logs: Vec<(Level, String)>,
}

thread_local! {
    pub(crate) static CONTEXT: RefCell<Context> = RefCell::new(Context::default());
}

/// Runs `f` with these `config` values (the rest of the context is kept).
pub fn with_config<K, V, R>(pairs: impl IntoIterator<Item = (K, V)>, f: impl FnOnce() -> R) -> R
where
    K: Into<String>,
    V: Into<String>,
{
    let config: BTreeMap<String, String> = pairs
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    let old = CONTEXT.with(|c| std::mem::replace(&mut c.borrow_mut().config, config));
    let r = f();
    CONTEXT.with(|c| c.borrow_mut().config = old);
    r
}

/// What `host::now_ms()` answers from now on, on this thread.
pub fn set_now_ms(ms: i64) {
    CONTEXT.with(|c| c.borrow_mut().now_ms = ms);
}

/// What the plugin logged on this thread so far (`LEVEL message`), and forget it.
pub fn logs() -> Vec<String> {
    CONTEXT.with(|c| {
        c.borrow_mut()
            .logs
            .drain(..)
            .map(|(l, m)| format!("{} {m}", format!("{l:?}").to_uppercase()))
            .collect()
    })
}

/// An active, eligible insurance without yearly terms and nothing used this year (contract
/// 0.1.2's `patient-coverage`), to change field by field in tests.
#[cfg(feature = "coverage")]
pub fn insured(insurer: &str, plan: &str) -> crate::coverage::PatientCoverage {
    crate::coverage::PatientCoverage {
        insurer: insurer.into(),
        active: true,
        plan: plan.into(),
        not_eligible: None,
        deductible_fen: 0,
        annual_limit_fen: None,
        year_to_date: crate::coverage::Usage {
            covered_fen: 0,
            deductible_met_fen: 0,
        },
    }
}

/// The checks the engine makes of every `coverage` answer before it uses it, so a plugin's
/// unit tests find what the engine would refuse: one line per item in order, covered +
/// self-pay = the item's amount, nothing negative, nothing covered when the insurance is
/// inactive or not eligible, never more covered than the annual limit left, and a deductible
/// met within what was left of it and within what the patient pays.
#[cfg(feature = "coverage")]
pub fn check_coverage(
    items: &[crate::coverage::FeeItem],
    patient: &crate::coverage::PatientCoverage,
    answer: &crate::coverage::CoverageAnswer,
) -> Result<(), String> {
    let lines = &answer.lines;
    if lines.len() != items.len() {
        return Err(format!("{} lines for {} items", lines.len(), items.len()));
    }
    let (mut covered, mut self_pay) = (0i64, 0i64);
    for (i, (line, item)) in lines.iter().zip(items).enumerate() {
        if line.covered_fen < 0 || line.self_pay_fen < 0 {
            return Err(format!("line {i} ({}) has a negative amount", item.code));
        }
        if line.covered_fen.checked_add(line.self_pay_fen) != Some(item.amount_fen) {
            return Err(format!(
                "line {i} ({}): covered {} + self-pay {} is not the amount {}",
                item.code, line.covered_fen, line.self_pay_fen, item.amount_fen
            ));
        }
        covered += line.covered_fen;
        self_pay += line.self_pay_fen;
    }
    if (!patient.active || patient.not_eligible.is_some()) && covered != 0 {
        return Err(format!(
            "{covered} covered for an inactive or ineligible insurance"
        ));
    }
    if let Some(limit) = patient.annual_limit_fen {
        let left = (limit - patient.year_to_date.covered_fen).max(0);
        if covered > left {
            return Err(format!(
                "{covered} covered, over the annual limit left ({left})"
            ));
        }
    }
    let deductible_left = (patient.deductible_fen - patient.year_to_date.deductible_met_fen).max(0);
    let met = answer.deductible_met_fen;
    if met < 0 || met > deductible_left || met > self_pay {
        return Err(format!(
            "{met} of the deductible met; {deductible_left} was left and the patient pays {self_pay}"
        ));
    }
    Ok(())
}
