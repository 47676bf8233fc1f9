//! Identity matching bench (STANDARDS MATCH-05): run with
//! `cargo bench -p huizhen-domain --bench identity` (add `-- --quick`, or set
//! `HZ_BENCH_QUICK=1`, for smaller sizes; name sections to run only those:
//! `-- febrl chinese big`).
//!
//! (a) FEBRL 4: import file A, decide each record of B against it, weights estimated by EM
//!     from the blocked pairs; precision/recall/F1 and time.
//! (b) The Chinese generator: precision/recall/F1, precision of `certain`, auto-links between
//!     twins and parent/child (must be none), and such pairs queued as `probable` (each must
//!     carry its guard's finding), at the default weights and thresholds.
//! (c) A `MemoryIndex` of 1,000,000 generated identities: per-record decision latency
//!     p50/p99 and records/s.
#![allow(clippy::print_stdout, reason = "a bench binary prints its table")]

use std::time::{Duration, Instant};

use huizhen_domain::identity::eval::{Evaluation, Evaluator};
use huizhen_domain::identity::synth::{SynthConfig, generate};
use huizhen_domain::identity::{
    EmOptions, Matcher, MemoryIndex, Thresholds, Weights, estimate_em_with, febrl, normalize,
    random_pair_vectors, u_from_random_pairs,
};

fn main() {
    let quick =
        std::env::args().any(|a| a == "--quick") || std::env::var_os("HZ_BENCH_QUICK").is_some();
    let sections: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| ["febrl", "chinese", "big"].contains(&a.as_str()))
        .collect();
    let run = |name: &str| sections.is_empty() || sections.iter().any(|s| s == name);
    let mut rows: Vec<(String, String)> = Vec::new();
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        rows.push((
            "machine load average 1/5/15 min at start (shared cores)".into(),
            load.join(" / "),
        ));
    }
    if run("febrl") {
        febrl4(&mut rows);
    }
    if run("chinese") {
        chinese(&mut rows, if quick { 2_000 } else { 20_000 });
    }
    if run("big") {
        big_index(
            &mut rows,
            if quick { 100_000 } else { 1_000_000 },
            if quick { 2_000 } else { 10_000 },
        );
    }
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    for (k, v) in rows {
        println!("| {k} | {v} |");
    }
}

fn push_eval(rows: &mut Vec<(String, String)>, label: &str, e: &Evaluation) {
    rows.push((
        format!("{label}: precision / recall / F1"),
        format!("{:.5} / {:.5} / {:.5}", e.precision(), e.recall(), e.f1()),
    ));
    rows.push((
        format!("{label}: pairs true / predicted / true positives"),
        format!(
            "{} / {} / {}",
            e.true_pairs, e.predicted_pairs, e.true_positives
        ),
    ));
    rows.push((
        format!("{label}: certain pairs / precision of certain"),
        format!("{} / {:.5}", e.certain_pairs, e.certain_precision()),
    ));
}

fn febrl4(rows: &mut Vec<(String, String)>) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/febrl4");
    let (Ok(a), Ok(b)) = (
        std::fs::read_to_string(format!("{dir}/febrl4a.csv")),
        std::fs::read_to_string(format!("{dir}/febrl4b.csv")),
    ) else {
        rows.push(("FEBRL4".into(), "testdata missing".into()));
        return;
    };
    let a = febrl::parse(&a, "A");
    let b = febrl::parse(&b, "B");
    let start = Instant::now();
    // EM from the blocked pairs of B against A.
    let seed =
        Matcher::new(Weights::default(), Thresholds::default()).expect("default weights are valid");
    let mut index = MemoryIndex::new();
    for r in &a {
        let id = index.new_person_id();
        index.insert(id, normalize(&r.demographics));
    }
    let incoming: Vec<_> = b.iter().map(|r| normalize(&r.demographics)).collect();
    let vectors = seed.comparison_vectors(&incoming, &index);
    let everyone: Vec<_> = a
        .iter()
        .chain(b.iter())
        .map(|r| normalize(&r.demographics))
        .collect();
    let initial = u_from_random_pairs(
        &random_pair_vectors(&everyone, 200_000, 4),
        &Weights::default(),
    );
    let em = estimate_em_with(
        &vectors,
        &initial,
        EmOptions {
            fix_u: true,
            ..EmOptions::default()
        },
    )
    .expect("EM runs");
    let em_time = start.elapsed();
    let matcher = Matcher::new(em.weights, Thresholds::default()).expect("EM weights are valid");
    let start = Instant::now();
    let mut ev = Evaluator::new(&matcher);
    for r in &a {
        ev.preload(&r.demographics, truth(r.person));
    }
    let import = start.elapsed();
    for r in &b {
        ev.decide(&r.demographics, truth(r.person));
    }
    let total = start.elapsed();
    let e = ev.evaluation();
    rows.push((
        "FEBRL4: EM (pairs, iterations, match share, time)".into(),
        format!(
            "{} pairs, {} it, p = {:.4}, {:.2?}",
            vectors.len(),
            em.iterations,
            em.match_proportion,
            em_time
        ),
    ));
    rows.push((
        "FEBRL4: import A 5,000 / decide B 5,000".into(),
        format!("{import:.2?} / {:.2?}", total - import),
    ));
    push_eval(rows, "FEBRL4", &e);
}

fn truth(person: u64) -> huizhen_domain::identity::synth::Truth {
    huizhen_domain::identity::synth::Truth {
        person,
        family: person,
        role: huizhen_domain::identity::synth::Role::Adult,
    }
}

fn chinese(rows: &mut Vec<(String, String)>, people: usize) {
    let records = generate(SynthConfig {
        people,
        ..SynthConfig::default()
    });
    let matcher =
        Matcher::new(Weights::default(), Thresholds::default()).expect("default weights are valid");
    let start = Instant::now();
    let mut ev = Evaluator::new(&matcher);
    for r in &records {
        ev.decide(&r.demographics, r.truth);
    }
    let took = start.elapsed();
    let e = ev.evaluation();
    let label = format!("Chinese synth ({people} people, {} records)", records.len());
    rows.push((format!("{label}: time"), format!("{took:.2?}")));
    push_eval(rows, &label, &e);
    rows.push((
        format!("{label}: auto-links twins / parent-child / siblings"),
        format!(
            "{} / {} / {}",
            e.twin_auto_links, e.parent_child_auto_links, e.sibling_auto_links
        ),
    ));
    rows.push((
        format!(
            "{label}: probable twins / parent-child / siblings (of which without the guard's finding)"
        ),
        format!(
            "{} / {} / {} ({})",
            e.twin_predicted.saturating_sub(e.twin_auto_links),
            e.parent_child_predicted.saturating_sub(e.parent_child_auto_links),
            e.sibling_predicted.saturating_sub(e.sibling_auto_links),
            e.guard_unexplained
        ),
    ));
}

fn big_index(rows: &mut Vec<(String, String)>, people: usize, queries: usize) {
    let start = Instant::now();
    let records = generate(SynthConfig {
        people,
        seed: 99,
        ..SynthConfig::default()
    });
    let generated = start.elapsed();
    let start = Instant::now();
    let normalized: Vec<_> = records
        .iter()
        .map(|r| (r.truth.person, normalize(&r.demographics)))
        .collect();
    let normalize_time = start.elapsed();
    let split = normalized.len().saturating_sub(queries);
    let start = Instant::now();
    let build_cpu = cpu_time();
    let mut index = MemoryIndex::with_capacity(split);
    for (person, n) in normalized.into_iter().take(split) {
        index.insert(person, n);
    }
    let build = start.elapsed();
    let build_cpu = cpu_time().zip(build_cpu).map(|(b, a)| b.saturating_sub(a));
    let matcher =
        Matcher::new(Weights::default(), Thresholds::default()).expect("default weights are valid");
    let mut lat: Vec<Duration> = Vec::with_capacity(queries);
    let mut linked = 0usize;
    let start = Instant::now();
    let decide_cpu = cpu_time();
    for r in records.iter().skip(split) {
        let t = Instant::now();
        let d = matcher.decide(&r.demographics, &index);
        lat.push(t.elapsed());
        linked += usize::from(d.auto_link().is_some());
    }
    let all = start.elapsed();
    let decide_cpu = cpu_time().zip(decide_cpu).map(|(b, a)| b.saturating_sub(a));
    lat.sort();
    let pct = |p: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((lat.len() as f64 - 1.0) * p).round() as usize;
        lat.get(i).copied().unwrap_or_default()
    };
    let label = format!("MemoryIndex of {} records ({people} people)", index.len());
    rows.push((
        format!("{label}: generate / normalise / build (build CPU time)"),
        format!(
            "{generated:.2?} / {normalize_time:.2?} / {build:.2?} ({})",
            build_cpu.map_or("n/a".into(), |d| format!("{d:.2?}"))
        ),
    ));
    rows.push((
        format!("{label}: decision p50 / p99 / max"),
        format!("{:.3?} / {:.3?} / {:.3?}", pct(0.5), pct(0.99), pct(1.0)),
    ));
    #[allow(clippy::cast_precision_loss)]
    let rate = lat.len() as f64 / all.as_secs_f64();
    rows.push((
        format!("{label}: records/s (one thread, decide incl. normalise)"),
        format!("{rate:.0} ({} decisions, {linked} auto-linked)", lat.len()),
    ));
    if let Some(cpu) = decide_cpu {
        #[allow(clippy::cast_precision_loss)]
        let per_cpu = lat.len() as f64 / cpu.as_secs_f64();
        rows.push((
            format!("{label}: records per CPU-second (the same run, on-CPU time only)"),
            format!("{per_cpu:.0} ({cpu:.2?} on CPU for {all:.2?} elapsed)"),
        ));
        // The same decisions again, each timed on-CPU: latency without the waiting for a
        // core on a shared machine.
        let mut on_cpu: Vec<Duration> = Vec::with_capacity(queries);
        for r in records.iter().skip(split) {
            let before = cpu_time();
            let d = matcher.decide(&r.demographics, &index);
            std::hint::black_box(&d);
            if let (Some(b), Some(a)) = (before, cpu_time()) {
                on_cpu.push(a.saturating_sub(b));
            }
        }
        on_cpu.sort();
        let pct = |p: f64| {
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let i = ((on_cpu.len() as f64 - 1.0) * p).round() as usize;
            on_cpu.get(i).copied().unwrap_or_default()
        };
        rows.push((
            format!("{label}: on-CPU decision time p50 / p99 / max (a second pass)"),
            format!("{:.3?} / {:.3?} / {:.3?}", pct(0.5), pct(0.99), pct(1.0)),
        ));
    }
}

/// Time this thread has spent on a CPU (`CLOCK_THREAD_CPUTIME_ID`), so that a loaded
/// machine's waiting for a core is told apart from the work.
fn cpu_time() -> Option<Duration> {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    let secs = u64::try_from(t.tv_sec).ok()?;
    let nanos = u32::try_from(t.tv_nsec).ok()?;
    Some(Duration::new(secs, nanos))
}
