//! `huizhen plugin new | build | keygen | sign | verify | test`: scaffold, build, sign and test
//! WASM plugins (see docs/plugins.md).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use huizhen_plugin::names::{self, Names};
use huizhen_plugin::package::{self, Package, Trust};
use huizhen_plugin::{CallOptions, Capability, Plugin, Stats, World, json};

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Scaffold a plugin crate (Rust, huizhen-sdk) for a world, with a fixture and a README.
    New(NewArgs),
    /// Build plugin crates for wasm32-wasip2 and write packages (NAME-VERSION/ with the .wasm and
    /// plugin.toml); sign them with `huizhen plugin sign`.
    Build(BuildArgs),
    /// Make an ed25519 signing key (PKCS#8 PEM) and print its public key for plugins.trusted_keys.
    Keygen {
        /// Where to write the private key (created 0600; never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a package's manifest (writes plugin.toml.sig).
    Sign {
        /// The package folder.
        package: PathBuf,
        /// The vendor's private key (PEM).
        #[arg(long)]
        key: PathBuf,
    },
    /// Check a package as the engine would: signature (trusted keys of the config, or --trust),
    /// sha256, contract version, world, imports against its grants, its name's key binding.
    Verify {
        /// The package folder (NAME-VERSION/ with plugin.toml, the .wasm and its signature).
        package: PathBuf,
        /// NAME=PUBLIC_KEY to trust (besides the config's plugins.trusted_keys).
        #[arg(long, value_name = "NAME=KEY")]
        trust: Vec<String>,
    },
    /// Run a plugin against JSON fixtures (input and expected output); exit 1 on a failure.
    Test(TestArgs),
    /// Hand a plugin name to another trusted key. A name stays with the key that first signed
    /// it (plugins.names_file, default names.toml in plugins.dir); reload the plugin afterwards.
    Bind {
        /// The plugin's name.
        name: String,
        /// The key's name in plugins.trusted_keys.
        key: String,
    },
    /// Free a plugin name: the next signed package of it that loads binds it again.
    Unbind {
        /// The plugin's name.
        name: String,
    },
    /// List which trusted key owns each plugin name.
    Names,
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The plugin's name: lowercase letters, digits and '-'.
    name: String,
    /// rule, scorer, coverage, match-weights or triage.
    #[arg(long)]
    world: String,
    /// The folder to create the crate in (default: ./NAME).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The huizhen-sdk to depend on: a path to the sdk/ folder (default: found from the current
    /// folder upwards, or $HUIZHEN_SDK; else the crates.io version).
    #[arg(long)]
    sdk: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The crate or workspace (default: the current folder).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Where packages are written (default: DIR/dist).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only this package of a workspace.
    #[arg(long, short)]
    package: Vec<String>,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// A package folder, or a bare .wasm with --world.
    plugin: PathBuf,
    /// The folder of fixtures (*.json: input, expected or expected_error, config, now_ms).
    #[arg(long)]
    fixtures: PathBuf,
    /// The world of a bare .wasm.
    #[arg(long)]
    world: Option<String>,
}

pub fn run(cmd: PluginCommand, config: &huizhen_core::config::PluginsConfig) -> Result<ExitCode> {
    match cmd {
        PluginCommand::New(a) => new(a).map(|_| ExitCode::SUCCESS),
        PluginCommand::Build(a) => build(a).map(|_| ExitCode::SUCCESS),
        PluginCommand::Keygen { out } => keygen(&out).map(|_| ExitCode::SUCCESS),
        PluginCommand::Sign { package, key } => {
            let text = std::fs::read_to_string(&key)
                .with_context(|| format!("{}: cannot read", key.display()))?;
            let pair = package::parse_private_key(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
            let sig = package::sign_package(&package, &pair).map_err(anyhow::Error::msg)?;
            say(&format!(
                "signed: {} (public key {})",
                sig.display(),
                package::public_key_of(&pair)
            ));
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Verify { package, trust } => verify(&package, &trust, config),
        PluginCommand::Test(a) => test(a),
        PluginCommand::Bind { name, key } => {
            let trust = Trust::from_config(config).map_err(anyhow::Error::msg)?;
            let names = Names::for_config(config);
            let old = names
                .bind(&name, &key, &trust)
                .map_err(anyhow::Error::msg)?;
            let was = old.map_or("no key".to_owned(), |b| {
                format!("`{}` ({})", b.key, names::short(&b.fingerprint))
            });
            say(&format!(
                "plugin {name}: bound to `{key}` (was {was}) in {}; reload it to load that key's package (POST /api/plugins/{name}/reload)",
                names.path().display()
            ));
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Unbind { name } => {
            let names = Names::for_config(config);
            match names.unbind(&name).map_err(anyhow::Error::msg)? {
                Some(b) => say(&format!(
                    "plugin {name}: no longer bound to `{}` ({}); the next signed package of it binds it",
                    b.key,
                    names::short(&b.fingerprint)
                )),
                None => say(&format!(
                    "plugin {name}: not bound in {}",
                    names.path().display()
                )),
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Names => {
            let names = Names::for_config(config);
            let all = names.read().map_err(anyhow::Error::msg)?;
            if all.is_empty() {
                say(&format!(
                    "no plugin name is bound ({})",
                    names.path().display()
                ));
            }
            for (name, b) in all {
                say(&format!(
                    "{name}\t{}\t{}\tsince {}",
                    b.key, b.fingerprint, b.bound_at
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[allow(clippy::print_stdout)]
fn say(s: &str) {
    println!("{s}");
}

fn keygen(out: &Path) -> Result<()> {
    if out.exists() {
        bail!("{}: exists; not overwriting a key", out.display());
    }
    let (pem, public) = package::generate_key();
    write_private(out, &pem)?;
    say(&format!(
        "private key: {} (keep it secret)\npublic key:  {public}\n\nTrust it in huizhen.yaml:\n  plugins:\n    trusted_keys:\n      your-vendor-name: \"{public}\"",
        out.display()
    ));
    Ok(())
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("{}: cannot create", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("{}: cannot create", path.display()))
}

fn verify(
    path: &Path,
    extra: &[String],
    config: &huizhen_core::config::PluginsConfig,
) -> Result<ExitCode> {
    let mut keys: Vec<(String, String)> = config.trusted_keys.clone().into_iter().collect();
    for t in extra {
        let (n, k) = t
            .split_once('=')
            .with_context(|| format!("--trust {t}: NAME=PUBLIC_KEY expected"))?;
        keys.push((n.to_owned(), k.to_owned()));
    }
    let trust = Trust::new(keys, false).map_err(anyhow::Error::msg)?;
    let pkg = package::read_package(path, &trust).map_err(anyhow::Error::msg)?;
    // The engine would refuse a package of a name bound to another key.
    Names::for_config(config)
        .check(&pkg.manifest.name, pkg.signer.as_deref(), &trust, &pkg.dir)
        .map_err(anyhow::Error::msg)?;
    let plugin = compile(pkg)?;
    say(&format!(
        "ok: {} ({} world, {}), signed by {}, sha256 {}",
        plugin.label(),
        plugin.world(),
        plugin.manifest().contract,
        plugin.signer().unwrap_or("nobody"),
        plugin.sha256()
    ));
    Ok(ExitCode::SUCCESS)
}

fn compile(pkg: Package) -> Result<Plugin> {
    let dir = pkg.dir.clone();
    Plugin::from_package(pkg, Arc::new(Stats::default()))
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))
}

fn test(a: TestArgs) -> Result<ExitCode> {
    let pkg = if a.plugin.extension().is_some_and(|e| e == "wasm") {
        let world = a.world.as_deref().context(
            "a bare .wasm needs --world (rule, scorer, coverage, match-weights, triage)",
        )?;
        let world = World::parse(world).map_err(anyhow::Error::msg)?;
        package::read_bare(&a.plugin, world, &Trust::new([], true).expect("no keys"))
            .map_err(anyhow::Error::msg)?
    } else {
        package::read_unverified(&a.plugin).map_err(anyhow::Error::msg)?
    };
    let plugin = compile(pkg)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&a.fixtures)
        .with_context(|| format!("{}: cannot read the fixtures", a.fixtures.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{}: no *.json fixtures", a.fixtures.display());
    }
    let (mut passed, mut failed) = (0, 0);
    for f in &files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match run_fixture(&plugin, f) {
            Ok(took) => {
                passed += 1;
                say(&format!(
                    "ok    {name} ({:.0} µs)",
                    took.as_secs_f64() * 1e6
                ));
            }
            Err(problems) => {
                failed += 1;
                say(&format!("FAIL  {name}"));
                for p in problems {
                    say(&format!("      {p}"));
                }
            }
        }
    }
    say(&format!(
        "{}: {passed} passed, {failed} failed",
        plugin.label()
    ));
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One fixture: `{description, config, now_ms, input, expected | expected_error}`.
fn run_fixture(plugin: &Plugin, file: &Path) -> Result<std::time::Duration, Vec<String>> {
    let text = std::fs::read_to_string(file).map_err(|e| vec![format!("cannot read: {e}")])?;
    let fx: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        vec![format!(
            "{}:{}:{}: not JSON: {e}",
            file.display(),
            e.line(),
            e.column()
        )]
    })?;
    let config = match fx.get("config") {
        None | Some(serde_json::Value::Null) => Default::default(),
        Some(serde_json::Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        Some(other) => return Err(vec![format!("config: an object expected, found {other}")]),
    };
    let opts = CallOptions {
        config: Arc::new(config),
        now_ms: fx.get("now_ms").and_then(|v| v.as_i64()).unwrap_or(0),
        ..CallOptions::default()
    };
    let input = fx
        .get("input")
        .ok_or_else(|| vec!["input is missing".to_owned()])?;
    let started = Instant::now();
    let got = json::call(plugin, input, &opts);
    let took = started.elapsed();
    match (fx.get("expected"), fx.get("expected_error"), got) {
        (Some(want), None, Ok(got)) => {
            let d = json::differences(want, &got);
            if d.is_empty() { Ok(took) } else { Err(d) }
        }
        (Some(_), None, Err(e)) => Err(vec![format!("expected an answer, got an error: {e}")]),
        (None, Some(want), Err(e)) => {
            let want = want.as_str().unwrap_or_default();
            if e.to_string().contains(want) {
                Ok(took)
            } else {
                Err(vec![format!(
                    "expected an error containing {want:?}, got: {e}"
                )])
            }
        }
        (None, Some(want), Ok(got)) => Err(vec![format!(
            "expected an error containing {want}, got an answer: {got}"
        )]),
        _ => Err(vec![
            "give exactly one of `expected` and `expected_error`".to_owned(),
        ]),
    }
}

/// A crate of `cargo metadata` with `[package.metadata.huizhen]`.
struct PluginCrate {
    name: String,
    version: String,
    world: World,
    capabilities: Vec<Capability>,
    description: Option<String>,
    manifest_dir: PathBuf,
}

fn build(a: BuildArgs) -> Result<()> {
    let out = std::process::Command::new(cargo())
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(&a.dir)
        .output()
        .with_context(|| format!("running cargo metadata in {}", a.dir.display()))?;
    if !out.status.success() {
        bail!(
            "cargo metadata in {}: {}",
            a.dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let target_dir = PathBuf::from(meta["target_directory"].as_str().unwrap_or("target"));
    let mut crates = Vec::new();
    for p in meta["packages"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or_default().to_owned();
        let Some(h) = p["metadata"].get("huizhen") else {
            continue;
        };
        if !a.package.is_empty() && !a.package.contains(&name) {
            continue;
        }
        let at = format!("{name}: [package.metadata.huizhen]");
        let world = h["world"]
            .as_str()
            .with_context(|| format!("{at}: world = \"scorer\" (or another world) is missing"))?;
        let world = World::parse(world).map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
        let mut capabilities = Vec::new();
        for c in h["capabilities"].as_array().into_iter().flatten() {
            let c = c.as_str().unwrap_or_default();
            capabilities.push(Capability::parse(c).with_context(|| {
                format!("{at}: unknown capability {c:?} (log, clock, config, random)")
            })?);
        }
        let manifest_dir = PathBuf::from(p["manifest_path"].as_str().unwrap_or_default())
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        crates.push(PluginCrate {
            name,
            version: p["version"].as_str().unwrap_or_default().to_owned(),
            world,
            capabilities,
            description: p["description"].as_str().map(str::to_owned),
            manifest_dir,
        });
    }
    if crates.is_empty() {
        bail!(
            "{}: no crate with [package.metadata.huizhen] world = \"…\"{}",
            a.dir.display(),
            if a.package.is_empty() {
                String::new()
            } else {
                format!(" among {}", a.package.join(", "))
            }
        );
    }
    let dist = a.out.clone().unwrap_or_else(|| a.dir.join("dist"));
    for c in crates {
        // One crate per cargo run: built together, crates of different worlds would share one
        // build of huizhen-sdk with every world enabled (cargo unifies features).
        let status = std::process::Command::new(cargo())
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "-p",
                &c.name,
            ])
            .current_dir(&a.dir)
            .status()
            .context("running cargo build")?;
        if !status.success() {
            bail!(
                "{}: cargo build failed (is the target installed? rustup target add wasm32-wasip2)",
                c.name
            );
        }
        let file = target_dir
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", c.name.replace('-', "_")));
        let wasm = std::fs::read(&file).with_context(|| {
            format!(
                "{}: cannot read the built component (is the crate a cdylib?)",
                file.display()
            )
        })?;
        let (dir, manifest) = package::write_package(
            &dist,
            &wasm,
            &c.name,
            &c.version,
            c.world,
            c.capabilities,
            c.description,
        )
        .map_err(|e| anyhow::anyhow!("{}: {e}", c.manifest_dir.display()))?;
        // The component must fit its world before it is worth signing.
        compile(package::read_unverified(&dir).map_err(anyhow::Error::msg)?)?;
        say(&format!(
            "built {}-{} ({} world{}) → {} sha256 {}",
            manifest.name,
            manifest.version,
            manifest.world,
            manifest
                .sdk
                .as_deref()
                .map(|s| format!(", huizhen-sdk {s}"))
                .unwrap_or_default(),
            dir.display(),
            manifest.sha256
        ));
    }
    Ok(())
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The sdk/ folder: --sdk, $HUIZHEN_SDK, or found from the current folder upwards.
fn find_sdk(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = given {
        return Some(p.to_owned());
    }
    if let Ok(p) = std::env::var("HUIZHEN_SDK") {
        return Some(PathBuf::from(p));
    }
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors()
        .map(|a| a.join("sdk"))
        .find(|s| s.join("Cargo.toml").is_file() && s.join("wit/plugin.wit").is_file())
}

fn new(a: NewArgs) -> Result<()> {
    let world = World::parse(&a.world).map_err(anyhow::Error::msg)?;
    let probe = package::Manifest {
        name: a.name.clone(),
        version: "0.1.0".into(),
        world,
        contract: format!("huizhen:plugin@{}", huizhen_plugin::CONTRACT),
        wasm: "x.wasm".into(),
        sha256: "0".repeat(64),
        capabilities: vec![],
        sdk: None,
        description: None,
    };
    probe
        .check()
        .map_err(|e| anyhow::anyhow!("plugin name: {e}"))?;
    let dir = a.dir.clone().unwrap_or_else(|| PathBuf::from(&a.name));
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!("{}: exists and is not empty", dir.display());
    }
    let sdk = match find_sdk(a.sdk.as_deref()) {
        Some(p) => {
            let abs = std::fs::canonicalize(&p)
                .with_context(|| format!("{}: no such sdk folder", p.display()))?;
            format!(
                "{{ path = {:?}, features = [\"{}\"] }}",
                abs.display().to_string(),
                world.as_str()
            )
        }
        None => format!(
            "{{ version = \"0.1\", features = [\"{}\"] }}",
            world.as_str()
        ),
    };
    let dev_sdk = sdk.replace(
        &format!("features = [\"{}\"]", world.as_str()),
        &format!("features = [\"{}\", \"testing\"]", world.as_str()),
    );
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::create_dir_all(dir.join("fixtures"))?;
    let caps = match world {
        World::MatchWeights => "[\"log\"]",
        _ => "[\"log\", \"config\"]",
    };
    let cargo_toml = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
description = "A {world} plugin for Huizhen"

# `huizhen plugin build` reads this: the world the component targets and the host
# capabilities it asks for (log, clock, config, random).
[package.metadata.huizhen]
world = "{world}"
capabilities = {caps}

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
huizhen-sdk = {sdk}

[dev-dependencies]
huizhen-sdk = {dev_sdk}
serde_json = "1"

[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
strip = "debuginfo"

# A crate of its own, not a member of a surrounding workspace.
[workspace]
"#,
        name = a.name,
        world = world.as_str(),
    );
    std::fs::write(dir.join("Cargo.toml"), cargo_toml)?;
    let (lib, fixture) = templates(world);
    std::fs::write(dir.join("src/lib.rs"), lib)?;
    std::fs::write(dir.join("fixtures/example.json"), fixture)?;
    std::fs::write(dir.join(".gitignore"), "/target\n/dist\n")?;
    std::fs::write(
        dir.join("README.md"),
        format!(
            "# {name}\n\nA `{world}` plugin for Huizhen.\n\n```sh\ncargo test                                   # native unit tests\nhuizhen plugin build                         # → dist/{name}-0.1.0/\nhuizhen plugin test dist/{name}-0.1.0 --fixtures fixtures\nhuizhen plugin sign dist/{name}-0.1.0 --key vendor.pem\ncp -r dist/{name}-0.1.0 /path/to/engine/plugins/dist/   # hot-loaded\n```\n",
            name = a.name,
            world = world.as_str()
        ),
    )?;
    say(&format!(
        "created {} ({} plugin). Next:\n  cd {}\n  cargo test\n  huizhen plugin build\n  huizhen plugin test dist/{}-0.1.0 --fixtures fixtures",
        dir.display(),
        world,
        dir.display(),
        a.name
    ));
    Ok(())
}

/// The starting `src/lib.rs` and a fixture that it passes.
fn templates(world: World) -> (String, String) {
    match world {
        World::Rule => (
            include_str!("templates/rule.rs").to_owned(),
            include_str!("templates/rule.json").to_owned(),
        ),
        World::Scorer => (
            include_str!("templates/scorer.rs").to_owned(),
            include_str!("templates/scorer.json").to_owned(),
        ),
        World::Coverage => (
            include_str!("templates/coverage.rs").to_owned(),
            include_str!("templates/coverage.json").to_owned(),
        ),
        World::MatchWeights => (
            include_str!("templates/match_weights.rs").to_owned(),
            include_str!("templates/match_weights.json").to_owned(),
        ),
        World::Triage => (
            include_str!("templates/triage.rs").to_owned(),
            include_str!("templates/triage.json").to_owned(),
        ),
    }
}
