//! The hard filters (STANDARDS MATCH-01): an expert either passes all of them or is excluded
//! with every failed constraint recorded as a machine-readable [`ReasonCode`] plus a text for
//! people. Run on every candidate the index returns, so the index only has to narrow, never to
//! decide.
//!
//! | code | constraint |
//! |---|---|
//! | `department-mismatch` | in the case's department (or below it: `03` accepts `03.02`) |
//! | `expertise-mismatch` | with an ICD-10 code in the case: expertise in its category |
//! | `title-below-minimum` | title ≥ the case's minimum title |
//! | `licence-not-verified` | licence / real-name verification done (CN-11) |
//! | `registration-inactive` | practice registration active (CN-11) |
//! | `practice-under-minimum-years` | ≥ 3 years of independent practice on today's date (CN-06) |
//! | `multi-site-filing-missing` | when required: a 多机构执业 filing at the platform facility |
//! | `no-active-agreement` | another facility: a cooperation agreement in force today (CN-02) |
//! | `outside-schedule` | urgent: inside a schedule window now, or on call |
//! | `offline` | urgent: a fresh heartbeat, or on call |
//! | `no-window-overlap` | a requested window: some schedule window overlaps it |
//! | `same-facility` | external opinion required: another facility than the requester |
//! | `excluded-doctor` | not in the case's exclusion list (e.g. the prior treating doctor) |
//! | `at-load-cap` | below the load cap (open consultations, optionally today's sessions) |
//!
//! A routine case without a window does not need the expert online: the offer waits for them.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use super::case::{CaseRequest, Urgency};
use super::config::MatchConfig;
use super::icd::{Specificity, best_specificity};
use super::model::{Agreement, Expert, Schedule};

/// Why an expert was excluded: a stable machine-readable code (kebab-case in JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReasonCode {
    /// Not in the requested department.
    DepartmentMismatch,
    /// No declared expertise in the case's ICD-10 category.
    ExpertiseMismatch,
    /// Title below the case's minimum.
    TitleBelowMinimum,
    /// Licence / real-name verification not done (CN-11).
    LicenceNotVerified,
    /// Practice registration not active (CN-11).
    RegistrationInactive,
    /// Fewer years of independent practice than required (CN-06).
    PracticeUnderMinimumYears,
    /// No multi-site practice filing at the platform facility (CN-11).
    MultiSiteFilingMissing,
    /// No cooperation agreement in force between the facilities (CN-02).
    NoActiveAgreement,
    /// Urgent case: outside the schedule windows and not on call.
    OutsideSchedule,
    /// Urgent case: no recent heartbeat and not on call.
    Offline,
    /// No schedule window overlaps the requested window.
    NoWindowOverlap,
    /// Same facility as the requester, and an external opinion is required.
    SameFacility,
    /// Excluded by the case (e.g. the patient's prior treating doctor).
    ExcludedDoctor,
    /// At the per-expert load cap.
    AtLoadCap,
}

impl ReasonCode {
    /// Every code, in filter order.
    pub const ALL: [ReasonCode; 14] = [
        ReasonCode::DepartmentMismatch,
        ReasonCode::ExpertiseMismatch,
        ReasonCode::TitleBelowMinimum,
        ReasonCode::LicenceNotVerified,
        ReasonCode::RegistrationInactive,
        ReasonCode::PracticeUnderMinimumYears,
        ReasonCode::MultiSiteFilingMissing,
        ReasonCode::NoActiveAgreement,
        ReasonCode::OutsideSchedule,
        ReasonCode::Offline,
        ReasonCode::NoWindowOverlap,
        ReasonCode::SameFacility,
        ReasonCode::ExcludedDoctor,
        ReasonCode::AtLoadCap,
    ];

    /// The kebab-case code, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::DepartmentMismatch => "department-mismatch",
            ReasonCode::ExpertiseMismatch => "expertise-mismatch",
            ReasonCode::TitleBelowMinimum => "title-below-minimum",
            ReasonCode::LicenceNotVerified => "licence-not-verified",
            ReasonCode::RegistrationInactive => "registration-inactive",
            ReasonCode::PracticeUnderMinimumYears => "practice-under-minimum-years",
            ReasonCode::MultiSiteFilingMissing => "multi-site-filing-missing",
            ReasonCode::NoActiveAgreement => "no-active-agreement",
            ReasonCode::OutsideSchedule => "outside-schedule",
            ReasonCode::Offline => "offline",
            ReasonCode::NoWindowOverlap => "no-window-overlap",
            ReasonCode::SameFacility => "same-facility",
            ReasonCode::ExcludedDoctor => "excluded-doctor",
            ReasonCode::AtLoadCap => "at-load-cap",
        }
    }

    /// True for the regulatory constraints (CN-02, CN-06, CN-11): overriding one of them is a
    /// compliance matter, not a preference, and the override says so.
    pub fn is_regulatory(self) -> bool {
        matches!(
            self,
            ReasonCode::LicenceNotVerified
                | ReasonCode::RegistrationInactive
                | ReasonCode::PracticeUnderMinimumYears
                | ReasonCode::MultiSiteFilingMissing
                | ReasonCode::NoActiveAgreement
        )
    }
}

/// One failed constraint: the code and a text for people (no patient data).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    /// The machine-readable code.
    pub code: ReasonCode,
    /// What was wrong, for the coordinator and the explanation.
    pub text: String,
}

/// An expert that passed every hard filter, with what the filters learnt on the way.
#[derive(Clone, Copy, Debug)]
pub struct Eligible<'a> {
    /// The expert.
    pub expert: &'a Expert,
    /// How well the expertise fits the case code.
    pub specificity: Specificity,
    /// The agreement the case is routed under; none for the requester's own facility.
    pub agreement: Option<&'a Agreement>,
    /// Whole years of independent practice today.
    pub practice_years: u32,
}

/// The relationship priority of a routing: the agreement's kind, or 1.0 within the
/// requester's own facility.
pub fn relationship(agreement: Option<&Agreement>) -> (f64, &'static str) {
    match agreement {
        Some(a) => (a.kind.priority(), a.kind.code()),
        None => (1.0, "same-facility"),
    }
}

/// The best agreement in force on the local date of `now` from `requesting` to `expert`:
/// the closest kind, then the smallest id (deterministic).
pub fn active_agreement<'a>(
    agreements: &'a [Agreement],
    requesting: &str,
    expert_facility: &str,
    today: NaiveDate,
) -> Option<&'a Agreement> {
    agreements
        .iter()
        .filter(|a| {
            a.requesting_facility.trim() == requesting.trim()
                && a.expert_facility.trim() == expert_facility.trim()
                && a.is_active_on(today)
        })
        .min_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)))
}

/// Runs every hard filter on one expert. `agreements` are those of the case's requesting
/// facility (others are ignored). Eligible, or every reason it is not. (Matching builds one
/// [`CaseFilter`] per case instead, which computes the per-case parts once.)
pub fn check_expert<'a>(
    case: &'a CaseRequest,
    expert: &'a Expert,
    agreements: &'a [Agreement],
    config: &'a MatchConfig,
    now: DateTime<Utc>,
) -> Result<Eligible<'a>, Vec<Reason>> {
    CaseFilter::new(case, agreements, config, now).check(expert)
}

/// The hard filters of one case at one time. What does not depend on the expert (local time,
/// the best agreement per expert facility, the texts of per-case reasons) is computed once, so
/// checking thousands of candidates stays cheap.
#[derive(Debug)]
pub struct CaseFilter<'a> {
    case: &'a CaseRequest,
    config: &'a MatchConfig,
    agreements: &'a [Agreement],
    now: DateTime<Utc>,
    local_now: NaiveDateTime,
    today: NaiveDate,
    window: Option<(NaiveDateTime, NaiveDateTime)>,
    /// The best agreement in force today per expert facility.
    active: HashMap<&'a str, &'a Agreement>,
    expertise_text: String,
    outside_text: String,
    window_text: String,
}

impl<'a> CaseFilter<'a> {
    /// Prepares the filters for `case` at `now`; `agreements` are the requesting facility's.
    pub fn new(
        case: &'a CaseRequest,
        agreements: &'a [Agreement],
        config: &'a MatchConfig,
        now: DateTime<Utc>,
    ) -> CaseFilter<'a> {
        let local_now = config.local(now);
        let today = local_now.date();
        let mut active: HashMap<&str, &Agreement> = HashMap::new();
        for a in agreements {
            if a.requesting_facility.trim() != case.requesting_facility.trim()
                || !a.is_active_on(today)
            {
                continue;
            }
            let slot = active.entry(a.expert_facility.trim()).or_insert(a);
            if (a.kind, &a.id) < (slot.kind, &slot.id) {
                *slot = a;
            }
        }
        let window = case
            .window
            .map(|w| (config.local(w.from), config.local(w.to)));
        let expertise_text = case
            .icd10
            .as_ref()
            .map(|code| {
                format!(
                    "declares no expertise in category {} (case code {code})",
                    code.category()
                )
            })
            .unwrap_or_default();
        let outside_text = format!(
            "urgent case: outside the schedule windows at {} local time and not on call",
            local_now.format("%a %H:%M")
        );
        let window_text = window
            .map(|(from, to)| {
                format!(
                    "no schedule window overlaps the requested {} – {} local time",
                    from.format("%Y-%m-%d %a %H:%M"),
                    to.format("%Y-%m-%d %a %H:%M")
                )
            })
            .unwrap_or_default();
        CaseFilter {
            case,
            config,
            agreements,
            now,
            local_now,
            today,
            window,
            active,
            expertise_text,
            outside_text,
            window_text,
        }
    }

    /// Runs every hard filter on one expert: eligible, or every reason it is not.
    pub fn check<'e>(&self, expert: &'e Expert) -> Result<Eligible<'e>, Vec<Reason>>
    where
        'a: 'e,
    {
        let (case, config) = (self.case, self.config);
        let mut out = Vec::new();
        let mut fail = |code: ReasonCode, text: String| out.push(Reason { code, text });

        if !expert.in_department(&case.department) {
            fail(
                ReasonCode::DepartmentMismatch,
                format!(
                    "not in department {} (departments: {})",
                    case.department.trim(),
                    expert.departments.join(", ")
                ),
            );
        }
        let specificity = match &case.icd10 {
            None => Some(Specificity::DepartmentOnly),
            Some(code) => best_specificity(&expert.expertise, code),
        };
        if specificity.is_none() {
            fail(ReasonCode::ExpertiseMismatch, self.expertise_text.clone());
        }
        if let Some(min) = case.min_title
            && expert.title < min
        {
            fail(
                ReasonCode::TitleBelowMinimum,
                format!("title {} is below the required {}", expert.title, min),
            );
        }
        if !expert.licence_verified {
            fail(
                ReasonCode::LicenceNotVerified,
                "licence and real-name verification not done (CN-11)".to_owned(),
            );
        }
        if !expert.registration_active {
            fail(
                ReasonCode::RegistrationInactive,
                "practice registration not active (CN-11)".to_owned(),
            );
        }
        let practice_years = expert.practice_years(self.today);
        if practice_years < config.min_practice_years {
            fail(
                ReasonCode::PracticeUnderMinimumYears,
                format!(
                    "{practice_years} years of independent practice (since {}), {} required \
                     (CN-06)",
                    expert.independent_practice_since, config.min_practice_years
                ),
            );
        }
        if config.require_multi_site_filing
            && let Some(platform) = config.platform_facility.as_deref().map(str::trim)
            && expert.facility.trim() != platform
            && !expert
                .multi_site_filings
                .iter()
                .any(|f| f.trim() == platform)
        {
            fail(
                ReasonCode::MultiSiteFilingMissing,
                format!("no 多机构执业 filing at the platform facility {platform} (CN-11)"),
            );
        }
        let same_facility = expert.facility.trim() == case.requesting_facility.trim();
        let agreement = if same_facility {
            None
        } else {
            let found = self.active.get(expert.facility.trim()).copied();
            if found.is_none() {
                fail(
                    ReasonCode::NoActiveAgreement,
                    agreement_text(self.agreements, case, expert, self.today),
                );
            }
            found
        };
        if case.urgency == Urgency::Urgent && !expert.schedule.on_call {
            if !in_schedule_at(&expert.schedule, self.local_now) {
                fail(ReasonCode::OutsideSchedule, self.outside_text.clone());
            }
            if !expert
                .presence
                .is_online(self.now, config.presence_staleness_seconds)
            {
                let text = match expert.presence.last_heartbeat {
                    Some(t) => format!(
                        "urgent case: offline, last heartbeat {} s ago (limit {} s), not on call",
                        (self.now - t).num_seconds(),
                        config.presence_staleness_seconds
                    ),
                    None => "urgent case: offline, never connected, not on call".to_owned(),
                };
                fail(ReasonCode::Offline, text);
            }
        }
        if let Some((from, to)) = self.window
            && !overlaps(&expert.schedule, from, to)
        {
            fail(ReasonCode::NoWindowOverlap, self.window_text.clone());
        }
        if same_facility && case.require_external {
            fail(
                ReasonCode::SameFacility,
                format!(
                    "same facility as the requester ({}) and an external opinion is required",
                    expert.facility
                ),
            );
        }
        if case
            .exclude_experts
            .iter()
            .any(|x| x.trim() == expert.id.trim())
        {
            fail(
                ReasonCode::ExcludedDoctor,
                "excluded by the case (e.g. the patient's prior treating doctor)".to_owned(),
            );
        }
        if expert.load.open_consultations >= config.max_open_consultations {
            fail(
                ReasonCode::AtLoadCap,
                format!(
                    "at the load cap: {} open consultations (cap {})",
                    expert.load.open_consultations, config.max_open_consultations
                ),
            );
        } else if let Some(cap) = config.max_sessions_today
            && expert.load.sessions_today >= cap
        {
            fail(
                ReasonCode::AtLoadCap,
                format!(
                    "at the load cap: {} sessions today (cap {cap})",
                    expert.load.sessions_today
                ),
            );
        }
        match specificity {
            Some(specificity) if out.is_empty() => Ok(Eligible {
                expert,
                specificity,
                agreement,
                practice_years,
            }),
            _ => Err(out),
        }
    }
}

fn agreement_text(
    agreements: &[Agreement],
    case: &CaseRequest,
    expert: &Expert,
    today: NaiveDate,
) -> String {
    let pair = format!(
        "{} → {}",
        case.requesting_facility.trim(),
        expert.facility.trim()
    );
    let of_pair: Vec<&Agreement> = agreements
        .iter()
        .filter(|a| {
            a.requesting_facility.trim() == case.requesting_facility.trim()
                && a.expert_facility.trim() == expert.facility.trim()
        })
        .collect();
    match of_pair.as_slice() {
        [] => format!("no cooperation agreement {pair} (CN-02)"),
        found => {
            let states: Vec<String> = found
                .iter()
                .map(|a| match a.valid_to {
                    Some(to) if to < today => format!("{} expired {to}", a.id),
                    _ => format!("{} in force from {}", a.id, a.valid_from),
                })
                .collect();
            format!(
                "no cooperation agreement {pair} in force on {today} ({}) (CN-02)",
                states.join("; ")
            )
        }
    }
}

/// The occurrences of the schedule's windows that start on `day`, as local intervals.
fn occurrences(
    schedule: &Schedule,
    day: NaiveDate,
) -> impl Iterator<Item = (NaiveDateTime, NaiveDateTime)> + '_ {
    schedule
        .windows
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
    let day = t.date();
    [day.pred_opt(), Some(day)]
        .into_iter()
        .flatten()
        .any(|d| occurrences(schedule, d).any(|(a, b)| a <= t && t < b))
}

/// True when one of the schedule's windows overlaps the local interval `[from, to)`.
pub fn overlaps(schedule: &Schedule, from: NaiveDateTime, to: NaiveDateTime) -> bool {
    if to <= from {
        return false;
    }
    // Past a week every window has an occurrence inside; bound the walk.
    if to - from >= Duration::days(8) {
        return schedule.windows.iter().any(|w| !w.days.is_empty());
    }
    let mut day = from.date().pred_opt().unwrap_or(from.date());
    while day <= to.date() {
        if occurrences(schedule, day).any(|(a, b)| a < to && from < b) {
            return true;
        }
        match day.succ_opt() {
            Some(next) => day = next,
            None => break,
        }
    }
    false
}
