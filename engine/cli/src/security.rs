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
    /// admin, integrator, auditor, expert, local-doctor, pharmacist, patient or logistics.
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
    Revoke {
        /// The key's id.
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct ApikeyArgs {
    /// The system the key is for (its owner on the audit trail).
    #[arg(long)]
    sub: String,
    /// The role it acts with (see `token issue --role`).
    #[arg(long, default_value = "integrator")]
    role: String,
    /// The facility it sends for; `*` for every facility.
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
    /// Check the audit trail's hash chain, row MACs and checkpoints; exit 1 on any problem.
    ///
    /// Recomputes the hash chain, checks every row's MAC with the audit key
    /// (security.audit.key_file), and checks that every checkpoint (security.audit.checkpoint_file
    /// and the files given with --checkpoints) names a row that is there unchanged. Names each
    /// row at fault if one was changed, deleted, reordered or forged, or the trail was truncated
    /// or cut before a checkpoint. Events after the last checkpoint (at most checkpoint_every
    /// events or checkpoint_interval) can be cut unseen. Never creates the audit key.
    Verify(AuditVerifyArgs),
    /// Print audit events, oldest first.
    ///
    /// The listing is itself audited (`audit.read`).
    List(AuditListArgs),
    /// Write audit events as FHIR R4 AuditEvent resources (IHE BALP), one JSON per line.
    ///
    /// The export is itself audited (`audit.export`) before its first line.
    Export(AuditExportArgs),
}

#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    /// Another checkpoint file to check against, e.g. another engine node's (repeatable).
    #[arg(long = "checkpoints", value_name = "FILE")]
    checkpoints: Vec<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct AuditListArgs {
    /// Only events by this actor (a token's subject, `cli:USER`).
    #[arg(long)]
    actor: Option<String>,
    /// Only events of this action, e.g. `message.read`, `message.reprocess`.
    #[arg(long)]
    action: Option<String>,
    /// Only events about this resource (a message id, a patient id, …).
    #[arg(long)]
    resource_id: Option<String>,
    /// Only events after this sequence number.
    #[arg(long)]
    after: Option<i64>,
    /// Most events to print.
    #[arg(long, default_value_t = 100)]
    limit: i64,
    /// Print times as milliseconds since the Unix epoch instead of ISO 8601.
    #[arg(long)]
    epoch: bool,
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

pub(crate) fn parse_role(s: &str) -> Result<Role> {
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

/// Issues a token; it is printed only once its issue is on the audit trail (id, subject,
/// role, facility, expiry — never the token itself).
pub async fn token(root: &RootConfig, store: &Store, cmd: TokenCommand) -> Result<ExitCode> {
    match cmd {
        TokenCommand::Issue(a) => {
            let role = parse_role(&a.role)?;
            let ttl = parse_ttl(&a.ttl)?;
            let t = security::issue_from_config(&root.security, &a.sub, role, &a.facility, ttl)
                .map_err(|e| anyhow::anyhow!(e))?;
            store
                .audit(&cli_event(
                    "token.issue",
                    "Token",
                    &t.id,
                    format!(
                        "for {} ({role}, facility {}), expires {}",
                        a.sub,
                        a.facility,
                        chrono::DateTime::from_timestamp(t.expires_at as i64, 0)
                            .map(|d| d.to_rfc3339())
                            .unwrap_or_else(|| t.expires_at.to_string())
                    ),
                ))
                .await
                .context("the token's issue could not be audited, so it is not given out")?;
            println!("{}", t.token);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// SHA-256 of bytes, hex.
pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// The OS account the CLI runs as: `uid=N` (from the kernel, unlike `$USER`).
fn os_uid() -> String {
    #[cfg(unix)]
    {
        format!("uid={}", rustix::process::getuid().as_raw())
    }
    #[cfg(not(unix))]
    {
        "uid=unknown".to_owned()
    }
}

/// The CLI acts with the database's own authority; its events name the OS user (`$USER`, which
/// the user can set) and the uid the process runs as (which they cannot): source `cli uid=N`.
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
        source: format!("cli {}", os_uid()),
        purpose: String::new(),
        detail,
        subject_facility: String::new(),
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
        AuditCommand::Verify(a) => {
            let r = store.verify_audit_with(&a.checkpoints).await?;
            for n in &r.notes {
                println!("note: {n}");
            }
            let an = &r.anchor;
            if an.checkpoints > 0 {
                println!(
                    "anchored: {} checkpoint(s) in {}; the latest vouches for row {} ({}, node {}); rows after it are not anchored yet",
                    an.checkpoints,
                    an.files.join(", "),
                    an.latest_seq,
                    an.latest_at
                        .map(huizhen_core::message::format_ms)
                        .unwrap_or_default(),
                    an.latest_node.as_deref().unwrap_or("?")
                );
            }
            if let Some(kid) = &an.key {
                println!(
                    "signed: {} row(s) with a valid MAC of audit key {kid}, {} written before the key",
                    an.keyed_rows, an.unkeyed_rows
                );
            }
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
            let query = format!(
                "actor={} action={} resource_id={} after={} limit={}",
                a.actor.as_deref().unwrap_or(""),
                a.action.as_deref().unwrap_or(""),
                a.resource_id.as_deref().unwrap_or(""),
                a.after.unwrap_or(0),
                a.limit
            );
            let rows = store
                .audit_events(&AuditFilter {
                    actor: a.actor,
                    action: a.action,
                    resource_id: a.resource_id,
                    after: a.after,
                    limit: Some(a.limit),
                    facilities: None,
                    ..Default::default()
                })
                .await?;
            store
                .audit(&cli_event(
                    "audit.read",
                    "AuditEvent",
                    "",
                    format!("{query}; {} events", rows.len()),
                ))
                .await?;
            for r in rows {
                let mut v = serde_json::to_value(&r)?;
                crate::times::json(&mut v, a.epoch);
                println!("{}", serde_json::to_string(&v)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Export(a) => {
            if !a.fhir {
                bail!("choose a format: --fhir");
            }
            let mut after = a.after.unwrap_or(0);
            // Recorded before the first line goes out: an export that is cut off is still on
            // the trail (with the rows up to this event's own).
            store
                .audit(&cli_event(
                    "audit.export",
                    "AuditEvent",
                    "",
                    format!("fhir, after {after}"),
                ))
                .await?;
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
        let mut what = serde_json::json!({
            "what": { "identifier": { "system": format!("urn:huizhen:{}", e.resource_type), "value": e.resource_id } },
            "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object" },
            "detail": if e.detail.is_empty() { serde_json::json!([]) } else { serde_json::json!([{ "type": "detail", "valueString": e.detail }]) }
        });
        // Whose resource it is: the facility auditors filter on.
        if !e.subject_facility.is_empty() {
            what["extension"] = serde_json::json!([{ "url": "urn:huizhen:subject-facility", "valueString": e.subject_facility }]);
        }
        entity.push(what);
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
        for table in huizhen_core::store::rekey::REKEY_TABLES.iter().copied() {
            let total = store.count_rows(table).await?;
            let (mut scanned, mut rewritten, mut after) = (0u64, 0u64, None::<String>);
            let pb = crate::progress::bar(
                u64::try_from(total).unwrap_or(0),
                format!("pass {pass}, {table}"),
            );
            loop {
                let b = store.rekey_batch(table, after.as_deref(), batch).await?;
                scanned += b.scanned;
                rewritten += b.rewritten;
                pb.set_position(scanned);
                pb.set_message(format!("checked, {rewritten} re-encrypted"));
                match b.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            pb.finish_and_clear();
            eprintln!("pass {pass}, {table}: {scanned}/{total} checked, {rewritten} re-encrypted");
            total_rewritten += rewritten;
        }
    }
    store
        .audit(&cli_event(
            "keys.rotate",
            "DataKey",
            &id,
            format!(
                "{total_rewritten} rows re-sealed (bodies, header values, errors, dedup keys, consultations, prescriptions, bookings, the workflow outbox)"
            ),
        ))
        .await?;
    println!(
        "active data key: {id}; {total_rewritten} rows re-sealed (bodies, header values, errors, dedup keys, consultations and their events, prescriptions and their events, bookings, the workflow outbox), bound to their record and field; older keys stay in the file for anything not yet rewritten"
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
