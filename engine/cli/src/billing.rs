//! `huizhen billing stand-in`: the stand-in insurance platform and finance e-invoice platform
//! for the demo (never for production: they settle and invoice nothing real). The platform
//! answers the NHSA-style exchange at `http://<listen>/fsi/api` (the fund pays 80 % up to 150
//! yuan), the finance platform numbers invoices at `http://<finance>/einvoice/issue`, and the
//! platform's statement of its books is written to `<statements>/<yyyymmdd>.csv` (the local
//! day) whenever it changes, where the daily reconciliation reads it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{FixedOffset, Utc};
use clap::{Args, Subcommand};
use huizhen_insurer::testing::StandIn;
use huizhen_insurer::testing::finance::FinanceStandIn;

#[derive(Debug, Subcommand)]
pub enum BillingCommand {
    /// Run the demo's stand-in insurance and e-invoice platforms until Ctrl-C.
    StandIn(StandInArgs),
}

#[derive(Debug, Args)]
pub struct StandInArgs {
    /// Where the insurance platform listens (`billing.insurer.nhsa.url` is
    /// `http://<this>/fsi/api`).
    #[arg(long, default_value = "127.0.0.1:8091", value_name = "HOST:PORT")]
    listen: String,
    /// Where the finance e-invoice platform listens (`billing.invoices.finance-einvoice.url`
    /// is `http://<this>/einvoice/issue`).
    #[arg(long, default_value = "127.0.0.1:8092", value_name = "HOST:PORT")]
    finance: String,
    /// The folder the platform's statement files go to (`billing.reconciliation.statements`).
    #[arg(long, default_value = "data/billing/statements", value_name = "DIR")]
    statements: PathBuf,
    /// The platform's local time, minutes east of UTC (names the statement's day).
    #[arg(long, default_value_t = 480, value_name = "MINUTES")]
    utc_offset_minutes: i32,
}

pub async fn run(cmd: BillingCommand) -> Result<ExitCode> {
    match cmd {
        BillingCommand::StandIn(args) => stand_in(args).await,
    }
}

async fn stand_in(args: StandInArgs) -> Result<ExitCode> {
    let offset = FixedOffset::east_opt(args.utc_offset_minutes.saturating_mul(60))
        .context("--utc-offset-minutes is not an offset")?;
    let platform = StandIn::start_at(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let finance = FinanceStandIn::start_at(&args.finance)
        .await
        .with_context(|| format!("cannot listen on {}", args.finance))?;
    std::fs::create_dir_all(&args.statements)
        .with_context(|| format!("cannot create {}", args.statements.display()))?;
    println!("stand-in insurance platform: {} (demo only)", platform.url);
    println!("stand-in finance e-invoice platform: {}", finance.url);
    println!("statements: {}/<yyyymmdd>.csv", args.statements.display());
    let mut written = String::new();
    let mut seen = 0;
    let mut problems = 0;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let got = platform.received();
        for r in &got[seen.min(got.len())..] {
            let reversal = r
                .omsgid
                .as_deref()
                .map(|o| format!(" reverses {o}"))
                .unwrap_or_default();
            println!("{} {}{reversal}", r.infno, r.msgid);
        }
        seen = got.len();
        let p = platform.problems();
        for problem in &p[problems.min(p.len())..] {
            eprintln!("request refused by shape: {problem}");
        }
        problems = p.len();
        let statement = platform.statement();
        if statement != written {
            let day = Utc::now().with_timezone(&offset).format("%Y%m%d");
            let file = args.statements.join(format!("{day}.csv"));
            std::fs::write(&file, &statement)
                .with_context(|| format!("cannot write {}", file.display()))?;
            println!("statement written: {}", file.display());
            written = statement;
        }
    }
    for i in finance.issued() {
        println!("issued {} {} {}", i.kind, i.bill_code, i.bill_number);
    }
    Ok(ExitCode::SUCCESS)
}
