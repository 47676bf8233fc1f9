//! Patient identity matching through the store (issue 14): a SQLite identity index filled with
//! generated identities (`huizhen_domain::identity::synth`), each linked as it is imported the
//! way `huizhen patients import` and the `match_patient` step do it
//! ([`huizhen_core::patients::link`]: normalise, prefetch the candidates of the blocking keys
//! from SQL, decide in memory, record the decision in one transaction); the loading rate is the
//! "records/s in bulk" figure. Then a few thousand new records (registrations of people already
//! in the index and of new people, from the same generator) are decided one by one through the
//! store, each timed in its phases. Once with encryption at rest on (sealed demographics, blind
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
use huizhen_core::patients::default_matcher;
use huizhen_core::store::identity::ChangeBy;
use huizhen_core::store::{Store, StoreOptions};
use huizhen_domain::identity::synth::{SynthConfig, generate};
use huizhen_domain::identity::{blocking_keys, normalize};

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
    let by = ChangeBy {
        actor: "bench",
        reason: "",
        audit: None,
    };
    let label = if encrypted {
        "encryption at rest on"
    } else {
        "encryption at rest off"
    };

    // Bulk load: each record linked as it is imported.
    let t = Instant::now();
    let mut last = Instant::now();
    let mut linked = 0usize;
    for (i, r) in records.iter().take(load_n).enumerate() {
        let person = normalize(&r.demographics);
        let keys = blocking_keys(&person);
        let index = store
            .identity_prefetch(&keys, matcher.candidate_limit, None)
            .await?;
        let decision = matcher.decide_normalized(&person, &index);
        linked += usize::from(decision.auto_link().is_some());
        store.identity_record(&person, &decision, by).await?;
        if last.elapsed() > Duration::from_secs(10) {
            last = Instant::now();
            eprintln!(
                "  {label}: loaded {} / {load_n} ({:.0} records/s)",
                i + 1,
                (i + 1) as f64 / t.elapsed().as_secs_f64()
            );
        }
    }
    let load = t.elapsed();

    // Incoming records, one at a time, in phases.
    let mut ph = Phases::default();
    for r in records.iter().skip(load_n).take(queries) {
        let t0 = Instant::now();
        let person = normalize(&r.demographics);
        let keys = blocking_keys(&person);
        let index = store
            .identity_prefetch(&keys, matcher.candidate_limit, None)
            .await?;
        let t1 = Instant::now();
        let decision = matcher.decide_normalized(&person, &index);
        let t2 = Instant::now();
        store.identity_record(&person, &decision, by).await?;
        let t3 = Instant::now();
        ph.prefetch.push(t1 - t0);
        ph.decide.push(t2 - t1);
        ph.record.push(t3 - t2);
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
    println!();
    println!("| µs per incoming record | n | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    line("prefetch + decide + record", ph.total);
    line("  normalise + prefetch (SQL)", ph.prefetch);
    line("  decide (in memory)", ph.decide);
    line("  record (one transaction)", ph.record);
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
