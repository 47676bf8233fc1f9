//! `match_experts`: finds the experts for a consultation request (issue 14; STANDARDS MATCH-01,
//! MATCH-02, MATCH-31) and stores the explainable decision.
//!
//! ```yaml
//! - match_experts:
//!     case: request          # dotted path of the CaseRequest in the JSON body; default: the body
//!     result: match          # where the outcome goes in the body; default `match`
//!     matching: { top_n: 3, max_open_consultations: 5 }   # the domain's MatchConfig
//!     seed: 0                # the tie-break seed (the same inputs give the same ranking)
//!     scorer: expert-score   # a `scorer` plugin of plugins.dir; default: the built-in scorer
//!     scorer_fuel: 10000000  # the plugin's fuel for one case's batch (default 10,000,000)
//!     scorer_deadline: 50ms  # and its deadline (default 50ms)
//! ```
//!
//! **Input: the body, not CEL.** The case is the domain's `CaseRequest` as JSON (`id`,
//! `department`, `icd10`, `min_title`, `urgency`, `window`, …), read from the body at `case`
//! (a pipeline that receives another shape builds it first with `set` or `map`). Its
//! `requesting_facility` may be left out: it is the message's facility. A case naming another
//! facility is refused (a facility matches for itself), and so is any key the domain does not
//! know (no protected attribute can slip in, MATCH-30).
//!
//! **Output.** Headers `x-match-decision` (the decision id, for `GET /api/match-decisions/{id}`)
//! and `x-match-selected` (the selected expert ids, comma-separated, best first); in the body at
//! `result`: `{decision_id, selected, ranked: [{rank, expert_id, total}], excluded}`. No
//! eligible expert is not an error: the selection is empty and the decision says why each
//! candidate was excluded.
//!
//! **The scorer.** Without `scorer:` the built-in `DefaultScorer` ranks. With it, the named
//! `scorer` plugin scores every eligible candidate of a case in one batched call (`score-many`;
//! a 0.1.0 plugin's `score` once per candidate) under `scorer_fuel` and `scorer_deadline`, and
//! the decision records the plugin's name, version, module hash and budget. When the plugin
//! fails (out of fuel, deadline, trap, its own error, a wrong count) the domain ranks with the
//! built-in scorer and records the fallback; the step then counts
//! `huizhen_match_scorer_fallback_total{plugin}` and logs a WARN. The version serving is read
//! at each case, so a hot-reloaded plugin takes over without rebuilding the pipeline.
//!
//! The store is reached at run time through the engine's extensions (`huizhen validate`
//! builds the step without one). The decision and its audit event (actor `pipeline:<name>`)
//! commit together.

use std::sync::Arc;

use futures::future::BoxFuture;
use huizhen_domain::expert::{
    CaseRequest, DefaultScorer, MatchConfig, MatchError, Scorer, match_experts,
};
use serde::Deserialize;
use serde_json::json;

use super::{Step, StepConfig, set_path};
use crate::extensions::{Extensions, PluginBudget};
use crate::runner::BuildContext;
use crate::store::Store;
use crate::store::audit::AuditEvent;
use crate::work::{Flow, StepError, Work};

/// The header with the decision id.
pub const DECISION_HEADER: &str = "x-match-decision";
/// The header with the selected expert ids.
pub const SELECTED_HEADER: &str = "x-match-selected";

/// `match_experts` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchExpertsConfig {
    /// Dotted path of the case in the JSON body; none: the whole body is the case.
    #[serde(default)]
    pub case: Option<String>,
    /// Dotted path where the outcome is written in the body.
    #[serde(default = "default_result")]
    pub result: String,
    /// Matching settings (top N, load cap, practice years, presence staleness, …).
    #[serde(default)]
    pub matching: MatchConfig,
    /// The tie-break seed.
    #[serde(default)]
    pub seed: u64,
    /// A `scorer` plugin (by manifest name, from `plugins.dir`); none: the built-in scorer.
    #[serde(default)]
    pub scorer: Option<String>,
    /// The plugin's fuel for one case's batch.
    #[serde(default = "default_scorer_fuel")]
    pub scorer_fuel: u64,
    /// The plugin's deadline for one case's batch.
    #[serde(default = "default_scorer_deadline", with = "crate::config::duration")]
    pub scorer_deadline: std::time::Duration,
}

/// Default fuel of a scoring batch: ample for the reference plugin over thousands of
/// candidates, small enough to stop a runaway loop quickly.
pub const DEFAULT_SCORER_FUEL: u64 = 10_000_000;

fn default_scorer_fuel() -> u64 {
    DEFAULT_SCORER_FUEL
}

fn default_scorer_deadline() -> std::time::Duration {
    std::time::Duration::from_millis(50)
}

/// The domain scorer a step or the API uses: the `scorer` plugin `name` through the plugin
/// host (`extensions`), or the built-in one when no name is given.
pub fn resolve_scorer(
    extensions: &Extensions,
    name: Option<&str>,
    budget: PluginBudget,
) -> Result<Arc<dyn Scorer + Send + Sync>, String> {
    let Some(name) = name else {
        return Ok(Arc::new(DefaultScorer));
    };
    let host = extensions.domain_plugins().ok_or_else(|| {
        format!("scorer: {name:?} needs the plugin host, which this engine was built without")
    })?;
    host.scorer(name, budget)
        .map_err(|e| format!("scorer: {name:?}: {e}"))
}

fn default_result() -> String {
    "match".into()
}

#[typetag::deserialize(name = "match_experts")]
impl StepConfig for MatchExpertsConfig {
    fn type_name(&self) -> &'static str {
        "match_experts"
    }

    fn build(&self, ctx: &BuildContext) -> Result<Arc<dyn Step>, String> {
        self.matching.validate().map_err(|e| e.to_string())?;
        for (name, path) in [
            ("case", self.case.as_deref()),
            ("result", Some(&*self.result)),
        ] {
            if let Some(p) = path
                && (p.is_empty() || p.split('.').any(str::is_empty))
            {
                return Err(format!("{name}: {p:?} is not a dotted path (a.b.c)"));
            }
        }
        if self.scorer_fuel == 0 {
            return Err("scorer_fuel: must be more than 0".into());
        }
        if self.scorer_deadline.is_zero() {
            return Err("scorer_deadline: must be more than 0".into());
        }
        let scorer = resolve_scorer(
            &ctx.extensions,
            self.scorer.as_deref(),
            PluginBudget {
                fuel: Some(self.scorer_fuel),
                deadline: self.scorer_deadline,
            },
        )?;
        Ok(Arc::new(MatchExpertsStep {
            config: self.clone(),
            pipeline: ctx.pipeline.clone(),
            extensions: ctx.extensions.clone(),
            scorer,
        }))
    }
}

/// The built step.
pub struct MatchExpertsStep {
    config: MatchExpertsConfig,
    pipeline: String,
    extensions: Extensions,
    /// The scorer: a plugin's, or the built-in one.
    scorer: Arc<dyn Scorer + Send + Sync>,
}

/// The case in `body` at `path` (the whole body when none), with the requesting facility
/// filled in from `facility` when left out. Errors name the path and the field.
pub fn case_from_body(
    body: &serde_json::Value,
    path: Option<&str>,
    facility: &str,
) -> Result<CaseRequest, String> {
    let mut v = body;
    if let Some(p) = path {
        for part in p.split('.') {
            v = v
                .get(part)
                .ok_or_else(|| format!("body has no `{p}` (the case)"))?;
        }
    }
    let mut v = v.clone();
    let at = path.unwrap_or("body");
    let obj = v
        .as_object_mut()
        .ok_or_else(|| format!("{at}: the case must be a JSON object"))?;
    obj.entry("requesting_facility")
        .or_insert_with(|| json!(facility));
    let case: CaseRequest =
        serde_json::from_value(v).map_err(|e| format!("{at}: not a case request: {e}"))?;
    if case.requesting_facility.trim() != facility {
        return Err(format!(
            "{at}.requesting_facility: `{}` is not the message's facility `{facility}`",
            case.requesting_facility
        ));
    }
    case.validate().map_err(|e| format!("{at}: {e}"))?;
    Ok(case)
}

impl Step for MatchExpertsStep {
    fn apply<'a>(&'a self, work: &'a mut Work) -> BoxFuture<'a, Result<Flow, StepError>> {
        Box::pin(async move {
            let id = work.id.clone();
            let facility = work.facility.clone();
            let case = case_from_body(work.json()?, self.config.case.as_deref(), &facility)
                .map_err(|e| StepError::permanent(format!("message {id}: match_experts: {e}")))?;
            let store = self.extensions.get::<Store>().ok_or_else(|| {
                StepError::permanent(format!(
                    "message {id}: match_experts: no store (the step runs inside an engine)"
                ))
            })?;
            let index = store
                .prefetch_experts(&case)
                .await
                .map_err(|e| StepError::new(format!("message {id}: match_experts: {e}")))?;
            let decision = match_experts(
                &case,
                &index,
                &*self.scorer,
                &self.config.matching,
                chrono::Utc::now(),
                self.config.seed,
            )
            .map_err(|e| match e {
                MatchError::Scoring { .. } => {
                    StepError::new(format!("message {id}: match_experts: {e}"))
                }
                _ => StepError::permanent(format!("message {id}: match_experts: {e}")),
            })?;
            crate::runner::match_alerts::alert_scorer_fallback(
                &decision,
                &format!("pipeline:{}", self.pipeline),
            );
            let decision_id = crate::message::new_id();
            let event = AuditEvent {
                actor: format!("pipeline:{}", self.pipeline),
                role: "engine".into(),
                facility: facility.clone(),
                action: "expert.match".into(),
                resource_type: "MatchDecision".into(),
                resource_id: decision_id.clone(),
                outcome: "success".into(),
                source: format!("message {id}"),
                purpose: String::new(),
                detail: format!("case {}; selected {}", case.id, decision.selected.join(",")),
                subject_facility: facility.clone(),
            };
            store
                .save_match_decision_as(&decision_id, &decision, Some(&event))
                .await
                .map_err(|e| StepError::new(format!("message {id}: match_experts: {e}")))?;
            work.headers
                .insert(DECISION_HEADER.into(), decision_id.clone());
            work.headers
                .insert(SELECTED_HEADER.into(), decision.selected.join(","));
            let ranked: Vec<serde_json::Value> = decision
                .ranked
                .iter()
                .map(|r| json!({ "rank": r.rank, "expert_id": r.expert_id, "total": r.total }))
                .collect();
            let outcome = json!({
                "decision_id": decision_id,
                "selected": decision.selected,
                "ranked": ranked,
                "excluded": decision.exclusions.len(),
            });
            let json = work.json_mut()?;
            set_path(json, &self.config.result, outcome).map_err(|e| {
                StepError::permanent(format!("message {id}: match_experts: result: {e}"))
            })?;
            Ok(Flow::Continue)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_case_comes_from_the_body_with_the_message_facility() {
        let body = json!({"request": {"id": "t1", "department": "03.02", "icd10": "I25.1"}});
        let c = case_from_body(&body, Some("request"), "H-1").unwrap();
        assert_eq!(c.requesting_facility, "H-1");
        assert_eq!(c.department, "03.02");
        let err = case_from_body(&body, Some("nope"), "H-1").unwrap_err();
        assert!(err.contains("no `nope`"), "{err}");
        let other = json!({"id": "t1", "department": "03", "requesting_facility": "H-2"});
        let err = case_from_body(&other, None, "H-1").unwrap_err();
        assert!(err.contains("body.requesting_facility"), "{err}");
        let protected = json!({"id": "t1", "department": "03", "ethnicity": "x"});
        let err = case_from_body(&protected, None, "H-1").unwrap_err();
        assert!(err.contains("ethnicity"), "{err}");
        let blank = json!({"id": "t1", "department": " "});
        let err = case_from_body(&blank, None, "H-1").unwrap_err();
        assert!(err.contains("department is blank"), "{err}");
    }
}
