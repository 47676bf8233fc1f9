//! The consultation's outbound events (issue 15 items 6, 11), written into `workflow_outbox`
//! in the command's own transaction, like an approved prescription's: a completion announces
//! the signed opinion for the HIS (`consultation.completed`, the body `hl7_build` reads), an
//! acceptance, an escalation, a cancellation or a failure a notice
//! (`consultation.accepted`, …). The domain decides what is announced
//! ([`huizhen_domain::consultation::announcements`]); this module reads what it needs beside
//! the consultation (the patient's ids and name from the identity index, the expert's name
//! from the registry) and files the rows. The relay (`crate::care::relay_outbox`) submits them
//! to `workflow.consultations.outbound_pipeline` after the commit; without one they are kept
//! in the outbox only.
//!
//! In the transaction and not after it, because nothing replays a completion: a crash between
//! the commit and a separate write would lose the result the HIS waits for.

use chrono::FixedOffset;
use huizhen_domain::consultation::outbound::{
    Announcement, KnownPatient, OutboundContext, PatientIdentifier, PersonName, announces,
};
use huizhen_domain::consultation::{Consultation, Event, EventKind, announcements};
use huizhen_domain::identity::normalize::NormalizedName;
use sqlx::AnyConnection;

use crate::store::care::{NewOutboxEvent, insert_outbox};
use crate::store::{Store, StoreError};

/// Where a store announces the consultation's events.
#[derive(Debug, Clone)]
pub struct OutboundSettings {
    /// The pipeline the relay submits them to; none: kept in the outbox only.
    pub pipeline: Option<String>,
    /// The offset the times are written in (the HIS's local time), minutes east of UTC.
    pub utc_offset_minutes: i32,
}

impl Default for OutboundSettings {
    fn default() -> Self {
        OutboundSettings {
            pipeline: None,
            utc_offset_minutes: 8 * 60,
        }
    }
}

/// A name as PID-5 carries it: the ideographic name whole (as Chinese HIS send it), else the
/// family and given names, else the tokens.
fn pid5(n: &NormalizedName) -> Option<PersonName> {
    if let Some(h) = n.hanzi.as_deref().filter(|h| !h.trim().is_empty()) {
        return Some(PersonName {
            family: h.to_owned(),
            given: None,
        });
    }
    match (&n.family, &n.given) {
        (Some(f), given) if !f.trim().is_empty() => Some(PersonName {
            family: f.clone(),
            given: given.clone(),
        }),
        _ => (!n.tokens.is_empty()).then(|| PersonName {
            family: n.tokens.join(" "),
            given: None,
        }),
    }
}

impl Store {
    /// The patient as the identity index knows them: their active records at the requesting
    /// facility as identifiers (namespace = that facility), and the first name recorded there
    /// (else at any facility).
    pub(crate) async fn known_patient(&self, c: &Consultation) -> Result<KnownPatient, StoreError> {
        let Ok(person) = i64::try_from(c.patient()) else {
            return Ok(KnownPatient::default());
        };
        let facility = c.request().requesting_facility.trim().to_owned();
        let mut known = KnownPatient::default();
        let mut rows = self.identities_of_person(person, None).await?;
        // The requesting facility's records first (active first within each group).
        rows.sort_by_key(|r| (r.facility != facility, !r.active));
        for r in rows {
            if r.facility == facility && r.active {
                known.identifiers.push(PatientIdentifier {
                    id: r.local_id.clone(),
                    assigning_authority: Some(r.facility.clone()),
                    type_code: None,
                });
            }
            if known.name.is_none()
                && let Some(p) = self.identity_person(&r.facility, &r.local_id).await?
            {
                known.name = p.names.iter().find_map(pid5);
            }
        }
        Ok(known)
    }

    /// The name of a record of the identity index as PID-5 carries it (a device reading's
    /// patient for the HIS, issue 25); `None` when the record is unknown or has no name.
    pub async fn record_name(
        &self,
        facility: &str,
        local_id: &str,
    ) -> Result<Option<PersonName>, StoreError> {
        Ok(self
            .identity_person(facility, local_id)
            .await?
            .and_then(|p| p.names.iter().find_map(pid5)))
    }

    /// Files the announcements of `events` (just appended to the consultation, which `c` is
    /// after them) on `conn`, the command's transaction.
    pub(super) async fn announce_in(
        &self,
        conn: &mut AnyConnection,
        c: &Consultation,
        events: &[Event],
    ) -> Result<(), StoreError> {
        if !announces(events) {
            return Ok(());
        }
        let settings = self.consultation_outbound.clone();
        let completes = events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Completed));
        let (patient, expert_name) = if completes {
            let name = match c.accepted_by() {
                Some(id) => self.expert(id).await?.map(|e| e.name),
                None => None,
            };
            (self.known_patient(c).await?, name)
        } else {
            (KnownPatient::default(), None)
        };
        let offset = FixedOffset::east_opt(settings.utc_offset_minutes.saturating_mul(60))
            .or_else(|| FixedOffset::east_opt(0))
            .ok_or_else(|| StoreError::Inconsistent("no UTC offset".into()))?;
        let ctx = OutboundContext {
            patient: &patient,
            expert_name: expert_name.as_deref(),
            offset,
        };
        for a in announcements(c, events, &ctx) {
            let body = match &a {
                Announcement::Completed(o) => serde_json::to_value(o),
                Announcement::Notice(n) => serde_json::to_value(n),
            }
            .map_err(|e| {
                StoreError::Inconsistent(format!(
                    "consultation {}: cannot encode {}: {e}",
                    c.id(),
                    a.topic()
                ))
            })?;
            let event = NewOutboxEvent {
                topic: a.topic().to_owned(),
                resource_id: c.id().to_owned(),
                facility: c.request().requesting_facility.trim().to_owned(),
                pipeline: settings.pipeline.clone(),
                body,
            };
            insert_outbox(conn, self, &event).await?;
        }
        Ok(())
    }

    /// True when this store relays the consultation's events to a pipeline.
    pub fn announces_consultations(&self) -> bool {
        self.consultation_outbound.pipeline.is_some()
    }
}
