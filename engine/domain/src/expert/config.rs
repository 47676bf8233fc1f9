//! Matching settings: the thresholds of the hard filters and the size of the selection. Stored
//! in every decision so that it can be replayed (MATCH-31).

use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

/// How matching filters and selects. Every field has a default; YAML/JSON keys not listed here
/// are errors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchConfig {
    /// Format version; 1.
    pub version: u32,
    /// How many ranked candidates are selected (offered, in order). Default 3.
    pub top_n: usize,
    /// Minimum whole years of independent practice (CN-06: 3).
    pub min_practice_years: u32,
    /// An expert is online when the last heartbeat is at most this old. Default 300 s.
    pub presence_staleness_seconds: u32,
    /// Load cap: an expert with this many open consultations is excluded, so work goes to
    /// equally qualified colleagues (MATCH-30). Default 5.
    pub max_open_consultations: u32,
    /// Optional cap on today's sessions; none: no cap.
    pub max_sessions_today: Option<u32>,
    /// The platform's (internet hospital's) facility: an expert registered elsewhere needs a
    /// 多机构执业 filing there when `require_multi_site_filing` is on (CN-11).
    pub platform_facility: Option<String>,
    /// Require the multi-site filing at `platform_facility` for experts registered elsewhere.
    pub require_multi_site_filing: bool,
    /// The local time zone of schedules and agreement dates, minutes east of UTC (default 480,
    /// +08:00, STANDARDS X-03). From −1439 to 1439.
    pub utc_offset_minutes: i32,
}

impl Default for MatchConfig {
    fn default() -> Self {
        MatchConfig {
            version: 1,
            top_n: 3,
            min_practice_years: 3,
            presence_staleness_seconds: 300,
            max_open_consultations: 5,
            max_sessions_today: None,
            platform_facility: None,
            require_multi_site_filing: false,
            utc_offset_minutes: 8 * 60,
        }
    }
}

/// A setting out of range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("match config: {0}")]
pub struct ConfigError(pub String);

impl MatchConfig {
    /// Checks the ranges serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.version != 1 {
            return Err(ConfigError(format!(
                "version {} is not supported (1)",
                self.version
            )));
        }
        if self.offset().is_none() {
            return Err(ConfigError(format!(
                "utc_offset_minutes {} is not between -1439 and 1439",
                self.utc_offset_minutes
            )));
        }
        if self.require_multi_site_filing
            && self
                .platform_facility
                .as_deref()
                .is_none_or(|p| p.trim().is_empty())
        {
            return Err(ConfigError(
                "require_multi_site_filing needs platform_facility".to_owned(),
            ));
        }
        Ok(())
    }

    /// The local offset, if valid.
    pub fn offset(&self) -> Option<FixedOffset> {
        FixedOffset::east_opt(self.utc_offset_minutes.checked_mul(60)?)
    }

    /// `t` as local wall-clock time (UTC when the offset is invalid; `validate` refuses that).
    pub fn local(&self, t: DateTime<Utc>) -> NaiveDateTime {
        match self.offset() {
            Some(o) => t.with_timezone(&o).naive_local(),
            None => t.naive_utc(),
        }
    }
}
