//! Schedules against local times: is an expert inside a window now (urgent cases), does a
//! window overlap a requested interval (cases with a window).
//!
//! The definitions are in chrono's terms ([`in_schedule_at`], [`overlaps`]: each window's
//! occurrences as local date-times). Matching asks them for every candidate of a case at the
//! same time, so [`Clock`] and [`Span`] prepare the case's time once as integers (weekday and
//! nanoseconds from a midnight) and answer with integer comparisons. They give the same
//! answers (a test compares them on random windows and times); for the rare times where
//! integer and chrono time differ (a leap second, the ends of the calendar) they are not
//! built and the chrono definitions answer.

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, Timelike, Weekday};

use super::model::{Schedule, WeeklyWindow};

const MINUTE_NS: i64 = 60_000_000_000;
const DAY_NS: i64 = 24 * 60 * MINUTE_NS;

/// The occurrences of the windows that start on `day`, as local intervals.
fn occurrences(
    windows: &[WeeklyWindow],
    day: NaiveDate,
) -> impl Iterator<Item = (NaiveDateTime, NaiveDateTime)> + '_ {
    windows
        .iter()
        .filter(move |w| w.days.contains(day.weekday()))
        .map(move |w| {
            let start = day.and_time(chrono::NaiveTime::MIN)
                + Duration::minutes(i64::from(w.from.minutes()));
            (start, start + Duration::minutes(w.length_minutes()))
        })
}

/// True when the local time `t` is inside one of the schedule's windows.
pub fn in_schedule_at(schedule: &Schedule, t: NaiveDateTime) -> bool {
    in_windows_at(&schedule.windows, t)
}

/// [`in_schedule_at`] on the windows alone.
pub(crate) fn in_windows_at(windows: &[WeeklyWindow], t: NaiveDateTime) -> bool {
    let day = t.date();
    [day.pred_opt(), Some(day)]
        .into_iter()
        .flatten()
        .any(|d| occurrences(windows, d).any(|(a, b)| a <= t && t < b))
}

/// True when one of the schedule's windows overlaps the local interval `[from, to)`.
pub fn overlaps(schedule: &Schedule, from: NaiveDateTime, to: NaiveDateTime) -> bool {
    windows_overlap(&schedule.windows, from, to)
}

/// [`overlaps`] on the windows alone.
pub(crate) fn windows_overlap(
    windows: &[WeeklyWindow],
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> bool {
    if to <= from {
        return false;
    }
    // Past a week every window has an occurrence inside; bound the walk.
    if to - from >= Duration::days(8) {
        return windows.iter().any(|w| !w.days.is_empty());
    }
    let mut day = from.date().pred_opt().unwrap_or(from.date());
    while day <= to.date() {
        if occurrences(windows, day).any(|(a, b)| a < to && from < b) {
            return true;
        }
        match day.succ_opt() {
            Some(next) => day = next,
            None => break,
        }
    }
    false
}

/// Nanoseconds from midnight, or `None` in a leap second.
fn nanos_of_day(t: NaiveDateTime) -> Option<i64> {
    let frac = t.nanosecond();
    (frac < 1_000_000_000)
        .then(|| i64::from(t.num_seconds_from_midnight()) * 1_000_000_000 + i64::from(frac))
}

/// A window's start and length, in nanoseconds.
fn start_and_length(w: &WeeklyWindow) -> (i64, i64) {
    (
        i64::from(w.from.minutes()) * MINUTE_NS,
        w.length_minutes() * MINUTE_NS,
    )
}

/// A local time prepared for [`in_windows_at`]: its weekday and nanoseconds since its
/// midnight.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    day: Weekday,
    ns: i64,
}

impl Clock {
    /// `t` prepared, or `None` when chrono must answer (a leap second, the first day of the
    /// calendar).
    pub(crate) fn new(t: NaiveDateTime) -> Option<Clock> {
        t.date().pred_opt()?;
        Some(Clock {
            day: t.weekday(),
            ns: nanos_of_day(t)?,
        })
    }

    /// [`in_windows_at`] at this time.
    pub(crate) fn in_windows(self, windows: &[WeeklyWindow]) -> bool {
        windows.iter().any(|w| {
            let (start, length) = start_and_length(w);
            // Occurrences starting the day before and the day itself.
            [(self.day.pred(), start - DAY_NS), (self.day, start)]
                .into_iter()
                .any(|(day, a)| w.days.contains(day) && a <= self.ns && self.ns < a + length)
        })
    }
}

/// A local interval `[from, to)` prepared for [`windows_overlap`]: nanoseconds from the
/// midnight starting `from`'s day, and the days whose occurrences can overlap it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Span {
    /// The weekday of the day before `from`'s (the first day walked).
    first: Weekday,
    /// How many days to walk: from the day before `from`'s to `to`'s day.
    days: i64,
    from: i64,
    to: i64,
}

impl Span {
    /// `[from, to)` prepared, or `None` when chrono must answer (an empty interval, one of
    /// eight days or more, a leap second, the ends of the calendar).
    pub(crate) fn new(from: NaiveDateTime, to: NaiveDateTime) -> Option<Span> {
        if to <= from || to - from >= Duration::days(8) {
            return None;
        }
        let first = from.date().pred_opt()?;
        to.date().succ_opt()?;
        let between = (to.date() - from.date()).num_days();
        Some(Span {
            first: first.weekday(),
            days: between + 2,
            from: nanos_of_day(from)?,
            to: between * DAY_NS + nanos_of_day(to)?,
        })
    }

    /// [`windows_overlap`] on this interval.
    pub(crate) fn overlaps(self, windows: &[WeeklyWindow]) -> bool {
        windows.iter().any(|w| {
            let (start, length) = start_and_length(w);
            let mut day = self.first;
            (0..self.days).any(|k| {
                let a = (k - 1) * DAY_NS + start;
                let hit = w.days.contains(day) && a < self.to && self.from < a + length;
                day = day.succ();
                hit
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expert::model::{ClockTime, Days};

    /// SplitMix64, seeded.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) % n
        }
    }

    fn window(r: &mut Rng) -> WeeklyWindow {
        let one = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][r.below(7) as usize];
        let days: Days = match r.below(4) {
            0 => Days::ALL,
            1 => "mon-fri".parse().unwrap(),
            2 => "fri-mon".parse().unwrap(),
            _ => one.parse().unwrap(),
        };
        // Whole hours often, so that times fall on window edges; 24:00 and from == to too.
        let time = |r: &mut Rng| match r.below(3) {
            0 => ClockTime::new(r.below(25) as u16, 0).unwrap(),
            _ => ClockTime::new(r.below(24) as u16, r.below(60) as u16).unwrap(),
        };
        WeeklyWindow {
            days,
            from: time(r),
            to: time(r),
        }
    }

    fn time(r: &mut Rng) -> NaiveDateTime {
        let day = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + Duration::days(r.below(21) as i64);
        let t = day.and_hms_opt(0, 0, 0).unwrap() + Duration::minutes(r.below(24 * 60) as i64);
        match r.below(3) {
            0 => t,
            1 => t + Duration::seconds(r.below(60) as i64),
            _ => t + Duration::nanoseconds(r.below(60_000_000_000) as i64),
        }
    }

    #[test]
    fn the_integer_checks_answer_as_chrono_does() {
        let mut r = Rng(14);
        let (mut inside, mut overlapping) = (0, 0);
        for _ in 0..20_000 {
            let windows: Vec<WeeklyWindow> = (0..r.below(4)).map(|_| window(&mut r)).collect();
            let t = time(&mut r);
            let want = in_windows_at(&windows, t);
            assert_eq!(
                Clock::new(t).unwrap().in_windows(&windows),
                want,
                "{t} {windows:?}"
            );
            inside += usize::from(want);
            let from = time(&mut r);
            let to = from + Duration::minutes(1 + r.below(3 * 24 * 60) as i64);
            let want = windows_overlap(&windows, from, to);
            assert_eq!(
                Span::new(from, to).unwrap().overlaps(&windows),
                want,
                "{from}–{to} {windows:?}"
            );
            overlapping += usize::from(want);
        }
        // Both answers occur often enough to mean something.
        assert!((2_000..18_000).contains(&inside), "{inside}");
        assert!((2_000..18_000).contains(&overlapping), "{overlapping}");
    }

    #[test]
    fn chrono_answers_where_integers_would_not() {
        let t = NaiveDate::from_ymd_opt(2026, 1, 1)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap();
        assert!(Span::new(t, t).is_none());
        assert!(Span::new(t, t - Duration::minutes(1)).is_none());
        assert!(Span::new(t, t + Duration::days(8)).is_none());
        assert!(Span::new(t, t + Duration::days(8) - Duration::minutes(1)).is_some());
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
            .unwrap()
            .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
            .unwrap();
        assert!(Clock::new(leap).is_none() && Span::new(leap, leap + Duration::hours(1)).is_none());
        assert!(Clock::new(NaiveDate::MIN.and_hms_opt(1, 0, 0).unwrap()).is_none());
    }
}
