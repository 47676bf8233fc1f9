//! The FHIR REST client both the `fhir_poll` source and the `fhir` sink use: reqwest (rustls,
//! ring), JSON only, R4 (`application/fhir+json; fhirVersion=4.0` on every request), bearer
//! auth, 429/503 answered with `Retry-After` honoured, and errors that carry the server's
//! OperationOutcome text.

use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// The media type of every request and body: FHIR JSON, R4 (FHIR-01).
pub const FHIR_R4_JSON: &str = "application/fhir+json; fhirVersion=4.0";

/// What a request failed with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ClientError {
    /// The HTTP status, when the server answered.
    pub status: Option<u16>,
    /// `METHOD url: status: the OperationOutcome's issues` (or the transport error).
    pub message: String,
    /// Whether sending it again later can succeed (transport errors, 408, 429, 5xx).
    pub retryable: bool,
}

/// How to reach a FHIR server.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The service base URL, e.g. `https://fhir.example.cn/fhir/r4` (no trailing slash needed).
    pub base: String,
    /// A bearer token, sent as `Authorization: Bearer …`.
    pub token: Option<String>,
    /// Per request.
    pub timeout: Duration,
    /// How often a 429/503 is waited out and retried within one call.
    pub retries: u32,
    /// The longest `Retry-After` waited within one call; a longer one fails the call
    /// (retryably: the pipeline's backoff takes over).
    pub max_wait: Duration,
}

/// A FHIR server.
#[derive(Clone)]
pub struct FhirClient {
    http: reqwest::Client,
    base: String,
    options: ClientOptions,
}

impl std::fmt::Debug for FhirClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FhirClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// A successful answer: status, `Location`/`ETag` and the body (JSON, or `Null` when empty).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub etag: Option<String>,
    pub body: Value,
}

impl FhirClient {
    pub fn new(options: ClientOptions) -> Result<FhirClient, String> {
        let base = options.base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!("base: {base:?} is not an http:// or https:// URL"));
        }
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(FHIR_R4_JSON));
        if let Some(t) = &options.token {
            let mut v = HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|_| "token: not a valid header value".to_owned())?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(options.timeout)
            .user_agent(concat!("huizhen/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("the HTTP client: {e}"))?;
        Ok(FhirClient {
            http,
            base,
            options,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `base/path` (a path starting with `?` or a full URL is taken as it is).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}/{}", self.base, path.trim_start_matches('/'))
        }
    }

    /// Sends one request; waits out 429/503 with `Retry-After` up to `retries` times.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Result<Answer, ClientError> {
        let what = format!("{method} {}", redact_query(url));
        let mut tries = 0;
        loop {
            let mut req = self.http.request(method.clone(), url);
            if let Some(b) = body {
                req = req.header(CONTENT_TYPE, FHIR_R4_JSON).body(b.to_vec());
            }
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let resp = req.send().await.map_err(|e| ClientError {
                status: None,
                message: format!("{what}: {}", transport(&e)),
                retryable: true,
            })?;
            let status = resp.status();
            if (status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::SERVICE_UNAVAILABLE)
                && tries < self.options.retries
                && let Some(wait) = retry_after(resp.headers())
                && wait <= self.options.max_wait
            {
                tries += 1;
                tracing::info!(
                    request = %what,
                    status = status.as_u16(),
                    wait_ms = wait.as_millis() as u64,
                    "FHIR server asks to retry later"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            let header = |n: &str| {
                resp.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let location = header("location").or_else(|| header("content-location"));
            let etag = header("etag");
            let wait = retry_after(resp.headers());
            let bytes = resp.bytes().await.map_err(|e| ClientError {
                status: Some(status.as_u16()),
                message: format!("{what}: reading the answer: {}", transport(&e)),
                retryable: true,
            })?;
            let json: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or(Value::Null)
            };
            if status.is_success() {
                return Ok(Answer {
                    status: status.as_u16(),
                    location,
                    etag,
                    body: json,
                });
            }
            let code = status.as_u16();
            let mut message = format!("{what}: {status}");
            if let Some(issues) = outcome_text(&json) {
                message.push_str(": ");
                message.push_str(&issues);
            }
            if let Some(w) = wait.filter(|_| code == 429 || code == 503) {
                message.push_str(&format!(" (Retry-After {} s)", w.as_secs()));
            }
            return Err(ClientError {
                status: Some(code),
                message,
                retryable: code == 408 || code == 429 || status.is_server_error(),
            });
        }
    }

    /// GET a URL (a search, a `next` link) and return its JSON.
    pub async fn get(&self, url: &str) -> Result<Value, ClientError> {
        self.send(Method::GET, url, None, &[]).await.map(|a| a.body)
    }
}

/// The seconds or HTTP date of a `Retry-After` header.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    huizhen_core::work::parse_retry_after(headers.get(RETRY_AFTER)?.to_str().ok()?)
}

/// The issues of an OperationOutcome: `severity code: diagnostics or details.text` each,
/// `; `-joined, at most 1,000 characters.
pub fn outcome_text(v: &Value) -> Option<String> {
    if v.get("resourceType")?.as_str()? != "OperationOutcome" {
        return None;
    }
    let issues: Vec<String> = v
        .get("issue")?
        .as_array()?
        .iter()
        .map(|i| {
            let s = |k: &str| i.get(k).and_then(Value::as_str).unwrap_or_default();
            let text = i
                .get("diagnostics")
                .and_then(Value::as_str)
                .or_else(|| i.pointer("/details/text").and_then(Value::as_str))
                .or_else(|| {
                    i.pointer("/details/coding/0/display")
                        .and_then(Value::as_str)
                })
                .unwrap_or_default();
            let mut line = format!("{} {}", s("severity"), s("code")).trim().to_owned();
            if !text.is_empty() {
                line.push_str(": ");
                line.push_str(text);
            }
            if let Some(e) = i
                .get("expression")
                .and_then(|e| e.get(0))
                .and_then(Value::as_str)
            {
                line.push_str(&format!(" (at {e})"));
            }
            line
        })
        .collect();
    let mut out = issues.join("; ");
    if out.chars().count() > 1000 {
        out = out.chars().take(1000).collect::<String>() + "…";
    }
    (!out.is_empty()).then_some(out)
}

/// A transport error without the URL (the caller names the request).
fn transport(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut s = kind.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// The URL without its query values (search values can be patient data): `?name=…&_count=…`.
pub fn redact_query(url: &str) -> String {
    match url.split_once('?') {
        None => url.to_owned(),
        Some((path, q)) => {
            let names: Vec<String> = q
                .split('&')
                .map(|kv| {
                    let k = kv.split('=').next().unwrap_or_default();
                    format!("{k}=…")
                })
                .collect();
            format!("{path}?{}", names.join("&"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_issues() {
        let v = serde_json::json!({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "invalid", "diagnostics": "Patient.gender: bad code", "expression": ["Patient.gender"]},
            {"severity": "warning", "code": "processing", "details": {"text": "slow"}}
        ]});
        assert_eq!(
            outcome_text(&v).unwrap(),
            "error invalid: Patient.gender: bad code (at Patient.gender); warning processing: slow"
        );
        assert_eq!(
            outcome_text(&serde_json::json!({"resourceType": "Patient"})),
            None
        );
    }

    #[test]
    fn queries_are_redacted() {
        assert_eq!(
            redact_query("http://h/fhir/Patient?name=王&_count=10"),
            "http://h/fhir/Patient?name=…&_count=…"
        );
        assert_eq!(
            redact_query("http://h/fhir/metadata"),
            "http://h/fhir/metadata"
        );
    }

    #[test]
    fn retry_after_seconds() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
    }
}
