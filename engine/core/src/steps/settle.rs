//! `settle`: opens the settlement of a completed consultation when its `consultation.completed`
//! event passes (issue 19; the event the workflow outbox relays to
//! `workflow.consultations.outbound_pipeline`). Other messages pass untouched.
//!
//! The person is identified to the insurance platform by the patient identifier whose type
//! code is `voucher_identifier` (default `NI`: the national identity number, sent as
//! certificate type `02`, CN-60): in the event's patient identifiers, else among the national
//! numbers of the consultation's HIS order (`his_order.national_identifiers`: an HL7 order's
//! `PID-3` national numbers, which the result going back leaves out); without one the
//! settlement is self-pay and waits for the patient's confirmation. Opening is idempotent (a consultation has one live settlement,
//! however often the event is delivered); the saga then runs in the background, so a slow or
//! unreachable platform never holds up the pipeline (the ORU still goes out), and the resume
//! loop takes over after a restart. A consultation that cannot be billed (no fee schedule, a
//! title not priced) is logged and marked on the message (`settlement-error`), never a dead
//! letter: billing blocks settlement, not the clinical flow (CN-51).
//!
//! ```yaml
//! steps:
//!   - settle: { voucher_identifier: NI }
//!   - hl7_build: { message: ORU^R01 }
//! ```
//!
//! Headers set: `settlement-id`, `settlement-phase` (or `settlement-error`).

use std::sync::Arc;

use futures::future::BoxFuture;
use huizhen_domain::billing::{Kind, Voucher};
use serde::Deserialize;

use super::{Step, StepConfig};
use crate::billing::{Billing, BillingError};
use crate::extensions::Extensions;
use crate::runner::BuildContext;
use crate::store::audit::AuditEvent;
use crate::work::{Flow, StepError, Work};

/// `- settle: {…}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettleConfig {
    /// The type code (CX.5) of the patient identifier that is the person's identity number
    /// (default `NI`).
    #[serde(default = "default_identifier")]
    pub voucher_identifier: String,
}

fn default_identifier() -> String {
    "NI".into()
}

#[typetag::deserialize(name = "settle")]
impl StepConfig for SettleConfig {
    fn type_name(&self) -> &'static str {
        "settle"
    }

    fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Step>, String> {
        if self.voucher_identifier.trim().is_empty() {
            return Err("settle: voucher_identifier is blank".into());
        }
        Ok(Arc::new(Settle {
            identifier: self.voucher_identifier.clone(),
            extensions: ctx.extensions.clone(),
        }))
    }
}

struct Settle {
    identifier: String,
    extensions: Extensions,
}

impl Settle {
    /// Insured by the first identifier of the voucher's type among `ids` (id, type code);
    /// self-pay without one.
    fn kind<'i>(&self, ids: impl IntoIterator<Item = (&'i str, Option<&'i str>)>) -> Kind {
        let found = ids
            .into_iter()
            .find(|(id, ty)| *ty == Some(self.identifier.as_str()) && !id.trim().is_empty());
        match found {
            Some((no, _)) => Kind::Insured {
                voucher: Voucher {
                    cert_type: "02".into(),
                    cert_no: no.trim().to_owned(),
                    insuplc_admdvs: None,
                    qr: None,
                },
            },
            None => Kind::SelfPay,
        }
    }

    /// From the event's patient identifiers, else the HIS order's national numbers.
    async fn kind_of(&self, billing: &Billing, body: &serde_json::Value, cid: &str) -> Kind {
        let empty = Vec::new();
        let ids = body["patient"]["identifiers"].as_array().unwrap_or(&empty);
        let kind = self.kind(ids.iter().map(|i| {
            (
                i["id"].as_str().unwrap_or_default(),
                i["type_code"].as_str().or_else(|| i["type"].as_str()),
            )
        }));
        if kind != Kind::SelfPay {
            return kind;
        }
        match billing.store().consultation(cid).await {
            Ok(Some(c)) => match c.consultation.request().his_order.as_deref() {
                Some(o) => self.kind(
                    o.national_identifiers
                        .iter()
                        .map(|i| (i.id.as_str(), i.type_code.as_deref())),
                ),
                None => Kind::SelfPay,
            },
            Ok(None) => Kind::SelfPay,
            Err(e) => {
                tracing::warn!(consultation = cid, error = %e, "settle: the consultation does not read; its HIS order's national numbers are not looked at");
                Kind::SelfPay
            }
        }
    }
}

impl Step for Settle {
    fn apply<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Flow, StepError>> {
        Box::pin(async move {
            if work.headers.get("x-huizhen-event").map(String::as_str)
                != Some(huizhen_domain::consultation::outbound::COMPLETED)
            {
                return Ok(Flow::Continue);
            }
            let Some(billing) = self.extensions.get::<Billing>() else {
                return Err(StepError::permanent(
                    "settle: billing is not configured (billing: in huizhen.yaml)",
                ));
            };
            let body = work.json()?.clone();
            let Some(cid) = body["consultation_id"].as_str().map(str::to_owned) else {
                return Err(StepError::permanent(format!(
                    "message {}: settle: the body has no consultation_id",
                    work.id
                )));
            };
            let mut kind = self.kind_of(&billing, &body, &cid).await;
            if matches!(kind, Kind::Insured { .. }) && billing.settings().insurer.is_none() {
                kind = Kind::SelfPay;
            }
            let audit = AuditEvent {
                actor: format!("pipeline:{}", work.pipeline),
                role: "pipeline".into(),
                facility: work.facility.clone(),
                action: "settlement.open".into(),
                resource_type: "Settlement".into(),
                resource_id: String::new(),
                outcome: "success".into(),
                source: format!("pipeline {}", work.pipeline),
                purpose: String::new(),
                detail: format!("consultation {cid} (message {})", work.id),
                subject_facility: String::new(),
            };
            match billing.open(&cid, kind, &audit).await {
                Ok((stored, _)) => {
                    let id = stored.settlement.id.clone();
                    work.headers.insert("settlement-id".into(), id.clone());
                    work.headers.insert(
                        "settlement-phase".into(),
                        stored.settlement.phase().code().into(),
                    );
                    // A dry run (`huizhen test`, `replay`) never calls the insurer.
                    if !self.extensions.dry_run() {
                        drive_in_background(billing, id);
                    }
                    Ok(Flow::Continue)
                }
                Err(BillingError::Store(e)) => {
                    Err(StepError::new(format!("message {}: settle: {e}", work.id)))
                }
                Err(e) => {
                    tracing::warn!(message = %work.id, consultation = %cid, error = %e, "the consultation is not billed");
                    work.headers
                        .insert("settlement-error".into(), e.to_string());
                    Ok(Flow::Continue)
                }
            }
        })
    }
}

fn drive_in_background(billing: Arc<Billing>, id: String) {
    tokio::spawn(async move {
        match billing.drive(&id).await {
            Ok(s) => tracing::info!(settlement = %id, phase = %s.phase(), "settlement driven"),
            Err(BillingError::Busy(_)) => {}
            Err(e) => {
                tracing::warn!(settlement = %id, error = %e, "settlement not driven; the resume loop tries again")
            }
        }
    });
}
