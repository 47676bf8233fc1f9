//! Anchoring the audit chain outside the database (issue 12 item 3).
//!
//! The hash chain of [`super::audit`] shows a row that was changed, removed or moved, but its
//! hash has no key: whoever can write the database can truncate the table and reset
//! `audit_head`, cut its tail, or append rows with recomputed hashes, and the chain still
//! verifies. Two controls close that, both keyed with the **audit key**, a random 256-bit secret
//! in a file outside the database (`security.audit.key_file`, created with mode 0600 on first
//! start, like the JWT secret):
//!
//! - **Row MACs.** Every row the engine (or the CLI) appends carries `KID:HMAC-SHA256(key,
//!   row hash)` in its `mac` column. A row appended by someone without the key has no valid MAC,
//!   so forged appends are detected however their hashes were computed.
//! - **Checkpoints.** The engine appends `(seq, head hash, time, node)` with an HMAC to the
//!   checkpoint file (`security.audit.checkpoint_file`; one JSON per line, opened for append
//!   only, fsync'd) every `checkpoint_every` events or `checkpoint_interval`, at start and on a
//!   clean shutdown; optionally it hands each checkpoint line to a witness command (another host,
//!   a WORM store). A checkpoint vouches for every row up to its `seq`: a row that is missing or
//!   differs there, or a trail that ends before it, is found by [`Store::verify_audit`].
//!
//! What stays open, by design: rows appended after the last checkpoint can be cut without a
//! trace (at most `checkpoint_every` events or `checkpoint_interval` of them), and anyone who
//! holds the audit key can do everything the engine can. With several engine processes on one
//! PostgreSQL, each writes its own checkpoint file (of the one shared chain) and all use the
//! same key file; `huizhen audit verify --checkpoints FILE` checks the files of the others too.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Result, Store, q};
use crate::message::now_ms;

type HmacSha256 = Hmac<Sha256>;

/// `security.audit`: the audit key and the checkpoints that anchor the audit chain.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The audit key (64 hex characters), created with a random key and mode 0600 if missing.
    /// Keep it where the database's users cannot read it; every engine process of one database
    /// needs the same file. Relative to the working directory.
    #[serde(default = "default_key_file")]
    pub key_file: PathBuf,
    /// The file the engine appends its checkpoints to (created if missing). Keep it where the
    /// database's users cannot write; each engine process should have its own.
    #[serde(default = "default_checkpoint_file")]
    pub checkpoint_file: PathBuf,
    /// Write a checkpoint after this many audit events (default 100).
    #[serde(default = "default_every")]
    pub checkpoint_every: u64,
    /// …and at least this often while events are written (default 60s).
    #[serde(default = "default_interval", with = "crate::config::duration")]
    pub checkpoint_interval: Duration,
    /// A command (program and arguments) that receives each checkpoint line on its standard
    /// input, e.g. `[ssh, witness@vault, "cat >> huizhen.checkpoints"]`. A checkpoint is not held
    /// back by a slow or failing witness: failures are logged, and a checkpoint that arrives
    /// while the previous one is still being handed over is skipped (the next one covers it).
    #[serde(default)]
    pub witness_command: Vec<String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            key_file: default_key_file(),
            checkpoint_file: default_checkpoint_file(),
            checkpoint_every: default_every(),
            checkpoint_interval: default_interval(),
            witness_command: Vec::new(),
        }
    }
}

fn default_key_file() -> PathBuf {
    "data/audit.key".into()
}
fn default_checkpoint_file() -> PathBuf {
    "data/audit.checkpoints".into()
}
fn default_every() -> u64 {
    100
}
fn default_interval() -> Duration {
    Duration::from_secs(60)
}

/// The audit key: signs rows and checkpoints.
pub struct AuditKey {
    key: Vec<u8>,
    kid: String,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// What a row's `mac` column says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowMac {
    /// Signed with this key and intact.
    Valid,
    /// No MAC (written before the audit key existed, or by someone without it).
    Missing,
    /// Signed with another key (its id).
    OtherKey(String),
    /// Claims this key but the MAC is wrong: forged.
    Invalid,
}

impl AuditKey {
    /// A key from its bytes (at least 32).
    pub fn new(key: Vec<u8>) -> Result<AuditKey, String> {
        if key.len() < 32 {
            return Err("the audit key must be at least 32 bytes".into());
        }
        let kid =
            hex::encode(&Sha256::digest([b"huizhen-audit-kid\n".as_slice(), &key].concat())[..4]);
        Ok(AuditKey { key, kid })
    }

    /// Reads the key file; when it is missing, creates it (mode 0600) if `create`, else `None`.
    pub fn load(path: &Path, create: bool) -> Result<Option<AuditKey>, String> {
        let shown = path.display();
        match std::fs::read_to_string(path) {
            Ok(s) => {
                let bytes = hex::decode(s.trim()).map_err(|e| {
                    format!("{shown}: the audit key must be 64 hex characters: {e}")
                })?;
                AuditKey::new(bytes)
                    .map(Some)
                    .map_err(|e| format!("{shown}: {e}"))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                use rand::RngCore;
                let mut bytes = [0u8; 32];
                rand::rng().fill_bytes(&mut bytes);
                let created =
                    crate::security::create_file_once(path, hex::encode(bytes).as_bytes())
                        .map_err(|e| format!("{shown}: cannot create the audit key: {e}"))?;
                if created {
                    tracing::info!(file = %shown, "created a new audit key");
                }
                // Read back: another process may have created it first.
                AuditKey::load(path, false)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{shown}: cannot read the audit key: {e}")),
        }
    }

    /// The key's id: the first 8 hex characters of a hash of it (names it, reveals nothing).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    fn mac(&self, domain: &str, msg: &str) -> String {
        // HMAC accepts keys of any length.
        let mut m = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(domain.as_bytes());
        m.update(b"\n");
        m.update(msg.as_bytes());
        hex::encode(m.finalize().into_bytes())
    }

    fn equal(a: &str, b: &str) -> bool {
        a.len() == b.len()
            && a.bytes()
                .zip(b.bytes())
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0
    }

    /// The `mac` column of a row with this hash.
    pub fn row_mac(&self, hash: &str) -> String {
        format!("{}:{}", self.kid, self.mac("huizhen-audit-row", hash))
    }

    /// Checks a row's `mac` column against its hash.
    pub fn check_row(&self, hash: &str, mac: &str) -> RowMac {
        let Some((kid, _)) = mac.split_once(':') else {
            return if mac.is_empty() {
                RowMac::Missing
            } else {
                RowMac::Invalid
            };
        };
        if kid != self.kid {
            return RowMac::OtherKey(kid.to_owned());
        }
        if AuditKey::equal(mac, &self.row_mac(hash)) {
            RowMac::Valid
        } else {
            RowMac::Invalid
        }
    }

    fn checkpoint_mac(&self, c: &Checkpoint) -> String {
        self.mac(
            "huizhen-audit-checkpoint",
            &format!("{}\n{}\n{}\n{}", c.seq, c.hash, c.at, c.node),
        )
    }

    /// A signed checkpoint.
    pub fn checkpoint(&self, seq: i64, hash: &str, node: &str) -> Checkpoint {
        let mut c = Checkpoint {
            seq,
            hash: hash.to_owned(),
            at: now_ms(),
            node: node.to_owned(),
            kid: self.kid.clone(),
            mac: String::new(),
        };
        c.mac = self.checkpoint_mac(&c);
        c
    }

    /// Whether a checkpoint was signed with this key.
    pub fn check_checkpoint(&self, c: &Checkpoint) -> bool {
        c.kid == self.kid && AuditKey::equal(&c.mac, &self.checkpoint_mac(c))
    }
}

/// One line of the checkpoint file: the chain's head at a time, signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The last row the checkpoint vouches for.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
    /// When (ms since the epoch).
    pub at: i64,
    /// The engine process that wrote it.
    pub node: String,
    /// The id of the audit key that signed it.
    pub kid: String,
    /// HMAC-SHA256 over seq, hash, at and node.
    pub mac: String,
}

/// A checkpoint and where it was read.
#[derive(Debug, Clone)]
pub struct FoundCheckpoint {
    pub checkpoint: Checkpoint,
    pub file: PathBuf,
    pub line: usize,
}

/// Reads a checkpoint file: its checkpoints, and the problems of lines that are not one. A
/// missing file reads as empty; a last line without its newline (a crash mid-write) is skipped.
pub fn read_checkpoints(path: &Path) -> std::io::Result<(Vec<FoundCheckpoint>, Vec<String>)> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(e),
    };
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Checkpoint>(line) {
            Ok(c) => found.push(FoundCheckpoint {
                checkpoint: c,
                file: path.to_owned(),
                line: i + 1,
            }),
            Err(_) if i + 1 == lines.len() && !complete => {}
            Err(e) => problems.push(format!(
                "{}:{}: not a checkpoint ({e})",
                path.display(),
                i + 1
            )),
        }
    }
    Ok((found, problems))
}

/// Appends one line to the checkpoint file (created 0600) and waits until it is on disk.
fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(format!("{line}\n").as_bytes())?;
    f.sync_data()
}

/// The anchor of one store: its key, where its checkpoints go, and when.
#[derive(Debug)]
pub struct AuditAnchor {
    cfg: AuditConfig,
    key: Option<AuditKey>,
    node: String,
    /// Events appended by this process since its last checkpoint.
    pending: AtomicU64,
    wake: Notify,
    /// The last checkpoint of this process's file: (seq, hash).
    last: Mutex<Option<(i64, String)>>,
    witness_busy: std::sync::Arc<AtomicBool>,
}

impl AuditAnchor {
    /// The anchor of an engine or a CLI command that writes audit events: the key is created
    /// if it is missing (`create`), or else must exist for rows to be signed.
    pub fn open(cfg: &AuditConfig, node: &str, create: bool) -> Result<AuditAnchor, String> {
        if cfg.checkpoint_every == 0 {
            return Err("audit.checkpoint_every must be at least 1".into());
        }
        if cfg.checkpoint_interval.is_zero() {
            return Err("audit.checkpoint_interval must be more than zero".into());
        }
        let key = AuditKey::load(&cfg.key_file, create)?;
        let last = read_checkpoints(&cfg.checkpoint_file)
            .map_err(|e| format!("{}: cannot read: {e}", cfg.checkpoint_file.display()))?
            .0
            .into_iter()
            .map(|f| f.checkpoint)
            .rfind(|c| key.as_ref().is_some_and(|k| k.check_checkpoint(c)))
            .map(|c| (c.seq, c.hash));
        Ok(AuditAnchor {
            cfg: cfg.clone(),
            key,
            node: node.to_owned(),
            pending: AtomicU64::new(0),
            wake: Notify::new(),
            last: Mutex::new(last),
            witness_busy: Default::default(),
        })
    }

    pub fn key(&self) -> Option<&AuditKey> {
        self.key.as_ref()
    }

    pub fn config(&self) -> &AuditConfig {
        &self.cfg
    }

    /// Counts an appended event; wakes the checkpointer every `checkpoint_every`.
    pub(crate) fn appended(&self) {
        if self.pending.fetch_add(1, Ordering::Relaxed) + 1 >= self.cfg.checkpoint_every {
            self.wake.notify_one();
        }
    }

    fn witness(&self, line: String) {
        let Some((program, args)) = self.cfg.witness_command.split_first() else {
            return;
        };
        if self.witness_busy.swap(true, Ordering::AcqRel) {
            tracing::debug!("audit witness still busy; this checkpoint is covered by the next");
            return;
        }
        let busy = self.witness_busy.clone();
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        let program = program.clone();
        tokio::spawn(async move {
            let run = async {
                use tokio::io::AsyncWriteExt;
                let mut child = cmd.spawn()?;
                if let Some(mut stdin) = child.stdin.take() {
                    stdin.write_all(format!("{line}\n").as_bytes()).await?;
                }
                child.wait().await
            };
            match tokio::time::timeout(Duration::from_secs(30), run).await {
                Ok(Ok(s)) if s.success() => {}
                Ok(Ok(s)) => {
                    tracing::warn!(witness = %program, status = %s, "audit witness refused a checkpoint")
                }
                Ok(Err(e)) => {
                    tracing::warn!(witness = %program, error = %e, "audit witness could not be run")
                }
                Err(_) => tracing::warn!(witness = %program, "audit witness took over 30s"),
            }
            busy.store(false, Ordering::Release);
        });
    }
}

impl Store {
    /// The current head of the chain: (seq, hash).
    pub async fn audit_head(&self) -> Result<(i64, String)> {
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(&self.read)
            .await
            .map_err(q("read the audit head"))?;
        Ok((
            head.try_get("seq").map_err(q("read the audit head"))?,
            head.try_get("hash").map_err(q("read the audit head"))?,
        ))
    }

    /// The hash of one audit row, if it exists.
    pub(crate) async fn audit_row_hash(&self, seq: i64) -> Result<Option<String>> {
        let mut s = super::sql::Sql::new("SELECT hash FROM audit_events WHERE seq = ".into());
        s.bind(seq);
        let row = s
            .query()
            .fetch_optional(&self.read)
            .await
            .map_err(q("read an audit row"))?;
        row.map(|r| r.try_get("hash"))
            .transpose()
            .map_err(q("read an audit row"))
    }

    /// Writes a checkpoint of the current head to the checkpoint file (and the witness) unless
    /// the head has not moved since this process's last one. Before it, checks that the row of
    /// that last checkpoint is still there unchanged and logs an error if not (the next
    /// `huizhen audit verify` names it). `Ok(None)` when there was nothing to write or no anchor.
    pub async fn checkpoint_audit(&self) -> Result<Option<Checkpoint>> {
        let Some(anchor) = self.anchor.as_deref() else {
            return Ok(None);
        };
        let Some(key) = anchor.key.as_ref() else {
            return Ok(None);
        };
        let (seq, hash) = self.audit_head().await?;
        let last = anchor
            .last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let unmoved = last.as_ref().is_some_and(|(s, h)| *s == seq && *h == hash);
        if let Some((ls, lh)) = last.as_ref().filter(|_| !unmoved) {
            let now = if *ls <= seq {
                self.audit_row_hash(*ls).await?
            } else {
                None
            };
            if now.as_deref() != Some(lh.as_str()) {
                tracing::error!(
                    checkpoint_seq = ls,
                    head_seq = seq,
                    "the audit trail does not agree with this engine's last checkpoint (rows cut or rewritten); run `huizhen audit verify`"
                );
            }
        }
        if seq == 0 || unmoved {
            anchor.pending.store(0, Ordering::Relaxed);
            return Ok(None);
        }
        let c = key.checkpoint(seq, &hash, &anchor.node);
        let line = serde_json::to_string(&c).unwrap_or_default();
        let path = anchor.cfg.checkpoint_file.clone();
        let l = line.clone();
        let written = tokio::task::spawn_blocking(move || append_line(&path, &l))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = written {
            tracing::error!(file = %anchor.cfg.checkpoint_file.display(), error = %e, "audit checkpoint not written");
            return Err(super::StoreError::Inconsistent(format!(
                "{}: audit checkpoint not written: {e}",
                anchor.cfg.checkpoint_file.display()
            )));
        }
        *anchor.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((seq, hash));
        anchor.pending.store(0, Ordering::Relaxed);
        anchor.witness(line);
        Ok(Some(c))
    }

    /// Writes checkpoints until `shutdown`: at start, after `checkpoint_every` events of this
    /// process, and every `checkpoint_interval` when the head moved (events of other processes
    /// included). The last one, on a clean shutdown, is [`crate::Engine::shutdown`]'s.
    pub async fn run_checkpointer(self, shutdown: CancellationToken) {
        let Some(anchor) = self.anchor.clone() else {
            return;
        };
        if anchor.key.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(anchor.cfg.checkpoint_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = anchor.wake.notified() => {}
                _ = tick.tick() => {}
            }
            if let Err(e) = self.checkpoint_audit().await {
                tracing::warn!(error = %e, "audit checkpoint failed; retrying at the next one");
            }
        }
    }
}

/// Where verification found the checkpoints, for the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AnchorReport {
    /// The checkpoint files read.
    pub files: Vec<String>,
    /// Checkpoints read and checked against the rows.
    pub checkpoints: u64,
    /// The highest row a checkpoint vouches for, with its time and node.
    pub latest_seq: i64,
    pub latest_at: Option<i64>,
    pub latest_node: Option<String>,
    /// The audit key's id, if the key was available.
    pub key: Option<String>,
    /// Rows with a valid MAC; rows written before the key existed (no MAC).
    pub keyed_rows: u64,
    pub unkeyed_rows: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("huizhen-anchor-{}", crate::message::new_id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_key_is_created_private_once_and_read_back() {
        let d = dir();
        let path = d.join("keys/audit.key");
        assert!(
            AuditKey::load(&path, false).unwrap().is_none(),
            "never created by a reader"
        );
        let a = AuditKey::load(&path, true).unwrap().unwrap();
        let b = AuditKey::load(&path, true).unwrap().unwrap();
        assert_eq!(a.kid(), b.kid(), "read back, not recreated");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "not hex").unwrap();
        let e = AuditKey::load(&path, true).unwrap_err();
        assert!(
            e.contains("audit.key: the audit key must be 64 hex characters"),
            "{e}"
        );
        std::fs::write(&path, "00ff").unwrap();
        assert!(
            AuditKey::load(&path, true)
                .unwrap_err()
                .contains("at least 32 bytes")
        );
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        let d = dir();
        let cfg = |every, interval| AuditConfig {
            key_file: d.join("k"),
            checkpoint_file: d.join("c"),
            checkpoint_every: every,
            checkpoint_interval: interval,
            witness_command: Vec::new(),
        };
        let e = AuditAnchor::open(&cfg(0, Duration::from_secs(1)), "n", true).unwrap_err();
        assert_eq!(e, "audit.checkpoint_every must be at least 1");
        let e = AuditAnchor::open(&cfg(1, Duration::ZERO), "n", true).unwrap_err();
        assert_eq!(e, "audit.checkpoint_interval must be more than zero");
        let e = serde_json::from_str::<AuditConfig>(r#"{"checkpoint_evry": 5}"#).unwrap_err();
        assert!(
            e.to_string().contains("unknown field `checkpoint_evry`"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn row_macs_bind_the_hash_and_the_key() {
        let k = AuditKey::new(vec![7; 32]).unwrap();
        let other = AuditKey::new(vec![8; 32]).unwrap();
        let mac = k.row_mac("abc");
        assert_eq!(k.check_row("abc", &mac), RowMac::Valid);
        assert_eq!(k.check_row("abd", &mac), RowMac::Invalid);
        assert_eq!(k.check_row("abc", ""), RowMac::Missing);
        assert_eq!(k.check_row("abc", "garbage"), RowMac::Invalid);
        assert_eq!(
            k.check_row("abc", &other.row_mac("abc")),
            RowMac::OtherKey(other.kid().to_owned())
        );
        // Claiming the right key id does not help without the key.
        let forged = format!("{}:{}", k.kid(), &other.row_mac("abc")[9..]);
        assert_eq!(k.check_row("abc", &forged), RowMac::Invalid);
    }

    #[test]
    fn checkpoints_are_signed_and_a_torn_last_line_is_skipped() {
        let k = AuditKey::new(vec![7; 32]).unwrap();
        let c = k.checkpoint(42, "h42", "node-a");
        assert!(k.check_checkpoint(&c));
        let mut moved = c.clone();
        moved.seq = 41;
        assert!(!k.check_checkpoint(&moved), "a changed seq");
        assert!(!AuditKey::new(vec![8; 32]).unwrap().check_checkpoint(&c));

        let d = dir();
        let path = d.join("audit.checkpoints");
        assert!(
            read_checkpoints(&path).unwrap().0.is_empty(),
            "missing reads as empty"
        );
        append_line(&path, &serde_json::to_string(&c).unwrap()).unwrap();
        append_line(&path, "{oops").unwrap();
        append_line(&path, &serde_json::to_string(&c).unwrap()).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"seq\":4")
            .unwrap();
        let (found, bad) = read_checkpoints(&path).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!((found[1].line, &found[1].checkpoint), (3, &c));
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(
            bad[0].contains("audit.checkpoints:2: not a checkpoint"),
            "{bad:?}"
        );
        let _ = std::fs::remove_dir_all(d);
    }
}
