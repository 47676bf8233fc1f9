//! The older forms of the worlds that changed since `huizhen:plugin@0.1.0`, so that components
//! built for an older contract keep working unchanged.
//!
//! | world | 0.1.0 | 0.1.1 | how a 0.1.0 component is told apart and called |
//! |---|---|---|---|
//! | `scorer` | `score` | `score` + `score-many` | no `score-many` export: `score` once per candidate, in one instance |
//! | `match-weights` | `weights { fields, match-threshold, non-match-threshold }` | `weights { fields, auto-link-threshold, probable-threshold, possible-threshold }` | the record returned by `weights` has no `probable-threshold` field: read as [`WeightsV0`] and [`WeightsV0::upgrade`]d |
//!
//! | world | 0.1.0 and 0.1.1 | 0.1.2 | how an older component is told apart and called |
//! |---|---|---|---|
//! | `coverage` | `cover(items, patient-coverage { insurer, active, plan }) -> result<list<result-line>, string>` | `cover(items, patient-coverage { …, not-eligible, deductible-fen, annual-limit-fen, year-to-date }) -> result<coverage-answer, string>` | the `patient-coverage` parameter of `cover` has no `year-to-date` field: called with [`PatientCoverageV1`] ([`PatientCoverageV1::of`]), its lines read as a `coverage-answer` that met nothing of the deductible |
//!
//! The `host` and `types` interfaces did not change; an older component's `host@0.1.0` or
//! `host@0.1.1` import is satisfied by the engine's `host@0.1.2` (wasmtime links
//! semver-compatible names).

use wasmtime::component::types::{ComponentItem, Type};
use wasmtime::component::{Component, ComponentType, Instance, InstancePre, Lift, Lower};
use wasmtime::{Engine, Store};

use crate::CallState;
use crate::bindings::coverage::{CoverageAnswer, FeeItem, PatientCoverage, ResultLine};
use crate::bindings::match_weights::Weights;
use crate::bindings::scorer::{Feature, Score};

/// The 0.1.0 `weights` record of `match-weights`.
#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq)]
#[component(record)]
pub struct WeightsV0 {
    /// Per field: agreement and disagreement weights.
    pub fields: Vec<(String, (f64, f64))>,
    /// At or above: the same patient.
    #[component(name = "match-threshold")]
    pub match_threshold: f64,
    /// Below: different patients; in between: a person reviews.
    #[component(name = "non-match-threshold")]
    pub non_match_threshold: f64,
}

impl WeightsV0 {
    /// The 0.1.1 form. 0.1.0 had two thresholds around a review band: "match" at or above the
    /// upper one, "non-match" below the lower one. The four grades read them as: the upper
    /// threshold is `probable` (a person confirms: a probabilistic score never auto-links by
    /// default, STANDARDS MATCH-05, so a 0.1.0 "match" does not become `certain`), the lower
    /// one is `possible`, and there is no auto-link threshold.
    pub fn upgrade(self) -> Weights {
        Weights {
            fields: self.fields,
            auto_link_threshold: None,
            probable_threshold: self.match_threshold,
            possible_threshold: self.non_match_threshold,
        }
    }
}

/// A scorer component without `score-many`: built for 0.1.0.
pub fn is_v0_scorer(component: &Component) -> bool {
    component.get_export_index(None, "score-many").is_none()
}

/// A `match-weights` component whose `weights` record lacks `probable-threshold`: 0.1.0.
pub fn is_v0_weights(component: &Component, engine: &Engine) -> bool {
    let ty = component.component_type();
    let Some(ComponentItem::ComponentFunc(f)) = ty.get_export(engine, "weights").map(|e| e.ty)
    else {
        return false;
    };
    let Some(Type::Record(r)) = f.results().next() else {
        return false;
    };
    !r.fields().any(|f| f.name == "probable-threshold")
}

/// Checks, before any call, that a 0.1.0 scorer exports `score` of the right type.
pub fn check_v0_scorer(pre: &InstancePre<CallState>) -> wasmtime::Result<()> {
    let ty = pre.component().component_type();
    match ty.get_export(pre.engine(), "score").map(|e| e.ty) {
        Some(ComponentItem::ComponentFunc(_)) => Ok(()),
        _ => Err(wasmtime::Error::msg(
            "no `score` function exported (nor `score-many`)",
        )),
    }
}

/// Checks that a 0.1.0 `match-weights` component exports `weights`.
pub fn check_v0_weights(pre: &InstancePre<CallState>) -> wasmtime::Result<()> {
    let ty = pre.component().component_type();
    match ty.get_export(pre.engine(), "weights").map(|e| e.ty) {
        Some(ComponentItem::ComponentFunc(_)) => Ok(()),
        _ => Err(wasmtime::Error::msg("no `weights` function exported")),
    }
}

/// Calls a 0.1.0 scorer's `score` in a live instance.
pub fn call_v0_score(
    instance: &Instance,
    store: &mut Store<CallState>,
    case: &[Feature],
    expert: &[Feature],
) -> wasmtime::Result<Result<Score, String>> {
    let f = instance.get_typed_func::<(&[Feature], &[Feature]), (Result<Score, String>,)>(
        &mut *store,
        "score",
    )?;
    let (r,) = f.call(&mut *store, (case, expert))?;
    Ok(r)
}

/// Instantiates a 0.1.0 `match-weights` component and calls its `weights`.
pub fn call_v0_weights(
    pre: &InstancePre<CallState>,
    store: &mut Store<CallState>,
) -> wasmtime::Result<WeightsV0> {
    let instance = pre.instantiate(&mut *store)?;
    let f = instance.get_typed_func::<(), (WeightsV0,)>(&mut *store, "weights")?;
    let (w,) = f.call(&mut *store, ())?;
    Ok(w)
}

/// The 0.1.0/0.1.1 `patient-coverage` record of `coverage`.
#[derive(ComponentType, Lift, Lower, Clone, Debug, PartialEq, Eq)]
#[component(record)]
pub struct PatientCoverageV1 {
    /// The insurer.
    pub insurer: String,
    /// False: covers nothing.
    pub active: bool,
    /// The plan.
    pub plan: String,
}

impl PatientCoverageV1 {
    /// The old form of a 0.1.2 record: an insurance that does not cover the service is passed
    /// as inactive (the old form cannot say "not eligible", and either covers nothing); the
    /// deductible, the annual limit and the year's usage are not passed (the engine still
    /// refuses an answer over the annual limit left).
    pub fn of(p: &PatientCoverage) -> PatientCoverageV1 {
        PatientCoverageV1 {
            insurer: p.insurer.clone(),
            active: p.active && p.not_eligible.is_none(),
            plan: p.plan.clone(),
        }
    }
}

/// A `coverage` component whose `cover` takes a `patient-coverage` without `year-to-date`:
/// built for 0.1.0 or 0.1.1.
pub fn is_v1_coverage(component: &Component, engine: &Engine) -> bool {
    let ty = component.component_type();
    let Some(ComponentItem::ComponentFunc(f)) = ty.get_export(engine, "cover").map(|e| e.ty) else {
        return false;
    };
    let Some((_, Type::Record(r))) = f.params().nth(1) else {
        return false;
    };
    !r.fields().any(|f| f.name == "year-to-date")
}

/// Checks that an older `coverage` component exports `cover`.
pub fn check_v1_coverage(pre: &InstancePre<CallState>) -> wasmtime::Result<()> {
    let ty = pre.component().component_type();
    match ty.get_export(pre.engine(), "cover").map(|e| e.ty) {
        Some(ComponentItem::ComponentFunc(_)) => Ok(()),
        _ => Err(wasmtime::Error::msg("no `cover` function exported")),
    }
}

/// Instantiates an older `coverage` component and calls its `cover`; the lines come back as a
/// 0.1.2 answer that met nothing of the deductible.
pub fn call_v1_cover(
    pre: &InstancePre<CallState>,
    store: &mut Store<CallState>,
    items: &[FeeItem],
    patient: &PatientCoverage,
) -> wasmtime::Result<Result<CoverageAnswer, String>> {
    let instance = pre.instantiate(&mut *store)?;
    let f = instance
        .get_typed_func::<(&[FeeItem], PatientCoverageV1), (Result<Vec<ResultLine>, String>,)>(
            &mut *store,
            "cover",
        )?;
    let (r,) = f.call(&mut *store, (items, PatientCoverageV1::of(patient)))?;
    Ok(r.map(|lines| CoverageAnswer {
        lines,
        deductible_met_fen: 0,
    }))
}
