//! Electronic prescriptions (STANDARDS CN-20, CN-21; issue 15 item 7): drafted by a physician
//! personally, signed, effective only after a pharmacist approves (药师审核), never carrying a
//! controlled drug, then routed to delivery (药品配送) whose webhook reports back.
//!
//! An event-sourced aggregate, pure: [`PrescriptionPolicy::decide`] takes the current
//! [`Prescription`], a [`PrescriptionCommand`] and `now`, and returns the
//! [`PrescriptionEvent`]s to persist (or a [`PrescriptionError`] naming what was wrong);
//! [`Prescription::apply`] folds an event into the state. The store persists the events and
//! the engine signs with its `Signer` (CN-21) over [`Prescription::canonical_bytes`].
//!
//! Rules enforced here:
//!
//! * only an [`Role::Expert`] or [`Role::LocalDoctor`] drafts; a [`Role::Plugin`] or
//!   [`Role::System`] actor is refused outright ([`PrescriptionError::Automated`]: AI
//!   generation is forbidden); only the prescriber revises and submits;
//! * the [`DenyList`] is checked on draft, revision and again on submission (the list may have
//!   changed), naming the offending line;
//! * submission needs the prescriber's signature, made after the last change;
//! * only a [`Role::Pharmacist`] approves or rejects, never the prescriber; rejecting and
//!   cancelling need a reason;
//! * delivery callbacks are idempotent and order-tolerant ([`delivery`]); one before the
//!   prescription is active is an error naming the state.

mod apply;
pub mod canonical;
mod commands;
mod decide;
pub mod delivery;
pub mod deny;
mod model;

#[cfg(test)]
mod tests;

pub use canonical::CANONICAL_HEADER;
pub use commands::{PrescriptionCommand, PrescriptionError, PrescriptionEvent};
pub use decide::{PrescriptionPolicy, allowed_actions};
pub use deny::{DenyList, DenyListError, DenyMatch};
pub use model::{
    Actor, DeliveryCallback, DeliveryStatus, DeliveryStep, DrugRoute, Note, Prescription,
    PrescriptionLine, PrescriptionState, Review, Role,
};
