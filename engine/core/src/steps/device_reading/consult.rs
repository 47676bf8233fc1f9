//! A reading's fired thresholds on the patient's open consultations: one
//! `vital_alert_raised` event each (the domain's `record_vital_alert`), written by the store
//! with its audit row (`consultation.vital_alert_raised`) in the command's transaction, shown
//! in `GET /api/consultations/{id}`'s timeline. Once per reading and consultation: the event
//! carries the message id, and a retried step decides nothing for a consultation that holds it.

use huizhen_domain::consultation::{Actor, Role, VitalAlert, record_vital_alert};

use crate::store::Store;
use crate::store::consultations::{CommandBy, ConsultationError, ConsultationFilter, is_open};
use crate::work::{StepError, Work};

/// The actor the events carry.
pub const ACTOR: &str = "device_reading";

/// Records `alert` on every open consultation of `person`; the ids of those that took it.
pub async fn raise(
    store: &Store,
    work: &Work,
    person: i64,
    alert: &VitalAlert,
) -> Result<Vec<String>, StepError> {
    let id = &work.id;
    let retry = |e: &dyn std::fmt::Display| {
        StepError::new(format!(
            "message {id}: device_reading: consultations of the patient: {e}"
        ))
    };
    let mut open = Vec::new();
    let mut filter = ConsultationFilter {
        patient: Some(person as u64),
        limit: Some(500),
        ..ConsultationFilter::default()
    };
    loop {
        let page = store
            .list_consultations(&filter)
            .await
            .map_err(|e| retry(&e))?;
        open.extend(
            page.consultations
                .into_iter()
                .filter(|c| c.state.parse().is_ok_and(is_open))
                .map(|c| c.id),
        );
        match page.next_cursor {
            Some(next) => filter.cursor = Some(next),
            None => break,
        }
    }
    let system = Actor::new(ACTOR, Role::System);
    let mut by = CommandBy::new(&system);
    by.facility = &work.facility;
    let source = format!("pipeline:{}", work.pipeline);
    by.source = &source;
    let mut raised = Vec::new();
    for c in open {
        let committed = store
            .consultation_command(&c, None, &by, |s, ctx| {
                record_vital_alert(&s.consultation, alert, ctx)
            })
            .await;
        match committed {
            Ok(done) if !done.events.is_empty() => raised.push(c),
            Ok(_) => {}
            // Gone in between (entered in error and purged, or a race with a merge): skip it.
            Err(ConsultationError::NotFound(_)) => {}
            Err(e @ (ConsultationError::Store(_) | ConsultationError::Busy(_))) => {
                return Err(retry(&e));
            }
            Err(e) => {
                return Err(StepError::permanent(format!(
                    "message {id}: device_reading: consultation {c}: {e}"
                )));
            }
        }
    }
    Ok(raised)
}
