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
//! | `excluded-doctor` | not in the case's exclusion list (e.g. the prior treating doctor, or an expert offered the consultation before) |
//! | `at-load-cap` | below the load cap (open consultations, optionally today's sessions) |
//!
//! A routine case without a window does not need the expert online: the offer waits for them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use super::card::Profile;
use super::case::CaseRequest;
use super::config::MatchConfig;
use super::icd::{Specificity, best_specificity, specificity_of};
use super::model::{Agreement, Expert, Title, online, practice_years_since};
use super::schedule::{Clock, Span, in_windows_at, windows_overlap};
pub use super::schedule::{in_schedule_at, overlaps};

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
    /// What was wrong, for the coordinator and the explanation. Shared (`Arc<str>`): a first-
    /// level department case can exclude a thousand experts for the same few reasons (no
    /// agreement with facility F, outside the schedule at 10:00), and each such text is
    /// written once per case, not once per expert. Serialised as a plain string.
    pub text: Arc<str>,
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
/// checking thousands of candidates stays cheap; texts that depend on a few expert facts only
/// (the facility's agreements, the title, the load) are written the first time they are
/// needed and shared after.
#[derive(Debug)]
pub struct CaseFilter<'a> {
    case: &'a CaseRequest,
    config: &'a MatchConfig,
    agreements: &'a [Agreement],
    now: DateTime<Utc>,
    local_now: NaiveDateTime,
    today: NaiveDate,
    window: Option<(NaiveDateTime, NaiveDateTime)>,
    /// `local_now` and `window` prepared for the schedule checks (see [`super::schedule`]).
    clock: Option<Clock>,
    span: Option<Span>,
    /// The requesting facility, trimmed.
    requesting: &'a str,
    /// The requested department, trimmed.
    department: &'a str,
    /// The platform facility (trimmed), when a multi-site filing there is required.
    platform: Option<&'a str>,
    /// The best agreement in force today per expert facility.
    active: FacilityMap<&'a [u8], &'a Agreement>,
    texts: Texts,
    /// `no-active-agreement` texts by expert facility (trimmed).
    agreement_texts: RefCell<FacilityMap<String, Arc<str>>>,
    /// `at-load-cap` texts by open consultations, then by sessions today.
    open_cap_texts: RefCell<Vec<(u32, Arc<str>)>>,
    sessions_cap_texts: RefCell<Vec<(u32, Arc<str>)>>,
}

/// FNV-1a, for the per-case maps keyed by facility: a lookup for every candidate, on short
/// keys that come from the registry, where SipHash's resistance to chosen keys buys nothing
/// and costs more than the rest of the lookup.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

type FacilityMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

/// The reason texts that are the same for every expert of a case.
#[derive(Debug)]
struct Texts {
    expertise: Arc<str>,
    outside: Arc<str>,
    window: Arc<str>,
    licence: Arc<str>,
    registration: Arc<str>,
    excluded: Arc<str>,
    never_connected: Arc<str>,
    /// `multi-site-filing-missing`, when the filing is required.
    multi_site: Option<Arc<str>>,
    /// `title-below-minimum` by the expert's title (only titles below the minimum).
    title: [Option<Arc<str>>; 4],
}

/// The shared text of `key` in `memo`, written by `make` the first time.
fn memo<K: PartialEq>(
    memo: &RefCell<Vec<(K, Arc<str>)>>,
    key: K,
    make: impl FnOnce() -> String,
) -> Arc<str> {
    let mut m = memo.borrow_mut();
    if let Some((_, t)) = m.iter().find(|(k, _)| *k == key) {
        return t.clone();
    }
    let t: Arc<str> = make().into();
    m.push((key, t.clone()));
    t
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
        let requesting = case.requesting_facility.trim();
        let mut active: FacilityMap<&[u8], &Agreement> = FacilityMap::default();
        for a in agreements {
            if a.requesting_facility.trim() != requesting || !a.is_active_on(today) {
                continue;
            }
            let slot = active
                .entry(a.expert_facility.trim().as_bytes())
                .or_insert(a);
            if (a.kind, &a.id) < (slot.kind, &slot.id) {
                *slot = a;
            }
        }
        let window = case
            .window
            .map(|w| (config.local(w.from), config.local(w.to)));
        let texts = Texts::new(case, config, local_now, window);
        CaseFilter {
            case,
            config,
            agreements,
            now,
            local_now,
            today,
            window,
            clock: Clock::new(local_now),
            span: window.and_then(|(from, to)| Span::new(from, to)),
            requesting,
            department: case.department.trim(),
            platform: config
                .platform_facility
                .as_deref()
                .map(str::trim)
                .filter(|_| config.require_multi_site_filing),
            active,
            texts,
            agreement_texts: RefCell::default(),
            open_cap_texts: RefCell::default(),
            sessions_cap_texts: RefCell::default(),
        }
    }

    /// Runs every hard filter on one expert: eligible, or every reason it is not.
    pub fn check<'e>(&self, expert: &'e Expert) -> Result<Eligible<'e>, Vec<Reason>>
    where
        'a: 'e,
    {
        self.check_profiled(expert, &Profile::of(expert))
    }

    /// The filters on `expert`, reading its facts from `p` (its profile).
    pub(crate) fn check_profiled<'e>(
        &self,
        expert: &'e Expert,
        p: &Profile,
    ) -> Result<Eligible<'e>, Vec<Reason>>
    where
        'a: 'e,
    {
        let (case, config, texts) = (self.case, self.config, &self.texts);
        let mut out = Vec::new();
        let mut fail = |code: ReasonCode, text: Arc<str>| out.push(Reason { code, text });

        if !p.in_department(expert, self.department) {
            fail(
                ReasonCode::DepartmentMismatch,
                format!(
                    "not in department {} (departments: {})",
                    self.department,
                    expert.departments.join(", ")
                )
                .into(),
            );
        }
        let specificity = match &case.icd10 {
            None => Some(Specificity::DepartmentOnly),
            Some(code) => match &p.codes {
                Some(codes) => codes
                    .iter()
                    .filter_map(|declared| specificity_of(declared, code.normalized().as_bytes()))
                    .max(),
                None => best_specificity(&expert.expertise, code),
            },
        };
        if specificity.is_none() {
            fail(ReasonCode::ExpertiseMismatch, texts.expertise.clone());
        }
        if let Some(min) = case.min_title
            && p.title < min
            && let Some(text) = &texts.title[title_slot(p.title)]
        {
            fail(ReasonCode::TitleBelowMinimum, text.clone());
        }
        if !p.licence_verified {
            fail(ReasonCode::LicenceNotVerified, texts.licence.clone());
        }
        if !p.registration_active {
            fail(ReasonCode::RegistrationInactive, texts.registration.clone());
        }
        let practice_years = practice_years_since(p.since, self.today);
        if practice_years < config.min_practice_years {
            fail(
                ReasonCode::PracticeUnderMinimumYears,
                format!(
                    "{practice_years} years of independent practice (since {}), {} required \
                     (CN-06)",
                    p.since, config.min_practice_years
                )
                .into(),
            );
        }
        let facility = p.facility(expert);
        if let Some(text) = &texts.multi_site
            && let Some(platform) = self.platform
            && facility != platform.as_bytes()
            && !p.filed_at(expert, platform)
        {
            fail(ReasonCode::MultiSiteFilingMissing, text.clone());
        }
        let same_facility = facility == self.requesting.as_bytes();
        let agreement = if same_facility {
            None
        } else {
            let found = self.active.get(facility).copied();
            if found.is_none() {
                fail(ReasonCode::NoActiveAgreement, self.agreement_text(facility));
            }
            found
        };
        if case.urgency.is_urgent() && !p.on_call {
            let windows = p.windows(expert);
            let inside = match self.clock {
                Some(clock) => clock.in_windows(windows),
                None => in_windows_at(windows, self.local_now),
            };
            if !inside {
                fail(ReasonCode::OutsideSchedule, texts.outside.clone());
            }
            if !online(
                p.last_heartbeat,
                self.now,
                config.presence_staleness_seconds,
            ) {
                let text = match p.last_heartbeat {
                    Some(t) => format!(
                        "urgent case: offline, last heartbeat {} s ago (limit {} s), not on call",
                        (self.now - t).num_seconds(),
                        config.presence_staleness_seconds
                    )
                    .into(),
                    None => texts.never_connected.clone(),
                };
                fail(ReasonCode::Offline, text);
            }
        }
        if let Some((from, to)) = self.window
            && !match self.span {
                Some(span) => span.overlaps(p.windows(expert)),
                None => windows_overlap(p.windows(expert), from, to),
            }
        {
            fail(ReasonCode::NoWindowOverlap, texts.window.clone());
        }
        if same_facility && case.require_external {
            fail(
                ReasonCode::SameFacility,
                format!(
                    "same facility as the requester ({}) and an external opinion is required",
                    expert.facility
                )
                .into(),
            );
        }
        if !case.exclude_experts.is_empty() {
            let id = p.id(expert).trim();
            if case.exclude_experts.iter().any(|x| x.trim() == id) {
                fail(ReasonCode::ExcludedDoctor, texts.excluded.clone());
            }
        }
        let open = p.load.open_consultations;
        if open >= config.max_open_consultations {
            let text = memo(&self.open_cap_texts, open, || {
                format!(
                    "at the load cap: {open} open consultations (cap {})",
                    config.max_open_consultations
                )
            });
            fail(ReasonCode::AtLoadCap, text);
        } else if let Some(cap) = config.max_sessions_today
            && p.load.sessions_today >= cap
        {
            let today = p.load.sessions_today;
            let text = memo(&self.sessions_cap_texts, today, || {
                format!("at the load cap: {today} sessions today (cap {cap})")
            });
            fail(ReasonCode::AtLoadCap, text);
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

    /// The `no-active-agreement` text for an expert facility (trimmed): written once per
    /// facility.
    fn agreement_text(&self, facility: &[u8]) -> Arc<str> {
        // The bytes are a trimmed `&str`'s.
        let facility = std::str::from_utf8(facility).unwrap_or_default();
        let mut texts = self.agreement_texts.borrow_mut();
        if let Some(t) = texts.get(facility) {
            return t.clone();
        }
        let t: Arc<str> = agreement_text(self.agreements, self.case, facility, self.today).into();
        texts.insert(facility.to_owned(), t.clone());
        t
    }
}

/// The position of a title in [`Title::ALL`].
fn title_slot(title: Title) -> usize {
    match title {
        Title::Resident => 0,
        Title::Attending => 1,
        Title::AssociateChief => 2,
        Title::Chief => 3,
    }
}

impl Texts {
    fn new(
        case: &CaseRequest,
        config: &MatchConfig,
        local_now: NaiveDateTime,
        window: Option<(NaiveDateTime, NaiveDateTime)>,
    ) -> Texts {
        let expertise = case
            .icd10
            .as_ref()
            .map(|code| {
                format!(
                    "declares no expertise in category {} (case code {code})",
                    code.category()
                )
            })
            .unwrap_or_default();
        let outside = format!(
            "urgent case: outside the schedule windows at {} local time and not on call",
            local_now.format("%a %H:%M")
        );
        let window = window
            .map(|(from, to)| {
                format!(
                    "no schedule window overlaps the requested {} – {} local time",
                    from.format("%Y-%m-%d %a %H:%M"),
                    to.format("%Y-%m-%d %a %H:%M")
                )
            })
            .unwrap_or_default();
        let multi_site = config
            .platform_facility
            .as_deref()
            .filter(|_| config.require_multi_site_filing)
            .map(|platform| {
                format!(
                    "no 多机构执业 filing at the platform facility {} (CN-11)",
                    platform.trim()
                )
                .into()
            });
        let title = Title::ALL.map(|t| {
            case.min_title
                .filter(|min| t < *min)
                .map(|min| format!("title {t} is below the required {min}").into())
        });
        Texts {
            expertise: expertise.into(),
            outside: outside.into(),
            window: window.into(),
            licence: "licence and real-name verification not done (CN-11)".into(),
            registration: "practice registration not active (CN-11)".into(),
            excluded: "excluded by the case (the requesting doctor, the patient's prior treating \
                       doctor, or an expert offered this consultation before)"
                .into(),
            never_connected: "urgent case: offline, never connected, not on call".into(),
            multi_site,
            title,
        }
    }
}

/// Why no agreement routes `case` to `expert_facility` (trimmed): none at all, or the ones
/// there are and why they are not in force today.
fn agreement_text(
    agreements: &[Agreement],
    case: &CaseRequest,
    expert_facility: &str,
    today: NaiveDate,
) -> String {
    let pair = format!("{} → {}", case.requesting_facility.trim(), expert_facility);
    let of_pair: Vec<&Agreement> = agreements
        .iter()
        .filter(|a| {
            a.requesting_facility.trim() == case.requesting_facility.trim()
                && a.expert_facility.trim() == expert_facility
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
