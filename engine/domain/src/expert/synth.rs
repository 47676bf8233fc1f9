//! A seeded generator of expert registries and consultation cases, for benches and tests:
//! 6 first-level 诊疗科目 with 5 sub-departments each, ICD-10 categories per department,
//! experts of every title with schedules, presence, load and response history, cooperation
//! agreements between county and provincial facilities, and cases asking for a department,
//! often an ICD-10 code, sometimes a title or a window. Pure: the same seed, the same registry.

use chrono::{DateTime, NaiveDate, Utc};

use super::{
    Agreement, AgreementKind, CaseRequest, Expert, IcdCode, Load, Presence, ResponseHistory,
    Schedule, TimeWindow, Title, Urgency, WeeklyWindow,
};

/// SplitMix64: seeded, so every run generates the same directory and cases.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// `true` `percent` times in 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// 6 first-level 诊疗科目 with 5 sub-departments each (30 departments); each department has 8
/// ICD-10 categories of its own.
pub fn departments() -> Vec<(String, Vec<String>)> {
    let letters = ['I', 'J', 'K', 'E', 'N', 'C'];
    let mut out = Vec::new();
    for (top, letter) in (3..9).zip(letters) {
        for sub in 1..=5 {
            let cats = (0..8)
                .map(|k| format!("{letter}{:02}", (sub - 1) * 16 + k * 2))
                .collect();
            out.push((format!("{top:02}.{sub:02}"), cats));
        }
    }
    out
}

pub fn facilities(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:03}")).collect()
}

pub fn window(days: &str, from: &str, to: &str) -> WeeklyWindow {
    WeeklyWindow {
        days: days.parse().expect("days"),
        from: from.parse().expect("time"),
        to: to.parse().expect("time"),
    }
}

pub fn gen_experts(
    r: &mut Rng,
    n: usize,
    now: DateTime<Utc>,
    depts: &[(String, Vec<String>)],
) -> Vec<Expert> {
    let cities = facilities("CITY", 40);
    let titles = Title::ALL;
    (0..n)
        .map(|i| {
            let (dept, cats) = &depts[r.below(depts.len() as u64) as usize];
            let expertise = (0..1 + r.below(4))
                .map(|_| {
                    let cat = &cats[r.below(cats.len() as u64) as usize];
                    let code = match r.below(3) {
                        0 => cat.clone(),
                        1 => format!("{cat}.{}", r.below(10)),
                        _ => format!("{cat}.{}{}", r.below(10), r.below(10)),
                    };
                    IcdCode::parse(&code).expect("generated code")
                })
                .collect();
            let since = NaiveDate::from_ymd_opt(1995, 1, 1).expect("date")
                + chrono::Duration::days(r.below(30 * 365) as i64);
            Expert {
                id: format!("exp-{i:05}"),
                name: format!("专家{i}"),
                facility: cities[r.below(cities.len() as u64) as usize].clone(),
                departments: vec![dept.clone()],
                expertise,
                title: titles[r.below(4) as usize],
                independent_practice_since: since,
                licence_verified: r.chance(97),
                registration_active: r.chance(97),
                multi_site_filings: if r.chance(80) {
                    vec!["PLATFORM".into()]
                } else {
                    vec![]
                },
                languages: if r.chance(15) {
                    vec!["zh".into(), "yue".into()]
                } else {
                    vec!["zh".into()]
                },
                schedule: Schedule {
                    windows: vec![
                        window("mon-fri", "08:00", "12:00"),
                        window(
                            ["mon", "tue", "wed", "thu", "fri", "sat"][r.below(6) as usize],
                            "14:00",
                            "17:30",
                        ),
                    ],
                    on_call: r.chance(10),
                },
                presence: Presence {
                    last_heartbeat: r
                        .chance(60)
                        .then(|| now - chrono::Duration::seconds(r.below(900) as i64)),
                },
                load: Load {
                    open_consultations: r.below(6) as u32,
                    sessions_today: r.below(5) as u32,
                },
                response: ResponseHistory {
                    median_accept_seconds: Some(30 + r.below(3600) as u32),
                    acceptance_rate: Some(r.below(101) as f64 / 100.0),
                    count: r.below(500) as u32,
                },
            }
        })
        .collect()
}

pub fn gen_agreements(r: &mut Rng) -> Vec<Agreement> {
    let kinds = [
        AgreementKind::MedicalConsortium,
        AgreementKind::SpecialtyAlliance,
        AgreementKind::CounterpartSupport,
        AgreementKind::TelemedicineNetwork,
    ];
    let mut out = Vec::new();
    for county in facilities("COUNTY", 100) {
        for city in facilities("CITY", 40) {
            if r.chance(40) {
                out.push(Agreement {
                    id: format!("AG-{county}-{city}"),
                    requesting_facility: county.clone(),
                    expert_facility: city,
                    kind: kinds[r.below(4) as usize],
                    valid_from: NaiveDate::from_ymd_opt(2024, 1, 1).expect("date"),
                    valid_to: r
                        .chance(80)
                        .then(|| NaiveDate::from_ymd_opt(2027, 12, 31).expect("date")),
                });
            }
        }
    }
    out
}

pub fn gen_cases(
    r: &mut Rng,
    n: usize,
    now: DateTime<Utc>,
    depts: &[(String, Vec<String>)],
) -> Vec<CaseRequest> {
    let counties = facilities("COUNTY", 100);
    (0..n)
        .map(|i| {
            let (dept, cats) = &depts[r.below(depts.len() as u64) as usize];
            // One case in ten asks for a first-level department (03: every 03.xx expert).
            let department = if r.chance(10) {
                dept[..2].to_owned()
            } else {
                dept.clone()
            };
            let icd10 = r.chance(70).then(|| {
                let cat = &cats[r.below(cats.len() as u64) as usize];
                IcdCode::parse(&format!("{cat}.{}", r.below(10))).expect("generated code")
            });
            let urgent = r.chance(20);
            CaseRequest {
                id: format!("task-{i:05}"),
                department,
                icd10,
                min_title: r.chance(50).then(|| Title::ALL[1 + r.below(3) as usize]),
                urgency: if urgent {
                    Urgency::Urgent
                } else {
                    Urgency::Routine
                },
                requesting_facility: counties[r.below(counties.len() as u64) as usize].clone(),
                window: (!urgent && r.chance(40)).then(|| {
                    let from = now + chrono::Duration::hours(r.below(96) as i64);
                    TimeWindow {
                        from,
                        to: from + chrono::Duration::hours(2),
                    }
                }),
                require_external: r.chance(30),
                exclude_experts: vec![],
                follow_up_of: None,
                preferred_expert: None,
                language: r.chance(10).then(|| "yue".to_owned()),
            }
        })
        .collect()
}
