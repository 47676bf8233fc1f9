//! A consultation's [`ConsultationFacts`], projected from its state and timeline (the MATCH-21
//! milestones), so the store writes the statistics' input with every change of the aggregate.

use crate::consultation::{Consultation, Role, State};

use super::ConsultationFacts;

impl ConsultationFacts {
    /// The facts of `c` as it is now: requested at its `created` milestone, accepted at its
    /// `accepted` milestone, completed at its `completed` event, cancelled or failed by its
    /// state, and SLA-breached when an offer expired (MATCH-20) or the system escalated an
    /// opened case whose deadline passed.
    pub fn of(c: &Consultation) -> ConsultationFacts {
        let timeline = c.timeline();
        let created_at = c
            .milestones()
            .created
            .or_else(|| timeline.first().map(|e| e.at))
            .unwrap_or_else(|| c.last_modified());
        let completed_at = timeline
            .iter()
            .rev()
            .find(|e| e.event == "completed")
            .map(|e| e.at);
        let sla_breached = timeline.iter().any(|e| {
            e.event == "offer_expired"
                || (e.event == "escalated"
                    && e.actor.role == Role::System
                    && e.from == State::Reviewing)
        });
        let r = c.request();
        ConsultationFacts {
            consultation_id: c.id().to_owned(),
            facility: r.requesting_facility.trim().to_owned(),
            department: r.department.trim().to_owned(),
            created_at,
            accepted_at: c.milestones().accepted,
            completed_at,
            cancelled: c.state() == State::Cancelled,
            failed: matches!(c.state(), State::Failed(_)),
            sla_breached,
        }
    }
}
