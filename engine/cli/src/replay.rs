//! `huizhen replay --pipeline P --since T [--config NEW] [--plugins DIR]`: stored messages
//! re-run through the pipelines as they are and through a changed configuration or plugin
//! folder, each in an isolated engine (no sink is called, nothing is written to the store
//! they come from), and what would change (`huizhen_core::pipetest::replay`).
//!
//! The installation (its store, and the baseline) is the root config before the command name
//! (`huizhen -c FILE replay …`, default ./huizhen.yaml); `--config NEW` after it is the
//! candidate: a root file (`huizhen.yaml`) or a pipeline file whose pipelines replace those of
//! the same names. Exit status 0: nothing would change; 1: something would; 2: it could not
//! run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use huizhen_core::config::{self, Loaded, LoadedPipeline};
use huizhen_core::pipetest::replay::{ReplayOptions, replay, select};

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The pipeline whose stored messages are replayed.
    #[arg(long, value_name = "NAME")]
    pipeline: String,
    /// From when: RFC 3339 (2026-12-06T08:00:00+08:00), a date (2026-12-06, local midnight)
    /// or an age (2h, 30m, 1d: that long ago).
    #[arg(long, value_name = "TIME")]
    since: String,
    /// Until when (same forms; default now).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// The candidate: a root config (huizhen.yaml) or a pipeline file whose pipelines replace
    /// those of the same names.
    #[arg(short = 'c', long = "config", value_name = "NEW")]
    candidate: Option<PathBuf>,
    /// The candidate's plugin folder (a new plugin version), instead of `plugins.dir`.
    #[arg(long, value_name = "DIR")]
    plugins: Option<PathBuf>,
    /// At most this many messages, the oldest of the window first.
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    /// The report as JSON.
    #[arg(long)]
    json: bool,
}

const USAGE: u8 = 2;

/// `T` as ms since the epoch.
fn time_arg(name: &str, s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let local = d
            .and_hms_opt(0, 0, 0)
            .and_then(|t| t.and_local_timezone(chrono::Local).earliest())
            .ok_or_else(|| format!("--{name} {s}: no such local time"))?;
        return Ok(local.timestamp_millis());
    }
    match config::duration::parse(s) {
        Ok(age) => Ok(chrono::Utc::now().timestamp_millis() - age.as_millis() as i64),
        Err(_) => Err(format!(
            "--{name} {s:?}: expected an RFC 3339 time (2026-12-06T08:00:00+08:00), a date (2026-12-06) or an age (2h, 30m, 1d)"
        )),
    }
}

/// The baseline with the candidate applied.
fn candidate(
    root_file: Option<&Path>,
    new: Option<&Path>,
    plugins: Option<&Path>,
) -> Result<Loaded, String> {
    let is_root = |f: &Path| {
        matches!(
            f.file_name().and_then(|n| n.to_str()),
            Some("huizhen.yaml" | "huizhen.yml")
        )
    };
    let mut loaded = match new {
        Some(f) if is_root(f) => config::load(Some(f)).map_err(|e| e.to_string())?,
        Some(f) => {
            let mut loaded = config::load(root_file).map_err(|e| e.to_string())?;
            let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
            let parsed = config::parse_pipelines_all(f, &text);
            if !parsed.errors.is_empty() {
                return Err(config::ConfigErrors(parsed.errors).to_string());
            }
            for c in parsed.configs {
                loaded
                    .pipelines
                    .retain(|p| p.config.name.value != c.name.value);
                loaded.pipelines.push(LoadedPipeline {
                    file: f.to_path_buf(),
                    config: c,
                });
            }
            loaded
        }
        None => config::load(root_file).map_err(|e| e.to_string())?,
    };
    if let Some(dir) = plugins {
        loaded.root.plugins.dir = dir.to_path_buf();
    }
    let errors = config::check_with(
        &loaded.pipelines,
        &huizhen_core::extensions::Extensions::new(&loaded.root.plugins),
    );
    if !errors.is_empty() {
        return Err(config::ConfigErrors(errors).to_string());
    }
    Ok(loaded)
}

pub async fn run(store_args: &crate::StoreArgs, args: ReplayArgs) -> Result<ExitCode> {
    if args.candidate.is_none() && args.plugins.is_none() {
        eprintln!(
            "error: nothing to compare with: give the candidate, --config NEW (a pipeline file or a root config) or --plugins DIR"
        );
        return Ok(ExitCode::from(USAGE));
    }
    let window = time_arg("since", &args.since).and_then(|since| {
        let until = args
            .until
            .as_deref()
            .map(|u| time_arg("until", u))
            .transpose()?;
        Ok((since, until))
    });
    let (since_ms, until_ms) = match window {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(USAGE));
        }
    };
    let root_file = store_args.config.as_deref();
    let baseline = match config::load(root_file) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("the installation's configuration has errors:\n{e}");
            return Ok(ExitCode::from(USAGE));
        }
    };
    let cand = match candidate(
        root_file,
        args.candidate.as_deref(),
        args.plugins.as_deref(),
    ) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("the candidate has errors:\n{e}");
            return Ok(ExitCode::from(USAGE));
        }
    };
    let store = crate::migrated(store_args).await?;
    let opts = ReplayOptions {
        pipeline: args.pipeline.clone(),
        since_ms,
        until_ms,
        limit: args.limit,
        timeout: Duration::from_secs(30),
    };
    let messages = match select(&store, &opts).await {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(USAGE));
        }
    };
    // The replay reads patient data out of the store: on record before it does.
    let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
    store
        .audit(&crate::security::cli_event(
            "message.replay",
            "Pipeline",
            &args.pipeline,
            format!(
                "{} messages through {} (sinks not called); {}",
                ids.len(),
                args.candidate
                    .as_deref()
                    .map(|c| c.display().to_string())
                    .or_else(|| args
                        .plugins
                        .as_deref()
                        .map(|p| format!("plugins {}", p.display())))
                    .unwrap_or_default(),
                ids.join(",")
            ),
        ))
        .await
        .map_err(|e| anyhow::anyhow!("the replay could not be audited, so it does not run: {e}"))?;
    let report = match replay(&store, &messages, baseline, cand, &opts).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(USAGE));
        }
    };
    store.close().await;
    let changed = report.changed();
    if args.json {
        let v = serde_json::json!({
            "pipeline": report.pipeline,
            "messages": report.messages.len(),
            "changed": changed,
            "differences": report.messages.iter().filter(|m| !m.differences.is_empty()).map(|m| serde_json::json!({
                "id": m.id, "received_at": m.received_at, "differences": m.differences,
            })).collect::<Vec<_>>(),
        });
        crate::write_stdout(format_args!("{}", serde_json::to_string_pretty(&v)?), true);
    } else {
        crate::write_stdout(
            format_args!(
                "replay of {}: {} message{} under the pipelines as they are and under the candidate (sinks not called)",
                report.pipeline,
                report.messages.len(),
                if report.messages.len() == 1 { "" } else { "s" }
            ),
            true,
        );
        crate::write_stdout(
            format_args!(
                "  {} the same, {} would change",
                report.messages.len() - changed,
                changed
            ),
            true,
        );
        for m in report.messages.iter().filter(|m| !m.differences.is_empty()) {
            crate::write_stdout(
                format_args!(
                    "{} (received {})",
                    m.id,
                    crate::times::cell(m.received_at, false)
                ),
                true,
            );
            for d in &m.differences {
                for (i, line) in d.lines().enumerate() {
                    let lead = if i == 0 { "  " } else { "    " };
                    crate::write_stdout(format_args!("{lead}{line}"), true);
                }
            }
        }
    }
    Ok(if changed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
