//! `/api/patients`: the patient identity index (PDQ-like search, PIX-like cross-references,
//! the review queue, unlink and relink), within the caller's facility scope, every access
//! audited.
//!
//! | method | path | what |
//! |---|---|---|
//! | POST | /api/patients/match?limit= | demographics JSON → ranked candidates (grade, score, per-field explanation); writes nothing |
//! | GET | /api/patients/{person_id}/identifiers | the person's records with their decisions and history |
//! | GET | /api/patients/identifiers?identifier=facility\|local_id | the same, found by one of its records |
//! | GET | /api/patients/review?state=&limit= | the review queue (default: pending) |
//! | POST | /api/patients/review/{id}/accept, /reject | decide an entry; `{"reason": …}` required |
//! | POST | /api/patients/{person_id}/unlink | `{"facility", "local_id", "reason"}`: the record gets a person of its own |
//! | POST | /api/patients/{person_id}/relink | `{"facility", "local_id", "reason"}`: the record joins this person |
//!
//! **Scope.** A caller sees only records of the facilities it may read (`*` sees all): the
//! search compares only those, a person with none of them answers 404, and in decisions the
//! records of other facilities are left out (a best record of another facility keeps its
//! facility, grade and score, its local id is withheld). Changes need the record's facility
//! in the caller's write scope (its own facility).

use huizhen_domain::identity::{Demographics, normalize};

use super::*;
use crate::store::identity::{ChangeBy, IdentityRow, ReviewRow};

pub(super) fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// Reads a JSON body into `T`; errors name the field path (`names[0].given`).
pub(super) fn parse_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    what: &str,
) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            bad(format!("{what}: {inner}"))
        } else {
            bad(format!("{what}: {path}: {inner}"))
        }
    })
}

/// Leaves out of a candidate's JSON the records of facilities outside `scope`, and withholds
/// the local id of a best record outside it.
fn scope_candidate(c: &mut serde_json::Value, scope: &Scope) {
    let allowed = |v: &serde_json::Value| {
        v.get("facility")
            .and_then(serde_json::Value::as_str)
            .is_some_and(|f| scope.allows(f))
    };
    if let Some(records) = c
        .get_mut("records")
        .and_then(serde_json::Value::as_array_mut)
    {
        records.retain(allowed);
    }
    if !allowed(c)
        && let Some(obj) = c.as_object_mut()
    {
        obj.insert("local_id".into(), serde_json::Value::Null);
        obj.insert("outside_scope".into(), true.into());
    }
}

/// [`scope_candidate`] for every candidate of a decision.
fn scope_decision(d: &mut serde_json::Value, scope: &Scope) {
    if let Some(cs) = d
        .get_mut("candidates")
        .and_then(serde_json::Value::as_array_mut)
    {
        for c in cs {
            scope_candidate(c, scope);
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct MatchQuery {
    limit: Option<usize>,
}

/// POST /api/patients/match: PDQ-like search. The body is [`Demographics`]; `facility` and
/// `local_id` may be left out (a query, not a record).
pub(super) async fn match_patients(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(q): Query<MatchQuery>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limit = q.limit.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(bad(format!("limit {limit} is out of range 1..=100")));
    }
    let mut v: serde_json::Value = parse_body(&body, "body")?;
    let Some(obj) = v.as_object_mut() else {
        return Err(bad("body: expected a JSON object of demographics"));
    };
    for k in ["facility", "local_id"] {
        obj.entry(k).or_insert_with(|| "".into());
    }
    let text = serde_json::to_vec(&v).unwrap_or_default();
    let demographics: Demographics = parse_body(&text, "body")?;
    let person = normalize(&demographics);
    let facilities = caller.scope.facilities();
    let matcher = crate::patients::default_matcher();
    let mut decision =
        crate::patients::decide(&s.store, &matcher, &person, facilities.as_deref()).await?;
    decision.candidates.truncate(limit);
    let ids: Vec<String> = decision
        .candidates
        .iter()
        .map(|c| c.person_id.to_string())
        .collect();
    audit(
        &s.store,
        &caller.event(
            "patient.match",
            "Patient",
            "",
            "success",
            format!("{} candidates: {}", ids.len(), ids.join(",")),
        ),
    )
    .await?;
    let mut out = serde_json::to_value(&decision).unwrap_or_default();
    scope_decision(&mut out, &caller.scope);
    Ok(Json(out))
}

fn parse_person(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>().ok().filter(|p| *p > 0).ok_or_else(|| {
        bad(format!(
            "person_id: {raw:?} is not a person id (a positive integer)"
        ))
    })
}

/// The person's records the caller may see, with each record's last decision and history.
async fn cross_references(
    s: &AppState,
    caller: &Caller,
    person_id: i64,
) -> Result<Json<serde_json::Value>, ApiError> {
    let facilities = caller.scope.facilities();
    let rows = s
        .store
        .identities_of_person(person_id, facilities.as_deref())
        .await?;
    if rows.is_empty() {
        let all = s.store.identities_of_person(person_id, None).await?;
        if let Some(first) = all.first() {
            audit(
                &s.store,
                &caller
                    .event(
                        "patient.read",
                        "Patient",
                        &person_id.to_string(),
                        "denied",
                        "no record of the person is in the caller's scope".into(),
                    )
                    .about(&first.facility),
            )
            .await?;
        }
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("person {person_id} not found"),
        ));
    }
    let mut identifiers = Vec::with_capacity(rows.len());
    for r in &rows {
        let history = s.store.identity_history(r.id).await?;
        let mut decision = history
            .iter()
            .rev()
            .find(|h| h.action == "match")
            .and_then(|h| h.decision.clone())
            .unwrap_or(serde_json::Value::Null);
        scope_decision(&mut decision, &caller.scope);
        let history: Vec<serde_json::Value> = history
            .iter()
            .map(|h| {
                json!({
                    "action": h.action, "batch": h.batch, "from_person": h.from_person,
                    "to_person": h.to_person, "grade": h.grade, "score": h.score,
                    "actor": h.actor, "reason": h.reason, "undone": h.undone, "at": h.at,
                })
            })
            .collect();
        identifiers.push(json!({
            "facility": r.facility, "local_id": r.local_id, "active": r.active,
            "created_at": r.created_at, "updated_at": r.updated_at,
            "decision": decision, "history": history,
        }));
    }
    let facilities: Vec<&str> = rows.iter().map(|r| r.facility.as_str()).collect();
    let mut event = caller.event(
        "patient.read",
        "Patient",
        &person_id.to_string(),
        "success",
        format!("{} records", rows.len()),
    );
    if let Some(f) = facilities.first() {
        event = event.about(f);
    }
    audit(&s.store, &event).await?;
    Ok(Json(
        json!({ "person_id": person_id, "identifiers": identifiers }),
    ))
}

/// GET /api/patients/{person_id}/identifiers: PIX-like cross-reference.
pub(super) async fn person_identifiers(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(person_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let pid = parse_person(&person_id)?;
    cross_references(&s, &caller, pid).await
}

#[derive(Debug, Deserialize)]
pub(super) struct IdentifierQuery {
    identifier: Option<String>,
}

/// GET /api/patients/identifiers?identifier=facility|local_id: the cross-reference of the
/// person one record belongs to.
pub(super) async fn identifier_lookup(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(q): Query<IdentifierQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let raw = q
        .identifier
        .ok_or_else(|| bad("identifier: required, as facility|local_id"))?;
    let (facility, local_id) = raw
        .split_once('|')
        .filter(|(f, l)| !f.is_empty() && !l.is_empty())
        .ok_or_else(|| bad("identifier: expected facility|local_id"))?;
    let not_found = || ApiError(StatusCode::NOT_FOUND, "no such identifier".into());
    let row = s
        .store
        .identity(facility, local_id)
        .await?
        .ok_or_else(not_found)?;
    if !caller.scope.allows(&row.facility) {
        audit(
            &s.store,
            &caller
                .event(
                    "patient.read",
                    "Patient",
                    &row.person_id.to_string(),
                    "denied",
                    format!("facility {} is outside the caller's scope", row.facility),
                )
                .about(&row.facility),
        )
        .await?;
        return Err(not_found());
    }
    cross_references(&s, &caller, row.person_id).await
}

#[derive(Debug, Deserialize)]
pub(super) struct ReviewQuery {
    state: Option<String>,
    limit: Option<i64>,
}

fn review_json(r: &ReviewRow, scope: &Scope) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    scope_candidate(&mut v["decision"], scope);
    v
}

/// GET /api/patients/review: the review queue of the caller's facilities.
pub(super) async fn review_list(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(q): Query<ReviewQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let state = match q.state.as_deref().unwrap_or("pending") {
        "all" => None,
        st @ ("pending" | "accepted" | "rejected") => Some(st),
        other => {
            return Err(bad(format!(
                "state: {other:?} is not pending, accepted, rejected or all"
            )));
        }
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(bad(format!("limit {limit} is out of range 1..=1000")));
    }
    let facilities = caller.scope.facilities();
    let rows = s
        .store
        .identity_reviews(state, facilities.as_deref(), limit)
        .await?;
    let ids: Vec<String> = rows.iter().map(|r| r.id.to_string()).collect();
    audit(
        &s.store,
        &caller.event(
            "patient.review.list",
            "PatientReview",
            "",
            "success",
            format!(
                "state={} {} entries: {}",
                state.unwrap_or("all"),
                ids.len(),
                ids.join(",")
            ),
        ),
    )
    .await?;
    let reviews: Vec<serde_json::Value> =
        rows.iter().map(|r| review_json(r, &caller.scope)).collect();
    Ok(Json(json!({ "reviews": reviews })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: String,
}

fn required_reason(r: &str) -> Result<&str, ApiError> {
    let r = r.trim();
    if r.is_empty() {
        return Err(bad("reason: required (why the decision was made)"));
    }
    if r.chars().count() > 1000 {
        return Err(bad("reason: at most 1000 characters"));
    }
    Ok(r)
}

/// Read scope → 404 (audited), write scope → 403 (audited) for a change of a record of
/// `facility`.
pub(super) async fn check_write(
    s: &AppState,
    caller: &Caller,
    action: &str,
    resource_type: &str,
    resource_id: &str,
    facility: &str,
    not_found: ApiError,
) -> Result<(), ApiError> {
    if caller.write_scope.allows(facility) {
        return Ok(());
    }
    let readable = caller.scope.allows(facility);
    let reason = if readable {
        format!(
            "facility {facility} shares its data for reading only; {} may not change its links",
            caller.principal.facility
        )
    } else {
        format!("facility {facility} is outside the caller's scope")
    };
    audit(
        &s.store,
        &caller
            .event(action, resource_type, resource_id, "denied", reason.clone())
            .about(facility),
    )
    .await?;
    Err(if readable {
        ApiError(StatusCode::FORBIDDEN, reason)
    } else {
        not_found
    })
}

async fn decide_review(
    s: AppState,
    caller: Caller,
    raw_id: String,
    body: Bytes,
    accept: bool,
) -> Result<Json<serde_json::Value>, ApiError> {
    let b: ReasonBody = parse_body(&body, "body")?;
    let reason = required_reason(&b.reason)?;
    let id = raw_id
        .parse::<i64>()
        .map_err(|_| bad(format!("id: {raw_id:?} is not a review id (an integer)")))?;
    let action = if accept {
        "patient.review.accept"
    } else {
        "patient.review.reject"
    };
    let not_found = || ApiError(StatusCode::NOT_FOUND, format!("review {id} not found"));
    let review = s.store.identity_review(id).await?.ok_or_else(not_found)?;
    check_write(
        &s,
        &caller,
        action,
        "PatientReview",
        &id.to_string(),
        &review.facility,
        not_found(),
    )
    .await?;
    if review.state != "pending" {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("review {id} is {} already", review.state),
        ));
    }
    let event = caller
        .event(
            action,
            "PatientReview",
            &id.to_string(),
            "success",
            format!(
                "record {} of person {} {} person {} ({} {:.2}): {reason}",
                review.identity_id,
                review.person_id,
                if accept {
                    "linked to"
                } else {
                    "kept apart from"
                },
                review.candidate_person,
                review.grade,
                review.score
            ),
        )
        .about(&review.facility);
    let decided = s
        .store
        .identity_review_decide(
            id,
            accept,
            ChangeBy {
                actor: &caller.principal.sub,
                reason,
                audit: Some(&event),
            },
        )
        .await?
        .ok_or_else(|| {
            ApiError(
                StatusCode::CONFLICT,
                format!("review {id} was decided meanwhile"),
            )
        })?;
    Ok(Json(review_json(&decided, &caller.scope)))
}

/// POST /api/patients/review/{id}/accept.
pub(super) async fn review_accept(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    decide_review(s, caller, id, body, true).await
}

/// POST /api/patients/review/{id}/reject.
pub(super) async fn review_reject(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    decide_review(s, caller, id, body, false).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkBody {
    facility: String,
    local_id: String,
    reason: String,
}

async fn change_link(
    s: AppState,
    caller: Caller,
    raw_person: String,
    body: Bytes,
    unlink: bool,
) -> Result<Json<serde_json::Value>, ApiError> {
    let b: LinkBody = parse_body(&body, "body")?;
    let reason = required_reason(&b.reason)?;
    let person_id = parse_person(&raw_person)?;
    let action = if unlink {
        "patient.unlink"
    } else {
        "patient.relink"
    };
    let not_found = || ApiError(StatusCode::NOT_FOUND, "no such record".to_string());
    let row: IdentityRow = s
        .store
        .identity(&b.facility, &b.local_id)
        .await?
        .ok_or_else(not_found)?;
    check_write(
        &s,
        &caller,
        action,
        "Patient",
        &row.person_id.to_string(),
        &row.facility,
        not_found(),
    )
    .await?;
    let target = if unlink {
        if row.person_id != person_id {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("the record is not linked to person {person_id}"),
            ));
        }
        None
    } else {
        if s.store
            .identities_of_person(person_id, None)
            .await?
            .is_empty()
        {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("person {person_id} not found"),
            ));
        }
        if row.person_id == person_id {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!("the record is linked to person {person_id} already"),
            ));
        }
        Some(person_id)
    };
    let event = caller
        .event(
            action,
            "Patient",
            &row.person_id.to_string(),
            "success",
            format!(
                "record {} of person {}{}: {reason}",
                row.id,
                row.person_id,
                target
                    .map(|t| format!(" to person {t}"))
                    .unwrap_or_default()
            ),
        )
        .about(&row.facility);
    let (batch, now) = s
        .store
        .identity_relink(
            &b.facility,
            &b.local_id,
            target,
            if unlink { "unlink" } else { "relink" },
            ChangeBy {
                actor: &caller.principal.sub,
                reason,
                audit: Some(&event),
            },
        )
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(json!({
        "facility": row.facility, "local_id": row.local_id,
        "from_person": row.person_id, "person_id": now, "batch": batch,
    })))
}

/// POST /api/patients/{person_id}/unlink: the record leaves the person for one of its own.
pub(super) async fn unlink(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(person_id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    change_link(s, caller, person_id, body, true).await
}

/// POST /api/patients/{person_id}/relink: the record joins the person.
pub(super) async fn relink(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(person_id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    change_link(s, caller, person_id, body, false).await
}
