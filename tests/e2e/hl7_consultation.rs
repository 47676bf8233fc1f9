//! The demo's consultation from an HL7 order to an ORU (issue 15 items 10 and 11), through
//! the shipped `pipelines/demo.yaml` (only its two MLLP addresses moved to free ports) and
//! `demo/experts.yaml`, on SQLite and PostgreSQL: the registration ADT and an `ORM^O01` sent
//! by MLLP → the consultation created and offered to the matched expert → accepted with its
//! version → the gates → started → the opinion signed with the test CA → completed → the full
//! timeline through the API → an `ORU^R01` at a test MLLP receiver (the HIS), equal to
//! `tests/e2e/golden/oru_r01_demo.hl7` once times and ids are redacted, with the order's
//! placer number and the patient's id. The ORU leaves once however often the outbox relay
//! runs (also after a crash between the journal append and marking the event sent), and a HIS
//! that is down gets it when it comes back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::TimeDelta;
use huizhen_core::clock::{Clock, FakeClock};
use huizhen_core::security::{Role, SecurityConfig};
use huizhen_core::store::ListFilter;
use huizhen_domain::consultation::{Opinion, sign_opinion};
use huizhen_domain::expert::ExpertRegistry;
use huizhen_hl7::mllp::{Deframer, Event, frame};
use huizhen_signing::testca::TestCa;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::consultations::{SECRET, Wf, t0, token};
use crate::support::{Backend, TestDb, both_backends, fresh_db, loaded, wait_for};

both_backends!(
    an_hl7_order_walks_to_a_signed_opinion_and_an_oru,
    a_his_that_is_down_gets_the_oru_when_it_is_back,
);

/// The repository's root (the tests run in engine/cli).
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const FACILITY: &str = "demo-clinic";
const EXPERT_FACILITY: &str = "H-PROV-1";
const PATIENT_MRN: &str = "330523199001011238";
const PLACER: &str = "HZSQ-20261123-0001";

fn read(path: &str) -> Vec<u8> {
    std::fs::read(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn doctor() -> String {
    token(Role::LocalDoctor, "D001", FACILITY)
}

pub(crate) fn expert() -> String {
    token(Role::Expert, "E1001", EXPERT_FACILITY)
}

/// The demo engine: the shipped pipelines with the intake on `intake` and the HIS on `his`,
/// the test CA's root as `workflow.signing_roots`, the consultation's events announced to
/// `consultation-events` as demo/huizhen.yaml says, the registry of demo/experts.yaml.
pub(crate) async fn start_demo(b: Backend, intake: u16, his: u16) -> Option<Wf> {
    start_demo_with(b, intake, his, None).await
}

/// Where the demo's billing goes in a test: the stand-in platforms' URLs and the statements
/// folder, for `127.0.0.1:8091`, `127.0.0.1:8092` and `data/billing/statements` of
/// demo/huizhen.yaml.
pub(crate) struct DemoBilling<'a> {
    pub insurer: &'a str,
    pub finance: &'a str,
    pub statements: &'a std::path::Path,
}

/// [`start_demo`], with demo/huizhen.yaml's `billing:` when `billing` says where it goes.
pub(crate) async fn start_demo_with(
    b: Backend,
    intake: u16,
    his: u16,
    billing: Option<DemoBilling<'_>>,
) -> Option<Wf> {
    let db: TestDb = fresh_db(b).await?;
    let text = String::from_utf8(read("pipelines/demo.yaml"))
        .unwrap()
        .replace("127.0.0.1:2575", &format!("127.0.0.1:{intake}"))
        // The demo's DICOM listener too: a port in use stops an engine's start, and several
        // tests run the demo at once.
        .replace(
            "listen: 127.0.0.1:11112",
            &format!("listen: 127.0.0.1:{}", free_port()),
        )
        .replace(
            "${HUIZHEN_HIS_MLLP:-127.0.0.1:2576}",
            &format!("127.0.0.1:{his}"),
        );
    let docs: Vec<&str> = text.split("\n---\n").collect();
    let mut cfg = loaded(&db, &docs);
    let file = std::path::PathBuf::from(format!("{ROOT}/demo/huizhen.yaml"));
    let mut root_text = String::from_utf8(read("demo/huizhen.yaml")).unwrap();
    if let Some(bl) = &billing {
        root_text = root_text
            .replace("http://127.0.0.1:8091/fsi/api", bl.insurer)
            .replace("http://127.0.0.1:8092/einvoice/issue", bl.finance)
            .replace(
                "../data/billing/statements/",
                &bl.statements.display().to_string(),
            )
            .replace(
                "schedules: [billing/fees.yaml]",
                &format!("schedules: [\"{ROOT}/demo/billing/fees.yaml\"]"),
            );
    }
    let root: huizhen_core::config::RootConfig =
        huizhen_core::config::parse_yaml(&file, &root_text).unwrap();
    let ca = Arc::new(TestCa::generate("Huizhen E2E CA").unwrap());
    let roots = db.dir.path().join("ca-roots.pem");
    ca.write_root_pem(&roots).unwrap();
    cfg.root.workflow.consultations = root.workflow.consultations;
    cfg.root.media = root.media;
    if billing.is_some() {
        cfg.root.billing = root.billing;
    }
    cfg.root.workflow.signing_roots = Some(roots);
    let clock = Arc::new(FakeClock::new(t0()));
    let engine = huizhen_core::Engine::start_with_clock(cfg, clock.clone())
        .await
        .unwrap();
    let registry: ExpertRegistry =
        serde_saphyr::from_str(&String::from_utf8(read("demo/experts.yaml")).unwrap()).unwrap();
    engine
        .store
        .upsert_experts(&registry.experts, &registry.agreements, None)
        .await
        .unwrap();
    let base = crate::support::serve(
        &engine,
        &SecurityConfig {
            jwt_secret: Some(SECRET.into()),
            ..SecurityConfig::default()
        },
    )
    .await;
    Some(Wf {
        engine,
        api: crate::support::JsonApi::new(base),
        clock,
        ca,
        db,
    })
}

/// Sends the messages of an HL7 file by MLLP and returns the ACK codes (MSA-1).
async fn mllp_send(port: u16, file: &str) -> Vec<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut codes = Vec::new();
    let mut deframer = Deframer::new(1 << 20);
    let mut buf = vec![0u8; 8192];
    for msg in huizhen_hl7::batch::split_raw(&read(file)).messages {
        stream.write_all(&frame(&msg)).await.unwrap();
        let ack = 'ack: loop {
            let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
                .await
                .expect("an ACK within 20 s")
                .unwrap();
            assert!(n > 0, "the intake closed the connection");
            for ev in deframer.push(&buf[..n]) {
                if let Event::Frame(f) = ev {
                    break 'ack String::from_utf8_lossy(&f).into_owned();
                }
            }
        };
        let msa = ack.split('\r').find(|s| s.starts_with("MSA")).unwrap();
        codes.push(msa.split('|').nth(1).unwrap().to_owned());
    }
    codes
}

/// The HIS: an MLLP receiver that keeps every message (decoded as its MSH-18 says, GB18030
/// when it says nothing) and answers AA.
#[derive(Clone, Default)]
pub(crate) struct His {
    got: Arc<Mutex<Vec<String>>>,
}

impl His {
    pub(crate) async fn listen(port: u16) -> His {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let his = His::default();
        let got = his.got.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let got = got.clone();
                tokio::spawn(async move {
                    let mut deframer = Deframer::new(1 << 20);
                    let mut buf = vec![0u8; 8192];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        for ev in deframer.push(&buf[..n]) {
                            let Event::Frame(raw) = ev else { continue };
                            let d = huizhen_hl7::charset::decode(
                                &raw,
                                encoding_rs::GB18030,
                                huizhen_hl7::charset::OnInvalid::Reject,
                            )
                            .unwrap();
                            let (text, encoding) = (d.text.clone(), d.encoding);
                            let m = huizhen_hl7::Message::from_decoded(d).unwrap();
                            let ack = huizhen_hl7::ack::build(
                                &m.header(),
                                huizhen_hl7::ack::AckCode::AA,
                                None,
                                "HIS-ACK",
                                "20261123120000",
                            );
                            got.lock().unwrap().push(text);
                            let (bytes, _, _) = encoding.encode(&ack);
                            if s.write_all(&frame(&bytes)).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        his
    }

    pub(crate) fn messages(&self) -> Vec<String> {
        self.got.lock().unwrap().clone()
    }

    async fn first(&self) -> String {
        let got = self.got.clone();
        wait_for("the ORU at the HIS", Duration::from_secs(30), || {
            let got = got.clone();
            async move { got.lock().unwrap().first().cloned() }
        })
        .await
    }
}

/// The ORU with what differs between runs replaced: the consultation id, MSH-7, MSH-10 and
/// every time stamp; one segment per line.
fn redact(oru: &str, consultation: &str) -> String {
    // An HL7 time stamp: YYYYMMDDHHMM[SS] with an optional +hhmm/-hhmm.
    let stamp = |c: &str| {
        let (digits, offset) = match c.find(['+', '-']) {
            Some(i) => c.split_at(i),
            None => (c, ""),
        };
        matches!(digits.len(), 12 | 14)
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (offset.is_empty() || offset.len() == 5)
    };
    let mut out = String::new();
    for seg in oru
        .replace(consultation, "{consultation}")
        .split(['\r', '\n'])
        .filter(|s| !s.is_empty())
    {
        let mut fields: Vec<String> = seg.split('|').map(str::to_owned).collect();
        for (i, f) in fields.iter_mut().enumerate() {
            if seg.starts_with("MSH") && i == 9 {
                *f = "{control-id}".into();
                continue;
            }
            let comps: Vec<String> = f
                .split('^')
                .map(|c| {
                    if stamp(c) {
                        "{time}".to_owned()
                    } else {
                        c.to_owned()
                    }
                })
                .collect();
            *f = comps.join("^");
        }
        out.push_str(&fields.join("|"));
        out.push('\n');
    }
    out
}

/// Compares with the golden file (`UPDATE_GOLDEN=1` rewrites it).
fn golden(name: &str, got: &str) {
    let path = format!("{ROOT}/tests/e2e/golden/{name}");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(format!("{ROOT}/tests/e2e/golden")).unwrap();
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(got, want, "{path} (UPDATE_GOLDEN=1 rewrites it)");
}

/// The ADT registers the patient, the ORM creates the consultation; its id once it is
/// offered.
pub(crate) async fn order(wf: &Wf, intake: u16) -> String {
    assert_eq!(
        mllp_send(intake, "tests/fixtures/hl7/adt_a01_gb18030.hl7").await,
        ["AA"]
    );
    let store = wf.engine.store.clone();
    wait_for("the patient linked", Duration::from_secs(20), || {
        let store = store.clone();
        async move { store.identity(FACILITY, PATIENT_MRN).await.unwrap() }
    })
    .await;
    assert_eq!(
        mllp_send(intake, "tests/fixtures/hl7/orm_o01_consultation.hl7").await,
        ["AA"]
    );
    let key = format!("{FACILITY}/{PLACER}");
    wait_for("the consultation offered", Duration::from_secs(20), || {
        let store = store.clone();
        let key = key.clone();
        async move {
            let id = store.consultation_by_source(&key).await.unwrap()?;
            let c = store.consultation(&id).await.unwrap()?;
            (c.consultation.state().code() == "offered").then_some(id)
        }
    })
    .await
}

/// From the offer to the completed report, as the expert and the local doctor do it.
pub(crate) async fn walk(wf: &Wf, id: &str) {
    to_session(wf, id).await;
    finish(wf, id).await;
}

/// From the offer to `in-session`: accepted, the gates recorded (the informed consent, the
/// local physician D001, both verifications), started.
pub(crate) async fn to_session(wf: &Wf, id: &str) {
    let (_, v, etag) = wf
        .call(
            "GET",
            &format!("/api/consultations/{id}"),
            &expert(),
            None,
            None,
        )
        .await;
    let version = v["version"].as_u64().unwrap();
    assert_eq!(etag, Some(format!("W/\"{version}\"")));
    let (s, v, _) = wf
        .call(
            "POST",
            &format!("/api/consultations/{id}/accept"),
            &expert(),
            None,
            Some(version),
        )
        .await;
    assert_eq!((s, v["state"].as_str()), (200, Some("scheduled")), "{v}");
    // The gates name what is missing until it is recorded (CN-05, CN-06, CN-11).
    let (s, v) = wf.act(id, "start", &expert(), json!({})).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("missing-requirements")));
    let before = wf.clock.now() - TimeDelta::minutes(1);
    wf.ok(id, "record_consent", &doctor(), json!({"consent": {"signer": "patient", "document": "DocumentReference/consent-1", "signed_at": before}})).await;
    wf.ok(
        id,
        "attach_physician",
        &doctor(),
        json!({"physician": {"practitioner": "D001", "licence": "110330000001"}}),
    )
    .await;
    for who in ["E1001", "D001"] {
        wf.ok(id, "record_verification", &doctor(), json!({"verification": {"subject": {"kind": "physician", "practitioner": who}, "method": "ca-certificate", "verified_at": before, "result": "passed", "provider_reference": format!("ca-{who}")}})).await;
    }
    wf.ok(id, "start", &expert(), json!({})).await;
}

/// From `in-session` to the completed report: the opinion signed, the local decision, complete.
async fn finish(wf: &Wf, id: &str) {
    // The demo's opinion, signed with the expert's certificate from the test CA (CN-21).
    let mut opinion: Value = serde_json::from_slice(&read("demo/opinion.json")).unwrap();
    opinion["consultation"] = json!(id);
    let opinion: Opinion = serde_json::from_value(opinion).unwrap();
    let now = wf.clock.now();
    let physician = wf
        .ca
        .issue_physician(
            "李振华",
            now - TimeDelta::days(1),
            now + TimeDelta::days(365),
        )
        .unwrap();
    let signed = sign_opinion(opinion, &physician.signer().unwrap(), now).unwrap();
    wf.ok(id, "sign_opinion", &expert(), json!({ "signed": signed }))
        .await;
    wf.ok(
        id,
        "record_local_decision",
        &doctor(),
        json!({"decision": {"outcome": "adopted", "final_diagnoses": ["I20.0"], "note": ""}}),
    )
    .await;
    let v = wf.ok(id, "complete", &expert(), json!({})).await;
    assert_eq!(v["state"], "report-signed", "{v}");
}

/// The journaled messages of the outbound pipeline.
async fn outbound_messages(wf: &Wf) -> Vec<huizhen_core::message::Message> {
    wf.engine
        .store
        .list(&ListFilter {
            pipeline: Some("consultation-events".into()),
            limit: Some(100),
            ..ListFilter::default()
        })
        .await
        .unwrap()
        .messages
}

/// The consultation's outbox event of `topic`.
pub(crate) async fn event(
    wf: &Wf,
    id: &str,
    topic: &str,
) -> huizhen_core::store::care::OutboxEntry {
    let all = wf.engine.store.outbox_of(id).await.unwrap();
    all.into_iter()
        .find(|e| e.topic == topic)
        .unwrap_or_else(|| panic!("no {topic} event of {id}"))
}

async fn an_hl7_order_walks_to_a_signed_opinion_and_an_oru(b: Backend) {
    let (intake, his_port) = (free_port(), free_port());
    let his = His::listen(his_port).await;
    let Some(wf) = start_demo(b, intake, his_port).await else {
        return;
    };
    let id = order(&wf, intake).await;
    // Created from the order with its numbers and the HIS's own patient id, approved by the
    // pipeline, and offered to the best-matched expert of the registry.
    let (s, v) = wf.get(&format!("/api/consultations/{id}"), &doctor()).await;
    assert_eq!(s, 200, "{v}");
    let r = &v["request"];
    assert_eq!(
        (r["department"].as_str(), r["requesting_doctor"].as_str()),
        (Some("03.02"), Some("D001"))
    );
    assert_eq!(
        r["his_order"]["placer"],
        json!({"id": PLACER, "namespace": "HIS"})
    );
    assert_eq!(
        r["his_order"]["patient_identifiers"],
        json!([{"id": PATIENT_MRN, "assigning_authority": "县人民医院", "type_code": "MR"}]),
        "national numbers stay out"
    );
    assert_eq!(v["candidates"][0]["expert"], "E1001", "{v}");
    assert_eq!(v["attempts"][0]["offerees"][0]["expert"], "E1001");

    walk(&wf, &id).await;

    // The full timeline through the API.
    let (_, v) = wf.get(&format!("/api/consultations/{id}"), &doctor()).await;
    let events: Vec<&str> = v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "created",
            "submitted",
            "approved",
            "offered",
            "accepted",
            "consent_recorded",
            "physician_attached",
            "verification_recorded",
            "verification_recorded",
            "started",
            "opinion_signed",
            "local_decision_recorded",
            "completed",
        ]
    );
    assert_eq!(
        v["timeline"][0]["actor"],
        json!({"id": "pipeline:hl7-orders", "role": "system"})
    );

    // The ORU^R01 at the HIS: the golden message, with the order's placer number and the
    // patient's id, and the same on every run but for times and ids.
    let oru = his.first().await;
    let segments: Vec<&str> = oru.split('\r').collect();
    let field = |seg: &str, n: usize| {
        let s = segments.iter().find(|s| s.starts_with(seg)).unwrap();
        s.split('|').nth(n).unwrap().to_owned()
    };
    assert_eq!(field("MSH", 8), "ORU^R01^ORU_R01");
    assert_eq!(field("ORC", 2), format!("{PLACER}^HIS"));
    assert_eq!(field("OBR", 2), format!("{PLACER}^HIS"));
    assert_eq!(field("PID", 3), format!("{PATIENT_MRN}^^^县人民医院^MR"));
    golden("oru_r01_demo.hl7", &redact(&oru, &id));

    // Both announcements reached the pipeline: the acceptance (done there, no sink) and the
    // opinion (delivered); the API lists them with their messages.
    let (_, v) = wf.get(&format!("/api/consultations/{id}"), &doctor()).await;
    let topics: Vec<&str> = v["outbound"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["topic"].as_str().unwrap())
        .collect();
    assert_eq!(topics, ["consultation.accepted", "consultation.completed"]);
    let completed = event(&wf, &id, "consultation.completed").await;
    let oru_message = completed.message_id.clone().unwrap();
    let store = wf.engine.store.clone();
    let w = &wf;
    wait_for(
        "both events done",
        Duration::from_secs(20),
        move || async move {
            {
                let all = outbound_messages(w).await;
                (all.len() == 2
                    && all
                        .iter()
                        .all(|m| m.state == huizhen_core::message::State::Done))
                .then_some(())
            }
        },
    )
    .await;

    // The relay running again sends nothing: every event is marked sent.
    let pipelines = wf.engine.pipelines();
    assert_eq!(
        huizhen_core::care::relay_outbox(&store, &pipelines).await,
        0
    );
    assert_eq!(
        huizhen_core::care::relay_outbox(&store, &pipelines).await,
        0
    );
    // A crash between the journal append and marking the event sent: the event is relayed
    // again, and the journal's dedup key makes that the same message, not a second ORU.
    unmark_sent(&wf.db, b, &completed.id).await;
    let c = id.as_str();
    wait_for(
        "the event relayed again",
        Duration::from_secs(20),
        move || async move {
            huizhen_core::care::relay_outbox(&w.engine.store, &w.engine.pipelines()).await;
            event(w, c, "consultation.completed")
                .await
                .sent_at
                .map(|_| ())
        },
    )
    .await;
    let again = event(&wf, &id, "consultation.completed").await;
    assert_eq!(again.message_id.as_deref(), Some(oru_message.as_str()));
    assert!(again.attempts >= 2, "{again:?}");
    assert_eq!(outbound_messages(&wf).await.len(), 2);
    assert_eq!(his.messages().len(), 1, "one ORU");
    wf.stop().await;
}

/// Makes an event look relayed but never marked (what a crash right after the submit leaves).
async fn unmark_sent(db: &TestDb, b: Backend, event: &str) {
    use sqlx::Connection;
    let sql = format!(
        "UPDATE workflow_outbox SET sent_at = NULL, message_id = NULL, lease_until = NULL WHERE id = '{event}'"
    );
    let sql = sqlx::AssertSqlSafe(sql);
    match b {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
        }
    }
}

async fn a_his_that_is_down_gets_the_oru_when_it_is_back(b: Backend) {
    // Nobody listens on the HIS's port yet.
    let (intake, his_port) = (free_port(), free_port());
    let Some(wf) = start_demo(b, intake, his_port).await else {
        return;
    };
    let id = order(&wf, intake).await;
    walk(&wf, &id).await;
    let message = event(&wf, &id, "consultation.completed")
        .await
        .message_id
        .expect("relayed right after the completion");
    let store = wf.engine.store.clone();
    let failed = wait_for("the first delivery failed", Duration::from_secs(20), || {
        let store = store.clone();
        let message = message.clone();
        async move {
            let m = store.get(&message).await.unwrap()?;
            (m.state == huizhen_core::message::State::Failed).then_some(m)
        }
    })
    .await;
    assert!(
        failed
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("127.0.0.1"),
        "{:?}",
        failed.last_error
    );
    // The HIS comes back: the retry delivers the same message, once.
    let his = His::listen(his_port).await;
    let oru = his.first().await;
    assert!(oru.contains(&format!("{PLACER}^HIS")), "{oru}");
    wait_for("delivered", Duration::from_secs(20), || {
        let store = store.clone();
        let message = message.clone();
        async move {
            let m = store.get(&message).await.unwrap()?;
            (m.state == huizhen_core::message::State::Done).then_some(())
        }
    })
    .await;
    assert_eq!(his.messages().len(), 1);
    assert_eq!(redact(&oru, &id), redact(&his.messages()[0], &id));
    wf.stop().await;
}
