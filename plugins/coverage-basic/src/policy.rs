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

/// Covers fee items in order: `amount × rate` (rounded down to the fen), while the visit's
/// total covered stays within the cap; an inactive insurance covers nothing.
pub fn cover(items: &[(String, i64)], active: bool, p: Policy) -> Result<Vec<Line>, String> {
    let mut left = p.cap_fen;
    let pct = format!("{}%", yuan(p.rate_bp).trim_end_matches(".00"));
    items
        .iter()
        .enumerate()
        .map(|(i, (code, amount))| {
            if *amount < 0 {
                return Err(format!(
                    "items[{i}] ({code}): amount_fen {amount} is negative"
                ));
            }
            if !active {
                return Ok(Line {
                    code: code.clone(),
                    covered_fen: 0,
                    self_pay_fen: *amount,
                    reason: "insurance inactive: not covered".into(),
                });
            }
            let by_rate = amount * p.rate_bp / 10_000;
            let (covered, reason) = match left {
                Some(l) if by_rate > l => (
                    l,
                    if l == 0 {
                        format!(
                            "per-visit cap of {} yuan reached",
                            yuan(p.cap_fen.unwrap_or(0))
                        )
                    } else {
                        format!(
                            "{pct} covered, capped at {} yuan per visit",
                            yuan(p.cap_fen.unwrap_or(0))
                        )
                    },
                ),
                _ => (by_rate, format!("{pct} covered")),
            };
            if let Some(l) = left.as_mut() {
                *l -= covered;
            }
            Ok(Line {
                code: code.clone(),
                covered_fen: covered,
                self_pay_fen: amount - covered,
                reason,
            })
        })
        .collect()
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
            true,
            p,
        )
        .unwrap();
        assert_eq!(lines[0].covered_fen, 8_000);
        assert_eq!(lines[1].covered_fen, 7_000);
        assert_eq!(lines[2].covered_fen, 0);
        assert_eq!(lines[2].self_pay_fen, 999);
        assert!(Policy::from_config(None, None).is_err());
    }
}
