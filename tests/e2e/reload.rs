//! Pipeline hot reload and source start-up (issue 24 items 2, 3 and 6).
//!
//! - In process: an MLLP sender keeps sending over one connection while the pipelines are
//!   reloaded through the API; every ACK is AA and the unchanged listener is the same version.
//!   A changed pipeline runs its new version (a message held in the old one finishes there, one
//!   sent after the swap runs on the new one) and routes into a pipeline the reload added, with
//!   an `internal` source that has no HTTP endpoint. A broken file is refused: its pipeline runs
//!   on, and the reason is in the answer, in /api/pipelines and in the audit trail.
//! - With the real binary: SIGHUP and `huizhen reload` reload the files; a refused file makes
//!   `huizhen reload` exit 1 with the reason; an MLLP port in use makes `huizhen run` exit
//!   non-zero with a message naming the pipeline, the source and the cause.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use huizhen_core::Engine;
use huizhen_core::message::State;
use huizhen_core::runner::BuildContext;
use huizhen_core::security::Role;
use huizhen_core::steps::{Step, StepConfig};
use huizhen_core::work::{Flow, StepError, Work};
use huizhen_hl7::mllp::{Deframer, Event, frame};
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};

use crate::crash::{authed_client, free_port, wait_ready, write_root};
use crate::security::{security_config, token};

use crate::support::{
    Backend, JsonApi, fresh_db, get_json, journaled, loaded, serve, signal, wait_for,
};

/// The version of `reload_stamp` each message ran through, by message id.
static STAMPS: LazyLock<Mutex<HashMap<String, u32>>> = LazyLock::new(Default::default);
/// Messages the MLLP senders sent, for unique control ids.
static SENT: AtomicUsize = AtomicUsize::new(0);
/// Permits for `reload_stamp { hold: true }`.
static HOLD: LazyLock<Arc<Semaphore>> = LazyLock::new(|| Arc::new(Semaphore::new(0)));

/// `reload_stamp: { version: N, hold: bool }` records which version of the pipeline ran a
/// message; with `hold` it first waits for the test's permit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StampConfig {
    version: u32,
    #[serde(default)]
    hold: bool,
}

#[typetag::deserialize(name = "reload_stamp")]
impl StepConfig for StampConfig {
    fn type_name(&self) -> &'static str {
        "reload_stamp"
    }
    fn build(&self, _ctx: &BuildContext) -> Result<Arc<dyn Step>, String> {
        Ok(Arc::new(Stamp {
            version: self.version,
            hold: self.hold,
        }))
    }
}

struct Stamp {
    version: u32,
    hold: bool,
}

impl Step for Stamp {
    fn apply<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Flow, StepError>> {
        Box::pin(async move {
            if self.hold {
                HOLD.acquire()
                    .await
                    .map_err(|e| StepError::new(e.to_string()))?
                    .forget();
            }
            STAMPS.lock().unwrap().insert(work.id.clone(), self.version);
            Ok(Flow::Continue)
        })
    }
}

fn adt(n: usize) -> String {
    format!(
        "MSH|^~\\&|HIS|CLINIC|HUIZHEN|CENTER|20261123093000||ADT^A01^ADT_A01|R{n:06}|P|2.5\rEVN|A01|20261123093000\rPID|1||P{n}^^^CLINIC^MR||DOE^JOHN||19900101|M\rPV1|1|I\r"
    )
}

/// MSA-1 of an ACK.
fn msa(ack: &[u8]) -> String {
    let text = String::from_utf8_lossy(ack);
    text.split('\r')
        .find(|s| s.starts_with("MSA|"))
        .and_then(|s| s.split('|').nth(1))
        .unwrap_or("no MSA")
        .to_owned()
}

/// Sends ADTs over one connection, one at a time, until `stop`; returns each ACK's MSA-1
/// (`closed` if the engine closed the connection, `no ACK` if none came within 30 s).
async fn mllp_load(port: u16, acks: Arc<AtomicUsize>, stop: watch::Receiver<bool>) -> Vec<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut d = Deframer::new(1 << 20);
    let mut codes = Vec::new();
    let mut buf = [0u8; 4096];
    while !*stop.borrow() {
        // Control ids unique across senders: each message is new to the dedup.
        let n = SENT.fetch_add(1, Ordering::SeqCst);
        if s.write_all(&frame(adt(n).as_bytes())).await.is_err() {
            codes.push("closed".to_owned());
            break;
        }
        let code = 'ack: loop {
            match tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await {
                Ok(Ok(k)) if k > 0 => {
                    for ev in d.push(&buf[..k]) {
                        if let Event::Frame(f) = ev {
                            break 'ack msa(&f);
                        }
                    }
                }
                Ok(_) => break 'ack "closed".to_owned(),
                Err(_) => break 'ack "no ACK".to_owned(),
            }
        };
        let end = code != "AA";
        codes.push(code);
        acks.fetch_add(1, Ordering::SeqCst);
        if end {
            break;
        }
    }
    codes
}

async fn done(engine: &Engine, id: &str) {
    let store = engine.store.clone();
    let id = id.to_owned();
    wait_for(
        &format!("message {id} done"),
        Duration::from_secs(30),
        move || {
            let (store, id) = (store.clone(), id.clone());
            async move { (store.get(&id).await.ok()??.state == State::Done).then_some(()) }
        },
    )
    .await;
}

fn pipeline<'a>(list: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    list["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in /api/pipelines: {list}"))
}

fn names(v: &serde_json::Value) -> Vec<String> {
    let mut n: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect();
    n.sort();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_mllp_load_restarts_only_what_changed() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let port = free_port();
    let intake = format!(
        "version: 1\nname: intake\nsource:\n  mllp: {{ listen: \"127.0.0.1:{port}\" }}\nsinks:\n  - journal: {{}}\n"
    );
    let lab_v1 = "version: 1\nname: lab\nsource:\n  http: { path: /in/lab, kind: json }\nsteps:\n  - reload_stamp: { version: 1, hold: true }\nsinks:\n  - journal: {}\n";
    let extra = "version: 1\nname: extra\nsource:\n  http: { path: /in/extra, kind: json }\nsinks:\n  - journal: {}\n";
    let mut cfg = loaded(&db, &[&intake, lab_v1, extra]);
    let dir = db.dir.path().to_path_buf();
    // New files in the folder are found by the reload, as `pipelines/*.yaml` would be.
    cfg.root.pipelines = vec![format!("{}/*.yaml", dir.display())];
    let engine = Engine::start(cfg).await.unwrap();
    let api = JsonApi::new(serve(&engine, &security_config()).await);
    let admin = token(Role::Admin, "*");
    let intake_before = engine.pipeline("intake").unwrap();
    let lab_before = engine.pipeline("lab").unwrap();

    // An MLLP sender on one connection, busy before, during and after the reload.
    let acks = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = watch::channel(false);
    let sender = tokio::spawn(mllp_load(port, acks.clone(), stopped));
    let count = || acks.load(Ordering::SeqCst);
    wait_for("the first ACKs", Duration::from_secs(30), || async {
        (count() >= 20).then_some(())
    })
    .await;

    // A message the first version of `lab` holds.
    let (status, body) = api.post("/in/lab", &admin, json!({ "n": "a" })).await;
    assert_eq!(status, 202, "{body}");
    let a = body["id"].as_str().unwrap().to_owned();

    // lab changes (and routes into a new pipeline with an `internal` source); extra breaks.
    std::fs::write(
        dir.join("p1.yaml"),
        "version: 1\nname: lab\nsource:\n  http: { path: /in/lab, kind: json }\nsteps:\n  - reload_stamp: { version: 2 }\n  - route: { to: archive, continue: true }\nsinks:\n  - journal: {}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("archive.yaml"),
        "version: 1\nname: archive\nsource:\n  internal: {}\nsinks:\n  - journal: {}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("p2.yaml"),
        "version: 1\nname: extra\nsource:\n  htp: { path: /in/extra }\nsinks:\n  - journal: {}\n",
    )
    .unwrap();
    let reload = {
        let (api, admin) = (api.clone(), admin.clone());
        tokio::spawn(async move { api.post("/api/pipelines/reload", &admin, json!({})).await })
    };
    // Once lab's new version is registered, what is sent to lab goes to it, while the old one
    // still holds `a`.
    wait_for("lab's new version", Duration::from_secs(30), || {
        let now = engine.pipeline("lab");
        let old = lab_before.clone();
        async move { now.filter(|p| !p.same_version(&old)).map(|_| ()) }
    })
    .await;
    let (status, body) = api.post("/in/lab", &admin, json!({ "n": "c" })).await;
    assert_eq!(status, 202, "{body}");
    let c = body["id"].as_str().unwrap().to_owned();
    HOLD.add_permits(1);
    let (status, report) = reload.await.unwrap();
    // A refused file: 409, with what was applied and why the file was refused.
    assert_eq!(status, 409, "{report}");
    let r = &report["reload"];
    assert_eq!(r["applied"], true, "{r}");
    assert_eq!(names(&r["restarted"]), ["lab"], "{r}");
    assert_eq!(names(&r["added"]), ["archive"], "{r}");
    assert!(names(&r["removed"]).is_empty(), "{r}");
    assert_eq!(names(&r["unchanged"]), ["extra", "intake"], "{r}");
    let refused = r["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{r}");
    assert!(
        refused[0]["file"].as_str().unwrap().ends_with("p2.yaml"),
        "{r}"
    );
    assert_eq!(names(&refused[0]["kept"]), ["extra"], "{r}");
    let why = refused[0]["errors"].to_string();
    assert!(why.contains("p2.yaml:4:") && why.contains("htp"), "{why}");

    // The sender went on over the same connection: every ACK AA, every message journaled.
    let after = count();
    wait_for("ACKs after the reload", Duration::from_secs(30), || async {
        (count() >= after + 20).then_some(())
    })
    .await;
    stop.send(true).unwrap();
    let codes = sender.await.unwrap();
    let bad: Vec<_> = codes.iter().filter(|c| *c != "AA").collect();
    assert!(
        bad.is_empty(),
        "{} of {} ACKs not AA: {bad:?}",
        bad.len(),
        codes.len()
    );
    assert_eq!(journaled(&engine.store, "intake").await.len(), codes.len());
    assert!(
        engine
            .pipeline("intake")
            .unwrap()
            .same_version(&intake_before),
        "the unchanged MLLP pipeline kept its version"
    );

    // `a` finished on the version it started with, `c` ran on the new one and was routed.
    done(&engine, &a).await;
    done(&engine, &c).await;
    assert_eq!(STAMPS.lock().unwrap().get(&a), Some(&1));
    assert_eq!(STAMPS.lock().unwrap().get(&c), Some(&2));
    let store = engine.store.clone();
    let routed = c.clone();
    wait_for("c routed to archive", Duration::from_secs(30), || {
        let (store, routed) = (store.clone(), routed.clone());
        async move {
            journaled(&store, "archive")
                .await
                .iter()
                .any(|m| m.parent_id.as_deref() == Some(routed.as_str()))
                .then_some(())
        }
    })
    .await;
    // The internal source has no HTTP endpoint.
    let (status, _) = api
        .post("/in/archive", &admin, json!({ "fake": true }))
        .await;
    assert_eq!(status, 404);

    // The refused file's pipeline runs on its old version, and says why it was kept.
    let (status, _) = api.post("/in/extra", &admin, json!({ "n": 1 })).await;
    assert_eq!(status, 202);
    let (status, list) = api.get("/api/pipelines", &admin).await;
    assert_eq!(status, 200);
    let e = pipeline(&list, "extra");
    assert!(
        e["reload_error"]
            .as_str()
            .is_some_and(|w| w.contains("htp")),
        "{e}"
    );
    let l = pipeline(&list, "lab");
    assert_eq!(l["reload_error"], serde_json::Value::Null, "{l}");
    assert_eq!(l["steps"], json!(["reload_stamp#0", "route#1"]), "{l}");
    let arc = pipeline(&list, "archive");
    assert_eq!(arc["source"], "internal (routed messages only)", "{arc}");
    assert_eq!(arc["running"], true, "{arc}");
    // The audit trail has the reload, its outcome and the reason.
    let (status, audit) = api.get("/api/audit?action=pipeline.reload", &admin).await;
    assert_eq!(status, 200);
    let events = audit["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{audit}");
    assert_eq!(events[0]["outcome"], "failure");
    let detail = events[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("restarted lab") && detail.contains("refused") && detail.contains("htp"),
        "{detail}"
    );

    // Fixed, the file applies: extra restarts and its reason is gone.
    std::fs::write(
        dir.join("p2.yaml"),
        extra.replace("kind: json", "kind: text"),
    )
    .unwrap();
    let (status, report) = api.post("/api/pipelines/reload", &admin, json!({})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(names(&report["reload"]["restarted"]), ["extra"], "{report}");
    let (_, list) = api.get("/api/pipelines", &admin).await;
    assert_eq!(
        pipeline(&list, "extra")["reload_error"],
        serde_json::Value::Null
    );

    // A new version whose port is in use does not start; the previous one runs again.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    std::fs::write(
        dir.join("p0.yaml"),
        intake.replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{busy}")),
    )
    .unwrap();
    let (status, report) = api.post("/api/pipelines/reload", &admin, json!({})).await;
    assert_eq!(status, 409, "{report}");
    let failed = &report["reload"]["failed"][0];
    assert_eq!(failed["pipeline"], "intake", "{report}");
    let why = failed["error"].as_str().unwrap();
    assert!(
        why.contains(&format!("cannot listen on 127.0.0.1:{busy}"))
            && why.contains("the previous version runs again"),
        "{why}"
    );
    let (stop, stopped) = watch::channel(false);
    let again = Arc::new(AtomicUsize::new(0));
    let sender = tokio::spawn(mllp_load(port, again.clone(), stopped));
    wait_for(
        "ACKs from the previous version",
        Duration::from_secs(30),
        || async { (again.load(Ordering::SeqCst) >= 3).then_some(()) },
    )
    .await;
    stop.send(true).unwrap();
    let codes = sender.await.unwrap();
    assert!(codes.iter().all(|c| c == "AA"), "{codes:?}");
    let (_, list) = api.get("/api/pipelines", &admin).await;
    let i = pipeline(&list, "intake");
    assert_eq!(i["running"], true, "{i}");
    assert!(
        i["reload_error"]
            .as_str()
            .is_some_and(|w| w.contains("cannot listen")),
        "{i}"
    );
    drop(taken);
    engine.shutdown(Duration::from_secs(10)).await;
}

/// A route to a pipeline that does not exist stays a validation error, whatever the target's
/// source; an `internal` source takes no settings.
#[test]
fn internal_source_and_route_targets_validate() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let from = write(
        "from.yaml",
        "version: 1\nname: from\nsource:\n  http: { path: /in/from }\nsteps:\n  - route: { to: into }\n",
    );
    let into = write(
        "into.yaml",
        "version: 1\nname: into\nsource:\n  internal: {}\nsinks:\n  - journal: {}\n",
    );
    assert_eq!(
        huizhen_core::config::validate_paths(&[from.clone(), into]).unwrap(),
        2
    );
    let errors = huizhen_core::config::validate_paths(std::slice::from_ref(&from))
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains("route target \"into\" is not a known pipeline"),
        "{errors}"
    );
    let bad = write(
        "bad.yaml",
        "version: 1\nname: bad\nsource:\n  internal: { path: /in/bad }\n",
    );
    let errors = huizhen_core::config::validate_paths(&[bad])
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains("bad.yaml:4:") && errors.contains("path"),
        "{errors}"
    );
    // The shipped pipelines still validate with their routed pipelines on `internal`.
    let shipped = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../pipelines"));
    huizhen_core::config::validate_paths(&[shipped]).unwrap();
}

fn huizhen(root: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_huizhen"));
    c.arg("-c").arg(root).env("RUST_LOG", "warn");
    c
}

/// `huizhen run` with a source that cannot start exits non-zero, naming the pipeline, the
/// source and the cause; it does not run on without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_stops_run_with_the_reason() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let root = write_root(&db, free_port(), "");
    std::fs::write(
        db.dir.path().join("pipelines/adt.yaml"),
        format!("version: 1\nname: adt-in\nsource:\n  mllp: {{ listen: \"127.0.0.1:{port}\" }}\nsinks:\n  - journal: {{}}\n"),
    )
    .unwrap();
    let mut child = huizhen(&root)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("huizhen run kept running with its MLLP port in use");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("pipeline adt-in")
            && err.contains(&format!("source mllp 127.0.0.1:{port}"))
            && err.contains("cannot start")
            && err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
    drop(taken);
}

/// SIGHUP and `huizhen reload` reload the files of a running engine; a refused file makes
/// `huizhen reload` exit 1 with the reason and leaves the pipeline running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_the_reload_command_reload_a_running_engine() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let http = free_port();
    let root = write_root(&db, http, "");
    let file = db.dir.path().join("pipelines/a.yaml");
    let v1 = "version: 1\nname: a\nsource:\n  http: { path: /in/a, kind: json }\nsinks:\n  - journal: {}\n";
    std::fs::write(&file, v1).unwrap();
    let log = db.dir.path().join("run.log");
    let mut child = huizhen(&root)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let client = authed_client(Duration::from_secs(30));
    wait_ready(&client, http, &mut child, &log).await;
    let steps = |client: reqwest::Client| async move {
        let v = get_json(&client, &format!("http://127.0.0.1:{http}/api/pipelines")).await?;
        Some(v["pipelines"][0]["steps"].clone())
    };

    // SIGHUP: the new version of `a` runs.
    std::fs::write(
        &file,
        v1.replace(
            "sinks:",
            "steps:\n  - set: { headers: { v: \"'2'\" } }\nsinks:",
        ),
    )
    .unwrap();
    signal(&child, "-HUP");
    wait_for("a reloaded by SIGHUP", Duration::from_secs(30), || {
        let client = client.clone();
        async move { (steps(client).await? == json!(["set#0"])).then_some(()) }
    })
    .await;

    // `huizhen reload` (a token issued with the local secret): restarted, exit 0.
    std::fs::write(
        &file,
        v1.replace(
            "sinks:",
            "steps:\n  - set: { headers: { v: \"'3'\" } }\n  - log: { message: v3 }\nsinks:",
        ),
    )
    .unwrap();
    let out = huizhen(&root).arg("reload").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("restarted: a"), "{stdout}");
    assert_eq!(steps(client.clone()).await, Some(json!(["set#0", "log#1"])));

    // A broken file: exit 1 with the reason; `a` runs on.
    std::fs::write(
        &file,
        "version: 1\nname: a\nsource:\n  http: { pth: /in/a }\n",
    )
    .unwrap();
    let out = huizhen(&root).arg("reload").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("refused:") && stdout.contains("a.yaml"),
        "{stdout}"
    );
    let r = client
        .post(format!("http://127.0.0.1:{http}/in/a"))
        .json(&json!({ "still": "running" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);

    // The audit trail names who reloaded: the signal and the command's token.
    let audit = get_json(
        &client,
        &format!("http://127.0.0.1:{http}/api/audit?action=pipeline.reload"),
    )
    .await
    .unwrap();
    let actors: Vec<(String, String)> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        actors,
        [
            ("signal:SIGHUP".to_owned(), "success".to_owned()),
            ("cli:reload".to_owned(), "success".to_owned()),
            ("cli:reload".to_owned(), "failure".to_owned()),
        ],
        "{audit}"
    );
    signal(&child, "-TERM");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "huizhen did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
