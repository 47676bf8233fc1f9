//! The care workflow's scheduled jobs, run by the engine ([`run`], one task per engine):
//!
//! * the **outbox relay** every 2 s when an outbound pipeline is configured (prescriptions'
//!   or consultations'; [`super::relay_outbox`]);
//! * the **no-show sweep** every minute and at start ([`sweep_no_shows`]): bookings whose
//!   start plus the grace period passed with a side absent become no-shows (audited), and
//!   their scheduled consultations fail with `no-show` as the `system` actor, also those a
//!   sweep marked before the engine stopped;
//! * the **statistics export** on `workflow.stats_export.schedule` ([`run_stats_export`]): the
//!   report over the period ending at the tick, as CSV, into `workflow.stats_export.dir`,
//!   audited (`stats.export`). A tick is claimed in the store first, so with several engine
//!   processes it runs once. Ticks that fall while the engine is stopped are not run later.
//!
//! Each job takes `now` as an argument, so tests run them at a fixed time; the loop takes it
//! from the store's clock (`crate::clock`), like the consultation workflow.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use huizhen_domain::appointment::NoShow;
use huizhen_domain::consultation::{Actor, Command, FailReason, Role, decide};
use huizhen_domain::stats::{StatsPeriod, compute_stats, to_csv};
use tokio_util::sync::CancellationToken;

use super::{Care, StatsExport};
use crate::store::audit::AuditEvent;
use crate::store::consultations::CommandBy;
use crate::store::{Store, StoreError};

/// The job name of the statistics export in `workflow_job_runs`.
pub const STATS_EXPORT_JOB: &str = "stats-export";

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("statistics export: {0}")]
    Stats(#[from] huizhen_domain::stats::StatsError),
    #[error("statistics export: cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    /// The file.
    pub path: PathBuf,
    /// Report rows (the `all` row included).
    pub rows: usize,
    /// Consultations counted.
    pub volume: u64,
}

/// Marks the no-shows due at `now` (see `Store::sweep_no_shows`) and logs them, then fails
/// the consultation (`no-show`) of every no-show whose consultation is still scheduled: those
/// just marked, and those an earlier sweep marked before the engine stopped
/// (`Store::unfinished_no_shows`). Idempotent: a failed consultation is not found again.
/// Returns the bookings marked now.
pub async fn sweep_no_shows(
    store: &Store,
    care: &Care,
    now: DateTime<Utc>,
) -> Result<Vec<NoShow>, StoreError> {
    let marked = store.sweep_no_shows(now, &care.appointments).await?;
    for n in &marked {
        tracing::info!(booking = %n.booking_id, consultation = %n.consultation_id, absent = ?n.absent, "appointment no-show");
    }
    for n in store.unfinished_no_shows().await? {
        if !marked.iter().any(|m| m.booking_id == n.booking_id) {
            tracing::info!(booking = %n.booking_id, consultation = %n.consultation_id, "no-show marked before a restart: failing its consultation now");
        }
        fail_no_show(store, &n).await;
    }
    Ok(marked)
}

/// The actor a no-show failure is recorded under.
pub const NO_SHOW_ACTOR: &str = "huizhen-no-show-sweep";

/// Fails the no-show's consultation with `no-show` as the `system` actor (an event and its
/// audit row in one transaction). The domain decides: FHIR-10 allows it from `scheduled` only,
/// so a consultation that moved on meanwhile (another engine's sweep failed it first) is left
/// as it is and logged. Runs after the sweep committed the booking's no-show: a crash in
/// between leaves the consultation scheduled, and the next sweep (the engine runs one at
/// start) finds it among the unfinished no-shows and fails it then.
async fn fail_no_show(store: &Store, n: &NoShow) {
    let absent: Vec<String> = n.absent.iter().map(ToString::to_string).collect();
    let reason = format!(
        "appointment {} was a no-show (absent: {})",
        n.booking_id,
        absent.join(", ")
    );
    let system = Actor::new(NO_SHOW_ACTOR, Role::System);
    let mut by = CommandBy::new(&system);
    by.source = "no-show-sweep";
    let command = Command::Fail {
        code: FailReason::NoShow,
        reason,
    };
    let result = store
        .consultation_command(&n.consultation_id, None, &by, |s, ctx| {
            decide(&s.consultation, &command, ctx)
        })
        .await;
    if let Err(e) = result {
        tracing::warn!(consultation = %n.consultation_id, booking = %n.booking_id, error = %e, "no-show: the consultation was not failed");
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// Writes the statistics of the period ending at `at` to
/// `<dir>/consultation-stats-<from>-<to>.csv` (written to a temporary name, then renamed, so a
/// reader never sees half a file) and audits it (`stats.export`, actor `engine`).
pub async fn run_stats_export(
    store: &Store,
    export: &StatsExport,
    at: DateTime<Utc>,
) -> Result<Exported, ExportError> {
    let period = StatsPeriod {
        from: at - export.period,
        to: at,
    };
    let facts = store.consultation_facts(period.from, period.to).await?;
    let rows = compute_stats(&facts, period)?;
    let csv = to_csv(&rows);
    let name = format!(
        "consultation-stats-{}-{}.csv",
        stamp(period.from),
        stamp(period.to)
    );
    let path = export.dir.join(&name);
    let tmp = export.dir.join(format!(".{name}.tmp"));
    let write = |p: &PathBuf, source| ExportError::Write {
        path: p.clone(),
        source,
    };
    tokio::fs::create_dir_all(&export.dir)
        .await
        .map_err(|e| write(&export.dir, e))?;
    tokio::fs::write(&tmp, csv.as_bytes())
        .await
        .map_err(|e| write(&tmp, e))?;
    tokio::fs::rename(&tmp, &path)
        .await
        .map_err(|e| write(&path, e))?;
    let volume = rows.first().map_or(0, |r| r.volume);
    let event = AuditEvent {
        actor: "engine".into(),
        role: "system".into(),
        action: "stats.export".into(),
        resource_type: "StatsExport".into(),
        resource_id: name,
        outcome: "success".into(),
        source: "scheduler".into(),
        detail: format!(
            "{} rows, {volume} consultations created from {} to {}",
            rows.len(),
            period.from.to_rfc3339_opts(SecondsFormat::Secs, true),
            period.to.to_rfc3339_opts(SecondsFormat::Secs, true)
        ),
        ..AuditEvent::default()
    };
    store.audit(&event).await?;
    Ok(Exported {
        path,
        rows: rows.len(),
        volume,
    })
}

/// Runs tick `tick` of the export unless another process claimed it; records the outcome. A
/// failure is logged and audited (`stats.export`, outcome `failed`).
pub async fn export_tick(store: &Store, export: &StatsExport, tick: DateTime<Utc>) {
    let key = tick.to_rfc3339_opts(SecondsFormat::Secs, true);
    match store.claim_job_tick(STATS_EXPORT_JOB, &key).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(error = %e, tick = %key, "statistics export tick not claimed");
            return;
        }
    }
    let outcome = match run_stats_export(store, export, tick).await {
        Ok(x) => {
            tracing::info!(file = %x.path.display(), rows = x.rows, "statistics exported");
            format!("ok: {}", x.path.display())
        }
        Err(e) => {
            tracing::error!(error = %e, tick = %key, "statistics export failed");
            let event = AuditEvent {
                actor: "engine".into(),
                role: "system".into(),
                action: "stats.export".into(),
                resource_type: "StatsExport".into(),
                resource_id: key.clone(),
                outcome: "failed".into(),
                source: "scheduler".into(),
                detail: e.to_string(),
                ..AuditEvent::default()
            };
            if let Err(err) = store.audit(&event).await {
                tracing::error!(error = %err, "failed statistics export not audited");
            }
            format!("failed: {e}")
        }
    };
    if let Err(e) = store
        .finish_job_tick(STATS_EXPORT_JOB, &key, &outcome)
        .await
    {
        tracing::warn!(error = %e, tick = %key, "statistics export outcome not recorded");
    }
}

/// Submits the regulator's report of the local day before `tick` to its pipeline (CN-14):
/// once per day whatever the number of engines or ticks (the journal's dedup key), audited as
/// `regulator.export` (its outcome, the message id or the reason).
pub async fn regulator_tick(
    store: &Store,
    x: &super::RegulatorExport,
    pipelines: &std::collections::BTreeMap<String, crate::runner::PipelineHandle>,
    tick: DateTime<Utc>,
) -> Option<String> {
    use crate::compliance::regulator;
    let date = regulator::previous_day(tick, x.utc_offset_minutes);
    let outcome: Result<String, String> = async {
        let pipeline = pipelines
            .get(&x.pipeline)
            .ok_or_else(|| format!("the pipeline {} is not running", x.pipeline))?;
        let report = regulator::daily_report(store, date, x.utc_offset_minutes)
            .await
            .map_err(|e| e.to_string())?;
        let m = regulator::report_message(&x.pipeline, date, &report);
        let accepted = pipeline.submit(m).await.map_err(|e| e.to_string())?;
        Ok(accepted.id.to_string())
    }
    .await;
    let (result, detail) = match &outcome {
        Ok(id) => ("success", format!("date={date}; message={id}")),
        Err(e) => {
            tracing::error!(error = %e, %date, "regulator export failed");
            ("failed", format!("date={date}; {e}"))
        }
    };
    let event = AuditEvent {
        actor: "engine".into(),
        role: "system".into(),
        action: "regulator.export".into(),
        resource_type: "RegulatorReport".into(),
        resource_id: date.to_string(),
        outcome: result.into(),
        source: "scheduler".into(),
        detail,
        ..AuditEvent::default()
    };
    if let Err(e) = store.audit(&event).await {
        tracing::error!(error = %e, "regulator export not audited");
    }
    outcome.ok()
}

/// The jobs loop of one engine: relay every 2 s, sweep every minute, export on schedule, until
/// `shutdown`. `relay_billing`: billing announces charges to a pipeline (relay even when the
/// workflow announces nothing).
pub async fn run(
    store: Store,
    care: Arc<Care>,
    pipelines: crate::runner::Router,
    relay_billing: bool,
    shutdown: CancellationToken,
) {
    let mut next_sweep = tokio::time::Instant::now();
    let mut next_export = care
        .stats_export
        .as_ref()
        .and_then(|x| x.schedule.after(&store.clock().now()).next());
    let mut next_regulator = care
        .regulator_export
        .as_ref()
        .and_then(|x| x.schedule.after(&store.clock().now()).next());
    loop {
        if relay_billing || care.outbound_pipeline.is_some() || store.announces_consultations() {
            super::relay_outbox(&store, &pipelines.snapshot()).await;
        }
        if tokio::time::Instant::now() >= next_sweep {
            next_sweep = tokio::time::Instant::now() + Duration::from_secs(60);
            if let Err(e) = sweep_no_shows(&store, &care, store.clock().now()).await {
                tracing::warn!(error = %e, "no-show sweep failed");
            }
        }
        if let (Some(x), Some(tick)) = (&care.stats_export, next_export)
            && store.clock().now() >= tick
        {
            export_tick(&store, x, tick).await;
            next_export = x.schedule.after(&tick).next();
        }
        if let (Some(x), Some(tick)) = (&care.regulator_export, next_regulator)
            && store.clock().now() >= tick
        {
            regulator_tick(&store, x, &pipelines.snapshot(), tick).await;
            next_regulator = x.schedule.after(&tick).next();
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}
