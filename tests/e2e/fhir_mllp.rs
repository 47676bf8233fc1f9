//! The issue 16 Done-when over the wire: an ORU^R01 sent by MLLP through a pipeline
//! `hl7v2_to_fhir` → `fhir_store` appears at `/fhir/r4/DiagnosticReport?patient=…` with its
//! Observations.
//! The sink and the facade alone are covered by `fhir/store.rs`, with hand-built transaction
//! Bundles.

use std::time::Duration;

use huizhen_core::message::State;
use huizhen_hl7::mllp::{Deframer, Event, frame};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::consultations::{start_on, t0};
use crate::fhir::{admin, ids, ok};
use crate::support::{Backend, fresh_db};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oru_by_mllp_is_a_diagnostic_report_with_its_observations_sqlite() {
    an_oru_by_mllp_is_a_diagnostic_report_with_its_observations(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oru_by_mllp_is_a_diagnostic_report_with_its_observations_postgres() {
    an_oru_by_mllp_is_a_diagnostic_report_with_its_observations(Backend::Postgres).await;
}

const ORU: &str = "MSH|^~\\&|LIS|县人民医院|HUIZHEN|省会诊中心|20260305083000||ORU^R01^ORU_R01|LAB-5005|P|2.5.1|||AL|NE||UNICODE UTF-8\r\
PID|1||MRN-5005^^^县人民医院^MR||张伟||19620502|M\r\
OBR|1|ORD-5005|ACC-5005|58410-2^CBC panel^LN|||20260305080000|||||||||||||||20260305083000||LAB|F\r\
OBX|1|NM|718-7^Hemoglobin^LN||135|g/L|130-175||||F|||20260305080000\r\
OBX|2|NM|6690-2^WBC^LN||6.1|10*9/L|3.5-9.5||||F|||20260305080000\r";

async fn an_oru_by_mllp_is_a_diagnostic_report_with_its_observations(b: Backend) {
    let Some(db) = fresh_db(b).await else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = format!(
        "version: 1\nname: lab-in\nfacility: F-REQ\nsource:\n  mllp: {{ listen: \"127.0.0.1:{port}\" }}\nsteps:\n  - hl7v2_to_fhir: {{}}\nsinks:\n  - fhir_store: {{}}\n"
    );
    let ca = std::sync::Arc::new(
        huizhen_signing::testca::TestCa::generate("Huizhen FHIR MLLP CA").unwrap(),
    );
    let wf = start_on(
        db,
        ca,
        std::sync::Arc::new(huizhen_core::clock::FakeClock::new(t0())),
        &[&yaml],
    )
    .await;
    let mut stream = None;
    for _ in 0..200 {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)).await {
            stream = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut stream = stream.expect("the MLLP listener accepts");
    stream.write_all(&frame(ORU.as_bytes())).await.unwrap();
    // The ACK (enhanced mode, MSH-15 AL: CA once journaled).
    let mut deframer = Deframer::new(1 << 20);
    let mut buf = [0u8; 4096];
    let ack = loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "the connection closed before the ACK");
        if let Some(Event::Frame(f)) = deframer.push(&buf[..n]).into_iter().next() {
            break String::from_utf8_lossy(&f).into_owned();
        }
    };
    assert!(
        ack.contains("MSA|CA|LAB-5005") || ack.contains("MSA|AA|LAB-5005"),
        "{ack}"
    );
    let msg = crate::support::journaled(&wf.engine.store, "lab-in").await;
    let id = msg[0].id.clone();
    assert_eq!(
        crate::fhir::settled(&wf, &id).await,
        State::Done,
        "{:?}",
        wf.engine.store.get(&id).await.unwrap().unwrap().last_error
    );

    let a = admin();
    let patients = ok(&wf, "/fhir/r4/Patient?identifier=MRN-5005", &a).await;
    assert_eq!(patients["total"], 1, "{patients}");
    let patient = patients["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reports: Value = ok(
        &wf,
        &format!("/fhir/r4/DiagnosticReport?patient={patient}&_include=DiagnosticReport:result"),
        &a,
    )
    .await;
    assert_eq!(ids(&reports, "match").len(), 1, "{reports}");
    let observations = ids(&reports, "include");
    assert_eq!(observations.len(), 2, "{reports}");
    assert!(observations.iter().all(|o| o.starts_with("Observation/")));
}
