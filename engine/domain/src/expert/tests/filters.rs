//! Each hard filter and its reason; the memory index narrows without losing anyone.

use super::*;

// ---------------------------------------------------------------------------------------------
// Hard filters, one by one
// ---------------------------------------------------------------------------------------------

#[test]
fn each_filter_excludes_with_its_reason() {
    use ReasonCode::*;
    let cfg = MatchConfig::default();
    let seen = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let check_at = |name: &str,
                    case: CaseRequest,
                    e: Expert,
                    ags: Vec<Agreement>,
                    cfg: &MatchConfig,
                    now: DateTime<Utc>,
                    expected: &[ReasonCode]| {
        let got = codes_at(&case, e, ags, cfg, now);
        assert_eq!(got, expected, "{name}");
        seen.borrow_mut().extend(got);
    };
    let check =
        |name: &str,
         case: CaseRequest,
         e: Expert,
         ags: Vec<Agreement>,
         cfg: &MatchConfig,
         expected: &[ReasonCode]| { check_at(name, case, e, ags, cfg, now(), expected) };
    // The baseline is eligible.
    check("baseline", case(), expert("e"), agreements(), &cfg, &[]);

    let mut e = expert("e");
    e.departments = vec!["04".into(), "03".into()];
    check(
        "department",
        case(),
        e,
        agreements(),
        &cfg,
        &[DepartmentMismatch],
    );

    let mut e = expert("e");
    e.expertise = vec![icd("I21"), icd("E11")];
    check(
        "expertise",
        case(),
        e,
        agreements(),
        &cfg,
        &[ExpertiseMismatch],
    );
    let mut e = expert("e");
    e.expertise = vec![];
    check(
        "no expertise",
        case(),
        e,
        agreements(),
        &cfg,
        &[ExpertiseMismatch],
    );
    let mut c = case();
    c.icd10 = None;
    let mut e = expert("e");
    e.expertise = vec![];
    check("no code in the case", c, e, agreements(), &cfg, &[]);

    let mut c = case();
    c.min_title = Some(Title::AssociateChief);
    let mut e = expert("e");
    e.title = Title::Attending;
    check(
        "title",
        c.clone(),
        e,
        agreements(),
        &cfg,
        &[TitleBelowMinimum],
    );
    let mut e = expert("e");
    e.title = Title::AssociateChief;
    check("title equal", c, e, agreements(), &cfg, &[]);

    let mut e = expert("e");
    e.licence_verified = false;
    check(
        "licence",
        case(),
        e,
        agreements(),
        &cfg,
        &[LicenceNotVerified],
    );

    let mut e = expert("e");
    e.registration_active = false;
    check(
        "registration",
        case(),
        e,
        agreements(),
        &cfg,
        &[RegistrationInactive],
    );

    // CN-06: 3 whole years on the local date of `now` (2026-01-15).
    let mut e = expert("e");
    e.independent_practice_since = date("2023-01-16");
    check(
        "2 years 364 days",
        case(),
        e,
        agreements(),
        &cfg,
        &[PracticeUnderMinimumYears],
    );
    let mut e = expert("e");
    e.independent_practice_since = date("2023-01-15");
    check("exactly 3 years", case(), e, agreements(), &cfg, &[]);

    let multi = MatchConfig {
        platform_facility: Some("H-PLATFORM".into()),
        require_multi_site_filing: true,
        ..MatchConfig::default()
    };
    check(
        "multi-site",
        case(),
        expert("e"),
        agreements(),
        &multi,
        &[MultiSiteFilingMissing],
    );
    let mut e = expert("e");
    e.multi_site_filings = vec!["H-PLATFORM".into()];
    check("multi-site filed", case(), e, agreements(), &multi, &[]);
    let mut e = expert("e");
    e.facility = "H-PLATFORM".into();
    let ags = vec![agreement("AG-P", "H-PLATFORM", AgreementKind::Other)];
    check("registered at the platform", case(), e, ags, &multi, &[]);

    check(
        "no agreement",
        case(),
        expert("e"),
        vec![],
        &cfg,
        &[NoActiveAgreement],
    );
    let mut expired = agreements();
    expired[0].valid_to = Some(date("2026-01-14"));
    check(
        "expired agreement",
        case(),
        expert("e"),
        expired,
        &cfg,
        &[NoActiveAgreement],
    );
    let mut later = agreements();
    later[0].valid_from = date("2026-01-16");
    check(
        "future agreement",
        case(),
        expert("e"),
        later,
        &cfg,
        &[NoActiveAgreement],
    );
    let mut other_way = agreements();
    other_way[0].requesting_facility = "H-CITY".into();
    other_way[0].expert_facility = "H-COUNTY".into();
    check(
        "agreement the other way",
        case(),
        expert("e"),
        other_way,
        &cfg,
        &[NoActiveAgreement],
    );
    let mut e = expert("e");
    e.facility = "H-COUNTY".into();
    check("own facility needs none", case(), e, vec![], &cfg, &[]);

    let mut urgent = case();
    urgent.urgency = Urgency::Urgent;
    let evening = at("2026-01-15T22:00:00");
    let mut e = expert("e");
    e.presence.last_heartbeat = Some(evening);
    check_at(
        "urgent, evening",
        urgent.clone(),
        e.clone(),
        agreements(),
        &cfg,
        evening,
        &[OutsideSchedule],
    );
    e.schedule.on_call = true;
    check_at(
        "urgent, evening, on call",
        urgent.clone(),
        e,
        agreements(),
        &cfg,
        evening,
        &[],
    );
    let mut e = expert("e");
    e.presence.last_heartbeat = None;
    check_at(
        "routine, evening, offline",
        case(),
        e,
        agreements(),
        &cfg,
        evening,
        &[],
    );

    let mut e = expert("e");
    e.presence.last_heartbeat = Some(now() - Duration::seconds(301));
    check(
        "offline",
        urgent.clone(),
        e.clone(),
        agreements(),
        &cfg,
        &[Offline],
    );
    e.presence.last_heartbeat = Some(now() - Duration::seconds(300));
    check("just online", urgent.clone(), e, agreements(), &cfg, &[]);
    let mut e = expert("e");
    e.presence.last_heartbeat = None;
    check(
        "never online",
        urgent.clone(),
        e.clone(),
        agreements(),
        &cfg,
        &[Offline],
    );
    e.schedule.on_call = true;
    check(
        "on call, offline",
        urgent.clone(),
        e,
        agreements(),
        &cfg,
        &[],
    );

    let mut c = case();
    c.window = Some(TimeWindow {
        from: at("2026-01-17T10:00:00"),
        to: at("2026-01-17T11:00:00"),
    });
    check(
        "saturday window",
        c.clone(),
        expert("e"),
        agreements(),
        &cfg,
        &[NoWindowOverlap],
    );
    let mut e = expert("e");
    e.schedule.windows.push(window("fri", "20:00", "08:00"));
    c.window = Some(TimeWindow {
        from: at("2026-01-17T07:30:00"),
        to: at("2026-01-17T09:00:00"),
    });
    check(
        "overnight friday window",
        c.clone(),
        e.clone(),
        agreements(),
        &cfg,
        &[],
    );
    c.window = Some(TimeWindow {
        from: at("2026-01-17T08:00:00"),
        to: at("2026-01-17T09:00:00"),
    });
    check(
        "window starts as the night ends",
        c.clone(),
        e,
        agreements(),
        &cfg,
        &[NoWindowOverlap],
    );
    c.window = Some(TimeWindow {
        from: at("2026-01-16T16:30:00"),
        to: at("2026-01-16T18:00:00"),
    });
    check("partial overlap", c, expert("e"), agreements(), &cfg, &[]);

    let mut c = case();
    c.requesting_facility = "H-CITY".into();
    c.require_external = true;
    check(
        "same facility",
        c.clone(),
        expert("e"),
        vec![],
        &cfg,
        &[SameFacility],
    );
    c.require_external = false;
    check("same facility allowed", c, expert("e"), vec![], &cfg, &[]);

    let mut c = case();
    c.exclude_experts = vec!["x".into(), " e ".into()];
    check(
        "excluded doctor",
        c,
        expert("e"),
        agreements(),
        &cfg,
        &[ExcludedDoctor],
    );

    let mut e = expert("e");
    e.load.open_consultations = 5;
    check(
        "load cap",
        case(),
        e.clone(),
        agreements(),
        &cfg,
        &[AtLoadCap],
    );
    e.load.open_consultations = 4;
    check("below the cap", case(), e, agreements(), &cfg, &[]);
    let capped = MatchConfig {
        max_sessions_today: Some(3),
        ..MatchConfig::default()
    };
    let mut e = expert("e");
    e.load.sessions_today = 3;
    check(
        "sessions cap",
        case(),
        e,
        agreements(),
        &capped,
        &[AtLoadCap],
    );

    // Every reason code has a case above.
    assert_eq!(
        seen.into_inner().into_iter().collect::<Vec<_>>(),
        ReasonCode::ALL.to_vec()
    );
}

#[test]
fn every_failed_constraint_is_recorded_with_a_text() {
    let mut e = expert("e");
    e.licence_verified = false;
    e.title = Title::Resident;
    e.load.open_consultations = 9;
    let mut c = case();
    c.min_title = Some(Title::Chief);
    let d = decide_with(&c, vec![e], vec![], &MatchConfig::default(), now());
    let x = &d.exclusions[0];
    let got: Vec<(&str, &str)> = x
        .reasons
        .iter()
        .map(|r| (r.code.as_str(), &*r.text))
        .collect();
    assert_eq!(
        got,
        [
            (
                "title-below-minimum",
                "title 住院医师 is below the required 主任医师"
            ),
            (
                "licence-not-verified",
                "licence and real-name verification not done (CN-11)"
            ),
            (
                "no-active-agreement",
                "no cooperation agreement H-COUNTY → H-CITY (CN-02)"
            ),
            (
                "at-load-cap",
                "at the load cap: 9 open consultations (cap 5)"
            ),
        ]
    );
    let json = serde_json::to_value(x).unwrap();
    assert_eq!(json["reasons"][0]["code"], "title-below-minimum");
}

#[test]
fn invalid_cases_and_configs_are_errors() {
    let mut c = case();
    c.requesting_facility = " ".into();
    let index = ListIndex {
        experts: vec![],
        agreements: vec![],
    };
    let err = match_experts(
        &c,
        &index,
        &DefaultScorer,
        &MatchConfig::default(),
        now(),
        1,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "case `task-1`: requesting_facility is blank"
    );
    let cfg = MatchConfig {
        require_multi_site_filing: true,
        ..MatchConfig::default()
    };
    let err = match_experts(&case(), &index, &DefaultScorer, &cfg, now(), 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        "match config: require_multi_site_filing needs platform_facility"
    );
}

// ---------------------------------------------------------------------------------------------
// The index
// ---------------------------------------------------------------------------------------------

#[test]
fn the_memory_index_narrows_by_department_and_category() {
    let mut a = expert("a");
    a.departments = vec!["03.02.01".into()];
    let mut b = expert("b");
    b.expertise = vec![icd("I21"), icd("I25.1")];
    let mut c = expert("c");
    c.expertise = vec![icd("E11")];
    let mut d = expert("d");
    d.departments = vec!["04".into()];
    let mut dup = a.clone();
    dup.name = "replaced".into();
    let index = MemoryExpertIndex::new(vec![a, b, c, d, dup], agreements());
    let ids = |case: &CaseRequest| -> Vec<String> {
        index.candidates(case).into_iter().map(|e| e.id).collect()
    };
    assert_eq!(ids(&case()), ["a", "b"]);
    let mut k = case();
    k.department = "03".into();
    k.icd10 = Some(icd("E11.9"));
    assert_eq!(ids(&k), ["c"]);
    k.icd10 = None;
    assert_eq!(ids(&k), ["a", "b", "c"]);
    k.department = "03.02.01".into();
    assert_eq!(ids(&k), ["a"]);
    k.department = "05".into();
    assert!(ids(&k).is_empty());
    assert_eq!(index.get("a").unwrap().name, "replaced");
    assert_eq!(index.experts().len(), 4);
    assert_eq!(index.agreements("H-COUNTY").len(), 1);
    assert!(index.agreements("H-ELSEWHERE").is_empty());
}
