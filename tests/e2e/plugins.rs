//! WASM plugins through the real `huizhen` binary, as a vendor and an integrator use them:
//! `plugin build` the examples, `plugin test` each against its fixtures, `plugin keygen | sign |
//! verify`, a scaffolded plugin built and tested, then a running engine that lists its plugins
//! on `GET /api/plugins`, picks up a new version dropped into its folder, refuses a tampered one
//! (the old version keeps serving) and reloads on `POST /api/plugins/{name}/reload`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use huizhen_core::security::{Role, SecurityConfig};

const SECRET: &str = "e2e-plugins-secret-0123456789abcdef";
const EXAMPLES: [&str; 4] = [
    "expert-score",
    "triage-keywords",
    "coverage-basic",
    "route-by-facility",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn huizhen(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_huizhen"))
        .args(args)
        .current_dir(dir)
        // Guest builds share the plugins' target folder (incremental across test runs).
        .env("CARGO_TARGET_DIR", repo().join("plugins/target"))
        .output()
        .unwrap()
}

fn ok(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn token(role: Role) -> String {
    huizhen_core::security::issue_from_config(
        &SecurityConfig {
            jwt_secret: Some(SECRET.into()),
            ..SecurityConfig::default()
        },
        "vendor-ops",
        role,
        "*",
        Duration::from_secs(600),
    )
    .unwrap()
    .token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_test_sign_and_hot_swap_through_the_cli_and_the_api() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let dist = dir.join("dist");

    // Build the examples and run each against its fixtures.
    let out = ok(&huizhen(
        &repo(),
        &[
            "plugin",
            "build",
            "plugins",
            "--out",
            dist.to_str().unwrap(),
        ],
    ));
    for name in EXAMPLES {
        assert!(out.contains(&format!("built {name}-0.1.0")), "{out}");
        let pkg = dist.join(format!("{name}-0.1.0"));
        let fixtures = repo().join(format!("plugins/{name}/fixtures"));
        let report = ok(&huizhen(
            dir,
            &[
                "plugin",
                "test",
                pkg.to_str().unwrap(),
                "--fixtures",
                fixtures.to_str().unwrap(),
            ],
        ));
        assert!(report.contains(" 0 failed"), "{report}");
        assert!(!report.contains("FAIL"), "{report}");
    }

    // A wrong expectation fails with the JSON path named, and exit 1.
    let bad = dir.join("bad-fixtures");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("wrong.json"),
        r#"{"input": {"case": {}, "expert": {"years": 10}}, "expected": {"total": 21.0, "contributions": [{"feature": "years", "points": 20.0}]}}"#,
    )
    .unwrap();
    let out = huizhen(
        dir,
        &[
            "plugin",
            "test",
            dist.join("expert-score-0.1.0").to_str().unwrap(),
            "--fixtures",
            bad.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("FAIL  wrong.json") && text.contains("$.total: expected 21, got 20"),
        "{text}"
    );

    // Keys and signatures.
    let out = ok(&huizhen(dir, &["plugin", "keygen", "--out", "vendor.pem"]));
    let public = out
        .lines()
        .find_map(|l| l.strip_prefix("public key:"))
        .unwrap()
        .trim()
        .to_owned();
    for name in EXAMPLES {
        let pkg = dist.join(format!("{name}-0.1.0"));
        ok(&huizhen(
            dir,
            &[
                "plugin",
                "sign",
                pkg.to_str().unwrap(),
                "--key",
                "vendor.pem",
            ],
        ));
    }
    let trust = format!("acme={public}");
    let out = ok(&huizhen(
        dir,
        &[
            "plugin",
            "verify",
            dist.join("expert-score-0.1.0").to_str().unwrap(),
            "--trust",
            &trust,
        ],
    ));
    assert!(
        out.contains("ok: expert-score@0.1.0 (scorer world"),
        "{out}"
    );
    assert!(out.contains("signed by acme"), "{out}");
    let out = huizhen(
        dir,
        &[
            "plugin",
            "verify",
            dist.join("expert-score-0.1.0").to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no key is trusted"),
        "{out:?}"
    );

    // A scaffolded plugin builds and passes its own fixture.
    let sdk = repo().join("sdk");
    ok(&huizhen(
        dir,
        &[
            "plugin",
            "new",
            "my-rule",
            "--world",
            "rule",
            "--sdk",
            sdk.to_str().unwrap(),
        ],
    ));
    let crate_dir = dir.join("my-rule");
    let out = ok(&huizhen(&crate_dir, &["plugin", "build"]));
    assert!(
        out.contains("built my-rule-0.1.0 (rule world, huizhen-sdk 0.1.0)"),
        "{out}"
    );
    let out = ok(&huizhen(
        &crate_dir,
        &[
            "plugin",
            "test",
            "dist/my-rule-0.1.0",
            "--fixtures",
            "fixtures",
        ],
    ));
    assert!(out.contains("1 passed, 0 failed"), "{out}");

    // An engine with the signed examples in its plugin folder.
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for name in ["expert-score", "route-by-facility"] {
        copy_dir(
            &dist.join(format!("{name}-0.1.0")),
            &plugins.join(format!("{name}-0.1.0")),
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::create_dir_all(dir.join("pipelines")).unwrap();
    std::fs::write(
        dir.join("huizhen.yaml"),
        format!(
            "version: 1\nstore: {{ url: \"sqlite://{}/j.db\" }}\nhttp: {{ bind: \"127.0.0.1:{port}\" }}\nsecurity:\n  jwt_secret: \"{SECRET}\"\n  encryption: {{ keys_file: keys }}\nplugins:\n  dir: plugins\n  trusted_keys: {{ acme: \"{public}\" }}\npipelines: [\"pipelines/*.yaml\"]\n",
            dir.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("pipelines/intake.yaml"),
        "version: 1\nname: intake\nsource:\n  http: { path: /in/adt, kind: hl7v2 }\nsteps:\n  - plugin: { name: route-by-facility, config: { default: adt } }\nsinks:\n  - journal: {}\n---\nversion: 1\nname: adt\nsource:\n  http: { path: /in/adt2, kind: hl7v2 }\nsinks:\n  - journal: {}\n",
    )
    .unwrap();
    // `validate` given a path checks it under ./huizhen.yaml (or -c): the signed plugin is
    // trusted there, as at run time; without the root it is refused.
    for args in [
        &["validate", "pipelines/"][..],
        &["-c", "huizhen.yaml", "validate", "pipelines/intake.yaml"],
        &["validate", "huizhen.yaml", "pipelines/intake.yaml"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_huizhen"))
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let elsewhere = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_huizhen"))
        .arg("validate")
        .arg(dir.join("pipelines/intake.yaml"))
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "without the root config the signed plugin is not accepted"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_huizhen"))
        .args(["-c", "huizhen.yaml", "run"])
        .current_dir(dir)
        .stdout(std::fs::File::create(dir.join("stdout.log")).unwrap())
        .stderr(std::fs::File::create(dir.join("engine.log")).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let admin = token(Role::Admin);
    let list = || {
        let (client, base, admin) = (client.clone(), base.clone(), admin.clone());
        async move {
            let r = client
                .get(format!("{base}/api/plugins"))
                .bearer_auth(&admin)
                .send()
                .await
                .ok()?;
            if !r.status().is_success() {
                return None;
            }
            let v: serde_json::Value = r.json().await.ok()?;
            Some(v["plugins"].as_array().cloned().unwrap_or_default())
        }
    };
    let find = |plugins: &[serde_json::Value], name: &str| {
        plugins.iter().find(|p| p["name"] == name).cloned()
    };
    let listed = crate::support::wait_for(
        "the engine lists its plugins",
        Duration::from_secs(30),
        || {
            let l = list();
            async move { l.await.filter(|p| p.len() == 2) }
        },
    )
    .await;
    let score = find(&listed, "expert-score").unwrap();
    assert_eq!(score["version"], "0.1.0");
    assert_eq!(score["world"], "scorer");
    assert_eq!(score["signed_by"], "acme");
    assert_eq!(score["sdk"], "0.1.0");
    assert_eq!(score["sha256"].as_str().unwrap().len(), 64);
    assert!(score["loaded_at"].is_string());

    // A message through the rule plugin counts as a call.
    let r = client
        .post(format!("{base}/in/adt"))
        .bearer_auth(token(Role::Integrator))
        .body("MSH|^~\\&|HIS|乡镇卫生院|HZ|P|20261124||ADT^A04|9|P|2.5\rPID|1\r")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    crate::support::wait_for(
        "the rule plugin was called",
        Duration::from_secs(20),
        || {
            let l = list();
            async move {
                l.await
                    .and_then(|p| find(&p, "route-by-facility"))
                    .filter(|r| r["calls"] == 1 && r["latency_us"]["p50"].is_number())
            }
        },
    )
    .await;

    // Drop version 0.2.0 in: picked up without a restart.
    let v2 = plugins.join("expert-score-0.2.0");
    copy_dir(&dist.join("expert-score-0.1.0"), &v2);
    let manifest = v2.join("plugin.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace("version = \"0.1.0\"", "version = \"0.2.0\""),
    )
    .unwrap();
    ok(&huizhen(
        dir,
        &[
            "plugin",
            "sign",
            v2.to_str().unwrap(),
            "--key",
            "vendor.pem",
        ],
    ));
    crate::support::wait_for("0.2.0 is swapped in", Duration::from_secs(30), || {
        let l = list();
        async move {
            l.await
                .and_then(|p| find(&p, "expert-score"))
                .filter(|s| s["version"] == "0.2.0")
        }
    })
    .await;

    // A tampered 0.3.0: refused, 0.2.0 keeps serving, the reason is on the API.
    let v3 = plugins.join("expert-score-0.3.0");
    copy_dir(&v2, &v3);
    let text = std::fs::read_to_string(v3.join("plugin.toml")).unwrap();
    std::fs::write(
        v3.join("plugin.toml"),
        text.replace("version = \"0.2.0\"", "version = \"0.3.0\""),
    )
    .unwrap();
    let s = crate::support::wait_for(
        "the tampered package is refused",
        Duration::from_secs(30),
        || {
            let l = list();
            async move {
                l.await
                    .and_then(|p| find(&p, "expert-score"))
                    .filter(|s| s["load_failures"].as_u64() >= Some(1))
            }
        },
    )
    .await;
    assert_eq!(s["version"], "0.2.0");
    let e = s["last_error"]["message"].as_str().unwrap();
    assert!(e.contains("signature refused"), "{e}");

    // Reload on request: refused while 0.3.0 is the newest, fine once it is gone; auditors may
    // look but not reload.
    let r = client
        .post(format!("{base}/api/plugins/expert-score/reload"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    std::fs::remove_dir_all(&v3).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = client
        .post(format!("{base}/api/plugins/expert-score/reload"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["version"], "0.2.0");
    let r = client
        .post(format!("{base}/api/plugins/expert-score/reload"))
        .bearer_auth(token(Role::Auditor))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = client
        .post(format!("{base}/api/plugins/nope/reload"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}
