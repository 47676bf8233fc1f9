//! `fhir_poll`: a source that reads what changed on a FHIR server (FHIR R4 search with
//! `_lastUpdated`), one message per resource.
//!
//! ```yaml
//! source:
//!   fhir_poll:
//!     base: https://his.example.cn/fhir/r4
//!     token: ${HIS_FHIR_TOKEN}          # bearer (optional)
//!     types: [Patient, Observation]
//!     query: "category=laboratory"      # more search parameters (optional, same for each type)
//!     every: 30s
//!     count: 100                        # _count, the page size
//!     since: "2026-01-01T00:00:00+08:00" # where to start when no cursor is stored (default: all)
//!     overlap: 1s                       # look back this far behind the cursor
//! ```
//!
//! Each poll searches every type with `_lastUpdated=gt<cursor − overlap>&_sort=_lastUpdated`
//! and follows the Bundle's `next` links (only on the server's own origin: the token is never
//! sent elsewhere). Each resource of the pages (search mode `match`) is journaled as a message
//! of kind `fhir+json` with the dedup key `fhir:<type>/<id>/_history/<versionId>` (else
//! `meta.lastUpdated`), so a resource seen twice (the overlap, a retried page, a restart) is a
//! resend, not a new message. The cursor (the newest `meta.lastUpdated` journaled) is stored
//! in the engine's store (`source_cursors`, per pipeline and type) only after every page was
//! journaled: a crash or a failed page repeats, never skips. A failed poll is logged and
//! tried again at the next tick.

use std::time::Duration;

use futures::future::BoxFuture;
use huizhen_core::config::duration;
use huizhen_core::extensions::Extensions;
use huizhen_core::message::NewMessage;
use huizhen_core::runner::BuildContext;
use huizhen_core::sources::{Source, SourceConfig, SourceContext};
use huizhen_core::store::Store;
use serde::Deserialize;
use serde_json::Value;

use super::http::{ClientOptions, FhirClient, redact_query};
use crate::convert::step::FHIR_JSON;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FhirPollConfig {
    /// The server's base URL.
    pub base: String,
    /// A bearer token.
    #[serde(default)]
    pub token: Option<String>,
    /// The resource types to read.
    pub types: Vec<String>,
    /// More search parameters, `a=b&c=d`, added to each search.
    #[serde(default)]
    pub query: Option<String>,
    /// Time between polls.
    #[serde(default = "default_every", with = "duration")]
    pub every: Duration,
    /// `_count`: resources per page.
    #[serde(default = "default_count")]
    pub count: u32,
    /// The first cursor when none is stored (a FHIR instant); default: from the beginning.
    #[serde(default)]
    pub since: Option<String>,
    /// How far behind the cursor each search starts (resources updated in the same instant
    /// as the last one seen, committed after the poll, are not missed).
    #[serde(default = "default_overlap", with = "duration")]
    pub overlap: Duration,
    /// Per request.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
}

fn default_every() -> Duration {
    Duration::from_secs(30)
}
fn default_count() -> u32 {
    100
}
fn default_overlap() -> Duration {
    Duration::from_secs(1)
}
pub(super) fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

#[typetag::deserialize(name = "fhir_poll")]
impl SourceConfig for FhirPollConfig {
    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Source>, String> {
        if self.types.is_empty() {
            return Err("types: name at least one resource type (Patient, Observation, …)".into());
        }
        for t in &self.types {
            if t.parse::<fhir_sdk::r4b::resources::ResourceType>().is_err() {
                return Err(format!("types: {t:?} is not a FHIR resource type"));
            }
        }
        if self.every.is_zero() {
            return Err("every: must be more than 0".into());
        }
        if !(1..=1000).contains(&self.count) {
            return Err(format!("count: {} is out of range 1..=1000", self.count));
        }
        if let Some(s) = &self.since
            && chrono::DateTime::parse_from_rfc3339(s).is_err()
        {
            return Err(format!(
                "since: {s:?} is not a FHIR instant (e.g. 2026-01-01T00:00:00+08:00)"
            ));
        }
        if let Some(q) = &self.query
            && (q.contains("_lastUpdated") || q.contains("_count=") || q.starts_with('?'))
        {
            return Err("query: give only other search parameters (`a=b&c=d`); _lastUpdated, _sort and _count are set by the source".into());
        }
        let client = FhirClient::new(ClientOptions {
            base: self.base.clone(),
            token: self.token.clone(),
            timeout: self.timeout,
            retries: 3,
            max_wait: Duration::from_secs(60),
        })?;
        Ok(Box::new(FhirPoll {
            config: self.clone(),
            client,
            extensions: ctx.extensions.clone(),
            pipeline: ctx.pipeline.clone(),
        }))
    }
}

struct FhirPoll {
    config: FhirPollConfig,
    client: FhirClient,
    extensions: Extensions,
    pipeline: String,
}

impl Source for FhirPoll {
    fn describe(&self) -> String {
        format!(
            "fhir_poll {} {}",
            self.client.base(),
            self.config.types.join(",")
        )
    }

    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async move {
            let store = self
                .extensions
                .get::<Store>()
                .ok_or_else(|| "fhir_poll: the engine has no store for the cursor".to_owned())?;
            loop {
                for t in &self.config.types {
                    if ctx.shutdown.is_cancelled() {
                        return Ok(());
                    }
                    match self.poll_type(&ctx, &store, t).await {
                        Ok(n) if n > 0 => {
                            tracing::info!(pipeline = %self.pipeline, resource_type = %t, count = n, "fhir_poll journaled resources")
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(pipeline = %self.pipeline, resource_type = %t, error = %e, "fhir_poll: poll failed; trying again at the next tick")
                        }
                    }
                }
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(self.config.every) => {}
                }
            }
        })
    }
}

impl FhirPoll {
    fn cursor_key(&self, t: &str) -> String {
        format!("fhir_poll:{}:{t}", self.pipeline)
    }

    /// One search of type `t` through all its pages; returns how many resources were journaled.
    async fn poll_type(
        &self,
        ctx: &SourceContext,
        store: &Store,
        t: &str,
    ) -> Result<usize, String> {
        let key = self.cursor_key(t);
        let cursor = match store.source_cursor(&key).await.map_err(|e| e.to_string())? {
            Some(c) => Some(c),
            None => self.config.since.clone(),
        };
        let url = search_url(&self.client, t, cursor.as_deref(), &self.config);
        let mut next = Some(url);
        let mut newest = cursor.clone();
        let mut n = 0;
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > 10_000 {
                return Err(format!("{t}: more than 10,000 pages in one poll; stopped"));
            }
            let bundle = self.client.get(&url).await.map_err(|e| e.to_string())?;
            if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
                return Err(format!(
                    "{}: the answer is not a Bundle",
                    redact_query(&url)
                ));
            }
            for entry in bundle
                .get("entry")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let mode = entry.pointer("/search/mode").and_then(Value::as_str);
                if matches!(mode, Some("include" | "outcome")) {
                    continue;
                }
                let Some(resource) = entry.get("resource") else {
                    continue;
                };
                let Some(m) = self.message(ctx, t, resource) else {
                    continue;
                };
                if let Some(lu) = last_updated(resource)
                    && newest.as_deref().is_none_or(|c| later(lu, c))
                {
                    newest = Some(lu.to_owned());
                }
                ctx.pipeline.submit(m).await.map_err(|e| e.to_string())?;
                n += 1;
            }
            next = next_link(&bundle)
                .map(|l| {
                    if same_origin(self.client.base(), &l) {
                        Ok(l)
                    } else {
                        Err(format!(
                            "{t}: the next link leaves the server ({}); not followed",
                            redact_query(&l)
                        ))
                    }
                })
                .transpose()?;
        }
        if let Some(c) = newest
            && Some(&c) != cursor.as_ref()
        {
            store
                .set_source_cursor(&key, &c)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(n)
    }

    fn message(&self, ctx: &SourceContext, t: &str, resource: &Value) -> Option<NewMessage> {
        let rt = resource.get("resourceType").and_then(Value::as_str)?;
        let id = resource.get("id").and_then(Value::as_str)?;
        let version = resource
            .pointer("/meta/versionId")
            .and_then(Value::as_str)
            .or_else(|| last_updated(resource));
        let body = serde_json::to_vec(resource).ok()?;
        let mut m = NewMessage::new(
            ctx.pipeline.name(),
            ctx.pipeline.facility(),
            FHIR_JSON,
            body,
        );
        m.source = format!("fhir_poll {} {t}", self.client.base());
        m.dedup_key = Some(match version {
            Some(v) => format!("fhir:{rt}/{id}/_history/{v}"),
            None => format!("fhir:{rt}/{id}"),
        });
        m.headers.insert("fhir-resource-type".into(), rt.to_owned());
        m.headers.insert("fhir-id".into(), id.to_owned());
        if let Some(v) = resource.pointer("/meta/versionId").and_then(Value::as_str) {
            m.headers.insert("fhir-version-id".into(), v.to_owned());
        }
        if let Some(lu) = last_updated(resource) {
            m.headers.insert("fhir-last-updated".into(), lu.to_owned());
        }
        Some(m)
    }
}

fn last_updated(resource: &Value) -> Option<&str> {
    resource
        .pointer("/meta/lastUpdated")
        .and_then(Value::as_str)
}

/// Whether instant `a` is after `b` (as instants; as text when either does not parse).
fn later(a: &str, b: &str) -> bool {
    match (
        chrono::DateTime::parse_from_rfc3339(a),
        chrono::DateTime::parse_from_rfc3339(b),
    ) {
        (Ok(x), Ok(y)) => x > y,
        _ => a > b,
    }
}

/// `Type?_lastUpdated=gt<cursor − overlap>&_sort=_lastUpdated&_count=N[&query]`.
fn search_url(client: &FhirClient, t: &str, cursor: Option<&str>, c: &FhirPollConfig) -> String {
    let mut params = Vec::new();
    if let Some(cur) = cursor {
        let since = match chrono::DateTime::parse_from_rfc3339(cur) {
            Ok(d) => {
                let back = chrono::Duration::from_std(c.overlap).unwrap_or_default();
                (d - back).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            }
            Err(_) => cur.to_owned(),
        };
        params.push(format!("_lastUpdated=gt{}", encode(&since)));
    }
    params.push("_sort=_lastUpdated".into());
    params.push(format!("_count={}", c.count));
    if let Some(q) = c.query.as_deref().filter(|q| !q.is_empty()) {
        params.push(q.to_owned());
    }
    client.url(&format!("{t}?{}", params.join("&")))
}

/// Percent-encodes what a query value cannot hold as is (`+` of an offset above all).
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn next_link(bundle: &Value) -> Option<String> {
    bundle
        .get("link")?
        .as_array()?
        .iter()
        .find(|l| l.get("relation").and_then(Value::as_str) == Some("next"))?
        .get("url")?
        .as_str()
        .map(str::to_owned)
}

/// `scheme://host[:port]` of both URLs agree.
fn same_origin(base: &str, url: &str) -> bool {
    fn origin(u: &str) -> Option<&str> {
        let (scheme, rest) = u.split_once("://")?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        Some(&u[..scheme.len() + 3 + end])
    }
    match (origin(base), origin(url)) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> FhirPollConfig {
        serde_json::from_value(
            serde_json::json!({"base": "http://h:8080/fhir", "types": ["Patient"]}),
        )
        .unwrap()
    }

    #[test]
    fn search_urls() {
        let c = config();
        let client = FhirClient::new(ClientOptions {
            base: c.base.clone(),
            token: None,
            timeout: c.timeout,
            retries: 0,
            max_wait: Duration::ZERO,
        })
        .unwrap();
        assert_eq!(
            search_url(&client, "Patient", None, &c),
            "http://h:8080/fhir/Patient?_sort=_lastUpdated&_count=100"
        );
        assert_eq!(
            search_url(&client, "Patient", Some("2026-01-01T08:00:05+08:00"), &c),
            "http://h:8080/fhir/Patient?_lastUpdated=gt2026-01-01T08:00:04%2B08:00&_sort=_lastUpdated&_count=100"
        );
    }

    #[test]
    fn origins() {
        assert!(same_origin(
            "http://h:8080/fhir",
            "http://h:8080/fhir?page=2"
        ));
        assert!(!same_origin(
            "http://h:8080/fhir",
            "http://evil:8080/fhir?page=2"
        ));
        assert!(!same_origin("https://h/fhir", "http://h/fhir"));
    }

    #[test]
    fn instants_compare_as_instants() {
        assert!(later("2026-01-01T01:00:00Z", "2026-01-01T08:30:00+08:00"));
        assert!(!later("2026-01-01T00:00:00Z", "2026-01-01T08:00:00+08:00"));
    }
}
