//! The national medical-insurance platform over HTTP JSON (STANDARDS CN-60 … CN-62), behind the
//! core's `Insurer` port: `billing.insurer: { nhsa: {…} }`.
//!
//! Every request is the CN-61 envelope ([`wire`]: every header field, then `input`) POSTed to
//! one URL; the answer's `infcode` says success (0) or a definite refusal; anything else (a
//! timeout, a lost connection after the request went out, an HTTP error, an answer that does
//! not parse) is an uncertain outcome, which the saga reverses with 2601 rather than retrying.
//! Only a connection that was never made counts as "not sent". Amounts go out as exact decimal
//! text and are read back from the digits (no floating point, [`json`]). Province variants
//! are YAML field maps ([`fields`]).
//!
//! ```yaml
//! insurer:
//!   nhsa:
//!     url: http://10.1.2.3:8080/fsi/api/rsfComIfsService/callService
//!     timeout: 10s
//!     mdtrtarea_admvs: "440100"      # 就医地
//!     recer_sys_code: HZ
//!     infver: V1.0
//!     opter: HZ-BILLING
//!     opter_name: 远程会诊计费
//!     fields: billing/gd.yaml        # optional province field map
//! ```
//!
//! [`invoice`] is the provincial finance platform's e-invoice interface (CN-70,
//! `billing.invoices: { finance-einvoice: {…} }`). With feature `testing`, [`testing`] holds the
//! stand-in platforms (axum services) for tests and the demo.

pub mod fields;
pub mod invoice;
pub mod json;
pub mod wire;

#[cfg(feature = "testing")]
pub mod testing;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use huizhen_core::billing::{Answer, Insurer, InsurerConfig, InsurerContext};
use huizhen_domain::billing::{CallRef, Outcome, Settlement};
use serde::Deserialize;

use crate::fields::FieldMap;
use crate::wire::HeaderConfig;

/// `insurer: { nhsa: {…} }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NhsaConfig {
    /// Where requests are POSTed.
    pub url: String,
    /// How long an answer is waited for (default 10 s); after that the outcome is uncertain.
    #[serde(default = "default_timeout", with = "huizhen_core::config::duration")]
    pub timeout: Duration,
    /// 就医地 region (`mdtrtarea_admvs`, 6 digits).
    pub mdtrtarea_admvs: String,
    /// `recer_sys_code` (default `HZ`).
    #[serde(default = "default_recer")]
    pub recer_sys_code: String,
    /// `infver` (default `V1.0`).
    #[serde(default = "default_infver")]
    pub infver: String,
    /// `signtype` (default `SM3`).
    #[serde(default = "default_signtype")]
    pub signtype: String,
    /// `opter_type` (default `1`, staff).
    #[serde(default = "default_opter_type")]
    pub opter_type: String,
    /// `opter`.
    pub opter: String,
    /// `opter_name`.
    pub opter_name: String,
    /// `dev_no` (default empty).
    #[serde(default)]
    pub dev_no: String,
    /// The province's field map (relative to the root file).
    #[serde(default)]
    pub fields: Option<PathBuf>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_recer() -> String {
    "HZ".into()
}
fn default_infver() -> String {
    "V1.0".into()
}
fn default_signtype() -> String {
    "SM3".into()
}
fn default_opter_type() -> String {
    "1".into()
}

#[typetag::deserialize(name = "nhsa")]
impl InsurerConfig for NhsaConfig {
    fn build(&self, ctx: &InsurerContext) -> Result<Arc<dyn Insurer>, String> {
        let mut problems = Vec::new();
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            problems.push(format!("nhsa.url: {:?} is not an http(s) URL", self.url));
        }
        if self.mdtrtarea_admvs.len() != 6
            || !self.mdtrtarea_admvs.bytes().all(|b| b.is_ascii_digit())
        {
            problems.push(format!(
                "nhsa.mdtrtarea_admvs: {:?} is not a 6-digit region code",
                self.mdtrtarea_admvs
            ));
        }
        for (k, v) in [("opter", &self.opter), ("opter_name", &self.opter_name)] {
            if v.trim().is_empty() {
                problems.push(format!("nhsa.{k}: is blank"));
            }
        }
        let map = match &self.fields {
            Some(f) => {
                let path = match &ctx.base_dir {
                    Some(b) if f.is_relative() => b.join(f),
                    _ => f.clone(),
                };
                match std::fs::read_to_string(&path) {
                    Ok(text) => {
                        FieldMap::parse(&path.display().to_string(), &text).unwrap_or_else(|e| {
                            problems.extend(e);
                            FieldMap::default()
                        })
                    }
                    Err(e) => {
                        problems.push(format!("nhsa.fields: cannot read {}: {e}", path.display()));
                        FieldMap::default()
                    }
                }
            }
            None => FieldMap::default(),
        };
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        Ok(Arc::new(NhsaClient::new(self, ctx, map)?))
    }
}

/// The HTTP client.
pub struct NhsaClient {
    url: String,
    header: HeaderConfig,
    map: FieldMap,
    http: reqwest::Client,
}

impl NhsaClient {
    /// A client for `cfg` in `ctx` with a province field map.
    pub fn new(
        cfg: &NhsaConfig,
        ctx: &InsurerContext,
        map: FieldMap,
    ) -> Result<NhsaClient, String> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| format!("nhsa: HTTP client: {e}"))?;
        Ok(NhsaClient {
            url: cfg.url.clone(),
            header: HeaderConfig {
                mdtrtarea_admvs: cfg.mdtrtarea_admvs.clone(),
                recer_sys_code: cfg.recer_sys_code.clone(),
                infver: cfg.infver.clone(),
                signtype: cfg.signtype.clone(),
                opter_type: cfg.opter_type.clone(),
                opter: cfg.opter.clone(),
                opter_name: cfg.opter_name.clone(),
                dev_no: cfg.dev_no.clone(),
                fixmedins_code: ctx.institution.clone(),
                fixmedins_name: ctx.institution_name.clone(),
                offset: ctx.offset,
            },
            map,
            http,
        })
    }
}

impl Insurer for NhsaClient {
    fn name(&self) -> &str {
        "nhsa"
    }

    fn request(
        &self,
        settlement: &Settlement,
        call: &CallRef,
        now: DateTime<Utc>,
    ) -> Result<String, String> {
        wire::request(&self.header, &self.map, settlement, call, now)
    }

    fn send<'a>(&'a self, call: &'a CallRef, request: &'a str) -> BoxFuture<'a, Answer> {
        Box::pin(async move {
            let sent = self
                .http
                .post(&self.url)
                .header("content-type", "application/json; charset=utf-8")
                .body(request.to_owned())
                .send()
                .await;
            let response = match sent {
                Ok(r) => r,
                Err(e) if e.is_connect() => {
                    return Answer {
                        outcome: Outcome::NotSent {
                            why: format!("cannot connect to the platform: {e}"),
                        },
                        response: None,
                    };
                }
                Err(e) => {
                    let why = if e.is_timeout() {
                        "no answer before the timeout".to_owned()
                    } else {
                        format!("the exchange broke off: {e}")
                    };
                    return Answer {
                        outcome: Outcome::Uncertain { why },
                        response: None,
                    };
                }
            };
            let status = response.status();
            let body = match response.text().await {
                Ok(b) => b,
                Err(e) => {
                    return Answer {
                        outcome: Outcome::Uncertain {
                            why: format!("the answer was cut off: {e}"),
                        },
                        response: None,
                    };
                }
            };
            if !status.is_success() {
                return Answer {
                    outcome: Outcome::Uncertain {
                        why: format!("HTTP {status} from the platform"),
                    },
                    response: Some(body),
                };
            }
            Answer {
                outcome: wire::outcome(&self.map, call.txn, &body),
                response: Some(body),
            }
        })
    }
}
