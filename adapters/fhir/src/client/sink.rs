//! `fhir`: a sink that writes a message's FHIR JSON to a FHIR R4 server.
//!
//! ```yaml
//! sinks:
//!   - fhir:
//!       base: https://platform.example.cn/fhir/r4
//!       token: ${PLATFORM_FHIR_TOKEN}   # bearer (optional)
//!       timeout: 30s
//!       retries: 3                      # 429/503 waited out per delivery (Retry-After)
//!       max_wait: 60s                   # the longest Retry-After waited
//! ```
//!
//! What the body is decides the interaction (kind `fhir+json` or `json`):
//!
//! * a Bundle of type `transaction` or `batch` → `POST base` (a batch whose entries failed is
//!   an error naming them);
//! * a resource with an `id` → update, `PUT base/Type/id`;
//! * a resource without one → conditional create, `POST base/Type` with `If-None-Exist`: its
//!   first identifier (`identifier=system|value`), or, when it has none, a `meta.tag`
//!   `urn:huizhen:message|<message id>` added to it (`_tag=…`).
//!
//! So every interaction is idempotent (FHIR-20): a retried or replayed message creates
//! nothing twice (the Bundles of `hl7v2_to_fhir` are conditional entry by entry). An error
//! names the request and carries the server's OperationOutcome issues; 408, 429, 5xx and
//! transport errors are retried (the pipeline's `retry:`), 4xx are permanent (dead letter,
//! reprocess once fixed).

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use huizhen_core::config::duration;
use huizhen_core::runner::BuildContext;
use huizhen_core::sinks::{Sink, SinkConfig};
use huizhen_core::store::Effect;
use huizhen_core::work::{StepError, Work};
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use super::http::{Answer, ClientError, ClientOptions, FhirClient};
use super::source::default_timeout;
use crate::convert::bundle::identifier_query;
use crate::convert::step::FHIR_JSON;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FhirSinkConfig {
    pub base: String,
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "default_max_wait", with = "duration")]
    pub max_wait: Duration,
}

fn default_retries() -> u32 {
    3
}
fn default_max_wait() -> Duration {
    Duration::from_secs(60)
}

/// The tag that makes a resource without identifier conditionally creatable.
pub const MESSAGE_TAG: &str = "urn:huizhen:message";

#[typetag::deserialize(name = "fhir")]
impl SinkConfig for FhirSinkConfig {
    fn build(&self, _ctx: &BuildContext, index: usize) -> Result<Arc<dyn Sink>, String> {
        let client = FhirClient::new(ClientOptions {
            base: self.base.clone(),
            token: self.token.clone(),
            timeout: self.timeout,
            retries: self.retries,
            max_wait: self.max_wait,
        })?;
        Ok(Arc::new(FhirSink {
            name: format!("fhir#{index}"),
            client,
        }))
    }
}

struct FhirSink {
    name: String,
    client: FhirClient,
}

impl Sink for FhirSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Vec<Effect>, StepError>> {
        Box::pin(async move {
            if work.kind != FHIR_JSON && work.kind != "json" {
                return Err(StepError::permanent(format!(
                    "message {}: {}: the body is {}, not FHIR JSON (convert it first, e.g. hl7v2_to_fhir)",
                    work.id, self.name, work.kind
                )));
            }
            let id = work.id.to_string();
            let body = work.json()?.clone();
            write(&self.client, &id, body).await.map_err(|e| {
                let m = format!("message {id}: {}: {}", self.name, e.message);
                if e.retryable {
                    StepError::new(m)
                } else {
                    StepError::permanent(m)
                }
            })?;
            Ok(Vec::new())
        })
    }
}

/// Writes one FHIR body (a transaction/batch Bundle or a resource) as the module says, with
/// `message_id` as the request id (and the tag of a resource without identifier).
pub async fn write(
    client: &FhirClient,
    message_id: &str,
    mut body: Value,
) -> Result<Answer, ClientError> {
    let bad = |m: String| ClientError {
        status: None,
        message: m,
        retryable: false,
    };
    let rt = body
        .get("resourceType")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("the body has no resourceType: not a FHIR resource".into()))?
        .to_owned();
    if rt
        .parse::<fhir_sdk::r4b::resources::ResourceType>()
        .is_err()
    {
        return Err(bad(format!(
            "resourceType {rt:?} is not a FHIR resource type"
        )));
    }
    let headers = [("x-request-id", message_id)];
    if rt == "Bundle" {
        let t = body.get("type").and_then(Value::as_str).unwrap_or_default();
        if t != "transaction" && t != "batch" {
            return Err(bad(format!(
                "a Bundle of type {t:?}: only transaction and batch Bundles are sent"
            )));
        }
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let answer = client
            .send(Method::POST, client.base(), Some(&bytes), &headers)
            .await?;
        check_entries(&answer.body)?;
        return Ok(answer);
    }
    if let Some(id) = body.get("id").and_then(Value::as_str).map(str::to_owned) {
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let url = client.url(&format!("{rt}/{id}"));
        return client.send(Method::PUT, &url, Some(&bytes), &headers).await;
    }
    let condition = match first_identifier(&body) {
        Some(q) => q,
        None => {
            tag(&mut body, message_id);
            format!("_tag={MESSAGE_TAG}|{message_id}")
        }
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let url = client.url(&rt);
    client
        .send(
            Method::POST,
            &url,
            Some(&bytes),
            &[("x-request-id", message_id), ("if-none-exist", &condition)],
        )
        .await
}

/// `identifier=system|value` of the first identifier with a value.
fn first_identifier(resource: &Value) -> Option<String> {
    let ids = resource.get("identifier")?.as_array()?;
    let id = ids
        .iter()
        .find(|i| i.get("value").and_then(Value::as_str).is_some())?;
    let model: fhir_sdk::r4b::types::Identifier = serde_json::from_value(id.clone()).ok()?;
    Some(identifier_query(&model))
}

fn tag(resource: &mut Value, message_id: &str) {
    let Some(obj) = resource.as_object_mut() else {
        return;
    };
    let meta = obj
        .entry("meta")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    let tags = meta
        .entry("tag")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Some(tags) = tags.as_array_mut() {
        tags.push(serde_json::json!({"system": MESSAGE_TAG, "code": message_id}));
    }
}

/// A batch-response (or a transaction-response that says so) with failed entries is an
/// error naming each with its status and OperationOutcome.
fn check_entries(answer: &Value) -> Result<(), ClientError> {
    let Some(entries) = answer.get("entry").and_then(Value::as_array) else {
        return Ok(());
    };
    let mut failed = Vec::new();
    let mut retryable = false;
    for (i, e) in entries.iter().enumerate() {
        let status = e
            .pointer("/response/status")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let code: u16 = status
            .split_whitespace()
            .next()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if (200..300).contains(&code) {
            continue;
        }
        retryable |= code == 0 || code == 408 || code == 429 || code >= 500;
        let mut line = format!("entry[{i}]: {status}");
        if let Some(o) = e
            .pointer("/response/outcome")
            .and_then(super::http::outcome_text)
        {
            line.push_str(": ");
            line.push_str(&o);
        }
        failed.push(line);
    }
    if failed.is_empty() {
        return Ok(());
    }
    Err(ClientError {
        status: None,
        message: format!("POST (batch): {}", failed.join("; ")),
        retryable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions() {
        let p = serde_json::json!({"resourceType": "Patient", "identifier": [{"system": "urn:x"}, {"system": "urn:huizhen:id:HIS", "value": "A 1"}]});
        assert_eq!(
            first_identifier(&p).as_deref(),
            Some("identifier=urn:huizhen:id:HIS|A%201")
        );
        let mut q = serde_json::json!({"resourceType": "Observation"});
        assert_eq!(first_identifier(&q), None);
        tag(&mut q, "m1");
        assert_eq!(q["meta"]["tag"][0]["code"], "m1");
    }

    #[test]
    fn failed_batch_entries_are_named() {
        let a = serde_json::json!({"resourceType": "Bundle", "type": "batch-response", "entry": [
            {"response": {"status": "201 Created"}},
            {"response": {"status": "412 Precondition Failed", "outcome": {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "duplicate", "diagnostics": "2 matches"}]}}}
        ]});
        let e = check_entries(&a).unwrap_err();
        assert_eq!(
            e.message,
            "POST (batch): entry[1]: 412 Precondition Failed: error duplicate: 2 matches"
        );
        assert!(!e.retryable);
    }
}
