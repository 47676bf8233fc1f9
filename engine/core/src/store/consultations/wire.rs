//! What a consultation's commit writes for the care side, in the command's own transaction:
//! its row of `consultation_facts` (the statistics' input) after every change, and its
//! de-identified case library record when it completes.
//!
//! The library record is written in the same transaction as the `completed` event, not after
//! the commit: a crash between the two would otherwise lose the case for good (nothing
//! replays completions), and the insert is idempotent (`ON CONFLICT DO NOTHING`). A case the
//! domain cannot de-identify (no diagnosis, a birth date after completion) does not block the
//! completion, the clinical act: it is left out with a failed audit row naming why.

use huizhen_domain::case_library::{PatientFacts, library_record};
use huizhen_domain::consultation::Consultation;
use huizhen_domain::identity::NormalizedPerson;
use huizhen_domain::stats::ConsultationFacts;
use sqlx::AnyConnection;

use super::CommandBy;
use crate::store::audit::{self, AuditEvent};
use crate::store::care::{case_library_insert, upsert_consultation_facts};
use crate::store::{Store, StoreError};

/// The redaction facts of one linked record: one entry per recorded name (the first carries
/// the numbers, phones, address and birth date).
fn facts_of_record(p: &NormalizedPerson) -> Vec<PatientFacts> {
    let mut ids: Vec<String> = vec![p.local_id.clone()];
    ids.extend(p.resident_ids.iter().map(|r| r.number.clone()));
    ids.extend(p.insurance.iter().map(|i| i.psn_no.clone()));
    ids.extend(p.national_ids.iter().map(|n| n.value.clone()));
    let mut names: Vec<String> = p
        .names
        .iter()
        .filter_map(|n| {
            n.hanzi.clone().or_else(|| {
                let parts: Vec<&str> = [n.family.as_deref(), n.given.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect();
                (!parts.is_empty()).then(|| parts.join(" "))
            })
        })
        .collect();
    if names.is_empty() {
        names.push(String::new());
    }
    let first = PatientFacts {
        name: names[0].clone(),
        id_numbers: ids,
        phones: p.phones.clone(),
        address: p.addresses.first().map(|a| a.tokens.concat()),
        birth_date: p.birth_date.as_ref().map(|b| b.date),
    };
    let mut out = vec![first];
    out.extend(names.into_iter().skip(1).map(|name| PatientFacts {
        name,
        ..PatientFacts::default()
    }));
    out
}

impl Store {
    /// Every record the patient has in the identity index, as redaction facts.
    async fn patient_facts(&self, c: &Consultation) -> Result<Vec<PatientFacts>, StoreError> {
        let person = i64::try_from(c.patient()).map_err(|_| {
            StoreError::Inconsistent(format!(
                "consultation {}: patient id {} is out of range",
                c.id(),
                c.patient()
            ))
        })?;
        let mut out = Vec::new();
        for row in self.identities_of_person(person, None).await? {
            if let Some(p) = self.identity_person(&row.facility, &row.local_id).await? {
                out.extend(facts_of_record(&p));
            }
        }
        Ok(out)
    }

    /// Writes the care side of a committed change of `c` on `conn` (the command's
    /// transaction): the facts always; the library record when `completed` is among the
    /// events just appended.
    pub(super) async fn wire_in(
        &self,
        conn: &mut AnyConnection,
        c: &Consultation,
        completed: bool,
        by: &CommandBy<'_>,
    ) -> Result<(), StoreError> {
        upsert_consultation_facts(conn, &ConsultationFacts::of(c)).await?;
        if !completed {
            return Ok(());
        }
        let patients = self.patient_facts(c).await?;
        let Some(record) = library_record(c, &patients) else {
            return Ok(());
        };
        let (outcome, detail) = match record {
            Ok(record) => {
                if !case_library_insert(conn, &record).await? {
                    return Ok(());
                }
                let codes: Vec<&str> = record.diagnoses.iter().map(|d| d.normalized()).collect();
                (
                    "success",
                    format!("de-identified case, ICD-10 {}", codes.join(", ")),
                )
            }
            Err(e) => ("failure", format!("left out of the case library: {e}")),
        };
        let event = AuditEvent {
            actor: by.actor.id.clone(),
            role: crate::store::consultations::role_code(by.actor.role).into(),
            facility: by.facility.to_owned(),
            action: "case_library.add".into(),
            resource_type: "CaseRecord".into(),
            resource_id: c.id().to_owned(),
            outcome: outcome.into(),
            source: by.source.to_owned(),
            purpose: by.purpose.to_owned(),
            detail,
            subject_facility: c.request().requesting_facility.clone(),
        };
        audit::append(conn, &event, self.anchor.as_deref()).await?;
        Ok(())
    }
}
