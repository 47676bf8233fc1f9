//! QIDO-RS over the study index (matching, ranges, paging, includefield, warnings) and who
//! reaches which study: another facility's staff nothing, an expert only the studies of their
//! consultation's patient (403 for any other, and for a study that does not exist).

use huizhen_core::security::Role;
use serde_json::Value;

use super::files::{Spec, write};
use super::web::{engine, header, http, person, stow_body, uid};
use crate::consultations::{doctor, expert, offerees, request, seed_registry, token};

/// QIDO-RS over the index, and who reaches which study.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qido_matches_and_an_expert_reaches_only_their_consultations_studies() {
    let Some(wf) = engine().await else { return };
    seed_registry(&wf, 2).await;
    let mine = person(&wf, "MRN-A", "王小东").await;
    let _other = person(&wf, "MRN-B", "李四").await;
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (k, (mrn, date, modality)) in [
        ("MRN-A", "20260110", "CT"),
        ("MRN-A", "20250301", "MR"),
        ("MRN-B", "20260111", "CT"),
    ]
    .iter()
    .enumerate()
    {
        let study = format!("1.2.826.0.1.3680043.9.7002.{k}");
        let mut s = Spec::new(&study, &format!("{study}.1"), 1);
        s.patient_id = (*mrn).into();
        s.date = (*date).into();
        s.modality = (*modality).into();
        s.accession = format!("ACC-{k}");
        let p = dir.path().join(format!("{k}.dcm"));
        write(&p, &s);
        files.push(std::fs::read(&p).unwrap());
    }
    let d = doctor();
    let (body, ct) = stow_body(&files);
    let (st, _, out) = http(
        &wf.base,
        "POST",
        "/dicomweb/studies",
        &[
            ("Authorization", format!("Bearer {d}")),
            ("Content-Type", ct),
        ],
        Some((&body, 65536)),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&out));
    let q = |path: String, bearer: String| {
        let base = wf.base.clone();
        async move {
            let (st, hs, out) = http(
                &base,
                "GET",
                &path,
                &[("Authorization", format!("Bearer {bearer}"))],
                None,
            )
            .await;
            (
                st,
                hs,
                serde_json::from_slice::<Value>(&out).unwrap_or(Value::Null),
            )
        }
    };
    let (st, _, v) = q("/dicomweb/studies?PatientID=MRN-A".into(), d.clone()).await;
    assert_eq!(st, 200);
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    let (_, _, v) = q(
        "/dicomweb/studies?PatientID=MRN-A&StudyDate=20260101-".into(),
        d.clone(),
    )
    .await;
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(uid(&v[0], "00080050"), "ACC-0");
    let (_, _, v) = q("/dicomweb/studies?ModalitiesInStudy=MR".into(), d.clone()).await;
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    let (_, _, v) = q(
        "/dicomweb/studies?00100020=MRN-*&includefield=StudyDescription,00081030".into(),
        d.clone(),
    )
    .await;
    assert_eq!(v.as_array().unwrap().len(), 3, "{v}");
    assert!(v[0].get("00081030").is_some(), "{v}");
    let (_, hs, v) = q("/dicomweb/studies?limit=2&offset=0".into(), d.clone()).await;
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert!(header(&hs, "warning").contains("more results"));
    let (_, _, v) = q("/dicomweb/studies?limit=2&offset=2".into(), d.clone()).await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    let (_, _, v) = q("/dicomweb/instances?PatientID=MRN-B".into(), d.clone()).await;
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(uid(&v[0], "00080018"), "1.2.826.0.1.3680043.9.7002.2.1.1");
    let (_, hs, _) = q(
        "/dicomweb/studies?fuzzymatching=true&PatientName=wang".into(),
        d.clone(),
    )
    .await;
    assert!(header(&hs, "warning").contains("fuzzymatching"));
    let (st, _, _) = q("/dicomweb/studies?NoSuchKeyword=1".into(), d.clone()).await;
    assert_eq!(st, 400);
    // Another facility's doctor sees none of them; its WADO is 403.
    let stranger = token(Role::LocalDoctor, "D9", "F-OTHER");
    let (_, _, v) = q("/dicomweb/studies".into(), stranger.clone()).await;
    assert_eq!(v.as_array().unwrap().len(), 0, "{v}");
    let (st, _, _) = q(
        "/dicomweb/studies/1.2.826.0.1.3680043.9.7002.0/metadata".into(),
        stranger,
    )
    .await;
    assert_eq!(st, 403);

    // A consultation for MRN-A's person: the offered expert reaches MRN-A's two studies only.
    let (_, c) = wf.approved(request(mine as u64)).await;
    let e = offerees(&c)[0].clone();
    let other = if e == "E1" { "E2" } else { "E1" };
    let me = expert(&e);
    let (st, _, v) = q("/dicomweb/studies".into(), me.clone()).await;
    assert_eq!(st, 200);
    let mut uids: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| uid(s, "0020000D"))
        .collect();
    uids.sort();
    assert_eq!(
        uids,
        [
            "1.2.826.0.1.3680043.9.7002.0",
            "1.2.826.0.1.3680043.9.7002.1"
        ],
        "{v}"
    );
    let (st, _, _) = q(
        "/dicomweb/studies/1.2.826.0.1.3680043.9.7002.0/series".into(),
        me.clone(),
    )
    .await;
    assert_eq!(st, 200);
    let (st, _, _) = q(
        "/dicomweb/studies/1.2.826.0.1.3680043.9.7002.0/metadata".into(),
        me.clone(),
    )
    .await;
    assert_eq!(st, 200);
    // The other patient's study, and a study that does not exist: 403 alike.
    for path in [
        "/dicomweb/studies/1.2.826.0.1.3680043.9.7002.2",
        "/dicomweb/studies/1.2.826.0.1.3680043.9.7002.2/metadata",
        "/dicomweb/studies/1.2.826.0.1.3680043.9.7002.2/series/1.2.826.0.1.3680043.9.7002.2.1/instances/1.2.826.0.1.3680043.9.7002.2.1.1/frames/1",
        "/dicomweb/studies/1.2.826.0.1.3680043.9.7002.99/metadata",
    ] {
        let (st, _, _) = q(path.into(), me.clone()).await;
        assert_eq!(st, 403, "{path}");
    }
    let (_, _, v) = q("/dicomweb/instances?PatientID=MRN-B".into(), me.clone()).await;
    assert_eq!(v.as_array().unwrap().len(), 0, "{v}");
    // An expert with no part in the consultation: nothing, 403.
    let (_, _, v) = q("/dicomweb/studies".into(), expert(other)).await;
    assert_eq!(v.as_array().unwrap().len(), 0, "{v}");
    let (st, _, _) = q(
        "/dicomweb/studies/1.2.826.0.1.3680043.9.7002.0/metadata".into(),
        expert(other),
    )
    .await;
    assert_eq!(st, 403);
    // Experts do not store.
    let (st, _, _) = http(
        &wf.base,
        "POST",
        "/dicomweb/studies",
        &[
            ("Authorization", format!("Bearer {me}")),
            ("Content-Type", "multipart/related; boundary=x".into()),
        ],
        Some((b"--x--\r\n", 16)),
    )
    .await;
    assert_eq!(st, 403);
    let _ = wf.stop().await;
}
