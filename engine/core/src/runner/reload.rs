//! Pipeline hot reload (`huizhen reload`, `POST /api/pipelines/reload`, SIGHUP).
//!
//! Every pipeline file is read again (the root's `pipelines:` globs as at start, and the files
//! the running pipelines came from) and validated as `huizhen validate` would, together. Then:
//! - a file that does not parse or whose pipelines do not check is **refused**: its pipelines
//!   keep their running version, and the reason shows in the log, on the pipelines in
//!   `/api/pipelines` (`reload_error`) and in the audit trail;
//! - what the other files hold is compared, pipeline by pipeline, with the text each running
//!   version was loaded from: an unchanged pipeline is left alone (its listener keeps its
//!   connections), a changed one restarts on its new version, a new one starts, one whose file
//!   or document is gone stops;
//! - if what remains still does not check together (a kept file routes to a pipeline a changed
//!   file removed, an outbound pipeline of `huizhen.yaml` is gone), nothing is applied.
//!
//! A restart keeps every message: the old version's source stops, its workers finish the
//! messages they are on (on the old version), what waited in its memory is journaled and made
//! due, and the new version's feeder takes it up in journal order once the old workers are done.
//! `huizhen.yaml` itself is not reloaded: its changes need a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::fleet::Fleet;
use crate::config::{ConfigError, LoadedPipeline, PipelineConfig};

/// What a reload reads besides the files.
pub(crate) struct ReloadState {
    /// The root's `pipelines:` globs, joined to the root file's folder.
    pub globs: Vec<String>,
    /// The text each file of the running pipelines had when they were loaded.
    pub texts: BTreeMap<PathBuf, String>,
    /// The root file, to which a missing outbound pipeline is attributed.
    pub root_file: PathBuf,
    pub workflow: crate::workflow::WorkflowConfig,
    pub billing_outbound: Option<String>,
    /// Work goes through a broker: the broker's queues are declared at start, so a new pipeline
    /// or a new partition count needs every node restarted.
    pub cluster: bool,
}

/// What a reload did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadReport {
    /// Whether anything was applied (false: the files did not check together).
    pub applied: bool,
    /// Pipelines started by this reload.
    pub added: Vec<String>,
    /// Pipelines restarted on their changed version.
    pub restarted: Vec<String>,
    /// Pipelines stopped because their file or document is gone.
    pub removed: Vec<String>,
    /// Pipelines left running as they were.
    pub unchanged: Vec<String>,
    /// Files refused, with their errors; their pipelines keep their running version.
    pub refused: Vec<RefusedFile>,
    /// Pipelines whose new version could not start (its source), with the reason.
    pub failed: Vec<FailedPipeline>,
}

/// A file a reload refused.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RefusedFile {
    pub file: String,
    /// The pipelines of the file that keep running on their previous version.
    pub kept: Vec<String>,
    /// Every error, `file:line:column: message`.
    pub errors: Vec<String>,
}

/// A pipeline whose new version did not start.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FailedPipeline {
    pub pipeline: String,
    pub error: String,
}

impl ReloadReport {
    /// Everything read was applied and started.
    pub fn ok(&self) -> bool {
        self.applied && self.refused.is_empty() && self.failed.is_empty()
    }

    /// One line for the log and the audit trail.
    pub fn summary(&self) -> String {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(", ")
            }
        };
        let mut s = if self.applied {
            format!(
                "added {}; restarted {}; removed {}; unchanged {}",
                list(&self.added),
                list(&self.restarted),
                list(&self.removed),
                self.unchanged.len()
            )
        } else {
            "nothing applied: the files do not check together".to_owned()
        };
        for r in &self.refused {
            s.push_str(&format!(
                "; refused {} (kept: {}): {}",
                r.file,
                list(&r.kept),
                r.errors.join(" | ")
            ));
        }
        for f in &self.failed {
            s.push_str(&format!("; {} did not start: {}", f.pipeline, f.error));
        }
        s
    }
}

/// One line of a config error (no snippet), for the API and the audit trail.
fn one_line(e: &ConfigError) -> String {
    if e.line == 0 {
        format!("{}: {}", e.file.display(), e.message)
    } else {
        format!(
            "{}:{}:{}: {}",
            e.file.display(),
            e.line,
            e.column,
            e.message
        )
    }
}

/// Reads a pipeline file: `Ok(None)` when it is gone.
fn read(file: &Path) -> Result<Option<String>, String> {
    match std::fs::read(file) {
        Ok(bytes) => String::from_utf8(bytes).map(Some).map_err(|e| {
            format!(
                "{}: not UTF-8 (invalid byte at offset {}); save the file as UTF-8",
                file.display(),
                e.utf8_error().valid_up_to()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: cannot read: {e}", file.display())),
    }
}

/// The text of each pipeline of a file, in order: its YAML document (the file is cut at its
/// `---` lines, documents of comments only dropped) when that gives one per pipeline, else
/// the whole file for each. Prefixed by the file, so a pipeline moved to another file counts as
/// changed.
pub(super) fn fingerprints(file: &Path, text: &str, pipelines: usize) -> Vec<String> {
    let mut docs: Vec<String> = vec![String::new()];
    for line in text.lines() {
        let marker = line == "---" || line.starts_with("--- ") || line == "...";
        if marker {
            docs.push(String::new());
        } else if let Some(d) = docs.last_mut() {
            d.push_str(line);
            d.push('\n');
        }
    }
    docs.retain(|d| {
        d.lines().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        })
    });
    let file = file.display();
    if docs.len() == pipelines {
        docs.into_iter().map(|d| format!("{file}\n{d}")).collect()
    } else {
        vec![format!("{file}\n{text}"); pipelines]
    }
}

/// A file's pipelines as a reload sees them.
struct FileChoice {
    text: String,
    /// The text differs from the running one (or the file is new).
    changed: bool,
}

fn parse(file: &Path, text: &str) -> Result<Vec<PipelineConfig>, ConfigError> {
    crate::config::parse_pipelines(file, text)
}

impl Fleet {
    /// Reloads the pipeline files: see the module documentation. Reloads run one at a time.
    pub(crate) async fn reload(&self) -> ReloadReport {
        let mut state = self.reload.lock().await;
        let mut report = ReloadReport::default();
        let mut refused: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();

        // The files: what the globs match now, and what the running pipelines came from.
        let mut files: BTreeSet<PathBuf> = self.files().into_iter().collect();
        files.extend(state.texts.keys().cloned());
        for g in &state.globs {
            match glob::glob(g) {
                Ok(paths) => files.extend(
                    paths
                        .flatten()
                        .filter(|f| !crate::pipetest::is_test_file(f)),
                ),
                Err(e) => tracing::warn!(glob = %g, error = %e, "pipeline glob not read"),
            }
        }
        let mut chosen: BTreeMap<PathBuf, FileChoice> = BTreeMap::new();
        for f in &files {
            let old = state.texts.get(f);
            match read(f) {
                Ok(None) => {}
                Ok(Some(text)) if old == Some(&text) => {
                    chosen.insert(
                        f.clone(),
                        FileChoice {
                            text,
                            changed: false,
                        },
                    );
                }
                Ok(Some(text)) => match parse(f, &text) {
                    Ok(_) => {
                        chosen.insert(
                            f.clone(),
                            FileChoice {
                                text,
                                changed: true,
                            },
                        );
                    }
                    Err(e) => {
                        refused.entry(f.clone()).or_default().push(one_line(&e));
                        keep_old(&mut chosen, f, old);
                    }
                },
                Err(e) => {
                    refused.entry(f.clone()).or_default().push(e);
                    keep_old(&mut chosen, f, old);
                }
            }
        }

        // Check everything together; a changed file with errors goes back to its old text,
        // until the changed files left check.
        let remaining = loop {
            let list = loaded(&chosen);
            let mut errors = crate::config::check_with(&list, &self.extensions);
            errors.extend(self.outbound_errors(&state, &list));
            if state.cluster {
                errors.extend(self.cluster_errors(&list, &chosen));
            }
            let mut reverted = false;
            let mut left = Vec::new();
            for e in errors {
                if chosen.get(&e.file).is_some_and(|c| c.changed) {
                    refused
                        .entry(e.file.clone())
                        .or_default()
                        .push(one_line(&e));
                    let old = state.texts.get(&e.file).cloned();
                    keep_old(&mut chosen, &e.file, old.as_ref());
                    reverted = true;
                } else {
                    left.push(e);
                }
            }
            if !reverted {
                break left;
            }
        };
        if !remaining.is_empty() {
            for e in &remaining {
                refused.entry(e.file.clone()).or_default().push(one_line(e));
            }
            report.refused = self.refusals(&refused, &state);
            report.unchanged = self.names();
            let errors = self.errors_by_pipeline(&report.refused);
            self.set_reload_errors(&errors);
            tracing::error!(summary = %report.summary(), "pipeline reload refused");
            return report;
        }
        report.applied = true;

        // What changed, pipeline by pipeline.
        let mut wanted: BTreeMap<String, (LoadedPipeline, String)> = BTreeMap::new();
        for (file, c) in &chosen {
            let Ok(configs) = parse(file, &c.text) else {
                continue;
            };
            let fps = fingerprints(file, &c.text, configs.len());
            for (config, fp) in configs.into_iter().zip(fps) {
                wanted.insert(
                    config.name.value.clone(),
                    (
                        LoadedPipeline {
                            file: file.clone(),
                            config,
                        },
                        fp,
                    ),
                );
            }
        }
        let removed: Vec<String> = self
            .names()
            .into_iter()
            .filter(|n| !wanted.contains_key(n))
            .collect();
        for name in &removed {
            self.remove(name).await;
            tracing::info!(pipeline = %name, "pipeline removed by the reload");
        }
        report.removed = removed;
        let previous = state.texts.clone();
        for (name, (lp, fp)) in wanted {
            let running = self.fingerprint(&name);
            if running.as_deref() == Some(fp.as_str()) {
                report.unchanged.push(name);
                continue;
            }
            let built = match self.build(&lp, fp) {
                Ok(b) => b,
                Err(e) => {
                    refused.entry(lp.file.clone()).or_default().push(format!(
                        "{}: {}",
                        lp.file.display(),
                        e.message
                    ));
                    if running.is_some() {
                        report.unchanged.push(name);
                    }
                    continue;
                }
            };
            let old_file = self.handle(&name).map(|h| PathBuf::from(h.file()));
            let started = if running.is_some() {
                let r = self.replace(built).await;
                if r.is_ok() {
                    tracing::info!(pipeline = %name, "pipeline restarted on its new version");
                }
                report.restarted.push(name.clone());
                r
            } else {
                let r = self.add(built).await;
                if r.is_ok() {
                    tracing::info!(pipeline = %name, "pipeline started by the reload");
                }
                report.added.push(name.clone());
                r
            };
            if let Err(e) = started {
                tracing::error!(pipeline = %name, error = %e, "the new version did not start");
                let mut error = e.to_string();
                if let Some(file) = old_file
                    && self.restore(&name, &file, &previous).await
                {
                    error.push_str("; the previous version runs again");
                }
                report.failed.push(FailedPipeline {
                    pipeline: name,
                    error,
                });
            }
        }

        // Remember what runs now.
        for (file, c) in &chosen {
            state.texts.insert(file.clone(), c.text.clone());
        }
        state.texts.retain(|f, _| chosen.contains_key(f));
        report.refused = self.refusals(&refused, &state);
        let mut errors = self.errors_by_pipeline(&report.refused);
        for f in &report.failed {
            errors.insert(f.pipeline.clone(), f.error.clone());
        }
        self.set_reload_errors(&errors);
        if report.ok() {
            tracing::info!(summary = %report.summary(), "pipelines reloaded");
        } else {
            tracing::error!(summary = %report.summary(), "pipelines reloaded with errors");
        }
        report
    }

    /// Starts the version of `name` that ran before a reload (from `file` as it was), after its
    /// new version could not start. Whether it runs again.
    async fn restore(&self, name: &str, file: &Path, previous: &BTreeMap<PathBuf, String>) -> bool {
        let Some(text) = previous.get(file) else {
            return false;
        };
        let Ok(configs) = parse(file, text) else {
            return false;
        };
        let fps = fingerprints(file, text, configs.len());
        let Some((config, fp)) = configs
            .into_iter()
            .zip(fps)
            .find(|(c, _)| c.name.value == name)
        else {
            return false;
        };
        let lp = LoadedPipeline {
            file: file.to_path_buf(),
            config,
        };
        let Ok(built) = self.build(&lp, fp) else {
            return false;
        };
        match self.replace(built).await {
            Ok(()) => {
                tracing::warn!(pipeline = %name, "the previous version runs again");
                true
            }
            Err(e) => {
                tracing::error!(pipeline = %name, error = %e, "the previous version did not start either");
                false
            }
        }
    }

    /// The outbound pipelines `huizhen.yaml` names must still be among the pipelines.
    fn outbound_errors(&self, state: &ReloadState, list: &[LoadedPipeline]) -> Vec<ConfigError> {
        let names = list.iter().map(|p| p.config.name.value.as_str());
        let mut out: Vec<String> = state.workflow.unknown_outbound_pipelines(names.clone());
        if let Some(p) = state.billing_outbound.as_deref().map(str::trim)
            && !p.is_empty()
            && !names.clone().any(|n| n == p)
        {
            out.push(format!(
                "billing.outbound_pipeline: no pipeline named {p:?}"
            ));
        }
        out.into_iter()
            .map(|m| ConfigError::file(&state.root_file, m))
            .collect()
    }

    /// With a broker: a changed file may not add a pipeline or change an ordered pipeline's
    /// partitions (the broker's queues are declared when the nodes start).
    fn cluster_errors(
        &self,
        list: &[LoadedPipeline],
        chosen: &BTreeMap<PathBuf, FileChoice>,
    ) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        for lp in list {
            if !chosen.get(&lp.file).is_some_and(|c| c.changed) {
                continue;
            }
            let name = &lp.config.name.value;
            let partitions = |ordered: bool, concurrency: usize| {
                if ordered { concurrency.max(1) } else { 0 }
            };
            match self.handle(name) {
                None => errors.push(ConfigError::file(
                    &lp.file,
                    format!("pipeline {name:?} is new: with a broker queue a new pipeline needs every node restarted (its queue is declared at start)"),
                )),
                Some(h) => {
                    let info = h.info();
                    if partitions(info.ordered, info.concurrency)
                        != partitions(lp.config.ordering_key.is_some(), lp.config.concurrency)
                    {
                        errors.push(ConfigError::file(
                            &lp.file,
                            format!("pipeline {name:?}: with a broker queue, changing ordering_key or the concurrency of an ordered pipeline needs every node restarted (its partition queues are declared at start)"),
                        ));
                    }
                }
            }
        }
        errors
    }

    /// The refused files with the pipelines each keeps running.
    fn refusals(
        &self,
        refused: &BTreeMap<PathBuf, Vec<String>>,
        state: &ReloadState,
    ) -> Vec<RefusedFile> {
        refused
            .iter()
            .map(|(file, errors)| {
                let kept = state
                    .texts
                    .get(file)
                    .and_then(|t| parse(file, t).ok())
                    .map(|cs| cs.into_iter().map(|c| c.name.value).collect())
                    .unwrap_or_default();
                let mut errors = errors.clone();
                errors.dedup();
                RefusedFile {
                    file: file.display().to_string(),
                    kept,
                    errors,
                }
            })
            .collect()
    }

    fn errors_by_pipeline(&self, refused: &[RefusedFile]) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for r in refused {
            for p in &r.kept {
                out.insert(p.clone(), r.errors.join("; "));
            }
        }
        out
    }
}

/// Puts a file back to the text its running pipelines came from (a new file: leaves it out).
fn keep_old(chosen: &mut BTreeMap<PathBuf, FileChoice>, file: &Path, old: Option<&String>) {
    match old {
        Some(text) => {
            chosen.insert(
                file.to_path_buf(),
                FileChoice {
                    text: text.clone(),
                    changed: false,
                },
            );
        }
        None => {
            chosen.remove(file);
        }
    }
}

/// The pipelines of the chosen texts (every one parsed before).
fn loaded(chosen: &BTreeMap<PathBuf, FileChoice>) -> Vec<LoadedPipeline> {
    let mut out = Vec::new();
    for (file, c) in chosen {
        if let Ok(configs) = parse(file, &c.text) {
            out.extend(configs.into_iter().map(|config| LoadedPipeline {
                file: file.clone(),
                config,
            }));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_document_is_its_own_fingerprint() {
        let f = Path::new("p.yaml");
        let text = "# two pipelines\n---\nversion: 1\nname: a\n---\nversion: 1\nname: b\n";
        let fps = fingerprints(f, text, 2);
        assert_eq!(fps.len(), 2);
        assert!(fps[0].ends_with("name: a\n"), "{fps:?}");
        assert!(fps[1].ends_with("name: b\n"), "{fps:?}");
        // Editing b leaves a's fingerprint as it was.
        let edited = text.replace("name: b\n", "name: b\nconcurrency: 2\n");
        let after = fingerprints(f, &edited, 2);
        assert_eq!(after[0], fps[0]);
        assert_ne!(after[1], fps[1]);
        // Documents that do not line up with the pipelines: the whole file for each.
        let whole = fingerprints(f, text, 3);
        assert_eq!(whole.len(), 3);
        assert!(whole.iter().all(|w| w.ends_with(text)));
        // Another file, another fingerprint.
        assert_ne!(fingerprints(Path::new("q.yaml"), text, 2)[0], fps[0]);
    }
}
