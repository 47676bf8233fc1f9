//! The plugin host against real components built for wasm32-wasip2 from `plugins/`: a badly
//! behaved plugin is contained (deadline, memory cap, panic) while 1,000 other calls pass;
//! packages are refused when unsigned, tampered, signed by an unknown key or built for another
//! contract; a plugin is swapped 10 times under 20,000 calls with no failed call; the `plugin`
//! step routes in a running pipeline. A plugin prints to the log, reads the clock and gets real
//! random numbers only with the grants for them; a name stays with the key that first signed it;
//! a manifest is authenticated before it is parsed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use huizhen_core::config::PluginsConfig;
use huizhen_plugin::bindings::huizhen::plugin::types::{Decision, Message};
use huizhen_plugin::package::{self, Trust};
use huizhen_plugin::{CallError, CallOptions, Capability, Limits, Registry, World};

#[path = "host/coverage.rs"]
mod coverage;
#[path = "host/reuse.rs"]
mod reuse;
#[path = "host/scoring.rs"]
mod scoring;

/// Builds the example plugins once per test run; returns the folder with the `.wasm` files.
fn plugins() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins");
        let target = root.join("target");
        // One package per cargo run: each enables its own world of huizhen-sdk.
        for p in [
            "misbehave",
            "peek",
            "route-by-facility",
            "expert-score",
            "weights-basic",
            "coverage-basic",
        ] {
            let out = std::process::Command::new(env!("CARGO"))
                .args(["build", "--release", "--target", "wasm32-wasip2", "-p", p])
                .current_dir(&root)
                .env("CARGO_TARGET_DIR", &target)
                .output()
                .expect("cargo");
            assert!(
                out.status.success(),
                "building plugin {p} (rustup target add wasm32-wasip2):\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        target.join("wasm32-wasip2/release")
    })
}

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A vendor key: (private PEM, public base64).
fn vendor() -> &'static (String, String) {
    static KEY: OnceLock<(String, String)> = OnceLock::new();
    KEY.get_or_init(package::generate_key)
}

/// Writes a signed package of `wasm` into `out`.
fn signed(out: &Path, wasm: &str, name: &str, version: &str, world: World) -> PathBuf {
    signed_with(
        out,
        wasm,
        name,
        version,
        world,
        Capability::ALL.to_vec(),
        &vendor().0,
    )
}

/// Writes a package of `wasm` with these capabilities, signed by the private key `pem`.
fn signed_with(
    out: &Path,
    wasm: &str,
    name: &str,
    version: &str,
    world: World,
    caps: Vec<Capability>,
    pem: &str,
) -> PathBuf {
    let bytes = std::fs::read(plugins().join(wasm)).unwrap();
    let (dir, _) = package::write_package(out, &bytes, name, version, world, caps, None).unwrap();
    let key = package::parse_private_key(pem).unwrap();
    package::sign_package(&dir, &key).unwrap();
    dir
}

/// Runs `f` with a subscriber on this thread that writes every event of this crate (trace and
/// up) as text; returns `f`'s result and that text.
fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink::default();
    let w = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_ansi(false)
        .with_env_filter("huizhen_plugin=trace")
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&sink.0.lock().unwrap()).into_owned();
    (out, text)
}

fn config(dir: &Path) -> PluginsConfig {
    PluginsConfig {
        dir: dir.to_owned(),
        trusted_keys: BTreeMap::from([("acme".to_owned(), vendor().1.clone())]),
        allow_unsigned: false,
        watch: true,
        names_file: None,
        expert_scorer: None,
    }
}

fn msg(kind: &str, body: &[u8]) -> Message {
    Message {
        id: "m1".into(),
        pipeline: "p".into(),
        facility: "f".into(),
        kind: kind.into(),
        body: body.to_vec(),
        headers: vec![],
    }
}

#[test]
fn a_misbehaving_plugin_fails_only_its_own_calls() {
    let dir = temp("misbehave");
    signed(&dir, "misbehave.wasm", "misbehave", "1.0.0", World::Rule);
    let reg = Registry::open(&config(&dir)).unwrap();
    let p = reg.slot("misbehave").unwrap().current().unwrap();
    let call = CallOptions {
        limits: Limits {
            deadline: Duration::from_millis(50),
            memory: 64 << 20,
            fuel: None,
        },
        ..CallOptions::default()
    };
    let fine = CallOptions {
        limits: Limits {
            deadline: Duration::from_secs(5),
            ..call.limits
        },
        ..call.clone()
    };
    let mut passed = 0;
    for i in 0..1000 {
        match i {
            100 => {
                let t = Instant::now();
                let e = p.decide(&msg("text", b"loop"), &call).unwrap_err();
                assert!(matches!(e, CallError::Deadline { .. }), "{e}");
                assert!(e.to_string().contains("misbehave@1.0.0"), "{e}");
                assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
            }
            200 => {
                let e = p.decide(&msg("text", b"alloc"), &call).unwrap_err();
                assert!(matches!(e, CallError::Memory { .. }), "{e}");
                assert!(e.to_string().contains("cap of 64 MiB"), "{e}");
            }
            300 => {
                let e = p.decide(&msg("text", b"panic"), &call).unwrap_err();
                assert!(matches!(e, CallError::Trap { .. }), "{e}");
                assert!(
                    e.to_string().contains("misbehave was asked to panic"),
                    "the panic message from stderr: {e}"
                );
            }
            400 => {
                let e = p.decide(&msg("text", b"refuse"), &call).unwrap_err();
                assert_eq!(
                    e.to_string(),
                    "plugin misbehave@1.0.0 refused: refused on request"
                );
                assert!(!e.is_permanent());
            }
            _ => {}
        }
        // The well-behaved calls get a deadline a loaded machine cannot miss: a call parked
        // by the scheduler past 50 ms is not the plugin misbehaving.
        let d = p
            .decide(&msg("text", format!("fine {i}").as_bytes()), &fine)
            .unwrap();
        assert!(
            matches!(d, Decision::Annotate(ref h) if h == &vec![("misbehave".to_owned(), "ok".to_owned())])
        );
        passed += 1;
    }
    assert_eq!(passed, 1000);
    assert_eq!(p.stats().errors(), 4);
    assert_eq!(p.stats().calls(), 1004);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn route_by_facility_reads_msh4_and_its_config() {
    let dir = temp("route");
    signed(
        &dir,
        "route_by_facility.wasm",
        "route-by-facility",
        "0.1.0",
        World::Rule,
    );
    let reg = Registry::open(&config(&dir)).unwrap();
    let p = reg.slot("route-by-facility").unwrap().current().unwrap();
    assert_eq!(p.signer(), Some("acme"));
    let call = CallOptions {
        config: Arc::new(BTreeMap::from([
            ("县人民医院".to_owned(), "adt-county".to_owned()),
            ("default".to_owned(), "adt-other".to_owned()),
        ])),
        ..CallOptions::default()
    };
    let county = "MSH|^~\\&|HIS|县人民医院^123^L|HZ|P|20261124||ADT^A01|1|P|2.5\rPID|1\r";
    let other = "MSH|^~\\&|HIS|乡镇卫生院|HZ|P|20261124||ADT^A01|2|P|2.5\rPID|1\r";
    assert!(
        matches!(p.decide(&msg("hl7v2", county.as_bytes()), &call).unwrap(), Decision::Route(ref t) if t == "adt-county")
    );
    assert!(
        matches!(p.decide(&msg("hl7v2", other.as_bytes()), &call).unwrap(), Decision::Route(ref t) if t == "adt-other")
    );
    assert!(matches!(
        p.decide(&msg("json", b"{}"), &call).unwrap(),
        Decision::Pass
    ));
    assert!(matches!(
        p.decide(&msg("hl7v2", b"PID|1"), &call),
        Err(CallError::Refused { .. })
    ));
    let _ = std::fs::remove_dir_all(dir);
}

/// A host function outside the manifest's capabilities traps the call, naming the capability.
#[test]
fn capabilities_are_what_the_manifest_asks_for() {
    let dir = temp("caps");
    let bytes = std::fs::read(plugins().join("route_by_facility.wasm")).unwrap();
    let (pkg, _) = package::write_package(
        &dir,
        &bytes,
        "route-by-facility",
        "0.1.0",
        World::Rule,
        vec![Capability::Log],
        None,
    )
    .unwrap();
    package::sign_package(&pkg, &package::parse_private_key(&vendor().0).unwrap()).unwrap();
    let reg = Registry::open(&config(&dir)).unwrap();
    let p = reg.slot("route-by-facility").unwrap().current().unwrap();
    let adt = "MSH|^~\\&|HIS|县人民医院|HZ|P|20261124||ADT^A01|1|P|2.5\r";
    let e = p
        .decide(&msg("hl7v2", adt.as_bytes()), &CallOptions::default())
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("called host.config without the `config` capability"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unsigned_tampered_and_foreign_packages_are_refused() {
    let dir = temp("refused");
    let trust = Trust::new([("acme".to_owned(), vendor().1.clone())], false).unwrap();

    let good = signed(&dir, "misbehave.wasm", "misbehave", "1.0.0", World::Rule);
    assert_eq!(
        package::read_package(&good, &trust)
            .unwrap()
            .signer
            .as_deref(),
        Some("acme")
    );

    // The wasm changed after signing.
    let tampered = signed(&dir, "misbehave.wasm", "misbehave", "1.0.1", World::Rule);
    let wasm = tampered.join("misbehave-1.0.1.wasm");
    let mut bytes = std::fs::read(&wasm).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&wasm, bytes).unwrap();
    let e = package::read_package(&tampered, &trust).unwrap_err();
    assert!(
        e.contains("misbehave-1.0.1.wasm: sha256 is") && e.contains("changed after"),
        "{e}"
    );

    // The manifest changed after signing (a capability added).
    let edited = signed(&dir, "misbehave.wasm", "misbehave", "1.0.2", World::Rule);
    let m = edited.join("plugin.toml");
    let text = std::fs::read_to_string(&m).unwrap();
    std::fs::write(
        &m,
        text.replace("version = \"1.0.2\"", "version = \"1.0.3\""),
    )
    .unwrap();
    let e = package::read_package(&edited, &trust).unwrap_err();
    assert!(
        e.contains(
            "plugin.toml.sig: signature refused: does not verify with any trusted key (acme)"
        ),
        "{e}"
    );

    // Signed by a key the engine does not trust.
    let stranger = signed(&dir, "misbehave.wasm", "misbehave", "1.0.4", World::Rule);
    let (other_pem, _) = package::generate_key();
    package::sign_package(&stranger, &package::parse_private_key(&other_pem).unwrap()).unwrap();
    let e = package::read_package(&stranger, &trust).unwrap_err();
    assert!(e.contains("does not verify with any trusted key"), "{e}");

    // No signature at all; allowed only with allow_unsigned.
    let unsigned = signed(&dir, "misbehave.wasm", "misbehave", "1.0.5", World::Rule);
    std::fs::remove_file(unsigned.join("plugin.toml.sig")).unwrap();
    let e = package::read_package(&unsigned, &trust).unwrap_err();
    assert!(
        e.contains("plugin.toml.sig: missing: unsigned plugins are refused"),
        "{e}"
    );
    let dev = Trust::new([], true).unwrap();
    assert!(
        package::read_package(&unsigned, &dev)
            .unwrap()
            .signer
            .is_none()
    );

    // Built for a contract version this engine does not implement.
    let future = signed(&dir, "misbehave.wasm", "misbehave", "1.0.6", World::Rule);
    let m = future.join("plugin.toml");
    let text = std::fs::read_to_string(&m).unwrap();
    std::fs::write(
        &m,
        text.replace(
            &format!("huizhen:plugin@{}", huizhen_plugin::CONTRACT),
            "huizhen:plugin@0.2.0",
        ),
    )
    .unwrap();
    package::sign_package(&future, &package::parse_private_key(&vendor().0).unwrap()).unwrap();
    let e = package::read_package(&future, &trust).unwrap_err();
    assert!(
        e.contains("built for huizhen:plugin@0.2.0; this engine implements huizhen:plugin@0.1.2"),
        "{e}"
    );

    // A rule component whose manifest claims another world: refused when linked.
    let liar = temp("refused-liar");
    signed(&liar, "misbehave.wasm", "misbehave", "2.0.0", World::Scorer);
    let reg = Registry::open(&config(&liar)).unwrap();
    let slot = reg.slot("misbehave").unwrap();
    assert!(slot.current().is_none());
    let e = slot.last_error().unwrap();
    assert!(e.contains("does not fit the `scorer` world"), "{e}");

    // Not a component at all.
    let bad = temp("refused-bad");
    let (pkg, _) = package::write_package(
        &bad,
        b"not wasm at all",
        "bad",
        "0.1.0",
        World::Rule,
        vec![],
        None,
    )
    .unwrap();
    package::sign_package(&pkg, &package::parse_private_key(&vendor().0).unwrap()).unwrap();
    let reg = Registry::open(&config(&bad)).unwrap();
    let e = reg.slot("bad").unwrap().last_error().unwrap();
    assert!(e.contains("not a WebAssembly component"), "{e}");
    for d in [dir, liar, bad] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// 20,000 calls from four threads while the plugin is swapped 10 times by dropping package
/// folders into the watched folder (and removing them, which rolls back): no call fails, both
/// versions answer; a broken package dropped in leaves the serving version in place.
#[test]
fn hot_reload_under_load_fails_no_call() {
    let dir = temp("hot");
    let stage = temp("hot-stage");
    signed(&dir, "misbehave.wasm", "misbehave", "1.0.0", World::Rule);
    let v2 = signed(&stage, "misbehave.wasm", "misbehave", "2.0.0", World::Rule);
    let reg = Arc::new(Registry::open(&config(&dir)).unwrap());
    reg.watch().unwrap();
    let slot = reg.slot("misbehave").unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let mut threads = Vec::new();
    // What is tested is that a swap fails no call; the 50 ms default deadline would also fail
    // calls whose thread the scheduler parks while the 2 cores compile the new version.
    let opts = CallOptions {
        limits: huizhen_plugin::Limits {
            deadline: Duration::from_secs(10),
            ..Default::default()
        },
        ..CallOptions::default()
    };
    for t in 0..4 {
        let (slot, done, calls, seen) = (slot.clone(), done.clone(), calls.clone(), seen.clone());
        let opts = opts.clone();
        threads.push(std::thread::spawn(move || {
            let mut failures = Vec::new();
            let mut mine = BTreeMap::<String, u64>::new();
            let mut i = 0u64;
            while calls.load(Ordering::Relaxed) < 20_000 || !done.load(Ordering::Relaxed) {
                let p = slot.current().unwrap();
                match p.decide(&msg("text", format!("call {t}/{i}").as_bytes()), &opts) {
                    Ok(_) => *mine.entry(p.version().to_owned()).or_default() += 1,
                    Err(e) => failures.push(e.to_string()),
                }
                calls.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            let mut s = seen.lock().unwrap();
            for (k, v) in mine {
                *s.entry(k).or_default() += v;
            }
            failures
        }));
    }
    let wait_for = |version: &str| {
        let t = Instant::now();
        while slot.current().unwrap().version() != version {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "version {version} never served; last error {:?}",
                slot.last_error()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let into = dir.join("misbehave-2.0.0");
    for round in 0..5 {
        // Drop the new version in (a rename: the folder appears whole) …
        copy_dir(&v2, &stage.join(format!("copy-{round}")));
        std::fs::rename(stage.join(format!("copy-{round}")), &into).unwrap();
        wait_for("2.0.0");
        // … and take it out again: back to 1.0.0.
        std::fs::remove_dir_all(&into).unwrap();
        wait_for("1.0.0");
    }
    // A broken package: the serving version stays, the error is visible.
    let broken = dir.join("misbehave-3.0.0");
    copy_dir(&v2, &broken);
    let m = broken.join("plugin.toml");
    let text = std::fs::read_to_string(&m).unwrap();
    std::fs::write(&m, text.replace("2.0.0", "3.0.0")).unwrap();
    let t = Instant::now();
    while slot.last_error().is_none() {
        assert!(t.elapsed() < Duration::from_secs(30), "no load error seen");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        slot.last_error().unwrap().contains("signature refused"),
        "{:?}",
        slot.last_error()
    );
    done.store(true, Ordering::Relaxed);
    let failures: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(
        failures.is_empty(),
        "{} failed calls: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert_eq!(slot.current().unwrap().version(), "1.0.0");
    assert!(slot.swaps() >= 11, "swaps {}", slot.swaps());
    let seen = seen.lock().unwrap();
    assert!(calls.load(Ordering::Relaxed) >= 20_000);
    assert!(seen.get("1.0.0").copied().unwrap_or(0) > 0, "{seen:?}");
    assert!(seen.get("2.0.0").copied().unwrap_or(0) > 0, "{seen:?}");
    for d in [dir, stage] {
        let _ = std::fs::remove_dir_all(d);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// The `plugin` step in a running engine: an ADT from the county hospital is routed by the
/// plugin to that hospital's pipeline; an unknown plugin stops the start with what the folder
/// holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_step_routes_in_a_running_pipeline() {
    use huizhen_core::config::{Loaded, LoadedPipeline, RootConfig, check_with, parse_yaml};
    use huizhen_core::extensions::Extensions;
    let dir = temp("plugin-step");
    let dist = dir.join("dist");
    signed(
        &dist,
        "route_by_facility.wasm",
        "route-by-facility",
        "0.1.0",
        World::Rule,
    );
    let load = |texts: &[String]| {
        let mut root = RootConfig::default();
        root.store.url = format!("sqlite://{}/j.db", dir.display());
        root.security.encryption.keys_file = dir.join("keys");
        root.journal.scheduler_poll = Duration::from_millis(50);
        root.plugins = config(&dist);
        let pipelines: Vec<LoadedPipeline> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let file = dir.join(format!("p{i}.yaml"));
                std::fs::write(&file, t).unwrap();
                LoadedPipeline {
                    config: parse_yaml(&file, t).unwrap(),
                    file,
                }
            })
            .collect();
        let errors: Vec<String> = check_with(&pipelines, &Extensions::new(&root.plugins))
            .iter()
            .map(|e| e.to_string())
            .collect();
        (
            Loaded {
                root,
                root_file: None,
                pipelines,
            },
            errors,
        )
    };
    let intake = "version: 1\nname: intake\nsource:\n  http: { path: /in/x, kind: hl7v2 }\nsteps:\n  - plugin: { name: route-by-facility, config: { 县人民医院: adt-county } }\nsinks:\n  - journal: {}\n".to_owned();
    let county = "version: 1\nname: adt-county\nsource:\n  http: { path: /in/y, kind: hl7v2 }\nsinks:\n  - journal: {}\n".to_owned();
    let (loaded, errors) = load(&[intake, county.clone()]);
    assert!(errors.is_empty(), "{errors:?}");
    let engine = huizhen_core::Engine::start(loaded).await.unwrap();
    let catalog = engine
        .extensions
        .plugin_catalog()
        .expect("a plugin catalog");
    let adt = "MSH|^~\\&|HIS|县人民医院|HZ|P|20261124||ADT^A01|1|P|2.5\rPID|1||9^^^H^MR||王^五\r";
    let a = engine
        .pipeline("intake")
        .unwrap()
        .submit(huizhen_core::message::NewMessage::new(
            "intake",
            "default",
            "hl7v2",
            adt.as_bytes().to_vec(),
        ))
        .await
        .unwrap();
    let mut routed = None;
    for _ in 0..200 {
        let page = engine
            .store
            .list(&huizhen_core::store::ListFilter {
                pipeline: Some("adt-county".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        if let Some(m) = page.messages.first() {
            routed = Some(m.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let routed = routed.expect("the plugin routed the ADT to adt-county");
    assert_eq!(routed.parent_id.as_deref(), Some(a.id.as_str()));
    let list = catalog.list();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["name"], "route-by-facility");
    assert_eq!(list[0]["version"], "0.1.0");
    assert_eq!(list[0]["world"], "rule");
    assert_eq!(list[0]["signed_by"], "acme");
    assert_eq!(list[0]["calls"], 1);
    let reloaded = catalog.reload("route-by-facility").unwrap();
    assert_eq!(reloaded["swaps"], 2);
    assert!(catalog.reload("nope").is_err());
    engine.shutdown(Duration::from_secs(5)).await;

    let missing = "version: 1\nname: intake\nsource:\n  http: { path: /in/x }\nsteps:\n  - plugin: { name: route-by-facilty }\n".to_owned();
    let (_, errors) = load(&[missing]);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("no plugin \"route-by-facilty\"")
                && e.contains("found: route-by-facility")),
        "{errors:?}"
    );
    let bare = format!(
        "version: 1\nname: intake\nsource:\n  http: {{ path: /in/x }}\nsteps:\n  - plugin: {{ path: \"{}\" }}\n",
        plugins().join("route_by_facility.wasm").display()
    );
    let (_, errors) = load(&[bare]);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("a bare component has no signed manifest")),
        "{errors:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn peek(dir: &Path, name: &str, caps: Vec<Capability>) -> huizhen_plugin::Plugin {
    let pkg = signed_with(
        dir,
        "peek.wasm",
        name,
        "1.0.0",
        World::Rule,
        caps,
        &vendor().0,
    );
    let trust = Trust::new([("acme".to_owned(), vendor().1.clone())], false).unwrap();
    let pkg = package::read_package(&pkg, &trust).unwrap();
    huizhen_plugin::Plugin::from_package(pkg, Arc::new(huizhen_plugin::Stats::default())).unwrap()
}

/// What a plugin prints reaches the engine's log, tagged `name@version`, only with the `log`
/// capability; without it the output is dropped and counted, and one warning (without the
/// text) names the plugin.
#[test]
fn printing_reaches_the_log_only_with_the_log_grant() {
    let dir = temp("print");
    let print = msg("text", b"print");
    // Both read the clock as well (peek imports it), so both are granted `clock`.
    let quiet = peek(&dir, "peek-quiet", vec![Capability::Clock]);
    let (d, log) = logged(|| quiet.decide(&print, &CallOptions::default()));
    assert!(matches!(d, Ok(Decision::Pass)), "{d:?}");
    assert!(!log.contains("peek on stdout"), "{log}");
    assert!(!log.contains("peek on stderr"), "{log}");
    let printed = ("peek on stdout: m1\n".len() + "peek on stderr: m1\n".len()) as u64;
    assert_eq!(quiet.stats().output_dropped(), printed);
    assert!(
        log.contains("peek-quiet@1.0.0")
            && log.contains("printed without the `log` capability")
            && log.contains(&format!("bytes={printed}")),
        "one warning names the plugin: {log}"
    );
    let (_, log) = logged(|| quiet.decide(&print, &CallOptions::default()));
    assert_eq!(log, "", "the warning is given once per version");
    assert_eq!(quiet.stats().output_dropped(), 2 * printed);

    let loud = peek(&dir, "peek-loud", vec![Capability::Clock, Capability::Log]);
    let (d, log) = logged(|| loud.decide(&print, &CallOptions::default()));
    assert!(matches!(d, Ok(Decision::Pass)), "{d:?}");
    let line = |text: &str| {
        log.lines()
            .find(|l| l.contains(text))
            .unwrap_or_else(|| panic!("no {text:?} in {log}"))
            .to_owned()
    };
    let out = line("peek on stdout: m1");
    assert!(
        out.contains("INFO")
            && out.contains("plugin=peek-loud@1.0.0")
            && out.contains("stream=\"stdout\""),
        "{out}"
    );
    let err = line("peek on stderr: m1");
    assert!(
        err.contains("WARN")
            && err.contains("plugin=peek-loud@1.0.0")
            && err.contains("stream=\"stderr\""),
        "{err}"
    );
    assert_eq!(loud.stats().output_dropped(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

/// A plugin that reads the WASI clocks without `clock` is refused when it is loaded, naming the
/// interface and the grant; with `clock` the wall clock reads the message's received time
/// (as `host.now-ms`). Without `random` its random numbers are a fixed sequence (the same in
/// every call); with it they are real.
#[test]
fn clock_and_random_only_with_their_grants() {
    let dir = temp("clock-random");
    let pkg = signed_with(
        &dir,
        "peek.wasm",
        "peek",
        "1.0.0",
        World::Rule,
        vec![],
        &vendor().0,
    );
    let reg = Registry::open(&config(&dir)).unwrap();
    let slot = reg.slot("peek").unwrap();
    assert!(slot.current().is_none());
    let e = slot.last_error().unwrap();
    assert!(
        e.contains("plugin peek@1.0.0 imports wasi:clocks/")
            && e.contains("but its manifest does not grant `clock`"),
        "{e}"
    );
    drop(reg);
    std::fs::remove_dir_all(&pkg).unwrap();

    let call = CallOptions {
        now_ms: 1_790_000_000_123,
        ..CallOptions::default()
    };
    let peek_at = |p: &huizhen_plugin::Plugin| -> BTreeMap<String, String> {
        match p.decide(&msg("text", b"peek"), &call).unwrap() {
            Decision::Annotate(h) => h.into_iter().collect(),
            d => panic!("{d:?}"),
        }
    };
    let fixed = peek(&dir, "peek-fixed", vec![Capability::Clock]);
    let (a, b) = (peek_at(&fixed), peek_at(&fixed));
    assert_eq!(
        a["wall-ms"], "1790000000123",
        "the message's time, not the host's"
    );
    assert_eq!(
        a["random"], b["random"],
        "a fixed sequence without `random`"
    );
    let real = peek(
        &dir,
        "peek-real",
        vec![Capability::Clock, Capability::Random],
    );
    let (a, b) = (peek_at(&real), peek_at(&real));
    assert_ne!(
        a["random"], b["random"],
        "real random numbers with `random`"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A name belongs to the key that first signed it: a higher version signed by another trusted
/// vendor is refused with the reason, the old version keeps serving, also after a restart;
/// an operator's `bind` moves the name.
#[test]
fn a_name_stays_with_the_key_that_first_signed_it() {
    static RIVAL: OnceLock<(String, String)> = OnceLock::new();
    let rival = RIVAL.get_or_init(package::generate_key);
    let dir = temp("names");
    let mut cfg = config(&dir);
    cfg.trusted_keys.insert("rival".into(), rival.1.clone());
    signed(&dir, "misbehave.wasm", "misbehave", "1.0.0", World::Rule);
    let reg = Registry::open(&cfg).unwrap();
    let slot = reg.slot("misbehave").unwrap();
    assert_eq!(slot.current().unwrap().version(), "1.0.0");
    let bound = std::fs::read_to_string(dir.join("names.toml")).unwrap();
    assert!(
        bound.contains("[names.misbehave]") && bound.contains("key = \"acme\""),
        "{bound}"
    );

    let caps = Capability::ALL.to_vec();
    signed_with(
        &dir,
        "misbehave.wasm",
        "misbehave",
        "2.0.0",
        World::Rule,
        caps,
        &rival.0,
    );
    let e = match reg.reload("misbehave") {
        Err(huizhen_core::extensions::CatalogError::Refused(e)) => e,
        other => panic!("{other:?}"),
    };
    assert!(
        e.contains(
            "misbehave-2.0.0: plugin misbehave belongs to the key that first signed it (`acme`"
        ) && e.contains("this package is signed by `rival`")
            && e.contains("huizhen plugin bind misbehave rival"),
        "{e}"
    );
    assert_eq!(slot.current().unwrap().version(), "1.0.0");
    assert!(matches!(
        slot.current()
            .unwrap()
            .decide(&msg("text", b"hi"), &CallOptions::default()),
        Ok(Decision::Annotate(_))
    ));

    // After a restart: the binding was kept, the rival's version is still refused.
    drop(reg);
    let reg = Registry::open(&cfg).unwrap();
    let slot = reg.slot("misbehave").unwrap();
    assert_eq!(slot.current().unwrap().version(), "1.0.0");
    assert!(
        slot.last_error().unwrap().contains("belongs to the key"),
        "{:?}",
        slot.last_error()
    );

    // The operator hands the name over.
    let old = reg.names().bind("misbehave", "rival", reg.trust()).unwrap();
    assert_eq!(old.unwrap().key, "acme");
    reg.reload("misbehave").unwrap();
    assert_eq!(slot.current().unwrap().version(), "2.0.0");
    assert_eq!(slot.current().unwrap().signer(), Some("rival"));
    let _ = std::fs::remove_dir_all(dir);
}

/// A manifest that is not even TOML, unsigned or wrongly signed, is refused for its signature:
/// the signature is checked on the bytes before anything parses them.
#[test]
fn an_unauthenticated_manifest_is_never_parsed() {
    let dir = temp("unparsed");
    let trust = Trust::new([("acme".to_owned(), vendor().1.clone())], false).unwrap();
    let good = signed(&dir, "misbehave.wasm", "misbehave", "1.0.0", World::Rule);
    let junk = dir.join("junk-1.0.0");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("plugin.toml"), "name = [[[ not toml \u{0}").unwrap();

    let e = package::read_package(&junk, &trust).unwrap_err();
    assert!(
        e.contains("plugin.toml.sig: missing: unsigned plugins are refused"),
        "{e}"
    );

    std::fs::copy(good.join("plugin.toml.sig"), junk.join("plugin.toml.sig")).unwrap();
    let e = package::read_package(&junk, &trust).unwrap_err();
    assert!(
        e.contains("plugin.toml.sig: signature refused: does not verify"),
        "{e}"
    );

    // The folder scan too: the package is named after its folder, refused for its signature.
    let reg = Registry::open(&config(&dir)).unwrap();
    let e = reg.slot("junk").unwrap().last_error().unwrap();
    assert!(e.contains("signature refused"), "{e}");

    // Only when unsigned packages are allowed (development) does the parser see it.
    let dev = Trust::new([], true).unwrap();
    std::fs::remove_file(junk.join("plugin.toml.sig")).unwrap();
    let e = package::read_package(&junk, &dev).unwrap_err();
    assert!(e.contains("plugin.toml:1:"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The worst gap between the ticks of a 5 ms timer task on this runtime while four `loop`
/// calls of `p` run to their deadline, on the plugin call pool (`pooled`) or on the async
/// workers themselves.
async fn worst_tick_gap(
    p: &Arc<huizhen_plugin::Plugin>,
    call: &CallOptions,
    pooled: bool,
) -> Duration {
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut worst = Duration::ZERO;
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let now = Instant::now();
                worst = worst.max(now - last);
                last = now;
            }
            worst
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let spinners: Vec<_> = (0..4)
        .map(|_| {
            let (p, call) = (p.clone(), call.clone());
            tokio::spawn(async move {
                let spin = move || p.decide(&msg("text", b"loop"), &call);
                if pooled {
                    huizhen_plugin::pool::offload(spin).await
                } else {
                    spin()
                }
            })
        })
        .collect();
    for s in spinners {
        let e = s.await.unwrap().unwrap_err();
        assert!(matches!(e, CallError::Deadline { .. }), "{e}");
    }
    stop.store(true, Ordering::Relaxed);
    ticker.await.unwrap()
}

/// A plugin spinning to its deadline holds a thread of the plugin call pool, not an async
/// worker: a timer task on a two-worker runtime keeps its pace while four such calls run
/// through the pool (as the `plugin` step makes them), and stalls for the whole deadline when
/// the same calls run on the workers (the control, proving the measurement can fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_plugin_does_not_hold_the_async_workers() {
    let dir = temp("spin");
    signed(&dir, "misbehave.wasm", "misbehave", "1.0.0", World::Rule);
    let reg = Registry::open(&config(&dir)).unwrap();
    let p = reg.slot("misbehave").unwrap().current().unwrap();
    let call = CallOptions {
        limits: Limits {
            deadline: Duration::from_secs(1),
            memory: 64 << 20,
            fuel: None,
        },
        ..CallOptions::default()
    };
    let on_workers = worst_tick_gap(&p, &call, false).await;
    assert!(
        on_workers >= Duration::from_millis(900),
        "the control: spinning on both workers should stall the timer for the deadline, \
         the worst gap was {on_workers:?}"
    );
    let pooled = worst_tick_gap(&p, &call, true).await;
    assert!(
        pooled < Duration::from_millis(400),
        "spinning plugins on the call pool stalled a timer task for {pooled:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
