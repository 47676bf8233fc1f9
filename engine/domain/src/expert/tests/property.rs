//! Property: no returned candidate violates a hard constraint (MATCH-01 AT), checked against
//! an independent oracle; cards answer as the experts' own fields do.

use super::*;
use proptest::prelude::*;

/// SplitMix64: the scenario generator (proptest supplies the seed and shrinks it).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.below(from.len() as u64) as usize]
    }
}

const FACILITIES: [&str; 4] = ["F0", "F1", "F2", "F3"];
const DEPARTMENTS: [&str; 5] = ["03", "03.02", "03.02.01", "03.03", "04"];
const CODES: [&str; 7] = ["I25", "I25.1", "I25.10", "I21", "E11", "E11.9", "I25.9"];

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const WEEK: [chrono::Weekday; 7] = {
    use chrono::Weekday::*;
    [Mon, Tue, Wed, Thu, Fri, Sat, Sun]
};

fn gen_window(r: &mut Rng) -> WeeklyWindow {
    let bits = 1 + r.below(127);
    let names: Vec<&str> = (0..7)
        .filter(|d| bits & (1 << d) != 0)
        .map(|d| DAY_NAMES[d])
        .collect();
    WeeklyWindow {
        days: names.join(",").parse().unwrap(),
        from: ClockTime::new(r.below(24) as u16, r.below(60) as u16).unwrap(),
        to: ClockTime::new(r.below(24) as u16, r.below(60) as u16).unwrap(),
    }
}

fn gen_expert(r: &mut Rng, i: usize, now: DateTime<Utc>) -> Expert {
    let mut e = expert(&format!("x{i}"));
    e.facility = r.pick(&FACILITIES).to_string();
    e.departments = (0..1 + r.below(2))
        .map(|_| r.pick(&DEPARTMENTS).to_string())
        .collect();
    e.expertise = (0..if r.chance(10) { 0 } else { 1 + r.below(3) })
        .map(|_| icd(r.pick::<&str>(&CODES)))
        .collect();
    e.title = *r.pick(&Title::ALL);
    e.independent_practice_since = date("2018-01-01") + Duration::days(r.below(8 * 365) as i64);
    e.licence_verified = r.chance(92);
    e.registration_active = r.chance(92);
    e.multi_site_filings = if r.chance(50) {
        vec!["F0".into()]
    } else {
        vec![]
    };
    e.languages = if r.chance(30) {
        vec!["zh".into(), "yue".into()]
    } else {
        vec!["zh".into()]
    };
    e.schedule = Schedule {
        windows: (0..r.below(3)).map(|_| gen_window(r)).collect(),
        on_call: r.chance(25),
    };
    e.presence.last_heartbeat = if r.chance(80) {
        Some(now - Duration::minutes(r.below(12) as i64) + Duration::minutes(1))
    } else {
        None
    };
    e.load = Load {
        open_consultations: r.below(4) as u32,
        sessions_today: r.below(5) as u32,
    };
    e
}

fn gen_case(r: &mut Rng, now: DateTime<Utc>, experts: &[Expert]) -> CaseRequest {
    let mut c = case();
    c.department = if r.chance(50) {
        "03".to_owned()
    } else {
        r.pick(&DEPARTMENTS).to_string()
    };
    c.icd10 = r.chance(70).then(|| icd(r.pick::<&str>(&CODES)));
    c.min_title = r.chance(40).then(|| *r.pick(&Title::ALL));
    c.urgency = if r.chance(30) {
        Urgency::Urgent
    } else {
        Urgency::Routine
    };
    c.requesting_facility = r.pick(&FACILITIES).to_string();
    c.window = r.chance(30).then(|| {
        let from = now + Duration::minutes(r.below(7 * 24 * 60) as i64);
        TimeWindow {
            from,
            to: from + Duration::minutes(1 + r.below(600) as i64),
        }
    });
    c.require_external = r.chance(30);
    c.exclude_experts = experts
        .iter()
        .filter(|_| r.chance(10))
        .map(|e| e.id.clone())
        .collect();
    c.follow_up_of = (r.chance(20) && !experts.is_empty()).then(|| r.pick(experts).id.clone());
    c.language = r.chance(20).then(|| "yue".to_owned());
    c
}

fn gen_agreements(r: &mut Rng) -> Vec<Agreement> {
    let mut out = Vec::new();
    for (i, from) in FACILITIES.iter().enumerate() {
        for to in FACILITIES {
            if r.chance(75) {
                let start = date("2025-01-01") + Duration::days(r.below(400) as i64);
                out.push(Agreement {
                    id: format!("AG-{i}-{to}-{}", out.len()),
                    requesting_facility: from.to_string(),
                    expert_facility: to.to_string(),
                    kind: AgreementKind::Other,
                    valid_from: start,
                    valid_to: r
                        .chance(50)
                        .then(|| start + Duration::days(r.below(800) as i64)),
                });
            }
        }
    }
    out
}

/// Minute-of-week slots covered by a schedule (Monday 00:00 = 0): a brute-force model of
/// the weekly windows, independent of the filter's interval arithmetic.
fn slots(s: &Schedule) -> Vec<bool> {
    let week = 7 * 1440;
    let mut out = vec![false; week];
    for w in &s.windows {
        let (a, b) = (w.from.minutes() as usize, w.to.minutes() as usize);
        let len = if b > a { b - a } else { b + 1440 - a };
        for (d, day) in WEEK.iter().enumerate() {
            if w.days.contains(*day) {
                for m in 0..len {
                    out[(d * 1440 + a + m) % week] = true;
                }
            }
        }
    }
    out
}

fn minute_of_week(t: DateTime<Utc>) -> usize {
    let local = t + Duration::hours(8);
    local.weekday().num_days_from_monday() as usize * 1440
        + local.hour() as usize * 60
        + local.minute() as usize
}

/// The hard constraints, written out plainly (MATCH-01, CN-02, CN-06, CN-11).
fn eligible(
    c: &CaseRequest,
    e: &Expert,
    ags: &[Agreement],
    cfg: &MatchConfig,
    now: DateTime<Utc>,
) -> bool {
    let today = (now + Duration::hours(8)).date_naive();
    let dept = e
        .departments
        .iter()
        .any(|d| *d == c.department || d.starts_with(&format!("{}.", c.department)));
    let expertise = c.icd10.as_ref().is_none_or(|code| {
        e.expertise
            .iter()
            .any(|x| x.normalized()[..3] == code.normalized()[..3])
    });
    let title = c.min_title.is_none_or(|t| e.title >= t);
    let three_years = e
        .independent_practice_since
        .checked_add_months(chrono::Months::new(12 * cfg.min_practice_years))
        .unwrap()
        <= today;
    let filing = !cfg.require_multi_site_filing
        || e.facility == "F0"
        || e.multi_site_filings.iter().any(|f| f == "F0");
    let same = e.facility == c.requesting_facility;
    let agreement = same
        || ags.iter().any(|a| {
            a.requesting_facility == c.requesting_facility
                && a.expert_facility == e.facility
                && a.valid_from <= today
                && a.valid_to.is_none_or(|t| today <= t)
        });
    let s = slots(&e.schedule);
    let online = e
        .presence
        .last_heartbeat
        .is_some_and(|h| now - h <= Duration::seconds(300));
    let urgent_ok =
        c.urgency == Urgency::Routine || e.schedule.on_call || (online && s[minute_of_week(now)]);
    let window_ok = c.window.is_none_or(|w| {
        let minutes = (w.to - w.from).num_minutes();
        (0..minutes).any(|m| s[minute_of_week(w.from + Duration::minutes(m))])
    });
    let external = !(c.require_external && same);
    let not_excluded = !c.exclude_experts.contains(&e.id);
    let load = e.load.open_consultations < cfg.max_open_consultations
        && cfg
            .max_sessions_today
            .is_none_or(|m| e.load.sessions_today < m);
    dept && expertise
        && title
        && e.licence_verified
        && e.registration_active
        && three_years
        && filing
        && agreement
        && urgent_ok
        && window_ok
        && external
        && not_excluded
        && load
}

struct Scenario {
    now: DateTime<Utc>,
    experts: Vec<Expert>,
    ags: Vec<Agreement>,
    case: CaseRequest,
    cfg: MatchConfig,
}

fn scenario(seed: u64, n: usize) -> Scenario {
    let mut r = Rng(seed);
    // Whole minutes, so the minute-grid model is exact.
    let now = at("2026-01-12T00:00:00") + Duration::minutes(r.below(7 * 1440) as i64);
    let experts: Vec<Expert> = (0..n).map(|i| gen_expert(&mut r, i, now)).collect();
    let ags = gen_agreements(&mut r);
    let case = gen_case(&mut r, now, &experts);
    let cfg = MatchConfig {
        max_open_consultations: 2 + r.below(5) as u32,
        max_sessions_today: r.chance(30).then(|| 2 + r.below(6) as u32),
        platform_facility: Some("F0".into()),
        require_multi_site_filing: r.chance(50),
        ..MatchConfig::default()
    };
    Scenario {
        now,
        experts,
        ags,
        case,
        cfg,
    }
}

/// The generated scenarios reach every outcome, so the property below has teeth: many
/// eligible experts, and every reason code.
#[test]
fn the_generator_reaches_every_outcome() {
    let mut ranked = 0;
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..300 {
        let s = scenario(seed, 30);
        let index = ListIndex {
            experts: s.experts,
            agreements: s.ags,
        };
        let d = match_experts(&s.case, &index, &DefaultScorer, &s.cfg, s.now, seed).unwrap();
        ranked += d.ranked.len();
        seen.extend(
            d.exclusions
                .iter()
                .flat_map(|x| x.reasons.iter().map(|r| r.code)),
        );
    }
    assert!(
        ranked >= 250,
        "only {ranked} eligible experts in 300 scenarios"
    );
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ReasonCode::ALL.to_vec()
    );
}

/// `e` with facts that do not fit a card inline (a long id, more department keys, codes,
/// filings and windows than the card holds, padded texts), half the time.
fn stretch(r: &mut Rng, e: &mut Expert) {
    if r.chance(50) {
        return;
    }
    if r.chance(50) {
        e.id = format!("{}-with-a-longer-id", e.id);
    }
    if r.chance(50) {
        e.departments.push(" 09.01.02.03 ".into());
    }
    if r.chance(50) {
        e.departments[0] = format!(" {} ", e.departments[0]);
    }
    if r.chance(50) {
        for c in ["K35", "K35.1", "J45", "I20.0", "I25.10"] {
            e.expertise.push(icd(c));
        }
    }
    if r.chance(50) {
        e.multi_site_filings = if r.chance(50) {
            vec![" F0 ".into()]
        } else {
            vec!["A".into(), "B".into(), " F0 ".into()]
        };
    }
    if r.chance(50) {
        e.schedule.windows.extend((0..5).map(|_| gen_window(r)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn no_candidate_violates_a_hard_constraint(seed in any::<u64>(), n in 0usize..40) {
        let Scenario { now, experts, ags, case: c, cfg } = scenario(seed, n);
        let full = ListIndex { experts: experts.clone(), agreements: ags.clone() };
        let d = match_experts(&c, &full, &DefaultScorer, &cfg, now, seed).unwrap();

        // Every ranked candidate passes every constraint, and every excluded one fails one.
        for e in &experts {
            let ok = eligible(&c, e, &ags, &cfg, now);
            prop_assert_eq!(d.candidate(&e.id).is_some(), ok, "{} in {:?}", e.id, d.exclusion(&e.id));
            prop_assert_eq!(d.exclusion(&e.id).is_some(), !ok);
            if let Some(x) = d.exclusion(&e.id) {
                prop_assert!(!x.reasons.is_empty());
            }
        }
        // Ranked by score, then load, then the seeded key.
        for w in d.ranked.windows(2) {
            let key = |r: &RankedCandidate| (-r.total, r.open_consultations, r.sessions_today, r.tie_break);
            prop_assert!(key(&w[0]) <= key(&w[1]));
        }
        let top: Vec<String> = d.ranked.iter().take(3).map(|r| r.expert_id.clone()).collect();
        prop_assert_eq!(&d.selected, &top);

        // The memory index only narrows: the same ranking as the full scan.
        let index = MemoryExpertIndex::new(experts.clone(), ags.clone());
        let m = match_experts(&c, &index, &DefaultScorer, &cfg, now, seed).unwrap();
        prop_assert_eq!(&m.ranked, &d.ranked);
        // And a replay reproduces the decision.
        prop_assert!(m.replay(&DefaultScorer).unwrap().is_identical());
    }

    #[test]
    fn cards_give_the_verdicts_of_the_experts_own_fields(seed in any::<u64>(), n in 1usize..30) {
        let Scenario { now, mut experts, ags, case: mut c, cfg } = scenario(seed, n);
        let mut r = Rng(seed ^ 0x5eed);
        for e in &mut experts {
            stretch(&mut r, e);
        }
        // Departments that are prefixes of keys without being keys.
        if r.chance(20) {
            c.department = (*r.pick(&["03.0", "0", " 03.02 "])).to_owned();
        }
        let filter = CaseFilter::new(&c, &ags, &cfg, now);
        let verdict = |v: Result<Eligible<'_>, Vec<Reason>>| {
            v.map(|el| (el.specificity, el.agreement.map(|a| a.id.clone()), el.practice_years))
        };
        for e in &experts {
            let inline = verdict(filter.check_profiled(e, &card::Profile::of(e)));
            let fields = verdict(filter.check_profiled(e, &card::Profile::unprepared(e)));
            prop_assert_eq!(inline, fields, "{}", e.id);
        }
        // The card index finds what a scan finds, in id order.
        let full = ListIndex { experts: experts.clone(), agreements: ags.clone() };
        let d = match_experts(&c, &full, &DefaultScorer, &cfg, now, seed).unwrap();
        let index = MemoryExpertIndex::new(experts.clone(), ags.clone());
        let m = match_experts(&c, &index, &DefaultScorer, &cfg, now, seed).unwrap();
        prop_assert_eq!(&m.ranked, &d.ranked);
        let ids: Vec<&str> = m.exclusions.iter().map(|x| x.expert_id.as_str()).collect();
        prop_assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }
}
