//! "Study complete": a study no instance came for during `study_complete_after` becomes a
//! `study_complete` message on the pipeline that received it — what a pipeline routes on
//! (`body.event == 'study_complete'`) and what the workflow uses to attach the study to a
//! consultation by accession number or patient (`body.study.accession`, `body.person_id`,
//! the person of the patient index; `Store::dicom_studies_of_person`).
//!
//! With the engine's workflow, the study is also attached to its open consultations
//! ([`Workflow::attach_completed_study`]: by accession number, else by patient; audited, the
//! expert notified) before it is marked complete; an attachment that fails leaves the study
//! for the next sweep.
//!
//! The state is in the index, not in memory: the sweep asks the store for quiet studies that
//! are not complete, journals the event (dedup key: study UID and the time of its last
//! instance, so a second process or a retry adds nothing), then marks the study complete only
//! if no instance came meanwhile. A restart loses nothing; a later instance reopens the study
//! and it completes again with its new counts.

use std::sync::Arc;
use std::time::Duration;

use huizhen_core::message::{NewMessage, now_ms};
use huizhen_core::runner::PipelineHandle;
use huizhen_core::store::Store;
use huizhen_core::store::dicom::DicomStudy;
use huizhen_core::workflow::Workflow;
use tokio_util::sync::CancellationToken;

/// Studies reported per sweep at most (the rest wait for the next one).
const BATCH: i64 = 100;

/// How often to look: a quarter of the quiet time, between 1 s and 30 s.
fn period(after: Duration) -> Duration {
    (after / 4).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

/// Runs until `stop`.
pub async fn sweep(
    store: Arc<Store>,
    workflow: Option<Arc<Workflow>>,
    pipeline: PipelineHandle,
    after: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(period(after));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = sweep_once(&store, workflow.as_deref(), &pipeline, after).await {
            tracing::warn!(pipeline = pipeline.name(), error = %e, "study-complete sweep failed; it runs again");
        }
    }
}

/// One sweep: the number of studies reported.
pub async fn sweep_once(
    store: &Store,
    workflow: Option<&Workflow>,
    pipeline: &PipelineHandle,
    after: Duration,
) -> Result<usize, String> {
    let now = now_ms();
    let quiet_since = now - after.as_millis() as i64;
    let studies = store
        .dicom_quiet_studies(pipeline.name(), quiet_since, BATCH)
        .await
        .map_err(|e| e.to_string())?;
    let mut reported = 0;
    for study in &studies {
        let series = store
            .dicom_series(&study.study_uid)
            .await
            .map_err(|e| e.to_string())?;
        let person_id = match &study.patient_id {
            Some(p) => store
                .identity(&study.facility, p)
                .await
                .map_err(|e| e.to_string())?
                .filter(|r| r.active)
                .map(|r| r.person_id),
            None => None,
        };
        let m = event(pipeline, study, &series, person_id, after);
        match pipeline.submit(m).await {
            Ok(_) => {}
            Err(e) if e.is_backlog() => return Ok(reported),
            Err(e) => return Err(e.to_string()),
        }
        if let Some(wf) = workflow {
            let ids = wf
                .attach_completed_study(study, person_id)
                .await
                .map_err(|e| {
                    format!(
                        "study {}: attaching it to its consultations: {e}",
                        study.study_uid
                    )
                })?;
            if !ids.is_empty() {
                tracing::info!(study = %study.study_uid, consultations = ?ids, "DICOM study attached");
            }
        }
        if store
            .dicom_mark_complete(&study.study_uid, study.last_received_at, now)
            .await
            .map_err(|e| e.to_string())?
        {
            reported += 1;
            tracing::info!(pipeline = pipeline.name(), study = %study.study_uid, instances = study.instance_count, series = study.series_count, "DICOM study complete");
        }
    }
    Ok(reported)
}

fn event(
    pipeline: &PipelineHandle,
    study: &DicomStudy,
    series: &[huizhen_core::store::dicom::DicomSeries],
    person_id: Option<i64>,
    after: Duration,
) -> NewMessage {
    let body = serde_json::json!({
        "event": "study_complete",
        "facility": study.facility,
        "person_id": person_id,
        "quiet_for_seconds": after.as_secs(),
        "study": {
            "study_uid": study.study_uid,
            "accession": study.accession,
            "patient_id": study.patient_id,
            "patient": study.patient,
            "study_date": study.study_date,
            "study_time": study.study_time,
            "study_id": study.study_id,
            "description": study.description,
            "modalities": study.modalities,
            "series_count": study.series_count,
            "instance_count": study.instance_count,
            "bytes": study.bytes,
            "charset_flags": study.charset_flags,
            "first_received_at": study.first_received_at,
            "last_received_at": study.last_received_at,
        },
        "series": series.iter().map(|s| serde_json::json!({
            "series_uid": s.series_uid,
            "modality": s.modality,
            "series_number": s.series_number,
            "description": s.description,
            "instance_count": s.instance_count,
            "bytes": s.bytes,
        })).collect::<Vec<_>>(),
    });
    let mut m = NewMessage::new(
        pipeline.name(),
        &study.facility,
        "json",
        body.to_string().into_bytes(),
    );
    m.source = "dicom study-complete".into();
    m.dedup_key = Some(format!(
        "dicom-study-complete:{}:{}",
        study.study_uid, study.last_received_at
    ));
    let modality = study.modalities.first().map(String::as_str);
    crate::scp::headers(&mut m, "study_complete", &study.study_uid, modality, "");
    if let Some(a) = &study.accession {
        m.headers.insert("dicom-accession".into(), a.clone());
    }
    m
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sweep_looks_often_enough_but_not_too_often() {
        use std::time::Duration;
        assert_eq!(
            super::period(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
        assert_eq!(
            super::period(Duration::from_secs(60)),
            Duration::from_secs(15)
        );
        assert_eq!(
            super::period(Duration::from_secs(3600)),
            Duration::from_secs(30)
        );
    }
}
