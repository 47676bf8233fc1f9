//! Patient identity matching through the store (issue 14): a SQLite identity index filled with
//! generated identities (`huizhen_domain::identity::synth`), each linked as it is imported the
//! way `huizhen patients import` does it ([`huizhen_core::patients::link_normalized`]: batches
//! of 500 in one transaction each, every record decided in order against the index and the
//! records before it); the loading rate is the "records/s in bulk" figure. Then a few thousand new records (registrations of people already
//! in the index and of new people, from the same generator) are decided one by one through the
//! store as the `match_patient` step does (a batch of one: read the candidates on the writer,
//! decide in memory, record, commit), each timed in its phases. Once with encryption at rest on (sealed demographics, blind
//! blocking keys: the default engine's setting) and once with it off.
//!
//! `cargo bench -p huizhen-core --bench identity_store -- [--identities N] [--queries N]
//! [--encryption on|off|both]`
//!
//! Targets: p99 < 5 ms per incoming record over 1,000,000 identities, ≥ 10,000 records/s in
//! bulk.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant};

use huizhen_core::crypto::{EncryptionConfig, Keyring};
use huizhen_core::patients::{default_matcher, link_normalized};
use huizhen_core::store::audit::AuditEvent;
use huizhen_core::store::identity::Audited;
use huizhen_core::store::{Store, StoreOptions};
use huizhen_domain::identity::normalize;
use huizhen_domain::identity::synth::{SynthConfig, generate};

/// The default matcher never links on a score, so nothing is audited.
fn unreachable_audit() -> AuditEvent {
    unreachable!("the default thresholds never auto-link on a score")
}

/// CPU time of this process so far (user + system, all threads), from /proc/self/stat; 0
/// where that file does not exist. On a shared machine this tells the cost apart from the
/// waiting for a core.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.clamp(1, sorted.len().max(1)) - 1)
        .copied()
        .unwrap_or_default()
}

fn line(name: &str, mut times: Vec<Duration>) {
    times.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "| {name} | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
        times.len(),
        us(pct(&times, 50.0)),
        us(pct(&times, 90.0)),
        us(pct(&times, 99.0)),
        us(times.last().copied().unwrap_or_default()),
    );
}

/// Phase times of one decision through the store.
#[derive(Default)]
struct Phases {
    prefetch: Vec<Duration>,
    decide: Vec<Duration>,
    record: Vec<Duration>,
    total: Vec<Duration>,
}

async fn run(
    encrypted: bool,
    identities: usize,
    queries: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    // People are registered 1–3 times (about 2 on average): generate enough for the index
    // plus the incoming records.
    let people = (identities + queries) / 2 + 1;
    let t = Instant::now();
    let records = generate(SynthConfig {
        people,
        seed: 99,
        ..SynthConfig::default()
    });
    let generated = t.elapsed();
    let load_n = identities.min(records.len().saturating_sub(queries));
    let dir = std::env::temp_dir().join(format!(
        "huizhen-bench-identity-{}-{}",
        std::process::id(),
        if encrypted { "sealed" } else { "clear" }
    ));
    std::fs::create_dir_all(&dir)?;
    let store = Store::open(&StoreOptions::new(format!(
        "sqlite://{}/bench.db",
        dir.display()
    )))
    .await?;
    store.migrate().await?;
    let store = if encrypted {
        let ring = Keyring::from_config(&EncryptionConfig {
            keys_file: dir.join("keys"),
            ..EncryptionConfig::default()
        })?;
        store.with_keyring(ring)
    } else {
        store
    };
    let matcher = default_matcher();
    let label = if encrypted {
        "encryption at rest on"
    } else {
        "encryption at rest off"
    };

    let cpu_before = cpu_seconds();
    // Bulk load as `huizhen patients import` does it: batches of 500 in one transaction each,
    // every record decided against the index and the records before it.
    let t = Instant::now();
    let mut last = Instant::now();
    let mut linked = 0usize;
    let mut loaded = 0usize;
    let normalized: Vec<_> = records
        .iter()
        .take(load_n)
        .map(|r| normalize(&r.demographics))
        .collect();
    for chunk in normalized.chunks(500) {
        let done =
            link_normalized(&store, &matcher, chunk, "bench", |_| unreachable_audit()).await?;
        linked += done
            .iter()
            .filter(|l| l.decision.auto_link().is_some())
            .count();
        loaded += chunk.len();
        if last.elapsed() > Duration::from_secs(10) {
            last = Instant::now();
            eprintln!(
                "  {label}: loaded {loaded} / {load_n} ({:.0} records/s)",
                loaded as f64 / t.elapsed().as_secs_f64()
            );
        }
    }
    let load = t.elapsed();
    let load_cpu = cpu_seconds() - cpu_before;

    // Incoming records, one at a time, in phases.
    let mut ph = Phases::default();
    for r in records.iter().skip(load_n).take(queries) {
        let t0 = Instant::now();
        let person = normalize(&r.demographics);
        let t1 = Instant::now();
        let mut decide_time = Duration::ZERO;
        store
            .identity_link_batch(
                std::slice::from_ref(&person),
                matcher.candidate_limit,
                "bench",
                |p, index| {
                    let d0 = Instant::now();
                    let decision = matcher.decide_normalized(p, index);
                    decide_time += d0.elapsed();
                    decision
                },
                |_| Audited::default(),
            )
            .await?;
        let t3 = Instant::now();
        ph.prefetch.push(t1 - t0);
        ph.decide.push(decide_time);
        ph.record.push(t3 - t1 - decide_time);
        ph.total.push(t3 - t0);
    }
    let (records_in_store, persons) = store.identity_counts().await?;
    println!();
    println!(
        "### SQLite, {label}: {load_n} identities loaded ({records_in_store} records, {persons} persons; generated in {:.1} s)",
        generated.as_secs_f64()
    );
    println!();
    println!(
        "bulk load, linking each record (prefetch + decide + record): {:.1} s, {:.0} records/s, {linked} auto-linked",
        load.as_secs_f64(),
        load_n as f64 / load.as_secs_f64().max(1e-9)
    );
    println!(
        "  on CPU (all threads of this process: the linking thread and SQLite's): {load_cpu:.1} s, {:.0} records per CPU-second",
        load_n as f64 / load_cpu.max(1e-9)
    );
    println!();
    println!("| µs per incoming record | n | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    line("prefetch + decide + record", ph.total);
    line("  normalise", ph.prefetch);
    line("  decide (in memory)", ph.decide);
    line("  read candidates + record (one transaction)", ph.record);
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let identities: usize = arg("--identities")
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let queries: usize = arg("--queries")
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(3_000);
    let modes: &[bool] = match arg("--encryption").as_deref() {
        Some("on") => &[true],
        Some("off") => &[false],
        None | Some("both") => &[true, false],
        Some(other) => return Err(format!("--encryption: on, off or both, not {other}").into()),
    };
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        println!(
            "machine load average 1/5/15 min at start: {}",
            load.join(" / ")
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    for &encrypted in modes {
        rt.block_on(run(encrypted, identities, queries))?;
    }
    Ok(())
}
