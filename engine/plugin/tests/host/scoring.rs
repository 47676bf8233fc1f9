//! The `scorer` and `match-weights` worlds in both contract versions (0.1.0 components are
//! fixtures built before 0.1.1: `tests/fixtures/contract-0.1.0/`), the domain `Scorer` port
//! over a plugin, and the fallback when the plugin runs out of fuel.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use huizhen_core::extensions::PluginBudget;
use huizhen_core::runner::match_alerts::{alert_scorer_fallback, scorer_fallback_count};
use huizhen_domain::expert::{
    Agreement, AgreementKind, CaseRequest, Expert, Feature, IcdCode, Load, MatchConfig,
    MemoryExpertIndex, Presence, ResponseHistory, Schedule, Scorer, ScorerError, Title, Urgency,
    WeeklyWindow, match_experts,
};
use huizhen_plugin::bindings::scorer::Feature as WitFeature;
use huizhen_plugin::scorer::{PluginScorer, plugin_weights};
use huizhen_plugin::{CallError, CallOptions, Plugin, World};

use super::{Trust, package, plugins, temp, vendor};

/// The 0.1.0 builds kept as fixtures.
fn v0(file: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/contract-0.1.0")
            .join(file),
    )
    .unwrap()
}

/// Loads `bytes` as a signed package `name@version` of `world`, declaring `contract`.
fn load(bytes: &[u8], name: &str, version: &str, world: World, contract: &str) -> Arc<Plugin> {
    load_with(bytes, name, version, world, contract, vec![])
}

/// [`load`] with these capabilities granted.
pub(super) fn load_with(
    bytes: &[u8],
    name: &str,
    version: &str,
    world: World,
    contract: &str,
    caps: Vec<huizhen_plugin::Capability>,
) -> Arc<Plugin> {
    // One folder per load: tests run in parallel.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = temp(&format!("scoring-{name}-{version}-{n}"));
    let (pkg, _) = package::write_package(&dir, bytes, name, version, world, caps, None).unwrap();
    // The manifest says which contract the component was built for.
    let toml = pkg.join("plugin.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let text = text.replace(
        &format!("huizhen:plugin@{}", huizhen_plugin::CONTRACT),
        &format!("huizhen:plugin@{contract}"),
    );
    std::fs::write(&toml, text).unwrap();
    let key = package::parse_private_key(&vendor().0).unwrap();
    package::sign_package(&pkg, &key).unwrap();
    let trust = Trust::new([("acme".to_owned(), vendor().1.clone())], false).unwrap();
    let pkg = package::read_package(&pkg, &trust).unwrap();
    Arc::new(Plugin::from_package(pkg, Arc::default()).unwrap())
}

fn current_scorer() -> Arc<Plugin> {
    let bytes = std::fs::read(plugins().join("expert_score.wasm")).unwrap();
    load(&bytes, "expert-score", "2.0.0", World::Scorer, "0.1.1")
}

fn old_scorer() -> Arc<Plugin> {
    load(
        &v0("expert_score.wasm"),
        "expert-score",
        "1.0.0",
        World::Scorer,
        "0.1.0",
    )
}

fn wf(name: &str, value: f64, text: Option<&str>) -> WitFeature {
    WitFeature {
        name: name.into(),
        value,
        text: text.map(Into::into),
    }
}

/// Features both versions of expert-score read the same way.
fn candidates() -> Vec<Vec<WitFeature>> {
    vec![
        vec![wf("title", 4.0, Some("主任医师")), wf("years", 20.0, None)],
        vec![wf("title", 3.0, Some("副主任医师")), wf("years", 8.0, None)],
        vec![wf("title", 2.0, Some("主治医师"))],
    ]
}

#[test]
fn both_scorer_contracts_score_a_batch() {
    let case = vec![wf("urgency", 0.0, Some("routine"))];
    let call = CallOptions::default();
    let mut totals = Vec::new();
    for (plugin, version) in [
        (current_scorer(), huizhen_plugin::CONTRACT),
        (old_scorer(), "0.1.0"),
    ] {
        assert_eq!(plugin.world_version(), version, "{}", plugin.label());
        let mut session = plugin.scorer(&call).unwrap();
        let many = session.score_many(&case, &candidates()).unwrap();
        let one: Vec<f64> = candidates()
            .iter()
            .map(|c| session.score(&case, c).unwrap().total)
            .collect();
        let batch: Vec<f64> = many.iter().map(|s| s.total).collect();
        assert_eq!(batch, one, "{}", plugin.label());
        totals.push(batch);
    }
    assert_eq!(totals[0], vec![50.0 + 40.0 + 0.0, 30.0 + 16.0 + 0.0, 0.0]);
    assert_eq!(totals[0], totals[1]);
    // A plugin error in the batch is the plugin's refusal, in both versions.
    for plugin in [current_scorer(), old_scorer()] {
        let bad = vec![vec![], vec![wf("years", -1.0, None)]];
        let e = plugin
            .scorer(&call)
            .unwrap()
            .score_many(&case, &bad)
            .unwrap_err();
        assert!(matches!(e, CallError::Refused { .. }), "{e}");
    }
}

#[test]
fn both_weights_contracts_give_three_thresholds() {
    let bytes = std::fs::read(plugins().join("weights_basic.wasm")).unwrap();
    let new = load(
        &bytes,
        "weights-basic",
        "2.0.0",
        World::MatchWeights,
        "0.1.1",
    );
    let old = load(
        &v0("weights_basic.wasm"),
        "weights-basic",
        "1.0.0",
        World::MatchWeights,
        "0.1.0",
    );
    let w = plugin_weights(&new).unwrap();
    assert_eq!(w.contract, huizhen_plugin::CONTRACT);
    assert_eq!(
        (w.auto_link, w.probable, w.possible),
        (Some(40.0), 25.0, 12.0)
    );
    // 0.1.0: match-threshold → probable, non-match-threshold → possible, never auto-link.
    let w = plugin_weights(&old).unwrap();
    assert_eq!(w.contract, "0.1.0");
    assert_eq!((w.auto_link, w.probable, w.possible), (None, 25.0, 12.0));
    assert_eq!(w.fields[0], ("name".to_owned(), (9.0, -4.0)));
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-15T10:00:00+08:00")
        .unwrap()
        .with_timezone(&Utc)
}

fn expert(id: &str, title: Title, since: &str) -> Expert {
    Expert {
        id: id.into(),
        name: format!("Dr {id}"),
        facility: "H-CITY".into(),
        departments: vec!["03.02".into()],
        expertise: vec![IcdCode::parse("I25").unwrap()],
        title,
        independent_practice_since: NaiveDate::parse_from_str(since, "%Y-%m-%d").unwrap(),
        licence_verified: true,
        registration_active: true,
        multi_site_filings: vec![],
        languages: vec!["zh".into()],
        schedule: Schedule {
            windows: vec![WeeklyWindow {
                days: "mon-fri".parse().unwrap(),
                from: "08:00".parse().unwrap(),
                to: "17:00".parse().unwrap(),
            }],
            on_call: false,
        },
        presence: Presence {
            last_heartbeat: Some(now() - chrono::Duration::seconds(60)),
        },
        load: Load::default(),
        response: ResponseHistory {
            median_accept_seconds: Some(600),
            acceptance_rate: Some(0.8),
            count: 20,
        },
    }
}

fn index() -> MemoryExpertIndex {
    MemoryExpertIndex::new(
        vec![
            expert("E-1", Title::Chief, "2010-07-01"),
            expert("E-2", Title::AssociateChief, "2015-07-01"),
            expert("E-3", Title::Chief, "2020-07-01"),
        ],
        vec![Agreement {
            id: "AG-1".into(),
            requesting_facility: "H-COUNTY".into(),
            expert_facility: "H-CITY".into(),
            kind: AgreementKind::MedicalConsortium,
            valid_from: NaiveDate::from_ymd_opt(2025, 1, 1).unwrap(),
            valid_to: None,
        }],
    )
}

fn case() -> CaseRequest {
    CaseRequest {
        id: "task-1".into(),
        department: "03.02".into(),
        icd10: Some(IcdCode::parse("I25.10").unwrap()),
        min_title: None,
        urgency: Urgency::Urgent,
        requesting_facility: "H-COUNTY".into(),
        window: None,
        require_external: false,
        exclude_experts: vec![],
        follow_up_of: None,
        preferred_expert: None,
        language: None,
    }
}

#[test]
fn a_plugin_scorer_ranks_and_records_its_identity() {
    let plugin = current_scorer();
    let budget = PluginBudget {
        fuel: Some(10_000_000),
        deadline: Duration::from_secs(5),
    };
    let scorer = PluginScorer::new(plugin.clone(), budget);
    let d = match_experts(
        &case(),
        &index(),
        &scorer,
        &MatchConfig::default(),
        now(),
        1,
    )
    .unwrap();
    assert!(d.fallback.is_none(), "{:?}", d.fallback);
    assert_eq!(d.scorer.name, "expert-score");
    assert_eq!(d.scorer.version, "2.0.0");
    assert_eq!(d.scorer.module_hash, format!("sha256:{}", plugin.sha256()));
    assert_eq!(
        d.scorer.budget.as_deref(),
        Some("fuel=10000000, deadline=5s")
    );
    // The plugin's rule: title, years, response (median 10 min), urgency (urgent).
    let top = &d.ranked[0];
    assert_eq!(top.expert_id, "E-1");
    let names: Vec<&str> = top.contributions.iter().map(|c| &*c.name).collect();
    assert_eq!(names, ["title", "years", "response", "urgency"]);
    assert!(d.replay(&scorer).unwrap().is_identical());
    // The same ranking from a 0.1.0 build through the per-candidate path.
    let old = PluginScorer::new(old_scorer(), budget);
    let batch = old
        .score_many(
            &[Feature::text("urgency", 1.0, "critical")],
            &[vec![Feature::num("years", 3.0)]],
        )
        .unwrap();
    assert_eq!(batch[0].total, 6.0 + 20.0);
}

#[test]
fn out_of_fuel_falls_back_records_it_and_counts_it() {
    let plugin = current_scorer();
    let starved = PluginScorer::new(
        plugin,
        PluginBudget {
            fuel: Some(50),
            deadline: Duration::from_secs(5),
        },
    );
    let e = starved
        .score_many(&[], &[vec![Feature::num("years", 3.0)]])
        .unwrap_err();
    assert!(matches!(e, ScorerError::OutOfFuel(_)), "{e}");
    let before = scorer_fallback_count("expert-score");
    let d = match_experts(
        &case(),
        &index(),
        &starved,
        &MatchConfig::default(),
        now(),
        1,
    )
    .unwrap();
    let fb = d.fallback.as_ref().expect("the fallback is recorded");
    assert_eq!(fb.code, "out-of-fuel");
    assert_eq!(fb.used.name, "builtin-default");
    assert_eq!(d.scorer.name, "expert-score");
    assert_eq!(d.ranked.len(), 3, "the built-in scorer still ranks");
    alert_scorer_fallback(&d, "test");
    assert_eq!(scorer_fallback_count("expert-score"), before + 1);
    // The same failure on the old contract's per-candidate path.
    let old = PluginScorer::new(
        old_scorer(),
        PluginBudget {
            fuel: Some(50),
            deadline: Duration::from_secs(5),
        },
    );
    let e = old
        .score_many(&[], &[vec![Feature::num("years", 3.0)]])
        .unwrap_err();
    assert!(matches!(e, ScorerError::OutOfFuel(_)), "{e}");
}
