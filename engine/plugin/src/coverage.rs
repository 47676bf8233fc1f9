//! A loaded `coverage` plugin as the domain's coverage port
//! ([`huizhen_domain::billing::CoveragePolicy`], issue 19 item 2).
//!
//! The host passes the patient's coverage in the 0.1.2 form (eligibility, the plan's deductible
//! and annual limit, the year-to-date usage the store keeps); a plugin built for 0.1.0/0.1.1 is
//! called through its older form ([`crate::legacy::call_v1_cover`]). The answer becomes a
//! [`CoverageResult`] (each line's reason as [`Reason::Plugin`], the totals summed here) that
//! the caller checks ([`CoverageResult::check`]) before using it, so a faulty plugin cannot
//! unbalance the books. The policy name recorded with each estimate is the plugin's
//! `name@version` and the contract version of its world.

use std::collections::BTreeMap;
use std::sync::Arc;

use huizhen_core::extensions::PluginBudget;
use huizhen_domain::billing::{
    CoverageError, CoverageItem, CoverageLine, CoveragePolicy, CoverageResult, Eligibility, Fen,
    PatientCoverage, Reason,
};

use crate::bindings::coverage as wit;
use crate::registry::{Serving, Slot};
use crate::{CallOptions, Limits, Plugin};

/// A `coverage` plugin serving the domain's [`CoveragePolicy`] port.
#[derive(Clone)]
pub struct PluginCoverage {
    source: Serving,
    budget: PluginBudget,
    config: Arc<BTreeMap<String, String>>,
}

impl std::fmt::Debug for PluginCoverage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginCoverage")
            .field("budget", &self.budget)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PluginCoverage {
    /// Over one loaded plugin version, with the plugin's `config` values.
    pub fn new(
        plugin: Arc<Plugin>,
        budget: PluginBudget,
        config: BTreeMap<String, String>,
    ) -> PluginCoverage {
        PluginCoverage {
            source: Serving::Fixed(plugin),
            budget,
            config: Arc::new(config),
        }
    }

    /// Over the version serving in `slot`.
    pub fn from_slot(
        slot: Arc<Slot>,
        budget: PluginBudget,
        config: BTreeMap<String, String>,
    ) -> PluginCoverage {
        PluginCoverage {
            source: Serving::Slot(slot),
            budget,
            config: Arc::new(config),
        }
    }

    fn plugin(&self) -> Result<Arc<Plugin>, CoverageError> {
        self.source
            .current()
            .map_err(|reason| CoverageError::Failed {
                policy: format!("plugin {}", self.source.name()),
                reason,
            })
    }
}

/// The 0.1.2 `patient-coverage` of the domain's.
pub fn to_wit(p: &PatientCoverage) -> wit::PatientCoverage {
    wit::PatientCoverage {
        insurer: p.insurer.clone(),
        active: p.active,
        plan: p.plan.clone(),
        not_eligible: match &p.eligibility {
            Eligibility::Eligible => None,
            Eligibility::NotEligible { reason } => Some(reason.clone()),
        },
        deductible_fen: p.deductible.0,
        annual_limit_fen: p.annual_limit.map(|l| l.0),
        year_to_date: wit::Usage {
            covered_fen: p.year_to_date.covered.0,
            deductible_met_fen: p.year_to_date.deductible_met.0,
        },
    }
}

/// A plugin's answer as the domain's result (not yet checked), under `policy`'s name.
pub fn from_wit(
    answer: wit::CoverageAnswer,
    policy: String,
) -> Result<CoverageResult, CoverageError> {
    let lines: Vec<CoverageLine> = answer
        .lines
        .into_iter()
        .map(|l| CoverageLine {
            code: l.code,
            covered: Fen(l.covered_fen),
            self_pay: Fen(l.self_pay_fen),
            reasons: vec![Reason::Plugin { text: l.reason }],
        })
        .collect();
    let covered = Fen::sum(lines.iter().map(|l| l.covered))?;
    let self_pay = Fen::sum(lines.iter().map(|l| l.self_pay))?;
    Ok(CoverageResult {
        lines,
        covered,
        self_pay,
        reasons: Vec::new(),
        deductible_met: Fen(answer.deductible_met_fen),
        policy,
    })
}

impl CoveragePolicy for PluginCoverage {
    fn name(&self) -> String {
        match self.plugin() {
            Ok(p) => format!("plugin {} (contract {})", p.label(), p.world_version()),
            Err(_) => format!("plugin {} (not loaded)", self.source.name()),
        }
    }

    fn cover(
        &self,
        items: &[CoverageItem],
        patient: &PatientCoverage,
    ) -> Result<CoverageResult, CoverageError> {
        let plugin = self.plugin()?;
        let policy = self.name();
        let call = CallOptions {
            limits: Limits {
                deadline: self.budget.deadline,
                fuel: self.budget.fuel,
                ..Limits::default()
            },
            config: self.config.clone(),
            now_ms: 0,
        };
        let wit_items: Vec<wit::FeeItem> = items
            .iter()
            .map(|i| wit::FeeItem {
                code: i.code.clone(),
                // A 自费 item is not the plugin's to cover: it sees it at 0 and the engine adds
                // its amount to the line's self-pay.
                amount_fen: if i.covered { i.amount.0 } else { 0 },
            })
            .collect();
        let patient_wit = to_wit(patient);
        let answer = crate::pool::blocking(|| plugin.cover(&wit_items, &patient_wit, &call))
            .map_err(|e| CoverageError::Failed {
                policy: policy.clone(),
                reason: e.to_string(),
            })?;
        let mut result = from_wit(answer, policy)?;
        for (line, item) in result.lines.iter_mut().zip(items) {
            if !item.covered {
                line.self_pay = line.self_pay.add(item.amount)?;
                line.reasons.push(Reason::SelfPayItem);
            }
        }
        result.self_pay = Fen::sum(result.lines.iter().map(|l| l.self_pay))?;
        Ok(result)
    }
}
