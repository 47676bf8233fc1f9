//! C-CANCEL of a C-GET, spoken at the DIMSE level (dcmtk's getscu cannot cancel mid-way): the
//! SCP finishes the sub-operation under way and answers Cancel (FE00) with the counts.

use std::time::Duration;

use huizhen_dicom::assoc::{Incoming, Limits, Link};
use huizhen_dicom::dimse::{Command, field, status};
use huizhen_dicom::find::Level;
use huizhen_dicom::qr::Selection;
use huizhen_dicom::uids;

use super::Scp;
use super::files::{self, CT, EXPLICIT};
use super::retrieve::store_study;

/// The next message's command (its data set, if any, skipped).
async fn next(link: &mut Link) -> (Command, u8) {
    let mut command = Vec::new();
    let mut cmd: Option<(Command, u8)> = None;
    loop {
        let Incoming::Data(pdvs) = link.recv().await.unwrap() else {
            panic!("expected P-DATA");
        };
        for p in &pdvs {
            if p.command {
                command.extend_from_slice(link.pdv(p));
                if p.last {
                    let c = Command::decode(&std::mem::take(&mut command)).unwrap();
                    if !c.has_dataset {
                        return (c, p.context);
                    }
                    cmd = Some((c, p.context));
                }
            } else if p.last {
                return cmd.take().expect("a data set after its command");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_c_get_stops_after_the_sub_operation_under_way() {
    if !files::dcmtk() {
        return;
    }
    let scp = Scp::start("    accept:\n      - calling: [\"*\"]\n").await;
    let dir = tempfile::tempdir().unwrap();
    let a = store_study(&scp, dir.path(), "1.2.826.0.1.3680043.10.77", "P077").await;
    let stream = huizhen_core::tls::connect(
        &format!("127.0.0.1:{}", scp.port),
        None,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let mut link = Link::new(
        stream,
        Limits {
            idle: Duration::from_secs(10),
            pdu: Duration::from_secs(10),
            max_pdu: 65536,
        },
    );
    let accepted = link
        .request_roles(
            "WS01",
            "HUIZHEN",
            &[
                (uids::STUDY_ROOT_GET.into(), vec![EXPLICIT.into()]),
                (CT.into(), vec![EXPLICIT.into()]),
            ],
            &[CT.into()],
        )
        .await
        .unwrap();
    let get = accepted
        .iter()
        .find(|c| c.abstract_syntax == uids::STUDY_ROOT_GET)
        .unwrap();
    assert!(
        accepted
            .iter()
            .any(|c| c.abstract_syntax == CT && c.requestor_scp),
        "role accepted"
    );
    let sel = Selection {
        level: Level::Study,
        patient_id: None,
        studies: vec![a.study.clone()],
        series: vec![],
        instances: vec![],
    };
    let ds = huizhen_dicom::find::encode(&sel.identifier(), EXPLICIT).unwrap();
    let rq = Command::request(field::C_GET_RQ, 7, uids::STUDY_ROOT_GET, true);
    link.send_message_part(get.id, true, &rq.encode())
        .await
        .unwrap();
    link.send_message_part(get.id, false, &ds).await.unwrap();

    // The first C-STORE-RQ: cancel, then answer it.
    let (store, pc) = next(&mut link).await;
    assert_eq!(store.field, field::C_STORE_RQ);
    let cancel = Command {
        field: field::C_CANCEL_RQ,
        responding_to: Some(7),
        ..Command::default()
    };
    link.send_message_part(get.id, true, &cancel.encode())
        .await
        .unwrap();
    let rsp = Command::response(&store, status::SUCCESS, false);
    link.send_message_part(pc, true, &rsp.encode())
        .await
        .unwrap();

    let (last, _) = next(&mut link).await;
    assert_eq!(last.field, field::C_GET_RSP);
    assert_eq!(last.responding_to, Some(7));
    assert_eq!(last.status, Some(status::CANCEL));
    let n = last.sub_operations.unwrap();
    assert_eq!((n.remaining, n.completed, n.failed), (Some(2), 1, 0));
    link.release().await.unwrap();
    scp.engine.shutdown(Duration::from_secs(5)).await;
}
