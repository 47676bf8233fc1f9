//! The `huizhen` binary's offline commands: validate, hl7 parse, hl7 send to hl7 receive,
//! opinion testca and sign, token issue.

use std::process::Command;

fn huizhen(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_huizhen"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .expect("run huizhen")
}

#[test]
fn shipped_pipelines_validate() {
    let out = huizhen(&["validate", "pipelines/"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn validate_reports_every_file_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "version: 1\nname: a\nsource:\n  htp: { path: /in/a }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        "version: 1\nname: b\nconcurency: 2\nsource:\n  http: { path: /in/b }\n",
    )
    .unwrap();
    let out = huizhen(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a.yaml:4:3: error: unknown type `htp`"),
        "{err}"
    );
    assert!(err.contains("did you mean `http`?"), "{err}");
    assert!(
        err.contains("b.yaml:3:1: error: unknown key `concurency`"),
        "{err}"
    );
    assert!(err.contains("did you mean `concurrency`?"), "{err}");
    assert!(err.trim_end().ends_with("2 errors"), "{err}");
}

#[test]
fn hl7_parse_prints_paths_and_decoded_values() {
    let out = huizhen(&[
        "hl7",
        "parse",
        "tests/fixtures/hl7/oru_r01_gbk.hl7",
        "--charset",
        "GBK",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let has = |path: &str, value: &str| {
        text.lines().any(|l| {
            let mut parts = l.splitn(2, ' ');
            parts.next() == Some(path) && parts.next().map(str::trim) == Some(value)
        })
    };
    assert!(has("MSH-4", "县人民医院检验科"), "{text}");
    assert!(has("PID-5.2", "三丰"), "{text}");
    assert!(has("OBX[2]-3.2", "糖化血红蛋白"), "{text}");
    assert!(has("NTE-3", "建议内分泌科会诊"), "{text}");
}

/// `hl7 receive` plays the HIS of the demo: it prints what `hl7 send` sends and answers AA.
#[test]
fn hl7_receive_prints_and_acknowledges_what_hl7_send_sends() {
    use std::io::BufRead;
    use std::process::Stdio;
    let mut rx = Command::new(env!("CARGO_BIN_EXE_huizhen"))
        .args(["hl7", "receive", "--listen", "127.0.0.1:0", "--count", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run huizhen hl7 receive");
    let mut first = String::new();
    std::io::BufReader::new(rx.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .strip_prefix("listening on ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();
    let out = huizhen(&[
        "hl7",
        "send",
        "tests/fixtures/hl7/orm_o01_consultation.hl7",
        "--to",
        &addr,
        "--timeout",
        "10s",
    ]);
    let sent = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{sent}");
    assert!(
        sent.contains("MSH-10=HIS000201: AA (MSA-2=HIS000201)"),
        "{sent}"
    );
    // It stops after --count messages.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while rx.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = rx.kill();
            panic!("hl7 receive did not stop after one message");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = rx.wait_with_output().unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.starts_with("# 1 ORM^O01 MSH-10=HIS000201 from 127.0.0.1:"),
        "{printed}"
    );
    assert!(
        printed
            .lines()
            .any(|l| l.starts_with("ORC|NW|HZSQ-20261123-0001^HIS|")),
        "{printed}"
    );
}

/// `opinion testca` and `opinion sign` give the demo's expert a signature that verifies
/// against the test CA's root, over the opinion as written, for the consultation named.
#[test]
fn opinion_testca_and_sign_make_a_body_that_verifies() {
    use huizhen_domain::consultation::{SignedOpinion, verify_opinion};
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let out = huizhen(&[
        "opinion",
        "testca",
        "--out",
        ca.to_str().unwrap(),
        "--expert",
        "E1001=李振华",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (key, chain) = (ca.join("E1001.key.pem"), ca.join("E1001.chain.pem"));
    let out = huizhen(&[
        "opinion",
        "sign",
        "demo/opinion.json",
        "--consultation",
        "C-42",
        "--key",
        key.to_str().unwrap(),
        "--chain",
        chain.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut signed: SignedOpinion = serde_json::from_value(body["signed"].clone()).unwrap();
    assert_eq!(
        (
            signed.opinion.consultation.as_str(),
            signed.opinion.expert.as_str()
        ),
        ("C-42", "E1001")
    );
    let roots = huizhen_signing::ChainVerifier::from_pem_file(&ca.join("roots.pem")).unwrap();
    assert_eq!(verify_opinion(&signed, &roots).unwrap(), "李振华");
    signed.opinion.advice.push('。');
    assert!(
        verify_opinion(&signed, &roots).is_err(),
        "a changed opinion fails"
    );
    // An opinion without a diagnosis is refused before anything is signed.
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"expert": "E1001", "diagnoses": [], "treatment_plan": "x", "advice": "y"}"#,
    )
    .unwrap();
    let out = huizhen(&[
        "opinion",
        "sign",
        bad.to_str().unwrap(),
        "--consultation",
        "C-42",
        "--key",
        key.to_str().unwrap(),
        "--chain",
        chain.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("diagnoses: needs at least one"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `token issue` puts every token it gives out on the audit trail (its id, never the token) and
/// refuses a lifetime over security.max_token_ttl.
#[test]
fn issued_tokens_are_audited_and_their_lifetime_capped() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/h.db", dir.path().display());
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_huizhen"))
            .args(["--database-url", &db])
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = run(&[
        "token",
        "issue",
        "--sub",
        "li.wei",
        "--role",
        "integrator",
        "--facility",
        "county-3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "{token}");
    let out = run(&[
        "token",
        "issue",
        "--sub",
        "li.wei",
        "--role",
        "admin",
        "--facility",
        "*",
        "--ttl",
        "30d",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("security.max_token_ttl"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["audit", "list"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    let issued: Vec<&str> = listed
        .lines()
        .filter(|l| l.contains("token.issue"))
        .collect();
    assert_eq!(issued.len(), 1, "{listed}");
    assert!(
        issued[0].contains("li.wei") && issued[0].contains("county-3"),
        "{listed}"
    );
    assert!(
        !listed.contains(&token),
        "the token itself is not on the trail"
    );
}
