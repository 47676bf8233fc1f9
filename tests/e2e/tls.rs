//! MLLP over TLS (STANDARDS HL7-04): `huizhen hl7 send --tls` against the listener, refusal of
//! a plaintext client, and mutual TLS. Certificates are made with the `openssl` command.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use huizhen_core::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Backend, fresh_db, loaded};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA.
pub(crate) fn make_pki(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Huizhen test CA",
    ]);
    openssl(dir, &ca);
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        let extfile = format!("{name}.ext");
        std::fs::write(dir.join(&extfile), ext).unwrap();
        let mut req = vec!["req"];
        req.extend(ec);
        let subj = format!("/CN={name}");
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &extfile,
            ],
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn send(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_huizhen"))
        .arg("hl7")
        .arg("send")
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_accepts_tls_and_refuses_plaintext_and_strangers() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let pki = db.dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    make_pki(&pki);
    let p = |f: &str| pki.join(f).display().to_string();
    let (port, mport) = (free_port(), free_port());
    let yaml_one = format!(
        "version: 1\nname: tls-in\nsource:\n  mllp:\n    listen: \"127.0.0.1:{port}\"\n    tls: {{ cert: \"{}\", key: \"{}\" }}\nsinks:\n  - journal: {{}}\n",
        p("server.pem"),
        p("server.key")
    );
    let yaml_mutual = format!(
        "version: 1\nname: mtls-in\nsource:\n  mllp:\n    listen: \"127.0.0.1:{mport}\"\n    tls: {{ cert: \"{}\", key: \"{}\", client_ca: \"{}\" }}\nsinks:\n  - journal: {{}}\n",
        p("server.pem"),
        p("server.key"),
        p("ca.pem")
    );
    let engine = Engine::start(loaded(&db, &[&yaml_one, &yaml_mutual]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fixture = "tests/fixtures/hl7/adt_a08_utf8_lf.hl7";
    let to = format!("127.0.0.1:{port}");

    let (code, out) = send(&[fixture, "--to", &to, "--tls", "--ca", &p("ca.pem")]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(": AA (MSA-2=HIS000124)"), "{out}");

    // A client that does not trust the server's CA does not get through.
    let (code, out) = send(&[fixture, "--to", &to, "--tls"]);
    assert_ne!(code, Some(0), "{out}");

    // Plaintext on the TLS port: no ACK, and nothing journaled from it.
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let msg = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/hl7/adt_a01_gb18030.hl7"
    ))
    .unwrap();
    plain
        .write_all(&huizhen_hl7::mllp::frame(&msg))
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let r = tokio::time::timeout(Duration::from_secs(5), plain.read(&mut buf)).await;
    match r {
        Ok(Ok(n)) => assert!(
            !String::from_utf8_lossy(&buf[..n]).contains("MSA"),
            "a plaintext client must not get an ACK"
        ),
        Ok(Err(_)) => {}
        Err(_) => panic!("the engine should close a plaintext connection on a TLS port"),
    }

    // Mutual TLS: without a client certificate refused, with one accepted.
    let mto = format!("127.0.0.1:{mport}");
    let (code, out) = send(&[fixture, "--to", &mto, "--tls", "--ca", &p("ca.pem")]);
    assert_ne!(code, Some(0), "{out}");
    let (code, out) = send(&[
        fixture,
        "--to",
        &mto,
        "--tls",
        "--ca",
        &p("ca.pem"),
        "--cert",
        &p("client.pem"),
        "--key",
        &p("client.key"),
    ]);
    assert_eq!(code, Some(0), "{out}");

    let counts = engine.store.counts().await.unwrap();
    let total: i64 = counts.iter().map(|c| c.2).sum();
    assert_eq!(
        total, 2,
        "only the two TLS messages were journaled: {counts:?}"
    );
    engine.shutdown(Duration::from_secs(5)).await;
}

/// `openssl s_client` as the client: a request over the wire, with its raw response.
fn s_client(dir: &Path, port: u16, request: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-CAfile",
            "ca.pem",
            "-verify_return_error",
            "-quiet",
        ])
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// HTTPS for the API (STANDARDS CN-31): the real binary with `http.tls`, a real TLS client
/// (`openssl s_client`, verifying the certificate), an authenticated call over it, and a
/// plaintext client refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_api_serves_tls_clients_and_refuses_plaintext() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let dir = db.dir.path();
    make_pki(dir);
    let port = free_port();
    let secret = "tls-test-secret-0123456789abcdef0123";
    std::fs::write(
        dir.join("huizhen.yaml"),
        format!(
            "version: 1\nstore: {{ url: \"{}\" }}\nhttp:\n  bind: 127.0.0.1:{port}\n  tls: {{ cert: server.pem, key: server.key }}\nsecurity:\n  jwt_secret: \"{secret}\"\n  encryption: {{ keys_file: keys }}\npipelines: []\n",
            db.url
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_huizhen"))
        .args(["-c", "huizhen.yaml", "run"])
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let health = s_client(
        dir,
        port,
        "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains(r#""status":"ok""#), "{health}");

    let token = huizhen_core::security::issue_from_config(
        &huizhen_core::security::SecurityConfig {
            jwt_secret: Some(secret.into()),
            ..Default::default()
        },
        "ops",
        huizhen_core::security::Role::Admin,
        "*",
        Duration::from_secs(60),
    )
    .unwrap()
    .token;
    let api = s_client(
        dir,
        port,
        &format!(
            "GET /api/pipelines HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(api.starts_with("HTTP/1.1 200"), "{api}");
    let denied = s_client(
        dir,
        port,
        "GET /api/pipelines HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert!(denied.starts_with("HTTP/1.1 401"), "{denied}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf)).await;
    assert!(
        !String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"),
        "plaintext must not be served"
    );
    let _ = child.kill();
    let _ = child.wait();
}
