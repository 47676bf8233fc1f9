//! `huizhen devices`: which patient a device (a home blood-pressure cuff, a glucometer, a
//! clinic's gateway) measures for, and when — the bindings the `device_reading` step files
//! readings by (issue 25; docs/devices.md).
//!
//! * `bind DEVICE --facility F --patient LOCAL_ID [--from T] [--to T]` adds a binding (refused
//!   when the patient record is not in the identity index, or when it overlaps another binding
//!   of the device). Times are RFC 3339; `--from` defaults to now, `--to` to open.
//! * `unbind DEVICE --facility F [--at T]` ends the device's open binding (handed back).
//! * `list [--facility F]` prints `facility,device,local_id,valid_from,valid_to`.

use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use clap::Subcommand;
use huizhen_core::store::Store;
use huizhen_domain::vitals::binding::DeviceBinding;

use crate::security::cli_event;

#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// Bind a device to a patient record (facility + local id) for a period.
    Bind {
        /// The device id as its readings carry it.
        device: String,
        /// The facility (assigning authority) of the patient's local id.
        #[arg(long)]
        facility: String,
        /// The patient's local id in that facility (a record of the identity index).
        #[arg(long)]
        patient: String,
        /// Start of the period (RFC 3339; default now).
        #[arg(long)]
        from: Option<String>,
        /// End of the period, exclusive (RFC 3339; default open).
        #[arg(long)]
        to: Option<String>,
    },
    /// End the device's open binding.
    Unbind {
        /// The device id.
        device: String,
        /// The facility the device belongs to.
        #[arg(long)]
        facility: String,
        /// When it was handed back (RFC 3339; default now).
        #[arg(long)]
        at: Option<String>,
    },
    /// Print the bindings as CSV.
    List {
        /// Only this facility's devices.
        #[arg(long)]
        facility: Option<String>,
    },
}

fn time(s: Option<&str>, what: &str) -> Result<DateTime<Utc>> {
    match s {
        None => Ok(Utc::now()),
        Some(s) => Ok(DateTime::parse_from_rfc3339(s)
            .with_context(|| format!("--{what}: {s:?} is not an RFC 3339 time"))?
            .to_utc()),
    }
}

pub async fn run(store: &Store, cmd: DevicesCommand) -> Result<ExitCode> {
    match cmd {
        DevicesCommand::Bind {
            device,
            facility,
            patient,
            from,
            to,
        } => {
            if store.identity(&facility, &patient).await?.is_none() {
                eprintln!(
                    "error: the identity index holds no record {patient:?} of facility {facility:?} (import or receive the patient first)"
                );
                return Ok(ExitCode::FAILURE);
            }
            let b = DeviceBinding {
                device: device.clone(),
                facility: facility.clone(),
                local_id: patient,
                valid_from: time(from.as_deref(), "from")?,
                valid_to: to.as_deref().map(|t| time(Some(t), "to")).transpose()?,
            };
            let event = cli_event(
                "device.bind",
                "Device",
                &device,
                format!("device {device} bound in facility {facility}"),
            );
            match store.device_bind(&b, &event.actor, Some(&event)).await? {
                Ok(id) => {
                    println!("{id}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(why) => {
                    eprintln!("error: device {device}: {why}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        DevicesCommand::Unbind {
            device,
            facility,
            at,
        } => {
            let event = cli_event(
                "device.unbind",
                "Device",
                &device,
                format!("device {device} handed back in facility {facility}"),
            );
            if store
                .device_unbind(&facility, &device, time(at.as_deref(), "at")?, Some(&event))
                .await?
            {
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!(
                    "error: device {device} has no open binding in facility {facility} before that time"
                );
                Ok(ExitCode::FAILURE)
            }
        }
        DevicesCommand::List { facility } => {
            println!("facility,device,local_id,valid_from,valid_to");
            for r in store.device_bindings_all(facility.as_deref()).await? {
                let b = r.binding;
                println!(
                    "{},{},{},{},{}",
                    b.facility,
                    b.device,
                    b.local_id,
                    b.valid_from.to_rfc3339(),
                    b.valid_to.map(|t| t.to_rfc3339()).unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
