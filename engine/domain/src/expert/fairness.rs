//! The fairness report (STANDARDS MATCH-30): how work is spread among experts per department
//! (share of the busiest decile, Gini coefficient) and how fast each requesting facility is
//! served (p50/p95 time to accept), with a flag for a facility whose p95 exceeds twice the
//! network median, so remote grassroots facilities are not systematically served more slowly.
//!
//! Pure arithmetic over counts the store aggregates for the period (e.g. a month). Percentiles
//! use the nearest-rank method: the p-th percentile of n sorted values is the value at rank
//! ⌈p/100 · n⌉.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How many consultations one expert took in one department over the period. Include experts
/// with zero: an idle qualified expert is part of the spread.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignmentCount {
    /// The expert.
    pub expert_id: String,
    /// The department.
    pub department: String,
    /// Consultations assigned.
    pub count: u64,
}

/// One accepted offer: which facility asked and how long acceptance took.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptTime {
    /// The requesting facility (邀请方).
    pub requesting_facility: String,
    /// Seconds from request to acceptance.
    pub seconds: u64,
}

/// The spread of work in one department.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepartmentFairness {
    /// The department.
    pub department: String,
    /// Experts counted (with zero assignments too).
    pub experts: usize,
    /// Total assignments.
    pub assignments: u64,
    /// Share (0–1) of the assignments taken by the busiest 10% of experts (at least one);
    /// none without assignments.
    pub top_decile_share: Option<f64>,
    /// Gini coefficient of assignments per expert: 0 even, (n−1)/n all to one; none without
    /// assignments.
    pub gini: Option<f64>,
}

/// How fast one requesting facility is served.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FacilityLatency {
    /// The requesting facility.
    pub facility: String,
    /// Accepted offers counted.
    pub accepted: usize,
    /// Median seconds to accept.
    pub p50_seconds: u64,
    /// 95th percentile seconds to accept.
    pub p95_seconds: u64,
    /// True when `p95_seconds` > 2 × the network median: alert (MATCH-30 AT).
    pub flagged: bool,
}

/// The report: per department, per facility, and the network median.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FairnessReport {
    /// Per department, by name.
    pub departments: Vec<DepartmentFairness>,
    /// Per requesting facility, by name.
    pub facilities: Vec<FacilityLatency>,
    /// Median seconds to accept over every accepted offer in the network; none without any.
    pub network_median_seconds: Option<u64>,
}

impl FairnessReport {
    /// The facilities flagged for slow service.
    pub fn flagged_facilities(&self) -> Vec<&str> {
        self.facilities
            .iter()
            .filter(|f| f.flagged)
            .map(|f| f.facility.as_str())
            .collect()
    }
}

/// The Gini coefficient of non-negative amounts: 0 when all are equal, (n−1)/n when one holds
/// everything; none when empty or all zero.
pub fn gini(values: &[u64]) -> Option<f64> {
    let total: f64 = values.iter().map(|&v| v as f64).sum();
    if values.is_empty() || total == 0.0 {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let n = sorted.len() as f64;
    // G = 2 Σ i·x_i / (n Σ x) − (n + 1) / n, with i = 1…n over the ascending values.
    let weighted: f64 = sorted
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as f64 + 1.0) * v as f64)
        .sum();
    Some(2.0 * weighted / (n * total) - (n + 1.0) / n)
}

/// The share of the total held by the largest 10% of the values (⌈n/10⌉, at least one); none
/// when empty or all zero.
pub fn top_decile_share(values: &[u64]) -> Option<f64> {
    let total: u64 = values.iter().sum();
    if values.is_empty() || total == 0 {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let k = values.len().div_ceil(10).max(1);
    let top: u64 = sorted.iter().take(k).sum();
    Some(top as f64 / total as f64)
}

/// The nearest-rank `p`-th percentile (0 < p ≤ 100) of ascending values; none when empty.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Builds the report. Rows of the same expert and department are added up.
pub fn fairness_report(assignments: &[AssignmentCount], accepts: &[AcceptTime]) -> FairnessReport {
    let mut per_dept: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    for a in assignments {
        *per_dept
            .entry(a.department.trim())
            .or_default()
            .entry(a.expert_id.trim())
            .or_default() += a.count;
    }
    let departments = per_dept
        .into_iter()
        .map(|(department, experts)| {
            let counts: Vec<u64> = experts.into_values().collect();
            DepartmentFairness {
                department: department.to_owned(),
                experts: counts.len(),
                assignments: counts.iter().sum(),
                top_decile_share: top_decile_share(&counts),
                gini: gini(&counts),
            }
        })
        .collect();

    let mut all: Vec<u64> = accepts.iter().map(|a| a.seconds).collect();
    all.sort_unstable();
    let network_median = percentile(&all, 50.0);
    let mut per_facility: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for a in accepts {
        per_facility
            .entry(a.requesting_facility.trim())
            .or_default()
            .push(a.seconds);
    }
    let facilities = per_facility
        .into_iter()
        .filter_map(|(facility, mut secs)| {
            secs.sort_unstable();
            let p50 = percentile(&secs, 50.0)?;
            let p95 = percentile(&secs, 95.0)?;
            Some(FacilityLatency {
                facility: facility.to_owned(),
                accepted: secs.len(),
                p50_seconds: p50,
                p95_seconds: p95,
                flagged: network_median.is_some_and(|m| p95 as f64 > 2.0 * m as f64),
            })
        })
        .collect();
    FairnessReport {
        departments,
        facilities,
        network_median_seconds: network_median,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn gini_of_known_distributions() {
        assert_eq!(gini(&[5, 5, 5, 5]), Some(0.0));
        // One of four holds everything: (n − 1) / n.
        assert!(close(gini(&[0, 0, 0, 8]).unwrap(), 0.75));
        assert!(close(gini(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 1]).unwrap(), 0.9));
        // 1, 2, 3, 4: mean absolute difference 20/16 = 1.25, / (2 × mean 2.5) = 0.25.
        assert!(close(gini(&[4, 1, 3, 2]).unwrap(), 0.25));
        // 1, 3: |1−3|·2 / (2·4·2) = 0.25.
        assert!(close(gini(&[1, 3]).unwrap(), 0.25));
        assert_eq!(gini(&[]), None);
        assert_eq!(gini(&[0, 0]), None);
    }

    #[test]
    fn top_decile() {
        let ten_equal = [3u64; 10];
        assert!(close(top_decile_share(&ten_equal).unwrap(), 0.1));
        let mut skewed = vec![1u64; 19];
        skewed.push(81);
        // 20 experts: the top two hold 81 + 1 of 100.
        assert!(close(top_decile_share(&skewed).unwrap(), 0.82));
        assert!(close(top_decile_share(&[2, 6]).unwrap(), 0.75));
        assert_eq!(top_decile_share(&[0, 0]), None);
    }

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u64> = (1..=20).collect();
        assert_eq!(percentile(&v, 50.0), Some(10));
        assert_eq!(percentile(&v, 95.0), Some(19));
        assert_eq!(percentile(&v, 100.0), Some(20));
        assert_eq!(percentile(&[7], 95.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn the_report_per_department_and_facility() {
        let a = |e: &str, d: &str, c: u64| AssignmentCount {
            expert_id: e.into(),
            department: d.into(),
            count: c,
        };
        let rows = [
            a("e1", "03.02", 10),
            a("e2", "03.02", 10),
            a("e1", "03.02", 0),
            a("e3", "04", 0),
            a("e4", "04", 6),
        ];
        let t = |f: &str, s: u64| AcceptTime {
            requesting_facility: f.into(),
            seconds: s,
        };
        let mut accepts: Vec<AcceptTime> = (0..40).map(|i| t("H-CITY", 100 + i)).collect();
        accepts.extend((0..10).map(|i| t("H-COUNTY", 150 + i * 10)));
        accepts.push(t("H-COUNTY", 900));
        let r = fairness_report(&rows, &accepts);
        assert_eq!(r.departments.len(), 2);
        let d = &r.departments[0];
        assert_eq!(
            (d.department.as_str(), d.experts, d.assignments),
            ("03.02", 2, 20)
        );
        assert_eq!(d.gini, Some(0.0));
        let d = &r.departments[1];
        assert!(close(d.gini.unwrap(), 0.5) && d.top_decile_share == Some(1.0));
        // 51 values; the median is the 26th smallest.
        assert_eq!(r.network_median_seconds, Some(125));
        let city = &r.facilities[0];
        assert_eq!(
            (city.p50_seconds, city.p95_seconds, city.flagged),
            (119, 137, false)
        );
        let county = &r.facilities[1];
        assert_eq!((county.accepted, county.p95_seconds), (11, 900));
        assert!(county.flagged);
        assert_eq!(r.flagged_facilities(), ["H-COUNTY"]);
    }
}
