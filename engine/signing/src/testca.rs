//! A test certificate authority (feature `test-ca`): root → intermediate → physician, built in
//! memory with rcgen (on ring), for tests and the demo. **Not for production**: its keys are
//! generated on the spot and kept in memory in the clear; a real signature needs a physician's
//! certificate from a licensed CA (《电子签名法》, STANDARDS CN-21).
//!
//! Nothing is written to disk unless asked ([`TestCa::write_root_pem`],
//! [`Physician::write_pem`]).
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use huizhen_signing::testca::TestCa;
//! use huizhen_signing::{SignatureVerifier, Signer};
//!
//! let ca = TestCa::generate("Demo").unwrap();
//! let doctor = ca
//!     .issue_physician("Dr Li Wei", Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap(),
//!         Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap())
//!     .unwrap();
//! let at = Utc.with_ymd_and_hms(2026, 6, 1, 8, 0, 0).unwrap();
//! let signature = doctor.signer().unwrap().sign(b"report", at).unwrap();
//! assert_eq!(ca.verifier().verify(b"report", &signature).unwrap(), "Dr Li Wei");
//! ```

use std::path::{Path, PathBuf};

use base64::Engine as _;
use chrono::{DateTime, TimeZone, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};

use crate::{CertSigner, ChainVerifier, LoadError, SigningAlgorithm};

/// The key usages a [`LeafSpec`] lists (rcgen's type, re-exported so callers need no rcgen).
pub use rcgen::KeyUsagePurpose;

/// Why the test CA could not build a certificate.
#[derive(Debug, thiserror::Error)]
#[error("test CA: {0}")]
pub struct TestCaError(String);

impl From<rcgen::Error> for TestCaError {
    fn from(e: rcgen::Error) -> Self {
        TestCaError(e.to_string())
    }
}

/// A root and an intermediate CA, both valid 2000–2100 so that leaves of any test period
/// chain up to them.
pub struct TestCa {
    name: String,
    intermediate_params: CertificateParams,
    intermediate_key: KeyPair,
    root_der: Vec<u8>,
    intermediate_der: Vec<u8>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// What [`TestCa::issue`] puts in a signer's certificate.
#[derive(Clone, Debug)]
pub struct LeafSpec {
    /// The subject's common name (the signer's display name).
    pub common_name: String,
    /// Start of validity.
    pub not_before: DateTime<Utc>,
    /// End of validity.
    pub not_after: DateTime<Utc>,
    /// The key's algorithm.
    pub algorithm: SigningAlgorithm,
    /// The key usages; a physician's signing certificate has digitalSignature and
    /// nonRepudiation (contentCommitment).
    pub key_usages: Vec<KeyUsagePurpose>,
}

/// A physician's signing identity from the test CA: the PKCS#8 key and the chain (leaf,
/// intermediate, root; DER).
#[derive(Clone)]
pub struct Physician {
    /// The private key, PKCS#8 DER.
    pub key_pkcs8: Vec<u8>,
    /// The certificate chain, DER, leaf first.
    pub chain: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Physician {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Physician")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl TestCa {
    /// A new ECDSA P-256 root and intermediate named after `name` ("`name` Test Root CA",
    /// "`name` Test Intermediate CA").
    pub fn generate(name: &str) -> Result<Self, TestCaError> {
        Self::generate_with(name, SigningAlgorithm::EcdsaP256Sha256)
    }

    /// As [`TestCa::generate`], with CA keys of `algorithm`.
    pub fn generate_with(name: &str, algorithm: SigningAlgorithm) -> Result<Self, TestCaError> {
        let ca_period = (utc(2000, 1, 1), utc(2100, 1, 1));
        let root_key = new_key(algorithm)?;
        let mut root_params = ca_params(&format!("{name} Test Root CA"), name, ca_period, None)?;
        root_params.serial_number = Some(serial()?);
        let root_der = root_params.self_signed(&root_key)?.der().to_vec();
        let root = Issuer::new(root_params, root_key);

        let intermediate_key = new_key(algorithm)?;
        let mut intermediate_params = ca_params(
            &format!("{name} Test Intermediate CA"),
            name,
            ca_period,
            Some(0),
        )?;
        intermediate_params.serial_number = Some(serial()?);
        intermediate_params.use_authority_key_identifier_extension = true;
        let intermediate_der = intermediate_params
            .signed_by(&intermediate_key, &root)?
            .der()
            .to_vec();
        Ok(TestCa {
            name: name.to_owned(),
            intermediate_params,
            intermediate_key,
            root_der,
            intermediate_der,
        })
    }

    /// The root certificate (DER), the one a verifier trusts.
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// The intermediate certificate (DER).
    pub fn intermediate_der(&self) -> &[u8] {
        &self.intermediate_der
    }

    /// A verifier trusting this CA's root only.
    pub fn verifier(&self) -> ChainVerifier {
        ChainVerifier::new([self.root_der.clone()])
            .expect("the test CA's root was just built by rcgen and parses")
    }

    /// A physician's ECDSA P-256 signing certificate valid from `not_before` to `not_after`.
    pub fn issue_physician(
        &self,
        common_name: &str,
        not_before: DateTime<Utc>,
        not_after: DateTime<Utc>,
    ) -> Result<Physician, TestCaError> {
        self.issue(&LeafSpec {
            common_name: common_name.to_owned(),
            not_before,
            not_after,
            algorithm: SigningAlgorithm::EcdsaP256Sha256,
            key_usages: vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::ContentCommitment,
            ],
        })
    }

    /// A signer's certificate as `spec` says, issued by the intermediate.
    pub fn issue(&self, spec: &LeafSpec) -> Result<Physician, TestCaError> {
        let key = new_key(spec.algorithm)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&spec.common_name, &self.name);
        params.not_before = offset(spec.not_before)?;
        params.not_after = offset(spec.not_after)?;
        params.serial_number = Some(serial()?);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = spec.key_usages.clone();
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_params(&self.intermediate_params, &self.intermediate_key);
        let leaf = params.signed_by(&key, &issuer)?;
        Ok(Physician {
            key_pkcs8: key.serialize_der(),
            chain: vec![
                leaf.der().to_vec(),
                self.intermediate_der.clone(),
                self.root_der.clone(),
            ],
        })
    }

    /// The root certificate as PEM.
    pub fn root_pem(&self) -> String {
        to_pem("CERTIFICATE", &self.root_der)
    }

    /// Writes the root certificate as PEM to `path` (for a demo's trusted-roots file).
    pub fn write_root_pem(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.root_pem())
    }
}

impl Physician {
    /// A [`CertSigner`] for this identity.
    pub fn signer(&self) -> Result<CertSigner, LoadError> {
        CertSigner::from_der(&self.key_pkcs8, self.chain.clone())
    }

    /// The private key as a PKCS#8 `PRIVATE KEY` PEM block.
    pub fn key_pem(&self) -> String {
        to_pem("PRIVATE KEY", &self.key_pkcs8)
    }

    /// The chain as PEM `CERTIFICATE` blocks, leaf first.
    pub fn chain_pem(&self) -> String {
        self.chain
            .iter()
            .map(|der| to_pem("CERTIFICATE", der))
            .collect()
    }

    /// Writes `STEM.key.pem` (mode 0600 on Unix) and `STEM.chain.pem` into `dir`, for
    /// [`CertSigner::from_pem_files`]; returns the two paths.
    pub fn write_pem(&self, dir: &Path, stem: &str) -> std::io::Result<(PathBuf, PathBuf)> {
        let key = dir.join(format!("{stem}.key.pem"));
        let chain = dir.join(format!("{stem}.chain.pem"));
        write_private(&key, self.key_pem().as_bytes())?;
        std::fs::write(&chain, self.chain_pem())?;
        Ok((key, chain))
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?
        .write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// A CA certificate's parameters: CA=true (with a path length when given), keyCertSign and
/// cRLSign.
fn ca_params(
    common_name: &str,
    organization: &str,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    path_len: Option<u8>,
) -> Result<CertificateParams, TestCaError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(common_name, organization);
    params.not_before = offset(from)?;
    params.not_after = offset(to)?;
    params.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

fn name(common_name: &str, organization: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CountryName, "CN");
    name.push(DnType::OrganizationName, organization);
    name.push(DnType::CommonName, common_name);
    name
}

fn new_key(algorithm: SigningAlgorithm) -> Result<KeyPair, TestCaError> {
    Ok(KeyPair::generate_for(match algorithm {
        SigningAlgorithm::EcdsaP256Sha256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        SigningAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
    })?)
}

/// A random positive 16-byte serial number.
fn serial() -> Result<SerialNumber, TestCaError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| TestCaError("no randomness for a serial number".into()))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

fn offset(at: DateTime<Utc>) -> Result<time::OffsetDateTime, TestCaError> {
    time::OffsetDateTime::from_unix_timestamp(at.timestamp())
        .map_err(|e| TestCaError(format!("date {at}: {e}")))
}

/// Midnight UTC of a date the test CA uses.
fn utc(year: i32, month: u32, day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, month, day, 0, 0, 0)
        .single()
        .expect("a fixed calendar date at midnight UTC exists")
}

/// A PEM block with 64-column base64 lines.
pub fn to_pem(label: &str, der: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 output is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
