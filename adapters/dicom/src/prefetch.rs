//! `dicom_prefetch` (DCM-05): the step that pulls a consultation's priors from the requesting
//! facility's PACS before the expert opens it.
//!
//! ```yaml
//! source:
//!   dicom:
//!     ae_title: HUIZHEN
//!     remote_aes:
//!       - { title: HOSP_PACS, host: 10.1.2.3, port: 104, facility: county-1, prefetch: true }
//! steps:
//!   - dicom_prefetch: { timeout: 60s }
//! ```
//!
//! When a consultation of `county-1` is approved, the workflow journals a `prefetch` message
//! (`event: prefetch`, `consultation_id`, `person_id`) into this pipeline: the journal is the
//! durable job (a restart resumes it; a failure is retried with backoff and ends as a dead
//! letter with its reason). The step finds the patient's ids at the facility in the patient
//! index, asks each `prefetch` PACS of the facility for their studies (C-FIND, Study Root),
//! has the PACS send those not yet here to this source's SCP (C-MOVE, destination
//! `ae_title`: the PACS must know it), and attaches every one of them to the consultation as a
//! prior (`matched_by: prefetch`). Other messages pass untouched. The body becomes the report:
//! `{"event":"prefetched","consultation_id","studies":[…],"moved":n}`.

use std::sync::Arc;
use std::time::Duration;

use dicom_core::VR;
use futures::future::BoxFuture;
use huizhen_core::config::duration;
use huizhen_core::extensions::Extensions;
use huizhen_core::runner::BuildContext;
use huizhen_core::steps::{Step, StepConfig};
use huizhen_core::work::{Flow, StepError, Work};
use huizhen_core::workflow::Workflow;
use serde::Deserialize;

use crate::find::Level;
use crate::qr::Selection;
use crate::record::{PATIENT_ID, STUDY_INSTANCE_UID};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DicomPrefetchConfig {
    /// The deadline of each association with the PACS.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(60)
}

#[typetag::deserialize(name = "dicom_prefetch")]
impl StepConfig for DicomPrefetchConfig {
    fn type_name(&self) -> &'static str {
        "dicom_prefetch"
    }

    fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Step>, String> {
        if self.timeout.is_zero() {
            return Err("timeout: must be more than 0".into());
        }
        Ok(Arc::new(DicomPrefetch {
            timeout: self.timeout,
            pipeline: ctx.pipeline.clone(),
            extensions: ctx.extensions.clone(),
        }))
    }
}

struct DicomPrefetch {
    timeout: Duration,
    pipeline: String,
    extensions: Extensions,
}

/// A prefetch job's body.
#[derive(Deserialize)]
struct Job {
    consultation_id: String,
    person_id: i64,
}

impl Step for DicomPrefetch {
    fn apply<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Flow, StepError>> {
        Box::pin(async move {
            if work.headers.get("dicom-event").map(String::as_str) != Some("prefetch") {
                return Ok(Flow::Continue);
            }
            let job: Job = serde_json::from_value(work.json()?.clone()).map_err(|e| {
                StepError::permanent(format!("dicom_prefetch: not a prefetch job: {e}"))
            })?;
            if self.extensions.dry_run() {
                // `huizhen test` and `replay`: no association with a PACS.
                work.headers
                    .insert("dicom-prefetch".into(), "not run (dry run)".into());
                return Ok(Flow::Continue);
            }
            let report = self.run(&job).await?;
            *work.json_mut()? = report;
            Ok(Flow::Continue)
        })
    }
}

impl DicomPrefetch {
    async fn run(&self, job: &Job) -> Result<serde_json::Value, StepError> {
        let wf = self.extensions.get::<Workflow>().ok_or_else(|| {
            StepError::permanent("dicom_prefetch: no workflow (the step runs inside an engine)")
        })?;
        let target = self
            .extensions
            .get::<crate::web::Targets>()
            .and_then(|t| t.of_pipeline(&self.pipeline))
            .ok_or_else(|| {
                StepError::permanent(format!(
                    "dicom_prefetch: pipeline {} has no dicom source (its SCP receives the priors)",
                    self.pipeline
                ))
            })?;
        let store = wf.store();
        let id = &job.consultation_id;
        let Some(stored) = store.consultation(id).await.map_err(retry)? else {
            return Err(StepError::permanent(format!(
                "dicom_prefetch: no consultation {id}"
            )));
        };
        let c = &stored.consultation;
        let facility = c.request().requesting_facility.trim().to_owned();
        if c.state().is_terminal() {
            return Ok(report(
                id,
                &[],
                0,
                Some(format!("the consultation is {}", c.state())),
            ));
        }
        let facilities = [facility.clone()];
        let ids: Vec<String> = store
            .identities_of_person(job.person_id, Some(&facilities))
            .await
            .map_err(retry)?
            .into_iter()
            .filter(|r| r.active)
            .map(|r| r.local_id)
            .collect();
        let pacs: Vec<_> = target
            .remote
            .of_facility(&facility)
            .filter(|a| a.prefetch)
            .cloned()
            .collect();
        if pacs.is_empty() {
            return Err(StepError::permanent(format!(
                "dicom_prefetch: facility {facility} has no remote AE with prefetch: true"
            )));
        }
        let mut found: Vec<String> = Vec::new();
        let mut moved = 0usize;
        for ae in &pacs {
            let peer = ae
                .peer(&target.ae_title, self.timeout)
                .map_err(StepError::permanent)?;
            for pid in &ids {
                let keys = [
                    (PATIENT_ID, VR::LO, pid.clone()),
                    (STUDY_INSTANCE_UID, VR::UI, String::new()),
                ];
                let rows = crate::scu::find(&peer, false, "STUDY", &keys)
                    .await
                    .map_err(|e| retry(format!("C-FIND at {}: {e}", ae.title)))?;
                for row in rows {
                    let Some(uid) = row.get("StudyInstanceUID").filter(|u| !u.is_empty()) else {
                        continue;
                    };
                    if found.contains(uid) {
                        continue;
                    }
                    found.push(uid.clone());
                    if store.dicom_study(uid).await.map_err(retry)?.is_some() {
                        continue;
                    }
                    let sel = Selection {
                        level: Level::Study,
                        patient_id: None,
                        studies: vec![uid.clone()],
                        series: vec![],
                        instances: vec![],
                    };
                    let out = crate::qr::scu::move_to(&peer, false, &sel, &target.ae_title)
                        .await
                        .map_err(|e| retry(format!("C-MOVE of {uid} from {}: {e}", ae.title)))?;
                    if !out.ok() {
                        return Err(retry(format!(
                            "C-MOVE of {uid} from {}: status {:04X}, {} failed{}",
                            ae.title,
                            out.status,
                            out.failed,
                            out.comment.map(|c| format!(" ({c})")).unwrap_or_default()
                        )));
                    }
                    moved += 1;
                }
            }
        }
        let source = format!("prefetch {id}");
        for uid in &found {
            let Some(st) = store.dicom_study(uid).await.map_err(retry)? else {
                return Err(retry(format!(
                    "study {uid} was moved but is not in the index"
                )));
            };
            wf.attach_prefetched(id, &st, &source)
                .await
                .map_err(retry)?;
        }
        tracing::info!(consultation = %id, studies = found.len(), moved, "priors prefetched");
        Ok(report(id, &found, moved, None))
    }
}

fn retry(e: impl std::fmt::Display) -> StepError {
    StepError::new(format!("dicom_prefetch: {e}"))
}

fn report(
    id: &str,
    studies: &[String],
    moved: usize,
    skipped: Option<String>,
) -> serde_json::Value {
    serde_json::json!({
        "event": "prefetched",
        "consultation_id": id,
        "studies": studies,
        "moved": moved,
        "skipped": skipped,
    })
}
