//! `huizhen opinion`: the expert's side of a signed opinion (CN-07, CN-21) for the demo and for
//! trying the workflow out: `testca` makes a test certificate authority (its root for
//! `workflow.signing_roots`, a signing key and certificate chain per expert), `sign` signs an
//! opinion over its canonical bytes and prints the body of `POST
//! /api/consultations/{id}/sign_opinion`. A production deployment signs with the physician's
//! certificate from a licensed CA, in the physician's own client; the test CA's keys are
//! generated here and kept in files, so nothing it signs may be trusted anywhere else.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use chrono::{TimeDelta, Utc};
use clap::{Args, Subcommand};
use huizhen_domain::consultation::{Opinion, sign_opinion};
use huizhen_signing::CertSigner;
use huizhen_signing::testca::TestCa;

#[derive(Debug, Subcommand)]
pub enum OpinionCommand {
    /// Make a test CA for the demo (NOT for production): OUT/roots.pem for
    /// `workflow.signing_roots`, and OUT/ID.key.pem with OUT/ID.chain.pem for each expert.
    Testca(TestcaArgs),
    /// Sign an opinion (JSON: consultation, expert, diagnoses, treatment_plan, advice) with a
    /// physician's key and chain; prints `{"signed": …}`, the body of the `sign_opinion` action.
    Sign(SignArgs),
}

#[derive(Debug, Args)]
pub struct TestcaArgs {
    /// The folder the files go to (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// An expert to issue a signing certificate for: `ID` or `ID=NAME` (NAME is the
    /// certificate's common name, the signer's name on the opinion). Repeat for more.
    #[arg(long = "expert", value_name = "ID[=NAME]", required = true)]
    experts: Vec<String>,
    /// The certificates are valid from yesterday for this many days.
    #[arg(long, default_value_t = 365)]
    days: i64,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The opinion, JSON (`consultation` may be left out and given with --consultation).
    file: PathBuf,
    /// The consultation it belongs to (replaces the file's `consultation`).
    #[arg(long)]
    consultation: Option<String>,
    /// The physician's private key, PKCS#8 PEM.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The physician's certificate chain, PEM, leaf first.
    #[arg(long, value_name = "FILE")]
    chain: PathBuf,
}

pub fn run(cmd: OpinionCommand) -> Result<ExitCode> {
    match cmd {
        OpinionCommand::Testca(a) => testca(&a),
        OpinionCommand::Sign(a) => sign(&a),
    }
}

fn testca(a: &TestcaArgs) -> Result<ExitCode> {
    if a.days < 1 {
        bail!("--days: give at least 1");
    }
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let ca = TestCa::generate("Huizhen Demo").map_err(|e| anyhow::anyhow!("{e}"))?;
    let roots = a.out.join("roots.pem");
    ca.write_root_pem(&roots)
        .with_context(|| format!("cannot write {}", roots.display()))?;
    println!("{}  the root: workflow.signing_roots", roots.display());
    let from = Utc::now() - TimeDelta::days(1);
    let to = Utc::now() + TimeDelta::days(a.days);
    for spec in &a.experts {
        let (id, name) = match spec.split_once('=') {
            Some((id, name)) => (id.trim(), name.trim()),
            None => (spec.trim(), spec.trim()),
        };
        if id.is_empty() || name.is_empty() || id.contains(['/', '\\']) || id.starts_with('.') {
            bail!("--expert {spec:?}: give ID or ID=NAME (an ID usable as a file name)");
        }
        let physician = ca
            .issue_physician(name, from, to)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let (key, chain) = physician
            .write_pem(&a.out, id)
            .with_context(|| format!("cannot write the files of {id}"))?;
        println!(
            "{}  {}  expert {id} ({name})",
            key.display(),
            chain.display()
        );
    }
    eprintln!("a test CA: never trust its root outside a demo or a test");
    Ok(ExitCode::SUCCESS)
}

fn sign(a: &SignArgs) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("cannot read {}", a.file.display()))?;
    let mut value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", a.file.display()))?;
    if let Some(id) = &a.consultation {
        let Some(object) = value.as_object_mut() else {
            bail!("{}: not a JSON object", a.file.display());
        };
        object.insert("consultation".into(), id.clone().into());
    }
    let opinion: Opinion = serde_json::from_value(value)
        .with_context(|| format!("{}: not an opinion", a.file.display()))?;
    let problems = opinion.problems();
    if !problems.is_empty() {
        let list: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", p.path, p.problem))
            .collect();
        bail!("{}: {}", a.file.display(), list.join("; "));
    }
    let signer =
        CertSigner::from_pem_files(&a.key, &a.chain).map_err(|e| anyhow::anyhow!("{e}"))?;
    let signed = sign_opinion(opinion, &signer, Utc::now()).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!("{}", serde_json::json!({ "signed": signed }));
    Ok(ExitCode::SUCCESS)
}
