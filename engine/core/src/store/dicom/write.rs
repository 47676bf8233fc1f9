//! Indexing an instance and completing a study.

use sqlx::{AnyConnection, Connection, Row};

use super::DicomPatient;
use crate::store::sql::Sql;
use crate::store::{Result, Store, q};

/// One received instance, as the adapter read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexInstance {
    pub facility: String,
    pub pipeline: String,
    pub study_uid: String,
    pub series_uid: String,
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax: String,
    pub instance_number: Option<i64>,
    pub patient_id: Option<String>,
    pub patient: DicomPatient,
    pub accession: Option<String>,
    pub study_date: Option<String>,
    pub study_time: Option<String>,
    pub study_id: Option<String>,
    pub study_description: Option<String>,
    pub modality: Option<String>,
    pub series_number: Option<i64>,
    pub series_description: Option<String>,
    pub charset: String,
    /// `charset-assumed`, `charset-replaced`.
    pub charset_flags: Vec<String>,
    pub bytes: i64,
    pub sha256: String,
    pub path: String,
    pub calling_ae: String,
    /// Milliseconds since the epoch.
    pub received_at: i64,
}

/// What indexing an instance changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Indexed {
    /// The instance was not in the index before (a resend replaces it).
    pub new_instance: bool,
    /// The study had completed and is open again.
    pub reopened: bool,
    /// The person of the patient index with this (facility, patient id), if any.
    pub person_id: Option<i64>,
}

async fn exec(conn: &mut AnyConnection, s: Sql, op: &'static str) -> Result<u64> {
    Ok(s.query()
        .execute(&mut *conn)
        .await
        .map_err(q(op))?
        .rows_affected())
}

/// Adds `more` to a backslash-separated set.
fn merge(list: &str, more: &[String]) -> String {
    let mut items: Vec<&str> = list.split('\\').filter(|s| !s.is_empty()).collect();
    for m in more {
        if !m.is_empty() && !items.contains(&m.as_str()) {
            items.push(m);
        }
    }
    items.join("\\")
}

impl Store {
    /// Files an instance in the index: its row (replacing a resent one), its series and study
    /// with their counts, bytes and modalities, in one transaction. The study becomes open (not
    /// complete) again.
    pub async fn dicom_index(&self, i: &IndexInstance) -> Result<Indexed> {
        let patient = self.seal_patient(&i.study_uid, &i.patient)?;
        let mut conn = self
            .write
            .acquire()
            .await
            .map_err(q("acquire writer connection"))?;
        let mut tx = conn.begin().await.map_err(q("begin dicom index"))?;
        if self.backend() == crate::store::Backend::Sqlite {
            sqlx::query("UPDATE dicom_studies SET bytes = bytes WHERE 1 = 0")
                .execute(&mut *tx)
                .await
                .map_err(q("take the write lock"))?;
        }
        // The instance before (a resend, possibly re-filed under another series or study).
        let mut s = Sql::new(
            "SELECT series_uid, study_uid, bytes FROM dicom_instances WHERE sop_instance_uid = "
                .into(),
        );
        s.bind(i.sop_instance_uid.clone());
        let old = s
            .query()
            .fetch_optional(&mut *tx)
            .await
            .map_err(q("read dicom instance"))?
            .map(|r| -> Result<(String, String, i64)> {
                let g = |e| q("read dicom instance")(e);
                Ok((
                    r.try_get("series_uid").map_err(g)?,
                    r.try_get("study_uid").map_err(g)?,
                    r.try_get("bytes").map_err(g)?,
                ))
            })
            .transpose()?;
        if let Some((series, study, bytes)) = &old {
            self.dicom_unfile(&mut tx, series, study, *bytes).await?;
        }
        let mut s = Sql::new("INSERT INTO dicom_instances (sop_instance_uid, series_uid, study_uid, sop_class_uid, transfer_syntax, instance_number, bytes, sha256, path, calling_ae, received_at) VALUES (".into());
        s.bind(i.sop_instance_uid.clone());
        for v in [
            &i.series_uid,
            &i.study_uid,
            &i.sop_class_uid,
            &i.transfer_syntax,
        ] {
            s.push(", ");
            s.bind(v.clone());
        }
        s.push(", ");
        s.bind(i.instance_number);
        s.push(", ");
        s.bind(i.bytes);
        for v in [&i.sha256, &i.path, &i.calling_ae] {
            s.push(", ");
            s.bind(v.clone());
        }
        s.push(", ");
        s.bind(i.received_at);
        s.push(") ON CONFLICT (sop_instance_uid) DO UPDATE SET series_uid = excluded.series_uid, study_uid = excluded.study_uid, sop_class_uid = excluded.sop_class_uid, transfer_syntax = excluded.transfer_syntax, instance_number = excluded.instance_number, bytes = excluded.bytes, sha256 = excluded.sha256, path = excluded.path, calling_ae = excluded.calling_ae, received_at = excluded.received_at");
        exec(&mut tx, s, "index dicom instance").await?;

        let mut s = Sql::new("INSERT INTO dicom_series (series_uid, study_uid, modality, series_number, description, instance_count, bytes, updated_at) VALUES (".into());
        s.bind(i.series_uid.clone());
        s.push(", ");
        s.bind(i.study_uid.clone());
        s.push(", ");
        s.bind(i.modality.clone());
        s.push(", ");
        s.bind(i.series_number);
        s.push(", ");
        s.bind(i.series_description.clone());
        s.push(", 1, ");
        s.bind(i.bytes);
        s.push(", ");
        s.bind(i.received_at);
        s.push(") ON CONFLICT (series_uid) DO NOTHING");
        let new_series = exec(&mut tx, s, "index dicom series").await? == 1;
        if !new_series {
            let mut s = Sql::new(
                "UPDATE dicom_series SET instance_count = instance_count + 1, bytes = bytes + "
                    .into(),
            );
            s.bind(i.bytes);
            s.push(", modality = COALESCE(");
            s.bind(i.modality.clone());
            s.push(", modality), series_number = COALESCE(");
            s.bind(i.series_number);
            s.push(", series_number), description = COALESCE(");
            s.bind(i.series_description.clone());
            s.push(", description), updated_at = ");
            s.bind(i.received_at);
            s.push(" WHERE series_uid = ");
            s.bind(i.series_uid.clone());
            exec(&mut tx, s, "count dicom series").await?;
        }

        let mut s = Sql::new(
            "SELECT modalities, charset_flags, completed_at FROM dicom_studies WHERE study_uid = "
                .into(),
        );
        s.bind(i.study_uid.clone());
        let study = s
            .query()
            .fetch_optional(&mut *tx)
            .await
            .map_err(q("read dicom study"))?;
        let modality: Vec<String> = i.modality.iter().cloned().collect();
        let reopened = match study {
            None => {
                let mut s = Sql::new("INSERT INTO dicom_studies (study_uid, facility, pipeline, patient_id, patient, accession, study_date, study_time, study_id, description, modalities, series_count, instance_count, bytes, charset, charset_flags, first_received_at, last_received_at) VALUES (".into());
                s.bind(i.study_uid.clone());
                s.push(", ");
                s.bind(i.facility.clone());
                s.push(", ");
                s.bind(i.pipeline.clone());
                s.push(", ");
                s.bind(i.patient_id.clone());
                s.push(", ");
                s.bind(patient);
                for v in [
                    &i.accession,
                    &i.study_date,
                    &i.study_time,
                    &i.study_id,
                    &i.study_description,
                ] {
                    s.push(", ");
                    s.bind(v.clone());
                }
                s.push(", ");
                s.bind(merge("", &modality));
                s.push(", 1, 1, ");
                s.bind(i.bytes);
                s.push(", ");
                s.bind(i.charset.clone());
                s.push(", ");
                s.bind(merge("", &i.charset_flags));
                s.push(", ");
                s.bind(i.received_at);
                s.push(", ");
                s.bind(i.received_at);
                s.push(")");
                exec(&mut tx, s, "index dicom study").await?;
                false
            }
            Some(r) => {
                let g = |e| q("read dicom study")(e);
                let modalities: String = r.try_get("modalities").map_err(g)?;
                let flags: String = r.try_get("charset_flags").map_err(g)?;
                let completed: Option<i64> = r.try_get("completed_at").map_err(g)?;
                let mut s = Sql::new("UPDATE dicom_studies SET instance_count = instance_count + 1, series_count = series_count + ".into());
                s.bind(i64::from(new_series));
                s.push(", bytes = bytes + ");
                s.bind(i.bytes);
                s.push(", facility = ");
                s.bind(i.facility.clone());
                s.push(", pipeline = ");
                s.bind(i.pipeline.clone());
                s.push(", patient_id = COALESCE(");
                s.bind(i.patient_id.clone());
                s.push(", patient_id), patient = ");
                s.bind(patient);
                for (col, v) in [
                    ("accession", &i.accession),
                    ("study_date", &i.study_date),
                    ("study_time", &i.study_time),
                    ("study_id", &i.study_id),
                    ("description", &i.study_description),
                ] {
                    s.push(&format!(", {col} = COALESCE("));
                    s.bind(v.clone());
                    s.push(&format!(", {col})"));
                }
                s.push(", modalities = ");
                s.bind(merge(&modalities, &modality));
                s.push(", charset = ");
                s.bind(i.charset.clone());
                s.push(", charset_flags = ");
                s.bind(merge(&flags, &i.charset_flags));
                s.push(", last_received_at = ");
                s.bind(i.received_at);
                s.push(", completed_at = NULL WHERE study_uid = ");
                s.bind(i.study_uid.clone());
                exec(&mut tx, s, "count dicom study").await?;
                completed.is_some()
            }
        };
        tx.commit().await.map_err(q("commit dicom index"))?;
        let person_id = match &i.patient_id {
            None => None,
            Some(p) => self
                .identity(&i.facility, p)
                .await?
                .filter(|r| r.active)
                .map(|r| r.person_id),
        };
        Ok(Indexed {
            new_instance: old.is_none(),
            reopened,
            person_id,
        })
    }

    /// Takes a replaced instance out of its series' and study's counts (and drops a series
    /// left empty by it).
    async fn dicom_unfile(
        &self,
        conn: &mut AnyConnection,
        series: &str,
        study: &str,
        bytes: i64,
    ) -> Result<()> {
        let mut s = Sql::new(
            "UPDATE dicom_series SET instance_count = instance_count - 1, bytes = bytes - ".into(),
        );
        s.bind(bytes);
        s.push(" WHERE series_uid = ");
        s.bind(series.to_owned());
        exec(conn, s, "uncount dicom series").await?;
        let mut s =
            Sql::new("DELETE FROM dicom_series WHERE instance_count <= 0 AND series_uid = ".into());
        s.bind(series.to_owned());
        let dropped = exec(conn, s, "drop empty dicom series").await?;
        let mut s = Sql::new(
            "UPDATE dicom_studies SET instance_count = instance_count - 1, series_count = series_count - "
                .into(),
        );
        s.bind(dropped as i64);
        s.push(", bytes = bytes - ");
        s.bind(bytes);
        s.push(" WHERE study_uid = ");
        s.bind(study.to_owned());
        exec(conn, s, "uncount dicom study").await?;
        Ok(())
    }

    /// Marks a study complete, if no instance came since `last_received_at` (the value the
    /// sweep read) and it is not complete yet. `false` when another process did it first or a
    /// new instance reopened the study meanwhile.
    pub async fn dicom_mark_complete(
        &self,
        study_uid: &str,
        last_received_at: i64,
        now: i64,
    ) -> Result<bool> {
        let mut s = Sql::new("UPDATE dicom_studies SET completed_at = ".into());
        s.bind(now);
        s.push(", completed_count = instance_count WHERE study_uid = ");
        s.bind(study_uid.to_owned());
        s.push(" AND completed_at IS NULL AND last_received_at = ");
        s.bind(last_received_at);
        let done = s
            .query()
            .execute(&self.write)
            .await
            .map_err(q("complete dicom study"))?
            .rows_affected();
        Ok(done == 1)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sets_merge_without_repeats() {
        assert_eq!(super::merge("", &["CT".into()]), "CT");
        assert_eq!(
            super::merge("CT\\SR", &["CT".into(), "MR".into()]),
            "CT\\SR\\MR"
        );
        assert_eq!(super::merge("CT", &[String::new()]), "CT");
    }
}
