//! A device reading's threshold alert on the patient's open consultation (issue 25): the
//! `device_reading` step raises it for every consultation of the reading's patient that is
//! still open, so the expert and the local doctor see it in the consultation's timeline.
//!
//! The event (`vital_alert_raised`) records only: it changes no state and no gate, and it is
//! not one of FHIR-10's actions (nobody asks for it over `POST /api/consultations/{id}/…`; the
//! engine raises it as `system`). One reading raises it once per consultation: the reading's
//! journal message id is part of the event, and [`record_vital_alert`] decides nothing when the
//! consultation already carries it (a retried step).

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use super::aggregate::Consultation;
use super::command::Context;
use super::decide::{check_context, stamp};
use super::error::ConsultError;
use super::event::{Event, EventKind, Role};

/// The event's name in the timeline and the audit trail (`consultation.vital_alert_raised`).
pub const EVENT: &str = "vital_alert_raised";

/// One threshold rule that fired.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FiredRule {
    /// The rule's name (`bp-high`).
    pub name: String,
    /// Its severity (`high`, `critical`).
    pub severity: String,
}

/// What the alert says: which reading (device, measurement time, journal message) and which
/// rules fired. The values stay in the reading's Observations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VitalAlert {
    /// The journal message of the reading (the dedup key of the event).
    pub message: String,
    /// The device id.
    pub device: String,
    /// When the reading was measured (the device's offset kept).
    pub measured_at: DateTime<FixedOffset>,
    /// The rules that fired, in the step's order.
    pub rules: Vec<FiredRule>,
}

impl VitalAlert {
    /// The timeline's `reason`: the rules, the device, the time and the message, no value.
    pub fn summary(&self) -> String {
        let rules: Vec<String> = self
            .rules
            .iter()
            .map(|r| format!("{} ({})", r.name, r.severity))
            .collect();
        format!(
            "{} on device {} at {}; reading {}",
            rules.join(", "),
            self.device,
            self.measured_at.to_rfc3339(),
            self.message
        )
    }
}

/// True when `c` already carries the alert of the reading `message` (its timeline entry's
/// reason is the alert's [`summary`](VitalAlert::summary), which ends with the message id).
pub fn already_raised(c: &Consultation, message: &str) -> bool {
    let tail = format!("; reading {message}");
    c.timeline()
        .iter()
        .any(|t| t.event == EVENT && t.reason.as_deref().is_some_and(|r| r.ends_with(&tail)))
}

/// The event that records `alert` on `c`, or none when there is nothing to record: the
/// consultation is closed (terminal) or already carries this reading's alert. Only the engine
/// (`system`) raises it.
pub fn record_vital_alert(
    c: &Consultation,
    alert: &VitalAlert,
    ctx: &Context<'_>,
) -> Result<Vec<Event>, ConsultError> {
    check_context(None, ctx)?;
    if ctx.actor.role != Role::System {
        return Err(ConsultError::RoleNotAllowed {
            action: EVENT,
            role: ctx.actor.role,
        });
    }
    let mut problems = Vec::new();
    if alert.message.trim().is_empty() {
        problems.push(("alert.message", "is blank"));
    }
    if alert.device.trim().is_empty() {
        problems.push(("alert.device", "is blank"));
    }
    if alert.rules.is_empty() {
        problems.push((
            "alert.rules",
            "is empty: an alert names the rules that fired",
        ));
    }
    if let Some((path, what)) = problems.first() {
        return Err(ConsultError::invalid(None, path, *what));
    }
    if c.state().is_terminal() || already_raised(c, &alert.message) {
        return Ok(Vec::new());
    }
    let reason = alert.summary();
    Ok(stamp(
        c.version(),
        ctx,
        Some(&reason),
        vec![EventKind::VitalAlertRaised {
            alert: alert.clone(),
        }],
    ))
}
