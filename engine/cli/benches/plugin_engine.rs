//! Plugins in a running engine (`cargo bench -p huizhen --bench plugin_engine`): the `plugin`
//! step's cost per call as `GET /api/plugins` reports it, hot swaps with and without traffic,
//! and what a plugin spinning to its deadline on one pipeline does to another pipeline's ACKs.
//!
//! One process: `huizhen_core::Engine` started from pipeline YAML (SQLite in a temp folder,
//! encryption at rest on, one tokio worker per core as `huizhen run`), a plugin folder with
//! signed packages of `plugins/route-by-facility` and `plugins/misbehave` (built here for
//! wasm32-wasip2, release), and a paced MLLP sender (`tests/e2e/support/paced.rs`) on a thread
//! of its own (a `current_thread` runtime: at most one core). Pipelines:
//!
//! * `intake` (MLLP): `plugin: { name: route-by-facility, config: { default: adt } }`, routing
//!   every message to `adt` (MLLP, journal);
//! * `other` (MLLP): journal only, the pipeline whose ACKs the slow plugin must not hold up;
//! * `spin` (MLLP): `plugin: { name: misbehave, config: { every-message: loop } }`: every call
//!   spins to its 50 ms deadline.
//!
//! Measurements, in this order:
//!
//! 1. **step**: `--rate` msg/s (default 2000) into `intake` for `--seconds` (default 10); the
//!    plugin's calls p50/p99 from the registry (what `/api/plugins` shows), the ACK latency;
//! 2. **swap, idle**: `--swaps` (default 5) new versions of route-by-facility (a component never
//!    compiled in this process: a custom section makes its bytes new) reloaded with no traffic;
//! 3. **swap under load**: the same while `--rate` msg/s go into `intake`; every call must pass;
//! 4. **slow plugin**: `--rate` msg/s into `other` alone (the control), then again while 40
//!    msg/s go into `spin` (enough to keep every thread of the plugin call pool spinning).
//!
//! Options (after `--`): `--rate N`, `--seconds N`, `--swaps N`, `--connections N` (16),
//! `--only step,swap,slow`.

// A benchmark reports on stdout.
#![allow(clippy::print_stdout)]

#[path = "../../../tests/e2e/support/paced.rs"]
mod paced;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use huizhen_core::Engine;
use huizhen_core::config::{
    Loaded, LoadedPipeline, PluginsConfig, RootConfig, check_with, parse_yaml,
};
use huizhen_core::extensions::Extensions;
use huizhen_plugin::registry::{Registry, registry};
use huizhen_plugin::{Capability, World, package};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_owned())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

struct Signer {
    pem: String,
    public: String,
}

impl Signer {
    fn new() -> Signer {
        let (pem, public) = package::generate_key();
        Signer { pem, public }
    }

    fn package(&self, dir: &Path, wasm: &[u8], name: &str, version: &str, caps: Vec<Capability>) {
        let (p, _) =
            package::write_package(dir, wasm, name, version, World::Rule, caps, None).unwrap();
        package::sign_package(&p, &package::parse_private_key(&self.pem).unwrap()).unwrap();
    }
}

fn pipelines(intake: u16, adt: u16, other: u16, spin: u16) -> String {
    format!(
        "version: 1
name: intake
source:
  mllp: {{ listen: \"127.0.0.1:{intake}\" }}
steps:
  - plugin: {{ name: route-by-facility, config: {{ default: adt }} }}
sinks:
  - journal: {{}}
---
version: 1
name: adt
source:
  mllp: {{ listen: \"127.0.0.1:{adt}\" }}
sinks:
  - journal: {{}}
---
version: 1
name: other
source:
  mllp: {{ listen: \"127.0.0.1:{other}\" }}
sinks:
  - journal: {{}}
---
version: 1
name: spin
source:
  mllp: {{ listen: \"127.0.0.1:{spin}\" }}
steps:
  - plugin: {{ name: misbehave, config: {{ every-message: loop }}, deadline: 50ms }}
sinks:
  - journal: {{}}
"
    )
}

/// Paced load from a thread of its own (its own single-threaded runtime).
fn load(
    port: u16,
    rate: f64,
    seconds: f64,
    connections: usize,
    prefix: &str,
) -> std::thread::JoinHandle<paced::Paced> {
    let prefix = prefix.to_owned();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(paced::run(
                port,
                rate,
                Duration::from_secs_f64(seconds),
                connections,
                &prefix,
                "县人民医院",
            ))
    })
}

fn acks(p: &paced::Paced) -> String {
    format!(
        "{} acked of {} sent ({} errors), {:.0} msg/s, ACK p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
        p.latencies_us.len(),
        p.sent,
        p.errors,
        p.rate(),
        p.ms(0.5),
        p.ms(0.99),
        p.ms(1.0)
    )
}

fn calls(reg: &Registry, name: &str) -> String {
    let v = huizhen_core::extensions::PluginCatalog::list(reg)
        .into_iter()
        .find(|p| p["name"] == name)
        .unwrap_or_default();
    format!(
        "{name}: {} calls, {} errors, p50 {} µs, p99 {} µs",
        v["calls"], v["errors"], v["latency_us"]["p50"], v["latency_us"]["p99"]
    )
}

/// `n` swaps of route-by-facility to versions never compiled before; the wall time of each
/// `reload` and the registry's own `last_swap_ms`.
fn swaps(
    reg: &Registry,
    signer: &Signer,
    dir: &Path,
    wasm: &[u8],
    first: usize,
    n: usize,
) -> Vec<(Duration, Duration)> {
    let slot = reg.slot("route-by-facility").unwrap();
    let mut out = Vec::new();
    for i in first..first + n {
        let version = format!("1.{i}.0");
        let bytes = package::with_custom_section(wasm, "bench", &i.to_le_bytes());
        signer.package(
            dir,
            &bytes,
            "route-by-facility",
            &version,
            vec![Capability::Log, Capability::Config],
        );
        let t = Instant::now();
        reg.reload("route-by-facility").unwrap();
        let wall = t.elapsed();
        assert_eq!(slot.current().unwrap().version(), version);
        out.push((wall, slot.last_swap().unwrap()));
        std::thread::sleep(Duration::from_millis(300));
    }
    out
}

fn swap_line(what: &str, s: &[(Duration, Duration)]) -> String {
    let mut wall: Vec<f64> = s.iter().map(|x| x.0.as_secs_f64() * 1e3).collect();
    wall.sort_by(f64::total_cmp);
    format!(
        "{what}: {} swaps, median {:.1} ms, max {:.1} ms (each: {})",
        s.len(),
        wall[wall.len() / 2],
        wall[wall.len() - 1],
        s.iter()
            .map(|x| format!("{:.1}", x.1.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
            .join(" ")
    )
}

fn main() {
    let rate: f64 = arg("--rate", "2000").parse().unwrap();
    let seconds: f64 = arg("--seconds", "10").parse().unwrap();
    let n_swaps: usize = arg("--swaps", "5").parse().unwrap();
    let connections: usize = arg("--connections", "16").parse().unwrap();
    let only = arg("--only", "step,swap,slow");
    let wants = |w: &str| only.split(',').any(|o| o == w);

    let route = std::fs::read(paced::guest("route-by-facility")).unwrap();
    let misbehave = std::fs::read(paced::guest("misbehave")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let plugin_dir = dir.join("plugins");
    std::fs::create_dir_all(&plugin_dir).unwrap();
    let signer = Signer::new();
    let caps = vec![Capability::Log, Capability::Config];
    signer.package(
        &plugin_dir,
        &route,
        "route-by-facility",
        "1.0.0",
        caps.clone(),
    );
    signer.package(&plugin_dir, &misbehave, "misbehave", "1.0.0", caps);

    let (intake, adt, other, spin) = (
        paced::free_port(),
        paced::free_port(),
        paced::free_port(),
        paced::free_port(),
    );
    let yaml = pipelines(intake, adt, other, spin);
    let mut root = RootConfig::default();
    root.store.url = format!("sqlite://{}/journal.db", dir.display());
    root.security.encryption.keys_file = dir.join("keys");
    root.plugins = PluginsConfig {
        dir: plugin_dir.clone(),
        trusted_keys: BTreeMap::from([("bench".to_owned(), signer.public.clone())]),
        allow_unsigned: false,
        // Swaps are made by `reload` (as `POST /api/plugins/{name}/reload`), timed here.
        watch: false,
        names_file: None,
        expert_scorer: None,
    };
    let file = dir.join("bench.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let mut list = Vec::new();
    for (i, doc) in yaml.split("---\n").enumerate() {
        let f = dir.join(format!("p{i}.yaml"));
        std::fs::write(&f, doc).unwrap();
        let config = parse_yaml(&f, doc).unwrap_or_else(|e| panic!("{e:?}"));
        list.push(LoadedPipeline { file: f, config });
    }
    let errors = check_with(&list, &Extensions::new(&root.plugins));
    assert!(errors.is_empty(), "{errors:?}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let engine: Engine = rt
        .block_on(Engine::start(Loaded {
            root,
            root_file: None,
            pipelines: list,
        }))
        .unwrap();
    let reg: Arc<Registry> = registry(&engine.extensions).unwrap();
    for port in [intake, adt, other, spin] {
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "port {port} never opened"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    println!(
        "# plugins in a running engine: {rate} msg/s, {seconds} s per run, {connections} connections, {} cores, plugin pool {} threads",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        huizhen_plugin::pool::threads()
    );

    if wants("step") {
        let p = load(intake, rate, seconds, connections, "step")
            .join()
            .unwrap();
        println!("step (route-by-facility into `intake`), load {}", loadavg());
        println!("  {}", acks(&p));
        println!("  {}", calls(&reg, "route-by-facility"));
    }
    if wants("swap") {
        let idle = swaps(&reg, &signer, &plugin_dir, &route, 1, n_swaps);
        println!(
            "{}, load {}",
            swap_line("swap, no traffic", &idle),
            loadavg()
        );
        let running = load(
            intake,
            rate,
            seconds.max(n_swaps as f64 * 0.6 + 2.0),
            connections,
            "swap",
        );
        std::thread::sleep(Duration::from_millis(1000));
        let busy = swaps(&reg, &signer, &plugin_dir, &route, 1 + n_swaps, n_swaps);
        let p = running.join().unwrap();
        println!(
            "{} at {rate} msg/s, load {}",
            swap_line("swap under load", &busy),
            loadavg()
        );
        println!("  traffic during the swaps: {}", acks(&p));
        println!("  {}", calls(&reg, "route-by-facility"));
    }
    if wants("slow") {
        let control = load(other, rate, seconds, connections, "control")
            .join()
            .unwrap();
        println!("slow plugin, control (`other` alone), load {}", loadavg());
        println!("  {}", acks(&control));
        let spinning = load(spin, 40.0, seconds, 2, "spin");
        let with = load(other, rate, seconds, connections, "with")
            .join()
            .unwrap();
        let s = spinning.join().unwrap();
        println!(
            "slow plugin, `other` while `spin` spins to its deadline, load {}",
            loadavg()
        );
        println!("  {}", acks(&with));
        println!("  spin: {}", acks(&s));
        println!("  {}", calls(&reg, "misbehave"));
    }
    rt.block_on(engine.shutdown(Duration::from_secs(20)));
}
