//! Readings per second through `mqtt` → `device_reading` → journal, against the broker's own
//! rate measured in the same run (issue 25's target: at least half of it).
//!
//! ```sh
//! cargo bench -p huizhen-mqtt --bench readings            # 5,000 readings, local Mosquitto
//! BENCH_READINGS=20000 MQTT_PORT=1883 cargo bench -p huizhen-mqtt --bench readings
//! BENCH_CONCURRENCY=4,32 cargo bench -p huizhen-mqtt --bench readings  # the pipeline's concurrency
//! ```
//!
//! 1. **Baseline**: one publisher (QoS 1, up to 100 unacknowledged) and one plain subscriber
//!    (QoS 1, rumqttc acknowledging at once), both rumqttc in this process: the time from the
//!    first publish to the subscriber holding every message.
//! 2. **Engine**: the same publisher, the engine's `mqtt` source (MQTT 5, persistent session,
//!    PUBACK after the journal commit) → `device_reading` (mapping, UCUM, binding lookup, one
//!    threshold; `output: record`) → the `journal` sink, SQLite in a temp dir as `huizhen run`
//!    sets it up (bodies encrypted at rest): the time from the first publish to every reading
//!    `done`.
//!
//! Prints both rates and their ratio. The readings are distinct (one device, a second apart).

#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use huizhen_core::config::{Loaded, LoadedPipeline, RootConfig, check, parse_yaml};
use huizhen_core::message::State;
use huizhen_core::runner::Engine;
use huizhen_domain::identity::{Matcher, Thresholds, Weights};
use huizhen_domain::vitals::binding::DeviceBinding;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
// The `mqtt` source registers itself through typetag: the bench names the crate so the linker
// keeps it (as the binary does).
use huizhen_mqtt as _;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn host() -> String {
    std::env::var("MQTT_HOST").unwrap_or_else(|_| "127.0.0.1".into())
}
fn port() -> u16 {
    std::env::var("MQTT_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(1883)
}

fn reading(i: usize) -> Vec<u8> {
    let t = 1_764_000_000 + i as i64;
    format!(
        r#"{{"device_id":"BENCH-1","measured_at":{t},"systolic":{},"diastolic":{},"heart_rate":{}}}"#,
        110 + i % 50,
        70 + i % 20,
        60 + i % 40
    )
    .into_bytes()
}

/// Readings the publisher keeps ahead of the consumer at most. Mosquitto queues at most
/// `max_queued_messages` (default 1000) QoS 1 messages per session beyond those in flight and
/// drops the rest silently, so an unpaced publisher faster than the consumer loses readings
/// and the run never completes (docs/devices.md).
const WINDOW: usize = 500;

/// Publishes `n` readings at QoS 1 (the event loop polled until every PUBACK came back), never
/// more than [`WINDOW`] ahead of what `consumed` reports.
async fn publish_all<F: std::future::Future<Output = usize> + Send + 'static>(
    topic: &str,
    n: usize,
    tag: &str,
    consumed: impl Fn() -> F + Send + 'static,
) -> Res<()> {
    let mut o = MqttOptions::new(format!("bench-pub-{tag}"), host(), port());
    o.set_inflight(100);
    let (c, mut l) = AsyncClient::new(o, 200);
    let topic = topic.to_owned();
    let sender = tokio::spawn(async move {
        let mut allowed = 0;
        for i in 0..n {
            while i >= allowed {
                allowed = consumed().await + WINDOW;
                if i >= allowed {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            c.publish(topic.as_str(), QoS::AtLeastOnce, false, reading(i))
                .await
                .unwrap();
        }
        c
    });
    let mut acked = 0;
    while acked < n {
        if let Event::Incoming(Packet::PubAck(_)) = l.poll().await? {
            acked += 1;
        }
    }
    let c = sender.await?;
    let _ = c.disconnect().await;
    Ok(())
}

async fn baseline(n: usize, tag: &str) -> Res<f64> {
    let topic = format!("bench/{tag}/base");
    let mut o = MqttOptions::new(format!("bench-sub-{tag}"), host(), port());
    o.set_clean_session(true);
    let (c, mut l) = AsyncClient::new(o, 200);
    c.subscribe(topic.as_str(), QoS::AtLeastOnce).await?;
    // Wait for the SUBACK before publishing.
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = l.poll().await? {
            break;
        }
    }
    let got = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let publisher = tokio::spawn({
        let topic = topic.clone();
        let tag = tag.to_owned();
        let got = got.clone();
        async move {
            publish_all(&topic, n, &tag, move || {
                let got = got.clone();
                async move { got.load(std::sync::atomic::Ordering::Relaxed) }
            })
            .await
            .map_err(|e| e.to_string())
        }
    });
    while got.load(std::sync::atomic::Ordering::Relaxed) < n {
        if let Event::Incoming(Packet::Publish(_)) = l.poll().await? {
            got.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    publisher.await??;
    let _ = c.disconnect().await;
    Ok(n as f64 / secs)
}

async fn engine_rate(n: usize, tag: &str, concurrency: Option<usize>) -> Res<(f64, usize)> {
    let dir = tempfile::tempdir()?;
    let mut root = RootConfig::default();
    root.store.url = format!("sqlite://{}/journal.db", dir.path().display());
    root.security.encryption.keys_file = dir.path().join("keys");
    let topic = format!("bench/{tag}/engine");
    let yaml = format!(
        r#"version: 1
name: devices
facility: bench
source:
  mqtt:
    url: mqtt://{}:{}
    protocol: "5"
    client_id: bench-engine-{tag}
    topics: ["{topic}"]
    inflight: 256
{concurrency}steps:
  - device_reading:
      output: record
      thresholds:
        - {{ name: bp-high, when: "body.values.systolic >= 160.0" }}
sinks:
  - journal: {{}}
"#,
        host(),
        port(),
        concurrency = concurrency.map_or(String::new(), |c| format!("concurrency: {c}\n")),
    );
    let file = dir.path().join("bench.yaml");
    std::fs::write(&file, &yaml)?;
    let config = parse_yaml(&file, &yaml).map_err(|e| format!("{e:?}"))?;
    let pipelines = vec![LoadedPipeline { file, config }];
    let errors = check(&pipelines);
    if !errors.is_empty() {
        return Err(format!("pipeline does not check: {errors:?}").into());
    }
    let engine = Engine::start(Loaded {
        root,
        root_file: None,
        pipelines,
    })
    .await?;
    // The patient and the device's binding.
    let demo: huizhen_domain::identity::Demographics =
        serde_json::from_value(serde_json::json!({"facility": "bench", "local_id": "MR-1"}))?;
    let matcher = Matcher::new(Weights::default(), Thresholds::default())?;
    huizhen_core::patients::link(&engine.store, &matcher, &demo, "bench", |_| {
        huizhen_core::store::audit::AuditEvent::default()
    })
    .await?;
    engine
        .store
        .device_bind(
            &DeviceBinding {
                device: "BENCH-1".into(),
                facility: "bench".into(),
                local_id: "MR-1".into(),
                valid_from: chrono::DateTime::from_timestamp(0, 0).unwrap(),
                valid_to: None,
            },
            "bench",
            None,
        )
        .await?
        .map_err(|e| e.to_string())?;
    // Let the source connect and subscribe.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let start = Instant::now();
    // Progress from the engine's own counters (in memory, what `/metrics` reports): a query of
    // the journal every few milliseconds would load the machine it measures.
    let metrics = engine.metrics.clone();
    publish_all(&topic, n, tag, move || {
        let metrics = metrics.clone();
        // Journaled: what the source has taken from the broker.
        async move { metrics.counted("devices").0 as usize }
    })
    .await?;
    loop {
        let (_, done, dead) = engine.metrics.counted("devices");
        if dead > 0 {
            return Err(format!("{dead} readings dead").into());
        }
        if done as usize >= n {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            return Err(format!("only {done} of {n} done after 600 s").into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    // The journal agrees: every reading done, once.
    let done: i64 = engine
        .store
        .counts()
        .await?
        .iter()
        .filter(|(p, s, _)| p == "devices" && *s == State::Done)
        .map(|(_, _, k)| *k)
        .sum();
    engine.shutdown(Duration::from_secs(10)).await;
    Ok((n as f64 / secs, done as usize))
}

fn show(c: Option<usize>) -> String {
    c.map_or("4 (default)".into(), |c| c.to_string())
}

fn main() -> Res<()> {
    let n: usize = std::env::var("BENCH_READINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    // The pipeline's `concurrency` (default: the engine's, 4); several values in one run with
    // `BENCH_CONCURRENCY=4,32`.
    let concurrencies: Vec<Option<usize>> = match std::env::var("BENCH_CONCURRENCY") {
        Ok(v) if !v.trim().is_empty() => v
            .split(',')
            .map(|c| c.trim().parse().map(Some))
            .collect::<Result<_, _>>()?,
        _ => vec![None],
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let tag = format!("{}", std::process::id());
        if std::env::var_os("BENCH_ENGINE_ONLY").is_some() {
            // For a profiler: the engine's part alone.
            for (i, c) in concurrencies.iter().enumerate() {
                let (e, done) = engine_rate(n, &format!("{tag}-{i}"), *c).await?;
                println!("readings: {n} (done: {done}); concurrency {}; mqtt → device_reading → journal: {e:.0} readings/s", show(*c));
            }
            return Ok(());
        }
        // Warm-up of the broker path, then baseline and engine, then the baseline again.
        baseline(n.min(1000), &format!("{tag}w")).await?;
        let b1 = baseline(n, &format!("{tag}a")).await?;
        let mut rates = Vec::new();
        for (i, c) in concurrencies.iter().enumerate() {
            rates.push((*c, engine_rate(n, &format!("{tag}-{i}"), *c).await?));
        }
        let b2 = baseline(n, &format!("{tag}b")).await?;
        let base = (b1 + b2) / 2.0;
        println!("readings: {n}");
        println!("broker alone (publisher → plain QoS 1 subscriber): {b1:.0} and {b2:.0} msg/s, mean {base:.0}");
        for (c, (e, done)) in rates {
            println!(
                "mqtt → device_reading → journal, concurrency {}: {e:.0} readings/s (done: {done}); ratio {:.2} (target ≥ 0.5)",
                show(c),
                e / base
            );
        }
        Ok(())
    })
}
