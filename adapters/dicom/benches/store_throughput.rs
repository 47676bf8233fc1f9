//! C-STORE receive throughput: a synthetic CT study (500 instances × 0.5 MiB, one association,
//! dcmtk's storescu as the modality) into the `dicom` source — each instance written to the
//! object store, indexed and journaled before it is acknowledged — against dcmtk's storescp
//! receiving the same files in the same run (writing them to disk). TCP_NODELAY on both ends:
//! stock dcmtk stalls ~40 ms per C-STORE on loopback (Nagle + delayed ACK), so the
//! environment variable `TCP_NODELAY=1` is set for storescu and storescp; the engine sets it on
//! its sockets. Prints a Markdown table.
//!
//! `cargo bench -p huizhen-dicom --bench store_throughput`
//!
//! Options (environment): `BENCH_INSTANCES` (500), `BENCH_ROWS` (512: rows = columns of a
//! 16-bit image, 0.5 MiB), `BENCH_ROUNDS` (3: each measured that many times, best and median
//! reported), `BENCH_DIR` (a new temporary directory), `BENCH_DURABILITY` (`process-crash`, or
//! `power-loss`: files and commits fsynced). Needs dcmtk (`apt-get install dcmtk`); without it
//! the bench prints a note and exits.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use huizhen_core::Engine;
use huizhen_core::config::{self, Loaded, LoadedPipeline, RootConfig};
// Links the `dicom` source's registration.
use huizhen_dicom as _;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Explicit VR Little Endian element bytes.
fn el(g: u16, e: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
    let mut v = value.to_vec();
    if v.len() % 2 == 1 {
        v.push(if vr == b"UI" { 0 } else { b' ' });
    }
    let mut b = Vec::with_capacity(12 + v.len());
    b.extend_from_slice(&g.to_le_bytes());
    b.extend_from_slice(&e.to_le_bytes());
    b.extend_from_slice(vr);
    if matches!(vr, b"OB" | b"OW") {
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&(v.len() as u32).to_le_bytes());
    } else {
        b.extend_from_slice(&(v.len() as u16).to_le_bytes());
    }
    b.extend_from_slice(&v);
    b
}

/// Writes the study: `n` CT instances of `rows`² 16-bit pixels.
fn write_study(dir: &Path, n: usize, rows: u16) -> u64 {
    const CT: &[u8] = b"1.2.840.10008.5.1.4.1.1.2";
    let study = "1.2.826.0.1.3680043.10.99";
    let series = format!("{study}.1");
    let pixels: Vec<u8> = (0..usize::from(rows) * usize::from(rows) * 2)
        .map(|i| (i % 251) as u8)
        .collect();
    let mut total = 0;
    for i in 0..n {
        let sop = format!("{series}.{}", 1000 + i);
        let mut ds = Vec::with_capacity(pixels.len() + 1024);
        for part in [
            el(0x0008, 0x0005, b"CS", b"ISO_IR 192"),
            el(0x0008, 0x0016, b"UI", CT),
            el(0x0008, 0x0018, b"UI", sop.as_bytes()),
            el(0x0008, 0x0020, b"DA", b"20260115"),
            el(0x0008, 0x0050, b"SH", b"ACC-BENCH"),
            el(0x0008, 0x0060, b"CS", b"CT"),
            el(0x0010, 0x0010, b"PN", "王^小东".as_bytes()),
            el(0x0010, 0x0020, b"LO", b"P-BENCH"),
            el(0x0020, 0x000D, b"UI", study.as_bytes()),
            el(0x0020, 0x000E, b"UI", series.as_bytes()),
            el(0x0020, 0x0013, b"IS", (i + 1).to_string().as_bytes()),
            el(0x0028, 0x0002, b"US", &1u16.to_le_bytes()),
            el(0x0028, 0x0004, b"CS", b"MONOCHROME2"),
            el(0x0028, 0x0010, b"US", &rows.to_le_bytes()),
            el(0x0028, 0x0011, b"US", &rows.to_le_bytes()),
            el(0x0028, 0x0100, b"US", &16u16.to_le_bytes()),
            el(0x0028, 0x0101, b"US", &12u16.to_le_bytes()),
            el(0x0028, 0x0102, b"US", &11u16.to_le_bytes()),
            el(0x0028, 0x0103, b"US", &0u16.to_le_bytes()),
            el(0x7FE0, 0x0010, b"OW", &pixels),
        ] {
            ds.extend_from_slice(&part);
        }
        let mut meta = Vec::new();
        for part in [
            el(0x0002, 0x0001, b"OB", &[0, 1]),
            el(0x0002, 0x0002, b"UI", CT),
            el(0x0002, 0x0003, b"UI", sop.as_bytes()),
            el(0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2.1"),
            el(0x0002, 0x0012, b"UI", b"1.2.3.4"),
        ] {
            meta.extend_from_slice(&part);
        }
        let mut file = vec![0u8; 128];
        file.extend_from_slice(b"DICM");
        file.extend(el(
            0x0002,
            0x0000,
            b"UL",
            &(meta.len() as u32).to_le_bytes(),
        ));
        file.extend(meta);
        file.extend(ds);
        total += file.len() as u64;
        std::fs::write(dir.join(format!("i{}.dcm", 1000 + i)), file).unwrap();
    }
    total
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

/// storescu sends the folder on one association; returns the wall time.
fn storescu(port: u16, called: &str, files: &Path) -> Duration {
    let t = Instant::now();
    let out = Command::new("storescu")
        .env("TCP_NODELAY", "1")
        .args([
            "-aec",
            called,
            "-aet",
            "CT01",
            "+sd",
            "127.0.0.1",
            &port.to_string(),
        ])
        .arg(files)
        .output()
        .expect("storescu");
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "storescu failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn wait_port(port: u16) {
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("nothing listens on {port}");
}

fn storescp_round(dir: &Path, files: &Path, round: usize) -> Duration {
    let out = dir.join(format!("storescp-{round}"));
    std::fs::create_dir_all(&out).unwrap();
    let port = free_port();
    let mut scp = Command::new("storescp")
        .env("TCP_NODELAY", "1")
        .args(["-aet", "STORESCP", "-od"])
        .arg(&out)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("storescp");
    wait_port(port);
    let took = storescu(port, "STORESCP", files);
    let _ = scp.kill();
    let _ = scp.wait();
    let _ = std::fs::remove_dir_all(&out);
    took
}

async fn engine_round(dir: &Path, files: &Path, round: usize, durability: &str) -> (Duration, u64) {
    let base = dir.join(format!("engine-{round}"));
    std::fs::create_dir_all(&base).unwrap();
    let port = free_port();
    let mut root = RootConfig::default();
    root.store.url = format!("sqlite://{}/huizhen.db", base.display());
    root.store.durability = serde_saphyr::from_str(durability).unwrap();
    root.security.jwt_secret_file = base.join("jwt.secret");
    root.security.encryption.keys_file = base.join("keys");
    root.security.audit.key_file = base.join("audit.key");
    root.security.audit.checkpoint_file = base.join("audit.checkpoints");
    let yaml = format!(
        "version: 1\nname: imaging\nfacility: county-1\nsource:\n  dicom:\n    listen: \"127.0.0.1:{port}\"\n    storage: \"{}/dicom\"\n    accept: [{{ calling: [\"*\"] }}]\n    study_complete_after: 1h\nsinks:\n  - journal: {{}}\n",
        base.display()
    );
    let file = base.join("imaging.yaml");
    let pipeline = config::parse_yaml(&file, &yaml).unwrap();
    let loaded = Loaded {
        root,
        root_file: None,
        pipelines: vec![LoadedPipeline {
            file,
            config: pipeline,
        }],
    };
    let engine = Engine::start(loaded).await.unwrap();
    wait_port(port);
    let files = files.to_path_buf();
    let took = tokio::task::spawn_blocking(move || storescu(port, "HUIZHEN", &files))
        .await
        .unwrap();
    let st = engine
        .store
        .dicom_study("1.2.826.0.1.3680043.10.99")
        .await
        .unwrap()
        .expect("the study is indexed");
    let instances = st.instance_count as u64;
    engine.shutdown(Duration::from_secs(10)).await;
    let _ = std::fs::remove_dir_all(&base);
    (took, instances)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    if Command::new("storescu").arg("--version").output().is_err() {
        eprintln!("store_throughput: dcmtk is not installed (apt-get install dcmtk); skipped");
        return;
    }
    let n: usize = env_or("BENCH_INSTANCES", 500);
    let rows: u16 = env_or("BENCH_ROWS", 512);
    let rounds: usize = env_or("BENCH_ROUNDS", 3);
    let durability: String = env_or("BENCH_DURABILITY", "process-crash".to_owned());
    let keep;
    let dir: PathBuf = match std::env::var("BENCH_DIR") {
        Ok(d) => PathBuf::from(d),
        Err(_) => {
            keep = tempfile::tempdir().unwrap();
            keep.path().to_path_buf()
        }
    };
    let files = dir.join("study");
    std::fs::create_dir_all(&files).unwrap();
    let bytes = write_study(&files, n, rows);
    let mb = bytes as f64 / 1e6;
    eprintln!("{n} instances, {mb:.1} MB; {rounds} rounds each");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rss_before = peak_rss_mib();
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for round in 0..rounds {
        theirs.push(storescp_round(&dir, &files, round));
        let (took, indexed) = rt.block_on(engine_round(&dir, &files, round, &durability));
        assert_eq!(indexed, n as u64, "every instance indexed");
        ours.push(took);
    }
    let rss_after = peak_rss_mib();
    let row = |name: &str, v: &[Duration]| {
        let best = *v.iter().min().unwrap();
        let med = median(v.to_vec());
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.2} |",
            mb / med.as_secs_f64(),
            n as f64 / med.as_secs_f64(),
            mb / best.as_secs_f64(),
            med.as_secs_f64()
        );
        med
    };
    println!(
        "\n| receiver | MB/s (median) | instances/s (median) | MB/s (best) | seconds (median) |"
    );
    println!("|---|---|---|---|---|");
    let a = row("huizhen `dicom` source (stored, indexed, journaled)", &ours);
    let b = row("dcmtk storescp (files written)", &theirs);
    println!(
        "\nratio huizhen ÷ storescp (median): {:.2}; durability {durability}; peak RSS of the engine process {} MiB (before the first round {} MiB)",
        b.as_secs_f64() / a.as_secs_f64(),
        rss_after,
        rss_before
    );
}
