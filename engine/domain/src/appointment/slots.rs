//! From an expert's weekly [`Schedule`] to concrete availability and bookable slots.
//!
//! Schedule windows are local wall-clock times (the expert registry's convention, STANDARDS
//! a fixed UTC offset, default +08:00); an overnight window (`20:00`–`08:00`) ends the
//! next day. Occurrences that overlap or touch are merged, so a booking may span two adjacent
//! windows (`08:00`–`12:00` and `12:00`–`13:00`). Slots are cut from each merged interval from
//! its start, `slot_minutes` long; a shorter remainder is not offered.

use chrono::{DateTime, Days, Duration, FixedOffset, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::expert::model::Schedule;

/// The calendar's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppointmentConfig {
    /// Length of a bookable slot, minutes (5 to 480). Default 30.
    #[serde(default = "default_slot")]
    pub slot_minutes: u32,
    /// Minutes after the start before a booking nobody (or only one side) joined becomes a
    /// no-show. Default 15.
    #[serde(default = "default_grace")]
    pub grace_minutes: u32,
    /// The UTC offset of schedule times and of the daily queue's days, minutes. Default 480
    /// (+08:00).
    #[serde(default = "default_offset")]
    pub utc_offset_minutes: i32,
}

fn default_slot() -> u32 {
    30
}

fn default_grace() -> u32 {
    15
}

fn default_offset() -> i32 {
    8 * 60
}

impl Default for AppointmentConfig {
    fn default() -> Self {
        AppointmentConfig {
            slot_minutes: default_slot(),
            grace_minutes: default_grace(),
            utc_offset_minutes: default_offset(),
        }
    }
}

/// A setting out of range, named.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("appointment config: {field} {value} is out of range ({range})")]
pub struct AppointmentConfigError {
    /// The setting.
    pub field: &'static str,
    /// Its value.
    pub value: i64,
    /// The accepted range.
    pub range: &'static str,
}

impl AppointmentConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), AppointmentConfigError> {
        let bad = |field, value: i64, range| {
            Err(AppointmentConfigError {
                field,
                value,
                range,
            })
        };
        if !(5..=480).contains(&self.slot_minutes) {
            return bad("slot_minutes", self.slot_minutes.into(), "5 to 480");
        }
        if self.grace_minutes > 240 {
            return bad("grace_minutes", self.grace_minutes.into(), "0 to 240");
        }
        if !(-1439..=1439).contains(&self.utc_offset_minutes) {
            return bad(
                "utc_offset_minutes",
                self.utc_offset_minutes.into(),
                "-1439 to 1439",
            );
        }
        Ok(())
    }

    /// The offset as a chrono zone (UTC when out of range; `validate` refuses that first).
    pub fn offset(&self) -> FixedOffset {
        FixedOffset::east_opt(self.utc_offset_minutes * 60)
            .unwrap_or_else(|| FixedOffset::east_opt(0).expect("0 is a valid offset"))
    }

    /// The local calendar date of `at`.
    pub fn local_date(&self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&self.offset()).date_naive()
    }
}

/// A bookable interval of one expert (UTC, `end` exclusive).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slot {
    /// The expert.
    pub expert_id: String,
    /// Start.
    pub start: DateTime<Utc>,
    /// End (exclusive).
    pub end: DateTime<Utc>,
}

/// The merged availability intervals of `schedule` for windows starting on the local dates
/// `from ..= to`, in time order.
pub fn availability(
    schedule: &Schedule,
    from: NaiveDate,
    to: NaiveDate,
    offset: FixedOffset,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut occurrences = Vec::new();
    let mut day = from;
    while day <= to {
        for window in &schedule.windows {
            if !window.days.contains(chrono::Datelike::weekday(&day)) {
                continue;
            }
            let midnight = day.and_hms_opt(0, 0, 0).expect("midnight exists");
            let local_start = midnight + Duration::minutes(i64::from(window.from.minutes()));
            let Some(start) = offset.from_local_datetime(&local_start).single() else {
                continue;
            };
            let start = start.with_timezone(&Utc);
            occurrences.push((start, start + Duration::minutes(window.length_minutes())));
        }
        match day.checked_add_days(Days::new(1)) {
            Some(next) => day = next,
            None => break,
        }
    }
    occurrences.sort();
    let mut merged: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::with_capacity(occurrences.len());
    for (start, end) in occurrences {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// The slots of `expert_id` for windows starting on the `days` local dates from `from`, in
/// time order (bookings not considered; see `Calendar::open_slots`).
pub fn slots(
    expert_id: &str,
    schedule: &Schedule,
    from: NaiveDate,
    days: u32,
    config: &AppointmentConfig,
) -> Vec<Slot> {
    let Some(to) = days
        .checked_sub(1)
        .and_then(|d| from.checked_add_days(Days::new(u64::from(d))))
    else {
        return Vec::new();
    };
    let step = Duration::minutes(i64::from(config.slot_minutes));
    let mut out = Vec::new();
    for (start, end) in availability(schedule, from, to, config.offset()) {
        let mut at = start;
        while at + step <= end {
            out.push(Slot {
                expert_id: expert_id.to_owned(),
                start: at,
                end: at + step,
            });
            at += step;
        }
    }
    out
}
