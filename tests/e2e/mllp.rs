//! The `mllp` source over real loopback sockets (STANDARDS HL7-01, 04, 10, 11, 12, 14, 20).

use std::time::Duration;

use huizhen_core::Engine;
use huizhen_core::message::State;
use huizhen_core::store::ListFilter;
use huizhen_hl7::mllp::{Deframer, Event, SB, frame};
use huizhen_hl7::{Message, OnInvalid, charset};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Backend, fresh_db, loaded, wait_for};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A pipeline listening on a free port; extra source settings and steps as YAML snippets.
async fn engine_with(extra: &str, steps: &str) -> (Engine, u16, crate::support::TestDb) {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let port = free_port();
    let yaml = format!(
        "version: 1\nname: intake\nsource:\n  mllp: {{ listen: \"127.0.0.1:{port}\"{extra} }}\n{steps}{}",
        if steps.contains("sinks:") {
            ""
        } else {
            "sinks:\n  - journal: {}\n"
        }
    );
    let engine = Engine::start(loaded(&db, &[&yaml])).await.unwrap();
    // The listener binds in its task; wait until it accepts.
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (engine, port, db)
}

fn adt(control_id: &str, name: &str, extra_msh: &str) -> String {
    format!(
        "MSH|^~\\&|HIS|县人民医院|HUIZHEN|省会诊中心|20261123093000||ADT^A01^ADT_A01|{control_id}|P|2.5{extra_msh}\rEVN|A01|20261123093000\rPID|1||330523199001011234^^^县人民医院^MR||{name}||19900101|M\rPV1|1|I\r"
    )
}

struct Conn {
    stream: TcpStream,
    deframer: Deframer,
    pending: std::collections::VecDeque<Vec<u8>>,
}

impl Conn {
    async fn open(port: u16) -> Conn {
        Conn {
            stream: TcpStream::connect(("127.0.0.1", port)).await.unwrap(),
            deframer: Deframer::new(1 << 20),
            pending: Default::default(),
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next ACK, or `None` if the connection closed or nothing came within 5 s.
    async fn ack(&mut self) -> Option<Message> {
        let f = self.frame().await?;
        let d = charset::decode(&f, encoding_rs::UTF_8, OnInvalid::Replace).unwrap();
        Some(Message::from_decoded(d).unwrap())
    }

    /// The next frame's bytes, or `None` if the connection closed or nothing came within 5 s.
    async fn frame(&mut self) -> Option<Vec<u8>> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(f) = self.pending.pop_front() {
                return Some(f);
            }
            let n = match tokio::time::timeout(Duration::from_secs(5), self.stream.read(&mut buf))
                .await
            {
                Ok(Ok(n)) if n > 0 => n,
                _ => return None,
            };
            for ev in self.deframer.push(&buf[..n]) {
                if let Event::Frame(f) = ev {
                    self.pending.push_back(f);
                }
            }
        }
    }

    async fn send(&mut self, payload: &[u8]) -> Option<Message> {
        self.write(&frame(payload)).await;
        self.ack().await
    }

    /// Asserts that the engine closes the connection within `within` without a frame for us:
    /// the read ends (0 bytes, or reset); silence until the bound is a failure, not a pass.
    async fn assert_closed(&mut self, within: Duration, what: &str) {
        assert_closed(&mut self.stream, within, what).await;
    }
}

/// The engine closed `stream` within `within`, sending no MLLP frame (no ACK) before that.
/// Other bytes (a TLS alert) are allowed; a frame or silence until the bound is a failure.
pub(crate) async fn assert_closed<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    within: Duration,
    what: &str,
) {
    let deadline = tokio::time::Instant::now() + within;
    let mut deframer = Deframer::new(1 << 20);
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!("{what}: the connection is still open after {within:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => {
                let frames = deframer
                    .push(&buf[..n])
                    .into_iter()
                    .filter(|e| matches!(e, Event::Frame(_)))
                    .count();
                assert_eq!(frames, 0, "{what}: a frame came back before the close");
            }
        }
    }
}

/// The bytes a county HIS sends: GB18030, MSH-18 empty (the listener's default charset).
fn gb(text: &str) -> Vec<u8> {
    encoding_rs::GB18030.encode(text).0.into_owned()
}

fn msa(m: &Message) -> (String, String) {
    (
        m.get_str("MSA-1").unwrap().unwrap_or_default(),
        m.get_str("MSA-2").unwrap().unwrap_or_default(),
    )
}

async fn messages(engine: &Engine) -> Vec<huizhen_core::message::Message> {
    engine
        .store
        .list(&ListFilter {
            pipeline: Some("intake".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gb18030_without_msh18_is_acked_after_commit_and_resends_are_not_processed_twice() {
    let (engine, port, _db) = engine_with("", "").await;
    let mut c = Conn::open(port).await;
    let raw = encoding_rs::GB18030
        .encode(&adt("C001", "张^三丰", ""))
        .0
        .into_owned();
    let ack = c.send(&raw).await.expect("an ACK");
    assert_eq!(msa(&ack), ("AA".into(), "C001".into()));
    let h = ack.header();
    assert_eq!(
        (
            h.sending_application.as_str(),
            h.receiving_application.as_str()
        ),
        ("HUIZHEN", "HIS")
    );
    assert_eq!(h.message_type, "ACK");
    // AA means journaled: the message is there now, not later.
    let stored = messages(&engine).await;
    assert_eq!(stored.len(), 1);
    let m = engine.store.get(&stored[0].id).await.unwrap().unwrap();
    assert_eq!(m.body, raw, "the raw bytes are kept as received");
    assert_eq!(m.headers["hl7-type"], "ADT^A01");
    assert_eq!(m.headers["hl7-charset"], "gb18030");
    assert_eq!(m.dedup_key.as_deref(), Some("HIS|县人民医院|C001"));
    let detail = huizhen_core::http::message_detail(&engine.store, &m.id)
        .await
        .unwrap();
    let parsed = detail["parsed"].as_array().unwrap();
    assert!(
        parsed
            .iter()
            .any(|l| l["path"] == "PID-5.2" && l["value"] == "三丰"),
        "{parsed:?}"
    );

    // HL7-14: the same message again gets the same ACK code and is not processed again.
    let again = c.send(&raw).await.unwrap();
    assert_eq!(msa(&again), ("AA".into(), "C001".into()));
    // A reused control id with other content is processed and flagged.
    let other = encoding_rs::GB18030
        .encode(&adt("C001", "李^四", ""))
        .0
        .into_owned();
    assert_eq!(msa(&c.send(&other).await.unwrap()).0, "AA");
    let store = engine.store.clone();
    wait_for("two messages done", Duration::from_secs(10), || {
        let store = store.clone();
        async move { (store.effects(Some("intake")).await.unwrap().len() == 2).then_some(()) }
    })
    .await;
    let stored = messages(&engine).await;
    assert_eq!(stored.len(), 2);
    assert!(
        stored
            .iter()
            .any(|m| m.headers.get("huizhen-dedup").map(String::as_str) == Some("reused-key"))
    );
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_split_byte_by_byte_coalesced_and_after_noise() {
    let (engine, port, _db) = engine_with("", "").await;
    let mut c = Conn::open(port).await;
    // One frame, one byte per write.
    for b in frame(&gb(&adt("S1", "王^五", ""))) {
        c.write(&[b]).await;
        tokio::task::yield_now().await;
    }
    assert_eq!(msa(&c.ack().await.unwrap()), ("AA".into(), "S1".into()));
    // Noise, then three frames in one write: three ACKs in order.
    let mut all = b"\x00garbage\r\n".to_vec();
    for id in ["S2", "S3", "S4"] {
        all.extend(frame(&gb(&adt(id, "王^五", ""))));
    }
    c.write(&all).await;
    for id in ["S2", "S3", "S4"] {
        assert_eq!(msa(&c.ack().await.unwrap()), ("AA".into(), id.into()));
    }
    assert_eq!(messages(&engine).await.len(), 4);
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_and_undecodable_messages_get_ar_ae_and_stay_journaled() {
    let (engine, port, _db) = engine_with("", "").await;
    let mut c = Conn::open(port).await;
    // HL7-11: a version that is not 2.x → AR, ERR 203 (v2.5+ layout).
    let v3 = adt("V3", "赵^六", "").replace("|P|2.5", "|P|3.0");
    let ack = c.send(&gb(&v3)).await.unwrap();
    assert_eq!(msa(&ack), ("AR".into(), "V3".into()));
    assert_eq!(ack.get_str("ERR-3.1").unwrap().as_deref(), Some("203"));
    // HL7-20(c): MSH-18 says UTF-8 but the bytes are GBK → AE (reject policy).
    let gbk = encoding_rs::GBK
        .encode(&adt("G1", "张^三", "|||||CHN|UNICODE UTF-8"))
        .0
        .into_owned();
    let ack = c.send(&gbk).await.unwrap();
    assert_eq!(msa(&ack), ("AE".into(), "G1".into()));
    assert_eq!(ack.get_str("ERR-3.1").unwrap().as_deref(), Some("102"));
    // Processing id X → AR 202.
    let px = adt("P1", "a^b", "").replace("|P|2.5", "|X|2.5");
    let ack = c.send(&gb(&px)).await.unwrap();
    assert_eq!(msa(&ack), ("AR".into(), "P1".into()));
    assert_eq!(ack.get_str("ERR-3.1").unwrap().as_deref(), Some("202"));
    // Not HL7 at all: still an answer, still kept.
    let ack = c.send(b"hello").await.unwrap();
    assert_eq!(msa(&ack).0, "AR");

    let stored = messages(&engine).await;
    assert_eq!(stored.len(), 4, "every refused message is kept");
    assert!(stored.iter().all(|m| m.state == State::Dead));
    let reasons: Vec<String> = stored.iter().filter_map(|m| m.last_error.clone()).collect();
    assert!(reasons.iter().any(|r| r.contains("AR 203")), "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("AE 102") && r.contains("UTF-8")),
        "{reasons:?}"
    );
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_policy_accepts_and_flags_bad_bytes() {
    let (engine, port, _db) = engine_with(", on_invalid_charset: replace", "").await;
    let mut c = Conn::open(port).await;
    let gbk = encoding_rs::GBK
        .encode(&adt("R1", "张^三", "|||||CHN|UNICODE UTF-8"))
        .0
        .into_owned();
    assert_eq!(msa(&c.send(&gbk).await.unwrap()).0, "AA");
    let stored = messages(&engine).await;
    assert_eq!(stored[0].headers["hl7-charset-replaced"], "true");
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enhanced_mode_answers_ca_and_ar_becomes_cr() {
    let (engine, port, _db) = engine_with("", "").await;
    let mut c = Conn::open(port).await;
    let ack = c.send(&gb(&adt("E1", "a^b", "|||AL|AL"))).await.unwrap();
    assert_eq!(msa(&ack), ("CA".into(), "E1".into()));
    let bad = adt("E2", "a^b", "|||AL|NE").replace("|P|2.5", "|P|9.9");
    assert_eq!(msa(&c.send(&gb(&bad)).await.unwrap()).0, "CR");
    let stored = messages(&engine).await;
    let e1 = stored
        .iter()
        .find(|m| m.headers.get("hl7-control-id").map(String::as_str) == Some("E1"))
        .unwrap();
    assert_eq!(
        e1.headers["hl7-app-ack"], "Always",
        "the application ACK is due"
    );
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_idle_connections_and_strangers_are_closed() {
    let (engine, port, _db) = engine_with(", max_frame_bytes: 1024, idle_timeout: 300ms", "").await;
    // A frame over the limit: the connection closes without an ACK.
    let mut c = Conn::open(port).await;
    let mut big = vec![SB];
    big.extend(std::iter::repeat_n(b'x', 4096));
    c.write(&big).await;
    c.assert_closed(Duration::from_secs(3), "a frame over max_frame_bytes")
        .await;
    // An idle connection closes after the timeout.
    let mut idle = Conn::open(port).await;
    idle.assert_closed(Duration::from_secs(3), "an idle connection")
        .await;
    assert!(messages(&engine).await.is_empty());
    engine.shutdown(Duration::from_secs(5)).await;

    // HL7-04: a peer outside the allow list is refused.
    let (engine, port, _db) = engine_with(", allow: [\"10.9.9.9\"]", "").await;
    let mut c = Conn::open(port).await;
    c.write(&frame(&gb(&adt("X1", "a^b", "")))).await;
    c.assert_closed(Duration::from_secs(3), "a peer outside the allow list")
        .await;
    assert!(messages(&engine).await.is_empty());
    engine.shutdown(Duration::from_secs(5)).await;
}

/// Item 9: the idle timeout restarts with every byte, so a peer sending one byte every 100 ms
/// held a connection forever; `frame_timeout` counts from the frame's first byte. A pause
/// between whole frames (here longer than `frame_timeout`) is not a frame in progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_frame_is_cut_at_the_frame_deadline_but_pauses_between_frames_are_not() {
    let (engine, port, _db) = engine_with(", frame_timeout: 1s, idle_timeout: 500ms", "").await;
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let payload = frame(&gb(&adt("T1", "慢^慢", "")));
    let started = tokio::time::Instant::now();
    let trickle = tokio::spawn(async move {
        let mut sent = 0usize;
        // 1 byte per 100 ms for up to 8 s (the whole frame would take ~20 s).
        for b in payload.iter().take(80) {
            if wr.write_all(&[*b]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sent
    });
    assert_closed(&mut rd, Duration::from_secs(4), "a trickled frame").await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "closed after {took:?}: before the 1 s frame deadline (the idle timeout is 500 ms and never expires with a byte every 100 ms)"
    );
    trickle.abort();
    assert!(messages(&engine).await.is_empty());

    let mut c = Conn::open(port).await;
    assert_eq!(
        msa(&c.send(&gb(&adt("P1", "a^b", ""))).await.unwrap()).0,
        "AA"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        msa(&c.send(&gb(&adt("P2", "a^b", ""))).await.unwrap()).0,
        "AA"
    );
    engine.shutdown(Duration::from_secs(5)).await;

    // A pause between frames longer than frame_timeout is governed by idle_timeout alone.
    let (engine, port, _db) = engine_with(", frame_timeout: 1s, idle_timeout: 10s", "").await;
    let mut c = Conn::open(port).await;
    // Some senders put CR LF after the end block.
    c.write(&frame(&gb(&adt("P3", "a^b", "")))).await;
    c.write(b"\n").await;
    assert_eq!(msa(&c.ack().await.unwrap()).0, "AA");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(
        msa(&c.send(&gb(&adt("P4", "a^b", ""))).await.unwrap()).0,
        "AA"
    );
    engine.shutdown(Duration::from_secs(5)).await;
}

/// Item 9: without a budget, 256 connections × 16 MiB unfinished frames could hold 4 GiB. With
/// `max_buffered_bytes`, a connection whose read would pass the budget waits (no ACK yet, not
/// closed) until another connection's frame completes and frees room; an unfinished frame
/// still ends at its deadline, which frees its share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_frames_share_one_buffer_budget() {
    let (engine, port, _db) = engine_with(
        // A frame deadline long enough that the waiting frame cannot reach it under a loaded
        // test run (it waits for the budget, not for its own bytes).
        ", max_frame_bytes: 4096, max_buffered_bytes: 8200, frame_timeout: 10s",
        "",
    )
    .await;
    let with_note = |id: &str, len: usize| {
        let mut m = gb(&adt(id, "a^b", ""));
        m.extend(b"NTE|1||");
        m.extend(std::iter::repeat_n(b'x', len));
        m.push(b'\r');
        m
    };
    // Two connections hold 3900 bytes of unfinished frames each: 7800 of 8200.
    let big1 = frame(&with_note("B1", 3800));
    let big2 = frame(&with_note("B2", 3800));
    assert!(big1.len() < 4096 && big1.len() > 3910);
    let mut a1 = Conn::open(port).await;
    let mut a2 = Conn::open(port).await;
    a1.write(&big1[..3901]).await;
    a2.write(&big2[..3901]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A third sends a whole 600-byte frame: more than the 400 left, so it waits.
    let mut b = Conn::open(port).await;
    let small = frame(&with_note("S1", 450));
    assert!(small.len() > 500);
    b.write(&small).await;
    let early = tokio::time::timeout(Duration::from_secs(1), b.ack()).await;
    assert!(
        early.is_err(),
        "an ACK (or a close) came while the budget was full: {early:?}"
    );
    assert!(messages(&engine).await.is_empty());
    // The first frame completes: its 3900 bytes are released and the waiting frame goes on.
    a1.write(&big1[3901..]).await;
    assert_eq!(msa(&a1.ack().await.unwrap()), ("AA".into(), "B1".into()));
    assert_eq!(msa(&b.ack().await.unwrap()), ("AA".into(), "S1".into()));
    // The second never completes: closed at its deadline, nothing acknowledged.
    a2.assert_closed(
        Duration::from_secs(14),
        "an unfinished frame past frame_timeout",
    )
    .await;
    assert_eq!(messages(&engine).await.len(), 2);
    engine.shutdown(Duration::from_secs(5)).await;
}

/// Item 9: a listener on a non-loopback address with no allow list is valid but warned about
/// by `validate`, with the file and line; the demo pipelines name their peers.
#[test]
fn validate_warns_about_a_listener_open_to_every_host() {
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open.yaml");
    std::fs::write(
        &open,
        "version: 1\nname: open\nsource:\n  mllp: { listen: \"0.0.0.0:2575\" }\nsinks:\n  - journal: {}\n",
    )
    .unwrap();
    let listed = dir.path().join("listed.yaml");
    std::fs::write(
        &listed,
        "version: 1\nname: listed\nsource:\n  mllp: { listen: \"0.0.0.0:2575\", allow: [10.12.0.0/16] }\nsinks:\n  - journal: {}\n",
    )
    .unwrap();
    let validate = |file: &std::path::Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_huizhen"))
            .arg("validate")
            .arg(file)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = validate(&open);
    assert!(ok, "a warning is not an error: {err}");
    assert!(
        err.contains("open.yaml:4:") && err.contains("warning") && err.contains("no allow list"),
        "{err}"
    );
    let (ok, err) = validate(&listed);
    assert!(ok && !err.contains("no allow list"), "{err}");
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/../../pipelines/demo.yaml");
    let (ok, err) = validate(std::path::Path::new(demo));
    assert!(ok && !err.contains("no allow list"), "{err}");
    let text = std::fs::read_to_string(demo).unwrap();
    assert!(
        text.contains("allow: [127.0.0.1/32, \"::1/128\"]"),
        "the demo names its peers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_aa_when_the_journal_cannot_commit() {
    let (engine, port, db) = engine_with("", "").await;
    let mut c = Conn::open(port).await;
    assert_eq!(
        msa(&c.send(&gb(&adt("J1", "a^b", ""))).await.unwrap()).0,
        "AA"
    );
    // Writes start failing (as a full disk or a database outage would): every insert into the
    // journal aborts, whichever connection makes it.
    {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        sqlx::raw_sql(
            "CREATE TRIGGER outage BEFORE INSERT ON messages BEGIN SELECT RAISE(ABORT, 'disk I/O error (simulated)'); END;",
        )
        .execute(&mut c)
        .await
        .unwrap();
    }
    let a = c
        .send(&gb(&adt("J2", "a^b", "")))
        .await
        .expect("an ACK for the message that could not be journaled");
    assert_eq!(
        msa(&a),
        ("AR".into(), "J2".into()),
        "never AA without a commit"
    );
    assert_eq!(a.get_str("ERR-3.1").unwrap().as_deref(), Some("207"));
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hl7_paths_drive_filters() {
    let (engine, port, _db) = engine_with(
        "",
        "steps:\n  - filter: { expr: \"hl7('MSH-9.2') == 'A01' && hl7('PID-3.5') == 'MR'\" }\n  - set: { headers: { family: \"hl7('PID-5.1')\" } }\n",
    )
    .await;
    let mut c = Conn::open(port).await;
    assert_eq!(
        msa(&c.send(&gb(&adt("F1", "欧阳^修", ""))).await.unwrap()).0,
        "AA"
    );
    let a08 = adt("F2", "欧阳^修", "").replace("ADT^A01^ADT_A01", "ADT^A08^ADT_A01");
    assert_eq!(msa(&c.send(&gb(&a08)).await.unwrap()).0, "AA");
    let store = engine.store.clone();
    wait_for("both done", Duration::from_secs(10), || {
        let store = store.clone();
        async move {
            let page = store
                .list(&ListFilter {
                    pipeline: Some("intake".into()),
                    state: Some(State::Done),
                    ..Default::default()
                })
                .await
                .unwrap();
            (page.messages.len() == 2).then_some(())
        }
    })
    .await;
    let effects = engine.store.effects(Some("intake")).await.unwrap();
    assert_eq!(effects.len(), 1, "the A08 was filtered out");
    engine.shutdown(Duration::from_secs(5)).await;
}

/// HL7-11 AT (c): a type or event the channel does not take gets AR with ERR 200/201.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unaccepted_types_get_ar_200_or_201() {
    let (engine, port, _db) =
        engine_with(", accept_types: [\"ADT^A01\", \"ADT^A08\", \"ORU^*\"]", "").await;
    let mut c = Conn::open(port).await;
    assert_eq!(
        msa(&c.send(&gb(&adt("T1", "a^b", ""))).await.unwrap()).0,
        "AA"
    );
    let z99 = adt("T2", "a^b", "").replace("ADT^A01^ADT_A01", "ADT^Z99");
    let ack = c.send(&gb(&z99)).await.unwrap();
    assert_eq!(msa(&ack), ("AR".into(), "T2".into()));
    assert_eq!(ack.get_str("ERR-3.1").unwrap().as_deref(), Some("201"));
    let mdm = adt("T3", "a^b", "").replace("ADT^A01^ADT_A01", "MDM^T02");
    let ack = c.send(&gb(&mdm)).await.unwrap();
    assert_eq!(ack.get_str("ERR-3.1").unwrap().as_deref(), Some("200"));
    let oru = adt("T4", "a^b", "").replace("ADT^A01^ADT_A01", "ORU^R01");
    assert_eq!(msa(&c.send(&gb(&oru)).await.unwrap()).0, "AA");
    engine.shutdown(Duration::from_secs(5)).await;
}

/// HL7-03: a GB18030 payload holding every two-byte lead/trail combination goes through the
/// listener, the `mllp` sink and a second listener byte for byte (framing works on raw bytes;
/// no control byte is ever a trail byte).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gb18030_two_byte_code_round_trips_byte_identical() {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let (a, b) = (free_port(), free_port());
    let first = format!(
        "version: 1\nname: first\nsource:\n  mllp: {{ listen: \"127.0.0.1:{a}\", charset: GB18030, max_frame_bytes: 1000000 }}\nsinks:\n  - mllp: {{ to: \"127.0.0.1:{b}\", charset: GB18030, set_msh18: false }}\n"
    );
    let second = format!(
        "version: 1\nname: second\nsource:\n  mllp: {{ listen: \"127.0.0.1:{b}\", charset: GB18030, max_frame_bytes: 1000000 }}\nsinks:\n  - journal: {{}}\n"
    );
    let engine = Engine::start(loaded(&db, &[&first, &second]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut raw = gb("MSH|^~\\&|HIS|H1|HZ|P|20261123||ADT^A08|ALLGB|P|2.5\rPID|1||1^^^H1^MR||");
    let mut pairs = 0;
    for lead in 0x81u8..=0xFE {
        for trail in (0x40u8..=0x7E).chain(0x80..=0xFE) {
            raw.extend([lead, trail]);
            pairs += 1;
        }
    }
    raw.extend(b"\r");
    assert_eq!(pairs, 126 * 190);
    let mut c = Conn::open(a).await;
    assert_eq!(msa(&c.send(&raw).await.unwrap()).0, "AA");
    let store = engine.store.clone();
    let got = wait_for(
        "delivered to the second listener",
        Duration::from_secs(20),
        || {
            let store = store.clone();
            async move {
                let e = store.effects(Some("second")).await.unwrap();
                e.first().map(|e| e.body.clone())
            }
        },
    )
    .await;
    assert_eq!(got.len(), raw.len());
    let diffs: Vec<String> = (0..raw.len())
        .filter(|&i| got[i] != raw[i])
        .take(12)
        .map(|i| {
            format!(
                "@{i}: sent {:02X?} got {:02X?}",
                &raw[i.saturating_sub(1)..i + 2],
                &got[i.saturating_sub(1)..i + 2]
            )
        })
        .collect();
    assert!(diffs.is_empty(), "bytes changed on the way: {diffs:?}");
    engine.shutdown(Duration::from_secs(5)).await;
}

/// HL7-10 enhanced mode: CA now, then the application ACK as a message of its own: AA after
/// processing, AE when the message is dead-lettered, nothing when MSH-16 says NE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_acks_follow_processing() {
    let his = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let his_addr = his.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = his.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut d = Deframer::new(1 << 20);
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    for ev in d.push(&buf[..n]) {
                        if let Event::Frame(f) = ev {
                            let dec = charset::decode(&f, encoding_rs::GB18030, OnInvalid::Replace)
                                .unwrap();
                            let _ = tx.send(Message::from_decoded(dec).unwrap());
                        }
                    }
                }
            });
        }
    });
    let (engine, port, _db) = engine_with(
        "",
        &format!(
            "retry: {{ max_attempts: 1 }}\nsteps:\n  - filter: {{ expr: \"hl7('PID-5.1') != '坏'\" }}\n  - set: {{ headers: {{ x: \"hl7('PID-5.1') == '错' ? headers.missing : 'ok'\" }} }}\nsinks:\n  - hl7_app_ack: {{ to: \"{his_addr}\" }}\n"
        ),
    )
    .await;
    let mut c = Conn::open(port).await;
    assert_eq!(
        msa(&c.send(&gb(&adt("A1", "好^人", "|||AL|AL"))).await.unwrap()).0,
        "CA"
    );
    let app = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msa(&app), ("AA".into(), "A1".into()));
    assert_eq!(app.header().receiving_application, "HIS");
    // Fails its step and is dead at once (max_attempts 1): AE with the reason.
    assert_eq!(
        msa(&c.send(&gb(&adt("A2", "错^人", "|||AL|AL"))).await.unwrap()).0,
        "CA"
    );
    let app = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msa(&app), ("AE".into(), "A2".into()));
    assert_eq!(app.get_str("ERR-3.1").unwrap().as_deref(), Some("207"));
    // MSH-16 = NE: no application ACK.
    assert_eq!(
        msa(&c.send(&gb(&adt("A3", "好^人", "|||AL|NE"))).await.unwrap()).0,
        "CA"
    );
    // MSH-16 = ER and success: none either; then an error with ER: AE.
    assert_eq!(
        msa(&c.send(&gb(&adt("A4", "好^人", "|||AL|ER"))).await.unwrap()).0,
        "CA"
    );
    assert_eq!(
        msa(&c.send(&gb(&adt("A5", "错^人", "|||AL|ER"))).await.unwrap()).0,
        "CA"
    );
    let app = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        msa(&app),
        ("AE".into(), "A5".into()),
        "A3 and A4 got no application ACK"
    );
    engine.shutdown(Duration::from_secs(5)).await;
}

/// HL7-36: a batch inside one MLLP frame. Every message is journaled on its own (and
/// deduplicated on its own), a wrong `BTS-1` is reported and recorded while the messages found
/// are processed, and the answer is a batch of ACKs in a mirrored envelope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_in_one_frame_is_split_acked_as_a_batch_and_counts_are_checked() {
    let (engine, port, _db) = engine_with("", "").await;
    let batch = |ids: &[&str], declared: usize| {
        let mut t = String::from(
            "FHS|^~\\&|LIS|县医院检验科|HUIZHEN|省会诊中心|20261123100000||||F77\rBHS|^~\\&|LIS|县医院检验科|HUIZHEN|省会诊中心|20261123100000||||B77\r",
        );
        for id in ids {
            t.push_str(&adt(id, "王^小明", ""));
        }
        t.push_str(&format!("BTS|{declared}\rFTS|1\r"));
        gb(&t)
    };
    let mut c = Conn::open(port).await;
    c.write(&frame(&batch(&["B1", "B2", "B3"], 4))).await;
    let answer = c.frame().await.expect("an answer to the batch");
    let text = encoding_rs::GB18030.decode(&answer).0.into_owned();
    let lines: Vec<&str> = text.split('\r').filter(|l| !l.is_empty()).collect();
    assert!(
        lines[0].starts_with("FHS|^~\\&|HUIZHEN|省会诊中心|LIS|县医院检验科|"),
        "{text}"
    );
    assert!(
        lines[0].ends_with("|F77"),
        "FHS-12 refers to the sender's FHS-11: {text}"
    );
    assert!(
        lines[1].starts_with("BHS|^~\\&|HUIZHEN|省会诊中心|LIS|县医院检验科|"),
        "{text}"
    );
    assert!(
        lines[1].ends_with("|B77"),
        "BHS-12 refers to the sender's BHS-11: {text}"
    );
    let bts = lines.iter().find(|l| l.starts_with("BTS|")).unwrap();
    assert!(bts.starts_with("BTS|3|"), "three ACKs in the answer: {bts}");
    assert!(
        bts.contains("BTS-1 declares 4 but the batch holds 3"),
        "{bts}"
    );
    assert_eq!(lines.last(), Some(&"FTS|1"));
    let inner = huizhen_hl7::batch::split_raw(&answer);
    let acks: Vec<(String, String)> = inner
        .messages
        .iter()
        .map(|m| {
            let d = charset::decode(m, encoding_rs::GB18030, OnInvalid::Replace).unwrap();
            msa(&Message::from_decoded(d).unwrap())
        })
        .collect();
    assert_eq!(
        acks,
        vec![
            ("AA".into(), "B1".into()),
            ("AA".into(), "B2".into()),
            ("AA".into(), "B3".into())
        ]
    );
    let stored = messages(&engine).await;
    assert_eq!(stored.len(), 3, "each message journaled on its own");
    for m in &stored {
        assert_eq!(m.headers["hl7-batch"], "B77");
        assert_eq!(
            m.headers["hl7-batch-discrepancy"],
            "BTS-1 declares 4 but the batch holds 3"
        );
        assert!(
            !m.body.starts_with(b"FHS"),
            "the envelope is not part of a message"
        );
    }

    // The same batch again: the same ACKs, nothing processed twice; one new message is.
    c.write(&frame(&batch(&["B1", "B2", "B3", "B4"], 4))).await;
    let again = c.frame().await.expect("an answer");
    let inner = huizhen_hl7::batch::split_raw(&again);
    assert_eq!(inner.messages.len(), 4);
    assert!(encoding_rs::GB18030.decode(&again).0.contains("BTS|4|\r"));
    assert_eq!(messages(&engine).await.len(), 4);
    engine.shutdown(Duration::from_secs(5)).await;

    // batch_ack: errors answers only what was not accepted.
    let (engine, port, _db) = engine_with(", batch_ack: errors", "").await;
    let mut c = Conn::open(port).await;
    let mut t = String::from("BHS|^~\\&|LIS|L|HZ|P|20261123100000||||B9\r");
    t.push_str(&adt("E1", "a^b", ""));
    t.push_str("MSH|^~\\&|LIS|L|HZ|P|20261123||ADT^A01|E2|P|3.0\rPID|1\r");
    t.push_str("BTS|2\r");
    c.write(&frame(&gb(&t))).await;
    let answer = c.frame().await.expect("an answer");
    let inner = huizhen_hl7::batch::split_raw(&answer);
    assert_eq!(
        inner.messages.len(),
        1,
        "only the refused message is answered"
    );
    let d = charset::decode(&inner.messages[0], encoding_rs::GB18030, OnInvalid::Replace).unwrap();
    assert_eq!(
        msa(&Message::from_decoded(d).unwrap()),
        ("AR".into(), "E2".into())
    );
    assert!(encoding_rs::GB18030.decode(&answer).0.contains("BTS|1|\r"));
    assert_eq!(
        messages(&engine).await.len(),
        2,
        "the refused one is kept as a dead letter"
    );
    engine.shutdown(Duration::from_secs(5)).await;
}

/// A modern sender's UTF-8 without MSH-18 on the default GB18030 channel: `院|` would read in
/// GB18030 as one character and shift every field after it. Read as UTF-8 and flagged (AA with
/// the right MSA-2), or, with `detect_utf8: false`, refused with AE saying what to change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utf8_without_msh18_is_detected_not_misread() {
    let text = "MSH|^~\\&|LAB|县医院|HZ|省中心|20261124||ORU^R01|U8001|P|2.3\rPID|1||12345^^^H^MR||王^小明\rOBX|1|NM|WBC||7.2\r";
    let (engine, port, _db) = engine_with("", "").await;
    let mut c = Conn::open(port).await;
    let ack = c.send(text.as_bytes()).await.expect("an ACK");
    assert_eq!(msa(&ack), ("AA".into(), "U8001".into()));
    assert_eq!(ack.get_str("MSH-5").unwrap().as_deref(), Some("LAB"));
    assert_eq!(ack.get_str("MSH-6").unwrap().as_deref(), Some("县医院"));
    let stored = messages(&engine).await;
    assert_eq!(stored[0].headers["hl7-charset-detected"], "UTF-8");
    assert_eq!(stored[0].headers["hl7-charset"], "UTF-8");
    engine.shutdown(Duration::from_secs(5)).await;

    let (engine, port, _db) = engine_with(", detect_utf8: false", "").await;
    let mut c = Conn::open(port).await;
    let ack = c.send(text.as_bytes()).await.expect("an ACK");
    assert_eq!(msa(&ack).0, "AE");
    assert!(
        ack.get_str("MSA-3")
            .unwrap()
            .unwrap_or_default()
            .contains("set MSH-18 to UNICODE UTF-8")
            || ack
                .get_str("ERR-8")
                .unwrap()
                .unwrap_or_default()
                .contains("set MSH-18 to UNICODE UTF-8"),
        "{}",
        ack.text()
    );
    engine.shutdown(Duration::from_secs(5)).await;
}

/// The backlog limit bounds intake (issue 23): with the worker held, 20 messages are accepted
/// (AA, each after its commit); the 21st gets AR with ERR-3 207 "backlog limit reached" and is
/// not journaled; /ready names the pipeline; once the backlog drains, intake resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_limit_refuses_with_ar_207_and_recovers_when_it_drains() {
    let (engine, port, _db) = engine_with(
        "",
        "queue: 4\nbacklog_limit: { messages: 20 }\nsteps:\n  - gate: {}\n",
    )
    .await;
    let mut c = Conn::open(port).await;
    for n in 0..20 {
        let a = c
            .send(&gb(&adt(&format!("B{n}"), "a^b", "")))
            .await
            .unwrap();
        assert_eq!(msa(&a).0, "AA", "message {n}");
    }
    let a = c.send(&gb(&adt("B20", "a^b", ""))).await.unwrap();
    assert_eq!(msa(&a), ("AR".into(), "B20".into()));
    assert_eq!(a.get_str("ERR-3.1").unwrap().as_deref(), Some("207"));
    let text = a.get_str("ERR-8").unwrap().unwrap_or_default();
    assert!(text.contains("backlog limit reached"), "{text}");
    assert_eq!(
        messages(&engine).await.len(),
        20,
        "the refused one is not journaled"
    );
    let p = engine.pipeline("intake").unwrap().clone();
    assert!(p.refusing().is_some());
    // Drain: the worker goes; the next count (every 2 s) finds the backlog empty.
    crate::sources::open_gate("intake", 1000);
    crate::support::wait_for("intake accepts again", Duration::from_secs(15), || {
        let p = p.clone();
        async move { p.refusing().is_none().then_some(()) }
    })
    .await;
    let a = c.send(&gb(&adt("B20", "a^b", ""))).await.unwrap();
    assert_eq!(
        msa(&a).0,
        "AA",
        "the resend is accepted once the backlog drained"
    );
    engine.shutdown(Duration::from_secs(5)).await;
}
