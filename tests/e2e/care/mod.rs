//! The care workflow end to end (issue 15 items 4, 7, 8, 9), on SQLite and PostgreSQL: the
//! pharmacist gate and the delivery webhook of prescriptions through the API, the outbound
//! event in the journal; appointment conflicts and no-shows; the case library's search and
//! recommendations on a fixture set; statistics as JSON and CSV and the scheduled export.

mod appointments;
mod library;
mod prescriptions;
mod stats;

use std::time::Duration;

use huizhen_core::Engine;
use huizhen_core::config::workflow::WorkflowConfig;
use huizhen_core::security::{Role, SecurityConfig};
use serde_json::Value;

use crate::support::{Backend, JsonApi, TestDb, fresh_db, loaded, serve};

const SECRET: &str = "e2e-care-secret-0123456789abcdef0123";

fn security_config() -> SecurityConfig {
    SecurityConfig {
        jwt_secret: Some(SECRET.into()),
        // The tests walk many refusals from one address.
        max_failures: 10_000,
        max_failures_per_address: 100_000,
        rate_limit: huizhen_core::security::RateLimit {
            per_second: 0.0,
            burst: 1.0,
        },
        ..SecurityConfig::default()
    }
}

/// A JWT for `sub` in `role` at `facility`.
fn token(sub: &str, role: Role, facility: &str) -> String {
    huizhen_core::security::issue_from_config(
        &security_config(),
        sub,
        role,
        facility,
        Duration::from_secs(600),
    )
    .unwrap()
    .token
}

/// A running engine with its API on a loopback port; the API calls through [`JsonApi`].
struct Api {
    engine: Engine,
    api: JsonApi,
    db: TestDb,
}

impl std::ops::Deref for Api {
    type Target = JsonApi;

    fn deref(&self) -> &JsonApi {
        &self.api
    }
}

impl Api {
    /// An engine on a fresh database of `backend` with `workflow` settings and `pipelines`;
    /// `None` when PostgreSQL is not reachable (outside CI).
    async fn start(backend: Backend, workflow: WorkflowConfig, pipelines: &[&str]) -> Option<Api> {
        let db = fresh_db(backend).await?;
        let mut config = loaded(&db, pipelines);
        config.root.workflow = workflow;
        let engine = Engine::start(config).await.unwrap();
        let base = serve(&engine, &security_config()).await;
        Some(Api {
            engine,
            api: JsonApi::new(base),
            db,
        })
    }

    async fn stop(self) {
        self.engine.shutdown(Duration::from_secs(5)).await;
        drop(self.db);
    }
}

/// The audit events of `action`, as (outcome, resource id, detail).
async fn audited(
    store: &huizhen_core::store::Store,
    action: &str,
) -> Vec<(String, String, String)> {
    store
        .audit_events(&huizhen_core::store::audit::AuditFilter {
            action: Some(action.into()),
            limit: Some(10_000),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.event.outcome, r.event.resource_id, r.event.detail))
        .collect()
}

/// An expert of the registry with a schedule (weekly windows as `[days, from, to]`).
fn expert(
    id: &str,
    facility: &str,
    departments: &[&str],
    codes: &[&str],
    windows: &[[&str; 3]],
) -> huizhen_domain::expert::Expert {
    let windows: Vec<Value> = windows
        .iter()
        .map(|[days, from, to]| serde_json::json!({ "days": days, "from": from, "to": to }))
        .collect();
    serde_json::from_value(serde_json::json!({
        "id": id, "name": format!("专家{id}"), "facility": facility,
        "departments": departments, "expertise": codes, "title": "主任医师",
        "independent_practice_since": "2005-07-01", "licence_verified": true,
        "registration_active": true, "schedule": { "windows": windows },
    }))
    .unwrap()
}
