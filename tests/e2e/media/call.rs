//! Three webrtc-crate peers — the local physician, the patient and the expert — join one room
//! through `/ws/signal`, each publishes a VP8 track to the SFU, and each receives the other
//! two's RTP on its subscriptions (packets counted per track).

use std::time::Duration;

use huizhen_core::store::audit::AuditFilter;

use super::peer::{Participant, Signal};
use super::{consultation, signal_url, start, tokens};
use crate::support::Backend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_peers_receive_each_others_rtp_through_the_sfu() {
    let Some(wf) = start(Backend::Sqlite).await else {
        return;
    };
    let (id, _, _) = consultation(&wf, true, true).await;
    let (room, tokens) = tokens(&wf, &id).await;
    let url = signal_url(&wf);
    let mut people = Vec::new();
    let mut sessions = Vec::new();
    for role in ["local-physician", "patient", "expert"] {
        let (s, joined) = Signal::join(&url, &room, &tokens[role]).await;
        assert_eq!(joined["type"], "joined", "{joined}");
        assert_eq!(joined["admission"], "admitted", "{role}: {joined}");
        assert_eq!(joined["role"], role);
        sessions.push(joined["session"].as_str().unwrap().to_owned());
        people.push(Participant::new(s));
    }
    for p in people.iter_mut() {
        p.publish().await;
    }
    // Each gets one subscription per other publisher.
    let mut publishers = Vec::new();
    for p in people.iter_mut() {
        let mut from = Vec::new();
        for _ in 0..2 {
            let (_, publisher) = p.accept_subscription().await;
            from.push(publisher);
        }
        from.sort();
        publishers.push(from);
    }
    for (i, from) in publishers.iter().enumerate() {
        let mut others: Vec<String> = sessions
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, s)| s.clone())
            .collect();
        others.sort();
        assert_eq!(
            from, &others,
            "participant {i} subscribes to the two others"
        );
    }
    // RTP flows: at least 25 packets (half a second) on every subscription.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let mut all = Vec::new();
        for p in &people {
            all.push(p.counts().await);
        }
        let ok = all.iter().all(|c| {
            c.iter().filter(|(k, _)| k.starts_with("sub:")).count() == 2
                && c.iter()
                    .filter(|(k, _)| k.starts_with("sub:"))
                    .all(|(_, n)| *n >= 25)
        });
        if ok {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every participant received the others' RTP: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Leaving is audited, like joining.
    for mut p in people {
        p.signal.send(serde_json::json!({"type": "leave"})).await;
        p.close().await;
    }
    let rows = crate::support::wait_for("the leaves audited", Duration::from_secs(10), || {
        let store = wf.engine.store.clone();
        let id = id.clone();
        async move {
            let rows = store
                .audit_events(&AuditFilter {
                    resource_id: Some(id),
                    ..AuditFilter::default()
                })
                .await
                .ok()?;
            (rows
                .iter()
                .filter(|r| r.event.action == "room.leave")
                .count()
                == 3)
                .then_some(rows)
        }
    })
    .await;
    let joins = rows
        .iter()
        .filter(|r| r.event.action == "room.join" && r.event.outcome == "success")
        .count();
    assert_eq!(joins, 3);
    wf.stop().await;
}
