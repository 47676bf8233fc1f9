//! The `mqtt` source and sink against a Mosquitto of the test's own (started here on free
//! ports, with a temp config, certificates made by `openssl` and a password file made by
//! `mosquitto_passwd`): TLS with the broker's certificate checked against a CA, client
//! certificates, username/password, MQTT 3.1.1 and 5, QoS 2, dedup by MQTT 5 correlation data
//! and by a key from the payload, and the sink's retries while the broker is down.
//!
//! Without `mosquitto` / `mosquitto_passwd` the tests skip, except under CI, where they fail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use huizhen_core::Engine;
use huizhen_core::message::{Message, NewMessage, State};
use huizhen_core::store::Store;
use huizhen_mqtt::{BrokerConfig, Protocol};

use super::unique;
use crate::crash::free_port;
use crate::support::{Backend, fresh_db, journaled, loaded, under_ci, wait_for};

const USER: &str = "gateway-7";
const PASSWORD: &str = "s3cret-7";

/// A Mosquitto process of this test: a plain listener that wants username/password, a TLS one
/// (server certificate only) and a TLS one that wants a client certificate. Killed (by its
/// PID) when dropped.
struct Broker {
    dir: PathBuf,
    plain: u16,
    tls: u16,
    mutual: u16,
    child: Option<Child>,
}

fn tools_ready() -> bool {
    let have = |t: &str| {
        Command::new(t)
            .arg("-h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    let ok = have("mosquitto") && have("mosquitto_passwd") && have("mosquitto_pub");
    assert!(
        ok || !under_ci(),
        "the MQTT broker tests need mosquitto, mosquitto_passwd and mosquitto_pub under CI"
    );
    if !ok {
        eprintln!("skipping: mosquitto, mosquitto_passwd or mosquitto_pub not found");
    }
    ok
}

impl Broker {
    /// Certificates, the password file and the config in `dir`; the broker not yet running.
    fn prepare(dir: &Path) -> Broker {
        std::fs::create_dir_all(dir).unwrap();
        crate::tls::make_pki(dir);
        let pw = dir.join("passwd");
        std::fs::write(&pw, "").unwrap();
        let out = Command::new("mosquitto_passwd")
            .arg("-b")
            .arg(&pw)
            .args([USER, PASSWORD])
            .output()
            .expect("mosquitto_passwd");
        assert!(
            out.status.success(),
            "mosquitto_passwd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (plain, tls, mutual) = (free_port(), free_port(), free_port());
        let p = |f: &str| dir.join(f).display().to_string();
        // `user root`: when the tests run as root, Mosquitto would otherwise switch to the
        // `mosquitto` user, who cannot read the temp dir (no effect for any other user).
        let conf = format!(
            "user root\nper_listener_settings true\npersistence true\npersistence_location {dir}/\n\
             listener {plain} 127.0.0.1\nallow_anonymous false\npassword_file {pw}\n\
             listener {tls} 127.0.0.1\nallow_anonymous true\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n\
             listener {mutual} 127.0.0.1\nallow_anonymous false\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\nrequire_certificate true\nuse_identity_as_username true\n",
            dir = dir.display(),
            pw = pw.display(),
            ca = p("ca.pem"),
            cert = p("server.pem"),
            key = p("server.key"),
        );
        std::fs::write(dir.join("mosquitto.conf"), conf).unwrap();
        Broker {
            dir: dir.to_owned(),
            plain,
            tls,
            mutual,
            child: None,
        }
    }

    /// Starts Mosquitto and waits until its three listeners take connections.
    async fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join("mosquitto.log")).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("mosquitto");
        self.child = Some(child);
        let ports = [self.plain, self.tls, self.mutual];
        wait_for("the test's Mosquitto", Duration::from_secs(20), || async {
            ports
                .iter()
                .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok())
                .then_some(())
        })
        .await;
    }

    /// SIGTERM (Mosquitto saves its sessions) and wait.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            crate::support::signal(&c, "-TERM");
            let _ = c.wait();
        }
    }

    fn path(&self, f: &str) -> String {
        self.dir.join(f).display().to_string()
    }

    /// `mosquitto_pub` with `args` (port, TLS, credentials, protocol, QoS…) and one message.
    fn publish(&self, args: &[&str], topic: &str, payload: &str) {
        let out = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1"])
            .args(args)
            .args(["-t", topic, "-m", payload])
            .output()
            .expect("mosquitto_pub");
        assert!(
            out.status.success(),
            "mosquitto_pub {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A pipeline `name`: the `mqtt` source with `settings` (YAML flow-map entries) on `topic`,
/// into the journal.
fn source_pipeline(name: &str, settings: &str, topic: &str, extra: &str) -> String {
    format!(
        "version: 1\nname: {name}\nfacility: clinic-7\nsource:\n  mqtt: {{ client_id: {id}, topics: [\"{topic}\"], {settings} }}\n{extra}sinks:\n  - journal: {{}}\n",
        id = unique("hz-brk"),
    )
}

/// Publishes with `publish` every 300 ms until `pipeline` journaled `expect` messages (the
/// source subscribes once connected; what is published before has no subscriber). The copies
/// are one reading: the dedup key keeps one.
async fn until_journaled(
    store: &Store,
    pipeline: &str,
    expect: usize,
    broker: &Broker,
    publish: impl Fn(),
) -> Vec<Message> {
    let start = std::time::Instant::now();
    loop {
        publish();
        for _ in 0..15 {
            let all = journaled(store, pipeline).await;
            if all.len() >= expect {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{pipeline}: nothing journaled after 60 s; broker log:\n{}",
            broker.log()
        );
    }
}

/// The engine's message from `journaled`, its body as JSON.
fn body(m: &Message) -> serde_json::Value {
    serde_json::from_slice(&m.body).unwrap_or(serde_json::Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_ca_client_certificates_passwords_mqtt_3_and_5_and_qos_2() {
    if !tools_ready() {
        return;
    }
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let mut b = Broker::prepare(&db.dir.path().join("broker"));
    b.start().await;
    let t = unique("hz-brk");
    let ca = b.path("ca.pem");
    let tls_ca = format!("tls: {{ ca: \"{ca}\" }}");
    let tls_client = format!(
        "tls: {{ ca: \"{ca}\", cert: \"{}\", key: \"{}\" }}",
        b.path("client.pem"),
        b.path("client.key")
    );
    let creds = format!("username: {USER}, password: {PASSWORD}");
    let (client_pem, client_key) = (b.path("client.pem"), b.path("client.key"));
    // (pipeline, source settings, mosquitto_pub options; no option contains a space)
    let cases = [
        (
            "tls-v5",
            format!(
                "url: \"mqtts://127.0.0.1:{}\", protocol: \"5\", {tls_ca}",
                b.tls
            ),
            format!("-p {} --cafile {ca} -q 1", b.tls),
        ),
        (
            "mtls-v311-qos2",
            format!(
                "url: \"mqtts://127.0.0.1:{}\", protocol: \"3.1.1\", qos: 2, {tls_client}",
                b.mutual
            ),
            format!(
                "-p {} --cafile {ca} --cert {client_pem} --key {client_key} -q 2 -V mqttv311",
                b.mutual
            ),
        ),
        (
            "auth-v311",
            format!(
                "url: \"mqtt://127.0.0.1:{}\", protocol: \"3.1.1\", {creds}",
                b.plain
            ),
            format!("-p {} -u {USER} -P {PASSWORD} -q 1 -V mqttv311", b.plain),
        ),
        (
            "auth-v5-qos2",
            format!(
                "url: \"mqtt://127.0.0.1:{}\", protocol: \"5\", qos: 2, {creds}",
                b.plain
            ),
            format!("-p {} -u {USER} -P {PASSWORD} -q 2 -V mqttv5", b.plain),
        ),
    ];
    let yamls: Vec<String> = cases
        .iter()
        .map(|(name, settings, _)| source_pipeline(name, settings, &format!("{t}/{name}"), ""))
        .collect();
    let refs: Vec<&str> = yamls.iter().map(String::as_str).collect();
    let engine = Engine::start(loaded(&db, &refs)).await.unwrap();
    for (name, _, args) in &cases {
        let args: Vec<&str> = args.split(' ').collect();
        let topic = format!("{t}/{name}");
        let payload = format!(r#"{{"device_id":"BP-1","via":"{name}"}}"#);
        let got = until_journaled(&engine.store, name, 1, &b, || {
            b.publish(&args, &topic, &payload)
        })
        .await;
        assert_eq!(got.len(), 1, "{name}: one message for the repeats");
        let m = &got[0];
        assert_eq!(body(m)["via"], *name, "{name}");
        assert_eq!(m.headers.get("mqtt-topic"), Some(&topic), "{name}");
        let qos = if name.ends_with("qos2") { "2" } else { "1" };
        assert_eq!(
            m.headers.get("mqtt-qos").map(String::as_str),
            Some(qos),
            "{name}"
        );
    }
    engine.shutdown(Duration::from_secs(5)).await;

    // What the broker refuses, seen by the client: a broker certificate of an unknown CA (the
    // public roots only), a wrong password, no client certificate where one is required.
    let refused = |url: String, protocol, tls, user: Option<&str>, pw: Option<&str>| {
        let cfg = BrokerConfig {
            url,
            protocol,
            client_id: unique("hz-brk-no"),
            username: user.map(str::to_owned),
            password: pw.map(str::to_owned),
            tls,
            keep_alive: Duration::from_secs(30),
        };
        async move {
            let (_c, mut l) = huizhen_mqtt::connect(&cfg, false, Duration::ZERO, false, 8).unwrap();
            match tokio::time::timeout(Duration::from_secs(20), l.poll()).await {
                Ok(Err(e)) => e,
                Ok(Ok(_)) => panic!("{}: connected", cfg.url),
                Err(_) => panic!("{}: neither connected nor refused in 20 s", cfg.url),
            }
        }
    };
    let tls_of = |ca: Option<String>, cert: bool| {
        Some(huizhen_core::tls::ClientTlsConfig {
            ca: ca.map(PathBuf::from),
            cert: cert.then(|| PathBuf::from(b.path("client.pem"))),
            key: cert.then(|| PathBuf::from(b.path("client.key"))),
            ..Default::default()
        })
    };
    let e = refused(
        format!("mqtts://127.0.0.1:{}", b.tls),
        Protocol::V5,
        tls_of(None, false),
        None,
        None,
    )
    .await;
    assert!(
        e.to_lowercase().contains("certificate") || e.contains("UnknownIssuer"),
        "unknown CA: {e}"
    );
    let e = refused(
        format!("mqtt://127.0.0.1:{}", b.plain),
        Protocol::V311,
        None,
        Some(USER),
        Some("wrong"),
    )
    .await;
    assert!(e.contains("refused"), "wrong password: {e}");
    let e = refused(
        format!("mqtt://127.0.0.1:{}", b.plain),
        Protocol::V5,
        None,
        None,
        None,
    )
    .await;
    assert!(
        e.contains("refused") || e.contains("NotAuthorized"),
        "anonymous: {e}"
    );
    let e = refused(
        format!("mqtts://127.0.0.1:{}", b.mutual),
        Protocol::V5,
        tls_of(Some(ca.clone()), false),
        None,
        None,
    )
    .await;
    assert!(!e.is_empty(), "no client certificate: {e}");
    // And the control: the same client with its certificate gets in.
    let cfg = BrokerConfig {
        url: format!("mqtts://127.0.0.1:{}", b.mutual),
        protocol: Protocol::V5,
        client_id: unique("hz-brk-ok"),
        username: None,
        password: None,
        tls: tls_of(Some(ca), true),
        keep_alive: Duration::from_secs(30),
    };
    let (_c, mut l) = huizhen_mqtt::connect(&cfg, false, Duration::ZERO, false, 8).unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(20), l.poll())
        .await
        .expect("connect in 20 s")
        .expect("connected with the client certificate");
    assert!(matches!(ev, huizhen_mqtt::Event::Connected { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_by_correlation_data_and_by_a_key_from_the_payload() {
    if !tools_ready() {
        return;
    }
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let mut b = Broker::prepare(&db.dir.path().join("broker"));
    b.start().await;
    let t = unique("hz-dup");
    let url = format!(
        "url: \"mqtt://127.0.0.1:{}\", protocol: \"5\", username: {USER}, password: {PASSWORD}",
        b.plain
    );
    let corr = source_pipeline("corr", &url, &format!("{t}/corr"), "");
    // `dedup: correlation` leaves a message without correlation data to the pipeline's key:
    // here the gateway's reading id.
    let key = source_pipeline(
        "key",
        &format!("{url}, dedup: correlation"),
        &format!("{t}/key"),
        "dedup: { key: \"body.reading_id\" }\n",
    );
    let engine = Engine::start(loaded(&db, &[&corr, &key])).await.unwrap();
    let p = b.plain.to_string();
    let base = [
        "-p",
        p.as_str(),
        "-u",
        USER,
        "-P",
        PASSWORD,
        "-q",
        "1",
        "-V",
        "mqttv5",
    ];

    // The same reading sent twice with its correlation data: one message, keyed by it.
    let topic = format!("{t}/corr");
    let reading =
        r#"{"device_id":"BP-9","measured_at":"2026-03-01T08:00:00+08:00","systolic":120}"#;
    let with_corr = |r: &str| {
        let mut a = base.to_vec();
        a.extend(["-D", "publish", "correlation-data", "reading-0042"]);
        b.publish(&a, &topic, r)
    };
    let got = until_journaled(&engine.store, "corr", 1, &b, || with_corr(reading)).await;
    with_corr(reading);
    // A distinct reading after it: once that one is journaled, so is (or is not) the copy,
    // which the broker delivered before it.
    let mut a = base.to_vec();
    a.extend(["-D", "publish", "correlation-data", "reading-0043"]);
    b.publish(&a, &topic, r#"{"device_id":"BP-9","n":2}"#);
    let all = wait_for("the second reading", Duration::from_secs(30), || async {
        let all = journaled(&engine.store, "corr").await;
        (all.len() >= 2).then_some(all)
    })
    .await;
    assert_eq!(
        all.len(),
        2,
        "the copy with the same correlation data was not journaled"
    );
    assert_eq!(
        got[0].dedup_key.as_deref(),
        Some(format!("mqtt-corr:{}", hex::encode("reading-0042")).as_str())
    );
    assert_eq!(
        got[0].headers.get("mqtt-correlation").map(String::as_str),
        Some(hex::encode("reading-0042").as_str())
    );

    // A key from the payload: the same reading twice → one message, keyed by its reading id.
    let topic = format!("{t}/key");
    let reading = r#"{"reading_id":"gw7-000123","device_id":"BP-9","systolic":121}"#;
    let got = until_journaled(&engine.store, "key", 1, &b, || {
        b.publish(&base, &topic, reading)
    })
    .await;
    b.publish(&base, &topic, reading);
    b.publish(
        &base,
        &topic,
        r#"{"reading_id":"gw7-000124","device_id":"BP-9"}"#,
    );
    let all = wait_for("the second reading", Duration::from_secs(30), || async {
        let all = journaled(&engine.store, "key").await;
        (all.len() >= 2).then_some(all)
    })
    .await;
    assert_eq!(all.len(), 2, "the copy of gw7-000123 was not journaled");
    assert_eq!(got[0].dedup_key.as_deref(), Some("gw7-000123"));
    assert!(all.iter().all(|m| m.state != State::Dead));
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_retries_while_the_broker_is_down_and_delivers_once() {
    if !tools_ready() {
        return;
    }
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let mut b = Broker::prepare(&db.dir.path().join("broker"));
    let topic = format!("{}/alerts", unique("hz-sink"));
    // A subscriber with a persistent session, made while the broker is up; the broker keeps it
    // (and what arrives for it) across its restart.
    b.start().await;
    let sub_id = unique("hz-sink-sub");
    let plain = b.plain;
    let sub = |id: &str| BrokerConfig {
        url: format!("mqtt://127.0.0.1:{plain}"),
        protocol: Protocol::V5,
        client_id: id.to_owned(),
        username: Some(USER.into()),
        password: Some(PASSWORD.into()),
        tls: None,
        keep_alive: Duration::from_secs(30),
    };
    {
        let (c, mut l) =
            huizhen_mqtt::connect(&sub(&sub_id), true, Duration::from_secs(3600), false, 8)
                .unwrap();
        c.subscribe(std::slice::from_ref(&topic), huizhen_mqtt::Qos::AtLeastOnce)
            .await
            .unwrap();
        subacked(&mut l).await;
        c.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while l.poll().await.is_ok() {}
        })
        .await;
    }
    b.stop();

    let yaml = format!(
        "version: 1\nname: alerts-out\nfacility: clinic-7\nsource:\n  http: {{ path: /in/alerts-out, kind: json }}\nretry: {{ max_attempts: 50, backoff: 200ms, max_backoff: 1s }}\nsinks:\n  - mqtt: {{ url: \"mqtt://127.0.0.1:{}\", protocol: \"5\", client_id: {}, username: {USER}, password: {PASSWORD}, topic: \"{topic}\", qos: 1, ack_timeout: 2s }}\n",
        b.plain,
        unique("hz-sink-pub"),
    );
    let engine = Engine::start(loaded(&db, &[&yaml])).await.unwrap();
    let alert = r#"{"record":"vital_alert","device":"BP-1","alerts":[{"name":"bp-high"}]}"#;
    let accepted = engine
        .pipeline("alerts-out")
        .unwrap()
        .submit(NewMessage::new(
            "alerts-out",
            "clinic-7",
            "json",
            alert.as_bytes().to_vec(),
        ))
        .await
        .unwrap();
    // The broker is down: the delivery fails and is retried.
    let failed = wait_for("a failed attempt", Duration::from_secs(30), || async {
        let m = engine.store.get(&accepted.id).await.ok().flatten()?;
        (m.attempts >= 1 && m.state != State::Done).then_some(m)
    })
    .await;
    assert_ne!(failed.state, State::Dead, "{:?}", failed.last_error);
    b.start().await;
    wait_for(
        "the delivery once the broker is up",
        Duration::from_secs(60),
        || async {
            let m = engine.store.get(&accepted.id).await.ok().flatten()?;
            (m.state == State::Done).then_some(())
        },
    )
    .await;

    // The subscriber finds it in its session, once, with the journal's id as correlation data.
    let (c, mut l) =
        huizhen_mqtt::connect(&sub(&sub_id), true, Duration::from_secs(3600), true, 8).unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while let Ok(ev) = l.poll().await {
            if let huizhen_mqtt::Event::Publish(m) = ev {
                let _ = c.ack(&m).await;
                got.push(m);
            }
        }
    })
    .await;
    assert_eq!(
        got.len(),
        1,
        "delivered once: {:?}",
        got.iter().map(|m| &m.payload).collect::<Vec<_>>()
    );
    assert_eq!(&got[0].payload[..], alert.as_bytes());
    assert_eq!(
        got[0].correlation.as_deref(),
        Some(accepted.id.to_string().as_bytes())
    );
    engine.shutdown(Duration::from_secs(5)).await;
}

/// Polls until the broker granted the subscription.
async fn subacked(l: &mut huizhen_mqtt::EventLoop) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while !matches!(
            l.poll().await.expect("subscriber connection"),
            huizhen_mqtt::Event::Subscribed
        ) {}
    })
    .await
    .expect("the subscription granted in 20 s");
}
