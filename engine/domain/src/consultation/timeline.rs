//! The consultation's timeline (one entry per event, for `GET /api/consultations/{id}`) and the
//! chain of timestamps MATCH-21 asks to measure: created, local approval, offered, opened,
//! accepted, joined (the session started), report signed. The bottleneck is often on the
//! requesting side, so every link is kept, not only request → accept.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::event::{Actor, PluginRef};
use super::state::State;

/// One event as the timeline shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// The consultation's version after the event.
    pub version: u64,
    /// When.
    pub at: DateTime<Utc>,
    /// The event type (`offered`, `accepted`, …).
    pub event: String,
    /// Who.
    pub actor: Actor,
    /// The plugin that decided, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginRef>,
    /// Why, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The state before.
    pub from: State,
    /// The state after (equal to `from` for records).
    pub to: State,
}

/// The MATCH-21 timestamps; each is set by the first event of its kind, except
/// `report_signed`, which is the latest signature (a corrected opinion re-signs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Milestones {
    /// The request was created.
    pub created: Option<DateTime<Utc>>,
    /// The local facility approved it.
    pub local_approval: Option<DateTime<Utc>>,
    /// First offered to an expert.
    pub offered: Option<DateTime<Utc>>,
    /// First opened by an offered expert.
    pub opened: Option<DateTime<Utc>>,
    /// Accepted.
    pub accepted: Option<DateTime<Utc>>,
    /// The session started (the participants joined).
    pub joined: Option<DateTime<Utc>>,
    /// The expert's opinion was signed.
    pub report_signed: Option<DateTime<Utc>>,
}

impl Milestones {
    /// Request created → accepted (the platform's headline figure, target < 15 min).
    pub fn request_to_accept(&self) -> Option<TimeDelta> {
        Some(self.accepted? - self.created?)
    }

    /// First offer → accepted (the experts' side of the chain).
    pub fn offer_to_accept(&self) -> Option<TimeDelta> {
        Some(self.accepted? - self.offered?)
    }

    /// Created → local approval (the requesting side's own step).
    pub fn local_approval_time(&self) -> Option<TimeDelta> {
        Some(self.local_approval? - self.created?)
    }
}
