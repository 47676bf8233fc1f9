//! Configuration: the root `huizhen.yaml` and one YAML file per pipeline.
//!
//! Every YAML file goes through [`parse_yaml`] (serde-saphyr, the maintained serde YAML crate),
//! after `${ENV_VAR}` interpolation. Every struct denies unknown keys and every file carries
//! `version: 1`. Errors name the file, line and column, say what was expected and suggest the
//! nearest known name for a misspelt key or type. [`check`] then builds every pipeline without
//! starting it and collects all remaining errors (bad expressions, unknown route targets,
//! clashing names and paths), so `huizhen validate` prints every problem at once.

mod console;
pub use console::{ConsoleConfig, OidcConfig, SecondFactor};
pub mod duration;
mod error;
mod interpolate;
mod salvage;
pub mod workflow;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

pub use error::{ConfigError, ConfigErrors, did_you_mean};
use error::{first_quoted, tidy_build_error};
use interpolate::interpolate;
pub use salvage::{ParsedFile, PartialRoute};

use crate::expr::Expr;
use crate::runner::{BuildContext, Router};
use crate::sinks::SinkConfig;
use crate::sources::SourceConfig;
use crate::steps::StepConfig;
use crate::store::Durability;

/// The only config format version this engine reads.
pub const VERSION: u32 = 1;

/// `version: 1` — any other value is an error at its position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version(pub u32);

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = u32::deserialize(d)?;
        if v != VERSION {
            return Err(serde::de::Error::custom(format!(
                "unsupported config version {v}: this engine reads version {VERSION}"
            )));
        }
        Ok(Version(v))
    }
}

/// The root file, `huizhen.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootConfig {
    pub version: Version,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub plugins: PluginsConfig,
    /// Globs of pipeline files, relative to the root file's folder.
    #[serde(default = "default_pipeline_globs")]
    pub pipelines: Vec<String>,
    #[serde(default)]
    pub journal: JournalConfig,
    /// Authentication, authorisation and the audit trail (see `crate::security`).
    #[serde(default)]
    pub security: crate::security::SecurityConfig,
    /// Where work waits for a worker: `local` (default: this process's memory, the journal
    /// recovering it after a crash) or a broker URL (`amqp://user:pass@host:5672/vhost`,
    /// `amqps://…`) shared by several engine processes on one PostgreSQL store.
    #[serde(default = "default_work_queue")]
    pub queue: String,
    /// Scale-out settings used with a broker `queue` (see `crate::cluster`).
    #[serde(default)]
    pub cluster: crate::cluster::ClusterConfig,
    /// The consultation workflow: SLA, assignment matching, signature roots (see
    /// `crate::workflow`).
    #[serde(default)]
    pub workflow: crate::workflow::WorkflowConfig,
    /// Billing and insurance settlement (see `crate::billing`); none: no billing.
    #[serde(default)]
    pub billing: Option<crate::billing::BillingConfig>,
    /// The consultation call: room tokens, the SFU, STUN/TURN (see `crate::media`).
    #[serde(default)]
    pub media: crate::media::MediaConfig,
    /// The object store: large objects such as the call's recordings, sealed with the data
    /// keys (see `crate::objects`).
    #[serde(default)]
    pub objects: crate::objects::ObjectsConfig,
    /// The web console at `/ui` and its logins (see [`ConsoleConfig`]).
    #[serde(default)]
    pub console: ConsoleConfig,
    /// OpenTelemetry traces over OTLP/HTTP (see `crate::telemetry`); off by default.
    #[serde(default)]
    pub telemetry: crate::telemetry::TelemetryConfig,
}

fn default_work_queue() -> String {
    "local".into()
}

impl Default for RootConfig {
    fn default() -> Self {
        RootConfig {
            version: Version(VERSION),
            store: StoreConfig::default(),
            http: HttpConfig::default(),
            plugins: PluginsConfig::default(),
            pipelines: default_pipeline_globs(),
            journal: JournalConfig::default(),
            security: crate::security::SecurityConfig::default(),
            queue: default_work_queue(),
            cluster: crate::cluster::ClusterConfig::default(),
            workflow: crate::workflow::WorkflowConfig::default(),
            billing: None,
            media: crate::media::MediaConfig::default(),
            objects: crate::objects::ObjectsConfig::default(),
            console: ConsoleConfig::default(),
            telemetry: crate::telemetry::TelemetryConfig::default(),
        }
    }
}

fn default_pipeline_globs() -> Vec<String> {
    vec!["pipelines/*.yaml".into()]
}

/// Where the journal lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://data/huizhen.db` (default) or `postgres://user@host/db`.
    #[serde(default = "default_store_url")]
    pub url: String,
    /// `process-crash` (default) or `power-loss` (fsync every commit; SQLite only).
    #[serde(default)]
    pub durability: Durability,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// SQLite only: the page cache of the journal writer's connection (an integer, or `16MiB`,
    /// `64MB`; default 16 MiB). The engine's memory grows by up to this much as the journal
    /// grows; a larger cache did not speed appends measurably (BENCHMARKS.md). The pooled read
    /// connections keep 2 MiB each.
    #[serde(default = "default_sqlite_cache", deserialize_with = "byte_size")]
    pub sqlite_cache: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: default_store_url(),
            durability: Durability::default(),
            max_connections: default_max_connections(),
            sqlite_cache: default_sqlite_cache(),
        }
    }
}

fn default_sqlite_cache() -> u64 {
    crate::store::DEFAULT_SQLITE_CACHE
}

fn default_store_url() -> String {
    "sqlite://data/huizhen.db".into()
}
fn default_max_connections() -> u32 {
    8
}

/// The HTTP server (API, metrics, `http` sources).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default = "default_bind")]
    pub bind: String,
    /// Largest request body accepted, in bytes (default 16 MiB).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// A request that takes longer than this is answered 408 (slow clients).
    #[serde(default = "default_request_timeout", with = "duration")]
    pub request_timeout: Duration,
    /// The deadline of requests to routes that carry long transfers (DICOMweb STOW-RS and
    /// WADO-RS under `/dicomweb`), instead of `request_timeout`. Default 1h.
    #[serde(default = "default_transfer_timeout", with = "duration")]
    pub transfer_timeout: Duration,
    /// HTTPS (TLS 1.2+, rustls): certificate, key and, for mutual TLS, the CA of client
    /// certificates. A plaintext client is refused.
    #[serde(default)]
    pub tls: Option<crate::tls::TlsConfig>,
    /// Connections open at once (including TLS handshakes in progress); one more is closed at
    /// once. Default 1024.
    #[serde(default = "default_http_connections")]
    pub max_connections: usize,
    /// The request line and headers must arrive within this time (slowloris); it also bounds
    /// how long an idle keep-alive connection waits for its next request. Default 10s.
    #[serde(default = "default_header_timeout", with = "duration")]
    pub header_timeout: Duration,
    /// A TLS handshake must finish within this time. Default 10s.
    #[serde(default = "default_header_timeout", with = "duration")]
    pub handshake_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            bind: default_bind(),
            max_body_bytes: default_max_body(),
            request_timeout: default_request_timeout(),
            transfer_timeout: default_transfer_timeout(),
            tls: None,
            max_connections: default_http_connections(),
            header_timeout: default_header_timeout(),
            handshake_timeout: default_header_timeout(),
        }
    }
}

fn default_http_connections() -> usize {
    1024
}
fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_bind() -> String {
    "127.0.0.1:8080".into()
}
fn default_max_body() -> usize {
    16 * 1024 * 1024
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_transfer_timeout() -> Duration {
    Duration::from_secs(3600)
}

/// Where WASM plugin packages are loaded from, and whose signatures are trusted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// The folder of packages (`NAME-VERSION/` with the `.wasm`, `plugin.toml` and
    /// `plugin.toml.sig`), relative to the working directory; watched for new versions.
    #[serde(default = "default_plugin_dir")]
    pub dir: PathBuf,
    /// Vendors whose ed25519 signatures are accepted: a name → the public key (base64 of the 32
    /// key bytes, or a PEM `PUBLIC KEY`).
    #[serde(default)]
    pub trusted_keys: BTreeMap<String, String>,
    /// Loads packages without a valid signature (development only; logged as a warning).
    #[serde(default, alias = "allow-unsigned")]
    pub allow_unsigned: bool,
    /// Watches `dir` and swaps in new versions while the engine runs (default true).
    #[serde(default = "default_true")]
    pub watch: bool,
    /// The file binding each plugin name to the trusted key that first signed it (default
    /// `names.toml` in `dir`); written by the engine, changed with `huizhen plugin bind`.
    #[serde(default)]
    pub names_file: Option<PathBuf>,
    /// The `scorer` plugin (by manifest name) that `POST /api/experts/match` ranks with; none:
    /// the built-in scorer. Pipelines choose theirs with the `match_experts` step's `scorer:`.
    #[serde(default)]
    pub expert_scorer: Option<String>,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            dir: default_plugin_dir(),
            trusted_keys: BTreeMap::new(),
            allow_unsigned: false,
            watch: true,
            names_file: None,
            expert_scorer: None,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_plugin_dir() -> PathBuf {
    "plugins/dist".into()
}

/// Tuning of the journal writer and the retry scheduler.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// Most writes committed in one transaction (group commit).
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// How often due retries and reprocessed messages are looked for.
    #[serde(default = "default_scheduler_poll", with = "duration")]
    pub scheduler_poll: Duration,
    /// Free space (percent of the disk) below which sources refuse new messages, on the disk
    /// of the SQLite journal. Default 5.
    #[serde(default = "default_min_free_disk")]
    pub min_free_disk_percent: f64,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            max_batch: default_max_batch(),
            scheduler_poll: default_scheduler_poll(),
            min_free_disk_percent: default_min_free_disk(),
        }
    }
}

fn default_min_free_disk() -> f64 {
    5.0
}

fn default_max_batch() -> usize {
    2048
}
fn default_scheduler_poll() -> Duration {
    Duration::from_millis(500)
}

/// One pipeline file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub version: Version,
    /// Unique name: lowercase letters, digits, `-` and `_`.
    pub name: Spanned<String>,
    #[serde(default)]
    pub description: String,
    /// The facility (tenant) its messages belong to.
    #[serde(default = "default_facility")]
    pub facility: String,
    pub source: Spanned<Box<dyn SourceConfig>>,
    #[serde(default)]
    pub steps: Vec<Spanned<Box<dyn StepConfig>>>,
    #[serde(default)]
    pub sinks: Vec<Spanned<Box<dyn SinkConfig>>>,
    /// Messages processed at the same time.
    #[serde(default = "default_concurrency", deserialize_with = "at_least_one")]
    pub concurrency: usize,
    /// Messages held in memory for the workers: a cache in front of the journal, not a limit on
    /// intake. Messages beyond it wait in the journal and are taken up in order.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// The bound on intake: unfinished messages (and their estimated bytes) this pipeline may
    /// hold in the journal before its sources refuse new ones (HL7 AR/CR with ERR-3 207, HTTP
    /// 503 with Retry-After, an AMQP nack). Default 10,000,000 messages and 20 GB.
    #[serde(default)]
    pub backlog_limit: BacklogLimit,
    /// A CEL expression; messages with the same value are processed one at a time, in order.
    #[serde(default)]
    pub ordering_key: Option<Expr>,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub dedup: DedupConfig,
    /// Protects a slow destination (a legacy HIS): at most `per_second` deliveries per second
    /// (token bucket of `burst`) and `max_in_flight` at once, across this pipeline's workers.
    /// Messages wait in the journal-backed queue meanwhile.
    #[serde(default)]
    pub deliver_limit: Option<DeliverLimit>,
}

/// A count that must be at least 1, reported at its position when it is 0.
fn at_least_one<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default + PartialEq,
{
    let v = T::deserialize(d)?;
    if v == T::default() {
        return Err(serde::de::Error::custom("must be at least 1, found 0"));
    }
    Ok(v)
}

fn default_facility() -> String {
    "default".into()
}
fn default_concurrency() -> usize {
    4
}
fn default_queue() -> usize {
    1024
}

/// `backlog_limit:` of a pipeline.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BacklogLimit {
    /// Unfinished messages (received, processing, failed) at most.
    #[serde(default = "default_backlog_messages")]
    pub messages: u64,
    /// Their bodies' bytes at most (an integer, or `500MB`, `20GB`, `1GiB`); estimated from the
    /// count and the pipeline's mean body size.
    #[serde(default = "default_backlog_bytes", deserialize_with = "byte_size")]
    pub bytes: u64,
}

impl Default for BacklogLimit {
    fn default() -> Self {
        BacklogLimit {
            messages: default_backlog_messages(),
            bytes: default_backlog_bytes(),
        }
    }
}

fn default_backlog_messages() -> u64 {
    10_000_000
}
fn default_backlog_bytes() -> u64 {
    20_000_000_000
}

/// A size in bytes: an integer, or a number with a unit (`KB`, `MB`, `GB`, `TB` in powers of
/// 1000; `KiB`, `MiB`, `GiB`, `TiB` in powers of 1024).
fn byte_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        S(String),
    }
    match Raw::deserialize(d)? {
        Raw::N(n) => Ok(n),
        Raw::S(s) => parse_byte_size(&s).map_err(serde::de::Error::custom),
    }
}

pub(crate) fn parse_byte_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size: expected e.g. 20GB, 500MiB or 1048576"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        u => {
            return Err(format!(
                "{s:?}: unknown unit {u:?} (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
            ));
        }
    };
    Ok((n * mult) as u64)
}

/// Retries with exponential backoff and jitter, then the dead-letter state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverLimit {
    /// Deliveries per second (may be fractional, e.g. 0.5).
    pub per_second: f64,
    /// Deliveries allowed at once after an idle period (default 1: an even pace).
    #[serde(default = "one_f64")]
    pub burst: f64,
    /// Deliveries in progress at once (default: the pipeline's concurrency).
    #[serde(default)]
    pub max_in_flight: Option<usize>,
}

fn one_f64() -> f64 {
    1.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included (default 5). 1 means no retry.
    #[serde(default = "default_max_attempts", deserialize_with = "at_least_one")]
    pub max_attempts: u32,
    /// Wait before the second attempt (default 1s); doubles each time.
    #[serde(default = "default_backoff", with = "duration")]
    pub backoff: Duration,
    /// Longest wait between attempts (default 5m).
    #[serde(default = "default_max_backoff", with = "duration")]
    pub max_backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: default_max_attempts(),
            backoff: default_backoff(),
            max_backoff: default_max_backoff(),
        }
    }
}

fn default_max_attempts() -> u32 {
    5
}
fn default_backoff() -> Duration {
    Duration::from_secs(1)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(300)
}

/// De-duplication of resent messages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// A CEL expression giving the dedup key when the source supplies none (e.g.
    /// `headers['x-message-id']`). Sources such as MLLP set their own (MSH-3+MSH-4+MSH-10).
    #[serde(default)]
    pub key: Option<Expr>,
    /// How long a key is remembered (default 7d).
    #[serde(default = "default_window", with = "duration")]
    pub window: Duration,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            key: None,
            window: default_window(),
        }
    }
}

fn default_window() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

/// A pipeline with the file it came from.
#[derive(Debug)]
pub struct LoadedPipeline {
    pub file: PathBuf,
    pub config: PipelineConfig,
}

/// Everything `huizhen run` needs.
#[derive(Debug)]
pub struct Loaded {
    pub root: RootConfig,
    /// The root file, or `None` when the embedded defaults are used.
    pub root_file: Option<PathBuf>,
    pub pipelines: Vec<LoadedPipeline>,
}

/// Parses a pipeline file: one pipeline, or several YAML documents separated by `---`, each a
/// pipeline (so a demo or a site can keep related pipelines together). The first error only:
/// [`parse_pipelines_all`] gives every error.
pub fn parse_pipelines(file: &Path, text: &str) -> Result<Vec<PipelineConfig>, ConfigError> {
    let parsed = parse_pipelines_all(file, text);
    match parsed.errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(parsed.configs),
    }
}

/// [`parse_pipelines`] with every error of the file that the parser can get past (see
/// `salvage.rs`), and the pipelines that parsed.
pub fn parse_pipelines_all(file: &Path, text: &str) -> ParsedFile {
    let interpolated = match interpolate(file, text) {
        Ok(i) => i,
        Err(e) => {
            return ParsedFile {
                errors: vec![e],
                ..ParsedFile::default()
            };
        }
    };
    match serde_saphyr::from_multiple::<PipelineConfig>(&interpolated.text) {
        Ok(docs) if docs.is_empty() => ParsedFile {
            errors: vec![ConfigError::file(
                file,
                "the file is empty: a pipeline needs at least `version`, `name` and `source`"
                    .into(),
            )],
            ..ParsedFile::default()
        },
        Ok(configs) => ParsedFile {
            configs,
            ..ParsedFile::default()
        },
        Err(_) => salvage::salvage(file, text, &interpolated),
    }
}

/// Parses one YAML document into `T`, after `${ENV}` interpolation.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(
    file: &Path,
    text: &str,
) -> Result<T, ConfigError> {
    let interpolated = interpolate(file, text)?;
    serde_saphyr::from_str::<T>(&interpolated.text).map_err(|e| {
        let mut err = ConfigError::from_yaml(file, &interpolated.text, &e);
        // Show the line as written, never with `${VAR}` values (they may be secrets).
        interpolated.restore(text, &mut err);
        err
    })
}

fn read(file: &Path) -> Result<String, ConfigError> {
    let bytes =
        std::fs::read(file).map_err(|e| ConfigError::file(file, format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        ConfigError::file(
            file,
            format!(
                "not UTF-8 (invalid byte at offset {}); save the file as UTF-8",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// The pipeline files read so far: their pipelines, and what those that did not parse leave
/// for the checks (their names, the routes of their steps that parsed).
#[derive(Default)]
struct PipelineFiles {
    pipelines: Vec<LoadedPipeline>,
    unparsed: Vec<String>,
    routes: Vec<PartialRoute>,
}

impl PipelineFiles {
    fn add(&mut self, file: &Path, text: &str, errors: &mut Vec<ConfigError>) {
        let parsed = parse_pipelines_all(file, text);
        errors.extend(parsed.errors);
        self.unparsed.extend(parsed.failed_names);
        self.routes.extend(parsed.routes);
        self.pipelines
            .extend(parsed.configs.into_iter().map(|config| LoadedPipeline {
                file: file.to_path_buf(),
                config,
            }));
    }

    fn check(&self, extensions: &crate::extensions::Extensions) -> Vec<ConfigError> {
        check_all(&self.pipelines, &self.unparsed, &self.routes, extensions)
    }
}

/// Loads only the root config: `path`, or `./huizhen.yaml` if it exists, or the embedded
/// defaults. Returns it with the file it came from.
pub fn load_root(path: Option<&Path>) -> Result<(RootConfig, Option<PathBuf>), ConfigError> {
    let default = Path::new("huizhen.yaml");
    let root_file = match path {
        Some(p) => Some(p.to_path_buf()),
        None if default.exists() => Some(default.to_path_buf()),
        None => None,
    };
    let root = match &root_file {
        Some(f) => read(f).and_then(|t| parse_yaml::<RootConfig>(f, &t))?,
        None => RootConfig::default(),
    };
    Ok((root, root_file))
}

/// Loads the root config (`path`, or `./huizhen.yaml` if it exists, or the embedded defaults)
/// and every pipeline its globs name, then checks them all.
pub fn load(path: Option<&Path>) -> Result<Loaded, ConfigErrors> {
    let (root, root_file) = load_root(path).map_err(|e| ConfigErrors(vec![e]))?;
    let mut errors = check_root(
        &root,
        root_file.as_deref().unwrap_or(Path::new("huizhen.yaml")),
    );
    let base = root_file
        .as_ref()
        .and_then(|f| f.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let mut files = BTreeSet::new();
    for g in &root.pipelines {
        let pattern = base.join(g);
        match glob::glob(&pattern.to_string_lossy()) {
            // Test files (`NAME.test.yaml`) sit beside the pipelines; `huizhen test` reads them.
            Ok(paths) => files.extend(
                paths
                    .flatten()
                    .filter(|f| !crate::pipetest::is_test_file(f)),
            ),
            Err(e) => errors.push(ConfigError::file(
                root_file.as_deref().unwrap_or(Path::new("huizhen.yaml")),
                format!("invalid pipeline glob {g:?}: {e}"),
            )),
        }
    }
    let mut read_files = PipelineFiles::default();
    for f in files {
        match read(&f) {
            Ok(t) => read_files.add(&f, &t, &mut errors),
            Err(e) => errors.push(e),
        }
    }
    errors.extend(read_files.check(&crate::extensions::Extensions::new(&root.plugins)));
    let pipelines = read_files.pipelines;
    errors.extend(check_outbound(
        &root,
        root_file.as_deref().unwrap_or(Path::new("huizhen.yaml")),
        &pipelines,
    ));
    if let Some(billing) = &root.billing
        && let Err(problems) = billing.load(Some(&base))
    {
        let file = root_file.as_deref().unwrap_or(Path::new("huizhen.yaml"));
        errors.extend(problems.into_iter().map(|p| ConfigError::file(file, p)));
    }
    if errors.is_empty() {
        Ok(Loaded {
            root,
            root_file,
            pipelines,
        })
    } else {
        sort_errors(&mut errors);
        Err(ConfigErrors(errors))
    }
}

/// Each file's errors in the order of its lines (files in the order they were first reported).
fn sort_errors(errors: &mut [ConfigError]) {
    let mut order: Vec<PathBuf> = Vec::new();
    for e in errors.iter() {
        if !order.contains(&e.file) {
            order.push(e.file.clone());
        }
    }
    errors.sort_by_key(|e| (order.iter().position(|f| *f == e.file), e.line, e.column));
}

/// Checks one pipeline's YAML text as `huizhen validate` checks a file (written to a temporary
/// file first: errors are located in the file), each error as `line:column: message`. For the
/// config-error tests of components that live in adapter crates.
pub fn validate_text(text: &str) -> Vec<String> {
    let file = std::env::temp_dir().join(format!(
        "huizhen-validate-{}.yaml",
        crate::message::new_id()
    ));
    if let Err(e) = std::fs::write(&file, text) {
        return vec![format!("0:0: cannot write {}: {e}", file.display())];
    }
    let errors = match validate_paths(std::slice::from_ref(&file)) {
        Ok(_) => Vec::new(),
        Err(e) => {
            e.0.iter()
                .map(|e| format!("{}:{}: {}", e.line, e.column, e.message))
                .collect()
        }
    };
    let _ = std::fs::remove_file(&file);
    errors
}

/// What `huizhen validate PATH...` checks: files and folders (every `*.yaml`/`*.yml` inside).
/// A file named `huizhen.yaml`/`huizhen.yml` is read as a root config, `NAME.test.yaml` as a
/// pipeline test file, anything else as a pipeline; a root checked together with pipelines
/// must name its outbound pipelines among them. Returns how many files were checked.
pub fn validate_paths(paths: &[PathBuf]) -> Result<usize, ConfigErrors> {
    validate_paths_with_root(paths, None)
}

/// [`validate_paths`] with the root config the paths belong to (`-c FILE`, or
/// `./huizhen.yaml`): when none of the paths is a root file, its settings are the ones the
/// pipelines are checked under (the plugin folder and the trusted keys of signed plugins), as
/// `huizhen run` would load them; errors in it are reported too.
pub fn validate_paths_with_root(
    paths: &[PathBuf],
    root_file: Option<&Path>,
) -> Result<usize, ConfigErrors> {
    let mut files = BTreeSet::new();
    let mut errors = Vec::new();
    for p in paths {
        if p.is_dir() {
            match std::fs::read_dir(p) {
                Ok(rd) => {
                    for e in rd.flatten() {
                        let path = e.path();
                        let ext = path.extension().and_then(|x| x.to_str());
                        if path.is_file() && matches!(ext, Some("yaml" | "yml")) {
                            files.insert(path);
                        }
                    }
                }
                Err(e) => errors.push(ConfigError::file(p, format!("cannot read folder: {e}"))),
            }
        } else if p.exists() {
            files.insert(p.clone());
        } else {
            errors.push(ConfigError::file(p, "no such file or folder".to_owned()));
        }
    }
    let given_root = files.iter().any(|f| {
        matches!(
            f.file_name().and_then(|n| n.to_str()),
            Some("huizhen.yaml" | "huizhen.yml")
        )
    });
    let count = files.len();
    let mut read_files = PipelineFiles::default();
    let mut plugins = PluginsConfig::default();
    let mut roots = Vec::new();
    if !given_root && let Some(f) = root_file {
        match read(f).and_then(|t| parse_yaml::<RootConfig>(f, &t)) {
            Ok(root) => {
                errors.extend(check_root(&root, f));
                // The plugin folder stays relative to the working directory, as `run` has it.
                plugins = root.plugins.clone();
            }
            Err(e) => errors.push(e),
        }
    }
    for f in files {
        let is_root = matches!(
            f.file_name().and_then(|n| n.to_str()),
            Some("huizhen.yaml" | "huizhen.yml")
        );
        let text = match read(&f) {
            Ok(t) => t,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if crate::pipetest::is_test_file(&f) {
            if let Err(e) = parse_yaml::<crate::pipetest::TestFile>(&f, &text) {
                errors.push(e);
            }
        } else if is_root {
            match parse_yaml::<RootConfig>(&f, &text) {
                Ok(root) => {
                    errors.extend(check_root(&root, &f));
                    plugins = root.plugins.clone();
                    roots.push((root, f.clone()));
                }
                Err(e) => errors.push(e),
            }
        } else {
            read_files.add(&f, &text, &mut errors);
        }
    }
    errors.extend(read_files.check(&crate::extensions::Extensions::new(&plugins)));
    let pipelines = read_files.pipelines;
    // A root checked with pipelines names outbound pipelines among them; checked alone, its
    // pipelines are elsewhere.
    if !pipelines.is_empty() {
        for (root, file) in &roots {
            errors.extend(check_outbound(root, file, &pipelines));
        }
    }
    if errors.is_empty() {
        Ok(count)
    } else {
        sort_errors(&mut errors);
        Err(ConfigErrors(errors))
    }
}

/// Checks of the root file beyond its types: the work queue, the cluster block, the
/// workflow's SLA and matching settings and the telemetry block.
fn check_root(root: &RootConfig, file: &Path) -> Vec<ConfigError> {
    let mut errors: Vec<ConfigError> = root
        .workflow
        .problems()
        .into_iter()
        .map(|p| ConfigError::file(file, p))
        .collect();
    errors.extend(
        root.telemetry
            .problems()
            .into_iter()
            .map(|p| ConfigError::file(file, p)),
    );
    if !crate::cluster::is_local(&root.queue) {
        if let Err(e) = crate::cluster::work_queue(&root.queue, &root.cluster, &[]) {
            errors.push(ConfigError::file(file, e));
        }
        if let Err(e) = root.cluster.check() {
            errors.push(ConfigError::file(file, e));
        }
    }
    errors
}

/// The outbound pipelines `workflow:` names (consultations', prescriptions') must be among
/// `pipelines`.
fn check_outbound(
    root: &RootConfig,
    file: &Path,
    pipelines: &[LoadedPipeline],
) -> Vec<ConfigError> {
    let names = pipelines.iter().map(|p| p.config.name.value.as_str());
    root.workflow
        .unknown_outbound_pipelines(names.clone())
        .into_iter()
        .chain(
            root.billing
                .as_ref()
                .and_then(|b| b.unknown_outbound_pipeline(names)),
        )
        .map(|e| ConfigError::file(file, e))
        .collect()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// A valid name close to an invalid one (`Lab Results` → `lab-results`).
fn suggest_name(name: &str) -> Option<String> {
    let mut out = String::new();
    for c in name.trim().chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out: String = out.trim_matches('-').chars().take(64).collect();
    (valid_name(&out) && out != name).then_some(out)
}

/// `; the pipelines checked are "a", "b"` — when validating one file, a route to a pipeline in
/// another file is unknown, and this says why.
fn known_pipelines(names: &BTreeMap<&str, &LoadedPipeline>) -> String {
    const MAX: usize = 8;
    let mut list: Vec<String> = names.keys().take(MAX).map(|n| format!("{n:?}")).collect();
    if names.len() > MAX {
        list.push(format!("and {} more", names.len() - MAX));
    }
    match names.len() {
        0 => String::new(),
        1 => format!(" (the only pipeline checked is {})", list[0]),
        _ => format!(" (the pipelines checked are {})", list.join(", ")),
    }
}

/// The error for a route step's target that is no pipeline checked.
fn unknown_route(
    names: &BTreeMap<&str, &LoadedPipeline>,
    unparsed: &[String],
    file: &Path,
    step: usize,
    target: &str,
    at: &serde_saphyr::Location,
) -> Option<ConfigError> {
    if names.contains_key(target) || unparsed.iter().any(|u| u == target) {
        return None;
    }
    let known = names
        .keys()
        .copied()
        .chain(unparsed.iter().map(String::as_str));
    let hint = match error::did_you_mean(target, known) {
        Some(s) => format!("; did you mean {s:?}?"),
        None => known_pipelines(names),
    };
    Some(ConfigError::at_value(
        file,
        at,
        Some(target),
        format!("steps[{step}]: route target {target:?} is not a known pipeline{hint}"),
    ))
}

/// Builds every pipeline without starting it and returns every error found.
pub fn check(pipelines: &[LoadedPipeline]) -> Vec<ConfigError> {
    check_with(pipelines, &crate::extensions::Extensions::default())
}

/// [`check`] with the engine-wide services of a root configuration (its plugin folder and
/// trusted keys).
pub fn check_with(
    pipelines: &[LoadedPipeline],
    extensions: &crate::extensions::Extensions,
) -> Vec<ConfigError> {
    check_all(pipelines, &[], &[], extensions)
}

/// [`check_with`], where `unparsed` names pipelines whose files have errors (they exist, so a
/// route to one is not a route to an unknown pipeline) and `partial_routes` are the routes of
/// those pipelines' steps that parsed (their targets are checked too).
fn check_all(
    pipelines: &[LoadedPipeline],
    unparsed: &[String],
    partial_routes: &[PartialRoute],
    extensions: &crate::extensions::Extensions,
) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut names: BTreeMap<&str, &LoadedPipeline> = BTreeMap::new();
    let mut paths: BTreeMap<String, &LoadedPipeline> = BTreeMap::new();
    for p in pipelines {
        let name = p.config.name.value.as_str();
        if !valid_name(name) {
            errors.push(ConfigError::at(
                &p.file,
                &p.config.name.referenced,
                format!(
                    "invalid pipeline name {name:?}: use 1 to 64 lowercase letters, digits, '-' or '_'{}",
                    suggest_name(name)
                        .map(|s| format!(", e.g. {s:?}"))
                        .unwrap_or_default()
                ),
            ));
        }
        if let Some(first) = names.insert(name, p) {
            errors.push(ConfigError::at(
                &p.file,
                &p.config.name.referenced,
                format!(
                    "pipeline name {name:?} is already used by {}",
                    first.file.display()
                ),
            ));
        }
        if let Some(l) = &p.config.deliver_limit {
            let bad = if !(l.per_second > 0.0 && l.per_second.is_finite()) {
                Some(format!(
                    "deliver_limit.per_second must be more than 0, found {}",
                    l.per_second
                ))
            } else if !(l.burst >= 1.0 && l.burst.is_finite()) {
                Some(format!(
                    "deliver_limit.burst must be at least 1, found {}",
                    l.burst
                ))
            } else if l.max_in_flight == Some(0) {
                Some("deliver_limit.max_in_flight must be at least 1, found 0".to_owned())
            } else {
                None
            };
            if let Some(msg) = bad {
                errors.push(ConfigError::at(&p.file, &p.config.name.referenced, msg));
            }
        }
        if let Some(path) = p.config.source.value.http_path()
            && let Some(first) = paths.insert(path.clone(), p)
        {
            errors.push(ConfigError::at_value(
                &p.file,
                &p.config.source.referenced,
                Some(&path),
                format!(
                    "http path {path} is already used by pipeline {:?} ({})",
                    first.config.name.value,
                    first.file.display()
                ),
            ));
        }
        if p.config.concurrency == 0 {
            errors.push(ConfigError::file(
                &p.file,
                "concurrency must be at least 1".into(),
            ));
        }
        if p.config.retry.max_attempts == 0 {
            errors.push(ConfigError::file(
                &p.file,
                "retry.max_attempts must be at least 1".into(),
            ));
        }
    }
    for r in partial_routes {
        if let Some(e) = unknown_route(&names, unparsed, &r.file, r.step, &r.target, &r.at) {
            errors.push(e);
        }
    }
    for p in pipelines {
        let ctx = BuildContext {
            pipeline: p.config.name.value.clone(),
            facility: p.config.facility.clone(),
            router: Router::default(),
            extensions: extensions.clone(),
        };
        for w in p.config.source.value.warnings() {
            let at = ConfigError::at_value(&p.file, &p.config.source.referenced, None, w);
            tracing::warn!(
                "{}:{}:{}: warning: source: {}",
                at.file.display(),
                at.line,
                at.column,
                at.message
            );
        }
        if let Err(e) = p.config.source.value.build(&ctx) {
            let e = tidy_build_error(&e);
            errors.push(ConfigError::at_value(
                &p.file,
                &p.config.source.referenced,
                first_quoted(&e),
                format!("source: {e}"),
            ));
        }
        for (i, s) in p.config.steps.iter().enumerate() {
            if let Err(e) = s.value.build(&ctx) {
                let e = tidy_build_error(&e);
                errors.push(ConfigError::at_value(
                    &p.file,
                    &s.referenced,
                    first_quoted(&e),
                    format!("steps[{i}]: {e}"),
                ));
            }
            for target in s.value.routes_to() {
                if let Some(e) = unknown_route(&names, unparsed, &p.file, i, &target, &s.referenced)
                {
                    errors.push(e);
                }
            }
        }
        for (i, s) in p.config.sinks.iter().enumerate() {
            if let Err(e) = s.value.build(&ctx, i) {
                let e = tidy_build_error(&e);
                errors.push(ConfigError::at_value(
                    &p.file,
                    &s.referenced,
                    first_quoted(&e),
                    format!("sinks[{i}]: {e}"),
                ));
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_checks_the_queue_and_the_cluster_block() {
        let file = Path::new("huizhen.yaml");
        let text =
            "version: 1\nqueue: kafka://x:9092\ncluster:\n  heartbeat: 1s\n  dead_after: 2s\n";
        let root: RootConfig = parse_yaml(file, text).unwrap();
        let errors: Vec<String> = check_root(&root, file)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("kafka://x:9092"), "{errors:?}");
        assert!(errors[1].contains("3 heartbeats"), "{errors:?}");
        let local: RootConfig = parse_yaml(file, "version: 1\n").unwrap();
        assert_eq!(local.queue, "local");
        assert!(check_root(&local, file).is_empty());
    }
}
