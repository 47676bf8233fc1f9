//! Filing a complete STOW-RS part: read for the index, placed, indexed and journaled, as
//! `scp/store.rs` files a C-STORE.

use huizhen_core::message::NewMessage;
use huizhen_core::store::dicom::{DicomPatient, IndexInstance};

use super::{Filing, Outcome, reason};
use crate::objects::Incoming;

impl Filing<'_> {
    /// Reads, places, indexes and journals a complete part (as `scp/store.rs` does a C-STORE).
    pub(super) async fn file(&self, inc: Incoming, meta: crate::dataset::FileMeta) -> Outcome {
        let mut out = Outcome {
            sop_class: meta.sop_class_uid.clone(),
            sop_instance: meta.sop_instance_uid.clone(),
            study: String::new(),
            series: String::new(),
            failure: None,
        };
        let fail = |mut o: Outcome, code: u16, why: String| {
            o.failure = Some((code, why));
            o
        };
        let received = match inc.finish().await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "STOW-RS: an instance cannot be written");
                return fail(
                    out,
                    reason::OUT_OF_RESOURCES,
                    "the instance could not be written to storage".into(),
                );
            }
        };
        let ts = meta.transfer_syntax.clone();
        let source = received.index_source();
        let read = tokio::task::spawn_blocking(move || source.read(&ts))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| format!("the data set cannot be read: {e}")));
        let record = read.and_then(|els| crate::record::instance_record(&els, Some(&self.charset)));
        let problem = match &record {
            Err(e) => Some((reason::CANNOT_UNDERSTAND, e.clone())),
            Ok(r) if r.sop_instance_uid != meta.sop_instance_uid => Some((
                reason::MISMATCH,
                format!(
                    "the data set's SOP Instance UID {} is not the file meta group's {}",
                    r.sop_instance_uid, meta.sop_instance_uid
                ),
            )),
            Ok(r) if self.study.as_deref().is_some_and(|s| s != r.study_uid) => Some((
                reason::MISMATCH,
                format!(
                    "the instance belongs to study {}, not to the study of the URL",
                    r.study_uid
                ),
            )),
            Ok(_) => None,
        };
        if let Some((code, why)) = problem {
            let _ = self.objects.reject(received).await;
            return fail(out, code, why);
        }
        let record = record.expect("checked above");
        out.study.clone_from(&record.study_uid);
        out.series.clone_from(&record.series_uid);
        // A study of another facility is not added to (nor replaced) through STOW-RS.
        match self.s.store.dicom_study(&record.study_uid).await {
            Ok(Some(st)) if st.facility != self.facility => {
                received.discard().await;
                return fail(
                    out,
                    reason::CANNOT_UNDERSTAND,
                    "the study belongs to another facility".into(),
                );
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "STOW-RS: the study index failed");
                received.discard().await;
                return fail(
                    out,
                    reason::PROCESSING_FAILURE,
                    "the study index is not available".into(),
                );
            }
        }
        let path = match self
            .objects
            .place(
                &received,
                &record.study_uid,
                &record.series_uid,
                &record.sop_instance_uid,
            )
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "STOW-RS: an instance cannot be placed");
                received.discard().await;
                return fail(
                    out,
                    reason::OUT_OF_RESOURCES,
                    "the instance could not be written to storage".into(),
                );
            }
        };
        let mut flags = Vec::new();
        if record.charset_assumed {
            flags.push("charset-assumed".to_owned());
        }
        if record.charset_replaced {
            flags.push("charset-replaced".to_owned());
        }
        let now = huizhen_core::message::now_ms();
        let row = IndexInstance {
            facility: self.facility.clone(),
            pipeline: self.pipeline.clone(),
            study_uid: record.study_uid.clone(),
            series_uid: record.series_uid.clone(),
            sop_instance_uid: record.sop_instance_uid.clone(),
            sop_class_uid: record.sop_class_uid.clone(),
            transfer_syntax: meta.transfer_syntax.clone(),
            instance_number: record
                .instance_number
                .as_deref()
                .and_then(|n| n.trim().parse().ok()),
            patient_id: record.patient_id.clone(),
            patient: DicomPatient {
                name: record.patient_name.clone(),
                birth_date: record.patient_birth_date.clone(),
                sex: record.patient_sex.clone(),
            },
            accession: record.accession.clone(),
            study_date: record.study_date.clone(),
            study_time: record.study_time.clone(),
            study_id: record.study_id.clone(),
            study_description: record.study_description.clone(),
            modality: record.modality.clone(),
            series_number: record
                .series_number
                .as_deref()
                .and_then(|n| n.trim().parse().ok()),
            series_description: record.series_description.clone(),
            charset: if record.charset_assumed {
                self.charset.name.clone()
            } else {
                record.charset.clone()
            },
            charset_flags: flags.clone(),
            bytes: received.dataset_bytes as i64,
            sha256: received.sha256.clone(),
            path: path.display().to_string(),
            calling_ae: "STOW-RS".into(),
            received_at: now,
        };
        let indexed = match self.s.store.dicom_index(&row).await {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(error = %e, "STOW-RS: an instance cannot be indexed");
                return fail(
                    out,
                    reason::PROCESSING_FAILURE,
                    "the instance could not be indexed; send it again".into(),
                );
            }
        };
        let body = serde_json::json!({
            "event": "instance",
            "facility": self.facility,
            "calling_ae": "STOW-RS",
            "stored_by": self.caller.principal.sub,
            "transfer_syntax": meta.transfer_syntax,
            "bytes": received.dataset_bytes,
            "sha256": received.sha256,
            "new": indexed.new_instance,
            "person_id": indexed.person_id,
            "instance": record,
            "flags": flags,
        });
        let mut m = NewMessage::new(
            &self.pipeline,
            &self.facility,
            "json",
            body.to_string().into_bytes(),
        );
        m.source = format!("dicomweb:{}", self.caller.source);
        m.dedup_key = Some(format!(
            "dicom-instance:{}:{}",
            record.sop_instance_uid, received.sha256
        ));
        crate::scp::headers(
            &mut m,
            "instance",
            &record.study_uid,
            record.modality.as_deref(),
            "STOW-RS",
        );
        m.headers.insert(
            "dicom-sop-instance-uid".into(),
            record.sop_instance_uid.clone(),
        );
        if !flags.is_empty() {
            m.headers.insert("dicom-flags".into(), flags.join(","));
        }
        let Some(p) = self.s.pipelines.get(&self.pipeline) else {
            return fail(
                out,
                reason::PROCESSING_FAILURE,
                "the dicom pipeline is not running".into(),
            );
        };
        match p.submit(m).await {
            Ok(_) => out,
            Err(e) if e.is_backlog() => fail(
                out,
                reason::OUT_OF_RESOURCES,
                "backlog limit reached; send it again later".into(),
            ),
            Err(e) => {
                tracing::error!(error = %e, "STOW-RS: an instance was not journaled");
                fail(
                    out,
                    reason::PROCESSING_FAILURE,
                    "the engine could not journal the instance; send it again".into(),
                )
            }
        }
    }
}
