//! Commands that talk to a running engine through its API (`reload`, `tap`): where it is, the
//! token, the HTTPS trust. Without `--token` a two-minute platform admin token is issued with
//! this machine's engine secret (audited as `token.issue`), as `huizhen token issue` would.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use huizhen_core::config::RootConfig;
use huizhen_core::security::Role;

/// How to reach the engine's API.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The root config (its `http.bind` and engine secret) and the store (the issued token's
    /// audit).
    #[command(flatten)]
    pub store: crate::StoreArgs,
    /// The engine's HTTP address, e.g. https://engine.example:8080 (default: `http.bind` of the
    /// config, https when `http.tls` is set).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// A bearer token (a platform admin's for `reload`); without it a two-minute admin token
    /// is issued with this machine's engine secret.
    #[arg(
        long,
        env = "HUIZHEN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// The CA certificate (PEM) to check the engine's HTTPS certificate against.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

/// A connection to the engine's API.
pub struct Api {
    pub base: String,
    pub token: String,
    pub client: reqwest::Client,
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

/// Connects as `command` (`reload`, `tap`): the token given, or one issued for `why`.
/// `timeout`: the whole request's (none for a stream). `Err(code)`: there is no store here to
/// audit an issued token in (the message is printed).
pub async fn connect(
    root: &RootConfig,
    store_args: &crate::StoreArgs,
    args: &ApiArgs,
    command: &str,
    why: &str,
    timeout: Option<Duration>,
) -> Result<std::result::Result<Api, ExitCode>> {
    let base = args.url.clone().unwrap_or_else(|| default_url(root));
    let token = match &args.token {
        Some(t) => t.clone(),
        None => {
            // The token's issue is audited in the store: it must be this installation's.
            if let Some(code) = crate::find_store(store_args, command) {
                return Ok(Err(code));
            }
            let subject = format!("cli:{command}");
            let t = huizhen_core::security::issue_from_config(
                &root.security,
                &subject,
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
                    format!("for {subject} (admin, facility *), two minutes, {why}"),
                ))
                .await
                .context("the token's issue could not be audited, so it is not used")?;
            store.close().await;
            t.token
        }
    };
    let mut client = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
    if let Some(t) = timeout {
        client = client.timeout(t);
    }
    if let Some(ca) = &args.ca {
        let pem = std::fs::read(ca).with_context(|| format!("--ca {}", ca.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .with_context(|| format!("--ca {}: not a PEM certificate", ca.display()))?;
        client = client.add_root_certificate(cert);
    }
    Ok(Ok(Api {
        base: base.trim_end_matches('/').to_owned(),
        token,
        client: client.build().context("HTTP client")?,
    }))
}
