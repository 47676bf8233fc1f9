//! The gates before the session (CN-05, CN-06, CN-10, CN-11, CN-12): `start` refuses with every
//! missing record named, per service type (CN-01).

use huizhen_domain::consultation::*;

use crate::support::*;

fn missing(k: &mut Case) -> Vec<Requirement> {
    match k.try_run(&local_doctor(), Command::Start) {
        Err(ConsultError::Missing {
            action: Action::Start,
            missing,
        }) => missing,
        other => panic!("start was not refused for missing records: {other:?}"),
    }
}

fn consent(signer: ConsentSigner, not_suitable: bool, k: &Case) -> Command {
    Command::RecordConsent {
        consent: Consent {
            signer,
            document: "DocumentReference/consent-1".into(),
            signed_at: k.now,
            not_suitable_to_inform_patient: not_suitable,
        },
    }
}

#[test]
fn institution_to_institution_needs_consent_a_verified_local_physician_and_expert() {
    let mut k = scheduled(ServiceType::InstitutionToInstitution);
    let e1 = || Requirement::ExpertVerified {
        expert: "E1".into(),
    };
    assert_eq!(
        missing(&mut k),
        [Requirement::Consent, e1(), Requirement::LocalPhysician]
    );
    let e = k.try_run(&local_doctor(), Command::Start).unwrap_err();
    assert_eq!(e.status(), 409);
    assert_eq!(
        e.to_string(),
        "cannot start: no informed consent recorded (CN-05); expert `E1` has no passed \
         real-name verification (CN-11); no local physician attached to accompany the patient \
         (CN-06)"
    );
    let c = consent(ConsentSigner::Patient, false, &k);
    k.run(&local_doctor(), c);
    k.run(
        &local_doctor(),
        Command::AttachPhysician {
            physician: LocalPhysician {
                practitioner: LOCAL_PHYSICIAN.into(),
                licence: "110440000012345".into(),
            },
        },
    );
    let unverified = Requirement::LocalPhysicianVerified {
        practitioner: LOCAL_PHYSICIAN.into(),
    };
    assert_eq!(missing(&mut k), [e1(), unverified.clone()]);
    // A failed verification does not count.
    let mut failed = verification(physician("E1"), k.now);
    if let Command::RecordVerification { verification } = &mut failed {
        verification.result = VerificationResult::Failed;
    }
    k.run(&system(), failed);
    assert_eq!(missing(&mut k), [e1(), unverified]);
    let at = k.now;
    k.run(&system(), verification(physician("E1"), at));
    k.run(&system(), verification(physician(LOCAL_PHYSICIAN), at));
    k.run(&local_doctor(), Command::Start);
    assert_eq!(k.c.state(), State::InSession);
}

#[test]
fn direct_to_patient_needs_patient_real_name_and_a_prior_diagnosis() {
    let mut k = scheduled(ServiceType::DirectToPatient);
    assert_eq!(
        missing(&mut k),
        [
            Requirement::Consent,
            Requirement::ExpertVerified {
                expert: "E1".into()
            },
            Requirement::PatientVerified,
            Requirement::PriorDiagnosis,
        ]
    );
    let at = k.now;
    let c = consent(ConsentSigner::Patient, false, &k);
    k.run(&local_doctor(), c);
    k.run(&system(), verification(physician("E1"), at));
    k.run(&system(), verification(Subject::Patient, at));
    assert_eq!(missing(&mut k), [Requirement::PriorDiagnosis]);
    let e = k.try_run(&local_doctor(), Command::Start).unwrap_err();
    assert!(
        e.to_string().contains("CN-10: no first visits online"),
        "{e}"
    );
    k.prior_diagnosis();
    k.run(&expert("E1"), Command::Start);
    assert_eq!(k.c.state(), State::InSession);
}

#[test]
fn internet_hospital_needs_patient_real_name_but_no_local_physician() {
    let mut k = scheduled(ServiceType::InternetHospital);
    assert_eq!(
        missing(&mut k),
        [
            Requirement::Consent,
            Requirement::ExpertVerified {
                expert: "E1".into()
            },
            Requirement::PatientVerified,
        ]
    );
}

#[test]
fn a_guardian_or_relative_signs_only_when_informing_the_patient_is_not_suitable() {
    let mut k = Case::new();
    for signer in [ConsentSigner::Guardian, ConsentSigner::Relative] {
        let c = consent(signer, false, &k);
        let e = k.try_run(&local_doctor(), c).unwrap_err();
        let ConsultError::Invalid { problems, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!(problems[0].path, "consent.not_suitable_to_inform_patient");
        assert_eq!(e.status(), 422);
        let c = consent(signer, true, &k);
        k.run(&local_doctor(), c);
        assert_eq!(k.c.gates().consent.as_ref().unwrap().signer, signer);
    }
    let mut future = consent(ConsentSigner::Patient, false, &k);
    if let Command::RecordConsent { consent } = &mut future {
        consent.signed_at = k.now + minutes(60);
    }
    let e = k.try_run(&local_doctor(), future).unwrap_err();
    assert!(
        matches!(&e, ConsultError::Invalid { problems, .. } if problems[0].path == "consent.signed_at"),
        "{e}"
    );
}

#[test]
fn a_verification_keeps_no_biometric_data() {
    let ok = r#"{"subject":{"kind":"patient"},"method":"medical-insurance-credential",
        "verified_at":"2026-03-02T08:00:00Z","result":"passed","provider_reference":"nhsa-77"}"#;
    let v: Verification = serde_json::from_str(ok).unwrap();
    assert_eq!(v.method, VerificationMethod::MedicalInsuranceCredential);
    let with_face = ok.replace("\"result\"", "\"face_image\":\"/9j/4AAQ\",\"result\"");
    let e = serde_json::from_str::<Verification>(&with_face).unwrap_err();
    assert!(e.to_string().contains("unknown field `face_image`"), "{e}");
    // The stored form has exactly these fields.
    let json = serde_json::to_value(&v).unwrap();
    let mut keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "method",
            "provider_reference",
            "result",
            "subject",
            "verified_at"
        ]
    );
}

#[test]
fn gate_records_stop_once_the_session_started() {
    let mut k = reach(State::InSession);
    let c = consent(ConsentSigner::Patient, false, &k);
    let e = k.try_run(&local_doctor(), c).unwrap_err();
    assert!(
        matches!(
            e,
            ConsultError::InvalidTransition {
                from: State::InSession,
                ..
            }
        ),
        "{e}"
    );
}
