//! Call counters and a lock-free latency histogram (log-linear buckets: four per power of two,
//! so a quantile is within 19 % of the true value), shared by every version of one plugin.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const SUB: u32 = 4;
const BUCKETS: usize = 64 * SUB as usize;

/// Calls, errors and latency of one plugin (across its versions).
pub struct Stats {
    calls: AtomicU64,
    errors: AtomicU64,
    /// Bytes the plugin printed that did not reach the log (no `log` capability, or over the
    /// per-call limit).
    output_dropped: AtomicU64,
    buckets: Box<[AtomicU64]>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            output_dropped: AtomicU64::new(0),
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats")
            .field("calls", &self.calls())
            .field("errors", &self.errors())
            .field("output_dropped", &self.output_dropped())
            .finish()
    }
}

fn bucket(ns: u64) -> usize {
    let ns = ns.max(1);
    let log = 63 - ns.leading_zeros();
    let sub = if log >= 2 {
        ((ns >> (log - 2)) & 3) as u32
    } else {
        0
    };
    (log * SUB + sub) as usize
}

/// The upper bound of a bucket, in nanoseconds.
fn upper(i: usize) -> u64 {
    let log = i as u32 / SUB;
    let sub = i as u64 % SUB as u64;
    if log < 2 {
        return 1 << (log + 1);
    }
    (1u64 << log) + ((sub + 1) << (log - 2))
}

impl Stats {
    pub fn record(&self, elapsed: Duration, ok: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket(ns).min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Counts printed bytes that were dropped instead of logged.
    pub fn record_dropped_output(&self, bytes: u64) {
        if bytes > 0 {
            self.output_dropped.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Bytes the plugin printed that did not reach the log: all it printed without the `log`
    /// capability, and what went past the per-call limit with it.
    pub fn output_dropped(&self) -> u64 {
        self.output_dropped.load(Ordering::Relaxed)
    }

    /// The latency below which `q` (0..=1) of the calls fell, or `None` before the first call.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_nanos(upper(i)));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_bound_their_values() {
        for ns in [1u64, 2, 3, 5, 7, 100, 999, 1_000, 1_234_567, 50_000_000] {
            let b = bucket(ns);
            assert!(upper(b) >= ns, "{ns} in bucket {b} up to {}", upper(b));
            assert!(
                upper(b) as f64 <= (ns as f64) * 1.5 + 2.0,
                "{ns}: {}",
                upper(b)
            );
        }
    }

    #[test]
    fn quantiles_follow_the_calls() {
        let s = Stats::default();
        assert_eq!(s.quantile(0.5), None);
        for _ in 0..98 {
            s.record(Duration::from_micros(2), true);
        }
        s.record(Duration::from_millis(40), false);
        s.record(Duration::from_millis(40), false);
        let p50 = s.quantile(0.5).unwrap();
        assert!(
            p50 >= Duration::from_micros(2) && p50 < Duration::from_micros(3),
            "{p50:?}"
        );
        let p99 = s.quantile(0.99).unwrap();
        assert!(p99 >= Duration::from_millis(40), "{p99:?}");
        assert_eq!((s.calls(), s.errors()), (100, 2));
    }
}
