//! The built opinion through the existing `mllp` sink to an in-process HIS receiver on
//! loopback, which de-frames, decodes (MSH-18), parses the message with our parser and with
//! `hl7-parser`, checks what a HIS needs to file a result (type, patient, order numbers, a
//! final status) and answers with the crate's own ACK builder: AA when it can file it, AE
//! otherwise.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use encoding_rs::UTF_8;
use huizhen_core::runner::{BuildContext, Router};
use huizhen_core::sinks::{Sink, SinkConfig};
use huizhen_core::work::Work;
use huizhen_hl7::ack::{self, AckCode, ErrorCode, ErrorDetail};
use huizhen_hl7::mllp::{Deframer, Event, frame};
use huizhen_hl7::sink::MllpSinkConfig;
use huizhen_hl7::{Message, OnInvalid, charset};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::outbound::{built, opinion};

/// What the receiver got: the decoded text and the ACK code it answered.
type Log = Arc<Mutex<Vec<(String, &'static str)>>>;

/// Why a HIS could not file this message, if it cannot.
fn cannot_file(m: &Message) -> Option<ErrorDetail> {
    let h = m.header();
    let need = |segment: &str, field: usize, ok: bool| {
        (!ok).then(|| ErrorDetail {
            code: ErrorCode::RequiredFieldMissing,
            segment: segment.into(),
            sequence: 1,
            field,
            text: format!("{segment}-{field} is required"),
        })
    };
    let has = |path: &str| {
        m.get_str(path)
            .ok()
            .flatten()
            .is_some_and(|v| !v.is_empty())
    };
    let filed_as = match (h.message_type.as_str(), h.trigger.as_str()) {
        ("ORU", "R01") => need("OBR", 3, has("OBR-3.1")).or_else(|| {
            need(
                "OBR",
                25,
                m.get_str("OBR-25").ok().flatten().as_deref() == Some("F"),
            )
        }),
        ("MDM", "T02") => need("TXA", 12, has("TXA-12.1")).or_else(|| {
            need(
                "TXA",
                17,
                m.get_str("TXA-17").ok().flatten().as_deref() == Some("AU"),
            )
        }),
        _ => Some(ErrorDetail {
            code: ErrorCode::UnsupportedMessageType,
            segment: "MSH".into(),
            sequence: 1,
            field: 9,
            text: "not a result or a document".into(),
        }),
    };
    need("PID", 3, has("PID-3.1")).or(filed_as)
}

async fn his(log: Log) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut deframer = Deframer::new(1 << 20);
                let mut buf = vec![0u8; 8192];
                loop {
                    let n = match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    for ev in deframer.push(&buf[..n]) {
                        let Event::Frame(raw) = ev else { continue };
                        let decoded = charset::decode(&raw, UTF_8, OnInvalid::Reject).unwrap();
                        let text = decoded.text.clone();
                        let m = Message::from_decoded(decoded).unwrap();
                        let oracle_ok = hl7_parser::Message::parse(m.text()).is_ok();
                        let problem = cannot_file(&m);
                        let (code, detail) = match (&problem, oracle_ok) {
                            (None, true) => (AckCode::AA, None),
                            _ => (AckCode::AE, problem.as_ref()),
                        };
                        log.lock().unwrap().push((text, code.as_str()));
                        let ack =
                            ack::build(&m.header(), code, detail, "HIS-ACK-1", "20260115103001");
                        if stream.write_all(&frame(ack.as_bytes())).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

fn sink(to: &str, charset: &str) -> Arc<dyn Sink> {
    let mut c = MllpSinkConfig::new(to);
    c.charset = charset.into();
    c.ack_timeout = Duration::from_secs(5);
    c.build(
        &BuildContext {
            pipeline: "opinion-out".into(),
            facility: "GXYCHZ".into(),
            router: Router::default(),
            extensions: Default::default(),
        },
        0,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_oru_and_mdm_are_accepted_by_a_his_over_mllp() {
    let log: Log = Arc::default();
    let addr = his(log.clone()).await;
    for (extra, charset, declared) in [
        (json!({}), "UNICODE UTF-8", "UNICODE UTF-8"),
        (json!({ "as": "mdm_t02" }), "GB18030", "GB 18030-2000"),
    ] {
        let (text, mut work): (String, Work) = built(&opinion(), extra.clone()).unwrap();
        let effects = sink(&addr, charset).deliver(&mut work).await;
        assert!(effects.is_ok(), "{extra}: {effects:?}");
        let got = log.lock().unwrap().last().cloned().unwrap();
        assert_eq!(got.1, "AA", "{extra}");
        // The HIS read what was built, in the destination charset named in MSH-18.
        let sent = crate::parse(&got.0);
        assert_eq!(
            sent.get_str("MSH-18").unwrap().as_deref(),
            Some(declared),
            "{extra}"
        );
        assert_eq!(
            sent.get_str("PID-5.2").unwrap().as_deref(),
            Some("三丰"),
            "{extra}"
        );
        assert_eq!(
            got.0.replace(declared, "UNICODE UTF-8"),
            text,
            "{extra}: only MSH-18 changed"
        );
    }

    // A message the HIS cannot file gets AE, which the sink reports as permanent.
    let (_, mut work) = built(&opinion(), json!({})).unwrap();
    let text = String::from_utf8(work.body().to_vec()).unwrap();
    // Preliminary, not final: OBR-25 (and the OBX-11s) become P.
    work.set_body(text.replace("|F|", "|P|").into_bytes());
    let err = sink(&addr, "UNICODE UTF-8")
        .deliver(&mut work)
        .await
        .unwrap_err();
    assert!(!err.retryable, "{err:?}");
    assert_eq!(log.lock().unwrap().last().map(|l| l.1), Some("AE"));
}
