//! Query/Retrieve beyond C-FIND: what a C-GET or C-MOVE identifier selects in the study index
//! ([`Selection`], PS3.4 C.4.2.1.4 and C.4.3.1.3: unique keys only, at the PATIENT (Patient
//! Root), STUDY, SERIES and IMAGE levels), the registry of remote AEs ([`remote`]), the SCP side
//! of the retrieve services ([`retrieve`]) and the SCU side ([`scu`]).

use dicom_core::VR;
use huizhen_core::store::Store;
use huizhen_core::store::dicom::{DicomInstance, StudyFilter};

use crate::dataset::{self, Want, show};
use crate::dimse::status;
use crate::find::{Failure, Level};
use crate::record::*;

pub mod remote;
pub mod retrieve;
pub mod scu;

/// What a retrieve identifier names: the level and its unique keys (UID lists split on `\`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub level: Level,
    pub patient_id: Option<String>,
    pub studies: Vec<String>,
    pub series: Vec<String>,
    pub instances: Vec<String>,
}

fn fail(status: u16, comment: impl Into<String>) -> Failure {
    Failure {
        status,
        comment: comment.into(),
    }
}

/// At most this many instances per retrieve (a C-GET/C-MOVE counts sub-operations in 16 bits).
pub const MAX_INSTANCES: usize = 65_535;

impl Selection {
    /// Reads a C-GET or C-MOVE identifier encoded in transfer syntax `ts`.
    pub fn parse(identifier: &[u8], ts: &str, patient_root: bool) -> Result<Selection, Failure> {
        let (syntax, deflated) = dataset::Syntax::of(ts);
        if deflated {
            return Err(fail(
                status::CANNOT_UNDERSTAND,
                "deflated identifiers are not read",
            ));
        }
        let elements = dataset::scan(
            identifier,
            syntax,
            Want {
                until: u32::MAX,
                tags: None,
                max_value: 1 << 20,
            },
        )
        .map_err(|e| fail(status::IDENTIFIER_MISMATCH, format!("identifier: {e}")))?;
        let attrs =
            Attrs::new(&elements, None).map_err(|e| fail(status::IDENTIFIER_MISMATCH, e))?;
        let level = match attrs.ascii(QUERY_RETRIEVE_LEVEL).as_deref() {
            Some("PATIENT") if patient_root => Level::Patient,
            Some("STUDY") => Level::Study,
            Some("SERIES") => Level::Series,
            Some("IMAGE") => Level::Image,
            other => {
                return Err(fail(
                    status::IDENTIFIER_MISMATCH,
                    format!("Query/Retrieve Level {other:?} is not supported by this model"),
                ));
            }
        };
        let list = |t| -> Vec<String> {
            attrs
                .ascii(t)
                .map(|v| {
                    v.split('\\')
                        .map(|u| u.trim().to_owned())
                        .filter(|u| !u.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        let sel = Selection {
            level,
            patient_id: attrs.text(PATIENT_ID).filter(|p| !p.is_empty()),
            studies: list(STUDY_INSTANCE_UID),
            series: list(SERIES_INSTANCE_UID),
            instances: list(SOP_INSTANCE_UID),
        };
        let need = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(fail(
                    status::IDENTIFIER_MISMATCH,
                    format!("a {} level retrieve needs {what}", level_code(level)),
                ))
            }
        };
        match level {
            Level::Patient => need(sel.patient_id.is_some(), "a Patient ID (0010,0020)")?,
            Level::Study => need(
                !sel.studies.is_empty(),
                &format!("Study Instance UIDs {}", show(STUDY_INSTANCE_UID)),
            )?,
            Level::Series => {
                need(
                    sel.studies.len() == 1,
                    &format!("one Study Instance UID {}", show(STUDY_INSTANCE_UID)),
                )?;
                need(
                    !sel.series.is_empty(),
                    &format!("Series Instance UIDs {}", show(SERIES_INSTANCE_UID)),
                )?;
            }
            Level::Image => {
                need(
                    sel.studies.len() == 1,
                    &format!("one Study Instance UID {}", show(STUDY_INSTANCE_UID)),
                )?;
                need(
                    sel.series.len() == 1,
                    &format!("one Series Instance UID {}", show(SERIES_INSTANCE_UID)),
                )?;
                need(
                    !sel.instances.is_empty(),
                    &format!("SOP Instance UIDs {}", show(SOP_INSTANCE_UID)),
                )?;
            }
        }
        Ok(sel)
    }

    /// The identifier that selects this, for the SCU side (ASCII keys; a non-ASCII patient id
    /// declares UTF-8).
    pub fn identifier(&self) -> Vec<(u32, VR, String)> {
        let mut out = vec![(QUERY_RETRIEVE_LEVEL, VR::CS, level_code(self.level).into())];
        if let Some(p) = &self.patient_id {
            if !p.is_ascii() {
                out.push((SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192".into()));
            }
            out.push((PATIENT_ID, VR::LO, p.clone()));
        }
        for (t, v) in [
            (STUDY_INSTANCE_UID, &self.studies),
            (SERIES_INSTANCE_UID, &self.series),
            (SOP_INSTANCE_UID, &self.instances),
        ] {
            if !v.is_empty() {
                out.push((t, VR::UI, v.join("\\")));
            }
        }
        out.sort_by_key(|(t, _, _)| *t);
        out
    }

    /// The instances selected among the studies of `facilities` (`None`: all), in study,
    /// series and instance order. Unknown UIDs select nothing (not an error: the answer
    /// counts zero sub-operations).
    pub async fn resolve(
        &self,
        store: &Store,
        facilities: &Option<Vec<String>>,
    ) -> Result<Vec<DicomInstance>, Failure> {
        let failed = |e: huizhen_core::store::StoreError| {
            tracing::error!(error = %e, "retrieve: the index could not be read");
            fail(status::PROCESSING_FAILURE, "the index could not be read")
        };
        let filter = StudyFilter {
            facilities: facilities.clone(),
            study_uids: self.studies.clone(),
            patient_id: self.patient_id.clone(),
            limit: 10_000,
            ..StudyFilter::default()
        };
        let studies = store.dicom_studies(&filter).await.map_err(failed)?;
        let mut out = Vec::new();
        for st in studies.iter().filter(|s| {
            facilities.as_ref().is_none_or(|f| f.contains(&s.facility))
                && self
                    .patient_id
                    .as_ref()
                    .is_none_or(|p| s.patient_id.as_ref() == Some(p))
                && (self.studies.is_empty() || self.studies.contains(&s.study_uid))
        }) {
            let all = store
                .dicom_instances(&st.study_uid, None)
                .await
                .map_err(failed)?;
            out.extend(all.into_iter().filter(|i| {
                (self.series.is_empty() || self.series.contains(&i.series_uid))
                    && (self.instances.is_empty() || self.instances.contains(&i.sop_instance_uid))
            }));
            if out.len() > MAX_INSTANCES {
                return Err(fail(
                    status::MATCHES_UNABLE,
                    format!("more than {MAX_INSTANCES} instances: retrieve fewer at once"),
                ));
            }
        }
        Ok(out)
    }
}

pub fn level_code(l: Level) -> &'static str {
    match l {
        Level::Patient => "PATIENT",
        Level::Study => "STUDY",
        Level::Series => "SERIES",
        Level::Image => "IMAGE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(
        level: &str,
        keys: &[(u32, VR, &str)],
        patient_root: bool,
    ) -> Result<Selection, Failure> {
        let mut ids = vec![(QUERY_RETRIEVE_LEVEL, VR::CS, level.to_owned())];
        ids.extend(keys.iter().map(|(t, v, s)| (*t, *v, (*s).to_owned())));
        ids.sort_by_key(|(t, _, _)| *t);
        let ds = crate::find::encode(&ids, crate::uids::EXPLICIT_VR_LE).unwrap();
        Selection::parse(&ds, crate::uids::EXPLICIT_VR_LE, patient_root)
    }

    #[test]
    fn identifiers_name_their_unique_keys_by_level() {
        let s = parse(
            "STUDY",
            &[(STUDY_INSTANCE_UID, VR::UI, "1.2.3\\1.2.4")],
            false,
        )
        .unwrap();
        assert_eq!(s.studies, ["1.2.3", "1.2.4"]);
        let s = parse(
            "IMAGE",
            &[
                (STUDY_INSTANCE_UID, VR::UI, "1.2.3"),
                (SERIES_INSTANCE_UID, VR::UI, "1.2.3.1"),
                (SOP_INSTANCE_UID, VR::UI, "1.2.3.1.1"),
            ],
            false,
        )
        .unwrap();
        assert_eq!(s.instances, ["1.2.3.1.1"]);
        let s = parse("PATIENT", &[(PATIENT_ID, VR::LO, "P1")], true).unwrap();
        assert_eq!(s.patient_id.as_deref(), Some("P1"));
        // What is missing is named, with its tag.
        let e = parse("SERIES", &[(STUDY_INSTANCE_UID, VR::UI, "1.2.3")], false).unwrap_err();
        assert_eq!(e.status, status::IDENTIFIER_MISMATCH);
        assert!(e.comment.contains("(0020,000E)"), "{}", e.comment);
        assert!(parse("PATIENT", &[(PATIENT_ID, VR::LO, "P1")], false).is_err());
        assert!(parse("STUDY", &[], false).is_err());
        // The identifier round-trips.
        let back = parse(
            "IMAGE",
            &[
                (STUDY_INSTANCE_UID, VR::UI, "1.2.3"),
                (SERIES_INSTANCE_UID, VR::UI, "1.2.3.1"),
                (SOP_INSTANCE_UID, VR::UI, "1.2.3.1.1\\1.2.3.1.2"),
            ],
            false,
        )
        .unwrap();
        let ds = crate::find::encode(&back.identifier(), crate::uids::EXPLICIT_VR_LE).unwrap();
        assert_eq!(
            Selection::parse(&ds, crate::uids::EXPLICIT_VR_LE, false).unwrap(),
            back
        );
    }
}
