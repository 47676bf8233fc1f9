//! The call's quality (STANDARDS RTC-20, RTC-21): samples of one media track (from a client's
//! `getStats()` or from the SFU's RTCP receiver reports), their per-session summary, and the
//! operational alert thresholds — RTT > 300 ms, loss > 5 % sustained 10 s, jitter > 50 ms, a
//! video freeze > 2 s.
//!
//! Pure: the media adapter feeds samples with their time, stores the [`Summary`] and tells the
//! room about each [`AlertChange`].

use serde::{Deserialize, Serialize};

/// One quality sample of one track. Every figure is optional (a client may not have it yet).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The track's id (browser `trackIdentifier`, or the SFU's track id).
    pub track: String,
    /// `audio` or `video`.
    pub kind: String,
    /// `inbound` (what the reporter receives) or `outbound` (what it sends).
    pub direction: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_pct: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitrate_kbps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<f64>,
    /// Time frozen since the previous sample (video).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_ms: Option<f64>,
}

/// How many samples a `stats` message may carry, and the longest track id.
pub const MAX_SAMPLES: usize = 32;
pub const MAX_TRACK_ID: usize = 128;

impl Sample {
    /// Why the sample is not acceptable, naming the field.
    pub fn check(&self) -> Result<(), String> {
        if self.track.is_empty() || self.track.len() > MAX_TRACK_ID {
            return Err(format!(
                "track: 1 to {MAX_TRACK_ID} characters, got {}",
                self.track.len()
            ));
        }
        if self.kind != "audio" && self.kind != "video" {
            return Err(format!("kind: audio or video, got {:?}", self.kind));
        }
        if self.direction != "inbound" && self.direction != "outbound" {
            return Err(format!(
                "direction: inbound or outbound, got {:?}",
                self.direction
            ));
        }
        for (name, v, max) in [
            ("rtt_ms", self.rtt_ms, 600_000.0),
            ("loss_pct", self.loss_pct, 100.0),
            ("jitter_ms", self.jitter_ms, 600_000.0),
            ("bitrate_kbps", self.bitrate_kbps, 1_000_000.0),
            ("fps", self.fps, 1_000.0),
            ("freeze_ms", self.freeze_ms, 86_400_000.0),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && (0.0..=max).contains(&v))
            {
                return Err(format!("{name}: a number from 0 to {max}, got {v}"));
            }
        }
        Ok(())
    }
}

/// A quality figure with an alert threshold (RTC-21).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Rtt,
    Loss,
    Jitter,
    Freeze,
}

impl Metric {
    pub const ALL: [Metric; 4] = [Metric::Rtt, Metric::Loss, Metric::Jitter, Metric::Freeze];

    pub fn code(self) -> &'static str {
        match self {
            Metric::Rtt => "rtt",
            Metric::Loss => "loss",
            Metric::Jitter => "jitter",
            Metric::Freeze => "freeze",
        }
    }

    /// The RTC-21 threshold, in the sample's unit (ms or %).
    pub fn threshold(self) -> f64 {
        match self {
            Metric::Rtt => 300.0,
            Metric::Loss => 5.0,
            Metric::Jitter => 50.0,
            Metric::Freeze => 2000.0,
        }
    }

    /// The figure of `s` this metric reads.
    pub fn value(self, s: &Sample) -> Option<f64> {
        match self {
            Metric::Rtt => s.rtt_ms,
            Metric::Loss => s.loss_pct,
            Metric::Jitter => s.jitter_ms,
            Metric::Freeze => s.freeze_ms,
        }
    }
}

/// How long loss must stay above its threshold before it alerts (RTC-21).
pub const LOSS_SUSTAINED_MS: i64 = 10_000;

/// An alert raised or cleared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertChange {
    pub metric: Metric,
    pub active: bool,
    /// The figure that raised or cleared it.
    pub value: f64,
    pub threshold: f64,
}

/// Running figures of one value: count, mean, maximum, last.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub n: u64,
    pub mean: f64,
    pub max: f64,
    pub last: f64,
}

impl Figure {
    fn add(&mut self, v: Option<f64>) {
        let Some(v) = v else { return };
        self.n += 1;
        self.mean += (v - self.mean) / self.n as f64;
        if self.n == 1 || v > self.max {
            self.max = v;
        }
        self.last = v;
    }
}

/// The per-session summary of one track as one reporter saw it (RTC-20): persisted with the
/// consultation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub samples: u64,
    /// Milliseconds since the epoch.
    pub first_at: i64,
    pub last_at: i64,
    pub rtt_ms: Figure,
    pub loss_pct: Figure,
    pub jitter_ms: Figure,
    pub bitrate_kbps: Figure,
    pub fps: Figure,
    /// Total time frozen.
    pub freeze_ms_total: f64,
    /// Alerts raised, per metric (rtt, loss, jitter, freeze).
    pub alerts: [u32; 4],
}

/// A track's summary and its alert state.
#[derive(Debug, Clone, Default)]
pub struct TrackQuality {
    pub summary: Summary,
    active: [bool; 4],
    /// Since when loss has been above its threshold.
    loss_since: Option<i64>,
}

impl TrackQuality {
    /// Adds a sample taken at `at` (ms); the alerts it raises or clears.
    pub fn add(&mut self, s: &Sample, at: i64) -> Vec<AlertChange> {
        let sum = &mut self.summary;
        if sum.samples == 0 {
            sum.first_at = at;
        }
        sum.samples += 1;
        sum.last_at = at;
        sum.rtt_ms.add(s.rtt_ms);
        sum.loss_pct.add(s.loss_pct);
        sum.jitter_ms.add(s.jitter_ms);
        sum.bitrate_kbps.add(s.bitrate_kbps);
        sum.fps.add(s.fps);
        sum.freeze_ms_total += s.freeze_ms.unwrap_or(0.0);
        let mut changes = Vec::new();
        for (i, m) in Metric::ALL.into_iter().enumerate() {
            let Some(v) = m.value(s) else { continue };
            let over = v > m.threshold();
            let raise = match m {
                Metric::Loss => {
                    if over {
                        let since = *self.loss_since.get_or_insert(at);
                        at - since >= LOSS_SUSTAINED_MS
                    } else {
                        self.loss_since = None;
                        false
                    }
                }
                _ => over,
            };
            if raise && !self.active[i] {
                self.active[i] = true;
                self.summary.alerts[i] += 1;
                changes.push(AlertChange {
                    metric: m,
                    active: true,
                    value: v,
                    threshold: m.threshold(),
                });
            } else if !over && self.active[i] {
                self.active[i] = false;
                changes.push(AlertChange {
                    metric: m,
                    active: false,
                    value: v,
                    threshold: m.threshold(),
                });
            }
        }
        changes
    }

    /// The metrics alerting now.
    pub fn active(&self) -> Vec<Metric> {
        Metric::ALL
            .into_iter()
            .enumerate()
            .filter(|(i, _)| self.active[*i])
            .map(|(_, m)| m)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(rtt: Option<f64>, loss: Option<f64>, jitter: Option<f64>, freeze: Option<f64>) -> Sample {
        Sample {
            track: "t".into(),
            kind: "video".into(),
            direction: "inbound".into(),
            rtt_ms: rtt,
            loss_pct: loss,
            jitter_ms: jitter,
            freeze_ms: freeze,
            ..Sample::default()
        }
    }

    #[test]
    fn rtt_jitter_and_freeze_alert_at_once_and_clear_below_the_threshold() {
        let mut q = TrackQuality::default();
        assert!(
            q.add(&s(Some(300.0), None, Some(50.0), Some(2000.0)), 0)
                .is_empty()
        );
        let up = q.add(&s(Some(301.0), None, Some(51.0), Some(2100.0)), 1000);
        let metrics: Vec<Metric> = up.iter().map(|c| c.metric).collect();
        assert_eq!(metrics, [Metric::Rtt, Metric::Jitter, Metric::Freeze]);
        assert!(up.iter().all(|c| c.active));
        // Still over: no new change; the count stays one per episode.
        assert!(
            q.add(&s(Some(400.0), None, Some(60.0), None), 2000)
                .is_empty()
        );
        let down = q.add(&s(Some(100.0), None, Some(10.0), Some(0.0)), 3000);
        assert_eq!(down.len(), 3);
        assert!(down.iter().all(|c| !c.active));
        assert_eq!(q.summary.alerts, [1, 0, 1, 1]);
        assert_eq!(q.summary.rtt_ms.max, 400.0);
        assert_eq!(q.summary.samples, 4);
        assert_eq!(q.summary.freeze_ms_total, 4100.0);
    }

    #[test]
    fn loss_alerts_only_when_sustained_ten_seconds() {
        let mut q = TrackQuality::default();
        assert!(q.add(&s(None, Some(8.0), None, None), 0).is_empty());
        assert!(q.add(&s(None, Some(9.0), None, None), 9_999).is_empty());
        // A dip resets the clock.
        assert!(q.add(&s(None, Some(1.0), None, None), 10_500).is_empty());
        assert!(q.add(&s(None, Some(7.0), None, None), 11_000).is_empty());
        assert!(q.add(&s(None, Some(7.0), None, None), 20_000).is_empty());
        let up = q.add(&s(None, Some(6.0), None, None), 21_000);
        assert_eq!(up.len(), 1);
        assert_eq!(up[0].metric, Metric::Loss);
        assert_eq!(q.active(), [Metric::Loss]);
    }

    #[test]
    fn a_bad_sample_names_its_field() {
        let mut bad = s(None, Some(120.0), None, None);
        assert!(bad.check().unwrap_err().starts_with("loss_pct"));
        bad.loss_pct = Some(f64::NAN);
        assert!(bad.check().unwrap_err().starts_with("loss_pct"));
        bad.loss_pct = None;
        bad.kind = "data".into();
        assert!(bad.check().unwrap_err().starts_with("kind"));
        assert!(s(Some(1.0), Some(0.0), None, None).check().is_ok());
    }
}
