//! The regulator's daily records (STANDARDS CN-14): what a provincial 互联网医疗服务监管平台
//! collects of a day, built from the consultations the engine ran, on the "minimum usable"
//! principle: the service type, the institutions and physicians, the department, the
//! diagnoses, the decisions, every state change with its time and the role that made it; the
//! patient only as the master person id (no name, no identity number).
//!
//! Pushed: `workflow.regulator_export` submits each local day's report to a pipeline at its
//! schedule (once per day: the journal's dedup key `regulator-daily:<date>`), where the
//! province's mapping runs (a `plugin` step) and a sink sends it (`http`, with retries and the
//! message id as idempotency key). Pulled: `GET /api/compliance/regulator/daily?date=`.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::message::NewMessage;
use crate::store::{Result, Store};

/// The report's format name and version.
pub const FORMAT: &str = "huizhen.regulator.daily/1";

/// The UTC bounds of the local `date` at `offset_minutes` east of UTC.
pub fn day_bounds(date: NaiveDate, offset_minutes: i32) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = date
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        - TimeDelta::minutes(i64::from(offset_minutes));
    (start, start + TimeDelta::days(1))
}

/// The local date before the one `now` falls on (the day a tick at `now` reports).
pub fn previous_day(now: DateTime<Utc>, offset_minutes: i32) -> NaiveDate {
    let local = (now + TimeDelta::minutes(i64::from(offset_minutes))).date_naive();
    local.pred_opt().unwrap_or(local)
}

/// The report of the local `date`: every consultation with an event that day (requested,
/// accepted, started, cancelled, failed, completed, …), each with its records (see the
/// module's doc).
pub async fn daily_report(store: &Store, date: NaiveDate, offset_minutes: i32) -> Result<Value> {
    let (from, to) = day_bounds(date, offset_minutes);
    let ids = store
        .consultations_changed(from.timestamp_millis(), to.timestamp_millis())
        .await?;
    let mut consultations = Vec::with_capacity(ids.len());
    let mut facilities = std::collections::BTreeSet::new();
    let mut completed = 0;
    for id in &ids {
        let Some(stored) = store.consultation(id).await? else {
            continue;
        };
        let c = &stored.consultation;
        let entries = c.timeline();
        let first = |event: &str| entries.iter().find(|e| e.event == event).map(|e| e.at);
        let completed_at = first("completed");
        if completed_at.is_some_and(|t| t >= from && t < to) {
            completed += 1;
        }
        let r = c.request();
        facilities.insert(r.requesting_facility.clone());
        let opinion = c.opinion().map(|o| {
            json!({
                "expert": o.signed.opinion.expert,
                "signed_at": o.at,
                "diagnoses": o.signed.opinion.diagnoses.iter().map(|d| json!({"code": d.code.to_string(), "text": d.text})).collect::<Vec<_>>(),
                "signer": o.verified_signer,
            })
        });
        let decision = c.local_decision().map(|d| {
            json!({
                "by": d.by,
                "at": d.at,
                "outcome": d.decision.outcome,
                "final_diagnoses": d.decision.final_diagnoses.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })
        });
        let timeline: Vec<Value> = entries
            .iter()
            .map(|e| {
                json!({
                    "at": e.at,
                    "event": e.event,
                    "from": e.from.code(),
                    "to": e.to.code(),
                    "actor": e.actor.id,
                    "role": crate::store::consultations::role_code(e.actor.role),
                })
            })
            .collect();
        consultations.push(json!({
            "id": c.id(),
            "service_type": r.service_type.code(),
            "agreement": r.agreement,
            "requesting_facility": r.requesting_facility,
            "requesting_doctor": r.requesting_doctor,
            "province": r.province,
            "department": r.department,
            "urgency": r.urgency,
            "icd10": r.icd10.as_ref().map(ToString::to_string),
            "patient": c.patient(),
            "expert": c.accepted_by(),
            "state": c.state().code(),
            "created_at": first("created"),
            "accepted_at": first("accepted"),
            "completed_at": completed_at,
            "cancelled": first("cancelled").is_some(),
            "failed": first("failed").is_some(),
            "opinion": opinion,
            "local_decision": decision,
            "timeline": timeline,
        }));
    }
    Ok(json!({
        "format": FORMAT,
        "date": date.to_string(),
        "utc_offset_minutes": offset_minutes,
        "from": from,
        "to": to,
        "facilities": facilities,
        "counts": {
            "consultations": consultations.len(),
            "completed": completed,
        },
        "consultations": consultations,
    }))
}

/// The report of `date` as a message for `pipeline`: JSON, deduplicated per day (a second
/// submission of the same day is the first one).
pub fn report_message(pipeline: &str, date: NaiveDate, report: &Value) -> NewMessage {
    let mut m = NewMessage::new(
        pipeline,
        "",
        "json",
        serde_json::to_vec(report).unwrap_or_default(),
    );
    m.source = "regulator-export".into();
    m.dedup_key = Some(format!("regulator-daily:{date}"));
    m.headers
        .insert("x-huizhen-report".into(), "regulator-daily".into());
    m.headers.insert("x-huizhen-date".into(), date.to_string());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_days_and_the_day_a_tick_reports() {
        let d: NaiveDate = "2026-12-05".parse().unwrap();
        let (from, to) = day_bounds(d, 480);
        assert_eq!(from.to_rfc3339(), "2026-12-04T16:00:00+00:00");
        assert_eq!(to.to_rfc3339(), "2026-12-05T16:00:00+00:00");
        // 16:30 UTC on the 5th is 00:30 on the 6th in +08:00: it reports the 5th.
        let tick: DateTime<Utc> = "2026-12-05T16:30:00Z".parse().unwrap();
        assert_eq!(previous_day(tick, 480), d);
        assert_eq!(previous_day(tick, 0).to_string(), "2026-12-04");
    }
}
