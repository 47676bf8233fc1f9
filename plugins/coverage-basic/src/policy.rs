//! The policy in plain Rust: money in integer fen, the rate in basis points, no floating point.

/// The step's config: `rate` (a percentage: `80`, `80%`, `62.5`) and `cap_fen` (the most the
/// insurer pays per visit; absent: no cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// 8000 = 80 %.
    pub rate_bp: i64,
    pub cap_fen: Option<i64>,
}

impl Policy {
    pub fn from_config(rate: Option<&str>, cap: Option<&str>) -> Result<Policy, String> {
        let rate = rate.ok_or("config rate is missing (a percentage, e.g. 80)")?;
        let rate_bp = percent_bp(rate)
            .ok_or_else(|| format!("config rate {rate:?}: a percentage from 0 to 100, e.g. 80"))?;
        let cap_fen = match cap {
            None => None,
            Some(c) => Some(
                c.trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|v| *v >= 0)
                    .ok_or_else(|| {
                        format!("config cap_fen {c:?}: a whole number of fen, e.g. 15000")
                    })?,
            ),
        };
        Ok(Policy { rate_bp, cap_fen })
    }
}

/// `80`, `80%`, `62.5` → basis points (two decimals at most).
fn percent_bp(s: &str) -> Option<i64> {
    let s = s.trim().trim_end_matches('%').trim();
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 2 || whole.is_empty() {
        return None;
    }
    let w: i64 = whole.parse().ok()?;
    let f: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<2}").parse().ok()?
    };
    let bp = w * 100 + f;
    (0..=10_000).contains(&bp).then_some(bp)
}

/// One line of the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub code: String,
    pub covered_fen: i64,
    pub self_pay_fen: i64,
    pub reason: String,
}

fn yuan(fen: i64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

/// The patient as the policy sees it: whether the insurance pays at all, the plan's yearly
/// terms and what this year has used so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patient {
    pub active: bool,
    /// Why the insurance does not cover this service; none: it does.
    pub not_eligible: Option<String>,
    /// The deductible per insurance year (0: none).
    pub deductible_fen: i64,
    /// The most insurance pays per insurance year; none: no limit.
    pub annual_limit_fen: Option<i64>,
    /// Covered so far this year.
    pub covered_ytd_fen: i64,
    /// Deductible met so far this year.
    pub deductible_met_ytd_fen: i64,
}

impl Patient {
    /// An active, eligible insurance without yearly terms.
    pub fn active() -> Patient {
        Patient {
            active: true,
            ..Patient::default()
        }
    }
}

/// The answer: one line per item and what of the deductible this visit met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub lines: Vec<Line>,
    pub deductible_met_fen: i64,
}

/// Covers fee items in order: first what is left of the year's deductible is the patient's,
/// then `rest × rate` (rounded down to the fen), while the visit's total covered stays within
/// the per-visit cap and the year's total within the annual limit; an inactive or ineligible
/// insurance covers nothing.
pub fn cover(items: &[(String, i64)], patient: &Patient, p: Policy) -> Result<Answer, String> {
    let mut cap_left = p.cap_fen;
    let mut deductible_left = (patient.deductible_fen - patient.deductible_met_ytd_fen).max(0);
    let mut annual_left = patient
        .annual_limit_fen
        .map(|l| (l - patient.covered_ytd_fen).max(0));
    let mut deductible_met = 0;
    let pct = format!("{}%", yuan(p.rate_bp).trim_end_matches(".00"));
    let lines = items
        .iter()
        .enumerate()
        .map(|(i, (code, amount))| {
            if *amount < 0 {
                return Err(format!(
                    "items[{i}] ({code}): amount_fen {amount} is negative"
                ));
            }
            let none = |reason: String| Line {
                code: code.clone(),
                covered_fen: 0,
                self_pay_fen: *amount,
                reason,
            };
            if !patient.active {
                return Ok(none("insurance inactive: not covered".into()));
            }
            if let Some(why) = &patient.not_eligible {
                return Ok(none(format!("not eligible: {why}")));
            }
            let mut reasons = Vec::new();
            let to_deductible = deductible_left.min(*amount);
            if to_deductible > 0 {
                deductible_left -= to_deductible;
                deductible_met += to_deductible;
                reasons.push(format!("{} yuan to the deductible", yuan(to_deductible)));
            }
            let by_rate = (amount - to_deductible) * p.rate_bp / 10_000;
            let mut covered = by_rate;
            match cap_left {
                Some(l) if covered > l => {
                    covered = l;
                    reasons.push(if l == 0 {
                        format!(
                            "per-visit cap of {} yuan reached",
                            yuan(p.cap_fen.unwrap_or(0))
                        )
                    } else {
                        format!(
                            "{pct} covered, capped at {} yuan per visit",
                            yuan(p.cap_fen.unwrap_or(0))
                        )
                    });
                }
                _ => reasons.push(format!("{pct} covered")),
            }
            if let Some(l) = annual_left
                && covered > l
            {
                covered = l;
                reasons.push(if l == 0 {
                    "annual limit reached".to_owned()
                } else {
                    format!("annual limit: {} yuan left", yuan(l))
                });
            }
            if let Some(l) = cap_left.as_mut() {
                *l -= covered;
            }
            if let Some(l) = annual_left.as_mut() {
                *l -= covered;
            }
            Ok(Line {
                code: code.clone(),
                covered_fen: covered,
                self_pay_fen: amount - covered,
                reason: reasons.join("; "),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Answer {
        lines,
        deductible_met_fen: deductible_met,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_caps() {
        assert_eq!(percent_bp("80"), Some(8000));
        assert_eq!(percent_bp("62.5%"), Some(6250));
        assert_eq!(percent_bp("101"), None);
        assert_eq!(percent_bp("0.8.1"), None);
        let p = Policy::from_config(Some("80"), Some("15000")).unwrap();
        let lines = cover(
            &[
                ("A".into(), 10_000),
                ("B".into(), 10_000),
                ("C".into(), 999),
            ],
            &Patient::active(),
            p,
        )
        .unwrap()
        .lines;
        assert_eq!(lines[0].covered_fen, 8_000);
        assert_eq!(lines[1].covered_fen, 7_000);
        assert_eq!(lines[2].covered_fen, 0);
        assert_eq!(lines[2].self_pay_fen, 999);
        assert!(Policy::from_config(None, None).is_err());
    }

    #[test]
    fn deductible_then_rate_then_annual_limit() {
        let p = Policy::from_config(Some("80"), Some("15000")).unwrap();
        let patient = Patient {
            deductible_fen: 8_000,
            deductible_met_ytd_fen: 3_000,
            ..Patient::active()
        };
        // 50 yuan of the deductible left, 80 % of the other 50.
        let a = cover(&[("A".into(), 10_000)], &patient, p).unwrap();
        assert_eq!(a.deductible_met_fen, 5_000);
        assert_eq!(
            (a.lines[0].covered_fen, a.lines[0].self_pay_fen),
            (4_000, 6_000)
        );
        assert_eq!(
            a.lines[0].reason,
            "50.00 yuan to the deductible; 80% covered"
        );
        let patient = Patient {
            annual_limit_fen: Some(50_000),
            covered_ytd_fen: 49_000,
            ..Patient::active()
        };
        let a = cover(&[("A".into(), 10_000), ("B".into(), 100)], &patient, p).unwrap();
        assert_eq!(a.lines[0].covered_fen, 1_000);
        assert_eq!(a.lines[1].covered_fen, 0);
        assert!(
            a.lines[1].reason.ends_with("annual limit reached"),
            "{}",
            a.lines[1].reason
        );
        let patient = Patient {
            not_eligible: Some("plan excludes remote consultations".into()),
            ..Patient::active()
        };
        let a = cover(&[("A".into(), 10_000)], &patient, p).unwrap();
        assert_eq!(a.lines[0].covered_fen, 0);
        assert_eq!(a.deductible_met_fen, 0);
    }

    /// Visit after visit, the year's usage carried over: covered + self-pay is each amount,
    /// the year's covered never passes the annual limit, the deductible is met once.
    #[test]
    fn the_annual_limit_holds_across_visits() {
        let p = Policy::from_config(Some("80"), Some("15000")).unwrap();
        let mut patient = Patient {
            deductible_fen: 20_000,
            annual_limit_fen: Some(40_000),
            ..Patient::active()
        };
        let mut amount = 777;
        for _ in 0..40 {
            amount = (amount * 7919 + 13) % 30_000;
            let items = [("A".to_owned(), amount), ("B".to_owned(), amount / 3)];
            let a = cover(&items, &patient, p).unwrap();
            for (l, (_, amt)) in a.lines.iter().zip(&items) {
                assert_eq!(l.covered_fen + l.self_pay_fen, *amt);
                assert!(l.covered_fen >= 0 && l.self_pay_fen >= 0);
            }
            let covered: i64 = a.lines.iter().map(|l| l.covered_fen).sum();
            assert!(covered <= 15_000);
            patient.covered_ytd_fen += covered;
            patient.deductible_met_ytd_fen += a.deductible_met_fen;
            assert!(patient.covered_ytd_fen <= 40_000);
            assert!(patient.deductible_met_ytd_fen <= 20_000);
        }
        assert_eq!(patient.covered_ytd_fen, 40_000);
        assert_eq!(patient.deductible_met_ytd_fen, 20_000);
    }
}
