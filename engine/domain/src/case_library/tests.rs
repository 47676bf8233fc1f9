//! De-identification and redaction, search, and the ranking of recommendations on a small
//! fixture set whose scores are computed by hand in the comments.

use chrono::{DateTime, NaiveDate, Utc};

use super::*;
use crate::expert::icd::IcdCode;

fn icd(s: &str) -> IcdCode {
    IcdCode::parse(s).unwrap()
}

fn day(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn utc(s: &str) -> DateTime<Utc> {
    format!("{s}T06:00:00Z").parse().unwrap()
}

fn patient() -> PatientFacts {
    PatientFacts {
        name: "张三".into(),
        id_numbers: vec!["110101199003071234".into()],
        phones: vec!["13800138000".into()],
        address: Some("北京市朝阳区望京路1号".into()),
        birth_date: Some(day("1990-03-07")),
    }
}

fn completed(id: &str, department: &str, codes: &[&str], on: &str) -> CompletedCase {
    CompletedCase {
        consultation_id: id.into(),
        completed_at: utc(on),
        department: department.into(),
        diagnoses: codes.iter().map(|c| icd(c)).collect(),
        flags: CaseFlags::default(),
        patient: patient(),
        summary: "胸痛三天".into(),
        opinion: "建议冠脉造影".into(),
        expert_id: "exp-1".into(),
    }
}

#[test]
fn deidentification_removes_the_patient() {
    let mut case = completed("c-1", "03.02", &["I25.10", "I25.10", "E11.9"], "2026-02-01");
    case.summary =
        "患者张三，男，住北京市朝阳区望京路1号，身份证110101199003071234，电话13800138000，\
                    血压140/90mmHg。"
            .into();
    let record = deidentify(&case).unwrap();
    assert_eq!(
        record.summary,
        "患者[姓名]，男，住[地址]，身份证[号码]，电话[号码]，血压140/90mmHg。"
    );
    assert_eq!(record.age_band.unwrap().to_string(), "35-39");
    assert_eq!(record.completed_on, day("2026-02-01"));
    assert_eq!(record.diagnoses, [icd("I25.10"), icd("E11.9")]);
    let json = serde_json::to_string(&record).unwrap();
    for secret in [
        "张三",
        "13800138000",
        "110101199003071234",
        "望京路",
        "1990",
    ] {
        assert!(!json.contains(secret), "{secret} in {json}");
    }
}

#[test]
fn digit_runs_that_look_like_ids_or_phones_are_redacted() {
    let text = "身份证11010119900307123X，手机 138-0013-8000，座机 0731 8888 1234，血压 140/90 mmHg，\
                剂量 100 mg，入院 2024-03-05，ID １３８００１３８０００，病案号 123456";
    assert_eq!(
        redact_digit_runs(text),
        "身份证[身份证号]，手机 [手机号]，座机 [号码]，血压 140/90 mmHg，剂量 100 mg，入院 [号码]，\
         ID [手机号]，病案号 123456"
    );
    assert_eq!(redact_digit_runs("110101199003071234"), "[身份证号]");
    assert_eq!(redact_digit_runs("共 2 片，3 次"), "共 2 片，3 次");
    // A one-character name would blank ordinary text: not replaced.
    let short = PatientFacts {
        name: "李".into(),
        ..PatientFacts::default()
    };
    assert_eq!(redact_text("李医生", &short), "李医生");
}

#[test]
fn age_bands_and_refusals() {
    assert_eq!(
        AgeBand::at(day("2026-01-01"), day("2026-06-01"))
            .unwrap()
            .to_string(),
        "0-4"
    );
    assert_eq!(
        AgeBand::at(day("1930-01-01"), day("2026-06-01"))
            .unwrap()
            .to_string(),
        "90+"
    );
    assert_eq!(
        AgeBand::at(day("1981-06-02"), day("2026-06-01"))
            .unwrap()
            .to_string(),
        "40-44"
    );
    let mut case = completed("c-1", "03.02", &["I25"], "2026-02-01");
    case.patient.birth_date = Some(day("2026-05-01"));
    assert_eq!(
        deidentify(&case).unwrap_err(),
        DeidError::BirthAfterCompletion { case: "c-1".into() }
    );
    case.diagnoses.clear();
    assert!(matches!(
        deidentify(&case).unwrap_err(),
        DeidError::NoDiagnosis { .. }
    ));
    let mut case = completed("c-1", " ", &["I25"], "2026-02-01");
    assert_eq!(
        deidentify(&case).unwrap_err(),
        DeidError::Blank {
            case: "c-1".into(),
            field: "department"
        }
    );
    case.department = "03".into();
    case.patient.birth_date = None;
    assert_eq!(deidentify(&case).unwrap().age_band, None);
}

/// The fixture set; scores for [`doctor`] asking about I25.10 on 2026-03-01 with the default
/// weights (specialty 0.3, code 0.5, recency 0.2, half-life 365 days):
///
/// | case | department | code | completed | specialty | code | recency | score |
/// |---|---|---|---|---|---|---|---|
/// | c-a | 03.02 | I25.10 | 28 d | 0.3 | 0.5 | 0.2·0.5^(28/365) = 0.1896 | 0.9896 |
/// | c-b | 03.02 | I25.10 | 365 d | 0.3 | 0.5 | 0.1 | 0.9 |
/// | c-c | 03.04 | I25.1 | 28 d | 0.15 (same 03) | 0.3 (category) | 0.1896 | 0.6396 |
/// | c-d | 03.02 | I50.0 | 28 d | 0.3 | 0.15 (chapter IX) | 0.1896 | 0.6396 (tie: by id) |
/// | c-e | 04 | I25.10 | 730 d | — | 0.5 | 0.05 | 0.55 |
/// | c-g | 03.02 | E11.9 | 181 d | 0.3 | — | 0.2·0.5^(181/365) = 0.1418 | 0.4418 |
/// | c-f | 04 | J18.9 | 1 d | — | — | | not recommended |
fn library() -> CaseLibrary {
    let mut lib = CaseLibrary::new();
    for (id, dept, code, on) in [
        ("c-g", "03.02", "E11.9", "2025-09-01"),
        ("c-f", "04", "J18.9", "2026-02-28"),
        ("c-e", "04", "I25.10", "2024-03-01"),
        ("c-d", "03.02", "I50.0", "2026-02-01"),
        ("c-c", "03.04", "I25.1", "2026-02-01"),
        ("c-b", "03.02", "I25.10", "2025-03-01"),
        ("c-a", "03.02", "I25.10", "2026-02-01"),
    ] {
        let mut case = completed(id, dept, &[code], on);
        case.flags.emergency = matches!(id, "c-b" | "c-e");
        case.flags.rare_disease = id == "c-g";
        lib.add_case(&case).unwrap();
    }
    lib
}

fn doctor() -> DoctorProfile {
    DoctorProfile {
        doctor_id: "dr-li".into(),
        departments: vec!["03.02".into()],
        expertise: vec![icd("I25")],
    }
}

fn now() -> DateTime<Utc> {
    utc("2026-03-01")
}

fn i25_10() -> RecommendQuery {
    RecommendQuery {
        icd10: vec![icd("I25.10")],
        ..RecommendQuery::default()
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-4
}

#[test]
fn recommendations_rank_with_their_reasons() {
    let lib = library();
    let query = RecommendQuery {
        icd10: vec![icd("I25.10")],
        ..RecommendQuery::default()
    };
    let recs = lib.recommend(&doctor(), &query, now());
    let got: Vec<_> = recs.iter().map(|r| r.case_id.as_str()).collect();
    assert_eq!(got, ["c-a", "c-b", "c-c", "c-d", "c-e", "c-g"]);
    for (rec, expected) in recs.iter().zip([0.9896, 0.9, 0.6396, 0.6396, 0.55, 0.4418]) {
        assert!(
            close(rec.score, expected),
            "{}: {} vs {expected}",
            rec.case_id,
            rec.score
        );
        let sum: f64 = rec.reasons.iter().map(|r| r.contribution).sum();
        assert!(close(sum, rec.score), "{}", rec.case_id);
    }
    // The tie is exact and broken by id.
    assert_eq!(recs[2].score, recs[3].score);
    let c = &recs[2];
    let kinds: Vec<_> = c.reasons.iter().map(|r| (r.kind, r.value)).collect();
    assert_eq!(kinds[0], (ReasonKind::Specialty, 0.5));
    assert_eq!(kinds[1], (ReasonKind::Code, 0.6));
    assert_eq!(kinds[2].0, ReasonKind::Recency);
    assert_eq!(
        c.reasons[0].detail,
        "department 03.04 shares 03 with yours (03.02)"
    );
    assert_eq!(c.reasons[1].detail, "I25.1: same category as I25.10");
    assert_eq!(c.reasons[2].detail, "completed 28 days ago");
    assert_eq!(recs[3].reasons[1].detail, "I50.0: same chapter as I25.10");
    // c-e has no specialty reason, c-g no code reason.
    assert!(
        recs[4]
            .reasons
            .iter()
            .all(|r| r.kind != ReasonKind::Specialty)
    );
    assert!(recs[5].reasons.iter().all(|r| r.kind != ReasonKind::Code));
    // Same input, same output.
    assert_eq!(lib.recommend(&doctor(), &query, now()), recs);
}

#[test]
fn recommendations_filter_limit_and_fall_back_to_expertise() {
    let lib = library();
    let emergency = RecommendQuery {
        icd10: vec![icd("I25.10")],
        flags: CaseFlags {
            emergency: true,
            ..CaseFlags::default()
        },
        limit: 10,
    };
    let ids = |recs: Vec<Recommendation>| -> Vec<String> {
        recs.into_iter().map(|r| r.case_id).collect()
    };
    assert_eq!(
        ids(lib.recommend(&doctor(), &emergency, now())),
        ["c-b", "c-e"]
    );
    let top2 = RecommendQuery {
        icd10: vec![icd("I25.10")],
        limit: 2,
        ..RecommendQuery::default()
    };
    assert_eq!(ids(lib.recommend(&doctor(), &top2, now())), ["c-a", "c-b"]);
    // No codes in the query: the doctor's expertise (I25) is used; I25.10 and I25.1 are then
    // the same category, so c-c (03.04, 28 days) still ranks below c-b (03.02, 365 days).
    let recs = lib.recommend(&doctor(), &RecommendQuery::default(), now());
    assert_eq!(recs[0].case_id, "c-a");
    assert_eq!(recs[0].reasons[1].detail, "I25.10: same category as I25");
    // Only recency weighed: the newest related case first.
    let recent = CaseLibrary::with_weights(RecommendWeights {
        specialty: 0.0,
        code: 0.0,
        recency: 1.0,
        half_life_days: 30,
    })
    .unwrap();
    let mut recent = recent;
    for record in lib.records() {
        recent.add_record(record.clone()).unwrap();
    }
    let recs = recent.recommend(&doctor(), &i25_10(), now());
    assert_eq!(
        ids(recs.clone()),
        ["c-a", "c-c", "c-d", "c-g", "c-b", "c-e"]
    );
    // Zero-weight reasons are left out; c-f (unrelated) is still not recommended.
    assert!(
        recs.iter()
            .all(|r| r.reasons.len() == 1 && r.reasons[0].kind == ReasonKind::Recency)
    );
    let bad = RecommendWeights {
        code: -1.0,
        ..RecommendWeights::default()
    };
    assert!(matches!(
        CaseLibrary::with_weights(bad).unwrap_err(),
        CaseLibraryError::Weights(m) if m.contains("code -1")
    ));
    let zero = RecommendWeights {
        half_life_days: 0,
        ..RecommendWeights::default()
    };
    assert!(CaseLibrary::with_weights(zero).is_err());
}

#[test]
fn search_by_prefix_department_and_flags() {
    let lib = library();
    let ids = |q: CaseQuery| -> Vec<String> {
        lib.search(&q)
            .unwrap()
            .into_iter()
            .map(|r| r.case_id.clone())
            .collect()
    };
    let prefix = |p: &str| CaseQuery {
        icd10_prefix: Some(p.into()),
        ..CaseQuery::default()
    };
    // Most recent first, ties by id.
    assert_eq!(ids(prefix("i25")), ["c-a", "c-c", "c-b", "c-e"]);
    assert_eq!(ids(prefix("I25.10")), ["c-a", "c-b", "c-e"]);
    assert_eq!(ids(prefix("Ｉ２")), ["c-a", "c-c", "c-b", "c-e"]);
    assert_eq!(ids(prefix("I")).len(), 5);
    let dept = CaseQuery {
        department: Some("03".into()),
        ..CaseQuery::default()
    };
    assert_eq!(ids(dept), ["c-a", "c-c", "c-d", "c-g", "c-b"]);
    let rare = CaseQuery {
        flags: CaseFlags {
            rare_disease: true,
            ..CaseFlags::default()
        },
        ..CaseQuery::default()
    };
    assert_eq!(ids(rare), ["c-g"]);
    let both = CaseQuery {
        icd10_prefix: Some("I25".into()),
        department: Some("04".into()),
        flags: CaseFlags {
            emergency: true,
            ..CaseFlags::default()
        },
    };
    assert_eq!(ids(both), ["c-e"]);
    assert_eq!(ids(CaseQuery::default()).len(), 7);
    for bad in ["心", "25", "I2-5", ""] {
        assert_eq!(
            lib.search(&prefix(bad)).unwrap_err(),
            CaseLibraryError::Prefix(bad.into()),
            "{bad}"
        );
    }
}

#[test]
fn chapters_and_code_matches() {
    for (code, expected) in [
        ("A09", Some(1)),
        ("D48.9", Some(2)),
        ("D50.0", Some(3)),
        ("D49", None),
        ("H59", Some(7)),
        ("H60.1", Some(8)),
        ("I25.10", Some(9)),
        ("S72.0", Some(19)),
        ("T98", Some(19)),
        ("V01", Some(20)),
        ("U07.1", Some(22)),
    ] {
        assert_eq!(chapter(&icd(code)), expected, "{code}");
    }
    assert_eq!(
        CodeMatch::of(&icd("I25.1"), &icd("i25.1")),
        Some(CodeMatch::Exact)
    );
    assert_eq!(
        CodeMatch::of(&icd("I25.1"), &icd("I25.9")),
        Some(CodeMatch::Category)
    );
    assert_eq!(
        CodeMatch::of(&icd("I25.1"), &icd("I50")),
        Some(CodeMatch::Chapter)
    );
    assert_eq!(CodeMatch::of(&icd("D48"), &icd("D50")), None);
    assert_eq!(
        CodeMatch::of(&icd("D49"), &icd("D49.1")),
        Some(CodeMatch::Category)
    );
    assert_eq!(CodeMatch::of(&icd("D49"), &icd("D47")), None);
    let mut lib = library();
    let duplicate = lib.add_case(&completed("c-a", "03", &["I25"], "2026-01-01"));
    assert_eq!(
        duplicate.unwrap_err(),
        CaseLibraryError::Duplicate("c-a".into())
    );
}
