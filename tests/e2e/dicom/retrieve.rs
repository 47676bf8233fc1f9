//! The SCP side of Query/Retrieve for expert workstations: dcmtk's getscu (C-GET, both models,
//! STUDY/SERIES/IMAGE/PATIENT levels) and movescu (C-MOVE to a registered AE — movescu's own
//! receiving port — and refused for an unregistered one) against the engine.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::files::{self, Spec, dataset_bytes, write};
use super::{Scp, free_port};

/// Runs a dcmtk tool off the runtime's threads; (success, stdout + stderr).
pub async fn tool(name: &str, args: Vec<String>) -> (bool, String) {
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(&name).args(&args).output().unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    })
    .await
    .unwrap()
}

pub fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

/// Two series of a study (2 + 1 instances) and another patient's study, stored by storescu.
pub struct Stored {
    pub study: String,
    pub series: [String; 2],
    pub files: Vec<PathBuf>,
}

pub async fn store_study(scp: &Scp, dir: &Path, study: &str, patient: &str) -> Stored {
    let series = [format!("{study}.1"), format!("{study}.2")];
    let mut files = Vec::new();
    for (i, (se, n)) in [(0, 1), (0, 2), (1, 3)].into_iter().enumerate() {
        let mut spec = Spec::new(study, &series[se], n);
        spec.patient_id = patient.into();
        spec.accession = format!("ACC-{patient}");
        let p = dir.join(format!("{patient}-{i}.dcm"));
        write(&p, &spec);
        files.push(p);
    }
    let mut args = s(&["-aec", "HUIZHEN", "-aet", "CT01", "127.0.0.1"]);
    args.push(scp.port_arg());
    args.extend(files.iter().map(|f| f.display().to_string()));
    let (ok, out) = tool("storescu", args).await;
    assert!(ok && !out.contains("E:"), "{out}");
    Stored {
        study: study.into(),
        series,
        files,
    }
}

/// The received files of `dir` (getscu/movescu name them by modality and SOP Instance UID).
pub fn received(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.is_file());
    v.sort();
    v
}

fn same_datasets(got: &[PathBuf], want: &[&PathBuf]) {
    let mut a: Vec<Vec<u8>> = got.iter().map(|p| dataset_bytes(p)).collect();
    let mut b: Vec<Vec<u8>> = want.iter().map(|p| dataset_bytes(p)).collect();
    a.sort();
    b.sort();
    assert_eq!(a.len(), b.len(), "{got:?}");
    assert!(
        a == b,
        "the retrieved data sets are not the stored ones byte for byte"
    );
}

const ACCEPT: &str = "    accept:\n      - calling: [\"*\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workstation_retrieves_with_getscu_at_every_level() {
    if !files::dcmtk() {
        return;
    }
    let scp = Scp::start(ACCEPT).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = store_study(&scp, d, "1.2.826.0.1.3680043.10.71", "P071").await;
    let _b = store_study(&scp, d, "1.2.826.0.1.3680043.10.72", "P072").await;
    let port = scp.port_arg();
    let get = |out: &Path, extra: &[&str]| {
        let mut args = s(&["-aec", "HUIZHEN", "-aet", "WS01", "-od"]);
        args.push(out.display().to_string());
        args.extend(s(extra));
        args.push("127.0.0.1".into());
        args.push(port.clone());
        tool("getscu", args)
    };

    // STUDY level, Study Root: the whole study, byte for byte as stored.
    let out = d.join("study");
    std::fs::create_dir_all(&out).unwrap();
    let (ok, log) = get(
        &out,
        &[
            "-S",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            &format!("StudyInstanceUID={}", a.study),
        ],
    )
    .await;
    assert!(ok, "{log}");
    same_datasets(&received(&out), &a.files.iter().collect::<Vec<_>>());

    // SERIES level: the first series only.
    let out = d.join("series");
    std::fs::create_dir_all(&out).unwrap();
    let (ok, log) = get(
        &out,
        &[
            "-S",
            "-k",
            "QueryRetrieveLevel=SERIES",
            "-k",
            &format!("StudyInstanceUID={}", a.study),
            "-k",
            &format!("SeriesInstanceUID={}", a.series[0]),
        ],
    )
    .await;
    assert!(ok, "{log}");
    same_datasets(&received(&out), &[&a.files[0], &a.files[1]]);

    // IMAGE level: one instance.
    let out = d.join("image");
    std::fs::create_dir_all(&out).unwrap();
    let (ok, log) = get(
        &out,
        &[
            "-S",
            "-k",
            "QueryRetrieveLevel=IMAGE",
            "-k",
            &format!("StudyInstanceUID={}", a.study),
            "-k",
            &format!("SeriesInstanceUID={}", a.series[1]),
            "-k",
            &format!("SOPInstanceUID={}.3", a.series[1]),
        ],
    )
    .await;
    assert!(ok, "{log}");
    same_datasets(&received(&out), &[&a.files[2]]);

    // PATIENT level, Patient Root: every study of the patient, not the other patient's.
    let out = d.join("patient");
    std::fs::create_dir_all(&out).unwrap();
    let (ok, log) = get(
        &out,
        &[
            "-P",
            "-k",
            "QueryRetrieveLevel=PATIENT",
            "-k",
            "PatientID=P071",
        ],
    )
    .await;
    assert!(ok, "{log}");
    same_datasets(&received(&out), &a.files.iter().collect::<Vec<_>>());

    // A bad identifier (SERIES without a series UID) is refused, naming the missing key.
    let out = d.join("bad");
    std::fs::create_dir_all(&out).unwrap();
    let (_, log) = get(
        &out,
        &[
            "-S",
            "-v",
            "-k",
            "QueryRetrieveLevel=SERIES",
            "-k",
            &format!("StudyInstanceUID={}", a.study),
        ],
    )
    .await;
    assert!(received(&out).is_empty());
    assert!(log.contains("DataSetDoesNotMatchSOPClass"), "{log}");
    scp.engine.shutdown(Duration::from_secs(5)).await;
}

/// A caller whose `accept` entry may query only its facility gets nothing of another's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_get_sees_only_the_callers_facilities() {
    if !files::dcmtk() {
        return;
    }
    let scp = Scp::start(
        "    accept:\n      - calling: [CT01]\n      - calling: [WS09]\n        facility: elsewhere\n",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = store_study(&scp, d, "1.2.826.0.1.3680043.10.73", "P073").await;
    let out = d.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mut args = s(&["-aec", "HUIZHEN", "-aet", "WS09", "-od"]);
    args.push(out.display().to_string());
    args.extend(s(&["-S", "-k", "QueryRetrieveLevel=STUDY", "-k"]));
    args.push(format!("StudyInstanceUID={}", a.study));
    args.push("127.0.0.1".into());
    args.push(scp.port_arg());
    let (ok, log) = tool("getscu", args).await;
    assert!(ok, "{log}");
    assert!(received(&out).is_empty(), "{log}");
    scp.engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_move_goes_to_registered_destinations_only() {
    if !files::dcmtk() {
        return;
    }
    let ws_port = free_port();
    let scp = Scp::start(&format!(
        "    accept:\n      - calling: [CT01]\n      - calling: [WS01]\n        move_to: [WS01]\n    remote_aes:\n      - {{title: WS01, host: 127.0.0.1, port: {ws_port}, facility: province}}\n      - {{title: ARCHIVE, host: 127.0.0.1, port: 1, facility: province}}\n"
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = store_study(&scp, d, "1.2.826.0.1.3680043.10.74", "P074").await;
    let out = d.join("ws");
    std::fs::create_dir_all(&out).unwrap();
    let mv = |dest: &str| {
        let mut args = s(&["-aec", "HUIZHEN", "-aet", "WS01", "-aem", dest, "--port"]);
        args.push(ws_port.to_string());
        args.push("-od".into());
        args.push(out.display().to_string());
        args.extend(s(&["-S", "-v", "-k", "QueryRetrieveLevel=STUDY", "-k"]));
        args.push(format!("StudyInstanceUID={}", a.study));
        args.push("127.0.0.1".into());
        args.push(scp.port_arg());
        tool("movescu", args)
    };
    // To itself (WS01, registered and allowed): movescu receives on its own port.
    let (ok, log) = mv("WS01").await;
    assert!(ok, "{log}");
    same_datasets(&received(&out), &a.files.iter().collect::<Vec<_>>());
    // ARCHIVE is registered but not allowed for WS01; NOBODY is not registered.
    for dest in ["ARCHIVE", "NOBODY"] {
        let (_, log) = mv(dest).await;
        assert!(
            log.contains("Refused: MoveDestinationUnknown"),
            "{dest}: {log}"
        );
    }
    assert_eq!(received(&out).len(), 3);
    scp.engine.shutdown(Duration::from_secs(5)).await;
}
