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
