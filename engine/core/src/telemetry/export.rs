//! The OTLP/HTTP span exporter (protobuf, `POST …/v1/traces`) over the engine's own HTTP
//! client: reqwest 0.12 on the core's rustls setup (ring, TLS 1.2/1.3, the public roots or
//! `telemetry.tls`), the same client stack as the `http` sink. opentelemetry-otlp's own clients
//! would bring reqwest 0.13 or tonic; this one is the `HttpClient` trait's one method.
//!
//! The SDK's batch processor calls the exporter from a thread of its own, outside any runtime,
//! while reqwest needs tokio: each request is spawned on the runtime the exporter was made in
//! and awaited from there. `OTEL_EXPORTER_OTLP_HEADERS` (a collector's credentials) is read by
//! opentelemetry-otlp.

use std::fmt;

use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};

use super::{Settings, TelemetryConfig};

#[cfg(test)]
thread_local! {
    /// Exporters made on this thread (the unit tests check that traces off make none).
    pub(super) static MADE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The span exporter to `settings.url`.
pub(super) fn exporter(
    settings: &Settings,
    cfg: &TelemetryConfig,
) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| "telemetry: the exporter needs the engine's tokio runtime".to_owned())?;
    let tls = cfg
        .tls
        .clone()
        .unwrap_or_default()
        .client_config()
        .map_err(|e| format!("telemetry.{e}"))?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("huizhen/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("telemetry: the HTTP client: {e}"))?;
    #[cfg(test)]
    MADE.with(|m| m.set(m.get() + 1));
    opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(settings.url.clone())
        .with_timeout(cfg.timeout)
        .with_http_client(Client { client, runtime })
        .build()
        .map_err(|e| format!("telemetry: the OTLP exporter: {e}"))
}

/// reqwest on the engine's runtime, for a caller outside it.
struct Client {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("huizhen OTLP client")
    }
}

#[async_trait::async_trait]
impl HttpClient for Client {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        let answer = self
            .runtime
            .spawn(async move {
                let r = client.execute(request).await?;
                let status = r.status();
                let headers = r.headers().clone();
                let body = r.bytes().await?;
                Ok::<_, reqwest::Error>((status, headers, body))
            })
            .await??;
        let (status, headers, body) = answer;
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}
