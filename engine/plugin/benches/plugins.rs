//! Plugin host benchmark (`cargo bench -p huizhen-plugin --bench plugins`):
//!
//! 1. per-call cost of `expert-score` on a small record, reusing one instance (a scoring
//!    session: what a request scoring many candidates does), with the guest built at opt-level
//!    `s` (as before) and `3` (the plugins' release profile now) in the same run, and with a
//!    fresh store and instance per call;
//! 2. the same scoring function compiled natively (`plugins/expert-score/src/score.rs`, the
//!    very file the plugin is built from), with the same feature lookups, as the baseline;
//! 3. hot-swap time: a new signed version read, verified, compiled, linked and swapped in
//!    (`Registry::reload`), cold (new component) and warm (a component compiled before), for
//!    both guest builds;
//! 4. scoring 10,000 candidates for one case in one session;
//! 5. the `plugin` step's call of `route-by-facility` on a 1 KB ADT: a fresh store per call
//!    (before), the step's reused instance (now), and that through the plugin call pool.
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

/// Builds a guest of `plugins/` (release, wasm32-wasip2) at a guest `opt-level` (`s` or `3`;
/// the workspace's release profile otherwise), each level in a target folder of its own.
fn build_guest(crate_name: &str, opt_level: &str) -> Vec<u8> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins");
    let target = root.join(format!("target/bench-opt-{opt_level}"));
    let level = if opt_level == "s" { "\"s\"" } else { opt_level };
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            crate_name,
        ])
        .args(["--config", &format!("profile.release.opt-level={level}")])
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("cargo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = crate_name.replace('-', "_");
    std::fs::read(target.join(format!("wasm32-wasip2/release/{file}.wasm"))).unwrap()
}

/// A bare component loaded with every grant, as the engine's host does.
fn load(wasm: &[u8], name: &str, world: World) -> huizhen_plugin::Plugin {
    let dir = std::env::temp_dir().join(format!("hz-plugin-bench-bare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.wasm"));
    std::fs::write(&file, wasm).unwrap();
    let pkg = package::read_bare(&file, world, &package::Trust::new([], true).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    huizhen_plugin::Plugin::new(
        pkg.manifest,
        &pkg.wasm,
        pkg.sha256,
        None,
        Path::new(".").to_owned(),
        Arc::new(huizhen_plugin::Stats::default()),
    )
    .unwrap()
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
        let p = write(
            &package::with_custom_section(wasm, "bench", &i.to_le_bytes()),
            &v,
        );
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

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The `plugin` step's call of `route-by-facility` on a 1 KB ADT: a fresh store and instance
/// per call (`decide`), an instance reused across the step's calls (`decide_reusing`), and the
/// latter through the plugin call pool from a tokio runtime (the step's hand-off), each as the
/// step builds the call (message copied in, options cloned).
fn rule_step(calls: usize, opt_level: &str) {
    let wasm = build_guest("route-by-facility", opt_level);
    let plugin = Arc::new(load(&wasm, "route_by_facility", World::Rule));
    let body = format!(
        "MSH|^~\\&|HIS|县人民医院|HUIZHEN|省会诊中心|20261206093000||ADT^A04^ADT_A01|B1|P|2.5|||||CHN|UNICODE UTF-8\rEVN|A04|20261206093000\rPID|1||330523199001011234^^^县人民医院^MR||张三||19900101|M\rPV1|1|O|内科门诊\rNTE|1||{}\r",
        "入院评估：患者一般情况可，神志清，精神可，饮食睡眠可，二便正常。".repeat(8)
    )
    .into_bytes();
    let msg = || huizhen_plugin::bindings::huizhen::plugin::types::Message {
        id: "m1".into(),
        pipeline: "intake".into(),
        facility: "f".into(),
        kind: "hl7v2".into(),
        body: body.clone(),
        headers: vec![("hl7-type".into(), "ADT^A04".into())],
    };
    let opts = CallOptions {
        config: Arc::new(BTreeMap::from([("default".to_owned(), "adt".to_owned())])),
        ..CallOptions::default()
    };
    use huizhen_plugin::bindings::huizhen::plugin::types::Decision;
    let routed = |d: Decision| matches!(d, Decision::Route(ref t) if t == "adt");
    assert!(routed(plugin.decide(&msg(), &opts).unwrap()));
    println!(
        "# route-by-facility (guest opt-level {opt_level}, {} KiB), a {} B ADT, {calls} calls each, load {}",
        wasm.len() / 1024,
        body.len(),
        load_average()
    );
    let fresh = timed(calls, || {
        std::hint::black_box(plugin.decide(&msg(), &opts.clone()).unwrap());
    });
    let reused = timed(calls, || {
        std::hint::black_box(plugin.decide_reusing(&msg(), &opts.clone()).unwrap());
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pooled = rt.block_on(async {
        let mut times = Vec::with_capacity(calls);
        for i in 0..calls + calls.min(1000) {
            let (p, m, o) = (plugin.clone(), msg(), opts.clone());
            let t = Instant::now();
            let d = huizhen_plugin::pool::offload(move || p.decide_reusing(&m, &o)).await;
            if i >= calls.min(1000) {
                times.push(t.elapsed());
            }
            assert!(routed(d.unwrap()));
        }
        times.sort();
        (percentile(&times, 0.5), percentile(&times, 0.99))
    });
    println!(
        "fresh store + instance per call (before)  median {} p99 {}",
        us(fresh.0),
        us(fresh.1)
    );
    println!(
        "instance reused by the step (now)         median {} p99 {}",
        us(reused.0),
        us(reused.1)
    );
    println!(
        "reused, through the plugin call pool      median {} p99 {}  (hand-off: {} at the median)",
        us(pooled.0),
        us(pooled.1),
        us(pooled.0.saturating_sub(reused.0))
    );
}

fn main() {
    let calls = arg("--calls", 200_000);
    let candidates = arg("--candidates", 10_000);
    let swaps = arg("--swaps", 10);
    let (case, expert) = features();
    let opts = CallOptions::default();
    let want = native_score(&case, &expert);
    let (n50, n99, ntotal) = timed(calls, || {
        std::hint::black_box(native_score(
            std::hint::black_box(&case),
            std::hint::black_box(&expert),
        ));
    });
    let per = |total: Duration, n: usize| total.as_secs_f64() / n as f64;
    println!(
        "# expert-score, {calls} calls each, load {}",
        load_average()
    );
    println!(
        "native (baseline)          median {} p99 {}  throughput {:.0}/s",
        us(n50),
        us(n99),
        1.0 / per(ntotal, calls)
    );
    // The guest as it was built before (opt-level "s") and as now (3), in the same run.
    let mut built = Vec::new();
    for level in ["s", "3"] {
        let wasm = build_guest("expert-score", level);
        let plugin = load(&wasm, "expert_score", World::Scorer);
        let mut session = plugin.scorer(&opts).unwrap();
        let got = session.score(&case, &expert).unwrap().total;
        assert_eq!(got, want, "the plugin and the native build agree");
        let (r50, r99, rtotal) = timed(calls, || {
            std::hint::black_box(session.score(&case, &expert).unwrap());
        });
        println!(
            "reused instance (session), guest opt-level {level} ({} KiB)  median {} p99 {}  throughput {:.0}/s  native ÷ wasm speed {:.3}  (load {})",
            wasm.len() / 1024,
            us(r50),
            us(r99),
            1.0 / per(rtotal, calls),
            per(ntotal, calls) / per(rtotal, calls),
            load_average()
        );
        drop(session);
        built.push((wasm, plugin));
    }
    let (wasm, plugin) = built.pop().expect("built at opt-level 3");
    let fresh_calls = (calls / 10).max(1000);
    let (f50, f99, ftotal) = timed(fresh_calls, || {
        let mut s = plugin.scorer(&opts).unwrap();
        std::hint::black_box(s.score(&case, &expert).unwrap());
    });
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

    let (s_wasm, _) = built.pop().expect("built at opt-level s");
    for (level, wasm) in [("s", &s_wasm), ("3", &wasm)] {
        let (cold, warm) = swap_times(wasm, swaps);
        println!(
            "hot swap (read, verify, compile, link, swap), guest opt-level {level}, {swaps} each: new component median {:.1} ms max {:.1} ms; compiled before median {:.2} ms max {:.2} ms  (load {})",
            cold[cold.len() / 2].as_secs_f64() * 1e3,
            cold[cold.len() - 1].as_secs_f64() * 1e3,
            warm[warm.len() / 2].as_secs_f64() * 1e3,
            warm[warm.len() - 1].as_secs_f64() * 1e3,
            load_average()
        );
    }
    rule_step((calls / 10).max(1000), "3");
}
