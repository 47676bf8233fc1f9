//! Patient data stays out of what the engine writes besides sealed rows: logs, a
//! de-identified export, and headers, idempotency keys, remote errors and searches in the
//! database file.

use std::time::Duration;

use huizhen_core::Engine;
use huizhen_core::security::Role;

use super::{SECRET, security_config, server, token};
use crate::support::{Backend, fresh_db, loaded, serve};

/// Logs carry ids and reasons, never patient data: the real binary at debug level takes a good
/// JSON message, one that fails a step, one that is not JSON, an HL7 ADT over MLLP and a broken
/// HL7 frame, all naming the same patient; the log names none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_hold_no_patient_name_or_id() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let dir = db.dir.path();
    let (http_port, mllp_port) = {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        (
            a.local_addr().unwrap().port(),
            b.local_addr().unwrap().port(),
        )
    };
    std::fs::create_dir_all(dir.join("pipelines")).unwrap();
    std::fs::write(
        dir.join("huizhen.yaml"),
        format!(
            "version: 1\nstore: {{ url: \"{}\" }}\nhttp: {{ bind: \"127.0.0.1:{http_port}\" }}\nsecurity:\n  jwt_secret: \"{SECRET}\"\n  encryption: {{ keys_file: keys }}\njournal: {{ scheduler_poll: 50ms }}\npipelines: [\"pipelines/*.yaml\"]\n",
            db.url
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("pipelines/p.yaml"),
        format!(
            "version: 1\nname: referrals\nsource:\n  http: {{ path: /in/r, kind: json }}\nretry: {{ max_attempts: 2, backoff: 10ms }}\nsteps:\n  - set: {{ headers: {{ dept: \"body.department\" }} }}\nsinks:\n  - journal: {{}}\n---\nversion: 1\nname: adt\nsource:\n  mllp: {{ listen: \"127.0.0.1:{mllp_port}\" }}\nsteps:\n  - hl7_map: {{}}\nsinks:\n  - journal: {{}}\n"
        ),
    )
    .unwrap();
    let log = dir.join("huizhen.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_huizhen"))
        .args(["-c", "huizhen.yaml", "run"])
        .current_dir(dir)
        .env("RUST_LOG", "debug")
        .stdout(std::fs::File::create(dir.join("stdout.log")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{http_port}");
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client
            .get(format!("{base}/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let name = "司马相如";
    let id_number = "330523199001011238";
    let t = token(Role::Integrator, "default");
    for body in [
        format!(
            r#"{{"department":"cardiology","patient":{{"name":"{name}","id":"{id_number}"}}}}"#
        ),
        format!(r#"{{"patient":{{"name":"{name}","id":"{id_number}"}}}}"#),
        format!(r#"{{"patient": {name} {id_number}"#),
    ] {
        let r = client
            .post(format!("{base}/in/r"))
            .bearer_auth(&t)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let adt = format!(
        "MSH|^~\\&|HIS|H|HZ|P|20261123||ADT^A01|L1|P|2.5\rPID|1||{id_number}^^^H^MR||{name}||19900101|M\rPV1|1|I\r"
    );
    let broken =
        format!("MSH|^~\\&|HIS|H|HZ|P|20261123||ADT^A01|L2|P|9.9\rPID|1||{id_number}||{name}\r");
    let no_id = format!("MSH|^~\\&|HIS|H|HZ|P|20261123||ADT^A01|L3|P|2.5\rPID|1||||{name}\r");
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", mllp_port))
        .await
        .unwrap();
    for m in [adt, broken, no_id] {
        let mut f = vec![0x0b];
        f.extend(encoding_rs::GB18030.encode(&m).0.iter());
        f.extend([0x1c, 0x0d]);
        c.write_all(&f).await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("message failed") && text.contains("refused"),
        "the failures were logged:\n{text}"
    );
    let gb_name = encoding_rs::GB18030.encode(name).0.into_owned();
    let raw = std::fs::read(&log).unwrap();
    for (what, needle) in [
        ("name", name.as_bytes()),
        ("name in GB18030", gb_name.as_slice()),
        ("identity number", id_number.as_bytes()),
    ] {
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle),
            "the patient's {what} is in the log:\n{text}"
        );
    }
}

/// `huizhen export --deidentify default` on an encrypted journal: the patient's name, identity
/// number and phone are gone from the output, the rest of the message is there, and the export
/// is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deidentified_export_removes_patient_data() {
    let s = server(100).await;
    s.ingest("/in/a").await;
    let body = r#"{"referral":{"department":"cardiology","patient":{"name":"欧阳明月","id_number":"330523199001011238","phone":"13912345678","birth_date":"1990-01-05"}}}"#;
    let r = s
        .client
        .post(format!("{}/in/a", s.base))
        .bearer_auth(token(Role::Admin, "*"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let dir = s._db.dir.path().to_owned();
    let config = dir.join("huizhen.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1\nstore: {{ url: \"{}\" }}\nsecurity:\n  jwt_secret: \"{SECRET}\"\n  encryption: {{ keys_file: \"{}\" }}\npipelines: []\n",
            s._db.url,
            dir.join("keys").display()
        ),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_huizhen"))
        .arg("-c")
        .arg(&config)
        .args(["export", "--deidentify", "default", "--pipeline", "a"])
        .env("HUIZHEN_DEID_KEY", "export-test-key-0123456789")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(text.lines().count(), 2, "{text}");
    for secret in [
        "欧阳明月",
        "330523199001011238",
        "13912345678",
        "1990-01-05",
    ] {
        assert!(!text.contains(secret), "{secret} exported:\n{text}");
    }
    assert!(
        text.contains("cardiology") && !text.contains("欧") && text.contains("\"h:"),
        "{text}"
    );
    let events = s
        .engine
        .store
        .audit_events(&huizhen_core::store::audit::AuditFilter {
            action: Some("message.export".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    s.engine.shutdown(Duration::from_secs(5)).await;
}

/// Patient data that arrives outside the body is not in the database either (issue 12, item 7):
/// an `x-` header and an `Idempotency-Key` carrying it, a remote system whose refusal (HL7 AE,
/// ERR text in the error history) names the patient, and a message search for the patient's
/// phone and name (recorded in the audit trail). None of the name, identity number or phone is
/// in the SQLite file or its WAL; an authorised reader still sees them through the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phi_in_headers_keys_errors_and_searches_is_not_in_the_database() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const NAME: &str = "欧阳明月";
    const ID_NO: &str = "330523199001011238";
    const PHONE: &str = "13912345678";
    // HTTP header values are visible ASCII: the name in pinyin.
    const PINYIN: &str = "OUYANG MINGYUE";
    // A receiver that refuses every message with AE, naming the patient in MSA-3.
    let remote = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let remote_port = remote.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = remote.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = c.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(2).position(|w| w == b"\x1c\r") {
                        let frame: Vec<u8> = buf.drain(..end + 2).collect();
                        let text = String::from_utf8_lossy(&frame);
                        let control = text
                            .trim_start_matches('\x0b')
                            .split('\r')
                            .next()
                            .and_then(|msh| msh.split('|').nth(9))
                            .unwrap_or("")
                            .to_owned();
                        let ack = format!(
                            "\x0bMSH|^~\\&|HIS|H|HZ|P|20261123093000||ACK^A01^ACK|R{control}|P|2.5\rMSA|AE|{control}|patient {NAME} {ID_NO} {PHONE} is not registered\r\x1c\r"
                        );
                        if c.write_all(ack.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let a = "version: 1\nname: a\nfacility: hosp-a\nsource:\n  http: { path: /in/a, kind: json }\nsinks:\n  - journal: {}\n";
    let m = format!(
        "version: 1\nname: m\nfacility: hosp-a\nsource:\n  http: {{ path: /in/m, kind: hl7v2 }}\nretry: {{ max_attempts: 1, backoff: 10ms }}\nsinks:\n  - mllp: {{ to: \"127.0.0.1:{remote_port}\", ack_timeout: 5s }}\n"
    );
    let engine = Engine::start(loaded(&db, &[a, &m])).await.unwrap();
    let base = serve(&engine, &security_config()).await;
    let client = reqwest::Client::new();
    let admin = token(Role::Admin, "*");
    let post = async |path: &str, req: reqwest::RequestBuilder| {
        let r = req.bearer_auth(&admin).send().await.unwrap();
        assert_eq!(r.status(), 202, "{path}");
        r.json::<serde_json::Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let with_headers = post(
        "/in/a",
        client
            .post(format!("{base}/in/a"))
            .header("content-type", "application/json")
            .header("x-patient-name", PINYIN)
            .header("x-patient-phone", PHONE)
            .header("idempotency-key", ID_NO)
            .body(r#"{"referral":1}"#),
    )
    .await;
    let adt = format!(
        "MSH|^~\\&|HIS|H|HZ|P|20261123093000||ADT^A01^ADT_A01|C1|P|2.5\rPID|1||{ID_NO}^^^H^MR||{NAME}||19900101|M|||||{PHONE}\r"
    );
    let refused = post(
        "/in/m",
        client
            .post(format!("{base}/in/m"))
            .header("content-type", "text/plain")
            .body(adt.into_bytes()),
    )
    .await;
    for q in [PHONE, NAME] {
        let r = client
            .get(format!("{base}/api/messages"))
            .query(&[("q", q)])
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    for (id, state) in [(&with_headers, "done"), (&refused, "dead")] {
        crate::support::wait_for(state, Duration::from_secs(15), || {
            let store = engine.store.clone();
            let id = id.clone();
            async move { (store.get(&id).await.ok()??.state.as_str() == state).then_some(()) }
        })
        .await;
    }
    // An authorised reader sees it all, opened.
    let detail = async |id: &str| -> serde_json::Value {
        client
            .get(format!("{base}/api/messages/{id}"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    };
    let v = detail(&with_headers).await;
    assert_eq!(v["headers"]["x-patient-name"], PINYIN, "{v}");
    assert_eq!(v["headers"]["x-patient-phone"], PHONE);
    let v = detail(&refused).await;
    let last = v["last_error"].as_str().unwrap_or("");
    assert!(last.contains(NAME), "{v}");
    assert!(
        v["errors"][0]["error"]
            .as_str()
            .unwrap_or("")
            .contains(NAME),
        "{v}"
    );
    // The search terms were audited, as keyed hashes with their length.
    let listed = engine
        .store
        .audit_events(&huizhen_core::store::audit::AuditFilter {
            action: Some("message.list".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let terms: Vec<&str> = listed
        .iter()
        .filter_map(|r| r.event.detail.split(" q=").nth(1))
        .collect();
    assert_eq!(terms.len(), 2, "{listed:?}");
    assert!(
        terms[0].starts_with("hmac:") && terms[0].contains("(11 chars)"),
        "{terms:?}"
    );
    assert!(
        terms[1].contains("(4 chars)") && terms[0][..21] != terms[1][..21],
        "{terms:?}"
    );
    engine.shutdown(Duration::from_secs(5)).await;
    let mut raw = Vec::new();
    for f in ["journal.db", "journal.db-wal"] {
        if let Ok(b) = std::fs::read(db.dir.path().join(f)) {
            raw.extend(b);
        }
    }
    assert!(raw.len() > 4096, "the database was read");
    for secret in [NAME, PINYIN, ID_NO, PHONE] {
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} is readable in the database file"
        );
    }
}
