//! `GET /api/stats?from=&to=&facility=&format=json|csv` (issue 15 item 9, 数据分析): volume,
//! median and p90 request→accept seconds, completion rate and SLA breaches per requesting
//! facility, department and both, computed by the domain (`huizhen_domain::stats`) over the
//! consultation facts of the caller's facilities. Default period: the 30 days before now.
//! There is no per-prescriber figure (CN-20 forbids 统方).

use huizhen_domain::stats::{StatsPeriod, compute_stats, to_csv};

use super::*;

/// The platform's target for request→accept (STANDARDS MATCH-20): 15 minutes.
const TARGET_ACCEPT_SECONDS: u64 = 900;

pub(super) async fn stats(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(pairs): Pairs,
) -> Reply {
    let pairs = params(pairs, &["from", "to", "facility", "format"])?;
    let to = match param(&pairs, "to") {
        Some(t) => instant("to", t)?,
        None => s.store.clock().now(),
    };
    let from = match param(&pairs, "from") {
        Some(t) => instant("from", t)?,
        None => to - chrono::Duration::days(30),
    };
    if from >= to {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("from: {from} is not before to {to}"),
        ));
    }
    let csv = match param(&pairs, "format") {
        None | Some("json") => false,
        Some("csv") => true,
        Some(f) => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("format: {f:?} is not json or csv"),
            ));
        }
    };
    let facilities = match param(&pairs, "facility") {
        Some(f) if !caller.scope.allows(f) => {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                format!("facility: {f} is outside the caller's scope"),
            ));
        }
        Some(f) => Some(vec![f.to_owned()]),
        None => caller.scope.facilities(),
    };
    let facts = s
        .store
        .consultation_facts_of(from, to, facilities.as_deref())
        .await?;
    let rows = compute_stats(&facts, StatsPeriod { from, to }).map_err(|e| {
        ApiError::internal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the statistics cannot be computed: the stored consultation facts contradict themselves",
            &e,
        )
    })?;
    if csv {
        let name = format!(
            "consultation-stats-{}-{}.csv",
            from.format("%Y%m%dT%H%M%SZ"),
            to.format("%Y%m%dT%H%M%SZ")
        );
        let disposition = format!("attachment; filename=\"{name}\"");
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (header::CONTENT_DISPOSITION, disposition),
            ],
            to_csv(&rows),
        )
            .into_response());
    }
    Ok(Json(json!({
        "from": from,
        "to": to,
        "target_accept_seconds": TARGET_ACCEPT_SECONDS,
        "rows": rows,
    }))
    .into_response())
}

/// `GET /api/compliance/regulator/daily?date=YYYY-MM-DD` (CN-14, pulled by the supervision
/// platform): the report `workflow.regulator_export` pushes, of the local day `date` (default:
/// yesterday), for every facility (admins and auditors of the platform, `*`) or the caller's.
pub(super) async fn regulator_daily(
    State(s): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(pairs): Pairs,
) -> Reply {
    use crate::compliance::regulator;
    let pairs = params(pairs, &["date"])?;
    // The days are local by the matching settings' offset, as the pushed report's are.
    let offset = s
        .extensions
        .get::<crate::workflow::Workflow>()
        .map(|w| w.config().matching.utc_offset_minutes)
        .unwrap_or(
            crate::care::Care::of(&s.extensions)
                .appointments
                .utc_offset_minutes,
        );
    let date = match param(&pairs, "date") {
        Some(d) => d.parse::<chrono::NaiveDate>().map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("date: {d:?} is not a date (YYYY-MM-DD): {e}"),
            )
        })?,
        None => regulator::previous_day(s.store.clock().now(), offset),
    };
    let mut report = regulator::daily_report(&s.store, date, offset).await?;
    // A facility's auditor sees its own consultations only.
    if let Some(allowed) = caller.scope.facilities()
        && let Some(list) = report["consultations"].as_array_mut()
    {
        list.retain(|c| {
            c["requesting_facility"]
                .as_str()
                .is_some_and(|f| allowed.iter().any(|a| a == f))
        });
        let n = list.len();
        let (from, to) = regulator::day_bounds(date, offset);
        let completed = list
            .iter()
            .filter_map(|c| c["completed_at"].as_str())
            .filter_map(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
            .filter(|t| *t >= from && *t < to)
            .count();
        report["counts"] = json!({ "consultations": n, "completed": completed });
        report["facilities"] = json!(allowed);
    }
    Ok(Json(report).into_response())
}
