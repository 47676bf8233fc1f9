//! Running a test file: an engine of its own, one case at a time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Isolated;
use super::check::{Observed, check_case};
use super::file::{Case, TestFile};
use crate::config::ConfigError;
use crate::message::NewMessage;

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
    let loaded = match crate::config::load(root_file) {
        Ok(l) => l,
        Err(errors) => {
            report.errors.push(format!(
                "error: the configuration the pipelines run with has errors:\n{errors}"
            ));
            return report;
        }
    };
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
    let mut iso = match Isolated::start(loaded, now).await {
        Ok(i) => i,
        Err(e) => {
            report.errors.push(format!("error: {e}"));
            return report;
        }
    };
    let base = file.parent().unwrap_or(Path::new("."));
    for (n, case) in test.cases.iter().enumerate() {
        let r = run_case(
            &mut iso,
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
    iso.stop().await;
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

/// Runs one case: (failures, trail).
async fn run_case(
    iso: &mut Isolated,
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
    let accepted = match iso.submit(m).await {
        Ok(a) => a,
        Err(e) => return (vec![e], Vec::new()),
    };
    let trace = match iso.wait(&accepted.id, timeout).await {
        Ok(t) => t,
        Err((why, passages)) => return (vec![why], super::check::trail(&passages)),
    };
    let (messages, passages) = (trace.messages, trace.passages);
    let root = trace.root;
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
