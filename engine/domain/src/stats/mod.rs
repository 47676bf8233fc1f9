//! Consultation statistics (issue 15 item 9, 数据分析): per requesting facility, per
//! department and per facility × department — volume, request→accept time (median and p90),
//! completion rate, SLA breaches — for `GET /api/stats` and the scheduled CSV export
//! ([`to_csv`]).
//!
//! Input is one [`ConsultationFacts`] per consultation (the store projects them from the
//! timeline); only consultations created inside the [`StatsPeriod`] count. Definitions:
//!
//! * **volume**: consultations created in the period;
//! * **accept time**: `accepted_at − created_at` in seconds, over the accepted ones;
//!   percentiles by the nearest-rank method (the p-th percentile of n sorted values is the
//!   value at rank ⌈p/100 · n⌉; the median of an even count is the lower middle value), as the
//!   fairness report (MATCH-30) computes them. The platform target is a p90 under 15 minutes;
//! * **completion rate**: completed ÷ closed (completed + cancelled + failed); open
//!   consultations are reported (`open`) but do not lower the rate; none when nothing closed;
//! * **SLA breaches**: consultations with `sla_breached` set (an offer timed out, MATCH-20).
//!
//! No statistic is per prescriber: CN-20 forbids 统方 for commercial purposes, so none exists
//! here to leak.

mod csv;
mod project;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::expert::fairness::percentile;

pub use csv::{CSV_HEADER, to_csv};

/// One consultation's timeline facts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsultationFacts {
    /// The consultation.
    pub consultation_id: String,
    /// The requesting facility (邀请方).
    pub facility: String,
    /// The requested department.
    pub department: String,
    /// When it was requested.
    pub created_at: DateTime<Utc>,
    /// When an expert accepted, if one did.
    #[serde(default)]
    pub accepted_at: Option<DateTime<Utc>>,
    /// When it was completed, if it was.
    #[serde(default)]
    pub completed_at: Option<DateTime<Utc>>,
    /// Cancelled.
    #[serde(default)]
    pub cancelled: bool,
    /// Failed (SLA exhausted, technical failure, no-show).
    #[serde(default)]
    pub failed: bool,
    /// An SLA was breached along the way.
    #[serde(default)]
    pub sla_breached: bool,
}

/// The consultations counted: those created in `[from, to)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsPeriod {
    /// Start (inclusive).
    pub from: DateTime<Utc>,
    /// End (exclusive).
    pub to: DateTime<Utc>,
}

/// What a row aggregates over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Every consultation in the period.
    All,
    /// One requesting facility.
    Facility,
    /// One department, across facilities.
    Department,
    /// One department of one facility.
    FacilityDepartment,
}

impl Scope {
    /// The kebab-case name (the CSV's `scope` column).
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::All => "all",
            Scope::Facility => "facility",
            Scope::Department => "department",
            Scope::FacilityDepartment => "facility-department",
        }
    }
}

/// One row of the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatsRow {
    /// What the row covers.
    pub scope: Scope,
    /// The facility (facility and facility-department rows).
    pub facility: Option<String>,
    /// The department (department and facility-department rows).
    pub department: Option<String>,
    /// Consultations created in the period.
    pub volume: u64,
    /// Of which accepted by an expert.
    pub accepted: u64,
    /// Median request→accept seconds; none when none was accepted.
    pub median_accept_seconds: Option<u64>,
    /// 90th percentile request→accept seconds.
    pub p90_accept_seconds: Option<u64>,
    /// Completed.
    pub completed: u64,
    /// Cancelled.
    pub cancelled: u64,
    /// Failed.
    pub failed: u64,
    /// Neither completed, cancelled nor failed.
    pub open: u64,
    /// completed ÷ (completed + cancelled + failed); none when nothing closed.
    pub completion_rate: Option<f64>,
    /// Consultations with an SLA breach.
    pub sla_breaches: u64,
}

/// Why the facts cannot be aggregated; names the consultation and the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StatsError {
    /// A fact contradicts itself.
    #[error("consultation `{consultation}`: {field}: {problem}")]
    Invalid {
        /// The consultation.
        consultation: String,
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The same consultation twice.
    #[error("consultation `{0}` appears twice")]
    Duplicate(String),
    /// The period ends before it starts.
    #[error("period: to {to} is not after from {from}")]
    Period {
        /// Start.
        from: DateTime<Utc>,
        /// End.
        to: DateTime<Utc>,
    },
}

impl ConsultationFacts {
    /// Checks what the timeline guarantees: ids present, times in order, one outcome.
    pub fn validate(&self) -> Result<(), StatsError> {
        let bad = |field, problem: String| StatsError::Invalid {
            consultation: self.consultation_id.clone(),
            field,
            problem,
        };
        for (field, value) in [
            ("consultation_id", &self.consultation_id),
            ("facility", &self.facility),
            ("department", &self.department),
        ] {
            if value.trim().is_empty() {
                return Err(bad(field, "is blank".into()));
            }
        }
        for (field, at) in [
            ("accepted_at", self.accepted_at),
            ("completed_at", self.completed_at),
        ] {
            if let Some(at) = at
                && at < self.created_at
            {
                return Err(bad(
                    field,
                    format!("{at} is before created_at {}", self.created_at),
                ));
            }
        }
        let outcomes = [self.completed_at.is_some(), self.cancelled, self.failed];
        if outcomes.iter().filter(|o| **o).count() > 1 {
            return Err(bad(
                "outcome",
                "more than one of completed_at, cancelled, failed".into(),
            ));
        }
        if self.completed_at.is_some() && self.accepted_at.is_none() {
            return Err(bad("accepted_at", "completed but never accepted".into()));
        }
        Ok(())
    }

    fn accept_seconds(&self) -> Option<u64> {
        self.accepted_at
            .map(|a| u64::try_from((a - self.created_at).num_seconds()).unwrap_or(0))
    }
}

/// The running totals of one row.
#[derive(Default)]
struct Acc {
    volume: u64,
    accept_seconds: Vec<u64>,
    completed: u64,
    cancelled: u64,
    failed: u64,
    sla_breaches: u64,
}

impl Acc {
    fn add(&mut self, f: &ConsultationFacts) {
        self.volume += 1;
        self.accept_seconds.extend(f.accept_seconds());
        self.completed += u64::from(f.completed_at.is_some());
        self.cancelled += u64::from(f.cancelled);
        self.failed += u64::from(f.failed);
        self.sla_breaches += u64::from(f.sla_breached);
    }

    fn row(mut self, scope: Scope, facility: Option<&str>, department: Option<&str>) -> StatsRow {
        self.accept_seconds.sort_unstable();
        let closed = self.completed + self.cancelled + self.failed;
        StatsRow {
            scope,
            facility: facility.map(str::to_owned),
            department: department.map(str::to_owned),
            volume: self.volume,
            accepted: self.accept_seconds.len() as u64,
            median_accept_seconds: percentile(&self.accept_seconds, 50.0),
            p90_accept_seconds: percentile(&self.accept_seconds, 90.0),
            completed: self.completed,
            cancelled: self.cancelled,
            failed: self.failed,
            open: self.volume - closed,
            completion_rate: (closed > 0).then(|| self.completed as f64 / closed as f64),
            sla_breaches: self.sla_breaches,
        }
    }
}

/// The report over the consultations created in `period`: the `all` row, then facility rows,
/// department rows and facility × department rows, each group sorted by its keys. Every fact
/// is validated, in the period or not; a bad one fails the whole report with its id.
pub fn compute_stats(
    facts: &[ConsultationFacts],
    period: StatsPeriod,
) -> Result<Vec<StatsRow>, StatsError> {
    if period.to <= period.from {
        return Err(StatsError::Period {
            from: period.from,
            to: period.to,
        });
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut all = Acc::default();
    let mut by_facility: BTreeMap<&str, Acc> = BTreeMap::new();
    let mut by_department: BTreeMap<&str, Acc> = BTreeMap::new();
    let mut by_pair: BTreeMap<(&str, &str), Acc> = BTreeMap::new();
    for f in facts {
        f.validate()?;
        if !seen.insert(f.consultation_id.trim()) {
            return Err(StatsError::Duplicate(f.consultation_id.clone()));
        }
        if f.created_at < period.from || f.created_at >= period.to {
            continue;
        }
        let (facility, department) = (f.facility.trim(), f.department.trim());
        all.add(f);
        by_facility.entry(facility).or_default().add(f);
        by_department.entry(department).or_default().add(f);
        by_pair.entry((facility, department)).or_default().add(f);
    }
    let mut rows = vec![all.row(Scope::All, None, None)];
    rows.extend(
        by_facility
            .into_iter()
            .map(|(k, acc)| acc.row(Scope::Facility, Some(k), None)),
    );
    rows.extend(
        by_department
            .into_iter()
            .map(|(k, acc)| acc.row(Scope::Department, None, Some(k))),
    );
    rows.extend(
        by_pair
            .into_iter()
            .map(|((f, d), acc)| acc.row(Scope::FacilityDepartment, Some(f), Some(d))),
    );
    Ok(rows)
}
