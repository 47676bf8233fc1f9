//! `huizhen tap PIPELINE[.POINT]`: the live messages of a running engine's pipeline as they
//! pass its steps and reach its sinks (`GET /api/tap`), a line each. Redacted unless `--phi`
//! (admins and integrators; the engine audits every tap, and which messages a PHI tap showed).

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use huizhen_core::config::RootConfig;

use crate::api::ApiArgs;

#[derive(Debug, Args)]
pub struct TapArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The pipeline, or one step or sink of it: `demo`, `demo.set#1`, `demo.steps[1]`,
    /// `demo.sinks[0]`, `referrals-out.referral-system`.
    #[arg(value_name = "PIPELINE[.POINT]")]
    target: String,
    /// Only the messages for which this CEL expression is true at that point (it runs in the
    /// engine, on the whole message), e.g. "headers['hl7-type'] == 'ADT^A01'".
    #[arg(long, value_name = "EXPR")]
    filter: Option<String>,
    /// Show headers, bodies and reasons as they are (admins and integrators; audited).
    #[arg(long)]
    phi: bool,
    /// End after this many passages.
    #[arg(short = 'n', long, value_name = "N")]
    count: Option<u64>,
    /// Print the engine's JSON lines as they come.
    #[arg(long)]
    json: bool,
}

pub async fn run(
    root: &RootConfig,
    store_args: &crate::StoreArgs,
    args: TapArgs,
) -> Result<ExitCode> {
    let api = match crate::api::connect(
        root,
        store_args,
        &args.api,
        "tap",
        "to tap a pipeline",
        None,
    )
    .await?
    {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    let (pipeline, point) = match args.target.split_once('.') {
        Some((p, s)) => (p, Some(s)),
        None => (args.target.as_str(), None),
    };
    let mut query: Vec<(&str, String)> = vec![("pipeline", pipeline.to_owned())];
    if let Some(p) = point {
        query.push(("point", p.to_owned()));
    }
    if let Some(f) = &args.filter {
        query.push(("filter", f.clone()));
    }
    if args.phi {
        query.push(("phi", "true".into()));
    }
    if let Some(n) = args.count {
        query.push(("limit", n.to_string()));
    }
    let mut resp = api
        .client
        .get(format!("{}/api/tap", api.base))
        .query(&query)
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
    if !status.is_success() {
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        eprintln!(
            "error: the engine answered {status}: {}",
            body["error"].as_str().unwrap_or("no reason given")
        );
        return Ok(ExitCode::FAILURE);
    }
    eprintln!(
        "tapping {}{} ({}); Ctrl-C ends",
        pipeline,
        point.map(|p| format!(" at {p}")).unwrap_or_default(),
        if args.phi {
            "with PHI, audited"
        } else {
            "redacted"
        }
    );
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = resp.chunk().await.context("the tap stream broke off")? {
        pending.extend_from_slice(&chunk);
        while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            if args.json {
                crate::write_stdout(format_args!("{line}"), true);
                continue;
            }
            match serde_json::from_str::<serde_json::Value>(line) {
                Ok(v) => print_passage(&v),
                Err(_) => crate::write_stdout(format_args!("{line}"), true),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `19:45:02.113  demo/set#1  continue  01a2…  json 84 B  department=«redacted»`, then, with
/// PHI, the reason and the body (an HL7 message a segment a line).
fn print_passage(v: &serde_json::Value) {
    if let Some(n) = v["dropped"].as_u64() {
        crate::write_stdout(
            format_args!("… {n} passages dropped: this terminal fell behind the pipeline"),
            true,
        );
        return;
    }
    let at = v["at"]
        .as_i64()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%H:%M:%S%.3f")
                .to_string()
        })
        .unwrap_or_default();
    let headers: Vec<String> = v["headers"]
        .as_object()
        .map(|h| {
            h.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    crate::write_stdout(
        format_args!(
            "{at}  {}/{}  {}  {}  {} {} B  {}",
            v["pipeline"].as_str().unwrap_or_default(),
            v["point"].as_str().unwrap_or_default(),
            v["result"].as_str().unwrap_or_default(),
            v["message_id"].as_str().unwrap_or_default(),
            v["kind"].as_str().unwrap_or_default(),
            v["body_bytes"].as_u64().unwrap_or_default(),
            headers.join(" ")
        ),
        true,
    );
    if let Some(r) = v["reason"].as_str() {
        crate::write_stdout(format_args!("    reason: {r}"), true);
    }
    if let Some(body) = v["body"].as_str() {
        for line in body.split(['\r', '\n']).filter(|l| !l.is_empty()) {
            crate::write_stdout(format_args!("    {line}"), true);
        }
    } else if let Some(b64) = v["body_base64"].as_str() {
        crate::write_stdout(format_args!("    (bytes, base64) {b64}"), true);
    }
}
