//! `/api/prescriptions` (CN-20, CN-21): draft, the actions, the pharmacist's queue, the
//! logistics webhook. Every decision is the domain's (`PrescriptionPolicy::decide`); a change
//! is written only against the version it was decided on, and decided again (up to three
//! times) when another change won the race.
//!
//! **Scope.** A prescription belongs to the facility it was drafted for (the prescriber's). It
//! is read by callers whose read scope holds that facility (others get 404, audited as denied)
//! and changed by callers whose write scope does (others 403). The logistics partner's token
//! names the facilities it delivers for (or `*`).

use huizhen_domain::prescription::{
    DeliveryCallback, Prescription, PrescriptionCommand, PrescriptionError, PrescriptionEvent,
    PrescriptionLine, PrescriptionState, allowed_actions,
};
use huizhen_domain::signature::Signature;

use super::*;
use crate::store::care::{
    NewOutboxEvent, PrescriptionChange, PrescriptionFilter, StoredPrescription,
};

/// How often a decision is retried after losing a race to another change.
const ATTEMPTS: usize = 3;

/// The actions of `POST /api/prescriptions/{id}/{action}`.
const ACTIONS: [&str; 6] = ["revise", "sign", "submit", "approve", "reject", "cancel"];

/// The status and JSON of a domain refusal.
fn refusal(e: &PrescriptionError) -> Refusal {
    use PrescriptionError as E;
    let (status, code, mut body) = match e {
        E::Automated { .. } => (StatusCode::FORBIDDEN, "automated", json!({})),
        E::RoleNotAllowed { allowed, .. } => (
            StatusCode::FORBIDDEN,
            "role_not_allowed",
            json!({ "allowed_roles": allowed }),
        ),
        E::NotPrescriber { prescriber, .. } => (
            StatusCode::FORBIDDEN,
            "not_prescriber",
            json!({ "prescriber": prescriber }),
        ),
        E::SelfReview { .. } => (StatusCode::FORBIDDEN, "self_review", json!({})),
        E::ControlledDrug {
            line, drug, hit, ..
        } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "controlled_drug",
            json!({ "field": format!("lines[{line}]"), "line": line, "drug": drug, "hit": hit }),
        ),
        E::Invalid { field, .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            json!({ "field": field }),
        ),
        E::MissingReason { .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_reason",
            json!({ "field": "reason" }),
        ),
        E::Signature { .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "signature",
            json!({ "field": "signature" }),
        ),
        E::InvalidTransition { state, .. } => (
            StatusCode::CONFLICT,
            "invalid_transition",
            json!({ "state": state, "allowed": allowed_actions(*state) }),
        ),
        E::NotActive { state, status, .. } => (
            StatusCode::CONFLICT,
            "not_active",
            json!({ "state": state, "status": status }),
        ),
    };
    body["error"] = json!(e.to_string());
    body["code"] = json!(code);
    Refusal(status, body)
}

/// The prescription as the API shows it.
fn view(rx: &Prescription, facility: &str, pending_signature: bool) -> serde_json::Value {
    let mut v = serde_json::to_value(rx).unwrap_or_default();
    v["facility"] = json!(facility);
    v["allowed_actions"] = json!(allowed_actions(rx.state));
    v["signature_pending"] = json!(pending_signature);
    v
}

fn created(v: serde_json::Value) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

/// The body of a draft.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DraftBody {
    /// The new prescription's id; generated when absent.
    #[serde(default)]
    id: Option<String>,
    consultation_id: String,
    patient_id: String,
    lines: Vec<PrescriptionLine>,
    /// The facility it is issued for; default: the token's.
    #[serde(default)]
    facility: Option<String>,
}

/// An audit event about prescription `id` of `facility`.
fn event(
    caller: &Caller,
    action: &str,
    id: &str,
    facility: &str,
    outcome: &str,
    detail: String,
) -> AuditEvent {
    caller
        .event(action, "Prescription", id, outcome, detail)
        .about(facility)
}

/// Audits a refusal and hands it back.
async fn refused(
    s: &AppState,
    caller: &Caller,
    action: &str,
    id: &str,
    facility: &str,
    r: Refusal,
) -> Refusal {
    let outcome = if r.0 == StatusCode::FORBIDDEN {
        "denied"
    } else {
        "failed"
    };
    if let Err(e) = audited(
        &s.store,
        &event(caller, action, id, facility, outcome, r.message()),
    )
    .await
    {
        return e;
    }
    r
}

pub(super) async fn draft(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Bytes,
) -> Reply {
    let b: DraftBody = parse(&body, "prescription")?;
    let facility = requesting_facility(
        &caller,
        b.facility.as_deref(),
        "the facility the prescription is issued for",
    )?;
    let id = id_or_new(b.id.as_deref());
    if !caller.write_scope.allows(&facility) {
        let r = Refusal::new(
            StatusCode::FORBIDDEN,
            format!(
                "facility: {} may not issue prescriptions for {facility}",
                caller.principal.facility
            ),
        );
        return Err(refused(&s, &caller, "prescription.draft", &id, &facility, r).await);
    }
    if s.store.prescription(&id).await?.is_some() {
        return Err(Refusal::new(
            StatusCode::CONFLICT,
            format!("prescription `{id}` already exists"),
        ));
    }
    let command = PrescriptionCommand::Draft {
        prescription_id: id.clone(),
        consultation_id: b.consultation_id,
        patient_id: b.patient_id,
        lines: b.lines,
        by: actor_of(&caller),
    };
    let care = care(&s);
    let rx = Prescription::default();
    let events = match care.policy.decide(&rx, &command, s.store.clock().now()) {
        Ok(e) => e,
        Err(e) => {
            return Err(refused(
                &s,
                &caller,
                "prescription.draft",
                &id,
                &facility,
                refusal(&e),
            )
            .await);
        }
    };
    let next = Prescription::replay(&events);
    let audit = event(
        &caller,
        "prescription.draft",
        &id,
        &facility,
        "success",
        format!(
            "consultation {}; {} lines",
            next.consultation_id,
            next.lines.len()
        ),
    );
    let saved = s
        .store
        .save_prescription(PrescriptionChange {
            prescription: &next,
            facility: &facility,
            expected_version: 0,
            events: &events,
            audit: &audit,
            outbox: None,
        })
        .await?;
    if !saved {
        return Err(Refusal::new(
            StatusCode::CONFLICT,
            format!("prescription `{id}` already exists"),
        ));
    }
    Ok(created(view(&next, &facility, false)))
}

/// The prescription if the caller may read it: 404 (audited as denied) otherwise.
async fn readable(
    s: &AppState,
    caller: &Caller,
    id: &str,
    action: &str,
) -> Result<StoredPrescription, Refusal> {
    let not_found = || Refusal::new(StatusCode::NOT_FOUND, format!("no prescription `{id}`"));
    let Some(p) = s.store.prescription(id).await? else {
        return Err(not_found());
    };
    if !caller.scope.allows(&p.facility) {
        // The denial is audited with its real reason; the caller learns nothing.
        let why = Refusal::new(
            StatusCode::FORBIDDEN,
            format!("facility {} is outside the caller's scope", p.facility),
        );
        let r = refused(s, caller, action, id, &p.facility, why).await;
        return Err(if r.0 == StatusCode::FORBIDDEN {
            not_found()
        } else {
            r
        });
    }
    Ok(p)
}

/// [`readable`], and the caller may change it (write scope): 403 otherwise.
async fn writable(
    s: &AppState,
    caller: &Caller,
    id: &str,
    action: &str,
) -> Result<StoredPrescription, Refusal> {
    let p = readable(s, caller, id, action).await?;
    if !caller.write_scope.allows(&p.facility) {
        let r = Refusal::new(
            StatusCode::FORBIDDEN,
            format!(
                "prescription `{id}` belongs to {}; {} may read it but not change it",
                p.facility, caller.principal.facility
            ),
        );
        return Err(refused(s, caller, action, id, &p.facility, r).await);
    }
    Ok(p)
}

/// The body of an action: what the action needs, nothing else.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ActionBody {
    #[serde(default)]
    lines: Option<Vec<PrescriptionLine>>,
    #[serde(default)]
    signature: Option<Signature>,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    /// The version the caller saw; a stale one is refused with 412.
    #[serde(default)]
    version: Option<u64>,
}

/// The domain command of `action`, with `signature` standing in when the body has none (a
/// signature kept by `sign`).
fn command(
    action: &str,
    b: &ActionBody,
    by: Actor,
    pending: Option<&Signature>,
) -> Result<PrescriptionCommand, Refusal> {
    let missing = |field: &str| {
        Refusal(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "error": format!("{action}: {field} is required"), "code": "invalid", "field": field }),
        )
    };
    Ok(match action {
        "revise" => PrescriptionCommand::Revise {
            lines: b.lines.clone().ok_or_else(|| missing("lines"))?,
            by,
        },
        "sign" | "submit" => PrescriptionCommand::Submit {
            signature: b
                .signature
                .clone()
                .or_else(|| pending.cloned())
                .ok_or_else(|| missing("signature"))?,
            by,
        },
        "approve" => PrescriptionCommand::Approve {
            by,
            note: b.note.clone(),
        },
        // A missing reason is a blank one: the domain answers MissingReason (422).
        "reject" => PrescriptionCommand::Reject {
            by,
            reason: b.reason.clone().unwrap_or_default(),
        },
        _ => PrescriptionCommand::Cancel {
            by,
            reason: b.reason.clone().unwrap_or_default(),
        },
    })
}

/// A submission's signature checked by the engine's verifier, when it has one (CN-21): over
/// the canonical bytes of the content signed, which the submission does not change.
fn verified(
    s: &AppState,
    rx: &Prescription,
    cmd: &PrescriptionCommand,
) -> Result<(), PrescriptionError> {
    let (PrescriptionCommand::Submit { signature, .. }, Some(v)) = (
        cmd,
        s.extensions.get::<crate::care::PrescriptionSignatures>(),
    ) else {
        return Ok(());
    };
    v.0.verify(&rx.canonical_bytes(), signature)
        .map(|_| ())
        .map_err(|e| PrescriptionError::Signature {
            id: rx.id.clone(),
            problem: e.to_string(),
        })
}

/// The outbound event of an approval (`prescription.approved`): the whole prescription, for
/// the pharmacy and the logistics partner.
fn approved_event(rx: &Prescription, facility: &str, pipeline: Option<String>) -> NewOutboxEvent {
    let review = rx.review.as_ref();
    NewOutboxEvent {
        topic: "prescription.approved".into(),
        resource_id: rx.id.clone(),
        facility: facility.to_owned(),
        pipeline,
        body: json!({
            "event": "prescription.approved",
            "prescription_id": rx.id,
            "consultation_id": rx.consultation_id,
            "facility": facility,
            "approved_by": review.and_then(|r| r.pharmacist.clone()),
            "approved_at": review.and_then(|r| r.decided_at),
            "review_task": review.map(|r| r.task_id.clone()),
            "prescription": rx,
        }),
    }
}

pub(super) async fn act(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Reply {
    if !ACTIONS.contains(&action.as_str()) {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            format!(
                "no prescription action `{action}` (one of {})",
                ACTIONS.join(", ")
            ),
        ));
    }
    let audit_action = format!("prescription.{action}");
    let b: ActionBody = parse(&body, &action)?;
    let care = care(&s);
    for _ in 0..ATTEMPTS {
        let stored = writable(&s, &caller, &id, &audit_action).await?;
        let rx = &stored.prescription;
        if let Some(v) = b.version
            && v != rx.version
        {
            return Err(Refusal(
                StatusCode::PRECONDITION_FAILED,
                json!({ "error": format!("prescription `{id}` is at version {}, not {v}", rx.version), "code": "version", "version": rx.version }),
            ));
        }
        let cmd = command(
            &action,
            &b,
            actor_of(&caller),
            stored.pending_signature.as_ref(),
        )?;
        let decided = care
            .policy
            .decide(rx, &cmd, s.store.clock().now())
            .and_then(|events| verified(&s, rx, &cmd).map(|()| events));
        let events = match decided {
            Ok(e) => e,
            Err(e) => {
                return Err(refused(
                    &s,
                    &caller,
                    &audit_action,
                    &id,
                    &stored.facility,
                    refusal(&e),
                )
                .await);
            }
        };
        if action == "sign" {
            // A dry run of the submission: the signature is kept for `submit`, nothing else.
            let PrescriptionCommand::Submit { signature, .. } = &cmd else {
                continue;
            };
            let audit = event(
                &caller,
                &audit_action,
                &id,
                &stored.facility,
                "success",
                format!("signed by {} at {}", signature.signer, signature.signed_at),
            );
            if s.store
                .set_prescription_signature(&id, rx.version, signature, &audit)
                .await?
            {
                return Ok(Json(view(rx, &stored.facility, true)).into_response());
            }
            continue;
        }
        let mut next = rx.clone();
        for e in &events {
            next.apply(e);
        }
        let approved = events
            .iter()
            .any(|e| matches!(e, PrescriptionEvent::Approved { .. }));
        let outbox = approved
            .then(|| approved_event(&next, &stored.facility, care.outbound_pipeline.clone()));
        let audit = event(
            &caller,
            &audit_action,
            &id,
            &stored.facility,
            "success",
            format!("{} → {}", rx.state, next.state),
        );
        let saved = s
            .store
            .save_prescription(PrescriptionChange {
                prescription: &next,
                facility: &stored.facility,
                expected_version: rx.version,
                events: &events,
                audit: &audit,
                outbox: outbox.as_ref(),
            })
            .await?;
        if saved {
            if approved && care.outbound_pipeline.is_some() {
                crate::care::relay_outbox(&s.store, &s.pipelines.snapshot()).await;
            }
            return Ok(Json(view(&next, &stored.facility, false)).into_response());
        }
    }
    Err(Refusal::new(
        StatusCode::CONFLICT,
        format!("prescription `{id}` kept changing under this request; try again"),
    ))
}

pub(super) async fn delivery(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Reply {
    let callback: DeliveryCallback = parse(&body, "delivery callback")?;
    let care = care(&s);
    let action = "prescription.delivery";
    for _ in 0..ATTEMPTS {
        let stored = writable(&s, &caller, &id, action).await?;
        let rx = &stored.prescription;
        let cmd = PrescriptionCommand::Delivery {
            callback: callback.clone(),
        };
        let events = match care.policy.decide(rx, &cmd, s.store.clock().now()) {
            Ok(e) => e,
            Err(e) => {
                return Err(refused(&s, &caller, action, &id, &stored.facility, refusal(&e)).await);
            }
        };
        let result = match events.first() {
            None => "duplicate",
            Some(PrescriptionEvent::CallbackNoted { .. }) => "late",
            Some(_) => "recorded",
        };
        let detail = format!(
            "callback {} `{}`: {result}",
            callback.event_id, callback.status
        );
        if events.is_empty() {
            // Nothing changes; the call is still on record.
            audited(
                &s.store,
                &event(&caller, action, &id, &stored.facility, "success", detail),
            )
            .await?;
            return Ok(Json(json!({ "result": result, "changed": false, "prescription": view(rx, &stored.facility, stored.pending_signature.is_some()) })).into_response());
        }
        let mut next = rx.clone();
        for e in &events {
            next.apply(e);
        }
        let audit = event(&caller, action, &id, &stored.facility, "success", detail);
        let saved = s
            .store
            .save_prescription(PrescriptionChange {
                prescription: &next,
                facility: &stored.facility,
                expected_version: rx.version,
                events: &events,
                audit: &audit,
                outbox: None,
            })
            .await?;
        if saved {
            return Ok(Json(json!({ "result": result, "changed": next.state != rx.state, "prescription": view(&next, &stored.facility, false) })).into_response());
        }
    }
    Err(Refusal::new(
        StatusCode::CONFLICT,
        format!("prescription `{id}` kept changing under this callback; send it again"),
    ))
}

pub(super) async fn detail(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Reply {
    let stored = readable(&s, &caller, &id, "prescription.read").await?;
    let history = s.store.prescription_history(&id).await?;
    let outbound = s.store.outbox_of(&id).await?;
    audited(
        &s.store,
        &event(
            &caller,
            "prescription.read",
            &id,
            &stored.facility,
            "success",
            String::new(),
        ),
    )
    .await?;
    let rx = &stored.prescription;
    let mut v = view(rx, &stored.facility, stored.pending_signature.is_some());
    v["history"] = json!(history);
    v["outbound"] = json!(outbound);
    // What the prescriber signs (CN-21): the canonical form of the current content.
    v["canonical"] = json!(String::from_utf8_lossy(&rx.canonical_bytes()));
    Ok(Json(v).into_response())
}

pub(super) async fn list(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(pairs): Pairs,
) -> Reply {
    let pairs = params(pairs, &["state", "consultation", "limit"])?;
    let state = match param(&pairs, "state") {
        None => None,
        Some(v) => Some(
            serde_json::from_value::<PrescriptionState>(json!(v)).map_err(|_| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    format!("state: {v:?} is not a prescription state (draft, pending-review, active, rejected, dispatched, delivered, delivery-failed, returned, cancelled)"),
                )
            })?,
        ),
    };
    let filter = PrescriptionFilter {
        state,
        consultation_id: param(&pairs, "consultation").map(str::to_owned),
        facilities: caller.scope.facilities(),
        limit: i64::try_from(limit(&pairs, 100, 1000)?).unwrap_or(100),
    };
    let found = s.store.list_prescriptions(&filter).await?;
    let detail = format!(
        "state={}; {} prescriptions",
        state.map_or("any", PrescriptionState::as_str),
        found.len()
    );
    audited(
        &s.store,
        &caller.event("prescription.read", "Prescription", "", "success", detail),
    )
    .await?;
    let items: Vec<serde_json::Value> = found
        .iter()
        .map(|p| view(&p.prescription, &p.facility, p.pending_signature.is_some()))
        .collect();
    Ok(Json(json!({ "prescriptions": items })).into_response())
}
