//! The store: the only module that issues SQL.
//!
//! One set of repository functions over sqlx's `Any` driver serves both backends: SQLite (the
//! embedded default, a file under `data/`, WAL mode) and PostgreSQL (`postgres://…`). SQL here is
//! written once with `$1`-style placeholders, which both drivers accept. Each backend has its own
//! migration folder (`migrations/sqlite`, `migrations/postgres`) with the same version numbers.
//!
//! Writes that must be fast (appends and state changes) go through the [`journal`] writer, which
//! groups them into one transaction per batch (group commit). Reads use a separate pool.

pub mod anchor;
pub mod audit;
pub mod billing;
pub mod calls;
pub mod care;
pub mod cluster;
pub mod consultations;
mod cursors;
mod dead_letter;
pub mod devices;
pub mod dicom;
pub mod experts;
mod feed;
pub mod fhir;
pub mod identity;
pub mod journal;
pub mod recordings;
pub mod rekey;
mod reprocess;
mod search;
mod shadow;
pub use search::ContentFilter;
mod sql;
pub mod users;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor, Row, SqlStr};

use crate::message::{Message, MessageId, State, now_ms};
pub use journal::{Effect, Journal, JournalOptions, Transition};
pub use reprocess::{BulkReprocess, INTAKE_STEP, Intake, ReprocessRequest, ReprocessRow};
use sql::Sql;

/// Errors from the store, naming the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: cannot open {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("store: migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("store: {op}: {source}")]
    Query {
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("store: {op}: {source}")]
    Sqlite {
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("store: {0}")]
    Inconsistent(String),
    #[error("store: message {id} field {field}: {reason}")]
    Crypto {
        id: String,
        /// `body`, `effect/<sink>`, `header/<name>`, `last_error` or `error`.
        field: String,
        reason: crate::crypto::CryptoError,
    },
    #[error("store: the journal writer has stopped")]
    WriterGone,
    #[error("store: unsupported database URL {0:?} (expected sqlite:… or postgres://…)")]
    UnsupportedUrl(String),
    #[error("store: message {0} not found")]
    NotFound(MessageId),
    #[error(
        "store: message {id} is {state}; only failed, dead or done messages can be reprocessed"
    )]
    NotReprocessable { id: MessageId, state: State },
    #[error(
        "store: message {id} was refused at intake ({reason}): the sender was told it was not accepted, so it is not reprocessed unless asked explicitly (CLI --include-refused, API ?include_refused=true)"
    )]
    Refused { id: MessageId, reason: String },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub(crate) fn q(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { op, source }
}

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// How much a committed write survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// SQLite WAL with `synchronous=NORMAL`: a commit survives a crash or `kill -9` of the
    /// process (the WAL is in the OS page cache), not a power loss.
    #[default]
    ProcessCrash,
    /// SQLite `synchronous=FULL` (fsync on every commit): survives power loss too.
    PowerLoss,
}

/// The name of a SQLite `PRAGMA synchronous` level as SQLite reports it (0 to 3).
pub(crate) fn synchronous_name(level: i64) -> &'static str {
    match level {
        0 => "OFF",
        1 => "NORMAL",
        2 => "FULL",
        3 => "EXTRA",
        _ => "unknown",
    }
}

/// Options for opening a store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub url: String,
    pub durability: Durability,
    pub max_connections: u32,
    /// SQLite: the journal writer connection's page cache, bytes (`store.sqlite_cache`).
    pub sqlite_cache: u64,
}

/// The default page cache of the SQLite journal writer (`store.sqlite_cache`).
pub const DEFAULT_SQLITE_CACHE: u64 = 16 * 1024 * 1024;

impl StoreOptions {
    pub fn new(url: impl Into<String>) -> StoreOptions {
        StoreOptions {
            url: url.into(),
            durability: Durability::default(),
            max_connections: 8,
            sqlite_cache: DEFAULT_SQLITE_CACHE,
        }
    }
}

/// The handle to the journal database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    /// Readers (and, on PostgreSQL, writers too).
    read: AnyPool,
    /// Writers: on SQLite exactly one connection, since SQLite has one writer at a time.
    write: AnyPool,
    /// The SQLite database file (None for PostgreSQL and in-memory SQLite): the journal writer
    /// opens its own connection to it (see [`journal`]).
    sqlite_file: Option<std::path::PathBuf>,
    durability: Durability,
    /// The SQLite journal writer's page cache, bytes.
    sqlite_cache: u64,
    /// Seals message and effect bodies at rest when set (see [`crate::crypto`]).
    keyring: Option<std::sync::Arc<crate::crypto::Keyring>>,
    /// Signs audit rows and writes checkpoints when set (see [`anchor`]).
    anchor: Option<std::sync::Arc<anchor::AuditAnchor>>,
    /// Decoded registry entries by id and version (see [`experts`]).
    experts_cache: std::sync::Arc<experts::ExpertCache>,
    /// Device bindings and their patients, for `device_reading` (see [`devices`]'s `cache`).
    devices_cache: std::sync::Arc<devices::DeviceCache>,
    /// The identity blocking index in memory (see [`identity`]'s `postings`).
    identity_postings: std::sync::Arc<tokio::sync::Mutex<identity::Postings>>,
    /// Set once the records of an older version have their keys (see `postings`).
    identity_backfill: std::sync::Arc<tokio::sync::OnceCell<()>>,
    /// Where "now" comes from for the consultation workflow (see [`crate::clock`]).
    clock: std::sync::Arc<dyn crate::clock::Clock>,
    /// Wakes the consultation event streams after a commit (see [`consultations`]).
    consultation_feed: tokio::sync::broadcast::Sender<i64>,
    /// Where a consultation's commit announces its events (see [`consultations`]).
    consultation_outbound: std::sync::Arc<consultations::OutboundSettings>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish()
    }
}

/// Filters for listing messages.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub pipeline: Option<String>,
    pub state: Option<State>,
    /// Matches the id, dedup key, trace id, source, headers or last error (substring).
    pub q: Option<String>,
    pub limit: Option<i64>,
    /// Continue after this id (from the previous page's `next_cursor`).
    pub cursor: Option<String>,
    /// Only messages of these facilities (the caller's scope); `None` for all.
    pub facilities: Option<Vec<String>>,
    /// Received at or after (unix ms).
    pub received_after: Option<i64>,
    /// Received before (unix ms).
    pub received_before: Option<i64>,
    /// What the message itself says (its body and headers, opened): read message by message.
    pub content: Option<ContentFilter>,
}

/// One page of messages, newest first.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Page {
    pub messages: Vec<Message>,
    pub next_cursor: Option<String>,
    /// With a content filter: how many messages were read for this page (at most
    /// [`search::SCAN_LIMIT`]; `next_cursor` continues).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scanned: Option<u64>,
}

/// An error recorded against one attempt of a message.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AttemptError {
    pub attempt: i64,
    pub at: i64,
    pub step: String,
    pub error: String,
}

/// A recorded delivery of the `journal` sink.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EffectRow {
    pub message_id: MessageId,
    pub sink: String,
    pub pipeline: String,
    #[serde(skip)]
    pub body: Vec<u8>,
    pub recorded_at: i64,
}

/// Headers set by the engine itself that carry no patient data and stay in clear when
/// encryption is on (so that SQL can see them, e.g. the dedup flag). Every other header value,
/// the `x-*` headers of HTTP senders above all, is sealed.
pub const CLEAR_HEADERS: &[&str] = &[
    "content-type",
    crate::message::REUSED_KEY_HEADER,
    "x-huizhen-sender",
    "scheduled-at",
    "file-part",
];

/// An effect's columns: its own bytes, or for a reference (`body` NULL, journal v2) its
/// message's body, and which of the two (`by_ref` 1: sealed as the message's body).
const EFFECT_COLUMNS: &str = "message_id, sink, pipeline, COALESCE(effects.body, (SELECT bodies.body FROM bodies WHERE bodies.id = effects.message_id)) AS body, CAST(CASE WHEN effects.body IS NULL THEN 1 ELSE 0 END AS BIGINT) AS by_ref, recorded_at";

/// Most effects one message's detail reads (one per `journal` sink of its pipeline, so a handful).
pub const MAX_EFFECTS_PER_MESSAGE: i64 = 256;

/// A message's columns with its body, which journal v2 keeps in `bodies` (by id): a correlated
/// subquery, so the same list serves a `SELECT … FROM messages` and an `UPDATE messages …
/// RETURNING` (both backends allow it there).
const MESSAGE_COLUMNS: &str = "id, facility, pipeline, kind, (SELECT bodies.body FROM bodies WHERE bodies.id = messages.id) AS body, headers, source, received_at, trace_id, dedup_key, dedup_key_sealed, parent_id, state, attempts, next_attempt_at, last_error, updated_at";
const MESSAGE_COLUMNS_NO_BODY: &str = "id, facility, pipeline, kind, headers, source, received_at, trace_id, dedup_key, dedup_key_sealed, parent_id, state, attempts, next_attempt_at, last_error, updated_at";

impl Store {
    /// Opens (and for SQLite creates) the database. Does not run migrations: see [`Store::migrate`].
    pub async fn open(opts: &StoreOptions) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let url = opts.url.trim();
        let open_err = |source| StoreError::Open {
            url: redact_url(url),
            source,
        };
        if url.starts_with("sqlite:") {
            let url = sqlite_url_with_create(url);
            if let Some(parent) = sqlite_path(&url).and_then(|p| p.parent().map(Path::to_path_buf))
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(&parent).map_err(|e| open_err(sqlx::Error::Io(e)))?;
            }
            let sync = match opts.durability {
                Durability::ProcessCrash => "NORMAL",
                Durability::PowerLoss => "FULL",
            };
            let pragmas: &'static str = if sync == "FULL" {
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=10000; PRAGMA cache_size=-2048; PRAGMA temp_store=MEMORY;"
            } else {
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=10000; PRAGMA cache_size=-2048; PRAGMA temp_store=MEMORY;"
            };
            let make = |max: u32| {
                AnyPoolOptions::new()
                    .max_connections(max)
                    .min_connections(1)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(move |conn, _meta| {
                        Box::pin(async move {
                            conn.execute(pragmas).await?;
                            Ok(())
                        })
                    })
            };
            let write = make(1).connect(&url).await.map_err(open_err)?;
            let read = make(opts.max_connections.max(2))
                .connect(&url)
                .await
                .map_err(open_err)?;
            Ok(Store {
                backend: Backend::Sqlite,
                read,
                write,
                sqlite_file: sqlite_path(&url),
                durability: opts.durability,
                sqlite_cache: opts.sqlite_cache,
                keyring: None,
                anchor: None,
                experts_cache: Default::default(),
                devices_cache: Default::default(),
                identity_postings: Default::default(),
                identity_backfill: Default::default(),
                clock: std::sync::Arc::new(crate::clock::SystemClock),
                consultation_feed: consultations::feed(),
                consultation_outbound: Default::default(),
            })
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = AnyPoolOptions::new()
                .max_connections(opts.max_connections.max(4))
                .acquire_timeout(Duration::from_secs(10))
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        // Every statement is prepared once per connection; after five runs
                        // PostgreSQL may keep a generic plan made while the journal was small
                        // (a fresh database, statistics not gathered yet) and go on with it as
                        // the table grows: the dedup lookup then read hundreds of index entries
                        // per key (27.8 M for 31,000 messages in the MLLP bench, 1,457 msg/s).
                        // Planned for its parameters each time, it reads one (4,035 msg/s).
                        if let Err(e) = conn.execute("SET plan_cache_mode = force_custom_plan").await {
                            tracing::warn!(error = %e, "plan_cache_mode not set (PostgreSQL 12 or later has it): generic plans may be slow on a growing journal");
                        }
                        Ok(())
                    })
                })
                .connect(url)
                .await
                .map_err(open_err)?;
            Ok(Store {
                backend: Backend::Postgres,
                read: pool.clone(),
                write: pool,
                sqlite_file: None,
                durability: opts.durability,
                sqlite_cache: opts.sqlite_cache,
                keyring: None,
                anchor: None,
                experts_cache: Default::default(),
                devices_cache: Default::default(),
                identity_postings: Default::default(),
                identity_backfill: Default::default(),
                clock: std::sync::Arc::new(crate::clock::SystemClock),
                consultation_feed: consultations::feed(),
                consultation_outbound: Default::default(),
            })
        } else {
            Err(StoreError::UnsupportedUrl(redact_url(url)))
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub(crate) fn write_pool(&self) -> &AnyPool {
        &self.write
    }

    /// Encrypts bodies written from now on with `keyring`, and decrypts what it reads.
    pub fn with_keyring(
        mut self,
        keyring: Option<std::sync::Arc<crate::crypto::Keyring>>,
    ) -> Store {
        self.keyring = keyring;
        self
    }

    /// Signs audit rows with the anchor's key and checkpoints the chain to its file.
    pub fn with_audit_anchor(
        mut self,
        anchor: Option<std::sync::Arc<anchor::AuditAnchor>>,
    ) -> Store {
        self.anchor = anchor;
        self
    }

    /// Takes "now" for the consultation workflow from `clock` (a fake one in tests).
    pub fn with_clock(mut self, clock: std::sync::Arc<dyn crate::clock::Clock>) -> Store {
        self.clock = clock;
        self
    }

    /// Announces the consultation's events as `settings` say (the pipeline of
    /// `workflow.consultations.outbound_pipeline`, the local offset of the times).
    pub fn with_consultation_outbound(
        mut self,
        settings: consultations::OutboundSettings,
    ) -> Store {
        self.consultation_outbound = std::sync::Arc::new(settings);
        self
    }

    /// The workflow's clock.
    pub fn clock(&self) -> &std::sync::Arc<dyn crate::clock::Clock> {
        &self.clock
    }

    pub fn audit_anchor(&self) -> Option<&std::sync::Arc<anchor::AuditAnchor>> {
        self.anchor.as_ref()
    }

    pub fn keyring(&self) -> Option<&std::sync::Arc<crate::crypto::Keyring>> {
        self.keyring.as_ref()
    }

    /// A sealed value as stored → as written, `field` of message `id` (see
    /// [`crate::crypto::Binding`]). With encryption on, a value in clear is an error.
    pub(crate) fn open_bytes(&self, id: &str, field: &str, raw: Vec<u8>) -> Result<Vec<u8>> {
        let err = |reason| StoreError::Crypto {
            id: id.to_owned(),
            field: field.to_owned(),
            reason,
        };
        match &self.keyring {
            Some(k) => k
                .open(&raw, &crate::crypto::Binding::new(id, field))
                .map_err(err),
            None => match crate::crypto::Cipher::key_of(&raw) {
                Some(key) => Err(err(crate::crypto::CryptoError::UnknownKey(key))),
                None => Ok(raw),
            },
        }
    }

    /// [`Store::open_bytes`] for a text column.
    pub(crate) fn open_text(&self, id: &str, field: &str, raw: String) -> Result<String> {
        let err = |reason| StoreError::Crypto {
            id: id.to_owned(),
            field: field.to_owned(),
            reason,
        };
        match &self.keyring {
            Some(k) => k
                .open_text(&raw, &crate::crypto::Binding::new(id, field))
                .map_err(err),
            None => match crate::crypto::Cipher::key_of_text(&raw) {
                Some(key) => Err(err(crate::crypto::CryptoError::UnknownKey(key))),
                None => Ok(raw),
            },
        }
    }

    /// A header value as stored → as written: sealed unless its name is in [`CLEAR_HEADERS`].
    fn open_header(&self, id: &str, name: &str, raw: String) -> Result<String> {
        if CLEAR_HEADERS.contains(&name) && !raw.starts_with(crate::crypto::TEXT_PREFIX) {
            return Ok(raw);
        }
        self.open_text(id, &format!("header/{name}"), raw)
    }

    /// Opens what a message row holds sealed: the body (when read), the header values and the
    /// last error. Stops at the first field that cannot be opened.
    pub(crate) fn open_message(&self, m: &mut Message, with_body: bool) -> Result<()> {
        if with_body {
            m.body = self.open_bytes(&m.id, "body", std::mem::take(&mut m.body))?;
        }
        for (name, v) in m.headers.iter_mut() {
            *v = self.open_header(&m.id, name, std::mem::take(v))?;
        }
        if let Some(e) = m.last_error.take() {
            m.last_error = Some(self.open_text(&m.id, "last_error", e)?);
        }
        if let Some(k) = m.dedup_key.take() {
            m.dedup_key = Some(self.open_dedup_key(&m.id, k)?);
        }
        Ok(())
    }

    /// The dedup key as shown: opened when sealed; a bare blind index (the sealed key expired or
    /// was never kept) as it is.
    fn open_dedup_key(&self, id: &str, raw: String) -> Result<String> {
        if raw.starts_with(crate::crypto::INDEX_PREFIX) {
            return Ok(raw);
        }
        self.open_text(id, "dedup_key", raw)
    }

    /// [`Store::open_message`] for rows that must not stop a listing or a claim: a field that
    /// cannot be opened is replaced by the reason (logged, naming only the message and field),
    /// and the message's `last_error` says so.
    pub(crate) fn open_message_or_mark(&self, m: &mut Message, with_body: bool) {
        let id = m.id.clone();
        let mut failed: Option<StoreError> = None;
        if with_body {
            match self.open_bytes(&id, "body", std::mem::take(&mut m.body)) {
                Ok(b) => m.body = b,
                Err(e) => failed = Some(e),
            }
        }
        for (name, v) in m.headers.iter_mut() {
            match self.open_header(&id, name, std::mem::take(v)) {
                Ok(o) => *v = o,
                Err(e) => {
                    *v = format!("({e})");
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = m.last_error.take() {
            match self.open_text(&id, "last_error", e) {
                Ok(o) => m.last_error = Some(o),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(k) = m.dedup_key.take() {
            match self.open_dedup_key(&id, k) {
                Ok(o) => m.dedup_key = Some(o),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            tracing::error!(error = %e, "a journaled message has a field that cannot be opened");
            m.last_error = Some(e.to_string());
        }
    }

    pub(crate) fn sqlite_file(&self) -> Option<&Path> {
        self.sqlite_file.as_deref()
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The SQLite journal writer's page cache, bytes.
    pub(crate) fn sqlite_cache(&self) -> u64 {
        self.sqlite_cache
    }

    /// Applies the migrations of this backend that have not run yet.
    pub async fn migrate(&self) -> Result<()> {
        self.migrate_up_to(i64::MAX).await
    }

    /// Applies the migrations numbered up to `last` that have not run yet: a database as an
    /// older release left it (the journal v2 migration test builds a v1 journal this way).
    pub async fn migrate_up_to(&self, last: i64) -> Result<()> {
        let sources: &[(i64, &'static str, &'static str)] = match self.backend {
            Backend::Sqlite => &[
                (
                    1,
                    "journal",
                    include_str!("migrations/sqlite/0001_journal.sql"),
                ),
                (
                    2,
                    "security",
                    include_str!("migrations/sqlite/0002_security.sql"),
                ),
                (
                    3,
                    "cluster",
                    include_str!("migrations/sqlite/0003_cluster.sql"),
                ),
                (
                    4,
                    "audit anchor",
                    include_str!("migrations/sqlite/0004_audit_anchor.sql"),
                ),
                (
                    5,
                    "sealed dedup key",
                    include_str!("migrations/sqlite/0005_sealed_dedup_key.sql"),
                ),
                (
                    6,
                    "ordering partitions",
                    include_str!("migrations/sqlite/0006_ordering_partitions.sql"),
                ),
                (
                    7,
                    "identity",
                    include_str!("migrations/sqlite/0007_identity.sql"),
                ),
                (
                    8,
                    "experts",
                    include_str!("migrations/sqlite/0008_experts.sql"),
                ),
                (
                    9,
                    "expert sync",
                    include_str!("migrations/sqlite/0009_expert_sync.sql"),
                ),
                (
                    10,
                    "identity keys inline",
                    include_str!("migrations/sqlite/0010_identity_keys_inline.sql"),
                ),
                (
                    11,
                    "consultations",
                    include_str!("migrations/sqlite/0011_consultations.sql"),
                ),
                (12, "care", include_str!("migrations/sqlite/0012_care.sql")),
                (
                    13,
                    "reseal workflow events",
                    include_str!("migrations/sqlite/0013_reseal_workflow_events.sql"),
                ),
                (14, "fhir", include_str!("migrations/sqlite/0014_fhir.sql")),
                (
                    15,
                    "source_cursors",
                    include_str!("migrations/sqlite/0015_source_cursors.sql"),
                ),
                (
                    16,
                    "dicom",
                    include_str!("migrations/sqlite/0016_dicom.sql"),
                ),
                (
                    18,
                    "billing",
                    include_str!("migrations/sqlite/0018_billing.sql"),
                ),
                (
                    19,
                    "coverage_usage",
                    include_str!("migrations/sqlite/0019_coverage_usage.sql"),
                ),
                (
                    21,
                    "calls",
                    include_str!("migrations/sqlite/0021_calls.sql"),
                ),
                (
                    22,
                    "devices",
                    include_str!("migrations/sqlite/0022_devices.sql"),
                ),
                (
                    23,
                    "recordings",
                    include_str!("migrations/sqlite/0023_recordings.sql"),
                ),
                (
                    24,
                    "journal v2",
                    include_str!("migrations/sqlite/0024_journal_v2.sql"),
                ),
                (
                    25,
                    "recording_stop",
                    include_str!("migrations/sqlite/0025_recording_stop.sql"),
                ),
                (
                    26,
                    "device_sync",
                    include_str!("migrations/sqlite/0026_device_sync.sql"),
                ),
                (
                    27,
                    "reprocesses",
                    include_str!("migrations/sqlite/0027_reprocesses.sql"),
                ),
                (
                    28,
                    "shadow_promotions",
                    include_str!("migrations/sqlite/0028_shadow_promotions.sql"),
                ),
                (
                    29,
                    "console_users",
                    include_str!("migrations/sqlite/0029_console_users.sql"),
                ),
            ],
            Backend::Postgres => &[
                (
                    1,
                    "journal",
                    include_str!("migrations/postgres/0001_journal.sql"),
                ),
                (
                    2,
                    "security",
                    include_str!("migrations/postgres/0002_security.sql"),
                ),
                (
                    3,
                    "cluster",
                    include_str!("migrations/postgres/0003_cluster.sql"),
                ),
                (
                    4,
                    "audit anchor",
                    include_str!("migrations/postgres/0004_audit_anchor.sql"),
                ),
                (
                    5,
                    "sealed dedup key",
                    include_str!("migrations/postgres/0005_sealed_dedup_key.sql"),
                ),
                (
                    6,
                    "ordering partitions",
                    include_str!("migrations/postgres/0006_ordering_partitions.sql"),
                ),
                (
                    7,
                    "identity",
                    include_str!("migrations/postgres/0007_identity.sql"),
                ),
                (
                    8,
                    "experts",
                    include_str!("migrations/postgres/0008_experts.sql"),
                ),
                (
                    9,
                    "expert sync",
                    include_str!("migrations/postgres/0009_expert_sync.sql"),
                ),
                (
                    10,
                    "identity keys inline",
                    include_str!("migrations/postgres/0010_identity_keys_inline.sql"),
                ),
                (
                    11,
                    "consultations",
                    include_str!("migrations/postgres/0011_consultations.sql"),
                ),
                (
                    12,
                    "care",
                    include_str!("migrations/postgres/0012_care.sql"),
                ),
                (
                    13,
                    "reseal workflow events",
                    include_str!("migrations/postgres/0013_reseal_workflow_events.sql"),
                ),
                (
                    14,
                    "fhir",
                    include_str!("migrations/postgres/0014_fhir.sql"),
                ),
                (
                    15,
                    "source_cursors",
                    include_str!("migrations/postgres/0015_source_cursors.sql"),
                ),
                (
                    16,
                    "dicom",
                    include_str!("migrations/postgres/0016_dicom.sql"),
                ),
                (
                    18,
                    "billing",
                    include_str!("migrations/postgres/0018_billing.sql"),
                ),
                (
                    19,
                    "coverage_usage",
                    include_str!("migrations/postgres/0019_coverage_usage.sql"),
                ),
                (
                    21,
                    "calls",
                    include_str!("migrations/postgres/0021_calls.sql"),
                ),
                (
                    22,
                    "devices",
                    include_str!("migrations/postgres/0022_devices.sql"),
                ),
                (
                    23,
                    "recordings",
                    include_str!("migrations/postgres/0023_recordings.sql"),
                ),
                (
                    24,
                    "journal v2",
                    include_str!("migrations/postgres/0024_journal_v2.sql"),
                ),
                (
                    25,
                    "recording_stop",
                    include_str!("migrations/postgres/0025_recording_stop.sql"),
                ),
                (
                    26,
                    "device_sync",
                    include_str!("migrations/postgres/0026_device_sync.sql"),
                ),
                (
                    27,
                    "reprocesses",
                    include_str!("migrations/postgres/0027_reprocesses.sql"),
                ),
                (
                    28,
                    "shadow_promotions",
                    include_str!("migrations/postgres/0028_shadow_promotions.sql"),
                ),
                (
                    29,
                    "console_users",
                    include_str!("migrations/postgres/0029_console_users.sql"),
                ),
            ],
        };
        let migrations = sources
            .iter()
            .filter(|(v, _, _)| *v <= last)
            .map(|(v, d, s)| {
                Migration::new(
                    *v,
                    Cow::Borrowed(*d),
                    MigrationType::Simple,
                    SqlStr::from_static(s),
                    false,
                )
            })
            .collect();
        let migrator = Migrator::with_migrations(migrations);
        migrator.run(&self.write).await?;
        Ok(())
    }

    /// `true` when the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.read).await.is_ok()
    }

    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }

    /// The SQLite `synchronous` level of the pools' connections (`NORMAL` for
    /// `durability: process-crash`, `FULL` for `power-loss`), read back from a pooled writing
    /// connection; `None` on PostgreSQL. See also [`Journal::sqlite_synchronous`] for the journal
    /// writer's own connection.
    pub async fn sqlite_synchronous(&self) -> Result<Option<&'static str>> {
        if self.backend != Backend::Sqlite {
            return Ok(None);
        }
        let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&self.write)
            .await
            .map_err(q("read PRAGMA synchronous"))?;
        Ok(Some(synchronous_name(level)))
    }

    /// Fetches one message with its body.
    pub async fn get(&self, id: &str) -> Result<Option<Message>> {
        let mut s = Sql::new(format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = "
        ));
        s.bind(id);
        let row = s
            .query()
            .fetch_optional(&self.read)
            .await
            .map_err(q("get message"))?;
        let Some(mut m) = row.map(|r| message_from_row(&r, true)).transpose()? else {
            return Ok(None);
        };
        self.open_message(&mut m, true)?;
        Ok(Some(m))
    }

    /// Errors recorded for each failed attempt of a message, oldest first.
    pub async fn attempt_errors(&self, id: &str) -> Result<Vec<AttemptError>> {
        let mut s = Sql::new(
            "SELECT attempt, at, step, error FROM message_errors WHERE message_id = ".into(),
        );
        s.bind(id);
        s.push(" ORDER BY at, attempt");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("get attempt errors"))?;
        rows.iter()
            .map(|r| {
                Ok(AttemptError {
                    attempt: r.try_get("attempt").map_err(q("decode attempt error"))?,
                    at: r.try_get("at").map_err(q("decode attempt error"))?,
                    step: r.try_get("step").map_err(q("decode attempt error"))?,
                    error: self.open_text(
                        id,
                        "error",
                        r.try_get("error").map_err(q("decode attempt error"))?,
                    )?,
                })
            })
            .collect()
    }

    /// Lists messages newest first, without bodies. With a content filter
    /// ([`ListFilter::content`]) the candidates the other filters leave are opened and read, at
    /// most [`search::SCAN_LIMIT`] of them per call: the page then says how many were read
    /// (`scanned`), and its cursor continues the scan.
    pub async fn list(&self, f: &ListFilter) -> Result<Page> {
        let limit = f.limit.unwrap_or(50).clamp(1, 1000);
        let content = f.content.as_ref().filter(|c| !c.is_empty());
        if let Some(c) = content {
            return self.scan(f, c, limit).await;
        }
        let s = self.list_sql(f, f.cursor.as_deref(), limit + 1, false);
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("list messages"))?;
        let mut messages = rows
            .iter()
            .map(|r| message_from_row(r, false))
            .collect::<Result<Vec<_>>>()?;
        for m in &mut messages {
            self.open_message_or_mark(m, false);
        }
        let next_cursor = if messages.len() as i64 > limit {
            messages.truncate(limit as usize);
            messages.last().map(|m| m.id.clone())
        } else {
            None
        };
        Ok(Page {
            messages,
            next_cursor,
            scanned: None,
        })
    }

    /// The query of [`Store::list`]: the filters but the content one, newest first.
    fn list_sql(&self, f: &ListFilter, cursor: Option<&str>, limit: i64, with_body: bool) -> Sql {
        let mut s = Sql::new(format!(
            "SELECT {} FROM messages WHERE 1=1",
            if with_body {
                MESSAGE_COLUMNS
            } else {
                MESSAGE_COLUMNS_NO_BODY
            }
        ));
        if let Some(p) = &f.pipeline {
            s.push(" AND pipeline = ");
            s.bind(p.as_str());
        }
        if let Some(st) = f.state {
            s.push(" AND state = ");
            s.bind(st.as_str());
            if st != State::Done {
                // Lets SQLite use the one state index (`messages_open`, partial).
                s.push(" AND state <> 'done'");
            }
        }
        if let Some(c) = cursor {
            s.push(" AND id < ");
            s.bind(c.to_owned());
        }
        if let Some(t) = f.received_after {
            s.push(" AND received_at >= ");
            s.bind(t);
        }
        if let Some(t) = f.received_before {
            s.push(" AND received_at < ");
            s.bind(t);
        }
        if let Some(fs) = &f.facilities {
            if fs.is_empty() {
                s.push(" AND 1=0");
            } else {
                s.push(" AND facility IN (");
                for (i, fac) in fs.iter().enumerate() {
                    if i > 0 {
                        s.push(", ");
                    }
                    s.bind(fac.as_str());
                }
                s.push(")");
            }
        }
        if let Some(text) = f.q.as_deref().filter(|t| !t.is_empty()) {
            let pat = format!("%{}%", text.replace(['%', '_'], ""));
            s.push(" AND (id LIKE ");
            s.bind(pat.clone());
            match &self.keyring {
                // Dedup keys, header values and errors are sealed or hashed: the dedup key
                // matches exactly (by its blind index), the sealed columns not at all.
                Some(k) => {
                    for col in ["trace_id", "source"] {
                        s.push(&format!(" OR {col} LIKE "));
                        s.bind(pat.clone());
                    }
                    s.push(" OR dedup_key = ");
                    s.bind(k.dedup_index(text));
                }
                None => {
                    for col in ["dedup_key", "trace_id", "source", "headers", "last_error"] {
                        s.push(&format!(" OR {col} LIKE "));
                        s.bind(pat.clone());
                    }
                }
            }
            s.push(")");
        }
        s.push(" ORDER BY id DESC LIMIT ");
        s.bind(limit);
        s
    }

    /// [`Store::list`] with a content filter: reads the candidates in batches, opened, until
    /// `limit` match or [`search::SCAN_LIMIT`] were read.
    async fn scan(&self, f: &ListFilter, c: &ContentFilter, limit: i64) -> Result<Page> {
        let mut messages = Vec::new();
        let mut cursor = f.cursor.clone();
        let mut scanned: u64 = 0;
        loop {
            let s = self.list_sql(f, cursor.as_deref(), search::SCAN_BATCH, true);
            let rows = s
                .query()
                .fetch_all(&self.read)
                .await
                .map_err(q("search messages"))?;
            let batch = rows.len() as i64;
            for r in &rows {
                let mut m = message_from_row(r, true)?;
                self.open_message_or_mark(&mut m, true);
                scanned += 1;
                cursor = Some(m.id.clone());
                if c.matches(&m) {
                    m.body = Vec::new();
                    messages.push(m);
                    if messages.len() as i64 >= limit {
                        // More may match after this one: continue from it.
                        return Ok(Page {
                            messages,
                            next_cursor: cursor,
                            scanned: Some(scanned),
                        });
                    }
                }
            }
            if batch < search::SCAN_BATCH {
                return Ok(Page {
                    messages,
                    next_cursor: None,
                    scanned: Some(scanned),
                });
            }
            if scanned >= search::SCAN_LIMIT {
                return Ok(Page {
                    messages,
                    next_cursor: cursor,
                    scanned: Some(scanned),
                });
            }
        }
    }

    /// Counts messages per (pipeline, state).
    pub async fn counts(&self) -> Result<Vec<(String, State, i64)>> {
        let rows = sqlx::query(
            "SELECT pipeline, state, COUNT(*) AS n FROM messages GROUP BY pipeline, state",
        )
        .fetch_all(&self.read)
        .await
        .map_err(q("count messages"))?;
        let mut out = Vec::new();
        for r in rows {
            let p: String = r.try_get("pipeline").map_err(q("decode counts"))?;
            let st: String = r.try_get("state").map_err(q("decode counts"))?;
            let n: i64 = r.try_get("n").map_err(q("decode counts"))?;
            if let Some(st) = State::parse(&st) {
                out.push((p, st, n));
            }
        }
        Ok(out)
    }

    /// Startup recovery: messages left `received` or `processing` by a previous run (a crash or
    /// a shutdown with work in flight) are made due now, so the scheduler hands them to their
    /// pipelines again. Their effects are idempotent by message id.
    pub async fn recover_in_flight(&self) -> Result<u64> {
        let now = now_ms();
        let mut s = Sql::new("UPDATE messages SET state = 'received', next_attempt_at = ".into());
        s.bind(0_i64);
        s.push(", updated_at = ");
        s.bind(now);
        s.push(" WHERE state IN ('received', 'processing') AND state <> 'done' AND next_attempt_at IS NULL");
        let r = s
            .query()
            .execute(&self.write)
            .await
            .map_err(q("recover in-flight messages"))?;
        Ok(r.rows_affected())
    }

    /// [`Store::recover_in_flight`] for one pipeline, after a reload stopped its old version's
    /// workers: what they left `received` (queued in memory) or `processing` becomes due, for
    /// the new version's feeder. Returns how many.
    pub async fn recover_pipeline(&self, pipeline: &str) -> Result<u64> {
        let now = now_ms();
        let mut s = Sql::new("UPDATE messages SET state = 'received', next_attempt_at = ".into());
        s.bind(0_i64);
        s.push(", updated_at = ");
        s.bind(now);
        s.push(" WHERE pipeline = ");
        s.bind(pipeline);
        s.push(" AND state IN ('received', 'processing') AND next_attempt_at IS NULL");
        let r = s
            .query()
            .execute(&self.write)
            .await
            .map_err(q("recover a reloaded pipeline's messages"))?;
        Ok(r.rows_affected())
    }

    /// Makes one message due that was journaled for a pipeline version a reload retired while
    /// it was being accepted (it never reached a worker). Whether it was still waiting.
    pub async fn make_due(&self, id: &str) -> Result<bool> {
        let mut s = Sql::new("UPDATE messages SET next_attempt_at = ".into());
        s.bind(0_i64);
        s.push(", updated_at = ");
        s.bind(now_ms());
        s.push(" WHERE id = ");
        s.bind(id);
        s.push(" AND state = 'received' AND next_attempt_at IS NULL");
        let r = s
            .query()
            .execute(&self.write)
            .await
            .map_err(q("make a message due"))?;
        Ok(r.rows_affected() > 0)
    }

    /// Forgets dedup keys older than `window_ms` for a pipeline, so a sender may reuse them.
    pub async fn expire_dedup_keys(&self, pipeline: &str, window_ms: i64) -> Result<u64> {
        let mut s = Sql::new(
            "UPDATE messages SET dedup_key = NULL, dedup_key_sealed = NULL WHERE pipeline = "
                .into(),
        );
        s.bind(pipeline);
        s.push(" AND dedup_key IS NOT NULL AND received_at < ");
        s.bind(now_ms() - window_ms);
        let r = s
            .query()
            .execute(&self.write)
            .await
            .map_err(q("expire dedup keys"))?;
        Ok(r.rows_affected())
    }

    /// Effects recorded by `journal` sinks, for tests and the CLI.
    pub async fn effects(&self, pipeline: Option<&str>) -> Result<Vec<EffectRow>> {
        let mut s = Sql::new(format!("SELECT {EFFECT_COLUMNS} FROM effects WHERE 1=1"));
        if let Some(p) = pipeline {
            s.push(" AND pipeline = ");
            s.bind(p);
        }
        s.push(" ORDER BY recorded_at, message_id");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("list effects"))?;
        rows.iter().map(|r| self.effect_from_row(r)).collect()
    }

    /// The effects of one message (at most [`MAX_EFFECTS_PER_MESSAGE`]), by the primary key:
    /// only its own rows are read and decrypted.
    pub async fn effects_of(&self, message_id: &str) -> Result<Vec<EffectRow>> {
        let mut s = Sql::new(format!(
            "SELECT {EFFECT_COLUMNS} FROM effects WHERE message_id = "
        ));
        s.bind(message_id);
        s.push(" ORDER BY sink LIMIT ");
        s.bind(MAX_EFFECTS_PER_MESSAGE);
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("list effects of a message"))?;
        rows.iter().map(|r| self.effect_from_row(r)).collect()
    }

    fn effect_from_row(&self, r: &AnyRow) -> Result<EffectRow> {
        let d = || q("decode effect");
        let message_id: String = r.try_get("message_id").map_err(d())?;
        let sink: String = r.try_get("sink").map_err(d())?;
        // A reference (journal v2): the message's own body, sealed as the message's.
        let by_ref: i64 = r.try_get("by_ref").map_err(d())?;
        let field = if by_ref == 1 {
            "body".to_owned()
        } else {
            format!("effect/{sink}")
        };
        let body = self.open_bytes(&message_id, &field, r.try_get("body").map_err(d())?)?;
        Ok(EffectRow {
            pipeline: r.try_get("pipeline").map_err(d())?,
            recorded_at: r.try_get("recorded_at").map_err(d())?,
            message_id,
            sink,
            body,
        })
    }
}

pub(crate) fn message_from_row(r: &AnyRow, with_body: bool) -> Result<Message> {
    let d = q("decode message");
    let headers: String = r.try_get("headers").map_err(q("decode message"))?;
    let headers: BTreeMap<String, String> = serde_json::from_str(&headers).unwrap_or_default();
    let state: String = r.try_get("state").map_err(q("decode message"))?;
    Ok(Message {
        id: r.try_get("id").map_err(q("decode message"))?,
        facility: r.try_get("facility").map_err(q("decode message"))?,
        pipeline: r.try_get("pipeline").map_err(q("decode message"))?,
        kind: r.try_get("kind").map_err(q("decode message"))?,
        body: if with_body {
            r.try_get("body").map_err(q("decode message"))?
        } else {
            Vec::new()
        },
        headers,
        source: r.try_get("source").map_err(q("decode message"))?,
        received_at: r.try_get("received_at").map_err(q("decode message"))?,
        trace_id: r.try_get("trace_id").map_err(q("decode message"))?,
        // The sealed key when there is one (opened by `Store::open_message`), else the column.
        dedup_key: match r
            .try_get::<Option<String>, _>("dedup_key_sealed")
            .map_err(q("decode message"))?
        {
            Some(sealed) => Some(sealed),
            None => r.try_get("dedup_key").map_err(q("decode message"))?,
        },
        parent_id: r.try_get("parent_id").map_err(q("decode message"))?,
        state: State::parse(&state).unwrap_or(State::Failed),
        attempts: r.try_get("attempts").map_err(q("decode message"))?,
        next_attempt_at: r.try_get("next_attempt_at").map_err(q("decode message"))?,
        last_error: r.try_get("last_error").map_err(d)?,
        updated_at: r.try_get("updated_at").map_err(q("decode message"))?,
    })
}

/// Hides the secrets of a database or broker URL for error messages and logs: the password of
/// the user part, and the value of every query parameter whose name speaks of a secret
/// (`password`, `sslpassword`, `pass`, `pwd`, `secret`, `token`, `key`, …).
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((creds, host)) => match creds.split_once(':') {
                Some((user, _pw)) => format!("{scheme}://{user}:***@{host}"),
                None => base.to_owned(),
            },
            None => base.to_owned(),
        },
        None => base.to_owned(),
    };
    if let Some(query) = query {
        let secret = |name: &str| {
            let n = name.to_ascii_lowercase();
            ["pass", "pwd", "secret", "token", "key", "auth"]
                .iter()
                .any(|w| n.contains(w))
        };
        let parts: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if secret(k) => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&parts.join("&"));
    }
    out
}

fn sqlite_url_with_create(url: &str) -> String {
    if url.contains("mode=") || url.contains(":memory:") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// The file of a `sqlite://` URL (`None` for other stores and for `:memory:`).
pub fn sqlite_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    std::path::PathBuf::from_str(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("sqlite://data/x.db"), "sqlite://data/x.db");
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=s3cret&sslmode=require"),
            "postgres://h/db?user=u&password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://u:p@h/db?sslpassword=x&application_name=hz"),
            "postgres://u:***@h/db?sslpassword=***&application_name=hz"
        );
        assert_eq!(
            redact_url("amqps://guest:pw@mq:5671/%2f?auth_token=abc"),
            "amqps://guest:***@mq:5671/%2f?auth_token=***"
        );
        // A password holding '@' does not leave its tail behind.
        assert_eq!(
            redact_url("postgres://u:p@ss@h/db"),
            "postgres://u:***@h/db"
        );
    }

    #[test]
    fn sqlite_paths() {
        assert_eq!(
            sqlite_path("sqlite://data/huizhen.db?mode=rwc"),
            Some("data/huizhen.db".into())
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(
            sqlite_url_with_create("sqlite://a.db"),
            "sqlite://a.db?mode=rwc"
        );
    }
}
