//! Expert matching latency: 10,000 generated experts (seeded, reproducible) in a
//! `MemoryExpertIndex`, ~2,000 generated cases through `match_experts` with the
//! `DefaultScorer`; p50/p90/p99/max per call. Target: p99 < 2 ms. A full-scan index over the
//! same experts is measured in the same run as the baseline (what the hash indexes save).
//!
//! `cargo bench -p huizhen-domain --bench experts`

#![allow(
    clippy::print_stdout,
    reason = "a bench binary: its output is the table of figures"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, Utc};
use huizhen_domain::expert::{
    Agreement, AgreementKind, CaseRequest, DefaultScorer, Expert, ExpertIndex, IcdCode, Load,
    MatchConfig, MemoryExpertIndex, Presence, ResponseHistory, Schedule, TimeWindow, Title,
    Urgency, WeeklyWindow, match_experts,
};

const EXPERTS: usize = 10_000;
const CASES: usize = 2_000;
const BASELINE_CASES: usize = 200;

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

fn gen_experts(r: &mut Rng, now: DateTime<Utc>, depts: &[(String, Vec<String>)]) -> Vec<Expert> {
    let cities = facilities("CITY", 40);
    let titles = Title::ALL;
    (0..EXPERTS)
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

/// Scans every expert: the baseline the hash indexes are measured against.
struct FullScan<'a>(&'a MemoryExpertIndex);

impl ExpertIndex for FullScan<'_> {
    fn candidates(&self, _case: &CaseRequest) -> Vec<Expert> {
        self.0.experts().to_vec()
    }
    fn agreements(&self, requesting_facility: &str) -> Vec<Agreement> {
        self.0.agreements(requesting_facility)
    }
}

struct Row {
    name: String,
    times: Vec<Duration>,
    candidates: usize,
    ranked: usize,
}

/// Matches every case `repeats` times and keeps each case's fastest time (on a shared, noisy
/// machine the minimum is the closest to the cost of the work itself).
fn run(
    name: &str,
    index: &dyn ExpertIndex,
    cases: &[&CaseRequest],
    now: DateTime<Utc>,
    repeats: usize,
) -> Row {
    let config = MatchConfig {
        platform_facility: Some("PLATFORM".into()),
        require_multi_site_filing: true,
        ..MatchConfig::default()
    };
    let mut times = Vec::with_capacity(cases.len());
    let (mut candidates, mut ranked) = (0, 0);
    for (i, case) in cases.iter().enumerate() {
        let mut best = Duration::MAX;
        for _ in 0..repeats {
            let started = Instant::now();
            let d = match_experts(case, index, &DefaultScorer, &config, now, i as u64)
                .expect("generated cases are valid");
            best = best.min(started.elapsed());
            black_box(&d);
            candidates += d.ranked.len() + d.exclusions.len();
            ranked += d.ranked.len();
        }
        times.push(best);
    }
    times.sort();
    Row {
        name: name.to_owned(),
        times,
        candidates: candidates / repeats.max(1),
        ranked: ranked / repeats.max(1),
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let now = DateTime::parse_from_rfc3339("2026-01-15T10:00:00+08:00")
        .expect("time")
        .with_timezone(&Utc);
    let mut r = Rng(20_260_115);
    let depts = departments();
    let experts = gen_experts(&mut r, now, &depts);
    let agreements = gen_agreements(&mut r);
    let built = Instant::now();
    let index = MemoryExpertIndex::new(experts, agreements);
    let build_time = built.elapsed();
    let cases = gen_cases(&mut r, CASES, now, &depts);
    let all: Vec<&CaseRequest> = cases.iter().collect();
    let sub: Vec<&CaseRequest> = cases
        .iter()
        .filter(|c| c.department.contains('.'))
        .collect();
    let top: Vec<&CaseRequest> = cases
        .iter()
        .filter(|c| !c.department.contains('.'))
        .collect();

    // Warm-up (caches, allocator), not measured.
    let _ = run("warm-up", &index, &all[..200], now, 1);
    let rows = [
        run("memory index, single run", &index, &all, now, 1),
        run("memory index, best of 5", &index, &all, now, 5),
        run("  sub-department cases (03.02)", &index, &sub, now, 5),
        run("  first-level department cases (03)", &index, &top, now, 5),
        run(
            "full scan (baseline), single run",
            &FullScan(&index),
            &all[..BASELINE_CASES],
            now,
            1,
        ),
    ];
    let mut lookups: Vec<Duration> = cases
        .iter()
        .map(|c| {
            let t = Instant::now();
            black_box(index.candidates(c));
            t.elapsed()
        })
        .collect();
    lookups.sort();

    let agreements: usize = facilities("COUNTY", 100)
        .iter()
        .map(|c| index.agreements(c).len())
        .sum();
    println!(
        "expert matching: {} experts, 30 departments, {agreements} agreements; index built in \
         {:.1} ms",
        index.experts().len(),
        build_time.as_secs_f64() * 1e3
    );
    println!();
    println!(
        "| run | cases | candidates/case | eligible/case | p50 µs | p90 µs | p99 µs | max µs |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    for row in &rows {
        let n = row.times.len();
        println!(
            "| {} | {n} | {:.0} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} |",
            row.name,
            row.candidates as f64 / n as f64,
            row.ranked as f64 / n as f64,
            us(pct(&row.times, 50.0)),
            us(pct(&row.times, 90.0)),
            us(pct(&row.times, 99.0)),
            us(pct(&row.times, 100.0)),
        );
    }
    println!(
        "| lookup + clone only (`candidates()`) | {} | | | {:.0} | {:.0} | {:.0} | {:.0} |",
        lookups.len(),
        us(pct(&lookups, 50.0)),
        us(pct(&lookups, 90.0)),
        us(pct(&lookups, 99.0)),
        us(pct(&lookups, 100.0))
    );
    println!();
    for row in &rows[..2] {
        let p99 = pct(&row.times, 99.0);
        println!(
            "target p99 < 2 ms ({}): {} ({:.0} µs)",
            row.name,
            if p99 < Duration::from_millis(2) {
                "met"
            } else {
                "NOT met"
            },
            us(p99)
        );
    }
}
