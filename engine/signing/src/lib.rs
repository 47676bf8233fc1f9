//! Electronic signatures for reports and prescriptions (STANDARDS CN-21): the certificate
//! implementations of the domain's [`Signer`](huizhen_domain::signature::Signer) and
//! [`SignatureVerifier`](huizhen_domain::signature::SignatureVerifier) ports.
//!
//! - [`CertSigner`] signs a document's canonical bytes with a physician's PKCS#8 key (ECDSA
//!   P-256 or Ed25519) and returns the signature value with the whole certificate chain and the
//!   signing time, so the record verifies later without asking the CA.
//! - [`ChainVerifier`] re-checks such a record against configured trusted roots: every link of
//!   the chain, CA constraints, key usage, each certificate's validity **at the signing time**
//!   (not now: a report signed in 2026 must still verify in 2041, after the physician's
//!   certificate has long expired), and the value over the document.
//! - `testca` (feature `test-ca`) builds a root → intermediate → physician hierarchy for tests
//!   and the demo. It is not for production.
//!
//! A production CA (in China typically SM2/SM3, often behind a PKCS#11 HSM or the CA's own SDK)
//! plugs in by implementing the same two traits; see docs/security.md, "Electronic signatures
//! (CN-21)". Signing and every signature check use ring, the workspace's only crypto provider;
//! certificates are read with x509-parser.

mod cert;
mod signer;
#[cfg(feature = "test-ca")]
pub mod testca;
mod verifier;

pub use huizhen_domain::signature::{Signature, SignatureError, SignatureVerifier, Signer};
pub use signer::CertSigner;
pub use verifier::ChainVerifier;

use std::path::PathBuf;

/// The document-signature algorithms this crate signs and verifies, by the name stored in
/// [`Signature::algorithm`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningAlgorithm {
    /// ECDSA on P-256 with SHA-256, the value DER-encoded (as in X.509 and CMS).
    EcdsaP256Sha256,
    /// Ed25519 (RFC 8032), 64 bytes.
    Ed25519,
}

impl SigningAlgorithm {
    /// The name stored in [`Signature::algorithm`].
    pub fn name(self) -> &'static str {
        match self {
            SigningAlgorithm::EcdsaP256Sha256 => "ecdsa-p256-sha256",
            SigningAlgorithm::Ed25519 => "ed25519",
        }
    }

    /// The algorithm a stored name stands for, if this crate implements it.
    pub fn from_name(name: &str) -> Option<Self> {
        [SigningAlgorithm::EcdsaP256Sha256, SigningAlgorithm::Ed25519]
            .into_iter()
            .find(|a| a.name() == name)
    }
}

/// Why a signer or a verifier could not be set up (at load, not at signing time).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A key or certificate file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The signer's certificate chain is empty, unreadable or out of order; the text names the
    /// certificate (position, subject).
    #[error("certificate chain: {0}")]
    Chain(String),
    /// The private key is unreadable or of a kind this signer does not sign with.
    #[error("private key: {0}")]
    Key(String),
    /// The private key is not the one the signer's certificate certifies.
    #[error("the private key does not belong to {certificate}: its public key differs")]
    KeyMismatch {
        /// The signer's certificate (position 0 and subject).
        certificate: String,
    },
    /// A trusted root is unreadable, or none was given.
    #[error("trusted roots: {0}")]
    Roots(String),
}

/// Reads a file for a loader, naming it in the error.
fn read_file(path: &std::path::Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|source| LoadError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip() {
        for algorithm in [SigningAlgorithm::EcdsaP256Sha256, SigningAlgorithm::Ed25519] {
            assert_eq!(
                SigningAlgorithm::from_name(algorithm.name()),
                Some(algorithm)
            );
        }
        assert_eq!(SigningAlgorithm::from_name("sm2-sm3"), None);
    }
}
