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
use huizhen_core::store::{ListFilter, ReprocessRequest, Store, StoreError, StoreOptions};
use huizhen_core::{Engine, http};
// Adapters: each is named once so the linker keeps its sources, steps and sinks.
use huizhen_amqp as _;
use huizhen_console as _;
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

/// `println!` for the CLI: like std's, but a closed stdout (`huizhen messages show ID | head
/// -1`) ends the process quietly with status 0 instead of a panic (see [`write_stdout`]).
/// Defined before the modules, so it is the one they use.
macro_rules! println {
    () => {
        $crate::write_stdout(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!($($arg)*), true)
    };
}

/// `print!` for the CLI, as [`println!`].
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!($($arg)*), false)
    };
}

mod api;
mod billing;
mod devices;
mod dicom;
mod experts;
mod export;
mod hl7;
mod opinion;
mod patients;
mod plugin;
mod progress;
mod reload;
mod replay;
mod security;
mod tap;
mod times;
mod users;

/// Huizhen (会诊): an integration engine for remote-consultation networks.
///
/// Commands that use the store (the journal and the engine's tables) find it in the root
/// config (`-c`, default ./huizhen.yaml) or `--database-url`; without either, in ./data,
/// which `huizhen run` or `huizhen init` creates. They refuse to create one elsewhere.
#[derive(Debug, Parser)]
#[command(name = "huizhen", version)]
struct Cli {
    /// The root config file, for the commands that read one (run, validate, plugin and those
    /// that use the store); may also follow the command name.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Overrides the store URL of the config (sqlite://… or postgres://…), for the commands
    /// that use the store; may also follow the command name.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,

    /// How the log lines on stderr look: `text` (human-readable; coloured only when stderr is a
    /// terminal) or `json` (one JSON object per line, for journald, Loki, Elasticsearch, …).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "HUIZHEN_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

/// See [`Cli::log_format`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// The log on stderr: `RUST_LOG` or `default_filter`; text with colours only on a terminal (no
/// escape codes in files, pipes or journald), or JSON lines. Log events carry ids, names and
/// reasons, never message bodies or patient data (see docs/security.md).
fn init_logging(format: LogFormat, default_filter: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

/// Where the store is, for the commands that use one.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct StoreArgs {
    /// The root config file (default: ./huizhen.yaml if present, else built-in defaults:
    /// SQLite under data/, HTTP on 127.0.0.1:8080, pipelines from pipelines/*.yaml).
    #[arg(short, long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Overrides the store URL of the config (sqlite://… or postgres://…).
    #[arg(long, global = true, env = "HUIZHEN_DATABASE_URL", value_name = "URL")]
    database_url: Option<String>,
}

/// The root config file, for the commands that read one but use no store.
#[derive(Debug, Clone, Default, Args)]
struct ConfigArgs {
    /// The root config file (default: ./huizhen.yaml if present, else built-in defaults).
    #[arg(short, long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// A command group that uses the store.
#[derive(Debug, Args)]
struct WithStore<C: Subcommand> {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    cmd: C,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start every pipeline and the HTTP server (creating the store on first start); Ctrl-C or
    /// SIGTERM stops gracefully, SIGHUP reloads the pipeline files.
    Run(RunArgs),
    /// Reload the pipeline files of a running engine: every file is checked first, only changed
    /// pipelines restart (the others keep their connections), a refused file leaves its
    /// pipelines running as they were (exit 1 with the reasons).
    Reload(reload::ReloadArgs),
    /// Watch the live messages of a running engine's pipeline as they pass a step or reach a
    /// sink (`PIPELINE` or `PIPELINE.POINT`), redacted unless `--phi`; the engine audits it.
    Tap(tap::TapArgs),
    /// Re-run a pipeline's stored messages through the pipelines as they are and through a
    /// changed pipeline file, root config (`--config NEW`) or plugin folder, each in an
    /// isolated engine (sinks not called), and report what would change (exit 1 if anything).
    Replay(replay::ReplayArgs),
    /// Create the store here (./data: the journal database, its tables, the keys) without
    /// starting the engine.
    Init(StoreArgs),
    /// Check config and pipeline files and print every error with file:line:column.
    Validate(ValidateArgs),
    /// Run the pipelines' test files (`pipelines/NAME.test.yaml`): each input through its
    /// pipeline in an engine of its own (a temporary store, a fixed clock, sinks not called);
    /// exit 1 with a diff when a case fails, 2 when a test file cannot run.
    Test(TestArgs),
    /// Browse and reprocess journaled messages.
    Messages(WithStore<MessagesCommand>),
    /// What waits in the journal: unfinished messages per pipeline and the oldest one's age.
    Backlog(BacklogArgs),
    /// Create or upgrade the journal's tables (also done by `run`).
    Migrate(StoreArgs),
    /// HL7 v2 tools: send messages over MLLP, receive them as a HIS would, print a message's
    /// fields.
    #[command(subcommand)]
    Hl7(hl7::Hl7Command),
    /// DICOM tools: C-ECHO, C-STORE files, C-FIND, C-GET, C-MOVE (an SCU for checks, tests and
    /// pulling priors from a PACS).
    #[command(subcommand)]
    Dicom(dicom::DicomCommand),
    /// Issue JWTs for the API (signed with the engine's secret).
    Token(WithStore<security::TokenCommand>),
    /// API keys for systems that send messages.
    Apikey(WithStore<security::ApikeyCommand>),
    /// The web console's local users: add, passwords, lock, second factor, roles.
    Users(WithStore<users::UsersCommand>),
    /// Verify, list and export the audit trail.
    Audit(WithStore<security::AuditCommand>),
    /// Data keys of the encryption at rest.
    Keys(WithStore<security::KeysCommand>),
    /// Export journaled messages de-identified (for test environments), one JSON per line.
    Export(export::ExportArgs),
    /// WASM plugins: scaffold, build, sign, verify and test them.
    Plugin(PluginArgs),
    /// The patient identity index: import FHIR Patients, print links and candidate pairs.
    Patients(WithStore<patients::PatientsCommand>),
    /// Device → patient bindings (which patient a device measures for, and when).
    Devices(WithStore<devices::DevicesCommand>),
    /// The expert registry: import from YAML or CSV (upsert by id), list.
    Experts(WithStore<experts::ExpertsCommand>),
    /// Signed opinions for the demo: a test CA (never for production), signing an opinion.
    #[command(subcommand)]
    Opinion(opinion::OpinionCommand),
    /// Billing for the demo: the stand-in insurance and e-invoice platforms (never for
    /// production).
    #[command(subcommand)]
    Billing(billing::BillingCommand),
    /// China compliance: the processing-activity record of this configuration (CN-41).
    Compliance(ComplianceArgs),
}

#[derive(Debug, Args)]
struct ComplianceArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    cmd: ComplianceCommand,
}

#[derive(Debug, Subcommand)]
enum ComplianceCommand {
    /// Print the processing-activity record (CN-41, PIPL): per pipeline, the data categories
    /// it reads, what its steps do, where it keeps them and where it sends them, with the
    /// engine's stores and safeguards. Generated from the checked configuration; no secret is
    /// printed.
    Record {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The retention purge (CN-30): deletes the records whose period is over (call
    /// recordings: 3 years at least, or `workflow.compliance.retention`), each with an audit
    /// event; never a record before its minimum. Run it from cron or a timer; `--dry-run`
    /// first shows what it would delete.
    Purge {
        /// Show what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

impl Command {
    /// The command's name, for messages.
    fn name(&self) -> &'static str {
        match self {
            Command::Run(_) => "run",
            Command::Reload(_) => "reload",
            Command::Tap(_) => "tap",
            Command::Replay(_) => "replay",
            Command::Init(_) => "init",
            Command::Validate(_) => "validate",
            Command::Test(_) => "test",
            Command::Messages(_) => "messages",
            Command::Backlog(_) => "backlog",
            Command::Migrate(_) => "migrate",
            Command::Hl7(_) => "hl7",
            Command::Dicom(_) => "dicom",
            Command::Token(_) => "token",
            Command::Apikey(_) => "apikey",
            Command::Users(_) => "users",
            Command::Audit(_) => "audit",
            Command::Keys(_) => "keys",
            Command::Export(_) => "export",
            Command::Plugin(_) => "plugin",
            Command::Patients(_) => "patients",
            Command::Devices(_) => "devices",
            Command::Experts(_) => "experts",
            Command::Opinion(_) => "opinion",
            Command::Billing(_) => "billing",
            Command::Compliance(_) => "compliance",
        }
    }
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    store: StoreArgs,
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
    #[command(flatten)]
    config: ConfigArgs,
    /// Files or folders to check (default: the root config and the pipelines it names).
    paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
struct TestArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Test files or folders (default: the `*.test.yaml` beside the pipelines the root config
    /// names).
    paths: Vec<PathBuf>,
    /// Print each case's trail (the steps and sinks its message passed), not only a failing
    /// case's.
    #[arg(short, long)]
    verbose: bool,
}

#[derive(Debug, Args)]
struct PluginArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(subcommand)]
    cmd: plugin::PluginCommand,
}

#[derive(Debug, Args)]
struct BacklogArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Print times as milliseconds since the Unix epoch instead of ISO 8601.
    #[arg(long)]
    epoch: bool,
}

#[derive(Debug, Subcommand)]
enum MessagesCommand {
    /// List messages, newest first.
    List(ListArgs),
    /// Show one message: its body (and its text in the charset used), how it came in, the
    /// errors of every attempt, every reprocess, its history and its effects (JSON).
    Show(ShowArgs),
    /// Process a failed, dead or done message again (or all of a pipeline in one state). A
    /// message refused at intake (the sender got AR/AE/CR) only with --include-refused.
    Reprocess(ReprocessArgs),
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Only this pipeline's messages.
    #[arg(long)]
    pipeline: Option<String>,
    /// received, processing, done, failed or dead.
    #[arg(long)]
    state: Option<String>,
    /// Text to find in the id, dedup key, trace id, source, headers or last error.
    #[arg(long)]
    q: Option<String>,
    /// Most messages to list (1 to 1000).
    #[arg(long, default_value_t = 50)]
    limit: i64,
    /// Continue from a previous page's next cursor.
    #[arg(long)]
    cursor: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Every column (facility, kind, source, updated) and the whole last error.
    #[arg(long)]
    wide: bool,
    /// Print times as milliseconds since the Unix epoch instead of ISO 8601.
    #[arg(long)]
    epoch: bool,
}

#[derive(Debug, Args)]
struct ShowArgs {
    /// The message id.
    id: String,
    /// Print times as milliseconds since the Unix epoch instead of ISO 8601.
    #[arg(long)]
    epoch: bool,
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
    /// Also messages refused at intake, whose sender was told they were not accepted (HL7
    /// AR/AE/CR): they run through the pipeline as if accepted. Audited.
    #[arg(long)]
    include_refused: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `huizhen test` prints its own report: the engines it starts log errors only.
    let default_filter = if matches!(cli.command, Command::Test(_)) {
        "error"
    } else {
        "info,sqlx=warn"
    };
    init_logging(cli.log_format, default_filter);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        // The reader of stdout went away (`| head`): nothing more to say.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes to stdout; a closed stdout (EPIPE: the reader exited) ends the process with status
/// 0, any other write error with status 1, never a panic as std's `println!` would.
fn write_stdout(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let r = out.write_fmt(args).and_then(|()| {
        if newline {
            out.write_all(b"\n")
        } else {
            Ok(())
        }
    });
    if let Err(e) = r {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// What a command's own store options and the ones before the command name say together (the
/// command's own win).
fn merged(top: &StoreArgs, own: &StoreArgs) -> StoreArgs {
    StoreArgs {
        config: own.config.clone().or_else(|| top.config.clone()),
        database_url: own
            .database_url
            .clone()
            .or_else(|| top.database_url.clone()),
    }
}

/// The root config a command finds in its folder.
const ROOT_FILE: &str = "huizhen.yaml";

/// Exit status 2: the command line asks for something that does not apply.
const USAGE: u8 = 2;

/// A command that uses the store needs to be told where it is, or to find one here: it never
/// creates a new database, keys and secret in whatever folder it was started in.
fn find_store(store: &StoreArgs, command: &str) -> Option<ExitCode> {
    if store.config.is_some() || store.database_url.is_some() {
        return None;
    }
    if Path::new(ROOT_FILE).exists() || Path::new("data").exists() {
        return None;
    }
    let here = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|_| ".".into());
    eprintln!(
        "error: `huizhen {command}` needs a store, and there is none here ({here}): neither ./{} nor ./data exists.\n\
         hint: run it in the folder of your installation, name the store with -c FILE or --database-url URL,\n\
         hint: or create one here with `huizhen init` (`huizhen run` creates it too).",
        ROOT_FILE
    );
    Some(ExitCode::from(USAGE))
}

async fn dispatch(cli: Cli) -> Result<ExitCode> {
    let name = cli.command.name();
    // Options before the command name that this command does not use are refused, not ignored.
    let uses_config = !matches!(
        cli.command,
        Command::Hl7(_) | Command::Dicom(_) | Command::Opinion(_) | Command::Billing(_)
    );
    let uses_store = uses_config
        && !matches!(
            cli.command,
            Command::Validate(_) | Command::Test(_) | Command::Plugin(_) | Command::Compliance(_)
        );
    if (cli.config.is_some() && !uses_config) || (cli.database_url.is_some() && !uses_store) {
        let what = if cli.database_url.is_some() && !uses_store {
            "--database-url"
        } else {
            "-c/--config"
        };
        eprintln!("error: {what} does not apply to `huizhen {name}`, which uses no store");
        return Ok(ExitCode::from(USAGE));
    }
    let top = StoreArgs {
        config: cli.config,
        database_url: cli.database_url,
    };
    let store_of = |own: &StoreArgs| merged(&top, own);
    // The migrated store of a command that uses one; exit 2 when there is none here.
    macro_rules! store {
        ($own:expr) => {{
            let s = store_of($own);
            if let Some(code) = find_store(&s, name) {
                return Ok(code);
            }
            migrated(&s).await?
        }};
    }
    match cli.command {
        Command::Validate(args) => {
            let config = args.config.config.or_else(|| top.config.clone());
            Ok(validate(config.as_deref(), &args.paths))
        }
        Command::Test(args) => {
            let config = args.config.config.clone().or_else(|| top.config.clone());
            Ok(pipeline_tests(config.as_deref(), &args).await)
        }
        Command::Run(args) => {
            let s = store_of(&args.store);
            run(s.config.as_deref(), s.database_url, &args).await
        }
        Command::Reload(args) => {
            let s = store_of(&args.api.store);
            let root = root_config(&s)?;
            reload::run(&root, &s, args).await
        }
        Command::Tap(args) => {
            let s = store_of(&args.api.store);
            let root = root_config(&s)?;
            tap::run(&root, &s, args).await
        }
        Command::Replay(args) => {
            // The installation: the root config before the command name (after it, `--config`
            // is the candidate).
            let s = store_of(&StoreArgs::default());
            if let Some(code) = find_store(&s, name) {
                return Ok(code);
            }
            replay::run(&s, args).await
        }
        Command::Init(own) => {
            let s = store_of(&own);
            init(&s).await
        }
        Command::Migrate(own) => {
            store!(&own);
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Hl7(cmd) => hl7::run(cmd).await,
        Command::Opinion(cmd) => opinion::run(cmd),
        Command::Dicom(cmd) => dicom::run(cmd).await,
        Command::Billing(cmd) => billing::run(cmd).await,
        Command::Compliance(args) => {
            let config = args.config.config.or_else(|| top.config.clone());
            match args.cmd {
                ComplianceCommand::Record { json } => compliance_record(config.as_deref(), json),
                ComplianceCommand::Purge { dry_run, json } => {
                    compliance_purge(config, dry_run, json).await
                }
            }
        }
        Command::Plugin(args) => {
            let config = args.config.config.or_else(|| top.config.clone());
            let root = root_config(&StoreArgs {
                config,
                database_url: None,
            })?;
            plugin::run(args.cmd, &root.plugins)
        }
        Command::Token(w) => {
            let s = store_of(&w.store);
            if let Some(code) = find_store(&s, name) {
                return Ok(code);
            }
            let root = root_config(&s)?;
            let store = migrated(&s).await?;
            security::token(&root, &store, w.cmd).await
        }
        Command::Apikey(w) => security::apikey(&store!(&w.store), w.cmd).await,
        Command::Users(w) => users::run(&store!(&w.store), w.cmd).await,
        Command::Keys(w) => {
            let s = store_of(&w.store);
            if let Some(code) = find_store(&s, name) {
                return Ok(code);
            }
            let security::KeysCommand::Rotate { batch, reencrypt } = w.cmd;
            let root = root_config(&s)?;
            security::rotate(&root, async move || migrated(&s).await, batch, reencrypt).await
        }
        Command::Export(args) => export::export(&store!(&args.store), args).await,
        Command::Audit(w) => {
            let s = store_of(&w.store);
            if let Some(code) = find_store(&s, name) {
                return Ok(code);
            }
            // Verifying reads the audit key if there is one; it never creates one.
            let writes = !matches!(w.cmd, security::AuditCommand::Verify(_));
            let store = open_store_with(&s, writes).await?;
            store.migrate().await?;
            security::audit(&store, w.cmd).await
        }
        Command::Messages(w) => messages(&store!(&w.store), w.cmd).await,
        Command::Patients(w) => patients::run(&store!(&w.store), w.cmd).await,
        Command::Devices(w) => devices::run(&store!(&w.store), w.cmd).await,
        Command::Experts(w) => experts::run(&store!(&w.store), w.cmd).await,
        Command::Backlog(args) => backlog(&store!(&args.store), args.epoch).await,
    }
}

/// `huizhen init`: the store as `run` would create it (the database with its tables, the
/// audit key, the JWT secret), without starting anything.
async fn init(s: &StoreArgs) -> Result<ExitCode> {
    let root = root_config(s)?;
    let store = migrated(s).await?;
    huizhen_core::security::Security::new(&root.security, store.clone())
        .map_err(|e| anyhow::anyhow!("security: {e}"))?;
    store
        .audit(&security::cli_event(
            "store.init",
            "Store",
            "",
            huizhen_core::store::redact_url(&root.store.url),
        ))
        .await?;
    println!(
        "store ready: {} (start the engine with `huizhen run`)",
        huizhen_core::store::redact_url(&root.store.url)
    );
    Ok(ExitCode::SUCCESS)
}

fn validate(config: Option<&Path>, paths: &[PathBuf]) -> ExitCode {
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let result = if paths.is_empty() {
        config::load(config).map(|l| plural(l.pipelines.len(), "pipeline"))
    } else {
        // The pipelines are checked under the root config they would run with.
        let root = config.map(Path::to_path_buf).or_else(|| {
            let here = Path::new("huizhen.yaml");
            here.exists().then(|| here.to_path_buf())
        });
        config::validate_paths_with_root(paths, root.as_deref()).map(|n| plural(n, "file"))
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

/// `huizhen test`: every test file, a line per case, a failing case's differences and trail.
async fn pipeline_tests(config: Option<&Path>, args: &TestArgs) -> ExitCode {
    let files = match huizhen_core::pipetest::discover(&args.paths, config) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(USAGE);
        }
    };
    if files.is_empty() {
        eprintln!(
            "error: no test files found{}: write pipelines/NAME.test.yaml beside the pipelines (see docs/pipelines.md, \"Testing pipelines\")",
            if args.paths.is_empty() {
                " beside the pipelines"
            } else {
                " in the paths given"
            }
        );
        return ExitCode::from(USAGE);
    }
    let (mut passed, mut failed, mut broken) = (0usize, 0usize, 0usize);
    for f in &files {
        let report = huizhen_core::pipetest::run(f, config).await;
        write_stdout(format_args!("{}", report.file.display()), true);
        for e in &report.errors {
            broken += 1;
            for line in e.lines() {
                write_stdout(format_args!("  {line}"), true);
            }
        }
        for c in &report.cases {
            if c.passed() {
                passed += 1;
                write_stdout(format_args!("  ok    {}", c.name), true);
            } else {
                failed += 1;
                write_stdout(
                    format_args!("  FAIL  {} ({}:{})", c.name, report.file.display(), c.line),
                    true,
                );
                for failure in &c.failures {
                    for (i, line) in failure.lines().enumerate() {
                        let lead = if i == 0 { "        " } else { "          " };
                        write_stdout(format_args!("{lead}{line}"), true);
                    }
                }
            }
            if !c.passed() || args.verbose {
                if c.trail.is_empty() {
                    write_stdout(format_args!("        trail: no step or sink passed"), true);
                } else {
                    write_stdout(format_args!("        trail:"), true);
                    for t in &c.trail {
                        write_stdout(format_args!("          {t}"), true);
                    }
                }
            }
        }
    }
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    write_stdout(
        format_args!(
            "\n{} passed, {} failed{} ({})",
            passed,
            failed,
            if broken > 0 {
                format!(", {}", plural(broken, "file error"))
            } else {
                String::new()
            },
            plural(files.len(), "test file")
        ),
        true,
    );
    if broken > 0 {
        ExitCode::from(USAGE)
    } else if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `huizhen compliance record`: the configuration is checked first (as `run` would load it);
/// the record reads each pipeline file as written.
fn compliance_record(config: Option<&Path>, json: bool) -> Result<ExitCode> {
    let loaded = match config::load(config) {
        Ok(l) => l,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!("the configuration has errors: no record (fix them, `huizhen validate`)");
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut files: Vec<std::path::PathBuf> =
        loaded.pipelines.iter().map(|p| p.file.clone()).collect();
    files.dedup();
    let texts = files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f)
                .with_context(|| format!("cannot read {}", f.display()))?;
            Ok((f, text))
        })
        .collect::<Result<Vec<_>>>()?;
    let record =
        huizhen_core::compliance::record(&loaded.root, loaded.root_file.as_deref(), &texts)
            .map_err(|e| anyhow::anyhow!(e))?;
    if json {
        write_stdout(
            format_args!("{}", serde_json::to_string_pretty(&record)?),
            true,
        );
    } else {
        write_stdout(format_args!("{}", record.to_text()), false);
    }
    Ok(ExitCode::SUCCESS)
}

/// `huizhen compliance purge`: the store of the configuration, the periods of
/// `workflow.compliance.retention`.
async fn compliance_purge(config: Option<PathBuf>, dry_run: bool, json: bool) -> Result<ExitCode> {
    let args = StoreArgs {
        config,
        database_url: None,
    };
    if let Some(code) = find_store(&args, "compliance purge") {
        return Ok(code);
    }
    let root = root_config(&args)?;
    let policy = huizhen_domain::compliance::CompliancePolicy::new(&root.workflow.compliance)
        .map_err(|e| anyhow::anyhow!("workflow.{e}"))?;
    let store = migrated(&args).await?;
    let who = security::cli_event("retention.purge", "Recording", "", String::new());
    let report = huizhen_core::compliance::purge(
        &store,
        policy.retention(),
        &root.objects.dir,
        chrono::Utc::now(),
        dry_run,
        &who,
    )
    .await?;
    if json {
        write_stdout(
            format_args!("{}", serde_json::to_string_pretty(&report)?),
            true,
        );
    } else {
        write_stdout(format_args!("{}", report.to_text()), false);
    }
    Ok(if report.files_left.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn root_config(s: &StoreArgs) -> Result<RootConfig> {
    let (mut root, _) =
        config::load_root(s.config.as_deref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(url) = &s.database_url {
        root.store.url.clone_from(url);
    }
    Ok(root)
}

async fn open_store(s: &StoreArgs) -> Result<Store> {
    open_store_with(s, true).await
}

/// [`open_store`], its migrations applied.
async fn migrated(s: &StoreArgs) -> Result<Store> {
    let store = open_store(s).await?;
    store.migrate().await?;
    Ok(store)
}

/// Opens the store with the data keys and the audit key (created if missing when `create_key`:
/// the CLI's own audit events are signed with it like the engine's).
async fn open_store_with(s: &StoreArgs, create_key: bool) -> Result<Store> {
    let root = root_config(s)?;
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
    args: &RunArgs,
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
    if let Some(bind) = &args.bind {
        loaded.root.http.bind.clone_from(bind);
    }
    if let Some(queue) = &args.queue {
        loaded.root.queue.clone_from(queue);
    }
    if let Some(node) = &args.node {
        loaded.root.cluster.node = Some(node.clone());
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
    let console_cfg = loaded.root.console.clone();
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
        .map_err(|e| anyhow::anyhow!("security: {e}"))?
        .with_console(&console_cfg);
    console_first_start(&engine.store, &console_cfg, &http_cfg).await?;
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
    // SIGHUP reloads the pipeline files (as `huizhen reload` does), audited as the signal.
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup()).context("cannot watch for SIGHUP")?;
        let reloader = engine.reloader();
        let stop = engine.shutdown_token();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    r = hup.recv() => if r.is_none() { return },
                }
                tracing::info!("SIGHUP: reloading the pipeline files");
                let mut who =
                    security::cli_event("pipeline.reload", "Pipelines", "", String::new());
                who.actor = "signal:SIGHUP".into();
                who.source = format!("signal to pid {}", std::process::id());
                // The outcome is logged by the reload; the audit error too.
                let _ = reloader.reload_audited(who).await;
            }
        });
    }
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

/// The console at start: the first administrator when there are no users, and where to log in.
async fn console_first_start(
    store: &Store,
    cfg: &huizhen_core::config::ConsoleConfig,
    http: &huizhen_core::config::HttpConfig,
) -> Result<()> {
    if !cfg.enabled {
        return Ok(());
    }
    let scheme = if http.tls.is_some() { "https" } else { "http" };
    match huizhen_console::admin::ensure_admin(store, cfg)
        .await
        .map_err(|e| anyhow::anyhow!("console: {e}"))?
    {
        huizhen_console::admin::FirstStart::Created(file) => {
            store
                .audit(&security::cli_event(
                    "user.create",
                    "User",
                    huizhen_console::admin::ADMIN,
                    format!(
                        "first start: admin, every facility; password in {}",
                        file.display()
                    ),
                ))
                .await?;
            tracing::info!(
                url = %format!("{scheme}://{}/ui", http.bind),
                "console: created the user `admin`; its password is in {} (change it in the console, or set one with `huizhen users passwd admin`)",
                file.display()
            );
        }
        huizhen_console::admin::FirstStart::Nothing => {
            tracing::info!(url = %format!("{scheme}://{}/ui", http.bind), "console");
        }
    }
    if cfg.second_factor == huizhen_core::config::SecondFactor::Optional {
        tracing::warn!(
            "console.second_factor is optional: CN-31 (等保 level 3) wants two factors; set console.second_factor: required"
        );
    }
    Ok(())
}

/// `huizhen backlog`: unfinished messages (received, processing, failed awaiting a retry) per
/// pipeline, from the journal (every node's, with a shared store), the oldest one's age and
/// when it came in.
async fn backlog(store: &Store, epoch: bool) -> Result<ExitCode> {
    let rows = store.backlog().await?;
    let now = huizhen_core::message::now_ms();
    println!(
        "{:<32} {:>12} {:>14}  OLDEST RECEIVED",
        "PIPELINE", "MESSAGES", "OLDEST"
    );
    for r in &rows {
        let age = r
            .oldest_received_at
            .map(|t| {
                humantime::format_duration(Duration::from_secs(((now - t).max(0) / 1000) as u64))
                    .to_string()
            })
            .unwrap_or_else(|| "-".into());
        let at = r
            .oldest_received_at
            .map_or_else(|| "-".into(), |t| times::cell(t, epoch));
        println!("{:<32} {:>12} {:>14}  {at}", r.pipeline, r.messages, age);
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
                    ..ListFilter::default()
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
                let mut v = serde_json::to_value(&page)?;
                times::json(&mut v, a.epoch);
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(ExitCode::SUCCESS);
            }
            let time_width = if a.epoch { 13 } else { 24 };
            if a.wide {
                println!(
                    "{:<36}  {:<16}  {:<12}  {:<8}  {:<10}  {:>3}  {:<tw$}  {:<tw$}  {:<28}  LAST ERROR",
                    "ID",
                    "PIPELINE",
                    "FACILITY",
                    "KIND",
                    "STATE",
                    "TRY",
                    "RECEIVED",
                    "UPDATED",
                    "SOURCE",
                    tw = time_width
                );
            } else {
                println!(
                    "{:<36}  {:<16}  {:<10}  {:>3}  {:<tw$}  LAST ERROR",
                    "ID",
                    "PIPELINE",
                    "STATE",
                    "TRY",
                    "RECEIVED",
                    tw = time_width
                );
            }
            for m in &page.messages {
                let at = times::cell(m.received_at, a.epoch);
                let err = m.last_error.as_deref().unwrap_or("");
                if a.wide {
                    println!(
                        "{:<36}  {:<16}  {:<12}  {:<8}  {:<10}  {:>3}  {:<tw$}  {:<tw$}  {:<28}  {}",
                        m.id,
                        m.pipeline,
                        m.facility,
                        m.kind,
                        m.state,
                        m.attempts,
                        at,
                        times::cell(m.updated_at, a.epoch),
                        m.source,
                        err.replace(['\r', '\n'], " "),
                        tw = time_width
                    );
                } else {
                    let err: String = err.chars().take(60).collect();
                    println!(
                        "{:<36}  {:<16}  {:<10}  {:>3}  {:<tw$}  {}",
                        m.id,
                        m.pipeline,
                        m.state,
                        m.attempts,
                        at,
                        err.replace(['\r', '\n'], " "),
                        tw = time_width
                    );
                }
            }
            if let Some(c) = page.next_cursor {
                println!("more: --cursor {c}");
            }
            Ok(ExitCode::SUCCESS)
        }
        MessagesCommand::Show(a) => {
            let mut v = http::message_detail(store, &a.id).await?;
            store
                .audit(
                    &security::cli_event("message.read", "Message", &a.id, String::new())
                        .about(v["facility"].as_str().unwrap_or_default()),
                )
                .await?;
            times::json(&mut v, a.epoch);
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(ExitCode::SUCCESS)
        }
        MessagesCommand::Reprocess(a) => {
            let detail = if a.include_refused {
                "--include-refused".to_owned()
            } else {
                String::new()
            };
            let include_refused = a.include_refused;
            if let Some(id) = a.id {
                let event = security::cli_event("message.reprocess", "Message", &id, detail);
                let req = ReprocessRequest {
                    include_refused,
                    audit: Some(&event),
                };
                let m = match store.reprocess_with(&id, req).await {
                    Ok(m) => m,
                    Err(e @ StoreError::Refused { .. }) => {
                        let mut denied = event.clone();
                        denied.outcome = "denied".into();
                        denied.detail = "refused at intake; --include-refused not given".into();
                        store.audit(&denied).await?;
                        eprintln!("error: {e}");
                        return Ok(ExitCode::FAILURE);
                    }
                    Err(e) => return Err(e.into()),
                };
                println!(
                    "{} ({}) will be processed again by a running engine",
                    m.id, m.pipeline
                );
            } else if let (Some(state), Some(pipeline)) = (a.state, a.pipeline) {
                let event = security::cli_event("message.reprocess", "Pipeline", &pipeline, detail);
                let req = ReprocessRequest {
                    include_refused,
                    audit: Some(&event),
                };
                let pb = progress::spinner(format!(
                    "marking the {state} messages of {pipeline} for processing again"
                ));
                let r = store
                    .reprocess_all_with(&pipeline, parse_state(&state)?, req)
                    .await;
                pb.finish_and_clear();
                let r = r?;
                println!(
                    "{} {state} message(s) of {pipeline} will be processed again by a running engine",
                    r.reprocessed
                );
                if r.refused_skipped > 0 {
                    println!(
                        "{} refused at intake (the sender was told so) left as they are: add --include-refused to run them too",
                        r.refused_skipped
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every command and every option says what it is for (`--help` shows it).
    #[test]
    fn every_command_and_option_has_a_description() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path}: {id}"));
                }
            }
            for sc in cmd.get_subcommands() {
                if sc.get_name() == "help" {
                    continue;
                }
                if sc.get_about().is_none() {
                    missing.push(format!("{path} {}: the command itself", sc.get_name()));
                }
                walk(sc, &format!("{path} {}", sc.get_name()), missing);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "huizhen", &mut missing);
        assert!(
            missing.is_empty(),
            "without a description:\n{}",
            missing.join("\n")
        );
    }

    /// `-c`/`--database-url` appear on the commands that use them and nowhere else.
    #[test]
    fn store_options_only_where_they_apply() {
        let mut cmd = Cli::command();
        cmd.build();
        let find = |path: &[&str]| {
            let mut c = &cmd;
            for p in path {
                c = c
                    .get_subcommands()
                    .find(|s| s.get_name() == *p)
                    .unwrap_or_else(|| panic!("{p}"));
            }
            c.get_arguments()
                .map(|a| a.get_id().as_str().to_owned())
                .collect::<Vec<_>>()
        };
        for path in [
            &["messages", "show"][..],
            &["backlog"],
            &["token", "issue"],
            &["run"],
            &["init"],
            &["export"],
        ] {
            let args = find(path);
            assert!(
                args.iter().any(|a| a == "database_url") && args.iter().any(|a| a == "config"),
                "{path:?}: {args:?}"
            );
        }
        for path in [
            &["hl7", "parse"][..],
            &["dicom", "echo"],
            &["opinion", "testca"],
        ] {
            let args = find(path);
            assert!(
                !args.iter().any(|a| a == "database_url" || a == "config"),
                "{path:?}: {args:?}"
            );
        }
        let args = find(&["validate"]);
        assert!(args.iter().any(|a| a == "config") && !args.iter().any(|a| a == "database_url"));
    }
}
