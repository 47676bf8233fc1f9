//! The report on a hand-computed data set: nearest-rank median and p90 per scope, completion
//! rates, SLA breaches, the period filter, validation, and the CSV text.

use chrono::{DateTime, Duration, Utc};

use super::*;

fn t0() -> DateTime<Utc> {
    "2026-02-10T01:00:00Z".parse().unwrap()
}

#[derive(Clone, Copy)]
enum End {
    Done,
    Cancelled,
    Failed,
    Open,
}

fn fact(
    id: &str,
    facility: &str,
    dept: &str,
    accept: Option<i64>,
    end: End,
    sla: bool,
) -> ConsultationFacts {
    let created = t0() + Duration::hours(id[1..].parse::<i64>().unwrap());
    let accepted = accept.map(|s| created + Duration::seconds(s));
    ConsultationFacts {
        consultation_id: id.into(),
        facility: facility.into(),
        department: dept.into(),
        created_at: created,
        accepted_at: accepted,
        completed_at: matches!(end, End::Done).then(|| created + Duration::hours(2)),
        cancelled: matches!(end, End::Cancelled),
        failed: matches!(end, End::Failed),
        sla_breached: sla,
    }
}

/// | id | facility | dept | accept s | outcome | SLA breached |
/// |---|---|---|---|---|---|
/// | c1 | F1 | 03 | 60 | completed | |
/// | c2 | F1 | 03 | 120 | completed | |
/// | c3 | F1 | 04 | 300 | failed | yes |
/// | c4 | F1 | 03 | 600 | completed | |
/// | c5 | F1 | 04 | 1200 | cancelled | yes |
/// | c6 | F2 | 03 | 30 | completed | |
/// | c7 | F2 | 04 | 90 | open | |
/// | c8 | F2 | 04 | 150 | completed | |
/// | c9 | F2 | 03 | 3000 | completed | yes |
/// | c10 | F2 | 03 | — | cancelled | yes |
/// | c99 | F2 | 03 | 10 | completed | (created after the period: not counted) |
fn facts() -> Vec<ConsultationFacts> {
    use End::*;
    vec![
        fact("c1", "F1", "03", Some(60), Done, false),
        fact("c2", "F1", "03", Some(120), Done, false),
        fact("c3", "F1", "04", Some(300), Failed, true),
        fact("c4", "F1", "03", Some(600), Done, false),
        fact("c5", "F1", "04", Some(1200), Cancelled, true),
        fact("c6", "F2", "03", Some(30), Done, false),
        fact("c7", "F2", "04", Some(90), Open, false),
        fact("c8", "F2", "04", Some(150), Done, false),
        fact("c9", "F2", "03", Some(3000), Done, true),
        fact("c10", "F2", "03", None, Cancelled, true),
        fact("c99", "F2", "03", Some(10), Done, false),
    ]
}

fn period() -> StatsPeriod {
    StatsPeriod {
        from: t0(),
        to: t0() + Duration::days(1),
    }
}

/// (scope, facility, department) → (volume, accepted, median, p90, completed, cancelled,
/// failed, open, rate, sla).
type Expected = (
    (Scope, &'static str, &'static str),
    (
        u64,
        u64,
        Option<u64>,
        Option<u64>,
        u64,
        u64,
        u64,
        u64,
        Option<f64>,
        u64,
    ),
);

#[test]
fn the_report_matches_the_hand_computation() {
    use Scope::*;
    let rows = compute_stats(&facts(), period()).unwrap();
    // Sorted accept times and nearest ranks: all = [30,60,90,120,150,300,600,1200,3000], n 9,
    // median rank ⌈4.5⌉ = 5 → 150, p90 rank ⌈8.1⌉ = 9 → 3000. F1 = [60,120,300,600,1200]:
    // ranks 3 and 5. F2 = [30,90,150,3000]: median rank 2 → 90, p90 rank ⌈3.6⌉ = 4.
    // 03 = [30,60,120,600,3000]: 120 and 3000. 04 = [90,150,300,1200]: 150 and 1200.
    let expected: [Expected; 9] = [
        (
            (All, "", ""),
            (10, 9, Some(150), Some(3000), 6, 2, 1, 1, Some(6.0 / 9.0), 4),
        ),
        (
            (Facility, "F1", ""),
            (5, 5, Some(300), Some(1200), 3, 1, 1, 0, Some(0.6), 2),
        ),
        (
            (Facility, "F2", ""),
            (5, 4, Some(90), Some(3000), 3, 1, 0, 1, Some(0.75), 2),
        ),
        (
            (Department, "", "03"),
            (6, 5, Some(120), Some(3000), 5, 1, 0, 0, Some(5.0 / 6.0), 2),
        ),
        (
            (Department, "", "04"),
            (4, 4, Some(150), Some(1200), 1, 1, 1, 1, Some(1.0 / 3.0), 2),
        ),
        (
            (FacilityDepartment, "F1", "03"),
            (3, 3, Some(120), Some(600), 3, 0, 0, 0, Some(1.0), 0),
        ),
        (
            (FacilityDepartment, "F1", "04"),
            (2, 2, Some(300), Some(1200), 0, 1, 1, 0, Some(0.0), 2),
        ),
        (
            (FacilityDepartment, "F2", "03"),
            (3, 2, Some(30), Some(3000), 2, 1, 0, 0, Some(2.0 / 3.0), 2),
        ),
        (
            (FacilityDepartment, "F2", "04"),
            (2, 2, Some(90), Some(150), 1, 0, 0, 1, Some(1.0), 0),
        ),
    ];
    assert_eq!(rows.len(), expected.len());
    for (row, ((scope, fac, dept), n)) in rows.iter().zip(expected) {
        let key = (
            row.scope,
            row.facility.as_deref().unwrap_or(""),
            row.department.as_deref().unwrap_or(""),
        );
        assert_eq!(key, (scope, fac, dept));
        let got = (
            row.volume,
            row.accepted,
            row.median_accept_seconds,
            row.p90_accept_seconds,
            row.completed,
            row.cancelled,
            row.failed,
            row.open,
            row.completion_rate,
            row.sla_breaches,
        );
        assert_eq!(got, n, "{key:?}");
    }
}

#[test]
fn empty_groups_have_no_percentiles_or_rate() {
    use End::*;
    let only_open = [fact("c1", "F1", "03", None, Open, false)];
    let rows = compute_stats(&only_open, period()).unwrap();
    assert_eq!(rows[0].volume, 1);
    assert_eq!(rows[0].median_accept_seconds, None);
    assert_eq!(rows[0].completion_rate, None);
    let none = compute_stats(&[], period()).unwrap();
    assert_eq!(none.len(), 1);
    assert_eq!(none[0].volume, 0);
}

#[test]
fn bad_facts_are_named() {
    use End::*;
    let mut early = fact("c1", "F1", "03", Some(60), Done, false);
    early.accepted_at = Some(early.created_at - Duration::seconds(1));
    let mut two = fact("c2", "F1", "03", Some(60), Done, false);
    two.cancelled = true;
    let blank = fact("c3", " ", "03", None, Open, false);
    let never = fact("c4", "F1", "03", None, Done, false);
    for (f, field) in [
        (early, "accepted_at"),
        (two, "outcome"),
        (blank, "facility"),
        (never, "accepted_at"),
    ] {
        let id = f.consultation_id.clone();
        match compute_stats(&[f], period()).unwrap_err() {
            StatsError::Invalid {
                consultation,
                field: got,
                ..
            } => {
                assert_eq!((consultation.as_str(), got), (id.as_str(), field));
            }
            other => panic!("{other:?}"),
        }
    }
    let dup = [
        fact("c1", "F1", "03", None, Open, false),
        fact("c1", "F2", "04", None, Open, false),
    ];
    assert_eq!(
        compute_stats(&dup, period()).unwrap_err(),
        StatsError::Duplicate("c1".into())
    );
    let backwards = StatsPeriod {
        from: t0(),
        to: t0(),
    };
    assert!(matches!(
        compute_stats(&[], backwards).unwrap_err(),
        StatsError::Period { .. }
    ));
}

#[test]
fn csv_has_the_documented_header_and_rows() {
    let rows = compute_stats(&facts(), period()).unwrap();
    let csv = to_csv(&rows);
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert_eq!(
        lines[0],
        "scope,facility,department,volume,accepted,median_accept_seconds,p90_accept_seconds,\
         completed,cancelled,failed,open,completion_rate,sla_breaches"
    );
    assert_eq!(lines[1], "all,,,10,9,150,3000,6,2,1,1,0.6667,4");
    assert_eq!(lines[4], "department,,03,6,5,120,3000,5,1,0,0,0.8333,2");
    assert_eq!(
        lines[9],
        "facility-department,F2,04,2,2,90,150,1,0,0,1,1.0000,0"
    );
    assert_eq!(lines.len(), rows.len() + 2, "every line ends with CRLF");
    assert_eq!(lines[10], "");
    // Quoting and formula guarding.
    let mut odd = rows[1].clone();
    odd.facility = Some("县医院, \"东院\"".into());
    odd.department = Some("=HYPERLINK(\"x\")".into());
    odd.median_accept_seconds = None;
    odd.completion_rate = None;
    let line = to_csv(&[odd]).split("\r\n").nth(1).unwrap().to_owned();
    assert_eq!(
        line,
        "facility,\"县医院, \"\"东院\"\"\",\"'=HYPERLINK(\"\"x\"\")\",5,5,,1200,3,1,1,0,,2"
    );
}
