//! `huizhen dicom echo|store|find` against dcmtk's storescp and against the engine's SCP.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::files::{self, Spec, convert, dataset_bytes, write};
use super::{ACCEPT_ANY, Scp, free_port};

fn huizhen(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_huizhen"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_echoes_and_stores_to_dcmtk_storescp_as_is() {
    if !files::dcmtk() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("received");
    std::fs::create_dir_all(&out_dir).unwrap();
    let port = free_port();
    let _scp = Peer(
        Command::new("storescp")
            .args([
                "-aet",
                "PACS",
                "+xa",
                "-od",
                out_dir.to_str().unwrap(),
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let to = format!("127.0.0.1:{port}");
    super::wait_for("storescp", Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
    })
    .await;
    let (ok, out, err) = huizhen(&["dicom", "echo", "--to", &to, "--called", "PACS"]);
    assert!(ok && out.contains("status 0x0000"), "{out}{err}");

    let study = "1.2.826.0.1.3680043.10.5";
    let series = format!("{study}.1");
    let a = dir.path().join("a.dcm");
    write(&a, &Spec::new(study, &series, 1));
    let src = dir.path().join("b-src.dcm");
    write(&src, &Spec::new(study, &series, 2));
    let b = convert("dcmcjpls", &[], &src, &dir.path().join("b.dcm"));
    let (ok, out, err) = huizhen(&[
        "dicom",
        "store",
        "--to",
        &to,
        "--called",
        "PACS",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("2 of 2 stored"), "{out}");
    // storescp names files by modality and SOP instance UID; the data sets arrive unchanged.
    for (sent, n) in [(&a, 1), (&b, 2)] {
        let got = out_dir.join(format!("CT.{series}.{n}"));
        assert_eq!(
            dataset_bytes(&got),
            dataset_bytes(sent),
            "{}",
            got.display()
        );
    }
    // A file that is not DICOM is reported, not sent; the exit code says so.
    let junk = dir.path().join("junk.txt");
    std::fs::write(&junk, "not dicom").unwrap();
    let (ok, out, _) = huizhen(&[
        "dicom",
        "store",
        "--to",
        &to,
        "--called",
        "PACS",
        junk.to_str().unwrap(),
    ]);
    assert!(
        !ok && out.contains("FAILED") && out.contains("DICM"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_stores_into_and_queries_the_engine() {
    let scp = Scp::start(ACCEPT_ANY).await;
    let dir = tempfile::tempdir().unwrap();
    let study = "1.2.826.0.1.3680043.10.6";
    let mut s = Spec::new(study, &format!("{study}.1"), 1);
    s.charset = Some("ISO_IR 192".into());
    s.name = "Wang^XiaoDong=王^小东=".as_bytes().to_vec();
    s.patient_id = "P-77".into();
    let f = dir.path().join("a.dcm");
    write(&f, &s);
    let to = format!("127.0.0.1:{}", scp.port);
    let (ok, out, err) = huizhen(&[
        "dicom",
        "store",
        "--to",
        &to,
        "--calling",
        "CT01",
        f.to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = huizhen(&[
        "dicom",
        "find",
        "--to",
        &to,
        "-k",
        "PatientName=*小东*",
        "-k",
        "PatientID",
        "-k",
        "StudyInstanceUID",
        "-k",
        "NumberOfStudyRelatedInstances",
    ]);
    assert!(ok, "{err}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(rows[0]["PatientName"], "Wang^XiaoDong=王^小东=");
    assert_eq!(rows[0]["PatientID"], "P-77");
    assert_eq!(rows[0]["NumberOfStudyRelatedInstances"], "1");
    let (ok, out, _) = huizhen(&[
        "dicom",
        "find",
        "--to",
        &to,
        "--patient-root",
        "--level",
        "patient",
        "-k",
        "PatientID=P-77",
        "-k",
        "NumberOfPatientRelatedStudies",
    ]);
    assert!(
        ok && out.contains("\"NumberOfPatientRelatedStudies\":\"1\""),
        "{out}"
    );
    let (ok, out, _) = huizhen(&["dicom", "find", "--to", &to, "-k", "PatientName=李*"]);
    assert!(ok && out.trim().is_empty(), "no match: {out}");
    let (ok, _, err) = huizhen(&["dicom", "find", "--to", &to, "-k", "NoSuchKeyword=1"]);
    assert!(!ok && err.contains("NoSuchKeyword"), "{err}");
    scp.engine.shutdown(Duration::from_secs(5)).await;
}
