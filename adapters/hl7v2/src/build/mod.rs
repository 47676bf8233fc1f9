//! Outbound HL7 v2.5.1 built from typed records (STANDARDS HL7-40, CN-07): [`build`] turns
//! the expert's signed consultation opinion ([`OutboundOpinion`]) into an `ORU^R01` (the
//! default) or an `MDM^T02` for the HIS, and the `hl7_build` step ([`step`]) does it in a
//! pipeline, so the `mllp` sink sends the result. Pure code: no I/O, no clock (the message time
//! is the signing time or the message's own received time), so a retry builds the same bytes.
//!
//! **Escaping.** Every value is escaped for the standard delimiters `|^~\&` with
//! [`crate::escape`]. Multi-line text (treatment plan, advice) is split into lines (CRLF, CR
//! and LF alike; trailing line breaks dropped): a `TX` value has one repetition per line, an
//! `FT` value joins them with the `\.br\` formatting command, and in the `MDM` each line is an
//! `OBX` of its own. One-line values (ids, names, codes) with a control character are refused.
//!
//! **Control id.** `MSH-10` is [`control_id`]`(message id, n)`: the 64-bit FNV-1a hash of the
//! journaled message's id in base 36 (13 characters, zero-padded), a `-`, and `n`, the count of
//! `hl7_build` steps this message has passed (1 for the first). It fits the 20 characters of
//! v2.5.1, and a retry, which builds again from the same message, gets the same id, so the
//! receiver can drop a duplicate.
//!
//! The segment layout and `OBX-3` codes are listed in `messages`; the input and its checks in
//! [`OutboundOpinion`]. A `DFT^P03` ([`build_charge`]) is built from billing's charge
//! ([`OutboundCharge`]); its layout is in `charge`. A device reading's `ORU^R01`
//! ([`build_vitals`], `as: oru_r01_vitals`) is built from [`OutboundReading`]; see `vitals`.

use chrono::{DateTime, FixedOffset};
use serde::Deserialize;

mod charge;
mod header;
mod messages;
mod opinion;
pub mod step;
mod vitals;
mod writer;

pub use charge::{
    ChargeInsurance, ChargeItem, ChargePayers, ChargeTransaction, NHSA_ITEMS, OutboundCharge,
    build_charge,
};
pub use opinion::{
    Clinician, OpinionDiagnosis, OrderNumber, OutboundOpinion, OutboundPatient, PatientIdentifier,
    PersonName, ServiceCode,
};
pub use vitals::{OutboundReading, OutboundValue, build_vitals};

/// Why a message cannot be built: the JSON path (or config key) at fault and what is wrong,
/// never the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct BuildError {
    /// E.g. `patient.identifiers[0].id`, `diagnoses[1].code`, `signed_at`.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

impl BuildError {
    fn new(path: impl Into<String>, reason: impl Into<String>) -> BuildError {
        BuildError {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Which message to build (`as:` in the step).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboundKind {
    /// `ORU^R01`: the opinion as the result of the HIS's order.
    #[default]
    OruR01,
    /// `MDM^T02`: the opinion as a document (original document notification and content).
    MdmT02,
    /// `DFT^P03`: a settled consultation's charge (or its credit) for the HIS's accounts,
    /// built from billing's `settlement.settled` / `.cancelled` body ([`OutboundCharge`]).
    DftP03,
    /// `ORU^R01` of a device reading (issue 25), built from `device_reading`'s `output: hl7`
    /// body ([`OutboundReading`]): one `OBX` per value with its LOINC code and UCUM unit.
    OruR01Vitals,
}

impl OutboundKind {
    /// `ORU^R01` or `MDM^T02`.
    pub fn message_type(self) -> &'static str {
        match self {
            OutboundKind::OruR01 => "ORU^R01",
            OutboundKind::MdmT02 => "MDM^T02",
            OutboundKind::DftP03 => "DFT^P03",
            OutboundKind::OruR01Vitals => "ORU^R01",
        }
    }
}

/// The data type of the plan and advice `OBX` in an `ORU` (`text:` in the step).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextType {
    /// `TX`, one repetition of `OBX-5` per line.
    #[default]
    Tx,
    /// `FT`, lines joined with `\.br\`.
    Ft,
}

/// What the message says about its sender and receiver, and how to write it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildOptions {
    /// `ORU^R01` or `MDM^T02`.
    pub kind: OutboundKind,
    /// `MSH-3`.
    pub sending_application: String,
    /// `MSH-4`.
    pub sending_facility: String,
    /// `MSH-5`.
    pub receiving_application: String,
    /// `MSH-6`.
    pub receiving_facility: String,
    /// `MSH-11`: `P` production, `T` training, `D` debugging.
    pub processing_id: String,
    /// `TX` or `FT` for the plan and advice in an `ORU`.
    pub text: TextType,
    /// `TXA-2`, document type (table 0270; `CN` consultation).
    pub document_type: String,
}

impl BuildOptions {
    /// Checks the configured values; the error names the config key.
    pub fn check(&self) -> Result<(), BuildError> {
        for (key, value) in [
            ("sending_application", &self.sending_application),
            ("sending_facility", &self.sending_facility),
            ("receiving_application", &self.receiving_application),
            ("receiving_facility", &self.receiving_facility),
            ("document_type", &self.document_type),
        ] {
            opinion::line(key, value)?;
        }
        if !matches!(self.processing_id.as_str(), "P" | "T" | "D") {
            return Err(BuildError::new(
                "processing_id",
                "must be P (production), T (training) or D (debugging)",
            ));
        }
        Ok(())
    }
}

/// A built message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Built {
    /// The message: segments ended by CR, UTF-8, `MSH-18` = `UNICODE UTF-8`.
    pub text: String,
    /// `ORU^R01` or `MDM^T02`.
    pub message_type: &'static str,
}

/// `MSH-10` for the `n`th message built from the journaled message `message_id` (see the
/// module documentation): e.g. `0K3J5M2X9QZ1A-1`.
pub fn control_id(message_id: &str, n: u32) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in message_id.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    const DIGITS: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut out = [b'0'; 13];
    let mut rest = hash;
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(rest % 36) as usize];
        rest /= 36;
    }
    let base36: String = out.iter().map(|b| char::from(*b)).collect();
    format!("{base36}-{n}")
}

/// Builds the message for `opinion` (see the module documentation). `message_time` is
/// `MSH-7`; `None` uses the signing time.
pub fn build(
    opinion: &OutboundOpinion,
    options: &BuildOptions,
    control_id: &str,
    message_time: Option<DateTime<FixedOffset>>,
) -> Result<Built, BuildError> {
    options.check()?;
    if options.kind == OutboundKind::DftP03 {
        return Err(BuildError::new(
            "as",
            "dft_p03 is built from a charge (build_charge), not from an opinion",
        ));
    }
    if options.kind == OutboundKind::OruR01Vitals {
        return Err(BuildError::new(
            "as",
            "oru_r01_vitals is built from a reading (build_vitals), not from an opinion",
        ));
    }
    opinion::line("control_id", control_id)?;
    let checked = opinion::check(opinion)?;
    let message_time = message_time.unwrap_or(checked.signed_at);
    let parts = messages::Parts {
        checked,
        options,
        control_id,
        message_time,
    };
    Ok(built(
        messages::segments(&parts),
        options.kind.message_type(),
    ))
}

/// The message of `segs`: each rendered and ended by CR.
fn built(segs: Vec<writer::Seg>, message_type: &'static str) -> Built {
    let mut text = String::new();
    for seg in segs {
        text.push_str(&seg.render());
        text.push('\r');
    }
    Built { text, message_type }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_ids_are_short_stable_and_distinct() {
        let a = control_id("0190a3c4-0000-7000-8000-000000000001", 1);
        assert_eq!(a, control_id("0190a3c4-0000-7000-8000-000000000001", 1));
        assert_ne!(a, control_id("0190a3c4-0000-7000-8000-000000000002", 1));
        assert_ne!(a, control_id("0190a3c4-0000-7000-8000-000000000001", 2));
        assert_eq!(a.len(), 15);
        assert!(a.ends_with("-1"));
        assert!(control_id("x", 99_999).len() <= 20, "fits MSH-10 of v2.5.1");
        // FNV-1a of the empty string is the offset basis, 14695981039346656037.
        assert_eq!(control_id("", 1), "33NIIHZJ4UX45-1".to_owned());
    }
}
