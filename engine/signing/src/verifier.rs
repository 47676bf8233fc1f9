//! [`ChainVerifier`]: re-checks a stored [`Signature`] against the document and a set of
//! trusted root certificates, years after signing.
//!
//! The checks, in order, each failing with the first error it finds:
//! 1. the algorithm is one this crate implements (`Algorithm`);
//! 2. every certificate parses (`Chain`, naming its position);
//! 3. the chain ends at a trusted root: its last certificate is a trusted root (same DER, or
//!    same subject and key, as when a CA re-issues its root), or is signed by one (`Untrusted`);
//! 4. each certificate names the next as issuer and is signed by its key (`Chain`);
//! 5. every certificate, the root included, was valid **at `signed_at`** (`NotValidAt`); the
//!    verifier never reads the clock, which is what lets a record verify after expiry;
//! 6. each issuing certificate is a CA (basicConstraints CA=true, keyCertSign when key usage
//!    is present, path length respected); the signer's key usage, when present, allows
//!    digitalSignature or nonRepudiation; no certificate has a critical extension this
//!    verifier does not understand (`Chain`);
//! 7. the value verifies over the document with the signer's key (`Mismatch`), and the stored
//!    signer name is the certificate's (`Chain`).
//!
//! The trust anchor itself (a configured root) is not held to the CA checks of step 6: it is
//! trusted because it is configured. Certificate policies are not enforced: which roots are
//! configured is the policy. Revocation (CRL/OCSP at signing time) is the CA's archive's job
//! and not checked here.

use std::path::Path;

use ring::signature::{ECDSA_P256_SHA256_ASN1, ED25519, UnparsedPublicKey};
use x509_parser::prelude::X509Certificate;

use crate::cert::{self, KeyKind};
use crate::{LoadError, Signature, SignatureError, SignatureVerifier, SigningAlgorithm, read_file};

/// Extensions this verifier understands, or may ignore, when marked critical: basic
/// constraints, key usage, extended key usage, subject alternative name, subject and authority
/// key identifiers, certificate policies.
const KNOWN_CRITICAL: [&str; 7] = [
    "2.5.29.19",
    "2.5.29.15",
    "2.5.29.37",
    "2.5.29.17",
    "2.5.29.14",
    "2.5.29.35",
    "2.5.29.32",
];

/// Verifies signatures against the trusted roots it holds; see the module docs.
#[derive(Debug)]
pub struct ChainVerifier {
    roots: Vec<Root>,
}

/// A trusted root, kept as DER and as the parts compared against a chain.
#[derive(Debug)]
struct Root {
    der: Vec<u8>,
    subject: Vec<u8>,
    public_key_info: Vec<u8>,
}

/// Where a chain meets the trusted roots.
enum Anchor<'r> {
    /// The chain's last certificate is a trusted root.
    InChain,
    /// The chain's last certificate is signed by this trusted root, which it does not carry.
    Above(&'r Root),
}

impl ChainVerifier {
    /// A verifier trusting these root certificates (DER). At least one is needed.
    pub fn new(roots: impl IntoIterator<Item = Vec<u8>>) -> Result<Self, LoadError> {
        let roots = roots
            .into_iter()
            .enumerate()
            .map(|(i, der)| {
                let parsed =
                    cert::parse(&der).map_err(|e| LoadError::Roots(format!("root {i}: {e}")))?;
                let subject = parsed.subject().as_raw().to_vec();
                let public_key_info = parsed.public_key().raw.to_vec();
                Ok(Root {
                    der: der.clone(),
                    subject,
                    public_key_info,
                })
            })
            .collect::<Result<Vec<_>, LoadError>>()?;
        if roots.is_empty() {
            return Err(LoadError::Roots("no trusted root given".into()));
        }
        Ok(ChainVerifier { roots })
    }

    /// A verifier trusting every `CERTIFICATE` block of a PEM text.
    pub fn from_pem(text: &[u8]) -> Result<Self, LoadError> {
        Self::new(cert::certificates_from_pem(text).map_err(LoadError::Roots)?)
    }

    /// A verifier trusting every certificate of a PEM file.
    pub fn from_pem_file(path: &Path) -> Result<Self, LoadError> {
        Self::from_pem(&read_file(path)?)
    }

    /// How many roots are trusted.
    pub fn root_count(&self) -> usize {
        self.roots.len()
    }

    /// Step 3: where `certs` meets a trusted root.
    fn anchor(&self, certs: &[X509Certificate<'_>]) -> Result<Anchor<'_>, SignatureError> {
        let last = certs.len() - 1;
        let top = &certs[last];
        let is_root = |r: &&Root| {
            r.der == top.as_raw()
                || (r.subject == top.subject().as_raw()
                    && r.public_key_info == top.public_key().raw)
        };
        if self.roots.iter().any(|r| is_root(&r)) {
            return Ok(Anchor::InChain);
        }
        let named = self
            .roots
            .iter()
            .filter(|r| r.subject == top.issuer().as_raw())
            .collect::<Vec<_>>();
        let mut reasons = Vec::new();
        for root in named {
            let parsed = cert::parse(&root.der).map_err(SignatureError::Untrusted)?;
            match cert::check_issued_by(top, parsed.public_key()) {
                Ok(()) => return Ok(Anchor::Above(root)),
                Err(reason) => reasons.push(reason),
            }
        }
        let why = if reasons.is_empty() {
            format!(
                "its issuer \"{}\" is not a trusted root either",
                top.issuer()
            )
        } else {
            format!(
                "it names a trusted root as issuer, but {}",
                reasons.join("; ")
            )
        };
        Err(SignatureError::Untrusted(format!(
            "{} is not a trusted root and {why}",
            cert::describe(top, last)
        )))
    }
}

impl SignatureVerifier for ChainVerifier {
    fn verify(&self, document: &[u8], signature: &Signature) -> Result<String, SignatureError> {
        let algorithm = SigningAlgorithm::from_name(&signature.algorithm)
            .ok_or_else(|| SignatureError::Algorithm(signature.algorithm.clone()))?;
        if signature.certificate_chain.is_empty() {
            return Err(SignatureError::Chain(
                "the signature carries no certificate".into(),
            ));
        }
        let certs =
            cert::parse_chain(&signature.certificate_chain).map_err(SignatureError::Chain)?;
        let anchor = self.anchor(&certs)?;
        cert::check_links(&certs).map_err(SignatureError::Chain)?;
        check_validity(&certs, &anchor, signature)?;
        let issuers = match anchor {
            Anchor::InChain => certs.len() - 1,
            Anchor::Above(_) => certs.len(),
        };
        for (i, cert) in certs.iter().enumerate().take(issuers).skip(1) {
            check_ca(cert, i).map_err(SignatureError::Chain)?;
        }
        for (i, cert) in certs.iter().enumerate().take(issuers.max(1)) {
            check_critical(cert, i).map_err(SignatureError::Chain)?;
        }
        check_signer_usage(&certs[0]).map_err(SignatureError::Chain)?;
        check_value(algorithm, &certs[0], document, &signature.value)?;
        let name = cert::common_name(&certs[0]);
        if signature.signer != name {
            return Err(SignatureError::Chain(format!(
                "the stored signer {:?} is not the name in certificate 0 ({name:?})",
                signature.signer
            )));
        }
        Ok(name)
    }
}

/// Step 5: every certificate, and a root above the chain, valid at the signing time.
fn check_validity(
    certs: &[X509Certificate<'_>],
    anchor: &Anchor<'_>,
    signature: &Signature,
) -> Result<(), SignatureError> {
    let at = signature.signed_at;
    let not_valid = |name: String, why: String| SignatureError::NotValidAt {
        subject: format!("{name} ({why})"),
        at,
    };
    for (i, cert) in certs.iter().enumerate() {
        let name = cert::describe(cert, i);
        let period =
            cert::validity(cert).map_err(|e| SignatureError::Chain(format!("{name}: {e}")))?;
        cert::within(period, at).map_err(|why| not_valid(name, why))?;
    }
    if let Anchor::Above(root) = anchor {
        let parsed = cert::parse(&root.der).map_err(SignatureError::Untrusted)?;
        let name = format!("trusted root \"{}\"", parsed.subject());
        let period =
            cert::validity(&parsed).map_err(|e| SignatureError::Chain(format!("{name}: {e}")))?;
        cert::within(period, at).map_err(|why| not_valid(name, why))?;
    }
    Ok(())
}

/// Step 6 for an issuing certificate at `position`: a CA, allowed to sign certificates, and
/// within its path length (the intermediates below it, `position - 1`).
fn check_ca(cert: &X509Certificate<'_>, position: usize) -> Result<(), String> {
    let name = cert::describe(cert, position);
    let constraints = cert
        .basic_constraints()
        .map_err(|e| format!("{name}: unreadable basic constraints ({e})"))?;
    match constraints {
        Some(bc) if bc.value.ca => {
            if let Some(limit) = bc.value.path_len_constraint {
                let below = position - 1;
                if below > limit as usize {
                    return Err(format!(
                        "{name} allows {limit} intermediate CA(s) below it, the chain has {below}"
                    ));
                }
            }
        }
        _ => {
            return Err(format!(
                "{name} issues certificate {} but is not a CA (basicConstraints CA=true missing)",
                position - 1
            ));
        }
    }
    let usage = cert
        .key_usage()
        .map_err(|e| format!("{name}: unreadable key usage ({e})"))?;
    if let Some(usage) = usage
        && !usage.value.key_cert_sign()
    {
        return Err(format!(
            "{name} is a CA whose key usage does not allow keyCertSign"
        ));
    }
    Ok(())
}

/// Step 6 for the signer's certificate: its key usage, when present, allows signing documents.
fn check_signer_usage(leaf: &X509Certificate<'_>) -> Result<(), String> {
    let name = cert::describe(leaf, 0);
    let usage = leaf
        .key_usage()
        .map_err(|e| format!("{name}: unreadable key usage ({e})"))?;
    match usage {
        Some(usage) if !usage.value.digital_signature() && !usage.value.non_repudiation() => Err(
            format!("{name}: its key usage allows neither digitalSignature nor nonRepudiation"),
        ),
        _ => Ok(()),
    }
}

/// Step 6: no critical extension this verifier does not understand (RFC 5280 §4.2).
fn check_critical(cert: &X509Certificate<'_>, position: usize) -> Result<(), String> {
    for extension in cert.extensions() {
        let oid = extension.oid.to_id_string();
        if extension.critical && !KNOWN_CRITICAL.contains(&oid.as_str()) {
            return Err(format!(
                "{} has a critical extension {oid} this verifier does not process",
                cert::describe(cert, position)
            ));
        }
    }
    Ok(())
}

/// Step 7: the value over the document with the signer's key.
fn check_value(
    algorithm: SigningAlgorithm,
    leaf: &X509Certificate<'_>,
    document: &[u8],
    value: &[u8],
) -> Result<(), SignatureError> {
    let kind = cert::key_kind(leaf.public_key())
        .map_err(|e| SignatureError::Chain(format!("{} has {e}", cert::describe(leaf, 0))))?;
    let ring_algorithm: &'static dyn ring::signature::VerificationAlgorithm =
        match (algorithm, kind) {
            (SigningAlgorithm::EcdsaP256Sha256, KeyKind::EcP256) => &ECDSA_P256_SHA256_ASN1,
            (SigningAlgorithm::Ed25519, KeyKind::Ed25519) => &ED25519,
            (algorithm, kind) => {
                return Err(SignatureError::Algorithm(format!(
                    "{} with certificate 0's {} key",
                    algorithm.name(),
                    kind.label()
                )));
            }
        };
    UnparsedPublicKey::new(ring_algorithm, cert::key_bytes(leaf.public_key()))
        .verify(document, value)
        .map_err(|_| SignatureError::Mismatch)
}
