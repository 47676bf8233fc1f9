//! Every error of a pipeline file, not only the first.
//!
//! serde stops at the first error of a document. When a pipeline file does not parse, each
//! document is cut along its top-level keys (and its `steps:` and `sinks:` lists along their
//! items) and each piece is parsed on its own, so that a misspelt key, a misspelt step type and
//! a broken expression further down are all reported. A piece is parsed from the document's
//! text with every other line blanked, so its errors keep the file's line and column; the keys
//! a pipeline requires are appended after the last line when the piece lacks them. The pieces
//! that parse are then parsed together, which finds what no piece shows alone (a required key
//! missing from the file, a key given twice), and, when that succeeds, the pipeline's name that
//! routes from other pipelines may use. Block style only: a document whose top level is
//! not a block mapping keeps its first error.

use std::path::Path;

use serde::Deserialize;

use super::error::did_you_mean;
use super::interpolate::Interpolated;
use super::{ConfigError, PipelineConfig};

/// What a pipeline file gave: the pipelines that parsed, every error, and the names of the
/// pipelines that did not parse (routes to them are not "unknown pipelines").
#[derive(Debug, Default)]
pub struct ParsedFile {
    pub configs: Vec<PipelineConfig>,
    pub errors: Vec<ConfigError>,
    pub failed_names: Vec<String>,
    /// The routes of the steps that parsed in pipelines that did not: their targets are
    /// checked too.
    pub routes: Vec<PartialRoute>,
}

/// A `route` step's target in a pipeline that did not parse.
#[derive(Debug)]
pub struct PartialRoute {
    pub file: std::path::PathBuf,
    pub step: usize,
    pub target: String,
    pub at: serde_saphyr::Location,
}

/// The keys a pipeline requires, with a value that parses, appended to a piece that lacks them.
const REQUIRED: &[(&str, &str)] = &[
    ("version", "version: 1"),
    ("name", "name: salvage"),
    ("source", "source: { internal: {} }"),
];

/// Parses each document of `inter.text` (whose strict parse failed) piece by piece.
pub(super) fn salvage(file: &Path, original: &str, inter: &Interpolated) -> ParsedFile {
    let lines: Vec<&str> = inter.text.split('\n').collect();
    let mut out = ParsedFile::default();
    for doc in documents(&lines) {
        let text = keep(&lines, |i| doc.contains(&i), "");
        match serde_saphyr::from_str::<PipelineConfig>(&text) {
            Ok(c) => out.configs.push(c),
            Err(e) => salvage_doc(file, original, inter, &lines, doc, &e, &mut out),
        }
    }
    out.errors.sort_by_key(|e| (e.line, e.column));
    out.errors.dedup();
    out
}

/// The line ranges of the documents (`---` separates them; `...` ends one).
fn documents(lines: &[&str]) -> Vec<std::ops::Range<usize>> {
    let mut docs = Vec::new();
    let mut start = 0;
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_end();
        let marker = t == "---" || t.starts_with("--- ") || t.starts_with("---\t") || t == "...";
        if marker {
            docs.push(start..i);
            start = i + 1;
        }
    }
    docs.push(start..lines.len());
    docs.retain(|r| {
        lines[r.clone()]
            .iter()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    docs
}

/// `lines` with only those `keep` selects, the others empty, then `extra`.
fn keep(lines: &[&str], keep: impl Fn(usize) -> bool, extra: &str) -> String {
    let mut s = String::new();
    for (i, l) in lines.iter().enumerate() {
        if keep(i) {
            s.push_str(l);
        }
        s.push('\n');
    }
    s.push_str(extra);
    s
}

/// A top-level key and its lines (the key's line to the line before the next key).
struct Region {
    key: String,
    lines: std::ops::Range<usize>,
}

fn regions(lines: &[&str], doc: std::ops::Range<usize>) -> Option<Vec<Region>> {
    let mut regions: Vec<Region> = Vec::new();
    for i in doc.clone() {
        let l = lines[i].trim_end_matches('\r');
        let content = !l.trim().is_empty() && !l.trim_start().starts_with('#');
        if !content || l.starts_with([' ', '\t', '-']) {
            if content && regions.is_empty() {
                return None; // the top level is not a block mapping
            }
            continue;
        }
        let (key, _) = l.split_once(':')?;
        if key.starts_with(['{', '[', '?', '&', '*', '!', '|', '>']) {
            return None;
        }
        if let Some(last) = regions.last_mut() {
            last.lines.end = i;
        }
        regions.push(Region {
            key: key.trim().trim_matches(['"', '\'']).to_owned(),
            lines: i..doc.end,
        });
    }
    (!regions.is_empty()).then_some(regions)
}

/// The items of a block list under `region`'s key: the line ranges of each `- …`.
fn items(lines: &[&str], region: &Region) -> Option<Vec<std::ops::Range<usize>>> {
    let key_line = lines[region.lines.start];
    let after = key_line.split_once(':').map(|(_, v)| v.trim())?;
    if !(after.is_empty() || after.starts_with('#')) {
        return None; // a flow list or a scalar: one piece
    }
    let mut indent = None;
    let mut starts = Vec::new();
    for (i, l) in lines
        .iter()
        .enumerate()
        .take(region.lines.end)
        .skip(region.lines.start + 1)
    {
        let trimmed = l.trim_start();
        let n = l.len() - trimmed.len();
        if trimmed == "-" || trimmed.starts_with("- ") || trimmed.starts_with("-\t") {
            match indent {
                None => {
                    indent = Some(n);
                    starts.push(i);
                }
                Some(k) if k == n => starts.push(i),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    for (j, &s) in starts.iter().enumerate() {
        let end = starts.get(j + 1).copied().unwrap_or(region.lines.end);
        out.push(s..end);
    }
    (!out.is_empty()).then_some(out)
}

fn salvage_doc(
    file: &Path,
    original: &str,
    inter: &Interpolated,
    lines: &[&str],
    doc: std::ops::Range<usize>,
    first: &serde_saphyr::Error,
    out: &mut ParsedFile,
) {
    let located = |text: &str, e: &serde_saphyr::Error| {
        let mut err = ConfigError::from_yaml(file, text, e);
        inter.restore(original, &mut err);
        err
    };
    let Some(regions) = regions(lines, doc.clone()) else {
        let text = keep(lines, |i| doc.contains(&i), "");
        out.errors.push(located(&text, first));
        return;
    };
    let mut errors = Vec::new();
    // Top-level keys whose piece failed, and those an unknown key was probably meant to be
    // (`sourse` → `source`).
    let mut meant: Vec<String> = Vec::new();
    // The lines of the pieces that parsed.
    let mut good: Vec<std::ops::Range<usize>> = Vec::new();
    let parse_piece = |pieces: &[std::ops::Range<usize>]| {
        let text_lines = |i: usize| pieces.iter().any(|p| p.contains(&i));
        let extra: Vec<&str> = REQUIRED
            .iter()
            .filter(|(k, _)| !pieces_have(lines, pieces, k))
            .map(|(_, line)| *line)
            .collect();
        let text = keep(lines, text_lines, &extra.join("\n"));
        let result = serde_saphyr::from_str::<PipelineConfig>(&text);
        (text, result)
    };
    for r in &regions {
        let list = matches!(r.key.as_str(), "steps" | "sinks")
            .then(|| items(lines, r))
            .flatten();
        match list {
            Some(items) => {
                let head = r.lines.start..r.lines.start + 1;
                let mut any = false;
                for (j, item) in items.into_iter().enumerate() {
                    let (text, result) = parse_piece(&[head.clone(), item.clone()]);
                    match result {
                        Ok(c) => {
                            any = true;
                            good.push(item);
                            if let Some(step) = c.steps.first() {
                                for target in step.value.routes_to() {
                                    out.routes.push(PartialRoute {
                                        file: file.to_path_buf(),
                                        step: j,
                                        target,
                                        at: step.referenced,
                                    });
                                }
                            }
                        }
                        Err(e) => errors.push(located(&text, &e)),
                    }
                }
                if any {
                    good.push(head);
                }
            }
            None => {
                let (text, result) = parse_piece(std::slice::from_ref(&r.lines));
                match result {
                    Ok(_) => {
                        good.push(r.lines.clone());
                        if r.key == "name"
                            && let Ok(n) = serde_saphyr::from_str::<NameOnly>(&keep(
                                lines,
                                |i| r.lines.contains(&i),
                                "",
                            ))
                        {
                            out.failed_names.push(n.name);
                        }
                    }
                    Err(e) => {
                        meant.push(r.key.clone());
                        if let serde_saphyr::Error::SerdeUnknownField {
                            field, expected, ..
                        } = e.without_snippet()
                            && let Some(s) = did_you_mean(field, expected.iter().copied())
                        {
                            meant.push(s.to_owned());
                        }
                        errors.push(located(&text, &e));
                    }
                }
            }
        }
    }
    // The good pieces together: what only shows across pieces. A required key whose own
    // piece failed (or that a misspelt key was meant to be) is reported already: it is
    // supplied here.
    let supplied: Vec<&str> = REQUIRED
        .iter()
        .filter(|(k, _)| meant.iter().any(|m| m == k))
        .map(|(_, line)| *line)
        .collect();
    let text = keep(
        lines,
        |i| good.iter().any(|g| g.contains(&i)),
        &supplied.join("\n"),
    );
    match serde_saphyr::from_str::<PipelineConfig>(&text) {
        Ok(c) => {
            // Not checked further (its steps' indexes no longer match the file), but
            // routes to it are not routes to an unknown pipeline.
            if !out.failed_names.contains(&c.name.value) {
                out.failed_names.push(c.name.value);
            }
        }
        Err(e) => errors.push(located(&text, &e)),
    }
    if errors.is_empty() {
        // The pieces disagree with the whole (a construct this cutting does not follow).
        let text = keep(lines, |i| doc.contains(&i), "");
        errors.push(located(&text, first));
    }
    out.errors.extend(errors);
}

/// Whether the lines of `pieces` hold the top-level key `key`.
fn pieces_have(lines: &[&str], pieces: &[std::ops::Range<usize>], key: &str) -> bool {
    pieces.iter().flat_map(|p| p.clone()).any(|i| {
        let l = lines[i];
        !l.starts_with([' ', '\t', '-', '#'])
            && l.split_once(':')
                .is_some_and(|(k, _)| k.trim().trim_matches(['"', '\'']) == key)
    })
}

#[derive(Deserialize)]
struct NameOnly {
    name: String,
}
