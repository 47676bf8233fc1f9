//! Running a test file: an engine of its own, one case at a time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::check::{Observed, check_case};
use super::file::{Case, TestFile};
use crate::config::{ConfigError, Loaded};
use crate::message::{Message, NewMessage, State};
use crate::runner::tap::{Passage, Tap};
use crate::runner::{Engine, EngineOptions};
use crate::store::ListFilter;

/// What a test file gave.
#[derive(Debug)]
pub struct FileReport {
    pub file: PathBuf,
    /// Why the file's cases could not run (the file or the configuration has errors, the
    /// engine did not start), each an `error: …` text, with file:line:column where it has one.
    pub errors: Vec<String>,
    pub cases: Vec<CaseReport>,
}

/// One case's result.
#[derive(Debug)]
pub struct CaseReport {
    pub name: String,
    /// Where the case is written (line of its `- name:`).
    pub line: u64,
    /// What did not match, each a readable block (a diff for bodies). Empty: the case passed.
    pub failures: Vec<String>,
    /// The steps and sinks the message passed, with what each made of it.
    pub trail: Vec<String>,
}

impl CaseReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The clock of a test file without `now:`: a Monday morning in China.
const DEFAULT_NOW: &str = "2026-01-05T09:00:00+08:00";

/// Runs one test file under the root configuration `root_file` (`-c`, or `./huizhen.yaml`,
/// or the embedded defaults).
pub async fn run(file: &Path, root_file: Option<&Path>) -> FileReport {
    let mut report = FileReport {
        file: file.to_path_buf(),
        errors: Vec::new(),
        cases: Vec::new(),
    };
    let test = match std::fs::read_to_string(file)
        .map_err(|e| ConfigError::file(file, format!("cannot read: {e}")))
        .and_then(|t| crate::config::parse_yaml::<TestFile>(file, &t))
    {
        Ok(t) => t,
        Err(e) => {
            report.errors.push(e.to_string());
            return report;
        }
    };
    let now = test.now.as_ref().map_or(DEFAULT_NOW, |n| n.value.as_str());
    let now = match chrono::DateTime::parse_from_rfc3339(now) {
        Ok(t) => t.with_timezone(&chrono::Utc),
        Err(e) => {
            let at = test.now.as_ref().map(|n| n.referenced);
            report.errors.push(located(
                file,
                at.as_ref(),
                format!("now: {now:?} is not an RFC 3339 time ({e})"),
            ));
            return report;
        }
    };
    let mut loaded = match crate::config::load(root_file) {
        Ok(l) => l,
        Err(errors) => {
            report.errors.push(format!(
                "error: the configuration the pipelines run with has errors:\n{errors}"
            ));
            return report;
        }
    };
    let dir = match TempDir::new() {
        Ok(d) => d,
        Err(e) => {
            report
                .errors
                .push(format!("error: cannot make a temporary folder: {e}"));
            return report;
        }
    };
    isolate(&mut loaded, &dir.0);
    let pipeline = test.pipeline.value.clone();
    let wanted = std::iter::once((pipeline.as_str(), &test.pipeline.referenced)).chain(
        test.cases
            .iter()
            .filter_map(|c| c.value.pipeline.as_deref().map(|p| (p, &c.referenced))),
    );
    for (pipeline, at) in wanted {
        if loaded
            .pipelines
            .iter()
            .any(|p| p.config.name.value == pipeline)
        {
            continue;
        }
        let names: Vec<String> = loaded
            .pipelines
            .iter()
            .map(|p| format!("{:?}", p.config.name.value))
            .collect();
        let hint = crate::config::did_you_mean(
            pipeline,
            loaded
                .pipelines
                .iter()
                .map(|p| p.config.name.value.as_str()),
        )
        .map(|s| format!("did you mean {s:?}?"))
        .unwrap_or_else(|| format!("the pipelines are {}", names.join(", ")));
        report.errors.push(located(
            file,
            Some(at),
            format!("pipeline: no pipeline {pipeline:?} is loaded; {hint}"),
        ));
    }
    if !report.errors.is_empty() {
        return report;
    }
    let clock = Arc::new(crate::clock::FakeClock::new(now));
    let engine = match Engine::start_with(
        loaded,
        EngineOptions {
            clock,
            sources: false,
            dry_run: true,
        },
    )
    .await
    {
        Ok(e) => e,
        Err(e) => {
            report
                .errors
                .push(format!("error: the pipelines could not start: {e}"));
            return report;
        }
    };
    let mut tap = engine.taps().open(None, None, 100_000);
    let base = file.parent().unwrap_or(Path::new("."));
    for (n, case) in test.cases.iter().enumerate() {
        let r = run_case(
            &engine,
            &mut tap,
            case.value.pipeline.as_deref().unwrap_or(pipeline.as_str()),
            base,
            n,
            &case.value,
            test.timeout,
        )
        .await;
        report.cases.push(CaseReport {
            name: case.value.name.clone(),
            line: case.referenced.line(),
            failures: r.0,
            trail: r.1,
        });
    }
    drop(tap);
    engine.shutdown(Duration::from_secs(5)).await;
    drop(dir);
    report
}

/// `file:line:column: message`, or `file: message` without a position.
fn located(file: &Path, at: Option<&serde_saphyr::Location>, message: String) -> String {
    match at {
        Some(l) => format!(
            "{}:{}:{}: error: {message}",
            file.display(),
            l.line(),
            l.column()
        ),
        None => format!("{}: error: {message}", file.display()),
    }
}

/// The configuration as `run` loads it, moved into `dir`: the store, keys, audit files and
/// objects; the local queue; one attempt per message; no plugin folder watch.
fn isolate(loaded: &mut Loaded, dir: &Path) {
    let r = &mut loaded.root;
    r.store.url = format!("sqlite://{}", dir.join("test.db").display());
    r.queue = "local".into();
    r.security.encryption = crate::crypto::EncryptionConfig {
        enabled: true,
        keys_file: dir.join("keys"),
        active: None,
        keys: None,
    };
    r.security.audit.key_file = dir.join("audit.key");
    r.security.audit.checkpoint_file = dir.join("audit.checkpoint");
    r.security.audit.witness_command = Vec::new();
    r.objects.dir = dir.join("objects");
    r.plugins.watch = false;
    for p in &mut loaded.pipelines {
        p.config.retry.max_attempts = 1;
    }
}

/// A folder removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<TempDir> {
        let d = std::env::temp_dir().join(format!("huizhen-test-{}", crate::message::new_id()));
        std::fs::create_dir_all(&d)?;
        Ok(TempDir(d))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs one case: (failures, trail).
async fn run_case(
    engine: &Engine,
    tap: &mut Tap,
    pipeline: &str,
    base: &Path,
    n: usize,
    case: &Case,
    timeout: Duration,
) -> (Vec<String>, Vec<String>) {
    let (kind, body) = match case.input.message(base) {
        Ok(m) => m,
        Err(e) => return (vec![e], Vec::new()),
    };
    let Some(handle) = engine.pipeline(pipeline) else {
        return (
            vec![format!("pipeline {pipeline:?} is not running")],
            Vec::new(),
        );
    };
    let mut m = NewMessage::new(pipeline, "", &kind, body);
    m.headers = case.input.headers.clone();
    m.source = format!("test case {}", n + 1);
    if let Some(k) = crate::expr::kind_intake(&kind)
        && let Err(e) = (k.intake)(&mut m)
    {
        return (vec![format!("input: {e}")], Vec::new());
    }
    // Cases are independent inputs, even when they reuse a control id.
    m.dedup_key = m.dedup_key.map(|k| format!("{k}#case{}", n + 1));
    let input = m.preview();
    let accepted = match handle.submit(m).await {
        Ok(a) => a,
        Err(e) => return (vec![format!("the input was not accepted: {e}")], Vec::new()),
    };
    if accepted.duplicate {
        return (
            vec!["the input was taken as a resend of an earlier one".into()],
            Vec::new(),
        );
    }
    let id = accepted.id.clone();
    let started = Instant::now();
    let mut passages: Vec<Passage> = Vec::new();
    let messages = loop {
        while let Ok(p) = tap.rx.try_recv() {
            if p.trace_id == id {
                passages.push(p);
            }
        }
        let list = engine
            .store
            .list(&ListFilter {
                q: Some(id.clone()),
                limit: Some(1000),
                ..ListFilter::default()
            })
            .await;
        let trace: Vec<Message> = match list {
            Ok(page) => page
                .messages
                .into_iter()
                .filter(|m| m.id == id || m.trace_id == id)
                .collect(),
            Err(e) => return (vec![format!("the test store failed: {e}")], Vec::new()),
        };
        let settled = trace.iter().any(|m| m.id == id)
            && trace
                .iter()
                .all(|m| matches!(m.state, State::Done | State::Dead));
        if settled {
            // Passages are reported before the outcome commits: all are in the tap now.
            while let Ok(p) = tap.rx.try_recv() {
                if p.trace_id == id {
                    passages.push(p);
                }
            }
            break trace;
        }
        if started.elapsed() > timeout {
            let trail = super::check::trail(&passages);
            return (
                vec![format!(
                    "the message did not finish within {timeout:?} (its messages: {})",
                    trace
                        .iter()
                        .map(|m| format!("{} {:?}", m.pipeline, m.state))
                        .collect::<Vec<_>>()
                        .join(", ")
                )],
                trail,
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let root = messages
        .iter()
        .find(|m| m.id == id)
        .cloned()
        .expect("settled above");
    let observed = Observed {
        pipeline,
        input: &input,
        root: &root,
        messages: &messages,
        passages: &passages,
    };
    let failures = check_case(&observed, case);
    (failures, super::check::trail(&passages))
}
