//! Setting up signers and verifiers: everything checkable at load is refused at load, with the
//! file, the certificate or the key named.

use huizhen_signing::testca::{KeyUsagePurpose, LeafSpec, TestCa};
use huizhen_signing::{
    CertSigner, ChainVerifier, LoadError, SignatureVerifier, Signer, SigningAlgorithm,
};

use crate::{REPORT, utc};

fn ca_and_doctor() -> (TestCa, huizhen_signing::testca::Physician) {
    let ca = TestCa::generate("Huizhen").unwrap();
    let doctor = ca
        .issue_physician("Dr Li Wei", utc(2025, 1, 1), utc(2028, 1, 1))
        .unwrap();
    (ca, doctor)
}

#[test]
fn another_physicians_key_is_refused_at_load() {
    let (ca, doctor) = ca_and_doctor();
    let other = ca
        .issue_physician("Dr Zhao", utc(2025, 1, 1), utc(2028, 1, 1))
        .unwrap();
    let err = CertSigner::from_der(&other.key_pkcs8, doctor.chain.clone()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the private key does not belong to certificate 0 \"C=CN, O=Huizhen, CN=Dr Li Wei\": \
         its public key differs"
    );
}

#[test]
fn a_key_of_the_wrong_kind_is_refused_at_load() {
    let (ca, doctor) = ca_and_doctor();
    let ed = ca
        .issue(&LeafSpec {
            common_name: "Dr Ed".into(),
            not_before: utc(2025, 1, 1),
            not_after: utc(2028, 1, 1),
            algorithm: SigningAlgorithm::Ed25519,
            key_usages: vec![KeyUsagePurpose::DigitalSignature],
        })
        .unwrap();
    let err = CertSigner::from_der(&ed.key_pkcs8, doctor.chain.clone()).unwrap_err();
    let LoadError::Key(why) = &err else {
        panic!("{err:?}")
    };
    assert!(
        why.starts_with(
            "not a PKCS#8 ECDSA P-256 key, as certificate 0 \"C=CN, O=Huizhen, CN=Dr Li Wei\" \
             needs"
        ),
        "{why}"
    );
    let err = CertSigner::from_der(b"not a key", doctor.chain).unwrap_err();
    assert!(matches!(err, LoadError::Key(_)), "{err:?}");
}

#[test]
fn a_chain_out_of_order_or_empty_is_refused_at_load() {
    let (_, doctor) = ca_and_doctor();
    let mut reordered = doctor.chain.clone();
    reordered.swap(1, 2);
    let err = CertSigner::from_der(&doctor.key_pkcs8, reordered).unwrap_err();
    let LoadError::Chain(why) = &err else {
        panic!("{err:?}")
    };
    assert!(
        why.starts_with(
            "certificate 0 \"C=CN, O=Huizhen, CN=Dr Li Wei\" names \"C=CN, O=Huizhen, \
             CN=Huizhen Test Intermediate CA\" as its issuer, but the next certificate is \
             \"C=CN, O=Huizhen, CN=Huizhen Test Root CA\""
        ),
        "{why}"
    );
    let err = CertSigner::from_der(&doctor.key_pkcs8, Vec::new()).unwrap_err();
    assert_eq!(err.to_string(), "certificate chain: no certificate given");
    let mut garbage = doctor.chain.clone();
    garbage[2].truncate(40);
    let err = CertSigner::from_der(&doctor.key_pkcs8, garbage).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("certificate chain: certificate 2: not a DER X.509 certificate"),
        "{err}"
    );
}

#[test]
fn pem_files_written_by_the_test_ca_load_and_verify() {
    let (ca, doctor) = ca_and_doctor();
    let dir = tempfile::tempdir().unwrap();
    let (key_file, chain_file) = doctor.write_pem(dir.path(), "dr-li").unwrap();
    let roots_file = dir.path().join("roots.pem");
    ca.write_root_pem(&roots_file).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let signer = CertSigner::from_pem_files(&key_file, &chain_file).unwrap();
    assert_eq!(signer.signer_name(), "Dr Li Wei");
    assert_eq!(signer.chain(), &doctor.chain[..]);
    let verifier = ChainVerifier::from_pem_file(&roots_file).unwrap();
    assert_eq!(verifier.root_count(), 1);
    let signature = signer.sign(REPORT, utc(2026, 6, 1)).unwrap();
    assert_eq!(verifier.verify(REPORT, &signature).unwrap(), "Dr Li Wei");
    // The signer's Debug names the signer, never the key.
    let debug = format!("{signer:?}");
    assert!(
        debug.contains("Dr Li Wei") && !debug.contains("key"),
        "{debug}"
    );
}

#[test]
fn pem_texts_of_the_wrong_kind_are_refused() {
    let (_, doctor) = ca_and_doctor();
    let chain_pem = doctor.chain_pem();
    let key_pem = doctor.key_pem();

    let ec_label = key_pem.replace("PRIVATE KEY", "EC PRIVATE KEY");
    let err = CertSigner::from_pem(ec_label.as_bytes(), chain_pem.as_bytes()).unwrap_err();
    let LoadError::Key(why) = &err else {
        panic!("{err:?}")
    };
    assert!(
        why.contains("\"EC PRIVATE KEY\" PEM block; a PKCS#8"),
        "{why}"
    );

    let with_key = format!("{chain_pem}{key_pem}");
    let err = CertSigner::from_pem(key_pem.as_bytes(), with_key.as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "certificate chain: PEM block 3 is a \"PRIVATE KEY\", not a CERTIFICATE"
    );

    let err = CertSigner::from_pem(key_pem.as_bytes(), b"no pem here").unwrap_err();
    assert_eq!(
        err.to_string(),
        "certificate chain: no CERTIFICATE block in the PEM text"
    );
}

#[test]
fn a_missing_file_is_named() {
    let missing = std::path::Path::new("/nonexistent/huizhen/dr.key.pem");
    let err = CertSigner::from_pem_files(missing, missing).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("reading /nonexistent/huizhen/dr.key.pem:"),
        "{err}"
    );
}

#[test]
fn a_verifier_needs_readable_roots() {
    let err = ChainVerifier::new(Vec::new()).unwrap_err();
    assert_eq!(err.to_string(), "trusted roots: no trusted root given");
    let err = ChainVerifier::new([vec![1, 2, 3]]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("trusted roots: root 0: not a DER X.509 certificate"),
        "{err}"
    );
}
