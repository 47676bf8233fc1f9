//! Expert matching through the store and the API (issue 14): the registry import (upsert), the
//! candidate prefetch against the pure in-memory index on a generated registry (an eligible
//! expert is never missed), decisions and overrides round-tripping, on SQLite and PostgreSQL;
//! then the whole path through HTTP with a registry imported by the `huizhen` binary.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use huizhen_core::Engine;
use huizhen_core::security::{Role, Security, SecurityConfig};
use huizhen_core::store::audit::{AuditEvent, AuditFilter};
use huizhen_domain::expert::{
    Agreement, AgreementKind, CaseRequest, DefaultScorer, Expert, ExpertIndex, IcdCode, Load,
    MatchConfig, MemoryExpertIndex, Presence, ResponseHistory, Schedule, Title, Urgency,
    match_experts,
};
use serde_json::{Value, json};

use crate::support::{Backend, both_backends, fresh_db, loaded, store};

both_backends!(
    import_upserts_and_keeps_runtime_state,
    prefetch_never_misses_an_eligible_expert,
    decisions_and_overrides_round_trip,
    another_nodes_changes_reach_the_registry_copy,
);

// ---------------------------------------------------------------------------------------------
// A seeded generator
// ---------------------------------------------------------------------------------------------

/// SplitMix64: the same registry every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 10, 2, 0, 0).unwrap()
}

fn expert(
    id: &str,
    facility: &str,
    dept: &str,
    codes: &[&str],
    title: Title,
    since: i32,
) -> Expert {
    Expert {
        id: id.into(),
        name: format!("专家{id}"),
        facility: facility.into(),
        departments: vec![dept.into()],
        expertise: codes.iter().map(|c| IcdCode::parse(c).unwrap()).collect(),
        title,
        independent_practice_since: NaiveDate::from_ymd_opt(since, 7, 1).unwrap(),
        licence_verified: true,
        registration_active: true,
        multi_site_filings: vec![],
        languages: vec!["zh".into()],
        schedule: Schedule::default(),
        presence: Presence::default(),
        load: Load::default(),
        response: ResponseHistory::default(),
    }
}

fn agreement(requesting: &str, expert_facility: &str, kind: AgreementKind) -> Agreement {
    Agreement {
        id: format!("AG-{requesting}-{expert_facility}"),
        requesting_facility: requesting.into(),
        expert_facility: expert_facility.into(),
        kind,
        valid_from: NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(),
        valid_to: None,
    }
}

/// Experts over 2 first-level departments × 3 sub-departments (some in two, some at the first
/// level only), ICD categories I00–I09 / K00–K09, random titles, years, licences, loads and
/// presence; agreements from 5 counties to some of 6 cities.
fn registry(r: &mut Rng, n: usize) -> (Vec<Expert>, Vec<Agreement>) {
    let tops = [("03", 'I'), ("04", 'K')];
    let experts = (0..n)
        .map(|i| {
            let (top, letter) = tops[r.below(2) as usize];
            let sub = format!("{top}.{:02}", 1 + r.below(3));
            let mut departments = vec![if r.chance(10) { top.to_owned() } else { sub }];
            if r.chance(10) {
                departments.push(format!("{}.01", tops[r.below(2) as usize].0));
            }
            let codes: Vec<IcdCode> = (0..r.below(4))
                .map(|_| {
                    let cat = format!("{letter}{:02}", r.below(10));
                    let code = if r.chance(50) {
                        cat
                    } else {
                        format!("{cat}.{}", r.below(10))
                    };
                    IcdCode::parse(&code).unwrap()
                })
                .collect();
            Expert {
                departments,
                expertise: codes,
                licence_verified: r.chance(90),
                registration_active: r.chance(95),
                presence: Presence {
                    last_heartbeat: r
                        .chance(50)
                        .then(|| now() - chrono::Duration::seconds(r.below(900) as i64)),
                },
                load: Load {
                    open_consultations: r.below(7) as u32,
                    sessions_today: r.below(3) as u32,
                },
                response: ResponseHistory {
                    median_accept_seconds: r.chance(70).then(|| 30 + r.below(3000) as u32),
                    acceptance_rate: r.chance(70).then(|| r.below(101) as f64 / 100.0),
                    count: r.below(100) as u32,
                },
                ..expert(
                    &format!("g-{i:04}"),
                    &format!("CITY-{}", r.below(6)),
                    "",
                    &[],
                    Title::ALL[r.below(4) as usize],
                    2000 + r.below(26) as i32,
                )
            }
        })
        .collect();
    let mut agreements = Vec::new();
    for c in 0..5 {
        for city in 0..6 {
            if r.chance(50) {
                agreements.push(agreement(
                    &format!("COUNTY-{c}"),
                    &format!("CITY-{city}"),
                    AgreementKind::SpecialtyAlliance,
                ));
            }
        }
    }
    (experts, agreements)
}

fn case(r: &mut Rng, i: usize) -> CaseRequest {
    let (top, letter) = [("03", 'I'), ("04", 'K')][r.below(2) as usize];
    let department = if r.chance(25) {
        top.to_owned()
    } else {
        format!("{top}.{:02}", 1 + r.below(3))
    };
    CaseRequest {
        id: format!("case-{i}"),
        department,
        icd10: r.chance(70).then(|| {
            IcdCode::parse(&format!("{letter}{:02}.{}", r.below(10), r.below(10))).unwrap()
        }),
        min_title: r.chance(30).then(|| Title::ALL[r.below(4) as usize]),
        urgency: if r.chance(30) {
            Urgency::Urgent
        } else {
            Urgency::Routine
        },
        requesting_facility: format!("COUNTY-{}", r.below(5)),
        window: None,
        require_external: false,
        exclude_experts: vec![],
        follow_up_of: None,
        preferred_expert: None,
        language: None,
    }
}

/// An index that returns every expert: what "never missed" is checked against.
struct FullScan<'a>(&'a MemoryExpertIndex);

impl ExpertIndex for FullScan<'_> {
    fn candidates(&self, _case: &CaseRequest) -> Vec<Expert> {
        self.0.experts().iter().map(|e| Expert::clone(e)).collect()
    }
    fn agreements(&self, facility: &str) -> Vec<Agreement> {
        self.0.agreements(facility)
    }
}

// ---------------------------------------------------------------------------------------------
// Store, both backends
// ---------------------------------------------------------------------------------------------

async fn import_upserts_and_keeps_runtime_state(backend: Backend) {
    let Some(db) = fresh_db(backend).await else {
        return;
    };
    let s = store(&db).await;
    let mut a = expert("e-1", "CITY-1", "03.02", &["I25"], Title::Chief, 2005);
    let b = expert("e-2", "CITY-2", "03.02", &["I20.0"], Title::Attending, 2010);
    let ag = agreement("COUNTY-1", "CITY-1", AgreementKind::MedicalConsortium);
    let sum = s
        .upsert_experts(&[a.clone(), b.clone()], std::slice::from_ref(&ag), None)
        .await
        .unwrap();
    assert_eq!(
        (sum.experts_added, sum.experts_updated, sum.agreements),
        (2, 0, 1)
    );
    assert!(s.expert_heartbeat("e-1", now()).await.unwrap());
    assert!(!s.expert_heartbeat("nobody", now()).await.unwrap());
    assert!(
        s.set_expert_load(
            "e-1",
            Load {
                open_consultations: 2,
                sessions_today: 1
            }
        )
        .await
        .unwrap()
    );
    // Re-import with a changed title and department: updated, index rebuilt, state kept.
    a.title = Title::AssociateChief;
    a.departments = vec!["04.01".into()];
    let sum = s
        .upsert_experts(std::slice::from_ref(&a), &[], None)
        .await
        .unwrap();
    assert_eq!((sum.experts_added, sum.experts_updated), (0, 1));
    let got = s.expert("e-1").await.unwrap().unwrap();
    assert_eq!(got.title, Title::AssociateChief);
    assert_eq!(got.presence.last_heartbeat, Some(now()));
    assert_eq!(got.load.open_consultations, 2);
    assert_eq!(got.load.sessions_today, 1);
    let ids = |p: &huizhen_core::store::experts::PrefetchedExperts| -> Vec<String> {
        p.experts.iter().map(|e| e.id.clone()).collect()
    };
    let mut c = case(&mut Rng(1), 0);
    c.min_title = None;
    c.department = "03".into();
    c.icd10 = None;
    c.requesting_facility = "COUNTY-1".into();
    let p = s.prefetch_experts(&c).await.unwrap();
    assert_eq!(
        ids(&p),
        ["e-2"],
        "e-1 left 03.02: its old index rows are gone"
    );
    assert_eq!(p.agreements, vec![ag]);
    c.department = "04".into();
    c.icd10 = Some(IcdCode::parse("I25.1").unwrap());
    assert_eq!(ids(&s.prefetch_experts(&c).await.unwrap()), ["e-1"]);
    c.icd10 = Some(IcdCode::parse("I20.0").unwrap());
    assert!(s.prefetch_experts(&c).await.unwrap().experts.is_empty());
    let listed: Vec<String> = s
        .list_experts()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(listed, ["e-1", "e-2"]);
}

/// Two `Store`s on one database stand for two nodes: each keeps its own registry copy, and
/// what the other writes (a heartbeat, a load change, an import that moves an expert, a new
/// agreement, an assignment) reaches it at its next lookup through the change counter.
async fn another_nodes_changes_reach_the_registry_copy(backend: Backend) {
    let Some(db) = fresh_db(backend).await else {
        return;
    };
    let (a, b) = (store(&db).await, store(&db).await);
    let e1 = expert("e-1", "CITY-1", "03.02", &["I25"], Title::Chief, 2005);
    let e2 = expert("e-2", "CITY-2", "03.02", &["I25.1"], Title::Chief, 2005);
    b.upsert_experts(&[e1.clone(), e2.clone()], &[], None)
        .await
        .unwrap();
    let mut c = case(&mut Rng(3), 0);
    c.department = "03".into();
    c.icd10 = Some(IcdCode::parse("I25.1").unwrap());
    c.requesting_facility = "COUNTY-1".into();
    c.min_title = None;
    c.urgency = Urgency::Routine;
    let ids = |p: &huizhen_core::store::experts::PrefetchedExperts| -> Vec<String> {
        p.experts.iter().map(|e| e.id.clone()).collect()
    };
    // A's copy is filled and current.
    let p = a.prefetch_experts(&c).await.unwrap();
    assert_eq!(ids(&p), ["e-1", "e-2"]);
    assert!(p.agreements.is_empty());
    assert_eq!(p.experts[0].presence.last_heartbeat, None);

    // State written by B: A's next lookup has it, in every list the expert is in.
    assert!(b.expert_heartbeat("e-1", now()).await.unwrap());
    let busy = Load {
        open_consultations: 3,
        sessions_today: 2,
    };
    assert!(b.set_expert_load("e-2", busy).await.unwrap());
    for department in ["03", "03.02"] {
        c.department = department.into();
        let p = a.prefetch_experts(&c).await.unwrap();
        assert_eq!(
            p.experts[0].presence.last_heartbeat,
            Some(now()),
            "{department}"
        );
        assert_eq!(p.experts[1].load, busy, "{department}");
    }
    // What A handed out before is not changed under its holder.
    assert_eq!(p.experts[0].presence.last_heartbeat, None);

    // Facts written by B: e-2 moves to 04.01 and J45; a new agreement for COUNTY-1.
    let mut moved = e2.clone();
    moved.departments = vec!["04.01".into()];
    moved.expertise = vec![IcdCode::parse("J45").unwrap()];
    let ag = agreement("COUNTY-1", "CITY-2", AgreementKind::MedicalConsortium);
    b.upsert_experts(&[moved], std::slice::from_ref(&ag), None)
        .await
        .unwrap();
    c.department = "03".into();
    let p = a.prefetch_experts(&c).await.unwrap();
    assert_eq!(ids(&p), ["e-1"]);
    assert_eq!(p.agreements, vec![ag]);
    c.department = "04".into();
    c.icd10 = Some(IcdCode::parse("J45.0").unwrap());
    let p = a.prefetch_experts(&c).await.unwrap();
    assert_eq!(ids(&p), ["e-2"]);
    // The re-import kept e-2's state.
    assert_eq!(p.experts[0].load, busy);

    // A decision stored by A assigns e-2, whose open consultations B then sees.
    let d = match_experts(&c, &p, &DefaultScorer, &MatchConfig::default(), now(), 1).unwrap();
    assert_eq!(d.selected, ["e-2"]);
    a.save_match_decision(&d, None).await.unwrap();
    let p = b.prefetch_experts(&c).await.unwrap();
    assert_eq!(
        p.experts[0].load.open_consultations,
        busy.open_consultations + 1
    );
}

async fn prefetch_never_misses_an_eligible_expert(backend: Backend) {
    let Some(db) = fresh_db(backend).await else {
        return;
    };
    let s = store(&db).await;
    let mut r = Rng(14);
    let (experts, agreements) = registry(&mut r, 400);
    s.upsert_experts(&experts, &agreements, None).await.unwrap();
    let memory = MemoryExpertIndex::new(experts, agreements);
    let config = MatchConfig::default();
    let mut compared = 0;
    for i in 0..120 {
        let c = case(&mut r, i);
        let prefetched = s.prefetch_experts(&c).await.unwrap();
        let from_store = match_experts(&c, &prefetched, &DefaultScorer, &config, now(), 7).unwrap();
        let from_memory = match_experts(&c, &memory, &DefaultScorer, &config, now(), 7).unwrap();
        let full =
            match_experts(&c, &FullScan(&memory), &DefaultScorer, &config, now(), 7).unwrap();
        // Same ranking (with contributions) and selection as the in-memory index…
        assert_eq!(from_store.ranked, from_memory.ranked, "{c:?}");
        assert_eq!(from_store.selected, from_memory.selected, "{c:?}");
        // …the same candidates, so the same exclusions (order aside)…
        let mut a: Vec<_> = from_store.exclusions.clone();
        let mut b: Vec<_> = from_memory.exclusions.clone();
        a.sort_by(|x, y| x.expert_id.cmp(&y.expert_id));
        b.sort_by(|x, y| x.expert_id.cmp(&y.expert_id));
        assert_eq!(a, b, "{c:?}");
        // …and every expert a scan of the whole directory finds eligible.
        assert_eq!(from_store.ranked, full.ranked, "{c:?}");
        compared += usize::from(!full.ranked.is_empty());
    }
    assert!(
        compared > 30,
        "too few cases had eligible experts: {compared}"
    );
}

async fn decisions_and_overrides_round_trip(backend: Backend) {
    let Some(db) = fresh_db(backend).await else {
        return;
    };
    let s = store(&db).await;
    let experts = vec![
        expert("e-1", "CITY-1", "03.02", &["I25"], Title::Chief, 2005),
        expert("e-2", "CITY-1", "03.02", &["I25"], Title::Attending, 2010),
        expert("e-3", "CITY-1", "03.02", &["I25"], Title::Chief, 2025),
    ];
    let ag = agreement("COUNTY-1", "CITY-1", AgreementKind::MedicalConsortium);
    s.upsert_experts(&experts, &[ag], None).await.unwrap();
    let c: CaseRequest = serde_json::from_value(json!({
        "id": "task-1", "department": "03.02", "icd10": "I25.1",
        "requesting_facility": "COUNTY-1"
    }))
    .unwrap();
    let p = s.prefetch_experts(&c).await.unwrap();
    let d = match_experts(&c, &p, &DefaultScorer, &MatchConfig::default(), now(), 0).unwrap();
    assert_eq!(d.selected, ["e-1", "e-2"]);
    assert_eq!(d.exclusions[0].expert_id, "e-3");
    let id = s.save_match_decision(&d, None).await.unwrap();
    let stored = s.match_decision(&id).await.unwrap().unwrap();
    assert_eq!(stored.decision, d, "the full decision round-trips");
    assert_eq!(stored.case_id, "task-1");
    assert_eq!(stored.requesting_facility, "COUNTY-1");
    assert!(
        stored
            .decision
            .replay(&DefaultScorer)
            .unwrap()
            .is_identical()
    );
    assert_eq!(
        s.match_decisions_of_case("task-1").await.unwrap(),
        std::slice::from_ref(&id)
    );
    assert!(s.match_decision("no-such").await.unwrap().is_none());
    // The assignment went to e-1, with one open consultation more.
    assert_eq!(
        s.expert("e-1")
            .await
            .unwrap()
            .unwrap()
            .load
            .open_consultations,
        1
    );
    // An override to the excluded e-3 (flagged), audited in the same transaction.
    let o = d
        .override_with("e-3", "patient asked for Dr e-3", "coord-1")
        .unwrap();
    assert!(o.flagged);
    let ev = AuditEvent {
        actor: "coord-1".into(),
        action: "match-decision.override".into(),
        resource_id: id.clone(),
        outcome: "success".into(),
        ..AuditEvent::default()
    };
    s.save_override(&id, &o, &ev).await.unwrap();
    let stored = s.match_decision(&id).await.unwrap().unwrap();
    assert_eq!(stored.overrides.len(), 1);
    assert_eq!(stored.overrides[0].record, o);
    assert_eq!(
        s.expert("e-1")
            .await
            .unwrap()
            .unwrap()
            .load
            .open_consultations,
        0
    );
    assert_eq!(
        s.expert("e-3")
            .await
            .unwrap()
            .unwrap()
            .load
            .open_consultations,
        1
    );
    let audited = s
        .audit_events(&AuditFilter {
            action: Some("match-decision.override".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(audited.len(), 1);
    // Fairness inputs: e-3 has the one assignment, e-1 and e-2 count with zero.
    assert!(
        s.record_acceptance(&id, "e-3", Utc::now() + chrono::Duration::seconds(90))
            .await
            .unwrap()
    );
    let f = s
        .fairness_inputs(Some("03.02"), 0, i64::MAX, None)
        .await
        .unwrap();
    let mut counts: Vec<(String, u64)> = f
        .assignments
        .iter()
        .map(|a| (a.expert_id.clone(), a.count))
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        [("e-1".into(), 0), ("e-2".into(), 0), ("e-3".into(), 1)]
    );
    assert_eq!(f.accepts.len(), 1);
    assert_eq!(f.accepts[0].requesting_facility, "COUNTY-1");
    assert!((89..=91).contains(&f.accepts[0].seconds), "{:?}", f.accepts);
    let only_other = s
        .fairness_inputs(Some("03.02"), 0, i64::MAX, Some(&["COUNTY-2".to_owned()]))
        .await
        .unwrap();
    assert!(only_other.accepts.is_empty(), "accept times are scoped");
}

// ---------------------------------------------------------------------------------------------
// Through HTTP, with the registry imported by the binary
// ---------------------------------------------------------------------------------------------

const SECRET: &str = "e2e-experts-secret-0123456789abcdef";

fn token(sub: &str, role: Role, facility: &str) -> String {
    huizhen_core::security::issue_from_config(
        &SecurityConfig {
            jwt_secret: Some(SECRET.into()),
            ..SecurityConfig::default()
        },
        sub,
        role,
        facility,
        Duration::from_secs(600),
    )
    .unwrap()
    .token
}

const REGISTRY: &str = r#"version: 1
experts:
  - { id: e-a1, name: 甲, facility: H-CITY-1, departments: ["03.02"], expertise: [I25], title: 主任医师, independent_practice_since: 2005-07-01, licence_verified: true, registration_active: true }
  - { id: e-a2, name: 乙, facility: H-CITY-1, departments: ["03.02"], expertise: [I25], title: 副主任医师, independent_practice_since: 2010-07-01, licence_verified: true, registration_active: true }
  - { id: e-a3, name: 丙, facility: H-CITY-2, departments: ["03.02"], expertise: [I25], title: 主治医师, independent_practice_since: 2015-07-01, licence_verified: true, registration_active: true }
  - { id: e-a4, name: 丁, facility: H-CITY-1, departments: ["03.02"], expertise: [I25], title: 住院医师, independent_practice_since: 2012-07-01, licence_verified: true, registration_active: true }
  - { id: e-x1, name: 戊, facility: H-CITY-1, departments: ["03.02"], expertise: [I25], title: 主任医师, independent_practice_since: 2005-07-01, licence_verified: false, registration_active: true }
  - { id: e-x2, name: 己, facility: H-CITY-1, departments: ["03.02"], expertise: [I25], title: 主任医师, independent_practice_since: 2099-01-01, licence_verified: true, registration_active: true }
  - { id: e-x3, name: 庚, facility: H-FAR, departments: ["03.02"], expertise: [I25], title: 主任医师, independent_practice_since: 2005-07-01, licence_verified: true, registration_active: true }
  - { id: e-x4, name: 辛, facility: H-CITY-1, departments: ["03.02"], expertise: [J18], title: 主任医师, independent_practice_since: 2005-07-01, licence_verified: true, registration_active: true }
agreements:
  - { id: AG-1, requesting_facility: H-COUNTY-1, expert_facility: H-CITY-1, kind: 医联体, valid_from: 2024-01-01 }
  - { id: AG-2, requesting_facility: H-COUNTY-1, expert_facility: H-CITY-2, kind: 专科联盟, valid_from: 2024-01-01 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn match_explain_and_override_over_http() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    // The registry goes in through the binary.
    let file = db.dir.path().join("registry.yaml");
    std::fs::write(&file, REGISTRY).unwrap();
    let bad = db.dir.path().join("bad.yaml");
    std::fs::write(&bad, REGISTRY.replace("title: 住院医师", "title: 实习医师")).unwrap();
    let cli = |f: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_huizhen"))
            .args(["--database-url", &db.url, "experts", "import"])
            .arg(f)
            .current_dir(db.dir.path())
            .output()
            .unwrap()
    };
    let out = cli(&bad);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml:6:"),
        "errors name file:line:column: {err}"
    );
    assert!(err.contains("实习医师"), "{err}");
    let out = cli(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("8 experts added"));

    let engine = Engine::start(loaded(&db, &[])).await.unwrap();
    let security = Security::new(
        &SecurityConfig {
            jwt_secret: Some(SECRET.into()),
            ..SecurityConfig::default()
        },
        engine.store.clone(),
    )
    .unwrap();
    let app = huizhen_core::http::router(
        engine.app_state(),
        &huizhen_core::config::HttpConfig::default(),
        Arc::new(security),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let cfg = huizhen_core::config::HttpConfig::default();
    let stop = engine.shutdown_token();
    tokio::spawn(async move { huizhen_core::http::serve(listener, app, &cfg, None, stop).await });
    let client = reqwest::Client::new();
    let post = |path: &str, bearer: String, body: Value| {
        client
            .post(format!("{base}{path}"))
            .bearer_auth(bearer)
            .json(&body)
            .send()
    };
    let get = |path: String, bearer: String| {
        client
            .get(format!("{base}{path}"))
            .bearer_auth(bearer)
            .send()
    };
    let doctor = token("dr-1", Role::LocalDoctor, "H-COUNTY-1");
    let case = json!({
        "id": "task-42", "department": "03.02", "icd10": "I25.1",
        "requesting_facility": "H-COUNTY-1"
    });

    // Scope: another county cannot request for H-COUNTY-1.
    let r = post(
        "/api/experts/match",
        token("dr-2", Role::LocalDoctor, "H-COUNTY-2"),
        case.clone(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    // A protected attribute is refused, naming the field.
    let mut protected = case.clone();
    protected["ethnicity"] = json!("x");
    let r = post("/api/experts/match", doctor.clone(), protected)
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("ethnicity"));

    let r = post("/api/experts/match", doctor.clone(), case.clone())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m: Value = r.json().await.unwrap();
    assert_eq!(m["selected"], json!(["e-a1", "e-a2", "e-a4"]), "{m:#}");
    let first = &m["ranked"][0];
    assert_eq!(first["expert_id"], "e-a1");
    assert_eq!(first["agreement_id"], "AG-1");
    let names: Vec<&str> = first["contributions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for f in ["title", "years", "specificity", "relationship"] {
        assert!(names.contains(&f), "{f} in {names:?}");
    }
    let reason = |id: &str| -> String {
        m["exclusions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["expert_id"] == id)
            .map(|x| x["reasons"][0]["code"].as_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(reason("e-x1"), "licence-not-verified");
    assert_eq!(reason("e-x2"), "practice-under-minimum-years");
    assert_eq!(reason("e-x3"), "no-active-agreement");
    assert_eq!(
        reason("e-x4"),
        "",
        "the index never offers a J18-only expert for I25.1"
    );
    let id = m["decision_id"].as_str().unwrap().to_owned();

    // The explanation: in scope for H-COUNTY-1's auditor, not found for another county.
    let r = get(
        format!("/api/match-decisions/{id}"),
        token("aud", Role::Auditor, "H-COUNTY-1"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["decision"]["selected"], m["selected"]);
    assert_eq!(d["decision"]["case"]["id"], "task-42");
    let r = get(
        format!("/api/match-decisions/{id}"),
        token("aud2", Role::Auditor, "H-COUNTY-2"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);

    // Override: a reason is mandatory; coordinators only; audited with who and why.
    let coordinator = token("coord-1", Role::Integrator, "H-COUNTY-1");
    let path = format!("/api/match-decisions/{id}/override");
    let r = post(
        &path,
        doctor.clone(),
        json!({"expert_id": "e-a3", "reason": "x"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403, "a local doctor is not a coordinator");
    let r = post(&path, coordinator.clone(), json!({"expert_id": "e-a3"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("a reason is required"));
    let r = post(
        &path,
        coordinator.clone(),
        json!({"expert_id": "e-a3", "reason": "   "}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 422);
    let r = post(
        &path,
        token("coord-2", Role::Integrator, "H-COUNTY-2"),
        json!({"expert_id": "e-a3", "reason": "x"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404, "out of scope");
    let r = post(
        &path,
        coordinator.clone(),
        json!({"expert_id": "e-a3", "reason": "continuity with the earlier consultation"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let o: Value = r.json().await.unwrap();
    assert_eq!(o["override"]["standing"]["standing"], "ranked");
    assert_eq!(o["override"]["by"], "coord-1");
    let events = engine
        .store
        .audit_events(&AuditFilter {
            action: Some("match-decision.override".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let done: Vec<_> = events
        .iter()
        .filter(|e| e.event.outcome == "success")
        .collect();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].event.actor, "coord-1");
    assert_eq!(done[0].event.resource_id, id);
    assert!(
        done[0]
            .event
            .detail
            .contains("continuity with the earlier consultation")
    );
    let d: Value = get(format!("/api/match-decisions/{id}"), coordinator.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["overrides"][0]["expert_id"], "e-a3");

    // Fairness: the one assignment (moved to e-a3) among the department's experts.
    let r = get(
        "/api/experts/fairness?department=03.02".into(),
        token("admin", Role::Admin, "*"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let f: Value = r.json().await.unwrap();
    assert_eq!(f["departments"][0]["department"], "03.02");
    assert_eq!(f["departments"][0]["assignments"], 1);
    assert_eq!(f["departments"][0]["experts"], 8);
    assert_eq!(f["departments"][0]["top_decile_share"], 1.0);

    // Heartbeat: an expert for itself only.
    let r = post(
        "/api/experts/heartbeat",
        token("e-a1", Role::Expert, "H-CITY-1"),
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let e = engine.store.expert("e-a1").await.unwrap().unwrap();
    assert!(e.presence.last_heartbeat.is_some());
    let r = post(
        "/api/experts/heartbeat",
        token("e-a1", Role::Expert, "H-CITY-1"),
        json!({"expert_id": "e-a2"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    let r = post(
        "/api/experts/heartbeat",
        token("e-a1", Role::Expert, "H-CITY-2"),
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403, "the token's facility is not the expert's");
    let r = post("/api/experts/heartbeat", doctor.clone(), json!({}))
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "experts only");
    engine.shutdown(Duration::from_secs(5)).await;
}

/// The `match_experts` step: the case from the body, the decision id and selection in headers
/// and body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_match_experts_step_stores_a_decision() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let pipeline = "version: 1\nname: consult\nfacility: H-COUNTY-1\nsource:\n  http: { path: /in/consult, kind: json }\nsteps:\n  - match_experts: { case: request, matching: { top_n: 2 } }\nsinks:\n  - journal: {}\n";
    let engine = Engine::start(loaded(&db, &[pipeline])).await.unwrap();
    let registry: huizhen_domain::expert::ExpertRegistry =
        serde_saphyr::from_str(REGISTRY).unwrap();
    engine
        .store
        .upsert_experts(&registry.experts, &registry.agreements, None)
        .await
        .unwrap();
    let handle = engine.pipeline("consult").unwrap();
    let body = json!({"request": {"id": "task-7", "department": "03.02", "icd10": "I25"}});
    let msg = huizhen_core::message::NewMessage::new(
        "consult",
        "H-COUNTY-1",
        "json",
        serde_json::to_vec(&body).unwrap(),
    );
    let id = handle.submit(msg).await.unwrap().id;
    let store = engine.store.clone();
    let done = crate::support::wait_for("message done", Duration::from_secs(10), || {
        let store = store.clone();
        let id = id.clone();
        async move {
            let m = store.get(&id).await.ok()??;
            (m.state == huizhen_core::message::State::Done).then_some(m)
        }
    })
    .await;
    let effects = store.effects_of(&done.id).await.unwrap();
    let out: Value = serde_json::from_slice(&effects[0].body).unwrap();
    assert_eq!(out["match"]["selected"], json!(["e-a1", "e-a2"]), "{out:#}");
    let decision_id = out["match"]["decision_id"].as_str().unwrap();
    let d = store.match_decision(decision_id).await.unwrap().unwrap();
    assert_eq!(d.case_id, "task-7");
    assert_eq!(d.requesting_facility, "H-COUNTY-1");
    engine.shutdown(Duration::from_secs(5)).await;
}

/// The `match_experts` step with `scorer: expert-score`: the plugin (built from
/// `plugins/expert-score` for wasm32-wasip2) ranks the case in one batched call; the stored
/// decision names the plugin, its module hash and budget, and replaying it with the same
/// component gives the same ranking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_match_experts_step_scores_with_a_plugin() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins");
    let target = root.join("target");
    let out = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            "expert-score",
        ])
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wasm = std::fs::read(target.join("wasm32-wasip2/release/expert_score.wasm")).unwrap();

    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let dir = db.dir.path().join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    let (pkg, manifest) = huizhen_plugin::package::write_package(
        &dir,
        &wasm,
        "expert-score",
        "0.1.0",
        huizhen_plugin::World::Scorer,
        vec![],
        None,
    )
    .unwrap();
    let pipeline = "version: 1\nname: consult\nfacility: H-COUNTY-1\nsource:\n  http: { path: /in/consult, kind: json }\nsteps:\n  - match_experts: { case: request, matching: { top_n: 2 }, scorer: expert-score }\nsinks:\n  - journal: {}\n";
    // `loaded` checks pipelines against the default plugin folder: add this one after.
    let mut config = loaded(&db, &[]);
    let file = db.dir.path().join("consult.yaml");
    std::fs::write(&file, pipeline).unwrap();
    let parsed = huizhen_core::config::parse_yaml(&file, pipeline).unwrap();
    config.pipelines.push(huizhen_core::config::LoadedPipeline {
        file,
        config: parsed,
    });
    config.root.plugins.dir = dir.clone();
    config.root.plugins.allow_unsigned = true;
    config.root.plugins.watch = false;
    let engine = Engine::start(config).await.unwrap();
    let registry: huizhen_domain::expert::ExpertRegistry =
        serde_saphyr::from_str(REGISTRY).unwrap();
    engine
        .store
        .upsert_experts(&registry.experts, &registry.agreements, None)
        .await
        .unwrap();
    let handle = engine.pipeline("consult").unwrap();
    let body = json!({"request": {"id": "task-8", "department": "03.02", "icd10": "I25"}});
    let msg = huizhen_core::message::NewMessage::new(
        "consult",
        "H-COUNTY-1",
        "json",
        serde_json::to_vec(&body).unwrap(),
    );
    let id = handle.submit(msg).await.unwrap().id;
    let store = engine.store.clone();
    let done = crate::support::wait_for("message done", Duration::from_secs(10), || {
        let store = store.clone();
        let id = id.clone();
        async move {
            let m = store.get(&id).await.ok()??;
            (m.state == huizhen_core::message::State::Done).then_some(m)
        }
    })
    .await;
    let effects = store.effects_of(&done.id).await.unwrap();
    let out: Value = serde_json::from_slice(&effects[0].body).unwrap();
    let decision_id = out["match"]["decision_id"].as_str().unwrap();
    let d = store
        .match_decision(decision_id)
        .await
        .unwrap()
        .unwrap()
        .decision;
    assert!(d.fallback.is_none(), "{:?}", d.fallback);
    assert_eq!(d.scorer.name, "expert-score");
    assert_eq!(d.scorer.module_hash, format!("sha256:{}", manifest.sha256));
    assert_eq!(
        d.scorer.budget.as_deref(),
        Some("fuel=10000000, deadline=50ms")
    );
    // The plugin's contributions (its `urgency` one, 0 for a routine case, is not in the
    // built-in rule).
    assert!(!d.ranked.is_empty(), "{out:#}");
    assert!(
        d.ranked[0]
            .contributions
            .iter()
            .any(|c| c.name == "urgency"),
        "{:?}",
        d.ranked[0].contributions
    );
    // Replay with the same component and budget: identical.
    let trust = huizhen_plugin::package::Trust::new([], true).unwrap();
    let pkg = huizhen_plugin::package::read_package(&pkg, &trust).unwrap();
    let plugin = Arc::new(huizhen_plugin::Plugin::from_package(pkg, Arc::default()).unwrap());
    let scorer = huizhen_plugin::scorer::PluginScorer::new(
        plugin,
        huizhen_core::extensions::PluginBudget {
            fuel: Some(10_000_000),
            deadline: Duration::from_millis(50),
        },
    );
    let replay = d.replay(&scorer).unwrap();
    assert!(replay.is_identical(), "{:?}", replay);
    engine.shutdown(Duration::from_secs(5)).await;
}
