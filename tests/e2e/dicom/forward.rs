//! The `dicom` sink: received instances forwarded by C-STORE to an expert-side archive (dcmtk's
//! storescp), byte for byte; a refused instance dead-lettered with the reason; an unreachable
//! archive retried through the journal and then dead with the reason.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use huizhen_core::message::State;

use super::files::{self, Spec, convert, dataset_bytes, write};
use super::retrieve::{s, tool};
use super::{Scp, free_port};
use crate::support::{journaled, wait_for};

struct Archive(Child);

impl Drop for Archive {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sink(port: u16) -> String {
    format!(
        "retry: {{ max_attempts: 2, backoff: 100ms, max_backoff: 200ms }}\nsinks:\n  - dicom:\n      to: {{ title: ARCHIVE, host: 127.0.0.1, port: {port}, facility: province }}\n      timeout: 5s\n"
    )
}

async fn send(scp: &Scp, files: &[PathBuf], option: &str) {
    let mut args = s(&["-aec", "HUIZHEN", "-aet", "CT01", option, "127.0.0.1"]);
    args.push(scp.port_arg());
    args.extend(files.iter().map(|f| f.display().to_string()));
    let (ok, out) = tool("storescu", args).await;
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_are_forwarded_as_received_and_refusals_dead_lettered() {
    if !files::dcmtk() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("archive");
    std::fs::create_dir_all(&out).unwrap();
    let port = free_port();
    // storescp accepts only uncompressed transfer syntaxes by default: JPEG-LS is refused.
    let _archive = Archive(
        Command::new("storescp")
            .args([
                "-aet",
                "ARCHIVE",
                "-od",
                out.to_str().unwrap(),
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("storescp", Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
    })
    .await;
    let scp = Scp::start_with("    accept:\n      - calling: [\"*\"]\n", &sink(port)).await;
    let study = "1.2.826.0.1.3680043.10.95";
    let series = format!("{study}.1");
    let mut plain = Vec::new();
    for n in 1..=2 {
        let p = d.join(format!("f{n}.dcm"));
        write(&p, &Spec::new(study, &series, n));
        plain.push(p);
    }
    let src = d.join("f3-src.dcm");
    write(&src, &Spec::new(study, &series, 3));
    let jls = convert("dcmcjpls", &[], &src, &d.join("f3-jls.dcm"));
    send(&scp, &plain, "-x=").await;
    send(
        &scp,
        &[jls],
        files::storescu_option("1.2.840.10008.1.2.4.80"),
    )
    .await;

    let store = scp.store().await;
    let msgs = wait_for("the sink's outcomes", Duration::from_secs(30), || {
        let store = store.clone();
        async move {
            let m = journaled(&store, "imaging").await;
            (m.len() == 3
                && m.iter()
                    .all(|m| matches!(m.state, State::Done | State::Dead)))
            .then_some(m)
        }
    })
    .await;
    let dead: Vec<_> = msgs.iter().filter(|m| m.state == State::Dead).collect();
    assert_eq!(dead.len(), 1, "{msgs:?}");
    let reason = dead[0].last_error.clone().unwrap_or_default();
    assert!(
        reason.contains("does not accept") && reason.contains("JPEG-LS"),
        "{reason}"
    );
    assert_eq!(dead[0].attempts, 1, "a refusal is not retried");
    // The two others arrived byte for byte.
    let mut got: Vec<Vec<u8>> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| dataset_bytes(&e.unwrap().path()))
        .collect();
    let mut want: Vec<Vec<u8>> = plain.iter().map(|p| dataset_bytes(p)).collect();
    got.sort();
    want.sort();
    assert!(got == want, "forwarded data sets differ");
    scp.engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_archive_is_retried_then_dead_with_the_reason() {
    if !files::dcmtk() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let closed = free_port();
    let scp = Scp::start_with("    accept:\n      - calling: [\"*\"]\n", &sink(closed)).await;
    let p = dir.path().join("one.dcm");
    write(
        &p,
        &Spec::new(
            "1.2.826.0.1.3680043.10.96",
            "1.2.826.0.1.3680043.10.96.1",
            1,
        ),
    );
    send(&scp, &[p], "-x=").await;
    let store = scp.store().await;
    let m = wait_for("dead", Duration::from_secs(30), || {
        let store = store.clone();
        async move {
            journaled(&store, "imaging")
                .await
                .into_iter()
                .find(|m| m.state == State::Dead)
        }
    })
    .await;
    assert_eq!(m.attempts, 2, "retried up to max_attempts");
    let reason = m.last_error.unwrap_or_default();
    assert!(reason.contains("cannot associate with ARCHIVE"), "{reason}");
    scp.engine.shutdown(Duration::from_secs(5)).await;
}
