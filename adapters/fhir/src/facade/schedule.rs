//! The experts' availability as FHIR: each expert's Schedule (`{expert id}`, actor the
//! PractitionerRole, the weekly windows as comment) and its Slots (`{expert id}.{start ms}`),
//! cut from the windows by the workflow's slot length and local offset exactly as the
//! appointment API offers them (`huizhen_domain::appointment::slots`), `busy` where a booking
//! (booked or attended) overlaps, else `free`. Slots are searched within `start` (at most 31
//! days; default: the next 7 days from today) for the experts of `schedule` (default: every
//! expert, at most 2,000 slots looked at).

use chrono::{DateTime, Days, TimeZone, Utc};
use huizhen_domain::appointment::{AppointmentConfig, slots};
use huizhen_domain::expert::Expert;
use serde_json::{Value, json};

use super::consult::DEPARTMENT;
use super::context::{Ctx, Served};
use super::index::{index, instant};
use super::outcome::{Fail, too_costly};
use super::search::SearchRequest;
use super::table::ResourceDef;
use huizhen_core::store::fhir::{Criterion, DatePrefix};

const MAX_SLOTS: usize = 2_000;
const MAX_DAYS: i64 = 31;

fn config(ctx: &Ctx) -> AppointmentConfig {
    ctx.s
        .extensions
        .get::<huizhen_core::care::Care>()
        .map(|c| c.appointments)
        .unwrap_or_default()
}

pub fn schedule(e: &Expert) -> Value {
    let windows: Vec<String> = e
        .schedule
        .windows
        .iter()
        .map(|w| serde_json::to_string(w).unwrap_or_default())
        .collect();
    let mut s = json!({
        "resourceType": "Schedule",
        "id": e.id,
        "active": e.registration_active,
        "actor": [{ "reference": format!("PractitionerRole/{}", e.id) }],
    });
    if !e.departments.is_empty() {
        s["serviceType"] = Value::Array(
            e.departments
                .iter()
                .map(|d| json!({ "coding": [{ "system": DEPARTMENT, "code": d }] }))
                .collect(),
        );
    }
    if !windows.is_empty() {
        s["comment"] = json!(format!("weekly windows: {}", windows.join(", ")));
    }
    s
}

fn slot(expert: &str, start: DateTime<Utc>, end: DateTime<Utc>, busy: bool) -> Value {
    json!({
        "resourceType": "Slot",
        "id": format!("{expert}.{}", start.timestamp_millis()),
        "schedule": { "reference": format!("Schedule/{expert}") },
        "status": if busy { "busy" } else { "free" },
        "start": instant(start.timestamp_millis()),
        "end": instant(end.timestamp_millis()),
    })
}

fn served(json: Value) -> Served {
    Served {
        json,
        last_updated: 0,
        facility: None,
    }
}

/// The bookings holding an expert's time: (start, end).
async fn busy_times(ctx: &Ctx, expert: &str) -> Result<Vec<(DateTime<Utc>, DateTime<Utc>)>, Fail> {
    let experts = [expert.to_owned()];
    let statuses = ["booked".to_owned(), "attended".to_owned()];
    let mut out = Vec::new();
    for id in ctx
        .s
        .store
        .fhir_booking_ids(Some(&experts), Some(&statuses), None, 10_000)
        .await?
    {
        if let Some((b, ..)) = ctx.s.store.appointment_row(&id).await? {
            out.push((b.booking.start, b.booking.end));
        }
    }
    Ok(out)
}

/// The slots of `e` on the local days `from` for `days`, with their status.
async fn slots_of(
    ctx: &Ctx,
    e: &Expert,
    from: chrono::NaiveDate,
    days: u32,
) -> Result<Vec<Value>, Fail> {
    let cut = slots(&e.id, &e.schedule, from, days, &config(ctx));
    if cut.is_empty() {
        return Ok(Vec::new());
    }
    let busy = busy_times(ctx, &e.id).await?;
    Ok(cut
        .iter()
        .map(|s| {
            slot(
                &e.id,
                s.start,
                s.end,
                busy.iter().any(|(a, b)| *a < s.end && s.start < *b),
            )
        })
        .collect())
}

pub async fn read(ctx: &Ctx, def: &ResourceDef, id: &str) -> Result<Option<Served>, Fail> {
    if def.name == "Schedule" {
        return Ok(ctx.s.store.expert(id).await?.map(|e| served(schedule(&e))));
    }
    let Some((expert, ms)) = id.rsplit_once('.') else {
        return Ok(None);
    };
    let Ok(ms) = ms.parse::<i64>() else {
        return Ok(None);
    };
    let Some(e) = ctx.s.store.expert(expert).await? else {
        return Ok(None);
    };
    let Some(at) = Utc.timestamp_millis_opt(ms).single() else {
        return Ok(None);
    };
    let day = config(ctx).local_date(at);
    let from = day.checked_sub_days(Days::new(1)).unwrap_or(day);
    Ok(slots_of(ctx, &e, from, 3)
        .await?
        .into_iter()
        .find(|s| s["id"] == id)
        .map(served))
}

/// The local days a Slot search covers: the `start` criteria's bounds, else the next 7 days.
fn window(ctx: &Ctx, req: &SearchRequest) -> Result<(chrono::NaiveDate, u32), Fail> {
    let cfg = config(ctx);
    let now = ctx.s.store.clock().now();
    let (mut lo, mut hi) = (now, now + chrono::Duration::days(7));
    for c in &req.criteria {
        if let Criterion::Date { param, any_of } = c
            && param == "start"
        {
            for (prefix, plo, phi) in any_of {
                let (a, b) = (
                    Utc.timestamp_millis_opt(*plo).single(),
                    Utc.timestamp_millis_opt(*phi).single(),
                );
                match prefix {
                    DatePrefix::Eq => {
                        lo = a.unwrap_or(lo);
                        hi = b.unwrap_or(hi);
                    }
                    DatePrefix::Ge | DatePrefix::Gt | DatePrefix::Sa => {
                        lo = a.unwrap_or(lo);
                        hi = lo + chrono::Duration::days(7);
                    }
                    DatePrefix::Le | DatePrefix::Lt | DatePrefix::Eb => hi = b.unwrap_or(hi),
                    DatePrefix::Ne => {}
                }
            }
        }
    }
    let days = (hi - lo).num_days() + 2;
    if days > MAX_DAYS + 2 {
        return Err(Fail::invalid(
            "start",
            format!("start: at most {MAX_DAYS} days of slots in one search"),
        ));
    }
    let from = cfg
        .local_date(lo)
        .checked_sub_days(Days::new(1))
        .unwrap_or(cfg.local_date(lo));
    Ok((from, u32::try_from(days.max(1)).unwrap_or(1)))
}

pub async fn search(
    ctx: &Ctx,
    def: &ResourceDef,
    req: &SearchRequest,
    need: usize,
) -> Result<(Vec<Served>, usize), Fail> {
    let named: Vec<String> = req
        .terms(if def.name == "Slot" {
            "schedule"
        } else {
            "actor"
        })
        .iter()
        .filter_map(|v| v.rsplit('/').next().map(str::to_owned))
        .collect();
    let experts: Vec<Expert> = if named.is_empty() {
        ctx.s.store.list_experts().await?
    } else {
        let mut out = Vec::new();
        for id in &named {
            if let Some(e) = ctx.s.store.expert(id).await? {
                out.push(e);
            }
        }
        out
    };
    let mut all = Vec::new();
    if def.name == "Schedule" {
        all = experts.iter().map(schedule).collect();
    } else {
        let (from, days) = window(ctx, req)?;
        for e in &experts {
            all.extend(slots_of(ctx, e, from, days).await?);
            if all.len() > MAX_SLOTS {
                return Err(too_costly("slots", "schedule and a narrower start"));
            }
        }
    }
    let mut matched: Vec<Served> = all
        .into_iter()
        .filter(|r| {
            let ix = index(def, r);
            let id = r["id"].as_str().unwrap_or_default();
            req.criteria.iter().all(|c| c.matches(id, 0, &ix))
        })
        .map(served)
        .collect();
    let total = matched.len();
    matched.truncate(need);
    Ok((matched, total))
}
