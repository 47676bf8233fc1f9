//! Golden-file tests for config error messages.
//!
//! Every case in `tests/config_errors/` is either a pipeline file `NAME.yaml` or a folder
//! `NAME/` (several pipelines, or a root `huizhen.yaml`), checked as `huizhen validate` checks
//! it. The rendered errors must equal `NAME.err` exactly. After a deliberate change to a
//! message, regenerate the goldens with
//!
//! ```sh
//! UPDATE_GOLDEN=1 cargo test -p huizhen-core --test config_errors
//! ```
//!
//! and review the diff of the `.err` files.

use std::path::{Path, PathBuf};

use huizhen_core::config::validate_paths;

/// Relative to the crate folder, which is where cargo runs integration tests; the paths in
/// the messages therefore come out as `tests/config_errors/…` on every machine.
const CASES: &str = "tests/config_errors";

struct Case {
    name: String,
    input: PathBuf,
    golden: PathBuf,
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut goldens = Vec::new();
    for entry in std::fs::read_dir(CASES).expect("read tests/config_errors") {
        let path = entry.expect("read tests/config_errors").path();
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let ext = path.extension().and_then(|x| x.to_str());
        let stem = path
            .file_stem()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let name = if path.is_dir() {
            file_name
        } else if matches!(ext, Some("yaml" | "yml")) {
            stem
        } else {
            if ext == Some("err") {
                goldens.push(stem.to_owned());
            }
            continue;
        };
        cases.push(Case {
            name: name.to_owned(),
            // Built from the relative base so that printed paths stay relative.
            input: Path::new(CASES).join(file_name),
            golden: Path::new(CASES).join(format!("{name}.err")),
        });
    }
    for g in goldens {
        assert!(
            cases.iter().any(|c| c.name == g),
            "{CASES}/{g}.err has no {g}.yaml or {g}/ next to it"
        );
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    cases
}

/// What `huizhen validate` would print for `input`, with `/` as the path separator.
fn render(input: &Path) -> String {
    let text = match validate_paths(&[input.to_path_buf()]) {
        Ok(n) => format!("unexpectedly valid: {n} file(s) checked, no errors"),
        Err(errors) => errors.to_string(),
    };
    let text = if cfg!(windows) {
        text.replace('\\', "/")
    } else {
        text
    };
    format!("{text}\n")
}

#[test]
fn config_errors_match_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v != "0" && !v.is_empty());
    let cases = cases();
    assert!(cases.len() >= 12, "only {} cases found", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let actual = render(&case.input);
        if update {
            std::fs::write(&case.golden, &actual)
                .unwrap_or_else(|e| panic!("write {}: {e}", case.golden.display()));
            continue;
        }
        match std::fs::read_to_string(&case.golden) {
            Ok(expected) if expected.replace("\r\n", "\n") == actual => {}
            Ok(expected) => failures.push(format!(
                "case {} ({}): output differs from {} (- expected, + actual):\n{}",
                case.name,
                case.input.display(),
                case.golden.display(),
                huizhen_core::pipetest::diff(&expected.replace("\r\n", "\n"), &actual)
            )),
            Err(e) => failures.push(format!(
                "case {}: cannot read {}: {e}; actual output:\n{actual}",
                case.name,
                case.golden.display()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} config error cases failed:\n\n{}\n\
         If the new messages are intended, run \
         `UPDATE_GOLDEN=1 cargo test -p huizhen-core --test config_errors` and review the .err diff.",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
