//! `hl7v2_to_fhir`: the pipeline step that replaces an HL7 v2 message's body with its FHIR R4
//! transaction Bundle ([`super::convert`]). The message kind becomes `fhir+json`, whose
//! `body` CEL expressions read as JSON (registered below), and two headers say what came
//! out: `fhir-resource-types` (`Patient,Encounter`) and, when the mappings noted something,
//! `fhir-warnings` (paths, no values).
//!
//! ```yaml
//! - hl7v2_to_fhir:
//!     code_maps: pipelines/fhir-codes.yaml   # optional, see codes.rs / docs/fhir.md
//!     timezone: "+08:00"                     # for HL7 times sent without an offset
//! ```
//!
//! A message that cannot be converted fails the step with a permanent error naming the path
//! (`PATIENT_RESULT[2]: PID-3: no patient identifier`), so it goes to the dead letters at
//! once; the journal keeps the HL7 as received. Local overrides beyond the code maps: a
//! `plugin` step (world `rule`, decision `transform`) after this one gets the Bundle as its
//! body and may return a changed one (docs/fhir.md).

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use huizhen_core::expr::KindSupport;
use huizhen_core::runner::BuildContext;
use huizhen_core::steps::{Step, StepConfig};
use huizhen_core::work::{Flow, StepError, Work};
use serde::Deserialize;

use super::{CodeMaps, Options, convert};

/// The message kind of a FHIR JSON body (a resource or a Bundle).
pub const FHIR_JSON: &str = "fhir+json";

/// `- hl7v2_to_fhir: {…}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hl7v2ToFhirConfig {
    /// A YAML file of local code maps, relative to the working directory (like plugin paths).
    #[serde(default)]
    pub code_maps: Option<PathBuf>,
    /// The UTC offset of HL7 times sent without one (`+08:00`, `Z`, `-05:00`).
    #[serde(default = "default_timezone")]
    pub timezone: String,
}

fn default_timezone() -> String {
    "+08:00".into()
}

fn valid_offset(s: &str) -> bool {
    if s == "Z" {
        return true;
    }
    let b = s.as_bytes();
    b.len() == 6
        && (b[0] == b'+' || b[0] == b'-')
        && b[3] == b':'
        && [1, 2, 4, 5].iter().all(|&i| b[i].is_ascii_digit())
        && s[1..3].parse::<u8>().is_ok_and(|h| h <= 14)
        && s[4..6].parse::<u8>().is_ok_and(|m| m < 60)
}

#[typetag::deserialize(name = "hl7v2_to_fhir")]
impl StepConfig for Hl7v2ToFhirConfig {
    fn type_name(&self) -> &'static str {
        "hl7v2_to_fhir"
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Arc<dyn Step>, String> {
        if !valid_offset(&self.timezone) {
            return Err(format!(
                "timezone: {:?} is not a UTC offset (write it like +08:00, -05:00 or Z)",
                self.timezone
            ));
        }
        let maps = match &self.code_maps {
            None => CodeMaps::default(),
            Some(path) => CodeMaps::load(path).map_err(|errors| {
                let all: Vec<String> = errors
                    .iter()
                    .map(|e| e.to_string().trim_end().to_owned())
                    .collect();
                format!("code_maps: {}", all.join("\n"))
            })?,
        };
        Ok(Arc::new(Hl7v2ToFhir {
            options: Options {
                maps,
                timezone: self.timezone.clone(),
            },
        }))
    }
}

/// The built step.
struct Hl7v2ToFhir {
    options: Options,
}

impl Step for Hl7v2ToFhir {
    fn apply<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Flow, StepError>> {
        Box::pin(async move {
            if work.kind == "json" || work.kind == FHIR_JSON {
                return Err(StepError::permanent(format!(
                    "message {}: hl7v2_to_fhir: the body is already JSON (kind {}); hl7v2_to_fhir reads hl7v2 messages",
                    work.id, work.kind
                )));
            }
            let message = huizhen_hl7::expr::parsed(work)?;
            let seed = work.id.to_string();
            let converted = convert(&message, &self.options, &seed).map_err(|e| {
                StepError::permanent(format!("message {}: hl7v2_to_fhir: {e}", work.id))
            })?;
            let bytes = serde_json::to_vec(&converted.bundle).map_err(|e| {
                StepError::permanent(format!("message {}: hl7v2_to_fhir: {e}", work.id))
            })?;
            work.set_body(bytes);
            work.kind = FHIR_JSON.into();
            work.headers.insert(
                "fhir-resource-types".into(),
                converted.resource_types.join(","),
            );
            if converted.warnings.is_empty() {
                work.headers.remove("fhir-warnings");
            } else {
                let mut w = converted.warnings.join("; ");
                if w.len() > 2000 {
                    let cut = (0..=2000)
                        .rev()
                        .find(|&i| w.is_char_boundary(i))
                        .unwrap_or(0);
                    w.truncate(cut);
                    w.push('…');
                }
                work.headers.insert("fhir-warnings".into(), w);
            }
            Ok(Flow::Continue)
        })
    }
}

/// `body` of a `fhir+json` message is its JSON in CEL (`body.entry.size()`,
/// `body.resourceType == 'Bundle'`).
fn extend(work: &mut Work, ctx: &mut cel::Context<'_>) -> Result<(), StepError> {
    let id = work.id.to_string();
    let v = work.json()?;
    let body =
        cel::to_value(v).map_err(|e| StepError::permanent(format!("message {id}: body: {e}")))?;
    ctx.add_variable_from_value("body", body);
    Ok(())
}

fn describe(
    body: &[u8],
    _headers: &std::collections::BTreeMap<String, String>,
) -> Result<serde_json::Value, String> {
    serde_json::from_slice(body).map_err(|e| e.to_string())
}

inventory::submit! {
    KindSupport { kind: FHIR_JSON, extend, functions: &[], describe }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets() {
        for ok in ["+08:00", "-05:30", "Z", "+00:00", "+14:00"] {
            assert!(valid_offset(ok), "{ok}");
        }
        for bad in ["+8:00", "08:00", "+08", "+15:00", "+08:60", "CST", ""] {
            assert!(!valid_offset(bad), "{bad}");
        }
    }
}
