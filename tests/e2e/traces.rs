//! OpenTelemetry traces (issue 21): the engine exports a message's life to an OTLP/HTTP
//! collector this test runs (protobuf on `POST /v1/traces`, decoded with opentelemetry-proto).
//! A message posted to an `http` source with a W3C `traceparent` is one trace, the sender's:
//! its intake (a child of the sender's span), the attempt, a step and the `http` sink's
//! delivery, whose span goes on downstream as `traceparent`. A message without one is traced
//! under its message id. No attribute carries the body or a header value.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, StatusCode};
use huizhen_core::Engine;
use huizhen_core::message::State;
use huizhen_core::security::{Role, SecurityConfig};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;

use crate::sinks::{Receiver, Reply, settled};
use crate::support::{Backend, fresh_db, loaded};

const SECRET: &str = "e2e-traces-secret-0123456789abcdef0123";
/// The sender's trace and span.
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SENDER_SPAN: &str = "00f067aa0ba902b7";
/// Patient data in the body; the `set` step copies it into a header.
const PATIENT: &str = "ZHANG San 张三";

/// A span as the collector got it, ids in hex.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: Vec<(String, String)>,
    error: bool,
}

impl Got {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Default)]
struct Collected {
    spans: Arc<Mutex<Vec<Got>>>,
    content_types: Arc<Mutex<Vec<String>>>,
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(n)) => n.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

async fn receive(
    AxumState(c): AxumState<Collected>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    c.content_types.lock().unwrap().push(
        headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
    );
    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut spans = c.spans.lock().unwrap();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(&kv.value))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                spans.push(Got {
                    service: service.clone(),
                    name: s.name,
                    trace_id: hex::encode(&s.trace_id),
                    span_id: hex::encode(&s.span_id),
                    parent: hex::encode(&s.parent_span_id),
                    attributes: s
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(&kv.value)))
                        .collect(),
                    // STATUS_CODE_ERROR
                    error: s.status.is_some_and(|st| st.code == 2),
                });
            }
        }
    }
    StatusCode::OK
}

/// An OTLP/HTTP collector on a free loopback port: its base URL and what it got.
async fn collector() -> (String, Collected) {
    let got = Collected::default();
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(receive))
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, got)
}

fn token() -> String {
    huizhen_core::security::issue_from_config(
        &SecurityConfig {
            jwt_secret: Some(SECRET.into()),
            ..SecurityConfig::default()
        },
        "integrator@*",
        Role::Admin,
        "*",
        Duration::from_secs(600),
    )
    .unwrap()
    .token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_one_trace_from_source_to_sink() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let (otlp, got) = collector().await;
    let downstream = Receiver::start().await;
    let yaml = format!(
        "version: 1\nname: traced\nfacility: hosp-a\nsource:\n  http: {{ path: /in/traced, kind: json }}\nsteps:\n  - set: {{ headers: {{ patient: \"body.patient\" }} }}\nsinks:\n  - http: {{ url: \"{}/orders\" }}\n",
        downstream.url
    );
    let mut l = loaded(&db, &[&yaml]);
    l.root.telemetry.otlp_endpoint = Some(otlp.clone());
    l.root.telemetry.service_name = Some("huizhen-e2e".into());
    let engine = Engine::start(l).await.unwrap();
    let base = crate::support::serve(
        &engine,
        &SecurityConfig {
            jwt_secret: Some(SECRET.into()),
            ..SecurityConfig::default()
        },
    )
    .await;
    let client = reqwest::Client::new();
    let post = |traceparent: Option<String>| {
        let mut r = client
            .post(format!("{base}/in/traced"))
            .bearer_auth(token())
            .header("content-type", "application/json")
            .body(format!(r#"{{"patient":"{PATIENT}","n":1}}"#));
        if let Some(tp) = traceparent {
            r = r.header("traceparent", tp);
        }
        async move {
            let r = r.send().await.unwrap();
            assert_eq!(r.status(), 202);
            let v: serde_json::Value = r.json().await.unwrap();
            v["id"].as_str().unwrap().to_owned()
        }
    };
    let traced = post(Some(format!("00-{TRACE}-{SENDER_SPAN}-01"))).await;
    let journaled = settled(&engine, &traced, State::Done).await;
    let plain = post(None).await;
    settled(&engine, &plain, State::Done).await;
    assert_eq!(
        journaled.trace_id, TRACE,
        "the sender's trace id is journaled"
    );

    // Downstream gets the delivery's span as its parent, in the sender's trace.
    let seen = downstream.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let tp = &seen[0].headers["traceparent"];
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!((parts[0], parts[1], parts[3]), ("00", TRACE, "01"), "{tp}");

    // The shutdown sends what the batch processor still holds.
    engine.shutdown(Duration::from_secs(5)).await;
    let spans = got.spans.lock().unwrap().clone();
    assert!(
        got.content_types
            .lock()
            .unwrap()
            .iter()
            .all(|c| c == "application/x-protobuf"),
        "OTLP/HTTP protobuf"
    );
    let of = |trace: &str| -> Vec<Got> {
        spans
            .iter()
            .filter(|s| s.trace_id == trace)
            .cloned()
            .collect()
    };
    let one = |trace: &[Got], name: &str| -> Got {
        let found: Vec<&Got> = trace.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "one {name:?} span in {trace:#?}");
        found[0].clone()
    };

    let trace = of(TRACE);
    assert_eq!(trace.len(), 4, "{spans:#?}");
    let intake = one(&trace, "receive traced");
    let process = one(&trace, "process traced");
    let step = one(&trace, "step set#0");
    let deliver = one(&trace, "deliver http#0");
    // One tree under the sender's span.
    assert_eq!(intake.parent, SENDER_SPAN);
    assert_eq!(process.parent, intake.span_id);
    assert_eq!(step.parent, process.span_id);
    assert_eq!(deliver.parent, process.span_id);
    assert_eq!(
        parts[2], deliver.span_id,
        "downstream's parent is the delivery"
    );
    for s in &trace {
        assert_eq!(s.service, "huizhen-e2e");
        assert_eq!(s.attr("huizhen.message.id"), Some(traced.as_str()), "{s:?}");
        assert!(!s.error, "{s:?}");
    }
    assert_eq!(intake.attr("huizhen.pipeline"), Some("traced"));
    assert_eq!(intake.attr("huizhen.facility"), Some("hosp-a"));
    assert_eq!(intake.attr("huizhen.source"), Some("http"));
    assert_eq!(intake.attr("huizhen.outcome"), Some("accepted"));
    assert_eq!(process.attr("huizhen.attempt"), Some("1"));
    assert_eq!(process.attr("huizhen.outcome"), Some("done"));
    assert_eq!(step.attr("huizhen.step"), Some("set#0"));
    assert_eq!(step.attr("huizhen.outcome"), Some("continue"));
    assert_eq!(deliver.attr("huizhen.sink"), Some("http#0"));
    assert_eq!(deliver.attr("huizhen.attempt"), Some("1"));
    assert_eq!(deliver.attr("huizhen.outcome"), Some("delivered"));

    // Without a traceparent: the trace is the message id's, its intake a root.
    let own = plain.replace('-', "");
    let trace = of(&own);
    assert_eq!(trace.len(), 4, "{spans:#?}");
    let intake = one(&trace, "receive traced");
    assert_eq!(intake.parent, "");
    assert_eq!(one(&trace, "process traced").parent, intake.span_id);
    assert_eq!(spans.len(), 8, "no other spans: {spans:#?}");

    // Ids, names and outcome words only: nothing of the body or the headers.
    for s in &spans {
        for (k, v) in &s.attributes {
            assert!(
                !v.contains("ZHANG") && !v.contains("张三") && !v.contains("patient"),
                "{k}={v} in {s:?}"
            );
        }
        assert!(!s.name.contains("ZHANG"), "{s:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_delivery_is_a_second_attempt_in_the_same_trace() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let (otlp, got) = collector().await;
    let downstream = Receiver::start().await;
    downstream.script(vec![Reply::Answer(503, vec![], "busy".into())]);
    let yaml = format!(
        "version: 1\nname: retried\nsource:\n  http: {{ path: /in/retried, kind: json }}\nretry: {{ max_attempts: 3, backoff: 10ms, max_backoff: 20ms }}\nsinks:\n  - http: {{ url: \"{}/orders\", name: lis }}\n",
        downstream.url
    );
    let mut l = loaded(&db, &[&yaml]);
    l.root.telemetry.otlp_endpoint = Some(otlp);
    let engine = Engine::start(l).await.unwrap();
    let p = engine.pipeline("retried").unwrap().clone();
    let id = p
        .submit(crate::sinks::json(r#"{"patient":"ZHANG San"}"#, &[]))
        .await
        .unwrap()
        .id;
    settled(&engine, &id, State::Done).await;
    let seen = downstream.seen();
    assert_eq!(seen.len(), 2);
    engine.shutdown(Duration::from_secs(5)).await;

    let spans = got.spans.lock().unwrap().clone();
    let trace = id.replace('-', "");
    assert!(spans.iter().all(|s| s.trace_id == trace), "{spans:#?}");
    assert!(spans.iter().all(|s| s.service == "huizhen"), "{spans:#?}");
    let named = |name: &str| -> Vec<Got> {
        let mut v: Vec<Got> = spans.iter().filter(|s| s.name == name).cloned().collect();
        v.sort_by(|a, b| a.attr("huizhen.attempt").cmp(&b.attr("huizhen.attempt")));
        v
    };
    let intake = named("receive retried");
    let process = named("process retried");
    let deliver = named("deliver lis");
    assert_eq!(
        (intake.len(), process.len(), deliver.len()),
        (1, 2, 2),
        "{spans:#?}"
    );
    for (n, (run, d)) in process.iter().zip(&deliver).enumerate() {
        let attempt = (n + 1).to_string();
        assert_eq!(run.parent, intake[0].span_id);
        assert_eq!(d.parent, run.span_id);
        assert_eq!(run.attr("huizhen.attempt"), Some(attempt.as_str()));
        assert_eq!(d.attr("huizhen.attempt"), Some(attempt.as_str()));
    }
    assert_eq!(process[0].attr("huizhen.outcome"), Some("failed"));
    assert_eq!(deliver[0].attr("huizhen.outcome"), Some("failed"));
    assert!(process[0].error && deliver[0].error);
    assert_eq!(process[1].attr("huizhen.outcome"), Some("done"));
    assert_eq!(deliver[1].attr("huizhen.outcome"), Some("delivered"));
    assert!(!process[1].error && !deliver[1].error);
    // Each attempt's traceparent named its own delivery span.
    for (s, d) in seen.iter().zip(&deliver) {
        assert_eq!(
            s.headers["traceparent"],
            format!("00-{trace}-{}-01", d.span_id)
        );
    }
    // The failure's reason (the answer "busy") is in the journal, not in the spans.
    for s in &spans {
        assert!(
            s.attributes
                .iter()
                .all(|(_, v)| !v.contains("busy") && !v.contains("ZHANG")),
            "{s:?}"
        );
    }
}
