//! `start` under the China rules of the facility (huizhen_domain::compliance): each service
//! type's preconditions, the verifications' age before each session (CN-11, CN-12), children
//! under the guardian rule's age (CN-13), and a facility's added requirement, each refused with
//! its rule and allowed once met.

use chrono::{NaiveDate, TimeDelta};
use huizhen_domain::compliance::{ComplianceConfig, CompliancePolicy, Rules, StartFacts};
use huizhen_domain::consultation::*;

use crate::support::*;

/// Starts under `rules` for a patient born on `birth`: the events, or what is missing.
fn start(k: &mut Case, rules: Rules, birth: Option<&str>) -> Result<(), Vec<Requirement>> {
    let at = k.now + TimeDelta::seconds(1);
    let facts = StartFacts {
        now: at,
        birth_date: birth.map(|b| b.parse::<NaiveDate>().unwrap()),
        today: at.date_naive(),
    };
    let doctor = local_doctor();
    let ctx = Context::new(at, &doctor).with_start(StartCheck { rules, facts });
    match k.c.execute(&Command::Start, &ctx) {
        Ok((next, events)) => {
            k.c = next;
            k.events.extend(events);
            Ok(())
        }
        Err(ConsultError::Missing { missing, .. }) => Err(missing),
        Err(e) => panic!("start refused for another reason: {e}"),
    }
}

fn rules_of(yaml: &str, facility: &str, t: ServiceType) -> Rules {
    let c: ComplianceConfig = serde_saphyr::from_str(yaml).unwrap();
    CompliancePolicy::new(&c).unwrap().rules(facility, t)
}

/// CN-11: a verification older than the facility allows does not count; verifying again
/// before the session does.
#[test]
fn cn_11_a_stale_verification_is_refused_and_a_fresh_one_passes() {
    let rules = rules_of(
        "service_types: { institution-to-institution: { verification_max_age_minutes: 30 } }",
        "clinic",
        ServiceType::InstitutionToInstitution,
    );
    let mut k = scheduled(ServiceType::InstitutionToInstitution);
    k.consent();
    k.attach_physician();
    let early = k.now;
    k.run(&system(), verification(physician("E1"), early));
    k.run(&system(), verification(physician(LOCAL_PHYSICIAN), early));
    // Within the half hour: allowed (checked on a copy: nothing is committed).
    let mut copy = k.clone();
    start(&mut copy, rules, None).unwrap();
    // Two hours later: both physicians verify again.
    k.now += TimeDelta::hours(2);
    let missing = start(&mut k, rules, None).unwrap_err();
    assert_eq!(
        missing,
        [
            Requirement::FreshVerification {
                who: "physician `E1`".into(),
                max_age_minutes: 30
            },
            Requirement::FreshVerification {
                who: format!("physician `{LOCAL_PHYSICIAN}`"),
                max_age_minutes: 30
            },
        ]
    );
    assert_eq!(missing[0].rule(), "CN-11");
    assert!(
        missing[0].to_string().contains("older than 30 minutes"),
        "{}",
        missing[0]
    );
    let at = k.now;
    k.run(&system(), verification(physician("E1"), at));
    k.run(&system(), verification(physician(LOCAL_PHYSICIAN), at));
    start(&mut k, rules, None).unwrap();
    assert_eq!(k.c.state(), State::InSession);
}

/// CN-13: a 4-year-old's follow-up online needs a verified guardian and a verified physician;
/// a 7-year-old's does not.
#[test]
fn cn_13_a_child_under_six_needs_a_guardian_and_a_physician() {
    let rules = Rules::statutory(ServiceType::DirectToPatient);
    let mut k = scheduled(ServiceType::DirectToPatient);
    k.consent();
    let at = k.now;
    k.run(&system(), verification(physician("E1"), at));
    k.run(&system(), verification(Subject::Patient, at));
    k.prior_diagnosis();
    let born = "2022-06-01";
    let missing = start(&mut k, rules, Some(born)).unwrap_err();
    assert_eq!(
        missing,
        [
            Requirement::LocalPhysician,
            Requirement::Guardian { under_years: 6 }
        ]
    );
    assert_eq!(missing[1].rule(), "CN-13");
    assert!(missing[1].to_string().contains("under 6"), "{}", missing[1]);
    // A 7-year-old (same records) may start.
    let mut older = k.clone();
    start(&mut older, rules, Some("2019-01-01")).unwrap();
    k.attach_physician();
    let at = k.now;
    k.run(&system(), verification(physician(LOCAL_PHYSICIAN), at));
    k.run(
        &system(),
        verification(
            Subject::Guardian {
                relationship: Some("mother".into()),
            },
            at,
        ),
    );
    start(&mut k, rules, Some(born)).unwrap();
    assert_eq!(k.c.state(), State::InSession);
}

/// A facility adds the patient's real-name verification (CN-12) to institution-to-institution
/// consultations; another facility keeps the law's rules.
#[test]
fn a_facility_s_added_requirement_applies_to_its_consultations_only() {
    let yaml =
        "facilities: { clinic-a: { institution-to-institution: { patient_verification: true } } }";
    let strict = rules_of(yaml, "clinic-a", ServiceType::InstitutionToInstitution);
    let plain = rules_of(yaml, "clinic-b", ServiceType::InstitutionToInstitution);
    let mut k = scheduled(ServiceType::InstitutionToInstitution);
    k.gates();
    let mut other = k.clone();
    let missing = start(&mut k, strict, None).unwrap_err();
    assert_eq!(missing, [Requirement::PatientVerified]);
    assert_eq!(missing[0].rule(), "CN-12");
    start(&mut other, plain, None).unwrap();
    let at = k.now;
    k.run(&system(), verification(Subject::Patient, at));
    start(&mut k, strict, None).unwrap();
}

/// CN-10 and CN-05 per service type under the configured rules: a direct-to-patient visit
/// without prior-diagnosis evidence and consent is refused with both rules, then allowed.
#[test]
fn cn_05_and_cn_10_are_named_and_then_met() {
    let rules = Rules::statutory(ServiceType::DirectToPatient);
    let mut k = scheduled(ServiceType::DirectToPatient);
    let at = k.now;
    k.run(&system(), verification(physician("E1"), at));
    k.run(&system(), verification(Subject::Patient, at));
    let missing = start(&mut k, rules, Some("1980-01-01")).unwrap_err();
    let named: Vec<&str> = missing.iter().map(Requirement::rule).collect();
    assert_eq!(named, ["CN-05", "CN-10"]);
    k.consent();
    k.prior_diagnosis();
    start(&mut k, rules, Some("1980-01-01")).unwrap();
}

/// CN-03: the invitation's content (reason, purpose, case summary, the requested department
/// and title, the time) is required for every service type; every missing piece is named by
/// its path at once, and a JSON request without the requested title does not parse.
#[test]
fn cn_03_an_invitation_without_its_content_is_refused_by_field() {
    for service in ServiceType::ALL {
        let mut r = request();
        r.service_type = service;
        r.reason = " ".into();
        r.purpose = String::new();
        r.case_summary = String::new();
        r.department = String::new();
        let e = r.validate().unwrap_err();
        for path in ["department", "reason", "purpose", "case_summary"] {
            assert!(e.paths().contains(&path), "{service:?}: {e}");
        }
    }
    let mut v = serde_json::to_value(request()).unwrap();
    v.as_object_mut().unwrap().remove("min_title");
    let e = serde_json::from_value::<ConsultationRequest>(v).unwrap_err();
    assert!(e.to_string().contains("min_title"), "{e}");
    let mut v = serde_json::to_value(request()).unwrap();
    v.as_object_mut().unwrap().remove("requested_time");
    assert!(serde_json::from_value::<ConsultationRequest>(v).is_err());
}

/// CN-12: a follow-up visit online does not start for an unverified patient; the record keeps
/// the method and the provider's reference, and refuses a face image.
#[test]
fn cn_12_an_unverified_patient_does_not_start_and_no_face_is_kept() {
    let rules = Rules::statutory(ServiceType::DirectToPatient);
    let mut k = scheduled(ServiceType::DirectToPatient);
    k.consent();
    k.prior_diagnosis();
    let at = k.now;
    k.run(&system(), verification(physician("E1"), at));
    let missing = start(&mut k, rules, Some("1970-01-01")).unwrap_err();
    assert_eq!(missing, [Requirement::PatientVerified]);
    assert_eq!(missing[0].rule(), "CN-12");
    let with_face = serde_json::json!({
        "subject": {"kind": "patient"}, "method": "id-card-face", "verified_at": at,
        "result": "passed", "provider_reference": "faceid-7", "face_image": "/9j/4AAQ…"
    });
    let e = serde_json::from_value::<Verification>(with_face.clone()).unwrap_err();
    assert!(e.to_string().contains("face_image"), "{e}");
    let mut v = with_face;
    v.as_object_mut().unwrap().remove("face_image");
    let verification: Verification = serde_json::from_value(v).unwrap();
    assert_eq!(verification.method, VerificationMethod::IdCardFace);
    k.run(&system(), Command::RecordVerification { verification });
    start(&mut k, rules, Some("1970-01-01")).unwrap();
}
