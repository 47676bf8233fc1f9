//! `huizhen test`: pipeline tests with fixtures.
//!
//! A test file `pipelines/NAME.test.yaml` sits next to the pipelines. It names the pipeline
//! its inputs enter and lists cases: an input (inline JSON, text or HL7, or a fixture file),
//! the step or sink to observe, and what is expected there (the outcome, the reason, headers,
//! the body, values at JSON paths, CEL expressions that must hold, the pipelines routed to).
//!
//! Each test file runs in an engine of its own: the configuration `huizhen run` would load,
//! with its store, keys, audit chain and objects in a temporary folder, the workflow's clock
//! standing still at `now:`, no source started (inputs are submitted as their source would
//! submit them) and every sink dry-run (never called: the engine's taps show what it would
//! have got); steps that would reach outside the engine do not either (`dicom_prefetch` makes
//! no association, `settle` opens the settlement in the temporary store and never calls the
//! insurer). A failing step is not retried. Cases of a file run in order on the same store,
//! so a later case may build on an earlier one (an ADT before an order).
//!
//! The seams: `file.rs` (the test file), `isolated.rs` (the engine of its own, shared with
//! `huizhen replay`), `run.rs` (the cases), `check.rs` (expectations against what was
//! observed, with diffs).

mod check;
mod file;
mod isolated;
pub mod replay;
mod run;

use std::path::{Path, PathBuf};

pub use check::diff;
pub use file::{TestFile, is_test_file};
pub use isolated::{Isolated, Trace};
pub use run::{CaseReport, FileReport, run};

/// The test files to run: `paths` (files, and the `*.test.yaml` of folders), or, with none,
/// those beside the pipelines the root configuration loads (its globs' matches that are test
/// files, and `NAME.test.yaml` next to each pipeline file `NAME.yaml`).
pub fn discover(paths: &[PathBuf], root_file: Option<&Path>) -> Result<Vec<PathBuf>, String> {
    let mut files = std::collections::BTreeSet::new();
    if paths.is_empty() {
        let (root, root_file) = crate::config::load_root(root_file).map_err(|e| e.to_string())?;
        let base = root_file
            .as_ref()
            .and_then(|f| f.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        for g in &root.pipelines {
            let pattern = base.join(g);
            let matches = glob::glob(&pattern.to_string_lossy())
                .map_err(|e| format!("invalid pipeline glob {g:?}: {e}"))?;
            for f in matches.flatten() {
                if is_test_file(&f) {
                    files.insert(f);
                } else if let Some(stem) = f.file_stem().and_then(|s| s.to_str()) {
                    for ext in ["test.yaml", "test.yml"] {
                        let t = f.with_file_name(format!("{stem}.{ext}"));
                        if t.is_file() {
                            files.insert(t);
                        }
                    }
                }
            }
        }
        return Ok(files.into_iter().collect());
    }
    for p in paths {
        if p.is_dir() {
            let rd = std::fs::read_dir(p).map_err(|e| format!("{}: {e}", p.display()))?;
            for e in rd.flatten() {
                let f = e.path();
                if f.is_file() && is_test_file(&f) {
                    files.insert(f);
                }
            }
        } else if p.is_file() {
            files.insert(p.clone());
        } else {
            return Err(format!("{}: no such file or folder", p.display()));
        }
    }
    Ok(files.into_iter().collect())
}
