//! Access control beyond the matrix: API keys until revoked, throttling of failed logins per
//! (address, subject) and per address, and the per-client rate limit.

use std::time::Duration;

use huizhen_core::security::{Role, SecurityConfig};

use super::{security_config, server_with, token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_work_until_revoked_and_bad_tokens_are_throttled() {
    let s = server_with(SecurityConfig {
        max_failures: 3,
        max_failures_per_address: 8,
        ..security_config()
    })
    .await;
    let (key, row) = huizhen_core::security::new_api_key("lis-a", Role::Integrator, "hosp-a");
    s.engine.store.create_api_key(&row).await.unwrap();
    assert_eq!(s.call("POST", "/in/a", Some(&key)).await, 202);
    assert_eq!(
        s.call("POST", "/in/b", Some(&key)).await,
        403,
        "other facility"
    );
    // The stored hash is not the key.
    assert!(!row.hash.contains(key.rsplit('_').next().unwrap()));
    s.engine.store.revoke_api_key(&row.id).await.unwrap();
    assert_eq!(s.call("POST", "/in/a", Some(&key)).await, 401);

    // Failed attempts count per (address, claimed subject): after max_failures (3) the same
    // subject from this address gets 429, while a colleague behind the same (NAT) address
    // still gets in; after max_failures_per_address (8), whatever subject, the address does.
    let forged = |sub: &str| {
        huizhen_core::security::issue_from_config(
            &SecurityConfig {
                jwt_secret: Some("another-secret-another-secret-0000".into()),
                ..SecurityConfig::default()
            },
            sub,
            Role::Admin,
            "*",
            Duration::from_secs(600),
        )
        .unwrap()
        .token
    };
    // The revoked key was failure 1 of this address (subject apikey:<id>).
    for _ in 0..3 {
        assert_eq!(
            s.call("GET", "/api/pipelines", Some(&forged("mallory")))
                .await,
            401
        );
    }
    assert_eq!(
        s.call("GET", "/api/pipelines", Some(&forged("mallory")))
            .await,
        429,
        "the same subject from the same address is throttled"
    );
    let good = token(Role::Admin, "*");
    assert_eq!(
        s.call("GET", "/api/pipelines", Some(&good)).await,
        200,
        "another subject from the same address is not"
    );
    // A spray: made-up keys, not a JWT, no token, other names — 4 more failures reach 8.
    assert_eq!(
        s.call("GET", "/api/pipelines", Some("hzk_0000_ffff")).await,
        401
    );
    assert_eq!(
        s.call("GET", "/api/pipelines", Some("not.a.jwt")).await,
        401
    );
    assert_eq!(s.call("GET", "/api/pipelines", None).await, 401);
    assert_eq!(
        s.call("GET", "/api/pipelines", Some(&forged("eve"))).await,
        401
    );
    assert_eq!(
        s.call("GET", "/api/pipelines", Some(&good)).await,
        429,
        "the whole address after max_failures_per_address"
    );
    s.engine.shutdown(Duration::from_secs(5)).await;
}

/// Per-client rate limit: a burst, then 429 with Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_over_the_rate_limit_get_429() {
    let s = server_with(SecurityConfig {
        // Slow refill (one request every 2 s), so that a loaded machine cannot refill the bucket
        // between the calls below.
        rate_limit: huizhen_core::security::RateLimit {
            per_second: 0.5,
            burst: 5.0,
        },
        ..security_config()
    })
    .await;
    let t = token(Role::Auditor, "*");
    let mut codes = Vec::new();
    for _ in 0..7 {
        codes.push(s.call("GET", "/api/pipelines", Some(&t)).await);
    }
    assert_eq!(codes, vec![200, 200, 200, 200, 200, 429, 429]);
    let r = s
        .client
        .get(format!("{}/api/pipelines", s.base))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    // Health checks are not limited.
    assert_eq!(s.call("GET", "/health", None).await, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        s.call("GET", "/api/pipelines", Some(&t)).await,
        200,
        "refilled"
    );
    s.engine.shutdown(Duration::from_secs(5)).await;
}
