//! `file`: writes each message as one file in a folder (a LIS or HIS that reads an outbox
//! folder, a share another system polls).
//!
//! ```yaml
//! sinks:
//!   - file:
//!       dir: /srv/outbox/lis
//!       file_name: "{{date}}/{{header.order}}-{{id}}.hl7"   # default: {{id}}.<extension by kind>
//!       hl7_batch: false                              # true: FHS/BHS … BTS/FTS around the message
//! ```
//!
//! Each file is written atomically: to a hidden temporary file in the same folder
//! (`.huizhen-<message id>-<sink index>.tmp`), synced to disk, renamed to its name, and the folder synced,
//! so a reader never sees half a file and a crash leaves either no file or the whole one. The
//! `file_name` is a template (`huizhen_core::template`): its values may not hold `/`, `\`, `..` or
//! control characters; its literal text may name subfolders, which are created.
//!
//! Idempotent by message: a file that already exists with the same bytes is this message
//! delivered before (a redelivery after a crash, a reprocess), and is not written again. A file
//! that exists with other bytes is not overwritten: the message goes to `dead` naming the file
//! (another message's name, or this message's output before a change: remove or move the file
//! and reprocess). Names should hold `{{id}}` to be unique per message. Other I/O errors (a full
//! disk, a permission) are retried with the pipeline's backoff.
//!
//! `hl7_batch: true` (messages of kind `hl7v2` only) writes the message as an HL7 batch file:
//! `FHS` and `BHS` from its `MSH-3`…`MSH-6` with the time it was received and the message id as
//! control id, the message, `BTS|1`, `FTS|1` — the same bytes on every redelivery.

use std::io::Write as _;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use huizhen_core::runner::BuildContext;
use huizhen_core::sinks::{Sink, SinkConfig};
use huizhen_core::store::Effect;
use huizhen_core::template::{self, Template};
use huizhen_core::work::{StepError, Work};
use serde::Deserialize;

/// `- file: {…}` in `sinks:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The folder the files go to (created when missing).
    pub dir: PathBuf,
    /// The file name, a template relative to `dir`; default `{{id}}` with an extension by the
    /// message kind (`.hl7`, `.json`, `.txt`, `.xml`, else `.bin`).
    #[serde(default)]
    pub file_name: Option<Template>,
    /// Write each `hl7v2` message as an HL7 batch file (FHS/BHS/BTS/FTS).
    #[serde(default)]
    pub hl7_batch: bool,
    /// The sink's name in effects and errors (default `file#<index>`).
    #[serde(default)]
    pub name: Option<String>,
}

#[typetag::deserialize(name = "file")]
impl SinkConfig for FileSinkConfig {
    fn build(&self, _ctx: &BuildContext, index: usize) -> Result<Arc<dyn Sink>, String> {
        if self.dir.as_os_str().is_empty() {
            return Err("dir: the folder is empty".into());
        }
        if let Some(t) = &self.file_name {
            check_name(t)?;
        }
        Ok(Arc::new(FileSink {
            name: self.name.clone().unwrap_or_else(|| format!("file#{index}")),
            index,
            config: self.clone(),
            writing: tokio::sync::Mutex::new(()),
        }))
    }
}

/// The literal text of a name template may name subfolders below `dir`, never above it.
fn check_name(t: &Template) -> Result<(), String> {
    let src = t.source();
    if src.trim().is_empty() {
        return Err("file_name: the file name is empty".into());
    }
    if src.starts_with('/') || src.starts_with('\\') || Path::new(src).is_absolute() {
        return Err(format!(
            "file_name: {src:?} must be relative to dir (no leading `/`)"
        ));
    }
    if src.contains('\\') {
        return Err(format!("file_name: {src:?}: separate folders with `/`"));
    }
    if src.split('/').any(|c| c == ".." || c == ".") {
        return Err(format!(
            "file_name: {src:?}: `.` and `..` are not allowed in a name"
        ));
    }
    if src.ends_with('/') {
        return Err(format!(
            "file_name: {src:?} ends with `/`: it must name a file"
        ));
    }
    if t.texts().any(|x| x.chars().any(char::is_control)) {
        return Err(format!("file_name: {src:?} holds a control character"));
    }
    Ok(())
}

struct FileSink {
    name: String,
    /// The sink's place in the pipeline, in its temporary file names.
    index: usize,
    config: FileSinkConfig,
    /// One write at a time per sink in this process, so two workers never race on one name
    /// between the existence check and the rename.
    writing: tokio::sync::Mutex<()>,
}

fn extension(kind: &str) -> &'static str {
    match kind {
        "hl7v2" => "hl7",
        "json" | "fhir+json" => "json",
        "text" => "txt",
        "xml" => "xml",
        _ => "bin",
    }
}

/// What a delivery did.
enum Outcome {
    Written,
    AlreadyThere,
}

impl FileSink {
    fn path_and_bytes(&self, work: &mut Work) -> Result<(PathBuf, Vec<u8>), StepError> {
        let rel = match &self.config.file_name {
            Some(t) => t.render(work, &template::file_name_part)?,
            None => format!("{}.{}", work.id, extension(&work.kind)),
        };
        // The rendered name is checked again as a path: only normal components below `dir`.
        let relp = Path::new(&rel);
        if rel.is_empty()
            || relp
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(StepError::permanent(format!(
                "the file name {rel:?} is not a name below dir"
            )));
        }
        let bytes = if self.config.hl7_batch {
            if work.kind != "hl7v2" {
                return Err(StepError::permanent(format!(
                    "hl7_batch needs an hl7v2 message, this one is {}",
                    work.kind
                )));
            }
            let time = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(work.received_at)
                .map(|t| t.format("%Y%m%d%H%M%S").to_string())
                .unwrap_or_default();
            let id = work.id.clone();
            huizhen_hl7::batch::wrap(work.body(), &id, &time)
                .map_err(|e| StepError::permanent(format!("hl7_batch: {e}")))?
        } else {
            work.body().to_vec()
        };
        Ok((self.config.dir.join(relp), bytes))
    }
}

impl Sink for FileSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Vec<Effect>, StepError>> {
        Box::pin(async move {
            let (path, bytes) = self.path_and_bytes(work)?;
            let temp_name = format!(".huizhen-{}-{}.tmp", work.id, self.index);
            let _one = self.writing.lock().await;
            let shown = path.display().to_string();
            let p = path.clone();
            let done = tokio::task::spawn_blocking(move || write_once(&p, &temp_name, &bytes))
                .await
                .map_err(|e| StepError::new(format!("the file writer stopped: {e}")))?;
            let outcome = match done {
                Ok(o) => o,
                Err(WriteError::Other(e)) => {
                    return Err(StepError::permanent(format!("{shown}: {e}")));
                }
                Err(WriteError::Io(what, e)) => {
                    return Err(StepError::new(format!("{shown}: {what}: {e}")));
                }
            };
            Ok(vec![Effect {
                sink: self.name.clone(),
                pipeline: work.pipeline.clone(),
                body: serde_json::to_vec(&serde_json::json!({
                    "file": shown,
                    "written": matches!(outcome, Outcome::Written),
                }))
                .unwrap_or_default(),
                as_received: false,
            }])
        })
    }
}

enum WriteError {
    /// Retryable: the disk, a permission, a missing mount.
    Io(&'static str, std::io::Error),
    /// Permanent: a file of that name with other bytes.
    Other(String),
}

/// Writes `bytes` to `path` unless it already holds exactly them: temporary file in the same
/// folder, fsync, rename, fsync of the folder.
fn write_once(path: &Path, temp_name: &str, bytes: &[u8]) -> Result<Outcome, WriteError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    match std::fs::read(path) {
        Ok(existing) if existing == bytes => return Ok(Outcome::AlreadyThere),
        Ok(_) => {
            return Err(WriteError::Other(
                "a file of that name exists with other content; it is not overwritten (move it away and reprocess the message)".into(),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(WriteError::Io("reading the existing file", e)),
    }
    std::fs::create_dir_all(dir).map_err(|e| WriteError::Io("creating the folder", e))?;
    let temp = dir.join(temp_name);
    let mut f = std::fs::File::create(&temp).map_err(|e| WriteError::Io("creating", e))?;
    f.write_all(bytes)
        .map_err(|e| WriteError::Io("writing", e))?;
    f.sync_all().map_err(|e| WriteError::Io("syncing", e))?;
    drop(f);
    std::fs::rename(&temp, path).map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        WriteError::Io("renaming the temporary file", e)
    })?;
    sync_dir(dir).map_err(|e| WriteError::Io("syncing the folder", e))?;
    Ok(Outcome::Written)
}

/// Makes the rename durable (the folder's entry). Folders cannot be opened for syncing on
/// Windows, where the rename is durable once it returns.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    if cfg!(unix) {
        std::fs::File::open(dir)?.sync_all()
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use huizhen_core::config::validate_text;

    fn check(sink: &str, expected: &[&str]) {
        let text = format!(
            "version: 1\nname: out\nsource:\n  http: {{ path: /in/out }}\nsinks:\n  - file:\n{sink}"
        );
        assert_eq!(validate_text(&text), expected, "{sink}");
    }

    #[test]
    fn config_errors_name_line_and_column() {
        check(
            "      dir: /tmp/out\n      file_name: \"{{date}}/{{id}}.hl7\"\n",
            &[],
        );
        check(
            "      dir: /tmp/out\n      file_name: \"../{{id}}\"\n",
            &["8:18: sinks[0]: file_name: \"../{{id}}\": `.` and `..` are not allowed in a name"],
        );
        check(
            "      dir: /tmp/out\n      file_name: \"/etc/{{id}}\"\n",
            &[
                "8:18: sinks[0]: file_name: \"/etc/{{id}}\" must be relative to dir (no leading `/`)",
            ],
        );
        check(
            "      dir: /tmp/out\n      file_name: \"{{idd}}.hl7\"\n",
            &[
                "8:18: template \"{{idd}}.hl7\": unknown placeholder {{idd}}; did you mean {{id}}? use id, pipeline, facility, kind, source, received_at, date, header.NAME or = EXPR",
            ],
        );
        check(
            "      file_name: \"{{id}}\"\n",
            &["7:7: missing required key `dir` in `file`"],
        );
    }

    #[test]
    fn written_once_and_never_over_other_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/a.hl7");
        assert!(matches!(
            write_once(&path, ".huizhen-m1.tmp", b"MSH|1"),
            Ok(Outcome::Written)
        ));
        assert!(matches!(
            write_once(&path, ".huizhen-m1.tmp", b"MSH|1"),
            Ok(Outcome::AlreadyThere)
        ));
        assert!(matches!(
            write_once(&path, ".huizhen-m2.tmp", b"MSH|2"),
            Err(WriteError::Other(_))
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"MSH|1");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.hl7"], "no temporary file is left");
    }
}
