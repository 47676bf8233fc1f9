//! `huizhen reload`: asks a running engine to reload its pipeline files, through the API
//! (`POST /api/pipelines/reload`, a platform admin's token), so it works for an operator on
//! another machine as well as on the engine's own. Without `--token` the command issues a
//! two-minute admin token with this machine's engine secret (audited as `token.issue`), as
//! `huizhen token issue` would. The engine validates every file first: only changed pipelines
//! restart, a refused file leaves its pipelines running as they were. SIGHUP to the engine's
//! process does the same locally.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use huizhen_core::config::RootConfig;
use huizhen_core::security::Role;

#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// The root config (its `http.bind` and engine secret) and the store (the token's audit).
    #[command(flatten)]
    pub store: crate::StoreArgs,
    /// The engine's HTTP address, e.g. https://engine.example:8080 (default: `http.bind` of the
    /// config, https when `http.tls` is set).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// A platform admin's bearer token (role admin, facility `*`); without it a two-minute
    /// token is issued with this machine's engine secret.
    #[arg(
        long,
        env = "HUIZHEN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    /// The CA certificate (PEM) to check the engine's HTTPS certificate against.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Print the engine's report as JSON.
    #[arg(long)]
    json: bool,
}

/// The engine's base URL from `http.bind` (a wildcard address is reached on loopback).
fn default_url(root: &RootConfig) -> String {
    let scheme = if root.http.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let bind = root
        .http
        .bind
        .replace("0.0.0.0:", "127.0.0.1:")
        .replace("[::]:", "[::1]:");
    format!("{scheme}://{bind}")
}

pub async fn run(
    root: &RootConfig,
    store_args: &crate::StoreArgs,
    args: ReloadArgs,
) -> Result<ExitCode> {
    let base = args.url.clone().unwrap_or_else(|| default_url(root));
    let token = match args.token {
        Some(t) => t,
        None => {
            // The token's issue is audited in the store: it must be this installation's.
            if let Some(code) = crate::find_store(store_args, "reload") {
                return Ok(code);
            }
            let t = huizhen_core::security::issue_from_config(
                &root.security,
                "cli:reload",
                Role::Admin,
                "*",
                Duration::from_secs(120),
            )
            .map_err(|e| anyhow::anyhow!("{e} (or pass --token)"))?;
            let store = crate::open_store(store_args).await?;
            store
                .audit(&crate::security::cli_event(
                    "token.issue",
                    "Token",
                    &t.id,
                    "for cli:reload (admin, facility *), two minutes, to reload the pipelines"
                        .into(),
                ))
                .await
                .context("the token's issue could not be audited, so it is not used")?;
            store.close().await;
            t.token
        }
    };
    let mut client = reqwest::Client::builder().timeout(Duration::from_secs(600));
    if let Some(ca) = &args.ca {
        let pem = std::fs::read(ca).with_context(|| format!("--ca {}", ca.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .with_context(|| format!("--ca {}: not a PEM certificate", ca.display()))?;
        client = client.add_root_certificate(cert);
    }
    let client = client.build().context("HTTP client")?;
    let url = format!("{}/api/pipelines/reload", base.trim_end_matches('/'));
    let resp = client
        .post(&url)
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("cannot reach the engine at {base} (is it running? --url)"))?;
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
