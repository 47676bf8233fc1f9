//! Electronic signatures (STANDARDS CN-21) end to end through the domain's ports: sign with a
//! physician of the test CA, verify against its root; every tampering the standard names fails
//! with the error that says what changed; a record signed years ago verifies after expiry.
//!
//! `chains.rs` builds unusual hierarchies with rcgen directly; `load.rs` covers setting up
//! signers and verifiers.

mod chains;
mod load;

use chrono::{DateTime, TimeZone, Utc};
use huizhen_signing::testca::{KeyUsagePurpose, LeafSpec, TestCa};
use huizhen_signing::{Signature, SignatureError, SignatureVerifier, Signer, SigningAlgorithm};

/// Midnight UTC of a date.
pub fn utc(year: i32, month: u32, day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, month, day, 0, 0, 0).unwrap()
}

const REPORT: &[u8] =
    "{\"consultation\":\"c-1\",\"diagnoses\":[\"I21.0\"],\"advice\":\"冠脉造影\"}".as_bytes();

/// A CA, a physician valid 2025–2028 and a signature made 2026-06-01.
fn signed() -> (TestCa, Signature) {
    let ca = TestCa::generate("Huizhen").unwrap();
    let doctor = ca
        .issue_physician("Dr Li Wei", utc(2025, 1, 1), utc(2028, 1, 1))
        .unwrap();
    let signature = doctor
        .signer()
        .unwrap()
        .sign(REPORT, utc(2026, 6, 1))
        .unwrap();
    (ca, signature)
}

#[test]
fn a_signed_report_verifies_and_keeps_chain_and_time() {
    let (ca, signature) = signed();
    assert_eq!(signature.algorithm, "ecdsa-p256-sha256");
    assert_eq!(signature.signed_at, utc(2026, 6, 1));
    assert_eq!(signature.signer, "Dr Li Wei");
    assert_eq!(signature.certificate_chain.len(), 3);
    assert_eq!(signature.certificate_chain[1], ca.intermediate_der());
    assert_eq!(signature.certificate_chain[2], ca.root_der());
    assert_eq!(
        ca.verifier().verify(REPORT, &signature).unwrap(),
        "Dr Li Wei"
    );
}

#[test]
fn ed25519_signers_and_ed25519_cas_verify() {
    for ca_algorithm in [SigningAlgorithm::EcdsaP256Sha256, SigningAlgorithm::Ed25519] {
        let ca = TestCa::generate_with("Ed", ca_algorithm).unwrap();
        let doctor = ca
            .issue(&LeafSpec {
                common_name: "Dr Wang Fang".into(),
                not_before: utc(2025, 1, 1),
                not_after: utc(2028, 1, 1),
                algorithm: SigningAlgorithm::Ed25519,
                key_usages: vec![KeyUsagePurpose::ContentCommitment],
            })
            .unwrap();
        let signer = doctor.signer().unwrap();
        assert_eq!(signer.algorithm(), SigningAlgorithm::Ed25519);
        let signature = signer.sign(REPORT, utc(2026, 6, 1)).unwrap();
        assert_eq!(signature.algorithm, "ed25519");
        assert_eq!(signature.value.len(), 64);
        assert_eq!(
            ca.verifier().verify(REPORT, &signature).unwrap(),
            "Dr Wang Fang",
            "{ca_algorithm:?} CA"
        );
        let mut changed = REPORT.to_vec();
        changed[3] ^= 1;
        assert_eq!(
            ca.verifier().verify(&changed, &signature),
            Err(SignatureError::Mismatch)
        );
    }
}

#[test]
fn a_changed_report_is_a_mismatch() {
    let (ca, signature) = signed();
    let verifier = ca.verifier();
    for i in [0, REPORT.len() / 2, REPORT.len() - 1] {
        let mut changed = REPORT.to_vec();
        changed[i] ^= 0x01;
        assert_eq!(
            verifier.verify(&changed, &signature),
            Err(SignatureError::Mismatch),
            "byte {i}"
        );
    }
    let mut longer = REPORT.to_vec();
    longer.push(b' ');
    assert_eq!(
        verifier.verify(&longer, &signature),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn a_changed_signature_byte_is_a_mismatch() {
    let (ca, signature) = signed();
    let verifier = ca.verifier();
    for i in [0, 10, signature.value.len() - 1] {
        let mut changed = signature.clone();
        changed.value[i] ^= 0x01;
        assert_eq!(
            verifier.verify(REPORT, &changed),
            Err(SignatureError::Mismatch),
            "byte {i}"
        );
    }
}

#[test]
fn a_chain_from_another_ca_is_untrusted() {
    let (ca, _) = signed();
    let other = TestCa::generate("Elsewhere").unwrap();
    let stranger = other
        .issue_physician("Dr Zhao", utc(2025, 1, 1), utc(2028, 1, 1))
        .unwrap();
    let signature = stranger
        .signer()
        .unwrap()
        .sign(REPORT, utc(2026, 6, 1))
        .unwrap();
    let err = ca.verifier().verify(REPORT, &signature).unwrap_err();
    let SignatureError::Untrusted(why) = &err else {
        panic!("{err:?}")
    };
    assert!(
        why.contains("certificate 2 \"C=CN, O=Elsewhere, CN=Elsewhere Test Root CA\""),
        "{why}"
    );
    // Its own root trusts it.
    assert_eq!(
        other.verifier().verify(REPORT, &signature).unwrap(),
        "Dr Zhao"
    );
}

#[test]
fn a_root_of_the_same_name_but_another_key_is_untrusted() {
    let (ca, signature) = signed();
    let impostor = TestCa::generate("Huizhen").unwrap();
    let err = impostor.verifier().verify(REPORT, &signature).unwrap_err();
    let SignatureError::Untrusted(why) = &err else {
        panic!("{err:?}")
    };
    assert!(why.contains("names a trusted root as issuer, but"), "{why}");
    assert!(ca.verifier().verify(REPORT, &signature).is_ok());
}

#[test]
fn an_expired_certificate_cannot_sign_and_does_not_verify() {
    let ca = TestCa::generate("Huizhen").unwrap();
    let doctor = ca
        .issue_physician("Dr Li Wei", utc(2020, 1, 1), utc(2022, 1, 1))
        .unwrap();
    let signer = doctor.signer().unwrap();
    for at in [utc(2023, 3, 1), utc(2019, 12, 31)] {
        let err = signer.sign(REPORT, at).unwrap_err();
        let SignatureError::Unavailable(why) = &err else {
            panic!("{err:?}")
        };
        assert!(
            why.contains("certificate 0 \"C=CN, O=Huizhen, CN=Dr Li Wei\" is not valid at"),
            "{why}"
        );
        assert!(
            why.contains("valid from 2020-01-01T00:00:00+00:00 to 2022-01-01T00:00:00+00:00"),
            "{why}"
        );
    }

    // A record claiming a signing time outside the leaf's validity does not verify.
    let mut signature = signer.sign(REPORT, utc(2021, 6, 1)).unwrap();
    signature.signed_at = utc(2023, 3, 1);
    let err = ca.verifier().verify(REPORT, &signature).unwrap_err();
    let SignatureError::NotValidAt { subject, at } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*at, utc(2023, 3, 1));
    assert!(
        subject.starts_with("certificate 0 \"C=CN, O=Huizhen, CN=Dr Li Wei\""),
        "{subject}"
    );
    assert!(subject.contains("valid from 2020-01-01"), "{subject}");
}

#[test]
fn the_ends_of_the_validity_period_are_inside_it() {
    let ca = TestCa::generate("Huizhen").unwrap();
    let doctor = ca
        .issue_physician("Dr Li Wei", utc(2020, 1, 1), utc(2022, 1, 1))
        .unwrap();
    let signer = doctor.signer().unwrap();
    for at in [utc(2020, 1, 1), utc(2022, 1, 1)] {
        let signature = signer.sign(REPORT, at).unwrap();
        assert!(ca.verifier().verify(REPORT, &signature).is_ok(), "{at}");
    }
    let just_after = utc(2022, 1, 1) + chrono::Duration::seconds(1);
    assert!(signer.sign(REPORT, just_after).is_err());
}

#[test]
fn a_report_signed_years_ago_verifies_after_the_certificate_expired() {
    let ca = TestCa::generate("Huizhen").unwrap();
    let doctor = ca
        .issue_physician("Dr Li Wei", utc(2020, 1, 1), utc(2022, 1, 1))
        .unwrap();
    let signature = doctor
        .signer()
        .unwrap()
        .sign(REPORT, utc(2021, 6, 1))
        .unwrap();
    // The certificate expired years before this test runs; the chain and the signing time
    // kept with the signature are what let it verify.
    assert!(Utc::now() > utc(2022, 1, 1));
    assert_eq!(
        ca.verifier().verify(REPORT, &signature).unwrap(),
        "Dr Li Wei"
    );
}

#[test]
fn a_tampered_intermediate_fails_the_chain_at_position_1() {
    let (ca, mut signature) = signed();
    let intermediate = &mut signature.certificate_chain[1];
    // Flip a byte of its serial number: it still parses and still names the same issuer and
    // key, but the root's signature over it no longer holds.
    let serial = x509_serial(intermediate);
    let at = find(intermediate, &serial).expect("the serial is in the DER");
    intermediate[at + serial.len() - 1] ^= 0x01;
    let err = ca.verifier().verify(REPORT, &signature).unwrap_err();
    let SignatureError::Chain(why) = &err else {
        panic!("{err:?}")
    };
    assert!(
        why.starts_with(
            "certificate 1 \"C=CN, O=Huizhen, CN=Huizhen Test Intermediate CA\" is not signed \
             by certificate 2"
        ),
        "{why}"
    );
    assert!(
        why.contains("does not verify with the issuer's key"),
        "{why}"
    );
}

#[test]
fn a_signature_round_trips_through_json_and_still_verifies() {
    let (ca, signature) = signed();
    let json = serde_json::to_string_pretty(&signature).unwrap();
    let back: Signature = serde_json::from_str(&json).unwrap();
    assert_eq!(back, signature);
    assert_eq!(ca.verifier().verify(REPORT, &back).unwrap(), "Dr Li Wei");
    // A stored record edited in its JSON (one hex digit of the value) no longer verifies.
    let value_hex = huizhen_domain::signature::to_hex(&signature.value);
    let mut edited_hex = value_hex.clone();
    let last = edited_hex.pop().unwrap();
    edited_hex.push(if last == '0' { '1' } else { '0' });
    let edited: Signature = serde_json::from_str(&json.replace(&value_hex, &edited_hex)).unwrap();
    assert_eq!(
        ca.verifier().verify(REPORT, &edited),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn a_changed_signer_name_is_refused() {
    let (ca, mut signature) = signed();
    signature.signer = "Dr Someone Else".into();
    let err = ca.verifier().verify(REPORT, &signature).unwrap_err();
    assert_eq!(
        err,
        SignatureError::Chain(
            "the stored signer \"Dr Someone Else\" is not the name in certificate 0 \
             (\"Dr Li Wei\")"
                .into()
        )
    );
}

#[test]
fn an_unknown_or_mismatched_algorithm_is_refused() {
    let (ca, mut signature) = signed();
    signature.algorithm = "sm2-sm3".into();
    assert_eq!(
        ca.verifier().verify(REPORT, &signature),
        Err(SignatureError::Algorithm("sm2-sm3".into()))
    );
    signature.algorithm = "ed25519".into();
    assert_eq!(
        ca.verifier().verify(REPORT, &signature),
        Err(SignatureError::Algorithm(
            "ed25519 with certificate 0's ECDSA P-256 key".into()
        ))
    );
}

#[test]
fn a_broken_or_empty_chain_names_the_certificate() {
    let (ca, signature) = signed();
    let mut empty = signature.clone();
    empty.certificate_chain.clear();
    assert_eq!(
        ca.verifier().verify(REPORT, &empty),
        Err(SignatureError::Chain(
            "the signature carries no certificate".into()
        ))
    );
    let mut garbage = signature.clone();
    garbage.certificate_chain[1] = vec![0x30, 0x03, 0x02, 0x01];
    let err = ca.verifier().verify(REPORT, &garbage).unwrap_err();
    let SignatureError::Chain(why) = &err else {
        panic!("{err:?}")
    };
    assert!(
        why.starts_with("certificate 1: not a DER X.509 certificate"),
        "{why}"
    );
    let mut reordered = signature;
    reordered.certificate_chain.swap(0, 1);
    let err = ca.verifier().verify(REPORT, &reordered).unwrap_err();
    let SignatureError::Chain(why) = &err else {
        panic!("{err:?}")
    };
    assert!(
        why.starts_with("certificate 0 \"C=CN, O=Huizhen, CN=Huizhen Test Intermediate CA\" names"),
        "{why}"
    );
}

#[test]
fn a_chain_without_its_root_verifies_against_the_configured_root() {
    let (ca, mut signature) = signed();
    signature.certificate_chain.pop();
    assert_eq!(
        ca.verifier().verify(REPORT, &signature).unwrap(),
        "Dr Li Wei"
    );
}

#[test]
fn a_leaf_whose_key_usage_forbids_signing_is_refused() {
    let ca = TestCa::generate("Huizhen").unwrap();
    let doctor = ca
        .issue(&LeafSpec {
            common_name: "Dr Li Wei".into(),
            not_before: utc(2025, 1, 1),
            not_after: utc(2028, 1, 1),
            algorithm: SigningAlgorithm::EcdsaP256Sha256,
            key_usages: vec![KeyUsagePurpose::KeyEncipherment],
        })
        .unwrap();
    let signature = doctor
        .signer()
        .unwrap()
        .sign(REPORT, utc(2026, 6, 1))
        .unwrap();
    assert_eq!(
        ca.verifier().verify(REPORT, &signature),
        Err(SignatureError::Chain(
            "certificate 0 \"C=CN, O=Huizhen, CN=Dr Li Wei\": its key usage allows neither \
             digitalSignature nor nonRepudiation"
                .into()
        ))
    );
}

/// The serial number's bytes of a certificate (DER content of the INTEGER).
fn x509_serial(der: &[u8]) -> Vec<u8> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).unwrap();
    cert.raw_serial().to_vec()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
