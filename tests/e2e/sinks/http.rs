//! The `http` sink against the test's own HTTP server.

use std::time::Duration;

use huizhen_core::Engine;
use huizhen_core::message::State;

use super::{Receiver, Reply, json, redeliver, settled};
use crate::support::{Backend, fresh_db, journaled, loaded, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sink_sends_templates_auth_and_the_message_id_as_idempotency_key() {
    let Some(db) = fresh_db(Backend::Sqlite).await else {
        return;
    };
    let recv = Receiver::start().await;
    let url = &recv.url;
    // The token comes through `${…}` interpolation (its fallback: no variable is set here).
    let yaml = format!(
        r#"version: 1
name: to-lis
source:
  http: {{ path: /in/to-lis }}
sinks:
  - http:
      url: "{url}/orders/{{{{header.order}}}}?p={{{{pipeline}}}}"
      headers: {{ X-Facility: "{{{{facility}}}}" }}
      bearer: ${{HUIZHEN_E2E_NO_SUCH_TOKEN:-s3cret}}
  - http:
      url: "{url}/results/{{{{id}}}}"
      method: PUT
      body: '{{"order":"{{{{header.order}}}}","n":{{{{= body.n}}}}}}'
      content_type: application/json
      basic: {{ username: lab, password: pw }}
      idempotency_header: X-Request-Id
"#
    );
    let engine = Engine::start(loaded(&db, &[&yaml])).await.unwrap();
    let p = engine.pipeline("to-lis").unwrap().clone();
    let id = p
        .submit(json(r#"{"n":21}"#, &[("order", "A/1 2")]))
        .await
        .unwrap()
        .id;
    settled(&engine, &id, State::Done).await;

    let seen = recv.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let post = &seen[0];
    assert_eq!(post.method, "POST");
    assert_eq!(post.target, "/orders/A%2F1%202?p=to-lis");
    assert_eq!(post.headers["authorization"], "Bearer s3cret");
    assert_eq!(post.headers["idempotency-key"], id);
    assert_eq!(post.headers["x-facility"], "default");
    assert_eq!(post.headers["content-type"], "application/json");
    assert_eq!(post.body, br#"{"n":21}"#);
    let put = &seen[1];
    assert_eq!(put.method, "PUT");
    assert_eq!(put.target, format!("/results/{id}"));
    assert_eq!(put.headers["authorization"], "Basic bGFiOnB3");
    assert_eq!(put.headers["x-request-id"], id);
    assert!(!put.headers.contains_key("idempotency-key"));
    assert_eq!(
        String::from_utf8(put.body.clone()).unwrap(),
        r#"{"order":"A/1 2","n":21}"#
    );
    let effects = engine.store.effects_of(&id).await.unwrap();
    let sinks: Vec<&str> = effects.iter().map(|e| e.sink.as_str()).collect();
    assert_eq!(sinks, ["http#0", "http#1"]);
    let answer: serde_json::Value = serde_json::from_slice(&effects[0].body).unwrap();
    assert_eq!(answer, serde_json::json!({"status": 200, "answer": "ok"}));

    // A redelivery carries the same key, so the receiver can tell it is the same message.
    redeliver(&engine, &id).await;
    let seen = recv.seen();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[2].headers["idempotency-key"], id);
    assert_eq!(seen[3].headers["x-request-id"], id);
    assert_eq!(engine.store.effects_of(&id).await.unwrap().len(), 2);
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sink_4xx_is_a_dead_letter_with_the_answer() {
    let Some(db) = fresh_db(Backend::Sqlite).await else {
        return;
    };
    let recv = Receiver::start().await;
    recv.script(vec![
        Reply::Answer(
            422,
            vec![("content-type", "application/json".into())],
            format!(
                "{{\"error\":\"unknown patient\",\n\"pad\":\"{}\"}}",
                "x".repeat(3000)
            ),
        ),
        Reply::Answer(301, vec![("location", "/elsewhere".into())], String::new()),
    ]);
    let yaml = format!(
        "version: 1\nname: refused\nsource:\n  http: {{ path: /in/refused }}\nretry: {{ max_attempts: 5, backoff: 10ms, max_backoff: 20ms }}\nsinks:\n  - http: {{ url: \"{}/in\" }}\n",
        recv.url
    );
    let engine = Engine::start(loaded(&db, &[&yaml])).await.unwrap();
    let p = engine.pipeline("refused").unwrap().clone();
    let a = p.submit(json(r#"{"n":1}"#, &[])).await.unwrap().id;
    let m = settled(&engine, &a, State::Dead).await;
    assert_eq!(m.attempts, 1, "a 4xx is not retried");
    let error = m.last_error.unwrap();
    assert!(
        error.starts_with(&format!(
            "http#0: POST {}/in: answered 422 Unprocessable Entity: {{\"error\":\"unknown patient\", \"pad\":\"xxx",
            recv.url
        )),
        "{error}"
    );
    assert!(error.ends_with("xxx…"), "the answer is cut: {error}");
    assert!(error.chars().count() < 700, "{error}");

    // A redirect is not followed: dead at once, saying so.
    let b = p.submit(json(r#"{"n":2}"#, &[])).await.unwrap().id;
    let m = settled(&engine, &b, State::Dead).await;
    assert!(
        m.last_error
            .as_deref()
            .unwrap()
            .contains("answered 301 Moved Permanently (redirects are not followed"),
        "{:?}",
        m.last_error
    );
    assert_eq!(recv.seen().len(), 2);
    assert!(engine.store.effects_of(&a).await.unwrap().is_empty());
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_sink_retries_timeouts_503_and_429_after_their_retry_after_then_delivers() {
    let Some(db) = fresh_db(Backend::Sqlite).await else {
        return;
    };
    let recv = Receiver::start().await;
    recv.script(vec![
        Reply::Slow(Duration::from_secs(3)),
        Reply::Answer(503, vec![("retry-after", "1".into())], "maintenance".into()),
        Reply::Answer(429, vec![("retry-after", "2".into())], "slow down".into()),
    ]);
    // Backoff of at most 20 ms: the waits seen below come from Retry-After alone.
    let yaml = format!(
        "version: 1\nname: flaky-lis\nsource:\n  http: {{ path: /in/flaky-lis }}\nretry: {{ max_attempts: 6, backoff: 10ms, max_backoff: 20ms }}\nsinks:\n  - http: {{ url: \"{}/in\", timeout: 500ms }}\n",
        recv.url
    );
    let engine = Engine::start(loaded(&db, &[&yaml])).await.unwrap();
    let p = engine.pipeline("flaky-lis").unwrap().clone();
    let id = p.submit(json(r#"{"n":1}"#, &[])).await.unwrap().id;
    let m = settled(&engine, &id, State::Done).await;
    assert_eq!(m.attempts, 3, "three failed attempts before the delivery");
    let seen = recv.seen();
    assert_eq!(seen.len(), 4);
    assert!(seen.iter().all(|s| s.headers["idempotency-key"] == id));
    // Not sooner than the destination asked (a lower bound the engine guarantees).
    assert!(
        seen[2].at - seen[1].at >= Duration::from_secs(1),
        "{seen:?}"
    );
    assert!(
        seen[3].at - seen[2].at >= Duration::from_secs(2),
        "{seen:?}"
    );
    let errors: Vec<String> = engine
        .store
        .attempt_errors(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.error)
        .collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors[0].contains("no answer within 500ms"), "{errors:?}");
    assert!(
        errors[1].contains("answered 503 Service Unavailable: maintenance"),
        "{errors:?}"
    );
    assert!(
        errors[2].contains("answered 429 Too Many Requests: slow down"),
        "{errors:?}"
    );
    assert_eq!(engine.store.effects_of(&id).await.unwrap().len(), 1);
    engine.shutdown(Duration::from_secs(5)).await;
}

/// The README tour's step 6 through the shipped `pipelines/demo.yaml` (its `demo` and
/// `referrals-out` pipelines, the receiver's URL in place of the default): an accepted referral
/// reaches the referral system once, by patient, with the department and the routed message's
/// id as the idempotency key; a referral the filter drops sends nothing; a refusal (422) is a
/// dead letter in `referrals-out` while the referral itself is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_sends_accepted_referrals_on_by_http() {
    let Some(db) = fresh_db(Backend::Sqlite).await else {
        return;
    };
    let recv = Receiver::start().await;
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../pipelines/demo.yaml"
    ))
    .unwrap()
    .replace(
        "${HUIZHEN_REFERRAL_URL:-http://127.0.0.1:8090/referrals}",
        &format!("{}/referrals", recv.url),
    );
    let docs: Vec<&str> = text
        .split("\n---\n")
        .filter(|d| d.contains("\nname: demo\n") || d.contains("\nname: referrals-out\n"))
        .collect();
    assert_eq!(docs.len(), 2, "demo.yaml has the demo and referrals-out");
    let engine = Engine::start(loaded(&db, &docs)).await.unwrap();
    let demo = engine.pipeline("demo").unwrap().clone();
    let submit = |body: &'static str| {
        let demo = demo.clone();
        async move { demo.submit(json(body, &[])).await.unwrap().id }
    };

    let accepted =
        submit(r#"{"type":"referral","department":"cardiology","patient":{"id":"P001"}}"#).await;
    let dropped = submit(r#"{"type":"appointment","patient":{"id":"P009"}}"#).await;
    settled(&engine, &accepted, State::Done).await;
    settled(&engine, &dropped, State::Done).await;
    let routed = wait_for("the routed copy", Duration::from_secs(20), || async {
        let out = journaled(&engine.store, "referrals-out").await;
        (out.len() == 1 && out[0].state == State::Done).then(|| out[0].id.clone())
    })
    .await;
    let seen = recv.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].target, "/referrals/P001");
    assert_eq!(seen[0].headers["idempotency-key"], routed);
    assert_eq!(seen[0].headers["x-department"], "cardiology");
    assert_eq!(seen[0].headers["content-type"], "application/json");
    let body: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(body["patient"]["id"], "P001");
    let effects = engine.store.effects_of(&routed).await.unwrap();
    assert_eq!(effects.len(), 1);
    assert_eq!(effects[0].sink, "referral-system");

    // The referral system refuses the next one: dead at once with its answer, one request.
    recv.script(vec![Reply::Answer(
        422,
        vec![],
        r#"{"error":"unknown department"}"#.into(),
    )]);
    let refused =
        submit(r#"{"type":"referral","department":"x-ray","patient":{"id":"P002"}}"#).await;
    settled(&engine, &refused, State::Done).await;
    let dead = wait_for("the refused copy", Duration::from_secs(20), || async {
        journaled(&engine.store, "referrals-out")
            .await
            .into_iter()
            .find(|m| m.state == State::Dead)
    })
    .await;
    let reason = dead.last_error.clone().unwrap_or_default();
    assert!(
        reason.contains("referral-system")
            && reason.contains("422")
            && reason.contains("unknown department"),
        "{reason}"
    );
    assert_eq!(recv.seen().len(), 2);
    engine.shutdown(Duration::from_secs(5)).await;
}
