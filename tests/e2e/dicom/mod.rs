//! The `dicom` source against dcmtk (echoscu, storescu, findscu as modality, PACS and
//! workstation; storescp as a peer for the CLI), and the study index on both backends
//! (STANDARDS DCM-01, DCM-02, DCM-04; issue 17).

mod access;
mod attach;
mod cancel;
mod cli;
mod deadline;
mod deid;
mod files;
mod forward;
mod index;
mod memory;
mod pacs;
mod retrieve;
mod walk;
mod web;
mod web_access;
mod web_client;

use std::path::{Path, PathBuf};
use std::time::Duration;

use huizhen_core::Engine;
use huizhen_core::store::Store;
use huizhen_core::store::dicom::StudyFilter;

use crate::support::{Backend, TestDb, fresh_db, journaled, loaded, wait_for};
use files::{Spec, convert, dataset_bytes, dcmtk, run, transfer_syntax, write, write_j2k};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running engine with a `dicom` pipeline named `imaging` on a free port.
pub struct Scp {
    pub engine: Engine,
    pub port: u16,
    /// Kept for its folder (database, keys, storage) until the test ends.
    _db: TestDb,
    pub storage: PathBuf,
}

impl Scp {
    pub async fn start(extra: &str) -> Scp {
        Scp::start_with(extra, "sinks:\n  - journal: {}\n").await
    }

    /// With `tail` (top-level keys: `sinks:`, `retry:` …) instead of a journal sink.
    pub async fn start_with(extra: &str, tail: &str) -> Scp {
        let db = fresh_db(Backend::Sqlite)
            .await
            .expect("SQLite needs no service");
        let port = free_port();
        let storage = db.dir.path().join("dicom");
        let yaml = format!(
            "version: 1\nname: imaging\nfacility: county-1\nsource:\n  dicom:\n    listen: \"127.0.0.1:{port}\"\n    storage: \"{}\"\n{extra}\n{tail}",
            storage.display()
        );
        let engine = Engine::start(loaded(&db, &[&yaml])).await.unwrap();
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Scp {
            engine,
            port,
            _db: db,
            storage,
        }
    }

    /// The engine's store (with its keyring: the patient columns are sealed).
    pub async fn store(&self) -> Store {
        self.engine.store.clone()
    }

    pub fn port_arg(&self) -> String {
        self.port.to_string()
    }
}

/// The source's settings for the tests: any calling AE of county-1, except `EVIL`.
pub const ACCEPT_ANY: &str = "    accept:\n      - calling: [\"*\"]\n";

/// A GB18030 patient name, several transfer syntaxes (as received, byte for byte), the
/// names decoded in the index and the messages, and C-FIND by name, date, modality and UID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modalities_store_in_several_transfer_syntaxes_and_findscu_finds_them() {
    if !dcmtk() {
        return;
    }
    let scp = Scp::start(ACCEPT_ANY).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = scp.port_arg();
    let out = run(
        "echoscu",
        &["-aec", "HUIZHEN", "-aet", "CT01", "127.0.0.1", &port],
    );
    assert!(!out.contains("E:"), "{out}");

    // One study, one instance per transfer syntax; the first names the patient in GB18030.
    let study = "1.2.826.0.1.3680043.10.1";
    let series = format!("{study}.1");
    let gb = encoding_rs::GB18030.encode("王^小东").0.to_vec();
    let base = |n: u32| {
        let mut s = Spec::new(study, &series, n);
        s.charset = Some("GB18030".into());
        s.name = gb.clone();
        s
    };
    let explicit = d.join("explicit.dcm");
    write(&explicit, &base(1));
    let mut files: Vec<(PathBuf, &str)> = vec![(explicit.clone(), "1.2.840.10008.1.2.1")];
    let mk = |n: u32, name: &str| {
        let p = d.join(format!("src{n}.dcm"));
        write(&p, &base(n));
        (p, d.join(name))
    };
    let (s, t) = mk(2, "implicit.dcm");
    files.push((convert("dcmconv", &["+ti"], &s, &t), "1.2.840.10008.1.2"));
    let (s, t) = mk(3, "deflated.dcm");
    files.push((
        convert("dcmconv", &["+td"], &s, &t),
        "1.2.840.10008.1.2.1.99",
    ));
    let (s, t) = mk(4, "jpeg-lossless.dcm");
    files.push((
        convert("dcmcjpeg", &["+e1"], &s, &t),
        "1.2.840.10008.1.2.4.70",
    ));
    let (s, t) = mk(5, "jpeg-ls.dcm");
    files.push((convert("dcmcjpls", &[], &s, &t), "1.2.840.10008.1.2.4.80"));
    let (s, t) = mk(6, "rle.dcm");
    files.push((convert("dcmcrle", &[], &s, &t), "1.2.840.10008.1.2.5"));
    // JPEG Baseline is 8-bit: an 8-bit source image.
    let eight = d.join("src7.dcm");
    write(
        &eight,
        &Spec {
            bits8: true,
            ..base(7)
        },
    );
    let t = d.join("jpeg-baseline.dcm");
    files.push((
        convert("dcmcjpeg", &["+eb"], &eight, &t),
        "1.2.840.10008.1.2.4.50",
    ));
    let j2k = d.join("j2k.dcm");
    write_j2k(&j2k, &base(8));
    files.push((j2k, "1.2.840.10008.1.2.4.90"));
    for (f, ts) in &files {
        assert_eq!(transfer_syntax(f), *ts, "{}", f.display());
        // Each file goes as it is: storescu proposes the file's own transfer syntax.
        let out = run(
            "storescu",
            &[
                "-aec",
                "HUIZHEN",
                "-aet",
                "CT01",
                files::storescu_option(ts),
                "127.0.0.1",
                &port,
                f.to_str().unwrap(),
            ],
        );
        assert!(!out.contains("E:"), "{}: {out}", f.display());
    }

    let store = scp.store().await;
    let st = store
        .dicom_study(study)
        .await
        .unwrap()
        .expect("the study is indexed");
    assert_eq!(st.instance_count, files.len() as i64);
    assert_eq!(st.series_count, 1);
    assert_eq!(
        st.patient.name.as_deref(),
        Some("王^小东"),
        "DCM-04: GB18030 decoded"
    );
    assert_eq!(st.charset, "GB18030");
    assert!(st.charset_flags.is_empty(), "{:?}", st.charset_flags);
    assert_eq!(st.facility, "county-1");
    let instances = store.dicom_instances(study, None).await.unwrap();
    for (f, ts) in &files {
        let sop = files::meta(f).sop_instance_uid;
        let i = instances
            .iter()
            .find(|i| i.sop_instance_uid == sop)
            .unwrap();
        assert_eq!(
            i.transfer_syntax, *ts,
            "stored in the transfer syntax received"
        );
        assert_eq!(i.calling_ae, "CT01");
        // DCM-02: no transcoding on receipt — the data set is byte for byte what was sent.
        let stored = Path::new(&i.path);
        assert!(stored.starts_with(&scp.storage), "{}", stored.display());
        if *ts == "1.2.840.10008.1.2.1.99" {
            // dcmtk inflates a deflated file when it reads it and deflates again when it sends,
            // so the compressed bytes differ; what they hold must not.
            assert_eq!(files::dump(stored), files::dump(f), "{ts}");
        } else {
            assert_eq!(dataset_bytes(stored), dataset_bytes(f), "{ts}");
        }
        assert_eq!(transfer_syntax(stored), *ts);
    }
    let messages = journaled(&store, "imaging").await;
    let events: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| serde_json::from_slice(&m.body).unwrap())
        .collect();
    let instances_msgs: Vec<_> = events.iter().filter(|e| e["event"] == "instance").collect();
    assert_eq!(instances_msgs.len(), files.len());
    assert!(
        instances_msgs
            .iter()
            .all(|e| e["instance"]["patient_name"] == "王^小东")
    );
    assert!(
        messages
            .iter()
            .all(|m| m.kind == "json" && !m.body.is_empty())
    );
    assert!(
        messages.iter().all(|m| m.body.len() < 4096),
        "the message carries metadata, not pixels"
    );

    // C-FIND by the Chinese name (UTF-8 query), by date range and modality, at series level.
    let found = run(
        "findscu",
        &[
            "-S",
            "-aec",
            "HUIZHEN",
            "-aet",
            "WS01",
            "-k",
            "SpecificCharacterSet=ISO_IR 192",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "PatientName=王*",
            "-k",
            "StudyInstanceUID",
            "-k",
            "NumberOfStudyRelatedInstances",
            "-k",
            "ModalitiesInStudy",
            "127.0.0.1",
            &port,
        ],
    );
    assert!(found.contains(study), "{found}");
    assert!(found.contains("王^小东"), "answered in UTF-8: {found}");
    assert!(
        found.contains(&format!("[{} ]", files.len()))
            || found.contains(&format!("[{}]", files.len())),
        "{found}"
    );
    let none = run(
        "findscu",
        &[
            "-S",
            "-aec",
            "HUIZHEN",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "StudyDate=20250101-20251231",
            "-k",
            "StudyInstanceUID",
            "127.0.0.1",
            &port,
        ],
    );
    assert!(!none.contains(study), "outside the date range: {none}");
    let ranged = run(
        "findscu",
        &[
            "-S",
            "-aec",
            "HUIZHEN",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "StudyDate=20260101-20260131",
            "-k",
            "ModalitiesInStudy=CT",
            "-k",
            "StudyInstanceUID",
            "127.0.0.1",
            &port,
        ],
    );
    assert!(ranged.contains(study), "{ranged}");
    let series_level = run(
        "findscu",
        &[
            "-S",
            "-aec",
            "HUIZHEN",
            "-k",
            "QueryRetrieveLevel=SERIES",
            "-k",
            &format!("StudyInstanceUID={study}"),
            "-k",
            "SeriesInstanceUID",
            "-k",
            "NumberOfSeriesRelatedInstances",
            "127.0.0.1",
            &port,
        ],
    );
    assert!(series_level.contains(&series), "{series_level}");
    // A Chinese key without Specific Character Set is refused, not guessed (DCM-04).
    let guessed = std::process::Command::new("findscu")
        .args([
            "-S",
            "-aec",
            "HUIZHEN",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "PatientName=王*",
            "-k",
            "StudyInstanceUID",
            "127.0.0.1",
            &port,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&guessed.stderr).into_owned()
        + &String::from_utf8_lossy(&guessed.stdout);
    assert!(!text.contains(study), "{text}");
    scp.engine.shutdown(Duration::from_secs(5)).await;
}

/// An object without (0008,0005) whose name is GBK: read with the calling AE's default charset
/// and flagged; a `\ISO 2022 IR 58` object with escape sequences decodes (DCM-04).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_code_extension_charsets_are_decoded_and_flagged() {
    if !dcmtk() {
        return;
    }
    let scp = Scp::start("    accept:\n      - calling: [\"*\"]\n        charset: GBK\n").await;
    let dir = tempfile::tempdir().unwrap();
    let port = scp.port_arg();
    let study_a = "1.2.826.0.1.3680043.10.2";
    let mut a = Spec::new(study_a, &format!("{study_a}.1"), 1);
    a.name = encoding_rs::GBK.encode("张^三").0.to_vec();
    let fa = dir.path().join("a.dcm");
    write(&fa, &a);
    let study_b = "1.2.826.0.1.3680043.10.3";
    let mut b = Spec::new(study_b, &format!("{study_b}.1"), 1);
    b.charset = Some("\\ISO 2022 IR 58".into());
    // PS3.5 K.1: Zhang^XiaoDong=张^小东= with GB2312 invoked after each delimiter.
    b.name = vec![
        0x5a, 0x68, 0x61, 0x6e, 0x67, 0x5e, 0x58, 0x69, 0x61, 0x6f, 0x44, 0x6f, 0x6e, 0x67, 0x3d,
        0x1b, 0x24, 0x29, 0x41, 0xd5, 0xc5, 0x5e, 0x1b, 0x24, 0x29, 0x41, 0xd0, 0xa1, 0xb6, 0xab,
        0x3d,
    ];
    let fb = dir.path().join("b.dcm");
    write(&fb, &b);
    run(
        "storescu",
        &[
            "-aec",
            "HUIZHEN",
            "127.0.0.1",
            &port,
            fa.to_str().unwrap(),
            fb.to_str().unwrap(),
        ],
    );
    let store = scp.store().await;
    let sa = store.dicom_study(study_a).await.unwrap().unwrap();
    assert_eq!(sa.patient.name.as_deref(), Some("张^三"));
    assert_eq!(sa.charset_flags, ["charset-assumed"]);
    assert_eq!(sa.charset, "GBK");
    let sb = store.dicom_study(study_b).await.unwrap().unwrap();
    assert_eq!(sb.patient.name.as_deref(), Some("Zhang^XiaoDong=张^小东="));
    assert!(sb.charset_flags.is_empty());
    let flagged = journaled(&store, "imaging")
        .await
        .into_iter()
        .find(|m| m.headers.get("dicom-study-uid").map(String::as_str) == Some(study_a))
        .unwrap();
    assert_eq!(
        flagged.headers.get("dicom-flags").map(String::as_str),
        Some("charset-assumed")
    );
    scp.engine.shutdown(Duration::from_secs(5)).await;
}

/// No new instance for `study_complete_after` → one `study_complete` message with the counts;
/// a later instance reopens the study and it completes again with the new counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_study_completes_once_and_again_after_a_late_instance() {
    let scp = Scp::start(&format!("{ACCEPT_ANY}    study_complete_after: 1s\n")).await;
    let dir = tempfile::tempdir().unwrap();
    let study = "1.2.826.0.1.3680043.10.4";
    let mut paths = Vec::new();
    for n in 1..=3 {
        let series = format!("{study}.{}", 1 + n % 2);
        let p = dir.path().join(format!("{n}.dcm"));
        let mut s = Spec::new(study, &series, n);
        s.accession = "ACC-C1".into();
        write(&p, &s);
        paths.push(p);
    }
    let peer = huizhen_dicom::scu::Peer {
        addr: format!("127.0.0.1:{}", scp.port),
        called: "HUIZHEN".into(),
        calling: "CT01".into(),
        tls: None,
        timeout: Duration::from_secs(10),
        max_pdu: 65536,
    };
    let stored = huizhen_dicom::scu::store(&peer, &paths[..2]).await.unwrap();
    assert!(stored.iter().all(|s| s.status == Some(0)), "{stored:?}");
    let store = scp.store().await;
    let complete = |n: usize| {
        let store = store.clone();
        async move {
            let events: Vec<serde_json::Value> = journaled(&store, "imaging")
                .await
                .iter()
                .map(|m| serde_json::from_slice(&m.body).unwrap())
                .filter(|e: &serde_json::Value| e["event"] == "study_complete")
                .collect();
            (events.len() >= n).then_some(events)
        }
    };
    let first = wait_for("the study-complete event", Duration::from_secs(20), || {
        complete(1)
    })
    .await;
    assert_eq!(first[0]["study"]["instance_count"], 2);
    assert_eq!(first[0]["study"]["series_count"], 2);
    assert_eq!(first[0]["study"]["accession"], "ACC-C1");
    assert_eq!(first[0]["series"].as_array().unwrap().len(), 2);
    // Quiet again: no second event for the same state.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(complete(1).await.unwrap().len(), 1, "completed once");
    let st = store.dicom_study(study).await.unwrap().unwrap();
    assert!(st.completed_at.is_some());
    // A late instance reopens it; it completes again with three.
    huizhen_dicom::scu::store(&peer, &paths[2..]).await.unwrap();
    let again = wait_for(
        "the second study-complete event",
        Duration::from_secs(20),
        || complete(2),
    )
    .await;
    assert_eq!(again[1]["study"]["instance_count"], 3);
    scp.engine.shutdown(Duration::from_secs(5)).await;
}

/// What the study index holds after the tests above, through the store API (exercised on both
/// backends by `index`).
pub fn filter_all() -> StudyFilter {
    StudyFilter {
        limit: 100,
        ..StudyFilter::default()
    }
}
