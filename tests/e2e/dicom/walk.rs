//! The "done when" walk (DCM-05, DCM-07): a modality (storescu) sends a study to the
//! running engine's SCP; it shows up via QIDO-RS; a consultation for the patient is approved
//! and the study is attached to it; the patient's prior study is pulled from a simulated
//! hospital PACS (dcmqrscp: C-FIND, then C-MOVE to the engine's SCP) by the durable prefetch
//! job and attached as a prior; the offered expert reaches both over DICOMweb, and an expert
//! workstation (getscu) retrieves both over DIMSE.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::files::{Spec, write};
use super::free_port;
use super::pacs::{Pacs, prior};
use super::retrieve::{received, s, tool};
use super::web::{engine_at, get_json, person};
use crate::consultations::{REQ, Wf, doctor, expert, offerees, request, seed_registry};

/// The journaled prefetch job(s) of consultation `id`.
async fn prefetch_jobs(wf: &Wf, id: &str) -> Vec<huizhen_core::message::Message> {
    wf.engine
        .store
        .list(&huizhen_core::store::ListFilter {
            pipeline: Some("imaging".into()),
            q: Some(format!("dicom-prefetch:{id}")),
            limit: Some(10),
            ..Default::default()
        })
        .await
        .unwrap()
        .messages
}

const NEW: &str = "1.2.826.0.1.3680043.9.7018.1";
const PRIOR: &str = "1.2.826.0.1.3680043.9.7018.9";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modality_study_and_a_pacs_prior_reach_the_expert_of_the_consultation() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The hospital PACS holds the patient's prior study and knows the engine as HUIZHEN.
    let scp_port = free_port();
    let prior_files = prior(d, PRIOR, "MRN-W", 2);
    let pacs = Pacs::start(&prior_files, &[("HUIZHEN", scp_port)]).await;
    let source = format!(
        "    study_complete_after: 1s\n    remote_aes:\n      - {{ title: PACS, host: 127.0.0.1, port: {}, facility: {REQ}, prefetch: true }}\n",
        pacs.port
    );
    let Some(wf) = engine_at(scp_port, &source, "  - dicom_prefetch: { timeout: 20s }\n").await
    else {
        return;
    };
    seed_registry(&wf, 2).await;
    let patient = person(&wf, "MRN-W", "赵四").await;

    // A modality sends today's study.
    let mut files = Vec::new();
    for n in 1..=3 {
        let mut spec = Spec::new(NEW, &format!("{NEW}.1"), n);
        spec.patient_id = "MRN-W".into();
        spec.accession = "ACC-W".into();
        spec.date = "20260110".into();
        let p = d.join(format!("new-{n}.dcm"));
        write(&p, &spec);
        files.push(p);
    }
    let mut args = s(&["-aec", "HUIZHEN", "-aet", "CT01", "127.0.0.1"]);
    args.push(scp_port.to_string());
    args.extend(files.iter().map(|f| f.display().to_string()));
    let (ok, out) = tool("storescu", args).await;
    assert!(ok && !out.contains("E:"), "{out}");

    // It shows up via QIDO-RS.
    let (st, v) = get_json(&wf.base, "/dicomweb/studies?PatientID=MRN-W", &doctor()).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");

    // A consultation for the patient: the study is attached on approval, the prior is pulled.
    let (id, c) = wf.approved(request(patient as u64)).await;
    let e = offerees(&c)[0].clone();
    let path = format!("/api/consultations/{id}");
    let started = Instant::now();
    let v = loop {
        let (_, v) = get_json(&wf.base, &path, &doctor()).await;
        if v["studies"].as_array().is_some_and(|a| a.len() == 2) {
            break v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the prior was never attached: {v}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let by_uid = |uid: &str| -> Value {
        v["studies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["study_uid"] == uid)
            .cloned()
            .unwrap_or_else(|| panic!("{uid} not attached: {v}"))
    };
    assert_eq!(by_uid(NEW)["instance_count"], 3);
    assert_eq!(by_uid(PRIOR)["matched_by"], "prefetch");
    assert_eq!(by_uid(PRIOR)["prior"], true);
    assert_eq!(by_uid(PRIOR)["instance_count"], 2);
    // The prefetch job is a journaled message of the imaging pipeline, done once.
    let started = Instant::now();
    loop {
        let jobs = prefetch_jobs(&wf, &id).await;
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        if jobs[0].state == huizhen_core::message::State::Done {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{jobs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The offered expert reaches both over DICOMweb.
    let me = expert(&e);
    for uid in [NEW, PRIOR] {
        let (st, _) = get_json(&wf.base, &format!("/dicomweb/studies/{uid}/metadata"), &me).await;
        assert_eq!(st, 200, "{uid}");
    }
    // An expert workstation retrieves both with getscu.
    let out = d.join("ws");
    std::fs::create_dir_all(&out).unwrap();
    for uid in [NEW, PRIOR] {
        let mut args = s(&["-aec", "HUIZHEN", "-aet", "WS01", "-od"]);
        args.push(out.display().to_string());
        args.extend(s(&["-S", "-k", "QueryRetrieveLevel=STUDY", "-k"]));
        args.push(format!("StudyInstanceUID={uid}"));
        args.push("127.0.0.1".into());
        args.push(scp_port.to_string());
        let (ok, log) = tool("getscu", args).await;
        assert!(ok && !log.contains("E:"), "{log}");
    }
    assert_eq!(received(&out).len(), 5);
    drop(pacs);
    let _ = wf.stop().await;
}

/// A PACS that does not answer: the prefetch job fails with the reason and is retried (the
/// journal's backoff), visible in the message list; the consultation goes on without priors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_pacs_leaves_a_failed_prefetch_job_with_its_reason() {
    let closed = free_port();
    let source = format!(
        "    remote_aes:\n      - {{ title: PACS, host: 127.0.0.1, port: {closed}, facility: {REQ}, prefetch: true }}\n"
    );
    let Some(wf) = engine_at(
        free_port(),
        &source,
        "  - dicom_prefetch: { timeout: 2s }\n",
    )
    .await
    else {
        return;
    };
    seed_registry(&wf, 2).await;
    let patient = person(&wf, "MRN-X", "钱五").await;
    let (id, c) = wf.approved(request(patient as u64)).await;
    assert_eq!(c["state"], "offered", "{c}");
    let started = Instant::now();
    let job = loop {
        let jobs = prefetch_jobs(&wf, &id).await;
        if let Some(j) = jobs
            .into_iter()
            .find(|j| j.state == huizhen_core::message::State::Failed)
        {
            break j;
        }
        assert!(started.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let why = job.last_error.clone().unwrap_or_default();
    assert!(why.contains("C-FIND at PACS"), "{why}");
    assert!(job.next_attempt_at.is_some(), "{job:?}");
    let _ = wf.stop().await;
}
