//! `match_patient`: links the patient of an ADT message to a master person (STANDARDS
//! MATCH-05; the PIX feed of IHE-01).
//!
//! It reads the JSON patient record that `hl7_map` makes of an `ADT^A01/A04/A05/A08/A28/A31/
//! A40` (the core knows no HL7: put `hl7_map` first), takes the record's local id (the first
//! identifier that is not a resident id or insurance number) in the namespace of `facility`
//! (default: the message's facility), and lets [`huizhen_domain::identity::Matcher`] decide
//! against the identity index:
//!
//! * `certain` (a deterministic rule: the same local id, a valid resident id with the same
//!   name, the same 医保 number and region; or a score at or above `auto_link_above` when the
//!   facility opted in) links the record to that person;
//! * otherwise the record keeps its person (or gets a new one), and probable and possible
//!   candidates go to the review queue (`/api/patients/review`);
//! * an `ADT^A40` also retires each `MRG-1` identifier: its record and every record of its
//!   person move to the surviving person (undoable from the history).
//!
//! Every decision is kept with its per-field contributions. The message gets the headers
//! `person-id`, `match-grade` (`certain`, `probable`, `possible`, `new`), `match-score` (when
//! there was a candidate), `match-reviews` (entries queued) and, for a merge, `merge-batch`.
//! The body is unchanged.
//!
//! ```yaml
//! ordering_key: "hl7('PID-3.1')"          # one patient's events in order
//! steps:
//!   - hl7_map: {}
//!   - match_patient:
//!       facility: county-hospital-3       # default: the pipeline's facility
//!       thresholds: { probable: 22, possible: 10 }
//!       auto_link_above: 40               # opt-in; every link it makes is audited
//!       # weights: { name: { exact: { m: 0.9, u: 0.001 }, … }, … }   # default: built-in
//!       # weights_plugin: weights-basic   # thresholds from a `match-weights` plugin instead
//! ```
//!
//! **`weights_plugin`** names a `match-weights` plugin (either contract version), called once
//! when the pipeline is built: its probable and possible thresholds replace `thresholds:` (give
//! one or the other). Its auto-link threshold only takes effect when `auto_link_above` is set
//! too — auto-linking stays an explicit, audited choice of the pipeline — and then the higher
//! of the two applies. A 0.1.0 plugin's `match-threshold` is the probable threshold and its
//! `non-match-threshold` the possible one (no auto-link). The plugin's per-field
//! agreement/disagreement weights are not applied: the matcher's weights are m/u
//! probabilities per comparison level (`weights:`), which one pair per field cannot express.

use std::sync::Arc;

use futures::future::BoxFuture;
use huizhen_domain::identity::{Demographics, Matcher, Thresholds, Weights};
use huizhen_domain::patient::PatientRecord;
use serde::Deserialize;

use super::{Step, StepConfig};
use crate::extensions::Extensions;
use crate::runner::BuildContext;
use crate::store::Store;
use crate::store::audit::AuditEvent;
use crate::store::identity::{ChangeBy, grade_name};
use crate::work::{Flow, StepError, Work};

/// `- match_patient: {…}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchPatientConfig {
    /// The assigning authority (namespace) of the records' local ids; default: the message's
    /// facility (the pipeline's).
    #[serde(default)]
    pub facility: Option<String>,
    /// Grading thresholds on the score; default probable ≥ 22, possible ≥ 10.
    #[serde(default)]
    pub thresholds: Option<ThresholdsConfig>,
    /// Opt-in: a score at or above this links automatically (`certain`) without a
    /// deterministic rule. Off by default (MATCH-05); each link it makes is audited
    /// (`patient.auto_link`). Must not be below `thresholds.probable`.
    #[serde(default)]
    pub auto_link_above: Option<f64>,
    /// Fellegi–Sunter m/u probabilities per field and level; default: the built-in priors.
    /// Every field with every level, each probability in (0, 1), summing to 1 per field.
    #[serde(default)]
    pub weights: Option<Weights>,
    /// A `match-weights` plugin (by manifest name) whose thresholds grade (see the module
    /// docs); excludes `thresholds:`.
    #[serde(default)]
    pub weights_plugin: Option<String>,
    /// How many candidate records one decision compares at most (default 64, 1..=1000).
    #[serde(default)]
    pub candidate_limit: Option<usize>,
}

/// `thresholds:` of `match_patient`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdsConfig {
    /// At or above: `probable` (the review queue).
    #[serde(default)]
    pub probable: Option<f64>,
    /// At or above: `possible` (the review queue, lower priority).
    #[serde(default)]
    pub possible: Option<f64>,
}

impl MatchPatientConfig {
    /// The matcher this configuration describes, or what is wrong with it.
    pub fn matcher(&self) -> Result<Matcher, String> {
        let defaults = Thresholds::default();
        let t = self.thresholds.unwrap_or_default();
        let thresholds = Thresholds {
            auto_link: self.auto_link_above,
            probable: t.probable.unwrap_or(defaults.probable),
            possible: t.possible.unwrap_or(defaults.possible),
        };
        let mut m =
            Matcher::new(self.weights.clone().unwrap_or_default(), thresholds).map_err(|e| {
                let text = e.to_string();
                let text = text.replace("auto_link (", "auto_link_above (");
                format!("match_patient: {text}")
            })?;
        if let Some(n) = self.candidate_limit {
            if !(1..=1000).contains(&n) {
                return Err(format!(
                    "match_patient: candidate_limit {n} is out of range 1..=1000"
                ));
            }
            m.candidate_limit = n;
        }
        if self
            .facility
            .as_deref()
            .is_some_and(|f| f.trim().is_empty())
        {
            return Err(
                "match_patient: facility must not be empty (leave it out to use the pipeline's)"
                    .into(),
            );
        }
        Ok(m)
    }
}

impl MatchPatientConfig {
    /// This configuration with the thresholds of the `match-weights` plugin `name`.
    fn with_plugin_thresholds(
        &self,
        name: &str,
        extensions: &Extensions,
    ) -> Result<MatchPatientConfig, String> {
        if self.thresholds.is_some() {
            return Err(
                "match_patient: give either `thresholds` or `weights_plugin`, not both".into(),
            );
        }
        let host = extensions.domain_plugins().ok_or_else(|| {
            format!(
                "match_patient: weights_plugin: {name:?} needs the plugin host, which this engine was built without"
            )
        })?;
        let w = host
            .match_weights(name)
            .map_err(|e| format!("match_patient: weights_plugin: {name:?}: {e}"))?;
        let mut out = self.clone();
        out.thresholds = Some(ThresholdsConfig {
            probable: Some(w.probable),
            possible: Some(w.possible),
        });
        out.auto_link_above = match (self.auto_link_above, w.auto_link) {
            (Some(step), Some(plugin)) => Some(step.max(plugin)),
            (step, _) => step,
        };
        tracing::info!(
            plugin = %w.plugin,
            contract = %w.contract,
            probable = w.probable,
            possible = w.possible,
            auto_link = ?out.auto_link_above,
            "match_patient: thresholds from the weights plugin"
        );
        Ok(out)
    }
}

#[typetag::deserialize(name = "match_patient")]
impl StepConfig for MatchPatientConfig {
    fn type_name(&self) -> &'static str {
        "match_patient"
    }

    fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Step>, String> {
        let config = match &self.weights_plugin {
            None => self.clone(),
            Some(name) => self.with_plugin_thresholds(name, &ctx.extensions)?,
        };
        Ok(Arc::new(MatchPatient {
            matcher: config.matcher()?,
            facility: config.facility.clone(),
            auto_link_above: config.auto_link_above,
            extensions: ctx.extensions.clone(),
        }))
    }
}

/// The built step.
struct MatchPatient {
    matcher: Matcher,
    facility: Option<String>,
    auto_link_above: Option<f64>,
    /// The engine's services: the store is found there when the step runs (building does no
    /// I/O, and `huizhen validate` builds without a store).
    extensions: Extensions,
}

/// What is wrong with a body, by path and position only: serde's own text can quote a value,
/// which may be patient data.
fn body_error(id: &str, e: &serde_path_to_error::Error<serde_json::Error>) -> StepError {
    let inner = e.inner();
    StepError::permanent(format!(
        "message {id}: match_patient: the body is not the patient record hl7_map makes: `{}` at line {} column {} ({:?} error)",
        e.path(),
        inner.line(),
        inner.column(),
        inner.classify()
    ))
}

fn read_record(work: &mut Work) -> Result<PatientRecord, StepError> {
    if work.kind != "json" {
        return Err(StepError::permanent(format!(
            "message {}: match_patient reads the JSON patient record of hl7_map, but the message is of kind {}; put `- hl7_map: {{}}` before it",
            work.id, work.kind
        )));
    }
    let id = work.id.clone();
    let bytes = work.body().to_vec();
    #[derive(Deserialize)]
    struct Tag {
        record: Option<String>,
    }
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let tag: Tag = serde_path_to_error::deserialize(&mut de).map_err(|e| body_error(&id, &e))?;
    if let Some(t) = tag.record.as_deref()
        && t != "patient"
    {
        return Err(StepError::permanent(format!(
            "message {id}: match_patient: the record is `{}`, not `patient` (match_patient reads ADT messages)",
            t.chars()
                .filter(char::is_ascii_alphanumeric)
                .take(20)
                .collect::<String>()
        )));
    }
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| body_error(&id, &e))
}

impl Step for MatchPatient {
    fn apply<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Flow, StepError>> {
        Box::pin(async move {
            let store = self.extensions.get::<Store>().ok_or_else(|| {
                StepError::permanent(
                    "match_patient: no identity store (the step runs inside an engine)",
                )
            })?;
            let record = read_record(work)?;
            let facility = self
                .facility
                .clone()
                .unwrap_or_else(|| work.facility.clone());
            let demographics = Demographics::from_record(&record, Some(&facility)).ok_or_else(|| {
                StepError::permanent(format!(
                    "message {}: match_patient: PID-3 has no local identifier (every identifier is a resident id or an insurance number)",
                    work.id
                ))
            })?;
            let actor = format!("pipeline:{}", work.pipeline);
            let (id, pipeline) = (work.id.clone(), work.pipeline.clone());
            let threshold = self.auto_link_above;
            let linked = crate::patients::link(&store, &self.matcher, &demographics, &actor, |d| {
                let best = d.candidates.first();
                AuditEvent {
                    actor: actor.clone(),
                    role: "pipeline".into(),
                    facility: facility.clone(),
                    action: "patient.auto_link".into(),
                    resource_type: "Patient".into(),
                    resource_id: d.person.map(|p| p.to_string()).unwrap_or_default(),
                    outcome: "success".into(),
                    source: format!("pipeline {pipeline}"),
                    purpose: String::new(),
                    detail: format!(
                        "message {id}: score {:.2} at or above auto_link_above {:.2}",
                        best.map_or(0.0, |c| c.score),
                        threshold.unwrap_or_default()
                    ),
                    subject_facility: facility.clone(),
                }
            })
            .await
            .map_err(|e| StepError::new(format!("message {}: match_patient: {e}", work.id)))?;
            let person = linked.recorded.person_id;
            work.headers.insert("person-id".into(), person.to_string());
            work.headers.insert(
                "match-grade".into(),
                grade_name(linked.decision.grade).into(),
            );
            if let Some(best) = linked.decision.candidates.first() {
                work.headers
                    .insert("match-score".into(), format!("{:.2}", best.score));
            }
            work.headers.insert(
                "match-reviews".into(),
                linked.recorded.reviews.len().to_string(),
            );
            if let Some(merge) = &record.merge {
                let mut batches = Vec::new();
                for prior in &merge.prior_identifiers {
                    let special = matches!(
                        prior
                            .type_code
                            .as_deref()
                            .map(str::to_ascii_uppercase)
                            .as_deref(),
                        Some("NI" | "PSN_NO" | "PSN")
                    );
                    let prior_id = prior.id.trim();
                    if special || prior_id.is_empty() || prior_id == demographics.local_id {
                        continue;
                    }
                    let event = AuditEvent {
                        actor: actor.clone(),
                        role: "pipeline".into(),
                        facility: facility.clone(),
                        action: "patient.merge".into(),
                        resource_type: "Patient".into(),
                        resource_id: person.to_string(),
                        outcome: "success".into(),
                        source: format!("pipeline {}", work.pipeline),
                        purpose: String::new(),
                        detail: format!(
                            "message {}: ADT^A40 retires a local id of {facility}",
                            work.id
                        ),
                        subject_facility: facility.clone(),
                    };
                    let reason = format!("ADT^A40 message {}", work.id);
                    let merged = store
                        .identity_merge(
                            &facility,
                            prior_id,
                            person,
                            ChangeBy {
                                actor: &actor,
                                reason: &reason,
                                audit: Some(&event),
                            },
                        )
                        .await
                        .map_err(|e| {
                            StepError::new(format!(
                                "message {}: match_patient: merge: {e}",
                                work.id
                            ))
                        })?;
                    if let Some((batch, _)) = merged {
                        batches.push(batch);
                    }
                }
                if !batches.is_empty() {
                    work.headers.insert("merge-batch".into(), batches.join(","));
                }
            }
            Ok(Flow::Continue)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str, expected_error: Option<&str>) {
        let cfg: MatchPatientConfig = serde_saphyr::from_str(yaml).expect("parses");
        match (cfg.matcher(), expected_error) {
            (Ok(_), None) => {}
            (Err(e), Some(want)) => assert!(e.contains(want), "{yaml}: {e}"),
            (Ok(_), Some(want)) => panic!("{yaml}: accepted, expected {want}"),
            (Err(e), None) => panic!("{yaml}: {e}"),
        }
    }

    #[test]
    fn config_is_validated_with_clear_errors() {
        check("{}", None);
        check(
            "thresholds: { probable: 30, possible: 12 }\nauto_link_above: 45",
            None,
        );
        check(
            "thresholds: { probable: 10, possible: 20 }",
            Some("possible (20) must not be above probable (10)"),
        );
        check(
            "auto_link_above: 5",
            Some("auto_link_above (5) must not be below probable (22)"),
        );
        check(
            "candidate_limit: 0",
            Some("candidate_limit 0 is out of range"),
        );
        check("facility: ' '", Some("facility must not be empty"));
        check(
            "weights: { fields: {} }",
            Some("match_patient: match weights: field `Name` is missing"),
        );
        assert!(serde_saphyr::from_str::<MatchPatientConfig>("auto_link: 3").is_err());
    }

    /// `weights_plugin` excludes `thresholds`; without the plugin host linked in (the core's
    /// own tests) it names what is missing. The plugin calls themselves are tested in
    /// engine/plugin/tests/host/scoring.rs.
    #[test]
    fn weights_plugin_is_checked_when_built() {
        let ctx = BuildContext {
            pipeline: "p".into(),
            facility: "f".into(),
            router: Default::default(),
            extensions: Default::default(),
        };
        let build = |yaml: &str| {
            let c: MatchPatientConfig = serde_saphyr::from_str(yaml).unwrap();
            c.build(&ctx).err().unwrap_or_default()
        };
        let e = build("weights_plugin: w\nthresholds: { probable: 30 }");
        assert!(e.contains("either `thresholds` or `weights_plugin`"), "{e}");
        let e = build("weights_plugin: w");
        assert!(
            e.contains("weights_plugin: \"w\" needs the plugin host"),
            "{e}"
        );
        assert_eq!(build("{}"), "");
    }
}
