//! [`CertSigner`]: one physician's signing identity — a PKCS#8 private key and the certificate
//! chain that certifies it (leaf first, then each issuer up to the root).
//!
//! Everything that can be checked once is checked at load, so a misconfigured signer fails at
//! start-up rather than when a report is due: the chain parses and is in order (each
//! certificate signed by the next), and the key is the one the leaf certifies. At signing time
//! every certificate of the chain must be valid at the signing time, so a signature is never
//! made that the verifier would refuse.

use std::path::Path;

use chrono::{DateTime, Utc};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};

use crate::cert::{self, KeyKind};
use crate::{LoadError, Signature, SignatureError, Signer, SigningAlgorithm, read_file};

/// Signs documents with a certificate's private key; see the module docs.
pub struct CertSigner {
    key: SigningKey,
    chain: Vec<Vec<u8>>,
    /// Each certificate's description and validity, checked at every signing.
    periods: Vec<(String, cert::Period)>,
    /// The leaf's common name.
    signer: String,
    rng: SystemRandom,
}

enum SigningKey {
    EcdsaP256(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl std::fmt::Debug for CertSigner {
    /// Names the signer and the algorithm, never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertSigner")
            .field("signer", &self.signer)
            .field("algorithm", &self.algorithm().name())
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl CertSigner {
    /// A signer from a PKCS#8 private key (DER) and the certificate chain (DER, leaf first).
    pub fn from_der(pkcs8: &[u8], chain: Vec<Vec<u8>>) -> Result<Self, LoadError> {
        if chain.is_empty() {
            return Err(LoadError::Chain("no certificate given".into()));
        }
        let certs = cert::parse_chain(&chain).map_err(LoadError::Chain)?;
        cert::check_links(&certs).map_err(LoadError::Chain)?;
        let leaf = &certs[0];
        let key = load_key(pkcs8, leaf)?;
        let periods = certs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let name = cert::describe(c, i);
                cert::validity(c)
                    .map(|period| (name.clone(), period))
                    .map_err(|e| LoadError::Chain(format!("{name}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let signer = cert::common_name(leaf);
        Ok(CertSigner {
            key,
            chain,
            periods,
            signer,
            rng: SystemRandom::new(),
        })
    }

    /// A signer from PEM texts: a `PRIVATE KEY` (PKCS#8) block, and the chain's `CERTIFICATE`
    /// blocks leaf first.
    pub fn from_pem(key_pem: &[u8], chain_pem: &[u8]) -> Result<Self, LoadError> {
        let pkcs8 = cert::private_key_from_pem(key_pem).map_err(LoadError::Key)?;
        let chain = cert::certificates_from_pem(chain_pem).map_err(LoadError::Chain)?;
        Self::from_der(&pkcs8, chain)
    }

    /// A signer from a PEM key file and a PEM chain file (see [`CertSigner::from_pem`]).
    pub fn from_pem_files(key_file: &Path, chain_file: &Path) -> Result<Self, LoadError> {
        Self::from_pem(&read_file(key_file)?, &read_file(chain_file)?)
    }

    /// The algorithm of the signatures this signer makes.
    pub fn algorithm(&self) -> SigningAlgorithm {
        match self.key {
            SigningKey::EcdsaP256(_) => SigningAlgorithm::EcdsaP256Sha256,
            SigningKey::Ed25519(_) => SigningAlgorithm::Ed25519,
        }
    }

    /// The signer's name (the leaf certificate's common name).
    pub fn signer_name(&self) -> &str {
        &self.signer
    }

    /// The certificate chain (DER, leaf first) stored with every signature.
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    fn sign_value(&self, document: &[u8]) -> Result<Vec<u8>, SignatureError> {
        match &self.key {
            SigningKey::EcdsaP256(key) => key
                .sign(&self.rng, document)
                .map(|value| value.as_ref().to_vec())
                .map_err(|_| SignatureError::Unavailable("ECDSA signing failed".into())),
            SigningKey::Ed25519(key) => Ok(key.sign(document).as_ref().to_vec()),
        }
    }
}

impl Signer for CertSigner {
    /// Refuses (`Unavailable`, naming the certificate and its period) when any certificate of
    /// the chain is not valid at `at`.
    fn sign(&self, document: &[u8], at: DateTime<Utc>) -> Result<Signature, SignatureError> {
        for (name, period) in &self.periods {
            cert::within(*period, at).map_err(|period| {
                SignatureError::Unavailable(format!(
                    "{name} is not valid at {}: {period}",
                    at.to_rfc3339()
                ))
            })?;
        }
        Ok(Signature {
            algorithm: self.algorithm().name().to_owned(),
            value: self.sign_value(document)?,
            certificate_chain: self.chain.clone(),
            signed_at: at,
            signer: self.signer.clone(),
            timestamp_token: None,
        })
    }
}

/// Loads the PKCS#8 key for the leaf's key kind and checks it is the leaf's key.
fn load_key(
    pkcs8: &[u8],
    leaf: &x509_parser::prelude::X509Certificate<'_>,
) -> Result<SigningKey, LoadError> {
    let leaf_name = cert::describe(leaf, 0);
    let kind = cert::key_kind(leaf.public_key())
        .map_err(|e| LoadError::Key(format!("{leaf_name} has {e}")))?;
    let (key, public) = match kind {
        KeyKind::EcP256 => {
            let key = EcdsaKeyPair::from_pkcs8(
                &ECDSA_P256_SHA256_ASN1_SIGNING,
                pkcs8,
                &SystemRandom::new(),
            )
            .map_err(|e| {
                LoadError::Key(format!(
                    "not a PKCS#8 ECDSA P-256 key, as {leaf_name} needs ({e})"
                ))
            })?;
            let public = key.public_key().as_ref().to_vec();
            (SigningKey::EcdsaP256(key), public)
        }
        KeyKind::Ed25519 => {
            let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8).map_err(|e| {
                LoadError::Key(format!(
                    "not a PKCS#8 Ed25519 key, as {leaf_name} needs ({e})"
                ))
            })?;
            let public = key.public_key().as_ref().to_vec();
            (SigningKey::Ed25519(key), public)
        }
        other => {
            return Err(LoadError::Key(format!(
                "{leaf_name} certifies a {} key; this signer signs with ECDSA P-256 or \
                 Ed25519 (an SM2 CA plugs in its own Signer)",
                other.label()
            )));
        }
    };
    if public != cert::key_bytes(leaf.public_key()) {
        return Err(LoadError::KeyMismatch {
            certificate: leaf_name,
        });
    }
    Ok(key)
}
