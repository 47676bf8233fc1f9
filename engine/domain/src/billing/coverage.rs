//! Insurance coverage of a bill: how much insurance pays and how much the patient pays, item
//! by item, with the reasons (issue 19 item 2).
//!
//! [`CoveragePolicy`] is the port: the built-in [`SimplePolicy`] implements it (80 % covered,
//! at most 150 yuan per visit, an inactive insurance covers nothing; a deductible and an annual
//! limit when the patient's coverage carries them), and the plugin host implements it over a
//! `coverage` plugin. Whatever a policy answers goes through [`CoverageResult::check`] before it
//! is used, so a faulty plugin cannot unbalance the books: every item has exactly one line,
//! `covered + self_pay = amount` on each, nothing negative, and insurance never pays more than
//! the patient's remaining annual limit.

use serde::{Deserialize, Serialize};

use super::fee::FeeBill;
use super::money::{Fen, MoneyError, Rate};

/// One item as coverage sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoverageItem {
    /// The item's local code (lines are matched by position, the code is for people).
    pub code: String,
    /// Its amount.
    pub amount: Fen,
    /// False for 自费 items.
    pub covered: bool,
}

impl CoverageItem {
    /// The items of a bill.
    pub fn of_bill(bill: &FeeBill) -> Vec<CoverageItem> {
        bill.lines
            .iter()
            .map(|l| CoverageItem {
                code: l.codes.local.clone(),
                amount: l.amount,
                covered: l.covered,
            })
            .collect()
    }
}

/// Whether this patient's insurance pays for this service at all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "eligibility", rename_all = "kebab-case")]
pub enum Eligibility {
    /// It does.
    Eligible,
    /// It does not, for this reason (the plan excludes remote consultations, the patient is
    /// insured elsewhere without 异地就医 filing, …).
    NotEligible {
        /// Why.
        reason: String,
    },
}

/// The patient's coverage as the insurer (1101) or the facility knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientCoverage {
    /// The insurer (`城镇职工医保`, a commercial insurer, …).
    pub insurer: String,
    /// The plan.
    pub plan: String,
    /// False when the insurance is suspended or lapsed: it covers nothing.
    pub active: bool,
    /// Whether it covers this service.
    pub eligibility: Eligibility,
    /// The deductible (起付线) per insurance year: what the patient pays alone before
    /// insurance pays; 0: none.
    #[serde(default)]
    pub deductible: Fen,
    /// The most insurance pays per insurance year (年度限额); none: no annual limit.
    #[serde(default)]
    pub annual_limit: Option<Fen>,
    /// What this insurance year has used so far (the store's books of settled visits).
    #[serde(default)]
    pub year_to_date: YearToDate,
}

/// A patient's usage of one insurance year: settled visits add to it, refunds take back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct YearToDate {
    /// What insurance has paid.
    pub covered: Fen,
    /// What the patient has paid towards the deductible.
    pub deductible_met: Fen,
}

impl PatientCoverage {
    /// What the patient still pays alone this year before insurance pays (起付线 left).
    pub fn deductible_remaining(&self) -> Fen {
        self.deductible
            .sub(self.year_to_date.deductible_met)
            .unwrap_or(Fen::ZERO)
            .max(Fen::ZERO)
    }

    /// What insurance may still pay this year (年度限额 left); none: no annual limit.
    pub fn annual_remaining(&self) -> Option<Fen> {
        self.annual_limit.map(|l| {
            l.sub(self.year_to_date.covered)
                .unwrap_or(Fen::ZERO)
                .max(Fen::ZERO)
        })
    }
}

/// Why a line is what it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Reason {
    /// The insurance is not active.
    Inactive,
    /// The insurance does not cover this service.
    NotEligible {
        /// Why.
        why: String,
    },
    /// A 自费 item.
    SelfPayItem,
    /// This much went to the deductible.
    Deductible {
        /// Amount.
        amount: Fen,
    },
    /// Insurance pays this share.
    Rate {
        /// The share.
        rate: Rate,
    },
    /// The per-visit cap limited what insurance pays.
    CapPerVisit {
        /// The cap.
        cap: Fen,
    },
    /// The annual limit left limited what insurance pays.
    AnnualLimit {
        /// What was left of it.
        remaining: Fen,
    },
    /// What a plugin said, as it said it.
    Plugin {
        /// The text.
        text: String,
    },
}

/// One item's coverage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoverageLine {
    /// The item's code.
    pub code: String,
    /// Paid by insurance.
    pub covered: Fen,
    /// Paid by the patient.
    pub self_pay: Fen,
    /// Why.
    pub reasons: Vec<Reason>,
}

/// The coverage of a bill.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoverageResult {
    /// One line per item, in the items' order.
    pub lines: Vec<CoverageLine>,
    /// The sum of the lines' `covered`.
    pub covered: Fen,
    /// The sum of the lines' `self_pay`.
    pub self_pay: Fen,
    /// What applied to the bill as a whole (deductible, cap, annual limit).
    pub reasons: Vec<Reason>,
    /// What of the year's deductible this visit met (added to the year's usage when it
    /// settles).
    #[serde(default)]
    pub deductible_met: Fen,
    /// The policy that decided (`simple`, `plugin coverage-basic@1.2.0`).
    pub policy: String,
}

/// Why coverage could not be computed, or why a policy's answer is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CoverageError {
    /// The policy failed (a plugin error, a trap).
    #[error("coverage policy {policy} failed: {reason}")]
    Failed {
        /// The policy.
        policy: String,
        /// Why.
        reason: String,
    },
    /// The policy's answer does not add up.
    #[error("coverage policy {policy} answered inconsistently: {problem}")]
    Inconsistent {
        /// The policy.
        policy: String,
        /// What is wrong.
        problem: String,
    },
    /// An amount overflowed.
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// The coverage port.
pub trait CoveragePolicy {
    /// The name recorded with each result.
    fn name(&self) -> String;

    /// The coverage of the items for this patient. Callers check the answer
    /// ([`CoverageResult::check`]).
    fn cover(
        &self,
        items: &[CoverageItem],
        patient: &PatientCoverage,
    ) -> Result<CoverageResult, CoverageError>;
}

impl CoverageResult {
    /// Refuses an answer that does not add up for these items and this patient.
    pub fn check(
        &self,
        items: &[CoverageItem],
        patient: &PatientCoverage,
    ) -> Result<(), CoverageError> {
        let bad = |problem: String| CoverageError::Inconsistent {
            policy: self.policy.clone(),
            problem,
        };
        if self.lines.len() != items.len() {
            return Err(bad(format!(
                "{} lines for {} items",
                self.lines.len(),
                items.len()
            )));
        }
        for (i, (line, item)) in self.lines.iter().zip(items).enumerate() {
            if line.covered.0 < 0 || line.self_pay.0 < 0 {
                return Err(bad(format!(
                    "line {i} ({}) has a negative amount",
                    item.code
                )));
            }
            if line.covered.add(line.self_pay)? != item.amount {
                return Err(bad(format!(
                    "line {i} ({}): covered {} + self-pay {} is not the amount {}",
                    item.code, line.covered, line.self_pay, item.amount
                )));
            }
            if !item.covered && !line.covered.is_zero() {
                return Err(bad(format!(
                    "line {i} ({}) is a self-pay item but {} is covered",
                    item.code, line.covered
                )));
            }
        }
        let covered = Fen::sum(self.lines.iter().map(|l| l.covered))?;
        let self_pay = Fen::sum(self.lines.iter().map(|l| l.self_pay))?;
        if covered != self.covered || self_pay != self.self_pay {
            return Err(bad("the totals are not the sums of the lines".into()));
        }
        if (!patient.active || patient.eligibility != Eligibility::Eligible) && !covered.is_zero() {
            return Err(bad(format!(
                "{covered} covered for an inactive or ineligible insurance"
            )));
        }
        if let Some(left) = patient.annual_remaining()
            && covered > left
        {
            return Err(bad(format!(
                "{covered} covered, over the annual limit left ({left})"
            )));
        }
        let deductible_left = patient.deductible_remaining();
        if self.deductible_met.0 < 0 || self.deductible_met > deductible_left {
            return Err(bad(format!(
                "{} of the deductible met, the deductible left is {deductible_left}",
                self.deductible_met
            )));
        }
        if self.deductible_met > self_pay {
            return Err(bad(format!(
                "{} of the deductible met, more than the patient pays ({self_pay})",
                self.deductible_met
            )));
        }
        Ok(())
    }
}

/// The built-in policy: `rate` of what is left after the deductible, at most `cap_per_visit`
/// and at most the annual limit left.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimplePolicy {
    /// Share insurance pays (default 80 %).
    pub rate: Rate,
    /// Most insurance pays per visit (default 150 yuan).
    pub cap_per_visit: Fen,
}

impl Default for SimplePolicy {
    fn default() -> Self {
        SimplePolicy {
            rate: Rate::basis_points(8_000).unwrap_or(Rate::NONE),
            cap_per_visit: Fen::yuan(150),
        }
    }
}

impl CoveragePolicy for SimplePolicy {
    fn name(&self) -> String {
        "simple".into()
    }

    fn cover(
        &self,
        items: &[CoverageItem],
        patient: &PatientCoverage,
    ) -> Result<CoverageResult, CoverageError> {
        for it in items {
            it.amount.check_non_negative(&format!("item {}", it.code))?;
        }
        let eligible_total = Fen::sum(items.iter().filter(|i| i.covered).map(|i| i.amount))?;
        let mut reasons = Vec::new();
        let whole: Option<Reason> = if !patient.active {
            Some(Reason::Inactive)
        } else if let Eligibility::NotEligible { reason } = &patient.eligibility {
            Some(Reason::NotEligible {
                why: reason.clone(),
            })
        } else {
            None
        };
        let mut deductible_met = Fen::ZERO;
        let covered = if let Some(r) = &whole {
            reasons.push(r.clone());
            Fen::ZERO
        } else {
            let deductible = patient.deductible_remaining().min(eligible_total);
            deductible_met = deductible;
            if !deductible.is_zero() {
                reasons.push(Reason::Deductible { amount: deductible });
            }
            let base = eligible_total.sub(deductible)?;
            let mut covered = self.rate.of(base);
            reasons.push(Reason::Rate { rate: self.rate });
            if covered > self.cap_per_visit {
                covered = self.cap_per_visit.max(Fen::ZERO);
                reasons.push(Reason::CapPerVisit {
                    cap: self.cap_per_visit,
                });
            }
            if let Some(left) = patient.annual_remaining()
                && covered > left
            {
                covered = left.max(Fen::ZERO);
                reasons.push(Reason::AnnualLimit { remaining: left });
            }
            covered
        };
        let shares = allocate(covered, items)?;
        let mut lines = Vec::with_capacity(items.len());
        for (item, share) in items.iter().zip(shares) {
            let line_reasons = match (&whole, item.covered) {
                (Some(r), _) => vec![r.clone()],
                (None, false) => vec![Reason::SelfPayItem],
                (None, true) => vec![Reason::Rate { rate: self.rate }],
            };
            lines.push(CoverageLine {
                code: item.code.clone(),
                covered: share,
                self_pay: item.amount.sub(share)?,
                reasons: line_reasons,
            });
        }
        let self_pay = Fen::sum(lines.iter().map(|l| l.self_pay))?;
        Ok(CoverageResult {
            lines,
            covered,
            self_pay,
            reasons,
            deductible_met,
            policy: self.name(),
        })
    }
}

/// Spreads `covered` (at most the covered items' total) over the covered items in proportion
/// to their amounts, exactly: each gets the floor of its share, and the fen left over go one
/// each to the largest remainders (earlier items first on ties). Self-pay items get 0.
pub fn allocate(covered: Fen, items: &[CoverageItem]) -> Result<Vec<Fen>, MoneyError> {
    let total = Fen::sum(items.iter().filter(|i| i.covered).map(|i| i.amount))?;
    let mut out = vec![Fen::ZERO; items.len()];
    if total.0 <= 0 || covered.0 <= 0 {
        return Ok(out);
    }
    let covered = covered.min(total);
    let mut given = 0i64;
    let mut rests: Vec<(i128, usize)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if !item.covered {
            continue;
        }
        let exact = i128::from(covered.0) * i128::from(item.amount.0);
        let share = exact / i128::from(total.0);
        let share = i64::try_from(share).map_err(|_| MoneyError::Overflow("an allocation"))?;
        out[i] = Fen(share);
        given += share;
        rests.push((exact % i128::from(total.0), i));
    }
    rests.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let left = covered.0 - given;
    for &(_, i) in rests.iter().take(usize::try_from(left).unwrap_or(0)) {
        out[i].0 += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
