//! The `mllp` sink against a fake HIS on loopback (STANDARDS HL7-13, HL7-22, HL7-03): ACK
//! correlation by MSA-2, late ACKs discarded, timeouts and refused connections retryable,
//! AE/AR permanent, output charset and MSH-18, the in-flight window of one, reconnection; and,
//! through the engine, retries with backoff ending in a dead letter.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use encoding_rs::{GB18030, UTF_8};
use huizhen_core::Engine;
use huizhen_core::config::{self, Loaded, LoadedPipeline, RootConfig};
use huizhen_core::message::{self, NewMessage, State};
use huizhen_core::runner::{BuildContext, Router};
use huizhen_core::sinks::{Sink, SinkConfig};
use huizhen_core::work::{StepError, Work};
use huizhen_hl7::mllp::{Deframer, Event, frame};
use huizhen_hl7::sink::MllpSinkConfig;
use huizhen_hl7::{Message, OnInvalid, charset};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------------------------
// The fake HIS

/// What the fake HIS does when a message arrives.
#[derive(Debug, Clone)]
enum Step {
    /// Sends an ACK with this MSA-1 code for this MSA-2, with an optional ERR segment.
    Ack {
        code: &'static str,
        msa2: String,
        err: Option<&'static str>,
    },
    /// Waits (the connection is not read meanwhile).
    Wait(Duration),
    /// Closes the connection.
    Close,
}

fn ack(code: &'static str, msa2: &str) -> Step {
    Step::Ack {
        code,
        msa2: msa2.to_owned(),
        err: None,
    }
}

/// `(n, control id)` → steps; `n` counts messages over all connections, from 1.
type Script = Arc<dyn Fn(usize, &str) -> Vec<Step> + Send + Sync>;

#[derive(Debug, Clone)]
struct Received {
    conn: usize,
    raw: Vec<u8>,
    control_id: String,
    at: Instant,
}

struct FakeHis {
    addr: String,
    received: Arc<StdMutex<Vec<Received>>>,
    connections: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

impl FakeHis {
    async fn start(script: Script) -> FakeHis {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let received: Arc<StdMutex<Vec<Received>>> = Arc::default();
        let connections = Arc::new(AtomicUsize::new(0));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let max_in_flight = Arc::new(AtomicUsize::new(0));
        let count = Arc::new(AtomicUsize::new(0));
        {
            let (received, connections) = (received.clone(), connections.clone());
            let (in_flight, max_in_flight) = (in_flight.clone(), max_in_flight.clone());
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let conn = connections.fetch_add(1, Ordering::SeqCst) + 1;
                    let (received, script, count) =
                        (received.clone(), script.clone(), count.clone());
                    let (in_flight, max_in_flight) = (in_flight.clone(), max_in_flight.clone());
                    tokio::spawn(async move {
                        serve(
                            stream,
                            conn,
                            received,
                            script,
                            count,
                            in_flight,
                            max_in_flight,
                        )
                        .await;
                    });
                }
            });
        }
        FakeHis {
            addr,
            received,
            connections,
            max_in_flight,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn serve(
    mut stream: TcpStream,
    conn: usize,
    received: Arc<StdMutex<Vec<Received>>>,
    script: Script,
    count: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
) {
    let mut deframer = Deframer::new(1 << 20);
    let mut buf = vec![0u8; 8192];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        for ev in deframer.push(&buf[..n]) {
            let Event::Frame(raw) = ev else { continue };
            // MSH-18 decides; without it, UTF-8 if the bytes are UTF-8, else GB18030.
            let default = if std::str::from_utf8(&raw).is_ok() {
                UTF_8
            } else {
                GB18030
            };
            let text = charset::decode(&raw, default, OnInvalid::Replace)
                .map(|d| d.text)
                .unwrap_or_default();
            let control_id = Message::parse(&text)
                .map(|m| m.header().control_id)
                .unwrap_or_default();
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            max_in_flight.fetch_max(now, Ordering::SeqCst);
            received.lock().unwrap().push(Received {
                conn,
                raw,
                control_id: control_id.clone(),
                at: Instant::now(),
            });
            let nth = count.fetch_add(1, Ordering::SeqCst) + 1;
            let steps = script(nth, &control_id);
            for step in steps {
                match step {
                    Step::Ack { code, msa2, err } => {
                        if msa2 == control_id {
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                        }
                        let mut text = format!(
                            "MSH|^~\\&|HIS|县医院|HUIZHEN|PROV|20261123093001||ACK^A01^ACK|ACK-{msa2}|P|2.5\rMSA|{code}|{msa2}\r"
                        );
                        if let Some(e) = err {
                            text.push_str(e);
                            text.push('\r');
                        }
                        if stream.write_all(&frame(text.as_bytes())).await.is_err() {
                            return;
                        }
                    }
                    Step::Wait(d) => tokio::time::sleep(d).await,
                    Step::Close => return,
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Messages and the sink

/// An ADT^A01 as the engine holds it: UTF-8 text declaring `UNICODE UTF-8`.
fn adt(control_id: &str, name: &str) -> String {
    format!(
        "MSH|^~\\&|HUIZHEN|PROV|HIS|县医院|20261123093000||ADT^A01^ADT_A01|{control_id}|P|2.5||||||UNICODE UTF-8\rEVN|A01|20261123093000\rPID|1||330523199001011234^^^县人民医院^MR||{name}||19900101|M\rPV1|1|I\r"
    )
}

fn journaled(pipeline: &str, text: &str) -> huizhen_core::message::Message {
    let now = message::now_ms();
    huizhen_core::message::Message {
        id: message::new_id(),
        facility: "default".into(),
        pipeline: pipeline.into(),
        kind: "hl7v2".into(),
        body: text.as_bytes().to_vec(),
        headers: BTreeMap::from([("hl7-charset".to_owned(), "UTF-8".to_owned())]),
        source: "test".into(),
        received_at: now,
        trace_id: String::new(),
        dedup_key: None,
        parent_id: None,
        state: State::Processing,
        attempts: 0,
        next_attempt_at: None,
        last_error: None,
        updated_at: now,
    }
}

fn work(text: &str) -> Work {
    Work::from_message(&journaled("to-his", text))
}

fn config(to: &str) -> MllpSinkConfig {
    let mut c = MllpSinkConfig::new(to);
    c.ack_timeout = Duration::from_millis(300);
    c.connect_timeout = Duration::from_secs(2);
    c
}

fn build(c: &MllpSinkConfig) -> Arc<dyn Sink> {
    c.build(
        &BuildContext {
            pipeline: "to-his".into(),
            facility: "default".into(),
            router: Router::default(),
            extensions: Default::default(),
        },
        0,
    )
    .unwrap()
}

async fn deliver(sink: &Arc<dyn Sink>, text: &str) -> Result<(), StepError> {
    let mut w = work(text);
    sink.deliver(&mut w).await.map(|effects| {
        assert!(effects.is_empty(), "the mllp sink records no effect");
    })
}

fn retryable(r: Result<(), StepError>) -> String {
    match r {
        Err(e) if e.retryable => e.message,
        other => panic!("expected a retryable error, got {other:?}"),
    }
}

fn permanent(r: Result<(), StepError>) -> String {
    match r {
        Err(e) if !e.retryable => e.message,
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

fn script(f: impl Fn(usize, &str) -> Vec<Step> + Send + Sync + 'static) -> Script {
    Arc::new(f)
}

/// Answers every message with AA.
fn always_aa() -> Script {
    script(|_, id| vec![ack("AA", id)])
}

// ---------------------------------------------------------------------------------------------
// Direct tests of the sink

/// (1) AA: delivered; the bytes are in the destination charset with MSH-18 naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aa_delivers_in_the_destination_charset_with_msh18() {
    let his = FakeHis::start(always_aa()).await;
    let mut c = config(&his.addr);
    c.charset = "GB18030".into();
    let sink = build(&c);
    assert_eq!(sink.name(), "mllp#0");
    deliver(&sink, &adt("C100", "张^三丰")).await.unwrap();
    let got = his.received();
    assert_eq!(got.len(), 1);
    let expected = adt("C100", "张^三丰").replace("UNICODE UTF-8", "GB 18030-2000");
    assert_eq!(
        got[0].raw,
        GB18030.encode(&expected).0.into_owned(),
        "GB18030 bytes, MSH-18 = GB 18030-2000"
    );
    assert!(
        std::str::from_utf8(&got[0].raw).is_err(),
        "not UTF-8 any more"
    );
    let d = charset::decode(&got[0].raw, UTF_8, OnInvalid::Reject).unwrap();
    assert_eq!(
        d.encoding, GB18030,
        "the receiver finds GB18030 through MSH-18"
    );
    let m = Message::from_decoded(d).unwrap();
    assert_eq!(m.get_str("PID-5.1").unwrap().as_deref(), Some("张"));
    assert_eq!(m.get_str("MSH-10").unwrap().as_deref(), Some("C100"));

    // The connection is kept and reused.
    deliver(&sink, &adt("C101", "李^四")).await.unwrap();
    assert_eq!(his.connections(), 1);
    assert_eq!(his.received().len(), 2);
}

/// `set_msh18: false` sends MSH-18 empty; the default charset is UTF-8.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_msh18_false_empties_it() {
    let his = FakeHis::start(always_aa()).await;
    let mut c = config(&his.addr);
    c.set_msh18 = false;
    let sink = build(&c);
    deliver(&sink, &adt("C110", "张^三")).await.unwrap();
    let raw = his.received()[0].raw.clone();
    let text = String::from_utf8(raw).expect("UTF-8 by default");
    assert!(
        text.starts_with(
            "MSH|^~\\&|HUIZHEN|PROV|HIS|县医院|20261123093000||ADT^A01^ADT_A01|C110|P|2.5\r"
        ),
        "{text:?}"
    );
}

/// (2) HL7-13: message 1's ACK comes only after the timeout; message 2 is not marked
/// delivered by it, only by its own ACK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_ack_is_discarded_and_the_next_message_waits_for_its_own() {
    let his = FakeHis::start(script(|n, id| match n {
        // Message 1: no ACK in time.
        1 => vec![],
        // Message 2: first the late ACK for message 1, then its own.
        _ => vec![
            ack("AA", "L1"),
            Step::Wait(Duration::from_millis(50)),
            ack("AA", id),
        ],
    }))
    .await;
    let sink = build(&config(&his.addr));
    let err = retryable(deliver(&sink, &adt("L1", "张^三")).await);
    assert_eq!(
        err,
        format!("no ACK within 300ms from {} for MSH-10 L1", his.addr)
    );
    deliver(&sink, &adt("L2", "李^四")).await.unwrap();
    // The timed-out connection was dropped: message 2 went on a new one.
    let got = his.received();
    assert_eq!((got[0].conn, got[1].conn), (1, 2));
}

/// (2b) The decisive case: the only ACK that comes for message 2 is the late one for message
/// 1. Message 2 must time out, never succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_late_ack_means_a_timeout_not_success() {
    let his = FakeHis::start(script(|n, _| match n {
        1 => vec![],
        _ => vec![ack("AA", "M1")],
    }))
    .await;
    let sink = build(&config(&his.addr));
    retryable(deliver(&sink, &adt("M1", "张^三")).await);
    let err = retryable(deliver(&sink, &adt("M2", "李^四")).await);
    assert_eq!(
        err,
        format!("no ACK within 300ms from {} for MSH-10 M2", his.addr)
    );
}

/// (2c) On one kept connection: a stray AA for the previous message followed by AE for this
/// one gives AE (the AA is not taken for this message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_ack_on_the_same_connection_is_not_matched() {
    let his = FakeHis::start(script(|n, id| match n {
        1 => vec![ack("AA", id)],
        _ => vec![ack("AA", "S1"), ack("AE", id)],
    }))
    .await;
    let sink = build(&config(&his.addr));
    deliver(&sink, &adt("S1", "张^三")).await.unwrap();
    let err = permanent(deliver(&sink, &adt("S2", "李^四")).await);
    assert!(
        err.starts_with(&format!("AE from {} for MSH-10 S2", his.addr)),
        "{err}"
    );
    assert_eq!(his.connections(), 1);
}

/// (3) A receiver that never ACKs: a retryable timeout each time, the same MSH-10 resent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ack_is_a_retryable_timeout_and_the_resend_keeps_msh10() {
    let his = FakeHis::start(script(|_, _| vec![])).await;
    let sink = build(&config(&his.addr));
    let text = adt("N1", "张^三");
    let t0 = Instant::now();
    let err = retryable(deliver(&sink, &text).await);
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        err,
        format!("no ACK within 300ms from {} for MSH-10 N1", his.addr)
    );
    retryable(deliver(&sink, &text).await);
    let got = his.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].control_id, "N1");
    assert_eq!(
        got[0].raw, got[1].raw,
        "a retry sends the same bytes, same MSH-10"
    );
    assert_eq!(
        his.connections(),
        2,
        "the connection is dropped after a timeout"
    );
}

/// (4) AR → permanent (dead letter), with the receiver's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ar_is_permanent() {
    let his = FakeHis::start(script(|_, id| {
        vec![Step::Ack {
            code: "AR",
            msa2: id.to_owned(),
            err: Some("ERR||MSH^1^9|200^Unsupported message type^HL70357|E"),
        }]
    }))
    .await;
    let sink = build(&config(&his.addr));
    let err = permanent(deliver(&sink, &adt("R1", "张^三")).await);
    assert_eq!(
        err,
        format!(
            "AR from {} for MSH-10 R1: the receiver rejected the message: 200 Unsupported message type, at MSH-1-9",
            his.addr
        )
    );
    // CR is the same in enhanced mode.
    let his = FakeHis::start(script(|_, id| vec![ack("CR", id)])).await;
    let sink = build(&config(&his.addr));
    permanent(deliver(&sink, &adt("R2", "张^三")).await);
}

/// AR with ERR 207 (application internal error): the receiver cannot take it now; retryable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ar_207_is_retryable() {
    let his = FakeHis::start(script(|_, id| {
        vec![Step::Ack {
            code: "AR",
            msa2: id.to_owned(),
            err: Some("ERR||MSH^1^0|207^Application internal error^HL70357|E"),
        }]
    }))
    .await;
    let sink = build(&config(&his.addr));
    let err = deliver(&sink, &adt("R7", "张^三")).await.unwrap_err();
    assert!(err.retryable, "{}", err.message);
    assert!(
        err.message.contains("could not take the message now"),
        "{}",
        err.message
    );
}

/// (5) AE → permanent, with the ERR text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ae_is_permanent_with_the_err_text() {
    let his = FakeHis::start(script(|_, id| {
        vec![Step::Ack {
            code: "AE",
            msa2: id.to_owned(),
            err: Some("ERR||PID^1^3|101^Required field missing^HL70357|E||||PID-3 is required"),
        }]
    }))
    .await;
    let sink = build(&config(&his.addr));
    let err = permanent(deliver(&sink, &adt("E1", "张^三")).await);
    assert_eq!(
        err,
        format!(
            "AE from {} for MSH-10 E1: the receiver found an error in the content (resending it unchanged will not help): 101 Required field missing, at PID-1-3, PID-3 is required",
            his.addr
        )
    );
    let his = FakeHis::start(script(|_, id| vec![ack("CE", id)])).await;
    let sink = build(&config(&his.addr));
    permanent(deliver(&sink, &adt("E2", "张^三")).await);
}

/// (6) HL7-22: a GB18030-only character to a GBK destination is a permanent error naming the
/// character and where it is; nothing is sent, nothing is replaced with '?'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmappable_character_is_permanent_and_nothing_is_sent() {
    let his = FakeHis::start(always_aa()).await;
    let mut c = config(&his.addr);
    c.charset = "GBK".into();
    let sink = build(&c);
    let text = adt("G1", "张^\u{20000}");
    let mut w = work(&text);
    let err = permanent(sink.deliver(&mut w).await.map(|_| ()));
    let offset = text.find('\u{20000}').unwrap();
    assert_eq!(
        err,
        format!(
            "message {}: MSH-10 G1: character U+20000 at byte offset {} (PID-5) cannot be encoded in GBK; nothing was sent to {}",
            w.id,
            // MSH-18 became "GB 18030-2000" (13 bytes) instead of "UNICODE UTF-8" (13 bytes).
            offset,
            his.addr
        )
    );
    assert!(
        !err.contains('\u{20000}'),
        "the character itself is not logged"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(his.connections(), 0, "nothing was sent");
    assert!(his.received().is_empty());
    // The same name goes to a GB18030 destination.
    let mut c = config(&his.addr);
    c.charset = "GB 18030-2000".into();
    deliver(&build(&c), &text).await.unwrap();
}

/// (7) Connection refused → retryable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_is_retryable() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let sink = build(&config(&addr));
    let err = retryable(deliver(&sink, &adt("X1", "张^三")).await);
    assert!(
        err.starts_with(&format!("cannot connect to {addr}: ")),
        "{err}"
    );
}

/// The in-flight window is one per connection: five workers delivering at once through one
/// sink share one connection, one message at a time, in the order they asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_message_in_flight_per_connection() {
    let his = FakeHis::start(script(|_, id| {
        vec![Step::Wait(Duration::from_millis(30)), ack("AA", id)]
    }))
    .await;
    let sink = build(&config(&his.addr));
    let mut tasks = Vec::new();
    for i in 0..5 {
        let sink = sink.clone();
        tasks.push(tokio::spawn(async move {
            deliver(&sink, &adt(&format!("W{i}"), "张^三")).await
        }));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(his.received().len(), 5);
    assert_eq!(his.max_in_flight.load(Ordering::SeqCst), 1);
    assert_eq!(his.connections(), 1);
    let order: Vec<String> = his.received().into_iter().map(|r| r.control_id).collect();
    assert_eq!(order, ["W0", "W1", "W2", "W3", "W4"]);
}

/// `connections: 2` opens at most two connections, each with one message in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pool_of_two_connections() {
    let his = FakeHis::start(script(|_, id| {
        vec![Step::Wait(Duration::from_millis(40)), ack("AA", id)]
    }))
    .await;
    let mut c = config(&his.addr);
    c.connections = 2;
    let sink = build(&c);
    let mut tasks = Vec::new();
    for i in 0..6 {
        let sink = sink.clone();
        tasks.push(tokio::spawn(async move {
            deliver(&sink, &adt(&format!("P{i}"), "张^三")).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(his.received().len(), 6);
    assert_eq!(his.connections(), 2);
    assert!(his.max_in_flight.load(Ordering::SeqCst) <= 2);
}

/// A receiver that closes the connection after each ACK: the next message goes out on a new
/// connection without an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_by_the_receiver_is_replaced() {
    let his = FakeHis::start(script(|_, id| vec![ack("AA", id), Step::Close])).await;
    let sink = build(&config(&his.addr));
    for i in 0..3 {
        deliver(&sink, &adt(&format!("K{i}"), "张^三"))
            .await
            .unwrap();
        if i == 1 {
            // Let the close arrive before the next send (detected before sending).
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(his.connections(), 3);
    assert_eq!(his.received().len(), 3);
}

/// A receiver that closes the connection without answering: retryable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_without_ack_is_retryable() {
    let his = FakeHis::start(script(|_, _| vec![Step::Close])).await;
    let sink = build(&config(&his.addr));
    let err = retryable(deliver(&sink, &adt("Z1", "张^三")).await);
    assert_eq!(
        err,
        format!(
            "connection to {} lost before the ACK for MSH-10 Z1: closed by the receiver",
            his.addr
        )
    );
}

/// Bodies that cannot be sent are permanent errors, never panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_bodies_are_permanent() {
    let his = FakeHis::start(always_aa()).await;
    let sink = build(&config(&his.addr));
    permanent(deliver(&sink, "not hl7 at all").await);
    permanent(deliver(&sink, "").await);
    let err = permanent(deliver(&sink, &adt("", "张^三")).await);
    assert!(err.contains("MSH-10 is empty"), "{err}");
    let err = permanent(deliver(&sink, &adt("V1", "张\u{1C}三")).await);
    assert!(err.contains("MLLP control byte 0x1C"), "{err}");
    assert_eq!(his.connections(), 0);
}

#[test]
fn config_is_checked_at_build() {
    let ctx = BuildContext {
        pipeline: "p".into(),
        facility: "default".into(),
        router: Router::default(),
        extensions: Default::default(),
    };
    let err = |c: MllpSinkConfig| c.build(&ctx, 0).err().unwrap();
    assert!(err(MllpSinkConfig::new("10.0.0.5")).contains("is not an address"));
    let mut c = MllpSinkConfig::new("10.0.0.5:6661");
    c.charset = "EBCDIC".into();
    assert!(err(c).contains("unknown charset"));
    let mut c = MllpSinkConfig::new("10.0.0.5:6661");
    c.charset = "shift_jis".into();
    assert!(err(c).contains("no HL7 table 0211 name"));
    let mut c = MllpSinkConfig::new("10.0.0.5:6661");
    c.charset = "shift_jis".into();
    c.set_msh18 = false;
    assert!(c.build(&ctx, 0).is_ok());
    let mut c = MllpSinkConfig::new("10.0.0.5:6661");
    c.connections = 0;
    assert!(err(c).contains("connections"));
}

/// The YAML of docs/pipelines.md reads and builds (an unquoted `to:` is a string).
#[test]
fn documented_yaml_builds() {
    let dir = std::env::temp_dir().join(format!("huizhen-sink-{}", message::new_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = TempDir(dir.clone());
    let yaml = "version: 1\nname: to-his\nsource:\n  http: { path: /in/to-his }\nsinks:\n  - mllp: { to: 10.0.0.5:6661, charset: GB18030, ack_timeout: 30s, connect_timeout: 5s, set_msh18: true }\n  - mllp:\n      to: \"[::1]:6661\"\n      charset: GBK\n      connections: 2\n      name: his-gbk\n".to_owned();
    let l = loaded(&dir, &[yaml]);
    let ctx = BuildContext {
        pipeline: "to-his".into(),
        facility: "default".into(),
        router: Router::default(),
        extensions: Default::default(),
    };
    let sinks = &l.pipelines[0].config.sinks;
    let names: Vec<String> = sinks
        .iter()
        .enumerate()
        .map(|(i, s)| s.value.build(&ctx, i).unwrap().name().to_owned())
        .collect();
    assert_eq!(names, ["mllp#0", "his-gbk"]);
    let bad = "version: 1\nname: p\nsource:\n  http: { path: /in/p }\nsinks:\n  - mllp: { to: 10.0.0.5:6661, acktimeout: 3s }\n";
    let err =
        config::parse_yaml::<huizhen_core::config::PipelineConfig>(&dir.join("bad.yaml"), bad)
            .unwrap_err()
            .to_string();
    assert!(err.contains("acktimeout"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Through the engine: retries with backoff, then a dead letter

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn loaded(dir: &Path, pipelines: &[String]) -> Loaded {
    let mut root = RootConfig::default();
    root.store.url = format!("sqlite://{}/journal.db", dir.display());
    root.journal.scheduler_poll = Duration::from_millis(20);
    let mut list = Vec::new();
    for (i, text) in pipelines.iter().enumerate() {
        let file = dir.join(format!("p{i}.yaml"));
        std::fs::write(&file, text).unwrap();
        let config = config::parse_yaml(&file, text).expect("pipeline parses");
        list.push(LoadedPipeline { file, config });
    }
    let errors = config::check(&list);
    assert!(errors.is_empty(), "pipelines do not check: {errors:?}");
    Loaded {
        root,
        root_file: None,
        pipelines: list,
    }
}

async fn wait_final(engine: &Engine, id: &str) -> huizhen_core::message::Message {
    let start = Instant::now();
    loop {
        let m = engine.store.get(id).await.unwrap().unwrap();
        if matches!(m.state, State::Done | State::Dead) {
            return m;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "message {id} still {:?}",
            m.state
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hl7(text: &str) -> NewMessage {
    let mut m = NewMessage::new("", "", "hl7v2", text.as_bytes().to_vec());
    m.headers.insert("hl7-charset".into(), "UTF-8".into());
    m
}

/// HL7-13 AT: a receiver that never ACKs yields at most N attempts, with growing spacing, the
/// same MSH-10 each time, then a dead letter. HL7-22 AT: a GB18030-only name to a GBK channel
/// is an explicit error and a dead letter at once. AE is a dead letter at once; AA is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn engine_retries_with_backoff_then_dead_letters() {
    let dir = std::env::temp_dir().join(format!("huizhen-sink-{}", message::new_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = TempDir(dir.clone());
    let his = FakeHis::start(script(|_, id| {
        if id.starts_with("NEVER") {
            vec![]
        } else if id.starts_with("BAD") {
            vec![ack("AE", id)]
        } else {
            vec![ack("AA", id)]
        }
    }))
    .await;
    let pipeline = |name: &str, charset: &str| {
        format!(
            "version: 1\nname: {name}\nsource:\n  http: {{ path: /in/{name} }}\nretry: {{ max_attempts: 3, backoff: 100ms }}\nsinks:\n  - mllp: {{ to: \"{}\", charset: {charset}, ack_timeout: 200ms, connect_timeout: 2s }}\n",
            his.addr
        )
    };
    let engine = Engine::start(loaded(
        &dir,
        &[pipeline("to-his", "GB18030"), pipeline("to-gbk", "GBK")],
    ))
    .await
    .unwrap();
    let his_p = engine.pipeline("to-his").unwrap().clone();
    let gbk_p = engine.pipeline("to-gbk").unwrap().clone();

    let never = his_p.submit(hl7(&adt("NEVER1", "张^三"))).await.unwrap().id;
    let bad = his_p.submit(hl7(&adt("BAD1", "张^三"))).await.unwrap().id;
    let good = his_p.submit(hl7(&adt("GOOD1", "张^三"))).await.unwrap().id;
    let rare = gbk_p
        .submit(hl7(&adt("RARE1", "张^\u{20000}")))
        .await
        .unwrap()
        .id;

    let m = wait_final(&engine, &good).await;
    assert_eq!(m.state, State::Done);

    let m = wait_final(&engine, &bad).await;
    assert_eq!((m.state, m.attempts), (State::Dead, 1), "AE is not retried");
    assert!(m.last_error.unwrap().starts_with("mllp#0: AE from "));

    let m = wait_final(&engine, &rare).await;
    assert_eq!(
        (m.state, m.attempts),
        (State::Dead, 1),
        "unmappable is not retried"
    );
    let err = m.last_error.unwrap();
    assert!(
        err.contains("U+20000") && err.contains("(PID-5)") && err.contains("GBK"),
        "{err}"
    );

    let m = wait_final(&engine, &never).await;
    assert_eq!(m.state, State::Dead);
    assert_eq!(m.attempts, 3);
    assert_eq!(
        m.last_error.as_deref(),
        Some(
            format!(
                "mllp#0: no ACK within 200ms from {} for MSH-10 NEVER1",
                his.addr
            )
            .as_str()
        )
    );
    let errors = engine.store.attempt_errors(&never).await.unwrap();
    assert_eq!(errors.len(), 3);

    // What the receiver saw: exactly three copies of NEVER1, byte-identical (same MSH-10), each
    // on a new connection, spaced by the ACK timeout plus a backoff that doubles
    // (100ms × 2^(n-1), jittered ×0.5–1.0).
    let got = his.received();
    let copies: Vec<&Received> = got.iter().filter(|r| r.control_id == "NEVER1").collect();
    assert_eq!(copies.len(), 3, "at most max_attempts sends, no flood");
    assert!(copies.iter().all(|r| r.raw == copies[0].raw));
    let gaps: Vec<Duration> = copies.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(gaps[0] >= Duration::from_millis(200 + 50), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(200 + 100), "{gaps:?}");
    assert!(
        !got.iter().any(|r| r.control_id == "RARE1"),
        "nothing sent for RARE1"
    );
    engine.shutdown(Duration::from_secs(5)).await;
}
