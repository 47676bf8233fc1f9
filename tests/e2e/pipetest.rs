//! `huizhen test` (the pipelines' own test files) and `huizhen validate`'s every-error report,
//! run as a user runs them: the binary, in the repository's folder.

use std::process::Command;

fn huizhen(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_huizhen"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .env_remove("RUST_LOG")
        .output()
        .expect("run huizhen")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_shipped_pipelines_pass_their_own_tests() {
    let out = huizhen(&["test"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("pipelines/demo.test.yaml"), "{all}");
    assert!(
        all.contains(
            "  ok    an HL7 admission from the county HIS (GB18030) goes to patient administration"
        ),
        "{all}"
    );
    assert!(all.contains(" 0 failed (1 test file)"), "{all}");
    // The engines a test starts log errors only: the report is the output.
    assert!(!all.contains(" INFO "), "{all}");
}

#[test]
fn a_failing_case_prints_what_differs_and_its_trail_and_exits_1() {
    let out = huizhen(&["test", "tests/e2e/golden/pipetest/failing.test.yaml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let got = String::from_utf8_lossy(&out.stdout);
    let golden = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/e2e/golden/pipetest/failing.out"
    );
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(golden, got.as_bytes()).unwrap();
    }
    let want = std::fs::read_to_string(golden).unwrap();
    assert_eq!(
        got, want,
        "the report differs from {golden} (UPDATE_GOLDEN=1 rewrites it)"
    );
}

#[test]
fn a_test_file_with_errors_names_them_with_positions_and_exits_2() {
    let out = huizhen(&["test", "tests/e2e/golden/pipetest/broken.test.yaml"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains("broken.test.yaml:6:24: error: unknown value `passed`, expected one of `pass`, `drop`, `route`, `dead`; did you mean `pass`?"),
        "{all}"
    );
    // A test file is validated as one, not as a pipeline.
    let out = huizhen(&["validate", "tests/e2e/golden/pipetest/broken.test.yaml"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("broken.test.yaml:6:24: error: unknown value `passed`"),
        "{all}"
    );
}

#[test]
fn a_pipeline_the_test_names_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.test.yaml");
    std::fs::write(
        &f,
        "version: 1\npipeline: dmeo\ncases:\n  - name: x\n    input: { json: {} }\n    expect: { outcome: pass }\n",
    )
    .unwrap();
    let out = huizhen(&["test", f.to_str().unwrap()]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains("x.test.yaml:2:11: error: pipeline: no pipeline \"dmeo\" is loaded; did you mean \"demo\"?"),
        "{all}"
    );
}

/// The example: a misspelt key, a misspelt step type and a broken expression in one
/// file are all reported, with the function a linked message kind adds (`hl7`) suggested for
/// `hl8`, and the file's route to a pipeline that does not exist.
#[test]
fn validate_reports_every_error_of_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("labs.yaml");
    std::fs::write(
        &f,
        "version: 1
name: labs
sourse:
  mllp: { listen: 127.0.0.1:2575 }
steps:
  - filtr: { expr: \"hl7('MSH-9.1') == 'ORU'\" }
  - route: { to: critical, when: \"hl8('OBX-8') == 'HH'\" }
  - filter: { expr: \"body.results.exist(r, r.flag == 'HH')\" }
  - route: { to: nowhere }
sinks:
  - journal: {}
",
    )
    .unwrap();
    let out = huizhen(&["validate", f.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for want in [
        "labs.yaml:3:1: error: unknown key `sourse`",
        "did you mean `source`?",
        "labs.yaml:6:5: error: unknown type `filtr`",
        "labs.yaml:7:34: error: invalid CEL expression \"hl8('OBX-8') == 'HH'\": unknown function hl8(); did you mean \"hl7\"?",
        "labs.yaml:8:21: error: invalid CEL expression \"body.results.exist(r, r.flag == 'HH')\": unknown function .exist(); did you mean \"exists\"?",
        "labs.yaml:9:18: error: steps[3]: route target \"nowhere\" is not a known pipeline",
        "5 errors",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}
