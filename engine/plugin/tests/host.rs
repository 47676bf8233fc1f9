//! The plugin host against real components built for wasm32-wasip2 from `plugins/`: a badly
//! behaved plugin is contained (deadline, memory cap, panic) while 1,000 other calls pass, and
//! `route-by-facility` decides by MSH-4, also as a `plugin` step in a running pipeline.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use huizhen_plugin::bindings::huizhen::plugin::types::{Decision, Message};
use huizhen_plugin::{CallError, Limits, RulePlugin};

/// Builds the example plugins once per test run; returns the folder with the `.wasm` files.
fn plugins() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins");
        let target = root.join("target");
        let out = std::process::Command::new(env!("CARGO"))
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .expect("cargo");
        assert!(
            out.status.success(),
            "building the plugins (rustup target add wasm32-wasip2):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        target.join("wasm32-wasip2/release")
    })
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
    let p = RulePlugin::load(
        &plugins().join("misbehave.wasm"),
        Limits {
            deadline: Duration::from_millis(50),
            memory: 64 << 20,
        },
        BTreeMap::new(),
    )
    .unwrap();
    let mut passed = 0;
    for i in 0..1000 {
        match i {
            100 => {
                let t = Instant::now();
                let e = p.decide(&msg("text", b"loop"), 0).unwrap_err();
                assert!(matches!(e, CallError::Deadline { .. }), "{e}");
                assert!(e.to_string().contains("misbehave"), "{e}");
                assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
            }
            200 => {
                let e = p.decide(&msg("text", b"alloc"), 0).unwrap_err();
                assert!(matches!(e, CallError::Trap { .. }), "{e}");
            }
            300 => {
                let e = p.decide(&msg("text", b"panic"), 0).unwrap_err();
                assert!(matches!(e, CallError::Trap { .. }), "{e}");
                assert!(
                    e.to_string().contains("misbehave was asked to panic"),
                    "the panic message from stderr: {e}"
                );
            }
            400 => {
                let e = p.decide(&msg("text", b"refuse"), 0).unwrap_err();
                assert_eq!(
                    e.to_string(),
                    "plugin misbehave refused the message: refused on request"
                );
            }
            _ => {}
        }
        let d = p
            .decide(&msg("text", format!("fine {i}").as_bytes()), 0)
            .unwrap();
        assert!(
            matches!(d, Decision::Annotate(ref h) if h == &vec![("misbehave".to_owned(), "ok".to_owned())])
        );
        passed += 1;
    }
    assert_eq!(passed, 1000);
}

#[test]
fn route_by_facility_reads_msh4_and_its_config() {
    let cfg = BTreeMap::from([
        ("县人民医院".to_owned(), "adt-county".to_owned()),
        ("default".to_owned(), "adt-other".to_owned()),
    ]);
    let p = RulePlugin::load(
        &plugins().join("route_by_facility.wasm"),
        Limits::default(),
        cfg,
    )
    .unwrap();
    let county = "MSH|^~\\&|HIS|县人民医院^123^L|HZ|P|20261124||ADT^A01|1|P|2.5\rPID|1\r";
    let other = "MSH|^~\\&|HIS|乡镇卫生院|HZ|P|20261124||ADT^A01|2|P|2.5\rPID|1\r";
    assert!(
        matches!(p.decide(&msg("hl7v2", county.as_bytes()), 0).unwrap(), Decision::Route(ref t) if t == "adt-county")
    );
    assert!(
        matches!(p.decide(&msg("hl7v2", other.as_bytes()), 0).unwrap(), Decision::Route(ref t) if t == "adt-other")
    );
    assert!(matches!(
        p.decide(&msg("json", b"{}"), 0).unwrap(),
        Decision::Pass
    ));
    assert!(matches!(
        p.decide(&msg("hl7v2", b"PID|1"), 0),
        Err(CallError::Refused { .. })
    ));
}

#[test]
fn a_file_that_is_not_a_component_is_refused_clearly() {
    let dir = std::env::temp_dir().join(format!("hz-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.wasm");
    std::fs::write(&f, b"not wasm at all").unwrap();
    let e = RulePlugin::load(&f, Limits::default(), BTreeMap::new()).unwrap_err();
    assert!(e.contains("bad.wasm: not a WebAssembly component"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The `plugin` step in a running engine: an ADT from the county hospital is routed by the
/// plugin to that hospital's pipeline; a component that does not exist stops the start with the
/// file named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_step_routes_in_a_running_pipeline() {
    use huizhen_core::config::{Loaded, LoadedPipeline, RootConfig, check, parse_yaml};
    let dir = std::env::temp_dir().join(format!("hz-plugin-step-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wasm = plugins().join("route_by_facility.wasm");
    let load = |texts: &[String]| {
        let mut root = RootConfig::default();
        root.store.url = format!("sqlite://{}/j.db", dir.display());
        root.security.encryption.keys_file = dir.join("keys");
        root.journal.scheduler_poll = Duration::from_millis(50);
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
        let errors: Vec<String> = check(&pipelines).iter().map(|e| e.to_string()).collect();
        (
            Loaded {
                root,
                root_file: None,
                pipelines,
            },
            errors,
        )
    };
    let intake = format!(
        "version: 1\nname: intake\nsource:\n  http: {{ path: /in/x, kind: hl7v2 }}\nsteps:\n  - plugin: {{ path: \"{}\", config: {{ 县人民医院: adt-county }} }}\nsinks:\n  - journal: {{}}\n",
        wasm.display()
    );
    let county = "version: 1\nname: adt-county\nsource:\n  http: { path: /in/y, kind: hl7v2 }\nsinks:\n  - journal: {}\n".to_owned();
    let (loaded, errors) = load(&[intake, county.clone()]);
    assert!(errors.is_empty(), "{errors:?}");
    let engine = huizhen_core::Engine::start(loaded).await.unwrap();
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
    engine.shutdown(Duration::from_secs(5)).await;

    let missing = "version: 1\nname: intake\nsource:\n  http: { path: /in/x }\nsteps:\n  - plugin: { path: no/such/plugin.wasm }\n".to_owned();
    let (_, errors) = load(&[missing]);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("no/such/plugin.wasm: cannot read")),
        "{errors:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
