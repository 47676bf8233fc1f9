//! OpenTelemetry traces of a message's life, exported over OTLP/HTTP (protobuf) to a collector;
//! off by default (docs/metrics.md, "Traces").
//!
//! One message is one trace: the source's intake (the journal append) is its first span, each
//! attempt at processing it a `process` span below that, and each step and each sink delivery a
//! span inside the attempt (`spans.rs`). The ids are derived from what the journal keeps
//! (`ids.rs`), so the spans of one message share a trace in every process of a cluster and
//! after a restart; a message that came with a W3C `traceparent` joins the sender's trace, its
//! intake a child of the sender's span. Spans carry ids and names only (message id, pipeline,
//! facility, source type, step label, sink name, attempt, outcome): never a body, a header
//! value or an error text, which may quote patient data.
//!
//! Off (no `telemetry.otlp_endpoint` and no `OTEL_EXPORTER_OTLP_*ENDPOINT` in the environment),
//! nothing here runs: no exporter, no span processor thread, and the runner skips every span on
//! one `Option` test, allocating nothing. On, the SDK's batch processor exports from a thread
//! of its own through `export.rs` (reqwest on the core's rustls, ring only).

mod export;
pub mod ids;
mod spans;

use std::time::Duration;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SpanProcessor as _};
use serde::Deserialize;

pub use ids::TraceParent;
pub use spans::Tracer;
pub(crate) use spans::{Intake, Run};

/// `telemetry:` of the root file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The OTLP/HTTP collector's base URL, e.g. `http://otel-collector:4318`: spans are POSTed
    /// as protobuf to `{otlp_endpoint}/v1/traces`. None (the default): traces are off, unless
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL) or `OTEL_EXPORTER_OTLP_ENDPOINT` (a
    /// base URL) is set.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// The spans' `service.name` (default: `OTEL_SERVICE_NAME`, else `huizhen`).
    #[serde(default)]
    pub service_name: Option<String>,
    /// The share of messages traced, 0.0 to 1.0 (default 1.0). Decided by trace id, so every
    /// node keeps or drops the same message's spans.
    #[serde(default = "default_sampling_ratio")]
    pub sampling_ratio: f64,
    /// How long one export may take (default 10s).
    #[serde(default = "default_timeout", with = "crate::config::duration")]
    pub timeout: Duration,
    /// An `https://` collector with a private CA or mutual TLS (`ca`, `cert`, `key`; default:
    /// the public roots).
    #[serde(default)]
    pub tls: Option<crate::tls::ClientTlsConfig>,
}

fn default_sampling_ratio() -> f64 {
    1.0
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            service_name: None,
            sampling_ratio: default_sampling_ratio(),
            timeout: default_timeout(),
            tls: None,
        }
    }
}

/// What the exporter runs with: the config with the `OTEL_*` environment filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The URL spans are POSTed to (`…/v1/traces`).
    pub url: String,
    pub service_name: String,
    pub sampling_ratio: f64,
}

const TRACES_PATH: &str = "/v1/traces";

impl TelemetryConfig {
    /// Settings from this block and the environment (`env` reads a variable): `None` when
    /// traces are off. The file's keys win over the environment; `OTEL_SDK_DISABLED=true`
    /// turns traces off whatever the file says.
    pub fn settings(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Settings>, String> {
        let set = |k: &str| {
            env(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        if let Some(first) = self.problems().into_iter().next() {
            return Err(first);
        }
        let url = match self.otlp_endpoint.as_deref().map(str::trim) {
            Some(base) if !base.is_empty() => traces_url(base),
            _ => match set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
                Some(full) => full,
                None => match set("OTEL_EXPORTER_OTLP_ENDPOINT") {
                    Some(base) => traces_url(&base),
                    None => return Ok(None),
                },
            },
        };
        check_url(&url).map_err(|e| format!("telemetry: the collector's URL {url:?}: {e}"))?;
        let service_name = self
            .service_name
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .or_else(|| set("OTEL_SERVICE_NAME"))
            .unwrap_or_else(|| "huizhen".into());
        Ok(Some(Settings {
            url,
            service_name,
            sampling_ratio: self.sampling_ratio,
        }))
    }

    /// Every problem of the block alone (for `huizhen validate`), without the environment.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            problems.push(format!(
                "telemetry.sampling_ratio: {} is not between 0.0 and 1.0",
                self.sampling_ratio
            ));
        }
        if self.timeout.is_zero() {
            problems.push("telemetry.timeout: must be more than 0".into());
        }
        if let Some(base) = self.otlp_endpoint.as_deref().map(str::trim)
            && !base.is_empty()
        {
            if let Err(e) = check_url(base) {
                problems.push(format!("telemetry.otlp_endpoint: {base:?}: {e}"));
            } else if self.tls.is_some() && !base.starts_with("https://") {
                problems.push(format!(
                    "telemetry.tls: the otlp_endpoint {base:?} is http://; use https:// with tls"
                ));
            }
        }
        problems
    }
}

/// `base` + `/v1/traces` (a base that already ends so is taken as it is).
fn traces_url(base: &str) -> String {
    let base = base.trim().trim_end_matches('/');
    if base.ends_with(TRACES_PATH) {
        base.to_owned()
    } else {
        format!("{base}{TRACES_PATH}")
    }
}

fn check_url(url: &str) -> Result<(), String> {
    let u = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err("use http:// or https://".into());
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    Ok(())
}

/// The running exporter: the SDK's batch span processor (a thread of its own) and its OTLP
/// exporter, behind the engine's tracer. [`Telemetry::shutdown`] sends what is still buffered.
pub struct Telemetry {
    tracer: Tracer,
    settings: Settings,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("url", &crate::store::redact_url(&self.settings.url))
            .field("service_name", &self.settings.service_name)
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Starts the exporter when traces are on (the block, then the process's `OTEL_*`
    /// environment); `Ok(None)` when they are off, with nothing started. Call it inside the
    /// engine's tokio runtime: exports run on it.
    pub fn start(cfg: &TelemetryConfig) -> Result<Option<Telemetry>, String> {
        Telemetry::start_with_env(cfg, |k| std::env::var(k).ok())
    }

    /// [`Telemetry::start`] with the environment read through `env`.
    pub fn start_with_env(
        cfg: &TelemetryConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Telemetry>, String> {
        let Some(settings) = cfg.settings(env)? else {
            return Ok(None);
        };
        let exporter = export::exporter(&settings, cfg)?;
        // `OTEL_BSP_*` (delay, batch and queue sizes) are read by the SDK here.
        let mut processor = BatchSpanProcessor::builder(exporter).build();
        processor.set_resource(
            &Resource::builder()
                .with_service_name(settings.service_name.clone())
                .build(),
        );
        let tracer = Tracer::new(processor, settings.sampling_ratio);
        tracing::info!(
            url = %crate::store::redact_url(&settings.url),
            service_name = %settings.service_name,
            sampling_ratio = settings.sampling_ratio,
            "traces are exported over OTLP/HTTP"
        );
        Ok(Some(Telemetry { tracer, settings }))
    }

    /// The tracer the runner makes spans with.
    pub fn tracer(&self) -> Tracer {
        self.tracer.clone()
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Sends the spans still buffered (waiting at most `grace`) and stops the exporter.
    pub async fn shutdown(self, grace: Duration) {
        let tracer = self.tracer;
        // The SDK's shutdown blocks until its processor thread has exported; the export itself
        // runs on this runtime, so the wait must not hold one of its workers.
        let done = tokio::task::spawn_blocking(move || tracer.shutdown(grace));
        match tokio::time::timeout(grace + Duration::from_secs(1), done).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "traces: the last spans were not all sent")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "traces: the exporter's shutdown failed"),
            Err(_) => tracing::warn!("traces: the exporter did not stop within {grace:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    fn with_endpoint(url: &str) -> TelemetryConfig {
        TelemetryConfig {
            otlp_endpoint: Some(url.into()),
            ..TelemetryConfig::default()
        }
    }

    #[test]
    fn off_by_default_no_exporter_is_made() {
        let made = || export::MADE.with(std::cell::Cell::get);
        // No block, no environment: nothing starts (no runtime is needed to find that out).
        let t = Telemetry::start_with_env(&TelemetryConfig::default(), env(&[])).unwrap();
        assert!(t.is_none());
        // The other OTEL_ variables alone do not turn traces on.
        let t = Telemetry::start_with_env(
            &TelemetryConfig::default(),
            env(&[
                ("OTEL_SERVICE_NAME", "his-gw"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", " "),
            ]),
        )
        .unwrap();
        assert!(t.is_none());
        // OTEL_SDK_DISABLED wins over an endpoint.
        let t = Telemetry::start_with_env(
            &with_endpoint("http://127.0.0.1:4318"),
            env(&[("OTEL_SDK_DISABLED", "TRUE")]),
        )
        .unwrap();
        assert!(t.is_none());
        assert_eq!(made(), 0, "no exporter was made");
    }

    fn check(cfg: &TelemetryConfig, vars: &[(&str, &str)], expected: Option<(&str, &str)>) {
        let got = cfg.settings(env(vars)).unwrap();
        assert_eq!(
            got.as_ref()
                .map(|s| (s.url.as_str(), s.service_name.as_str())),
            expected
        );
    }

    #[test]
    fn endpoint_and_service_name_from_the_file_then_the_environment() {
        let none = TelemetryConfig::default();
        check(
            &with_endpoint("http://otel:4318"),
            &[],
            Some(("http://otel:4318/v1/traces", "huizhen")),
        );
        check(
            &with_endpoint("https://otel.example.cn/otlp/"),
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:4318")],
            Some(("https://otel.example.cn/otlp/v1/traces", "huizhen")),
        );
        check(
            &with_endpoint("http://otel:4318/v1/traces"),
            &[],
            Some(("http://otel:4318/v1/traces", "huizhen")),
        );
        check(
            &none,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318"),
                ("OTEL_SERVICE_NAME", "huizhen-n2"),
            ],
            Some(("http://otel:4318/v1/traces", "huizhen-n2")),
        );
        // The per-signal variable is the full URL, and comes before the general one.
        check(
            &none,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://traces:9000/in",
                ),
            ],
            Some(("http://traces:9000/in", "huizhen")),
        );
        let named = TelemetryConfig {
            service_name: Some("his-gateway".into()),
            ..with_endpoint("http://otel:4318")
        };
        check(
            &named,
            &[("OTEL_SERVICE_NAME", "ignored")],
            Some(("http://otel:4318/v1/traces", "his-gateway")),
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        let bad = |cfg: TelemetryConfig, vars: &[(&str, &str)], expected: &str| {
            let e = cfg.settings(env(vars)).unwrap_err();
            assert!(e.contains(expected), "{e}");
        };
        bad(
            TelemetryConfig {
                sampling_ratio: 1.5,
                ..TelemetryConfig::default()
            },
            &[],
            "telemetry.sampling_ratio: 1.5 is not between 0.0 and 1.0",
        );
        bad(with_endpoint("otel:4318"), &[], "telemetry.otlp_endpoint");
        bad(with_endpoint("ftp://otel"), &[], "use http:// or https://");
        bad(
            TelemetryConfig::default(),
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url")],
            "the collector's URL",
        );
        bad(
            TelemetryConfig {
                tls: Some(crate::tls::ClientTlsConfig::default()),
                ..with_endpoint("http://otel:4318")
            },
            &[],
            "use https:// with tls",
        );
    }

    #[tokio::test]
    async fn on_with_an_endpoint() {
        let t = Telemetry::start_with_env(&with_endpoint("http://127.0.0.1:9/"), env(&[]))
            .unwrap()
            .expect("traces on");
        assert_eq!(export::MADE.with(std::cell::Cell::get), 1);
        assert_eq!(t.settings().url, "http://127.0.0.1:9/v1/traces");
        t.shutdown(Duration::from_millis(200)).await;
    }
}
