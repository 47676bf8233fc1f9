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

/// `huizhen` in a folder, without `HUIZHEN_DATABASE_URL` from the environment.
fn huizhen_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_huizhen"))
        .args(args)
        .current_dir(dir)
        .env_remove("HUIZHEN_DATABASE_URL")
        .output()
        .expect("run huizhen")
}

/// A command that needs a store, run where there is none (no ./huizhen.yaml, no ./data), says
/// so and exits 2 without creating anything; `huizhen init` creates the store, after which the
/// same command works. Options before the command name that it does not use are refused.
#[test]
fn store_commands_need_a_store_and_never_create_one() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["messages", "list"][..],
        &["backlog"],
        &["migrate"],
        &["messages", "show", "x"],
        &[
            "token",
            "issue",
            "--sub",
            "a",
            "--role",
            "admin",
            "--facility",
            "*",
        ],
        &["audit", "verify"],
    ] {
        let out = huizhen_in(dir.path(), args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("neither ./huizhen.yaml nor ./data exists")
                && err.contains("huizhen init"),
            "{args:?}: {err}"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "{args:?} created something"
        );
    }
    let out = huizhen_in(dir.path(), &["init"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("data").is_dir());
    let out = huizhen_in(dir.path(), &["messages", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ID "));
    // Store options on a command that uses no store are refused, not ignored.
    let out = huizhen_in(
        dir.path(),
        &["--database-url", "sqlite://x.db", "hl7", "parse", "f.hl7"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--database-url does not apply to `huizhen hl7`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A closed stdout (`huizhen messages show ID | head -1` once head has exited) ends the command
/// quietly with status 0, never a panic; times print as ISO 8601, or epoch with `--epoch`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_stdout_ends_quietly_and_times_are_iso() {
    use huizhen_core::store::{Journal, JournalOptions, Store, StoreOptions};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let cfg = dir.path().join("huizhen.yaml");
    std::fs::write(
        &cfg,
        format!(
            "version: 1\nstore: {{ url: \"sqlite://{d}/h.db\" }}\nsecurity:\n  jwt_secret_file: {d}/jwt.secret\n  encryption: {{ keys_file: {d}/keys }}\n  audit: {{ key_file: {d}/audit.key, checkpoint_file: {d}/audit.checkpoints }}\nobjects: {{ dir: {d}/objects }}\npipelines: []\n"
        ),
    )
    .unwrap();
    let (root, _) = huizhen_core::config::load_root(Some(cfg.as_path())).unwrap();
    let keyring = huizhen_core::crypto::Keyring::from_config(&root.security.encryption).unwrap();
    let store = Store::open(&StoreOptions::new(root.store.url.clone()))
        .await
        .unwrap()
        .with_keyring(keyring);
    store.migrate().await.unwrap();
    let j = Journal::start(store.clone(), JournalOptions::default());
    let a = j
        .append(huizhen_core::message::NewMessage::new(
            "p",
            "clinic",
            "json",
            b"{\"a\":1}\n{\"b\":2}".to_vec(),
        ))
        .await
        .unwrap();
    let c = cfg.to_str().unwrap();
    for args in [
        &["messages", "show", a.id.as_str()][..],
        &["messages", "list"],
        &["backlog"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_huizhen"))
            .args(["-c", c])
            .args(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.contains("Broken pipe"), "{args:?}: {err}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_huizhen"))
        .args(["-c", c, "messages", "show", &a.id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let at = v["received_at"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(at).is_ok() && at.ends_with('Z'),
        "{at}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_huizhen"))
        .args(["-c", c, "messages", "show", &a.id, "--epoch"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["received_at"].as_i64().unwrap() > 1_700_000_000_000);
    // `--wide` shows the columns the narrow table leaves out.
    let out = Command::new(env!("CARGO_BIN_EXE_huizhen"))
        .args(["-c", c, "messages", "list", "--wide"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let head = table.lines().next().unwrap_or_default();
    assert!(
        head.contains("FACILITY") && head.contains("SOURCE"),
        "{table}"
    );
    assert!(table.contains("clinic"), "{table}");
}

/// The top-level help lists every command; a command's help shows the store options only
/// where it uses a store, and every option has a description.
#[test]
fn help_lists_every_command_and_only_applicable_options() {
    let out = huizhen(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "run", "init", "validate", "test", "tap", "replay", "messages", "backlog", "migrate",
        "hl7", "dicom", "token", "apikey", "audit", "keys", "export", "plugin", "patients",
        "devices", "experts", "opinion", "billing",
    ] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{cmd} "))),
            "{cmd} not in:\n{help}"
        );
    }
    let help_of = |args: &[&str]| {
        let mut a = args.to_vec();
        a.push("--help");
        let out = huizhen(&a);
        assert!(out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for args in [
        &["hl7", "parse"][..],
        &["dicom", "echo"],
        &["opinion", "testca"],
    ] {
        let h = help_of(args);
        assert!(
            !h.contains("--database-url") && !h.contains("--config"),
            "{args:?}:\n{h}"
        );
    }
    for args in [
        &["messages", "list"][..],
        &["backlog"],
        &["token", "issue"],
        &["run"],
    ] {
        let h = help_of(args);
        assert!(
            h.contains("--database-url") && h.contains("--config"),
            "{args:?}:\n{h}"
        );
    }
    let h = help_of(&["validate"]);
    assert!(
        h.contains("--config") && !h.contains("--database-url"),
        "{h}"
    );
    let h = help_of(&["messages", "list"]);
    assert!(h.contains("--wide") && h.contains("--epoch"), "{h}");
    let h = help_of(&["messages", "reprocess"]);
    assert!(h.contains("--include-refused"), "{h}");
}

/// `hl7 parse` reads a file with an empty MSH-18 in the listener's default charset (GB18030),
/// and says what to try when the bytes do not decode.
#[test]
fn hl7_parse_defaults_to_the_listeners_charset_and_hints() {
    let dir = tempfile::tempdir().unwrap();
    let text = "MSH|^~\\&|HIS|县医院|HZ|HZ|20260101120000||ADT^A01|C-1|P|2.5\rPID|1||P1||张^三丰\r";
    let (gb, _, _) = encoding_rs::GB18030.encode(text);
    let file = dir.path().join("gb.hl7");
    std::fs::write(&file, &gb).unwrap();
    let out = huizhen(&["hl7", "parse", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("# charset: gb18030"), "{printed}");
    assert!(
        printed
            .lines()
            .any(|l| l.starts_with("PID-5.2") && l.ends_with("三丰")),
        "{printed}"
    );
    // Declared UTF-8, but GB18030 bytes: an error with a hint.
    let declared = "MSH|^~\\&|HIS|HOSP|HZ|HZ|20260101120000||ADT^A01|C-2|P|2.5||||||UNICODE UTF-8\rPID|1||P1||张^三丰\r";
    let (bad, _, _) = encoding_rs::GB18030.encode(declared);
    let file = dir.path().join("bad.hl7");
    std::fs::write(&file, &bad).unwrap();
    let out = huizhen(&["hl7", "parse", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hint: the bytes are not UTF-8"), "{err}");
}

/// `huizhen compliance record` (CN-41): the data map of the checked configuration, per
/// pipeline what it reads, keeps and sends where, as text and JSON, with no secret; a broken
/// configuration gives no record (exit 1, the errors).
#[test]
fn compliance_record_maps_each_pipeline_and_prints_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("pipelines")).unwrap();
    std::fs::write(
        d.join("huizhen.yaml"),
        "version: 1\nstore: { url: \"postgres://hz:db-pass@10.0.0.5/huizhen\" }\npipelines: [\"pipelines/*.yaml\"]\n",
    )
    .unwrap();
    std::fs::write(
        d.join("pipelines/lis.yaml"),
        "version: 1\nname: lis\nfacility: county-1\nsource:\n  mllp: { listen: 127.0.0.1:0, allow: [127.0.0.1/32] }\nsteps:\n  - match_patient: {}\n  - route: { to: to-his }\nsinks:\n  - journal: {}\n---\nversion: 1\nname: to-his\nfacility: county-1\nsource:\n  internal: {}\nsinks:\n  - http: { url: \"https://lab:s3cret@his.example.cn/results?token=t0k3n\" }\n",
    )
    .unwrap();
    let root = d.join("huizhen.yaml");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_huizhen"))
            .arg("-c")
            .arg(&root)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["compliance", "record"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Pipeline lis (facility county-1"), "{text}");
    assert!(
        text.contains("HL7 v2 over MLLP on 127.0.0.1:0, peers 127.0.0.1/32"),
        "{text}"
    );
    assert!(text.contains("the identity index"), "{text}");
    assert!(
        text.contains("HTTP POST https://lab:***@his.example.cn/results?token=***"),
        "{text}"
    );
    assert!(
        text.contains("postgres://hz:***@10.0.0.5/huizhen"),
        "{text}"
    );
    for secret in ["s3cret", "t0k3n", "db-pass"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    let out = run(&["compliance", "record", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let to_his = &v["pipelines"][1];
    assert_eq!(to_his["name"], "to-his");
    // The routed pipeline carries what its sender handles: identity and medical records.
    let cats = to_his["sends"][0]["categories"].as_array().unwrap();
    assert!(
        cats.iter()
            .any(|c| c.as_str().unwrap().contains("identity")),
        "{v}"
    );
    std::fs::write(d.join("pipelines/bad.yaml"), "version: 1\nname: Bad Name\n").unwrap();
    let out = run(&["compliance", "record"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.yaml"));
}

/// The log on stderr: no colour escape codes when stderr is not a terminal (a file, a pipe,
/// journald), and one JSON object per line with `--log-format json`.
#[test]
fn logs_are_plain_off_a_terminal_and_json_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let out = huizhen_in(dir.path(), &["init"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("INFO") && text.contains("created a new data key file"),
        "{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "escape codes in a piped log: {text:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let out = huizhen_in(dir.path(), &["--log-format", "json", "init"]);
    assert!(out.status.success(), "{out:?}");
    let json = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = json
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "INFO"
            && l["message"] == "created a new data key file"
            && l["file"].as_str().is_some_and(|f| f.ends_with("keys"))),
        "{json}"
    );
    assert!(!json.contains('\u{1b}'), "{json:?}");
}
