//! How a logistics callback (药品配送 webhook) is judged. Webhooks are retried and reordered,
//! so a callback is one of:
//!
//! * **duplicate**: its event id was seen before, or it reports the state the prescription is
//!   already in: no event, no error (the webhook gets 200 and stops retrying);
//! * **applied**: a forward step (table below);
//! * **late**: it reports a step the prescription is already past (`dispatched` after
//!   `delivered`), or it happened before the last applied step: recorded as a note, the state
//!   unchanged;
//! * **impossible**: the prescription is not in effect (draft, pending review, rejected,
//!   cancelled): an error, since no drug may be supplied before pharmacist approval (CN-20).
//!
//! | from \ status | dispatched | delivered | failed | returned |
//! |---|---|---|---|---|
//! | active | apply | apply (the dispatch call was lost) | apply | apply |
//! | dispatched | duplicate | apply | apply | apply |
//! | delivery-failed | apply (re-dispatch) | apply (second attempt) | duplicate | apply |
//! | delivered, returned | late | late / duplicate | late | late / duplicate |

use super::model::{DeliveryCallback, Prescription, PrescriptionState};

/// The judgement of one callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Already applied: nothing to do.
    Duplicate,
    /// A forward step.
    Apply,
    /// Past or out of order: note it, change nothing.
    Late(String),
    /// The prescription is not in effect.
    NotActive,
}

pub(super) fn classify(rx: &Prescription, callback: &DeliveryCallback) -> Verdict {
    use PrescriptionState as S;
    if rx.seen_callbacks.contains(&callback.event_id) {
        return Verdict::Duplicate;
    }
    if !rx.state.is_effective() {
        return Verdict::NotActive;
    }
    if callback.status.target_state() == rx.state {
        return Verdict::Duplicate;
    }
    let late = |why: &str| {
        Verdict::Late(format!(
            "late `{}` callback {} (occurred {}) ignored: {why}",
            callback.status, callback.event_id, callback.occurred_at
        ))
    };
    if let Some(last) = rx.delivery.last()
        && callback.occurred_at < last.occurred_at
    {
        return late(&format!(
            "it happened before the last applied status `{}` at {}",
            last.status, last.occurred_at
        ));
    }
    match (rx.state, callback.status) {
        (S::Active | S::Dispatched | S::DeliveryFailed, _) => Verdict::Apply,
        (S::Delivered | S::Returned, _) => {
            late(&format!("the prescription is already {}", rx.state))
        }
        // `is_effective` holds, so no other state reaches here; treat it as not in effect.
        _ => Verdict::NotActive,
    }
}
