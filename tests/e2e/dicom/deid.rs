//! The `deidentify_dicom` step in a running pipeline (DCM-06): instances stored through STOW-RS
//! reach it as the `dicom` source's messages; the de-identified copies are written under
//! `output` with new UIDs and none of the patient's identity, the originals untouched.

use std::time::Duration;

use dicom_dictionary_std::tags;
use serde_json::Value;

use super::files::{Spec, write};
use super::web::{engine_with, http, stow_body};
use crate::consultations::doctor;
use crate::support::wait_for;

const STEPS: &str = "  - filter: { expr: \"body.event == 'instance'\" }\n  - deidentify_dicom:\n      project: teaching-2026\n      secret: \"e2e-deid-secret-0123456789\"\n      output: \"{dir}/teaching\"\n      options: [retain_patient_characteristics]\n";

fn text(o: &dicom_object::DefaultDicomObject, t: dicom_core::Tag) -> Option<String> {
    o.element(t)
        .ok()
        .map(|e| e.to_str().map(|s| s.trim().to_owned()).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deidentified_copies_keep_no_identity_and_map_uids_consistently() {
    let Some(wf) = engine_with(STEPS).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let study = "1.2.826.0.1.3680043.9.7004.1";
    let mut files = Vec::new();
    for n in 1..=2 {
        let mut s = Spec::new(study, &format!("{study}.1"), n);
        s.patient_id = "MRN-DEID".into();
        s.name = "Wang^XiaoDong".as_bytes().to_vec();
        let p = dir.path().join(format!("{n}.dcm"));
        write(&p, &s);
        files.push(std::fs::read(&p).unwrap());
    }
    let (body, ct) = stow_body(&files);
    let (st, _, out) = http(
        &wf.base,
        "POST",
        "/dicomweb/studies",
        &[
            ("Authorization", format!("Bearer {}", doctor())),
            ("Content-Type", ct),
        ],
        Some((&body, 8192)),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&out));
    let store = wf.engine.store.clone();
    let done: Vec<Value> = wait_for(
        "both instances de-identified",
        Duration::from_secs(20),
        || {
            let store = store.clone();
            async move {
                let effects = store.effects(Some("imaging")).await.unwrap_or_default();
                let done: Vec<Value> = effects
                    .iter()
                    .filter_map(|e| serde_json::from_slice::<Value>(&e.body).ok())
                    .filter(|b| b["event"] == "deidentified")
                    .collect();
                if done.len() < 2 {
                    // A failure shows at once rather than as a timeout.
                    for m in crate::support::journaled(&store, "imaging").await {
                        assert!(m.last_error.is_none(), "{:?}", m.last_error);
                    }
                }
                (done.len() == 2).then_some(done)
            }
        },
    )
    .await;
    let mut new_studies = Vec::new();
    for b in &done {
        assert_eq!(b["method"][0], "113100", "{b}");
        assert!(
            !b.to_string().contains(study),
            "original UID in the message: {b}"
        );
        let path = b["instances"][0]["path"].as_str().unwrap();
        let o = dicom_object::open_file(path).unwrap();
        new_studies.push(text(&o, tags::STUDY_INSTANCE_UID).unwrap());
        assert_eq!(
            text(&o, tags::PATIENT_IDENTITY_REMOVED).as_deref(),
            Some("YES")
        );
        assert!(
            text(&o, tags::DEIDENTIFICATION_METHOD)
                .unwrap()
                .contains("Retain Patient Characteristics")
        );
        let pid = text(&o, tags::PATIENT_ID).unwrap();
        assert!(pid.starts_with("ANON-"), "{pid}");
        assert_eq!(text(&o, tags::PATIENT_NAME), Some(pid));
        assert_eq!(text(&o, tags::ACCESSION_NUMBER).as_deref(), Some(""));
        assert!(text(&o, tags::STUDY_DATE).is_some_and(|d| d.is_empty()));
        assert_eq!(
            o.meta()
                .media_storage_sop_instance_uid
                .trim_end_matches('\0'),
            text(&o, tags::SOP_INSTANCE_UID).unwrap()
        );
        let raw = std::fs::read(path).unwrap();
        for leak in [&b"XiaoDong"[..], b"MRN-DEID", study.as_bytes(), b"ACC0001"] {
            assert!(
                !raw.windows(leak.len()).any(|w| w == leak),
                "{} in {path}",
                String::from_utf8_lossy(leak)
            );
        }
    }
    // One study in, one study out: the UID maps the same for both instances.
    assert_eq!(new_studies[0], new_studies[1]);
    assert_ne!(new_studies[0], study);
    // The originals are untouched: WADO-RS still gives them back as sent.
    let (st, _, out) = http(
        &wf.base,
        "GET",
        &format!("/dicomweb/studies/{study}/metadata"),
        &[("Authorization", format!("Bearer {}", doctor()))],
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert!(String::from_utf8_lossy(&out).contains("XiaoDong"));
    let _ = wf.stop().await;
}
