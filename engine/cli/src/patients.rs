//! `huizhen patients`: bulk import into the patient identity index and its cross-reference
//! and candidate pairs as CSV.
//!
//! * `import --facility F FILE` reads FHIR R4 `Patient` resources as NDJSON (the FHIR bulk-data
//!   format, one resource per line) and links each one as it is read, exactly as the
//!   `match_patient` step does (default weights and thresholds: only a deterministic rule
//!   links, probable and possible candidates go to the review queue). Progress goes to stderr.
//!   A line that cannot be read is reported as `FILE:LINE: field.path: what` (without the value,
//!   which may be patient data) and skipped; the command then exits 1.
//! * `links` prints `facility,local_id,person_id`, one line per record.
//! * `pairs [--min-grade probable]` prints `facility_a,local_id_a,facility_b,local_id_b,grade,score`
//!   for every pair the matcher graded at least that (default `possible`).
//! * `undo BATCH --reason …` reverses a change of links (a merge: the unmerge); `reseal`
//!   re-seals the demographics with the active key (after a rotation or turning encryption on).
//!
//! Each line is read with the FHIR adapter (`huizhen_fhir::patient_demographics`: fhir-sdk's
//! R4B model; the mapping rules are in `adapters/fhir/src/patient.rs` and docs/matching.md).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use huizhen_core::store::Store;
use huizhen_core::store::identity::{grade_name, parse_grade};
use huizhen_domain::identity::{Demographics, Grade, NormalizedPerson, normalize};

use crate::security::cli_event;

#[derive(Debug, Subcommand)]
pub enum PatientsCommand {
    /// Import FHIR R4 Patient resources (NDJSON, one per line), linking each as it is read.
    Import(ImportArgs),
    /// Print the cross-reference as CSV: facility,local_id,person_id.
    Links,
    /// Print every candidate pair the matcher found as CSV:
    /// facility_a,local_id_a,facility_b,local_id_b,grade,score.
    Pairs(PairsArgs),
    /// Undo a change of links by its history batch (an ADT^A40 merge, an unlink, an accepted
    /// review): every record goes back to the person it had. The batch is in the history of
    /// GET /api/patients/{person_id}/identifiers and in the `merge-batch` header.
    Undo {
        /// The history batch.
        batch: String,
        /// Why (kept in the history and the audit trail).
        #[arg(long)]
        reason: String,
    },
    /// Re-seal the stored demographics with the active data key and rebuild the blocking keys
    /// (after `keys rotate`, or after turning encryption at rest on).
    Reseal,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The facility (assigning authority) of the records' local ids.
    #[arg(long)]
    facility: String,
    /// The NDJSON file of Patient resources.
    file: PathBuf,
}

#[derive(Debug, Args)]
pub struct PairsArgs {
    /// The lowest grade printed: certain, probable or possible.
    #[arg(long, default_value = "possible")]
    min_grade: String,
}

/// Reads one NDJSON line; errors are (field path, what), without values.
fn read_line(text: &str, facility: &str) -> Result<Demographics, (String, String)> {
    huizhen_fhir::patient_demographics(text, facility).map_err(|e| {
        let what = match e.column {
            Some(c) => format!("{} (column {c})", e.what),
            None => e.what,
        };
        (e.path, what)
    })
}

/// Quotes a CSV field when it needs it (RFC 4180).
fn csv(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

pub async fn run(store: &Store, cmd: PatientsCommand) -> Result<ExitCode> {
    match cmd {
        PatientsCommand::Import(args) => import(store, args).await,
        PatientsCommand::Undo { batch, reason } => {
            let reason = reason.trim();
            anyhow::ensure!(!reason.is_empty(), "--reason must not be empty");
            let event = cli_event(
                "patient.undo",
                "Patient",
                &batch,
                format!("undo of batch {batch}: {reason}"),
            );
            let by = huizhen_core::store::identity::ChangeBy {
                actor: &event.actor,
                reason,
                audit: Some(&event),
            };
            match store.identity_undo(&batch, by).await? {
                Some((undo, n)) => {
                    println!("{n} records moved back (undo batch {undo})");
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("error: batch {batch} has nothing to undo (unknown or undone)");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        PatientsCommand::Reseal => {
            store
                .audit(&cli_event(
                    "patient.reseal",
                    "Patient",
                    "",
                    "patients reseal".into(),
                ))
                .await?;
            let (mut after, mut scanned, mut rewritten) = (0i64, 0u64, 0u64);
            loop {
                let (n, w, next) = store.identity_reseal_batch(after, 500).await?;
                scanned += n;
                rewritten += w;
                match next {
                    Some(id) => after = id,
                    None => break,
                }
                eprintln!("{scanned} records looked at, {rewritten} re-sealed");
            }
            println!("{scanned} records looked at, {rewritten} re-sealed");
            Ok(ExitCode::SUCCESS)
        }
        PatientsCommand::Links => {
            let rows = store.identity_links(None).await?;
            store
                .audit(&cli_event(
                    "patient.read",
                    "Patient",
                    "",
                    format!("patients links: {} records", rows.len()),
                ))
                .await?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "facility,local_id,person_id")?;
            for r in rows {
                writeln!(
                    out,
                    "{},{},{}",
                    csv(&r.facility),
                    csv(&r.local_id),
                    r.person_id
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        PatientsCommand::Pairs(args) => {
            let min = parse_grade(&args.min_grade)
                .filter(|g| *g != Grade::New)
                .with_context(|| {
                    format!(
                        "--min-grade {:?}: expected certain, probable or possible",
                        args.min_grade
                    )
                })?;
            let pairs = store.identity_pairs(min).await?;
            store
                .audit(&cli_event(
                    "patient.read",
                    "Patient",
                    "",
                    format!(
                        "patients pairs --min-grade {}: {} pairs",
                        grade_name(min),
                        pairs.len()
                    ),
                ))
                .await?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "facility_a,local_id_a,facility_b,local_id_b,grade,score"
            )?;
            for p in pairs {
                writeln!(
                    out,
                    "{},{},{},{},{},{:.3}",
                    csv(&p.facility_a),
                    csv(&p.local_id_a),
                    csv(&p.facility_b),
                    csv(&p.local_id_b),
                    grade_name(p.grade),
                    p.score
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Records linked per transaction by `patients import` (each still decided against everything
/// before it).
const IMPORT_BATCH: usize = 500;

/// What an import has done so far.
struct Progress {
    done: u64,
    grades: [u64; 4],
    started: std::time::Instant,
    tty: bool,
}

impl Progress {
    fn show(&self, err: &mut impl Write) -> Result<()> {
        let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        if self.tty {
            write!(err, "\r\x1b[K{} imported ({rate:.0}/s)", self.done)?;
        } else {
            writeln!(err, "{} imported ({rate:.0}/s)", self.done)?;
        }
        Ok(())
    }
}

async fn import(store: &Store, args: ImportArgs) -> Result<ExitCode> {
    let facility = args.facility.trim();
    anyhow::ensure!(!facility.is_empty(), "--facility must not be empty");
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("cannot open {}", args.file.display()))?;
    let shown = args.file.display().to_string();
    store
        .audit(&cli_event(
            "patient.import",
            "Patient",
            "",
            format!("patients import --facility {facility} {shown}"),
        ))
        .await?;
    let matcher = huizhen_core::patients::default_matcher();
    let actor = cli_event("", "", "", String::new()).actor;
    let tty = std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let mut failed = 0u64;
    let mut progress = Progress {
        done: 0,
        grades: [0; 4],
        started,
        tty,
    };
    let mut batch: Vec<(usize, NormalizedPerson)> = Vec::with_capacity(IMPORT_BATCH);
    let mut err = std::io::stderr().lock();
    // Links a batch in one transaction, each record against the index and those before it.
    let flush = async |batch: &mut Vec<(usize, NormalizedPerson)>,
                       progress: &mut Progress,
                       err: &mut std::io::StderrLock<'_>|
           -> Result<()> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(());
        };
        let lines = format!("{shown}:{}-{}", first.0, last.0);
        let persons: Vec<NormalizedPerson> = batch.drain(..).map(|(_, p)| p).collect();
        let linked =
            huizhen_core::patients::link_normalized(store, &matcher, &persons, &actor, |_| {
                cli_event("patient.auto_link", "Patient", "", String::new())
            })
            .await
            .with_context(|| format!("{lines}: linking"))?;
        for l in &linked {
            let g = match l.decision.grade {
                Grade::Certain => 0,
                Grade::Probable => 1,
                Grade::Possible => 2,
                Grade::New => 3,
            };
            progress.grades[g] += 1;
        }
        progress.done += linked.len() as u64;
        progress.show(err)
    };
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line_no = n + 1;
        let text = line.with_context(|| format!("{shown}:{line_no}: cannot read"))?;
        if text.trim().is_empty() {
            continue;
        }
        let demographics = match read_line(&text, facility) {
            Ok(d) => d,
            Err((path, what)) => {
                failed += 1;
                let path = if path.is_empty() || path == "." {
                    String::new()
                } else {
                    format!("{path}: ")
                };
                if tty {
                    write!(err, "\r\x1b[K")?;
                }
                writeln!(err, "{shown}:{line_no}: {path}{what}")?;
                continue;
            }
        };
        batch.push((line_no, normalize(&demographics)));
        if batch.len() == IMPORT_BATCH {
            flush(&mut batch, &mut progress, &mut err).await?;
        }
    }
    flush(&mut batch, &mut progress, &mut err).await?;
    let Progress { done, grades, .. } = progress;
    if tty {
        write!(err, "\r\x1b[K")?;
    }
    writeln!(
        err,
        "{done} imported in {:.1}s: {} certain (linked), {} probable, {} possible (queued for review), {} new; {failed} lines skipped",
        started.elapsed().as_secs_f64(),
        grades[0],
        grades[1],
        grades[2],
        grades[3]
    )?;
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use huizhen_domain::identity::{OtherId, PersonName};
    use huizhen_domain::patient::Sex;

    #[test]
    fn a_patient_becomes_demographics() {
        let line = r#"{"resourceType":"Patient","id":"x1","identifier":[{"type":{"coding":[{"code":"NI"}]},"value":"11010519491231002X"},{"type":{"coding":[{"code":"MR"}]},"system":"urn:h","value":"MR-7"}],"name":[{"family":"张","given":["伟"]}],"gender":"female","birthDate":"1949-12-31","telecom":[{"system":"phone","value":"13800138000"},{"system":"email","value":"a@b"}],"address":[{"line":["民族大道100号"],"city":"南宁市","postalCode":"530000"}]}"#;
        let d = read_line(line, "hosp-a").unwrap();
        assert_eq!(d.facility, "hosp-a");
        assert_eq!(d.local_id, "MR-7");
        assert_eq!(
            d.identifiers,
            vec![OtherId::ResidentId {
                value: "11010519491231002X".into()
            }]
        );
        assert_eq!(d.names, vec![PersonName::parts("张", "伟")]);
        assert_eq!(d.sex, Some(Sex::Female));
        assert_eq!(d.phones, vec!["13800138000".to_owned()]);
        assert_eq!(d.addresses[0].postal_code.as_deref(), Some("530000"));
    }

    #[test]
    fn errors_name_the_path_without_the_value() {
        let (path, what) = read_line(
            r#"{"resourceType":"Patient","name":[{"given":"王五"}]}"#,
            "h",
        )
        .unwrap_err();
        assert_eq!(path, "name[0].given");
        assert!(!what.contains("王五"), "{what}");
        let (path, _) = read_line(r#"{"resourceType":"Observation"}"#, "h").unwrap_err();
        assert_eq!(path, "resourceType");
        let (path, what) = read_line(r#"{"resourceType":"Patient"}"#, "h").unwrap_err();
        assert_eq!(path, "identifier");
        assert!(what.contains("no local id"), "{what}");
        assert_eq!(csv("a,b"), "\"a,b\"");
    }
}
