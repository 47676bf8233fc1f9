//! MLLP over TLS (STANDARDS HL7-04): `huizhen hl7 send --tls` against the listener, refusal of
//! a plaintext client, and mutual TLS. Certificates are made with the `openssl` command.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use huizhen_core::Engine;
use huizhen_core::message::{NewMessage, State};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Backend, fresh_db, loaded, wait_for};

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
    make_pki_named(dir, "Huizhen test CA");
}

/// [`make_pki`] with the CA's common name.
pub(crate) fn make_pki_named(dir: &Path, ca_name: &str) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let ca_subject = format!("/CN={ca_name}");
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
        &ca_subject,
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
    crate::mllp::assert_closed(
        &mut plain,
        Duration::from_secs(5),
        "a plaintext client on the TLS port",
    )
    .await;

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
    let closed = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf)).await;
    assert!(
        closed.is_ok(),
        "a plaintext connection on the TLS port must be closed, not left open"
    );
    assert!(
        !String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"),
        "plaintext must not be served"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Item 4: the `mllp` and `hl7_app_ack` sinks over TLS against the engine's own TLS listener:
/// delivered with the right CA; a CA that did not issue the listener's certificate, or a
/// server name the certificate does not carry, fails the handshake and the message ends dead
/// with that reason (retried first, never lost); with mutual TLS the listener refuses a sink
/// without a client certificate and takes one with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mllp_sinks_verify_the_listener_over_tls_and_present_client_certificates() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let pki = db.dir.path().join("pki");
    let other = db.dir.path().join("other-pki");
    std::fs::create_dir_all(&pki).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    make_pki(&pki);
    make_pki_named(&other, "Another hospital CA");
    let p = |f: &str| pki.join(f).display().to_string();
    let (port, mport) = (free_port(), free_port());
    let listener = |name: &str, port: u16, client_ca: &str| {
        format!(
            "version: 1\nname: {name}\nsource:\n  mllp:\n    listen: \"127.0.0.1:{port}\"\n    charset: UTF-8\n    tls: {{ cert: \"{}\", key: \"{}\"{client_ca} }}\nsinks:\n  - journal: {{}}\n",
            p("server.pem"),
            p("server.key")
        )
    };
    let sender = |name: &str, sink: &str| {
        format!(
            "version: 1\nname: {name}\nsource:\n  http: {{ path: /in/{name}, kind: text }}\nretry: {{ max_attempts: 2, backoff: 100ms }}\nsinks:\n  - {sink}\n"
        )
    };
    let to = format!("127.0.0.1:{port}");
    let mto = format!("127.0.0.1:{mport}");
    let ca = p("ca.pem");
    let other_ca = other.join("ca.pem").display().to_string();
    let pipelines = [
        listener("tls-in", port, ""),
        listener("mtls-in", mport, &format!(", client_ca: \"{ca}\"")),
        sender(
            "out-ok",
            &format!("mllp: {{ to: \"{to}\", tls: {{ ca: \"{ca}\" }} }}"),
        ),
        sender(
            "out-wrong-ca",
            &format!("mllp: {{ to: \"{to}\", tls: {{ ca: \"{other_ca}\" }} }}"),
        ),
        sender(
            "out-wrong-name",
            &format!("mllp: {{ to: \"{to}\", tls: {{ ca: \"{ca}\", server_name: his.example }} }}"),
        ),
        sender(
            "out-mtls-anonymous",
            &format!("mllp: {{ to: \"{mto}\", tls: {{ ca: \"{ca}\" }} }}"),
        ),
        sender(
            "out-mtls",
            &format!(
                "mllp: {{ to: \"{mto}\", tls: {{ ca: \"{ca}\", cert: \"{}\", key: \"{}\" }} }}",
                p("client.pem"),
                p("client.key")
            ),
        ),
        sender(
            "app-ack-tls",
            &format!("hl7_app_ack: {{ to: \"{to}\", tls: {{ ca: \"{ca}\" }} }}"),
        ),
    ];
    let refs: Vec<&str> = pipelines.iter().map(String::as_str).collect();
    let engine = Engine::start(loaded(&db, &refs)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut ids = Vec::new();
    for (n, name) in [
        "out-ok",
        "out-wrong-ca",
        "out-wrong-name",
        "out-mtls-anonymous",
        "out-mtls",
        "app-ack-tls",
    ]
    .iter()
    .enumerate()
    {
        let hl7 = format!(
            "MSH|^~\\&|HUIZHEN|省会诊中心|HIS|县人民医院|20261123093000||ADT^A01^ADT_A01|TLS{n}|P|2.5|||AL|AL|CHN|UNICODE UTF-8\rPID|1||330523199001011234^^^县人民医院^MR||张^三||19900101|M\r"
        );
        let mut m = NewMessage::new(name, "default", "hl7v2", hl7.into_bytes());
        m.headers.insert("hl7-app-ack".into(), "Always".into());
        let a = engine.pipeline(name).unwrap().submit(m).await.unwrap();
        ids.push((*name, a.id));
    }
    let mut outcome = std::collections::BTreeMap::new();
    for (name, id) in &ids {
        let m = wait_for(name, Duration::from_secs(30), || async {
            let m = engine.store.get(id).await.unwrap()?;
            matches!(m.state, State::Done | State::Dead).then_some(m)
        })
        .await;
        let err = m.last_error.clone().unwrap_or_default();
        eprintln!("{name}: {:?} {err}", m.state);
        outcome.insert(*name, (m.state, err));
    }
    let done = |name: &str| {
        let (state, err) = &outcome[name];
        assert_eq!(*state, State::Done, "{name}: {err}");
    };
    let dead_with = |name: &str, words: &[&str]| {
        let (state, err) = &outcome[name];
        assert_eq!(*state, State::Dead, "{name}: {err}");
        for w in words {
            assert!(err.contains(w), "{name}: {w:?} not in {err:?}");
        }
    };
    done("out-ok");
    done("out-mtls");
    done("app-ack-tls");
    dead_with(
        "out-wrong-ca",
        &[
            "TLS handshake with",
            "invalid peer certificate",
            "UnknownIssuer",
        ],
    );
    dead_with(
        "out-wrong-name",
        &[
            "TLS handshake with",
            "\"his.example\"",
            "not valid for name",
        ],
    );
    // TLS 1.3: the client finishes its side of the handshake before the server checks the
    // client certificate, so the refusal arrives as an alert when the ACK is read.
    dead_with("out-mtls-anonymous", &["CertificateRequired"]);

    // What the listeners journaled: the two delivered messages and the application ACK.
    let in_pipeline = |name: &'static str| {
        let store = engine.store.clone();
        async move {
            store
                .list(&huizhen_core::store::ListFilter {
                    pipeline: Some(name.into()),
                    ..Default::default()
                })
                .await
                .unwrap()
                .messages
        }
    };
    let tls_in = in_pipeline("tls-in").await;
    let mut types: Vec<&str> = tls_in
        .iter()
        .map(|m| m.headers["hl7-type"].as_str())
        .collect();
    types.sort();
    assert_eq!(types, ["ACK^A01", "ADT^A01"], "out-ok and app-ack-tls");
    assert_eq!(in_pipeline("mtls-in").await.len(), 1, "out-mtls only");
    engine.shutdown(Duration::from_secs(5)).await;
}

/// Item 4: the sinks' TLS files are read by `validate`, and a bad one is reported with the
/// file and line of the sink.
#[test]
fn validate_names_a_bad_tls_file_of_an_mllp_sink() {
    let dir = tempfile::tempdir().unwrap();
    let not_ca = dir.path().join("not-a-ca.pem");
    std::fs::write(&not_ca, "hello").unwrap();
    let missing = dir.path().join("missing.pem");
    let text = format!(
        "version: 1\nname: bad\nsource:\n  http: {{ path: /in/bad, kind: text }}\nsinks:\n  - mllp: {{ to: \"his.example:6661\", tls: {{ ca: \"{}\" }} }}\n  - hl7_app_ack: {{ to: \"his.example:6662\", tls: {{ ca: \"{}\" }} }}\n  - mllp: {{ to: \"his.example:6663\", tls: {{ cert: \"{}\" }} }}\n",
        not_ca.display(),
        missing.display(),
        not_ca.display()
    );
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, &text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_huizhen"))
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("bad.yaml:")).collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].contains("bad.yaml:6:")
            && lines[0].contains("tls.ca")
            && lines[0].contains("no PEM certificate"),
        "{err}"
    );
    assert!(
        lines[1].contains("bad.yaml:7:")
            && lines[1].contains("tls.ca")
            && lines[1].contains("cannot read"),
        "{err}"
    );
    assert!(
        lines[2].contains("bad.yaml:8:")
            && lines[2].contains("tls.cert")
            && lines[2].contains("tls.key"),
        "{err}"
    );
}
