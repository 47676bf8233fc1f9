//! The study index (store/dicom, migration 0016) on SQLite and PostgreSQL: counts through
//! resends and re-filed instances, searches, completion and reopening, the patient link, and
//! the patient's attributes sealed at rest.

use huizhen_core::store::Store;
use huizhen_core::store::dicom::{DicomPatient, IndexInstance, StudyFilter};
use huizhen_domain::identity::{Demographics, PersonName, normalize};

use crate::support::{Backend, both_backends, fresh_db, store};

both_backends!(
    counts_follow_new_resent_and_refiled_instances,
    searches_completion_and_the_patient_link
);

fn instance(study: &str, series: &str, sop: &str, bytes: i64, at: i64) -> IndexInstance {
    IndexInstance {
        facility: "county-1".into(),
        pipeline: "imaging".into(),
        study_uid: study.into(),
        series_uid: series.into(),
        sop_instance_uid: sop.into(),
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
        transfer_syntax: "1.2.840.10008.1.2.4.80".into(),
        instance_number: Some(1),
        patient_id: Some("MRN-1".into()),
        patient: DicomPatient {
            name: Some("王^小东".into()),
            birth_date: Some("19800101".into()),
            sex: Some("M".into()),
        },
        accession: Some("ACC-9".into()),
        study_date: Some("20260115".into()),
        study_time: Some("0930".into()),
        study_id: Some("S1".into()),
        study_description: Some("胸部CT".into()),
        modality: Some("CT".into()),
        series_number: Some(1),
        series_description: None,
        charset: "GB18030".into(),
        charset_flags: vec![],
        bytes,
        sha256: "00".into(),
        path: format!("/data/{sop}.dcm"),
        calling_ae: "CT01".into(),
        received_at: at,
    }
}

async fn counts_follow_new_resent_and_refiled_instances(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let s = store(&db).await;
    let st = "1.2.3";
    let a = s
        .dicom_index(&instance(st, "1.2.3.1", "1.2.3.1.1", 100, 1))
        .await
        .unwrap();
    assert!(a.new_instance && !a.reopened && a.person_id.is_none());
    s.dicom_index(&instance(st, "1.2.3.1", "1.2.3.1.2", 200, 2))
        .await
        .unwrap();
    let mut sr = instance(st, "1.2.3.2", "1.2.3.2.1", 50, 3);
    sr.modality = Some("SR".into());
    s.dicom_index(&sr).await.unwrap();
    let study = s.dicom_study(st).await.unwrap().unwrap();
    assert_eq!(
        (study.instance_count, study.series_count, study.bytes),
        (3, 2, 350)
    );
    assert_eq!(study.modalities, ["CT", "SR"]);
    assert_eq!(study.patient.name.as_deref(), Some("王^小东"));
    // A resend replaces the instance: the counts stay, the bytes follow the new file.
    let again = s
        .dicom_index(&instance(st, "1.2.3.1", "1.2.3.1.2", 250, 4))
        .await
        .unwrap();
    assert!(!again.new_instance);
    let study = s.dicom_study(st).await.unwrap().unwrap();
    assert_eq!(
        (study.instance_count, study.series_count, study.bytes),
        (3, 2, 400)
    );
    // Re-filed under the other series: the emptied series is dropped.
    let mut moved = instance(st, "1.2.3.2", "1.2.3.1.1", 100, 5);
    moved.modality = Some("SR".into());
    s.dicom_index(&moved).await.unwrap();
    moved.sop_instance_uid = "1.2.3.1.2".into();
    moved.bytes = 250;
    s.dicom_index(&moved).await.unwrap();
    let study = s.dicom_study(st).await.unwrap().unwrap();
    assert_eq!(
        (study.instance_count, study.series_count, study.bytes),
        (3, 1, 400)
    );
    let series = s.dicom_series(st).await.unwrap();
    assert_eq!(series.len(), 1);
    assert_eq!((series[0].instance_count, series[0].bytes), (3, 400));
    assert_eq!(s.dicom_instances(st, None).await.unwrap().len(), 3);
}

async fn searches_completion_and_the_patient_link(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let s: Store = store(&db).await;
    // The patient is in the patient index at county-1 as MRN-1.
    let patient = normalize(&Demographics {
        facility: "county-1".into(),
        local_id: "MRN-1".into(),
        identifiers: vec![],
        names: vec![PersonName::text("王小东")],
        birth_date: Some("1980-01-01".into()),
        sex: None,
        phones: vec![],
        addresses: vec![],
    });
    let (_, person) = s.identity_upsert(&patient, None).await.unwrap();
    let first = s
        .dicom_index(&instance("2.1", "2.1.1", "2.1.1.1", 10, 1_000))
        .await
        .unwrap();
    assert_eq!(first.person_id, Some(person), "linked to the patient index");
    let mut other = instance("2.2", "2.2.1", "2.2.1.1", 10, 2_000);
    other.facility = "city-2".into();
    other.accession = Some("ACC-2".into());
    other.study_date = Some("20250601".into());
    s.dicom_index(&other).await.unwrap();

    let find = |f: StudyFilter| {
        let s = s.clone();
        async move {
            s.dicom_studies(&StudyFilter { limit: 100, ..f })
                .await
                .unwrap()
                .into_iter()
                .map(|x| x.study_uid)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(find(StudyFilter::default()).await, ["2.1", "2.2"]);
    assert_eq!(
        find(StudyFilter {
            facilities: Some(vec!["city-2".into()]),
            ..Default::default()
        })
        .await,
        ["2.2"]
    );
    assert!(
        find(StudyFilter {
            facilities: Some(vec![]),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    assert_eq!(
        find(StudyFilter {
            accession: Some("ACC-9".into()),
            ..Default::default()
        })
        .await,
        ["2.1"]
    );
    assert_eq!(
        find(StudyFilter {
            date_from: Some("20260101".into()),
            date_to: Some("20261231".into()),
            ..Default::default()
        })
        .await,
        ["2.1"]
    );
    assert_eq!(
        find(StudyFilter {
            study_uids: vec!["2.2".into(), "9.9".into()],
            patient_id: Some("MRN-1".into()),
            ..Default::default()
        })
        .await,
        ["2.2"]
    );
    // The person's studies: those filed at the facility the patient index knows them by.
    let mine: Vec<String> = s
        .dicom_studies_of_person(person)
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.study_uid)
        .collect();
    assert_eq!(mine, ["2.1"]);

    // Completion: quiet since 1 500 ms → 2.1 only; marked once; a late instance reopens it.
    let quiet = s.dicom_quiet_studies("imaging", 1_500, 10).await.unwrap();
    assert!(
        s.dicom_quiet_studies("other", 1_500, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        quiet
            .iter()
            .map(|q| q.study_uid.as_str())
            .collect::<Vec<_>>(),
        ["2.1"]
    );
    assert!(s.dicom_mark_complete("2.1", 1_000, 3_000).await.unwrap());
    assert!(
        !s.dicom_mark_complete("2.1", 1_000, 3_000).await.unwrap(),
        "once"
    );
    assert!(
        s.dicom_quiet_studies("imaging", 10_000, 10)
            .await
            .unwrap()
            .iter()
            .all(|q| q.study_uid != "2.1")
    );
    let late = s
        .dicom_index(&instance("2.1", "2.1.1", "2.1.1.2", 10, 4_000))
        .await
        .unwrap();
    assert!(late.reopened);
    assert!(
        !s.dicom_mark_complete("2.1", 1_000, 5_000).await.unwrap(),
        "a new instance came"
    );
    let st = s.dicom_study("2.1").await.unwrap().unwrap();
    assert_eq!((st.completed_at, st.instance_count), (None, 2));
}

/// With encryption on, the patient's name is not in the table in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_patient_is_sealed_at_rest() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let keys = db.dir.path().join("keys");
    let ring =
        huizhen_core::crypto::Keyring::from_config(&huizhen_core::crypto::EncryptionConfig {
            enabled: true,
            keys_file: keys,
            ..Default::default()
        })
        .unwrap();
    let s = store(&db).await.with_keyring(ring);
    s.dicom_index(&instance("3.1", "3.1.1", "3.1.1.1", 10, 1))
        .await
        .unwrap();
    assert_eq!(
        s.dicom_study("3.1")
            .await
            .unwrap()
            .unwrap()
            .patient
            .name
            .as_deref(),
        Some("王^小东")
    );
    let raw = std::fs::read(db.dir.path().join("journal.db")).unwrap();
    let wal = std::fs::read(db.dir.path().join("journal.db-wal")).unwrap_or_default();
    let needle = "王^小东".as_bytes();
    for bytes in [raw, wal] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the name is sealed"
        );
    }
}
