//! The electronic-signature port (STANDARDS CN-21, CN-07, CN-20): reports and prescriptions are
//! signed over their canonical bytes with a certificate, and the signature must verify years
//! later (the 15-year horizon), so what is kept is the signature value, the whole certificate
//! chain (leaf first, as DER) and the signing time, never only a reference to them.
//!
//! The domain decides *what* is signed (the canonical form of an opinion or a prescription)
//! and *when* signing is required; the engine implements [`Signer`] and [`SignatureVerifier`]
//! with a certificate authority (a test CA in tests; a production CA, typically SM2, behind
//! the same traits). Nothing here reads a key, a clock or a file.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A detached signature over a document's canonical bytes, with everything needed to verify it
/// later without asking anyone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// The signature algorithm, as the implementation names it (e.g. `ecdsa-p256-sha256`,
    /// `sm2-sm3`).
    pub algorithm: String,
    /// The signature value.
    #[serde(with = "hex_bytes")]
    pub value: Vec<u8>,
    /// The signer's certificate first, then each issuer up to (and including) the root, DER.
    #[serde(with = "hex_chain")]
    pub certificate_chain: Vec<Vec<u8>>,
    /// When the document was signed (the signer's clock; a timestamp token, when the CA issues
    /// one, is kept in `timestamp_token`).
    pub signed_at: DateTime<Utc>,
    /// The signer as the certificate names them (subject common name), for display and audit.
    pub signer: String,
    /// An RFC 3161 timestamp token over the signature, when a time-stamping authority is used.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_hex_bytes"
    )]
    pub timestamp_token: Option<Vec<u8>>,
}

/// Signs canonical document bytes for one signing identity (a physician's certificate).
pub trait Signer: Send + Sync {
    /// Signs `document` at `at`. The implementation checks that its certificate is valid at
    /// `at`.
    fn sign(&self, document: &[u8], at: DateTime<Utc>) -> Result<Signature, SignatureError>;
}

/// Verifies a [`Signature`] against the document and the trusted roots the implementation
/// holds: the value, every link of the chain, and each certificate's validity at `signed_at`.
pub trait SignatureVerifier: Send + Sync {
    /// `Ok` with the signer's name when everything checks; otherwise the first failure.
    fn verify(&self, document: &[u8], signature: &Signature) -> Result<String, SignatureError>;
}

/// Why signing or verification failed; each names the part that failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The signature value does not match the document (the document changed, or the value).
    #[error("the signature does not match the document")]
    Mismatch,
    /// A certificate of the chain could not be read or is not signed by the next one.
    #[error("certificate chain: {0}")]
    Chain(String),
    /// A certificate was not valid at the signing time.
    #[error("certificate not valid at {at}: {subject}")]
    NotValidAt {
        /// The certificate's subject.
        subject: String,
        /// The signing time.
        at: DateTime<Utc>,
    },
    /// The chain does not end at a trusted root.
    #[error("untrusted root: {0}")]
    Untrusted(String),
    /// The algorithm is not one the verifier supports.
    #[error("unsupported signature algorithm {0:?}")]
    Algorithm(String),
    /// The signer could not sign (key unavailable, certificate expired, …).
    #[error("cannot sign: {0}")]
    Unavailable(String),
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::to_hex(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        super::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

mod opt_hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => s.serialize_str(&super::to_hex(bytes)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|t| super::from_hex(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

mod hex_chain {
    use serde::{Deserialize, Deserializer, Serializer, ser::SerializeSeq};

    pub fn serialize<S: Serializer>(chain: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(chain.len()))?;
        for cert in chain {
            seq.serialize_element(&super::to_hex(cert))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let texts = Vec::<String>::deserialize(d)?;
        texts
            .iter()
            .map(|t| super::from_hex(t).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// Bytes of a hex string (either case); the error names the first bad position.
pub fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err(format!("hex of odd length {}", text.len()));
    }
    let digit = |i: usize, c: u8| -> Result<u8, String> {
        (c as char)
            .to_digit(16)
            .map(|d| d as u8)
            .ok_or_else(|| format!("not a hex digit at {i}: {:?}", c as char))
    };
    text.as_bytes()
        .chunks(2)
        .enumerate()
        .map(|(i, pair)| Ok(digit(2 * i, pair[0])? << 4 | digit(2 * i + 1, pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_names_the_bad_digit() {
        let bytes = vec![0x00, 0x7f, 0xff, 0x10];
        assert_eq!(to_hex(&bytes), "007fff10");
        assert_eq!(from_hex("007FFF10").unwrap(), bytes);
        assert_eq!(from_hex("0g").unwrap_err(), "not a hex digit at 1: 'g'");
        assert!(from_hex("abc").unwrap_err().contains("odd length"));
    }

    #[test]
    fn a_signature_keeps_its_chain_through_json() {
        let signature = Signature {
            algorithm: "ecdsa-p256-sha256".into(),
            value: vec![1, 2, 3],
            certificate_chain: vec![vec![0x30, 0x82], vec![0x30, 0x81]],
            signed_at: "2026-12-05T03:00:00Z".parse().unwrap(),
            signer: "Dr Li".into(),
            timestamp_token: None,
        };
        let json = serde_json::to_string(&signature).unwrap();
        assert!(json.contains("\"value\":\"010203\""), "{json}");
        assert_eq!(serde_json::from_str::<Signature>(&json).unwrap(), signature);
    }
}
