//! `huizhen`: the command-line entry point of the engine.
// The CLI's job is to print to the terminal.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use huizhen_core::config::{self, RootConfig};
use huizhen_core::message::State;
use huizhen_core::store::{ListFilter, Store, StoreOptions};
use huizhen_core::{Engine, http};
// Adapters: each is named once so the linker keeps its sources, steps and sinks.
use huizhen_amqp as _;
use huizhen_dicom as _;
// The FHIR adapter's registrations: `fhir_poll`, `fhir`, `hl7v2_to_fhir`, the `fhir_store` sink
// and the /fhir/r4 facade routes.
use huizhen_fhir as _;
// The `file`, `http` and `sql` sinks.
use huizhen_file as _;
use huizhen_hl7 as _;
use huizhen_http as _;
use huizhen_insurer as _;
use huizhen_media as _;
use huizhen_mqtt as _;
use huizhen_sql as _;

mod billing;
mod devices;
mod dicom;
mod experts;
mod export;
mod hl7;
mod opinion;
mod patients;
mod plugin;
mod security;

/// Huizhen (会诊): an integration engine for remote-consultation networks.
#[derive(Debug, Parser)]
#[command(name = "huizhen", version, about, long_about = None)]
struct Cli {
    /// The root config file (default: ./huizhen.yaml if present, else built-in defaults:
    /// SQLite under data/, HTTP on 127.0.0.1:8080, pipelines from pipelines/*.yaml).
    #[arg(short, long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Overrides the store URL of the config (sqlite://… or postgres://…).
    #[arg(long, global = true, env = "HUIZHEN_DATABASE_URL", value_name = "URL")]
    database_url: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start every pipeline and the HTTP server; Ctrl-C or SIGTERM stops gracefully.
    Run(RunArgs),
    /// Check config and pipeline files and print every error with file:line:column.
    Validate(ValidateArgs),
    /// Browse and reprocess journaled messages.
    #[command(subcommand)]
    Messages(MessagesCommand),
    /// What waits in the journal: unfinished messages per pipeline and the oldest one's age.
    Backlog,
    /// Create or upgrade the journal's tables (also done by `run`).
    Migrate,
    /// HL7 v2 tools: send messages over MLLP, receive them as a HIS would, print a message's
    /// fields.
    #[command(subcommand)]
    Hl7(hl7::Hl7Command),
    /// DICOM tools: C-ECHO, C-STORE files, C-FIND, C-GET, C-MOVE (an SCU for checks, tests and
    /// pulling priors from a PACS).
    #[command(subcommand)]
    Dicom(dicom::DicomCommand),
    /// Issue JWTs for the API (signed with the engine's secret).
    #[command(subcommand)]
    Token(security::TokenCommand),
    /// API keys for systems that send messages.
    #[command(subcommand)]
    Apikey(security::ApikeyCommand),
    /// Verify, list and export the audit trail.
    #[command(subcommand)]
    Audit(security::AuditCommand),
    /// Data keys of the encryption at rest.
    #[command(subcommand)]
    Keys(security::KeysCommand),
    /// Export journaled messages de-identified (for test environments), one JSON per line.
    Export(export::ExportArgs),
    /// WASM plugins: scaffold, build, sign, verify and test them.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// The patient identity index: import FHIR Patients, print links and candidate pairs.
    #[command(subcommand)]
    Patients(patients::PatientsCommand),
    /// Device → patient bindings (which patient a device measures for, and when).
    #[command(subcommand)]
    Devices(devices::DevicesCommand),
    /// The expert registry: import from YAML or CSV (upsert by id), list.
    #[command(subcommand)]
    Experts(experts::ExpertsCommand),
    /// Signed opinions for the demo: a test CA (never for production), signing an opinion.
    #[command(subcommand)]
    Opinion(opinion::OpinionCommand),
    /// Billing for the demo: the stand-in insurance and e-invoice platforms (never for
    /// production).
    #[command(subcommand)]
    Billing(billing::BillingCommand),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Overrides http.bind, e.g. 127.0.0.1:9090.
    #[arg(long, value_name = "ADDR")]
    bind: Option<String>,
    /// Overrides `queue`: `local`, or a broker shared by several engine processes
    /// (amqp://user:pass@host:5672/vhost) with the store on PostgreSQL.
    #[arg(long, env = "HUIZHEN_QUEUE", value_name = "URL")]
    queue: Option<String>,
    /// Overrides `cluster.node`: this process's name among the engine processes.
    #[arg(long, env = "HUIZHEN_NODE", value_name = "NAME")]
    node: Option<String>,
}

#[derive(Debug, Args)]
struct ValidateArgs {
    /// Files or folders to check (default: the root config and the pipelines it names).
    paths: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum MessagesCommand {
    /// List messages, newest first.
    List(ListArgs),
    /// Show one message with its body, attempt errors and effects.
    Show { id: String },
    /// Process a failed, dead or done message again (or all of a pipeline in one state).
    Reprocess(ReprocessArgs),
}

#[derive(Debug, Args)]
struct ListArgs {
    #[arg(long)]
    pipeline: Option<String>,
    /// received, processing, done, failed or dead.
    #[arg(long)]
    state: Option<String>,
    /// Text to find in the id, dedup key, trace id, source, headers or last error.
    #[arg(long)]
    q: Option<String>,
    #[arg(long, default_value_t = 50)]
    limit: i64,
    /// Continue from a previous page's next cursor.
    #[arg(long)]
    cursor: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["id", "state"])))]
struct ReprocessArgs {
    /// The message id.
    id: Option<String>,
    /// Reprocess every message in this state (failed, dead or done) …
    #[arg(long, requires = "pipeline")]
    state: Option<String>,
    /// … of this pipeline.
    #[arg(long)]
    pipeline: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Validate(args) => Ok(validate(cli.config.as_deref(), &args.paths)),
        Command::Run(args) => run(cli.config.as_deref(), cli.database_url, args).await,
        Command::Migrate => {
            let store = open_store(cli.config.as_deref(), cli.database_url).await?;
            store.migrate().await?;
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Hl7(cmd) => hl7::run(cmd).await,
        Command::Opinion(cmd) => opinion::run(cmd),
        Command::Dicom(cmd) => dicom::run(cmd).await,
        Command::Billing(cmd) => billing::run(cmd).await,
        Command::Token(cmd) => {
            let root = root_config(cli.config.as_deref(), cli.database_url.clone())?;
            let store = open_store(cli.config.as_deref(), cli.database_url).await?;
            store.migrate().await?;
            security::token(&root, &store, cmd).await
        }
        Command::Apikey(cmd) => {
            let store = open_store(cli.config.as_deref(), cli.database_url).await?;
            store.migrate().await?;
            security::apikey(&store, cmd).await
        }
        Command::Keys(security::KeysCommand::Rotate { batch, reencrypt }) => {
            let root = root_config(cli.config.as_deref(), cli.database_url.clone())?;
            let (config, url) = (cli.config.clone(), cli.database_url.clone());
            security::rotate(
                &root,
                async move || {
                    let s = open_store(config.as_deref(), url).await?;
                    s.migrate().await?;
                    Ok(s)
                },
                batch,
                reencrypt,
            )
            .await
        }
        Command::Plugin(cmd) => {
            let root = root_config(cli.config.as_deref(), cli.database_url)?;
            plugin::run(cmd, &root.plugins)
        }
        Command::Export(args) => {
            let store = open_store(cli.config.as_deref(), cli.database_url).await?;
            store.migrate().await?;
            export::export(&store, args).await
        }
        Command::Audit(cmd) => {
            // Verifying reads the audit key if there is one; it never creates one.
            let writes = !matches!(cmd, security::AuditCommand::Verify(_));
            let store = open_store_with(cli.config.as_deref(), cli.database_url, writes).await?;
            store.migrate().await?;
            security::audit(&store, cmd).await
        }
        Command::Messages(cmd) => {
            let store = open_store(cli.config.as_deref(), cli.database_url).await?;
            store.migrate().await?;
            messages(&store, cmd).await
        }
        Command::Patients(cmd) => {
            let store = open_store(cli.config.as_deref(), cli.database_url).await?;
            store.migrate().await?;
            patients::run(&store, cmd).await
        }
        Command::Devices(cmd) => {
            let store = open_store(cli.config.as_deref(), cli.database_url).await?;
            store.migrate().await?;
            devices::run(&store, cmd).await
        }
        Command::Experts(cmd) => {
            let store = open_store(cli.config.as_deref(), cli.database_url).await?;
            store.migrate().await?;
            experts::run(&store, cmd).await
        }
        Command::Backlog => {
            let store = open_store(cli.config.as_deref(), cli.database_url).await?;
            store.migrate().await?;
            backlog(&store).await
        }
    }
}

fn validate(config: Option<&Path>, paths: &[PathBuf]) -> ExitCode {
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let result = if paths.is_empty() {
        config::load(config).map(|l| plural(l.pipelines.len(), "pipeline"))
    } else {
        config::validate_paths(paths).map(|n| plural(n, "file"))
    };
    match result {
        Ok(what) => {
            println!("ok: {what} checked, no errors");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

fn root_config(config: Option<&Path>, database_url: Option<String>) -> Result<RootConfig> {
    let (mut root, _) = config::load_root(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(url) = database_url {
        root.store.url = url;
    }
    Ok(root)
}

async fn open_store(config: Option<&Path>, database_url: Option<String>) -> Result<Store> {
    open_store_with(config, database_url, true).await
}

/// Opens the store with the data keys and the audit key (created if missing when `create_key`:
/// the CLI's own audit events are signed with it like the engine's).
async fn open_store_with(
    config: Option<&Path>,
    database_url: Option<String>,
    create_key: bool,
) -> Result<Store> {
    let root = root_config(config, database_url)?;
    let anchor =
        huizhen_core::store::anchor::AuditAnchor::open(&root.security.audit, "cli", create_key)
            .map_err(|e| anyhow::anyhow!("security: {e}"))?;
    let keyring = huizhen_core::crypto::Keyring::from_config(&root.security.encryption)
        .map_err(|e| anyhow::anyhow!("security.encryption: {e}"))?;
    Ok(Store::open(&StoreOptions {
        url: root.store.url,
        durability: root.store.durability,
        max_connections: 4,
        sqlite_cache: root.store.sqlite_cache,
    })
    .await?
    .with_keyring(keyring)
    .with_audit_anchor(Some(std::sync::Arc::new(anchor))))
}

async fn run(
    config: Option<&Path>,
    database_url: Option<String>,
    args: RunArgs,
) -> Result<ExitCode> {
    let mut loaded = match config::load(config) {
        Ok(l) => l,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if let Some(url) = database_url {
        loaded.root.store.url = url;
    }
    if let Some(bind) = args.bind {
        loaded.root.http.bind = bind;
    }
    if let Some(queue) = args.queue {
        loaded.root.queue = queue;
    }
    if let Some(node) = args.node {
        loaded.root.cluster.node = Some(node);
    }
    // Keys others may read stop the start; keys beside the database are warned about.
    match huizhen_core::security::check_layout(&loaded.root, loaded.root_file.is_none()) {
        Ok(warnings) => {
            for w in warnings {
                tracing::warn!("{w}");
            }
        }
        Err(e) => bail!("{e}"),
    }
    let http_cfg = loaded.root.http.clone();
    let security_cfg = loaded.root.security.clone();
    let config_files: Vec<PathBuf> = loaded
        .root_file
        .iter()
        .cloned()
        .chain(loaded.pipelines.iter().map(|p| p.file.clone()))
        .collect();
    let listener = tokio::net::TcpListener::bind(&http_cfg.bind)
        .await
        .with_context(|| format!("cannot listen on {} (http.bind)", http_cfg.bind))?;
    let engine = Engine::start(loaded).await?;
    let security = huizhen_core::security::Security::new(&security_cfg, engine.store.clone())
        .map_err(|e| anyhow::anyhow!("security: {e}"))?;
    // The configuration this engine runs with, on the audit trail (files and their SHA-256).
    let files: Vec<String> = config_files
        .iter()
        .map(|f| {
            let digest = std::fs::read(f)
                .map(|b| security::sha256_hex(&b))
                .unwrap_or_else(|e| format!("unreadable: {e}"));
            format!("{} {digest}", f.display())
        })
        .collect();
    engine
        .store
        .audit(&security::cli_event(
            "config.load",
            "Configuration",
            "",
            files.join("; "),
        ))
        .await?;
    let app = http::router(engine.app_state(), &http_cfg, std::sync::Arc::new(security));
    let addr = listener.local_addr()?;
    let token = engine.shutdown_token();
    let acceptor = match &http_cfg.tls {
        None => None,
        Some(tls) => {
            Some(huizhen_core::tls::acceptor(tls).map_err(|e| anyhow::anyhow!("http.tls: {e}"))?)
        }
    };
    tracing::info!(%addr, tls = acceptor.is_some(), max_connections = http_cfg.max_connections, "HTTP server listening");
    let server =
        tokio::spawn(async move { http::serve(listener, app, &http_cfg, acceptor, token).await });
    shutdown_signal().await;
    tracing::info!("shutting down: sources stop, in-flight messages finish or stay journaled");
    engine.shutdown(Duration::from_secs(30)).await;
    match tokio::time::timeout(Duration::from_secs(10), server).await {
        Ok(Ok(Ok(_))) => {}
        Ok(Ok(Err(e))) => bail!("HTTP server: {e}"),
        Ok(Err(e)) => bail!("HTTP server task: {e}"),
        Err(_) => tracing::warn!("HTTP server did not stop within 10s"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `huizhen backlog`: unfinished messages (received, processing, failed awaiting a retry) per
/// pipeline, from the journal (every node's, with a shared store), and the oldest one's age.
async fn backlog(store: &Store) -> Result<ExitCode> {
    let rows = store.backlog().await?;
    let now = huizhen_core::message::now_ms();
    println!("{:<32} {:>12} {:>14}", "PIPELINE", "MESSAGES", "OLDEST");
    for r in &rows {
        let age = r
            .oldest_received_at
            .map(|t| {
                humantime::format_duration(Duration::from_secs(((now - t).max(0) / 1000) as u64))
                    .to_string()
            })
            .unwrap_or_else(|| "-".into());
        println!("{:<32} {:>12} {:>14}", r.pipeline, r.messages, age);
    }
    if rows.is_empty() {
        println!("(nothing waits)");
    }
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn parse_state(s: &str) -> Result<State> {
    State::parse(s).with_context(|| {
        format!("unknown state {s:?}: expected received, processing, done, failed or dead")
    })
}

async fn messages(store: &Store, cmd: MessagesCommand) -> Result<ExitCode> {
    match cmd {
        MessagesCommand::List(a) => {
            let state = a.state.as_deref().map(parse_state).transpose()?;
            let page = store
                .list(&ListFilter {
                    pipeline: a.pipeline,
                    state,
                    q: a.q,
                    limit: Some(a.limit),
                    cursor: a.cursor,
                    facilities: None,
                })
                .await?;
            let ids: Vec<&str> = page.messages.iter().map(|m| m.id.as_str()).collect();
            store
                .audit(&security::cli_event(
                    "message.list",
                    "Message",
                    "",
                    format!("{} messages: {}", ids.len(), ids.join(",")),
                ))
                .await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&page)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<36}  {:<16}  {:<10}  {:>3}  {:<24}  LAST ERROR",
                "ID", "PIPELINE", "STATE", "TRY", "RECEIVED"
            );
            for m in &page.messages {
                let at = chrono_like(m.received_at);
                let err = m.last_error.as_deref().unwrap_or("");
                let err: String = err.chars().take(60).collect();
                println!(
                    "{:<36}  {:<16}  {:<10}  {:>3}  {:<24}  {}",
                    m.id, m.pipeline, m.state, m.attempts, at, err
                );
            }
            if let Some(c) = page.next_cursor {
                println!("more: --cursor {c}");
            }
            Ok(ExitCode::SUCCESS)
        }
        MessagesCommand::Show { id } => {
            let v = http::message_detail(store, &id).await?;
            store
                .audit(
                    &security::cli_event("message.read", "Message", &id, String::new())
                        .about(v["facility"].as_str().unwrap_or_default()),
                )
                .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(ExitCode::SUCCESS)
        }
        MessagesCommand::Reprocess(a) => {
            if let Some(id) = a.id {
                let event = security::cli_event("message.reprocess", "Message", &id, String::new());
                let m = store.reprocess_audited(&id, Some(&event)).await?;
                println!(
                    "{} ({}) will be processed again by a running engine",
                    m.id, m.pipeline
                );
            } else if let (Some(state), Some(pipeline)) = (a.state, a.pipeline) {
                let event =
                    security::cli_event("message.reprocess", "Pipeline", &pipeline, String::new());
                let n = store
                    .reprocess_all_audited(&pipeline, parse_state(&state)?, Some(&event))
                    .await?;
                println!(
                    "{n} {state} message(s) of {pipeline} will be processed again by a running engine"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Milliseconds since the epoch as an RFC 3339 UTC time, without another dependency.
fn chrono_like(ms: i64) -> String {
    huizhen_core::message::format_ms(ms)
}
