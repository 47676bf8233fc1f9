//! The NHSA message id (STANDARDS CN-61): 定点医药机构编号 (12) + `yyyyMMddHHmmss` (14, the
//! institution's local time) + a sequence (4) = 30 characters, unique, and the idempotency key
//! of every request.
//!
//! Uniqueness across restarts and processes comes from a persisted [`MsgIdCursor`]: the last
//! second and sequence handed out. [`next_msgid`] never goes back: in the same second (or when
//! the clock stepped back) it takes the next sequence number, and after 9999 it borrows the
//! next second, so ids stay unique and ordered whatever the clock does. The store keeps one
//! cursor per institution and advances it in one transaction per allocation.

use std::fmt;

use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};

/// A well-formed 30-character msgid.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MsgId(String);

/// Why a text is not a msgid or an institution code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MsgIdError {
    /// Not 12 ASCII letters or digits.
    #[error("institution code `{0}` is not 12 ASCII letters or digits (定点医药机构编号)")]
    Institution(String),
    /// Not 30 characters of the right shape.
    #[error("msgid `{0}` is not 12 letters or digits + 14 digits of time + 4 digits of sequence")]
    Shape(String),
    /// The time part is not a date and time.
    #[error("msgid `{0}` has no valid yyyyMMddHHmmss in characters 13 to 26")]
    Time(String),
    /// The time is out of range for the format (before year 1000 or after 9999).
    #[error("{0} cannot be written as yyyyMMddHHmmss")]
    Range(DateTime<Utc>),
}

/// Checks a 定点医药机构编号: 12 ASCII letters or digits.
pub fn check_institution(code: &str) -> Result<(), MsgIdError> {
    if code.len() == 12 && code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(MsgIdError::Institution(code.to_owned()))
    }
}

impl MsgId {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The institution code (characters 1 to 12).
    pub fn institution(&self) -> &str {
        &self.0[..12]
    }

    /// The local time part (characters 13 to 26).
    pub fn stamp(&self) -> &str {
        &self.0[12..26]
    }

    /// The sequence (characters 27 to 30).
    pub fn sequence(&self) -> u16 {
        self.0[26..].parse().unwrap_or(0)
    }
}

impl TryFrom<String> for MsgId {
    type Error = MsgIdError;
    fn try_from(s: String) -> Result<MsgId, MsgIdError> {
        if s.len() != 30
            || !s.is_ascii()
            || check_institution(&s[..12]).is_err()
            || !s[12..].bytes().all(|b| b.is_ascii_digit())
        {
            return Err(MsgIdError::Shape(s));
        }
        if chrono::NaiveDateTime::parse_from_str(&s[12..26], "%Y%m%d%H%M%S").is_err() {
            return Err(MsgIdError::Time(s));
        }
        Ok(MsgId(s))
    }
}

impl std::str::FromStr for MsgId {
    type Err = MsgIdError;
    fn from_str(s: &str) -> Result<MsgId, MsgIdError> {
        MsgId::try_from(s.to_owned())
    }
}

impl From<MsgId> for String {
    fn from(m: MsgId) -> String {
        m.0
    }
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The last id handed out for one institution: the Unix second of its time part and its
/// sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsgIdCursor {
    /// Unix seconds.
    pub second: i64,
    /// 0 … 9999.
    pub seq: u16,
}

/// Sequences per second.
pub const SEQ_PER_SECOND: u16 = 10_000;

/// The next msgid for `institution` at `now`, after `last` (none: the first ever), written in
/// the institution's local time `offset`; and the cursor to persist.
pub fn next_msgid(
    institution: &str,
    last: Option<MsgIdCursor>,
    now: DateTime<Utc>,
    offset: FixedOffset,
) -> Result<(MsgId, MsgIdCursor), MsgIdError> {
    check_institution(institution)?;
    let now_s = now.timestamp();
    let cursor = match last {
        Some(l) if now_s <= l.second => {
            if l.seq + 1 < SEQ_PER_SECOND {
                MsgIdCursor {
                    second: l.second,
                    seq: l.seq + 1,
                }
            } else {
                MsgIdCursor {
                    second: l.second + 1,
                    seq: 0,
                }
            }
        }
        _ => MsgIdCursor {
            second: now_s,
            seq: 0,
        },
    };
    let at = DateTime::<Utc>::from_timestamp(cursor.second, 0)
        .ok_or(MsgIdError::Range(now))?
        .with_timezone(&offset);
    let stamp = at.format("%Y%m%d%H%M%S").to_string();
    if stamp.len() != 14 {
        return Err(MsgIdError::Range(now));
    }
    let id = MsgId::try_from(format!("{institution}{stamp}{:04}", cursor.seq))?;
    Ok((id, cursor))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const INST: &str = "H44010600001";

    fn beijing() -> FixedOffset {
        FixedOffset::east_opt(8 * 3600).unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn the_cn61_shape_in_local_time() {
        let (id, c) = next_msgid(INST, None, at("2026-01-15T02:30:05Z"), beijing()).unwrap();
        assert_eq!(id.as_str(), "H44010600001202601151030050000");
        assert_eq!(id.as_str().len(), 30);
        assert_eq!(
            (id.institution(), id.stamp(), id.sequence()),
            (INST, "20260115103005", 0)
        );
        let (id2, _) = next_msgid(INST, Some(c), at("2026-01-15T02:30:05Z"), beijing()).unwrap();
        assert_eq!(id2.as_str(), "H44010600001202601151030050001");
    }

    #[test]
    fn never_repeats_when_the_clock_stalls_or_steps_back() {
        let mut seen = HashSet::new();
        let mut cursor = None;
        let t = at("2026-01-15T02:30:05Z");
        // 25,000 ids in "one second", then the clock steps back an hour.
        for i in 0..25_000 {
            let now = if i < 20_000 {
                t
            } else {
                t - chrono::TimeDelta::hours(1)
            };
            let (id, c) = next_msgid(INST, cursor, now, beijing()).unwrap();
            assert!(seen.insert(id.clone()), "{id} repeated");
            if let Some(prev) = cursor {
                assert!((c.second, c.seq) > (prev.second, prev.seq));
            }
            cursor = Some(c);
        }
        // Resuming from the persisted cursor (a restart) continues after it.
        let (id, _) = next_msgid(INST, cursor, t, beijing()).unwrap();
        assert!(!seen.contains(&id));
    }

    #[test]
    fn bad_codes_and_ids_are_refused() {
        assert!(next_msgid("H4401", None, at("2026-01-15T02:30:05Z"), beijing()).is_err());
        assert!(next_msgid("H4401060000-", None, at("2026-01-15T02:30:05Z"), beijing()).is_err());
        for bad in [
            "",
            "H44010600001202601151030050",
            "H44010600001202613151030050000",
            "H4401060000120260115103005000x",
            "H44010600001 02601151030050000",
        ] {
            assert!(bad.parse::<MsgId>().is_err(), "{bad}");
        }
        assert!("H44010600001202601151030050000".parse::<MsgId>().is_ok());
    }
}
