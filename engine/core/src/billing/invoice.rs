//! E-invoices (STANDARDS CN-70): the provincial finance platform issues the 医疗收费电子票据
//! (票据代码, 票据号码, 校验码) for a settlement, and a 冲红 (red-letter reversal) for a refund;
//! the engine stores what was issued, linked to the settlement, and never invents a number.
//!
//! The platform is a port ([`InvoicePlatform`], registered like the insurer: `billing.invoices:
//! { <type>: {…} }`). Each request carries a business number made from the settlement
//! (`<settlement>-invoice`, `<settlement>-red`) that the platform keys on, so asking again after
//! a crash or a lost answer gets the same invoice; the store keeps one invoice and one 冲红 per
//! settlement whatever the concurrency. After a settlement rests settled (or cancelled), the
//! runner asks; the resume loop asks again for any still missing.

use std::sync::Arc;

use futures::future::BoxFuture;
use huizhen_domain::billing::{Fen, Phase, Settlement};

use super::insurer::InsurerContext;
use super::{Billing, BillingError};
use crate::store::billing::{InvoiceKind, NewInvoice};

/// What the finance platform is asked for.
#[derive(Debug, Clone)]
pub struct InvoiceRequest {
    /// The business number the platform keys on (`<settlement>-invoice`, `<settlement>-red`).
    pub business_no: String,
    /// Invoice or 冲红.
    pub kind: InvoiceKind,
    /// The settlement.
    pub settlement: Settlement,
    /// The invoiced amount (the settlement's total; negative for a 冲红).
    pub amount: Fen,
    /// For a 冲红: the invoice's 票据代码 and 票据号码.
    pub original: Option<(String, String)>,
}

/// What the platform issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedInvoice {
    /// 票据代码.
    pub bill_code: String,
    /// 票据号码.
    pub bill_number: String,
    /// 校验码.
    pub check_code: String,
    /// When issued (ms).
    pub issued_at: i64,
    /// The platform's answer as received.
    pub raw: String,
}

/// The finance platform.
pub trait InvoicePlatform: Send + Sync {
    /// Its name in logs.
    fn name(&self) -> &str;

    /// Issues (or finds, for a business number seen before) the invoice. `Err` with why when
    /// nothing was issued or the answer cannot be trusted: the runner asks again later.
    fn issue<'a>(&'a self, req: &'a InvoiceRequest)
    -> BoxFuture<'a, Result<IssuedInvoice, String>>;
}

/// The YAML side: `invoices: { <type>: {…} }` in `billing:`.
#[typetag::deserialize]
pub trait InvoicePlatformConfig: std::fmt::Debug + Send + Sync {
    /// Builds the adapter (no network I/O).
    fn build(&self, ctx: &InsurerContext) -> Result<Arc<dyn InvoicePlatform>, String>;
}

impl Billing {
    /// Issues what a resting settlement is owed: its invoice once settled, the 冲红 once
    /// cancelled after an invoice. Nothing when it is owed nothing or no platform is set.
    pub async fn invoice(&self, s: &Settlement) -> Result<(), BillingError> {
        let Some(platform) = self.settings().invoices.clone() else {
            return Ok(());
        };
        let have = self.store().invoices(&s.id).await?;
        let original = have.iter().find(|i| i.kind == InvoiceKind::Invoice);
        let red = have.iter().any(|i| i.kind == InvoiceKind::Red);
        let total = s.settled.as_ref().map_or(Fen::ZERO, |x| x.amounts.total);
        let (kind, amount, original) = match (s.phase(), original, red) {
            (Phase::Settled, None, _) => (InvoiceKind::Invoice, total, None),
            (Phase::Cancelled, Some(o), false) => (
                InvoiceKind::Red,
                total.negate().unwrap_or(Fen::ZERO),
                Some((o.bill_code.clone(), o.bill_number.clone())),
            ),
            _ => return Ok(()),
        };
        let req = InvoiceRequest {
            business_no: format!("{}-{}", s.id, kind.code()),
            kind,
            settlement: s.clone(),
            amount,
            original,
        };
        let issued = platform
            .issue(&req)
            .await
            .map_err(|reason| BillingError::Request {
                insurer: platform.name().to_owned(),
                reason,
            })?;
        let stored = self
            .store()
            .record_invoice(&NewInvoice {
                id: crate::message::new_id(),
                settlement_id: s.id.clone(),
                kind,
                bill_code: issued.bill_code,
                bill_number: issued.bill_number,
                check_code: issued.check_code,
                amount,
                issued_at: issued.issued_at,
                body: issued.raw,
            })
            .await?;
        tracing::info!(settlement = %s.id, kind = kind.code(), bill_number = %stored.bill_number, "e-invoice recorded");
        Ok(())
    }

    /// Issues what every resting settlement is still owed (after a restart or a platform
    /// that was down). Returns how many were issued.
    pub(super) async fn invoice_missing(&self) -> usize {
        if self.settings().invoices.is_none() {
            return 0;
        }
        let ids = match self.store().settlements_owed_invoices(100).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list settlements owed invoices");
                return 0;
            }
        };
        let mut n = 0;
        for id in ids {
            let s = match self.store().settlement(&id).await {
                Ok(Some(s)) => s.settlement,
                _ => continue,
            };
            match self.invoice(&s).await {
                Ok(()) => n += 1,
                Err(e) => {
                    tracing::warn!(settlement = %id, error = %e, "e-invoice not issued; asked again later")
                }
            }
        }
        n
    }
}
