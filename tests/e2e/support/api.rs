//! The API under test: an engine's real router and security served on a loopback port, and a
//! JSON client for it (a bearer token per call; the status and the JSON body back).

use std::sync::Arc;

use huizhen_core::Engine;
use huizhen_core::security::{Security, SecurityConfig};
use serde_json::{Value, json};

/// Serves `engine`'s router behind `security` on a free loopback port until the engine shuts
/// down; the base URL (`http://127.0.0.1:PORT`).
pub async fn serve(engine: &Engine, security: &SecurityConfig) -> String {
    serve_with(
        engine,
        security,
        huizhen_core::config::HttpConfig::default(),
    )
    .await
}

/// The same with `http` settings (deadlines, body limits).
pub async fn serve_with(
    engine: &Engine,
    security: &SecurityConfig,
    http: huizhen_core::config::HttpConfig,
) -> String {
    let security = Security::new(security, engine.store.clone()).unwrap();
    let app = huizhen_core::http::router(engine.app_state(), &http, Arc::new(security));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = engine.shutdown_token();
    tokio::spawn(async move { huizhen_core::http::serve(listener, app, &http, None, stop).await });
    base
}

/// What a call answered: the status, the JSON body (`Null` when there is none or it is not
/// JSON) and the `ETag`.
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub etag: Option<String>,
}

/// A client of the API at `base`.
#[derive(Clone)]
pub struct JsonApi {
    pub base: String,
    pub client: reqwest::Client,
}

impl JsonApi {
    pub fn new(base: String) -> JsonApi {
        JsonApi {
            base,
            // Idle connections are dropped before the engine's 10 s `http.header_timeout` closes
            // them, so a request never races the server's close on a reused connection.
            client: reqwest::Client::builder()
                .pool_idle_timeout(std::time::Duration::from_secs(5))
                .build()
                .expect("an HTTP client"),
        }
    }

    /// `GET path`, or `POST path` with `body` as JSON (`{}` when `None`), with `bearer`.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        bearer: &str,
        body: Option<Value>,
    ) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.client.get(url),
            _ => self.client.post(url).json(&body.unwrap_or(json!({}))),
        };
        req.bearer_auth(bearer)
    }

    /// Sends `req`.
    pub async fn send(req: reqwest::RequestBuilder) -> Reply {
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let etag = r
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Reply {
            status,
            body: r.json().await.unwrap_or(Value::Null),
            etag,
        }
    }

    pub async fn get(&self, path: &str, bearer: &str) -> (u16, Value) {
        let r = Self::send(self.request("GET", path, bearer, None)).await;
        (r.status, r.body)
    }

    pub async fn post(&self, path: &str, bearer: &str, body: Value) -> (u16, Value) {
        let r = Self::send(self.request("POST", path, bearer, Some(body))).await;
        (r.status, r.body)
    }

    /// `GET path` as text: the status, the content type and the body.
    pub async fn get_text(&self, path: &str, bearer: &str) -> (u16, String, String) {
        let r = self
            .request("GET", path, bearer, None)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let kind = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, kind, r.text().await.unwrap())
    }
}
