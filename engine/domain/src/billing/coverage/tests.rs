use proptest::prelude::*;

use super::*;

fn patient() -> PatientCoverage {
    PatientCoverage {
        insurer: "城乡居民医保".into(),
        plan: "县级".into(),
        active: true,
        eligibility: Eligibility::Eligible,
        deductible: Fen::ZERO,
        annual_limit: None,
        year_to_date: YearToDate::default(),
    }
}

fn item(code: &str, fen: i64, covered: bool) -> CoverageItem {
    CoverageItem {
        code: code.into(),
        amount: Fen(fen),
        covered,
    }
}

fn cover(items: &[CoverageItem], p: &PatientCoverage) -> CoverageResult {
    let r = SimplePolicy::default().cover(items, p).unwrap();
    r.check(items, p).unwrap();
    r
}

#[test]
fn eighty_percent_capped_at_150_yuan() {
    let r = cover(&[item("A", 10_000, true)], &patient());
    assert_eq!((r.covered, r.self_pay), (Fen(8_000), Fen(2_000)));
    let r = cover(
        &[item("A", 20_000, true), item("B", 5_000, true)],
        &patient(),
    );
    assert_eq!((r.covered, r.self_pay), (Fen(15_000), Fen(10_000)));
    assert!(
        r.reasons
            .contains(&Reason::CapPerVisit { cap: Fen(15_000) })
    );
    // Shared in proportion: 20000:5000 of 15000.
    assert_eq!(r.lines[0].covered, Fen(12_000));
    assert_eq!(r.lines[1].covered, Fen(3_000));
}

#[test]
fn inactive_or_ineligible_insurance_covers_nothing() {
    let mut p = patient();
    p.active = false;
    let r = cover(&[item("A", 10_000, true)], &p);
    assert_eq!((r.covered, r.self_pay), (Fen::ZERO, Fen(10_000)));
    assert_eq!(r.lines[0].reasons, vec![Reason::Inactive]);
    let mut p = patient();
    p.eligibility = Eligibility::NotEligible {
        reason: "plan excludes remote consultations".into(),
    };
    let r = cover(&[item("A", 10_000, true)], &p);
    assert!(r.covered.is_zero());
    assert!(matches!(&r.reasons[0], Reason::NotEligible { why } if why.contains("excludes")));
}

#[test]
fn deductible_then_rate_then_annual_limit() {
    let mut p = patient();
    p.deductible = Fen(8_000);
    p.year_to_date.deductible_met = Fen(3_000);
    let r = cover(&[item("A", 10_000, true)], &p);
    // 50 yuan of the deductible left, 80 % of the other 50.
    assert_eq!(r.covered, Fen(4_000));
    assert_eq!(r.deductible_met, Fen(5_000));
    assert!(
        r.reasons
            .contains(&Reason::Deductible { amount: Fen(5_000) })
    );
    p.annual_limit = Some(Fen(50_000));
    p.year_to_date.covered = Fen(49_000);
    let r = cover(&[item("A", 10_000, true)], &p);
    assert_eq!(r.covered, Fen(1_000));
    assert!(r.reasons.contains(&Reason::AnnualLimit {
        remaining: Fen(1_000)
    }));
}

#[test]
fn self_pay_items_are_never_covered() {
    let r = cover(
        &[item("A", 10_000, true), item("B", 3_333, false)],
        &patient(),
    );
    assert_eq!(r.lines[1].covered, Fen::ZERO);
    assert_eq!(r.lines[1].reasons, vec![Reason::SelfPayItem]);
    assert_eq!(r.covered, Fen(8_000));
}

#[test]
fn inconsistent_answers_are_refused() {
    let items = [item("A", 10_000, true)];
    let p = patient();
    let mut r = cover(&items, &p);
    r.lines[0].covered = Fen(9_000);
    assert!(
        r.check(&items, &p)
            .unwrap_err()
            .to_string()
            .contains("is not the amount")
    );
    let mut r = cover(&items, &p);
    r.lines.clear();
    assert!(r.check(&items, &p).is_err());
    let mut inactive = p.clone();
    inactive.active = false;
    let r = cover(&items, &p);
    assert!(r.check(&items, &inactive).is_err());
}

fn items() -> impl Strategy<Value = Vec<CoverageItem>> {
    prop::collection::vec(
        (0i64..5_000_000, any::<bool>()).prop_map(|(fen, covered)| item("X", fen, covered)),
        0..8,
    )
}

fn patients() -> impl Strategy<Value = PatientCoverage> {
    (
        any::<bool>(),
        any::<bool>(),
        0i64..100_000,
        prop::option::of(0i64..100_000),
        (0i64..100_000, 0i64..100_000),
    )
        .prop_map(
            |(active, eligible, deductible, annual, (used, met))| PatientCoverage {
                insurer: "i".into(),
                plan: "p".into(),
                active,
                eligibility: if eligible {
                    Eligibility::Eligible
                } else {
                    Eligibility::NotEligible { reason: "x".into() }
                },
                deductible: Fen(deductible),
                annual_limit: annual.map(Fen),
                year_to_date: YearToDate {
                    covered: Fen(used),
                    deductible_met: Fen(met),
                },
            },
        )
}

proptest! {
    #[test]
    fn covered_plus_self_pay_is_the_total_and_covered_is_capped(
        items in items(),
        p in patients(),
        rate in 0u32..=10_000,
        cap in 0i64..1_000_000,
    ) {
        let policy = SimplePolicy { rate: Rate::basis_points(rate).unwrap(), cap_per_visit: Fen(cap) };
        let r = policy.cover(&items, &p).unwrap();
        r.check(&items, &p).unwrap();
        let total = Fen::sum(items.iter().map(|i| i.amount)).unwrap();
        prop_assert_eq!(r.covered.add(r.self_pay).unwrap(), total);
        prop_assert!(r.covered <= Fen(cap));
        prop_assert!(r.covered.0 >= 0);
        if let Some(left) = p.annual_remaining() {
            prop_assert!(r.covered <= left);
        }
        prop_assert!(r.deductible_met <= p.deductible_remaining());
        let eligible = Fen::sum(items.iter().filter(|i| i.covered).map(|i| i.amount)).unwrap();
        prop_assert!(r.covered <= Rate::basis_points(rate).unwrap().of(eligible));
        if !p.active || p.eligibility != Eligibility::Eligible {
            prop_assert!(r.covered.is_zero());
        }
        for (line, item) in r.lines.iter().zip(&items) {
            prop_assert_eq!(line.covered.add(line.self_pay).unwrap(), item.amount);
            prop_assert!(line.covered.0 >= 0 && line.self_pay.0 >= 0);
        }
    }

    /// Visit after visit of one insurance year, the year's usage carried from each settled
    /// visit to the next (as the store keeps it): insurance never pays more than the annual
    /// limit in total, the deductible is met once, and every visit balances.
    #[test]
    fn the_annual_limit_holds_across_visits(
        visits in prop::collection::vec(items(), 1..12),
        deductible in 0i64..200_000,
        limit in prop::option::of(0i64..300_000),
        rate in 0u32..=10_000,
        cap in 0i64..1_000_000,
    ) {
        let policy = SimplePolicy { rate: Rate::basis_points(rate).unwrap(), cap_per_visit: Fen(cap) };
        let mut p = patient();
        p.deductible = Fen(deductible);
        p.annual_limit = limit.map(Fen);
        for items in &visits {
            let r = policy.cover(items, &p).unwrap();
            r.check(items, &p).unwrap();
            let total = Fen::sum(items.iter().map(|i| i.amount)).unwrap();
            prop_assert_eq!(r.covered.add(r.self_pay).unwrap(), total);
            prop_assert!(r.covered <= Fen(cap));
            p.year_to_date.covered = p.year_to_date.covered.add(r.covered).unwrap();
            p.year_to_date.deductible_met = p.year_to_date.deductible_met.add(r.deductible_met).unwrap();
            if let Some(l) = limit {
                prop_assert!(p.year_to_date.covered <= Fen(l));
            }
            prop_assert!(p.year_to_date.deductible_met <= Fen(deductible));
        }
        // Until the deductible is met, insurance pays nothing.
        if p.year_to_date.deductible_met < Fen(deductible) {
            prop_assert!(p.year_to_date.covered.is_zero());
        }
    }

    #[test]
    fn allocation_is_exact(items in items(), covered in 0i64..10_000_000) {
        let shares = allocate(Fen(covered), &items).unwrap();
        let eligible = Fen::sum(items.iter().filter(|i| i.covered).map(|i| i.amount)).unwrap();
        prop_assert_eq!(Fen::sum(shares.iter().copied()).unwrap(), Fen(covered).min(eligible));
        for (s, i) in shares.iter().zip(&items) {
            prop_assert!(*s <= i.amount && s.0 >= 0);
        }
    }
}
