//! The prescription's data: who acts, the lines, the states, and the aggregate itself.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::signature::Signature;

/// The role an actor holds when issuing a command. Only [`Role::Expert`] and
/// [`Role::LocalDoctor`] are physicians who may prescribe; [`Role::Plugin`] and
/// [`Role::System`] stand for automated actors, which CN-20 forbids to generate prescriptions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The invited expert physician (受邀方医师).
    Expert,
    /// The inviting facility's physician (邀请方医师).
    LocalDoctor,
    /// A pharmacist (药师): the only role that reviews prescriptions.
    Pharmacist,
    /// A platform coordinator (may cancel, never prescribe or review).
    Coordinator,
    /// The patient or a relative.
    Patient,
    /// A WASM plugin (scoring, triage, …): may suggest drugs, never create a prescription.
    Plugin,
    /// The engine itself (timers, cascades from the consultation).
    System,
}

impl Role {
    /// The kebab-case name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Expert => "expert",
            Role::LocalDoctor => "local-doctor",
            Role::Pharmacist => "pharmacist",
            Role::Coordinator => "coordinator",
            Role::Patient => "patient",
            Role::Plugin => "plugin",
            Role::System => "system",
        }
    }

    /// True for the physician roles that may issue a prescription (CN-20: issued by the
    /// physician personally).
    pub fn is_prescriber(self) -> bool {
        matches!(self, Role::Expert | Role::LocalDoctor)
    }

    /// True for automated actors (plugins, the engine).
    pub fn is_automated(self) -> bool {
        matches!(self, Role::Plugin | Role::System)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who issues a command: a person's (or plugin's) id and the role they act in. The HTTP layer
/// builds it from the authenticated principal, never from the request body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// The person id (a Practitioner id), or the plugin's `name@version` for a plugin.
    pub id: String,
    /// The role acted in.
    pub role: Role,
}

impl Actor {
    /// An actor with `id` in `role`.
    pub fn new(id: impl Into<String>, role: Role) -> Actor {
        Actor {
            id: id.into(),
            role,
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} `{}`", self.role, self.id)
    }
}

/// How a drug is given (给药途径).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DrugRoute {
    /// 口服.
    Oral,
    /// 静脉注射/滴注.
    Intravenous,
    /// 肌内注射.
    Intramuscular,
    /// 皮下注射.
    Subcutaneous,
    /// 舌下含服.
    Sublingual,
    /// 吸入.
    Inhalation,
    /// 外用.
    Topical,
    /// 直肠给药.
    Rectal,
    /// 其他 (named in the line's frequency or the pharmacist's note).
    Other,
}

impl DrugRoute {
    /// The kebab-case name, as serialised and signed.
    pub fn as_str(self) -> &'static str {
        match self {
            DrugRoute::Oral => "oral",
            DrugRoute::Intravenous => "intravenous",
            DrugRoute::Intramuscular => "intramuscular",
            DrugRoute::Subcutaneous => "subcutaneous",
            DrugRoute::Sublingual => "sublingual",
            DrugRoute::Inhalation => "inhalation",
            DrugRoute::Topical => "topical",
            DrugRoute::Rectal => "rectal",
            DrugRoute::Other => "other",
        }
    }
}

/// One drug on the prescription: what, how much, how, how often, how long, how many packs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrescriptionLine {
    /// The drug code (国家医保药品编码 or the hospital formulary code).
    pub drug_code: String,
    /// The drug's generic name (通用名), e.g. `阿托伐他汀钙片`.
    pub drug_name: String,
    /// The drug's management category, when the formulary gives one (`麻醉药品`,
    /// `第一类精神药品`, …): what the deny list's categories are matched against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The single dose as a decimal number (`0.5`, `20`): text, so that what is signed is
    /// exactly what the physician wrote.
    pub dose: String,
    /// The dose unit (`mg`, `g`, `片`, `ml`).
    pub dose_unit: String,
    /// The route.
    pub route: DrugRoute,
    /// The frequency code (`qd`, `bid`, `tid`, `q8h`, `prn`, or the Chinese 每日一次).
    pub frequency: String,
    /// Days of treatment, at least 1.
    pub days: u32,
    /// Quantity to supply, at least 1, in `quantity_unit`.
    pub quantity: u32,
    /// The supply unit (`盒`, `瓶`, `支`).
    pub quantity_unit: String,
}

/// Where a prescription is. `New` is the aggregate before anything was drafted.
///
/// ```text
/// new → draft → pending-review → active → dispatched → delivered
///          │          │            │  │        ├────→ delivery-failed → (dispatched) / returned
///          │          └→ rejected  │  └────────┴────→ returned
///          └──────────┴────────────┴→ cancelled
/// ```
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum PrescriptionState {
    /// Nothing drafted yet.
    #[default]
    New,
    /// 草稿: being written by the prescriber.
    Draft,
    /// 待药师审核: signed and submitted; a pharmacist review task is open.
    PendingReview,
    /// 已生效: approved by a pharmacist; may be dispensed and sent.
    Active,
    /// 审核不通过 (terminal): the pharmacist rejected it, with a reason.
    Rejected,
    /// 已发货: the logistics partner has the parcel.
    Dispatched,
    /// 已签收 (terminal).
    Delivered,
    /// 配送失败: may be dispatched again or returned.
    DeliveryFailed,
    /// 已退回 (terminal).
    Returned,
    /// 已取消 (terminal), with a reason.
    Cancelled,
}

impl PrescriptionState {
    /// The kebab-case name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            PrescriptionState::New => "new",
            PrescriptionState::Draft => "draft",
            PrescriptionState::PendingReview => "pending-review",
            PrescriptionState::Active => "active",
            PrescriptionState::Rejected => "rejected",
            PrescriptionState::Dispatched => "dispatched",
            PrescriptionState::Delivered => "delivered",
            PrescriptionState::DeliveryFailed => "delivery-failed",
            PrescriptionState::Returned => "returned",
            PrescriptionState::Cancelled => "cancelled",
        }
    }

    /// True once a pharmacist approved: the states in which a drug may have left the pharmacy.
    pub fn is_effective(self) -> bool {
        matches!(
            self,
            PrescriptionState::Active
                | PrescriptionState::Dispatched
                | PrescriptionState::Delivered
                | PrescriptionState::DeliveryFailed
                | PrescriptionState::Returned
        )
    }
}

impl fmt::Display for PrescriptionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The pharmacist's review task (药师审核) and, once decided, its outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Review {
    /// The review task's id (`{prescription}/pharmacist-review`).
    pub task_id: String,
    /// When the task was opened (the submission).
    pub opened_at: DateTime<Utc>,
    /// The reviewing pharmacist, once decided.
    #[serde(default)]
    pub pharmacist: Option<String>,
    /// True when approved, false when rejected; none while open.
    #[serde(default)]
    pub approved: Option<bool>,
    /// The rejection reason, or the approval note.
    #[serde(default)]
    pub note: Option<String>,
    /// When decided.
    #[serde(default)]
    pub decided_at: Option<DateTime<Utc>>,
}

/// A status reported by the logistics partner's webhook (药品配送).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryStatus {
    /// The parcel left the pharmacy.
    Dispatched,
    /// The patient (or their representative) signed for it.
    Delivered,
    /// Delivery failed (address, nobody home, damaged).
    Failed,
    /// The parcel came back to the pharmacy.
    Returned,
}

impl DeliveryStatus {
    /// The kebab-case name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Dispatched => "dispatched",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Returned => "returned",
        }
    }

    /// The prescription state this status leads to.
    pub fn target_state(self) -> PrescriptionState {
        match self {
            DeliveryStatus::Dispatched => PrescriptionState::Dispatched,
            DeliveryStatus::Delivered => PrescriptionState::Delivered,
            DeliveryStatus::Failed => PrescriptionState::DeliveryFailed,
            DeliveryStatus::Returned => PrescriptionState::Returned,
        }
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One webhook call from the logistics partner, as the HTTP layer parsed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryCallback {
    /// The partner's id for this status event: the same id on a retried call makes it a
    /// duplicate.
    pub event_id: String,
    /// The status reported.
    pub status: DeliveryStatus,
    /// When the status happened, by the partner's clock.
    pub occurred_at: DateTime<Utc>,
    /// The waybill number (运单号), when given.
    #[serde(default)]
    pub tracking: Option<String>,
    /// Free text from the partner (failure reason, signer).
    #[serde(default)]
    pub detail: Option<String>,
}

/// A delivery status the prescription went through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryStep {
    /// The status.
    pub status: DeliveryStatus,
    /// When it happened (partner clock).
    pub occurred_at: DateTime<Utc>,
    /// When the engine received it.
    pub received_at: DateTime<Utc>,
    /// The partner's event id.
    pub event_id: String,
}

/// A callback that changed nothing but is kept for the record (a late status).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Note {
    /// When it was recorded.
    pub at: DateTime<Utc>,
    /// What happened, for people.
    pub text: String,
}

/// The prescription aggregate: built only by [`Prescription::apply`] from its events, changed
/// only through [`PrescriptionPolicy::decide`](super::PrescriptionPolicy::decide).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prescription {
    /// The prescription id (empty while `New`).
    pub id: String,
    /// The consultation it belongs to.
    pub consultation_id: String,
    /// The patient (master person id).
    pub patient_id: String,
    /// The physician who drafted it: the only one who may revise, sign and submit it.
    #[serde(default)]
    pub prescriber: Option<Actor>,
    /// The drugs.
    #[serde(default)]
    pub lines: Vec<PrescriptionLine>,
    /// Where it is.
    #[serde(default)]
    pub state: PrescriptionState,
    /// When drafted (part of what is signed).
    #[serde(default)]
    pub drafted_at: Option<DateTime<Utc>>,
    /// The prescriber's signature over [`canonical_bytes`](Prescription::canonical_bytes),
    /// from submission on (CN-21).
    #[serde(default)]
    pub signature: Option<Signature>,
    /// The pharmacist review task, from submission on.
    #[serde(default)]
    pub review: Option<Review>,
    /// Why it was cancelled, by whom.
    #[serde(default)]
    pub cancellation: Option<(Actor, String)>,
    /// The delivery statuses applied, in order.
    #[serde(default)]
    pub delivery: Vec<DeliveryStep>,
    /// Every logistics event id seen (applied or noted): a repeat is a duplicate.
    #[serde(default)]
    pub seen_callbacks: Vec<String>,
    /// Callbacks recorded without changing the state.
    #[serde(default)]
    pub notes: Vec<Note>,
    /// The number of events applied (the optimistic-concurrency version).
    #[serde(default)]
    pub version: u64,
    /// When the last event happened.
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
}
