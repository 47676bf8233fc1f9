//! The rules per service type and facility: the law's floors hold, overrides tighten, and the
//! creation check (CN-01, CN-02) names the rule.

use chrono::NaiveDate;

use super::*;
use crate::expert::AgreementKind;

fn date(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn config(yaml: &str) -> ComplianceConfig {
    serde_saphyr::from_str(yaml).unwrap()
}

fn agreement(id: &str, facility: &str, from: &str, to: Option<&str>) -> Agreement {
    Agreement {
        id: id.into(),
        requesting_facility: facility.into(),
        expert_facility: "H-PROV-1".into(),
        kind: AgreementKind::MedicalConsortium,
        valid_from: date(from),
        valid_to: to.map(date),
    }
}

#[test]
fn the_defaults_are_the_law_per_service_type() {
    let p = CompliancePolicy::default();
    let i2i = p.rules("any", ServiceType::InstitutionToInstitution);
    assert!(i2i.offered && i2i.agreement && i2i.consent && i2i.local_physician);
    assert!(!i2i.prior_diagnosis && !i2i.patient_verification);
    let d2p = p.rules("any", ServiceType::DirectToPatient);
    assert!(d2p.consent && d2p.prior_diagnosis && d2p.patient_verification);
    assert!(!d2p.agreement && !d2p.local_physician);
    let ih = p.rules("any", ServiceType::InternetHospital);
    assert!(ih.consent && ih.patient_verification && !ih.prior_diagnosis);
    for t in ServiceType::ALL {
        assert_eq!(p.rules("any", t).guardian_under_years, 6);
        assert_eq!(p.rules("any", t).verification_max_age_minutes, None);
    }
}

#[test]
fn facilities_tighten_and_may_offer_fewer_types() {
    let p = CompliancePolicy::new(&config(
        r#"
service_types:
  institution-to-institution: { patient_verification: true, verification_max_age_minutes: 1440 }
facilities:
  clinic-a:
    direct-to-patient: { offered: false }
    institution-to-institution: { verification_max_age_minutes: 30, guardian_under_years: 14 }
"#,
    ))
    .unwrap();
    let a = p.rules("clinic-a", ServiceType::InstitutionToInstitution);
    assert!(a.patient_verification, "the base's addition stays");
    assert_eq!(a.verification_max_age_minutes, Some(30));
    assert_eq!(a.guardian_under_years, 14);
    assert!(!p.rules("clinic-a", ServiceType::DirectToPatient).offered);
    let b = p.rules("clinic-b", ServiceType::InstitutionToInstitution);
    assert_eq!(b.verification_max_age_minutes, Some(1440));
    assert_eq!(b.guardian_under_years, 6);
    assert!(p.rules("clinic-b", ServiceType::DirectToPatient).offered);
    // A facility's longer age than the base's is no loosening: the shorter one holds.
    let p = CompliancePolicy::new(&config(
        r#"
service_types:
  direct-to-patient: { verification_max_age_minutes: 30 }
facilities:
  clinic-a:
    direct-to-patient: { verification_max_age_minutes: 600 }
"#,
    ))
    .unwrap();
    assert_eq!(
        p.rules("clinic-a", ServiceType::DirectToPatient)
            .verification_max_age_minutes,
        Some(30)
    );
}

#[test]
fn turning_off_what_the_law_requires_is_refused_with_the_rule() {
    for (yaml, path, rule) in [
        (
            "service_types: { direct-to-patient: { prior_diagnosis: false } }",
            "compliance.service_types.direct-to-patient.prior_diagnosis",
            "CN-10",
        ),
        (
            "facilities: { c1: { institution-to-institution: { agreement: false } } }",
            "compliance.facilities.c1.institution-to-institution.agreement",
            "CN-02",
        ),
        (
            "facilities: { c1: { internet-hospital: { consent: false } } }",
            "compliance.facilities.c1.internet-hospital.consent",
            "CN-05",
        ),
        (
            "service_types: { institution-to-institution: { local_physician: false } }",
            "compliance.service_types.institution-to-institution.local_physician",
            "CN-06",
        ),
        (
            "service_types: { direct-to-patient: { patient_verification: false } }",
            "compliance.service_types.direct-to-patient.patient_verification",
            "CN-12",
        ),
        (
            "service_types: { direct-to-patient: { guardian_under_years: 3 } }",
            "compliance.service_types.direct-to-patient.guardian_under_years",
            "CN-13",
        ),
        (
            "service_types: { direct-to-patient: { verification_max_age_minutes: 0 } }",
            "compliance.service_types.direct-to-patient.verification_max_age_minutes",
            "CN-11",
        ),
    ] {
        let e = CompliancePolicy::new(&config(yaml)).unwrap_err();
        assert_eq!((e.path.as_str(), e.rule), (path, rule), "{yaml}: {e}");
        assert!(e.to_string().contains(rule), "{e}");
    }
    // What the law leaves open may be switched either way.
    CompliancePolicy::new(&config(
        "service_types: { institution-to-institution: { prior_diagnosis: true, patient_verification: false } }",
    ))
    .unwrap();
    assert!(
        serde_saphyr::from_str::<ComplianceConfig>("service_types: { video: {} }").is_err(),
        "an unknown service type"
    );
}

/// CN-01: a facility that does not offer the type; CN-02: no, a foreign, an expired and a
/// future agreement are refused, one in force passes.
#[test]
fn cn_01_and_cn_02_creation_is_refused_with_the_rule() {
    let p = CompliancePolicy::new(&config(
        "facilities: { clinic-a: { direct-to-patient: { offered: false } } }",
    ))
    .unwrap();
    let today = date("2026-12-06");
    let agreements = [
        agreement("AG-1", "clinic-a", "2026-01-01", None),
        agreement("AG-OLD", "clinic-a", "2024-01-01", Some("2025-12-31")),
        agreement("AG-NEXT", "clinic-a", "2027-01-01", None),
        agreement("AG-B", "clinic-b", "2026-01-01", None),
    ];
    let i2i = p.rules("clinic-a", ServiceType::InstitutionToInstitution);
    let check =
        |rules: &Rules, a: Option<&str>| check_create(rules, "clinic-a", a, &agreements, today);
    check(&i2i, Some("AG-1")).unwrap();
    let refused = |rules: &Rules, a: Option<&str>| {
        let e = check(rules, a).unwrap_err();
        (e.rule(), e.to_string())
    };
    let (rule, text) = refused(&i2i, None);
    assert_eq!(rule, "CN-02");
    assert!(text.contains("cooperation agreement"), "{text}");
    let (rule, text) = refused(&i2i, Some("AG-B"));
    assert_eq!(rule, "CN-02");
    assert!(
        text.contains("`AG-B` is not a cooperation agreement of facility `clinic-a`"),
        "{text}"
    );
    let (_, text) = refused(&i2i, Some("AG-OLD"));
    assert!(
        text.contains("not in force on 2026-12-06: valid 2024-01-01 to 2025-12-31"),
        "{text}"
    );
    let (_, text) = refused(&i2i, Some("AG-NEXT"));
    assert!(text.contains("valid from 2027-01-01"), "{text}");
    let d2p = p.rules("clinic-a", ServiceType::DirectToPatient);
    let (rule, text) = refused(&d2p, None);
    assert_eq!(rule, "CN-01");
    assert!(text.contains("does not offer direct-to-patient"), "{text}");
    // Another facility offers it; no agreement is needed there.
    let d2p_b = p.rules("clinic-b", ServiceType::DirectToPatient);
    check_create(&d2p_b, "clinic-b", None, &agreements, today).unwrap();
}

#[test]
fn ages_count_whole_years_and_the_guardian_rule_follows_them() {
    assert_eq!(
        age_in_years(date("2020-12-07"), date("2026-12-06")),
        Some(5)
    );
    assert_eq!(
        age_in_years(date("2020-12-06"), date("2026-12-06")),
        Some(6)
    );
    assert_eq!(
        age_in_years(date("2024-02-29"), date("2025-02-28")),
        Some(0)
    );
    assert_eq!(age_in_years(date("2027-01-01"), date("2026-12-06")), None);
    let rules = Rules::statutory(ServiceType::DirectToPatient);
    let facts = |birth: Option<&str>| StartFacts {
        now: DateTime::parse_from_rfc3339("2026-12-06T02:00:00Z")
            .unwrap()
            .with_timezone(&Utc),
        birth_date: birth.map(date),
        today: date("2026-12-06"),
    };
    assert!(facts(Some("2021-01-01")).is_minor(&rules));
    assert!(!facts(Some("2020-12-06")).is_minor(&rules));
    assert!(
        !facts(None).is_minor(&rules),
        "no birth date: not known to be a minor"
    );
}
