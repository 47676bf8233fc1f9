//! `GET /api/tap` (issue 22, item 3): a live message of a pipeline, redacted for every role
//! that may tap; with `phi=true` the message as it is, for admins and integrators only; every
//! tap audited when it opens and when it ends, a PHI tap with the messages it showed.

use std::time::Duration;

use huizhen_core::security::Role;

use super::{server, token};

/// Opens a tap as `role@facility` and returns its response (the stream not yet read).
async fn open(s: &super::Server, query: &str, role: Role, facility: &str) -> reqwest::Response {
    s.client
        .get(format!("{}/api/tap?{query}", s.base))
        .bearer_auth(token(role, facility))
        .send()
        .await
        .unwrap()
}

/// The first `n` lines of an open tap.
async fn lines(r: reqwest::Response, n: usize) -> Vec<serde_json::Value> {
    let mut r = r;
    let mut out = Vec::new();
    let mut pending = Vec::new();
    let read = async {
        while out.len() < n {
            let Some(chunk) = r.chunk().await.unwrap() else {
                break;
            };
            pending.extend_from_slice(&chunk);
            while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=nl).collect();
                out.push(serde_json::from_slice(&line).unwrap());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("tap lines within 20 s");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tap_is_redacted_unless_phi_and_phi_is_for_admins_and_integrators() {
    let s = server(100).await;

    // Redacted (an auditor): where the message is, never what it says.
    let tap = open(&s, "pipeline=a&limit=1", Role::Auditor, "hosp-a").await;
    assert_eq!(tap.status(), 200);
    assert_eq!(
        tap.headers()["content-type"].to_str().unwrap(),
        "application/x-ndjson"
    );
    let id = s.ingest("/in/a").await;
    let got = lines(tap, 1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let line = got[0].to_string();
    assert_eq!(got[0]["message_id"], id.as_str(), "{line}");
    assert_eq!(got[0]["point"], "journal#0", "{line}");
    assert_eq!(got[0]["result"], "delivered", "{line}");
    assert!(!line.contains("张三"), "{line}");
    assert!(got[0].get("body").is_none(), "{line}");
    assert!(got[0]["body_bytes"].as_u64().unwrap() > 0, "{line}");

    // PHI for an integrator: the body as it is.
    let tap = open(
        &s,
        "pipeline=a&limit=1&phi=true",
        Role::Integrator,
        "hosp-a",
    )
    .await;
    assert_eq!(tap.status(), 200);
    let id2 = s.ingest("/in/a").await;
    let got = lines(tap, 1).await;
    assert!(got[0]["body"].as_str().unwrap().contains("张三"), "{got:?}");

    // PHI is refused to an auditor, and the refusal is on record.
    let r = open(&s, "pipeline=a&phi=true", Role::Auditor, "hosp-a").await;
    assert_eq!(r.status(), 403);
    let err: serde_json::Value = r.json().await.unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("redacted only"),
        "{err}"
    );

    // Another facility's pipeline is not there for B; a filter that does not compile is a 400
    // that says why; an unknown point names the ones there are.
    assert_eq!(
        open(&s, "pipeline=a", Role::Integrator, "hosp-b")
            .await
            .status(),
        404
    );
    let r = open(
        &s,
        "pipeline=a&filter=body.x.exist(i,%20i)",
        Role::Integrator,
        "hosp-a",
    )
    .await;
    assert_eq!(r.status(), 400);
    let err: serde_json::Value = r.json().await.unwrap();
    assert!(err["error"].as_str().unwrap().contains("exists"), "{err}");
    let r = open(&s, "pipeline=a&point=set%231", Role::Integrator, "hosp-a").await;
    assert_eq!(r.status(), 400);
    let err: serde_json::Value = r.json().await.unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("\"journal#0\""),
        "{err}"
    );

    // A filter: only the messages for which it holds.
    let tap = open(
        &s,
        "pipeline=a&limit=1&filter=body.patient%20%3D%3D%20%27%E6%9D%8E%E5%9B%9B%27",
        Role::Integrator,
        "hosp-a",
    )
    .await;
    assert_eq!(tap.status(), 200);
    s.ingest("/in/a").await; // 张三: not shown
    let r = s
        .client
        .post(format!("{}/in/a", s.base))
        .bearer_auth(token(Role::Admin, "*"))
        .json(&serde_json::json!({ "patient": "李四" }))
        .send()
        .await
        .unwrap();
    let li: serde_json::Value = r.json().await.unwrap();
    let got = lines(tap, 1).await;
    assert_eq!(got[0]["message_id"], li["id"], "{got:?}");

    // The audit trail: each tap opened and ended; the PHI tap names the message it showed.
    let events =
        crate::support::wait_for("the taps' ends audited", Duration::from_secs(10), || {
            let store = s.engine.store.clone();
            async move {
                let e = store
                    .audit_events(&huizhen_core::store::audit::AuditFilter {
                        limit: Some(1000),
                        ..Default::default()
                    })
                    .await
                    .ok()?;
                let ends = e
                    .iter()
                    .filter(|e| e.event.action == "pipeline.tap.end")
                    .count();
                (ends >= 3).then_some(e)
            }
        })
        .await;
    let of = |action: &str, outcome: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.event.action == action && e.event.outcome == outcome)
            .map(|e| format!("{} {}", e.event.actor, e.event.detail))
            .collect()
    };
    let opened = of("pipeline.tap", "success");
    assert!(
        opened
            .iter()
            .any(|d| d.starts_with("auditor@hosp-a") && d.contains("phi=false")),
        "{opened:?}"
    );
    assert!(
        opened
            .iter()
            .any(|d| d.starts_with("integrator@hosp-a") && d.contains("phi=true")),
        "{opened:?}"
    );
    let denied = of("pipeline.tap", "denied");
    assert!(denied.iter().any(|d| d.contains("phi=true")), "{denied:?}");
    let ended = of("pipeline.tap.end", "success");
    assert!(
        ended
            .iter()
            .any(|d| d.contains("with PHI") && d.contains(&id2)),
        "{ended:?}"
    );
    assert!(
        ended
            .iter()
            .any(|d| d.contains("redacted") && !d.contains(&id)),
        "{ended:?}"
    );
    s.engine.shutdown(Duration::from_secs(5)).await;
}
