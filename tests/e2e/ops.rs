//! What operators rely on (issue 24, items 4, 7 and 8): a message refused at intake is not
//! reprocessed unless asked explicitly (audited), and no reprocess erases its history; the API
//! shows an HL7 body in GB18030 as text with the charset used; every series of /metrics exists
//! at zero from the start (a golden list of names and labels, `UPDATE_GOLDEN=1` rewrites it).

use std::time::Duration;

use huizhen_core::Engine;
use huizhen_core::message::State;
use huizhen_core::security::Role;
use huizhen_core::store::StoreError;
use huizhen_hl7::mllp::{Deframer, Event, frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::hl7_consultation::free_port;
use crate::security::{security_config, token};
use crate::support::{Backend, JsonApi, fresh_db, journaled, loaded, serve, wait_for};

/// Sends one framed message and returns the ACK's MSA-1.
async fn send(port: u16, msg: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(&frame(msg)).await.unwrap();
    let mut d = Deframer::new(1 << 20);
    let mut buf = vec![0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
            .await
            .expect("an ACK")
            .unwrap();
        assert!(n > 0, "connection closed without an ACK");
        for ev in d.push(&buf[..n]) {
            if let Event::Frame(f) = ev {
                let text = String::from_utf8_lossy(&f).into_owned();
                let msa = text
                    .split(['\r', '\n'])
                    .find(|l| l.starts_with("MSA|"))
                    .unwrap_or_else(|| panic!("no MSA in {text}"));
                return msa.split('|').nth(1).unwrap_or_default().to_owned();
            }
        }
    }
}

async fn mllp_engine(db: &crate::support::TestDb, port: u16) -> Engine {
    let p = format!(
        "version: 1\nname: ops-adt\nsource:\n  mllp: {{ listen: \"127.0.0.1:{port}\" }}\nsinks:\n  - journal: {{}}\n"
    );
    let engine = Engine::start(loaded(db, &[p.as_str()])).await.unwrap();
    wait_for("the MLLP listener", Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
    })
    .await;
    engine
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_message_reprocess_sqlite() {
    refused_message_reprocess(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_message_reprocess_postgres() {
    refused_message_reprocess(Backend::Postgres).await;
}

/// An HL7 v3 header is answered AR and journaled as a dead letter. Reprocessing it is refused
/// (store, API, bulk) until asked with `include_refused`, which is audited; afterwards the
/// message shows its whole history: the refusal, the reprocess, where it is now.
async fn refused_message_reprocess(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let port = free_port();
    let engine = mllp_engine(&db, port).await;
    let base = serve(&engine, &security_config()).await;
    let api = JsonApi::new(base.clone());
    let admin = token(Role::Admin, "*");

    let v3 = b"MSH|^~\\&|LIS|COUNTY|HZ|HZ|20260101120000||ORU^R01|C-V3|P|3.0\rPID|1||P1\r";
    assert_eq!(send(port, v3).await, "AR");
    let refused = journaled(&engine.store, "ops-adt").await;
    assert_eq!(refused.len(), 1);
    let id = refused[0].id.clone();
    assert_eq!(refused[0].state, State::Dead);

    let (status, detail) = api.get(&format!("/api/messages/{id}"), &admin).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["intake"]["verdict"], "refused", "{detail}");
    let reason = detail["intake"]["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("AR"), "{reason}");
    assert_eq!(detail["errors"][0]["step"], "intake", "{detail}");

    // Refused by default: the store, the API (409, audited as denied) and a bulk reprocess.
    assert!(matches!(
        engine.store.reprocess(&id).await,
        Err(StoreError::Refused { .. })
    ));
    let (status, body) = api
        .post(
            &format!("/api/messages/{id}/reprocess"),
            &admin,
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("include_refused"),
        "{body}"
    );
    let bulk = engine
        .store
        .reprocess_all_with("ops-adt", State::Dead, Default::default())
        .await
        .unwrap();
    assert_eq!(bulk.reprocessed, 0);
    assert_eq!(bulk.refused_skipped, 1);
    assert_eq!(
        engine.store.get(&id).await.unwrap().unwrap().state,
        State::Dead,
        "nothing moved"
    );

    // Asked explicitly: it runs (the journal sink takes it) and is done.
    let (status, body) = api
        .post(
            &format!("/api/messages/{id}/reprocess?include_refused=true"),
            &admin,
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    engine.wake_scheduler();
    wait_for(
        "the reprocessed message done",
        Duration::from_secs(30),
        || {
            let store = engine.store.clone();
            let id = id.clone();
            async move { (store.get(&id).await.ok()??.state == State::Done).then_some(()) }
        },
    )
    .await;

    // Its history is whole: the intake verdict and reason, the reprocess, the outcome.
    let (_, detail) = api.get(&format!("/api/messages/{id}"), &admin).await;
    assert_eq!(detail["state"], "done");
    assert_eq!(detail["intake"]["verdict"], "refused");
    assert_eq!(detail["intake"]["reason"], reason.as_str());
    assert_eq!(detail["errors"][0]["step"], "intake");
    assert_eq!(detail["errors"][0]["error"], reason.as_str());
    let reprocesses = detail["reprocesses"].as_array().unwrap();
    assert_eq!(reprocesses.len(), 1, "{detail}");
    assert_eq!(reprocesses[0]["refused"], true);
    assert_eq!(reprocesses[0]["from_state"], "dead");
    let events: Vec<&str> = detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["refused", "reprocessed", "done"], "{detail}");

    // The audit trail has the denial and the explicit reprocess.
    let audit = engine
        .store
        .audit_events(&huizhen_core::store::audit::AuditFilter {
            action: Some("message.reprocess".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let outcomes: Vec<(&str, &str)> = audit
        .iter()
        .map(|r| (r.event.outcome.as_str(), r.event.detail.as_str()))
        .collect();
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert_eq!(outcomes[0].0, "denied");
    assert_eq!(outcomes[1].0, "success");
    assert!(outcomes[1].1.contains("include_refused"), "{outcomes:?}");

    // And the metrics count the verdict and both requests.
    let m = engine.metrics.encode();
    for line in [
        "huizhen_intake_verdicts_total{pipeline=\"ops-adt\",source=\"mllp\",verdict=\"AR\"} 1",
        "huizhen_intake_total{pipeline=\"ops-adt\",source=\"mllp\",outcome=\"refused\"} 1",
        "huizhen_reprocess_requests_total{pipeline=\"ops-adt\",outcome=\"refused_denied\"} 1",
        "huizhen_reprocess_requests_total{pipeline=\"ops-adt\",outcome=\"refused_included\"} 1",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} not in\n{m}");
    }
    engine.shutdown(Duration::from_secs(5)).await;
}

/// A message that failed, was reprocessed and failed again keeps the errors of both runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reprocess_keeps_earlier_errors() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let p = "version: 1\nname: ops-fail\nsource:\n  http: { path: /in/ops-fail, kind: json }\nretry: { max_attempts: 1, backoff: 10ms }\nsteps:\n  - set: { headers: { dept: \"body.department\" } }\nsinks:\n  - journal: {}\n";
    let engine = Engine::start(loaded(&db, &[p])).await.unwrap();
    let h = engine.pipeline("ops-fail").unwrap().clone();
    let a = h
        .submit(huizhen_core::message::NewMessage::new(
            "ops-fail",
            "",
            "json",
            b"{}".to_vec(),
        ))
        .await
        .unwrap();
    let dead = |n: usize| {
        let store = engine.store.clone();
        let id = a.id.clone();
        async move {
            let m = store.get(&id).await.ok()??;
            (m.state == State::Dead && store.attempt_errors(&id).await.ok()?.len() == n)
                .then_some(())
        }
    };
    wait_for("dead once", Duration::from_secs(20), || dead(1)).await;
    engine.store.reprocess(&a.id).await.unwrap();
    engine.wake_scheduler();
    wait_for("dead again", Duration::from_secs(20), || dead(2)).await;
    let detail = huizhen_core::http::message_detail(&engine.store, &a.id)
        .await
        .unwrap();
    assert_eq!(detail["intake"]["verdict"], "accepted");
    let runs: Vec<(String, i64)> = detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_owned(),
                e["run"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        runs,
        [
            ("received".to_owned(), -1),
            ("failed".to_owned(), 0),
            ("reprocessed".to_owned(), 1),
            ("failed".to_owned(), 1),
            ("dead".to_owned(), 1),
        ],
        "{detail}"
    );
    engine.shutdown(Duration::from_secs(5)).await;
}

/// A GB18030 ADT with an empty MSH-18 (the listener's default charset): the API gives the raw
/// bytes in base64 and the text decoded with the charset used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gb18030_body_as_text() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let port = free_port();
    let engine = mllp_engine(&db, port).await;
    let base = serve(&engine, &security_config()).await;
    let api = JsonApi::new(base);
    let text =
        "MSH|^~\\&|HIS|县医院|HZ|HZ|20260101120000||ADT^A01|C-GB|P|2.5\rPID|1||P1||张^三丰\r";
    let (raw, _, bad) = encoding_rs::GB18030.encode(text);
    assert!(!bad);
    assert!(
        std::str::from_utf8(&raw).is_err(),
        "the bytes are not UTF-8"
    );
    assert_eq!(send(port, &raw).await, "AA");
    let id = journaled(&engine.store, "ops-adt").await[0].id.clone();
    let (status, detail) = api
        .get(&format!("/api/messages/{id}"), &token(Role::Admin, "*"))
        .await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["body_encoding"], "base64");
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD
        .decode(detail["body"].as_str().unwrap())
        .unwrap();
    assert_eq!(body, raw.as_ref(), "the raw bytes, unchanged");
    assert_eq!(detail["body_charset"], "gb18030");
    assert_eq!(detail["body_text"], text);
    engine.shutdown(Duration::from_secs(5)).await;
}

/// The series of /metrics right after the start, as `name{labels}` without values (the
/// listener's port and the build profile replaced), compared with the golden list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_at_start() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let port = free_port();
    let http = "version: 1\nname: ops-http\nsource:\n  http: { path: /in/ops-http, kind: json }\nsteps:\n  - set: { headers: { dept: \"'x'\" } }\nsinks:\n  - journal: {}\n";
    let mllp = format!(
        "version: 1\nname: ops-mllp\nsource:\n  mllp: {{ listen: \"127.0.0.1:{port}\" }}\nsinks:\n  - journal: {{}}\n"
    );
    let engine = Engine::start(loaded(&db, &[http, mllp.as_str()]))
        .await
        .unwrap();
    let base = serve(&engine, &security_config()).await;
    let (status, kind, text) = JsonApi::new(base)
        .get_text("/metrics", &token(Role::Admin, "*"))
        .await;
    assert_eq!(status, 200);
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    let got = series(&text, port);
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/e2e/golden/metrics_at_start.txt"
    );
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, &got).unwrap();
    }
    let want = std::fs::read_to_string(path).unwrap_or_default();
    assert_eq!(got, want, "{path} (UPDATE_GOLDEN=1 rewrites it)");
    // Values at the start: every counter of the pipelines is 0.
    for line in text.lines().filter(|l| l.contains("pipeline=\"ops-")) {
        if line.contains("_total{") {
            assert!(line.ends_with(" 0"), "{line}");
        }
    }
    engine.shutdown(Duration::from_secs(5)).await;
}

/// `# TYPE` lines and the series of this test's pipelines and of the engine, values dropped,
/// sorted; not the call, scorer and plugin shadow families, which are process-wide (other
/// tests' rooms, plugins and shadowed steps show in them). A family without a series has no
/// `# TYPE` line either.
fn series(text: &str, port: u16) -> String {
    let process_wide = [
        "huizhen_call_",
        "huizhen_match_scorer_fallback",
        "huizhen_plugin_shadow_",
    ];
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            if !process_wide.iter().any(|p| t.starts_with(p)) {
                out.push(format!("# TYPE {t}"));
            }
            continue;
        }
        if line.starts_with('#') || process_wide.iter().any(|p| line.starts_with(p)) {
            continue;
        }
        let name_labels = match line.rfind('}') {
            Some(i) => &line[..=i],
            None => line.split_whitespace().next().unwrap_or_default(),
        };
        if name_labels.contains("pipeline=") && !name_labels.contains("pipeline=\"ops-") {
            continue;
        }
        let v = name_labels
            .replace(&format!("127.0.0.1:{port}"), "127.0.0.1:PORT")
            .replace("profile=\"release\"", "profile=\"PROFILE\"")
            .replace("profile=\"debug\"", "profile=\"PROFILE\"")
            .replace(
                &format!("version=\"{}\"", env!("CARGO_PKG_VERSION")),
                "version=\"VERSION\"",
            );
        out.push(v);
    }
    out.sort();
    out.dedup();
    out.join("\n") + "\n"
}
