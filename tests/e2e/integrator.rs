//! Issue 22, items 2–4, as an integrator uses them: `huizhen tap` on a running engine,
//! `huizhen replay` of stored messages through a changed pipeline (no sink called), and a
//! plugin step with a shadow version whose disagreements are counted, sampled and promoted.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use huizhen_core::Engine;
use huizhen_core::message::NewMessage;
use serde_json::json;

use crate::crash::{authed_client, start, wait_ready, write_config};
use crate::support::{Backend, fresh_db, get_json, wait_for};

/// The demo's referral pipeline, with an `http` sink to `sink_port` (a counting stand-in).
fn referrals(sink_port: u16, department: &str) -> String {
    format!(
        "version: 1
name: demo
facility: demo-clinic
source:
  http: {{ path: /in/demo, kind: json }}
steps:
  - filter: {{ expr: \"body.type == 'referral'\" }}
  - set:
      headers:
        department: \"{department}\"
sinks:
  - journal: {{}}
  - http: {{ url: \"http://127.0.0.1:{sink_port}/referrals\", timeout: 2s }}
"
    )
}

/// A stand-in destination that answers 200 and counts what it gets.
async fn counting_receiver() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    let app = axum::Router::new().fallback(move || {
        let c = c.clone();
        async move {
            c.fetch_add(1, Ordering::SeqCst);
            "ok"
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, count)
}

/// `huizhen run` on `pipeline` (its root in the test's folder), ready: the root file, the
/// HTTP port, the process and an admin client.
async fn run_engine(
    db: &crate::support::TestDb,
    pipeline: &str,
) -> (
    std::path::PathBuf,
    u16,
    std::process::Child,
    reqwest::Client,
) {
    let setup = write_config(db, pipeline);
    let log = db.dir.path().join("run.log");
    let mut engine = start(&setup, &log);
    let client = authed_client(Duration::from_secs(30));
    wait_ready(&client, setup.port, &mut engine, &log).await;
    (setup.config, setup.port, engine, client)
}

fn huizhen(root: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_huizhen"));
    c.arg("-c").arg(root).env("RUST_LOG", "warn");
    c
}

/// `huizhen tap demo.set#1` shows a live message of the demo as it passes the step: redacted,
/// then with `--phi` the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_shows_a_live_message_of_the_demo() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let (sink, _) = counting_receiver().await;
    let (root, http, mut engine, client) =
        run_engine(&db, &referrals(sink, "body.department")).await;

    for phi in [false, true] {
        let mut tap = huizhen(&root);
        tap.args(["tap", "demo.set#1", "-n", "1"]);
        if phi {
            tap.arg("--phi");
        }
        let mut tap = tap
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The tap is open once it says so.
        let mut err = BufReader::new(tap.stderr.take().unwrap());
        let mut first = String::new();
        err.read_line(&mut first).unwrap();
        assert!(first.starts_with("tapping demo at set#1"), "{first}");
        let r = client
            .post(format!("http://127.0.0.1:{http}/in/demo"))
            .json(&json!({ "type": "referral", "department": "cardiology", "patient": { "name": "王芳" } }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        let id = r.json::<serde_json::Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let out = tokio::task::spawn_blocking(move || tap.wait_with_output().unwrap())
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(
            stdout.contains("demo/set#1  continue") && stdout.contains(&id),
            "{stdout}"
        );
        if phi {
            assert!(stdout.contains("department=cardiology"), "{stdout}");
            assert!(stdout.contains("王芳"), "{stdout}");
        } else {
            assert!(stdout.contains("department=«redacted»"), "{stdout}");
            assert!(
                !stdout.contains("王芳") && !stdout.contains("cardiology"),
                "{stdout}"
            );
        }
    }
    crate::support::signal(&engine, "-TERM");
    let _ = engine.wait();
}

/// `huizhen replay` re-runs the stored messages of `demo` through a changed pipeline file: it
/// reports the one message whose outcome and headers would change, and calls no sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reports_what_a_changed_pipeline_would_change_without_sink_effects() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let (sink, delivered) = counting_receiver().await;
    let (root, http, mut engine, client) =
        run_engine(&db, &referrals(sink, "body.department")).await;
    let mut ids = Vec::new();
    for body in [
        json!({ "type": "referral", "department": "cardiology" }),
        json!({ "type": "referral" }),
        json!({ "type": "cancel" }),
    ] {
        let r = client
            .post(format!("http://127.0.0.1:{http}/in/demo"))
            .json(&body)
            .send()
            .await
            .unwrap();
        ids.push(
            r.json::<serde_json::Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // The referral without a department fails its 5 attempts slowly; the others finish.
    wait_for("two messages finished", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let v = get_json(
                &client,
                &format!("http://127.0.0.1:{http}/api/messages?pipeline=demo&state=done"),
            )
            .await?;
            (v["messages"].as_array()?.len() == 2).then_some(())
        }
    })
    .await;
    crate::support::signal(&engine, "-TERM");
    let _ = engine.wait();
    let before = delivered.load(Ordering::SeqCst);
    assert_eq!(before, 1, "the live engine delivered the one referral");

    // The candidate: a referral without a department goes to `general`.
    let candidate = db.dir.path().join("candidate.yaml");
    std::fs::write(
        &candidate,
        referrals(sink, "has(body.department) ? body.department : 'general'"),
    )
    .unwrap();
    let out = huizhen(&root)
        .args(["replay", "--pipeline", "demo", "--since", "1h", "--config"])
        .arg(&candidate)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("replay of demo: 3 messages"), "{stdout}");
    assert!(stdout.contains("2 the same, 1 would change"), "{stdout}");
    assert!(stdout.contains(&ids[1]), "{stdout}");
    assert!(
        stdout.contains("outcome: dead (set#1:") && stdout.contains("→ pass"),
        "{stdout}"
    );
    assert!(
        stdout.contains("demo/journal#0: not reached → reached")
            || stdout.contains("demo/journal#0: header \"department\": absent → \"general\""),
        "{stdout}"
    );
    // No sink was called, and the store the messages came from holds no new message.
    assert_eq!(delivered.load(Ordering::SeqCst), before);
    let listed = huizhen(&root)
        .args(["messages", "list", "--pipeline", "demo", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap_or_default();
    assert_eq!(
        v["messages"].as_array().map(Vec::len),
        Some(3),
        "{}",
        String::from_utf8_lossy(&listed.stdout)
    );
    // The same pipeline as the candidate: nothing would change, exit 0.
    let same = db.dir.path().join("same.yaml");
    std::fs::write(&same, referrals(sink, "body.department")).unwrap();
    let out = huizhen(&root)
        .args(["replay", "--pipeline", "demo", "--since", "1h", "--config"])
        .arg(&same)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("3 the same, 0 would change"), "{stdout}");
    assert_eq!(delivered.load(Ordering::SeqCst), before);
}

/// A plugin step with a shadow version: of 10 messages the two versions decide differently on
/// exactly the 3 from facility B; the counts, the samples (with their message ids) and the
/// metric say so; promoted for the pipeline's facility the shadow decides (B's messages go
/// where it routes them), rolled back the primary decides again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_version_reports_where_it_disagrees_and_is_promoted_and_rolled_back() {
    let wasm = crate::support::paced::guest("route-by-facility");
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let main = format!(
        "version: 1
name: intake
facility: hosp-a
source:
  internal: {{}}
steps:
  - plugin:
      path: \"{w}\"
      config: {{ COUNTY-A: to-a, default: to-other }}
      shadow:
        path: \"{w}\"
        config: {{ COUNTY-A: to-a, COUNTY-B: to-b, default: to-other }}
sinks:
  - journal: {{}}
",
        w = wasm.display()
    );
    let sink = |name: &str| {
        format!(
            "version: 1\nname: {name}\nfacility: hosp-a\nsource:\n  internal: {{}}\nsinks:\n  - journal: {{}}\n"
        )
    };
    let (a, b, other) = (sink("to-a"), sink("to-b"), sink("to-other"));
    let mut l = crate::support::loaded_with_plugins(
        &db,
        &[&main, &a, &b, &other],
        huizhen_core::config::PluginsConfig {
            allow_unsigned: true,
            dir: db.dir.path().join("no-plugins"),
            ..Default::default()
        },
    );
    l.root.security = crate::security::security_config();
    let engine = Engine::start(l).await.unwrap();
    let base = crate::support::serve(&engine, &crate::security::security_config()).await;
    let admin = crate::security::token(huizhen_core::security::Role::Admin, "hosp-a");
    let client = reqwest::Client::new();

    let send = |facility: &str, n: usize| {
        format!("MSH|^~\\&|HIS|{facility}|HZ|P|20261206||ADT^A01|C{n}|P|2.5\rPID|1||P{n}\r")
    };
    let intake = engine.pipeline("intake").unwrap();
    let mut from_b = Vec::new();
    for n in 0..10 {
        let facility = if n % 3 == 0 && n > 0 {
            "COUNTY-B"
        } else {
            "COUNTY-A"
        };
        let m = NewMessage::new("intake", "hosp-a", "hl7v2", send(facility, n).into_bytes());
        let id = intake.submit(m).await.unwrap().id;
        if facility == "COUNTY-B" {
            from_b.push(id);
        }
    }
    assert_eq!(from_b.len(), 3);
    let count = |pipeline: &'static str| {
        let store = engine.store.clone();
        async move {
            store
                .list(&huizhen_core::store::ListFilter {
                    pipeline: Some(pipeline.into()),
                    limit: Some(100),
                    ..Default::default()
                })
                .await
                .unwrap()
                .messages
                .len()
        }
    };
    wait_for("10 routed", Duration::from_secs(30), || async {
        (count("to-a").await + count("to-other").await == 10).then_some(())
    })
    .await;
    // The primary decided: B went to `default`.
    assert_eq!(count("to-other").await, 3);
    assert_eq!(count("to-b").await, 0);

    let r = client
        .get(format!("{base}/api/pipelines/intake/shadow"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    let s = &v["shadows"][0];
    assert_eq!(s["agree"], 7, "{v}");
    assert_eq!(s["disagree"], 3, "{v}");
    assert_eq!(s["shadow_errors"], 0, "{v}");
    let mut sampled: Vec<String> = s["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["message_id"].as_str().unwrap().to_owned())
        .collect();
    sampled.sort();
    from_b.sort();
    assert_eq!(sampled, from_b, "{v}");
    assert_eq!(s["samples"][0]["primary"], "route(to-other)", "{v}");
    assert_eq!(s["samples"][0]["shadow"], "route(to-b)", "{v}");
    assert_eq!(s["samples"][0]["served"], "primary", "{v}");
    let metrics = engine.metrics.encode();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("huizhen_plugin_shadow_decisions_total{")
                && l.contains("pipeline=\"intake\"")
                && l.contains("result=\"disagree\"")
                && l.ends_with(" 3")),
        "{metrics}"
    );

    let plugin = s["plugin"].as_str().unwrap().to_owned();
    // `promote` or `rollback` for hosp-a with `token`: the status.
    let change = |action: &'static str, token: String| {
        let (client, base, plugin) = (client.clone(), base.clone(), plugin.clone());
        async move {
            client
                .post(format!(
                    "{base}/api/pipelines/intake/shadow/{plugin}/{action}"
                ))
                .bearer_auth(token)
                .json(&json!({ "facility": "hosp-a" }))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // One more message from facility B, then wait until `pipeline` holds `n` messages.
    let from_b_to = |n: usize, pipeline: &'static str, count_to: usize| {
        let intake = intake.clone();
        let m = NewMessage::new(
            "intake",
            "hosp-a",
            "hl7v2",
            send("COUNTY-B", n).into_bytes(),
        );
        async move {
            intake.submit(m).await.unwrap();
            wait_for(pipeline, Duration::from_secs(30), || async {
                (count(pipeline).await == count_to).then_some(())
            })
            .await;
        }
    };

    // Promoted for hosp-a: the shadow decides; B's next message goes to `to-b`.
    assert_eq!(change("promote", admin.clone()).await, 200);
    from_b_to(20, "to-b", 1).await;
    // An integrator may not roll back (plugins are platform settings: admins).
    let integrator = crate::security::token(huizhen_core::security::Role::Integrator, "hosp-a");
    assert_eq!(change("rollback", integrator).await, 403);
    // Rolled back: the primary decides again.
    assert_eq!(change("rollback", admin.clone()).await, 200);
    from_b_to(21, "to-other", 4).await;
    assert_eq!(count("to-b").await, 1);

    // Both changes are on record, with who made them.
    let events = engine
        .store
        .audit_events(&huizhen_core::store::audit::AuditFilter {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    let actions: Vec<(String, String)> = events
        .iter()
        .filter(|e| e.event.action.starts_with("plugin.shadow."))
        .map(|e| (e.event.action.clone(), e.event.outcome.clone()))
        .collect();
    assert!(
        actions.contains(&("plugin.shadow.promote".into(), "success".into()))
            && actions.contains(&("plugin.shadow.rollback".into(), "success".into())),
        "{actions:?}"
    );
    engine.shutdown(Duration::from_secs(5)).await;
}
