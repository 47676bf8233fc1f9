//! HL7 v2 → FHIR R4 (STANDARDS HL7-40, FHIR-01, FHIR-20, FHIR-24): [`convert`] turns one
//! HL7 v2 message into a FHIR **transaction Bundle** of conditional entries, and the
//! `hl7v2_to_fhir` step ([`step`]) does it in a pipeline. The message is read with the hl7v2
//! crate's tokenizer and its built-in mappings (`huizhen_hl7::mapping`: the same reading of
//! `PID`, names, resident ids, dates and null `""` as `hl7_map`); resources are built with the
//! fhir-sdk R4B model and written as R4 JSON ([`wire`] says why that is the same).
//!
//! | trigger | resources |
//! |---|---|
//! | `ADT^A01`, `A04` | Patient (conditional update), Encounter (class from `PV1-2`, else IMP / AMB) |
//! | `ADT^A05`, `A08`, `A28`, `A31` | Patient (conditional update) |
//! | `ADT^A40` | surviving Patient (`link` replaces), each retired Patient (`active` false, `link` replaced-by), one per `PID`/`MRG` pair |
//! | `ORU^R01` | per `PID` group: Patient (conditional create), per `OBR` a DiagnosticReport with its Observations |
//! | `ORM^O01`, `OML^O21` | Patient (conditional create), per `ORC` a ServiceRequest |
//! | `SIU^S12`–`S15`, `S17`, `S26` | Patient (conditional create), Appointment |
//! | `MDM^T02` | Patient (conditional create), DocumentReference with the text or `ED` content |
//!
//! Which code a local value becomes is in [`codes`] (the HL7-40 defaults plus a YAML file of
//! local maps); docs/fhir.md has the full table.

use fhir_sdk::r4b::resources::Bundle;
use huizhen_hl7::Message;

pub mod bundle;
pub mod codes;
mod document;
pub(crate) mod model;
mod order;
mod patient;
mod results;
mod schedule;
mod split;
pub mod step;
pub mod wire;

pub use codes::CodeMaps;

/// Why a message cannot be converted. Names paths and message types, never patient data.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// `MSH-9` names a type the conversion does not read.
    #[error(
        "MSH-9: {message_type} is not a message type hl7v2_to_fhir converts (ADT^A01, A04, A05, A08, A28, A31, A40, ORU^R01, ORM^O01, OML^O21, SIU^S12–S15, S17, S26, MDM^T02)"
    )]
    Unsupported { message_type: String },
    /// The message lacks what the resources need.
    #[error("{path}{}{reason}", if path.is_empty() { "" } else { ": " })]
    Message { path: String, reason: String },
    /// The model refused a resource (a required element left out: a bug, not bad input).
    #[error("building FHIR resources: {0}")]
    Model(String),
}

impl ConvertError {
    pub(crate) fn at(path: impl Into<String>, reason: impl Into<String>) -> ConvertError {
        ConvertError::Message {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// The same error inside group `n` of a message (`PATIENT_RESULT[2]: PID-3: …`).
    fn in_group(self, group: &str, n: usize, groups: usize) -> ConvertError {
        if groups <= 1 {
            return self;
        }
        match self {
            ConvertError::Message { path, reason } => ConvertError::Message {
                path: if path.is_empty() {
                    format!("{group}[{n}]")
                } else {
                    format!("{group}[{n}]: {path}")
                },
                reason,
            },
            other => other,
        }
    }
}

/// How to convert: the code maps and the time zone of HL7 times sent without an offset.
#[derive(Debug, Clone)]
pub struct Options {
    pub maps: CodeMaps,
    /// `+08:00` by default (China Standard Time).
    pub timezone: String,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            maps: CodeMaps::default(),
            timezone: "+08:00".into(),
        }
    }
}

/// What a conversion reads everywhere.
pub(crate) struct Ctx<'a> {
    pub maps: &'a CodeMaps,
    pub timezone: &'a str,
    /// MSH-4 (HD.1, else HD.2): the authority of identifiers sent without one.
    pub facility: Option<&'a str>,
    /// MSH-10, for identifiers made from the message when it carries none.
    pub control_id: Option<&'a str>,
}

/// A converted message.
#[derive(Debug, Clone)]
pub struct Converted {
    /// The transaction Bundle.
    pub bundle: Bundle,
    /// The resource types in it, in order, each once (`Patient`, `Encounter`).
    pub resource_types: Vec<String>,
    /// What could not be read as expected, by path (from the mappings); no values.
    pub warnings: Vec<String>,
}

/// `MSH-9.1` and `MSH-9.2`, upper case (`ADT_A01` in MSH-9.1 alone is read too).
fn message_type(message: &Message) -> (String, String) {
    let get = |p: &str| {
        message
            .get_str(p)
            .ok()
            .flatten()
            .unwrap_or_default()
            .trim()
            .to_ascii_uppercase()
    };
    let (mut t, mut e) = (get("MSH-9.1"), get("MSH-9.2"));
    if e.is_empty()
        && let Some((a, b)) = t.clone().split_once('_')
    {
        t = a.to_owned();
        e = b.to_owned();
    }
    let clean = |s: String| -> String {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(10)
            .collect()
    };
    (clean(t), clean(e))
}

/// Converts one message into a transaction Bundle. `seed` (the journal's message id) makes
/// the entries' `fullUrl`s, so the same message converts to the same Bundle.
pub fn convert(
    message: &Message,
    options: &Options,
    seed: &str,
) -> Result<Converted, ConvertError> {
    let (t, e) = message_type(message);
    let facility = message
        .segment("MSH", 1)
        .and_then(|msh| msh.field(4))
        .and_then(|f| {
            huizhen_hl7::mapping::readers::comp(f, 1)
                .or_else(|| huizhen_hl7::mapping::readers::comp(f, 2))
        });
    let control_id = message
        .segment("MSH", 1)
        .and_then(|msh| huizhen_hl7::mapping::readers::clean(msh.field(10)));
    let ctx = Ctx {
        maps: &options.maps,
        timezone: &options.timezone,
        facility: facility.as_deref(),
        control_id: control_id.as_deref(),
    };
    let mut tx = bundle::Tx::new(seed);
    let mut warnings = Vec::new();
    match (t.as_str(), e.as_str()) {
        ("ADT", "A01" | "A04" | "A05" | "A08" | "A28" | "A31" | "A40") => {
            patient::adt(message, &ctx, &e, &mut tx, &mut warnings)?
        }
        ("ORU", "R01") => results::oru(message, &ctx, &mut tx, &mut warnings)?,
        ("ORM", "O01") | ("OML", "O21") => order::orders(message, &ctx, &mut tx, &mut warnings)?,
        ("SIU", "S12" | "S13" | "S14" | "S15" | "S17" | "S26") => {
            schedule::siu(message, &ctx, &e, &mut tx, &mut warnings)?
        }
        ("MDM", "T02") => document::mdm(message, &ctx, &mut tx, &mut warnings)?,
        _ => {
            return Err(ConvertError::Unsupported {
                message_type: format!("{t}^{e}"),
            });
        }
    }
    if tx.is_empty() {
        return Err(ConvertError::at("", "the message gives no resource"));
    }
    let resource_types = tx.types();
    Ok(Converted {
        bundle: tx.finish()?,
        resource_types,
        warnings,
    })
}
