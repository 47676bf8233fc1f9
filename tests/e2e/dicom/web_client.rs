//! A third-party DICOMweb client against the engine: python `dicomweb-client` (PyPI, with
//! pydicom) stores instances with STOW-RS, searches with QIDO-RS and retrieves instances,
//! metadata, frames and a rendered PNG with WADO-RS (`python/dicomweb_client_check.py`).
//! `DICOMWEB_PYTHON` names a Python that has `python/requirements.txt` installed (.ci/run makes
//! one); without it the test is skipped outside CI and fails under CI.

use std::process::Command;

use super::files::{Spec, write};
use super::web::engine;
use crate::consultations::doctor;

fn python() -> Option<String> {
    let py = std::env::var("DICOMWEB_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", "import dicomweb_client, pydicom"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(py);
    }
    if crate::support::under_ci() {
        panic!(
            "DICOMWEB_PYTHON must name a Python with tests/e2e/dicom/python/requirements.txt installed under CI"
        );
    }
    eprintln!("skipping: no Python with dicomweb-client (set DICOMWEB_PYTHON)");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dicomweb_client_stores_searches_and_retrieves() {
    let Some(py) = python() else { return };
    let Some(wf) = engine().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let study = "1.2.826.0.1.3680043.9.7003.1";
    let mut files = Vec::new();
    for n in 1..=3 {
        let mut s = Spec::new(study, &format!("{study}.1"), n);
        s.patient_id = "MRN-PY".into();
        s.size = 32;
        let p = dir.path().join(format!("{n}.dcm"));
        write(&p, &s);
        files.push(p.display().to_string());
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/e2e/dicom/python/dicomweb_client_check.py"
    );
    let base = wf.base.clone();
    let token = doctor();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(py)
            .arg(script)
            .arg(base)
            .arg(token)
            .args(files)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.contains("OK"), "{text}");
    let _ = wf.stop().await;
}
