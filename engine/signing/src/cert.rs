//! What the signer and the verifier share about certificates: reading DER and PEM, naming a
//! certificate in an error (position and subject), validity at a given time, the kind of a
//! public key, and checking that one certificate is signed by another's key (with ring).
//!
//! Algorithms are matched by OID string so that the set supported is written out here in one
//! table, whatever the OID registry's features.

use chrono::{DateTime, Utc};
use ring::signature::{self as sig, UnparsedPublicKey, VerificationAlgorithm};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::SubjectPublicKeyInfo;

/// id-ecPublicKey.
const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
/// prime256v1 (P-256).
const CURVE_P256: &str = "1.2.840.10045.3.1.7";
/// secp384r1 (P-384).
const CURVE_P384: &str = "1.3.132.0.34";
/// rsaEncryption.
const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
/// id-Ed25519 (key and signature algorithm alike).
const ED25519: &str = "1.3.101.112";
/// SM2 (GM/T 0006): the curve of a Chinese CA's keys.
const SM2_CURVE: &str = "1.2.156.10197.1.301";
/// SM2 with SM3 (GM/T 0006): the signature algorithm of a Chinese CA.
const SM2_WITH_SM3: &str = "1.2.156.10197.1.501";

const ECDSA_WITH_SHA256: &str = "1.2.840.10045.4.3.2";
const ECDSA_WITH_SHA384: &str = "1.2.840.10045.4.3.3";
const SHA256_WITH_RSA: &str = "1.2.840.113549.1.1.11";
const SHA384_WITH_RSA: &str = "1.2.840.113549.1.1.12";
const SHA512_WITH_RSA: &str = "1.2.840.113549.1.1.13";

/// The kind of a subject public key, as far as signing and verifying here care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyKind {
    EcP256,
    EcP384,
    Ed25519,
    Rsa,
    Sm2,
}

impl KeyKind {
    /// How an error names the key kind.
    pub(crate) fn label(self) -> &'static str {
        match self {
            KeyKind::EcP256 => "ECDSA P-256",
            KeyKind::EcP384 => "ECDSA P-384",
            KeyKind::Ed25519 => "Ed25519",
            KeyKind::Rsa => "RSA",
            KeyKind::Sm2 => "SM2",
        }
    }
}

/// The kind of `spki`'s key, or why it is not one this crate knows.
pub(crate) fn key_kind(spki: &SubjectPublicKeyInfo<'_>) -> Result<KeyKind, String> {
    let algorithm = spki.algorithm.algorithm.to_id_string();
    match algorithm.as_str() {
        EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string())
                .ok_or("an EC public key without a named curve")?;
            match curve.as_str() {
                CURVE_P256 => Ok(KeyKind::EcP256),
                CURVE_P384 => Ok(KeyKind::EcP384),
                SM2_CURVE => Ok(KeyKind::Sm2),
                other => Err(format!("an EC public key on an unsupported curve {other}")),
            }
        }
        ED25519 => Ok(KeyKind::Ed25519),
        RSA_ENCRYPTION => Ok(KeyKind::Rsa),
        other => Err(format!("an unsupported public key algorithm {other}")),
    }
}

/// The public key bytes as ring takes them: the uncompressed point (EC), the 32 bytes
/// (Ed25519) or the RSAPublicKey DER (RSA) — in each case the SPKI's bit string.
pub(crate) fn key_bytes<'a>(spki: &'a SubjectPublicKeyInfo<'_>) -> &'a [u8] {
    spki.subject_public_key.data.as_ref()
}

/// Parses one certificate; the error says what is wrong with it (the caller adds which one).
pub(crate) fn parse(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok((rest, _)) => Err(format!("{} bytes after the certificate's DER", rest.len())),
        Err(e) => Err(format!("not a DER X.509 certificate ({e})")),
    }
}

/// Parses every certificate of a chain; an error names the position that failed.
pub(crate) fn parse_chain(chain: &[Vec<u8>]) -> Result<Vec<X509Certificate<'_>>, String> {
    chain
        .iter()
        .enumerate()
        .map(|(i, der)| parse(der).map_err(|e| format!("certificate {i}: {e}")))
        .collect()
}

/// How an error names a certificate: its position in the chain (0 is the signer's) and its
/// subject, e.g. `certificate 1 "CN=Huizhen Test Intermediate CA, O=Huizhen"`.
pub(crate) fn describe(cert: &X509Certificate<'_>, position: usize) -> String {
    format!("certificate {position} \"{}\"", cert.subject())
}

/// The subject's common name (the signer's display name), or the whole subject without one.
pub(crate) fn common_name(cert: &X509Certificate<'_>) -> String {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| cert.subject().to_string())
}

/// A validity period: notBefore, notAfter (both included).
pub(crate) type Period = (DateTime<Utc>, DateTime<Utc>);

/// The certificate's validity period.
pub(crate) fn validity(cert: &X509Certificate<'_>) -> Result<Period, String> {
    let validity = cert.validity();
    let from = DateTime::from_timestamp(validity.not_before.timestamp(), 0);
    let to = DateTime::from_timestamp(validity.not_after.timestamp(), 0);
    from.zip(to)
        .ok_or_else(|| "a validity period outside the representable dates".into())
}

/// `Ok` when `at` lies within `period` (both ends included); otherwise the period, worded
/// for an error.
pub(crate) fn within((from, to): Period, at: DateTime<Utc>) -> Result<(), String> {
    if from <= at && at <= to {
        Ok(())
    } else {
        Err(format!(
            "valid from {} to {}",
            from.to_rfc3339(),
            to.to_rfc3339()
        ))
    }
}

/// Checks every link of a chain (leaf first): certificate `i` names certificate `i + 1` as
/// its issuer and is signed by its key. The error names the certificate whose link fails.
pub(crate) fn check_links(certs: &[X509Certificate<'_>]) -> Result<(), String> {
    for (i, pair) in certs.windows(2).enumerate() {
        let (cert, issuer) = (&pair[0], &pair[1]);
        if cert.issuer().as_raw() != issuer.subject().as_raw() {
            return Err(format!(
                "{} names \"{}\" as its issuer, but the next certificate is \"{}\" (the \
                 chain must go leaf first, then each issuer)",
                describe(cert, i),
                cert.issuer(),
                issuer.subject()
            ));
        }
        check_issued_by(cert, issuer.public_key()).map_err(|reason| {
            format!(
                "{} is not signed by {}: {reason}",
                describe(cert, i),
                describe(issuer, i + 1)
            )
        })?;
    }
    Ok(())
}

/// Checks that `cert` is signed by the key in `issuer` (its tbsCertificate against its
/// signatureValue), with the algorithm the certificate names. The error says why not.
pub(crate) fn check_issued_by(
    cert: &X509Certificate<'_>,
    issuer: &SubjectPublicKeyInfo<'_>,
) -> Result<(), String> {
    let outer = cert.signature_algorithm.algorithm.to_id_string();
    let inner = cert.tbs_certificate.signature.algorithm.to_id_string();
    if outer != inner {
        return Err(format!(
            "its signature algorithm {outer} differs from the one in its body {inner}"
        ));
    }
    let kind = key_kind(issuer).map_err(|e| format!("its issuer has {e}"))?;
    let algorithm = link_algorithm(&outer, kind)?;
    UnparsedPublicKey::new(algorithm, key_bytes(issuer))
        .verify(
            cert.tbs_certificate.as_ref(),
            cert.signature_value.data.as_ref(),
        )
        .map_err(|_| format!("its signature ({outer}) does not verify with the issuer's key"))
}

/// The ring algorithm for a certificate signed with `signature_oid` by a `kind` key.
fn link_algorithm(
    signature_oid: &str,
    kind: KeyKind,
) -> Result<&'static dyn VerificationAlgorithm, String> {
    let algorithm: &'static dyn VerificationAlgorithm = match (signature_oid, kind) {
        (ECDSA_WITH_SHA256, KeyKind::EcP256) => &sig::ECDSA_P256_SHA256_ASN1,
        (ECDSA_WITH_SHA256, KeyKind::EcP384) => &sig::ECDSA_P384_SHA256_ASN1,
        (ECDSA_WITH_SHA384, KeyKind::EcP256) => &sig::ECDSA_P256_SHA384_ASN1,
        (ECDSA_WITH_SHA384, KeyKind::EcP384) => &sig::ECDSA_P384_SHA384_ASN1,
        (ED25519, KeyKind::Ed25519) => &sig::ED25519,
        (SHA256_WITH_RSA, KeyKind::Rsa) => &sig::RSA_PKCS1_2048_8192_SHA256,
        (SHA384_WITH_RSA, KeyKind::Rsa) => &sig::RSA_PKCS1_2048_8192_SHA384,
        (SHA512_WITH_RSA, KeyKind::Rsa) => &sig::RSA_PKCS1_2048_8192_SHA512,
        (SM2_WITH_SM3, _) | (_, KeyKind::Sm2) => {
            return Err(
                "it is signed with SM2/SM3, which this verifier does not implement (an SM2 \
                 CA plugs in its own SignatureVerifier)"
                    .into(),
            );
        }
        (oid, kind) => {
            return Err(format!(
                "its signature algorithm {oid} with an issuer's {} key is not supported",
                kind.label()
            ));
        }
    };
    Ok(algorithm)
}

/// The DER of every `CERTIFICATE` block of a PEM text, in order; other blocks are refused so
/// that a key pasted into a chain file is noticed.
pub(crate) fn certificates_from_pem(text: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut chain = Vec::new();
    for (i, block) in x509_parser::pem::Pem::iter_from_buffer(text).enumerate() {
        let block = block.map_err(|e| format!("PEM block {i}: {e}"))?;
        if block.label != "CERTIFICATE" {
            return Err(format!(
                "PEM block {i} is a {:?}, not a CERTIFICATE",
                block.label
            ));
        }
        chain.push(block.contents);
    }
    if chain.is_empty() {
        return Err("no CERTIFICATE block in the PEM text".into());
    }
    Ok(chain)
}

/// The DER of the single `PRIVATE KEY` (PKCS#8) block of a PEM text.
pub(crate) fn private_key_from_pem(text: &[u8]) -> Result<Vec<u8>, String> {
    let mut blocks = x509_parser::pem::Pem::iter_from_buffer(text);
    let block = match blocks.next() {
        Some(block) => block.map_err(|e| format!("PEM: {e}"))?,
        None => return Err("no PEM block in the key text".into()),
    };
    if block.label != "PRIVATE KEY" {
        return Err(format!(
            "the key is a {:?} PEM block; a PKCS#8 \"PRIVATE KEY\" is needed (convert with \
             `openssl pkcs8 -topk8 -nocrypt`)",
            block.label
        ));
    }
    if blocks.next().is_some() {
        return Err("more than one PEM block in the key text".into());
    }
    Ok(block.contents)
}
