//! Hierarchies the test CA does not build, made with rcgen directly: an issuer that is not a
//! CA, a path length exceeded, a CA without keyCertSign, an unknown critical extension, an RSA
//! root, a renewed root, an intermediate expired at signing time.

use chrono::{DateTime, Utc};
use huizhen_signing::{
    CertSigner, ChainVerifier, Signature, SignatureError, SignatureVerifier, Signer,
};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256,
};

use crate::{REPORT, utc};

/// A hierarchy: root, then intermediates top-down, then the leaf.
struct Built {
    root_der: Vec<u8>,
    /// Leaf first, root last.
    chain: Vec<Vec<u8>>,
    leaf_key: Vec<u8>,
}

impl Built {
    fn signer(&self) -> CertSigner {
        CertSigner::from_der(&self.leaf_key, self.chain.clone()).unwrap()
    }

    fn verifier(&self) -> ChainVerifier {
        ChainVerifier::new([self.root_der.clone()]).unwrap()
    }

    /// A signature over [`REPORT`] at 2026-06-01 made with the leaf key directly (the
    /// `CertSigner` would check the chain's order and validity first).
    fn raw_signature(&self) -> Signature {
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &self.leaf_key,
            &ring::rand::SystemRandom::new(),
        )
        .unwrap();
        let value = key
            .sign(&ring::rand::SystemRandom::new(), REPORT)
            .unwrap()
            .as_ref()
            .to_vec();
        Signature {
            algorithm: "ecdsa-p256-sha256".into(),
            value,
            certificate_chain: self.chain.clone(),
            signed_at: utc(2026, 6, 1),
            signer: "Dr Leaf".into(),
            timestamp_token: None,
        }
    }
}

fn time(at: DateTime<Utc>) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(at.timestamp()).unwrap()
}

fn params(common_name: &str, ca: Option<Option<u8>>) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.not_before = time(utc(2000, 1, 1));
    params.not_after = time(utc(2100, 1, 1));
    match ca {
        Some(path_len) => {
            params.is_ca = IsCa::Ca(path_len.map_or(
                BasicConstraints::Unconstrained,
                BasicConstraints::Constrained,
            ));
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        }
        None => {
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        }
    }
    params
}

fn ec_key() -> KeyPair {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap()
}

/// Builds root → each of `intermediates` (top-down) → leaf "Dr Leaf"; the leaf's key is
/// ECDSA P-256.
fn build(
    root: CertificateParams,
    root_key: KeyPair,
    intermediates: Vec<CertificateParams>,
    leaf: CertificateParams,
) -> Built {
    let root_der = root.self_signed(&root_key).unwrap().der().to_vec();
    let mut chain = vec![root_der.clone()];
    let mut issuer = Issuer::new(root, root_key);
    for params in intermediates {
        let key = ec_key();
        chain.push(params.signed_by(&key, &issuer).unwrap().der().to_vec());
        issuer = Issuer::new(params, key);
    }
    let leaf_key = ec_key();
    chain.push(leaf.signed_by(&leaf_key, &issuer).unwrap().der().to_vec());
    chain.reverse();
    Built {
        root_der,
        chain,
        leaf_key: leaf_key.serialize_der(),
    }
}

fn chain_error(built: &Built) -> String {
    match built.verifier().verify(REPORT, &built.raw_signature()) {
        Err(SignatureError::Chain(why)) => why,
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_plain_hierarchy_verifies() {
    let built = build(
        params("Root", Some(None)),
        ec_key(),
        vec![params("Intermediate", Some(Some(0)))],
        params("Dr Leaf", None),
    );
    assert_eq!(
        built
            .verifier()
            .verify(REPORT, &built.raw_signature())
            .unwrap(),
        "Dr Leaf"
    );
    let signature = built.signer().sign(REPORT, utc(2026, 6, 1)).unwrap();
    assert_eq!(
        built.verifier().verify(REPORT, &signature).unwrap(),
        "Dr Leaf"
    );
}

#[test]
fn an_issuer_that_is_not_a_ca_is_refused() {
    let built = build(
        params("Root", Some(None)),
        ec_key(),
        vec![params("Not A CA", None)],
        params("Dr Leaf", None),
    );
    assert_eq!(
        chain_error(&built),
        "certificate 1 \"CN=Not A CA\" issues certificate 0 but is not a CA (basicConstraints \
         CA=true missing)"
    );
}

#[test]
fn a_path_length_exceeded_is_refused() {
    let built = build(
        params("Root", Some(None)),
        ec_key(),
        vec![
            params("Upper", Some(Some(0))),
            params("Lower", Some(Some(0))),
        ],
        params("Dr Leaf", None),
    );
    assert_eq!(
        chain_error(&built),
        "certificate 2 \"CN=Upper\" allows 0 intermediate CA(s) below it, the chain has 1"
    );
}

#[test]
fn a_ca_without_key_cert_sign_is_refused() {
    let mut intermediate = params("Intermediate", Some(None));
    intermediate.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let built = build(
        params("Root", Some(None)),
        ec_key(),
        vec![intermediate],
        params("Dr Leaf", None),
    );
    assert_eq!(
        chain_error(&built),
        "certificate 1 \"CN=Intermediate\" is a CA whose key usage does not allow keyCertSign"
    );
}

#[test]
fn an_unknown_critical_extension_is_refused() {
    let mut leaf = params("Dr Leaf", None);
    let mut extension = CustomExtension::from_oid_content(&[1, 2, 3, 4], vec![0x05, 0x00]);
    extension.set_criticality(true);
    leaf.custom_extensions.push(extension);
    let built = build(
        params("Root", Some(None)),
        ec_key(),
        vec![params("Intermediate", Some(None))],
        leaf,
    );
    assert_eq!(
        chain_error(&built),
        "certificate 0 \"CN=Dr Leaf\" has a critical extension 1.2.3.4 this verifier does not \
         process"
    );
}

#[test]
fn an_rsa_root_verifies_its_intermediate() {
    let pem = include_str!("../fixtures/rsa-root.key.pem");
    let der = x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .contents;
    let root_key =
        KeyPair::from_pkcs8_der_and_sign_algo(&der.as_slice().into(), &PKCS_RSA_SHA256).unwrap();
    let built = build(
        params("RSA Root", Some(None)),
        root_key,
        vec![params("Intermediate", Some(Some(0)))],
        params("Dr Leaf", None),
    );
    let signature = built.signer().sign(REPORT, utc(2026, 6, 1)).unwrap();
    assert_eq!(
        built.verifier().verify(REPORT, &signature).unwrap(),
        "Dr Leaf"
    );
    // The chain without the root: the intermediate's RSA signature is checked against the
    // configured root.
    let mut short = signature.clone();
    short.certificate_chain.pop();
    assert_eq!(built.verifier().verify(REPORT, &short).unwrap(), "Dr Leaf");
}

#[test]
fn a_renewed_root_with_the_same_key_is_trusted() {
    let root_key = ec_key();
    let renewed_pkcs8 = root_key.serialize_der();
    let built = build(
        params("Root", Some(None)),
        root_key,
        vec![params("Intermediate", Some(None))],
        params("Dr Leaf", None),
    );
    let mut renewed = params("Root", Some(None));
    renewed.not_after = time(utc(2120, 1, 1));
    let renewed_key = KeyPair::from_pkcs8_der_and_sign_algo(
        &renewed_pkcs8.as_slice().into(),
        &PKCS_ECDSA_P256_SHA256,
    )
    .unwrap();
    let renewed_der = renewed.self_signed(&renewed_key).unwrap().der().to_vec();
    assert_ne!(renewed_der, built.root_der);
    let verifier = ChainVerifier::new([renewed_der]).unwrap();
    let signature = built.signer().sign(REPORT, utc(2026, 6, 1)).unwrap();
    assert_eq!(verifier.verify(REPORT, &signature).unwrap(), "Dr Leaf");
}

#[test]
fn an_intermediate_expired_at_signing_time_refuses_and_fails() {
    let mut intermediate = params("Intermediate", Some(None));
    intermediate.not_before = time(utc(2020, 1, 1));
    intermediate.not_after = time(utc(2022, 1, 1));
    let built = build(
        params("Root", Some(None)),
        ec_key(),
        vec![intermediate],
        params("Dr Leaf", None),
    );
    let err = built.signer().sign(REPORT, utc(2026, 6, 1)).unwrap_err();
    let SignatureError::Unavailable(why) = &err else {
        panic!("{err:?}")
    };
    assert!(
        why.starts_with("certificate 1 \"CN=Intermediate\" is not valid at 2026-06-01"),
        "{why}"
    );
    let err = built
        .verifier()
        .verify(REPORT, &built.raw_signature())
        .unwrap_err();
    let SignatureError::NotValidAt { subject, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        subject.starts_with("certificate 1 \"CN=Intermediate\" (valid from 2020"),
        "{subject}"
    );
    // Signed while it was valid, it verifies.
    let signature = built.signer().sign(REPORT, utc(2021, 6, 1)).unwrap();
    assert_eq!(
        built.verifier().verify(REPORT, &signature).unwrap(),
        "Dr Leaf"
    );
}
