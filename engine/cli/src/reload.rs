//! `huizhen reload`: asks a running engine to reload its pipeline files, through the API
//! (`POST /api/pipelines/reload`, a platform admin's token), so it works for an operator on
//! another machine as well as on the engine's own. Without `--token` the command issues a
//! two-minute admin token with this machine's engine secret (audited as `token.issue`), as
//! `huizhen token issue` would. The engine validates every file first: only changed pipelines
//! restart, a refused file leaves its pipelines running as they were. SIGHUP to the engine's
//! process does the same locally.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use huizhen_core::config::RootConfig;

#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// How to reach the engine (a platform admin's token: role admin, facility `*`).
    #[command(flatten)]
    pub api: crate::api::ApiArgs,
    /// Print the engine's report as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(
    root: &RootConfig,
    store_args: &crate::StoreArgs,
    args: ReloadArgs,
) -> Result<ExitCode> {
    let api = match crate::api::connect(
        root,
        store_args,
        &args.api,
        "reload",
        "to reload the pipelines",
        Some(Duration::from_secs(600)),
    )
    .await?
    {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    let url = format!("{}/api/pipelines/reload", api.base);
    let resp = api
        .client
        .post(&url)
        .bearer_auth(&api.token)
        .send()
        .await
        .with_context(|| {
            format!(
                "cannot reach the engine at {} (is it running? --url)",
                api.base
            )
        })?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let Some(report) = body.get("reload") else {
        let why = body["error"]
            .as_str()
            .unwrap_or("no reload report in the answer");
        bail!("the engine answered {status}: {why}");
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print_report(report);
    }
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn names(v: &serde_json::Value) -> String {
    let list: Vec<&str> = v
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(", ")
    }
}

fn print_report(r: &serde_json::Value) {
    if r["applied"].as_bool() != Some(true) {
        println!("nothing applied: the files do not check together");
    }
    println!("added:     {}", names(&r["added"]));
    println!("restarted: {}", names(&r["restarted"]));
    println!("removed:   {}", names(&r["removed"]));
    println!("unchanged: {}", names(&r["unchanged"]));
    for f in r["refused"].as_array().into_iter().flatten() {
        println!(
            "refused:   {} (still running as before: {})",
            f["file"].as_str().unwrap_or_default(),
            names(&f["kept"])
        );
        for e in f["errors"].as_array().into_iter().flatten() {
            println!("  {}", e.as_str().unwrap_or_default());
        }
    }
    for f in r["failed"].as_array().into_iter().flatten() {
        println!(
            "failed:    {}: {}",
            f["pipeline"].as_str().unwrap_or_default(),
            f["error"].as_str().unwrap_or_default()
        );
    }
}
