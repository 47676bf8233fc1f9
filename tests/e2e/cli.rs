//! The `huizhen` binary's offline commands: validate, hl7 parse.

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
