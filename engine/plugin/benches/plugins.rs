//! Plugin host benchmark (`cargo bench -p huizhen-plugin --bench plugins`):
//!
//! 1. per-call cost of `expert-score` on a small record, reusing one instance (a scoring
//!    session: what a request scoring many candidates does), and with a fresh store and
//!    instance per call (what the `plugin` step does for each message);
//! 2. the same scoring function compiled natively (`plugins/expert-score/src/score.rs`, the
//!    very file the plugin is built from), with the same feature lookups, as the baseline;
//! 3. hot-swap time: a new signed version read, verified, compiled, linked and swapped in
//!    (`Registry::reload`), cold (new component) and warm (a component compiled before);
//! 4. scoring 10,000 candidates for one case in one session.
//!
//! Options (after `--`): `--calls N` (default 200000), `--candidates N` (default 10000),
//! `--swaps N` (default 10).

// A benchmark reports on stdout.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use huizhen_core::config::PluginsConfig;
use huizhen_plugin::bindings::scorer::Feature;
use huizhen_plugin::package;
use huizhen_plugin::{CallOptions, Capability, Registry, World};

#[path = "../../../plugins/expert-score/src/score.rs"]
mod native;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn build_expert_score() -> Vec<u8> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins");
    let target = root.join("target");
    let out = std::process::Command::new(env!("CARGO"))
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
        .expect("cargo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(target.join("wasm32-wasip2/release/expert_score.wasm")).unwrap()
}

fn features() -> (Vec<Feature>, Vec<Feature>) {
    let f = |name: &str, value: f64, text: Option<&str>| Feature {
        name: name.into(),
        value,
        text: text.map(str::to_owned),
    };
    (
        vec![
            f("urgency", 0.0, Some("critical")),
            f("specialty", 0.0, Some("cardiology")),
        ],
        vec![
            f("title", 0.0, Some("主任医师")),
            f("years", 20.0, None),
            f("median_response_minutes", 12.0, None),
        ],
    )
}

/// The native baseline: the same lookups the plugin's `Guest::score` does, then the rule.
fn native_score(case: &[Feature], expert: &[Feature]) -> f64 {
    let text = |fs: &'_ [Feature], n: &str| {
        fs.iter()
            .find(|f| f.name == n)
            .and_then(|f| f.text.as_deref())
            .map(str::to_owned)
    };
    let num = |fs: &[Feature], n: &str| fs.iter().find(|f| f.name == n).map(|f| f.value);
    let urgency = text(case, "urgency");
    let title = text(expert, "title");
    let c = native::Case {
        urgency: urgency.as_deref(),
    };
    let e = native::Expert {
        title: title.as_deref(),
        years: num(expert, "years"),
        response_minutes: num(expert, "median_response_minutes"),
    };
    let (total, parts) = native::score(&c, &e).unwrap();
    // Like the plugin, build the contributions the caller gets.
    let out: Vec<(String, f64)> = parts.into_iter().map(|(f, p)| (f.to_owned(), p)).collect();
    std::hint::black_box(out);
    total
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

fn timed(calls: usize, mut f: impl FnMut()) -> (Duration, Duration, Duration) {
    // Warm up.
    for _ in 0..calls.min(1000) {
        f();
    }
    let mut times = Vec::with_capacity(calls);
    let start = Instant::now();
    for _ in 0..calls {
        let t = Instant::now();
        f();
        times.push(t.elapsed());
    }
    let total = start.elapsed();
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99), total)
}

fn us(d: Duration) -> String {
    format!("{:.2} µs", d.as_secs_f64() * 1e6)
}

/// A valid component with different bytes (and so a different sha256): a custom section
/// appended at the end.
fn variant(wasm: &[u8], n: usize) -> Vec<u8> {
    let name = b"bench";
    let data = n.to_le_bytes();
    let mut out = wasm.to_vec();
    out.push(0);
    out.push((1 + name.len() + data.len()) as u8);
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&data);
    out
}

fn swap_times(wasm: &[u8], swaps: usize) -> (Vec<Duration>, Vec<Duration>) {
    let dir = std::env::temp_dir().join(format!("hz-plugin-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (pem, public) = package::generate_key();
    let key = package::parse_private_key(&pem).unwrap();
    let write = |bytes: &[u8], version: &str| -> PathBuf {
        let (p, _) = package::write_package(
            &dir,
            bytes,
            "expert-score",
            version,
            World::Scorer,
            vec![Capability::Log],
            None,
        )
        .unwrap();
        package::sign_package(&p, &key).unwrap();
        p
    };
    write(wasm, "1.0.0");
    let cfg = PluginsConfig {
        dir: dir.clone(),
        trusted_keys: BTreeMap::from([("bench".to_owned(), public)]),
        allow_unsigned: false,
        watch: false,
        names_file: None,
        expert_scorer: None,
    };
    let reg = Registry::open(&cfg).unwrap();
    let slot = reg.slot("expert-score").unwrap();
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for i in 0..swaps {
        // Cold: a component never compiled in this process.
        let v = format!("1.{}.0", 2 * i + 1);
        let p = write(&variant(wasm, i), &v);
        let t = Instant::now();
        reg.reload("expert-score").unwrap();
        cold.push(t.elapsed());
        assert_eq!(slot.current().unwrap().version(), v);
        std::fs::remove_dir_all(&p).unwrap();
        // Warm: back to the first version, compiled before (the roll-back case).
        let t = Instant::now();
        reg.reload("expert-score").unwrap();
        warm.push(t.elapsed());
        assert_eq!(slot.current().unwrap().version(), "1.0.0");
    }
    let _ = std::fs::remove_dir_all(&dir);
    cold.sort();
    warm.sort();
    (cold, warm)
}

fn main() {
    let calls = arg("--calls", 200_000);
    let candidates = arg("--candidates", 10_000);
    let swaps = arg("--swaps", 10);
    let wasm = build_expert_score();
    let dir = std::env::temp_dir().join(format!("hz-plugin-bench-bare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("expert_score.wasm");
    std::fs::write(&file, &wasm).unwrap();
    let pkg = package::read_bare(
        &file,
        World::Scorer,
        &package::Trust::new([], true).unwrap(),
    )
    .unwrap();
    let plugin = huizhen_plugin::Plugin::new(
        pkg.manifest,
        &pkg.wasm,
        pkg.sha256,
        None,
        Path::new(".").to_owned(),
        Arc::new(huizhen_plugin::Stats::default()),
    )
    .unwrap();
    let (case, expert) = features();
    let opts = CallOptions::default();

    println!(
        "# expert-score, {calls} calls each, wasm component {} KiB",
        wasm.len() / 1024
    );
    let want = native_score(&case, &expert);
    let mut session = plugin.scorer(&opts).unwrap();
    let got = session.score(&case, &expert).unwrap().total;
    assert_eq!(got, want, "the plugin and the native build agree");

    let (n50, n99, ntotal) = timed(calls, || {
        std::hint::black_box(native_score(
            std::hint::black_box(&case),
            std::hint::black_box(&expert),
        ));
    });
    let (r50, r99, rtotal) = timed(calls, || {
        std::hint::black_box(session.score(&case, &expert).unwrap());
    });
    let fresh_calls = (calls / 10).max(1000);
    let (f50, f99, ftotal) = timed(fresh_calls, || {
        let mut s = plugin.scorer(&opts).unwrap();
        std::hint::black_box(s.score(&case, &expert).unwrap());
    });
    let per = |total: Duration, n: usize| total.as_secs_f64() / n as f64;
    println!(
        "native (baseline)          median {} p99 {}  throughput {:.0}/s",
        us(n50),
        us(n99),
        1.0 / per(ntotal, calls)
    );
    println!(
        "reused instance (session)  median {} p99 {}  throughput {:.0}/s  native ÷ wasm speed {:.3}",
        us(r50),
        us(r99),
        1.0 / per(rtotal, calls),
        per(ntotal, calls) / per(rtotal, calls)
    );
    println!(
        "fresh store per call       median {} p99 {}  throughput {:.0}/s  ({fresh_calls} calls)",
        us(f50),
        us(f99),
        1.0 / per(ftotal, fresh_calls)
    );

    let experts: Vec<Vec<Feature>> = (0..candidates)
        .map(|i| {
            let mut e = expert.clone();
            e[1].value = (i % 40) as f64;
            e[2].value = (i % 60) as f64;
            e
        })
        .collect();
    let mut best = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let mut s = plugin.scorer(&opts).unwrap();
        let mut top = f64::MIN;
        for e in &experts {
            top = top.max(s.score(&case, e).unwrap().total);
        }
        std::hint::black_box(top);
        best.push(t.elapsed());
    }
    best.sort();
    println!(
        "{candidates} candidates in one request: median of 5 runs {:.2} ms ({:.2} µs per candidate)",
        best[2].as_secs_f64() * 1e3,
        best[2].as_secs_f64() * 1e6 / candidates as f64
    );

    let (cold, warm) = swap_times(&wasm, swaps);
    println!(
        "hot swap (read, verify, compile, link, swap), {swaps} each: new component median {:.1} ms max {:.1} ms; compiled before median {:.2} ms max {:.2} ms",
        cold[cold.len() / 2].as_secs_f64() * 1e3,
        cold[cold.len() - 1].as_secs_f64() * 1e3,
        warm[warm.len() / 2].as_secs_f64() * 1e3,
        warm[warm.len() - 1].as_secs_f64() * 1e3,
    );
    let _ = std::fs::remove_dir_all(dir);
}
