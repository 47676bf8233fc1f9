//! `http`: one HTTP request per message (a webhook, a LIS or HIS REST interface).
//!
//! ```yaml
//! sinks:
//!   - http:
//!       url: https://lis.example.cn/api/orders/{{header.order_id}}/results
//!       method: POST                      # POST (default), PUT or PATCH
//!       headers: { X-Facility: "{{facility}}" }
//!       body: '{"id":"{{id}}","patient":"{{= hl7(''PID-3[1].1'') }}"}'   # default: the body as is
//!       content_type: application/json    # default: from the message kind
//!       bearer: ${LIS_TOKEN}              # or basic: { username: …, password: ${LIS_PASSWORD} }
//!       tls: { ca: lis-ca.pem, cert: engine.pem, key: engine.key }   # https only; mTLS optional
//!       timeout: 30s
//!       idempotency_header: Idempotency-Key
//!       max_retry_after: 10m
//! ```
//!
//! The URL, header values and body are templates (`huizhen_core::template`); values in the URL
//! are percent-encoded. Every request carries the message id in `idempotency_header` (default
//! `Idempotency-Key`), the same on every attempt and redelivery, so the receiver can keep a
//! redelivered message from taking effect twice. A W3C `traceparent` names the message's trace
//! and the delivery's span (docs/metrics.md, "Traces"), unless `headers` sets one.
//!
//! What the answer means: 2xx is delivered (status and the start of the answer are recorded as
//! the sink's effect). 408, 425, 429 and 5xx, a timeout or a failed connection are retried with
//! the pipeline's backoff, and not before the answer's `Retry-After` (at most `max_retry_after`).
//! Any other status (4xx, and 3xx: redirects are not followed) is permanent: the message goes
//! to `dead` at once with the status and the first 512 characters of the answer.
//! TLS is rustls with ring through `huizhen_core::tls`: the server is checked against `tls.ca`
//! (default: the public roots) and the URL's host; `tls.cert`/`tls.key` present a client
//! certificate.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use huizhen_core::config::duration;
use huizhen_core::runner::BuildContext;
use huizhen_core::sinks::{Sink, SinkConfig};
use huizhen_core::store::{Effect, redact_url};
use huizhen_core::template::{self, Template};
use huizhen_core::tls::ClientTlsConfig;
use huizhen_core::work::{StepError, Work, parse_retry_after};
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;

/// `- http: {…}` in `sinks:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// Where to send: an `http://` or `https://` URL template.
    pub url: Template,
    /// `POST` (default), `PUT` or `PATCH`.
    #[serde(default = "post")]
    pub method: String,
    /// Extra request headers; values are templates.
    #[serde(default)]
    pub headers: BTreeMap<String, Template>,
    /// The request body as a template; default: the message body as it is after the steps.
    #[serde(default)]
    pub body: Option<Template>,
    /// The `Content-Type`; default from the message kind (`json` → `application/json`, …).
    #[serde(default)]
    pub content_type: Option<String>,
    /// A bearer token (`Authorization: Bearer …`), e.g. `${LIS_TOKEN}`.
    #[serde(default)]
    pub bearer: Option<String>,
    /// HTTP basic authentication.
    #[serde(default)]
    pub basic: Option<BasicAuth>,
    /// Whom to trust and who to be, for an `https://` URL.
    #[serde(default)]
    pub tls: Option<ClientTlsConfig>,
    /// Per request, connection included (default 30s); a timeout is retried.
    #[serde(default = "thirty", with = "duration")]
    pub timeout: Duration,
    /// The header that carries the message id (default `Idempotency-Key`).
    #[serde(default = "idempotency_key")]
    pub idempotency_header: String,
    /// The longest `Retry-After` honoured (default 10m); a longer one is shortened to it.
    #[serde(default = "ten_minutes", with = "duration")]
    pub max_retry_after: Duration,
    /// The sink's name in effects and errors (default `http#<index>`).
    #[serde(default)]
    pub name: Option<String>,
}

/// `basic:` of the `http` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    #[serde(default)]
    pub password: Option<String>,
}

fn post() -> String {
    "POST".into()
}
fn thirty() -> Duration {
    Duration::from_secs(30)
}
fn ten_minutes() -> Duration {
    Duration::from_secs(600)
}
fn idempotency_key() -> String {
    "Idempotency-Key".into()
}

/// How much of a refusal's answer goes into the error, in characters.
const ANSWER_CHARS: usize = 512;
/// How much of an answer is read at most, in bytes.
const ANSWER_BYTES: usize = 4096;

/// Headers the sink sets itself.
const OWN_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "authorization",
    "transfer-encoding",
];

impl HttpSinkConfig {
    fn check(&self) -> Result<(Method, HeaderName), String> {
        let url = self.url.source();
        let lower = url.to_ascii_lowercase();
        let https = lower.starts_with("https://");
        if !https && !lower.starts_with("http://") {
            return Err(format!("url: {url:?} must start with http:// or https://"));
        }
        let host_part = &url[if https { 8 } else { 7 }..];
        if host_part.starts_with("{{") {
            return Err(format!(
                "url: {url:?}: the host must be written out, not a placeholder"
            ));
        }
        if self.url.is_constant() {
            reqwest::Url::parse(url).map_err(|e| format!("url: {url:?} is not a URL: {e}"))?;
        }
        let method = match self.method.to_ascii_uppercase().as_str() {
            "POST" => Method::POST,
            "PUT" => Method::PUT,
            "PATCH" => Method::PATCH,
            _ => {
                return Err(format!(
                    "method: {:?} does not deliver a message; use POST, PUT or PATCH",
                    self.method
                ));
            }
        };
        let idem = HeaderName::from_bytes(self.idempotency_header.as_bytes()).map_err(|_| {
            format!(
                "idempotency_header: {:?} is not a header name",
                self.idempotency_header
            )
        })?;
        for (name, value) in &self.headers {
            let h = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("headers: {name:?} is not a header name"))?;
            if OWN_HEADERS.contains(&h.as_str()) || h == idem {
                return Err(format!(
                    "headers: {name:?} is set by the sink (see content_type, bearer, basic, idempotency_header)"
                ));
            }
            if value.is_constant() {
                HeaderValue::from_str(value.source()).map_err(|_| {
                    format!(
                        "headers: the value of {name:?}, {:?}, is not a header value",
                        value.source()
                    )
                })?;
            }
        }
        if let Some(ct) = &self.content_type {
            HeaderValue::from_str(ct)
                .map_err(|_| format!("content_type: {ct:?} is not a header value"))?;
        }
        match (&self.bearer, &self.basic) {
            (Some(_), Some(_)) => return Err("give bearer or basic, not both".into()),
            (Some(t), None) if t.trim().is_empty() => {
                return Err("bearer: the token is empty (is its ${VARIABLE} set?)".into());
            }
            (None, Some(b)) if b.username.is_empty() => {
                return Err("basic.username: must not be empty".into());
            }
            _ => {}
        }
        if let Some(t) = &self.tls {
            if !https {
                return Err(format!(
                    "tls: the url {url:?} is http://; use https:// with tls"
                ));
            }
            if t.server_name.is_some() {
                return Err(
                    "tls.server_name: not used by the http sink: the certificate is checked against the URL's host"
                        .into(),
                );
            }
        }
        if self.timeout.is_zero() {
            return Err("timeout: must be more than 0".into());
        }
        Ok((method, idem))
    }

    fn client(&self) -> Result<reqwest::Client, String> {
        // Always the core's rustls setup (ring, TLS 1.2/1.3): the public roots, or `tls.ca`, and
        // the client certificate for mutual TLS.
        let tls = self.tls.clone().unwrap_or_default().client_config()?;
        reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("huizhen/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("the HTTP client: {e}"))
    }
}

#[typetag::deserialize(name = "http")]
impl SinkConfig for HttpSinkConfig {
    fn build(&self, _ctx: &BuildContext, index: usize) -> Result<Arc<dyn Sink>, String> {
        let (method, idempotency) = self.check()?;
        let client = self.client()?;
        Ok(Arc::new(HttpSink {
            name: self.name.clone().unwrap_or_else(|| format!("http#{index}")),
            config: self.clone(),
            method,
            idempotency,
            client,
        }))
    }
}

struct HttpSink {
    name: String,
    config: HttpSinkConfig,
    method: Method,
    idempotency: HeaderName,
    client: reqwest::Client,
}

/// The media type of a message kind.
fn content_type(kind: &str) -> &'static str {
    match kind {
        "json" => "application/json",
        "fhir+json" => "application/fhir+json",
        "hl7v2" => "x-application/hl7-v2+er7",
        "text" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        _ => "application/octet-stream",
    }
}

impl HttpSink {
    fn request(&self, work: &mut Work) -> Result<(String, reqwest::RequestBuilder), StepError> {
        let c = &self.config;
        let url = c.url.render(work, &template::url_component)?;
        let parsed = reqwest::Url::parse(&url).map_err(|e| {
            StepError::permanent(format!(
                "url {:?} gave {:?}, not a URL: {e}",
                c.url.source(),
                redact_url(&url)
            ))
        })?;
        let body = match &c.body {
            Some(t) => t.render(work, &template::verbatim)?.into_bytes(),
            None => work.body().to_vec(),
        };
        let ct = c
            .content_type
            .clone()
            .unwrap_or_else(|| content_type(&work.kind).to_owned());
        let mut req = self
            .client
            .request(self.method.clone(), parsed)
            .header(reqwest::header::CONTENT_TYPE, ct)
            .header(self.idempotency.clone(), work.id.as_str());
        if !c
            .headers
            .keys()
            .any(|k| k.eq_ignore_ascii_case("traceparent"))
        {
            req = req.header("traceparent", work.traceparent());
        }
        for (name, value) in &c.headers {
            let v = value.render(work, &template::header_value)?;
            req = req.header(name.as_str(), v);
        }
        if let Some(t) = &c.bearer {
            req = req.bearer_auth(t);
        } else if let Some(b) = &c.basic {
            req = req.basic_auth(&b.username, b.password.as_ref());
        }
        Ok((url, req.body(body)))
    }
}

impl Sink for HttpSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Vec<Effect>, StepError>> {
        Box::pin(async move {
            let (url, req) = self.request(work)?;
            let what = format!("{} {}", self.method, redact_url(&url));
            let resp = req.send().await.map_err(|e| {
                StepError::new(format!("{what}: {}", transport(&e, self.config.timeout)))
            })?;
            let status = resp.status();
            let wait = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let answer = read_answer(resp).await;
            if status.is_success() {
                return Ok(vec![Effect {
                    sink: self.name.clone(),
                    pipeline: work.pipeline.clone(),
                    body: serde_json::to_vec(&serde_json::json!({
                        "status": status.as_u16(),
                        "answer": answer,
                    }))
                    .unwrap_or_default(),
                    as_received: false,
                }]);
            }
            let mut message = format!("{what}: answered {}", status_text(status));
            if !answer.is_empty() {
                message.push_str(": ");
                message.push_str(&answer);
            }
            if retryable(status) {
                let mut e = StepError::new(message);
                if let Some(w) = wait {
                    e = e.not_before(w.min(self.config.max_retry_after));
                }
                return Err(e);
            }
            if status.is_redirection() {
                message.push_str(" (redirects are not followed: set url to the final address)");
            }
            Err(StepError::permanent(message))
        })
    }
}

/// Whether sending again later can succeed.
fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || matches!(
            status,
            StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_EARLY | StatusCode::TOO_MANY_REQUESTS
        )
}

fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(r) => format!("{} {r}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// The start of an answer as one line of text: at most [`ANSWER_BYTES`] read, control
/// characters as spaces, at most [`ANSWER_CHARS`] characters.
async fn read_answer(mut resp: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < ANSWER_BYTES {
        match resp.chunk().await {
            Ok(Some(c)) => bytes.extend_from_slice(&c),
            _ => break,
        }
    }
    bounded(&bytes)
}

fn bounded(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(ANSWER_BYTES)]);
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(ANSWER_CHARS)
        .collect();
    if text.chars().count() > ANSWER_CHARS || bytes.len() > ANSWER_BYTES {
        out.push('…');
    }
    out.trim().to_owned()
}

/// A transport error without the URL (the caller names the request), with its causes.
fn transport(e: &reqwest::Error, timeout: Duration) -> String {
    let what = if e.is_timeout() {
        format!("no answer within {timeout:?}")
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "the request failed".to_owned()
    };
    match std::error::Error::source(e) {
        Some(cause) => format!("{what}: {}", huizhen_core::work::causes(cause)),
        None => what,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use huizhen_core::config::validate_text;

    fn pipeline(sink: &str) -> String {
        format!(
            "version: 1\nname: out\nsource:\n  http: {{ path: /in/out }}\nsinks:\n  - http:\n{sink}"
        )
    }

    fn check(sink: &str, expected: &[&str]) {
        assert_eq!(validate_text(&pipeline(sink)), expected, "{sink}");
    }

    #[test]
    fn config_errors_name_line_and_column() {
        check("      url: http://127.0.0.1:9/x/{{id}}\n", &[]);
        check(
            "      url: ftp://lis/x\n",
            &["7:12: sinks[0]: url: \"ftp://lis/x\" must start with http:// or https://"],
        );
        check(
            "      url: http://lis/{{header}}\n",
            &[
                "7:12: template \"http://lis/{{header}}\": unknown placeholder {{header}}; use id, pipeline, facility, kind, source, received_at, date, header.NAME or = EXPR",
            ],
        );
        check(
            "      url: http://lis/x\n      method: GET\n",
            &["8:15: sinks[0]: method: \"GET\" does not deliver a message; use POST, PUT or PATCH"],
        );
        check(
            "      url: http://lis/x\n      tls: { ca: ca.pem }\n",
            &["7:12: sinks[0]: tls: the url \"http://lis/x\" is http://; use https:// with tls"],
        );
        check(
            "      url: http://lis/x\n      bearer: t\n      basic: { username: u }\n",
            &["6:5: sinks[0]: give bearer or basic, not both"],
        );
        check(
            "      url: http://lis/x\n      headers: { Authorization: x }\n",
            &[
                "6:5: sinks[0]: headers: \"Authorization\" is set by the sink (see content_type, bearer, basic, idempotency_header)",
            ],
        );
        check(
            "      url: https://{{header.host}}/x\n",
            &[
                "7:12: sinks[0]: url: \"https://{{header.host}}/x\": the host must be written out, not a placeholder",
            ],
        );
        check(
            "      url: http://lis/x\n      retries: 3\n",
            &[
                "8:7: unknown key `retries`, expected one of `url`, `method`, `headers`, `body`, `content_type`, `bearer`, `basic`, `tls`, `timeout`, `idempotency_header`, `max_retry_after`, `name`",
            ],
        );
    }

    #[test]
    fn answers_are_bounded_and_on_one_line() {
        assert_eq!(
            bounded(b"{\"error\":\n\"unknown patient\"}"),
            "{\"error\": \"unknown patient\"}"
        );
        let long = "x".repeat(2000);
        let b = bounded(long.as_bytes());
        assert_eq!(b.chars().count(), ANSWER_CHARS + 1);
        assert!(b.ends_with('…'));
        assert!(retryable(StatusCode::TOO_MANY_REQUESTS));
        assert!(retryable(StatusCode::BAD_GATEWAY));
        assert!(!retryable(StatusCode::UNPROCESSABLE_ENTITY));
        assert!(!retryable(StatusCode::MOVED_PERMANENTLY));
    }
}
