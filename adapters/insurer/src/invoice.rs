//! The provincial finance platform's 医疗收费电子票据 interface (STANDARDS CN-70), HTTP JSON,
//! behind the core's `InvoicePlatform` port: `billing.invoices: { finance-einvoice: {…} }`.
//!
//! Request: `agencyCode` (单位编码), `busNo` (the business number the platform keys on: asking
//! again gets the same invoice), `busType` (`invoice` or `red`), `placeCode`, `payer`,
//! `totalAmt` (exact decimal), `billDate`, `items` (national code, name, quantity, amount) and,
//! for a 冲红, `original` (`billBatchCode`, `billNo`). Answer: `result` (`S0000`: issued),
//! `message`, `billBatchCode` (票据代码), `billNo` (票据号码), `random` (校验码),
//! `billIssueDate`. Whatever else comes back (a timeout, an error, a malformed answer) is an
//! error: nothing is recorded and the runner asks again under the same `busNo`.
//!
//! ```yaml
//! invoices:
//!   finance-einvoice:
//!     url: http://10.1.2.4:8080/einvoice/issue
//!     timeout: 10s
//!     agency_code: "450103"
//!     place_code: "001"
//! ```

use std::sync::Arc;
use std::time::Duration;

use chrono::{FixedOffset, NaiveDateTime, Utc};
use futures::future::BoxFuture;
use huizhen_core::billing::{
    InsurerContext, InvoicePlatform, InvoicePlatformConfig, InvoiceRequest, IssuedInvoice,
};
use huizhen_core::store::billing::InvoiceKind;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::json::{AmountStyle, J, at, text};

/// `invoices: { finance-einvoice: {…} }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinanceConfig {
    /// Where requests are POSTed.
    pub url: String,
    /// How long an answer is waited for (default 10 s).
    #[serde(default = "default_timeout", with = "huizhen_core::config::duration")]
    pub timeout: Duration,
    /// 单位编码 of the institution at the finance platform.
    pub agency_code: String,
    /// 开票点编码 (default `001`).
    #[serde(default = "default_place")]
    pub place_code: String,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_place() -> String {
    "001".into()
}

#[typetag::deserialize(name = "finance-einvoice")]
impl InvoicePlatformConfig for FinanceConfig {
    fn build(&self, ctx: &InsurerContext) -> Result<Arc<dyn InvoicePlatform>, String> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(format!(
                "finance-einvoice.url: {:?} is not an http(s) URL",
                self.url
            ));
        }
        if self.agency_code.trim().is_empty() {
            return Err("finance-einvoice.agency_code: is blank".into());
        }
        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .build()
            .map_err(|e| format!("finance-einvoice: HTTP client: {e}"))?;
        Ok(Arc::new(FinanceClient {
            url: self.url.clone(),
            agency_code: self.agency_code.clone(),
            place_code: self.place_code.clone(),
            offset: ctx.offset,
            http,
        }))
    }
}

/// The client.
pub struct FinanceClient {
    url: String,
    agency_code: String,
    place_code: String,
    offset: FixedOffset,
    http: reqwest::Client,
}

impl FinanceClient {
    /// The request body.
    pub fn body(&self, req: &InvoiceRequest) -> String {
        let money = |f| AmountStyle::Number.amount(f);
        let items = req
            .settlement
            .bill
            .lines
            .iter()
            .map(|l| {
                let sign = if req.kind == InvoiceKind::Red { -1 } else { 1 };
                J::obj([
                    ("code", J::s(&l.codes.national)),
                    ("localCode", J::s(&l.codes.local)),
                    ("name", J::s(&l.name)),
                    ("qty", J::int(l.quantity)),
                    (
                        "amt",
                        money(huizhen_domain::billing::Fen(
                            l.amount.0.saturating_mul(sign),
                        )),
                    ),
                ])
            })
            .collect();
        let mut pairs = vec![
            ("agencyCode", J::s(&self.agency_code)),
            ("placeCode", J::s(&self.place_code)),
            ("busNo", J::s(&req.business_no)),
            ("busType", J::s(req.kind.code())),
            (
                "payer",
                J::s(req.settlement.bill.billable.patient.to_string()),
            ),
            ("totalAmt", money(req.amount)),
            (
                "billDate",
                J::s(
                    Utc::now()
                        .with_timezone(&self.offset)
                        .format("%Y-%m-%d %H:%M:%S")
                        .to_string(),
                ),
            ),
            ("items", J::Arr(items)),
        ];
        if let Some((code, number)) = &req.original {
            pairs.push((
                "original",
                J::obj([("billBatchCode", J::s(code)), ("billNo", J::s(number))]),
            ));
        }
        J::Obj(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()).text()
    }

    fn read(&self, body: &str) -> Result<IssuedInvoice, String> {
        let root: Box<RawValue> =
            serde_json::from_str(body).map_err(|_| "the answer is not JSON".to_owned())?;
        let field = |k: &str| at(&root, &[k]).and_then(text);
        let result = field("result").unwrap_or_default();
        if result != "S0000" {
            return Err(format!(
                "not issued: {result} {}",
                field("message").unwrap_or_default()
            ));
        }
        let need = |k: &str| {
            field(k)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| format!("the answer has no {k}"))
        };
        let issued_at = field("billIssueDate")
            .and_then(|d| NaiveDateTime::parse_from_str(&d, "%Y-%m-%d %H:%M:%S").ok())
            .and_then(|d| d.and_local_timezone(self.offset).single())
            .map_or_else(|| Utc::now().timestamp_millis(), |d| d.timestamp_millis());
        Ok(IssuedInvoice {
            bill_code: need("billBatchCode")?,
            bill_number: need("billNo")?,
            check_code: need("random")?,
            issued_at,
            raw: body.to_owned(),
        })
    }
}

impl InvoicePlatform for FinanceClient {
    fn name(&self) -> &str {
        "finance-einvoice"
    }

    fn issue<'a>(
        &'a self,
        req: &'a InvoiceRequest,
    ) -> BoxFuture<'a, Result<IssuedInvoice, String>> {
        Box::pin(async move {
            let response = self
                .http
                .post(&self.url)
                .header("content-type", "application/json; charset=utf-8")
                .body(self.body(req))
                .send()
                .await
                .map_err(|e| format!("the finance platform did not answer: {e}"))?;
            let status = response.status();
            let body = response
                .text()
                .await
                .map_err(|e| format!("the answer was cut off: {e}"))?;
            if !status.is_success() {
                return Err(format!("HTTP {status} from the finance platform"));
            }
            self.read(&body)
        })
    }
}
