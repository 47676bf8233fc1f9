//! The expert directory: who may be invited to a remote consultation, with the facts the hard
//! filters check (STANDARDS MATCH-01, CN-06, CN-11) and the state the scorer reads (MATCH-02),
//! and the cooperation agreements between facilities (CN-02).
//!
//! These serde shapes are the registry file format. YAML (read by the CLI with serde-saphyr)
//! looks like this; every struct denies unknown fields, so a misspelt key is an error, not a
//! silently ignored setting:
//!
//! ```yaml
//! version: 1
//! experts:
//!   - id: exp-0001
//!     name: 张明
//!     facility: H-PUMCH                 # the expert's registered (first) practice facility
//!     departments: ["03.02"]            # 诊疗科目 code (03.02 心血管内科专业) or a local code
//!     expertise: [I25, I20.0]           # ICD-10 codes or categories; I25 covers I25.1, I25.10
//!     title: 主任医师                   # or chief / associate chief / attending / resident
//!     independent_practice_since: 2008-07-01
//!     licence_verified: true            # CN-11 real-name / licence check done
//!     registration_active: true         # practice registration currently valid
//!     multi_site_filings: [H-PLATFORM]  # 多机构执业 filings: facilities where filed
//!     languages: [zh, yue]              # languages and dialects spoken
//!     schedule:
//!       on_call: true
//!       windows:
//!         - { days: mon-fri, from: "08:00", to: "12:00" }
//!         - { days: sat, from: "20:00", to: "08:00" }   # overnight: ends Sunday 08:00
//!     # Runtime state, normally kept by the store; optional in a registry file:
//!     presence: { last_heartbeat: 2026-01-15T00:00:00Z }
//!     load: { open_consultations: 2, sessions_today: 1 }
//!     response: { median_accept_seconds: 240, acceptance_rate: 0.9, count: 57 }
//! agreements:
//!   - id: AG-2025-001
//!     requesting_facility: H-COUNTY-1
//!     expert_facility: H-PUMCH
//!     kind: 医联体                      # or 专科联盟, 对口支援, 远程医疗协作网, other
//!     valid_from: 2025-01-01
//!     valid_to: 2027-12-31              # inclusive; leave out for open-ended
//! ```
//!
//! Schedule times are local wall-clock times in the matching's configured UTC offset
//! ([`MatchConfig::utc_offset_minutes`](super::MatchConfig), default +08:00, STANDARDS X-03).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc, Weekday};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::icd::IcdCode;

// ---------------------------------------------------------------------------------------------
// Title
// ---------------------------------------------------------------------------------------------

/// A physician's professional title (专业技术职务), ordered: resident < attending < associate
/// chief < chief. A case's minimum title is met by that title or any above it (MATCH-01).
///
/// Parsed from the Chinese name (`主任医师`, short `主任`), or English (`chief`, `chief
/// physician`, `chief-physician`; case, `-` and `_` do not matter). Serialised as the English
/// code `resident-physician`, `attending-physician`, `associate-chief-physician`,
/// `chief-physician` (the codes the reference scorer plugin reads).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Title {
    /// 住院医师.
    Resident,
    /// 主治医师.
    Attending,
    /// 副主任医师.
    AssociateChief,
    /// 主任医师.
    Chief,
}

/// Why a text is not a title.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a title (住院医师, 主治医师, 副主任医师, 主任医师, or resident, attending, \
     associate chief, chief)"
)]
pub struct TitleError(pub String);

impl Title {
    /// All titles, lowest first.
    pub const ALL: [Title; 4] = [
        Title::Resident,
        Title::Attending,
        Title::AssociateChief,
        Title::Chief,
    ];

    /// The Chinese name (`主任医师`).
    pub fn chinese(self) -> &'static str {
        match self {
            Title::Resident => "住院医师",
            Title::Attending => "主治医师",
            Title::AssociateChief => "副主任医师",
            Title::Chief => "主任医师",
        }
    }

    /// The English code (`chief-physician`), as serialised.
    pub fn code(self) -> &'static str {
        match self {
            Title::Resident => "resident-physician",
            Title::Attending => "attending-physician",
            Title::AssociateChief => "associate-chief-physician",
            Title::Chief => "chief-physician",
        }
    }

    /// The rank as a feature value: 1 (resident) … 4 (chief).
    pub fn rank(self) -> f64 {
        match self {
            Title::Resident => 1.0,
            Title::Attending => 2.0,
            Title::AssociateChief => 3.0,
            Title::Chief => 4.0,
        }
    }
}

impl FromStr for Title {
    type Err = TitleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let chinese = match t {
            "住院医师" | "住院医生" | "住院" => Some(Title::Resident),
            "主治医师" | "主治医生" | "主治" => Some(Title::Attending),
            "副主任医师" | "副主任医生" | "副主任" => Some(Title::AssociateChief),
            "主任医师" | "主任医生" | "主任" => Some(Title::Chief),
            _ => None,
        };
        if let Some(title) = chinese {
            return Ok(title);
        }
        let english: String = t
            .to_ascii_lowercase()
            .replace(['-', '_'], " ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let english = english
            .strip_suffix(" physician")
            .or_else(|| english.strip_suffix(" doctor"))
            .unwrap_or(&english);
        match english {
            "resident" => Ok(Title::Resident),
            "attending" => Ok(Title::Attending),
            "associate chief" => Ok(Title::AssociateChief),
            "chief" => Ok(Title::Chief),
            _ => Err(TitleError(t.to_owned())),
        }
    }
}

impl fmt::Display for Title {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.chinese())
    }
}

impl Serialize for Title {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Title {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// Schedule
// ---------------------------------------------------------------------------------------------

/// A set of weekdays, written `mon-fri`, `mon,wed,fri`, `sat`, `daily` (or `周一-周五`).
/// Ranges may wrap (`fri-mon`). Serialised in the English form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Days(u8);

/// Why a text is not a set of weekdays.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a set of days (e.g. mon-fri, mon,wed,fri, sat, daily, 周一-周五)")]
pub struct DaysError(pub String);

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn day_index(text: &str) -> Option<u8> {
    let t = text.trim().to_ascii_lowercase();
    let english = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    let chinese = ["一", "二", "三", "四", "五", "六", "日"];
    if let Some(i) = DAY_NAMES
        .iter()
        .zip(english)
        .position(|(short, long)| t == *short || t == long)
    {
        return u8::try_from(i).ok();
    }
    let rest = t.strip_prefix("周").or_else(|| t.strip_prefix("星期"))?;
    let rest = if rest == "天" { "日" } else { rest };
    chinese
        .iter()
        .position(|c| *c == rest)
        .and_then(|i| u8::try_from(i).ok())
}

impl Days {
    /// Every day of the week.
    pub const ALL: Days = Days(0x7f);

    /// True when the set holds `day`.
    pub fn contains(self, day: Weekday) -> bool {
        self.0 & (1 << day.num_days_from_monday()) != 0
    }

    /// True when no day is in the set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl FromStr for Days {
    type Err = DaysError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let bad = || DaysError(t.to_owned());
        if matches!(t.to_ascii_lowercase().as_str(), "daily" | "all" | "*") || t == "每天" {
            return Ok(Days::ALL);
        }
        let mut bits = 0u8;
        for part in t.split([',', '，', '、']) {
            let part = part.trim();
            match part.split_once(['-', '~', '至']) {
                Some((a, b)) => {
                    let (a, b) = (day_index(a).ok_or_else(bad)?, day_index(b).ok_or_else(bad)?);
                    let mut d = a;
                    loop {
                        bits |= 1 << d;
                        if d == b {
                            break;
                        }
                        d = (d + 1) % 7;
                    }
                }
                None => bits |= 1 << day_index(part).ok_or_else(bad)?,
            }
        }
        Ok(Days(bits))
    }
}

impl fmt::Display for Days {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Days::ALL {
            return f.write_str("daily");
        }
        let mut parts = Vec::new();
        let mut d = 0u8;
        while d < 7 {
            if self.0 & (1 << d) == 0 {
                d += 1;
                continue;
            }
            let start = d;
            while d + 1 < 7 && self.0 & (1 << (d + 1)) != 0 {
                d += 1;
            }
            let (a, b) = (DAY_NAMES[usize::from(start)], DAY_NAMES[usize::from(d)]);
            parts.push(if start == d {
                a.to_owned()
            } else {
                format!("{a}-{b}")
            });
            d += 1;
        }
        f.write_str(&parts.join(","))
    }
}

impl Serialize for Days {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Days {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A local wall-clock time of day, `HH:MM`, from `00:00` to `24:00` (the end of the day).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClockTime(u16);

/// Why a text is not a time of day.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a time of day HH:MM (00:00 to 24:00)")]
pub struct ClockTimeError(pub String);

impl ClockTime {
    /// `00:00`.
    pub const MIDNIGHT: ClockTime = ClockTime(0);

    /// The time `h:m`, or `None` past `24:00`.
    pub fn new(hour: u16, minute: u16) -> Option<ClockTime> {
        let m = hour.checked_mul(60)?.checked_add(minute)?;
        (minute < 60 && m <= 24 * 60).then_some(ClockTime(m))
    }

    /// Minutes since midnight.
    pub fn minutes(self) -> u16 {
        self.0
    }
}

impl FromStr for ClockTime {
    type Err = ClockTimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let bad = || ClockTimeError(t.to_owned());
        let (h, m) = t.split_once([':', '：']).ok_or_else(bad)?;
        let num = |x: &str| -> Result<u16, ClockTimeError> {
            if x.is_empty() || x.len() > 2 || !x.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            x.parse().map_err(|_| bad())
        };
        ClockTime::new(num(h)?, num(m)?).ok_or_else(bad)
    }
}

impl fmt::Display for ClockTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

impl Serialize for ClockTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ClockTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A recurring weekly window of availability: on each of `days`, from `from` to `to` local
/// time. When `to` is not after `from` the window runs overnight and ends the next day at `to`
/// (`from == to`: 24 hours).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeeklyWindow {
    /// The days the window starts on.
    pub days: Days,
    /// Local start time.
    pub from: ClockTime,
    /// Local end time (exclusive).
    pub to: ClockTime,
}

impl WeeklyWindow {
    /// Minutes from start to end (overnight windows end the next day).
    pub fn length_minutes(self) -> i64 {
        let (a, b) = (i64::from(self.from.minutes()), i64::from(self.to.minutes()));
        if b > a { b - a } else { b + 24 * 60 - a }
    }
}

/// When an expert takes consultations: weekly windows, and whether they are on the on-call
/// roster (reachable for urgent cases outside their windows, MATCH-01/MATCH-20).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Weekly availability windows.
    #[serde(default)]
    pub windows: Vec<WeeklyWindow>,
    /// On the on-call roster now: available for urgent cases whatever the windows say.
    #[serde(default)]
    pub on_call: bool,
}

// ---------------------------------------------------------------------------------------------
// Runtime state
// ---------------------------------------------------------------------------------------------

/// Whether the expert's client is connected: the time of the last heartbeat it sent.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Presence {
    /// The last heartbeat (UTC); none: never seen.
    #[serde(default)]
    pub last_heartbeat: Option<DateTime<Utc>>,
}

impl Presence {
    /// Online when the last heartbeat is at most `staleness_seconds` before `now` (a heartbeat
    /// slightly in the future, from clock skew, counts as online).
    pub fn is_online(&self, now: DateTime<Utc>, staleness_seconds: u32) -> bool {
        online(self.last_heartbeat, now, staleness_seconds)
    }
}

/// [`Presence::is_online`] on the last heartbeat alone.
pub(crate) fn online(
    last_heartbeat: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    staleness_seconds: u32,
) -> bool {
    last_heartbeat.is_some_and(|t| (now - t).num_seconds() <= i64::from(staleness_seconds))
}

/// The expert's current work: what the load cap and the load-aware ranking read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Consultations offered to or accepted by the expert and not yet finished.
    #[serde(default)]
    pub open_consultations: u32,
    /// Consultation sessions held (or booked) today.
    #[serde(default)]
    pub sessions_today: u32,
}

/// How the expert has answered offers so far (MATCH-02 scoring features).
#[derive(Clone, Copy, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseHistory {
    /// Median seconds from offer to acceptance; none without history.
    #[serde(default)]
    pub median_accept_seconds: Option<u32>,
    /// Share of offers accepted, 0 to 1; none without history.
    #[serde(default)]
    pub acceptance_rate: Option<f64>,
    /// Number of offers the two figures are computed from.
    #[serde(default)]
    pub count: u32,
}

// ---------------------------------------------------------------------------------------------
// Expert
// ---------------------------------------------------------------------------------------------

/// A physician who can be invited to consult (受邀方 physician), with everything the hard
/// filters check and the scoring reads. Holds no patient data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expert {
    /// Stable id (the Practitioner id in the store).
    pub id: String,
    /// Display name.
    pub name: String,
    /// The facility of the expert's registered practice.
    pub facility: String,
    /// Departments: national 诊疗科目 codes (`03.02`) or local codes. A case for `03` also
    /// matches an expert in `03.02` (a dotted code is a sub-department of its prefix).
    pub departments: Vec<String>,
    /// Declared expertise: ICD-10 codes or categories.
    #[serde(default)]
    pub expertise: Vec<IcdCode>,
    /// Professional title.
    pub title: Title,
    /// Start of independent clinical practice; years are counted against the matching's
    /// `today` (CN-06: at least 3).
    pub independent_practice_since: NaiveDate,
    /// The licence and real-name check has been done (CN-11).
    pub licence_verified: bool,
    /// The practice registration is currently active (CN-11).
    pub registration_active: bool,
    /// Facilities where a 多机构执业 (multi-site practice) filing exists.
    #[serde(default)]
    pub multi_site_filings: Vec<String>,
    /// Languages and dialects spoken (free codes: `zh`, `yue`, `ug`, …).
    #[serde(default)]
    pub languages: Vec<String>,
    /// Weekly windows and the on-call flag.
    #[serde(default)]
    pub schedule: Schedule,
    /// Last heartbeat (runtime state).
    #[serde(default)]
    pub presence: Presence,
    /// Current load (runtime state).
    #[serde(default)]
    pub load: Load,
    /// Response history (runtime state).
    #[serde(default)]
    pub response: ResponseHistory,
}

impl Expert {
    /// Whole years of independent practice on `today` (0 when the start is in the future).
    pub fn practice_years(&self, today: NaiveDate) -> u32 {
        practice_years_since(self.independent_practice_since, today)
    }

    /// True when one of the expert's departments is `department` or below it (`03` matches
    /// `03` and `03.02`, not `030`).
    pub fn in_department(&self, department: &str) -> bool {
        let want = department.trim();
        self.departments.iter().any(|d| {
            let d = d.trim();
            d == want
                || (d.len() > want.len() && d.starts_with(want) && d[want.len()..].starts_with('.'))
        })
    }

    /// True when the expert speaks `language` (case-insensitive).
    pub fn speaks(&self, language: &str) -> bool {
        let want = language.trim();
        self.languages
            .iter()
            .any(|l| l.trim().eq_ignore_ascii_case(want))
    }
}

/// Whole years from `since` to `today` (0 when `since` is later).
pub(crate) fn practice_years_since(since: NaiveDate, today: NaiveDate) -> u32 {
    today.years_since(since).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Agreements
// ---------------------------------------------------------------------------------------------

/// The kind of a cooperation agreement: the scorer's relationship priority comes from it.
///
/// Parsed from Chinese (`医联体`, `专科联盟`, `对口支援`, `远程医疗协作网`, `其他`) or the English
/// code it is serialised as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AgreementKind {
    /// 医联体: a medical consortium (closest partnership).
    MedicalConsortium,
    /// 专科联盟: a specialty alliance.
    SpecialtyAlliance,
    /// 对口支援: counterpart support (a senior hospital supporting a grassroots one).
    CounterpartSupport,
    /// 远程医疗协作网: a telemedicine network.
    TelemedicineNetwork,
    /// Any other 远程医疗合作协议.
    Other,
}

/// Why a text is not an agreement kind.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not an agreement kind (医联体, 专科联盟, 对口支援, 远程医疗协作网, 其他, or \
     medical-consortium, specialty-alliance, counterpart-support, telemedicine-network, other)"
)]
pub struct AgreementKindError(pub String);

impl AgreementKind {
    /// The English code, as serialised.
    pub fn code(self) -> &'static str {
        match self {
            AgreementKind::MedicalConsortium => "medical-consortium",
            AgreementKind::SpecialtyAlliance => "specialty-alliance",
            AgreementKind::CounterpartSupport => "counterpart-support",
            AgreementKind::TelemedicineNetwork => "telemedicine-network",
            AgreementKind::Other => "other",
        }
    }

    /// Relationship priority, 0 to 1: 医联体 1.0, 专科联盟 0.8, 对口支援 0.6, network 0.4,
    /// other 0.2 (the `relationship` feature).
    pub fn priority(self) -> f64 {
        match self {
            AgreementKind::MedicalConsortium => 1.0,
            AgreementKind::SpecialtyAlliance => 0.8,
            AgreementKind::CounterpartSupport => 0.6,
            AgreementKind::TelemedicineNetwork => 0.4,
            AgreementKind::Other => 0.2,
        }
    }
}

impl FromStr for AgreementKind {
    type Err = AgreementKindError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        Ok(
            match t.to_ascii_lowercase().replace(['_', ' '], "-").as_str() {
                "医联体" | "medical-consortium" => AgreementKind::MedicalConsortium,
                "专科联盟" | "specialty-alliance" => AgreementKind::SpecialtyAlliance,
                "对口支援" | "counterpart-support" => AgreementKind::CounterpartSupport,
                "远程医疗协作网" | "telemedicine-network" => {
                    AgreementKind::TelemedicineNetwork
                }
                "其他" | "other" => AgreementKind::Other,
                _ => return Err(AgreementKindError(t.to_owned())),
            },
        )
    }
}

impl Serialize for AgreementKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for AgreementKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A 远程医疗合作协议 (CN-02): the requesting facility may invite experts of the expert facility
/// between the two dates. Directional: requesting → expert facility.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agreement {
    /// The agreement id, stored on every ServiceRequest routed under it (CN-02).
    pub id: String,
    /// The inviting facility (邀请方).
    pub requesting_facility: String,
    /// The invited facility (受邀方).
    pub expert_facility: String,
    /// 医联体, 专科联盟, ….
    pub kind: AgreementKind,
    /// First day in force (local date).
    pub valid_from: NaiveDate,
    /// Last day in force, inclusive; none: open-ended.
    #[serde(default)]
    pub valid_to: Option<NaiveDate>,
}

impl Agreement {
    /// True when in force on the local date `day`.
    pub fn is_active_on(&self, day: NaiveDate) -> bool {
        self.valid_from <= day && self.valid_to.is_none_or(|to| day <= to)
    }
}

// ---------------------------------------------------------------------------------------------
// Registry file
// ---------------------------------------------------------------------------------------------

/// A registry file (YAML, see the module docs): the experts and agreements to import.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpertRegistry {
    /// Format version; 1.
    pub version: u32,
    /// The experts.
    #[serde(default)]
    pub experts: Vec<Expert>,
    /// The cooperation agreements.
    #[serde(default)]
    pub agreements: Vec<Agreement>,
}

impl ExpertRegistry {
    /// What serde cannot check: the version, unique ids, non-empty required texts, agreement
    /// dates in order, rates within 0..1. Every problem found, each naming the entry by its
    /// position and id.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.version != 1 {
            out.push(format!("version: {} is not supported (1)", self.version));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, e) in self.experts.iter().enumerate() {
            let at = format!("experts[{i}] (id `{}`)", e.id);
            out.extend(expert_problems(e).into_iter().map(|p| format!("{at}: {p}")));
            if !seen.insert(e.id.as_str()) {
                out.push(format!("{at}: the id is used twice"));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, a) in self.agreements.iter().enumerate() {
            let at = format!("agreements[{i}] (id `{}`)", a.id);
            for (name, v) in [
                ("id", &a.id),
                ("requesting_facility", &a.requesting_facility),
                ("expert_facility", &a.expert_facility),
            ] {
                if v.trim().is_empty() {
                    out.push(format!("{at}: {name} is empty"));
                }
            }
            if let Some(to) = a.valid_to
                && to < a.valid_from
            {
                out.push(format!(
                    "{at}: valid_to {to} is before valid_from {}",
                    a.valid_from
                ));
            }
            if !seen.insert(a.id.as_str()) {
                out.push(format!("{at}: the id is used twice"));
            }
        }
        out
    }
}

/// The checks serde cannot do on one expert (shared by the YAML registry and the CSV import).
pub(crate) fn expert_problems(e: &Expert) -> Vec<String> {
    let mut out = Vec::new();
    for (name, v) in [("id", &e.id), ("name", &e.name), ("facility", &e.facility)] {
        if v.trim().is_empty() {
            out.push(format!("{name} is empty"));
        }
    }
    if e.departments.iter().all(|d| d.trim().is_empty()) {
        out.push("departments: at least one department is needed".to_owned());
    }
    if let Some(r) = e.response.acceptance_rate
        && !(0.0..=1.0).contains(&r)
    {
        out.push(format!(
            "response.acceptance_rate: {r} is not between 0 and 1"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_ordered() {
        assert!(Title::Resident < Title::Attending);
        assert!(Title::Attending < Title::AssociateChief);
        assert!(Title::AssociateChief < Title::Chief);
        let mut v = vec![
            Title::Chief,
            Title::Resident,
            Title::AssociateChief,
            Title::Attending,
        ];
        v.sort();
        assert_eq!(v, Title::ALL);
    }

    #[test]
    fn titles_parse_in_chinese_and_english() {
        let check = |text: &str, t: Title| assert_eq!(text.parse::<Title>(), Ok(t), "{text}");
        check("住院医师", Title::Resident);
        check(" 主治医师 ", Title::Attending);
        check("副主任医师", Title::AssociateChief);
        check("主任医师", Title::Chief);
        check("副主任", Title::AssociateChief);
        check("主任", Title::Chief);
        check("resident", Title::Resident);
        check("Attending Physician", Title::Attending);
        check("associate chief", Title::AssociateChief);
        check("associate-chief-physician", Title::AssociateChief);
        check("ASSOCIATE_CHIEF", Title::AssociateChief);
        check("chief physician", Title::Chief);
        check("chief-physician", Title::Chief);
        for t in Title::ALL {
            check(t.chinese(), t);
            check(t.code(), t);
        }
        for bad in ["", "教授", "chief resident", "主任医师师", "associate"] {
            assert_eq!(
                bad.parse::<Title>(),
                Err(TitleError(bad.to_owned())),
                "{bad}"
            );
        }
        assert_eq!(
            serde_json::to_string(&Title::Chief).unwrap(),
            "\"chief-physician\""
        );
        assert_eq!(
            serde_json::from_str::<Title>("\"副主任医师\"").unwrap(),
            Title::AssociateChief
        );
    }

    #[test]
    fn days_parse_and_print() {
        let check = |text: &str, shown: &str| {
            let d: Days = text.parse().unwrap();
            assert_eq!(d.to_string(), shown, "{text}");
        };
        check("mon-fri", "mon-fri");
        check("Monday,wed , FRI", "mon,wed,fri");
        check("sat", "sat");
        check("daily", "daily");
        check("fri-mon", "mon,fri-sun");
        check("周一-周五", "mon-fri");
        check("星期六、星期日", "sat-sun");
        let d: Days = "mon-fri".parse().unwrap();
        assert!(d.contains(Weekday::Mon) && d.contains(Weekday::Fri) && !d.contains(Weekday::Sat));
        assert!("mon-funday".parse::<Days>().is_err());
        assert!("".parse::<Days>().is_err());
    }

    #[test]
    fn clock_times() {
        assert_eq!("08:30".parse::<ClockTime>().unwrap().minutes(), 510);
        assert_eq!("24:00".parse::<ClockTime>().unwrap().minutes(), 1440);
        assert_eq!("8:05".parse::<ClockTime>().unwrap().to_string(), "08:05");
        for bad in ["24:01", "12:60", "1230", "ab:cd", "-1:00", "123:00"] {
            assert!(bad.parse::<ClockTime>().is_err(), "{bad}");
        }
        let w = WeeklyWindow {
            days: Days::ALL,
            from: "20:00".parse().unwrap(),
            to: "08:00".parse().unwrap(),
        };
        assert_eq!(w.length_minutes(), 12 * 60);
    }

    #[test]
    fn practice_years_and_departments() {
        let e = sample();
        let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(e.practice_years(day("2011-06-30")), 2);
        assert_eq!(e.practice_years(day("2011-07-01")), 3);
        assert_eq!(e.practice_years(day("2000-01-01")), 0);
        assert!(e.in_department("03") && e.in_department("03.02") && e.in_department(" 03.02 "));
        assert!(!e.in_department("03.0") && !e.in_department("03.02.01") && !e.in_department("04"));
        assert!(e.speaks("YUE") && !e.speaks("ug"));
    }

    #[test]
    fn agreement_kinds_and_validity() {
        assert_eq!("医联体".parse(), Ok(AgreementKind::MedicalConsortium));
        assert_eq!(
            "specialty alliance".parse(),
            Ok(AgreementKind::SpecialtyAlliance)
        );
        assert!("friends".parse::<AgreementKind>().is_err());
        let a = Agreement {
            id: "AG-1".into(),
            requesting_facility: "A".into(),
            expert_facility: "B".into(),
            kind: AgreementKind::Other,
            valid_from: NaiveDate::from_ymd_opt(2025, 1, 1).unwrap(),
            valid_to: NaiveDate::from_ymd_opt(2025, 12, 31),
        };
        assert!(a.is_active_on(NaiveDate::from_ymd_opt(2025, 1, 1).unwrap()));
        assert!(a.is_active_on(NaiveDate::from_ymd_opt(2025, 12, 31).unwrap()));
        assert!(!a.is_active_on(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()));
        assert!(!a.is_active_on(NaiveDate::from_ymd_opt(2024, 12, 31).unwrap()));
    }

    pub(crate) fn sample() -> Expert {
        Expert {
            id: "exp-1".into(),
            name: "张明".into(),
            facility: "H-PUMCH".into(),
            departments: vec!["03.02".into()],
            expertise: vec![IcdCode::parse("I25").unwrap()],
            title: Title::Chief,
            independent_practice_since: NaiveDate::from_ymd_opt(2008, 7, 1).unwrap(),
            licence_verified: true,
            registration_active: true,
            multi_site_filings: vec![],
            languages: vec!["zh".into(), "yue".into()],
            schedule: Schedule::default(),
            presence: Presence::default(),
            load: Load::default(),
            response: ResponseHistory::default(),
        }
    }

    const YAML: &str = include_str!("registry-example.yaml");

    #[test]
    fn the_documented_yaml_parses_with_serde_saphyr() {
        let r: ExpertRegistry = serde_saphyr::from_str(YAML).unwrap();
        assert_eq!(r.problems(), Vec::<String>::new());
        assert_eq!(r.experts.len(), 1);
        let e = &r.experts[0];
        assert_eq!(e.title, Title::Chief);
        assert_eq!(e.expertise[1].to_string(), "I20.0");
        assert_eq!(e.schedule.windows.len(), 2);
        assert_eq!(e.schedule.windows[1].length_minutes(), 12 * 60);
        assert_eq!(e.response.median_accept_seconds, Some(240));
        assert_eq!(r.agreements[0].kind, AgreementKind::MedicalConsortium);
        assert_eq!(
            r.agreements[0].valid_to,
            NaiveDate::from_ymd_opt(2027, 12, 31)
        );
        // The module docs show the same file.
        let docs = include_str!("model.rs");
        for line in YAML.lines() {
            assert!(
                docs.contains(&format!("//! {line}").trim_end().to_owned()),
                "{line}"
            );
        }
    }

    #[test]
    fn unknown_yaml_keys_are_errors() {
        let bad = YAML.replace("    licence_verified: true", "    licence_verifed: true");
        let err = serde_saphyr::from_str::<ExpertRegistry>(&bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("licence_verifed"), "{err}");
        let bad = YAML.replace("    kind: 医联体", "    kind: 好朋友");
        let err = serde_saphyr::from_str::<ExpertRegistry>(&bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("好朋友"), "{err}");
    }

    #[test]
    fn registry_problems_name_the_entry() {
        let mut r: ExpertRegistry = serde_saphyr::from_str(YAML).unwrap();
        r.experts.push(r.experts[0].clone());
        r.experts[1].response.acceptance_rate = Some(1.5);
        r.agreements[0].valid_to = NaiveDate::from_ymd_opt(2020, 1, 1);
        let p = r.problems();
        assert_eq!(p.len(), 3, "{p:#?}");
        assert!(p[0].starts_with("experts[1] (id `exp-0001`): response.acceptance_rate: 1.5"));
        assert_eq!(p[1], "experts[1] (id `exp-0001`): the id is used twice");
        assert!(p[2].starts_with("agreements[0] (id `AG-2025-001`): valid_to 2020-01-01"));
    }
}
