//! Retention periods as enforced minimums per record class (STANDARDS CN-30): a class's period
//! can be set longer than the law's minimum, never shorter, and a record is due for deletion
//! only once both its own keep-until time and the class's period have passed.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Months, Utc};
use serde::{Deserialize, Serialize};

/// A record class of CN-30.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordClass {
    /// Internet-diagnosis medical records, managed as outpatient records: 15 years.
    MedicalRecord,
    /// Process records: text/image chat, audio and video (call recordings): 3 years.
    ProcessRecordAudioVideo,
    /// Inpatient records (a consultation that became part of an inpatient chart): 30 years.
    InpatientRecord,
    /// Network and security logs (the audit trail): 6 months.
    SecurityLog,
    /// PIPL impact-assessment reports and processing records: 3 years.
    PiaRecord,
}

impl RecordClass {
    /// Every class.
    pub const ALL: [RecordClass; 5] = [
        RecordClass::MedicalRecord,
        RecordClass::ProcessRecordAudioVideo,
        RecordClass::InpatientRecord,
        RecordClass::SecurityLog,
        RecordClass::PiaRecord,
    ];

    /// The code as written in YAML and stored on records.
    pub fn code(self) -> &'static str {
        match self {
            RecordClass::MedicalRecord => "medical-record",
            RecordClass::ProcessRecordAudioVideo => "process-record-audio-video",
            RecordClass::InpatientRecord => "inpatient-record",
            RecordClass::SecurityLog => "security-log",
            RecordClass::PiaRecord => "pia-record",
        }
    }

    /// The class of a stored code.
    pub fn from_code(code: &str) -> Option<RecordClass> {
        RecordClass::ALL
            .into_iter()
            .find(|c| c.code() == code.trim())
    }

    /// The law's minimum, in months.
    pub fn minimum_months(self) -> u32 {
        match self {
            RecordClass::MedicalRecord => 15 * 12,
            RecordClass::ProcessRecordAudioVideo => 3 * 12,
            RecordClass::InpatientRecord => 30 * 12,
            RecordClass::SecurityLog => 6,
            RecordClass::PiaRecord => 3 * 12,
        }
    }
}

impl fmt::Display for RecordClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One class's setting: how long its records are kept (at least the law's minimum).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassRetention {
    /// Months from the record's time (a recording's start).
    pub keep_months: u32,
}

/// `compliance.retention`: per class, checked against the law.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    months: BTreeMap<RecordClass, u32>,
}

/// A retention setting below the law: the path, the class and its minimum.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{path}: {keep} months is below the minimum of {minimum} months for {class} records (CN-30)"
)]
pub struct RetentionError {
    /// The setting's path.
    pub path: String,
    /// The class.
    pub class: RecordClass,
    /// What was set.
    pub keep: u32,
    /// The law's minimum.
    pub minimum: u32,
}

/// Whether a record may be deleted now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "kebab-case")]
pub enum Disposal {
    /// Its period is over: it may be deleted.
    Due {
        /// When it became due.
        since: DateTime<Utc>,
    },
    /// Kept until then (CN-30).
    Kept {
        /// The earliest time it may be deleted.
        until: DateTime<Utc>,
    },
}

impl RetentionPolicy {
    /// The policy of `settings` (class → setting), each at least the law's minimum.
    pub fn new(
        settings: &BTreeMap<RecordClass, ClassRetention>,
        at: &str,
    ) -> Result<RetentionPolicy, RetentionError> {
        let mut months = BTreeMap::new();
        for (class, s) in settings {
            if s.keep_months < class.minimum_months() {
                return Err(RetentionError {
                    path: format!("{at}.{class}.keep_months"),
                    class: *class,
                    keep: s.keep_months,
                    minimum: class.minimum_months(),
                });
            }
            months.insert(*class, s.keep_months);
        }
        Ok(RetentionPolicy { months })
    }

    /// The period of `class`, in months: the setting, else the law's minimum.
    pub fn months(&self, class: RecordClass) -> u32 {
        self.months
            .get(&class)
            .copied()
            .unwrap_or_else(|| class.minimum_months())
            .max(class.minimum_months())
    }

    /// Whether a record of `class` made at `at`, stored with `retain_until` (the minimum it was
    /// written with, if any), may be deleted at `now`: only once both the class's period from
    /// `at` and `retain_until` have passed.
    pub fn disposal(
        &self,
        class: RecordClass,
        at: DateTime<Utc>,
        retain_until: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Disposal {
        let period = at
            .checked_add_months(Months::new(self.months(class)))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let until = retain_until.map_or(period, |r| r.max(period));
        if now >= until {
            Disposal::Due { since: until }
        } else {
            Disposal::Kept { until }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// Each class: kept one day before its minimum, due on it; a longer setting moves it; a
    /// shorter one is refused with CN-30.
    #[test]
    fn each_class_is_kept_its_minimum_and_never_less() {
        let p = RetentionPolicy::default();
        let made = t("2020-01-15T10:00:00Z");
        for (class, years_months) in [
            (RecordClass::MedicalRecord, (15, 0)),
            (RecordClass::ProcessRecordAudioVideo, (3, 0)),
            (RecordClass::InpatientRecord, (30, 0)),
            (RecordClass::SecurityLog, (0, 6)),
            (RecordClass::PiaRecord, (3, 0)),
        ] {
            let due = made
                .checked_add_months(Months::new(years_months.0 * 12 + years_months.1))
                .unwrap();
            assert_eq!(
                p.disposal(class, made, None, due - chrono::TimeDelta::days(1)),
                Disposal::Kept { until: due },
                "{class}"
            );
            assert_eq!(
                p.disposal(class, made, None, due),
                Disposal::Due { since: due },
                "{class}"
            );
            assert_eq!(RecordClass::from_code(class.code()), Some(class));
            let short = ClassRetention {
                keep_months: class.minimum_months() - 1,
            };
            let e = RetentionPolicy::new(&BTreeMap::from([(class, short)]), "compliance.retention")
                .unwrap_err();
            assert!(e.to_string().contains("(CN-30)"), "{e}");
            assert_eq!(e.path, format!("compliance.retention.{class}.keep_months"));
        }
        let longer = RetentionPolicy::new(
            &BTreeMap::from([(
                RecordClass::ProcessRecordAudioVideo,
                ClassRetention { keep_months: 60 },
            )]),
            "compliance.retention",
        )
        .unwrap();
        // A two-year-old recording is kept; a four-year-old one too under a 5-year setting.
        let now = t("2026-12-06T00:00:00Z");
        let class = RecordClass::ProcessRecordAudioVideo;
        assert!(matches!(
            p.disposal(class, t("2024-12-01T00:00:00Z"), None, now),
            Disposal::Kept { .. }
        ));
        assert!(matches!(
            p.disposal(class, t("2022-11-01T00:00:00Z"), None, now),
            Disposal::Due { .. }
        ));
        assert!(matches!(
            longer.disposal(class, t("2022-11-01T00:00:00Z"), None, now),
            Disposal::Kept { .. }
        ));
        // A stored keep-until later than the period holds it.
        assert_eq!(
            p.disposal(
                class,
                t("2022-11-01T00:00:00Z"),
                Some(t("2027-01-01T00:00:00Z")),
                now
            ),
            Disposal::Kept {
                until: t("2027-01-01T00:00:00Z")
            }
        );
    }
}
