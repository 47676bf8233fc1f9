//! Studies into consultations (DCM-07): the patient's studies already in the index join the
//! consultation as priors when it is approved; a study that completes later is attached by
//! patient (the consultation's view and timeline show it); the offered expert's token reaches
//! exactly the attached studies — another patient's study, or a study of no consultation of
//! theirs, answers 403.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::files::{Spec, write};
use super::web::{engine_of, get_json as get, http, person, stow_body, uid};
use crate::consultations::{doctor, expert, offerees, request, seed_registry};

const PRIOR: &str = "1.2.826.0.1.3680043.9.7017.1";
const NEW: &str = "1.2.826.0.1.3680043.9.7017.2";
const OTHER: &str = "1.2.826.0.1.3680043.9.7017.3";

/// One instance of `study` for `mrn`, as a STOW-RS part.
fn instance(dir: &std::path::Path, study: &str, mrn: &str, date: &str, accession: &str) -> Vec<u8> {
    let mut s = Spec::new(study, &format!("{study}.1"), 1);
    s.patient_id = mrn.into();
    s.date = date.into();
    s.modality = "CT".into();
    s.accession = accession.into();
    let p = dir.join(format!("{study}.dcm"));
    write(&p, &s);
    std::fs::read(&p).unwrap()
}

async fn stow(base: &str, files: &[Vec<u8>]) {
    let (body, ct) = stow_body(files);
    let (st, _, out) = http(
        base,
        "POST",
        "/dicomweb/studies",
        &[
            ("Authorization", format!("Bearer {}", doctor())),
            ("Content-Type", ct),
        ],
        Some((&body, 65536)),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&out));
}

fn attached(v: &Value) -> Vec<(String, String, bool)> {
    v["studies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["study_uid"].as_str().unwrap().to_owned(),
                s["matched_by"].as_str().unwrap().to_owned(),
                s["prior"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_studies_join_the_consultation_and_the_expert_reaches_exactly_those() {
    let Some(wf) = engine_of("    study_complete_after: 1s\n", "").await else {
        return;
    };
    seed_registry(&wf, 2).await;
    let mine = person(&wf, "MRN-A", "王小东").await;
    let _other = person(&wf, "MRN-B", "李四").await;
    let dir = tempfile::tempdir().unwrap();
    // A prior study of the patient, here before the request.
    stow(
        &wf.base,
        &[instance(dir.path(), PRIOR, "MRN-A", "20250301", "ACC-P")],
    )
    .await;

    let (id, c) = wf.approved(request(mine as u64)).await;
    assert_eq!(
        attached(&c),
        [(PRIOR.to_owned(), "patient".to_owned(), true)],
        "{c}"
    );
    let e = offerees(&c)[0].clone();
    let other_expert = if e == "E1" { "E2" } else { "E1" };

    // The study of this consultation, and another patient's.
    stow(
        &wf.base,
        &[
            instance(dir.path(), NEW, "MRN-A", "20260110", "ACC-N"),
            instance(dir.path(), OTHER, "MRN-B", "20260110", "ACC-O"),
        ],
    )
    .await;
    let path = format!("/api/consultations/{id}");
    let started = Instant::now();
    let v = loop {
        let (st, v) = get(&wf.base, &path, &doctor()).await;
        assert_eq!(st, 200, "{v}");
        if attached(&v).len() == 2 {
            break v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the completed study was never attached: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        attached(&v),
        [
            (PRIOR.to_owned(), "patient".to_owned(), true),
            (NEW.to_owned(), "patient".to_owned(), false),
        ],
        "{v}"
    );
    let s = &v["studies"][1];
    assert_eq!(s["accession"], "ACC-N");
    assert_eq!(s["instance_count"], 1);
    assert_eq!(s["modalities"], serde_json::json!(["CT"]));
    let timeline: Vec<&str> = v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        timeline.iter().filter(|e| **e == "study_attached").count(),
        2,
        "{timeline:?}"
    );
    // The prior completing later added nothing (same counts), and the other patient's study
    // is attached nowhere.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, again) = get(&wf.base, &path, &doctor()).await;
    assert_eq!(again["version"], v["version"], "{again}");

    // The offered expert reaches exactly the two attached studies.
    let me = expert(&e);
    let (st, found) = get(&wf.base, "/dicomweb/studies", &me).await;
    assert_eq!(st, 200, "{found}");
    let mut uids: Vec<String> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|s| uid(s, "0020000D"))
        .collect();
    uids.sort();
    assert_eq!(uids, [PRIOR, NEW], "{found}");
    for study in [PRIOR, NEW] {
        let (st, _) = get(
            &wf.base,
            &format!("/dicomweb/studies/{study}/metadata"),
            &me,
        )
        .await;
        assert_eq!(st, 200, "{study}");
    }
    let (st, _) = get(
        &wf.base,
        &format!("/dicomweb/studies/{OTHER}/metadata"),
        &me,
    )
    .await;
    assert_eq!(st, 403);
    // An expert with no part in it reaches none of them.
    let (st, _) = get(
        &wf.base,
        &format!("/dicomweb/studies/{NEW}/metadata"),
        &expert(other_expert),
    )
    .await;
    assert_eq!(st, 403);
    // Each attachment is in the audit trail, as the engine's.
    let audit = wf
        .engine
        .store
        .audit_events(&huizhen_core::store::audit::AuditFilter {
            action: Some("consultation.study_attached".into()),
            resource_id: Some(id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert!(audit.iter().all(|a| a.event.actor == "dicom:studies"));
    let _ = wf.stop().await;
}
