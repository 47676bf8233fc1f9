//! `huizhen experts`: import the expert registry (YAML or CSV) into the store and list it
//! (issue 14). The formats are the domain's: `ExpertRegistry` in YAML (experts and
//! cooperation agreements; see docs/matching.md) and the CSV of `parse_csv` (experts only).
//! Every problem of a file is reported at once as `FILE:LINE:COLUMN: error: …`; nothing is
//! imported from a file with a problem. Importing is an upsert by id.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};
use huizhen_core::config::ConfigError;
use huizhen_core::store::Store;
use huizhen_domain::expert::{Agreement, Expert, ExpertRegistry, parse_csv};
use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Debug, Subcommand)]
pub enum ExpertsCommand {
    /// Import (upsert by id) experts and agreements from a YAML registry or a CSV file.
    Import(ImportArgs),
    /// Print the registry as a table: id, name, facility, departments, title, licence,
    /// last heartbeat, open consultations.
    List,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The registry file: `.csv` is read as CSV, anything else as YAML.
    pub file: PathBuf,
    /// Check the file and print what would be imported, without writing.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(store: &Store, cmd: ExpertsCommand) -> Result<ExitCode> {
    match cmd {
        ExpertsCommand::Import(a) => import(store, &a).await,
        ExpertsCommand::List => list(store).await,
    }
}

/// Where each entry of a YAML registry starts, to put a line on `problems()`.
#[derive(Deserialize)]
struct Positions {
    #[serde(default)]
    experts: Vec<Spanned<serde::de::IgnoredAny>>,
    #[serde(default)]
    agreements: Vec<Spanned<serde::de::IgnoredAny>>,
}

/// Reads a registry file into experts and agreements, or every problem with its position.
pub fn read_registry(file: &Path) -> Result<(Vec<Expert>, Vec<Agreement>), String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("{}: error: cannot read: {e}", file.display()))?;
    let is_csv = file
        .extension()
        .is_some_and(|x| x.eq_ignore_ascii_case("csv"));
    if is_csv {
        return parse_csv(&text).map(|e| (e, Vec::new())).map_err(|err| {
            err.problems
                .iter()
                .map(|p| match &p.column {
                    Some((n, name)) => format!(
                        "{}:{}:{n}: error: {} (column `{name}`)",
                        file.display(),
                        p.line,
                        p.message
                    ),
                    None => format!("{}:{}:1: error: {}", file.display(), p.line, p.message),
                })
                .collect::<Vec<_>>()
                .join("\n")
        });
    }
    let registry: ExpertRegistry = serde_saphyr::from_str(&text)
        .map_err(|e| ConfigError::from_yaml(file, &text, &e).to_string())?;
    let problems = registry.problems();
    if problems.is_empty() {
        return Ok((registry.experts, registry.agreements));
    }
    let positions: Option<Positions> = serde_saphyr::from_str(&text).ok();
    let at = |problem: &str| -> (u64, u64) {
        let entry = |list: &str| -> Option<usize> {
            problem
                .strip_prefix(list)?
                .strip_prefix('[')?
                .split_once(']')?
                .0
                .parse()
                .ok()
        };
        let loc = positions.as_ref().and_then(|p| {
            if let Some(i) = entry("experts") {
                p.experts.get(i).map(|s| s.referenced)
            } else if let Some(i) = entry("agreements") {
                p.agreements.get(i).map(|s| s.referenced)
            } else {
                None
            }
        });
        loc.map_or((1, 1), |l| (l.line(), l.column()))
    };
    Err(problems
        .iter()
        .map(|p| {
            let (line, column) = at(p);
            format!("{}:{line}:{column}: error: {p}", file.display())
        })
        .collect::<Vec<_>>()
        .join("\n"))
}

async fn import(store: &Store, a: &ImportArgs) -> Result<ExitCode> {
    let (experts, agreements) = match read_registry(&a.file) {
        Ok(r) => r,
        Err(problems) => {
            eprintln!("{problems}");
            let n = problems.lines().filter(|l| l.contains(": error: ")).count();
            eprintln!(
                "{n} error{}; nothing imported",
                if n == 1 { "" } else { "s" }
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    if a.dry_run {
        println!(
            "ok: {} experts and {} agreements would be imported from {}",
            experts.len(),
            agreements.len(),
            a.file.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let name = a.file.display().to_string();
    let event = crate::security::cli_event(
        "expert.import",
        "ExpertRegistry",
        &name,
        format!("{} experts, {} agreements", experts.len(), agreements.len()),
    );
    let s = store
        .upsert_experts(&experts, &agreements, Some(&event))
        .await?;
    println!(
        "imported {name}: {} experts added, {} updated, {} agreements",
        s.experts_added, s.experts_updated, s.agreements
    );
    Ok(ExitCode::SUCCESS)
}

async fn list(store: &Store) -> Result<ExitCode> {
    let experts = store.list_experts().await?;
    let agreements = store.list_agreements().await?;
    let rows: Vec<[String; 8]> = experts
        .iter()
        .map(|e| {
            [
                e.id.clone(),
                e.name.clone(),
                e.facility.clone(),
                e.departments.join(";"),
                e.title.to_string(),
                if e.licence_verified && e.registration_active {
                    "yes".into()
                } else {
                    "no".into()
                },
                e.presence.last_heartbeat.map_or_else(
                    || "-".into(),
                    |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                ),
                e.load.open_consultations.to_string(),
            ]
        })
        .collect();
    let header = [
        "ID",
        "NAME",
        "FACILITY",
        "DEPARTMENTS",
        "TITLE",
        "LICENSED",
        "LAST HEARTBEAT",
        "OPEN",
    ];
    print!("{}", table(&header, &rows));
    println!("{} experts, {} agreements", experts.len(), agreements.len());
    if experts.is_empty() {
        eprintln!("the registry is empty: import one with `huizhen experts import FILE`");
    }
    Ok(ExitCode::SUCCESS)
}

/// Left-aligned columns, two spaces apart, in terminal columns (a CJK character takes two).
fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    use unicode_width::UnicodeWidthStr;
    let mut widths = header.map(UnicodeWidthStr::width);
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.width());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            out.push_str(c);
            if i + 1 < N {
                out.extend(std::iter::repeat_n(' ', w - c.width() + 2));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_with_cjk_names() {
        let t = table(
            &["ID", "NAME", "OPEN"],
            &[
                ["e-1".into(), "张明".into(), "2".into()],
                ["e-22".into(), "Li".into(), "0".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "ID    NAME  OPEN");
        assert_eq!(lines[1], "e-1   张明  2");
        assert_eq!(lines[2], "e-22  Li    0");
    }

    #[test]
    fn registry_problems_name_the_line_of_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.yaml");
        std::fs::write(
            &file,
            "version: 1\nexperts:\n  - { id: a, name: A, facility: H, departments: [\"03\"], title: chief, independent_practice_since: 2001-01-01, licence_verified: true, registration_active: true }\n  - { id: a, name: B, facility: H, departments: [\"03\"], title: chief, independent_practice_since: 2001-01-01, licence_verified: true, registration_active: true }\n",
        )
        .unwrap();
        let err = read_registry(&file).unwrap_err();
        assert!(
            err.contains("r.yaml:4:5: error: experts[1] (id `a`): the id is used twice"),
            "{err}"
        );
    }
}
