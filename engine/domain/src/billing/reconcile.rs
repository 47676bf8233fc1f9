//! Daily reconciliation (STANDARDS CN-62: 3201 totals, 3202 details): the local settlements of
//! a day against the platform's statement file, as a report of what does not agree.
//!
//! The statement is CSV with a header line naming at least these columns (any order, more are
//! ignored): `setl_id`, `medfee_sumamt`, `fund_pay_sumamt`, `acct_pay`, `psn_cash_pay`,
//! `refd_setl_flag` (`0` in force, `1` revoked). Amounts are yuan with at most two decimals,
//! read exactly. A bad line is reported as `file:line:column` with every other problem.
//!
//! [`reconcile`] pairs rows by `setl_id` and reports settlements missing on either side (a
//! revoked row of the platform's without a local one agrees: nothing is in force there),
//! amounts that differ (each field), and a settlement in force on one side and revoked on the
//! other; with the totals of both sides (what 3201 compares).

use serde::{Deserialize, Serialize};

use super::money::Fen;

/// A local settlement of the day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalRow {
    /// The engine's settlement id.
    pub settlement_id: String,
    /// The platform's `setl_id` (none for self-pay, which is not reconciled).
    pub setl_id: Option<String>,
    /// Amounts: total, fund, account, cash.
    pub amounts: [Fen; 4],
    /// Cancelled (2208) since.
    pub revoked: bool,
}

/// A row of the platform's statement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementRow {
    /// `setl_id`.
    pub setl_id: String,
    /// Amounts: total, fund, account, cash.
    pub amounts: [Fen; 4],
    /// `refd_setl_flag` = 1.
    pub revoked: bool,
}

/// What does not agree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Discrepancy {
    /// Settled here, not in the statement.
    MissingAtPlatform {
        /// The engine's settlement.
        settlement_id: String,
        /// Its `setl_id`.
        setl_id: String,
    },
    /// In the statement, not settled here.
    MissingLocally {
        /// The platform's `setl_id`.
        setl_id: String,
    },
    /// An amount differs.
    AmountMismatch {
        /// The platform's `setl_id`.
        setl_id: String,
        /// `medfee_sumamt`, `fund_pay_sumamt`, `acct_pay` or `psn_cash_pay`.
        field: String,
        /// Here.
        local: Fen,
        /// There.
        platform: Fen,
    },
    /// Revoked on one side only.
    StateMismatch {
        /// The platform's `setl_id`.
        setl_id: String,
        /// Revoked here.
        local_revoked: bool,
        /// Revoked there.
        platform_revoked: bool,
    },
}

/// The reconciliation of one day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Settlements on both sides that agree.
    pub matched: usize,
    /// The local totals in force: total, fund, account, cash (3201).
    pub local_totals: [Fen; 4],
    /// The platform's totals in force.
    pub platform_totals: [Fen; 4],
    /// What does not agree; empty when the day balances.
    pub discrepancies: Vec<Discrepancy>,
}

/// The statement columns, in the amounts' order.
pub const AMOUNT_COLUMNS: [&str; 4] = [
    "medfee_sumamt",
    "fund_pay_sumamt",
    "acct_pay",
    "psn_cash_pay",
];

/// Reads a statement file; every problem as `file:line:column: message`.
pub fn parse_statement(file: &str, csv: &str) -> Result<Vec<StatementRow>, Vec<String>> {
    let mut lines = csv
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err(vec![format!("{file}:1:1: error: the statement is empty")]);
    };
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    let col = |name: &str| names.iter().position(|n| *n == name);
    let mut problems = Vec::new();
    let mut wanted = vec!["setl_id", "refd_setl_flag"];
    wanted.extend(AMOUNT_COLUMNS);
    for w in &wanted {
        if col(w).is_none() {
            problems.push(format!("{file}:1:1: error: no column `{w}` in the header"));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let idx = |n: &str| col(n).unwrap_or(0);
    let mut rows = Vec::new();
    for (i, line) in lines {
        let cells: Vec<&str> = line.split(',').collect();
        // The 1-based column where cell `c` starts.
        let column = |c: usize| {
            cells[..c.min(cells.len())]
                .iter()
                .map(|x| x.chars().count() + 1)
                .sum::<usize>()
                + 1
        };
        let at = |c: usize, m: String| format!("{file}:{}:{}: error: {m}", i + 1, column(c));
        let cell = |c: usize| cells.get(c).map(|x| x.trim());
        let setl_id = match cell(idx("setl_id")) {
            Some(s) if !s.is_empty() => s.to_owned(),
            _ => {
                problems.push(at(idx("setl_id"), "setl_id is blank".into()));
                continue;
            }
        };
        let mut amounts = [Fen::ZERO; 4];
        for (k, name) in AMOUNT_COLUMNS.iter().enumerate() {
            let c = idx(name);
            match cell(c).map(str::parse::<Fen>) {
                Some(Ok(f)) => amounts[k] = f,
                Some(Err(e)) => problems.push(at(c, format!("{name}: {e}"))),
                None => problems.push(at(c, format!("{name} is missing"))),
            }
        }
        let c = idx("refd_setl_flag");
        let revoked = match cell(c) {
            Some("0") => false,
            Some("1") => true,
            other => {
                problems.push(at(
                    c,
                    format!(
                        "refd_setl_flag {:?} is neither 0 nor 1",
                        other.unwrap_or("")
                    ),
                ));
                false
            }
        };
        rows.push(StatementRow {
            setl_id,
            amounts,
            revoked,
        });
    }
    if problems.is_empty() {
        Ok(rows)
    } else {
        Err(problems)
    }
}

fn add(a: &mut [Fen; 4], b: &[Fen; 4]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x = x.add(*y).unwrap_or(*x);
    }
}

/// Pairs the day's local settlements with the statement's rows.
pub fn reconcile(local: &[LocalRow], statement: &[StatementRow]) -> Report {
    let mut report = Report {
        matched: 0,
        local_totals: [Fen::ZERO; 4],
        platform_totals: [Fen::ZERO; 4],
        discrepancies: Vec::new(),
    };
    for s in statement.iter().filter(|s| !s.revoked) {
        add(&mut report.platform_totals, &s.amounts);
    }
    let insured: Vec<&LocalRow> = local.iter().filter(|l| l.setl_id.is_some()).collect();
    for l in insured.iter().filter(|l| !l.revoked) {
        add(&mut report.local_totals, &l.amounts);
    }
    for l in &insured {
        let id = l.setl_id.clone().unwrap_or_default();
        let Some(s) = statement.iter().find(|s| s.setl_id == id) else {
            report.discrepancies.push(Discrepancy::MissingAtPlatform {
                settlement_id: l.settlement_id.clone(),
                setl_id: id,
            });
            continue;
        };
        let before = report.discrepancies.len();
        for (k, field) in AMOUNT_COLUMNS.iter().enumerate() {
            if l.amounts[k] != s.amounts[k] {
                report.discrepancies.push(Discrepancy::AmountMismatch {
                    setl_id: id.clone(),
                    field: (*field).to_owned(),
                    local: l.amounts[k],
                    platform: s.amounts[k],
                });
            }
        }
        if l.revoked != s.revoked {
            report.discrepancies.push(Discrepancy::StateMismatch {
                setl_id: id.clone(),
                local_revoked: l.revoked,
                platform_revoked: s.revoked,
            });
        }
        if report.discrepancies.len() == before {
            report.matched += 1;
        }
    }
    // A revoked or reversed settlement of the platform's that is not here agrees: nothing is in
    // force on either side.
    for s in statement.iter().filter(|s| !s.revoked) {
        if !insured
            .iter()
            .any(|l| l.setl_id.as_deref() == Some(s.setl_id.as_str()))
        {
            report.discrepancies.push(Discrepancy::MissingLocally {
                setl_id: s.setl_id.clone(),
            });
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(id: &str, setl: &str, total: i64, revoked: bool) -> LocalRow {
        LocalRow {
            settlement_id: id.into(),
            setl_id: Some(setl.into()),
            amounts: [Fen(total), Fen(15_000), Fen::ZERO, Fen(total - 15_000)],
            revoked,
        }
    }

    const CSV: &str = "setl_id,mdtrt_id,medfee_sumamt,fund_pay_sumamt,acct_pay,psn_cash_pay,refd_setl_flag\n\
        SETL1,MD1,250.00,150.00,0,100.00,0\n\
        SETL2,MD2,300,150,0,150,0\n\
        SETL4,MD4,200.00,150.00,0.00,50.00,0\n\
        SETL5,MD5,250.00,150.00,0.00,100.00,1\n";

    #[test]
    fn planted_discrepancies_are_found() {
        let statement = parse_statement("3202.csv", CSV).unwrap();
        let here = vec![
            local("S1", "SETL1", 25_000, false),
            // The platform has 300 yuan for SETL2.
            local("S2", "SETL2", 35_000, false),
            // Never reached the platform.
            local("S3", "SETL3", 25_000, false),
            // Revoked at the platform, in force here.
            local("S5", "SETL5", 25_000, false),
            LocalRow {
                settlement_id: "S6".into(),
                setl_id: None,
                amounts: [Fen(9_000), Fen::ZERO, Fen::ZERO, Fen(9_000)],
                revoked: false,
            },
        ];
        let r = reconcile(&here, &statement);
        assert_eq!(r.matched, 1);
        assert!(r.discrepancies.contains(&Discrepancy::AmountMismatch {
            setl_id: "SETL2".into(),
            field: "medfee_sumamt".into(),
            local: Fen(35_000),
            platform: Fen(30_000),
        }));
        assert!(r.discrepancies.contains(&Discrepancy::MissingAtPlatform {
            settlement_id: "S3".into(),
            setl_id: "SETL3".into()
        }));
        assert!(r.discrepancies.contains(&Discrepancy::MissingLocally {
            setl_id: "SETL4".into()
        }));
        assert!(r.discrepancies.contains(&Discrepancy::StateMismatch {
            setl_id: "SETL5".into(),
            local_revoked: false,
            platform_revoked: true,
        }));
        assert_eq!(r.platform_totals[0], Fen(75_000));
        assert_eq!(
            r.local_totals[0],
            Fen(110_000),
            "self-pay is not reconciled"
        );
        // A day that balances.
        let r = reconcile(&here[..1], &statement[..1]);
        assert!(r.discrepancies.is_empty());
        assert_eq!(r.local_totals, r.platform_totals);
    }

    #[test]
    fn a_bad_statement_names_line_and_column() {
        let bad = "setl_id,medfee_sumamt,fund_pay_sumamt,acct_pay,psn_cash_pay,refd_setl_flag\n\
            SETL1,250.00,150.00,0,100.00,0\n\
            SETL2,2.5e2,150.00,0,100.00,2\n";
        let e = parse_statement("3202.csv", bad).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].starts_with("3202.csv:3:7: error: medfee_sumamt:"),
            "{}",
            e[0]
        );
        assert!(
            e[1].starts_with("3202.csv:3:29: error: refd_setl_flag \"2\""),
            "{}",
            e[1]
        );
        let e = parse_statement("3202.csv", "setl_id,acct_pay\n").unwrap_err();
        assert!(e[0].contains("no column `refd_setl_flag`"), "{e:?}");
    }
}
