//! Billing over HTTP (issue 19; STANDARDS CN-60 … CN-63).
//!
//! | method | path | what | roles |
//! |---|---|---|---|
//! | POST | /api/consultations/{id}/settlement | open the completed consultation's settlement and drive it (`{"voucher": {"cert_type", "cert_no"}}` or `{"self_pay": true}`); 201 new, 200 the live one (a duplicate charges nothing) | admin, integrator, local-doctor |
//! | GET | /api/consultations/{id}/settlement | its latest settlement | admin, integrator, auditor, local-doctor |
//! | GET | /api/settlements/{id} | a settlement with its calls (msgid, infno, outcome), invoices and ledger entries | as above |
//! | POST | /api/settlements/{id}/confirm | the patient's confirmation of the pre-settlement (`{"by", "amounts"}`), then settlement | admin, integrator, local-doctor |
//! | POST | /api/settlements/{id}/cancel | cancel (`{"reason"}`): back out before settlement, 2208 and refund after it | as above |
//! | POST | /api/billing/reconciliation/{day} | reconcile a local day (`yyyy-mm-dd`) against the platform's statement (the CSV body); the report | admin, integrator (facility `*`) |
//! | GET | /api/billing/reconciliation/{day} | the day's report (the scheduled run's or the last POST's) | admin, integrator, auditor (facility `*`) |
//!
//! **Scope.** A settlement belongs to the billing facility (the consultation's requesting
//! facility, which charges the patient: CN-63). Reading needs it in the caller's read scope
//! (others get 404, audited as denied), acting in the write scope (403). The person's
//! certificate number is shown masked. Every read, change and refusal is audited.

use huizhen_domain::billing::{Amounts, Kind, Phase, SagaError, Settlement, Voucher};

use super::*;
use crate::billing::{Billing, BillingError};

/// The billing routes (merged into the router by [`super::router`]).
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/consultations/{id}/settlement",
            post(settle).get(of_consultation),
        )
        .route("/api/settlements/{id}", get(detail))
        .route("/api/settlements/{id}/confirm", post(confirm))
        .route("/api/settlements/{id}/cancel", post(cancel))
        .route(
            "/api/billing/reconciliation/{day}",
            post(reconcile).get(reconciliation),
        )
}

fn billing(s: &AppState) -> Result<std::sync::Arc<Billing>, ApiError> {
    s.extensions.get::<Billing>().ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            "billing is not configured on this engine (billing: in huizhen.yaml)".into(),
        )
    })
}

fn status_of(e: &BillingError) -> StatusCode {
    use huizhen_domain::billing::FeeError;
    match e {
        BillingError::NotFound(_) => StatusCode::NOT_FOUND,
        BillingError::Fee(FeeError::NotCompleted { .. }) => StatusCode::CONFLICT,
        BillingError::Fee(_)
        | BillingError::NoSchedule(_)
        | BillingError::NoInsurer
        | BillingError::Request { .. }
        | BillingError::Statement(_) => StatusCode::UNPROCESSABLE_ENTITY,
        BillingError::Saga(SagaError::AmountsDiffer { .. }) => StatusCode::UNPROCESSABLE_ENTITY,
        BillingError::Saga(_) | BillingError::Busy(_) => StatusCode::CONFLICT,
        BillingError::Coverage(_) => StatusCode::BAD_GATEWAY,
        BillingError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn refuse(e: BillingError) -> ApiError {
    match e {
        BillingError::Store(e) => e.into(),
        other => ApiError(status_of(&other), other.to_string()),
    }
}

/// Audits a refused change and hands back its error.
async fn refused(
    s: &AppState,
    caller: &Caller,
    action: &str,
    id: &str,
    facility: &str,
    e: BillingError,
) -> ApiError {
    let event = caller
        .event(action, "Settlement", id, "failed", e.to_string())
        .about(facility);
    if let Err(a) = audit(&s.store, &event).await {
        return a;
    }
    refuse(e)
}

/// `4401**********1234`: enough to recognise, not enough to use.
fn mask(v: &str) -> String {
    let n = v.chars().count();
    if n <= 8 {
        return "*".repeat(n);
    }
    v.chars()
        .enumerate()
        .map(|(i, c)| if i < 4 || i >= n - 4 { c } else { '*' })
        .collect()
}

/// The settlement as the API shows it: the saga (certificate number masked), its phase and
/// what it waits for.
fn view(st: &Settlement) -> serde_json::Value {
    let mut v = serde_json::to_value(st).unwrap_or_default();
    if let Kind::Insured { voucher } = &st.kind {
        v["kind"]["voucher"]["cert_no"] = json!(mask(&voucher.cert_no));
        if let Some(qr) = &voucher.qr {
            v["kind"]["voucher"]["qr"] = json!(mask(qr));
        }
    }
    v["phase"] = json!(st.phase());
    v["patient_pays_fen"] = json!(st.patient_pays().0);
    v["waiting_for"] = json!(match st.phase() {
        Phase::AwaitingConfirmation => "the patient's confirmation (POST …/confirm)",
        Phase::Attention => "a person: reconcile with the platform",
        p if p.is_at_rest() => "",
        _ => "the insurance platform",
    });
    v
}

/// The body of `POST /api/consultations/{id}/settlement`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettleBody {
    /// The person's 医保电子凭证 (CN-60): the QR code they show (`qr`, decoded through the
    /// provincial interface as the saga's first step), or the certificate type and number
    /// (their identity card).
    #[serde(default)]
    voucher: Option<Voucher>,
    /// No insurance: the patient pays all.
    #[serde(default)]
    self_pay: bool,
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    let text = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        body
    };
    let mut de = serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{what}: {}: {}", e.path(), e.inner()),
        )
    })
}

async fn settle(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b = billing(&s)?;
    let body: SettleBody = parse(&body, "settlement")?;
    let kind = match (body.voucher, body.self_pay) {
        (Some(v), false) => {
            let qr = v.qr.as_deref().map(str::trim).filter(|q| !q.is_empty());
            if qr.is_none() && (v.cert_type.trim().is_empty() || v.cert_no.trim().is_empty()) {
                return Err(ApiError(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "settlement: voucher: give the 医保电子凭证 `qr` code, or `cert_type` and `cert_no`".into(),
                ));
            }
            let qr = qr.map(str::to_owned);
            Kind::Insured {
                voucher: Voucher { qr, ..v },
            }
        }
        (None, true) => Kind::SelfPay,
        _ => {
            return Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "settlement: give either `voucher` or `\"self_pay\": true`".into(),
            ));
        }
    };
    let facility = match s.store.consultation(&id).await {
        Ok(Some(c)) => c.consultation.request().requesting_facility.clone(),
        Ok(None) => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("no consultation {id}"),
            ));
        }
        Err(crate::store::consultations::ConsultationError::Store(e)) => return Err(e.into()),
        Err(e) => return Err(ApiError(StatusCode::NOT_FOUND, e.to_string())),
    };
    if !caller.write_scope.allows(&facility) {
        let e = caller
            .event(
                "settlement.open",
                "Consultation",
                &id,
                "denied",
                String::new(),
            )
            .about(&facility);
        audit(&s.store, &e).await?;
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "facility: {} may not bill for {facility}",
                caller.principal.facility
            ),
        ));
    }
    let event = caller.event(
        "settlement.open",
        "Settlement",
        "",
        "success",
        format!("consultation {id}"),
    );
    let (stored, new) = match b.open(&id, kind, &event).await {
        Ok(r) => r,
        Err(e) => {
            let refused = caller
                .event(
                    "settlement.open",
                    "Consultation",
                    &id,
                    "failed",
                    e.to_string(),
                )
                .about(&facility);
            audit(&s.store, &refused).await?;
            return Err(refuse(e));
        }
    };
    let sid = stored.settlement.id.clone();
    let settlement = match b.drive(&sid).await {
        Ok(st) => st,
        // Another runner is on it (a duplicate request a moment ago): show where it is.
        Err(BillingError::Busy(_)) => stored.settlement,
        Err(e) => return Err(refuse(e)),
    };
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(&settlement))).into_response())
}

/// A settlement the caller may read, or 404 (audited).
async fn readable(
    s: &AppState,
    caller: &Caller,
    st: Option<crate::store::billing::StoredSettlement>,
    what: &str,
    id: &str,
) -> Result<Settlement, ApiError> {
    let Some(st) = st else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no settlement for {id}"),
        ));
    };
    let facility = st.settlement.facility.clone();
    let allowed = caller.scope.allows(&facility);
    let e = caller
        .event(
            what,
            "Settlement",
            &st.settlement.id,
            if allowed { "success" } else { "denied" },
            String::new(),
        )
        .about(&facility);
    audit(&s.store, &e).await?;
    if allowed {
        Ok(st.settlement)
    } else {
        Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no settlement for {id}"),
        ))
    }
}

async fn of_consultation(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let st = s.store.settlement_of_consultation(&id).await?;
    let st = readable(&s, &caller, st, "settlement.read", &id).await?;
    Ok(Json(view(&st)).into_response())
}

async fn detail(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let st = s.store.settlement(&id).await?;
    let st = readable(&s, &caller, st, "settlement.read", &id).await?;
    let mut v = view(&st);
    let calls: Vec<serde_json::Value> = s
        .store
        .settlement_calls(&id)
        .await?
        .into_iter()
        .map(|c| {
            json!({
                "msgid": c.msgid, "infno": c.infno, "omsgid": c.omsgid, "oinfno": c.oinfno,
                "outcome": c.outcome, "sent_at": c.sent_at, "answered_at": c.answered_at,
            })
        })
        .collect();
    v["calls"] = json!(calls);
    v["invoices"] = json!(s.store.invoices(&id).await?);
    v["ledger"] = json!(s.store.ledger(Some(&id)).await?);
    Ok(Json(v).into_response())
}

/// A settlement the caller may change, or 404/403 (audited).
async fn writable(
    s: &AppState,
    caller: &Caller,
    id: &str,
    action: &str,
) -> Result<String, ApiError> {
    let st = s.store.settlement(id).await?;
    let Some(st) = st.filter(|st| caller.scope.allows(&st.settlement.facility)) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no settlement {id}"),
        ));
    };
    let facility = st.settlement.facility;
    if !caller.write_scope.allows(&facility) {
        let e = caller
            .event(action, "Settlement", id, "denied", String::new())
            .about(&facility);
        audit(&s.store, &e).await?;
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "facility: {} may not act for {facility}",
                caller.principal.facility
            ),
        ));
    }
    Ok(facility)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmBody {
    /// Who confirmed (the patient, or staff at the counter for them).
    by: String,
    /// The amounts shown to and confirmed by the patient.
    amounts: Amounts,
}

async fn confirm(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b = billing(&s)?;
    let body: ConfirmBody = parse(&body, "confirmation")?;
    let facility = writable(&s, &caller, &id, "settlement.confirm").await?;
    let event = caller
        .event(
            "settlement.confirm",
            "Settlement",
            &id,
            "success",
            format!("confirmed by {}", body.by),
        )
        .about(&facility);
    match b.confirm(&id, &body.by, body.amounts, &event).await {
        Ok(st) => Ok(Json(view(&st)).into_response()),
        Err(e) => Err(refused(&s, &caller, "settlement.confirm", &id, &facility, e).await),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    reason: String,
}

async fn cancel(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b = billing(&s)?;
    let body: CancelBody = parse(&body, "cancellation")?;
    if body.reason.trim().is_empty() {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "cancellation: reason is blank".into(),
        ));
    }
    let facility = writable(&s, &caller, &id, "settlement.cancel").await?;
    let event = caller
        .event(
            "settlement.cancel",
            "Settlement",
            &id,
            "success",
            body.reason.clone(),
        )
        .about(&facility);
    match b.cancel(&id, &body.reason, &event).await {
        Ok(st) => Ok(Json(view(&st)).into_response()),
        Err(e) => Err(refused(&s, &caller, "settlement.cancel", &id, &facility, e).await),
    }
}

/// The reconciliation covers every facility of the institution: platform staff only.
async fn platform_only(
    s: &AppState,
    caller: &Caller,
    action: &str,
    day: &str,
) -> Result<(), ApiError> {
    if caller.principal.facility == "*" {
        return Ok(());
    }
    let e = caller.event(action, "Reconciliation", day, "denied", String::new());
    audit(&s.store, &e).await?;
    Err(ApiError(
        StatusCode::FORBIDDEN,
        "the reconciliation covers every facility: a platform token (facility *) is needed".into(),
    ))
}

fn day_of(day: &str) -> Result<chrono::NaiveDate, ApiError> {
    chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("day: {day:?} is not yyyy-mm-dd"),
        )
    })
}

async fn reconcile(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(day): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    platform_only(&s, &caller, "reconciliation.run", &day).await?;
    let b = billing(&s)?;
    let date = day_of(&day)?;
    let text = std::str::from_utf8(&body).map_err(|_| {
        ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "statement: the body is not UTF-8 CSV".into(),
        )
    })?;
    let report = b
        .reconcile_day(date, &format!("request of {}", caller.principal.sub), text)
        .await
        .map_err(refuse)?;
    let e = caller.event(
        "reconciliation.run",
        "Reconciliation",
        &day,
        "success",
        format!("{} discrepancies", report.discrepancies.len()),
    );
    audit(&s.store, &e).await?;
    Ok(Json(json!({ "day": day, "report": report })).into_response())
}

async fn reconciliation(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(day): Path<String>,
) -> Result<Response, ApiError> {
    platform_only(&s, &caller, "reconciliation.read", &day).await?;
    day_of(&day)?;
    let Some((statement, body)) = s.store.reconciliation(&day).await? else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no reconciliation for {day}"),
        ));
    };
    let e = caller.event(
        "reconciliation.read",
        "Reconciliation",
        &day,
        "success",
        String::new(),
    );
    audit(&s.store, &e).await?;
    let report: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    Ok(Json(json!({ "day": day, "statement": statement, "report": report })).into_response())
}
