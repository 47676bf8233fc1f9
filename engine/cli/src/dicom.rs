//! `huizhen dicom echo|store|find|get|move`: small SCU tools (huizhen-dicom's requestor side).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, anyhow};
use clap::{Args, Subcommand};
use huizhen_dicom::scu::{self, Peer};

#[derive(Debug, Subcommand)]
pub enum DicomCommand {
    /// C-ECHO: check that a DICOM peer answers. Exit code 0 on success.
    Echo(PeerArgs),
    /// C-STORE Part 10 files (folders are walked) on one association, as they are (no
    /// transcoding). Exit code: 0 when every file was stored, 1 otherwise.
    Store(StoreArgs),
    /// C-FIND (Study Root, or Patient Root with --patient-root); prints each match as one JSON
    /// object per line.
    Find(FindArgs),
    /// C-GET (Study Root, or Patient Root with --patient-root): the selected instances come
    /// back on the same association and are written to --out as <SOP Instance UID>.dcm. Exit
    /// code 0 when every sub-operation completed.
    Get(Box<GetArgs>),
    /// C-MOVE: asks the peer to send the selected instances to --dest (an AE title the peer
    /// knows, e.g. this engine's SCP). Exit code 0 when every sub-operation completed.
    Move(Box<MoveArgs>),
}

#[derive(Debug, Args)]
pub struct RetrieveArgs {
    /// The peer by its AE title in a registry of remote AEs (a YAML file with `remote_aes:`),
    /// instead of --to/--called.
    #[arg(long, value_name = "AE", requires = "registry")]
    ae: Option<String>,
    /// The registry file for --ae.
    #[arg(long, value_name = "FILE")]
    registry: Option<PathBuf>,
    /// STUDY, SERIES, IMAGE, or PATIENT (patient root only).
    #[arg(long, default_value = "STUDY")]
    level: String,
    /// Use the Patient Root model instead of Study Root.
    #[arg(long)]
    patient_root: bool,
    /// Patient ID (PATIENT level; optional with --patient-root at the others).
    #[arg(long)]
    patient: Option<String>,
    /// Study Instance UID(s).
    #[arg(long = "study")]
    studies: Vec<String>,
    /// Series Instance UID(s) (SERIES, IMAGE).
    #[arg(long = "series")]
    series: Vec<String>,
    /// SOP Instance UID(s) (IMAGE).
    #[arg(long = "instance")]
    instances: Vec<String>,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    #[command(flatten)]
    peer: PeerArgs,
    #[command(flatten)]
    sel: RetrieveArgs,
    /// Where the instances are written.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// A storage SOP class UID to receive (repeatable; default: the common image classes).
    #[arg(long = "sop-class", value_name = "UID")]
    sop_classes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct MoveArgs {
    #[command(flatten)]
    peer: PeerArgs,
    #[command(flatten)]
    sel: RetrieveArgs,
    /// The Move Destination AE title.
    #[arg(long, value_name = "AE")]
    dest: String,
}

impl RetrieveArgs {
    fn selection(&self) -> Result<huizhen_dicom::qr::Selection> {
        use huizhen_dicom::find::Level;
        let level = match self.level.to_uppercase().as_str() {
            "PATIENT" if self.patient_root => Level::Patient,
            "STUDY" => Level::Study,
            "SERIES" => Level::Series,
            "IMAGE" => Level::Image,
            other => {
                return Err(anyhow!(
                    "--level {other}: STUDY, SERIES, IMAGE or PATIENT (--patient-root)"
                ));
            }
        };
        Ok(huizhen_dicom::qr::Selection {
            level,
            patient_id: self.patient.clone(),
            studies: self.studies.clone(),
            series: self.series.clone(),
            instances: self.instances.clone(),
        })
    }

    /// The peer: from the registry by --ae, or --to/--called.
    fn peer(&self, args: &PeerArgs) -> Result<Peer> {
        match (&self.ae, &self.registry) {
            (Some(ae), Some(file)) => {
                let reg =
                    huizhen_dicom::qr::remote::Registry::load(file).map_err(|e| anyhow!(e))?;
                let remote = reg
                    .by_title(ae)
                    .ok_or_else(|| anyhow!("{ae} is not in {}", file.display()))?;
                remote
                    .peer(&args.calling, args.timeout)
                    .map_err(|e| anyhow!(e))
            }
            _ => args.peer(),
        }
    }
}

fn report(what: &str, o: &huizhen_dicom::qr::scu::Outcome) -> ExitCode {
    println!(
        "{what}: status {:#06x}{}: {} completed, {} failed, {} warning",
        o.status,
        o.comment
            .as_deref()
            .map(|c| format!(" ({c})"))
            .unwrap_or_default(),
        o.completed,
        o.failed,
        o.warning
    );
    if o.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[derive(Debug, Args)]
pub struct PeerArgs {
    /// Where: HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", default_value = "")]
    to: String,
    /// The peer's AE title (called).
    #[arg(long, default_value = "HUIZHEN", value_name = "AE")]
    called: String,
    /// This tool's AE title (calling).
    #[arg(long, default_value = "HUIZHEN_SCU", value_name = "AE")]
    calling: String,
    /// Connect, handshake and each answer within this time (e.g. 30s).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// The largest PDU this tool receives.
    #[arg(long, default_value_t = 256 * 1024)]
    max_pdu: u32,
    /// Use TLS (1.2+).
    #[arg(long)]
    tls: bool,
    /// CA certificate(s) to trust, PEM (default: the public web roots).
    #[arg(long, requires = "tls", value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Client certificate for mutual TLS, PEM (with --key).
    #[arg(long, requires_all = ["tls", "key"], value_name = "FILE")]
    cert: Option<PathBuf>,
    /// Private key of --cert, PEM.
    #[arg(long, requires = "cert", value_name = "FILE")]
    key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    #[command(flatten)]
    peer: PeerArgs,
    /// Files or folders.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FindArgs {
    #[command(flatten)]
    peer: PeerArgs,
    /// PATIENT (patient root only), STUDY, SERIES or IMAGE.
    #[arg(long, default_value = "STUDY")]
    level: String,
    /// Query the Patient Root model instead of Study Root.
    #[arg(long)]
    patient_root: bool,
    /// A key: `Keyword=value` matches (wildcards `*` `?`, ranges `20260101-20260131`, UID
    /// lists `a\b`), `Keyword` alone asks for the attribute. Repeatable.
    #[arg(short = 'k', long = "query", value_name = "KEY[=VALUE]")]
    keys: Vec<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

impl PeerArgs {
    fn peer(&self) -> Result<Peer> {
        if self.to.is_empty() {
            return Err(anyhow!("--to HOST:PORT is required"));
        }
        for (what, t) in [("--called", &self.called), ("--calling", &self.calling)] {
            huizhen_dicom::source::check_ae_title(what, t).map_err(|e| anyhow!(e))?;
        }
        let tls = if self.tls {
            let cfg = huizhen_core::tls::ClientTlsConfig {
                ca: self.ca.clone(),
                cert: self.cert.clone(),
                key: self.key.clone(),
                server_name: None,
            };
            Some(cfg.client(&self.to).map_err(|e| anyhow!(e))?)
        } else {
            None
        };
        Ok(Peer {
            addr: self.to.clone(),
            called: self.called.clone(),
            calling: self.calling.clone(),
            tls,
            timeout: self.timeout,
            max_pdu: self.max_pdu.clamp(huizhen_dicom::assoc::MIN_PDU, 16 << 20),
        })
    }
}

pub async fn run(cmd: DicomCommand) -> Result<ExitCode> {
    match cmd {
        DicomCommand::Echo(a) => {
            let peer = a.peer()?;
            let st = scu::echo(&peer).await.map_err(|e| anyhow!(e))?;
            println!("C-ECHO {}: status {st:#06x}", a.to);
            Ok(if st == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        DicomCommand::Store(a) => {
            let peer = a.peer.peer()?;
            let files = scu::collect_files(&a.paths).map_err(|e| anyhow!(e))?;
            let results = scu::store(&peer, &files).await.map_err(|e| anyhow!(e))?;
            let mut failed = 0;
            for r in &results {
                let ok = r.status.is_some_and(huizhen_dicom::dimse::status::is_ok);
                if !ok {
                    failed += 1;
                }
                println!(
                    "{} {} {}",
                    if ok { "stored" } else { "FAILED" },
                    r.path.display(),
                    r.detail
                );
            }
            println!("{} of {} stored", results.len() - failed, results.len());
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        DicomCommand::Find(a) => {
            let peer = a.peer.peer()?;
            let keys = a
                .keys
                .iter()
                .map(|k| scu::parse_key(k))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow!(e))?;
            let rows = scu::find(&peer, a.patient_root, &a.level, &keys)
                .await
                .map_err(|e| anyhow!(e))?;
            for r in &rows {
                println!("{}", serde_json::to_string(r)?);
            }
            eprintln!("{} match(es)", rows.len());
            Ok(ExitCode::SUCCESS)
        }
        DicomCommand::Get(a) => {
            let peer = a.sel.peer(&a.peer)?;
            let sel = a.sel.selection()?;
            let o = huizhen_dicom::qr::scu::get(
                &peer,
                a.sel.patient_root,
                &sel,
                &a.out,
                &a.sop_classes,
            )
            .await
            .map_err(|e| anyhow!(e))?;
            for f in &o.files {
                println!("received {}", f.display());
            }
            Ok(report("C-GET", &o))
        }
        DicomCommand::Move(a) => {
            let peer = a.sel.peer(&a.peer)?;
            let sel = a.sel.selection()?;
            let o = huizhen_dicom::qr::scu::move_to(&peer, a.sel.patient_root, &sel, &a.dest)
                .await
                .map_err(|e| anyhow!(e))?;
            Ok(report("C-MOVE", &o))
        }
    }
}
