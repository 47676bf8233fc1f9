//! The imaging study index (issue 17; migration 0016): studies, series and instances that the
//! `dicom` source received, with their counts and bytes, searchable by patient, accession,
//! date, modality and UID (C-FIND, the workflow), linked to the patient index through
//! (facility, patient id) = `identities (facility, local_id)`.
//!
//! The core knows no DICOM: the adapter hands in plain values ([`IndexInstance`]). The
//! patient's name, birth date and sex are sealed like message bodies when encryption is on;
//! queries on them (a name with wildcards) are matched by the adapter after the rows are read,
//! so the SQL pre-selection only uses the clear columns ([`StudyFilter`]).
//!
//! `write.rs`: indexing an instance (one transaction: instance, series, study and their counts)
//! and completing studies; this file: the reads.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::sql::Sql;
use super::{Result, Store, StoreError, q};

mod write;

pub use write::{IndexInstance, Indexed};

/// The patient attributes kept sealed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DicomPatient {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sex: Option<String>,
}

/// A study of the index.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DicomStudy {
    pub study_uid: String,
    pub facility: String,
    /// The pipeline whose source received it (its study-complete event goes there).
    pub pipeline: String,
    pub patient_id: Option<String>,
    pub patient: DicomPatient,
    pub accession: Option<String>,
    pub study_date: Option<String>,
    pub study_time: Option<String>,
    pub study_id: Option<String>,
    pub description: Option<String>,
    /// The distinct modalities of its series.
    pub modalities: Vec<String>,
    pub series_count: i64,
    pub instance_count: i64,
    pub bytes: i64,
    /// The Specific Character Set of the last instance indexed.
    pub charset: String,
    /// `charset-assumed` and/or `charset-replaced` when any instance had them.
    pub charset_flags: Vec<String>,
    pub first_received_at: i64,
    pub last_received_at: i64,
    pub completed_at: Option<i64>,
}

/// A series of the index.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DicomSeries {
    pub series_uid: String,
    pub study_uid: String,
    pub modality: Option<String>,
    pub series_number: Option<i64>,
    pub description: Option<String>,
    pub instance_count: i64,
    pub bytes: i64,
}

/// An instance of the index.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DicomInstance {
    pub sop_instance_uid: String,
    pub series_uid: String,
    pub study_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax: String,
    pub instance_number: Option<i64>,
    pub bytes: i64,
    pub sha256: String,
    pub path: String,
    pub calling_ae: String,
    pub received_at: i64,
}

/// The SQL side of a study search: exact values and ranges on clear columns. Every `None` or
/// empty list matches everything; the adapter filters further (names, wildcards).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StudyFilter {
    /// Only studies of these facilities (`None`: any).
    pub facilities: Option<Vec<String>>,
    pub study_uids: Vec<String>,
    pub patient_id: Option<String>,
    pub accession: Option<String>,
    /// Inclusive `YYYYMMDD` bounds.
    pub date_from: Option<String>,
    pub date_to: Option<String>,
    /// At most this many rows (newest study date first).
    pub limit: i64,
}

const STUDY_COLUMNS: &str = "study_uid, facility, pipeline, patient_id, patient, accession, study_date, study_time, study_id, description, modalities, series_count, instance_count, bytes, charset, charset_flags, first_received_at, last_received_at, completed_at";

fn split(list: &str) -> Vec<String> {
    list.split('\\')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Store {
    fn dicom_binding(study_uid: &str) -> String {
        format!("dicom/{study_uid}")
    }

    fn seal_patient(&self, study_uid: &str, p: &DicomPatient) -> Result<String> {
        let json = serde_json::to_string(p).map_err(|e| {
            StoreError::Inconsistent(format!("dicom study {study_uid}: encode patient: {e}"))
        })?;
        Ok(match &self.keyring {
            Some(k) => k.seal_text(
                &json,
                &crate::crypto::Binding::new(&Self::dicom_binding(study_uid), "patient"),
            ),
            None => json,
        })
    }

    fn study_row(&self, r: &AnyRow) -> Result<DicomStudy> {
        let g = |e| q("read dicom study")(e);
        let study_uid: String = r.try_get("study_uid").map_err(g)?;
        let patient = match r.try_get::<Option<String>, _>("patient").map_err(g)? {
            None => DicomPatient::default(),
            Some(raw) => {
                let text = self.open_text(&Self::dicom_binding(&study_uid), "patient", raw)?;
                serde_json::from_str(&text).map_err(|e| {
                    StoreError::Inconsistent(format!(
                        "dicom study {study_uid}: stored patient does not decode: {e}"
                    ))
                })?
            }
        };
        Ok(DicomStudy {
            facility: r.try_get("facility").map_err(g)?,
            pipeline: r.try_get("pipeline").map_err(g)?,
            patient_id: r.try_get("patient_id").map_err(g)?,
            patient,
            accession: r.try_get("accession").map_err(g)?,
            study_date: r.try_get("study_date").map_err(g)?,
            study_time: r.try_get("study_time").map_err(g)?,
            study_id: r.try_get("study_id").map_err(g)?,
            description: r.try_get("description").map_err(g)?,
            modalities: split(&r.try_get::<String, _>("modalities").map_err(g)?),
            series_count: r.try_get("series_count").map_err(g)?,
            instance_count: r.try_get("instance_count").map_err(g)?,
            bytes: r.try_get("bytes").map_err(g)?,
            charset: r.try_get("charset").map_err(g)?,
            charset_flags: split(&r.try_get::<String, _>("charset_flags").map_err(g)?),
            first_received_at: r.try_get("first_received_at").map_err(g)?,
            last_received_at: r.try_get("last_received_at").map_err(g)?,
            completed_at: r.try_get("completed_at").map_err(g)?,
            study_uid,
        })
    }

    /// One study by its UID.
    pub async fn dicom_study(&self, study_uid: &str) -> Result<Option<DicomStudy>> {
        let mut s = Sql::new(format!(
            "SELECT {STUDY_COLUMNS} FROM dicom_studies WHERE study_uid = "
        ));
        s.bind(study_uid.to_owned());
        let row = s
            .query()
            .fetch_optional(&self.read)
            .await
            .map_err(q("read dicom study"))?;
        row.as_ref().map(|r| self.study_row(r)).transpose()
    }

    /// Studies matching `f` (newest study date first, then newest received).
    pub async fn dicom_studies(&self, f: &StudyFilter) -> Result<Vec<DicomStudy>> {
        if f.facilities.as_ref().is_some_and(Vec::is_empty) {
            return Ok(Vec::new());
        }
        let mut s = Sql::new(format!(
            "SELECT {STUDY_COLUMNS} FROM dicom_studies WHERE 1 = 1"
        ));
        if let Some(fs) = &f.facilities {
            s.push(" AND facility IN (");
            for (i, x) in fs.iter().enumerate() {
                if i > 0 {
                    s.push(", ");
                }
                s.bind(x.clone());
            }
            s.push(")");
        }
        if !f.study_uids.is_empty() {
            s.push(" AND study_uid IN (");
            for (i, x) in f.study_uids.iter().enumerate() {
                if i > 0 {
                    s.push(", ");
                }
                s.bind(x.clone());
            }
            s.push(")");
        }
        if let Some(p) = &f.patient_id {
            s.push(" AND patient_id = ");
            s.bind(p.clone());
        }
        if let Some(a) = &f.accession {
            s.push(" AND accession = ");
            s.bind(a.clone());
        }
        if let Some(d) = &f.date_from {
            s.push(" AND study_date >= ");
            s.bind(d.clone());
        }
        if let Some(d) = &f.date_to {
            s.push(" AND study_date <= ");
            s.bind(d.clone());
        }
        s.push(" ORDER BY study_date DESC, last_received_at DESC LIMIT ");
        s.bind(f.limit.max(0));
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("search dicom studies"))?;
        rows.iter().map(|r| self.study_row(r)).collect()
    }

    /// The series of a study, by series number.
    pub async fn dicom_series(&self, study_uid: &str) -> Result<Vec<DicomSeries>> {
        let mut s = Sql::new(
            "SELECT series_uid, study_uid, modality, series_number, description, instance_count, bytes FROM dicom_series WHERE study_uid = "
                .into(),
        );
        s.bind(study_uid.to_owned());
        s.push(" ORDER BY series_number, series_uid");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read dicom series"))?;
        let g = |e| q("read dicom series")(e);
        rows.iter()
            .map(|r| {
                Ok(DicomSeries {
                    series_uid: r.try_get("series_uid").map_err(g)?,
                    study_uid: r.try_get("study_uid").map_err(g)?,
                    modality: r.try_get("modality").map_err(g)?,
                    series_number: r.try_get("series_number").map_err(g)?,
                    description: r.try_get("description").map_err(g)?,
                    instance_count: r.try_get("instance_count").map_err(g)?,
                    bytes: r.try_get("bytes").map_err(g)?,
                })
            })
            .collect()
    }

    /// The instances of a series (by instance number), or of a whole study.
    pub async fn dicom_instances(
        &self,
        study_uid: &str,
        series_uid: Option<&str>,
    ) -> Result<Vec<DicomInstance>> {
        let mut s = Sql::new(
            "SELECT sop_instance_uid, series_uid, study_uid, sop_class_uid, transfer_syntax, instance_number, bytes, sha256, path, calling_ae, received_at FROM dicom_instances WHERE study_uid = "
                .into(),
        );
        s.bind(study_uid.to_owned());
        if let Some(series) = series_uid {
            s.push(" AND series_uid = ");
            s.bind(series.to_owned());
        }
        s.push(" ORDER BY series_uid, instance_number, sop_instance_uid");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read dicom instances"))?;
        let g = |e| q("read dicom instances")(e);
        rows.iter()
            .map(|r| {
                Ok(DicomInstance {
                    sop_instance_uid: r.try_get("sop_instance_uid").map_err(g)?,
                    series_uid: r.try_get("series_uid").map_err(g)?,
                    study_uid: r.try_get("study_uid").map_err(g)?,
                    sop_class_uid: r.try_get("sop_class_uid").map_err(g)?,
                    transfer_syntax: r.try_get("transfer_syntax").map_err(g)?,
                    instance_number: r.try_get("instance_number").map_err(g)?,
                    bytes: r.try_get("bytes").map_err(g)?,
                    sha256: r.try_get("sha256").map_err(g)?,
                    path: r.try_get("path").map_err(g)?,
                    calling_ae: r.try_get("calling_ae").map_err(g)?,
                    received_at: r.try_get("received_at").map_err(g)?,
                })
            })
            .collect()
    }

    /// The studies of a person of the patient index: those whose (facility, patient id) is a
    /// record linked to `person_id` (what the workflow attaches to a consultation by patient).
    pub async fn dicom_studies_of_person(&self, person_id: i64) -> Result<Vec<DicomStudy>> {
        let cols = STUDY_COLUMNS
            .split(", ")
            .map(|c| format!("s.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut s = Sql::new(format!(
            "SELECT {cols} FROM dicom_studies s JOIN identities i ON i.facility = s.facility AND i.local_id = s.patient_id WHERE i.person_id = "
        ));
        s.bind(person_id);
        s.push(" ORDER BY s.study_date DESC, s.last_received_at DESC");
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read the studies of a person"))?;
        rows.iter().map(|r| self.study_row(r)).collect()
    }

    /// Studies of `pipeline` no instance came for since `quiet_since` (ms) that are not
    /// complete yet, oldest first: those its study-complete sweep reports.
    pub async fn dicom_quiet_studies(
        &self,
        pipeline: &str,
        quiet_since: i64,
        limit: i64,
    ) -> Result<Vec<DicomStudy>> {
        let mut s = Sql::new(format!(
            "SELECT {STUDY_COLUMNS} FROM dicom_studies WHERE completed_at IS NULL AND last_received_at <= "
        ));
        s.bind(quiet_since);
        s.push(" AND pipeline = ");
        s.bind(pipeline.to_owned());
        s.push(" ORDER BY last_received_at LIMIT ");
        s.bind(limit);
        let rows = s
            .query()
            .fetch_all(&self.read)
            .await
            .map_err(q("read quiet dicom studies"))?;
        rows.iter().map(|r| self.study_row(r)).collect()
    }
}
