//! Imaging studies into consultations (DCM-07): a study that completed at the engine is
//! matched to the open consultations it belongs to — by accession number (the HIS order the
//! consultation answers: its source key `facility/placer`, or its `his_order` placer or filler
//! number), else by patient (the person of the patient index the study's (facility, patient
//! id) record links to) — and attached as the domain's `study_attached` event: one audited
//! transaction per consultation, announced to the expert who has the case
//! (`consultation.study_attached` in the outbox).
//!
//! Prefetch (DCM-05): on approval, when an imaging pipeline pulls the priors of the
//! requesting facility ([`Prefetchers`], filled by the `dicom` source for the facilities
//! with a PACS marked `prefetch` in its registry), a `prefetch` message is journaled into it
//! (dedup key `dicom-prefetch:<consultation>`): the journal makes it a durable job — it
//! survives a restart, is retried with backoff and ends as a dead letter with its reason,
//! visible in `/api/messages` — which the pipeline's `dicom_prefetch` step carries out
//! (C-FIND the patient's studies at the PACS, C-MOVE them to the engine's SCP, attach them as
//! priors).

use huizhen_domain::consultation::{
    Actor, AttachedStudy, Consultation, Role, StudyMatch, attach_study,
};

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::Workflow;
use crate::message::NewMessage;
use crate::store::consultations::{CommandBy, Committed, ConsultationError, ConsultationFilter};
use crate::store::dicom::DicomStudy;

/// The actor of attachments the engine makes.
pub const ACTOR: &str = "dicom:studies";

/// Which pipeline pulls the priors of each facility's patients (facility → pipeline).
#[derive(Debug, Default)]
pub struct Prefetchers(Mutex<BTreeMap<String, String>>);

impl Prefetchers {
    /// `pipeline` prefetches for `facility` (the first registration wins).
    pub fn register(&self, facility: &str, pipeline: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(facility.to_owned())
            .or_insert_with(|| pipeline.to_owned());
    }

    /// The pipeline that prefetches for `facility`.
    pub fn pipeline_for(&self, facility: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(facility)
            .cloned()
    }
}

/// The body of a prefetch job.
pub fn prefetch_body(consultation: &str, person: i64, facility: &str) -> serde_json::Value {
    serde_json::json!({
        "event": "prefetch",
        "consultation_id": consultation,
        "person_id": person,
        "facility": facility,
    })
}

impl Workflow {
    /// Journals the prefetch job of consultation `id` into the pipeline that prefetches for
    /// its requesting facility; false when none does.
    pub async fn request_prefetch(&self, id: &str) -> Result<bool, String> {
        let Some(stored) = self
            .store
            .consultation(id)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Err(format!("no consultation {id}"));
        };
        let c = &stored.consultation;
        let facility = c.request().requesting_facility.trim().to_owned();
        let Some(name) = self
            .extensions
            .get::<Prefetchers>()
            .and_then(|p| p.pipeline_for(&facility))
        else {
            return Ok(false);
        };
        let Some(pipeline) = self.router.as_ref().and_then(|r| r.get(&name)) else {
            return Err(format!("prefetch pipeline {name} is not running"));
        };
        let body = prefetch_body(id, c.patient() as i64, &facility);
        let mut m = NewMessage::new(&name, &facility, "json", body.to_string().into_bytes());
        m.source = "workflow prefetch".into();
        m.dedup_key = Some(format!("dicom-prefetch:{id}"));
        m.headers.insert("dicom-event".into(), "prefetch".into());
        m.headers.insert("consultation-id".into(), id.to_owned());
        pipeline.submit(m).await.map_err(|e| e.to_string())?;
        Ok(true)
    }

    /// Attaches `study` to consultation `id` as `by` (audited, announced). Attaching it again
    /// with the same counts appends nothing.
    pub async fn attach_study(
        &self,
        id: &str,
        study: &AttachedStudy,
        by: &CommandBy<'_>,
    ) -> Result<Committed, ConsultationError> {
        let committed = self
            .store
            .consultation_command(id, None, by, |s, ctx| {
                attach_study(&s.consultation, study, ctx)
            })
            .await?;
        if !committed.events.is_empty() {
            self.relay().await;
        }
        Ok(committed)
    }

    /// Attaches a study of the index pulled from the requesting facility's PACS as a prior
    /// (`matched_by: prefetch`), as the engine; `source` names the job in the audit row.
    pub async fn attach_prefetched(
        &self,
        id: &str,
        study: &DicomStudy,
        source: &str,
    ) -> Result<Committed, ConsultationError> {
        let actor = Actor::new(ACTOR, Role::System);
        let by = CommandBy {
            facility: &study.facility,
            source,
            purpose: "TREAT",
            ..CommandBy::new(&actor)
        };
        let a = attached_of(study, StudyMatch::Prefetch, true);
        self.attach_study(id, &a, &by).await
    }

    /// Attaches a completed study of the index to the open consultations it belongs to (see
    /// the module); `person` is the person its patient record links to. Returns the ids of
    /// the consultations it is attached to (again or for the first time). An error leaves the
    /// study to the next try (the sweep does not mark it complete).
    pub async fn attach_completed_study(
        &self,
        study: &DicomStudy,
        person: Option<i64>,
    ) -> Result<Vec<String>, ConsultationError> {
        let matches = self.matching(study, person).await?;
        let actor = Actor::new(ACTOR, Role::System);
        let source = format!("dicom study {}", study.study_uid);
        let by = CommandBy {
            facility: &study.facility,
            source: &source,
            purpose: "TREAT",
            ..CommandBy::new(&actor)
        };
        let mut attached = Vec::new();
        for (id, matched_by) in matches {
            let a = attached_of(study, matched_by, false);
            match self.attach_study(&id, &a, &by).await {
                Ok(_) => attached.push(id),
                // It ended between the read and the command: nothing to attach to.
                Err(e @ (ConsultationError::Refused(_) | ConsultationError::NotFound(_))) => {
                    tracing::info!(consultation = %id, study = %study.study_uid, error = %e, "study not attached")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(attached)
    }

    /// Attaches the studies of the consultation's patient that the index holds already (sent
    /// before the request; complete or not) — as priors, except one whose accession number is
    /// the consultation's HIS order: on approval, so the offered expert
    /// reaches them. Returns how many were attached.
    pub async fn attach_known_studies(&self, id: &str) -> Result<usize, ConsultationError> {
        let Some(stored) = self.store.consultation(id).await? else {
            return Err(ConsultationError::NotFound(id.to_owned()));
        };
        let person = stored.consultation.patient() as i64;
        let studies = self.store.dicom_studies_of_person(person).await?;
        let actor = Actor::new(ACTOR, Role::System);
        let source = format!("consultation {id}");
        let by = CommandBy {
            facility: &stored.consultation.request().requesting_facility,
            source: &source,
            purpose: "TREAT",
            ..CommandBy::new(&actor)
        };
        let mut n = 0;
        for st in &studies {
            let ours = st
                .accession
                .as_deref()
                .is_some_and(|a| answers_order(&stored.consultation, a.trim()));
            let a = if ours {
                attached_of(st, StudyMatch::Accession, false)
            } else {
                attached_of(st, StudyMatch::Patient, true)
            };
            if !self.attach_study(id, &a, &by).await?.events.is_empty() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The open consultations `study` belongs to, with how each matched: those of its
    /// accession number when there are any, else the patient's.
    async fn matching(
        &self,
        study: &DicomStudy,
        person: Option<i64>,
    ) -> Result<Vec<(String, StudyMatch)>, ConsultationError> {
        let accession = study
            .accession
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty());
        let mut by_accession: Vec<String> = Vec::new();
        if let Some(a) = accession
            && let Some(id) = self
                .store
                .consultation_by_source(&format!("{}/{a}", study.facility))
                .await?
            && self.is_open(&id).await?
        {
            by_accession.push(id);
        }
        let mut of_patient: Vec<String> = Vec::new();
        if let Some(p) = person.and_then(|p| u64::try_from(p).ok()) {
            let mut cursor = None;
            loop {
                let page = self
                    .store
                    .list_consultations(&ConsultationFilter {
                        patient: Some(p),
                        cursor: cursor.clone(),
                        limit: Some(500),
                        ..ConsultationFilter::default()
                    })
                    .await?;
                for c in page.consultations {
                    let Some(stored) = self.store.consultation(&c.id).await? else {
                        continue;
                    };
                    let cons = &stored.consultation;
                    if cons.state().is_terminal() {
                        continue;
                    }
                    if accession.is_some_and(|a| answers_order(cons, a)) {
                        if !by_accession.contains(&c.id) {
                            by_accession.push(c.id);
                        }
                    } else {
                        of_patient.push(c.id);
                    }
                }
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        Ok(if by_accession.is_empty() {
            of_patient
                .into_iter()
                .map(|id| (id, StudyMatch::Patient))
                .collect()
        } else {
            by_accession
                .into_iter()
                .map(|id| (id, StudyMatch::Accession))
                .collect()
        })
    }

    async fn is_open(&self, id: &str) -> Result<bool, ConsultationError> {
        Ok(self
            .store
            .consultation(id)
            .await?
            .is_some_and(|s| !s.consultation.state().is_terminal()))
    }
}

/// True when `accession` is the placer or filler number of the HIS order `c` answers.
fn answers_order(c: &Consultation, accession: &str) -> bool {
    c.request().his_order.as_deref().is_some_and(|o| {
        o.placer.id.trim() == accession
            || o.filler.as_ref().is_some_and(|f| f.id.trim() == accession)
    })
}

/// The consultation's record of an index study.
pub fn attached_of(study: &DicomStudy, matched_by: StudyMatch, prior: bool) -> AttachedStudy {
    AttachedStudy {
        study_uid: study.study_uid.clone(),
        facility: study.facility.clone(),
        accession: study.accession.clone(),
        modalities: study.modalities.clone(),
        description: study.description.clone(),
        study_date: study.study_date.clone(),
        series_count: u64::try_from(study.series_count).unwrap_or(0),
        instance_count: u64::try_from(study.instance_count).unwrap_or(0),
        matched_by,
        prior,
    }
}
