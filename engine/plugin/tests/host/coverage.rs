//! The `coverage` world in both contract forms: `coverage-basic` built from `plugins/`
//! (contract 0.1.2: eligibility, deductible, annual limit and the year's usage) and its 0.1.1
//! build kept as a fixture (`tests/fixtures/contract-0.1.1/coverage_basic.wasm`: insurer,
//! active and plan only), both serving the domain's `CoveragePolicy` port, every answer
//! checked by `CoverageResult::check`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use huizhen_core::extensions::PluginBudget;
use huizhen_domain::billing::{
    CoverageItem, CoveragePolicy, Eligibility, Fen, PatientCoverage, YearToDate,
};
use huizhen_plugin::coverage::PluginCoverage;
use huizhen_plugin::{Plugin, World};

use super::plugins;
use super::scoring::load_with;

fn load(bytes: &[u8], name: &str, version: &str, world: World, contract: &str) -> Arc<Plugin> {
    let caps = vec![huizhen_plugin::Capability::Config];
    load_with(bytes, name, version, world, contract, caps)
}

fn old_build() -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/contract-0.1.1/coverage_basic.wasm"),
    )
    .unwrap()
}

fn current() -> Arc<Plugin> {
    let bytes = std::fs::read(plugins().join("coverage_basic.wasm")).unwrap();
    load(
        &bytes,
        "coverage-basic",
        "2.0.0",
        World::Coverage,
        huizhen_plugin::CONTRACT,
    )
}

fn old() -> Arc<Plugin> {
    load(
        &old_build(),
        "coverage-basic",
        "1.0.0",
        World::Coverage,
        "0.1.1",
    )
}

fn policy(plugin: Arc<Plugin>) -> PluginCoverage {
    PluginCoverage::new(
        plugin,
        PluginBudget {
            fuel: None,
            deadline: Duration::from_millis(500),
        },
        BTreeMap::from([
            ("rate".to_owned(), "80".to_owned()),
            ("cap_fen".to_owned(), "15000".to_owned()),
        ]),
    )
}

fn patient() -> PatientCoverage {
    PatientCoverage {
        insurer: "城镇职工医保".into(),
        plan: "门诊统筹".into(),
        active: true,
        eligibility: Eligibility::Eligible,
        deductible: Fen::ZERO,
        annual_limit: None,
        year_to_date: YearToDate::default(),
    }
}

fn items(amounts: &[(i64, bool)]) -> Vec<CoverageItem> {
    amounts
        .iter()
        .enumerate()
        .map(|(i, &(fen, covered))| CoverageItem {
            code: format!("ITEM-{i}"),
            amount: Fen(fen),
            covered,
        })
        .collect()
}

#[test]
fn both_coverage_contracts_serve_the_port() {
    let new = current();
    let old = old();
    assert_eq!(new.world_version(), huizhen_plugin::CONTRACT);
    assert_eq!(old.world_version(), "0.1.1");
    let it = items(&[(20_000, true), (1_000, false)]);
    for plugin in [new, old] {
        let p = policy(plugin.clone());
        assert!(p.name().contains(plugin.world_version()), "{}", p.name());
        // 80 % of 200 yuan capped at 150; the 自费 item stays the patient's.
        let r = p.cover(&it, &patient()).unwrap();
        r.check(&it, &patient()).unwrap();
        assert_eq!((r.covered, r.self_pay), (Fen(15_000), Fen(6_000)));
        assert_eq!(r.lines[1].covered, Fen::ZERO);
        assert_eq!(r.deductible_met, Fen::ZERO);
        // Inactive and not eligible cover nothing, in both forms (the old form gets an
        // ineligible insurance as inactive).
        let mut inactive = patient();
        inactive.active = false;
        let mut ineligible = patient();
        ineligible.eligibility = Eligibility::NotEligible {
            reason: "plan excludes remote consultations".into(),
        };
        for pc in [inactive, ineligible] {
            let r = p.cover(&it, &pc).unwrap();
            r.check(&it, &pc).unwrap();
            assert!(r.covered.is_zero(), "{}: {r:?}", plugin.label());
        }
    }
}

#[test]
fn the_current_contract_sees_the_deductible_and_the_years_usage() {
    let p = policy(current());
    let it = items(&[(20_000, true)]);
    let mut pc = patient();
    pc.deductible = Fen(80_000);
    pc.annual_limit = Some(Fen(300_000));
    pc.year_to_date = YearToDate {
        covered: Fen(297_000),
        deductible_met: Fen(75_000),
    };
    let r = p.cover(&it, &pc).unwrap();
    r.check(&it, &pc).unwrap();
    // 50 yuan of the deductible left, 80 % of the other 150 is 120, 30 yuan of the limit left.
    assert_eq!(r.deductible_met, Fen(5_000));
    assert_eq!((r.covered, r.self_pay), (Fen(3_000), Fen(17_000)));
    // Visit after visit, the year's usage carried over as the store keeps it: the annual limit
    // is never passed.
    let mut pc = patient();
    pc.deductible = Fen(10_000);
    pc.annual_limit = Some(Fen(40_000));
    for _ in 0..6 {
        let r = p.cover(&it, &pc).unwrap();
        r.check(&it, &pc).unwrap();
        pc.year_to_date.covered = pc.year_to_date.covered.add(r.covered).unwrap();
        pc.year_to_date.deductible_met = pc
            .year_to_date
            .deductible_met
            .add(r.deductible_met)
            .unwrap();
        assert!(pc.year_to_date.covered <= Fen(40_000));
    }
    assert_eq!(pc.year_to_date.covered, Fen(40_000));
    assert_eq!(pc.year_to_date.deductible_met, Fen(10_000));
}

#[test]
fn an_old_plugin_over_the_annual_limit_is_refused_by_the_check() {
    // The 0.1.1 form cannot see the annual limit: its answer is checked against it.
    let p = policy(old());
    let it = items(&[(20_000, true)]);
    let mut pc = patient();
    pc.annual_limit = Some(Fen(10_000));
    let r = p.cover(&it, &pc).unwrap();
    let e = r.check(&it, &pc).unwrap_err().to_string();
    assert!(e.contains("over the annual limit left"), "{e}");
}

#[test]
fn the_json_form_follows_the_plugins_contract() {
    let input = serde_json::json!({
        "items": [{ "code": "CONSULT", "amount_fen": 20000 }],
        "patient": { "insurer": "x", "active": true, "plan": "y", "deductible_fen": 5000 },
    });
    let call = huizhen_plugin::CallOptions {
        config: Arc::new(BTreeMap::from([("rate".to_owned(), "80".to_owned())])),
        ..Default::default()
    };
    let got = huizhen_plugin::json::call(&current(), &input, &call).unwrap();
    assert_eq!(got["deductible_met_fen"], 5000);
    assert_eq!(got["lines"][0]["covered_fen"], 12_000);
    // The old form answers its lines alone, and knows nothing of the deductible.
    let got = huizhen_plugin::json::call(&old(), &input, &call).unwrap();
    assert_eq!(got[0]["covered_fen"], 16_000);
}
