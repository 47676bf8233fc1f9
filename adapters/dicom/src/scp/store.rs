//! C-STORE: a received instance is read for the index, placed in the object store, filed in
//! the study index and journaled — only then is the C-STORE-RSP a success (see docs/dicom.md
//! for the statuses).

use huizhen_core::message::NewMessage;
use huizhen_core::store::dicom::{DicomPatient, IndexInstance};

use super::{Association, headers};
use crate::assoc::Accepted;
use crate::dimse::{Command, status};
use crate::objects::Incoming as Part;

impl Association<'_> {
    /// Reads, places, indexes and journals a received instance: the C-STORE status and its
    /// comment.
    pub(super) async fn store(
        &mut self,
        cmd: &Command,
        pc: &Accepted,
        part: Part,
    ) -> (u16, Option<String>) {
        let scp = self.scp;
        let received = match part.finish().await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(pipeline = scp.pipeline.name(), error = %e, "DICOM instance could not be written");
                return (
                    status::OUT_OF_RESOURCES,
                    Some("the instance could not be written to storage".into()),
                );
            }
        };
        let ts = pc.transfer_syntax.clone();
        let source = received.index_source();
        let read = tokio::task::spawn_blocking(move || source.read(&ts))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| format!("the data set cannot be read: {e}")));
        let charset = &self.rule.charset;
        let record = read.and_then(|els| crate::record::instance_record(&els, Some(charset)));
        let record = match record {
            Ok(r)
                if cmd
                    .sop_instance
                    .as_deref()
                    .is_some_and(|i| i != r.sop_instance_uid) =>
            {
                Err((
                    status::DATASET_MISMATCH,
                    format!(
                        "the data set's SOP Instance UID {} is not the command's {}",
                        r.sop_instance_uid,
                        cmd.sop_instance.as_deref().unwrap_or_default()
                    ),
                ))
            }
            Ok(r) => Ok(r),
            Err(e) => Err((status::CANNOT_UNDERSTAND, e)),
        };
        let record = match record {
            Ok(r) => r,
            Err((st, reason)) => {
                let kept = scp.objects.reject(received).await;
                self.journal_refusal(cmd, pc, &reason, kept.ok()).await;
                return (st, Some(reason));
            }
        };
        let path = match scp
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
                tracing::error!(pipeline = scp.pipeline.name(), error = %e, "DICOM instance could not be placed");
                received.discard().await;
                return (
                    status::OUT_OF_RESOURCES,
                    Some("the instance could not be written to storage".into()),
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
            facility: self.rule.facility.clone(),
            pipeline: scp.pipeline.name().to_owned(),
            study_uid: record.study_uid.clone(),
            series_uid: record.series_uid.clone(),
            sop_instance_uid: record.sop_instance_uid.clone(),
            sop_class_uid: record.sop_class_uid.clone(),
            transfer_syntax: pc.transfer_syntax.clone(),
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
                self.rule.charset.name.clone()
            } else {
                record.charset.clone()
            },
            charset_flags: flags.clone(),
            bytes: received.dataset_bytes as i64,
            sha256: received.sha256.clone(),
            path: path.display().to_string(),
            calling_ae: self.calling.to_owned(),
            received_at: now,
        };
        let indexed = match scp.store.dicom_index(&row).await {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(pipeline = scp.pipeline.name(), error = %e, "DICOM instance could not be indexed");
                return (
                    status::PROCESSING_FAILURE,
                    Some("the instance could not be indexed; send it again".into()),
                );
            }
        };
        let body = serde_json::json!({
            "event": "instance",
            "facility": self.rule.facility,
            "calling_ae": self.calling,
            "transfer_syntax": pc.transfer_syntax,
            "bytes": received.dataset_bytes,
            "sha256": received.sha256,
            "new": indexed.new_instance,
            "person_id": indexed.person_id,
            "instance": record,
            "flags": flags,
        });
        let mut m = NewMessage::new(
            scp.pipeline.name(),
            &self.rule.facility,
            "json",
            body.to_string().into_bytes(),
        );
        m.source.clone_from(&self.source);
        m.dedup_key = Some(format!(
            "dicom-instance:{}:{}",
            record.sop_instance_uid, received.sha256
        ));
        headers(
            &mut m,
            "instance",
            &record.study_uid,
            record.modality.as_deref(),
            self.calling,
        );
        m.headers.insert(
            "dicom-sop-instance-uid".into(),
            record.sop_instance_uid.clone(),
        );
        if !flags.is_empty() {
            m.headers.insert("dicom-flags".into(), flags.join(","));
        }
        match scp.pipeline.submit(m).await {
            Ok(_) => (status::SUCCESS, None),
            Err(e) if e.is_backlog() => {
                tracing::warn!(pipeline = scp.pipeline.name(), error = %e, "backlog limit reached: C-STORE refused (A700), the sender retries");
                (
                    status::OUT_OF_RESOURCES,
                    Some("backlog limit reached; send it again later".into()),
                )
            }
            Err(e) => {
                tracing::error!(pipeline = scp.pipeline.name(), error = %e, "DICOM instance not journaled");
                (
                    status::PROCESSING_FAILURE,
                    Some("the engine could not journal the instance; send it again".into()),
                )
            }
        }
    }

    /// Journals a refused instance as a dead letter (its file kept under `.rejected/`).
    async fn journal_refusal(
        &self,
        cmd: &Command,
        pc: &Accepted,
        reason: &str,
        kept: Option<std::path::PathBuf>,
    ) {
        let scp = self.scp;
        tracing::warn!(
            pipeline = scp.pipeline.name(),
            calling = self.calling,
            reason,
            "DICOM instance refused"
        );
        let body = serde_json::json!({
            "event": "refused",
            "calling_ae": self.calling,
            "sop_class_uid": cmd.sop_class,
            "sop_instance_uid": cmd.sop_instance,
            "transfer_syntax": pc.transfer_syntax,
            "kept_at": kept.map(|p| p.display().to_string()),
            "reason": reason,
        });
        let mut m = NewMessage::new(
            scp.pipeline.name(),
            &self.rule.facility,
            "json",
            body.to_string().into_bytes(),
        );
        m.source.clone_from(&self.source);
        m.headers.insert("dicom-event".into(), "refused".into());
        m.rejected = Some(format!("dicom: C-STORE refused: {reason}"));
        if let Err(e) = scp.pipeline.submit(m).await {
            tracing::error!(error = %e, "the refused DICOM instance could not be journaled either");
        }
    }
}
