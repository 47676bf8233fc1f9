//! `hl7_build`: the pipeline step that replaces a JSON [`OutboundOpinion`] body with the HL7
//! v2.5.1 message [`super::build`] makes of it (or, with `as: dft_p03`, a billing charge
//! [`OutboundCharge`] with the `DFT^P03` of [`super::build_charge`]), so the `mllp` sink after
//! it sends that message to the HIS and waits for its ACK. The message kind becomes `hl7v2`; the headers
//! `hl7-type`, `hl7-control-id`, `hl7-version` and `hl7-charset` (`UTF-8`) describe it, and
//! `hl7-build-seq` counts the `hl7_build` steps the message has passed (the `n` of
//! [`super::control_id`]).
//!
//! ```yaml
//! steps:
//!   - hl7_build:
//!       as: oru_r01                 # or mdm_t02, dft_p03 (billing's charges), oru_r01_vitals (device readings)
//!       sending_application: HUIZHEN
//!       sending_facility: GXYCHZ
//!       receiving_application: HIS
//!       receiving_facility: HXXRMYY
//! sinks:
//!   - mllp: { to: 10.0.0.5:6661, charset: GB18030 }
//! ```
//!
//! A body that is not an opinion (not JSON, an unknown or missing field, a value that fails a
//! check) fails the step with a permanent error naming the JSON path, so it goes to the dead
//! letters at once: building it again cannot change it.

use std::sync::Arc;

use chrono::{DateTime, FixedOffset};
use futures::future::BoxFuture;
use huizhen_core::runner::BuildContext;
use huizhen_core::steps::{Step, StepConfig};
use huizhen_core::work::{Flow, StepError, Work};
use serde::Deserialize;

use super::{
    BuildOptions, OutboundCharge, OutboundKind, OutboundOpinion, OutboundReading, TextType, build,
    build_charge, build_vitals, control_id,
};

/// The header counting `hl7_build` steps per message.
pub const SEQ_HEADER: &str = "hl7-build-seq";

/// `- hl7_build: { … }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hl7BuildConfig {
    /// `oru_r01` (default), `mdm_t02`, `dft_p03` (the body is a billing charge) or
    /// `oru_r01_vitals` (the body is `device_reading`'s `output: hl7`).
    #[serde(rename = "as", default)]
    pub kind: OutboundKind,
    /// `MSH-3`, this engine as the HIS knows it (e.g. `HUIZHEN`).
    pub sending_application: String,
    /// `MSH-4`, the consultation centre.
    pub sending_facility: String,
    /// `MSH-5`, the HIS application.
    pub receiving_application: String,
    /// `MSH-6`, the hospital.
    pub receiving_facility: String,
    /// `MSH-11`: `P` (default), `T` or `D`.
    #[serde(default = "default_processing_id")]
    pub processing_id: String,
    /// `tx` (default) or `ft`: the data type of the plan and advice in an `ORU`.
    #[serde(default)]
    pub text: TextType,
    /// `TXA-2` of an `MDM` (table 0270); default `CN`, consultation.
    #[serde(default = "default_document_type")]
    pub document_type: String,
    /// `MSH-7`: `signed_at` (default), the signing time with its own offset (a charge's
    /// posting time for `dft_p03`), or `received`, when the message entered the engine, at
    /// `utc_offset`.
    #[serde(default)]
    pub time: MessageTime,
    /// The offset `MSH-7` is written in for `time: received`; default `+08:00`.
    #[serde(default = "default_utc_offset")]
    pub utc_offset: String,
}

/// Where `MSH-7` comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageTime {
    /// The opinion's `signed_at`.
    #[default]
    SignedAt,
    /// The message's received time.
    Received,
}

fn default_processing_id() -> String {
    "P".into()
}
fn default_document_type() -> String {
    "CN".into()
}
fn default_utc_offset() -> String {
    "+08:00".into()
}

/// `+08:00`, `+0800`, `-05:00`, `Z`.
fn parse_offset(s: &str) -> Option<FixedOffset> {
    let s = s.trim();
    if s == "Z" {
        return FixedOffset::east_opt(0);
    }
    let (sign, rest) = match s.split_at_checked(1)? {
        ("+", r) => (1, r),
        ("-", r) => (-1, r),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i32 = digits.get(..2)?.parse().ok()?;
    let minutes: i32 = digits.get(2..)?.parse().ok()?;
    if hours > 14 || minutes > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

#[typetag::deserialize(name = "hl7_build")]
impl StepConfig for Hl7BuildConfig {
    fn type_name(&self) -> &'static str {
        "hl7_build"
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Arc<dyn Step>, String> {
        let options = BuildOptions {
            kind: self.kind,
            sending_application: self.sending_application.trim().to_owned(),
            sending_facility: self.sending_facility.trim().to_owned(),
            receiving_application: self.receiving_application.trim().to_owned(),
            receiving_facility: self.receiving_facility.trim().to_owned(),
            processing_id: self.processing_id.trim().to_owned(),
            text: self.text,
            document_type: self.document_type.trim().to_owned(),
        };
        options.check().map_err(|e| e.to_string())?;
        let offset = parse_offset(&self.utc_offset).ok_or_else(|| {
            format!(
                "utc_offset: {:?} is not an offset such as +08:00",
                self.utc_offset
            )
        })?;
        Ok(Arc::new(Hl7Build {
            options,
            time: self.time,
            offset,
        }))
    }
}

/// The built `hl7_build` step.
struct Hl7Build {
    options: BuildOptions,
    time: MessageTime,
    offset: FixedOffset,
}

impl Step for Hl7Build {
    fn apply<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Flow, StepError>> {
        Box::pin(async move {
            self.run(work)?;
            Ok(Flow::Continue)
        })
    }
}

impl Hl7Build {
    fn run(&self, work: &mut Work) -> Result<(), StepError> {
        let fail =
            |id: &str, e: String| StepError::permanent(format!("message {id}: hl7_build: {e}"));
        if work.kind != "json" {
            return Err(fail(
                &work.id,
                format!(
                    "the body is kind {}; hl7_build reads a JSON opinion (kind json)",
                    work.kind
                ),
            ));
        }
        let id = work.id.clone();
        let n = work
            .headers
            .get(SEQ_HEADER)
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(0)
            .saturating_add(1);
        let control = control_id(&id, n);
        let message_time = match self.time {
            MessageTime::SignedAt => None,
            MessageTime::Received => {
                Some(received(work.received_at, self.offset).ok_or_else(|| {
                    fail(&id, "the message's received time is out of range".into())
                })?)
            }
        };
        let built = if self.options.kind == OutboundKind::DftP03 {
            let charge: OutboundCharge = read_body(work.body()).map_err(|e| fail(&id, e))?;
            build_charge(&charge, &self.options, &control, message_time)
        } else if self.options.kind == OutboundKind::OruR01Vitals {
            let reading: OutboundReading = read_body(work.body()).map_err(|e| fail(&id, e))?;
            build_vitals(&reading, &self.options, &control, message_time)
        } else {
            let opinion: OutboundOpinion = read_body(work.body()).map_err(|e| fail(&id, e))?;
            build(&opinion, &self.options, &control, message_time)
        }
        .map_err(|e| fail(&id, format!("body: {e}")))?;
        work.set_body(built.text.into_bytes());
        work.kind = "hl7v2".into();
        let headers = [
            ("hl7-type", built.message_type.to_owned()),
            ("hl7-control-id", control),
            ("hl7-version", "2.5.1".to_owned()),
            ("hl7-charset", "UTF-8".to_owned()),
            (SEQ_HEADER, n.to_string()),
        ];
        for (k, v) in headers {
            work.headers.insert(k.to_owned(), v);
        }
        Ok(())
    }
}

/// Reads the body, naming the JSON path of what is wrong.
fn read_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            format!("body: {}", e.inner())
        } else {
            format!("body: {path}: {}", e.inner())
        }
    })
}

fn received(ms: i64, offset: FixedOffset) -> Option<DateTime<FixedOffset>> {
    DateTime::from_timestamp_millis(ms).map(|t| t.with_timezone(&offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets() {
        assert_eq!(parse_offset("+08:00"), FixedOffset::east_opt(8 * 3600));
        assert_eq!(parse_offset("+0800"), FixedOffset::east_opt(8 * 3600));
        assert_eq!(
            parse_offset("-05:30"),
            FixedOffset::west_opt(5 * 3600 + 1800)
        );
        assert_eq!(parse_offset("Z"), FixedOffset::east_opt(0));
        for bad in ["", "8", "+8", "+08:60", "+15:00", "UTC", "+08:00:00"] {
            assert_eq!(parse_offset(bad), None, "{bad}");
        }
    }

    #[test]
    fn body_errors_name_the_path() {
        let e = read_body::<OutboundOpinion>(
            br#"{"consultation_id": "C1", "patient": {"identifiers": [{"id": "1", "typ": "MR"}]}}"#,
        )
        .unwrap_err();
        assert!(
            e.starts_with("body: patient.identifiers[0].typ: unknown field `typ`"),
            "{e}"
        );
        let e = read_body::<OutboundOpinion>(b"not json").unwrap_err();
        assert!(e.starts_with("body: expected"), "{e}");
    }
}
