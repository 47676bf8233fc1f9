//! The legacy-HIS buffer: a burst of 20,000 messages toward a slow HIS (a fake MLLP receiver that
//! records when each request arrives and how many are in progress) is accepted at intake speed —
//! the journal holds what the in-memory queue (the default 1,024) cannot — and goes out no faster
//! than `deliver_limit.per_second` and never more than `max_in_flight` at once, and all arrive.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use huizhen_core::Engine;
use huizhen_core::message::{NewMessage, State};
use huizhen_hl7::mllp::{Deframer, Event, frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Backend, fresh_db, loaded, wait_for};

#[derive(Default)]
pub(crate) struct His {
    pub(crate) in_progress: AtomicUsize,
    pub(crate) most: AtomicUsize,
    pub(crate) arrivals: std::sync::Mutex<Vec<Instant>>,
    /// `MSH-10` of each request, in arrival order.
    pub(crate) controls: std::sync::Mutex<Vec<String>>,
}

/// A slow HIS: each message takes `work` before its AA.
pub(crate) async fn fake_his(work: Duration) -> (u16, Arc<His>) {
    fake_his_gated(work, tokio::sync::watch::channel(true).1).await
}

/// [`fake_his`] that takes each request only while `gate` is open (a hung destination while
/// it is closed: requests are read, nothing is answered or recorded).
pub(crate) async fn fake_his_gated(
    work: Duration,
    gate: tokio::sync::watch::Receiver<bool>,
) -> (u16, Arc<His>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let his = Arc::new(His::default());
    let h = his.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let h = h.clone();
            let mut gate = gate.clone();
            tokio::spawn(async move {
                let mut d = Deframer::new(1 << 20);
                let mut buf = vec![0u8; 8192];
                loop {
                    let n = match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    for ev in d.push(&buf[..n]) {
                        let Event::Frame(f) = ev else { continue };
                        if gate.wait_for(|open| *open).await.is_err() {
                            return;
                        }
                        h.arrivals.lock().unwrap().push(Instant::now());
                        let now = h.in_progress.fetch_add(1, Ordering::SeqCst) + 1;
                        h.most.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(work).await;
                        h.in_progress.fetch_sub(1, Ordering::SeqCst);
                        let text = String::from_utf8_lossy(&f).into_owned();
                        let control = text
                            .split('\r')
                            .next()
                            .and_then(|msh| msh.split('|').nth(9))
                            .unwrap_or("")
                            .to_owned();
                        h.controls.lock().unwrap().push(control.clone());
                        let ack = format!(
                            "MSH|^~\\&|HIS|H|HZ|P|20261124||ACK^A01^ACK|A{control}|P|2.5\rMSA|AA|{control}\r"
                        );
                        if s.write_all(&frame(ack.as_bytes())).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, his)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_20000_is_accepted_at_intake_speed_and_delivered_at_the_configured_rate() {
    const N: usize = 20_000;
    const RATE: f64 = 2000.0;
    const BURST: f64 = 50.0;
    const IN_FLIGHT: usize = 3;
    let (port, his) = fake_his(Duration::from_micros(500)).await;
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let yaml = format!(
        "version: 1\nname: to-his\nsource:\n  http: {{ path: /in/his, kind: hl7v2 }}\nconcurrency: 16\ndeliver_limit: {{ per_second: {RATE}, burst: {BURST}, max_in_flight: {IN_FLIGHT} }}\nsinks:\n  - mllp: {{ to: \"127.0.0.1:{port}\", connections: 8, charset: UTF-8 }}\n"
    );
    let engine = Engine::start(loaded(&db, &[&yaml])).await.unwrap();
    let p = engine.pipeline("to-his").unwrap().clone();
    let started = Instant::now();
    // 16 senders at once (the hospital's interfaces), each message acknowledged after its commit.
    let mut senders = tokio::task::JoinSet::new();
    for s in 0..16 {
        let p = p.clone();
        senders.spawn(async move {
            for i in (s..N).step_by(16) {
                let body = format!(
                    "MSH|^~\\&|HZ|P|HIS|H|20261124||ADT^A08^ADT_A01|B{i}|P|2.5\rPID|1||{i}^^^H^MR||TEST^PATIENT\r"
                );
                p.submit(NewMessage::new(
                    "to-his",
                    "default",
                    "hl7v2",
                    body.into_bytes(),
                ))
                .await
                .unwrap();
            }
        });
    }
    while let Some(r) = senders.join_next().await {
        r.unwrap();
    }
    let accepted = started.elapsed();
    let delivered_by_then = his.arrivals.lock().unwrap().len();
    eprintln!("{N} accepted in {accepted:?}; {delivered_by_then} had reached the HIS by then");
    // The sender was not held to the HIS's pace: when the last message was acknowledged, most
    // had not been delivered yet (the in-memory queue holds 1,024; the journal holds the rest).
    assert!(
        delivered_by_then < N / 2,
        "intake waited for delivery: {delivered_by_then} of {N} delivered when the last was accepted ({accepted:?})"
    );
    wait_for(
        "every message delivered",
        Duration::from_secs(180),
        || async {
            let c = engine.store.counts().await.ok()?;
            let done: i64 = c
                .iter()
                .filter(|(_, s, _)| *s == State::Done)
                .map(|x| x.2)
                .sum();
            (done as usize == N).then_some(())
        },
    )
    .await;
    let elapsed = started.elapsed();
    let arrivals = his.arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), N, "each message reached the HIS once");
    assert!(
        his.most.load(Ordering::SeqCst) <= IN_FLIGHT,
        "at most {IN_FLIGHT} in progress at the HIS, saw {}",
        his.most.load(Ordering::SeqCst)
    );
    // In any window of one second at most RATE + BURST requests (the bucket's allowance).
    let allowance = (RATE + BURST) as usize;
    for i in 0..arrivals.len().saturating_sub(allowance) {
        let span = arrivals[i + allowance].duration_since(arrivals[i]);
        assert!(
            span >= Duration::from_millis(990),
            "{} requests within {span:?} (from request {i})",
            allowance + 1
        );
    }
    // Over the whole burst the pace stays at or under the configured rate. (How far under
    // depends on the machine: with the test suite running in parallel it can be much lower.)
    let span = arrivals[N - 1].duration_since(arrivals[0]).as_secs_f64();
    let rate = (N - 1) as f64 / span;
    assert!(
        rate <= RATE * 1.05 + BURST / span,
        "{rate:.0} msg/s against {RATE} configured (burst {BURST})"
    );
    eprintln!(
        "deliver_limit: {rate:.0} msg/s over {span:.1} s ({elapsed:?} from the first submit)"
    );
    engine.shutdown(Duration::from_secs(5)).await;
}

/// The key whose messages `test_hold_key` fails (retried in place) while it is set.
static HELD_KEY: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
/// `(patient, seq)` in the order `test_hold_key` let messages through.
static PASSED: std::sync::Mutex<Vec<(String, u64)>> = std::sync::Mutex::new(Vec::new());

/// `test_hold_key: {}`: fails every message whose `body.patient` is the held key (a destination
/// that refuses one patient's messages), records the order of the others.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HoldKeyConfig {}

#[typetag::deserialize(name = "test_hold_key")]
impl huizhen_core::steps::StepConfig for HoldKeyConfig {
    fn type_name(&self) -> &'static str {
        "test_hold_key"
    }

    fn build(
        &self,
        _ctx: &huizhen_core::runner::BuildContext,
    ) -> Result<Arc<dyn huizhen_core::steps::Step>, String> {
        Ok(Arc::new(HoldKey))
    }
}

struct HoldKey;

impl huizhen_core::steps::Step for HoldKey {
    fn apply<'a>(
        &'a self,
        work: &'a mut huizhen_core::work::Work,
    ) -> futures::future::BoxFuture<
        'a,
        Result<huizhen_core::work::Flow, huizhen_core::work::StepError>,
    > {
        Box::pin(async move {
            let v = work.json()?;
            let patient = v["patient"].as_str().unwrap_or_default().to_owned();
            let seq = v["seq"].as_u64().unwrap_or_default();
            if HELD_KEY.lock().unwrap().as_deref() == Some(patient.as_str()) {
                return Err(huizhen_core::work::StepError::new(
                    "the destination refuses this patient for now",
                ));
            }
            PASSED.lock().unwrap().push((patient, seq));
            Ok(huizhen_core::work::Flow::Continue)
        })
    }
}

/// The journal's partition of an ordering key (FNV-1a, as the engine computes it).
fn partition_of(key: &str, partitions: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 1) % partitions
}

/// An ordered pipeline whose head of line for one patient retries in place: that patient's
/// partition waits (in order), the other partitions' patients go on although far more messages
/// wait in the journal than the in-memory queue holds; once the destination takes the patient
/// again, everything is delivered, each patient's messages in the order sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retrying_head_of_line_holds_only_its_own_partition() {
    const N: u64 = 2_000;
    const PATIENTS: u64 = 8;
    const PARTITIONS: u64 = 4;
    *HELD_KEY.lock().unwrap() = Some("P0".into());
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let yaml = format!(
        "version: 1\nname: ordered\nsource:\n  http: {{ path: /in/ordered, kind: json }}\nordering_key: \"body.patient\"\nconcurrency: {PARTITIONS}\nqueue: 8\nretry: {{ max_attempts: 1000000, backoff: 20ms, max_backoff: 50ms }}\nsteps:\n  - test_hold_key: {{}}\nsinks:\n  - journal: {{}}\n"
    );
    let engine = Engine::start(loaded(&db, &[&yaml])).await.unwrap();
    let p = engine.pipeline("ordered").unwrap().clone();
    for seq in 0..N {
        let body = format!(r#"{{"seq":{seq},"patient":"P{}"}}"#, seq % PATIENTS);
        p.submit(NewMessage::new(
            "ordered",
            "default",
            "json",
            body.into_bytes(),
        ))
        .await
        .unwrap();
    }
    let held = partition_of("P0", PARTITIONS);
    let free: u64 = (0..N)
        .filter(|s| partition_of(&format!("P{}", s % PATIENTS), PARTITIONS) != held)
        .count() as u64;
    assert!(
        free > 0,
        "every patient shares P0's partition: choose other keys"
    );
    wait_for(
        "the other partitions' messages while P0 is held",
        Duration::from_secs(120),
        || async { (PASSED.lock().unwrap().len() as u64 >= free).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    {
        let passed = PASSED.lock().unwrap();
        assert!(
            passed
                .iter()
                .all(|(patient, _)| partition_of(patient, PARTITIONS) != held),
            "a message of the held partition overtook its head of line"
        );
        assert_eq!(
            passed.len() as u64,
            free,
            "the other partitions' messages all passed"
        );
    }

    // The destination takes P0 again.
    *HELD_KEY.lock().unwrap() = None;
    wait_for("every message", Duration::from_secs(120), || async {
        let c = engine.store.counts().await.ok()?;
        let done: i64 = c
            .iter()
            .filter(|(p, s, _)| p == "ordered" && *s == State::Done)
            .map(|x| x.2)
            .sum();
        (done as u64 == N).then_some(())
    })
    .await;
    let passed = PASSED.lock().unwrap().clone();
    assert_eq!(passed.len() as u64, N);
    for patient in 0..PATIENTS {
        let seqs: Vec<u64> = passed
            .iter()
            .filter(|(p, _)| *p == format!("P{patient}"))
            .map(|(_, s)| *s)
            .collect();
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(seqs, sorted, "P{patient}'s messages in the order sent");
        assert_eq!(seqs.len() as u64, N / PATIENTS);
    }
    engine.shutdown(Duration::from_secs(3)).await;
}
