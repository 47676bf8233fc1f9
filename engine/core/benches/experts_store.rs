//! Expert matching through the store (issue 14): 10,000 generated experts (the domain bench's
//! seeded generator) imported into SQLite, ~2,000 generated cases, each timed as the engine
//! runs it: `Store::prefetch_experts` (the candidates and the requesting facility's agreements
//! from the store's registry copy, after reading the change counter) + `match_experts` with the
//! `DefaultScorer`. In the same run, the baseline: the pure in-memory match
//! (`MemoryExpertIndex`) on the same experts and cases. p50/p90/p99/max per call. Target:
//! p99 < 2 ms.
//!
//! `cargo bench -p huizhen-core --bench experts_store`
//!
//! Options: `BENCH_EXPERTS` (default 10000), `BENCH_CASES` (default 2000).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use huizhen_core::store::{Store, StoreOptions};
use huizhen_domain::expert::{
    Agreement, AgreementKind, CaseRequest, DefaultScorer, Expert, IcdCode, Load, MatchConfig,
    MemoryExpertIndex, Presence, ResponseHistory, Schedule, TimeWindow, Title, Urgency,
    WeeklyWindow, match_experts,
};

/// SplitMix64: seeded, so every run generates the same directory and cases.
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

/// 6 first-level 诊疗科目 with 5 sub-departments each (30 departments); each department has 8
/// ICD-10 categories of its own.
fn departments() -> Vec<(String, Vec<String>)> {
    let letters = ['I', 'J', 'K', 'E', 'N', 'C'];
    let mut out = Vec::new();
    for (top, letter) in (3..9).zip(letters) {
        for sub in 1..=5 {
            let cats = (0..8)
                .map(|k| format!("{letter}{:02}", (sub - 1) * 16 + k * 2))
                .collect();
            out.push((format!("{top:02}.{sub:02}"), cats));
        }
    }
    out
}

fn facilities(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:03}")).collect()
}

fn window(days: &str, from: &str, to: &str) -> WeeklyWindow {
    WeeklyWindow {
        days: days.parse().expect("days"),
        from: from.parse().expect("time"),
        to: to.parse().expect("time"),
    }
}

fn gen_experts(
    r: &mut Rng,
    n: usize,
    now: DateTime<Utc>,
    depts: &[(String, Vec<String>)],
) -> Vec<Expert> {
    let cities = facilities("CITY", 40);
    let titles = Title::ALL;
    (0..n)
        .map(|i| {
            let (dept, cats) = &depts[r.below(depts.len() as u64) as usize];
            let expertise = (0..1 + r.below(4))
                .map(|_| {
                    let cat = &cats[r.below(cats.len() as u64) as usize];
                    let code = match r.below(3) {
                        0 => cat.clone(),
                        1 => format!("{cat}.{}", r.below(10)),
                        _ => format!("{cat}.{}{}", r.below(10), r.below(10)),
                    };
                    IcdCode::parse(&code).expect("generated code")
                })
                .collect();
            let since = NaiveDate::from_ymd_opt(1995, 1, 1).expect("date")
                + chrono::Duration::days(r.below(30 * 365) as i64);
            Expert {
                id: format!("exp-{i:05}"),
                name: format!("专家{i}"),
                facility: cities[r.below(cities.len() as u64) as usize].clone(),
                departments: vec![dept.clone()],
                expertise,
                title: titles[r.below(4) as usize],
                independent_practice_since: since,
                licence_verified: r.chance(97),
                registration_active: r.chance(97),
                multi_site_filings: if r.chance(80) {
                    vec!["PLATFORM".into()]
                } else {
                    vec![]
                },
                languages: if r.chance(15) {
                    vec!["zh".into(), "yue".into()]
                } else {
                    vec!["zh".into()]
                },
                schedule: Schedule {
                    windows: vec![
                        window("mon-fri", "08:00", "12:00"),
                        window(
                            ["mon", "tue", "wed", "thu", "fri", "sat"][r.below(6) as usize],
                            "14:00",
                            "17:30",
                        ),
                    ],
                    on_call: r.chance(10),
                },
                presence: Presence {
                    last_heartbeat: r
                        .chance(60)
                        .then(|| now - chrono::Duration::seconds(r.below(900) as i64)),
                },
                load: Load {
                    open_consultations: r.below(6) as u32,
                    sessions_today: r.below(5) as u32,
                },
                response: ResponseHistory {
                    median_accept_seconds: Some(30 + r.below(3600) as u32),
                    acceptance_rate: Some(r.below(101) as f64 / 100.0),
                    count: r.below(500) as u32,
                },
            }
        })
        .collect()
}

fn gen_agreements(r: &mut Rng) -> Vec<Agreement> {
    let kinds = [
        AgreementKind::MedicalConsortium,
        AgreementKind::SpecialtyAlliance,
        AgreementKind::CounterpartSupport,
        AgreementKind::TelemedicineNetwork,
    ];
    let mut out = Vec::new();
    for county in facilities("COUNTY", 100) {
        for city in facilities("CITY", 40) {
            if r.chance(40) {
                out.push(Agreement {
                    id: format!("AG-{county}-{city}"),
                    requesting_facility: county.clone(),
                    expert_facility: city,
                    kind: kinds[r.below(4) as usize],
                    valid_from: NaiveDate::from_ymd_opt(2024, 1, 1).expect("date"),
                    valid_to: r
                        .chance(80)
                        .then(|| NaiveDate::from_ymd_opt(2027, 12, 31).expect("date")),
                });
            }
        }
    }
    out
}

fn gen_cases(
    r: &mut Rng,
    n: usize,
    now: DateTime<Utc>,
    depts: &[(String, Vec<String>)],
) -> Vec<CaseRequest> {
    let counties = facilities("COUNTY", 100);
    (0..n)
        .map(|i| {
            let (dept, cats) = &depts[r.below(depts.len() as u64) as usize];
            // One case in ten asks for a first-level department (03: every 03.xx expert).
            let department = if r.chance(10) {
                dept[..2].to_owned()
            } else {
                dept.clone()
            };
            let icd10 = r.chance(70).then(|| {
                let cat = &cats[r.below(cats.len() as u64) as usize];
                IcdCode::parse(&format!("{cat}.{}", r.below(10))).expect("generated code")
            });
            let urgent = r.chance(20);
            CaseRequest {
                id: format!("task-{i:05}"),
                department,
                icd10,
                min_title: r.chance(50).then(|| Title::ALL[1 + r.below(3) as usize]),
                urgency: if urgent {
                    Urgency::Urgent
                } else {
                    Urgency::Routine
                },
                requesting_facility: counties[r.below(counties.len() as u64) as usize].clone(),
                window: (!urgent && r.chance(40)).then(|| {
                    let from = now + chrono::Duration::hours(r.below(96) as i64);
                    TimeWindow {
                        from,
                        to: from + chrono::Duration::hours(2),
                    }
                }),
                require_external: r.chance(30),
                exclude_experts: vec![],
                follow_up_of: None,
                preferred_expert: None,
                language: r.chance(10).then(|| "yue".to_owned()),
            }
        })
        .collect()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config() -> MatchConfig {
    MatchConfig {
        platform_facility: Some("PLATFORM".into()),
        require_multi_site_filing: true,
        ..MatchConfig::default()
    }
}

fn line(name: &str, mut times: Vec<Duration>, candidates: usize) {
    times.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{name:<44} {:>6} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>10.1}",
        times.len(),
        us(pct(&times, 50.0)),
        us(pct(&times, 90.0)),
        us(pct(&times, 99.0)),
        us(*times.last().unwrap_or(&Duration::ZERO)),
        candidates as f64 / times.len().max(1) as f64,
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n_experts = env("BENCH_EXPERTS", 10_000);
    let n_cases = env("BENCH_CASES", 2_000);
    let now = DateTime::parse_from_rfc3339("2026-01-15T10:00:00+08:00")?.with_timezone(&Utc);
    let mut r = Rng(20_260_115);
    let depts = departments();
    let experts = gen_experts(&mut r, n_experts, now, &depts);
    let agreements = gen_agreements(&mut r);
    let cases = gen_cases(&mut r, n_cases, now, &depts);
    let dir = std::env::temp_dir().join(format!("huizhen-bench-experts-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let config = config();
    let result = rt.block_on(async {
        let store = Store::open(&StoreOptions::new(format!(
            "sqlite://{}/bench.db",
            dir.display()
        )))
        .await?;
        store.migrate().await?;
        let t = Instant::now();
        store.upsert_experts(&experts, &agreements, None).await?;
        let import = t.elapsed();
        let memory = MemoryExpertIndex::new(experts.clone(), agreements.clone());
        // Warm-up (page cache, statement cache, allocator), not measured.
        for c in cases.iter().take(200) {
            let p = store.prefetch_experts(c).await?;
            black_box(match_experts(c, &p, &DefaultScorer, &config, now, 0)?);
        }
        let (mut store_times, mut prefetch_times, mut memory_times) =
            (Vec::new(), Vec::new(), Vec::new());
        let (mut store_candidates, mut memory_candidates) = (0, 0);
        for (i, c) in cases.iter().enumerate() {
            let t = Instant::now();
            let p = store.prefetch_experts(c).await?;
            let fetched = t.elapsed();
            let d = match_experts(c, &p, &DefaultScorer, &config, now, i as u64)?;
            store_times.push(t.elapsed());
            prefetch_times.push(fetched);
            store_candidates += d.ranked.len() + d.exclusions.len();
            let t = Instant::now();
            let m = match_experts(c, &memory, &DefaultScorer, &config, now, i as u64)?;
            memory_times.push(t.elapsed());
            memory_candidates += m.ranked.len() + m.exclusions.len();
            assert_eq!(d.selected, m.selected, "the store and memory agree");
        }
        // Where the prefetch time goes: a one-row query (the round trip through sqlx) and
        // the agreements lookup alone.
        let (mut floor, mut agreement_times) = (Vec::new(), Vec::new());
        for c in &cases {
            let t = Instant::now();
            black_box(store.expert("exp-00042").await?);
            floor.push(t.elapsed());
            let t = Instant::now();
            black_box(store.agreements_of(&c.requesting_facility).await?);
            agreement_times.push(t.elapsed());
        }
        println!(
            "experts {n_experts}, agreements {}, cases {n_cases}; SQLite import of the registry: {:.2} s",
            agreements.len(),
            import.as_secs_f64()
        );
        println!(
            "{:<44} {:>6} {:>8} {:>8} {:>8} {:>8} {:>10}",
            "µs per case", "cases", "p50", "p90", "p99", "max", "candidates"
        );
        line("store: prefetch + match_experts", store_times, store_candidates);
        line("  of which prefetch (SQL + JSON decode)", prefetch_times, store_candidates);
        line("baseline: in-memory match_experts", memory_times, memory_candidates);
        line("  one-row query (expert by id)", floor, 0);
        line("  agreements of the requesting facility", agreement_times, 0);
        store.close().await;
        Ok::<(), Box<dyn std::error::Error>>(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}
