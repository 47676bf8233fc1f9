//! `huizhen users`: the web console's local users (issue 21). Passwords are read from stdin
//! (`--password-stdin`) or generated and printed once; only their argon2id hash is kept. Every
//! change is audited as the CLI's.

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use huizhen_console::password;
use huizhen_core::store::Store;
use huizhen_core::store::users::UserRow;

use crate::security::{cli_event, parse_role};

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add a user of the console.
    Add(AddArgs),
    /// Set a user's password (from stdin with --password-stdin, else a generated one, printed
    /// once). The user is asked to change it in the console; their sessions end.
    Passwd {
        /// The user.
        username: String,
        /// Read the new password from stdin (one line) instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the users: role, facility, second factor, lock, last login.
    List,
    /// Lock an account now (until `unlock`); its sessions end.
    Lock {
        /// The user.
        username: String,
    },
    /// Unlock an account locked after failed logins.
    Unlock {
        /// The user.
        username: String,
    },
    /// Disable an account (its sessions end).
    Disable {
        /// The user.
        username: String,
    },
    /// Enable a disabled account again.
    Enable {
        /// The user.
        username: String,
    },
    /// Remove a user's authenticator: they enrol a new one at the next login.
    TotpReset {
        /// The user.
        username: String,
    },
    /// Change a user's role and facility (their sessions end).
    Role {
        /// The user.
        username: String,
        /// The new role.
        #[arg(long)]
        role: String,
        /// The new facility; `*` for every facility.
        #[arg(long)]
        facility: String,
    },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The login name.
    username: String,
    /// The role (admin, integrator, auditor, expert, local-doctor, pharmacist, …).
    #[arg(long)]
    role: String,
    /// The facility whose data the user sees; `*` for every facility (platform staff).
    #[arg(long)]
    facility: String,
    /// The name the console shows.
    #[arg(long, default_value = "")]
    name: String,
    /// Read the password from stdin (one line) instead of generating one.
    #[arg(long)]
    password_stdin: bool,
}

fn read_or_generate(username: &str, from_stdin: bool) -> Result<(String, bool)> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        let p = line.trim_end_matches(['\r', '\n']).to_owned();
        if let Err(e) = password::check_rule(username, &p) {
            bail!("the password from stdin: {e}");
        }
        Ok((p, false))
    } else {
        Ok((password::generate(), true))
    }
}

async fn hash(p: String) -> Result<String> {
    tokio::task::spawn_blocking(move || password::hash(&p))
        .await?
        .map_err(anyhow::Error::msg)
}

fn when(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

pub async fn run(store: &Store, cmd: UsersCommand) -> Result<ExitCode> {
    let audit = |action: &str, who: &str, detail: String| cli_event(action, "User", who, detail);
    match cmd {
        UsersCommand::Add(a) => {
            let role = parse_role(&a.role)?;
            if a.facility.trim().is_empty() {
                bail!("--facility must not be empty; `*` means every facility");
            }
            if a.username.trim().is_empty()
                || a.username.len() > 64
                || a.username.contains(char::is_whitespace)
            {
                bail!("the user name must be 1 to 64 characters without spaces");
            }
            let (pw, generated) = read_or_generate(&a.username, a.password_stdin)?;
            let mut u = UserRow::new(
                &a.username,
                role.as_str(),
                &a.facility,
                hash(pw.clone()).await?,
            );
            u.display_name = a.name;
            u.must_change = generated;
            store.create_user(&u).await?;
            store
                .audit(&audit(
                    "user.create",
                    &a.username,
                    format!("{role}, facility {}", a.facility),
                ))
                .await?;
            eprintln!(
                "user {} ({role}, facility {}) added",
                a.username, a.facility
            );
            if generated {
                eprintln!("its password, shown once (the console asks to change it):");
                println!("{pw}");
            }
        }
        UsersCommand::Passwd {
            username,
            password_stdin,
        } => {
            let (pw, generated) = read_or_generate(&username, password_stdin)?;
            store
                .set_password(&username, &hash(pw.clone()).await?, generated)
                .await?;
            store.end_sessions_of(&username).await?;
            store
                .audit(&audit(
                    "user.password",
                    &username,
                    "set from the CLI; sessions ended".into(),
                ))
                .await?;
            eprintln!("password of {username} set; its sessions ended");
            if generated {
                eprintln!("the new password, shown once:");
                println!("{pw}");
            }
        }
        UsersCommand::List => {
            println!(
                "{:<20} {:<13} {:<12} {:<5} {:<8} {:<21} NAME",
                "USER", "ROLE", "FACILITY", "TOTP", "STATE", "LAST LOGIN"
            );
            let now = huizhen_core::message::now_ms();
            for u in store.users().await? {
                let state = if u.disabled {
                    "disabled"
                } else if u.locked_until > now {
                    "locked"
                } else {
                    "active"
                };
                println!(
                    "{:<20} {:<13} {:<12} {:<5} {:<8} {:<21} {}",
                    u.username,
                    u.role,
                    u.facility,
                    if u.totp_enabled { "yes" } else { "no" },
                    state,
                    when(u.last_login_at),
                    u.display_name
                );
            }
        }
        UsersCommand::Lock { username } => {
            store.lock_user(&username, i64::MAX / 2).await?;
            store.end_sessions_of(&username).await?;
            store
                .audit(&audit("user.lock", &username, String::new()))
                .await?;
            println!("{username} locked; its sessions ended");
        }
        UsersCommand::Unlock { username } => {
            store.lock_user(&username, 0).await?;
            store
                .audit(&audit("user.unlock", &username, String::new()))
                .await?;
            println!("{username} unlocked");
        }
        UsersCommand::Disable { username } => {
            store.disable_user(&username, true).await?;
            store
                .audit(&audit("user.disable", &username, String::new()))
                .await?;
            println!("{username} disabled; its sessions ended");
        }
        UsersCommand::Enable { username } => {
            store.disable_user(&username, false).await?;
            store
                .audit(&audit("user.enable", &username, String::new()))
                .await?;
            println!("{username} enabled");
        }
        UsersCommand::TotpReset { username } => {
            store.set_totp(&username, "", false).await?;
            store.end_sessions_of(&username).await?;
            store
                .audit(&audit("user.totp-reset", &username, String::new()))
                .await?;
            println!("the authenticator of {username} was removed; its sessions ended");
        }
        UsersCommand::Role {
            username,
            role,
            facility,
        } => {
            let role = parse_role(&role)?;
            if facility.trim().is_empty() {
                bail!("--facility must not be empty; `*` means every facility");
            }
            store
                .set_user_role(&username, role.as_str(), &facility)
                .await?;
            store
                .audit(&audit(
                    "user.role",
                    &username,
                    format!("{role}, facility {facility}"),
                ))
                .await?;
            println!("{username} is now {role} of facility {facility}; its sessions ended");
        }
    }
    Ok(ExitCode::SUCCESS)
}
