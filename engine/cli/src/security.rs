//! `huizhen token`, `huizhen apikey` and `huizhen audit`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use huizhen_core::config::RootConfig;
use huizhen_core::security::{self, Role};
use huizhen_core::store::Store;
use huizhen_core::store::audit::{AuditEvent, AuditFilter, AuditRow};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue an HS256 token signed with the engine's secret (security.jwt_secret or
    /// security.jwt_secret_file) and print it.
    Issue(IssueArgs),
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// Who the token is for (a person or a system).
    #[arg(long)]
    sub: String,
    /// admin, integrator, auditor, expert, local-doctor, pharmacist or patient.
    #[arg(long)]
    role: String,
    /// The facility the holder acts for; `*` for every facility (platform staff).
    #[arg(long)]
    facility: String,
    /// How long it is valid: 30m, 8h, 7d …
    #[arg(long, default_value = "8h")]
    ttl: String,
}

#[derive(Debug, Subcommand)]
pub enum ApikeyCommand {
    /// Create an API key for a system that sends messages (printed once; only its hash is kept).
    Create(ApikeyArgs),
    /// Revoke an API key by its id (the part after `hzk_`, before the second `_`).
    Revoke { id: String },
}

#[derive(Debug, Args)]
pub struct ApikeyArgs {
    #[arg(long)]
    sub: String,
    #[arg(long, default_value = "integrator")]
    role: String,
    #[arg(long)]
    facility: String,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new data key to the key file, make it the active one, and re-encrypt every stored
    /// body with it, in batches, while engines keep running (they pick the new key up by
    /// themselves). Old keys stay in the file so that nothing becomes unreadable.
    Rotate {
        /// Rows per batch.
        #[arg(long, default_value_t = 500)]
        batch: i64,
        /// Do not add a key: re-encrypt with the active one (after adding a key to
        /// `security.encryption.keys` by hand and restarting the engines).
        #[arg(long)]
        reencrypt: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain of the audit trail; exit 1 and name each row at fault if it
    /// was changed, deleted or reordered.
    Verify,
    /// Print audit events, oldest first.
    List(AuditListArgs),
    /// Write audit events as FHIR R4 AuditEvent resources (IHE BALP), one JSON per line.
    Export(AuditExportArgs),
}

#[derive(Debug, Args)]
pub struct AuditListArgs {
    #[arg(long)]
    actor: Option<String>,
    #[arg(long)]
    action: Option<String>,
    #[arg(long)]
    resource_id: Option<String>,
    /// Only events after this sequence number.
    #[arg(long)]
    after: Option<i64>,
    #[arg(long, default_value_t = 100)]
    limit: i64,
}

#[derive(Debug, Args)]
pub struct AuditExportArgs {
    /// FHIR AuditEvent JSON (the only format so far).
    #[arg(long)]
    fhir: bool,
    /// Only events after this sequence number.
    #[arg(long)]
    after: Option<i64>,
}

fn parse_role(s: &str) -> Result<Role> {
    Role::parse(s).with_context(|| {
        format!(
            "unknown role {s:?}: expected one of {}",
            Role::ALL.map(Role::as_str).join(", ")
        )
    })
}

/// Parses `30m`, `8h`, `7d`, `90s`.
pub fn parse_ttl(s: &str) -> Result<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .with_context(|| format!("--ttl {s:?}: expected a number and a unit, e.g. 8h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" | "" => n * 3600,
        "d" => n * 86_400,
        _ => bail!("--ttl {s:?}: the unit must be s, m, h or d"),
    };
    if secs == 0 {
        bail!("--ttl must be more than zero");
    }
    Ok(Duration::from_secs(secs))
}

pub fn token(root: &RootConfig, cmd: TokenCommand) -> Result<ExitCode> {
    match cmd {
        TokenCommand::Issue(a) => {
            let role = parse_role(&a.role)?;
            let ttl = parse_ttl(&a.ttl)?;
            let t = security::issue_from_config(&root.security, &a.sub, role, &a.facility, ttl)
                .map_err(|e| anyhow::anyhow!(e))?;
            println!("{t}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// SHA-256 of bytes, hex.
pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// The CLI acts with the database's own authority; its events name the OS user.
pub fn cli_event(
    action: &str,
    resource_type: &str,
    resource_id: &str,
    detail: String,
) -> AuditEvent {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    AuditEvent {
        actor: format!("cli:{user}"),
        role: "admin".into(),
        facility: "*".into(),
        action: action.into(),
        resource_type: resource_type.into(),
        resource_id: resource_id.into(),
        outcome: "success".into(),
        source: "cli".into(),
        purpose: String::new(),
        detail,
    }
}

pub async fn apikey(store: &Store, cmd: ApikeyCommand) -> Result<ExitCode> {
    match cmd {
        ApikeyCommand::Create(a) => {
            let role = parse_role(&a.role)?;
            if a.facility.trim().is_empty() {
                bail!("--facility must not be empty; `*` means every facility");
            }
            let (token, row) = security::new_api_key(&a.sub, role, &a.facility);
            store.create_api_key(&row).await?;
            store
                .audit(&cli_event(
                    "apikey.create",
                    "ApiKey",
                    &row.id,
                    format!("for {} ({role}, facility {})", a.sub, a.facility),
                ))
                .await?;
            eprintln!(
                "API key {} for {} ({role}, facility {}); shown once:",
                row.id, a.sub, a.facility
            );
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        ApikeyCommand::Revoke { id } => {
            store.revoke_api_key(&id).await?;
            store
                .audit(&cli_event("apikey.revoke", "ApiKey", &id, String::new()))
                .await?;
            println!("API key {id} revoked");
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn audit(store: &Store, cmd: AuditCommand) -> Result<ExitCode> {
    match cmd {
        AuditCommand::Verify => {
            let r = store.verify_audit().await?;
            if r.problems.is_empty() {
                println!(
                    "ok: {} audit events, chain intact up to row {}",
                    r.rows, r.last_seq
                );
                Ok(ExitCode::SUCCESS)
            } else {
                for p in &r.problems {
                    println!("{p}");
                }
                println!(
                    "FAILED: {} problem(s) in {} audit events",
                    r.problems.len(),
                    r.rows
                );
                Ok(ExitCode::FAILURE)
            }
        }
        AuditCommand::List(a) => {
            let rows = store
                .audit_events(&AuditFilter {
                    actor: a.actor,
                    action: a.action,
                    resource_id: a.resource_id,
                    after: a.after,
                    limit: Some(a.limit),
                })
                .await?;
            for r in rows {
                println!("{}", serde_json::to_string(&r)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Export(a) => {
            if !a.fhir {
                bail!("choose a format: --fhir");
            }
            let mut after = a.after.unwrap_or(0);
            loop {
                let rows = store
                    .audit_events(&AuditFilter {
                        after: Some(after),
                        limit: Some(5000),
                        ..AuditFilter::default()
                    })
                    .await?;
                let Some(last) = rows.last() else { break };
                after = last.seq;
                for r in &rows {
                    println!("{}", serde_json::to_string(&fhir_audit_event(r))?);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// An audit row as a FHIR R4 AuditEvent in the shape of IHE Basic Audit Log Patterns.
pub fn fhir_audit_event(r: &AuditRow) -> serde_json::Value {
    let e = &r.event;
    let code = match e.action.split('.').next_back() {
        Some("read" | "list") => "R",
        Some("reprocess" | "revoke") => "U",
        Some("ingest" | "create") => "C",
        _ => "E",
    };
    let outcome = match e.outcome.as_str() {
        "success" => "0",
        "denied" => "4",
        _ => "8",
    };
    let subtype = if e.action.starts_with("login") {
        serde_json::json!({"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110122", "display": "Login"})
    } else {
        serde_json::json!({"system": "urn:huizhen:audit-action", "code": e.action})
    };
    let recorded = huizhen_core::message::format_ms(r.at);
    let mut entity = vec![];
    if !e.resource_id.is_empty() || !e.resource_type.is_empty() {
        entity.push(serde_json::json!({
            "what": { "identifier": { "system": format!("urn:huizhen:{}", e.resource_type), "value": e.resource_id } },
            "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object" },
            "detail": if e.detail.is_empty() { serde_json::json!([]) } else { serde_json::json!([{ "type": "detail", "valueString": e.detail }]) }
        }));
    }
    serde_json::json!({
        "resourceType": "AuditEvent",
        "id": format!("huizhen-audit-{}", r.seq),
        "meta": { "profile": ["https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit"] },
        "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation" },
        "subtype": [subtype],
        "action": code,
        "recorded": recorded,
        "outcome": outcome,
        "outcomeDesc": if e.outcome == "success" { String::new() } else { e.detail.clone() },
        "agent": [{
            "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP", "display": "information recipient" }] },
            "who": { "identifier": { "value": e.actor } },
            "role": [{ "text": e.role }],
            "requestor": true,
            "network": { "address": e.source, "type": "2" },
            "purposeOfUse": if e.purpose.is_empty() { serde_json::json!([]) } else { serde_json::json!([{ "text": e.purpose }]) },
            "extension": [{ "url": "urn:huizhen:facility", "valueString": e.facility }]
        }],
        "source": { "observer": { "display": "huizhen" }, "type": [{ "system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server" }] },
        "entity": entity,
        "extension": [{ "url": "urn:huizhen:audit-chain", "valueString": format!("{} {}", r.seq, r.hash) }],
    })
}

/// `huizhen keys rotate`.
pub async fn rotate(
    root: &RootConfig,
    open: impl AsyncFnOnce() -> Result<Store>,
    batch: i64,
    reencrypt: bool,
) -> Result<ExitCode> {
    let enc = &root.security.encryption;
    if !enc.enabled {
        bail!("encryption is off (security.encryption.enabled: false): nothing to rotate");
    }
    if !reencrypt {
        if enc.keys.is_some() {
            bail!(
                "the keys come from security.encryption.keys: add a line `ID BASE64` (32 random bytes, e.g. `openssl rand -base64 32`) at its end, restart the engines, then run `huizhen keys rotate --reencrypt`"
            );
        }
        if let Some(a) = &enc.active {
            bail!(
                "security.encryption.active pins key {a:?}; remove it (the newest key is then the active one) before rotating"
            );
        }
        if !enc.keys_file.exists() {
            bail!(
                "{}: no key file yet (it is created when the engine first starts)",
                enc.keys_file.display()
            );
        }
        let id = huizhen_core::crypto::add_key(&enc.keys_file).map_err(|e| anyhow::anyhow!(e))?;
        eprintln!("new data key {id} added to {}", enc.keys_file.display());
    }
    let store = open().await?;
    let id = store
        .keyring()
        .map(|k| k.cipher().active().to_owned())
        .unwrap_or_default();
    let mut total_rewritten = 0u64;
    // A second pass takes what running engines sealed with the old key before they noticed the
    // new one (they re-read the key file within seconds).
    for pass in 1..=2 {
        if pass == 2 {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        for table in ["messages", "effects"] {
            let total = store.count_rows(table).await?;
            let (mut scanned, mut rewritten, mut after) = (0u64, 0u64, None::<String>);
            loop {
                let b = store.rekey_batch(table, after.as_deref(), batch).await?;
                scanned += b.scanned;
                rewritten += b.rewritten;
                eprint!(
                    "\rpass {pass}, {table}: {scanned}/{total} checked, {rewritten} re-encrypted"
                );
                match b.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            eprintln!();
            total_rewritten += rewritten;
        }
    }
    store
        .audit(&cli_event(
            "keys.rotate",
            "DataKey",
            &id,
            format!("{total_rewritten} rows re-sealed (bodies, header values, errors, dedup keys)"),
        ))
        .await?;
    println!(
        "active data key: {id}; {total_rewritten} rows re-sealed (bodies, header values, errors, dedup keys), bound to their message and field; older keys stay in the file for anything not yet rewritten"
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_ttl("8h").unwrap(), Duration::from_secs(28800));
        assert_eq!(parse_ttl("7d").unwrap(), Duration::from_secs(604800));
        assert!(parse_ttl("0h").is_err());
        assert!(parse_ttl("h").is_err());
        assert!(parse_ttl("3w").is_err());
    }
}
