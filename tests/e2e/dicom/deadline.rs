//! DICOMweb's own deadline (`http.transfer_timeout`): a STOW-RS upload that trickles in for
//! longer than `http.request_timeout` is stored, and the same upload is cut (408) when the
//! transfer deadline is as short.

use std::time::Duration;

use huizhen_core::config::HttpConfig;
use huizhen_core::security::SecurityConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::files::{Spec, write};
use super::web::{engine, stow_body};
use crate::consultations::{SECRET, doctor};
use crate::support::serve_with;

/// STOW-RS of `body` in 8 pieces 300 ms apart (about 2.4 s in all); the status.
async fn slow_stow(base: &str, body: &[u8], ct: &str) -> u16 {
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /dicomweb/studies HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {}\r\nContent-Type: {ct}\r\nTransfer-Encoding: chunked\r\n\r\n",
        doctor()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for c in body.chunks(body.len().div_ceil(8)) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let piece = [format!("{:x}\r\n", c.len()).as_bytes(), c, b"\r\n"].concat();
        if s.write_all(&piece).await.is_err() {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_stow_runs_under_the_transfer_deadline_not_the_request_deadline() {
    let Some(wf) = engine().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let security = SecurityConfig {
        jwt_secret: Some(SECRET.into()),
        ..SecurityConfig::default()
    };
    let mut files = Vec::new();
    for (k, study) in [
        "1.2.826.0.1.3680043.9.7019.1",
        "1.2.826.0.1.3680043.9.7019.2",
    ]
    .iter()
    .enumerate()
    {
        let p = dir.path().join(format!("{k}.dcm"));
        write(&p, &Spec::new(study, &format!("{study}.1"), 1));
        files.push(std::fs::read(&p).unwrap());
    }
    // request_timeout 1 s, transfer_timeout 60 s: stored.
    let long = serve_with(
        &wf.engine,
        &security,
        HttpConfig {
            request_timeout: Duration::from_secs(1),
            transfer_timeout: Duration::from_secs(60),
            ..HttpConfig::default()
        },
    )
    .await;
    let (body, ct) = stow_body(&files[..1]);
    assert_eq!(slow_stow(&long, &body, &ct).await, 200);
    // Both 1 s: the same kind of upload is cut.
    let short = serve_with(
        &wf.engine,
        &security,
        HttpConfig {
            request_timeout: Duration::from_secs(1),
            transfer_timeout: Duration::from_secs(1),
            ..HttpConfig::default()
        },
    )
    .await;
    let (body, ct) = stow_body(&files[1..]);
    assert_eq!(slow_stow(&short, &body, &ct).await, 408);
    let _ = wf.stop().await;
}
