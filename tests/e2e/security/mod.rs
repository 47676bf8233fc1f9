//! Security: the authorisation matrix (role × facility × endpoint), API keys, throttling of
//! failed logins, and tamper detection of the audit trail (API, store and `huizhen audit
//! verify`), encryption at rest and key rotation, and patient data kept out of logs, exports
//! and the database file.
//!
//! This file holds the server the tests share; each module is one seam.

mod access;
mod at_rest;
mod matrix;
mod phi;
mod tamper;
mod tap;

use std::time::Duration;

use huizhen_core::Engine;
use huizhen_core::security::{Role, SecurityConfig};

use crate::support::{Backend, fresh_db, loaded, serve};

pub(crate) const SECRET: &str = "e2e-security-secret-0123456789abcdef";

pub(crate) fn security_config() -> SecurityConfig {
    SecurityConfig {
        jwt_secret: Some(SECRET.into()),
        ..SecurityConfig::default()
    }
}

pub(crate) fn token(role: Role, facility: &str) -> String {
    huizhen_core::security::issue_from_config(
        &security_config(),
        &format!("{}@{facility}", role.as_str()),
        role,
        facility,
        Duration::from_secs(600),
    )
    .unwrap()
    .token
}

pub(crate) struct Server {
    pub engine: Engine,
    pub base: String,
    pub client: reqwest::Client,
    pub _db: crate::support::TestDb,
}

/// An engine with two facilities' pipelines (`/in/a` for county hospital A, `/in/b` for B),
/// served on a free port with the real router and security.
pub(crate) async fn server(max_failures: u32) -> Server {
    server_with(SecurityConfig {
        max_failures,
        ..security_config()
    })
    .await
}

pub(crate) async fn server_with(cfg: SecurityConfig) -> Server {
    let db = fresh_db(Backend::Sqlite).await.unwrap();
    let a = "version: 1\nname: a\nfacility: hosp-a\nsource:\n  http: { path: /in/a, kind: json }\nsinks:\n  - journal: {}\n";
    let b = "version: 1\nname: b\nfacility: hosp-b\nsource:\n  http: { path: /in/b, kind: json }\nsinks:\n  - journal: {}\n";
    let engine = Engine::start(loaded(&db, &[a, b])).await.unwrap();
    let base = serve(&engine, &cfg).await;
    Server {
        engine,
        base,
        client: reqwest::Client::new(),
        _db: db,
    }
}

impl Server {
    pub(crate) async fn call(&self, method: &str, path: &str, bearer: Option<&str>) -> u16 {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "GET" => self.client.get(url),
            "PUT" => self
                .client
                .put(url)
                .header("content-type", "application/json")
                .body(r#"{"patient":"P1"}"#),
            _ => self
                .client
                .post(url)
                .header("content-type", "application/json")
                .body(r#"{"patient":"P1"}"#),
        };
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap().status().as_u16()
    }

    /// `GET path` with `bearer`: the string field `field` of each item of the array `list`.
    pub(crate) async fn strings(
        &self,
        path: &str,
        bearer: String,
        list: &str,
        field: &str,
    ) -> Vec<String> {
        let v: serde_json::Value = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(bearer)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m[field].as_str().unwrap().to_owned())
            .collect()
    }

    pub(crate) async fn ingest(&self, path: &str) -> String {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token(Role::Admin, "*"))
            .header("content-type", "application/json")
            .body(r#"{"patient":"张三"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let v: serde_json::Value = r.json().await.unwrap();
        v["id"].as_str().unwrap().to_owned()
    }
}
