//! The SCU side against a simulated hospital PACS (dcmtk's dcmqrscp, loaded with dcmqridx):
//! C-MOVE with the engine's own SCP as destination (what arrives is stored and indexed like
//! anything a modality sends), C-GET into a folder, and `huizhen dicom move|get` with a
//! registry of remote AEs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use huizhen_dicom::find::Level;
use huizhen_dicom::qr::Selection;
use huizhen_dicom::scu::Peer;

use super::files::{self, Spec, dataset_bytes, write};
use super::{Scp, free_port};

/// A dcmqrscp with AE title PACS, ended when dropped.
pub struct Pacs {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Pacs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Pacs {
    /// Starts dcmqrscp (forking per association: 3.6.7 in --single-process mode exits after
    /// the first one) holding `files`; it knows `destinations` (AE title, port on loopback)
    /// as C-MOVE destinations.
    pub async fn start(files: &[PathBuf], destinations: &[(&str, u16)]) -> Pacs {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::create_dir_all(&db).unwrap();
        let port = free_port();
        let hosts: String = destinations
            .iter()
            .enumerate()
            .map(|(i, (ae, p))| format!("dest{i} = ({ae}, 127.0.0.1, {p})\n"))
            .collect();
        let cfg = dir.path().join("dcmqrscp.cfg");
        std::fs::write(
            &cfg,
            format!(
                "NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 16\n\nHostTable BEGIN\n{hosts}HostTable END\n\nVendorTable BEGIN\nVendorTable END\n\nAETable BEGIN\nPACS {} RW (200, 1024mb) ANY\nAETable END\n",
                db.display()
            ),
        )
        .unwrap();
        let mut args = vec![db.display().to_string()];
        args.extend(files.iter().map(|f| f.display().to_string()));
        let out = Command::new("dcmqridx").args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let child = Command::new("dcmqrscp")
            .args(["-c", cfg.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        super::wait_for("dcmqrscp", Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
        })
        .await;
        Pacs {
            child,
            port,
            _dir: dir,
        }
    }

    pub fn peer(&self) -> Peer {
        Peer {
            addr: format!("127.0.0.1:{}", self.port),
            called: "PACS".into(),
            calling: "HUIZHEN".into(),
            tls: None,
            timeout: Duration::from_secs(20),
            max_pdu: 65536,
        }
    }
}

/// A prior study of patient `patient`: `n` instances in one series.
pub fn prior(dir: &Path, study: &str, patient: &str, n: u32) -> Vec<PathBuf> {
    (1..=n)
        .map(|i| {
            let mut spec = Spec::new(study, &format!("{study}.1"), i);
            spec.patient_id = patient.into();
            spec.accession = format!("OLD-{patient}");
            spec.date = "20250601".into();
            let p = dir.join(format!("{patient}-prior-{i}.dcm"));
            write(&p, &spec);
            p
        })
        .collect()
}

fn study_sel(study: &str) -> Selection {
    Selection {
        level: Level::Study,
        patient_id: None,
        studies: vec![study.into()],
        series: vec![],
        instances: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prior_is_moved_from_the_hospital_pacs_into_the_engine_and_got_into_a_folder() {
    if !files::dcmtk() {
        return;
    }
    let scp = Scp::start("    accept:\n      - calling: [\"*\"]\n").await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let study = "1.2.826.0.1.3680043.10.90";
    let files = prior(d, study, "P090", 2);
    let pacs = Pacs::start(&files, &[("HUIZHEN", scp.port)]).await;

    // C-FIND first (what the PACS has of the patient), then C-MOVE to the engine.
    let keys = vec![
        huizhen_dicom::scu::parse_key("PatientID=P090").unwrap(),
        huizhen_dicom::scu::parse_key("StudyInstanceUID").unwrap(),
    ];
    let found = huizhen_dicom::scu::find(&pacs.peer(), false, "STUDY", &keys)
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["StudyInstanceUID"], study);

    let o = huizhen_dicom::qr::scu::move_to(&pacs.peer(), false, &study_sel(study), "HUIZHEN")
        .await
        .unwrap();
    assert!(o.ok(), "{o:?}");
    assert_eq!(o.completed, 2);
    let store = scp.store().await;
    let st = store.dicom_study(study).await.unwrap().expect("indexed");
    assert_eq!(st.instance_count, 2);
    assert_eq!(st.patient_id.as_deref(), Some("P090"));
    let inst = store.dicom_instances(study, None).await.unwrap();
    for (i, f) in inst.iter().zip(&files) {
        assert_eq!(dataset_bytes(Path::new(&i.path)), dataset_bytes(f));
    }

    // A destination the PACS does not know: its refusal is reported, not hidden.
    let o = huizhen_dicom::qr::scu::move_to(&pacs.peer(), false, &study_sel(study), "NOBODY")
        .await
        .unwrap();
    assert!(!o.ok(), "{o:?}");

    // C-GET: the instances come back on the association, as Part 10 files.
    let out = d.join("got");
    let o = huizhen_dicom::qr::scu::get(&pacs.peer(), false, &study_sel(study), &out, &[])
        .await
        .unwrap();
    assert!(o.ok(), "{o:?}");
    assert_eq!(o.files.len(), 2);
    let mut got: Vec<Vec<u8>> = o.files.iter().map(|p| dataset_bytes(p)).collect();
    let mut want: Vec<Vec<u8>> = files.iter().map(|p| dataset_bytes(p)).collect();
    got.sort();
    want.sort();
    assert!(got == want, "C-GET data sets differ from the PACS's");
    scp.engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_moves_and_gets_by_registry() {
    if !files::dcmtk() {
        return;
    }
    let scp = Scp::start("    accept:\n      - calling: [\"*\"]\n").await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let study = "1.2.826.0.1.3680043.10.91";
    let files = prior(d, study, "P091", 3);
    let pacs = Pacs::start(&files, &[("HUIZHEN", scp.port)]).await;
    let registry = d.join("aes.yaml");
    std::fs::write(
        &registry,
        format!(
            "remote_aes:\n  - title: PACS\n    host: 127.0.0.1\n    port: {}\n    facility: county-1\n",
            pacs.port
        ),
    )
    .unwrap();
    let huizhen = |args: Vec<String>| async move {
        tokio::task::spawn_blocking(move || {
            let out = Command::new(env!("CARGO_BIN_EXE_huizhen"))
                .args(&args)
                .output()
                .unwrap();
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
    };
    let base = |cmd: &str| -> Vec<String> {
        [
            "dicom",
            cmd,
            "--ae",
            "PACS",
            "--registry",
            registry.to_str().unwrap(),
            "--calling",
            "HUIZHEN",
            "--study",
            study,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    };
    let mut args = base("move");
    args.extend(["--dest".into(), "HUIZHEN".into()]);
    let (ok, out) = huizhen(args).await;
    assert!(ok, "{out}");
    assert!(out.contains("3 completed"), "{out}");
    let st = scp.store().await.dicom_study(study).await.unwrap().unwrap();
    assert_eq!(st.instance_count, 3);

    let mut args = base("get");
    args.extend(["--out".into(), d.join("got").display().to_string()]);
    let (ok, out) = huizhen(args).await;
    assert!(ok, "{out}");
    assert_eq!(out.matches("received ").count(), 3, "{out}");

    // A registry mistake is reported with file:line:column.
    std::fs::write(
        &registry,
        "remote_aes:\n  - title: PACS\n    host: 127.0.0.1\n    port: lots\n    facility: x\n",
    )
    .unwrap();
    let (ok, out) = huizhen(
        base("get")
            .into_iter()
            .chain(["--out".into(), "x".into()])
            .collect(),
    )
    .await;
    assert!(!ok);
    assert!(out.contains("aes.yaml:4:"), "{out}");
    scp.engine.shutdown(Duration::from_secs(5)).await;
}
