//! Expert matching over HTTP (issue 14; STANDARDS MATCH-01, MATCH-30, MATCH-31, CN-42).
//!
//! | method | path | what | roles |
//! |---|---|---|---|
//! | POST | /api/experts/match | a `CaseRequest` → the ranked experts with per-feature contributions, the exclusions with reasons; the decision is stored | admin, integrator, local-doctor |
//! | GET | /api/match-decisions/{id} | the full stored decision and its overrides (the explanation) | admin, integrator, auditor, local-doctor |
//! | POST | /api/match-decisions/{id}/override | `{expert_id, reason}`: a coordinator's override; 422 without a reason | admin, integrator |
//! | GET | /api/experts/fairness?department=&from=&to= | share of the busiest decile, Gini, p50/p95 time to accept per facility | admin, integrator, auditor |
//! | POST | /api/experts/heartbeat | an expert's presence (`{}` or `{"expert_id": own id}`) | expert |
//!
//! **Scope.** A case is matched for its `requesting_facility`, which must be in the caller's
//! write scope (a facility requests for itself). A decision is visible to callers whose read
//! scope holds its requesting facility (others get 404, audited as denied), and overridden by
//! callers whose write scope does. An expert's token subject is the expert id: an expert
//! heartbeats for itself only, and only when its registered facility is in its write scope.
//!
//! **Coordinators** are the `integrator` and `admin` roles: the platform's dispatch desk acts
//! with an integrator token. Every match, read and override is audited (`expert.match`,
//! `match-decision.read`, `match-decision.override` with who and why), in the same transaction
//! as the change it records.

use chrono::{DateTime, NaiveDate, Utc};
use huizhen_domain::expert::{
    CaseRequest, MatchConfig, MatchDecision, MatchError, fairness_report, match_experts,
};

use super::*;
use crate::store::experts::StoredDecision;

fn bad(status: StatusCode, msg: String) -> ApiError {
    ApiError(status, msg)
}

/// Parses a JSON body into `T`: 400 when it is not JSON, 422 when it does not fit (the
/// message names the field).
fn parse<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        bad(
            StatusCode::BAD_REQUEST,
            format!("{what}: the body is not JSON: {e}"),
        )
    })?;
    serde_json::from_value(v)
        .map_err(|e| bad(StatusCode::UNPROCESSABLE_ENTITY, format!("{what}: {e}")))
}

/// How many exclusions a match response lists in full. The stored decision keeps every one
/// with its reasons (GET /api/match-decisions/{id}); the response counts them all.
const RESPONSE_EXCLUSIONS: usize = 200;

/// The response of a match: the ranking with contributions, the exclusions with reasons (the
/// first [`RESPONSE_EXCLUSIONS`], in index order), how many there are in all and per reason
/// code.
fn match_view(id: &str, d: &MatchDecision) -> serde_json::Value {
    let counts: serde_json::Map<String, serde_json::Value> = d
        .exclusion_counts()
        .into_iter()
        .map(|(code, n)| (code.as_str().to_owned(), json!(n)))
        .collect();
    json!({
        "decision_id": id,
        "case_id": d.case.id,
        "decided_at": d.now,
        "selected": d.selected,
        "ranked": d.ranked,
        "exclusions": &d.exclusions[..d.exclusions.len().min(RESPONSE_EXCLUSIONS)],
        "exclusions_total": d.exclusions.len(),
        "exclusions_truncated": d.exclusions.len() > RESPONSE_EXCLUSIONS,
        "exclusion_counts": counts,
        "scorer": d.scorer,
        "fallback": d.fallback,
    })
}

pub(super) async fn match_case(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let case: CaseRequest = parse(&body, "case")?;
    case.validate()
        .map_err(|e| bad(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let facility = case.requesting_facility.trim().to_owned();
    if !caller.write_scope.allows(&facility) {
        let reason = format!(
            "requesting_facility: {} may not request consultations for {facility}",
            caller.principal.facility
        );
        audit(
            &s.store,
            &caller
                .event(
                    "expert.match",
                    "MatchDecision",
                    "",
                    "denied",
                    reason.clone(),
                )
                .about(&facility),
        )
        .await?;
        return Err(bad(StatusCode::FORBIDDEN, reason));
    }
    let index = s.store.prefetch_experts(&case).await?;
    // The scorer is the operator's choice (`plugins.expert_scorer`), never the caller's.
    let scorer_name = s.extensions.plugins_config().expert_scorer.clone();
    let scorer = crate::steps::match_experts::resolve_scorer(
        &s.extensions,
        scorer_name.as_deref(),
        crate::extensions::PluginBudget {
            fuel: Some(crate::steps::match_experts::DEFAULT_SCORER_FUEL),
            deadline: std::time::Duration::from_millis(50),
        },
    )
    .map_err(|e| {
        ApiError::internal(
            StatusCode::SERVICE_UNAVAILABLE,
            "the configured expert scorer is unavailable",
            &e,
        )
    })?;
    let decision = match_experts(
        &case,
        &index,
        &*scorer,
        &MatchConfig::default(),
        Utc::now(),
        0,
    )
    .map_err(|e| match e {
        MatchError::Scoring { .. } => {
            ApiError::internal(StatusCode::INTERNAL_SERVER_ERROR, "the scorer failed", &e)
        }
        _ => bad(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    })?;
    crate::runner::match_alerts::alert_scorer_fallback(&decision, "api");
    let id = crate::message::new_id();
    let event = caller
        .event(
            "expert.match",
            "MatchDecision",
            &id,
            "success",
            format!("case {}; selected {}", case.id, decision.selected.join(",")),
        )
        .about(&facility);
    s.store
        .save_match_decision_as(&id, &decision, Some(&event))
        .await?;
    Ok(Json(match_view(&id, &decision)))
}

/// The stored decision if the caller may read it; 404 (audited as denied) otherwise.
async fn readable(
    s: &AppState,
    caller: &Caller,
    id: &str,
    action: &str,
) -> Result<StoredDecision, ApiError> {
    let not_found = || bad(StatusCode::NOT_FOUND, format!("no match decision {id}"));
    let Some(d) = s.store.match_decision(id).await? else {
        return Err(not_found());
    };
    if !caller.scope.allows(&d.requesting_facility) {
        audit(
            &s.store,
            &caller
                .event(
                    action,
                    "MatchDecision",
                    id,
                    "denied",
                    format!(
                        "facility {} is outside the caller's scope",
                        d.requesting_facility
                    ),
                )
                .about(&d.requesting_facility),
        )
        .await?;
        return Err(not_found());
    }
    Ok(d)
}

pub(super) async fn get_decision(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let d = readable(&s, &caller, &id, "match-decision.read").await?;
    audit(
        &s.store,
        &caller
            .event(
                "match-decision.read",
                "MatchDecision",
                &id,
                "success",
                String::new(),
            )
            .about(&d.requesting_facility),
    )
    .await?;
    Ok(Json(serde_json::to_value(&d).unwrap_or_default()))
}

/// The body of an override. A missing reason is a blank one (422 from the domain).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OverrideBody {
    expert_id: String,
    #[serde(default)]
    reason: String,
}

pub(super) async fn override_decision(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let o: OverrideBody = parse(&body, "override")?;
    let d = readable(&s, &caller, &id, "match-decision.override").await?;
    let facility = d.requesting_facility.clone();
    if !caller.write_scope.allows(&facility) {
        let reason = format!(
            "facility {facility} shares its decisions for reading only; {} may not override them",
            caller.principal.facility
        );
        audit(
            &s.store,
            &caller
                .event(
                    "match-decision.override",
                    "MatchDecision",
                    &id,
                    "denied",
                    reason.clone(),
                )
                .about(&facility),
        )
        .await?;
        return Err(bad(StatusCode::FORBIDDEN, reason));
    }
    let record = d
        .decision
        .override_with(&o.expert_id, &o.reason, &caller.principal.sub)
        .map_err(|e| bad(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let detail = serde_json::to_string(&json!({
        "expert_id": record.expert_id,
        "reason": record.reason,
        "replaces": record.replaces,
        "flagged": record.flagged,
        "standing": record.standing,
    }))
    .unwrap_or_default();
    let event = caller
        .event(
            "match-decision.override",
            "MatchDecision",
            &id,
            "success",
            detail,
        )
        .about(&facility);
    let override_id = s.store.save_override(&id, &record, &event).await?;
    Ok(Json(json!({
        "override_id": override_id,
        "decision_id": id,
        "override": record,
    })))
}

#[derive(Debug, Deserialize)]
pub(super) struct FairnessQuery {
    department: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// A period bound: RFC 3339 or a date (midnight UTC).
fn instant(name: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    let t = text.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .ok_or_else(|| {
            bad(
                StatusCode::BAD_REQUEST,
                format!("{name}: {t:?} is neither RFC 3339 nor YYYY-MM-DD"),
            )
        })
}

pub(super) async fn fairness(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(q): Query<FairnessQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let to = match q.to.as_deref().filter(|t| !t.trim().is_empty()) {
        Some(t) => instant("to", t)?,
        None => Utc::now(),
    };
    let from = match q.from.as_deref().filter(|t| !t.trim().is_empty()) {
        Some(t) => instant("from", t)?,
        None => to - chrono::Duration::days(30),
    };
    if from >= to {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            format!("from: {from} is not before to {to}"),
        ));
    }
    let department = q.department.as_deref().filter(|d| !d.trim().is_empty());
    let facilities = caller.scope.facilities();
    let inputs = s
        .store
        .fairness_inputs(
            department,
            from.timestamp_millis(),
            to.timestamp_millis(),
            facilities.as_deref(),
        )
        .await?;
    let report = fairness_report(&inputs.assignments, &inputs.accepts);
    let mut v = serde_json::to_value(&report).unwrap_or_default();
    v["from"] = json!(from);
    v["to"] = json!(to);
    Ok(Json(v))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HeartbeatBody {
    #[serde(default)]
    expert_id: Option<String>,
}

pub(super) async fn heartbeat(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let b: HeartbeatBody = if body.iter().all(u8::is_ascii_whitespace) {
        HeartbeatBody::default()
    } else {
        parse(&body, "heartbeat")?
    };
    let me = caller.principal.sub.clone();
    if let Some(other) = b.expert_id.as_deref()
        && other.trim() != me
    {
        return Err(bad(
            StatusCode::FORBIDDEN,
            format!("expert_id: an expert heartbeats for itself only ({me}), not for {other}"),
        ));
    }
    let Some(expert) = s.store.expert(&me).await? else {
        return Err(bad(
            StatusCode::NOT_FOUND,
            format!("no expert {me} in the registry"),
        ));
    };
    if !caller.write_scope.allows(&expert.facility) {
        return Err(bad(
            StatusCode::FORBIDDEN,
            format!(
                "expert {me} is registered at {}, outside the token's facility {}",
                expert.facility, caller.principal.facility
            ),
        ));
    }
    let now = Utc::now();
    s.store.expert_heartbeat(&me, now).await?;
    Ok(Json(json!({ "expert_id": me, "last_heartbeat": now })))
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use huizhen_domain::expert::synth::{Rng, departments, gen_agreements, gen_cases, gen_experts};
    use huizhen_domain::expert::{DefaultScorer, MemoryExpertIndex};

    use super::*;

    #[test]
    fn a_long_exclusion_list_is_cut_in_the_response_and_counted_in_full() {
        let now = DateTime::parse_from_rfc3339("2026-01-15T10:00:00+08:00")
            .unwrap()
            .with_timezone(&Utc);
        let mut r = Rng(7);
        let depts = departments();
        let index = MemoryExpertIndex::new(
            gen_experts(&mut r, 3_000, now, &depts),
            gen_agreements(&mut r),
        );
        let mut case = gen_cases(&mut r, 1, now, &depts).remove(0);
        case.department = "03".into();
        case.icd10 = None;
        let d = match_experts(
            &case,
            &index,
            &DefaultScorer,
            &MatchConfig::default(),
            now,
            1,
        )
        .unwrap();
        assert!(
            d.exclusions.len() > RESPONSE_EXCLUSIONS,
            "{}",
            d.exclusions.len()
        );
        let v = match_view("d-1", &d);
        let listed = v["exclusions"].as_array().unwrap();
        assert_eq!(listed.len(), RESPONSE_EXCLUSIONS);
        assert_eq!(listed[0]["expert_id"], d.exclusions[0].expert_id.as_str());
        assert_eq!(v["exclusions_total"], d.exclusions.len());
        assert_eq!(v["exclusions_truncated"], true);
        // Every exclusion is counted under each of its reasons.
        let counted: u64 = v["exclusion_counts"]
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_u64().unwrap())
            .sum();
        let reasons: usize = d.exclusions.iter().map(|x| x.reasons.len()).sum();
        assert_eq!(counted, reasons as u64);
        assert!(
            v["exclusion_counts"]["no-active-agreement"]
                .as_u64()
                .unwrap()
                > 0
        );
    }
}
