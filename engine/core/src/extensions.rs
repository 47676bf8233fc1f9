//! Engine-wide services that crates outside the core provide (the WASM plugin registry today).
//!
//! The core knows no wasmtime; `huizhen-plugin` registers an [`EngineHook`] (through
//! `inventory`, like the typetag step registry) that the engine runs before it builds the
//! pipelines, and puts its registry into the engine's [`Extensions`]. Steps find it there through
//! their [`crate::runner::BuildContext`]; the HTTP API finds the [`PluginCatalog`] there for
//! `GET /api/plugins` and `POST /api/plugins/{name}/reload`. Adapters add HTTP routes the same
//! way ([`HttpRoutes`]: the FHIR facade at `/fhir/r4`).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::config::PluginsConfig;

/// What the API shows of the loaded plugins, and how it asks for a reload.
pub trait PluginCatalog: Send + Sync {
    /// One JSON object per plugin (name, version, sha256, world, loaded_at, calls, errors,
    /// p50/p99 latency, last error).
    fn list(&self) -> Vec<serde_json::Value>;
    /// Reloads one plugin from its package now (blocking: compiles off the hot path). `Ok` with
    /// the plugin's entry after the reload; `Err(NotFound)` for an unknown name; `Err(Refused)`
    /// when the package on disk cannot be loaded (the old version keeps serving).
    fn reload(&self, name: &str) -> Result<serde_json::Value, CatalogError>;
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("no plugin named {0:?} is loaded or in the plugin folder")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
}

/// The fuel and time budget of one plugin call made for a domain port (a scorer's batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginBudget {
    /// Fuel for the whole call (none: unlimited; the deadline still holds).
    pub fuel: Option<u64>,
    /// The call's deadline.
    pub deadline: std::time::Duration,
}

/// The grading thresholds (and field weights) a `match-weights` plugin gives, in the 0.1.1
/// form whatever the plugin's contract version (0.1.0's two thresholds are mapped by the host).
#[derive(Debug, Clone, PartialEq)]
pub struct PluginWeights {
    /// `name@version` of the plugin, for errors and audit.
    pub plugin: String,
    /// The contract version of the plugin's world (`0.1.0` or `0.1.1`).
    pub contract: String,
    /// Per field: agreement and disagreement weights, as the plugin gives them.
    pub fields: Vec<(String, (f64, f64))>,
    /// Certain (auto-link) at or above, if any.
    pub auto_link: Option<f64>,
    /// Probable at or above.
    pub probable: f64,
    /// Possible at or above.
    pub possible: f64,
}

/// Domain ports served by plugins (issue 14): the plugin host registers one so that steps and
/// the API can use a `scorer` or `match-weights` plugin by name without the core knowing
/// wasmtime.
pub trait DomainPlugins: Send + Sync {
    /// The `scorer` plugin `name` as the domain's [`huizhen_domain::expert::Scorer`], each
    /// batch under `budget`. Errors when no such plugin is loaded or it is not a scorer.
    fn scorer(
        &self,
        name: &str,
        budget: PluginBudget,
    ) -> Result<Arc<dyn huizhen_domain::expert::Scorer + Send + Sync>, String>;

    /// Calls the `match-weights` plugin `name` once.
    fn match_weights(&self, name: &str) -> Result<PluginWeights, String>;

    /// The `coverage` plugin `name` as the domain's
    /// [`huizhen_domain::billing::CoveragePolicy`] (billing's estimate), each call under
    /// `budget` with the plugin's `config` values. Errors when no such plugin is loaded or it
    /// is not a `coverage` plugin.
    fn coverage(
        &self,
        name: &str,
        budget: PluginBudget,
        config: std::collections::BTreeMap<String, String>,
    ) -> Result<Arc<dyn huizhen_domain::billing::CoveragePolicy + Send + Sync>, String>;
}

/// Makes the [`DomainPlugins`] of an engine (the plugin host submits one through `inventory`),
/// so that a configuration being only checked — where no start hook ran — resolves plugin
/// names the same way a running engine does.
pub struct DomainPluginsFactory {
    pub make: fn(&Extensions) -> Arc<dyn DomainPlugins>,
}

inventory::collect!(DomainPluginsFactory);

/// Runs when an engine starts (and when `huizhen validate` checks a configuration), before the
/// pipelines are built.
pub struct EngineHook {
    pub name: &'static str,
    pub start: fn(&Extensions) -> Result<(), String>,
}

inventory::collect!(EngineHook);

/// HTTP routes a crate outside the core adds to the API (the FHIR facade of `huizhen-fhir`),
/// registered through `inventory`. [`crate::http::router`] merges them before the guard layer,
/// so each goes through the same authentication and the same route table
/// ([`crate::security::ROUTES`]) as the core's own routes: a route missing from the table is
/// refused (403) like any other.
pub struct HttpRoutes {
    /// Who adds them (for errors and logs).
    pub name: &'static str,
    /// The routes, with the shared [`crate::http::AppState`].
    pub routes: fn() -> axum::Router<crate::http::AppState>,
}

inventory::collect!(HttpRoutes);

/// A path prefix of an adapter's routes that carry long transfers (DICOMweb's STOW-RS and
/// WADO-RS: a CT study is hundreds of MB over a 10 Mbit/s uplink). Its requests run under
/// `http.transfer_timeout` instead of `http.request_timeout`.
pub struct TransferRoutes {
    /// The prefix (`/dicomweb`): the path itself and everything under it.
    pub prefix: &'static str,
}

inventory::collect!(TransferRoutes);

/// True when `path` is under a [`TransferRoutes`] prefix.
pub fn is_transfer_path(path: &str) -> bool {
    inventory::iter::<TransferRoutes>.into_iter().any(|t| {
        path.strip_prefix(t.prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// A type map of engine-wide services, shared by every pipeline of one engine.
#[derive(Clone, Default)]
pub struct Extensions {
    plugins: PluginsConfig,
    services: Arc<Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>>,
    catalog: Arc<OnceLock<Arc<dyn PluginCatalog>>>,
    domain: Arc<OnceLock<Arc<dyn DomainPlugins>>>,
}

/// The marker of a dry-run engine.
struct DryRun;

impl std::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extensions")
            .field("plugins", &self.plugins)
            .finish_non_exhaustive()
    }
}

impl Extensions {
    pub fn new(plugins: &PluginsConfig) -> Extensions {
        Extensions {
            plugins: plugins.clone(),
            ..Extensions::default()
        }
    }

    /// Runs every registered [`EngineHook`].
    pub fn start_hooks(&self) -> Result<(), String> {
        for hook in inventory::iter::<EngineHook> {
            (hook.start)(self).map_err(|e| format!("{}: {e}", hook.name))?;
        }
        Ok(())
    }

    /// The root configuration's `plugins:` block.
    pub fn plugins_config(&self) -> &PluginsConfig {
        &self.plugins
    }

    /// The service of type `T`, made by `make` the first time it is asked for.
    pub fn get_or_try_init<T, E>(&self, make: impl FnOnce() -> Result<T, E>) -> Result<Arc<T>, E>
    where
        T: Any + Send + Sync,
    {
        let mut map = self.services.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(&TypeId::of::<T>()) {
            return Ok(s.clone().downcast::<T>().expect("keyed by its own type id"));
        }
        let s = Arc::new(make()?);
        map.insert(TypeId::of::<T>(), s.clone());
        Ok(s)
    }

    /// The service of type `T`, if one was made.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        let map = self.services.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&TypeId::of::<T>())
            .map(|s| s.clone().downcast::<T>().expect("keyed by its own type id"))
    }

    /// Marks the engine as a dry run (`huizhen test`, `huizhen replay`): steps that reach
    /// outside the engine (a PACS prefetch, an insurance settlement's calls) do not.
    pub fn set_dry_run(&self) {
        let _ = self.get_or_try_init(|| Ok::<_, std::convert::Infallible>(DryRun));
    }

    /// Whether the engine is a dry run (see [`Extensions::set_dry_run`]).
    pub fn dry_run(&self) -> bool {
        self.get::<DryRun>().is_some()
    }

    /// Sets the plugin catalog the API shows (the first one set stays).
    pub fn set_plugin_catalog(&self, catalog: Arc<dyn PluginCatalog>) {
        let _ = self.catalog.set(catalog);
    }

    pub fn plugin_catalog(&self) -> Option<Arc<dyn PluginCatalog>> {
        self.catalog.get().cloned()
    }

    /// Sets the provider of plugin-backed domain ports (the first one set stays).
    pub fn set_domain_plugins(&self, plugins: Arc<dyn DomainPlugins>) {
        let _ = self.domain.set(plugins);
    }

    /// The provider of plugin-backed domain ports, when the plugin host is linked in (made on
    /// first use by its [`DomainPluginsFactory`]).
    pub fn domain_plugins(&self) -> Option<Arc<dyn DomainPlugins>> {
        if let Some(d) = self.domain.get() {
            return Some(d.clone());
        }
        let factory = inventory::iter::<DomainPluginsFactory>.into_iter().next()?;
        let made = (factory.make)(self);
        Some(self.domain.get_or_init(|| made).clone())
    }
}
