//! Expert matching through the store (issue 14): 10,000 generated experts (the domain bench's
//! seeded generator) imported into SQLite, ~2,000 generated cases, each timed as the engine
//! runs it: `Store::prefetch_experts` (the candidates and the requesting facility's agreements
//! from the store's registry copy, after reading the change counter) + `match_experts` with the
//! `DefaultScorer`. In the same run, the baseline: the pure in-memory match
//! (`MemoryExpertIndex`) on the same experts and cases. p50/p90/p99/max per call. Target:
//! p99 < 2 ms.
//!
//! Beside the wall clock, each case's on-CPU time: of this thread (`CLOCK_THREAD_CPUTIME_ID`:
//! the matching and the registry copy) and of the process (`CLOCK_PROCESS_CPUTIME_ID`: also
//! the SQLite worker thread that reads the change counter), so that waiting for a core on a
//! shared machine is told apart from the work. The load average at start is printed.
//!
//! `cargo bench -p huizhen-core --bench experts_store`
//!
//! Options: `BENCH_EXPERTS` (default 10000), `BENCH_CASES` (default 2000).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use huizhen_core::store::{Store, StoreOptions};
use huizhen_domain::expert::synth::{Rng, departments, gen_agreements, gen_cases, gen_experts};
use huizhen_domain::expert::{DefaultScorer, MatchConfig, MemoryExpertIndex, match_experts};

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

/// Wall clock and on-CPU times of one measured span per case.
#[derive(Default)]
struct Times {
    wall: Vec<Duration>,
    thread: Vec<Duration>,
    process: Vec<Duration>,
}

/// A point in time on the three clocks.
#[derive(Clone, Copy)]
struct Stamp(Instant, Duration, Duration);

fn cpu(clock: rustix::time::ClockId) -> Duration {
    let t = rustix::time::clock_gettime(clock);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

fn stamp() -> Stamp {
    use rustix::time::ClockId;
    Stamp(
        Instant::now(),
        cpu(ClockId::ThreadCPUTime),
        cpu(ClockId::ProcessCPUTime),
    )
}

impl Times {
    fn push(&mut self, from: Stamp, to: Stamp) {
        self.wall.push(to.0 - from.0);
        self.thread.push(to.1.saturating_sub(from.1));
        self.process.push(to.2.saturating_sub(from.2));
    }
}

fn line(name: &str, mut t: Times, candidates: usize) {
    t.wall.sort();
    t.thread.sort();
    t.process.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let cpu = |v: &[Duration], p: f64| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            format!("{:.0}", us(pct(v, p)))
        }
    };
    println!(
        "{name:<44} {:>6} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>10.1} {:>9} {:>9} {:>9}",
        t.wall.len(),
        us(pct(&t.wall, 50.0)),
        us(pct(&t.wall, 90.0)),
        us(pct(&t.wall, 99.0)),
        us(*t.wall.last().unwrap_or(&Duration::ZERO)),
        candidates as f64 / t.wall.len().max(1) as f64,
        cpu(&t.thread, 50.0),
        cpu(&t.thread, 99.0),
        cpu(&t.process, 99.0),
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        println!("load average 1/5/15 min at start: {}", load.join(" / "));
    }
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
            (Times::default(), Times::default(), Times::default());
        let (mut store_candidates, mut memory_candidates) = (0, 0);
        for (i, c) in cases.iter().enumerate() {
            let t = stamp();
            let p = store.prefetch_experts(c).await?;
            let fetched = stamp();
            let d = match_experts(c, &p, &DefaultScorer, &config, now, i as u64)?;
            let done = stamp();
            store_times.push(t, done);
            prefetch_times.push(t, fetched);
            store_candidates += d.ranked.len() + d.exclusions.len();
            let t = stamp();
            let m = match_experts(c, &memory, &DefaultScorer, &config, now, i as u64)?;
            memory_times.push(t, stamp());
            memory_candidates += m.ranked.len() + m.exclusions.len();
            assert_eq!(d.selected, m.selected, "the store and memory agree");
            assert!(d == m, "case {}: the store and memory decide identically", c.id);
        }
        // Where the prefetch time goes: a one-row query (the round trip through sqlx) and
        // the agreements lookup alone.
        let (mut floor, mut agreement_times) = (Times::default(), Times::default());
        for c in &cases {
            let t = stamp();
            black_box(store.expert("exp-00042").await?);
            floor.push(t, stamp());
            let t = stamp();
            black_box(store.agreements_of(&c.requesting_facility).await?);
            agreement_times.push(t, stamp());
        }
        println!(
            "experts {n_experts}, agreements {}, cases {n_cases}; SQLite import of the registry: {:.2} s",
            agreements.len(),
            import.as_secs_f64()
        );
        println!(
            "{:<44} {:>6} {:>8} {:>8} {:>8} {:>8} {:>10} {:>9} {:>9} {:>9}",
            "µs per case", "cases", "p50", "p90", "p99", "max", "candidates", "cpu p50",
            "cpu p99", "proc p99"
        );
        line("store: prefetch + match_experts", store_times, store_candidates);
        line("  of which prefetch (counter + registry copy)", prefetch_times, store_candidates);
        line("baseline: in-memory match_experts", memory_times, memory_candidates);
        line("  one-row query (expert by id)", floor, 0);
        line("  agreements of the requesting facility", agreement_times, 0);
        store.close().await;
        Ok::<(), Box<dyn std::error::Error>>(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}
