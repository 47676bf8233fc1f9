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
