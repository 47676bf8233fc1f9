//! `huizhen hl7 send`, `huizhen hl7 receive` and `huizhen hl7 parse`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use huizhen_hl7::ack::AckCode;
use huizhen_hl7::charset::{self, OnInvalid};
use huizhen_hl7::mllp::{Deframer, Event, frame};
use huizhen_hl7::{Message, dump};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Subcommand)]
pub enum Hl7Command {
    /// Send HL7 v2 messages over MLLP, one at a time, printing each ACK. Exit code: 0 when
    /// every message got AA/CA, 1 when one got AE/AR/CE/CR, 2 when one got no ACK.
    Send(SendArgs),
    /// Listen for HL7 v2 over MLLP as a HIS would (for the demo and tests): print each
    /// message as it arrives and answer AA.
    Receive(ReceiveArgs),
    /// Print every field of an HL7 v2 message with its path and decoded value.
    Parse(ParseArgs),
}

#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// Where to listen: HOST:PORT (port 0: any free port; the address is printed first).
    #[arg(long, value_name = "HOST:PORT")]
    listen: String,
    /// Character set of messages whose MSH-18 is empty.
    #[arg(long, default_value = "UTF-8")]
    charset: String,
    /// Stop after this many messages (default: run until stopped).
    #[arg(long)]
    count: Option<u64>,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Files holding one or more messages (LF, CRLF or CR line ends; batch envelopes are
    /// unwrapped).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Where to send: HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    to: String,
    /// How long to wait for each ACK.
    #[arg(long, default_value = "30s", value_parser = humantime_parse)]
    timeout: Duration,
    /// Character set for reading ACKs that do not say theirs in MSH-18.
    #[arg(long, default_value = "UTF-8")]
    charset: String,
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
pub struct ParseArgs {
    /// The file: one message, several, or a batch (FHS/BHS).
    file: PathBuf,
    /// Character set when MSH-18 is empty (an HL7 table 0211 name or a label such as GBK);
    /// the default is the `mllp` listener's. Bytes that are UTF-8 are read as UTF-8, as the
    /// listener does (`detect_utf8`).
    #[arg(long, default_value = charset::LISTENER_DEFAULT)]
    charset: String,
}

fn humantime_parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: write e.g. 30s or 500ms"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => return Err(format!("invalid duration unit in {s:?}: use ms, s or m")),
    })
}

pub async fn run(cmd: Hl7Command) -> Result<ExitCode> {
    match cmd {
        Hl7Command::Send(a) => send(a).await,
        Hl7Command::Receive(a) => receive(a).await,
        Hl7Command::Parse(a) => parse(a),
    }
}

fn encoding(label: &str) -> Result<&'static encoding_rs::Encoding> {
    charset::encoding_for_msh18(label)
        .with_context(|| format!("unknown charset {label:?} (try UTF-8, GBK, GB18030)"))
}

/// The messages of a file (any line end; batch envelopes removed).
fn split_messages(bytes: &[u8]) -> Vec<Vec<u8>> {
    let batch = huizhen_hl7::batch::split_raw(bytes);
    for d in &batch.discrepancies {
        eprintln!("warning: {d}");
    }
    batch.messages
}

async fn send(a: SendArgs) -> Result<ExitCode> {
    let stream = TcpStream::connect(&a.to)
        .await
        .with_context(|| format!("cannot connect to {}", a.to))?;
    let _ = stream.set_nodelay(true);
    if !a.tls {
        return exchange(stream, &a).await;
    }
    let identity = match (&a.cert, &a.key) {
        (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
        _ => None,
    };
    let connector =
        huizhen_core::tls::connector(a.ca.as_deref(), identity).map_err(|e| anyhow::anyhow!(e))?;
    let name = huizhen_core::tls::server_name(&a.to).map_err(|e| anyhow::anyhow!(e))?;
    let tls = connector
        .connect(name, stream)
        .await
        .with_context(|| format!("TLS handshake with {} failed", a.to))?;
    exchange(tls, &a).await
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    a: &SendArgs,
) -> Result<ExitCode> {
    let default = encoding(&a.charset)?;
    let mut worst = 0u8;
    let mut deframer = Deframer::new(16 * 1024 * 1024);
    let mut pending: std::collections::VecDeque<Vec<u8>> = Default::default();
    let mut buf = vec![0u8; 64 * 1024];
    for file in &a.files {
        let bytes =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let messages = split_messages(&bytes);
        if messages.is_empty() {
            bail!("{}: no HL7 message found", file.display());
        }
        for (n, msg) in messages.iter().enumerate() {
            let sent_id = control_id(msg, default);
            stream
                .write_all(&frame(msg))
                .await
                .with_context(|| format!("cannot send to {}", a.to))?;
            let ack = loop {
                if let Some(f) = pending.pop_front() {
                    break Some(f);
                }
                let r = tokio::time::timeout(a.timeout, stream.read(&mut buf)).await;
                match r {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break None,
                    Ok(Ok(k)) => {
                        for ev in deframer.push(&buf[..k]) {
                            if let Event::Frame(f) = ev {
                                pending.push_back(f);
                            }
                        }
                    }
                }
            };
            let label = format!("{}#{}", file.display(), n + 1);
            let Some(ack) = ack else {
                println!("{label} MSH-10={sent_id}: no ACK within {:?}", a.timeout);
                return Ok(ExitCode::from(2));
            };
            let (code, line) = describe_ack(&ack, default, &sent_id);
            println!("{label} MSH-10={sent_id}: {line}");
            let rank = match code {
                Some(c) if c.is_success() => 0,
                Some(_) => 1,
                None => 2,
            };
            worst = worst.max(rank);
        }
    }
    Ok(ExitCode::from(worst))
}

/// Accepts connections on `--listen`; each message is printed (a `#` line with its number,
/// type, control id and peer, then its segments one per line) and answered AA in its own
/// charset. A frame that is not HL7 is reported on stderr and gets no ACK.
async fn receive(a: ReceiveArgs) -> Result<ExitCode> {
    let default = encoding(&a.charset)?;
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    let local = listener.local_addr()?;
    eprintln!("listening on {local} (MLLP); every message is printed and answered AA");
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => r.context("accept")?,
            _ = done_rx.recv() => return Ok(ExitCode::SUCCESS),
        };
        let received = received.clone();
        let done = done_tx.clone();
        let count = a.count;
        tokio::spawn(async move {
            if let Err(e) = answer(stream, peer, default, &received, count, &done).await {
                eprintln!("{peer}: {e:#}");
            }
        });
    }
}

/// One connection of [`receive`].
async fn answer(
    mut stream: TcpStream,
    peer: std::net::SocketAddr,
    default: &'static encoding_rs::Encoding,
    received: &std::sync::atomic::AtomicU64,
    count: Option<u64>,
    done: &tokio::sync::mpsc::Sender<()>,
) -> Result<()> {
    let mut deframer = Deframer::new(16 * 1024 * 1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        for ev in deframer.push(&buf[..n]) {
            let Event::Frame(raw) = ev else { continue };
            let decoded = match charset::decode(&raw, default, OnInvalid::Replace) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("{peer}: a frame that cannot be decoded ({e}); no ACK");
                    continue;
                }
            };
            let encoding = decoded.encoding;
            let text = decoded.text.clone();
            let m = match Message::from_decoded(decoded) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("{peer}: a frame that is not HL7 v2 ({e}); no ACK");
                    continue;
                }
            };
            let h = m.header();
            let k = received.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let mut out = format!(
                "# {k} {}^{} MSH-10={} from {peer}\n",
                h.message_type, h.trigger, h.control_id
            );
            for seg in text.split(['\r', '\n']).filter(|s| !s.is_empty()) {
                out.push_str(seg);
                out.push('\n');
            }
            print!("{out}");
            let now = chrono::Local::now().format("%Y%m%d%H%M%S").to_string();
            let ack = huizhen_hl7::ack::build(&h, AckCode::AA, None, &format!("ACK{k}"), &now);
            let (bytes, _, _) = encoding.encode(&ack);
            stream.write_all(&frame(&bytes)).await?;
            if count.is_some_and(|c| k >= c) {
                let _ = done.send(()).await;
            }
        }
    }
}

fn control_id(msg: &[u8], default: &'static encoding_rs::Encoding) -> String {
    charset::decode(msg, default, OnInvalid::Replace)
        .ok()
        .and_then(|d| Message::from_decoded(d).ok())
        .map(|m| m.header().control_id)
        .unwrap_or_default()
}

/// The ACK code and a one-line summary: `AA (MSA-2=…)`, with the ERR text on errors.
fn describe_ack(
    ack: &[u8],
    default: &'static encoding_rs::Encoding,
    sent_id: &str,
) -> (Option<AckCode>, String) {
    let Ok(decoded) = charset::decode(ack, default, OnInvalid::Replace) else {
        return (None, "unreadable ACK".into());
    };
    let Ok(m) = Message::from_decoded(decoded) else {
        return (None, "ACK is not an HL7 message".into());
    };
    let get = |p: &str| m.get_str(p).ok().flatten().unwrap_or_default();
    let code_text = get("MSA-1");
    let code = AckCode::parse(&code_text);
    let msa2 = get("MSA-2");
    let mut line = format!("{code_text} (MSA-2={msa2})");
    if msa2 != sent_id {
        line.push_str(" — MSA-2 does not match the sent MSH-10");
    }
    let err = [get("ERR-3.2"), get("ERR-8"), get("MSA-3"), get("ERR-1.4.2")]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    if !err.is_empty() {
        line.push_str(&format!(" {err}"));
    }
    (code, line)
}

fn parse(a: ParseArgs) -> Result<ExitCode> {
    let default = encoding(&a.charset)?;
    let bytes =
        std::fs::read(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
    let messages = split_messages(&bytes);
    if messages.is_empty() {
        bail!("{}: no HL7 message found", a.file.display());
    }
    for (n, raw) in messages.iter().enumerate() {
        if messages.len() > 1 {
            println!("# message {}", n + 1);
        }
        let decoded = decode_like_the_listener(raw, default).map_err(|e| {
            anyhow::anyhow!(
                "{}#{}: {e}\nhint: {}",
                display(&a.file),
                n + 1,
                charset_hint(&e, &a.charset)
            )
        })?;
        println!("# charset: {}", decoded.encoding.name());
        let m = Message::from_decoded(decoded)
            .map_err(|e| anyhow::anyhow!("{}#{}: {e}", display(&a.file), n + 1))?;
        let leaves = dump::leaves(&m);
        let width = leaves.iter().map(|l| l.path.len()).max().unwrap_or(0);
        for l in leaves {
            let value = if l.null {
                "\"\" (null)".to_owned()
            } else {
                l.value.replace('\r', "\\r").replace('\n', "\\n")
            };
            println!("{:<width$}  {value}", l.path);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Decodes as the `mllp` listener does with its defaults: the charset MSH-18 names, else
/// `default`; bytes that are UTF-8 but that `default` would misread are read as UTF-8
/// (`detect_utf8`); invalid bytes are an error (`on_invalid_charset: reject`).
fn decode_like_the_listener(
    raw: &[u8],
    default: &'static encoding_rs::Encoding,
) -> Result<charset::Decoded, charset::CharsetError> {
    match charset::decode(raw, default, OnInvalid::Reject) {
        Err(charset::CharsetError::LooksLikeUtf8 { .. }) if std::str::from_utf8(raw).is_ok() => {
            eprintln!(
                "note: MSH-18 is empty and the bytes are UTF-8: read as UTF-8, as the listener does"
            );
            charset::decode(raw, encoding_rs::UTF_8, OnInvalid::Reject)
        }
        r => r,
    }
}

/// What to try when a message cannot be decoded.
fn charset_hint(e: &charset::CharsetError, asked: &str) -> String {
    match e {
        charset::CharsetError::Unknown(v) => format!(
            "MSH-18 names {v:?}, which is not a known charset: fix MSH-18 (HL7 table 0211, e.g. UNICODE UTF-8, GB 18030-2000)"
        ),
        charset::CharsetError::Invalid { encoding, .. } => format!(
            "the bytes are not {encoding} (MSH-18 or --charset {asked}); if the sender writes another charset, try --charset UTF-8, GBK or BIG5, or set MSH-18"
        ),
        _ => {
            format!("try another --charset than {asked} (UTF-8, GB18030, GBK, BIG5), or set MSH-18")
        }
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
