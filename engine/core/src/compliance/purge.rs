//! The retention purge (CN-30): what is due for deletion under the configured periods, shown
//! first (`--dry-run`), deleted with an audit event per record. A record is due only once both
//! the keep-until time it was written with and its class's period
//! (`workflow.compliance.retention`, never below the law) have passed, so nothing is deleted
//! before its minimum, whatever the configuration says.
//!
//! The engine deletes call recordings (`process-record-audio-video`, 3 years at least). The
//! other classes of CN-30 (medical records 15 years, inpatient records 30 years, security logs
//! 6 months, PIA records 3 years) are kept: the engine deletes none of them.

use std::path::Path;

use chrono::{DateTime, Utc};
use huizhen_domain::compliance::retention::{Disposal, RecordClass, RetentionPolicy};
use serde::Serialize;

use crate::store::audit::AuditEvent;
use crate::store::{Result, Store};

/// How many candidates one purge looks at.
const BATCH: i64 = 10_000;

/// One record the purge deletes (or would).
#[derive(Debug, Clone, Serialize)]
pub struct Due {
    pub class: &'static str,
    /// `Recording`.
    pub resource_type: &'static str,
    pub id: String,
    pub consultation: String,
    pub facility: String,
    /// When the record was made.
    pub made_at: DateTime<Utc>,
    /// When it became due.
    pub due_since: DateTime<Utc>,
    pub bytes: i64,
}

/// What a purge found and did.
#[derive(Debug, Clone, Serialize)]
pub struct PurgeReport {
    /// True when nothing was deleted (`--dry-run`).
    pub dry_run: bool,
    pub now: DateTime<Utc>,
    /// Due (and, unless a dry run, deleted).
    pub due: Vec<Due>,
    /// Past the keep-until time they were written with, but within the configured period.
    pub kept_longer: usize,
    /// Rows deleted (a row changed since the plan is left: not counted).
    pub deleted: usize,
    /// Object files that could not be removed (their rows are gone: the file is kept longer).
    pub files_left: Vec<String>,
    /// Every class with its period in months and whether the engine purges it.
    pub classes: Vec<(RecordClass, u32, bool)>,
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Plans and (unless `dry_run`) runs the purge at `now`: recordings due under `policy`,
/// deleted with `audit` (its action, resource and detail filled per record) and their object
/// files under `objects_dir` removed.
pub async fn purge(
    store: &Store,
    policy: &RetentionPolicy,
    objects_dir: &Path,
    now: DateTime<Utc>,
    dry_run: bool,
    audit: &AuditEvent,
) -> Result<PurgeReport> {
    let now_ms = now.timestamp_millis();
    let class = RecordClass::ProcessRecordAudioVideo;
    let mut due = Vec::new();
    let mut kept_longer = 0;
    for r in store.recordings_past_retention(now_ms, BATCH).await? {
        let stored = RecordClass::from_code(&r.retention_class).unwrap_or(class);
        match policy.disposal(stored, at(r.started_at), Some(at(r.retain_until)), now) {
            Disposal::Due { since } => due.push(Due {
                class: stored.code(),
                resource_type: "Recording",
                id: r.id.clone(),
                consultation: r.consultation.clone(),
                facility: r.facility.clone(),
                made_at: at(r.started_at),
                due_since: since,
                bytes: r.bytes,
            }),
            Disposal::Kept { .. } => kept_longer += 1,
        }
    }
    let mut report = PurgeReport {
        dry_run,
        now,
        due,
        kept_longer,
        deleted: 0,
        files_left: Vec::new(),
        classes: RecordClass::ALL
            .iter()
            .map(|c| (*c, policy.months(*c), *c == class))
            .collect(),
    };
    if dry_run {
        return Ok(report);
    }
    let objects = crate::objects::ObjectStore::open(objects_dir, None).ok();
    let rows = store.recordings_past_retention(now_ms, BATCH).await?;
    for d in &report.due {
        let mut event = audit.clone();
        event.action = "retention.purge".into();
        event.resource_type = d.resource_type.into();
        event.resource_id = d.id.clone();
        event.detail = format!(
            "class={}; consultation={}; made={}; due since {} (CN-30)",
            d.class,
            d.consultation,
            d.made_at.to_rfc3339(),
            d.due_since.to_rfc3339()
        );
        let event = event.about(&d.facility);
        if !store.recording_purge(&d.id, now_ms, &event).await? {
            continue;
        }
        report.deleted += 1;
        let object = rows
            .iter()
            .find(|r| r.id == d.id)
            .map(|r| r.object_id.clone());
        if let (Some(objects), Some(object)) = (&objects, object) {
            match objects.path(&object) {
                Ok(path) => match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(object, error = %e, "retention purge: the recording's file was not removed");
                        report.files_left.push(object);
                    }
                },
                Err(e) => {
                    tracing::warn!(object, error = %e, "retention purge: no path for the recording's object");
                    report.files_left.push(object);
                }
            }
        }
    }
    Ok(report)
}

impl PurgeReport {
    /// The report as text.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let verb = if self.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        let n = if self.dry_run {
            self.due.len()
        } else {
            self.deleted
        };
        let _ = writeln!(
            out,
            "retention purge at {}: {verb} {n} record(s){}",
            self.now.to_rfc3339(),
            if self.dry_run {
                " (dry run: nothing deleted)"
            } else {
                ""
            }
        );
        if !self.due.is_empty() {
            let _ = writeln!(
                out,
                "CLASS                       RESOURCE   ID                                    CONSULTATION  MADE                       DUE SINCE"
            );
            for d in &self.due {
                let _ = writeln!(
                    out,
                    "{:<27} {:<10} {:<37} {:<13} {:<26} {}",
                    d.class,
                    d.resource_type,
                    d.id,
                    d.consultation,
                    d.made_at.format("%Y-%m-%dT%H:%M:%SZ"),
                    d.due_since.format("%Y-%m-%dT%H:%M:%SZ")
                );
            }
        }
        if self.kept_longer > 0 {
            let _ = writeln!(
                out,
                "kept: {} record(s) past the minimum but within the configured period",
                self.kept_longer
            );
        }
        for f in &self.files_left {
            let _ = writeln!(out, "file not removed: object {f} (its row is gone)");
        }
        let _ = writeln!(out, "periods (CN-30):");
        for (class, months, purged) in &self.classes {
            let _ = writeln!(
                out,
                "  {:<27} {:>4} months{}",
                class.code(),
                months,
                if *purged {
                    ""
                } else {
                    "  (kept: the engine deletes none)"
                }
            );
        }
        out
    }
}
