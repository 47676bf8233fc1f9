//! A 200-instance study (0.5 MiB each, 100 MiB in all) sent by storescu to the real binary:
//! every instance is stored and indexed, and the engine's peak memory does not grow with the
//! study (instances are streamed to storage, never held). Not timed.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::files::{self, Spec, write};
use super::free_port;

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

struct Engine(Child);

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_instance_study_is_stored_with_bounded_memory() {
    if !files::dcmtk() || !std::path::Path::new("/proc/self/status").exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let http = free_port();
    std::fs::create_dir_all(d.join("pipelines")).unwrap();
    std::fs::write(
        d.join("huizhen.yaml"),
        format!(
            "version: 1\nstore: {{ url: \"sqlite://{0}/huizhen.db\" }}\nhttp: {{ bind: \"127.0.0.1:{http}\" }}\npipelines: [\"{0}/pipelines/*.yaml\"]\nsecurity:\n  jwt_secret_file: \"{0}/jwt.secret\"\n  audit: {{ key_file: \"{0}/audit.key\", checkpoint_file: \"{0}/audit.cp\" }}\n  encryption: {{ keys_file: \"{0}/keys\" }}\n",
            d.display()
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("pipelines/imaging.yaml"),
        format!(
            "version: 1\nname: imaging\nfacility: county-1\nsource:\n  dicom:\n    listen: \"127.0.0.1:{port}\"\n    storage: \"{}/dicom\"\n    accept: [{{ calling: [\"*\"] }}]\nsinks:\n  - journal: {{}}\n",
            d.display()
        ),
    )
    .unwrap();
    let engine = Engine(
        Command::new(env!("CARGO_BIN_EXE_huizhen"))
            .args(["-c", d.join("huizhen.yaml").to_str().unwrap(), "run"])
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = engine.0.id();
    super::wait_for("the DICOM listener", Duration::from_secs(30), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
    })
    .await;

    // One 512×512×16-bit template; the others are copies with their UIDs patched in place
    // (same length), which is much faster than encoding 200 objects.
    let study = "1.2.826.0.1.3680043.10.9";
    let series = format!("{study}.1");
    let mut t = Spec::new(study, &series, 1000);
    t.size = 512;
    let src = d.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let template = d.join("template.dcm");
    write(&template, &t);
    let bytes = std::fs::read(&template).unwrap();
    let sop = format!("{series}.1000");
    let first = src.join("i1000.dcm");
    std::fs::write(&first, &bytes).unwrap();
    let port_s = port.to_string();
    files::run(
        "storescu",
        &[
            "-aec",
            "HUIZHEN",
            "127.0.0.1",
            &port_s,
            first.to_str().unwrap(),
        ],
    );
    let warm = peak_rss_kib(pid);
    let rest = d.join("rest");
    std::fs::create_dir_all(&rest).unwrap();
    for n in 1001..1200u32 {
        let new = format!("{series}.{n}");
        let mut b = bytes.clone();
        let (from, to) = (sop.as_bytes(), new.as_bytes());
        let mut i = 0;
        while let Some(p) = b[i..].windows(from.len()).position(|w| w == from) {
            b[i + p..i + p + to.len()].copy_from_slice(to);
            i += p + to.len();
        }
        std::fs::write(rest.join(format!("i{n}.dcm")), b).unwrap();
    }
    files::run(
        "storescu",
        &[
            "-aec",
            "HUIZHEN",
            "+sd",
            "127.0.0.1",
            &port_s,
            rest.to_str().unwrap(),
        ],
    );
    let peak = peak_rss_kib(pid);
    let store = huizhen_core::store::Store::open(&huizhen_core::store::StoreOptions::new(format!(
        "sqlite://{}/huizhen.db",
        d.display()
    )))
    .await
    .unwrap()
    .with_keyring(
        huizhen_core::crypto::Keyring::from_config(&huizhen_core::crypto::EncryptionConfig {
            keys_file: d.join("keys"),
            ..Default::default()
        })
        .unwrap(),
    );
    let st = store.dicom_study(study).await.unwrap().unwrap();
    assert_eq!(st.instance_count, 200);
    let total_mib = st.bytes / (1 << 20);
    assert!(total_mib >= 99, "{} bytes", st.bytes);
    let grew_mib = peak.saturating_sub(warm) / 1024;
    eprintln!(
        "peak RSS {} MiB after the first instance, {} MiB after 200 ({total_mib} MiB received)",
        warm / 1024,
        peak / 1024
    );
    assert!(
        grew_mib < 40,
        "peak memory grew by {grew_mib} MiB while receiving {total_mib} MiB: instances are held in memory"
    );
    drop(engine);
}
