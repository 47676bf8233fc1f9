//! Devices over MQTT (issue 25) against the local Mosquitto (127.0.0.1:1883, or `MQTT_HOST` /
//! `MQTT_PORT`), with the real binary: a reading published by `mosquitto_pub` becomes a
//! vital-sign Observation of the bound patient on /fhir/r4/Observation, a high blood pressure
//! raises an alert message, a malformed payload is a dead letter with the reason
//! (walk.rs); readings published while the engine is stopped arrive once it runs again, and a
//! `kill -9` mid-stream loses and duplicates nothing (restart.rs).
//!
//! Each test has its own topic prefix and client id, so tests share the broker. Without a
//! broker or `mosquitto_pub` the tests skip, except under CI, where they fail.

mod api;
mod broker;
mod cache;
mod consult;
mod restart;
mod walk;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::Value;

use crate::crash::{authed_client, free_port, start, wait_ready};
use crate::support::{TestDb, under_ci};

pub(crate) const FACILITY: &str = "clinic-7";

pub(crate) fn mqtt_host() -> String {
    std::env::var("MQTT_HOST").unwrap_or_else(|_| "127.0.0.1".into())
}
pub(crate) fn mqtt_port() -> u16 {
    std::env::var("MQTT_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(1883)
}

/// Whether the broker and `mosquitto_pub` are there (panics under CI when not).
pub(crate) fn broker_ready() -> bool {
    let up = std::net::TcpStream::connect_timeout(
        &format!("{}:{}", mqtt_host(), mqtt_port()).parse().unwrap(),
        Duration::from_secs(2),
    )
    .is_ok();
    let tool = Command::new("mosquitto_pub").arg("--help").output().is_ok();
    if up && tool {
        return true;
    }
    let why = format!("MQTT broker up: {up}, mosquitto_pub found: {tool}");
    assert!(
        !under_ci(),
        "the device tests need Mosquitto under CI: {why}"
    );
    eprintln!("skipping: {why}");
    false
}

/// A fresh name for topics and client ids.
pub(crate) fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &huizhen_core::message::new_id().replace('-', "")[20..]
    )
}

/// Publishes one message with `mosquitto_pub` at QoS 1.
pub(crate) fn publish(topic: &str, payload: &str) {
    let out = Command::new("mosquitto_pub")
        .args(["-h", &mqtt_host(), "-p", &mqtt_port().to_string()])
        .args(["-q", "1", "-t", topic, "-m", payload])
        .output()
        .expect("mosquitto_pub");
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A blood pressure reading in the flat gateway form.
pub(crate) fn bp(device: &str, at: &str, sys: u32, dia: u32, pulse: u32) -> String {
    serde_json::json!({
        "device_id": device, "measured_at": at,
        "systolic": sys, "diastolic": dia, "heart_rate": pulse,
    })
    .to_string()
}

/// An engine's files: config (bodies encrypted at rest, as by default), pipelines.
pub(crate) struct Engine {
    pub config: PathBuf,
    pub port: u16,
    pub log: PathBuf,
    pub child: Option<Child>,
    pub http: reqwest::Client,
}

/// The device pipeline (mqtt → device_reading → fhir_store) and the alert pipeline.
pub(crate) fn pipelines(topic: &str, client_id: &str) -> (String, String) {
    let devices = format!(
        r#"version: 1
name: devices
facility: {FACILITY}
source:
  mqtt:
    url: mqtt://{host}:{port}
    protocol: "5"
    client_id: {client_id}
    topics: ["{topic}/+/vitals"]
    qos: 1
    session_expiry: 1h
steps:
  - device_reading:
      thresholds:
        - {{ name: bp-high, when: "body.values.systolic >= 160.0 || body.values.diastolic >= 100.0" }}
      alert_to: device-alerts
sinks:
  - fhir_store: {{}}
"#,
        host = mqtt_host(),
        port = mqtt_port(),
    );
    let alerts = format!(
        "version: 1\nname: device-alerts\nfacility: {FACILITY}\nsource:\n  http: {{ path: /in/device-alerts, kind: json }}\nsinks:\n  - journal: {{}}\n"
    );
    (devices, alerts)
}

impl Engine {
    pub(crate) fn new(db: &TestDb, topic: &str, client_id: &str) -> Engine {
        let dir = db.dir.path();
        let port = free_port();
        std::fs::create_dir_all(dir.join("pipelines")).unwrap();
        std::fs::write(
            dir.join("huizhen.yaml"),
            format!(
                "version: 1\nstore:\n  url: \"{}\"\nhttp:\n  bind: 127.0.0.1:{port}\njournal:\n  scheduler_poll: 100ms\nsecurity:\n  jwt_secret: \"{}\"\n  encryption: {{ keys_file: \"{}\" }}\npipelines: [\"pipelines/*.yaml\"]\n",
                db.url,
                crate::crash::TEST_SECRET,
                dir.join("keys").display()
            ),
        )
        .unwrap();
        let (devices, alerts) = pipelines(topic, client_id);
        std::fs::write(dir.join("pipelines/devices.yaml"), devices).unwrap();
        std::fs::write(dir.join("pipelines/alerts.yaml"), alerts).unwrap();
        Engine {
            config: dir.join("huizhen.yaml"),
            port,
            log: dir.join("engine.log"),
            child: None,
            http: authed_client(Duration::from_secs(20)),
        }
    }

    /// Runs the CLI against this engine's config; panics unless it succeeds. Returns stdout.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_huizhen"))
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run huizhen");
        assert!(
            out.status.success(),
            "huizhen {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Imports a patient record `local_id` of FACILITY and binds `device` to it from `from`.
    /// Returns the person id (`person-N`).
    pub(crate) fn patient_with_device(&self, local_id: &str, device: &str, from: &str) -> String {
        let file = self.config.with_file_name(format!("{local_id}.ndjson"));
        let p = serde_json::json!({"resourceType": "Patient",
            "identifier": [{"type": {"coding": [{"code": "MR"}]}, "value": local_id}],
            "name": [{"family": "王", "given": ["芳"]}], "birthDate": "1956-04-02", "gender": "female"});
        std::fs::write(&file, p.to_string()).unwrap();
        self.cli(&[
            "patients",
            "import",
            "--facility",
            FACILITY,
            file.to_str().unwrap(),
        ]);
        self.cli(&[
            "devices",
            "bind",
            device,
            "--facility",
            FACILITY,
            "--patient",
            local_id,
            "--from",
            from,
        ]);
        let links = self.cli(&["patients", "links"]);
        let person = links
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f.len() == 3 && f[0] == FACILITY && f[1] == local_id).then(|| f[2].to_owned())
            })
            .unwrap_or_else(|| panic!("no link for {local_id}: {links}"));
        format!("person-{person}")
    }

    pub(crate) async fn start(&mut self) {
        let setup = crate::crash::Setup {
            config: self.config.clone(),
            port: self.port,
        };
        let mut child = start(&setup, &self.log);
        wait_ready(&self.http, self.port, &mut child, &self.log).await;
        self.child = Some(child);
    }

    /// SIGTERM and wait.
    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            crate::support::signal(&c, "-TERM");
            let _ = c.wait();
        }
    }

    /// SIGKILL and wait.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The vital-sign Observations of `person` (every page, following `next`).
    pub(crate) async fn observations(&self, person: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut url = format!(
            "http://127.0.0.1:{}/fhir/r4/Observation?patient={person}&category=vital-signs&_count=200",
            self.port
        );
        loop {
            let r = self.http.get(&url).send().await.unwrap();
            let status = r.status();
            let b: Value = r.json().await.unwrap_or(Value::Null);
            assert!(status.is_success(), "GET {url}: {status} {b}");
            if let Some(e) = b["entry"].as_array() {
                out.extend(e.iter().map(|x| x["resource"].clone()));
            }
            let next = b["link"].as_array().and_then(|l| {
                l.iter()
                    .find(|x| x["relation"] == "next")
                    .and_then(|x| x["url"].as_str().map(str::to_owned))
            });
            match next {
                Some(n) => url = n,
                None => return out,
            }
        }
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The test's own store on the engine's database, with its key file (to read bodies).
pub(crate) async fn open_store(db: &TestDb) -> huizhen_core::store::Store {
    let keyring =
        huizhen_core::crypto::Keyring::from_config(&huizhen_core::crypto::EncryptionConfig {
            keys_file: db.dir.path().join("keys"),
            ..Default::default()
        })
        .unwrap();
    crate::support::store(db).await.with_keyring(keyring)
}

/// Publishes `payload` every half second until `person` has `expect` Observations: the
/// source subscribes once connected, and a reading published before that has no subscriber
/// (the dedup key makes the repeats harmless). Then the session exists on the broker.
pub(crate) async fn prime(e: &Engine, topic: &str, payload: &str, person: &str, expect: usize) {
    let start = std::time::Instant::now();
    loop {
        publish(topic, payload);
        for _ in 0..10 {
            if e.observations(person).await.len() >= expect {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the first reading never arrived:\n{}",
            e.log_text()
        );
    }
}
