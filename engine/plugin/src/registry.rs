//! The plugin registry of one engine: every package in `plugins.dir` (the highest version of each
//! name that loads), watched for new versions and swapped in while the engine runs.
//!
//! A new package is read, verified and compiled off the hot path (on the watcher's thread or the
//! API's blocking pool), then swapped in atomically ([`arc_swap`]). A call holds the
//! `Arc<Plugin>` it started with, so a message pins the version it started with and in-flight
//! calls finish on the old version; nothing waits for a swap. A package that cannot be loaded
//! (unsigned, tampered, not a component, wrong world or contract) leaves the old version
//! serving; the reason is logged, counted and shown by `GET /api/plugins`. Deleting the newest
//! version rolls back to the next one on the next scan; deleting every version keeps the last
//! one serving (`source_missing`).
//!
//! A package is authenticated before its manifest is parsed, and a name stays with the key that
//! first signed it ([`crate::names`]): a package of that name signed by another trusted key is
//! refused like any other package that cannot be loaded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use huizhen_core::config::PluginsConfig;
use huizhen_core::extensions::{CatalogError, EngineHook, Extensions, PluginCatalog};
use serde_json::json;

use crate::names::Names;
use crate::package::{self, MANIFEST, Package, SIGNATURE, Trust};
use crate::{Plugin, Stats, World};

/// How long the folder must be quiet before a scan (a copy in progress is several events).
const DEBOUNCE: Duration = Duration::from_millis(200);

/// What identifies one package on disk: a change means "load again".
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    dir: PathBuf,
    manifest_and_sig: String,
    /// Name, size and modification time of each `.wasm` in the folder.
    wasm: Vec<(String, u64, SystemTime)>,
}

/// The manifest is not parsed here (it is not yet authenticated): every `.wasm` of the folder
/// counts.
fn fingerprint(dir: &Path, manifest: &[u8]) -> Fingerprint {
    let sig = std::fs::read(dir.join(SIGNATURE)).unwrap_or_default();
    let mut both = manifest.to_vec();
    both.extend_from_slice(b"\0sig\0");
    both.extend_from_slice(&sig);
    let mut wasm: Vec<(String, u64, SystemTime)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "wasm"))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            let when = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            Some((e.file_name().to_string_lossy().into_owned(), m.len(), when))
        })
        .collect();
    wasm.sort();
    Fingerprint {
        dir: dir.to_owned(),
        manifest_and_sig: package::sha256_hex(&both),
        wasm,
    }
}

#[derive(Debug, Default)]
struct SlotState {
    /// The package serving now.
    serving: Option<Fingerprint>,
    /// Packages that failed to load, so a scan does not try (and count) them again.
    failed: Vec<Fingerprint>,
    last_error: Option<(String, chrono::DateTime<chrono::Utc>)>,
    load_failures: u64,
    swaps: u64,
    last_swap: Option<Duration>,
    source_missing: bool,
    /// Loaded from an explicit path (a step's `path:`), not from the folder.
    explicit: Option<(PathBuf, World)>,
}

/// One plugin name: the version serving now, its counters, what went wrong last.
pub struct Slot {
    name: String,
    current: ArcSwapOption<Plugin>,
    stats: Arc<Stats>,
    state: Mutex<SlotState>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("name", &self.name)
            .field("current", &self.current().map(|p| p.label().to_owned()))
            .finish()
    }
}

impl Slot {
    fn new(name: &str) -> Slot {
        Slot {
            name: name.to_owned(),
            current: ArcSwapOption::empty(),
            stats: Arc::new(Stats::default()),
            state: Mutex::new(SlotState::default()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version serving now; a caller keeps it for the whole message (version pinning).
    pub fn current(&self) -> Option<Arc<Plugin>> {
        self.current.load_full()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn last_error(&self) -> Option<String> {
        self.state().last_error.as_ref().map(|e| e.0.clone())
    }

    /// How many versions were swapped in (the first load included).
    pub fn swaps(&self) -> u64 {
        self.state().swaps
    }

    /// How long the last swap took: read, verify, compile, link, swap.
    pub fn last_swap(&self) -> Option<Duration> {
        self.state().last_swap
    }

    fn load(&self, pkg: Package, fp: Option<Fingerprint>, started: Instant) -> Result<(), String> {
        let plugin = Plugin::from_package(pkg, self.stats.clone())?;
        let label = plugin.label().to_owned();
        let old = self.current.swap(Some(Arc::new(plugin)));
        let took = started.elapsed();
        let mut st = self.state();
        st.serving = fp;
        st.swaps += 1;
        st.last_swap = Some(took);
        st.source_missing = false;
        match old {
            Some(old) => {
                tracing::info!(plugin = %self.name, from = %old.label(), to = %label, ?took, "plugin swapped")
            }
            None => tracing::info!(plugin = %label, ?took, "plugin loaded"),
        }
        Ok(())
    }

    fn failed(&self, fp: Option<Fingerprint>, error: &str) {
        let mut st = self.state();
        st.load_failures += 1;
        st.last_error = Some((error.to_owned(), chrono::Utc::now()));
        if let Some(fp) = fp
            && !st.failed.contains(&fp)
        {
            st.failed.push(fp);
        }
        let serving = self.current().map(|p| p.label().to_owned());
        tracing::warn!(plugin = %self.name, serving = ?serving, error, "plugin package refused; the version serving (if any) stays");
    }

    fn entry(&self) -> serde_json::Value {
        let st = self.state();
        let us = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e6);
        let mut v = json!({
            "name": self.name,
            "calls": self.stats.calls(),
            "errors": self.stats.errors(),
            "output_dropped_bytes": self.stats.output_dropped(),
            "latency_us": { "p50": us(self.stats.quantile(0.5)), "p99": us(self.stats.quantile(0.99)) },
            "swaps": st.swaps,
            "last_swap_ms": st.last_swap.map(|d| d.as_secs_f64() * 1e3),
            "load_failures": st.load_failures,
            "last_error": st.last_error.as_ref().map(|(m, at)| json!({ "message": m, "at": at.to_rfc3339() })),
            "source_missing": st.source_missing,
        });
        if let Some(p) = self.current() {
            let m = p.manifest();
            v["version"] = json!(m.version);
            v["world"] = json!(m.world.as_str());
            v["contract"] = json!(m.contract);
            v["sha256"] = json!(p.sha256());
            v["signed_by"] = json!(p.signer());
            v["sdk"] = json!(m.sdk);
            v["capabilities"] = json!(m.capabilities);
            v["origin"] = json!(p.origin().display().to_string());
            v["loaded_at"] = json!(p.loaded_at().to_rfc3339());
        } else {
            v["version"] = serde_json::Value::Null;
        }
        v
    }
}

/// The plugins of one engine.
pub struct Registry {
    cfg: PluginsConfig,
    trust: Trust,
    names: Names,
    slots: RwLock<BTreeMap<String, Arc<Slot>>>,
    scanning: Mutex<()>,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("dir", &self.cfg.dir)
            .field("slots", &self.plugin_names())
            .finish()
    }
}

/// One package folder found by a scan.
struct Candidate {
    name: String,
    version: semver::Version,
    dir: PathBuf,
    fp: Fingerprint,
    /// The manifest could not be read or parsed.
    broken: Option<String>,
}

impl Registry {
    /// Reads the trusted keys and loads every package in the folder (a package that cannot be
    /// loaded is reported, not fatal: a pipeline that names it fails to start with the reason).
    pub fn open(cfg: &PluginsConfig) -> Result<Registry, String> {
        let r = Registry {
            cfg: cfg.clone(),
            trust: Trust::from_config(cfg)?,
            names: Names::for_config(cfg),
            slots: RwLock::new(BTreeMap::new()),
            scanning: Mutex::new(()),
            watcher: Mutex::new(None),
        };
        r.scan();
        Ok(r)
    }

    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// Which key owns each plugin name.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Checks a package's signer against its name's binding (binding a free name), then loads it.
    fn admit_and_load(
        &self,
        slot: &Slot,
        pkg: Package,
        fp: Option<Fingerprint>,
        started: Instant,
    ) -> Result<(), String> {
        self.names.admit(
            &pkg.manifest.name,
            pkg.signer.as_deref(),
            &self.trust,
            &pkg.dir,
        )?;
        slot.load(pkg, fp, started)
    }

    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    pub fn plugin_names(&self) -> Vec<String> {
        self.slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    pub fn slot(&self, name: &str) -> Option<Arc<Slot>> {
        self.slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    fn slot_or_new(&self, name: &str) -> Arc<Slot> {
        if let Some(s) = self.slot(name) {
            return s;
        }
        self.slots
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Slot::new(name)))
            .clone()
    }

    /// Watches the folder (if it exists) and scans it whenever it has been quiet for 200 ms.
    pub fn watch(self: &Arc<Self>) -> Result<(), String> {
        use notify::Watcher as _;
        let mut guard = self.watcher.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_some() || !self.cfg.watch {
            return Ok(());
        }
        if !self.cfg.dir.is_dir() {
            tracing::info!(dir = %self.cfg.dir.display(), "no plugin folder: not watched (create it and restart to drop plugins in)");
            return Ok(());
        }
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // The engine's own writes of the name bindings are no reason to scan.
        let own: Vec<std::ffi::OsString> = self
            .names
            .path()
            .file_name()
            .map(|n| {
                let mut tmp = n.to_owned();
                tmp.push(".tmp");
                vec![n.to_owned(), tmp]
            })
            .unwrap_or_default();
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            let Ok(e) = ev else { return };
            let only_bindings = !e.paths.is_empty()
                && e.paths
                    .iter()
                    .all(|p| p.file_name().is_some_and(|n| own.iter().any(|o| o == n)));
            if !e.kind.is_access() && !only_bindings {
                let _ = tx.send(());
            }
        })
        .map_err(|e| format!("watching {}: {e}", self.cfg.dir.display()))?;
        watcher
            .watch(&self.cfg.dir, notify::RecursiveMode::Recursive)
            .map_err(|e| format!("watching {}: {e}", self.cfg.dir.display()))?;
        let weak: Weak<Registry> = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("huizhen-plugin-watch".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    // Wait for the folder to be quiet.
                    loop {
                        match rx.recv_timeout(DEBOUNCE) {
                            Ok(()) => continue,
                            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    match weak.upgrade() {
                        Some(r) => r.scan(),
                        None => return,
                    }
                }
            })
            .map_err(|e| format!("starting the plugin watcher: {e}"))?;
        *guard = Some(watcher);
        tracing::info!(dir = %self.cfg.dir.display(), "watching the plugin folder");
        Ok(())
    }

    fn candidates(&self) -> Vec<Candidate> {
        let Ok(rd) = std::fs::read_dir(&self.cfg.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let dir = e.path();
            let mpath = dir.join(MANIFEST);
            if !dir.is_dir() || !mpath.is_file() {
                continue;
            }
            let bytes = std::fs::read(&mpath).unwrap_or_default();
            let fp = fingerprint(&dir, &bytes);
            // The signature first: an unauthenticated manifest is never parsed.
            let parsed = package::authenticate(&dir, &self.trust).and_then(|(bytes, _)| {
                let text = std::str::from_utf8(&bytes)
                    .map_err(|e| format!("{}: not UTF-8: {e}", mpath.display()))?;
                package::Manifest::parse(&mpath, text)
            });
            match parsed {
                Ok(m) => out.push(Candidate {
                    version: semver::Version::parse(&m.version).expect("checked by parse"),
                    name: m.name,
                    dir,
                    fp,
                    broken: None,
                }),
                Err(e) => {
                    // Named after its folder (`NAME-VERSION`) so the error is visible.
                    let folder = dir
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    // `name-1.2.3(-rc.1)`: cut at the first `-` followed by a digit.
                    let cut = folder
                        .match_indices('-')
                        .find(|(i, _)| folder[i + 1..].starts_with(|c: char| c.is_ascii_digit()))
                        .map_or(folder.len(), |(i, _)| i);
                    let name = folder[..cut].to_owned();
                    // Ordered by the version its folder claims, so a refused newer package is
                    // reported (its manifest is not parsed unless authenticated).
                    let version = folder
                        .get(cut + 1..)
                        .and_then(|v| semver::Version::parse(v).ok())
                        .unwrap_or_else(|| semver::Version::new(0, 0, 0));
                    out.push(Candidate {
                        name,
                        version,
                        dir,
                        fp,
                        broken: Some(e),
                    });
                }
            }
        }
        out
    }

    /// Looks at the folder and loads what changed. Runs on the watcher's thread, at start and
    /// on `reload`; never on the path of a call.
    pub fn scan(&self) {
        self.scan_names(None, false);
    }

    fn scan_names(&self, only: Option<&str>, force: bool) -> Option<Result<(), String>> {
        let _one = self.scanning.lock().unwrap_or_else(|p| p.into_inner());
        let mut by_name: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
        for c in self.candidates() {
            by_name.entry(c.name.clone()).or_default().push(c);
        }
        // Names that were in the folder and are gone now.
        for slot in self
            .slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            let mut st = slot.state();
            if st.explicit.is_none() && !by_name.contains_key(&slot.name) && !st.source_missing {
                if st.serving.is_some() {
                    tracing::warn!(plugin = %slot.name, "every package of this plugin left the folder; the loaded version keeps serving");
                }
                st.source_missing = true;
            }
        }
        let mut outcome = None;
        for (name, mut cands) in by_name {
            if only.is_some_and(|o| o != name) {
                continue;
            }
            let slot = self.slot_or_new(&name);
            if slot.state().explicit.is_some() {
                continue;
            }
            cands.sort_by(|a, b| b.version.cmp(&a.version));
            let mut result = Ok(());
            for c in cands {
                let started = Instant::now();
                {
                    let st = slot.state();
                    if st.serving.as_ref() == Some(&c.fp) && !force {
                        break;
                    }
                    if st.failed.contains(&c.fp) && !force {
                        continue;
                    }
                }
                let loaded = match c.broken {
                    Some(e) => Err(e),
                    None => package::read_package(&c.dir, &self.trust).and_then(|pkg| {
                        if pkg.manifest.name != name {
                            return Err(format!("{}: name changed while loading", c.dir.display()));
                        }
                        self.admit_and_load(&slot, pkg, Some(c.fp.clone()), started)
                    }),
                };
                match loaded {
                    Ok(()) => {
                        result = Ok(());
                        break;
                    }
                    Err(e) => {
                        slot.failed(Some(c.fp), &e);
                        result = Err(e);
                        // The version serving stays; only a plugin with none falls back to
                        // its next older package.
                        if slot.current().is_some() {
                            break;
                        }
                    }
                }
            }
            if only.is_some() {
                outcome = Some(result);
            }
        }
        outcome
    }

    /// Reads and authenticates what a step's `path:` names: a package folder, or a bare
    /// component (development, `allow_unsigned` only), of `world`.
    fn read_path(&self, path: &Path, world: World) -> Result<Package, String> {
        let pkg = if path.extension().is_some_and(|e| e == "wasm") && path.is_file() {
            package::read_bare(path, world, &self.trust)?
        } else {
            package::read_package(path, &self.trust)?
        };
        if pkg.manifest.world != world {
            return Err(format!(
                "{}: a `{}` plugin, where a `{world}` plugin is needed",
                path.display(),
                pkg.manifest.world
            ));
        }
        Ok(pkg)
    }

    /// Loads a package folder, or a bare component (development, `allow_unsigned` only), named by
    /// a step's `path:`. Such a plugin is not replaced by the folder's scans; `reload` reads its
    /// path again.
    pub fn load_path(&self, path: &Path, world: World) -> Result<Arc<Slot>, String> {
        let started = Instant::now();
        let pkg = self.read_path(path, world)?;
        let slot = self.slot_or_new(&pkg.manifest.name);
        let same = slot.current().is_some_and(|p| p.sha256() == pkg.sha256)
            && slot.state().explicit.as_ref().map(|e| &e.0) == Some(&path.to_path_buf());
        if !same {
            self.admit_and_load(&slot, pkg, None, started)?;
            slot.state().explicit = Some((path.to_owned(), world));
        }
        Ok(slot)
    }

    /// Loads a package folder (or a bare component in development) into a slot of its own,
    /// outside the registry's names: a shadow version that must not replace the version the
    /// registry serves under the same name. The package is authenticated as any other.
    pub fn load_detached(&self, path: &Path, world: World) -> Result<Arc<Slot>, String> {
        let started = Instant::now();
        let pkg = self.read_path(path, world)?;
        let slot = Arc::new(Slot::new(&pkg.manifest.name));
        self.admit_and_load(&slot, pkg, None, started)?;
        slot.state().explicit = Some((path.to_owned(), world));
        Ok(slot)
    }

    /// Reloads one plugin now (see [`PluginCatalog::reload`]).
    pub fn reload(&self, name: &str) -> Result<Arc<Slot>, CatalogError> {
        let slot = self.slot(name);
        if let Some(slot) = &slot
            && let Some((path, world)) = slot.state().explicit.clone()
        {
            let started = Instant::now();
            let pkg = if path.extension().is_some_and(|e| e == "wasm") && path.is_file() {
                package::read_bare(&path, world, &self.trust)
            } else {
                package::read_package(&path, &self.trust)
            };
            return match pkg.and_then(|p| self.admit_and_load(slot, p, None, started)) {
                Ok(()) => Ok(slot.clone()),
                Err(e) => {
                    slot.failed(None, &e);
                    Err(CatalogError::Refused(e))
                }
            };
        }
        match self.scan_names(Some(name), true) {
            Some(Ok(())) => Ok(self.slot(name).expect("scanned")),
            Some(Err(e)) => Err(CatalogError::Refused(e)),
            None => Err(CatalogError::NotFound(name.to_owned())),
        }
    }
}

impl PluginCatalog for Registry {
    fn list(&self) -> Vec<serde_json::Value> {
        self.slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|s| s.entry())
            .collect()
    }

    fn reload(&self, name: &str) -> Result<serde_json::Value, CatalogError> {
        Registry::reload(self, name).map(|s| s.entry())
    }
}

/// The registry of an engine (made on first use: by the engine's start hook, or by a `plugin`
/// step when a configuration is only checked).
pub fn registry(ext: &Extensions) -> Result<Arc<Registry>, String> {
    ext.get_or_try_init(|| Registry::open(ext.plugins_config()))
}

fn start(ext: &Extensions) -> Result<(), String> {
    let r = registry(ext)?;
    r.watch()?;
    ext.set_plugin_catalog(r);
    Ok(())
}

inventory::submit! {
    EngineHook { name: "plugins", start }
}

/// Where a domain port served by a plugin finds it: the version serving in a registry slot
/// (follows reloads), or one loaded version.
#[derive(Clone)]
pub enum Serving {
    /// The version serving in a slot.
    Slot(Arc<Slot>),
    /// One loaded version.
    Fixed(Arc<Plugin>),
}

impl Serving {
    /// The version serving now, or why there is none.
    pub fn current(&self) -> Result<Arc<Plugin>, String> {
        match self {
            Serving::Fixed(p) => Ok(p.clone()),
            Serving::Slot(s) => s.current().ok_or_else(|| {
                format!(
                    "plugin {} is not loaded ({})",
                    s.name(),
                    s.last_error().unwrap_or_else(|| "no package".into())
                )
            }),
        }
    }

    /// The plugin's name.
    pub fn name(&self) -> String {
        match self {
            Serving::Slot(s) => s.name().to_owned(),
            Serving::Fixed(p) => p.name().to_owned(),
        }
    }
}
