//! Whose open work a consultation is (STANDARDS MATCH-30: the load cap and load-aware ranking
//! read it). An expert's `open_consultations` (the expert registry's [`Load`]) counts the
//! consultations offered to them and not yet answered, and those they accepted and have not
//! finished. The count is a consequence of the consultation's events, so it is derived here
//! from the state before and after a change ([`load_changes`]) and the store applies it in the
//! change's own transaction: the load always matches the consultations, with no drift from a
//! step that was missed.
//!
//! [`Load`]: crate::expert::Load

use std::collections::BTreeSet;

use super::aggregate::Consultation;
use super::state::State;

impl Consultation {
    /// The experts this consultation counts against now:
    ///
    /// * offered or opened (`offered`, `reviewing`): every offeree of the current attempt who
    ///   has not declined it (a fan-out counts against the whole pool until one accepts);
    /// * accepted and not finished (`scheduled`, `in-session`, `paused`, `report-pending`): the
    ///   accepted expert;
    /// * otherwise (drafting, waiting for a match, declined, and every terminal state): nobody.
    ///
    /// A passed deadline does not release the offer by itself: the re-offer that expires it
    /// does (the expert may still accept until then).
    pub fn load_holders(&self) -> BTreeSet<&str> {
        let mut out = BTreeSet::new();
        match self.state() {
            State::Offered | State::Reviewing => {
                if let Some(a) = self.current_attempt()
                    && a.outcome.is_none()
                {
                    out.extend(a.remaining().into_iter().map(|o| o.expert.as_str()));
                }
            }
            State::Scheduled | State::InSession | State::Paused | State::ReportPending => {
                out.extend(self.accepted_by());
            }
            _ => {}
        }
        out
    }
}

/// How each expert's open consultations change from `before` to `after` (the same
/// consultation, before and after a command): `+1` for an expert it now counts against, `-1`
/// for one it no longer does, in expert order; nothing for an unchanged holder. An offer
/// takes one, a decline or an expired offer gives it back, an acceptance of a fan-out gives
/// back every other pool member's, completion, cancellation and failure give back the
/// accepted expert's.
pub fn load_changes(before: &Consultation, after: &Consultation) -> Vec<(String, i64)> {
    let (was, is) = (before.load_holders(), after.load_holders());
    let mut out: Vec<(String, i64)> = was
        .difference(&is)
        .map(|e| ((*e).to_owned(), -1))
        .chain(is.difference(&was).map(|e| ((*e).to_owned(), 1)))
        .collect();
    out.sort();
    out
}
