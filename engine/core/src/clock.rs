//! The engine's clock, as a port: the consultation workflow takes every "now" from a [`Clock`]
//! (offer deadlines, timer due times, the time stamped on events), never from the system
//! directly, so a test can drive ten minutes of SLA in milliseconds with a [`FakeClock`] and a
//! restart test can start the second engine "later".
//!
//! The store holds the clock ([`crate::store::Store::with_clock`]); the engine sets it at start
//! ([`crate::Engine::start_with_clock`]). The journal and the audit trail keep using the system
//! time: they record when something really happened on this machine.

use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};

/// Where "now" comes from.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to: tests set it and advance it.
#[derive(Debug)]
pub struct FakeClock {
    now: Mutex<DateTime<Utc>>,
}

impl FakeClock {
    /// A clock standing at `at`.
    pub fn new(at: DateTime<Utc>) -> FakeClock {
        FakeClock {
            now: Mutex::new(at),
        }
    }

    /// Moves the clock forward by `by` (backwards for a negative delta).
    pub fn advance(&self, by: TimeDelta) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }

    /// Sets the clock to `at`.
    pub fn set(&self, at: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Milliseconds since the epoch, rounded up: a deadline stored as a due time is never earlier
/// than the deadline itself (the sweep would otherwise find it due a fraction early).
pub fn ceil_ms(t: DateTime<Utc>) -> i64 {
    let ms = t.timestamp_millis();
    if t.timestamp_subsec_nanos().is_multiple_of(1_000_000) {
        ms
    } else {
        ms + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_fake_clock_moves_only_when_told() {
        let t0 = Utc.with_ymd_and_hms(2026, 3, 2, 8, 0, 0).unwrap();
        let c = FakeClock::new(t0);
        assert_eq!(c.now(), t0);
        c.advance(TimeDelta::minutes(10));
        assert_eq!(c.now(), t0 + TimeDelta::minutes(10));
        c.set(t0);
        assert_eq!(c.now(), t0);
    }

    #[test]
    fn due_times_round_up() {
        let t = Utc.timestamp_opt(10, 1).unwrap();
        assert_eq!(ceil_ms(t), 10_001);
        let t = Utc.timestamp_opt(10, 2_000_000).unwrap();
        assert_eq!(ceil_ms(t), 10_002);
    }
}
