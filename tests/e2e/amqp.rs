//! RabbitMQ (`AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`): the `amqp` sink
//! publishes with confirms into a queue the `amqp` source consumes, through a broker restart
//! (`rabbitmqctl stop_app` / `start_app`): every message arrives once, in the journal, with its
//! body, and no delivery is acknowledged before it is journaled.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use huizhen_core::Engine;
use huizhen_core::message::{NewMessage, State};

use crate::support::{
    Backend, amqp_url, broker_exclusive, broker_shared, broker_up, fates, fresh_db, loaded,
    stop_broker, wait_for, wait_for_or,
};

async fn done(engine: &Engine, pipeline: &str) -> Vec<huizhen_core::message::Message> {
    let page = engine
        .store
        .list(&huizhen_core::store::ListFilter {
            pipeline: Some(pipeline.into()),
            state: Some(State::Done),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    page.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_to_source_round_trip_survives_a_broker_restart() {
    let broker = broker_exclusive().await;
    if !broker_up().await {
        return;
    }
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let q = format!("hz-e2e-{}", &huizhen_core::message::new_id()[24..]);
    let url = amqp_url();
    let out = format!(
        "version: 1\nname: out\nsource:\n  http: {{ path: /in/out, kind: json }}\nretry: {{ max_attempts: 50, backoff: 200ms, max_backoff: 1s }}\nsinks:\n  - amqp: {{ url: \"{url}\", routing_key: {q}, declare_queue: {q}, confirm_timeout: 3s }}\n"
    );
    let inn = format!(
        "version: 1\nname: inbound\nsource:\n  amqp: {{ url: \"{url}\", queue: {q}, prefetch: 16 }}\nsinks:\n  - journal: {{}}\n"
    );
    let engine = Engine::start(loaded(&db, &[&out, &inn])).await.unwrap();
    let p = engine.pipeline("out").unwrap().clone();
    let send = |range: std::ops::Range<usize>| {
        let p = p.clone();
        async move {
            let mut ids = Vec::new();
            for i in range {
                let body = format!(r#"{{"seq":{i},"patient":"P{i}"}}"#);
                let a = p
                    .submit(NewMessage::new("out", "default", "json", body.into_bytes()))
                    .await
                    .unwrap();
                ids.push(a.id);
            }
            ids
        }
    };
    let mut sent = send(0..100).await;
    wait_for(
        "first 100 through the broker",
        Duration::from_secs(30),
        || async { (done(&engine, "inbound").await.len() == 100).then_some(()) },
    )
    .await;

    // The broker goes away for a while, with messages being sent; then comes back.
    if let Some(down) = stop_broker(&broker) {
        sent.extend(send(100..150).await);
        tokio::time::sleep(Duration::from_secs(2)).await;
        down.start().await;
    } else {
        sent.extend(send(100..150).await);
    }
    wait_for_or(
        "all 150 through after the restart",
        Duration::from_secs(90),
        || async { (done(&engine, "inbound").await.len() == 150).then_some(()) },
        async || {
            // A sent message that is not through: dead at the sink (retries ran out), still
            // on its way, or lost (done at the sink, never consumed; or not in the journal).
            let arrived: std::collections::BTreeSet<String> = done(&engine, "inbound")
                .await
                .iter()
                .map(|m| {
                    m.headers
                        .get("amqp-message-id")
                        .cloned()
                        .unwrap_or_default()
                })
                .collect();
            let not_through: Vec<String> = sent
                .iter()
                .filter(|id| !arrived.contains(*id))
                .cloned()
                .collect();
            format!(
                "{} of 150 arrived; the {} sent messages that did not, at the sink: {}",
                arrived.len(),
                not_through.len(),
                fates(&engine.store, &not_through).await
            )
        },
    )
    .await;
    // Every sequence number exactly once, body intact, AMQP message-id = the sender's id.
    let got = done(&engine, "inbound").await;
    let mut seqs = Vec::new();
    for m in &got {
        let full = engine.store.get(&m.id).await.unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&full.body).unwrap();
        seqs.push(v["seq"].as_u64().unwrap());
        let sender = full.headers["amqp-message-id"].clone();
        let original = engine.store.get(&sender).await.unwrap().unwrap();
        assert_eq!(original.pipeline, "out");
        assert_eq!(original.state, State::Done);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (0..150).collect::<Vec<u64>>());
    engine.shutdown(Duration::from_secs(5)).await;
    // Clean up the test's queues.
    if let Ok(c) = lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await
        && let Ok(ch) = c.create_channel().await
    {
        for name in [q.clone(), format!("{q}.dead")] {
            let _ = ch
                .queue_delete(
                    name.as_str().into(),
                    lapin::options::QueueDeleteOptions::default(),
                )
                .await;
        }
        let _ = ch
            .exchange_delete(
                format!("{q}.dlx").as_str().into(),
                lapin::options::ExchangeDeleteOptions::default(),
            )
            .await;
        let _ = c.close(200, "done".into()).await;
    }
}

/// A legacy HIS behind a queue: it takes requests from `queue`, answers each on its `reply-to`
/// with the same `correlation-id` after `work`, and records how many it had in hand at once.
/// Requests whose body contains "silent" get no answer.
async fn fake_his_over_amqp(queue: String, work: Duration) -> (Arc<AtomicUsize>, Arc<AtomicUsize>) {
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    };
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(64, BasicQosOptions::default()).await.unwrap();
    // Declared as the sink's `declare_queue` does (durable, dead-letter exchange).
    let _ = ch
        .queue_declare(
            queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("the sink declared the request queue");
    let mut consumer = ch
        .basic_consume(
            queue.as_str().into(),
            "fake-his".into(),
            BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let in_hand = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (h, m) = (in_hand.clone(), most.clone());
    tokio::spawn(async move {
        let _conn = conn;
        use futures::StreamExt;
        while let Some(Ok(d)) = consumer.next().await {
            let ch = ch.clone();
            let (h, m) = (h.clone(), m.clone());
            tokio::spawn(async move {
                let now = h.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(work).await;
                h.fetch_sub(1, Ordering::SeqCst);
                let body = String::from_utf8_lossy(&d.data).into_owned();
                if !body.contains("silent") {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                    let answer = format!(r#"{{"ack":"AA","seq":{}}}"#, v["seq"]);
                    let to = d.properties.reply_to().clone().expect("reply-to set");
                    let corr = d
                        .properties
                        .correlation_id()
                        .clone()
                        .expect("correlation-id set");
                    ch.basic_publish(
                        "".into(),
                        to.as_str().into(),
                        BasicPublishOptions::default(),
                        answer.as_bytes(),
                        lapin::BasicProperties::default()
                            .with_correlation_id(corr)
                            .with_content_type("application/json".into()),
                    )
                    .await
                    .unwrap();
                }
                d.acker.ack(BasicAckOptions::default()).await.unwrap();
            });
        }
    });
    (in_hand, most)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reply_through_a_queue_to_a_slow_his() {
    const N: usize = 60;
    const IN_FLIGHT: usize = 4;
    let _broker = broker_shared().await;
    if !broker_up().await {
        return;
    }
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let q = format!("hz-rpc-{}", &huizhen_core::message::new_id()[24..]);
    let url = amqp_url();
    let requests = format!(
        "version: 1\nname: to-his\nsource:\n  http: {{ path: /in/his, kind: json }}\nconcurrency: 16\nretry: {{ max_attempts: 2, backoff: 50ms }}\ndeliver_limit: {{ per_second: 400, burst: 10, max_in_flight: {IN_FLIGHT} }}\nsinks:\n  - amqp: {{ url: \"{url}\", routing_key: {q}, declare_queue: {q}, reply: {{ timeout: 1s, route: his-replies }} }}\n"
    );
    let replies = "version: 1\nname: his-replies\nsource:\n  http: { path: /in/unused, kind: json }\nsinks:\n  - journal: {}\n";
    let engine = Engine::start(loaded(&db, &[&requests, replies]))
        .await
        .unwrap();
    let p = engine.pipeline("to-his").unwrap().clone();
    // The sink declares the request queue on first use: send one, then start the HIS.
    let first = p
        .submit(NewMessage::new(
            "to-his",
            "default",
            "json",
            br#"{"seq":0}"#.to_vec(),
        ))
        .await
        .unwrap();
    wait_for("the request queue", Duration::from_secs(10), || async {
        let c = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
            .await
            .ok()?;
        let ch = c.create_channel().await.ok()?;
        let ok = ch
            .queue_declare(
                q.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .is_ok();
        let _ = c.close(200, "".into()).await;
        ok.then_some(())
    })
    .await;
    let (_, most) = fake_his_over_amqp(q.clone(), Duration::from_millis(20)).await;
    let mut ids = vec![first.id];
    for seq in 1..N {
        let a = p
            .submit(NewMessage::new(
                "to-his",
                "default",
                "json",
                format!(r#"{{"seq":{seq}}}"#).into_bytes(),
            ))
            .await
            .unwrap();
        ids.push(a.id);
    }
    let silent = p
        .submit(NewMessage::new(
            "to-his",
            "default",
            "json",
            br#"{"seq":-1,"silent":true}"#.to_vec(),
        ))
        .await
        .unwrap();
    wait_for(
        "every request answered",
        Duration::from_secs(60),
        || async { (done(&engine, "his-replies").await.len() == N).then_some(()) },
    )
    .await;
    // Each request's reply is its effect, and a message of his-replies pointing back at it.
    for (seq, id) in ids.iter().enumerate() {
        let m = engine.store.get(id).await.unwrap().unwrap();
        assert_eq!(m.state, State::Done, "request {seq}");
    }
    let effects = engine.store.effects(Some("to-his")).await.unwrap();
    assert_eq!(effects.len(), N);
    for e in &effects {
        let v: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
        let seq = v["seq"].as_u64().unwrap() as usize;
        assert_eq!(ids[seq], e.message_id, "reply matched to its request");
    }
    for r in done(&engine, "his-replies").await {
        let full = engine.store.get(&r.id).await.unwrap().unwrap();
        let parent = full.parent_id.clone().unwrap();
        assert_eq!(full.headers["correlation-id"], parent);
        let v: serde_json::Value = serde_json::from_slice(&full.body).unwrap();
        assert_eq!(ids[v["seq"].as_u64().unwrap() as usize], parent);
    }
    assert!(
        most.load(Ordering::SeqCst) <= IN_FLIGHT,
        "the HIS had {} requests at once",
        most.load(Ordering::SeqCst)
    );
    // The unanswered request: retried, then dead with the reason.
    wait_for(
        "the silent request dead",
        Duration::from_secs(30),
        || async {
            let m = engine.store.get(&silent.id).await.unwrap()?;
            (m.state == State::Dead).then_some(m)
        },
    )
    .await;
    let errors = engine.store.attempt_errors(&silent.id).await.unwrap();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[1].error.contains("no reply within 1s") && errors[1].error.contains(&silent.id),
        "{errors:?}"
    );
    engine.shutdown(Duration::from_secs(5)).await;
    crate::support::delete_queues(&q);
}

/// A TLS front for the broker (as a hospital's `amqps://` endpoint): terminates TLS with a
/// certificate of the test's private CA and relays to the plaintext broker.
async fn tls_front(dir: &std::path::Path) -> u16 {
    let acceptor = huizhen_core::tls::acceptor(&huizhen_core::tls::TlsConfig {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        client_ca: None,
    })
    .unwrap();
    let target = amqp_url()
        .split('@')
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or("127.0.0.1:5672")
        .to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut broker) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_with_a_private_ca() {
    let _broker = broker_shared().await;
    if !broker_up().await {
        return;
    }
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let pki = db.dir.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    crate::tls::make_pki(&pki);
    let port = tls_front(&pki).await;
    let userinfo = amqp_url()
        .split_once("://")
        .and_then(|(_, r)| r.split_once('@'))
        .map_or("guest:guest".to_owned(), |(u, _)| u.to_owned());
    let url = format!("amqps://{userinfo}@127.0.0.1:{port}/%2f");
    let ca = pki.join("ca.pem");
    let q = format!("hz-tls-{}", &huizhen_core::message::new_id()[24..]);
    let out = format!(
        "version: 1\nname: out\nsource:\n  http: {{ path: /in/out, kind: json }}\nsinks:\n  - amqp: {{ url: \"{url}\", routing_key: {q}, declare_queue: {q}, tls: {{ ca: \"{}\" }} }}\n",
        ca.display()
    );
    let inn = format!(
        "version: 1\nname: inbound\nsource:\n  amqp: {{ url: \"{url}\", queue: {q}, tls: {{ ca: \"{}\" }} }}\nsinks:\n  - journal: {{}}\n",
        ca.display()
    );
    // The same broker without the CA: the certificate is refused, and the error says so.
    let stranger = format!(
        "version: 1\nname: stranger\nsource:\n  http: {{ path: /in/stranger, kind: json }}\nretry: {{ max_attempts: 1 }}\nsinks:\n  - amqp: {{ url: \"{url}\", routing_key: {q} }}\n"
    );
    let engine = Engine::start(loaded(&db, &[&out, &inn, &stranger]))
        .await
        .unwrap();
    let p = engine.pipeline("out").unwrap().clone();
    for i in 0..5 {
        p.submit(NewMessage::new(
            "out",
            "default",
            "json",
            format!(r#"{{"seq":{i}}}"#).into_bytes(),
        ))
        .await
        .unwrap();
    }
    wait_for("5 messages over amqps", Duration::from_secs(30), || async {
        (done(&engine, "inbound").await.len() == 5).then_some(())
    })
    .await;
    let s = engine
        .pipeline("stranger")
        .unwrap()
        .submit(NewMessage::new(
            "stranger",
            "default",
            "json",
            b"{}".to_vec(),
        ))
        .await
        .unwrap();
    let dead = wait_for(
        "the stranger's message dead",
        Duration::from_secs(30),
        || async {
            let m = engine.store.get(&s.id).await.unwrap()?;
            (m.state == State::Dead).then_some(m)
        },
    )
    .await;
    let err = dead.last_error.unwrap_or_default();
    eprintln!("without the CA: {err}");
    assert!(
        err.contains("cannot connect to amqps://") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    engine.shutdown(Duration::from_secs(5)).await;
    // A CA file that is not one is named by `validate`, with the line of the sink.
    let not_ca = db.dir.path().join("not-a-ca.pem");
    std::fs::write(&not_ca, "hello").unwrap();
    let bad = format!(
        "version: 1\nname: bad\nsource:\n  http: {{ path: /in/bad, kind: json }}\nsinks:\n  - amqp: {{ url: \"{url}\", routing_key: {q}, tls: {{ ca: \"{}\" }} }}\n",
        not_ca.display()
    );
    let file = db.dir.path().join("bad.yaml");
    let config = huizhen_core::config::parse_yaml(&file, &bad).unwrap();
    let errors = huizhen_core::config::check(&[huizhen_core::config::LoadedPipeline {
        file: file.clone(),
        config,
    }]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = errors[0].to_string();
    assert!(
        e.contains("bad.yaml:6:") && e.contains("tls.ca") && e.contains("no PEM certificate"),
        "{e}"
    );
    crate::support::delete_queues(&q);
}
