//! Who may associate: calling and called AE titles per facility, peer addresses, the number
//! of associations at once; and TLS through the shared listener plumbing.

use std::time::Duration;

use huizhen_dicom::assoc::{Limits, Link};
use huizhen_dicom::scu::{self, Peer};

use super::{ACCEPT_ANY, Scp, files};

fn peer(port: u16, calling: &str, called: &str) -> Peer {
    Peer {
        addr: format!("127.0.0.1:{port}"),
        called: called.into(),
        calling: calling.into(),
        tls: None,
        timeout: Duration::from_secs(10),
        max_pdu: 65536,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_calling_or_called_titles_are_rejected_and_allowed_ones_pass() {
    let scp = Scp::start(
        "    accept:\n      - calling: [CT01, MR01]\n        facility: county-1\n      - calling: [PACS2]\n        called: [ARCHIVE]\n        facility: city-2\n",
    )
    .await;
    assert_eq!(scu::echo(&peer(scp.port, "CT01", "HUIZHEN")).await, Ok(0));
    let e = scu::echo(&peer(scp.port, "EVIL", "HUIZHEN"))
        .await
        .unwrap_err();
    assert!(
        e.contains("rejected") && e.contains("calling AE title not recognized"),
        "{e}"
    );
    let e = scu::echo(&peer(scp.port, "CT01", "OTHER"))
        .await
        .unwrap_err();
    assert!(e.contains("called AE title not recognized"), "{e}");
    // Each facility's called title admits only its callers.
    assert_eq!(scu::echo(&peer(scp.port, "PACS2", "ARCHIVE")).await, Ok(0));
    let e = scu::echo(&peer(scp.port, "CT01", "ARCHIVE"))
        .await
        .unwrap_err();
    assert!(e.contains("calling AE title not recognized"), "{e}");
    if files::dcmtk() {
        let out = std::process::Command::new("echoscu")
            .args([
                "-aec",
                "HUIZHEN",
                "-aet",
                "EVIL",
                "127.0.0.1",
                &scp.port_arg(),
            ])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Association Rejected"), "{text}");
        let stored = std::process::Command::new("storescu")
            .args([
                "-aec",
                "HUIZHEN",
                "-aet",
                "EVIL",
                "127.0.0.1",
                &scp.port_arg(),
                "/dev/null",
            ])
            .output()
            .unwrap();
        assert!(!stored.status.success());
    }
    // Nothing was stored or journaled by the rejected callers.
    let store = scp.store().await;
    assert!(
        store
            .dicom_studies(&super::filter_all())
            .await
            .unwrap()
            .is_empty()
    );
    scp.engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_outside_the_allow_list_are_cut_and_extra_associations_rejected() {
    let scp = Scp::start(&format!("{ACCEPT_ANY}    allow: [10.9.9.9]\n")).await;
    let e = scu::echo(&peer(scp.port, "CT01", "HUIZHEN"))
        .await
        .unwrap_err();
    assert!(!e.is_empty());
    scp.engine.shutdown(Duration::from_secs(5)).await;

    let scp = Scp::start(&format!("{ACCEPT_ANY}    max_associations: 1\n")).await;
    // Hold one association open (once the start-up probe's connection has given its permit
    // back).
    let port = scp.port;
    let mut held = super::wait_for(
        "the one association",
        Duration::from_secs(5),
        || async move {
            let stream = huizhen_core::tls::connect(
                &format!("127.0.0.1:{port}"),
                None,
                Duration::from_secs(5),
            )
            .await
            .ok()?;
            let mut link = Link::new(
                stream,
                Limits {
                    idle: Duration::from_secs(10),
                    pdu: Duration::from_secs(10),
                    max_pdu: 65536,
                },
            );
            link.request(
                "CT01",
                "HUIZHEN",
                &[(
                    huizhen_dicom::uids::VERIFICATION.into(),
                    vec![huizhen_dicom::uids::IMPLICIT_VR_LE.into()],
                )],
            )
            .await
            .ok()?;
            Some(link)
        },
    )
    .await;
    let e = scu::echo(&peer(scp.port, "CT02", "HUIZHEN"))
        .await
        .unwrap_err();
    assert!(
        e.contains("Transient") && e.contains("local limit exceeded"),
        "{e}"
    );
    held.release().await.unwrap();
    super::wait_for("the permit back", Duration::from_secs(5), || async {
        scu::echo(&peer(scp.port, "CT02", "HUIZHEN")).await.ok()
    })
    .await;
    scp.engine.shutdown(Duration::from_secs(5)).await;
}

/// TLS on the DICOM listener (the same plumbing as MLLP's): a TLS client is served, a plain
/// one is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_associations_are_served_and_plaintext_ones_are_not() {
    let pki = tempfile::tempdir().unwrap();
    crate::tls::make_pki(pki.path());
    let p = |f: &str| pki.path().join(f).display().to_string();
    let scp = Scp::start(&format!(
        "{ACCEPT_ANY}    tls: {{ cert: \"{}\", key: \"{}\" }}\n",
        p("server.pem"),
        p("server.key")
    ))
    .await;
    let tls = huizhen_core::tls::ClientTlsConfig {
        ca: Some(pki.path().join("ca.pem")),
        ..Default::default()
    }
    .client(&format!("127.0.0.1:{}", scp.port))
    .unwrap();
    let mut secure = peer(scp.port, "CT01", "HUIZHEN");
    secure.tls = Some(tls);
    assert_eq!(scu::echo(&secure).await, Ok(0));
    assert!(scu::echo(&peer(scp.port, "CT01", "HUIZHEN")).await.is_err());
    scp.engine.shutdown(Duration::from_secs(5)).await;
}
