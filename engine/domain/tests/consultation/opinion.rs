//! The signed opinion (CN-07, CN-21): a stable canonical form, and a fake signer and verifier
//! showing that a changed report fails verification.

use huizhen_domain::consultation::*;
use huizhen_domain::signature::SignatureError;

use crate::support::*;

const GOLDEN: &str = "huizhen-opinion/1\n\
consultation 11:C-2026-0001\n\
expert 2:E1\n\
diagnoses 1\n\
code 5:I21.0\n\
text 24:急性前壁心肌梗死\n\
treatment_plan 30:急诊 PCI; 双联抗血小板\n\
advice 24:转上级医院导管室\n";

#[test]
fn canonical_bytes_are_stable() {
    let bytes = opinion(ID, "E1").canonical_bytes();
    assert_eq!(String::from_utf8(bytes.clone()).unwrap(), GOLDEN);
    assert_eq!(opinion(ID, "E1").canonical_bytes(), bytes);
    assert!(GOLDEN.starts_with(CANONICAL_VERSION));
}

#[test]
fn canonical_bytes_see_every_field_and_normalise_unicode() {
    let base = opinion(ID, "E1");
    let changes: [fn(&mut Opinion); 6] = [
        |o| o.consultation.push('x'),
        |o| o.expert = "E2".into(),
        |o| o.diagnoses[0].code = "I21.1".parse().unwrap(),
        |o| o.diagnoses[0].text.push('。'),
        |o| o.treatment_plan.push(' '),
        |o| o.advice = "转上级医院导管室\n".into(),
    ];
    for (i, change) in changes.iter().enumerate() {
        let mut o = base.clone();
        change(&mut o);
        assert_ne!(o.canonical_bytes(), base.canonical_bytes(), "change {i}");
    }
    // Moving text between fields changes the bytes (lengths are part of the form).
    let mut a = base.clone();
    a.treatment_plan = "ab".into();
    a.advice = "c".into();
    let mut b = base.clone();
    b.treatment_plan = "a".into();
    b.advice = "bc".into();
    assert_ne!(a.canonical_bytes(), b.canonical_bytes());
    // Composed and decomposed é are the same text.
    let mut composed = base.clone();
    composed.advice = "caf\u{e9}".into();
    let mut decomposed = base;
    decomposed.advice = "cafe\u{301}".into();
    assert_eq!(composed.canonical_bytes(), decomposed.canonical_bytes());
}

#[test]
fn a_changed_report_fails_verification() {
    let signed = signed_opinion(ID, "E1", t0());
    assert_eq!(verify_opinion(&signed, &FakeVerifier), Ok("E1".into()));
    let mut changed = signed.clone();
    changed.opinion.advice = "继续观察".into();
    assert_eq!(
        verify_opinion(&changed, &FakeVerifier),
        Err(SignatureError::Mismatch)
    );
    let mut changed = signed.clone();
    changed.opinion.diagnoses[0].code = "I20.0".parse().unwrap();
    assert_eq!(
        verify_opinion(&changed, &FakeVerifier),
        Err(SignatureError::Mismatch)
    );
    // Stored as JSON and read back years later, it still verifies.
    let json = serde_json::to_string(&signed).unwrap();
    let back: SignedOpinion = serde_json::from_str(&json).unwrap();
    assert_eq!(verify_opinion(&back, &FakeVerifier), Ok("E1".into()));
}

#[test]
fn sign_opinion_verifies_before_recording() {
    let mut k = reach(State::InSession);
    let mut tampered = signed_opinion(ID, "E1", k.now);
    tampered.opinion.treatment_plan = "保守治疗".into();
    let e = k
        .try_run(&expert("E1"), Command::SignOpinion { signed: tampered })
        .unwrap_err();
    assert_eq!(e, ConsultError::Signature(SignatureError::Mismatch));
    assert_eq!(e.status(), 422);
    assert!(k.c.opinion().is_none());
    // Without a verifier the engine is miswired: refused, never recorded unchecked.
    let signed = signed_opinion(ID, "E1", k.now);
    let actor = expert("E1");
    let e = decide(
        &k.c,
        &Command::SignOpinion {
            signed: signed.clone(),
        },
        &Context::new(k.now, &actor),
    )
    .unwrap_err();
    assert_eq!(
        (e.clone(), e.status()),
        (ConsultError::VerifierMissing, 500)
    );
    // A signature for another consultation does not move to this one.
    let other = signed_opinion("C-OTHER", "E1", k.now);
    let e = k
        .try_run(&expert("E1"), Command::SignOpinion { signed: other })
        .unwrap_err();
    assert!(
        matches!(&e, ConsultError::Invalid { problems, .. } if problems[0].path == "signed.opinion.consultation"),
        "{e}"
    );
    // An opinion needs a diagnosis, a plan and advice.
    let mut empty = opinion(ID, "E1");
    empty.diagnoses.clear();
    empty.advice = String::new();
    let signer = FakeSigner { name: "E1".into() };
    let empty = sign_opinion(empty, &signer, k.now).unwrap();
    let e = k
        .try_run(&expert("E1"), Command::SignOpinion { signed: empty })
        .unwrap_err();
    let ConsultError::Invalid { problems, .. } = e else {
        panic!()
    };
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["signed.opinion.advice", "signed.opinion.diagnoses"]);
    k.run(&expert("E1"), Command::SignOpinion { signed });
    let recorded = k.c.opinion().unwrap();
    assert_eq!(recorded.verified_signer, "E1");
    assert_eq!(
        verify_opinion(&recorded.signed, &FakeVerifier),
        Ok("E1".into())
    );
}
