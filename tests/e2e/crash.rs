//! Crash safety with the real binary: push messages over HTTP, `kill -9` the engine mid-stream,
//! start it again, resend what was not acknowledged, and check that every message is done
//! exactly once in the sink's effects. Also the HTTP API and the CLI against a running engine.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use huizhen_core::message::State;

use crate::support::{Backend, TestDb, both_backends, fresh_db, signal, store, wait_for};

both_backends!(
    sigkill_mid_stream_loses_nothing_and_duplicates_nothing,
    sigkill_mid_backlog_loses_nothing_and_duplicates_nothing,
    http_api_and_cli_tour
);

const TOTAL: usize = 10_000;

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The engines of these tests sign tokens with this secret.
pub(crate) const TEST_SECRET: &str = "test-secret-0123456789abcdef0123456789";

/// A client that sends an admin token (every facility) with each request.
pub(crate) fn authed_client(timeout: Duration) -> reqwest::Client {
    let cfg = huizhen_core::security::SecurityConfig {
        jwt_secret: Some(TEST_SECRET.into()),
        ..Default::default()
    };
    let token = huizhen_core::security::issue_from_config(
        &cfg,
        "e2e",
        huizhen_core::security::Role::Admin,
        "*",
        Duration::from_secs(3600),
    )
    .unwrap()
    .token;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .timeout(timeout)
        .default_headers(headers)
        .build()
        .unwrap()
}

pub(crate) struct Setup {
    pub(crate) config: PathBuf,
    pub(crate) port: u16,
}

/// The root file of an engine run as a binary, `huizhen.yaml` in the test's folder: its store,
/// the HTTP port, [`TEST_SECRET`], the keys and the audit key in the folder (never in the
/// working directory), `extra` (top-level YAML), and the pipelines in `pipelines/*.yaml`.
pub(crate) fn write_root(db: &TestDb, port: u16, extra: &str) -> PathBuf {
    let dir = db.dir.path();
    std::fs::create_dir_all(dir.join("pipelines")).unwrap();
    let root = dir.join("huizhen.yaml");
    std::fs::write(
        &root,
        format!(
            "version: 1\nstore:\n  url: \"{}\"\nhttp:\n  bind: 127.0.0.1:{port}\n{extra}security:\n  jwt_secret: \"{TEST_SECRET}\"\n  encryption: {{ keys_file: \"{}\" }}\n  audit: {{ key_file: \"{}\", checkpoint_file: \"{}\" }}\npipelines: [\"pipelines/*.yaml\"]\n",
            db.url,
            dir.join("keys").display(),
            dir.join("audit.key").display(),
            dir.join("audit.checkpoints").display(),
        ),
    )
    .unwrap();
    root
}

pub(crate) fn write_config(db: &TestDb, pipeline: &str) -> Setup {
    let port = free_port();
    let config = write_root(db, port, "journal:\n  scheduler_poll: 100ms\n");
    std::fs::write(db.dir.path().join("pipelines/p.yaml"), pipeline).unwrap();
    Setup { config, port }
}

pub(crate) fn start(setup: &Setup, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_huizhen"))
        .arg("-c")
        .arg(&setup.config)
        .arg("run")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start huizhen")
}

pub(crate) async fn wait_ready(client: &reqwest::Client, port: u16, child: &mut Child, log: &Path) {
    let url = format!("http://127.0.0.1:{port}/ready");
    for _ in 0..600 {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "huizhen exited with {status}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if let Ok(r) = client.get(&url).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "huizhen not ready:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Sends `seqs` with `Idempotency-Key: seq-N` from `workers` concurrent tasks. Returns the
/// message id of every 2xx answer. Stops a task at its first connection error.
async fn push(
    client: &reqwest::Client,
    port: u16,
    seqs: Vec<usize>,
    workers: usize,
    acked_counter: Arc<AtomicUsize>,
) -> BTreeMap<usize, String> {
    let queue = Arc::new(std::sync::Mutex::new(seqs));
    let dead = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let client = client.clone();
        let queue = queue.clone();
        let dead = dead.clone();
        let acked_counter = acked_counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = BTreeMap::new();
            loop {
                if dead.load(Ordering::SeqCst) {
                    break;
                }
                let Some(seq) = queue.lock().unwrap().pop() else {
                    break;
                };
                let body = format!(
                    r#"{{"seq":{seq},"patient":"P{}","pad":"{}"}}"#,
                    seq % 97,
                    "x".repeat(900)
                );
                let r = client
                    .post(format!("http://127.0.0.1:{port}/in/crash"))
                    .header("content-type", "application/json")
                    .header("idempotency-key", format!("seq-{seq}"))
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        let v: serde_json::Value = r.json().await.unwrap();
                        acked.insert(seq, v["id"].as_str().unwrap().to_owned());
                        acked_counter.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => {
                        dead.store(true, Ordering::SeqCst);
                        break;
                    }
                }
            }
            acked
        }));
    }
    let mut all = BTreeMap::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

async fn sigkill_mid_stream_loses_nothing_and_duplicates_nothing(b: Backend) {
    kill_and_restart(
        b,
        "version: 1\nname: crash\nsource:\n  http: { path: /in/crash, kind: json }\nconcurrency: 4\nsteps:\n  - set:\n      headers: { patient: \"body.patient\" }\nsinks:\n  - journal: {}\n",
        None,
        TOTAL,
        1,
    )
    .await;
}

/// The journal as the buffer (issue 23): an in-memory queue of 8 and a destination paced at
/// 20 msg/s, so nearly every accepted message waits in the journal, not in memory; the kill comes
/// with at least 100 of them waiting; the engine restarts with the destination back at full
/// speed, and each message is delivered once.
async fn sigkill_mid_backlog_loses_nothing_and_duplicates_nothing(b: Backend) {
    let paced = |rate: u32| {
        format!(
            "version: 1\nname: crash\nsource:\n  http: {{ path: /in/crash, kind: json }}\nconcurrency: 4\nqueue: 8\ndeliver_limit: {{ per_second: {rate}, max_in_flight: 2 }}\nsteps:\n  - set:\n      headers: {{ patient: \"body.patient\" }}\nsinks:\n  - journal: {{}}\n"
        )
    };
    kill_and_restart(b, &paced(20), Some(&paced(100_000)), 3_000, 100).await;
}

/// Pushes `total` messages, `kill -9`s the engine once a third are acknowledged and it holds at
/// least `min_unfinished` accepted but unfinished messages, restarts it (with `after` as the
/// pipeline, when given), resends what was not acknowledged, and checks each message is done
/// exactly once.
async fn kill_and_restart(
    b: Backend,
    pipeline: &str,
    after: Option<&str>,
    total: usize,
    min_unfinished: i64,
) {
    let Some(db) = fresh_db(b).await else { return };
    let setup = write_config(&db, pipeline);
    let log = db.dir.path().join("huizhen.log");
    let client = authed_client(Duration::from_secs(20));
    let mut child = start(&setup, &log);
    wait_ready(&client, setup.port, &mut child, &log).await;

    // Push everything; kill -9 once a third has been acknowledged.
    let counter = Arc::new(AtomicUsize::new(0));
    let pusher = {
        let client = client.clone();
        let counter = counter.clone();
        let port = setup.port;
        tokio::spawn(
            async move { push(&client, port, (0..total).rev().collect(), 16, counter).await },
        )
    };
    while counter.load(Ordering::SeqCst) < total / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The kill comes at a moment the engine holds accepted work it has not finished (frozen
    // with SIGSTOP while the journal is read, so what is read is what it dies with): the
    // restart must finish that work, not only take the resent messages.
    let probe =
        huizhen_core::store::Store::open(&huizhen_core::store::StoreOptions::new(db.url.clone()))
            .await
            .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let unfinished_at_kill = loop {
        signal(&child, "-STOP");
        // What it sent the database before it froze lands (or not) meanwhile.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let unfinished: i64 = probe
            .counts()
            .await
            .unwrap()
            .iter()
            .filter(|(p, st, _)| p == "crash" && matches!(st, State::Received | State::Processing))
            .map(|c| c.2)
            .sum();
        if unfinished >= min_unfinished {
            child.kill().expect("SIGKILL");
            child.wait().unwrap();
            break unfinished;
        }
        signal(&child, "-CONT");
        assert!(
            std::time::Instant::now() < deadline,
            "the engine never held {min_unfinished} unfinished messages: the kill would test nothing"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    probe.close().await;
    eprintln!("killed with {unfinished_at_kill} messages accepted and not finished");
    let first_round = pusher.await.unwrap();
    assert!(
        first_round.len() >= total / 3,
        "acked {}",
        first_round.len()
    );
    assert!(
        first_round.len() < total,
        "the kill came too late to test anything"
    );

    // Restart and resend every message that was not acknowledged.
    if let Some(after) = after {
        std::fs::write(db.dir.path().join("pipelines/p.yaml"), after).unwrap();
    }
    let mut child = start(&setup, &log);
    wait_ready(&client, setup.port, &mut child, &log).await;
    let rest: Vec<usize> = (0..total)
        .filter(|s| !first_round.contains_key(s))
        .collect();
    let second_round = push(&client, setup.port, rest, 16, Arc::new(AtomicUsize::new(0))).await;
    assert_eq!(
        first_round.len() + second_round.len(),
        total,
        "every message acknowledged"
    );

    // The engine sealed the bodies with the key file next to the database.
    let keyring =
        huizhen_core::crypto::Keyring::from_config(&huizhen_core::crypto::EncryptionConfig {
            keys_file: db.dir.path().join("keys"),
            ..Default::default()
        })
        .unwrap();
    let s = store(&db).await.with_keyring(keyring);
    wait_for("every message done", Duration::from_secs(180), || {
        let s = s.clone();
        async move {
            let counts = s.counts().await.unwrap();
            let done = counts
                .iter()
                .filter(|(p, st, _)| p == "crash" && *st == State::Done)
                .map(|c| c.2)
                .sum::<i64>();
            (done as usize == total).then_some(())
        }
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();

    // Without the key, the journal's bodies cannot be read.
    let sealed = store(&db).await.effects(Some("crash")).await;
    assert!(
        matches!(sealed, Err(huizhen_core::store::StoreError::Crypto { .. })),
        "bodies are encrypted at rest"
    );

    // Exactly once: one message per sequence number, one effect per message, every acked id done.
    let effects = s.effects(Some("crash")).await.unwrap();
    assert_eq!(effects.len(), total, "one effect per message");
    let mut per_seq: BTreeMap<i64, usize> = BTreeMap::new();
    for e in &effects {
        let v: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
        *per_seq.entry(v["seq"].as_i64().unwrap()).or_default() += 1;
    }
    assert_eq!(per_seq.len(), total, "every sequence number delivered");
    assert!(
        per_seq.values().all(|&n| n == 1),
        "no sequence number delivered twice"
    );
    let effect_ids: BTreeSet<&str> = effects.iter().map(|e| e.message_id.as_str()).collect();
    for id in first_round.values().chain(second_round.values()) {
        assert!(
            effect_ids.contains(id.as_str()),
            "acked message {id} has no effect"
        );
    }
}

async fn http_api_and_cli_tour(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let setup = write_config(
        &db,
        "version: 1\nname: crash\nsource:\n  http: { path: /in/crash, kind: json }\nretry: { max_attempts: 2, backoff: 10ms }\nsteps:\n  - set:\n      headers: { dept: \"body.dept\" }\nsinks:\n  - journal: {}\n",
    );
    let log = db.dir.path().join("huizhen.log");
    let client = authed_client(Duration::from_secs(30));
    let mut child = start(&setup, &log);
    wait_ready(&client, setup.port, &mut child, &log).await;
    let base = format!("http://127.0.0.1:{}", setup.port);

    let ok: serde_json::Value = client
        .post(format!("{base}/in/crash"))
        .body(r#"{"dept":"cardiology"}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bad: serde_json::Value = client
        .post(format!("{base}/in/crash"))
        .body(r#"{"no_dept":true}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bad_id = bad["id"].as_str().unwrap().to_owned();
    let dead: serde_json::Value = wait_for("dead letter listed", Duration::from_secs(20), || {
        let client = client.clone();
        let url = format!("{base}/api/messages?pipeline=crash&state=dead");
        async move {
            let v: serde_json::Value = client.get(&url).send().await.ok()?.json().await.ok()?;
            (!v["messages"].as_array()?.is_empty()).then_some(v)
        }
    })
    .await;
    assert_eq!(dead["messages"][0]["id"], bad_id.as_str());
    let detail: serde_json::Value = client
        .get(format!("{base}/api/messages/{bad_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["body"], r#"{"no_dept":true}"#);
    assert_eq!(detail["errors"].as_array().unwrap().len(), 2);
    assert!(
        detail["last_error"]
            .as_str()
            .unwrap()
            .contains("No such key: dept"),
        "{detail}"
    );

    // Errors are JSON with a message.
    let r = client
        .get(format!("{base}/api/messages?state=lost"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("unknown state \"lost\"")
    );
    let r = client
        .get(format!("{base}/api/messages/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = client
        .post(format!(
            "{base}/api/messages/{}/reprocess",
            ok["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    // The good one may still be received for a moment; once done it can be reprocessed too.
    assert!(r.status() == 200 || r.status() == 409, "{}", r.status());

    // The CLI sees the same journal.
    let out = Command::new(env!("CARGO_BIN_EXE_huizhen"))
        .args(["-c"])
        .arg(&setup.config)
        .args(["messages", "list", "--state", "dead"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&bad_id), "{text}");

    // Reprocess through the CLI: it fails again (same body), so it ends dead again with 4 errors.
    let out = Command::new(env!("CARGO_BIN_EXE_huizhen"))
        .args(["-c"])
        .arg(&setup.config)
        .args(["messages", "reprocess", &bad_id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        "reprocessed and dead again",
        Duration::from_secs(20),
        || {
            let client = client.clone();
            let url = format!("{base}/api/messages/{bad_id}");
            async move {
                let v: serde_json::Value = client.get(&url).send().await.ok()?.json().await.ok()?;
                (v["state"] == "dead" && v["errors"].as_array()?.len() == 4).then_some(())
            }
        },
    )
    .await;

    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"huizhen_messages_dead_total{pipeline="crash"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"huizhen_journal_messages{pipeline="crash",state="dead"} 1"#));
    let pipelines: serde_json::Value = client
        .get(format!("{base}/api/pipelines"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(pipelines["pipelines"][0]["name"], "crash");
    assert_eq!(pipelines["pipelines"][0]["source"], "http POST /in/crash");

    // SIGTERM: a graceful stop.
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
}
