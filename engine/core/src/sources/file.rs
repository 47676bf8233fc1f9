//! `file`: watches a folder for files dropped by legacy systems (batch exports, lab drops).
//!
//! ```yaml
//! source:
//!   file: { dir: inbox/lab, pattern: "*.csv", split: lines, kind: text }
//! ```
//! The folder is polled every `poll` (default 1s); a file is taken once it has not changed for
//! `settle` (default 2s), so a file still being written is left alone. Each file (or each
//! non-empty line, with `split: lines`) becomes one message. Only after every message of a file
//! is journaled is the file moved to `processed_dir` (default `<dir>/.processed`) under a
//! time-stamped name. Files are never deleted; a file that cannot be journaled stays where it is
//! and is tried again. The dedup key `file:<name>:<size>:<mtime>#<n>` makes a crash between
//! journaling and moving harmless: the file is read again but nothing is processed twice.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Source, SourceConfig, SourceContext, SplitOutput};
use crate::config::duration;
use crate::message::NewMessage;
use crate::runner::BuildContext;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// The folder to watch (relative paths are relative to the working directory).
    pub dir: PathBuf,
    /// Glob on the file name, e.g. `*.hl7`. Hidden files (starting with `.`) are skipped.
    #[serde(default = "default_pattern")]
    pub pattern: String,
    /// Where processed files go (default `<dir>/.processed`).
    #[serde(default)]
    pub processed_dir: Option<PathBuf>,
    #[serde(default = "default_poll", with = "duration")]
    pub poll: Duration,
    #[serde(default = "default_settle", with = "duration")]
    pub settle: Duration,
    /// How a file becomes messages: `whole` (default: one message), `lines` (each non-empty
    /// line), or a splitter an adapter registers, such as `hl7` (HL7 batch files).
    #[serde(default = "default_split")]
    pub split: String,
    #[serde(default = "default_kind")]
    pub kind: String,
}

fn default_pattern() -> String {
    "*".into()
}
fn default_poll() -> Duration {
    Duration::from_secs(1)
}
fn default_settle() -> Duration {
    Duration::from_secs(2)
}
fn default_split() -> String {
    "whole".into()
}
fn default_kind() -> String {
    "text".into()
}

#[typetag::deserialize(name = "file")]
impl SourceConfig for FileSourceConfig {
    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn Source>, String> {
        let pattern = glob::Pattern::new(&self.pattern)
            .map_err(|e| format!("invalid file pattern {:?}: {e}", self.pattern))?;
        if !matches!(self.split.as_str(), "whole" | "lines")
            && super::splitter(&self.split).is_none()
        {
            let mut known = vec!["whole", "lines"];
            known.extend(super::splitter_names());
            return Err(format!(
                "unknown split {:?}, expected one of {}",
                self.split,
                known.join(", ")
            ));
        }
        let processed = self
            .processed_dir
            .clone()
            .unwrap_or_else(|| self.dir.join(".processed"));
        Ok(Box::new(FileSource {
            config: self.clone(),
            pattern,
            processed,
        }))
    }
}

struct FileSource {
    config: FileSourceConfig,
    pattern: glob::Pattern,
    processed: PathBuf,
}

impl Source for FileSource {
    fn describe(&self) -> String {
        format!("file {}/{}", self.config.dir.display(), self.config.pattern)
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async move {
            tokio::fs::create_dir_all(&self.config.dir)
                .await
                .map_err(|e| format!("cannot create {}: {e}", self.config.dir.display()))?;
            tokio::fs::create_dir_all(&self.processed)
                .await
                .map_err(|e| format!("cannot create {}: {e}", self.processed.display()))?;
            loop {
                if let Err(e) = self.scan(&ctx).await {
                    tracing::warn!(pipeline = ctx.pipeline.name(), error = %e, "file source scan failed");
                }
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(self.config.poll) => {}
                }
            }
        })
    }
}

impl FileSource {
    async fn scan(&self, ctx: &SourceContext) -> Result<(), String> {
        let mut entries = tokio::fs::read_dir(&self.config.dir)
            .await
            .map_err(|e| format!("cannot read {}: {e}", self.config.dir.display()))?;
        let mut ready = Vec::new();
        while let Some(entry) = entries.next_entry().await.map_err(|e| e.to_string())? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !self.pattern.matches(&name) {
                continue;
            }
            let Ok(meta) = entry.metadata().await else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let age = SystemTime::now()
                .duration_since(mtime)
                .unwrap_or(Duration::ZERO);
            if age < self.config.settle {
                continue;
            }
            ready.push((name, entry.path(), meta.len(), mtime));
        }
        ready.sort();
        for (name, path, len, mtime) in ready {
            if ctx.shutdown.is_cancelled() {
                break;
            }
            self.take(ctx, &name, &path, len, mtime).await?;
        }
        Ok(())
    }

    async fn take(
        &self,
        ctx: &SourceContext,
        name: &str,
        path: &Path,
        len: u64,
        mtime: SystemTime,
    ) -> Result<(), String> {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mtime_ns = mtime
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let output = match self.config.split.as_str() {
            "whole" => SplitOutput {
                parts: vec![(bytes.clone(), Default::default())],
                warnings: Vec::new(),
            },
            "lines" => SplitOutput {
                parts: bytes
                    .split(|b| *b == b'\n' || *b == b'\r')
                    .filter(|l| l.iter().any(|b| !b.is_ascii_whitespace()))
                    .map(|l| (l.to_vec(), Default::default()))
                    .collect(),
                warnings: Vec::new(),
            },
            other => match super::splitter(other) {
                Some(s) => (s.split)(&bytes),
                None => return Err(format!("unknown split {other:?}")),
            },
        };
        for w in &output.warnings {
            tracing::warn!(pipeline = ctx.pipeline.name(), file = %name, warning = %w, "file split");
        }
        let parts = output.parts;
        for (n, (part, headers)) in parts.iter().enumerate() {
            let mut m = NewMessage::new(
                ctx.pipeline.name(),
                ctx.pipeline.facility(),
                &self.config.kind,
                part.clone(),
            );
            m.headers.extend(headers.clone());
            if !output.warnings.is_empty() {
                m.headers
                    .insert("file-warnings".into(), output.warnings.join("; "));
            }
            m.source = format!("file {}#{}", path.display(), n + 1);
            m.dedup_key = Some(format!("file:{name}:{len}:{mtime_ns}#{}", n + 1));
            m.headers.insert("file-name".into(), name.to_owned());
            if parts.len() > 1 {
                m.headers.insert("file-part".into(), (n + 1).to_string());
            }
            ctx.pipeline
                .submit(m)
                .await
                .map_err(|e| format!("{} part {} not journaled: {e}", path.display(), n + 1))?;
        }
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        let target = self.processed.join(format!("{stamp}-{name}"));
        tokio::fs::rename(path, &target).await.map_err(|e| {
            format!(
                "journaled {} but cannot move it to {}: {e}",
                path.display(),
                target.display()
            )
        })?;
        tracing::info!(pipeline = ctx.pipeline.name(), file = %name, messages = parts.len(), "file taken");
        Ok(())
    }
}
